// The hand-written backward passes of titans-pytorch's SwiGLU and gated-residual memory
// networks (src/memory/models.hpp) against central finite differences of their own forward
// pass, for both activations and depths 1 and 2. The goldens check them through titans-pytorch
// (GELU, depth 2); this checks every tensor's gradient directly, also where the goldens do not
// reach (SiLU, depth 1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "memory/models.hpp"

namespace titans {
namespace {

using linalg::ConstMatMap;
using linalg::Index;

struct Case {
  MemoryModel model;
  Activation activation;
  int depth;
};

std::string Name(const Case& c) {
  return std::string(ToString(c.model)) + ", " + ToString(c.activation) + ", depth " +
         std::to_string(c.depth);
}

class ModelGradient {
 public:
  explicit ModelGradient(const Case& k) {
    c_ = MemoryConfig::TitansPytorch(8, 1, 8, 4);
    c_.model = k.model;
    c_.activation = k.activation;
    c_.depth = k.depth;
    c_.expansion = 2.0f;  // SwiGLU inner 10, gated hidden 16
    c_.Validate();
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int i = 0; i < c_.model_tensors(); ++i) {
      const int rows = c_.tensor_rows(i), cols = c_.tensor_cols(i);
      // Matrices of unit gain; the SwiGLU LayerNorm gain g of (1 + g) near 0.
      const float scale = c_.tensor_is_vector(i) ? 0.3f : 1.0f / std::sqrt(float(rows));
      std::vector<float> w(static_cast<size_t>(rows) * cols);
      for (float& x : w) x = scale * normal(rng);
      tensors_.push_back(std::move(w));
    }
    input_.resize(static_cast<Index>(kRows), c_.head_dim);
    weights_.resize(static_cast<Index>(kRows), c_.head_dim);  // dL/d out
    for (Index i = 0; i < input_.size(); ++i) input_.data()[i] = normal(rng);
    for (Index i = 0; i < weights_.size(); ++i) weights_.data()[i] = normal(rng);
  }

  // L = sum(out * weights_), accumulated in double.
  double Loss() {
    memory_models::Trace trace(c_, kRows);
    RowMatrix out(kRows, c_.head_dim);
    memory_models::Forward(
        c_, [this](int i) { return TensorAt(i); }, input_, trace, 0, kRows, out);
    double loss = 0;
    for (Index i = 0; i < out.size(); ++i) loss += double(out.data()[i]) * weights_.data()[i];
    return loss;
  }

  // dL/d tensor i of the backward pass: Left(i)^T Right(i), or the column sum of Right(i).
  std::vector<RowMatrix> Gradients() {
    memory_models::Trace trace(c_, kRows);
    RowMatrix out(kRows, c_.head_dim);
    memory_models::Forward(
        c_, [this](int i) { return TensorAt(i); }, input_, trace, 0, kRows, out);
    std::vector<RowMatrix> right;
    for (int i = 0; i < c_.model_tensors(); ++i) {
      right.emplace_back(RowMatrix::Zero(kRows, c_.tensor_cols(i)));
    }
    memory_models::Backward(
        c_, [this](int i) { return TensorAt(i); }, trace, 0, kRows, weights_,
        [&](int i) { return right[i].middleRows(0, kRows); });
    std::vector<RowMatrix> gradients;
    for (int i = 0; i < c_.model_tensors(); ++i) {
      if (c_.tensor_is_vector(i)) {
        gradients.emplace_back(right[i].colwise().sum());
      } else {
        gradients.emplace_back(trace.Left(c_, i, 0, kRows).transpose() * right[i]);
      }
    }
    return gradients;
  }

  const MemoryConfig& config() const { return c_; }
  std::vector<float>& tensor(int i) { return tensors_[i]; }

 private:
  static constexpr int kRows = 5;

  ConstMatMap TensorAt(int i) const {
    const Index rows = c_.tensor_rows(i), cols = c_.tensor_cols(i);
    return linalg::ConstView(tensors_[i].data(), rows, cols, cols);
  }

  MemoryConfig c_;
  std::vector<std::vector<float>> tensors_;
  RowMatrix input_, weights_;
};

TEST(MemoryModels, BackwardMatchesFiniteDifferences) {
  for (MemoryModel model : {MemoryModel::kSwiGlu, MemoryModel::kGatedResidual}) {
    for (Activation activation : {Activation::kGelu, Activation::kSilu}) {
      for (int depth : {1, 2}) {
        const Case k{model, activation, depth};
        SCOPED_TRACE(Name(k));
        ModelGradient m(k);
        const std::vector<RowMatrix> gradients = m.Gradients();
        // Central differences of a float32 forward pass: eps 1e-2 keeps the rounding of L (about
        // 1e-6 of |L| ~ 10) at 1e-3 of the difference quotient and the truncation error
        // (eps^2 times third derivatives of order 1) near 1e-4.
        const float eps = 1e-2f;
        double worst = 0;
        for (int i = 0; i < m.config().model_tensors(); ++i) {
          std::vector<float>& w = m.tensor(i);
          for (size_t e = 0; e < w.size(); e += std::max<size_t>(1, w.size() / 24)) {
            const float saved = w[e];
            w[e] = saved + eps;
            const double plus = m.Loss();
            w[e] = saved - eps;
            const double minus = m.Loss();
            w[e] = saved;
            const double numeric = (plus - minus) / (2.0 * eps);
            const double analytic = gradients[i].data()[e];
            const double error = std::abs(numeric - analytic) / std::max(1.0, std::abs(numeric));
            worst = std::max(worst, error);
            EXPECT_LE(error, 5e-3) << "tensor " << i << " entry " << e << ": finite difference "
                                   << numeric << ", backward " << analytic;
          }
        }
        RecordProperty("worst_" + std::string(ToString(model)) + "_" + ToString(activation) + "_" +
                           std::to_string(depth),
                       std::to_string(worst));
      }
    }
  }
}

}  // namespace
}  // namespace titans
