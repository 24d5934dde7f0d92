// GemmBaseline of titans/evals/utilisation.hpp: Eigen's float GEMM, one single-threaded product
// per thread on its block of columns (the library's products are split the same way).
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

double GemmBaseline::Rate(int runs) {
  using Clock = std::chrono::steady_clock;
  const auto n = static_cast<Eigen::Index>(n_);
  Matrices& m = *m_;
  const auto product = [&] {
#pragma omp parallel num_threads(threads_)
    {
      const int ith = omp_get_thread_num(), nth = omp_get_num_threads();
      const Eigen::Index c0 = n * ith / nth, c1 = n * (ith + 1) / nth;
      m.c.middleCols(c0, c1 - c0).noalias() = m.a * m.b.middleCols(c0, c1 - c0);
    }
  };
  product();  // untimed: first touch of the result, OpenMP's threads
  double best = 0;
  for (int r = 0; r < std::max(runs, 1); ++r) {
    const auto start = Clock::now();
    product();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (seconds > 0) best = std::max(best, flops() / seconds);
  }
  return best;
}

}  // namespace titans::bench
