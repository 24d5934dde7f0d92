// The float64 reference's hand-written memory gradient (reference/memory_reference.hpp,
// Gradient: docs/SEMANTICS.md 1.3) against central finite differences of its own loss, for
// every output kind, activation and depth. The fast path and the goldens are compared with this
// reference, so an error in its backward pass would otherwise show only indirectly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "reference/memory_reference.hpp"

namespace titans {
namespace {

using Params = reference::HeadParams<double>;

struct Case {
  int depth;
  Activation activation;
  MemoryOutput output;
  LossScale loss;
};

std::string Name(const Case& c) {
  const char* act = c.activation == Activation::kGelu ? "gelu" : "silu";
  return "depth " + std::to_string(c.depth) + ", " + act +
         (c.output == MemoryOutput::kLnResidual ? ", ln_residual" : ", plain") +
         (c.loss == LossScale::kMean ? ", mean loss" : ", sum loss");
}

// Every parameter of p in order, as pointers (the MLP layers, then the gain).
std::vector<double*> Entries(Params& p) {
  std::vector<double*> all;
  for (std::vector<double>& w : p.w) {
    for (double& x : w) all.push_back(&x);
  }
  for (double& x : p.g) all.push_back(&x);
  return all;
}

TEST(ReferenceGradient, MatchesFiniteDifferences) {
  std::vector<Case> cases;
  for (int depth : {1, 2, 3}) {
    for (Activation act : {Activation::kSilu, Activation::kGelu}) {
      for (MemoryOutput out : {MemoryOutput::kPlain, MemoryOutput::kLnResidual}) {
        cases.push_back(
            {depth, act, out, out == MemoryOutput::kPlain ? LossScale::kSum : LossScale::kMean});
      }
    }
  }
  std::mt19937 rng(2026);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const Case& c : cases) {
    SCOPED_TRACE(Name(c));
    MemoryConfig config;
    config.head_dim = 6;
    config.expansion = 1.5f;  // hidden 9: layers of different widths
    config.depth = c.depth;
    config.activation = c.activation;
    config.output = c.output;
    config.loss = c.loss;
    Params p = Params::Zeros(config);
    for (double* x : Entries(p)) *x = 0.5 * normal(rng);
    std::vector<double> k(6), v(6);
    for (double& x : k) x = normal(rng);
    for (double& x : v) x = normal(rng);
    const double theta = 0.7, lambda = reference::LossLambda<double>(config);

    Params grad = reference::Gradient(config, p, k.data(), v.data(), theta, lambda);
    const std::vector<double*> analytic = Entries(grad);
    const std::vector<double*> params = Entries(p);
    ASSERT_EQ(analytic.size(), params.size());
    double largest = 0.0;
    for (double* g : analytic) largest = std::max(largest, std::abs(*g));
    ASSERT_GT(largest, 1e-3);  // the loss depends on the parameters at this point
    constexpr double kStep = 1e-5;
    for (size_t i = 0; i < params.size(); ++i) {
      const double saved = *params[i];
      *params[i] = saved + kStep;
      const double up = reference::Loss(config, p, k.data(), v.data(), theta, lambda);
      *params[i] = saved - kStep;
      const double down = reference::Loss(config, p, k.data(), v.data(), theta, lambda);
      *params[i] = saved;
      const double numeric = (up - down) / (2 * kStep);
      // Central differences err by O(kStep^2) times the third derivative, and by rounding of
      // about 1e-16 / kStep of the loss.
      ASSERT_NEAR(*analytic[i], numeric, 1e-7 * std::max(1.0, largest)) << "parameter " << i;
    }
  }
}

}  // namespace
}  // namespace titans
