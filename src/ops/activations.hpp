// The activations, each defined once (internal): scalars and Eigen array expressions.
// sigmoid(x) = 1 / (1 + exp(-x)), SiLU(x) = x sigmoid(x) = x / (1 + exp(-x)) (written as the
// division, the rounding every path of the engine shares).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "ops/bf16.hpp"

namespace titans::ops {

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Elementwise, for array expressions (an Eigen ArrayBase); use within one statement.
template <class Derived>
auto Sigmoid(const Eigen::ArrayBase<Derived>& a) {
  return (1.0f + (-a).exp()).inverse();
}
template <class Derived>
auto Silu(const Eigen::ArrayBase<Derived>& a) {
  return a / (1.0f + (-a).exp());
}

// out[i] = f(a[i], b[i]) for i < n, f an element-wise expression of two registers of lanes
// (Eigen arrays of simd::kWidth floats): whole registers, then the last lanes in a zero-padded
// register, so that every element goes through the same vector code whatever its index or
// address. Eigen's own loops evaluate the elements before an array's first 64-byte line one by
// one, with the scalar exp, which rounds differently for a few in a hundred: a row's bits would
// then depend on where it lies (a thread's share, a batch's row i). out may be a or b.
template <class F>
void LaneWise(Eigen::Index n, const float* a, const float* b, float* out, F f) {
  using Lanes = Eigen::Array<float, linalg::simd::kWidth, 1>;
  constexpr Eigen::Index kLanes = linalg::simd::kWidth;
  Eigen::Index i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Lanes::Map(out + i) = f(Lanes::Map(a + i), Lanes::Map(b + i));
  }
  if (i < n) {
    Lanes a_tail = Lanes::Zero(), b_tail = Lanes::Zero();
    std::copy(a + i, a + n, a_tail.data());
    std::copy(b + i, b + n, b_tail.data());
    const Lanes result = f(a_tail, b_tail);
    std::copy_n(result.data(), n - i, out + i);
  }
}

}  // namespace titans::ops
