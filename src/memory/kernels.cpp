#include "memory/kernels.hpp"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <span>

#include "memory/models.hpp"
#include "ops/activations.hpp"
#include "ops/bf16.hpp"
#include "ops/flush_denormals.hpp"
#include "ops/linalg.hpp"
#include "ops/threading.hpp"

namespace titans {
namespace {

using namespace linalg;  // NOLINT: the kernels are written in terms of these helpers

using memory_models::Activate;
using memory_models::MultiplyByDerivative;

// LayerNorm without affine of one row (biased variance): writes the normalised row, returns
// 1/sqrt(var + eps).
template <class Row, class Out>
float LayerNormRow(const Row& z, float eps, Out&& normed) {
  const float mean = z.mean();
  const float var = (z.array() - mean).square().mean();
  const float rstd = 1.0f / std::sqrt(var + eps);
  normed = ((z.array() - mean) * rstd).matrix();
  return rstd;
}

// Calls f(h, range) for this thread's share of per-head work over `extent` columns or rows:
// whole heads when there are enough of them to keep every thread busy, otherwise a slice of
// every head (so that H = 1 still uses all threads).
template <class F>
void ForHeadShare(int heads, int extent, int ith, int nth, int align, F&& f) {
  if (heads >= nth) {
    const Range hs = Share(heads, ith, nth);
    for (int h = hs.begin; h < hs.end; ++h) f(h, Range{0, extent});
  } else {
    const Range r = Share(extent, ith, nth, align);
    if (r.size() > 0) {
      for (int h = 0; h < heads; ++h) f(h, r);
    }
  }
}

constexpr int kColumnAlign = 16;  // one AVX-512 register of floats

// titans-pytorch's newtonschulz5 (docs/TITANS_PYTORCH.md): u [in, out] <- an approximate
// orthogonalisation of u / |u|_F by five iterations X <- a X + (b A + c A A) X, A = X X^T, on
// the wide orientation (r = min(in, out) rows). x, y [>= r, >= n], a, b [>= r, >= r] scratch.
void NewtonSchulz(MatMap u, RowMatrix& x_scratch, RowMatrix& y_scratch, RowMatrix& a_scratch,
                  RowMatrix& b_scratch) {
  constexpr float kA = 3.4445f, kB = -4.7750f, kC = 2.0315f, kEps = 1e-7f;
  const bool tall = u.rows() > u.cols();
  const Index r = tall ? u.cols() : u.rows(), n = tall ? u.rows() : u.cols();
  auto x = x_scratch.topLeftCorner(r, n);
  auto y = y_scratch.topLeftCorner(r, n);
  auto a = a_scratch.topLeftCorner(r, r);
  auto b = b_scratch.topLeftCorner(r, r);
  if (tall) {
    x = u.transpose();
  } else {
    x = u;
  }
  x /= std::max(x.norm(), kEps);
  for (int i = 0; i < 5; ++i) {
    Multiply(a, x, x.transpose());
    Multiply(b, a, a);
    b = kC * b + kB * a;
    Multiply(y, b, x);
    x = kA * x + y;
  }
  if (tall) {
    u = x.transpose();
  } else {
    u = x;
  }
}

// The soft clamp of max_grad_norm m: the factor s(n) / n that gives a gradient of norm n the
// norm s(n) = m/2 tanh(2n/m) + m/2. titans-pytorch divides 0 by 0 at n = 0 (NaN); the engine
// leaves a zero gradient zero.
// sigmoid(transition_gate): the weight of the new weights in a commit (1 without the gate).
float TransitionWeight(const NeuralMemory& memory) {
  return memory.config().transition_gate ? ops::Sigmoid(memory.weights().transition_gate[0]) : 1.0f;
}

// A unit's chunk-level gate logit in `column`: the mean over its U pending rows (titans-pytorch
// computes the gate from the chunk's mean representation, and the projection is linear; with
// attention_pool every row already holds the pooled row's logit), in double.
double MeanGateLogit(const MemoryConfig& c, const MemoryState& state, Index column) {
  const Index g = c.gate_columns(), u = c.unit();
  double sum = 0.0;
  for (Index t = 0; t < u; ++t) sum += state.pending_gates[t * g + column];
  return sum / static_cast<double>(u);
}

float SigmoidOf(double logit) { return static_cast<float>(1.0 / (1.0 + std::exp(-logit))); }

float SoftClampFactor(float norm, float max_norm) {
  if (norm <= 0) return 0.0f;
  return (0.5f * max_norm * std::tanh(2.0f * norm / max_norm) + 0.5f * max_norm) / norm;
}

}  // namespace

MemorySession::Workspace::Workspace(const NeuralMemory& memory, const SessionOptions& options)
    : threads_(options.threads),
      min_flops_per_thread_(options.min_flops_per_thread),
      governor_(options.threads, options.adapt_threads, options.min_flops_per_thread) {
  const MemoryConfig& c = memory.config();
  const Index p = kTile, d = c.d_model, h = c.heads, dh = c.head_dim, hd = c.inner_dim();
  const Index u = c.unit(), tail = std::max(c.conv_kernel - 1, 0);
  xs_.setZero(p, d);
  xv_.setZero(p, d);
  xr_.setZero(p, d);
  q_ext_.setZero(tail + p, hd);
  k_ext_.setZero(tail + p, hd);
  v_ext_.setZero(tail + p, hd);
  q_.setZero(p, hd);
  k_.setZero(p, hd);
  v_.setZero(p, hd);
  const Index gates = c.gate_columns();
  gates_.setZero(p, gates);
  gate_out_.setZero(p, h);
  y_.setZero(p, hd);
  Index max_in = 0, max_out = 0;
  const bool mlp = c.model == MemoryModel::kMlp;
  for (int l = 0; mlp && l < c.depth; ++l) {
    read_z_.emplace_back(RowMatrix::Zero(h * p, c.layer_out(l)));
    unit_z_.emplace_back(RowMatrix::Zero(h * u, c.layer_out(l)));
    unit_a_.emplace_back(RowMatrix::Zero(l + 1 < c.depth ? h * u : 0, c.layer_out(l)));
    unit_delta_.emplace_back(RowMatrix::Zero(h * u, c.layer_out(l)));
    max_in = std::max<Index>(max_in, c.layer_in(l));
    max_out = std::max<Index>(max_out, c.layer_out(l));
  }
  if (!mlp) {  // the model's output; its write is tensorwise (no coefficient products)
    read_z_.emplace_back(RowMatrix::Zero(h * p, dh));
    unit_z_.emplace_back(RowMatrix::Zero(h * u, dh));
    unit_delta_.emplace_back(RowMatrix::Zero(h * u, dh));
    read_trace_ = memory_models::Trace(c, p);
    unit_trace_ = memory_models::Trace(c, h * u);
    for (int i = 0; i < c.model_tensors(); ++i) {
      unit_right_.emplace_back(RowMatrix::Zero(h * u, c.tensor_cols(i)));
    }
  }
  if (c.output == MemoryOutput::kLnResidual) unit_dg_.setZero(h * u, dh);
  for (int t = 0; t < threads_; ++t) {
    const Index products = c.momentum ? 2 : 1;
    fold_grad_.emplace_back(RowMatrix::Zero(max_in, products * max_out));
    fold_scaled_.emplace_back(RowMatrix::Zero(u, products * max_out));
    row_scratch_.emplace_back(RowMatrix::Zero(2, dh));
  }
  coef_c_.setZero(h, u);
  coef_e_.setZero(h, u);
  decay_all_.assign(static_cast<size_t>(h), 0.0f);
  momentum_all_.assign(static_cast<size_t>(h), 0.0f);
  momentum_carry_.assign(static_cast<size_t>(h), 0.0f);
  // Without momentum the eta columns are zero and never read.
  const MemoryWeights& w = memory.weights();
  packed_gates_.assign(static_cast<size_t>(d * gates), 0.0f);
  packed_gate_bias_.assign(static_cast<size_t>(gates), 0.0f);
  struct GateGroup {
    const std::vector<float>& weight;
    const std::vector<float>& bias;
    bool used;  // by the config: weights may carry tensors it does not use
    Index first, width;
  };
  const GateGroup groups[] = {
      {w.w_theta, w.b_theta, true, 0, h},
      {w.w_alpha, w.b_alpha, true, 2 * h, h},
      {w.w_mod, w.b_mod, c.lr_modulation, 3 * h, h * c.parameter_tensors()},
      {w.w_mix, w.b_mix, c.weight_residual, c.mix_column(), h},
      {w.w_comb, w.b_comb, c.learned_combine, c.combine_column(), h * c.combine_terms()}};
  auto pack = [&](const std::vector<float>& weight, const std::vector<float>& bias, Index width,
                  Index from, Index to) {  // source column `from` of [d, width] -> column `to`
    for (Index i = 0; i < d; ++i) {
      packed_gates_[static_cast<size_t>(i * gates + to)] =
          weight[static_cast<size_t>(i * width + from)];
    }
    packed_gate_bias_[static_cast<size_t>(to)] = bias[static_cast<size_t>(from)];
  };
  for (const GateGroup& group : groups) {
    for (Index j = 0; group.used && j < group.width; ++j) {
      pack(group.weight, group.bias, group.width, j, group.first + j);
    }
  }
  // The momentum gates: order 1 of head h (channel h*O) in column H + h, orders o >= 2
  // (channel h*O + o - 1) from eta_column().
  const Index orders = c.momentum_order;
  for (Index head = 0; c.momentum && head < h; ++head) {
    pack(w.w_eta, w.b_eta, h * orders, head * orders, h + head);
    for (Index o = 2; o <= orders; ++o) {
      pack(w.w_eta, w.b_eta, h * orders, head * orders + o - 1,
           c.eta_column() + head * (orders - 1) + o - 2);
    }
  }
  if (c.attention_pool) {
    pool_logits_.setZero(u, d);
    pooled_.setZero(1, d);
    pooled_gates_.setZero(1, gates);
  }
  if (c.lr_modulation) modulation_.assign(static_cast<size_t>(h * c.parameter_tensors()), 0.0f);
  momentum_high_.assign(static_cast<size_t>(h * (c.momentum_order - 1)), 0.0f);
  if (c.learned_combine) combine_.assign(static_cast<size_t>(h * c.combine_terms()), 0.0f);
  if (c.weight_residual) {
    for (int i = 0; i < c.model_tensors(); ++i) {
      eval_w_.emplace_back(static_cast<size_t>(h * c.tensor_rows(i) * c.tensor_cols(i)), 0.0f);
    }
    if (c.output == MemoryOutput::kLnResidual) eval_g_.assign(static_cast<size_t>(h * dh), 0.0f);
  }
  if (c.tensorwise_write()) {
    Index r_max = 0, n_max = 0;
    for (int i = 0; i < c.model_tensors(); ++i) {
      grad_full_.emplace_back(RowMatrix::Zero(h * c.tensor_rows(i), c.tensor_cols(i)));
      r_max = std::max<Index>(r_max, std::min(c.tensor_rows(i), c.tensor_cols(i)));
      n_max = std::max<Index>(n_max, std::max(c.tensor_rows(i), c.tensor_cols(i)));
    }
    if (c.output == MemoryOutput::kLnResidual) grad_gain_.setZero(h, dh);
    for (int t = 0; t < threads_ && c.spectral_norm; ++t) {
      ns_x_.emplace_back(RowMatrix::Zero(r_max, n_max));
      ns_y_.emplace_back(RowMatrix::Zero(r_max, n_max));
      ns_a_.emplace_back(RowMatrix::Zero(r_max, r_max));
      ns_b_.emplace_back(RowMatrix::Zero(r_max, r_max));
    }
  }
}

MemorySession::Workspace::Inputs MemorySession::Workspace::Inputs::Offset(Index rows,
                                                                          Index d) const {
  const Index skip = rows * d;
  return {keys != nullptr ? keys + skip : nullptr, values != nullptr ? values + skip : nullptr,
          retrieve + skip};
}

void MemorySession::Workspace::Run(const NeuralMemory& memory, MemoryState& state, Inputs in, int n,
                                   float* out, WeightResidual residual) {
  residual_ = residual;
  residual_origin_ = state.position - state.pending;
  try {
    RunTiles(memory, state, in, n, out, /*write=*/true);
  } catch (...) {
    residual_ = {};
    throw;
  }
  residual_ = {};
}

void MemorySession::Workspace::ReadOnly(const NeuralMemory& memory, MemoryState& state,
                                        const float* retrieve, int n, float* out) {
  RunTiles(memory, state, Inputs{nullptr, nullptr, retrieve}, n, out, /*write=*/false);
}

void MemorySession::Workspace::RunTiles(const NeuralMemory& memory, MemoryState& state, Inputs in,
                                        int n, float* out, bool write) {
  const MemoryConfig& c = memory.config();
  const Index d = c.d_model, d_out = memory.output_width();
  for (int t0 = 0; t0 < n; t0 += kTile) {
    const int rows = std::min(kTile, n - t0);
    const Inputs tile = in.Offset(t0, d);
    float* o = out + t0 * d_out;
    const ops::ThreadGovernor::Scope governed(governor_, rows);  // no-op inside a model's piece
    // The work between two synchronisations (ops::TeamSize): a unit's share when it writes
    // (ops::kMemoryUnitSynchronisations), the tile's rows when it only reads (the region's own).
    const double work =
        write ? c.FlopsPerToken() * std::min(rows, c.unit()) / ops::kMemoryUnitSynchronisations
              : c.FlopsPerToken() * rows;
    const int team = ops::TeamSize(work, threads_, min_flops_per_thread_);
    if (team == 1) {
      RunTile(memory, state, tile, rows, o, write, Part{0, 1});
    } else {
#pragma omp parallel num_threads(team)
      RunTile(memory, state, tile, rows, o, write,
              Part{omp_get_thread_num(), omp_get_num_threads()});
    }
  }
}

void MemorySession::Workspace::RunTile(const NeuralMemory& memory, MemoryState& state, Inputs in,
                                       int n, float* out, bool write, Part part) {
  const FlushDenormals flush;  // on every thread that computes (ops/flush_denormals.hpp)
  Project(memory, state, in, n, write, part);
  ReadAndWrite(memory, state, n, out, write, part);
}

void MemorySession::Workspace::ReadAndWrite(const NeuralMemory& memory, MemoryState& state, int n,
                                            float* out, bool write, Part part) {
  const MemoryConfig& c = memory.config();
  const int unit = c.unit(), hd = c.inner_dim();
  if (!write) {  // a read with the current weights; nothing is queued or written
    Read(memory, state, 0, n, part);
    Output(memory, n, out, part);
    return;
  }

  // Walk the tile unit by unit. Every thread keeps its own copy of the counters (they take the
  // same values everywhere); thread 0 stores them back at the end.
  int64_t position = state.position;
  int pending = state.pending;
  for (int i = 0; i < n;) {
    const int take = std::min(n - i, unit - pending);
    const bool completes = pending + take == unit;
    // With read offset 1 the token that closes a unit reads the weights that include it.
    const int read_end = i + take - (completes && c.read_offset == 1 ? 1 : 0);
    if (read_end > i) Read(memory, state, i, read_end, part);

    // Queue the keys, values and gate logits for the write of the unit.
    const Range rows = Share(take, part.ith, part.nth);
    const Index g = c.gate_columns();
    View(state.pending_k.data() + Index{pending + rows.begin} * hd, rows.size(), hd, hd) =
        k_.middleRows(i + rows.begin, rows.size());
    View(state.pending_v.data() + Index{pending + rows.begin} * hd, rows.size(), hd, hd) =
        v_.middleRows(i + rows.begin, rows.size());
    View(state.pending_gates.data() + (pending + rows.begin) * g, rows.size(), g, g) =
        gates_.middleRows(i + rows.begin, rows.size());
    if (c.attention_pool) {
      const Index d = c.d_model;
      View(state.pending_x.data() + (pending + rows.begin) * d, rows.size(), d, d) =
          xs_.middleRows(i + rows.begin, rows.size());
    }

    pending += take;
    position += take;
    i += take;
    if (completes) {
      Barrier(part.nth);  // the unit's rows are queued (by all threads) before it is written
      WriteUnit(memory, state, position, part);
      pending = 0;
      if (c.read_offset == 1) Read(memory, state, i - 1, i, part);
    }
  }
  Output(memory, n, out, part);
  if (part.ith == 0) {
    state.position = position;
    state.pending = pending;
  }
}

namespace {

// A read-only pass (MemorySession::Read) has its own query stream, so its own query tail.
std::vector<float>& QueryTail(MemoryState& state, bool write) {
  return write ? state.conv_q : state.conv_q_read;
}

}  // namespace

void MemorySession::Workspace::Project(const NeuralMemory& memory, MemoryState& state, Inputs in,
                                       int n, bool write, Part part) {
  ProjectRows(memory, state, in, n, write, part);
  Barrier(part.nth);  // the convolution reads the rows (and tails) of other threads
  ConvolveRows(memory, state, n, write, part);
  Barrier(part.nth);  // reads and writes use every row
}

void MemorySession::Workspace::RunProjected(const NeuralMemory& memory, MemoryState& state,
                                            const Workspace& from, int row, float* out,
                                            bool write) {
  const MemoryConfig& c = memory.config();
  const Index hd = c.inner_dim(), tail = std::max<Index>(c.conv_kernel - 1, 0);
  // As ProjectRows of one token: the stored tails in rows [0, tail), the token's row after them.
  std::vector<float>& q_tail = QueryTail(state, write);
  q_ext_.topRows(tail) = ConstView(q_tail.data(), tail, hd, hd);
  q_ext_.row(tail) = from.q_ext_.row(tail + row);
  if (c.output_gate) gate_out_.row(0) = from.gate_out_.row(row);
  if (write) {
    k_ext_.topRows(tail) = ConstView(state.conv_k.data(), tail, hd, hd);
    v_ext_.topRows(tail) = ConstView(state.conv_v.data(), tail, hd, hd);
    k_ext_.row(tail) = from.k_ext_.row(tail + row);
    v_ext_.row(tail) = from.v_ext_.row(tail + row);
    gates_.row(0) = from.gates_.row(row);
    if (c.attention_pool) xs_.row(0) = from.xs_.row(row);
  }
  const Part one{0, 1};
  ConvolveRows(memory, state, 1, write, one);
  ReadAndWrite(memory, state, 1, out, write, one);
}

// 1. Input RMSNorms and projections of this thread's rows. ext row tail + t holds token t's
// projection before the convolution; thread 0 lays the stored tails in rows [0, tail).
void MemorySession::Workspace::ProjectRows(const NeuralMemory& memory, MemoryState& state,
                                           Inputs in, int n, bool write, Part part) {
  const MemoryConfig& c = memory.config();
  const MemoryWeights& w = memory.weights();
  const Index d = c.d_model, hd = c.inner_dim(), h = c.heads;
  const Index tail = std::max<Index>(c.conv_kernel - 1, 0);
  const Range rows = Share(n, part.ith, part.nth);
  const Index r0 = rows.begin, nr = rows.size();
  auto rms_norm = [&](const float* input, bool enabled, const std::vector<float>& gain,
                      RowMatrix& normed) {
    const ConstMatMap x = ConstView(input, n, d, d);
    for (Index t = r0; t < r0 + nr; ++t) {
      if (!enabled) {
        normed.row(t) = x.row(t);
        continue;
      }
      const float inv =
          1.0f / std::sqrt(x.row(t).squaredNorm() / static_cast<float>(d) + c.rms_eps);
      normed.row(t) =
          (x.row(t).array() * inv * Eigen::Map<const Eigen::RowVectorXf>(gain.data(), d).array())
              .matrix();
    }
  };
  std::vector<float>& q_tail = QueryTail(state, write);
  // Both store views go through the store norm (titans-pytorch qkv_receives_diff_views).
  const bool own_values = write && in.values != in.keys;
  if (write) rms_norm(in.keys, c.store_norm, w.store_norm, xs_);
  if (own_values) rms_norm(in.values, c.store_norm, w.store_norm, xv_);
  rms_norm(in.retrieve, c.retrieve_norm, w.retrieve_norm, xr_);
  if (part.ith == 0 && tail > 0) {
    q_ext_.topRows(tail) = ConstView(q_tail.data(), tail, hd, hd);
    if (write) {
      k_ext_.topRows(tail) = ConstView(state.conv_k.data(), tail, hd, hd);
      v_ext_.topRows(tail) = ConstView(state.conv_v.data(), tail, hd, hd);
    }
  }
  if (nr > 0) {
    const auto xr = xr_.middleRows(r0, nr);
    Multiply(q_ext_.middleRows(tail + r0, nr), xr, memory.bf16_copies().Matrix(w.w_q, d, hd));
    // Output gate logits [n, H] = xr W_gate.
    if (c.output_gate) {
      Multiply(gate_out_.middleRows(r0, nr), xr,
               linalg::WeightMatrix{w.w_gate.data(), nullptr, d, h});
    }
  }
  if (nr > 0 && write) {
    const auto xs = xs_.middleRows(r0, nr);
    const auto xv = (own_values ? xv_ : xs_).middleRows(r0, nr);
    Multiply(k_ext_.middleRows(tail + r0, nr), xs, memory.bf16_copies().Matrix(w.w_k, d, hd));
    Multiply(v_ext_.middleRows(tail + r0, nr), xv, memory.bf16_copies().Matrix(w.w_v, d, hd));
    // Gate logits [n, G] = xs [n, d] x packed [d, G] + bias.
    const Index gates = c.gate_columns();
    auto g = gates_.middleRows(r0, nr);
    Multiply(g, xs, linalg::WeightMatrix{packed_gates_.data(), nullptr, d, gates});
    g.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(packed_gate_bias_.data(), gates);
  }
}

// 2. Convolution, activation and per-head q/k normalisation of this thread's rows.
void MemorySession::Workspace::ConvolveRows(const NeuralMemory& memory, MemoryState& state, int n,
                                            bool write, Part part) {
  const MemoryConfig& c = memory.config();
  const MemoryWeights& w = memory.weights();
  const Index hd = c.inner_dim(), h = c.heads, dh = c.head_dim;
  const Index kernel = c.conv_kernel, tail = std::max<Index>(kernel - 1, 0);
  const Range rows = Share(n, part.ith, part.nth);
  const Index r0 = rows.begin, nr = rows.size();
  std::vector<float>& q_tail = QueryTail(state, write);
  struct Path {
    const RowMatrix& ext;
    const std::vector<float>& conv;
    std::vector<float>& tail_state;
    RowMatrix& result;
  };
  const std::initializer_list<Path> all{Path{q_ext_, w.conv_q, q_tail, q_},
                                        Path{k_ext_, w.conv_k, state.conv_k, k_},
                                        Path{v_ext_, w.conv_v, state.conv_v, v_}};
  for (const Path& path : std::span(all.begin(), write ? 3 : 1)) {
    auto result = path.result.middleRows(r0, nr);
    if (kernel > 0) {
      // out_t = sum_j conv[j] * in_{t-K+1+j}: ext rows t..t+K-1 hold exactly those inputs.
      const ConstMatMap taps = ConstView(path.conv.data(), kernel, hd, hd);
      result = path.ext.middleRows(r0, nr).array().rowwise() * taps.row(0).array();
      for (Index j = 1; j < kernel; ++j) {
        result.array() += path.ext.middleRows(r0 + j, nr).array().rowwise() * taps.row(j).array();
      }
      // The last K-1 projections are the next tile's tail (ext is not read from the state).
      if (part.ith == 0 && tail > 0) {
        View(path.tail_state.data(), tail, hd, hd) = path.ext.middleRows(n, tail);
      }
    } else {
      result = path.ext.middleRows(r0, nr);
    }
    Activate(c.qkv_activation, result);
  }
  if (c.qk_norm != QkNorm::kNone) {
    for (Index t = r0; t < r0 + nr; ++t) {
      for (Index head = 0; head < h; ++head) {
        const std::array<RowMatrix*, 2> normed{&q_, &k_};
        for (RowMatrix* m : std::span(normed).first(write ? 2 : 1)) {
          auto x = m->block(t, head * dh, 1, dh);
          if (c.qk_norm == QkNorm::kL2) {
            x /= std::max(x.norm(), 1e-12f);
          } else {
            const std::vector<float>& gain = m == &q_ ? w.q_norm : w.k_norm;
            x = (x.array() / std::sqrt(x.squaredNorm() / static_cast<float>(dh) + c.rms_eps) *
                 Eigen::Map<const Eigen::RowVectorXf>(gain.data() + head * dh, dh).array())
                    .matrix();
          }
        }
      }
    }
  }
}

void MemorySession::Workspace::Read(const NeuralMemory& memory, const MemoryState& state, int r0,
                                    int r1, Part part) {
  const MemoryConfig& c = memory.config();
  const float* post_norm = memory.weights().post_norm.data();
  // Rows are independent: each thread runs its share of the rows through every layer.
  const Range share = Share(r1 - r0, part.ith, part.nth);
  const Index dh = c.head_dim, hd = c.inner_dim(), rows = share.size(), t0 = r0 + share.begin;
  if (rows == 0) return;
  const bool plain = c.output == MemoryOutput::kPlain;
  for (Index head = 0; head < c.heads; ++head) {
    if (c.model != MemoryModel::kMlp) {
      // The model's output goes to the head's columns of y_ (plain) or to read_z_ (kLnResidual).
      const auto tensor = [&](int i) {
        const Index r = c.tensor_rows(i), k = c.tensor_cols(i);
        return ConstView(state.w_cur[i].data() + head * r * k, r, k, k);
      };
      MatMap z = plain ? View(y_.data() + t0 * hd + head * dh, rows, dh, hd)
                       : View(read_z_[0].data() + (head * kTile + t0) * dh, rows, dh, dh);
      memory_models::Forward(c, tensor, ConstView(q_.data() + t0 * hd + head * dh, rows, dh, hd),
                             read_trace_, t0, rows, z);
    } else {
      for (int l = 0; l < c.depth; ++l) {
        const Index in = c.layer_in(l), out = c.layer_out(l);
        const bool last = l + 1 == c.depth;
        // The fast weights [in, out] read in place (linalg::MultiplyWeights, no packing).
        const linalg::WeightMatrix weights{state.w_cur[l].data() + head * in * out, nullptr, in,
                                           out};
        const ConstMatMap input =
            l == 0 ? ConstView(q_.data() + t0 * hd + head * dh, rows, dh, hd)
                   : ConstView(read_z_[l - 1].data() + (head * kTile + t0) * in, rows, in, in);
        // The plain memory's last layer writes straight into the head's columns of y_.
        MatMap z = last && plain
                       ? View(y_.data() + t0 * hd + head * dh, rows, dh, hd)
                       : View(read_z_[l].data() + (head * kTile + t0) * out, rows, out, out);
        Multiply(z, input, weights);
        if (!last) Activate(c.activation, z);
      }
    }
    if (!plain) {  // kLnResidual: y = LN(z) * (1 + g) + q
      const auto gain = Eigen::Map<const Eigen::RowVectorXf>(state.g_cur.data() + head * dh, dh);
      for (Index t = t0; t < t0 + rows; ++t) {
        auto y = y_.block(t, head * dh, 1, dh);
        LayerNormRow(read_z_.back().row(head * kTile + t), c.layer_norm_eps, y);
        y = (y.array() * (1.0f + gain.array())).matrix() + q_.block(t, head * dh, 1, dh);
      }
    }
    if (!c.post_norm) continue;
    // post_norm: y = y / sqrt(mean(y^2) + eps) * gain, per head.
    const auto gain = Eigen::Map<const Eigen::RowVectorXf>(post_norm + head * dh, dh);
    for (Index t = t0; t < t0 + rows; ++t) {
      auto y = y_.block(t, head * dh, 1, dh);
      const float inv = 1.0f / std::sqrt(y.squaredNorm() / static_cast<float>(dh) + c.rms_eps);
      y = (y.array() * inv * gain.array()).matrix();
    }
  }
}

namespace {

// The unit's coefficients for one head (docs/SEMANTICS.md 1.6, 0-based steps j = 0..m-1 of s
// tokens), with eta_j, alpha_j from the mean logit of step j: after the unit
//   S = E0 S_in + sum_j e_j u_j,  W = A0 W_in + f S_in + sum_j c_j u_j,  where
//   e_j = prod_{i>j} eta_i, a_j = prod_{i>j} (1 - alpha_i), c_j = a_j + eta_{j+1} c_{j+1},
//   A0 = prod (1 - alpha), E0 = prod eta, f = sum_j a_j prod_{i<=j} eta_i.
// Without momentum S_j = u_j: c_j = a_j and there is no S. Products run in double.
// coef_c, coef_e: [U] per token (the coefficient of its step).
void UnitCoefficients(const MemoryConfig& c, const float* gates, int head, float* coef_c,
                      float* coef_e, float& decay_all, float& momentum_all, float& momentum_carry) {
  const int u = c.unit(), s = c.step, m = u / s, h = c.heads, g = c.gate_columns();
  auto step_gate = [&](int j, int which) {
    double sum = 0.0;
    for (int t = j * s; t < (j + 1) * s; ++t) sum += gates[t * g + which * h + head];
    return 1.0 / (1.0 + std::exp(-sum / s));
  };
  double decay_after = 1.0, eta_after = 1.0, c_next = 0.0, eta_next = 0.0;
  for (int j = m - 1; j >= 0; --j) {
    const double eta = c.momentum ? step_gate(j, 1) : 0.0;
    const double c_j = decay_after + eta_next * c_next;
    for (int t = j * s; t < (j + 1) * s; ++t) {
      coef_c[t] = static_cast<float>(c_j);
      coef_e[t] = static_cast<float>(eta_after);
    }
    c_next = c_j;
    eta_next = eta;
    eta_after *= eta;
    decay_after *= 1.0 - step_gate(j, 2);
  }
  decay_all = static_cast<float>(decay_after);
  momentum_all = static_cast<float>(eta_after);
  double carry = 0.0, eta_upto = 1.0, decay_from = decay_after;
  for (int j = 0; j < m && c.momentum; ++j) {
    eta_upto *= step_gate(j, 1);
    decay_from /= 1.0 - step_gate(j, 2);  // prod_{i>j} (1 - alpha_i)
    carry += decay_from * eta_upto;
  }
  momentum_carry = static_cast<float>(carry);
}

}  // namespace

void MemorySession::Workspace::WriteUnit(const NeuralMemory& memory, MemoryState& state,
                                         int64_t position_after, Part part) {
  UnitGradients(memory, state, position_after, part);
  Barrier(part.nth);
  if (memory.config().tensorwise_write()) {
    TensorGradients(memory.config(), state, part);
    Barrier(part.nth);  // each (head, tensor) item reads columns other threads wrote
    FoldTensors(memory, state, position_after, part);
  } else {
    FoldUnit(memory, state, position_after, part);
  }
  Barrier(part.nth);  // later reads and writes use the new weights
}

void MemorySession::Workspace::PoolUnit(const NeuralMemory& memory, MemoryState& state) {
  const MemoryConfig& c = memory.config();
  const MemoryWeights& w = memory.weights();
  const Index d = c.d_model, u = c.unit(), g = c.gate_columns(), h = c.heads;
  const ConstMatMap x = ConstView(state.pending_x.data(), u, d, d);
  // Softmax over the unit's rows, separately per feature: logits [U, d] = x W_pool + b_pool.
  Multiply(pool_logits_, x, ConstView(w.w_pool.data(), d, d, d));
  pool_logits_.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(w.b_pool.data(), d);
  for (Index f = 0; f < d; ++f) {
    const float top = pool_logits_.col(f).maxCoeff();
    float weight_sum = 0.0f, pooled = 0.0f;
    for (Index t = 0; t < u; ++t) {
      const float e = std::exp(pool_logits_(t, f) - top);
      weight_sum += e;
      pooled += e * x(t, f);
    }
    pooled_(0, f) = pooled / weight_sum;
  }
  // The pooled row's gate logits; columns [H, G) replace every pending row's (theta stays per
  // token), so UnitCoefficients' mean over the unit returns them exactly.
  Multiply(pooled_gates_, pooled_, ConstView(packed_gates_.data(), d, g, g));
  pooled_gates_ += Eigen::Map<const Eigen::RowVectorXf>(packed_gate_bias_.data(), g);
  for (Index t = 0; t < u; ++t) {
    View(state.pending_gates.data() + t * g + h, 1, g - h, g) = pooled_gates_.rightCols(g - h);
  }
}

// The input of MLP layer l for rows [row, row + count) of the unit's head `head`: the keys for
// layer 0, the activations unit_a_ of the layer before otherwise.
ConstMatMap MemorySession::Workspace::UnitLayerInput(const MemoryConfig& c,
                                                     const MemoryState& state, int l, int head,
                                                     Index row, Index count) const {
  const Index dh = c.head_dim, hd = c.inner_dim(), u = c.unit();
  return l == 0 ? ConstView(state.pending_k.data() + row * hd + head * dh, count, dh, hd)
                : ConstView(unit_a_[l - 1].data() + (head * u + row) * c.layer_in(l), count,
                            c.layer_in(l), c.layer_in(l));
}

void MemorySession::Workspace::ResidualPoint(const MemoryConfig& c, const MemoryState& state,
                                             int64_t position_after) {
  const int k = static_cast<int>((position_after - residual_origin_) / c.unit()) - 1;
  const bool ln = c.output == MemoryOutput::kLnResidual;
  if (residual_.record != nullptr) {  // w_cur before this unit's write
    float* to = residual_.record->data_.data() + k * residual_.record->values_per_step_;
    for (const std::vector<float>& w : state.w_cur) to = std::copy(w.begin(), w.end(), to);
    if (ln) std::copy(state.g_cur.begin(), state.g_cur.end(), to);
    residual_.record->steps_ = k + 1;
  }
  if (residual_.previous == nullptr) return;
  // mix_h = sigmoid(the unit's chunk-level mix logit).
  const Index dh = c.head_dim;
  const float* from = residual_.previous->step(k);
  for (Index head = 0; head < c.heads; ++head) {
    const float mix = SigmoidOf(MeanGateLogit(c, state, c.mix_column() + head));
    const float* layer_from = from;
    for (int l = 0; l < c.model_tensors(); ++l) {
      const Index size = Index{c.tensor_rows(l)} * c.tensor_cols(l), offset = head * size;
      const auto base = Eigen::Map<const Eigen::ArrayXf>(state.w_base[l].data() + offset, size);
      const auto previous = Eigen::Map<const Eigen::ArrayXf>(layer_from + offset, size);
      Eigen::Map<Eigen::ArrayXf>(eval_w_[l].data() + offset, size) = base + mix * previous;
      layer_from += c.heads * size;
    }
    if (ln) {
      const auto base = Eigen::Map<const Eigen::ArrayXf>(state.g_base.data() + head * dh, dh);
      const auto previous = Eigen::Map<const Eigen::ArrayXf>(layer_from + head * dh, dh);
      Eigen::Map<Eigen::ArrayXf>(eval_g_.data() + head * dh, dh) = base + mix * previous;
    }
  }
}

// Stage 1, split by heads or token rows (no barrier inside, but one after thread 0's work with a
// weight residual): thread 0 computes the coefficients; each thread runs its heads' (or rows')
// keys through the MLP at W_base (or the residual's point) and back.
void MemorySession::Workspace::UnitGradients(const NeuralMemory& memory, MemoryState& state,
                                             int64_t position_after, Part part) {
  const MemoryConfig& c = memory.config();
  const Index dh = c.head_dim, hd = c.inner_dim(), u = c.unit();
  const int depth = c.depth;
  const bool ln = c.output == MemoryOutput::kLnResidual;
  const float lambda = c.loss == LossScale::kMean ? 1.0f / static_cast<float>(dh) : 1.0f;
  const Index g = c.gate_columns();
  if (part.ith == 0) {
    if (c.attention_pool) PoolUnit(memory, state);
    for (int head = 0; head < c.heads; ++head) {
      UnitCoefficients(c, state.pending_gates.data(), head, coef_c_.row(head).data(),
                       coef_e_.row(head).data(), decay_all_[head], momentum_all_[head],
                       momentum_carry_[head]);
    }
    // lr modulation: max * sigmoid(mean logit of the unit), per (head, tensor) channel (from
    // column 3H); momentum orders 2..O: eta = sigmoid(mean logit); the learned combination: a
    // softmax over its O' terms of the mean logits, per head.
    for (size_t j = 0; j < modulation_.size(); ++j) {
      modulation_[j] = c.max_layer_modulation *
                       SigmoidOf(MeanGateLogit(c, state, 3 * Index{c.heads} + Index(j)));
    }
    for (size_t j = 0; j < momentum_high_.size(); ++j) {
      momentum_high_[j] = SigmoidOf(MeanGateLogit(c, state, c.eta_column() + Index(j)));
    }
    const int terms = c.combine_terms();
    for (Index head = 0; c.learned_combine && head < c.heads; ++head) {
      double top = -std::numeric_limits<double>::infinity(), total = 0.0;
      std::array<double, 9> logits{};  // O' <= 9 (momentum_order <= 8)
      for (int j = 0; j < terms; ++j) {
        logits[j] = MeanGateLogit(c, state, c.combine_column() + head * terms + j);
        top = std::max(top, logits[j]);
      }
      for (int j = 0; j < terms; ++j) total += logits[j] = std::exp(logits[j] - top);
      for (int j = 0; j < terms; ++j) {
        combine_[static_cast<size_t>(head * terms + j)] = static_cast<float>(logits[j] / total);
      }
    }
    if (c.weight_residual) ResidualPoint(c, state, position_after);
  }
  // The gradient point: W_base, or with a previous layer's trajectory W_base + mix * its step.
  const bool residual = residual_.previous != nullptr;
  if (residual) Barrier(part.nth);  // thread 0 made the point
  auto point = [&](int l) { return (residual ? eval_w_ : state.w_base)[l].data(); };
  const float* gain_point = residual ? eval_g_.data() : state.g_base.data();
  // Split by heads when they share out evenly (FoldUnit then gives each thread the same heads,
  // so it folds the rows it made, from its own cache), else by token rows.
  const bool by_heads = c.heads % part.nth == 0;
  const Range heads = by_heads ? Share(c.heads, part.ith, part.nth) : Range{0, c.heads};
  const Range share =
      by_heads ? Range{0, static_cast<int>(u)} : Share(static_cast<int>(u), part.ith, part.nth);
  const Index t0 = share.begin, rows = share.size();
  auto layer_input = [&](int l, int head, Index row, Index count) {
    return UnitLayerInput(c, state, l, head, row, count);
  };
  RowMatrix& row_scratch = row_scratch_[part.ith];  // [2, dh]: e and dL/dn of one token
  const bool mlp = c.model == MemoryModel::kMlp;
  for (Index head = heads.begin; head < heads.end && rows > 0; ++head) {
    const auto tensor = [&](int i) {  // the gradient point's model tensor i of this head
      const Index r = c.tensor_rows(i), k = c.tensor_cols(i);
      return ConstView(point(i) + head * r * k, r, k, k);
    };
    if (!mlp) {
      memory_models::Forward(c, tensor, layer_input(0, static_cast<int>(head), t0, rows),
                             unit_trace_, head * u + t0, rows,
                             unit_z_[0].middleRows(head * u + t0, rows));
    } else {
      // Forward: z_l [rows, out_l], a_l = act(z_l).
      for (int l = 0; l < depth; ++l) {
        const Index in = c.layer_in(l), out = c.layer_out(l);
        const linalg::WeightMatrix weights{point(l) + head * in * out, nullptr, in, out};
        auto z = unit_z_[l].middleRows(head * u + t0, rows);
        Multiply(z, layer_input(l, static_cast<int>(head), t0, rows), weights);
        if (l + 1 < depth) {
          auto a = unit_a_[l].middleRows(head * u + t0, rows);
          a = z;
          Activate(c.activation, a);
        }
      }
    }
    // Output error e_t = 2 lambda theta_t (M(k_t) - v_t) and dL/dz at the last layer.
    RowMatrix& z_last = unit_z_.back();
    RowMatrix& delta_last = unit_delta_.back();
    for (Index t = t0; t < t0 + rows; ++t) {
      const Index row = head * u + t;
      const auto key = ConstView(state.pending_k.data() + t * hd + head * dh, 1, dh, hd);
      const auto value = ConstView(state.pending_v.data() + t * hd + head * dh, 1, dh, hd);
      const float theta = c.max_lr * ops::Sigmoid(state.pending_gates[t * g + head]);
      const float scale = 2.0f * lambda * theta;
      if (!ln) {
        delta_last.row(row) = scale * (z_last.row(row) - value);
        continue;
      }
      // M = n (1 + g) + k with n = LN(z): dL/dg = e n; dL/dn = e (1 + g);
      // dL/dz = rstd (dn - mean(dn) - n mean(dn n)).
      const auto gain = Eigen::Map<const Eigen::RowVectorXf>(gain_point + head * dh, dh);
      auto normed = unit_dg_.row(row);  // holds n first, then the gain gradient e n
      auto e = row_scratch.row(0), dn = row_scratch.row(1);
      const float rstd = LayerNormRow(z_last.row(row), c.layer_norm_eps, normed);
      e = scale * ((normed.array() * (1.0f + gain.array())).matrix() + key - value);
      dn = (e.array() * (1.0f + gain.array())).matrix();
      delta_last.row(row) =
          rstd *
          (dn.array() - dn.mean() - normed.array() * dn.cwiseProduct(normed).mean()).matrix();
      normed = e.cwiseProduct(normed);
    }
    if (!mlp) {
      memory_models::Backward(
          c, tensor, unit_trace_, head * u + t0, rows, delta_last.middleRows(head * u + t0, rows),
          [&](int i) { return unit_right_[i].middleRows(head * u + t0, rows); });
    } else {
      // Backward: delta_{l-1} = (delta_l W_l^T) * act'(z_{l-1}).
      for (int l = depth - 1; l >= 1; --l) {
        const Index in = c.layer_in(l), out = c.layer_out(l);
        const ConstMatMap weights = ConstView(point(l) + head * in * out, in, out, out);
        auto prev = unit_delta_[l - 1].middleRows(head * u + t0, rows);
        Multiply(prev, unit_delta_[l].middleRows(head * u + t0, rows), weights.transpose());
        MultiplyByDerivative(c.activation, prev, unit_z_[l - 1].middleRows(head * u + t0, rows));
      }
    }
  }
}

// Stage 2, split by heads or weight columns: fold the unit into the fast weights. Per layer
// sum_t c_t u_t = -A^T diag(c) Delta (and the same with e_t for the momentum), then
// W = A0 W + f S - G_c, S = E0 S - G_e; a commit copies the slice into W_base.
void MemorySession::Workspace::FoldUnit(const NeuralMemory& memory, MemoryState& state,
                                        int64_t position_after, Part part) {
  const MemoryConfig& c = memory.config();
  const Index dh = c.head_dim, u = c.unit();
  const int depth = c.depth;
  const bool ln = c.output == MemoryOutput::kLnResidual;
  const bool commit = c.chunk > 0 && position_after % c.chunk == 0;
  const float transition = TransitionWeight(memory);
  RowMatrix& grad = fold_grad_[part.ith];
  RowMatrix& scaled = fold_scaled_[part.ith];
  const Index products = c.momentum ? 2 : 1;
  for (int l = 0; l < depth; ++l) {
    const Index in = c.layer_in(l), out = c.layer_out(l);
    const bool last = l + 1 == depth;
    ForHeadShare(c.heads, static_cast<int>(out), part.ith, part.nth, kColumnAlign,
                 [&](int head, Range cols) {
                   const Index w = cols.size();
                   const auto delta = Rows(unit_delta_[l], head * u, u).middleCols(cols.begin, w);
                   const auto input = UnitLayerInput(c, state, l, head, 0, u);
                   const auto cc = coef_c_.row(head).transpose();
                   const auto ce = coef_e_.row(head).transpose();
                   // [G_c | G_e] = A^T [diag(c) Delta | diag(e) Delta]: one product [in, 2w].
                   MatMap scaled_deltas = View(scaled.data(), u, products * w, products * w);
                   scaled_deltas.leftCols(w) = delta.array().colwise() * cc.array();
                   if (c.momentum)
                     scaled_deltas.rightCols(w) = delta.array().colwise() * ce.array();
                   MatMap grads = View(grad.data(), in, products * w, products * w);
                   MultiplyTransposed(grads, input, scaled_deltas);
                   const auto gc = grads.leftCols(w);
                   const auto ge = grads.rightCols(w);  // with momentum (else gc again, unused)
                   const Index offset = head * in * out + cols.begin;
                   MatMap weights = View(state.w_cur[l].data() + offset, in, w, out);
                   float* const mom = c.momentum ? state.momentum[l].data() + offset : nullptr;
                   MatMap base = View(state.w_base[l].data() + offset, in, w, out);
                   const float decay = decay_all_[head];
                   // Row by row, so that each row of the weights and momentum is read from the
                   // state once for all the steps of the rule (it stays in L1 between them).
                   for (Index r = 0; r < in; ++r) {
                     auto weights_row = weights.row(r);
                     if (!c.momentum) {
                       weights_row = decay * weights_row - gc.row(r);
                     } else {
                       auto mom_row = View(mom + r * out, 1, w, out);
                       weights_row =
                           decay * weights_row + momentum_carry_[head] * mom_row - gc.row(r);
                       mom_row = momentum_all_[head] * mom_row - ge.row(r);
                     }
                     if (commit) {
                       auto base_row = base.row(r);
                       if (c.transition_gate) {
                         weights_row = base_row + transition * (weights_row - base_row);
                       }
                       base_row = weights_row;
                     }
                   }
                   if (!(last && ln)) return;
                   // The gain g of kLnResidual, same rule; its per-token gradients are the rows of
                   // unit_dg_.
                   const auto dg = Rows(unit_dg_, head * u, u).middleCols(cols.begin, w);
                   const Index goff = head * dh + cols.begin;
                   auto gain = Eigen::Map<Eigen::RowVectorXf>(state.g_cur.data() + goff, w);
                   gain *= decay;
                   if (c.momentum) {
                     auto gmom = Eigen::Map<Eigen::RowVectorXf>(state.g_momentum.data() + goff, w);
                     gain += momentum_carry_[head] * gmom;
                     gmom *= momentum_all_[head];
                     gmom.noalias() -= ce.transpose() * dg;
                   }
                   gain.noalias() -= cc.transpose() * dg;
                   if (commit) {
                     auto base = Eigen::Map<Eigen::RowVectorXf>(state.g_base.data() + goff, w);
                     if (c.transition_gate) gain = base + transition * (gain - base);
                     base = gain;
                   }
                 });
  }
}

// Tensorwise stage 1, split by heads or weight columns: with one step per unit every token's
// coefficient is 1, so each head's gradient is A^T Delta per model tensor and the column sums
// of the gain's per-token rows.
void MemorySession::Workspace::TensorGradients(const MemoryConfig& c, const MemoryState& state,
                                               Part part) {
  const Index u = c.unit();
  const bool mlp = c.model == MemoryModel::kMlp;
  for (int i = 0; i < c.model_tensors(); ++i) {
    // Left^T Right per head: the MLP layer's input and its delta, or the other models' factors
    // (memory/models.hpp); a gain vector's gradient is the column sum of its Right rows.
    const Index in = c.tensor_rows(i), out = c.tensor_cols(i);
    RowMatrix& right_rows = mlp ? unit_delta_[i] : unit_right_[i];
    ForHeadShare(
        c.heads, static_cast<int>(out), part.ith, part.nth, kColumnAlign,
        [&](int head, Range cols) {
          const auto right = Rows(right_rows, head * u, u).middleCols(cols.begin, cols.size());
          auto grad = Rows(grad_full_[i], head * in, in).middleCols(cols.begin, cols.size());
          if (c.tensor_is_vector(i)) {
            grad = right.colwise().sum();
          } else if (mlp) {
            MultiplyTransposed(grad, UnitLayerInput(c, state, i, head, 0, u), right);
          } else {
            MultiplyTransposed(grad, unit_trace_.Left(c, i, head * u, u), right);
          }
        });
  }
  if (c.output != MemoryOutput::kLnResidual) return;
  ForHeadShare(c.heads, c.head_dim, part.ith, part.nth, kColumnAlign, [&](int head, Range cols) {
    grad_gain_.row(head).segment(cols.begin, cols.size()) =
        Rows(unit_dg_, head * u, u).middleCols(cols.begin, cols.size()).colwise().sum();
  });
}

// Tensorwise stage 2, one (head, parameter tensor) item at a time, in titans-pytorch's order:
// G <- G s(|G|)/|G| (max_grad_norm), G <- G mod (lr_modulation), S = eta S - G (or -G without
// momentum), W = (1 - alpha) W + NS(S) (Newton-Schulz on matrices with spectral_norm; the
// momentum keeps S itself), and at a commit the transition lerp and W_base = W.
void MemorySession::Workspace::FoldTensors(const NeuralMemory& memory, MemoryState& state,
                                           int64_t position_after, Part part) {
  const MemoryConfig& c = memory.config();
  const bool ln = c.output == MemoryOutput::kLnResidual;
  const bool commit = c.chunk > 0 && position_after % c.chunk == 0;
  const float transition = TransitionWeight(memory);
  const int tensors = c.parameter_tensors();
  const Index dh = c.head_dim;
  const Range items = Share(c.heads * tensors, part.ith, part.nth);
  for (int item = items.begin; item < items.end; ++item) {
    const int head = item / tensors, p = item % tensors;
    const bool gain = ln && p == MemoryConfig::kGainParameterIndex;
    const int l = gain ? -1 : p - (ln ? 1 : 0);  // the model tensor
    // The tensor's gradient, weights, base and momentum as [rows, cols] views.
    const Index rows = gain ? 1 : c.tensor_rows(l), cols = gain ? dh : c.tensor_cols(l);
    const Index offset = gain ? head * dh : head * rows * cols;
    MatMap grad = gain ? View(grad_gain_.data() + offset, 1, cols, cols)
                       : View(grad_full_[static_cast<size_t>(l)].data() + offset, rows, cols, cols);
    float* weights_data = gain ? state.g_cur.data() : state.w_cur[static_cast<size_t>(l)].data();
    float* base_data = gain ? state.g_base.data() : state.w_base[static_cast<size_t>(l)].data();
    MatMap weights = View(weights_data + offset, rows, cols, cols);
    MatMap base = View(base_data + offset, rows, cols, cols);

    float scale = 1.0f;
    if (c.max_grad_norm > 0) scale = SoftClampFactor(grad.norm(), c.max_grad_norm);
    if (c.lr_modulation) scale *= modulation_[static_cast<size_t>(item)];  // item = h P + p
    const int orders = c.momentum_order;
    if (c.momentum) {
      // Orders 1..O, each scanning the one before, then the update (before Newton-Schulz) S_O or
      // the learned combination of (u,) S_1..S_O.
      auto order = [&](int o) {
        const Index higher = o - 2;  // the index of order o among orders 2..O
        float* data =
            o == 1
                ? (gain ? state.g_momentum.data() : state.momentum[static_cast<size_t>(l)].data())
                : (gain ? state.g_momentum_high.data() + higher * c.heads * dh
                        : state.momentum_high[static_cast<size_t>(higher * c.model_tensors() + l)]
                              .data());
        return View(data + offset, rows, cols, cols);
      };
      grad *= -scale;  // the surprise u
      order(1) = momentum_all_[static_cast<size_t>(head)] * order(1) + grad;
      for (int o = 2; o <= orders; ++o) {
        order(o) = momentum_high_[static_cast<size_t>(head * (orders - 1) + o - 2)] * order(o) +
                   order(o - 1);
      }
      if (!c.learned_combine) {
        grad = order(orders);
      } else {
        const int terms = c.combine_terms(), zeroth = c.combine_zeroth ? 1 : 0;
        const float* weight = combine_.data() + Index{head} * terms;
        grad *= zeroth == 1 ? weight[0] : 0.0f;
        for (int o = 1; o <= orders; ++o) grad += weight[zeroth + o - 1] * order(o);
      }
    } else {
      grad *= -scale;
    }
    if (c.spectral_norm && !gain && !c.tensor_is_vector(l)) {
      NewtonSchulz(grad, ns_x_[part.ith], ns_y_[part.ith], ns_a_[part.ith], ns_b_[part.ith]);
    }
    weights = decay_all_[static_cast<size_t>(head)] * weights + grad;
    if (commit) {
      if (c.transition_gate) weights = base + transition * (weights - base);
      base = weights;
    }
  }
}

void MemorySession::Workspace::Output(const NeuralMemory& memory, int n, float* out, Part part) {
  const MemoryConfig& c = memory.config();
  const Index dh = c.head_dim, hd = c.inner_dim(), d_out = memory.output_width();
  Barrier(part.nth);  // y_ rows come from every thread
  const Range rows = Share(n, part.ith, part.nth);
  if (rows.size() == 0) return;
  auto y = y_.middleRows(rows.begin, rows.size());
  if (c.output_gate) {
    for (Index t = 0; t < y.rows(); ++t) {
      for (Index head = 0; head < c.heads; ++head) {
        y.block(t, head * dh, 1, dh) *= ops::Sigmoid(gate_out_(rows.begin + t, head));
      }
    }
  }
  MatMap result = View(out + rows.begin * d_out, rows.size(), d_out, d_out);
  if (c.output_proj) {
    Multiply(result, y, ConstView(memory.weights().w_out.data(), hd, d_out, d_out));
  } else {
    result = y;
  }
}

}  // namespace titans
