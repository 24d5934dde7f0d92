// What the benchmark programs share: seeded inputs and the GEMM baseline that every throughput
// figure is divided by (measured in the same run, since the machine is shared and noisy).
#pragma once

#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace titans::bench {

using Clock = std::chrono::steady_clock;

inline std::vector<float> RandomInput(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(count);
  for (float& v : x) v = uniform(rng);
  return x;
}

// A square Eigen GEMM of about `flops` FLOPs (n = cbrt(flops / 2)), split by column blocks over
// `threads` threads, one single-threaded Eigen GEMM each, as the library itself splits work.
class GemmBaseline {
 public:
  GemmBaseline(double flops, int threads) : threads_(threads) {
    n_ = std::max<Eigen::Index>(64, std::lround(std::cbrt(flops / 2.0)));
    a_ = Eigen::MatrixXf::Random(n_, n_);
    b_ = Eigen::MatrixXf::Random(n_, n_);
    c_ = Eigen::MatrixXf::Zero(n_, n_);
  }
  double flops() const { return 2.0 * static_cast<double>(n_) * n_ * n_; }
  // Seconds for one GEMM.
  double Run() {
    const auto start = Clock::now();
#pragma omp parallel num_threads(threads_)
    {
      const int ith = omp_get_thread_num(), nth = omp_get_num_threads();
      const Eigen::Index c0 = n_ * ith / nth, c1 = n_ * (ith + 1) / nth;
      c_.middleCols(c0, c1 - c0).noalias() = a_ * b_.middleCols(c0, c1 - c0);
    }
    benchmark::DoNotOptimize(c_.data());
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

 private:
  int threads_;
  Eigen::Index n_;
  Eigen::MatrixXf a_, b_, c_;
};

}  // namespace titans::bench
