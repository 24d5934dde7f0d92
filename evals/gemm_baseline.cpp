// The baselines of titans/evals/utilisation.hpp. GemmBaseline: Eigen's float GEMM, one
// single-threaded product per thread on its block of columns (the library's products are split
// the same way). BandwidthBaseline: each thread sums its share of the buffer.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>

#include "titans/evals/utilisation.hpp"

namespace titans::bench {

struct GemmBaseline::Matrices {
  Eigen::MatrixXf a, b, c;
};

GemmBaseline::GemmBaseline(double flops, int threads)
    : threads_(std::max(threads, 1)),
      n_(std::max<int64_t>(64, std::llround(std::cbrt(flops / 2.0)))),
      m_(std::make_unique<Matrices>()) {
  const auto n = static_cast<Eigen::Index>(n_);
  m_->a = Eigen::MatrixXf::Random(n, n);
  m_->b = Eigen::MatrixXf::Random(n, n);
  m_->c = Eigen::MatrixXf::Zero(n, n);
}

GemmBaseline::~GemmBaseline() = default;

double GemmBaseline::Run() {
  using Clock = std::chrono::steady_clock;
  const auto n = static_cast<Eigen::Index>(n_);
  Matrices& m = *m_;
  const auto start = Clock::now();
#pragma omp parallel num_threads(threads_)
  {
    const int ith = omp_get_thread_num(), nth = omp_get_num_threads();
    const Eigen::Index c0 = n * ith / nth, c1 = n * (ith + 1) / nth;
    m.c.middleCols(c0, c1 - c0).noalias() = m.a * m.b.middleCols(c0, c1 - c0);
  }
  asm volatile("" : : "r"(m.c.data()) : "memory");  // the product is not optimised away
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double GemmBaseline::Rate(int runs) {
  Run();  // untimed: first touch of the result, OpenMP's threads
  double best = 0;
  for (int r = 0; r < std::max(runs, 1); ++r) {
    const double seconds = Run();
    if (seconds > 0) best = std::max(best, flops() / seconds);
  }
  return best;
}

BandwidthBaseline::BandwidthBaseline(double bytes, int threads)
    : threads_(std::max(threads, 1)),
      data_(static_cast<size_t>(std::max(bytes, 4096.0) / sizeof(float)), 1.0f) {}

double BandwidthBaseline::Rate(int runs) {
  using Clock = std::chrono::steady_clock;
  const auto n = static_cast<Eigen::Index>(data_.size());
  const Eigen::Map<const Eigen::VectorXf> all(data_.data(), n);
  const int repeats = static_cast<int>(std::max(1.0, std::ceil(64.0 * (1 << 20) / bytes())));
  const auto read = [&] {
    float total = 0;
#pragma omp parallel num_threads(threads_) reduction(+ : total)
    {
      const int ith = omp_get_thread_num(), nth = omp_get_num_threads();
      const Eigen::Index i0 = n * ith / nth, i1 = n * (ith + 1) / nth;
      for (int r = 0; r < repeats; ++r) {
        total += all.segment(i0, i1 - i0).sum();
        asm volatile("" ::: "memory");  // each repeat reads the buffer again (not hoisted)
      }
    }
    return total;
  };
  volatile float sink = read();  // untimed: the buffer comes into the caches it fits in
  double best = 0;
  for (int r = 0; r < std::max(runs, 1); ++r) {
    const auto start = Clock::now();
    sink = read();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (seconds > 0) best = std::max(best, bytes() * repeats / seconds);
  }
  (void)sink;
  return best;
}

}  // namespace titans::bench
