// One decoded token's weight products (docs/PERFORMANCE.md "bf16 product matrices"): c[1, n] =
// a[1, k] W[k, n] for a row-major W, three ways, at the shapes of the bench models (d 256, FFN
// 1024) and larger ones:
//   BM_OneRow/eigen/k/n  Eigen's matrix-vector product on float32 W (the engine's one-row path
//                        before linalg::MultiplyRow)
//   BM_OneRow/f32/k/n    linalg::MultiplyRow on float32 W
//   BM_OneRow/bf16/k/n   linalg::MultiplyRow on bf16 W (half the bytes)
// Counters: weight_GB/s (the bytes of W read per second) and GFLOP/s. Compare the three in one
// run (the machine is shared and noisy): interleave with --benchmark_enable_random_interleaving.
// Run: build/release/bench/titans_weight_row_bench --benchmark_repetitions=5
//        --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "ops/bf16.hpp"
#include "ops/linalg.hpp"

namespace titans {
namespace {

enum class Way { kEigen, kF32, kBf16 };

void OneRow(benchmark::State& state, Way way) {
  const auto k = static_cast<linalg::Index>(state.range(0));
  const auto n = static_cast<linalg::Index>(state.range(1));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> a(static_cast<size_t>(k)), w(static_cast<size_t>(k * n)),
      c(static_cast<size_t>(n));
  for (float& x : a) x = normal(rng);
  for (float& x : w) x = normal(rng);
  ops::Bf16Copies copies;
  if (way == Way::kBf16) copies.Add(w.data(), w.size());
  const linalg::WeightMatrix matrix = copies.Matrix(w, k, n);
  for (auto _ : state) {
    switch (way) {
      case Way::kEigen:
        linalg::View(c.data(), 1, n, n).noalias() =
            linalg::ConstView(a.data(), 1, k, k) * linalg::ConstView(w.data(), k, n, n);
        break;
      case Way::kF32:
        linalg::MultiplyRow(a.data(), w.data(), k, n, c.data(), false);
        break;
      case Way::kBf16:
        linalg::MultiplyRow(a.data(), matrix.bf16, k, n, c.data(), false);
        break;
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  const double bytes = static_cast<double>(k * n) * (way == Way::kBf16 ? 2.0 : 4.0);
  state.counters["weight_GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(k * n) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (const auto& [k, n] : {std::pair{256, 256}, std::pair{256, 1024}, std::pair{1024, 256},
                             std::pair{1024, 4096}, std::pair{4096, 4096}}) {
    b->Args({k, n});
  }
  b->ArgNames({"k", "n"});
}

BENCHMARK_CAPTURE(OneRow, eigen, Way::kEigen)->Apply(Shapes);
BENCHMARK_CAPTURE(OneRow, f32, Way::kF32)->Apply(Shapes);
BENCHMARK_CAPTURE(OneRow, bf16, Way::kBf16)->Apply(Shapes);

}  // namespace
}  // namespace titans

BENCHMARK_MAIN();
