// Helpers shared by the architectures of a Session (internal): the Titans stack
// (src/model/arch/titans.cpp) and the titans-pytorch MAC (src/model/arch/titans_pytorch_mac.cpp).
#pragma once

#include <omp.h>

#include <algorithm>
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

// c = a b with the rows of c split over up to options.threads threads (ForRowShares).
// b is a model's weight matrix (linalg::WeightMatrix, float32 or bf16) or a tied head's
// embedding (linalg::TransposedMatrix).
template <class C, class A, class B>
void ParallelMultiply(const SessionOptions& options, C c, const A& a, const B& b) {
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
