// The model stack's chains of products (src/model/session_kernels.hpp): a SwiGLU feed-forward
// shared out by columns (SwiGluShare) against a float64 reference, and the same bits on any
// number of threads, for widths that are no multiple of 16 floats and rows that start off a
// 64-byte line; SiLU's element-wise product the same wherever its row lies.
#include "model/session_kernels.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace titans::session {
namespace {

using linalg::Index;

std::vector<float> Random(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// out = W_down (SiLU(x W_gate + b_gate) * (x W_up + b_up)) + b_down in float64.
std::vector<double> SwiGluReference(const std::vector<float>& x, Index n, Index d, Index f,
                                    const std::vector<float>& gate, const std::vector<float>& up,
                                    const std::vector<float>& down,
                                    const std::vector<float>& gate_bias,
                                    const std::vector<float>& up_bias,
                                    const std::vector<float>& down_bias) {
  std::vector<double> out(static_cast<size_t>(n * d));
  std::vector<double> hidden(static_cast<size_t>(f));
  for (Index r = 0; r < n; ++r) {
    for (Index j = 0; j < f; ++j) {
      double g = gate_bias[j], u = up_bias[j];
      for (Index i = 0; i < d; ++i) {
        g += static_cast<double>(x[r * d + i]) * gate[i * f + j];
        u += static_cast<double>(x[r * d + i]) * up[i * f + j];
      }
      hidden[j] = g / (1.0 + std::exp(-g)) * u;
    }
    for (Index j = 0; j < d; ++j) {
      double y = down_bias[j];
      for (Index i = 0; i < f; ++i) y += hidden[i] * down[i * d + j];
      out[r * d + j] = y;
    }
  }
  return out;
}

TEST(SessionKernels, SwiGluShareMatchesFloat64AndKeepsItsBitsOnAnyThreadCount) {
  constexpr Index d = 40, f = 88;
  std::mt19937 rng(5);
  const std::vector<float> gate = Random(d * f, rng, 0.2f), up = Random(d * f, rng, 0.2f);
  const std::vector<float> down = Random(f * d, rng, 0.1f);
  const std::vector<float> gate_bias = Random(f, rng, 0.1f), up_bias = Random(f, rng, 0.1f);
  const std::vector<float> down_bias = Random(d, rng, 0.1f);
  const SwiGluWeights w{{gate.data(), nullptr, d, f},
                        {up.data(), nullptr, d, f},
                        {down.data(), nullptr, f, d},
                        &gate_bias,
                        &up_bias,
                        &down_bias};
  for (const Index n : {Index{1}, Index{7}, Index{39}}) {
    const std::vector<float> x = Random(static_cast<size_t>(n * d), rng, 1.0f);
    const std::vector<double> expected =
        SwiGluReference(x, n, d, f, gate, up, down, gate_bias, up_bias, down_bias);
    std::vector<float> one;
    for (const int threads : {1, 2, 3}) {
      RowMatrix a(n, f), b(n, f);
      std::vector<float> out(static_cast<size_t>(n * d));
#pragma omp parallel num_threads(threads)
      SwiGluShare(omp_get_thread_num(), omp_get_num_threads(), n, x.data(), w, a.data(), b.data(),
                  out.data());
      double error = 0, norm = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        error = std::max(error, std::abs(out[i] - expected[i]));
        norm = std::max(norm, std::abs(expected[i]));
      }
      EXPECT_LE(error, 1e-5 * norm) << n << " rows, " << threads << " threads";
      if (threads == 1) {
        one = out;
      } else {
        EXPECT_EQ(out, one) << n << " rows, " << threads << " threads";
      }
    }
  }
}

// SiLU(g) * y of a row has the same bits wherever the row lies: in a block of rows of 88 floats
// (every other row starts half-way into a 64-byte line), computed with the rows around it or as
// a share of them, or alone at the start of an aligned buffer.
TEST(SessionKernels, SiluProductOfARowDoesNotDependOnWhereItLies) {
  constexpr Index width = 88, rows = 64;
  std::mt19937 rng(6);
  RowMatrix g(rows, width), y(rows, width), all(rows, width), share(rows, width);
  const std::vector<float> g_values = Random(rows * width, rng, 3.0f);
  const std::vector<float> y_values = Random(rows * width, rng, 1.0f);
  std::copy(g_values.begin(), g_values.end(), g.data());
  std::copy(y_values.begin(), y_values.end(), y.data());
  SiluProduct(rows, width, width, g.data(), y.data(), all.data());
  SiluProduct(19, width, width, g.data(), y.data(), share.data());
  SiluProduct(rows - 19, width, width, g.data() + 19 * width, y.data() + 19 * width,
              share.data() + 19 * width);
  EXPECT_EQ(share, all);
  for (Index r = 0; r < rows; ++r) {
    RowMatrix g_alone = g.row(r), y_alone = y.row(r), alone(1, width);
    SiluProduct(1, width, width, g_alone.data(), y_alone.data(), alone.data());
    EXPECT_EQ(alone, all.row(r)) << "row " << r;
    for (Index j = 0; j < width; ++j) {
      const double x = g(r, j);
      EXPECT_NEAR(all(r, j), x / (1.0 + std::exp(-x)) * y(r, j), 1e-6 * (1 + std::abs(y(r, j))));
    }
  }
}

}  // namespace
}  // namespace titans::session
