// Naive masked softmax attention of a whole sequence at positions 0..n-1, the reference the
// tests compare the attention kernel (src/ops/attention.hpp) with: materialises every query's
// score row over [persistent | keys 0..n-1], masks it, accumulates in double. Shapes as in
// src/ops/attention.hpp; out [n, H*dh]. Header-only, like the memory's reference: it is not
// part of the library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/attention.hpp"

namespace titans {

inline void ReferenceAttention(const AttentionShape& shape, const AttentionInputs& in, int n,
                               float* out) {
  shape.Validate();
  const int dh = shape.head_dim, np = shape.persistent, w = shape.window;
  const int64_t qw = shape.q_width(), kw = shape.kv_width();
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  std::vector<double> score(static_cast<size_t>(np + n));
  std::vector<char> visible(score.size());
  std::vector<double> acc(static_cast<size_t>(dh));
  for (int h = 0; h < shape.heads; ++h) {
    const int64_t kc = int64_t{h / shape.group()} * dh;
    for (int t = 0; t < n; ++t) {
      const float* qrow = in.q + t * qw + int64_t{h} * dh;
      // Scores over [persistent | keys 0..n-1], masked.
      double max_score = -std::numeric_limits<double>::infinity();
      for (int c = 0; c < np + n; ++c) {
        const bool persistent = c < np;
        const int j = c - np;
        visible[c] = persistent || (j <= t && (w == 0 || j > t - w));
        if (!visible[c]) continue;
        const float* krow =
            persistent ? in.persistent_k + int64_t{c} * kw + kc : in.k + int64_t{j} * kw + kc;
        double dot = 0;
        for (int e = 0; e < dh; ++e) dot += static_cast<double>(qrow[e]) * krow[e];
        score[c] = dot * scale;
        max_score = std::max(max_score, score[c]);
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int c = 0; c < np + n; ++c) {
        if (!visible[c]) continue;
        const double p = std::exp(score[c] - max_score);
        sum += p;
        const float* vrow =
            c < np ? in.persistent_v + int64_t{c} * kw + kc : in.v + int64_t{c - np} * kw + kc;
        for (int e = 0; e < dh; ++e) acc[e] += p * vrow[e];
      }
      float* orow = out + t * qw + int64_t{h} * dh;
      for (int e = 0; e < dh; ++e) orow[e] = static_cast<float>(acc[e] / sum);
    }
  }
}

}  // namespace titans
