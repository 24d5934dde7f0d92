// What the benchmark programs share: seeded inputs, and the GEMM baseline that every throughput
// figure is divided by (measured in the same run, since the machine is shared and noisy; it is
// titans/evals/utilisation.hpp's, which `titans bench` uses too).
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "titans/evals/utilisation.hpp"

namespace titans::bench {

using Clock = std::chrono::steady_clock;

inline std::vector<float> RandomInput(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(count);
  for (float& v : x) v = uniform(rng);
  return x;
}

}  // namespace titans::bench
