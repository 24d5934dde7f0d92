// Helpers shared by the architectures of a Session (internal): the Titans stack
// (src/model/arch/titans.cpp) and the titans-pytorch MAC (src/model/arch/titans_pytorch_mac.cpp).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/attention.hpp"
#include "ops/bf16.hpp"
#include "ops/flush_denormals.hpp"
#include "ops/linalg.hpp"
#include "ops/norms.hpp"
#include "ops/threading.hpp"
#include "titans/memory.hpp"
#include "titans/model.hpp"

namespace titans::session {

// c = a b with the rows of c split over up to options.threads threads: fewer for little work
// (ops::TeamSize, the engine's one rule; a product is the work between two synchronisations).
// b is an Eigen matrix, a model's weight matrix (linalg::WeightMatrix, float32 or bf16) or a tied
// head's embedding (linalg::TransposedMatrix).
template <class C, class A, class B>
void ParallelMultiply(const SessionOptions& options, C c, const A& a, const B& b) {
  const double flops = 2.0 * static_cast<double>(c.rows()) * c.cols() * a.cols();
  const int team = ops::TeamSize(flops, options.threads, options.min_flops_per_thread, c.rows());
  if (team == 1) {
    linalg::Multiply(c, a, b);  // the caller (Session::Forward*) holds a FlushDenormals
    return;
  }
#pragma omp parallel num_threads(team)
  {
    const FlushDenormals flush;  // on every worker, as in the kernels (src/ops/flush_denormals.hpp)
    const linalg::Range r =
        linalg::Share(static_cast<int>(c.rows()), omp_get_thread_num(), omp_get_num_threads());
    if (r.size() > 0) {
      linalg::Multiply(c.middleRows(r.begin, r.size()), a.middleRows(r.begin, r.size()), b);
    }
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
