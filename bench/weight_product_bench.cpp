// Products with the weight matrices (docs/PERFORMANCE.md "bf16 product matrices" and "The weight
// products"): c[m, n] = a[m, k] W[k, n] for a row-major W, at the shapes of the bench models (d
// 256, FFN 1024) and larger ones, with m the rows of a call (1: a decoded token; 4-64: a batched
// decode step or a prefill piece; 256: a long piece).
//   BM_OneRow/eigen/k/n      Eigen's matrix-vector product on float32 W (the engine's one-row
//                            path before linalg::MultiplyRow)
//   BM_OneRow/f32|bf16/k/n   linalg::MultiplyRow on float32 or bf16 W (half the bytes)
//   BM_Rows/eigen/m/k/n      linalg::Multiply of Eigen panels on float32 W (the engine's path
//                            for more than one row before linalg::MultiplyWeights): Eigen packs
//                            every panel of W at every call
//   BM_Rows/f32|bf16/m/k/n   linalg::MultiplyWeights, which reads W in place
// Counters: weight_GB/s (the bytes of W read per second) and GFLOP/s. Compare them in one run
// (the machine is shared and noisy): interleave with --benchmark_enable_random_interleaving.
// Run: build/release/bench/titans_weight_product_bench --benchmark_repetitions=5
//        --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "ops/bf16.hpp"
#include "ops/linalg.hpp"

namespace titans {
namespace {

using linalg::Index;

enum class Way { kEigen, kF32, kBf16 };

std::vector<float> Random(Index size, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(size));
  for (float& x : v) x = normal(rng);
  return v;
}

void Counters(benchmark::State& state, Way way, Index m, Index k, Index n) {
  const double bytes = static_cast<double>(k * n) * (way == Way::kBf16 ? 2.0 : 4.0);
  state.counters["weight_GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(m * k * n) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void OneRow(benchmark::State& state, Way way) {
  const Index k = state.range(0), n = state.range(1);
  std::mt19937 rng(1);
  const std::vector<float> a = Random(k, rng);
  std::vector<float> w = Random(k * n, rng), c(static_cast<size_t>(n));
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
        linalg::MultiplyRow(a.data(), w.data(), k, n, n, c.data(), false);
        break;
      case Way::kBf16:
        linalg::MultiplyRow(a.data(), matrix.bf16, k, n, n, c.data(), false);
        break;
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  Counters(state, way, 1, k, n);
}

void Rows(benchmark::State& state, Way way) {
  const Index m = state.range(0), k = state.range(1), n = state.range(2);
  std::mt19937 rng(1);
  const std::vector<float> a = Random(m * k, rng);
  std::vector<float> w = Random(k * n, rng), c(static_cast<size_t>(m * n));
  ops::Bf16Copies copies;
  if (way == Way::kBf16) copies.Add(w.data(), w.size());
  const linalg::WeightMatrix matrix = copies.Matrix(w, k, n);
  auto product = linalg::View(c.data(), m, n, n);
  const auto input = linalg::ConstView(a.data(), m, k, k);
  for (auto _ : state) {
    if (way == Way::kEigen) {
      linalg::Multiply(product, input, linalg::ConstView(w.data(), k, n, n));
    } else {
      linalg::Multiply(product, input, matrix);
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  Counters(state, way, m, k, n);
}

constexpr std::pair<int, int> kShapes[] = {{256, 256}, {256, 1024}, {1024, 256}, {1024, 4096}};

void OneRowShapes(benchmark::internal::Benchmark* b) {
  for (const auto& [k, n] : kShapes) b->Args({k, n});
  b->Args({4096, 4096});
  b->ArgNames({"k", "n"});
}
void RowShapes(benchmark::internal::Benchmark* b) {
  for (const int m : {4, 16, 64, 256}) {
    for (const auto& [k, n] : kShapes) b->Args({m, k, n});
  }
  b->ArgNames({"m", "k", "n"});
}

BENCHMARK_CAPTURE(OneRow, eigen, Way::kEigen)->Apply(OneRowShapes);
BENCHMARK_CAPTURE(OneRow, f32, Way::kF32)->Apply(OneRowShapes);
BENCHMARK_CAPTURE(OneRow, bf16, Way::kBf16)->Apply(OneRowShapes);
BENCHMARK_CAPTURE(Rows, eigen, Way::kEigen)->Apply(RowShapes);
BENCHMARK_CAPTURE(Rows, f32, Way::kF32)->Apply(RowShapes);
BENCHMARK_CAPTURE(Rows, bf16, Way::kBf16)->Apply(RowShapes);

}  // namespace
}  // namespace titans

BENCHMARK_MAIN();
