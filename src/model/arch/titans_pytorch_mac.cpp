// titans-pytorch MemoryAsContextTransformer as a model kind of its own (architecture
// kTitansPytorchMac: the Runner of src/model/arch/architecture.hpp for its models;
// docs/SEMANTICS.md section 5, and in full docs/TITANS_PYTORCH.md). Its tensor table is
// titans_pytorch_mac_weights.hpp.
//
// The token stream is interspersed: after every `segment` tokens come M learned long-term
// memory tokens, run when the next token arrives (titans-pytorch appends them only to a segment
// followed by a token). Row p of the interspersed stream (p counts rows from the session start)
// enters as x_p = embedding (or long-term token) + MLP_0(p / C) + MLP_1(p mod C), the axial
// position embedding with C = tp_mac.memory_segment. The residual is S streams
// h_s = x + stream_embed[s]. Per layer, each branch reads and writes the streams through a
// manifold-constrained hyper-connection (mHC, titans/model.hpp HyperConnectionWeights):
//   memory (kMac layers)  m = NeuralMemory(branch input), written and read at every row;
//                         added to the streams, or (gate_attn_output) gating the attention.
//                         With tp_mac.qkv_views, layers after the first feed the memory three
//                         views (queries, keys, values), each a softmax-weighted sum of the
//                         branch input and the four branch tensors of every earlier layer.
//                         With memory.weight_residual, every memory layer after the first takes
//                         its step k's gradient at W_base + mix (the previous memory layer's
//                         fast weights before its step k): the same rows, one layer earlier
//   attention             RMSNorm, q k v, value residual v += sigmoid(x W_mix + b) (v_first - v)
//                         on layers after the first (v_first: the first layer's values),
//                         rotary at the row's absolute position p, persistent key/value pairs
//                         (not rotated), and either block-diagonal windows of W rows (row p sees
//                         the rows of its window up to p) or, sliding, the W + 1 rows p-W..p
//   feedforward           RMSNorm, (x W_up + b_up) * SiLU(x W_gate + b_gate) W_down + b_down
// At the end the streams are summed; token rows go through the final RMSNorm and to_logits,
// long-term rows are dropped. This is titans-pytorch's forward over the whole sequence; its
// cached decoding differs from that forward (docs/TITANS_PYTORCH.md), the engine does not.
//
// Rows are processed in pieces of at most kPiece; each piece goes through every layer before the
// next, which is exact because every layer is causal, so a stream can be fed in any pieces.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "model/arch/architecture.hpp"
#include "model/session_kernels.hpp"
#include "model/session_state.hpp"
#include "ops/activations.hpp"
#include "ops/attention.hpp"
#include "ops/linalg.hpp"
#include "ops/norms.hpp"
#include "ops/thread_governor.hpp"

namespace titans::arch {
namespace {

using namespace linalg;   // NOLINT: written in terms of these helpers
using namespace session;  // NOLINT: state, layer kinds and attention shapes

using RowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;

RowVectorMap RowOf(const std::vector<float>& v) {
  return RowVectorMap(v.data(), static_cast<Index>(v.size()));
}

// out [rows, d] = MLP_a(position) for the scalar positions first, first + 1, ... of one axis:
// (SiLU(SiLU(i w0 + b0) w1 + b1)) w2 + b2. h0, h1: [rows, 2d] scratch.
void AxialMlp(const AxialMlpWeights& w, int64_t first, Index rows, Index d, RowMatrix& h0,
              RowMatrix& h1, float* out) {
  const Index hd = 2 * d;
  for (Index i = 0; i < rows; ++i) {
    const float position = static_cast<float>(first + i);
    for (Index j = 0; j < hd; ++j) {
      h0(i, j) = position * w.w0[static_cast<size_t>(j)] + w.b0[static_cast<size_t>(j)];
    }
  }
  auto a0 = h0.topRows(rows).array();
  a0 = ops::Silu(a0);
  Multiply(h1.topRows(rows), h0.topRows(rows), ConstView(w.w1.data(), hd, hd, hd));
  h1.topRows(rows).rowwise() += RowOf(w.b1);
  auto a1 = h1.topRows(rows).array();
  a1 = ops::Silu(a1);
  MatMap o = View(out, rows, d, d);
  Multiply(o, h1.topRows(rows), ConstView(w.w2.data(), hd, d, d));
  o.rowwise() += RowOf(w.b2);
}

// Positions (rows) of the interspersed sequence a session has run after `position` tokens. The
// M long-term memory tokens after a segment are run when the next token arrives (titans-pytorch
// appends them only to a segment that is followed by a token).
int64_t TpMacRows(const ModelConfig& c, int64_t position) {
  return position == 0 ? 0 : position + c.tp_mac.longterm_tokens * ((position - 1) / c.segment);
}

// Every layer's attention cache: the W + 1 latest rows when sliding, else its window's rows.
AttentionShape CacheShapeOf(const ModelConfig& c) {
  AttentionShape s = ShapeOf(c);
  s.window = c.attention.window + (c.tp_mac.sliding ? 1 : 0);
  return s;
}

// Scratch for one piece of at most kPiece interspersed rows, sized once per session. S = streams,
// Ha*da = attention width, f = ffn_hidden, C = tp_mac.memory_segment.
struct TpMacWorkspace {
  static constexpr int kPiece = 64;

  TpMacWorkspace(const Model& model, const SessionOptions& options);

  AttentionWorkspace attention;
  RowMatrix x;                  // [P, d] a piece's inputs: token or long-term embedding + position
  RowMatrix streams;            // [P*S, d] residual streams, row i*S + s
  RowMatrix normed;             // [P*S, d] the hyper-connection's normalised streams
  RowMatrix dynamic;            // [P*S, 1+S] normed streams times dynamic_alpha
  RowMatrix mixed;              // [P*S, d] streams mixed by the Sinkhorn matrix
  std::vector<float> beta;      // [P*S] weight of the branch output in each stream
  std::vector<float> sinkhorn;  // [S, S]
  RowMatrix branch;             // [P, d] a branch's input
  RowMatrix out;                // [P, d] a branch's output
  RowMatrix gate;               // [P, d] sigmoid(memory output) gating the attention output
  RowMatrix xn;                 // [P, d] normalised branch input
  RowMatrix q, k, v, att, v_first;  // [P, Ha*da]; v_first: the first layer's values
  RowMatrix mix;                    // [P, Ha] value residual mix
  RowMatrix rotary;                 // [P, da] the piece's rotary angles (RotaryAngles)
  RowMatrix ffn_a, ffn_b;           // [P, f]
  RowMatrix axial_inner;            // [C, d] MLP_1(j) for j = 0..C-1
  RowMatrix axial_outer;            // [1, d] MLP_0(axial_outer_index)
  int64_t axial_outer_index = -1;
  RowMatrix axial_h0, axial_h1;    // [1, 2d] the axial MLP's hidden rows
  std::vector<int64_t> row_token;  // [P] index of the call's token in row i; -1: long-term
  // tp_mac.qkv_views: layer l's attention input and output, feedforward input and output in
  // candidates[4 l + 0..3], [P, d] each (the last layer's are never read: 4 (layers - 1));
  // the selector's logits [P, 3 L] (L = 4 l + 1) and the three views [P, d] of one layer.
  std::vector<RowMatrix> candidates;
  RowMatrix selector, retrieve_view, key_view, value_view;
  // memory.weight_residual: the trajectories of the piece's steps, recorded by one memory layer
  // for the next (two, used in turn); a piece of P rows completes at most P / C + 1 steps.
  std::vector<WeightTrajectory> trajectories;
};

TpMacWorkspace::TpMacWorkspace(const Model& model, const SessionOptions& options)
    : attention(CacheShapeOf(model.config()), options.threads, options.min_flops_per_thread) {
  const ModelConfig& c = model.config();
  const Index p = kPiece, d = c.d_model, s = c.tp_mac.streams, f = c.ffn_hidden;
  const Index qw = Index{c.attention.heads} * c.attention.head_dim;
  x.resize(p, d);
  streams.resize(p * s, d);
  normed.resize(p * s, d);
  dynamic.resize(p * s, 1 + s);
  mixed.resize(p * s, d);
  beta.resize(static_cast<size_t>(p * s));
  sinkhorn.resize(static_cast<size_t>(s * s));
  branch.resize(p, d);
  out.resize(p, d);
  gate.resize(p, d);
  xn.resize(p, d);
  for (RowMatrix* m : {&q, &k, &v, &att, &v_first}) m->resize(p, qw);
  mix.resize(p, c.attention.heads);
  rotary.resize(p, c.attention.head_dim);
  ffn_a.resize(p, f);
  ffn_b.resize(p, f);
  // The inner axis has only C positions: its embeddings are computed once, here.
  const Index inner = c.tp_mac.memory_segment;
  axial_inner.resize(inner, d);
  axial_h0.resize(std::max<Index>(inner, 1), 2 * d);
  axial_h1.resize(std::max<Index>(inner, 1), 2 * d);
  AxialMlp(model.weights().tp_mac.axial[1], 0, inner, d, axial_h0, axial_h1, axial_inner.data());
  axial_outer.resize(1, d);
  row_token.resize(static_cast<size_t>(p));
  if (c.memory.weight_residual) {
    trajectories.assign(2, WeightTrajectory(c.memory, kPiece / c.memory.unit() + 1));
  }
  if (c.tp_mac.qkv_views) {
    const Index layers = static_cast<Index>(c.layers.size());
    candidates.assign(static_cast<size_t>(4 * (layers - 1)), RowMatrix(p, d));
    selector.resize(p, 3 * (4 * (layers - 1) + 1));
    for (RowMatrix* m : {&retrieve_view, &key_view, &value_view}) m->resize(p, d);
  }
}

// The layers, one function per branch; rows [0, n) of the workspace are live, at interspersed
// positions p0, p0 + 1, ...
class TpMacStack {
 public:
  TpMacStack(const Model& model, State& state, TpMacWorkspace& ws, const SessionOptions& options)
      : c_(model.config()),
        w_(model.weights().tp_mac),
        bf16_(model.bf16_copies()),
        state_(state),
        ws_(ws),
        options_(options),
        d_(c_.d_model),
        s_(c_.tp_mac.streams) {}

  // Runs rows [0, n) of ws.x through every layer into ws.streams.
  void Run(Index n, int64_t p0) {
    // The rotary angles of the piece's positions, once for all the layers.
    RotaryAngles(static_cast<int>(n), c_.attention.head_dim, p0, c_.attention.rope_base,
                 ws_.rotary.data());
    for (Index i = 0; i < n; ++i) {  // expand to S streams
      for (Index s = 0; s < s_; ++s) {
        ws_.streams.row(i * s_ + s) = ws_.x.row(i);
        if (s_ > 1) ws_.streams.row(i * s_ + s) += RowOf(w_.stream_embed).segment(s * d_, d_);
      }
    }
    const size_t last_memory =
        c_.layers.size() - 1 -
        static_cast<size_t>(std::find(c_.layers.rbegin(), c_.layers.rend(), BlockKind::kMac) -
                            c_.layers.rbegin());
    WeightResidual residual;  // memory.weight_residual: previous = the last memory layer's
    for (size_t l = 0; l < c_.layers.size(); ++l) {
      const TpMacLayerWeights& w = w_.layers[l];
      bool gated = false;
      if (c_.layers[l] == BlockKind::kMac) {
        const bool adds = !c_.tp_mac.gate_attn_output;
        Width(w.memory_hc, n, adds);
        const size_t size = static_cast<size_t>(n * d_);
        auto rows = [size](const RowMatrix& m) { return std::span<const float>(m.data(), size); };
        const bool views = c_.tp_mac.qkv_views && l > 0;
        if (views) SelectViews(l, w, n);
        if (c_.memory.weight_residual) {  // record for a later memory layer, in the other buffer
          WeightTrajectory& other = ws_.trajectories[residual.previous == &ws_.trajectories[0]];
          residual.record = l < last_memory ? &other : nullptr;
        }
        state_.memory[l]->Forward(rows(views ? ws_.key_view : ws_.branch),
                                  rows(views ? ws_.value_view : ws_.branch),
                                  rows(views ? ws_.retrieve_view : ws_.branch),
                                  std::span<float>(ws_.out.data(), size), residual);
        residual.previous = residual.record;
        if (adds) {
          Depth(n);
        } else {
          ws_.gate.topRows(n).array() = ops::Sigmoid(ws_.out.topRows(n).array());
          gated = true;
        }
      }
      Width(w.attention_hc, n, true);
      Attention(l, w, n, p0, gated);
      KeepCandidates(4 * l, n);
      Depth(n);
      Width(w.ffn_hc, n, true);
      FeedForward(w, n);
      KeepCandidates(4 * l + 2, n);
      Depth(n);
    }
  }

  // ws.out rows [0, n) = the sum of row i's streams.
  void ReduceStreams(Index n) {
    for (Index i = 0; i < n; ++i) {
      ws_.out.row(i) = ws_.streams.row(i * s_);
      for (Index s = 1; s < s_; ++s) ws_.out.row(i) += ws_.streams.row(i * s_ + s);
    }
  }

 private:
  // The hyper-connection's width connection: ws.branch = the branch input of every row and,
  // when the branch output is added back (`adds`), ws.mixed = the streams mixed by the Sinkhorn
  // matrix and ws.beta = the output weights (model.hpp HyperConnectionWeights). All of it in
  // float32, as hyper-connections computes it.
  void Width(const HyperConnectionWeights& hc, Index n, bool adds) {
    if (s_ == 1) {  // a plain residual
      ws_.branch.topRows(n) = ws_.streams.topRows(n);
      return;
    }
    const Index rows = n * s_, e = 1 + s_;
    const float scale = std::sqrt(static_cast<float>(d_));
    for (Index r = 0; r < rows; ++r) {  // F.normalize(h) * sqrt(d) * (gamma + 1)
      const float norm = std::max(ws_.streams.row(r).norm(), 1e-12f);
      ws_.normed.row(r) = ws_.streams.row(r).cwiseProduct(RowOf(hc.norm)) * (scale / norm);
    }
    Multiply(ws_.dynamic.topRows(rows), ws_.normed.topRows(rows),
             ConstView(hc.dynamic_alpha.data(), d_, e, e));
    const float pre_scale = hc.alpha_scale[0], mix_scale = hc.alpha_scale[1];
    for (Index i = 0; i < n; ++i) {
      const Index r0 = i * s_;
      ws_.branch.row(i).setZero();
      for (Index s = 0; s < s_; ++s) {
        const float a = ops::Sigmoid(pre_scale * ws_.dynamic(r0 + s, 0) + hc.static_alpha[s * e]);
        ws_.branch.row(i) += a * ws_.streams.row(r0 + s);
      }
      if (!adds) continue;
      // H = Sinkhorn(L), L[s][t] = mix_scale * dynamic[s][1 + t] + static_alpha[s][1 + t]:
      // exp(L - max over s per column), then 20 times columns and rows scaled to sum 1.
      float* h = ws_.sinkhorn.data();
      for (Index t = 0; t < s_; ++t) {
        float top = -std::numeric_limits<float>::infinity();
        for (Index s = 0; s < s_; ++s) {
          h[s * s_ + t] = mix_scale * ws_.dynamic(r0 + s, 1 + t) + hc.static_alpha[s * e + 1 + t];
          top = std::max(top, h[s * s_ + t]);
        }
        for (Index s = 0; s < s_; ++s) h[s * s_ + t] = std::exp(h[s * s_ + t] - top);
      }
      for (int iteration = 0; iteration < kSinkhornIterations; ++iteration) {
        for (Index t = 0; t < s_; ++t) {
          float sum = 0;
          for (Index s = 0; s < s_; ++s) sum += h[s * s_ + t];
          sum = std::max(sum, 1e-12f);
          for (Index s = 0; s < s_; ++s) h[s * s_ + t] /= sum;
        }
        for (Index s = 0; s < s_; ++s) {
          float sum = 0;
          for (Index t = 0; t < s_; ++t) sum += h[s * s_ + t];
          sum = std::max(sum, 1e-12f);
          for (Index t = 0; t < s_; ++t) h[s * s_ + t] /= sum;
        }
      }
      for (Index t = 0; t < s_; ++t) {
        ws_.mixed.row(r0 + t).setZero();
        for (Index s = 0; s < s_; ++s) {
          ws_.mixed.row(r0 + t) += h[s * s_ + t] * ws_.streams.row(r0 + s);
        }
        const float dynamic_beta = ws_.normed.row(r0 + t).dot(RowOf(hc.dynamic_beta));
        ws_.beta[static_cast<size_t>(r0 + t)] =
            2.0f * ops::Sigmoid(hc.beta_scale[0] * dynamic_beta + hc.static_beta[t]);
      }
    }
  }

  // The depth connection: streams = mixed + beta * ws.out (S = 1: streams += ws.out).
  void Depth(Index n) {
    if (s_ == 1) {
      ws_.streams.topRows(n) += ws_.out.topRows(n);
      return;
    }
    for (Index i = 0; i < n; ++i) {
      for (Index s = 0; s < s_; ++s) {
        const Index r = i * s_ + s;
        ws_.streams.row(r) = ws_.mixed.row(r) + ws_.beta[static_cast<size_t>(r)] * ws_.out.row(i);
      }
    }
  }

  // tp_mac.qkv_views: the branch's input and output (ws.branch, ws.out) become candidates
  // `first` and `first` + 1 of the later layers' memory views.
  void KeepCandidates(size_t first, Index n) {
    if (first + 1 >= ws_.candidates.size()) return;  // none, or the last layer's
    ws_.candidates[first].topRows(n) = ws_.branch.topRows(n);
    ws_.candidates[first + 1].topRows(n) = ws_.out.topRows(n);
  }

  // Memory layer l's three views from its branch input X_0 = ws.branch and the candidates
  // X_1..X_{L-1} of the layers before it (L = 4 l + 1): logits [n, 3L] = RMSNorm(X_0) W + b,
  // p[v, j] = softmax over j of logits[v L + j], view_v = sum_j p[v, j] X_j; v = 0 retrieve,
  // 1 keys, 2 values.
  void SelectViews(size_t l, const TpMacLayerWeights& w, Index n) {
    const Index choices = 4 * static_cast<Index>(l) + 1;
    Norm(w.views_norm, n);
    auto logits = ws_.selector.topLeftCorner(n, 3 * choices);
    Multiply(logits, ws_.xn.topRows(n), ConstView(w.views_w.data(), d_, 3 * choices, 3 * choices));
    logits.rowwise() += RowOf(w.views_b);
    RowMatrix* views[3] = {&ws_.retrieve_view, &ws_.key_view, &ws_.value_view};
    for (Index i = 0; i < n; ++i) {
      for (Index v = 0; v < 3; ++v) {
        auto p = logits.row(i).segment(v * choices, choices);
        p = (p.array() - p.maxCoeff()).exp().matrix();
        p /= p.sum();
        auto view = views[v]->row(i);
        view = p(0) * ws_.branch.row(i);
        for (Index j = 1; j < choices; ++j) {
          view += p(j) * ws_.candidates[static_cast<size_t>(j - 1)].row(i);
        }
      }
    }
  }

  void Norm(const std::vector<float>& gain, Index n) {
    RmsNormRows(ws_.branch.data(), gain, n, d_, 1, c_.norm_eps, ws_.xn.data());
  }

  // ws.out = SegmentedAttention(ws.branch), times ws.gate when `gated`.
  void Attention(size_t l, const TpMacLayerWeights& w, Index n, int64_t p0, bool gated) {
    const AttentionShape shape = CacheShapeOf(c_);
    const Index qw = shape.q_width(), heads = shape.heads, dh = shape.head_dim;
    // The norm, then shares of the q, k, v projections' columns (MultiplyEach).
    Norm(w.attention_norm, n);
    MultiplyEach(options_, n, ws_.xn.data(),
                 std::array<linalg::WeightMatrix, 3>{bf16_.Matrix(w.attention.w_q, d_, qw),
                                                     bf16_.Matrix(w.attention.w_k, d_, qw),
                                                     bf16_.Matrix(w.attention.w_v, d_, qw)},
                 std::array<RowMatrix*, 3>{&ws_.q, &ws_.k, &ws_.v});
    const auto input = ws_.xn.topRows(n);
    if (l == 0) {
      ws_.v_first.topRows(n) = ws_.v.topRows(n);
    } else {  // value residual: v = lerp(v, v_first, sigmoid(x W_mix + b)) per head
      Multiply(ws_.mix.topRows(n), input, ConstView(w.v_mix.data(), d_, heads, heads));
      for (Index i = 0; i < n; ++i) {
        for (Index h = 0; h < heads; ++h) {
          const float m = ops::Sigmoid(ws_.mix(i, h) + w.v_mix_bias[static_cast<size_t>(h)]);
          auto v = ws_.v.row(i).segment(h * dh, dh);
          v += m * (ws_.v_first.row(i).segment(h * dh, dh) - v);
        }
      }
    }
    ApplyRotary(ws_.q.data(), static_cast<int>(n), shape.heads, shape.head_dim, ws_.rotary.data());
    ApplyRotary(ws_.k.data(), static_cast<int>(n), shape.heads, shape.head_dim, ws_.rotary.data());
    AttentionCache& cache = *state_.attention[l];
    if (c_.tp_mac.sliding) {
      ws_.attention.Forward(
          shape, cache,
          AttentionInputsOf(w.attention, shape, ws_.q.data(), ws_.k.data(), ws_.v.data()),
          static_cast<int>(n), ws_.att.data());
    } else {  // block-diagonal: the cache holds the current window's rows
      const int64_t window = c_.attention.window;
      for (Index r0 = 0; r0 < n;) {
        const int64_t p = p0 + r0;
        if (p % window == 0) cache.Reset();
        const Index rows = std::min<Index>(n - r0, window - p % window);
        const Index offset = r0 * qw;
        ws_.attention.Forward(shape, cache,
                              AttentionInputsOf(w.attention, shape, ws_.q.data() + offset,
                                                ws_.k.data() + offset, ws_.v.data() + offset),
                              static_cast<int>(rows), ws_.att.data() + offset);
        r0 += rows;
      }
    }
    ParallelMultiply(options_, ws_.out.topRows(n), ws_.att.topRows(n),
                     bf16_.Matrix(w.attention.w_o, qw, d_));
    if (gated) ws_.out.topRows(n).array() *= ws_.gate.topRows(n).array();
  }

  // ws.out = W_down ((x W_up + b_up) * SiLU(x W_gate + b_gate)) + b_down, x = RMSNorm(branch):
  // one region, the norm by rows, a barrier, shares of the products' columns (SwiGluShare).
  void FeedForward(const TpMacLayerWeights& w, Index n) {
    const Index f = c_.ffn_hidden;
    const SwiGluWeights ffn{bf16_.Matrix(w.ffn_gate, d_, f),
                            bf16_.Matrix(w.ffn_up, d_, f),
                            bf16_.Matrix(w.ffn_down, f, d_),
                            &w.ffn_gate_bias,
                            &w.ffn_up_bias,
                            &w.ffn_down_bias};
    ForColumnShares(options_, SwiGluWork(n, ffn), [&](int ith, int nth) {
      const Range r = RowShare(n, ith, nth);
      RmsNormRows(ws_.branch.data() + r.begin * d_, w.ffn_norm, r.size(), d_, 1, c_.norm_eps,
                  ws_.xn.data() + r.begin * d_);
      Barrier(nth);
      SwiGluShare(ith, nth, n, ws_.xn.data(), ffn, ws_.ffn_a.data(), ws_.ffn_b.data(),
                  ws_.out.data());
    });
  }

  static constexpr int kSinkhornIterations = 20;  // hyper-connections' default

  const ModelConfig& c_;
  const TpMacWeights& w_;
  const ops::Bf16Copies& bf16_;  // a kBf16 model's product matrices
  State& state_;
  TpMacWorkspace& ws_;
  const SessionOptions& options_;
  const Index d_, s_;
};

class TitansPytorchMacRunner final : public Runner {
 public:
  TitansPytorchMacRunner(const Model& model, const SessionOptions& options)
      : model_(model),
        options_(options),
        ws_(model, options),
        governor_(options.threads, options.adapt_threads, options.min_flops_per_thread) {}

  AttentionShape CacheShape(size_t) const override { return CacheShapeOf(model_.config()); }
  int64_t MemoryPosition(int64_t position) const override {
    return TpMacRows(model_.config(), position);
  }
  // A sliding cache is at the row position; a block-diagonal one holds its window's rows.
  int64_t CachePosition(size_t, int64_t position) const override {
    const ModelConfig& c = model_.config();
    const int64_t rows = TpMacRows(c, position);
    return c.tp_mac.sliding ? rows : SegmentLocalRows(rows, c.attention.window);
  }

  // Runs the tokens after the rows the session already ran, piece by piece of interspersed rows.
  void Run(State& state, const int32_t* tokens, const float* embeddings, int64_t n, float* logits,
           float* hidden) override {
    const Model& model = model_;
    const SessionOptions& options = options_;
    TpMacWorkspace& ws = ws_;
    const ModelConfig& c = model.config();
    const ModelWeights& w = model.weights();
    const Index d = c.d_model, vocab = c.vocab_size, inner = c.tp_mac.memory_segment;
    TpMacStack stack(model, state, ws, options);
    int64_t row0 = TpMacRows(c, state.position);  // interspersed position of the piece's row 0
    Index rows = 0;

    // Runs the piece and writes the outputs of its token rows (consecutive tokens of this call).
    auto flush = [&] {
      if (rows == 0) return;
      const ops::ThreadGovernor::Scope governed(governor_, rows);
      stack.Run(rows, row0);
      stack.ReduceStreams(rows);
      Index kept = 0;
      int64_t first = -1;
      for (Index i = 0; i < rows; ++i) {
        const int64_t token = ws.row_token[static_cast<size_t>(i)];
        if (token < 0) continue;
        if (first < 0) first = token;
        ws.branch.row(kept++) = ws.out.row(i);
      }
      if (kept > 0) {
        float* normed = logits != nullptr ? ws.xn.data() : hidden + first * d;
        RmsNormRows(ws.branch.data(), w.final_norm, kept, d, 1, c.norm_eps, normed);
        if (logits != nullptr) {
          ParallelMultiply(options, View(logits + first * vocab, kept, vocab, vocab),
                           ws.xn.topRows(kept), model.bf16_copies().Matrix(w.lm_head, d, vocab));
        }
      }
      row0 += rows;
      rows = 0;
    };
    // Appends one row: `source` [d] plus the axial position embedding of its position.
    auto append = [&](const float* source, int64_t token) {
      const int64_t p = row0 + rows;
      if (p / inner != ws.axial_outer_index) {
        ws.axial_outer_index = p / inner;
        AxialMlp(w.tp_mac.axial[0], ws.axial_outer_index, 1, d, ws.axial_h0, ws.axial_h1,
                 ws.axial_outer.data());
      }
      ws.x.row(rows) = ConstView(source, 1, d, d) + ws.axial_outer + ws.axial_inner.row(p % inner);
      ws.row_token[static_cast<size_t>(rows)] = token;
      if (++rows == TpMacWorkspace::kPiece) flush();
    };

    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = state.position + i;
      if (t > 0 && t % c.segment == 0) {
        for (int m = 0; m < c.tp_mac.longterm_tokens; ++m) {
          append(w.tp_mac.longterm.data() + m * d, -1);
        }
      }
      append(tokens != nullptr ? w.embedding.data() + static_cast<Index>(tokens[i]) * d
                               : embeddings + i * d,
             i);
    }
    flush();
    state.position += n;
  }

 private:
  const Model& model_;
  const SessionOptions options_;
  TpMacWorkspace ws_;
  ops::ThreadGovernor governor_;  // one thread or the team, per piece
};

}  // namespace

std::unique_ptr<Runner> MakeTitansPytorchMac(const Model& model, const SessionOptions& options) {
  return std::make_unique<TitansPytorchMacRunner>(model, options);
}

}  // namespace titans::arch
