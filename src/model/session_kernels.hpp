// Helpers shared by the architectures of a Session (internal): the Titans stack
// (src/model/arch/titans.cpp) and the titans-pytorch MAC (src/model/arch/titans_pytorch_mac.cpp).
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "ops/activations.hpp"
#include "ops/attention.hpp"
#include "ops/bf16.hpp"
#include "ops/flush_denormals.hpp"
#include "ops/linalg.hpp"
#include "ops/norms.hpp"
#include "ops/threading.hpp"
#include "titans/memory.hpp"
#include "titans/model.hpp"

namespace titans::session {

// fn(rows) for shares of rows [0, n) over up to options.threads threads, in one parallel region
// (fewer threads for little work: ops::TeamSize, the engine's one rule, with `flops` the work of
// all n rows). For a chain of row-local steps (a norm, products with the weights, element-wise
// operations, each reading and writing only its own rows) the chain is the work between two
// synchronisations: it needs no barrier inside. The weight products give every row the same
// bits whatever the rows beside it (linalg::MultiplyWeights), so the split changes nothing.
template <class Fn>
void ForRowShares(const SessionOptions& options, linalg::Index n, double flops, Fn fn) {
  const int team = ops::TeamSize(flops, options.threads, options.min_flops_per_thread, n);
  if (team == 1) {
    // The caller (Session::Forward*) holds a FlushDenormals.
    fn(linalg::Range{0, static_cast<int>(n)});
    return;
  }
#pragma omp parallel num_threads(team)
  {
    const FlushDenormals flush;  // on every worker, as in the kernels (src/ops/flush_denormals.hpp)
    const linalg::Range r =
        linalg::Share(static_cast<int>(n), omp_get_thread_num(), omp_get_num_threads());
    if (r.size() > 0) fn(r);
  }
}

// The FLOPs of c [m, n] = a [m, k] b.
inline double ProductFlops(linalg::Index m, linalg::Index k, linalg::Index n) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n);
}

// The bytes of a weight matrix as stored.
inline double WeightBytes(const linalg::WeightMatrix& w) {
  return static_cast<double>(w.rows) * static_cast<double>(w.cols) * (w.bf16 != nullptr ? 2 : 4);
}

// fn(ith, nth) for one row (a decoded token), whose products cannot be split by rows: each
// thread computes a share of every product's output columns (ColumnShare), with a barrier
// (linalg::Barrier(nth)) wherever a step reads another thread's columns. One region of up to
// options.threads threads, sized by ops::TeamSize from `weight_bytes`, the most weight bytes
// read between two synchronisations (a one-row product runs at the rate its weights arrive).
// Every output column is the same sum whichever thread computes it (MultiplyRow, TransposedTile):
// the split changes no bits.
template <class Fn>
void ForColumnShares(const SessionOptions& options, double weight_bytes, Fn fn) {
  const int team = ops::TeamSize(weight_bytes * ops::kFlopsPerWeightByte, options.threads,
                                 options.min_flops_per_thread);
  if (team == 1) {
    fn(0, 1);
    return;
  }
#pragma omp parallel num_threads(team)
  {
    const FlushDenormals flush;
    fn(omp_get_thread_num(), omp_get_num_threads());
  }
}

// Share ith of nth of a product's n output columns: whole cache lines of floats, so that two
// threads never write the same line.
inline linalg::Range ColumnShare(linalg::Index n, int ith, int nth) {
  return linalg::Share(static_cast<int>(n), ith, nth, 16);
}

// Row 0 of each outputs[p] = x [1, weights[p].rows] weights[p], for one row (a decoded token):
// one ForColumnShares region, each thread computing its share of every product's columns (the
// attention's q, k and v projections). No barrier: no product reads another's output.
template <size_t N>
void MultiplyRowEach(const SessionOptions& options, const float* x,
                     const std::array<linalg::WeightMatrix, N>& weights,
                     const std::array<RowMatrix*, N>& outputs) {
  double bytes = 0;
  for (const linalg::WeightMatrix& w : weights) bytes += WeightBytes(w);
  ForColumnShares(options, bytes, [&](int ith, int nth) {
    for (size_t p = 0; p < N; ++p) {
      const linalg::Range j = ColumnShare(weights[p].cols, ith, nth);
      if (j.size() == 0) continue;
      linalg::Multiply(outputs[p]->block(0, j.begin, 1, j.size()),
                       linalg::ConstView(x, 1, weights[p].rows, weights[p].rows),
                       weights[p].Columns(j.begin, j.size()));
    }
  });
}

// c = a b with the rows of c split over up to options.threads threads (ForRowShares), or for
// one row its columns (ForColumnShares). b is a model's weight matrix (linalg::WeightMatrix,
// float32 or bf16).
template <class C, class A>
void ParallelMultiply(const SessionOptions& options, C c, const A& a,
                      const linalg::WeightMatrix& b) {
  if (c.rows() == 1) {
    ForColumnShares(options, WeightBytes(b), [&](int ith, int nth) {
      const linalg::Range j = ColumnShare(c.cols(), ith, nth);
      if (j.size() > 0)
        linalg::Multiply(c.middleCols(j.begin, j.size()), a, b.Columns(j.begin, j.size()));
    });
    return;
  }
  ForRowShares(options, c.rows(), ProductFlops(c.rows(), a.cols(), c.cols()), [&](linalg::Range r) {
    linalg::Multiply(c.middleRows(r.begin, r.size()), a.middleRows(r.begin, r.size()), b);
  });
}

// A SwiGLU feed-forward's weights: gate and up [d, f], down [f, d]; a bias is empty when the
// model has none (the Titans stack; titans-pytorch's has all three).
struct SwiGluWeights {
  linalg::WeightMatrix gate, up, down;
  const std::vector<float>* gate_bias = nullptr;  // [f]
  const std::vector<float>* up_bias = nullptr;    // [f]
  const std::vector<float>* down_bias = nullptr;  // [d]
};

// Rows r of: xn = RMSNorm(in) with `gain`, out = W_down (SiLU(xn W_gate + b_gate) * (xn W_up +
// b_up)) + b_down. in, xn, out [P, d]; a, b [P, f] scratch. Row-local: a ForRowShares chain.
inline void SwiGluRows(linalg::Range r, const RowMatrix& in, const std::vector<float>& gain,
                       float eps, const SwiGluWeights& w, RowMatrix& xn, RowMatrix& a, RowMatrix& b,
                       RowMatrix& out) {
  using Bias = Eigen::Map<const Eigen::RowVectorXf>;
  const linalg::Index r0 = r.begin, rows = r.size(), d = in.cols(), f = a.cols();
  linalg::RmsNormRows(in.data() + r0 * d, gain, rows, d, 1, eps, xn.data() + r0 * d);
  const auto x = xn.middleRows(r0, rows);
  auto gate = a.middleRows(r0, rows);
  auto up = b.middleRows(r0, rows);
  auto y = out.middleRows(r0, rows);
  linalg::Multiply(gate, x, w.gate);
  linalg::Multiply(up, x, w.up);
  if (w.gate_bias != nullptr) gate.rowwise() += Bias(w.gate_bias->data(), f);
  if (w.up_bias != nullptr) up.rowwise() += Bias(w.up_bias->data(), f);
  gate.array() = ops::Silu(gate.array()) * up.array();
  linalg::Multiply(y, gate, w.down);
  if (w.down_bias != nullptr) y.rowwise() += Bias(w.down_bias->data(), d);
}

// One row of SwiGluRows after its norm: xn [1, d] (normalised), a, b [1, f] scratch, out [1, d];
// share ith of nth of a ForColumnShares chain: this thread's hidden columns, a barrier, its
// output columns. The same bits as SwiGluRows gives the row.
inline void SwiGluRowShare(int ith, int nth, const float* xn, const SwiGluWeights& w, float* a,
                           float* b, float* out) {
  using Bias = Eigen::Map<const Eigen::RowVectorXf>;
  const linalg::Index d = w.gate.rows, f = w.gate.cols;
  const auto x = linalg::ConstView(xn, 1, d, d);
  const linalg::Range hidden = ColumnShare(f, ith, nth);
  if (hidden.size() > 0) {
    const linalg::Index j0 = hidden.begin, cols = hidden.size();
    auto gate = linalg::View(a + j0, 1, cols, f);
    auto up = linalg::View(b + j0, 1, cols, f);
    linalg::Multiply(gate, x, w.gate.Columns(j0, cols));
    linalg::Multiply(up, x, w.up.Columns(j0, cols));
    if (w.gate_bias != nullptr) gate += Bias(w.gate_bias->data() + j0, cols);
    if (w.up_bias != nullptr) up += Bias(w.up_bias->data() + j0, cols);
    gate.array() = ops::Silu(gate.array()) * up.array();
  }
  linalg::Barrier(nth);  // the down product reads every hidden column
  const linalg::Range outputs = ColumnShare(d, ith, nth);
  if (outputs.size() > 0) {
    const linalg::Index j0 = outputs.begin, cols = outputs.size();
    auto y = linalg::View(out + j0, 1, cols, d);
    linalg::Multiply(y, linalg::ConstView(a, 1, f, f), w.down.Columns(j0, cols));
    if (w.down_bias != nullptr) y += Bias(w.down_bias->data() + j0, cols);
  }
}

// The attention kernel's inputs: rotated q and k, v [n, ...], and the layer's persistent pairs
// if it has any.
inline AttentionInputs AttentionInputsOf(const AttentionWeights& w, const AttentionShape& shape,
                                         const float* q, const float* k, const float* v) {
  AttentionInputs inputs;
  inputs.q = q;
  inputs.k = k;
  inputs.v = v;
  if (shape.persistent > 0) {
    inputs.persistent_k = w.persistent_k.data();
    inputs.persistent_v = w.persistent_v.data();
  }
  return inputs;
}

}  // namespace titans::session
