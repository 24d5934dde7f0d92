// Norms over the rows of row-major float buffers (internal): the model's RMSNorms.
#pragma once

#include <cmath>
#include <vector>

#include "ops/linalg.hpp"

namespace titans::linalg {

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

}  // namespace titans::linalg
