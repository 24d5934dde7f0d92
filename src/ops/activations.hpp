// The activations, each defined once (internal): scalars and Eigen array expressions.
// sigmoid(x) = 1 / (1 + exp(-x)), SiLU(x) = x sigmoid(x) = x / (1 + exp(-x)) (written as the
// division, the rounding every path of the engine shares).
#pragma once

#include <Eigen/Core>
#include <cmath>

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

}  // namespace titans::ops
