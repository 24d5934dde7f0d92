// Helpers shared by the model sessions (internal): the Titans stack
// (src/model_session.cpp) and the titans-pytorch MAC (src/tp_mac_session.cpp).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention.hpp"
#include "flush_denormals.hpp"
#include "linalg.hpp"
#include "titans/memory.hpp"
#include "titans/model.hpp"

namespace titans::session {

// out = RMSNorm(in) * gain for each of n rows of width `width` (`groups` norms per row, each
// over width / groups features, with gain [width]): the model's norms (groups = 1) and the
// memory branch's per-head norm (groups = H). in and out may be the same buffer.
inline void RmsNormRows(const float* in, const std::vector<float>& gain, linalg::Index n,
                        linalg::Index width, linalg::Index groups, float eps, float* out) {
  using linalg::ConstView;
  using linalg::View;
  const linalg::Index g = width / groups;
  for (linalg::Index t = 0; t < n; ++t) {
    for (linalg::Index h = 0; h < groups; ++h) {
      const auto x = ConstView(in + t * width + h * g, 1, g, g);
      const float inv = 1.0f / std::sqrt(x.squaredNorm() / static_cast<float>(g) + eps);
      View(out + t * width + h * g, 1, g, g) =
          (x.array() * inv * ConstView(gain.data() + h * g, 1, g, g).array()).matrix();
    }
  }
}

// c = a b with the rows of c split over up to options.threads threads: fewer for little work
// (one region per product costs a few microseconds: about 4 MFLOP per thread pay for it, or
// the session's own threshold when that is lower, e.g. 0 in tests).
template <class C, class A, class B>
void ParallelMultiply(const SessionOptions& options, C c, const A& a, const B& b) {
  const double flops = 2.0 * static_cast<double>(c.rows()) * c.cols() * a.cols();
  const double per_thread = std::min(4e6, options.min_flops_per_thread);
  const int team = per_thread <= 0
                       ? options.threads
                       : static_cast<int>(std::clamp(flops / per_thread, 1.0,
                                                     static_cast<double>(options.threads)));
  if (team == 1) {
    linalg::Multiply(c, a, b);  // the caller (Session::Forward*) holds a FlushDenormals
    return;
  }
#pragma omp parallel num_threads(team)
  {
    const FlushDenormals flush;  // on every worker, as in the kernels (flush_denormals.hpp)
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
