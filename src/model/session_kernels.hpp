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

// The FLOPs of c [m, n] = a [m, k] b.
inline double ProductFlops(linalg::Index m, linalg::Index k, linalg::Index n) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n);
}

// The bytes of a weight matrix as stored.
inline double WeightBytes(const linalg::WeightMatrix& w) {
  return static_cast<double>(w.rows) * static_cast<double>(w.cols) * (w.bf16 != nullptr ? 2 : 4);
}

// The work of a chain of products over n rows for ops::TeamSize: their FLOPs; one row (a
// decoded token) runs at the rate its weights arrive, so its weight bytes count
// ops::kFlopsPerWeightByte each instead.
inline double ChainWork(linalg::Index n, double flops, double weight_bytes) {
  return n == 1 ? weight_bytes * ops::kFlopsPerWeightByte : flops;
}

// fn(ith, nth) for a chain of products over a piece's rows (a norm, products with the weights,
// element-wise steps): each thread computes its share of every product's output columns for all
// the rows (ColumnShare) and reads only that share of the weights, with a barrier
// (linalg::Barrier(nth)) wherever a step reads another thread's columns, or rows (a norm shares
// out rows: RowShare). One region of up to options.threads threads, sized by ops::TeamSize from
// `work` (ChainWork). Shares of columns rather than of rows: two threads read each weight once
// between them, not once each, and every thread's rows make whole register tiles (a 64-row
// piece split by rows left each thread 5 tiles of 6 rows and one of 2, which runs at about half
// the rate). Measured: 64-row products 1.00-1.22x on two threads, median 1.12x
// (docs/PERFORMANCE.md, "Shares of columns for every chain"). Every output element is the same
// sum whichever thread computes it and whatever the share's width (MultiplyWeights, MultiplyRow,
// TransposedTile), and element-wise steps with an exponential compute every element the same
// way wherever it lies (ops::LaneWise): the split changes no bits.
template <class Fn>
void ForColumnShares(const SessionOptions& options, double work, Fn fn) {
  const int team = ops::TeamSize(work, options.threads, options.min_flops_per_thread);
  if (team == 1) {
    // The caller (Session::Forward*) holds a FlushDenormals.
    fn(0, 1);
    return;
  }
#pragma omp parallel num_threads(team)
  {
    const FlushDenormals flush;  // on every worker, as in the kernels (src/ops/flush_denormals.hpp)
    fn(omp_get_thread_num(), omp_get_num_threads());
  }
}

// Share ith of nth of a product's n output columns: whole cache lines of floats, so that two
// threads never write the same line of a row.
inline linalg::Range ColumnShare(linalg::Index n, int ith, int nth) {
  return linalg::Share(static_cast<int>(n), ith, nth, 16);
}

// Share ith of nth of n rows (a norm inside a ForColumnShares chain).
inline linalg::Range RowShare(linalg::Index n, int ith, int nth) {
  return linalg::Share(static_cast<int>(n), ith, nth);
}

// Rows [0, n) of each outputs[p] = x [n, weights[p].rows] weights[p] (the attention's q, k and v
// projections): one ForColumnShares region, each thread computing its share of every product's
// columns. No barrier: no product reads another's output.
template <size_t N>
void MultiplyEach(const SessionOptions& options, linalg::Index n, const float* x,
                  const std::array<linalg::WeightMatrix, N>& weights,
                  const std::array<RowMatrix*, N>& outputs) {
  double flops = 0, bytes = 0;
  for (const linalg::WeightMatrix& w : weights) {
    flops += ProductFlops(n, w.rows, w.cols);
    bytes += WeightBytes(w);
  }
  ForColumnShares(options, ChainWork(n, flops, bytes), [&](int ith, int nth) {
    for (size_t p = 0; p < N; ++p) {
      const linalg::Range j = ColumnShare(weights[p].cols, ith, nth);
      if (j.size() == 0) continue;
      linalg::Multiply(outputs[p]->block(0, j.begin, n, j.size()),
                       linalg::ConstView(x, n, weights[p].rows, weights[p].rows),
                       weights[p].Columns(j.begin, j.size()));
    }
  });
}

// c = a b with c's columns shared out over up to options.threads threads (ForColumnShares). b
// is a model's weight matrix (linalg::WeightMatrix, float32 or bf16).
template <class C, class A>
void ParallelMultiply(const SessionOptions& options, C c, const A& a,
                      const linalg::WeightMatrix& b) {
  const double work =
      ChainWork(c.rows(), ProductFlops(c.rows(), a.cols(), c.cols()), WeightBytes(b));
  ForColumnShares(options, work, [&](int ith, int nth) {
    const linalg::Range j = ColumnShare(c.cols(), ith, nth);
    if (j.size() > 0) {
      linalg::Multiply(c.middleCols(j.begin, j.size()), a, b.Columns(j.begin, j.size()));
    }
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

// out = SiLU(g) * y for `rows` rows of `cols` floats, `stride` floats apart in each of g, y and
// out (out may be g or y), through ops::LaneWise: every element has the same bits wherever it
// lies (a thread's share of rows or columns, a batch's row).
inline void SiluProduct(linalg::Index rows, linalg::Index cols, linalg::Index stride,
                        const float* g, const float* y, float* out) {
  for (linalg::Index r = 0; r < rows; ++r) {
    ops::LaneWise(cols, g + r * stride, y + r * stride, out + r * stride,
                  [](const auto& gate, const auto& value) { return ops::Silu(gate) * value; });
  }
}

// The FLOPs and the weight bytes of a SwiGLU feed-forward over n rows (ChainWork's inputs).
inline double SwiGluWork(linalg::Index n, const SwiGluWeights& w) {
  const double flops =
      ProductFlops(n, w.gate.rows, 2 * w.gate.cols) + ProductFlops(n, w.down.rows, w.down.cols);
  return ChainWork(n, flops, WeightBytes(w.gate) + WeightBytes(w.up) + WeightBytes(w.down));
}

// Share ith of nth of a ForColumnShares chain: out = W_down (SiLU(xn W_gate + b_gate) * (xn W_up
// + b_up)) + b_down for n rows, xn [n, d] (normalised, every row ready), a, b [n, f] scratch, out
// [n, d]. This thread's hidden columns (their products and SiLU), a barrier, its output columns
// (ColumnShare(d, ith, nth): a caller may go on with them without a barrier).
inline void SwiGluShare(int ith, int nth, linalg::Index n, const float* xn, const SwiGluWeights& w,
                        float* a, float* b, float* out) {
  using Bias = Eigen::Map<const Eigen::RowVectorXf>;
  const linalg::Index d = w.gate.rows, f = w.gate.cols;
  const linalg::Range hidden = ColumnShare(f, ith, nth);
  if (hidden.size() > 0) {
    const linalg::Index j0 = hidden.begin, cols = hidden.size();
    auto gate = linalg::View(a + j0, n, cols, f);
    auto up = linalg::View(b + j0, n, cols, f);
    const auto x = linalg::ConstView(xn, n, d, d);
    linalg::Multiply(gate, x, w.gate.Columns(j0, cols));
    linalg::Multiply(up, x, w.up.Columns(j0, cols));
    if (w.gate_bias != nullptr) gate.rowwise() += Bias(w.gate_bias->data() + j0, cols);
    if (w.up_bias != nullptr) up.rowwise() += Bias(w.up_bias->data() + j0, cols);
    SiluProduct(n, cols, f, a + j0, b + j0, a + j0);
  }
  linalg::Barrier(nth);  // the down product reads every hidden column
  const linalg::Range outputs = ColumnShare(d, ith, nth);
  if (outputs.size() > 0) {
    const linalg::Index j0 = outputs.begin, cols = outputs.size();
    auto y = linalg::View(out + j0, n, cols, d);
    linalg::Multiply(y, linalg::ConstView(a, n, f, f), w.down.Columns(j0, cols));
    if (w.down_bias != nullptr) y.rowwise() += Bias(w.down_bias->data() + j0, cols);
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
