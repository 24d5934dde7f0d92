#include "memory_kernels.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <unsupported/Eigen/SpecialFunctions>  // vectorised float erf for the exact GELU

namespace titans {
namespace {

using Index = Eigen::Index;
using MatMap = Eigen::Map<RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using ConstMatMap = Eigen::Map<const RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;

MatMap View(float* data, Index rows, Index cols, Index stride) {
  return MatMap(data, rows, cols, Eigen::OuterStride<>(stride));
}
ConstMatMap ConstView(const float* data, Index rows, Index cols, Index stride) {
  return ConstMatMap(data, rows, cols, Eigen::OuterStride<>(stride));
}
// Rows [row, row + rows) of a scratch matrix, all columns.
MatMap Rows(RowMatrix& m, Index row, Index rows) {
  return View(m.data() + row * m.cols(), rows, m.cols(), m.cols());
}

struct Range {
  int begin, end;
  int size() const { return end - begin; }
};
// Share ith of nth of `count` items, cut at multiples of `align` (SIMD-friendly column slices).
Range Share(int count, int ith, int nth, int align = 1) {
  const int units = (count + align - 1) / align;
  return {std::min(count, units * ith / nth * align),
          std::min(count, units * (ith + 1) / nth * align)};
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// act(z) in place on a block.
template <class Block>
void Activate(Activation act, Block&& z) {
  switch (act) {
    case Activation::kGelu:
      z = (0.5f * z.array() * (1.0f + (z.array() * float(M_SQRT1_2)).erf())).matrix();
      break;
    case Activation::kSilu:
      z = (z.array() / (1.0f + (-z.array()).exp())).matrix();
      break;
    case Activation::kNone:
      break;
  }
}

// delta *= act'(z), elementwise on blocks of equal shape.
template <class Delta, class Z>
void MultiplyByDerivative(Activation act, Delta&& delta, const Z& z) {
  switch (act) {
    case Activation::kGelu: {  // Phi(z) + z phi(z)
      const float inv_sqrt_2pi = 0.3989422804014327f;
      delta.array() *= 0.5f * (1.0f + (z.array() * float(M_SQRT1_2)).erf()) +
                       z.array() * inv_sqrt_2pi * (-0.5f * z.array().square()).exp();
      break;
    }
    case Activation::kSilu: {  // s (1 + z (1 - s)), s = sigmoid(z)
      const auto s = 1.0f / (1.0f + (-z.array()).exp());
      delta.array() *= s * (1.0f + z.array() * (1.0f - s));
      break;
    }
    case Activation::kNone:
      break;
  }
}

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

void Barrier(int nth) {
  if (nth > 1) {
#pragma omp barrier
  }
}

}  // namespace

MemoryWorkspace::MemoryWorkspace(const NeuralMemory& memory, int threads) : threads_(threads) {
  const MemoryConfig& c = memory.config();
  const Index p = kTile, d = c.d_model, h = c.heads, dh = c.head_dim, hd = c.inner_dim();
  const Index u = c.unit(), tail = std::max(c.conv_kernel - 1, 0);
  xs_.setZero(p, d);
  xr_.setZero(p, d);
  q_ext_.setZero(tail + p, hd);
  k_ext_.setZero(tail + p, hd);
  v_ext_.setZero(tail + p, hd);
  q_.setZero(p, hd);
  k_.setZero(p, hd);
  v_.setZero(p, hd);
  gates_.setZero(p, 3 * h);
  gate_out_.setZero(p, h);
  y_.setZero(p, hd);
  Index max_in = 0, max_out = 0;
  for (int l = 0; l < c.depth; ++l) {
    read_z_.emplace_back(RowMatrix::Zero(h * p, c.layer_out(l)));
    unit_z_.emplace_back(RowMatrix::Zero(h * u, c.layer_out(l)));
    unit_a_.emplace_back(RowMatrix::Zero(l + 1 < c.depth ? h * u : 0, c.layer_out(l)));
    unit_delta_.emplace_back(RowMatrix::Zero(h * u, c.layer_out(l)));
    max_in = std::max<Index>(max_in, c.layer_in(l));
    max_out = std::max<Index>(max_out, c.layer_out(l));
  }
  if (c.output == MemoryOutput::kLnResidual) unit_dg_.setZero(h * u, dh);
  for (int t = 0; t < threads_; ++t) {
    grad_c_.emplace_back(RowMatrix::Zero(max_in, max_out));
    grad_e_.emplace_back(RowMatrix::Zero(c.momentum ? max_in : 0, max_out));
    scaled_c_.emplace_back(RowMatrix::Zero(u, max_out));
    scaled_e_.emplace_back(RowMatrix::Zero(c.momentum ? u : 0, max_out));
  }
  coef_theta_.setZero(h, u);
  coef_c_.setZero(h, u);
  coef_e_.setZero(h, u);
  decay_all_.assign(static_cast<size_t>(h), 0.0f);
  momentum_all_.assign(static_cast<size_t>(h), 0.0f);
  momentum_carry_.assign(static_cast<size_t>(h), 0.0f);
}

void MemoryWorkspace::Run(const NeuralMemory& memory, MemoryState& state, const float* store,
                          const float* retrieve, int n, float* out) {
  const MemoryConfig& c = memory.config();
  const Index d = c.d_model, d_out = memory.output_width();
  for (int t0 = 0; t0 < n; t0 += kTile) {
    const int rows = std::min(kTile, n - t0);
    const float* x = store + t0 * d;
    const float* r = retrieve + t0 * d;
    float* o = out + t0 * d_out;
    // A thread joins only for enough work to pay for the barriers it adds (a few per MLP
    // layer); a token or two at a time runs on one thread.
    const double work = c.FlopsPerToken() * rows;
    const int team = static_cast<int>(
        std::clamp(work / kMinFlopsPerThread, 1.0, static_cast<double>(threads_)));
    if (team == 1) {
      RunTile(memory, state, x, r, rows, o, Part{0, 1});
    } else {
#pragma omp parallel num_threads(team)
      RunTile(memory, state, x, r, rows, o, Part{omp_get_thread_num(), omp_get_num_threads()});
    }
  }
}

void MemoryWorkspace::RunTile(const NeuralMemory& memory, MemoryState& state, const float* store,
                              const float* retrieve, int n, float* out, Part part) {
  const MemoryConfig& c = memory.config();
  const int unit = c.unit(), hd = c.inner_dim();
  Project(memory, state, store, retrieve, n, part);

  // Walk the tile unit by unit. Every thread keeps its own copy of the counters (they take the
  // same values everywhere); thread 0 stores them back at the end.
  int64_t position = state.position;
  int pending = state.pending;
  for (int i = 0; i < n;) {
    const int take = std::min(n - i, unit - pending);
    const bool completes = pending + take == unit;
    // With read offset 1 the token that closes a unit reads the weights that include it.
    const int read_end = i + take - (completes && c.read_offset == 1 ? 1 : 0);
    if (read_end > i) Read(c, state, i, read_end, part);

    // Queue the keys, values and gate logits for the write of the unit.
    const Range rows = Share(take, part.ith, part.nth);
    const Index g = 3 * c.heads;
    View(state.pending_k.data() + (pending + rows.begin) * hd, rows.size(), hd, hd) =
        k_.middleRows(i + rows.begin, rows.size());
    View(state.pending_v.data() + (pending + rows.begin) * hd, rows.size(), hd, hd) =
        v_.middleRows(i + rows.begin, rows.size());
    View(state.pending_gates.data() + (pending + rows.begin) * g, rows.size(), g, g) =
        gates_.middleRows(i + rows.begin, rows.size());
    Barrier(part.nth);  // reads done and pending rows complete before the weights change

    pending += take;
    position += take;
    i += take;
    if (completes) {
      WriteUnit(memory, state, position, part);
      pending = 0;
      if (c.read_offset == 1) Read(c, state, i - 1, i, part);
    }
  }
  Output(memory, n, out, part);
  if (part.ith == 0) {
    state.position = position;
    state.pending = pending;
  }
}

void MemoryWorkspace::Project(const NeuralMemory& memory, MemoryState& state,
                              const float* store, const float* retrieve, int n, Part part) {
  const MemoryConfig& c = memory.config();
  const MemoryWeights& w = memory.weights();
  const Index d = c.d_model, hd = c.inner_dim(), h = c.heads, dh = c.head_dim;
  const Index kernel = c.conv_kernel, tail = std::max<Index>(kernel - 1, 0);

  // 1. Input RMSNorms, split by rows; thread 0 also lays the convolution tails in front of the
  // new rows: q_ext_ row j holds the projection of token j - tail of this tile.
  const Range rows = Share(n, part.ith, part.nth);
  auto rms_norm = [&](const float* in, bool enabled, const std::vector<float>& gain,
                      RowMatrix& normed) {
    const ConstMatMap x = ConstView(in, n, d, d);
    for (int t = rows.begin; t < rows.end; ++t) {
      if (!enabled) {
        normed.row(t) = x.row(t);
        continue;
      }
      const float inv = 1.0f / std::sqrt(x.row(t).squaredNorm() / static_cast<float>(d) +
                                         c.rms_eps);
      normed.row(t) = (x.row(t).array() * inv *
                       Eigen::Map<const Eigen::RowVectorXf>(gain.data(), d).array())
                          .matrix();
    }
  };
  rms_norm(store, c.store_norm, w.store_norm, xs_);
  rms_norm(retrieve, c.retrieve_norm, w.retrieve_norm, xr_);
  if (part.ith == 0 && tail > 0) {
    q_ext_.topRows(tail) = ConstView(state.conv_q.data(), tail, hd, hd);
    k_ext_.topRows(tail) = ConstView(state.conv_k.data(), tail, hd, hd);
    v_ext_.topRows(tail) = ConstView(state.conv_v.data(), tail, hd, hd);
  }
  Barrier(part.nth);

  // 2. Projections, convolution and activation, split by channel columns (each step reads only
  // its own columns, so no barrier between them).
  const Range cols = Share(static_cast<int>(hd), part.ith, part.nth, kColumnAlign);
  const Index c0 = cols.begin, width = cols.size();
  if (width > 0) {
    struct Path {
      const RowMatrix& input;
      const std::vector<float>& proj;
      RowMatrix& ext;
      const std::vector<float>& conv;
      std::vector<float>& tail_state;
      RowMatrix& result;
    };
    for (const Path& path : {Path{xr_, w.w_q, q_ext_, w.conv_q, state.conv_q, q_},
                             Path{xs_, w.w_k, k_ext_, w.conv_k, state.conv_k, k_},
                             Path{xs_, w.w_v, v_ext_, w.conv_v, state.conv_v, v_}}) {
      auto pre = path.ext.block(tail, c0, n, width);
      pre.noalias() = path.input.topRows(n) * ConstView(path.proj.data(), d, hd, hd).middleCols(c0, width);
      auto result = path.result.block(0, c0, n, width);
      if (kernel > 0) {
        // out_t = sum_j conv[j] * in_{t-K+1+j}: ext rows t..t+K-1 hold exactly those inputs.
        const ConstMatMap taps = ConstView(path.conv.data(), kernel, hd, hd);
        result = path.ext.block(0, c0, n, width).array().rowwise() *
                 taps.row(0).segment(c0, width).array();
        for (Index j = 1; j < kernel; ++j) {
          result.array() += path.ext.block(j, c0, n, width).array().rowwise() *
                            taps.row(j).segment(c0, width).array();
        }
        if (tail > 0) {
          View(path.tail_state.data(), tail, hd, hd).middleCols(c0, width) =
              path.ext.block(n, c0, tail, width);
        }
      } else {
        result = pre;
      }
      Activate(c.qkv_activation, result);
    }
  }
  // Gate logits: [n, 3H] = xs [n, d] x packed [d, 3H] + bias; output gate [n, H] = xr W_gate.
  const Range gcols = Share(static_cast<int>(3 * h), part.ith, part.nth);
  if (gcols.size() > 0) {
    const ConstMatMap packed = ConstView(memory.packed_gates().data(), d, 3 * h, 3 * h);
    auto g = gates_.block(0, gcols.begin, n, gcols.size());
    g.noalias() = xs_.topRows(n) * packed.middleCols(gcols.begin, gcols.size());
    g.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(memory.packed_gate_bias().data(), 3 * h)
                       .segment(gcols.begin, gcols.size());
  }
  if (c.output_gate) {
    const Range ocols = Share(static_cast<int>(h), part.ith, part.nth);
    if (ocols.size() > 0) {
      gate_out_.block(0, ocols.begin, n, ocols.size()).noalias() =
          xr_.topRows(n) * ConstView(w.w_gate.data(), d, h, h).middleCols(ocols.begin, ocols.size());
    }
  }
  Barrier(part.nth);

  // 3. Per-head normalisation of queries and keys, split by rows (a head's row is needed whole).
  if (c.qk_norm == QkNorm::kNone) return;
  for (int t = rows.begin; t < rows.end; ++t) {
    for (Index head = 0; head < h; ++head) {
      for (RowMatrix* m : {&q_, &k_}) {
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
  Barrier(part.nth);
}

void MemoryWorkspace::Read(const MemoryConfig& c, const MemoryState& state, int r0, int r1,
                           Part part) {
  const Index dh = c.head_dim, hd = c.inner_dim(), rows = r1 - r0;
  const bool plain = c.output == MemoryOutput::kPlain;
  for (int l = 0; l < c.depth; ++l) {
    const Index in = c.layer_in(l), out = c.layer_out(l);
    const bool last = l + 1 == c.depth;
    ForHeadShare(c.heads, static_cast<int>(out), part.ith, part.nth, kColumnAlign,
                 [&](int head, Range cols) {
      const ConstMatMap weights = ConstView(state.w_cur[l].data() + head * in * out, in, out, out);
      const ConstMatMap input =
          l == 0 ? ConstView(q_.data() + r0 * hd + head * dh, rows, dh, hd)
                 : ConstView(read_z_[l - 1].data() + (head * kTile + r0) * in, rows, in, in);
      // The plain memory's last layer writes straight into the head's columns of y_.
      MatMap z = last && plain
                     ? View(y_.data() + r0 * hd + head * dh, rows, dh, hd)
                     : View(read_z_[l].data() + (head * kTile + r0) * out, rows, out, out);
      auto block = z.middleCols(cols.begin, cols.size());
      block.noalias() = input * weights.middleCols(cols.begin, cols.size());
      if (!last) Activate(c.activation, block);
    });
    Barrier(part.nth);
  }
  if (plain) return;
  // kLnResidual: y = LN(z) * (1 + g) + q, one whole row at a time.
  ForHeadShare(c.heads, static_cast<int>(rows), part.ith, part.nth, 1, [&](int head, Range rs) {
    const auto gain = Eigen::Map<const Eigen::RowVectorXf>(state.g_cur.data() + head * dh, dh);
    for (int t = r0 + rs.begin; t < r0 + rs.end; ++t) {
      auto y = y_.block(t, head * dh, 1, dh);
      LayerNormRow(read_z_[c.depth - 1].row(head * kTile + t), c.layer_norm_eps, y);
      y = (y.array() * (1.0f + gain.array())).matrix() + q_.block(t, head * dh, 1, dh);
    }
  });
}

namespace {

// The unit's coefficients per head (SEMANTICS 1.6, 0-based steps j = 0..m-1 of s tokens):
//   theta_t = max_lr sigmoid(logit), per token; eta_j, alpha_j from the mean logit of step j;
//   after the unit  S = E0 S_in + sum_j e_j u_j,  W = A0 W_in + f S_in + sum_j c_j u_j  with
//   e_j = prod_{i>j} eta_i, a_j = prod_{i>j} (1 - alpha_i), c_j = a_j + eta_{j+1} c_{j+1},
//   A0 = prod (1 - alpha), E0 = prod eta, f = sum_j a_j prod_{i<=j} eta_i.
// Without momentum S_j = u_j: c_j = a_j and there is no S. Products run in double.
void UnitCoefficients(const MemoryConfig& c, const float* gates, int head, float* theta,
                      float* coef_c, float* coef_e, float& decay_all, float& momentum_all,
                      float& momentum_carry) {
  const int u = c.unit(), s = c.step, m = u / s, h = c.heads, g = 3 * h;
  auto step_gate = [&](int j, int which) {
    double sum = 0.0;
    for (int t = j * s; t < (j + 1) * s; ++t) sum += gates[t * g + which * h + head];
    return 1.0 / (1.0 + std::exp(-sum / s));
  };
  for (int t = 0; t < u; ++t) theta[t] = c.max_lr * Sigmoid(gates[t * g + head]);
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

void MemoryWorkspace::WriteUnit(const NeuralMemory& memory, MemoryState& state,
                                int64_t position_after, Part part) {
  const MemoryConfig& c = memory.config();
  const Index dh = c.head_dim, hd = c.inner_dim(), u = c.unit();
  const int depth = c.depth;
  const bool ln = c.output == MemoryOutput::kLnResidual;
  const float lambda = c.loss == LossScale::kMean ? 1.0f / static_cast<float>(dh) : 1.0f;

  // Coefficients, split by heads (the first barrier below publishes them).
  for (int head = Share(c.heads, part.ith, part.nth).begin;
       head < Share(c.heads, part.ith, part.nth).end; ++head) {
    UnitCoefficients(c, state.pending_gates.data(), head, coef_theta_.row(head).data(),
                     coef_c_.row(head).data(), coef_e_.row(head).data(), decay_all_[head],
                     momentum_all_[head], momentum_carry_[head]);
  }

  // Forward pass of the unit's keys at W_base: z_l [U, out_l] per head, a_l = act(z_l).
  auto layer_input = [&](int l, int head) -> ConstMatMap {
    return l == 0 ? ConstView(state.pending_k.data() + head * dh, u, dh, hd)
                  : ConstView(unit_a_[l - 1].data() + head * u * c.layer_in(l), u, c.layer_in(l),
                         c.layer_in(l));
  };
  for (int l = 0; l < depth; ++l) {
    const Index in = c.layer_in(l), out = c.layer_out(l);
    ForHeadShare(c.heads, static_cast<int>(out), part.ith, part.nth, kColumnAlign,
                 [&](int head, Range cols) {
      const ConstMatMap weights = ConstView(state.w_base[l].data() + head * in * out, in, out, out);
      auto z = Rows(unit_z_[l], head * u, u).middleCols(cols.begin, cols.size());
      z.noalias() = layer_input(l, head) * weights.middleCols(cols.begin, cols.size());
      if (l + 1 < depth) {
        auto a = Rows(unit_a_[l], head * u, u).middleCols(cols.begin, cols.size());
        a = z;
        Activate(c.activation, a);
      }
    });
    Barrier(part.nth);
  }

  // Output error e_t = 2 lambda theta_t (M(k_t) - v_t) and its gradient at the last layer's
  // output, row by row (LayerNorm needs whole rows).
  ForHeadShare(c.heads, static_cast<int>(u), part.ith, part.nth, 1, [&](int head, Range rs) {
    RowMatrix& z = unit_z_[depth - 1];
    RowMatrix& delta = unit_delta_[depth - 1];
    for (int t = rs.begin; t < rs.end; ++t) {
      const Index row = head * u + t;
      const auto key = ConstView(state.pending_k.data() + t * hd + head * dh, 1, dh, hd);
      const auto value = ConstView(state.pending_v.data() + t * hd + head * dh, 1, dh, hd);
      const float scale = 2.0f * lambda * coef_theta_(head, t);
      if (!ln) {
        delta.row(row) = scale * (z.row(row) - value);
        continue;
      }
      // M = n (1 + g) + k with n = LN(z): dM/dg = n; dL/dn = e (1 + g);
      // dL/dz = rstd (dn - mean(dn) - n mean(dn n)).
      const auto gain = Eigen::Map<const Eigen::RowVectorXf>(state.g_base.data() + head * dh, dh);
      auto normed = unit_dg_.row(row);  // holds n first, then the gain gradient e n
      const float rstd = LayerNormRow(z.row(row), c.layer_norm_eps, normed);
      const Eigen::RowVectorXf e =
          scale * ((normed.array() * (1.0f + gain.array())).matrix() + key - value);
      const Eigen::RowVectorXf dn = (e.array() * (1.0f + gain.array())).matrix();
      delta.row(row) =
          rstd * (dn.array() - dn.mean() - normed.array() * dn.cwiseProduct(normed).mean())
                     .matrix();
      normed = e.cwiseProduct(normed);
    }
  });
  Barrier(part.nth);

  // Backward through the MLP: delta_{l-1} = (delta_l W_l^T) * act'(z_{l-1}).
  for (int l = depth - 1; l >= 1; --l) {
    const Index in = c.layer_in(l), out = c.layer_out(l);
    ForHeadShare(c.heads, static_cast<int>(in), part.ith, part.nth, kColumnAlign,
                 [&](int head, Range cols) {
      const ConstMatMap weights = ConstView(state.w_base[l].data() + head * in * out, in, out, out);
      auto prev = Rows(unit_delta_[l - 1], head * u, u).middleCols(cols.begin, cols.size());
      prev.noalias() =
          Rows(unit_delta_[l], head * u, u) * weights.middleRows(cols.begin, cols.size()).transpose();
      MultiplyByDerivative(c.activation, prev,
                           Rows(unit_z_[l - 1], head * u, u).middleCols(cols.begin, cols.size()));
    });
    Barrier(part.nth);
  }

  // Fold the unit into the fast weights: sum_t c_t u_t = -A^T diag(c) Delta per layer (and the
  // same with e_t for the momentum), then W = A0 W + f S - G_c, S = E0 S - G_e, one column
  // slice at a time so no thread waits for another.
  RowMatrix& grad_c = grad_c_[part.ith];
  RowMatrix& grad_e = grad_e_[part.ith];
  RowMatrix& scaled_c = scaled_c_[part.ith];
  RowMatrix& scaled_e = scaled_e_[part.ith];
  for (int l = 0; l < depth; ++l) {
    const Index in = c.layer_in(l), out = c.layer_out(l);
    const bool last = l + 1 == depth;
    ForHeadShare(c.heads, static_cast<int>(out), part.ith, part.nth, kColumnAlign,
                 [&](int head, Range cols) {
      const Index w = cols.size();
      const auto delta = Rows(unit_delta_[l], head * u, u).middleCols(cols.begin, w);
      const auto cc = coef_c_.row(head).transpose();
      const auto ce = coef_e_.row(head).transpose();
      auto gc = grad_c.topLeftCorner(in, w);
      auto sc = scaled_c.topLeftCorner(u, w);
      sc = delta.array().colwise() * cc.array();
      gc.noalias() = layer_input(l, head).transpose() * sc;
      MatMap weights = View(state.w_cur[l].data() + head * in * out + cols.begin, in, w, out);
      const float decay = decay_all_[head];
      if (!c.momentum) {
        weights = decay * weights - gc;
      } else {
        auto ge = grad_e.topLeftCorner(in, w);
        auto se = scaled_e.topLeftCorner(u, w);
        se = delta.array().colwise() * ce.array();
        ge.noalias() = layer_input(l, head).transpose() * se;
        MatMap mom = View(state.momentum[l].data() + head * in * out + cols.begin, in, w, out);
        weights = decay * weights + momentum_carry_[head] * mom - gc;
        mom = momentum_all_[head] * mom - ge;
      }
      if (!(last && ln)) return;
      // The gain g of kLnResidual, same rule; its per-token gradients are the rows of unit_dg_.
      const auto dg = Rows(unit_dg_, head * u, u).middleCols(cols.begin, w);
      auto gain = Eigen::Map<Eigen::RowVectorXf>(state.g_cur.data() + head * dh + cols.begin, w);
      const Eigen::RowVectorXf dgc = cc.transpose() * dg;
      if (!c.momentum) {
        gain = decay * gain - dgc;
      } else {
        auto gmom =
            Eigen::Map<Eigen::RowVectorXf>(state.g_momentum.data() + head * dh + cols.begin, w);
        const Eigen::RowVectorXf dge = ce.transpose() * dg;
        gain = decay * gain + momentum_carry_[head] * gmom - dgc;
        gmom = momentum_all_[head] * gmom - dge;
      }
    });
  }
  Barrier(part.nth);

  // Commit: gradients are taken at the new weights from here on.
  if (c.chunk > 0 && position_after % c.chunk == 0) {
    for (int l = 0; l < depth; ++l) {
      const Range r = Share(static_cast<int>(state.w_cur[l].size()), part.ith, part.nth);
      std::copy(state.w_cur[l].begin() + r.begin, state.w_cur[l].begin() + r.end,
                state.w_base[l].begin() + r.begin);
    }
    if (ln && part.ith == 0) state.g_base = state.g_cur;
    Barrier(part.nth);
  }
}

void MemoryWorkspace::Output(const NeuralMemory& memory, int n, float* out, Part part) {
  const MemoryConfig& c = memory.config();
  const Index h = c.heads, dh = c.head_dim, hd = c.inner_dim(), d = c.d_model;
  Barrier(part.nth);  // y_ complete
  const Range rows = Share(n, part.ith, part.nth);
  if (c.output_gate) {
    for (int t = rows.begin; t < rows.end; ++t) {
      for (Index head = 0; head < h; ++head) {
        y_.block(t, head * dh, 1, dh) *= Sigmoid(gate_out_(t, head));
      }
    }
    Barrier(part.nth);
  }
  if (!c.output_proj) {
    View(out + rows.begin * hd, rows.size(), hd, hd) = y_.middleRows(rows.begin, rows.size());
    return;
  }
  const Range cols = Share(static_cast<int>(d), part.ith, part.nth, kColumnAlign);
  if (cols.size() == 0) return;
  View(out, n, d, d).middleCols(cols.begin, cols.size()).noalias() =
      y_.topRows(n) * ConstView(memory.weights().w_out.data(), hd, d, d).middleCols(cols.begin,
                                                                               cols.size());
}

}  // namespace titans
