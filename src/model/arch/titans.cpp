// The Titans stack (architecture kTitans; docs/SEMANTICS.md sections 2 and 3): the Runner of
// src/model/arch/architecture.hpp for its models. Session (src/model/session.cpp) checks the
// inputs and owns the state; a titans-pytorch MemoryAsContextTransformer model
// (kTitansPytorchMac) runs in titans_pytorch_mac.cpp instead.
//
// The stream is processed in pieces of at most kPiece tokens; each piece goes through the whole
// stack before the next one starts, so every layer sees its input in order and a session can
// be fed any number of tokens at a time. Per piece and layer (pre-norm, residual; x is the
// residual stream [n, d]):
//   kLmm        x += Mem(n(x));                                x += FFN(n(x))
//   kMal        x += Mem(n(x)); x += SWA(n_a(x));              x += FFN(n(x))
//   kMag        u = n(x); x += N_y(SWA(u)) * sigmoid(N_m(Mem(u)));  x += FFN(n(x))
//   kAttention  x += SWA(n(x));                                x += FFN(n(x))
//   kMac        u = n(x); per segment of C_s tokens: h = Mem*(u) read with the memory as it
//               was at the segment start; y = Attn over [persistent | h_j, u_j for j <= i];
//               x += y * sigmoid(Mem(y)) (the memory stores y);  x += FFN(n(x))
// where Mem(u) = W_o (RMSNorm_heads(M(u)) * SiLU(u W_g)) is the memory branch and
// SWA(u) = W_o Attn(rot(u W_q), rot(u W_k), u W_v) the windowed attention.
//
// MAC's attention runs the same kernel over the interleaved sequence h_0, u_0, h_1, u_1, ...
// of the current segment (its cache is emptied at every segment start): causal order in it
// is exactly "token i sees h_j and u_j for j <= i". h_i and u_i share token i's rotary
// position. The kernel also computes outputs at the h slots, which are dropped: MAC pays
// twice the attention FLOPs of a plain segment-local layer for this simplicity.
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <memory>
#include <span>
#include <vector>

#include "memory/batch.hpp"
#include "model/arch/architecture.hpp"
#include "model/session_kernels.hpp"
#include "model/session_state.hpp"
#include "ops/activations.hpp"
#include "ops/attention.hpp"
#include "ops/flush_denormals.hpp"
#include "ops/linalg.hpp"
#include "ops/norms.hpp"
#include "ops/thread_governor.hpp"
#include "ops/threading.hpp"

namespace titans::arch {
namespace {

using namespace linalg;   // NOLINT: the stack is written in terms of these helpers
using namespace session;  // NOLINT: state, layer kinds and attention shapes

constexpr int kPiece = 64;  // tokens per pass through the stack

bool HasMac(const ModelConfig& c) {
  return std::find(c.layers.begin(), c.layers.end(), BlockKind::kMac) != c.layers.end();
}

// MAC's segment-local attention: the whole current segment (2 C_s interleaved rows) is visible.
AttentionShape MacShapeOf(const ModelConfig& c) {
  AttentionShape s = ShapeOf(c);
  s.window = 2 * c.segment;
  return s;
}

// Scratch for P rows, sized once: a session's pieces of kPiece tokens, or a batch of P
// sessions' tokens (TitansBatchRunner).
struct TitansWorkspace {
  TitansWorkspace(const ModelConfig& c, const SessionOptions& options, Index rows)
      : attention(ShapeOf(c), options.threads, options.min_flops_per_thread),
        x(rows, c.d_model),
        u(rows, c.d_model),
        t(rows, c.d_model),
        y(rows, c.d_model),
        q(rows, c.attention.heads * c.attention.head_dim),
        k(rows, c.attention.kv_heads * c.attention.head_dim),
        v(rows, c.attention.kv_heads * c.attention.head_dim),
        att(rows, c.attention.heads * c.attention.head_dim),
        mem(rows, c.memory.inner_dim()),
        gate(rows, c.memory.inner_dim()),
        ffn_a(rows, c.ffn_hidden),
        ffn_b(rows, c.ffn_hidden),
        mac_h(HasMac(c) ? rows : 0, c.d_model),
        mac_z(HasMac(c) ? 2 * rows : 0, c.d_model),
        mac_q(HasMac(c) ? 2 * rows : 0, c.attention.heads * c.attention.head_dim),
        mac_k(HasMac(c) ? 2 * rows : 0, c.attention.kv_heads * c.attention.head_dim),
        mac_v(HasMac(c) ? 2 * rows : 0, c.attention.kv_heads * c.attention.head_dim),
        mac_att(HasMac(c) ? 2 * rows : 0, c.attention.heads * c.attention.head_dim),
        rotary(rows, c.attention.head_dim) {}
  AttentionWorkspace attention;
  RowMatrix x;                             // [P, d] residual stream
  RowMatrix u, t, y;                       // [P, d] normalised inputs and branch outputs
  RowMatrix q, k, v;                       // [P, Ha*da], [P, Hkv*da] x 2
  RowMatrix att;                           // [P, Ha*da] attention output before W_o
  RowMatrix mem, gate;                     // [P, H*dh] memory read and its SiLU gate
  RowMatrix ffn_a, ffn_b;                  // [P, f]
  RowMatrix mac_h;                         // [P, d] MAC: the memory's context tokens h
  RowMatrix mac_z;                         // [2P, d] MAC: interleaved h_0, u_0, h_1, u_1, ...
  RowMatrix mac_q, mac_k, mac_v, mac_att;  // [2P, ...] their projections and attention
  RowMatrix rotary;                        // [P, da] each row's rotary angles (RotaryAngles)
  // A batch's (TitansBatchRunner; empty for a session's pieces): per layer with memory its
  // MemoryBatch (else null), the P sessions' memories of the layer being run, and one
  // one-thread attention workspace per thread (the sessions' attention is shared out by
  // session, ForEachStream).
  std::vector<std::unique_ptr<MemoryBatch>> memory_batches;
  std::vector<MemorySession*> memories;
  std::vector<AttentionWorkspace> stream_attention;
};

// Rows [row, row + rows) of the workspace are the next tokens of one stream, at positions
// position, position + 1, ...: a session's piece is one stream, a batched decode step
// (TitansBatchRunner::Step) one stream of one row per session, a round of a batched prefill
// (TitansBatchRunner::Prefill) one stream of up to a few rows per session.
struct Stream {
  State* state;
  int64_t position;
  Index row, rows;
};

// Whether `streams` are a batched decode step: more than one stream, one row each. Their
// memories' input projections and MAC rounds are shared; otherwise (a session's piece, a batched
// prefill's pieces) each stream's memory and MAC segments run on its own rows.
inline bool IsDecodeStep(std::span<const Stream> streams) {
  return streams.size() > 1 &&
         std::all_of(streams.begin(), streams.end(), [](const Stream& s) { return s.rows == 1; });
}

// The blocks, one function per sub-layer; `n` rows of the workspace are live, made of the
// streams' rows in order. The products over the n rows are shared; attention and the memory run
// per stream, on its own state.
class TitansStack {
 public:
  TitansStack(const Model& model, std::span<const Stream> streams, TitansWorkspace& ws,
              const SessionOptions& options)
      : model_(model), c_(model.config()), streams_(streams), ws_(ws), options_(options) {}

  // Runs rows [0, n) of ws.x through every layer.
  void Run(Index n) {
    // The rotary angles of the rows' positions, once for all the layers.
    if (std::any_of(c_.layers.begin(), c_.layers.end(), HasAttention)) {
      for (const Stream& s : streams_) {
        RotaryAngles(static_cast<int>(s.rows), c_.attention.head_dim, s.position,
                     c_.attention.rope_base, ws_.rotary.row(s.row).data());
      }
    }
    for (size_t l = 0; l < c_.layers.size(); ++l) {
      const LayerWeights& w = model_.weights().layers[l];
      switch (c_.layers[l]) {
        case BlockKind::kLmm:
          Norm(ws_.x, w.norm, n, ws_.u);
          MemoryBranch(l, w, streams_, 0, n, ws_.u.data(), ws_.u.data(), ws_.t.data());
          ws_.x.topRows(n) += ws_.t.topRows(n);
          break;
        case BlockKind::kMal:
          Norm(ws_.x, w.norm, n, ws_.u);
          MemoryBranch(l, w, streams_, 0, n, ws_.u.data(), ws_.u.data(), ws_.t.data());
          ws_.x.topRows(n) += ws_.t.topRows(n);
          Norm(ws_.x, w.attn_norm, n, ws_.u);
          Attention(l, w, n, ws_.u, ws_.t);
          ws_.x.topRows(n) += ws_.t.topRows(n);
          break;
        case BlockKind::kMag: {
          Norm(ws_.x, w.norm, n, ws_.u);
          Attention(l, w, n, ws_.u, ws_.y);
          MemoryBranch(l, w, streams_, 0, n, ws_.u.data(), ws_.u.data(), ws_.t.data());
          // x += N_y(y) * sigmoid(N_m(m)); u is free again and holds N_y(y).
          Norm(ws_.y, w.gate_norm_y, n, ws_.u);
          Norm(ws_.t, w.gate_norm_m, n, ws_.y);
          GatedResidual(n, ws_.u, ws_.y);
          break;
        }
        case BlockKind::kAttention:
          Norm(ws_.x, w.norm, n, ws_.u);
          Attention(l, w, n, ws_.u, ws_.t);
          ws_.x.topRows(n) += ws_.t.topRows(n);
          break;
        case BlockKind::kMac:
          Norm(ws_.x, w.norm, n, ws_.u);
          MemoryAsContext(l, w, n);
          break;
      }
      FeedForward(w, n);
    }
    for (const Stream& s : streams_) s.state->position += s.rows;
  }

  void Norm(const RowMatrix& in, const std::vector<float>& gain, Index n, RowMatrix& out) const {
    RmsNormRows(in.data(), gain, n, c_.d_model, 1, c_.norm_eps, out.data());
  }

 private:
  // A product matrix [rows, cols] of the model: its bf16 copy for a kBf16 model.
  linalg::WeightMatrix Matrix(const std::vector<float>& w, Index rows, Index cols) const {
    return model_.bf16_copies().Matrix(w, rows, cols);
  }

  // out [n, d] = SWA(in): rotary queries and keys at each stream's positions, its layer's ring
  // of the last w keys and values, the persistent pairs.
  void Attention(size_t l, const LayerWeights& w, Index n, const RowMatrix& in, RowMatrix& out) {
    const AttentionShape shape = ShapeOf(c_);
    const Index d = c_.d_model, qw = shape.q_width(), kw = shape.kv_width();
    Projections(n, in, w.attention, ws_.q, ws_.k, ws_.v);
    ForEachStream(streams_, shape, [&](const Stream& s, AttentionWorkspace& attention) {
      AttentionCache& cache = *s.state->attention[l];
      float* q = ws_.q.data() + s.row * qw;
      float* k = ws_.k.data() + s.row * kw;
      const int rows = static_cast<int>(s.rows);
      const float* angles = ws_.rotary.row(s.row).data();  // at s.position = cache.position()
      ApplyRotary(q, rows, shape.heads, shape.head_dim, angles);
      ApplyRotary(k, rows, shape.kv_heads, shape.head_dim, angles);
      attention.Forward(shape, cache,
                        AttentionInputsOf(w.attention, shape, q, k, ws_.v.data() + s.row * kw),
                        rows, ws_.att.data() + s.row * qw);
    });
    ParallelMultiply(options_, out.topRows(n), ws_.att.topRows(n), Matrix(w.attention.w_o, qw, d));
  }

  // Rows [0, n) of q, k, v = in W_q, in W_k, in W_v, shares of their columns.
  void Projections(Index n, const RowMatrix& in, const AttentionWeights& w, RowMatrix& q,
                   RowMatrix& k, RowMatrix& v) {
    const AttentionShape shape = ShapeOf(c_);
    const Index d = c_.d_model, qw = shape.q_width(), kw = shape.kv_width();
    MultiplyEach(options_, n, in.data(),
                 std::array<linalg::WeightMatrix, 3>{Matrix(w.w_q, d, qw), Matrix(w.w_k, d, kw),
                                                     Matrix(w.w_v, d, kw)},
                 std::array<RowMatrix*, 3>{&q, &k, &v});
  }

  // fn(stream, workspace) for each of `streams`: their attention on their own caches. A
  // session's piece (one stream) runs on this thread with the workspace that threads its own
  // call; a batch's streams (one row each) are handed out one at a time to up to
  // options_.threads threads, each with its one-thread workspace, so that a stream's result does
  // not depend on the thread count. The work is the attention's FLOPs of a full window per row.
  template <class Fn>
  void ForEachStream(std::span<const Stream> streams, const AttentionShape& shape, Fn fn) {
    if (streams.size() == 1) {
      fn(streams[0], ws_.attention);
      return;
    }
    const double flops_per_stream =
        4.0 * static_cast<double>(shape.window + shape.persistent + 1) * shape.q_width();
    const int count = static_cast<int>(streams.size());
    const int team = ops::TeamSize(flops_per_stream * count, options_.threads,
                                   options_.min_flops_per_thread, count);
    std::atomic<int> next{0};
    std::exception_ptr error;  // the first failure of a worker (a cache that cannot grow)
    const auto share = [&](int ith) {
      const FlushDenormals flush;  // on every thread that computes (ops/flush_denormals.hpp)
      for (int i = next.fetch_add(1, std::memory_order_relaxed); i < count;
           i = next.fetch_add(1, std::memory_order_relaxed)) {
        try {
          fn(streams[static_cast<size_t>(i)], ws_.stream_attention[static_cast<size_t>(ith)]);
        } catch (...) {
#pragma omp critical(titans_stream_error)
          if (!error) error = std::current_exception();
        }
      }
    };
    if (team == 1) {
      share(0);
    } else {
#pragma omp parallel num_threads(team)
      share(omp_get_thread_num());
    }
    if (error) std::rethrow_exception(error);
  }

  // out [n, d] = W_o (RMSNorm_heads(M(retrieve)) * SiLU(retrieve W_g)) for the n rows from row
  // r0 of the workspace, made of `streams`' rows (stream s's at offset s.row - r0 of each
  // pointer; rows of [., d]). With a store input each stream's memory writes its rows (and
  // reads retrieve, as its read rule allows); without one (MAC's context tokens) it only reads,
  // with the weights it has now.
  void MemoryBranch(size_t l, const LayerWeights& w, std::span<const Stream> streams, Index r0,
                    Index n, const float* store, const float* retrieve, float* out) {
    const Index d = c_.d_model, hd = c_.memory.inner_dim();
    if (!IsDecodeStep(streams)) {  // a session's piece, or a batched prefill's pieces
      for (const Stream& s : streams) {
        const Index at = s.row - r0;
        const auto r = std::span<const float>(retrieve + at * d, static_cast<size_t>(s.rows * d));
        const auto m = std::span<float>(ws_.mem.data() + at * hd, static_cast<size_t>(s.rows * hd));
        MemorySession& memory = *s.state->memory[l];
        if (store != nullptr) {
          memory.Forward(std::span<const float>(store + at * d, static_cast<size_t>(s.rows * d)), r,
                         m);
        } else {
          memory.Read(r, m);
        }
      }
    } else {  // a batch, one row per stream: the memories' input projections are shared too
      for (size_t i = 0; i < streams.size(); ++i) {
        ws_.memories[i] = streams[i].state->memory[l].get();
      }
      const std::span<MemorySession* const> memories(ws_.memories.data(), streams.size());
      if (store != nullptr) {
        ws_.memory_batches[l]->Forward(memories, store, retrieve, ws_.mem.data());
      } else {
        ws_.memory_batches[l]->Read(memories, retrieve, ws_.mem.data());
      }
    }
    const linalg::WeightMatrix w_g = Matrix(w.memory.w_g, d, hd), w_o = Matrix(w.memory.w_o, hd, d);
    // This thread's columns of the gate, a barrier, its rows of the heads' norm and the gating
    // (SiluProduct), a barrier, its columns of the output.
    const double flops = ProductFlops(n, d, hd) + ProductFlops(n, hd, d);
    ForColumnShares(
        options_, ChainWork(n, flops, WeightBytes(w_g) + WeightBytes(w_o)), [&](int ith, int nth) {
          const Range j = ColumnShare(hd, ith, nth);
          if (j.size() > 0) {
            Multiply(ws_.gate.block(0, j.begin, n, j.size()), ConstView(retrieve, n, d, d),
                     w_g.Columns(j.begin, j.size()));
          }
          Barrier(nth);
          const Range r = RowShare(n, ith, nth);
          float* mem = ws_.mem.data() + r.begin * hd;
          RmsNormRows(mem, w.memory.norm, r.size(), hd, c_.memory.heads, c_.norm_eps, mem);
          SiluProduct(r.size(), hd, hd, ws_.gate.data() + r.begin * hd, mem, mem);
          Barrier(nth);
          const Range o = ColumnShare(d, ith, nth);
          if (o.size() > 0) {
            Multiply(View(out + o.begin, n, o.size(), d), ws_.mem.topRows(n),
                     w_o.Columns(o.begin, o.size()));
          }
        });
  }

  // Memory as context on rows [0, n) of ws_.u = n(x): x += y * sigmoid(Mem(y)), in rounds whose
  // streams each lie in one segment.
  void MemoryAsContext(size_t l, const LayerWeights& w, Index n) {
    if (!IsDecodeStep(streams_)) {
      // A piece may end one segment and start the next: a round per segment of each stream.
      for (const Stream& s : streams_) {
        for (Index r0 = 0; r0 < s.rows;) {
          const int64_t position = s.position + r0;
          const Index rows = std::min<Index>(s.rows - r0, c_.segment - position % c_.segment);
          const Stream part{s.state, position, s.row + r0, rows};
          MemoryAsContextRound(l, w, std::span<const Stream>(&part, 1), part.row, rows);
          r0 += rows;
        }
      }
    } else {
      // A batch: one row per stream, so every stream lies in one segment.
      MemoryAsContextRound(l, w, streams_, 0, n);
    }
    GatedResidual(n, ws_.y, ws_.t);
  }

  // Rows [0, n) of x += value * sigmoid(gate) ([n, d] each; gate is overwritten), the sigmoid
  // through ops::LaneWise: a row's bits do not depend on where it lies (a batch's row i).
  void GatedResidual(Index n, const RowMatrix& value, RowMatrix& gate) {
    ops::LaneWise(n * c_.d_model, value.data(), gate.data(), gate.data(),
                  [](const auto& v, const auto& g) { return v * ops::Sigmoid(g); });
    ws_.x.topRows(n) += gate.topRows(n);
  }

  // One round on rows [r0, r0 + n) of ws_.u, made of `round`'s streams, each within one segment:
  // rows [r0, r0 + n) of y = the attention outputs, of t = Mem(y).
  void MemoryAsContextRound(size_t l, const LayerWeights& w, std::span<const Stream> round,
                            Index r0, Index n) {
    const AttentionShape shape = MacShapeOf(c_);
    const Index d = c_.d_model, qw = shape.q_width();
    // h = Mem*(u): the memory as it was at the segment start (it is written at the end).
    MemoryBranch(l, w, round, r0, n, nullptr, ws_.u.data() + r0 * d, ws_.mac_h.data());
    for (Index i = 0; i < n; ++i) {
      ws_.mac_z.row(2 * i) = ws_.mac_h.row(i);
      ws_.mac_z.row(2 * i + 1) = ws_.u.row(r0 + i);
    }
    Projections(2 * n, ws_.mac_z, w.attention, ws_.mac_q, ws_.mac_k, ws_.mac_v);
    ForEachStream(round, shape, [&](const Stream& s, AttentionWorkspace& attention) {
      const Index z0 = 2 * (s.row - r0);  // the stream's first row in z
      AttentionCache& cache = *s.state->attention[l];
      if (s.position % c_.segment == 0) cache.Reset();  // a new segment
      for (Index i = 0; i < 2 * s.rows; ++i) {          // h_i and u_i at token i's position
        const float* angles = ws_.rotary.row(s.row + i / 2).data();
        ApplyRotary(ws_.mac_q.row(z0 + i).data(), 1, shape.heads, shape.head_dim, angles);
        ApplyRotary(ws_.mac_k.row(z0 + i).data(), 1, shape.kv_heads, shape.head_dim, angles);
      }
      attention.Forward(shape, cache,
                        AttentionInputsOf(w.attention, shape, ws_.mac_q.row(z0).data(),
                                          ws_.mac_k.row(z0).data(), ws_.mac_v.row(z0).data()),
                        static_cast<int>(2 * s.rows), ws_.mac_att.row(z0).data());
    });
    // y = the u slots' outputs (odd rows), projected; the memory stores y and reads it.
    ParallelMultiply(options_, ws_.y.middleRows(r0, n),
                     ConstView(ws_.mac_att.data() + qw, n, qw, 2 * qw),
                     Matrix(w.attention.w_o, qw, d));
    MemoryBranch(l, w, round, r0, n, ws_.y.data() + r0 * d, ws_.y.data() + r0 * d,
                 ws_.t.data() + r0 * d);
  }

  // x += W_down (SiLU(n(x) W_gate) * (n(x) W_up)) in one region: the norm by rows, a barrier,
  // shares of the products' columns (SwiGluShare), each thread's output columns added to x.
  void FeedForward(const LayerWeights& w, Index n) {
    const Index d = c_.d_model, f = c_.ffn_hidden;
    const SwiGluWeights ffn{Matrix(w.ffn_gate, d, f), Matrix(w.ffn_up, d, f),
                            Matrix(w.ffn_down, f, d)};
    ForColumnShares(options_, SwiGluWork(n, ffn), [&](int ith, int nth) {
      const Range r = RowShare(n, ith, nth);
      RmsNormRows(ws_.x.data() + r.begin * d, w.ffn_norm, r.size(), d, 1, c_.norm_eps,
                  ws_.u.data() + r.begin * d);
      Barrier(nth);
      SwiGluShare(ith, nth, n, ws_.u.data(), ffn, ws_.ffn_a.data(), ws_.ffn_b.data(), ws_.t.data());
      const Range o = ColumnShare(d, ith, nth);
      ws_.x.block(0, o.begin, n, o.size()) += ws_.t.block(0, o.begin, n, o.size());
    });
  }

  const Model& model_;
  const ModelConfig& c_;
  std::span<const Stream> streams_;
  TitansWorkspace& ws_;
  const SessionOptions& options_;
};

// n tokens, one row each, through the stack (its streams make up the n rows): rows [0, n) of
// ws.x are their embeddings, logits [n, V] the head of the final norm.
void RunTokens(const Model& model, const SessionOptions& options, TitansWorkspace& ws,
               std::span<const Stream> streams, const int32_t* tokens, Index n, float* logits) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const Index d = c.d_model, vocab = c.vocab_size;
  const ConstMatMap embedding = ConstView(w.embedding.data(), vocab, d, d);
  for (Index i = 0; i < n; ++i) ws.x.row(i) = embedding.row(tokens[i]);
  TitansStack stack(model, streams, ws, options);
  stack.Run(n);
  // logits = n(x) W_head in one region: the final norm by rows, a barrier, shares of the
  // vocabulary's columns (a tied head's embedding rows).
  const double flops = ProductFlops(n, d, vocab);
  ForColumnShares(
      options, ChainWork(n, flops, 4.0 * static_cast<double>(vocab * d)), [&](int ith, int nth) {
        const Range r = RowShare(n, ith, nth);
        RmsNormRows(ws.x.data() + r.begin * d, w.final_norm, r.size(), d, 1, c.norm_eps,
                    ws.u.data() + r.begin * d);
        Barrier(nth);
        const Range j = ColumnShare(vocab, ith, nth);
        if (j.size() == 0) return;
        MatMap out = View(logits + j.begin, n, j.size(), vocab);
        const auto u = ws.u.topRows(n);
        if (c.tie_embeddings) {
          Multiply(out, u, linalg::TransposedMatrix{w.embedding.data() + j.begin * d, j.size(), d});
        } else {
          Multiply(out, u,
                   model.bf16_copies().Matrix(w.lm_head, d, vocab).Columns(j.begin, j.size()));
        }
      });
}

class TitansRunner final : public Runner {
 public:
  TitansRunner(const Model& model, const SessionOptions& options)
      : model_(model),
        options_(options),
        ws_(model.config(), options, kPiece),
        governor_(options.threads, options.adapt_threads, options.min_flops_per_thread) {}

  // MAC layers have their own, segment-local cache.
  AttentionShape CacheShape(size_t l) const override {
    const ModelConfig& c = model_.config();
    return c.layers[l] == BlockKind::kMac ? MacShapeOf(c) : ShapeOf(c);
  }
  int64_t MemoryPosition(int64_t position) const override { return position; }
  // A MAC cache holds its segment's interleaved h, u rows; the others are at the stream's
  // position.
  int64_t CachePosition(size_t l, int64_t position) const override {
    const ModelConfig& c = model_.config();
    if (c.layers[l] == BlockKind::kMac) return 2 * SegmentLocalRows(position, c.segment);
    return position;
  }

  void Run(State& state, const int32_t* tokens, const float* embeddings, int64_t n, float* logits,
           float* hidden) override {
    const ModelConfig& c = model_.config();
    const Index d = c.d_model, vocab = c.vocab_size;
    for (Index p0 = 0; p0 < n; p0 += kPiece) {
      const Index rows = std::min<Index>(kPiece, n - p0);
      const ops::ThreadGovernor::Scope governed(governor_, rows);
      const Stream stream{&state, state.position, 0, rows};
      const std::span<const Stream> streams(&stream, 1);
      if (tokens != nullptr) {
        RunTokens(model_, options_, ws_, streams, tokens + p0, rows, logits + p0 * vocab);
      } else {
        ws_.x.topRows(rows) = ConstView(embeddings + p0 * d, rows, d, d);
        TitansStack(model_, streams, ws_, options_).Run(rows);
        RmsNormRows(ws_.x.data(), model_.weights().final_norm, rows, d, 1, c.norm_eps,
                    hidden + p0 * d);
      }
    }
  }

 private:
  const Model& model_;
  const SessionOptions options_;
  TitansWorkspace ws_;
  ops::ThreadGovernor governor_;  // one thread or the team, per piece
};

class TitansBatchRunner final : public BatchRunner {
 public:
  TitansBatchRunner(const Model& model, const SessionOptions& options, int max_batch)
      : model_(model),
        options_(options),
        rows_(std::max(max_batch, 4 * kPiece)),
        ws_(model.config(), options, rows_),
        streams_(static_cast<size_t>(max_batch)),
        round_tokens_(static_cast<size_t>(rows_)),
        round_logits_(static_cast<size_t>(rows_) * static_cast<size_t>(model.config().vocab_size)),
        prefill_done_(static_cast<size_t>(max_batch)),
        prefill_first_row_(static_cast<size_t>(max_batch)),
        prefill_members_(static_cast<size_t>(max_batch)),
        governor_(options.threads, options.adapt_threads, options.min_flops_per_thread) {
    for (size_t l = 0; l < model.config().layers.size(); ++l) {
      const auto& memory = model.memory(static_cast<int>(l));
      ws_.memory_batches.push_back(memory ? std::make_unique<MemoryBatch>(memory, options)
                                          : nullptr);
    }
    ws_.memories.resize(static_cast<size_t>(max_batch));
    for (int i = 0; i < options.threads; ++i) {  // (MAC's shape differs only in its window)
      ws_.stream_attention.emplace_back(ShapeOf(model.config()), 1, options.min_flops_per_thread);
    }
  }

  void Step(std::span<State* const> states, const int32_t* tokens, float* logits) override {
    const Index n = static_cast<Index>(states.size());
    for (Index i = 0; i < n; ++i) streams_[i] = {states[i], states[i]->position, i, 1};
    const ops::ThreadGovernor::Scope governed(governor_, n);
    RunTokens(model_, options_, ws_, std::span<const Stream>(streams_.data(), states.size()),
              tokens, n, logits);
  }

  // Rounds of at most rows_ rows (4 x kPiece or max_batch), filled with the sessions' next pieces
  // in order: each session
  // with tokens left gives its next min(kPiece, left) tokens (fewer if the round is full), so a
  // session's share of a round is one piece of its stream, as Session::Forward's are, and every
  // product of a round is shared by the sessions in it. (Equal shares of a few tokens from every
  // session, tried first, ran the memories and attention on pieces too small to be fast: 0.4-0.8x
  // of one prompt after another on the bench models.)
  void Prefill(std::span<State* const> states, std::span<const std::span<const int32_t>> prompts,
               float* logits) override {
    const auto vocab = static_cast<size_t>(model_.config().vocab_size);
    const size_t n = states.size();
    // Session i's next prompt token, and where its logits go: rows [first_row[i], ...).
    std::vector<size_t>& done = prefill_done_;
    std::vector<size_t>& first_row = prefill_first_row_;
    std::fill_n(done.begin(), n, 0);
    first_row[0] = 0;
    for (size_t i = 1; i < n; ++i) first_row[i] = first_row[i - 1] + prompts[i - 1].size();
    for (size_t next = 0;;) {  // the first session with tokens left
      while (next < n && done[next] == prompts[next].size()) ++next;
      if (next == n) return;
      Index rows = 0;
      size_t count = 0;  // the round's streams: sessions prefill_members_[0, count)
      for (size_t i = next; i < n && rows < rows_; ++i) {
        const size_t take = std::min({prompts[i].size() - done[i], static_cast<size_t>(kPiece),
                                      static_cast<size_t>(rows_ - rows)});
        if (take == 0) continue;
        prefill_members_[count] = i;
        streams_[count++] = {states[i], states[i]->position, rows, static_cast<Index>(take)};
        std::copy_n(prompts[i].data() + done[i], take, round_tokens_.data() + rows);
        rows += static_cast<Index>(take);
      }
      const ops::ThreadGovernor::Scope governed(governor_, rows);
      RunTokens(model_, options_, ws_, std::span<const Stream>(streams_.data(), count),
                round_tokens_.data(), rows, round_logits_.data());
      for (size_t k = 0; k < count; ++k) {
        const size_t i = prefill_members_[k], take = static_cast<size_t>(streams_[k].rows);
        std::copy_n(round_logits_.data() + static_cast<size_t>(streams_[k].row) * vocab,
                    take * vocab, logits + (first_row[i] + done[i]) * vocab);
        done[i] += take;
      }
    }
  }

 private:
  const Model& model_;
  const SessionOptions options_;
  // The workspace's rows: max_batch sessions' steps, prefill rounds of up to four pieces (4 x 64
  // rows measured 1.2-1.5x the speed of one prompt after another on the bench models, 64 rows
  // 1.1-1.2x: docs/PERFORMANCE.md "Batched decode").
  const int rows_;
  TitansWorkspace ws_;
  std::vector<Stream> streams_;                           // [max_batch]
  std::vector<int32_t> round_tokens_;                     // [rows_] a prefill round's tokens
  std::vector<float> round_logits_;                       // [rows_, V] and their logits
  std::vector<size_t> prefill_done_, prefill_first_row_;  // [max_batch] per session
  std::vector<size_t> prefill_members_;                   // [max_batch] a round's sessions
  ops::ThreadGovernor governor_;                          // one thread or the team, per step
};

}  // namespace

std::unique_ptr<Runner> MakeTitans(const Model& model, const SessionOptions& options) {
  return std::make_unique<TitansRunner>(model, options);
}

std::unique_ptr<BatchRunner> MakeTitansBatch(const Model& model, const SessionOptions& options,
                                             int max_batch) {
  return std::make_unique<TitansBatchRunner>(model, options, max_batch);
}

}  // namespace titans::arch
