// Throughput of the neural memory's fast path, against two baselines measured in the same run:
//   - a plain Eigen GEMM with the same total FLOPs (square, n = cbrt(F / 2)), on the same number
//     of threads (columns split across threads, one single-threaded Eigen GEMM each, as the
//     library itself does), timed in alternation with the memory inside every iteration;
//   - the naive reference implementation (BM_VersusReference), timed in the same process.
// BM_TitansPytorchModels compares titans-pytorch's three memory networks the same way.
// Counters: tokens/s (items_per_second), GFLOP/s of the memory, gemm_GFLOP/s, and
// gemm_ratio = memory GFLOP/s / GEMM GFLOP/s. FLOPs count the matrix products the algorithm
// performs (MemoryConfig::FlopsPerToken); elementwise work is not counted.
//
// Run: build/release/bench/titans_memory_bench --benchmark_repetitions=3
//        --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "reference/memory_reference.hpp"
#include "titans/titans.hpp"

namespace {

using titans::MemoryConfig;
using titans::bench::Clock;
using titans::bench::GemmBaseline;

std::vector<float> RandomInput(int tokens, int width, uint32_t seed) {
  return titans::bench::RandomInput(static_cast<size_t>(tokens) * static_cast<size_t>(width), seed);
}

MemoryConfig BenchConfig(int head_dim, int depth, int chunk) {
  // The paper preset, one head as wide as the model: the memory's own cost, no head splitting.
  return MemoryConfig::Paper(head_dim, 1, head_dim, depth, chunk);
}

// Times `config` on `threads` threads against the same-run GEMM baseline.
void RunMemory(benchmark::State& state, const MemoryConfig& config, int threads) {
  const int chunk = config.unit();
  auto memory = std::make_shared<const titans::NeuralMemory>(
      config, titans::MemoryWeights::Random(config, 1));
  titans::MemorySession session(memory, titans::SessionOptions{threads});
  // Enough tokens per call that a call is many units; fewer for the per-token-update cases.
  const int tokens = chunk >= 16 ? 1024 : 256;
  const std::vector<float> input = RandomInput(tokens, config.d_model, 2);
  std::vector<float> output(static_cast<size_t>(tokens) * memory->output_width());
  const double flops = config.FlopsPerToken() * tokens;
  GemmBaseline gemm(flops, threads);

  session.Forward(input, output);  // warm up: first touch of every buffer
  gemm.Run();
  double memory_seconds = 0, gemm_seconds = 0;
  for (auto _ : state) {
    // Random weights are not trained: over long streams they drift (decay towards zero), and
    // denormal arithmetic would distort the timing. A fresh stream every 8K tokens keeps every
    // iteration in the same numeric regime; the reset is outside the timed region.
    if (session.position() >= 8192) session.Reset();
    const auto start = Clock::now();
    session.Forward(input, output);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    state.SetIterationTime(seconds);
    memory_seconds += seconds;
    gemm_seconds += gemm.Run();
    benchmark::DoNotOptimize(output.data());
  }
  for (float v : output) {
    if (!std::isfinite(v)) {
      state.SkipWithError("the memory produced a non-finite output");
      return;
    }
  }
  const double iterations = static_cast<double>(state.iterations());
  const double memory_rate = flops * iterations / memory_seconds;
  const double gemm_rate = gemm.flops() * iterations / gemm_seconds;
  state.SetItemsProcessed(state.iterations() * tokens);
  state.counters["GFLOP/s"] = memory_rate / 1e9;
  state.counters["gemm_GFLOP/s"] = gemm_rate / 1e9;
  state.counters["gemm_ratio"] = memory_rate / gemm_rate;
}

// Args: head_dim, depth, chunk (block size), threads.
void BM_Memory(benchmark::State& state) {
  const int head_dim = static_cast<int>(state.range(0)), depth = static_cast<int>(state.range(1));
  const int chunk = static_cast<int>(state.range(2)), threads = static_cast<int>(state.range(3));
  RunMemory(state, BenchConfig(head_dim, depth, chunk), threads);
}

void MemoryGrid(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    for (int head_dim : {64, 128, 256, 512}) {
      for (int depth : {1, 2}) {
        for (int chunk : {1, 4, 16, 64}) b->Args({head_dim, depth, chunk, threads});
      }
    }
  }
  b->ArgNames({"dh", "L", "chunk", "threads"});
}
BENCHMARK(BM_Memory)->Apply(MemoryGrid)->UseManualTime()->Unit(benchmark::kMillisecond);

// titans-pytorch's three memory networks at one size: NeuralMemory(dim 256, heads 4, dim_head
// 64, chunk_size 16, batch_size 64) with MemoryMLP(64, depth 2), MemorySwiGluMLP(64, depth 1)
// (two LayerNorms in a row, as titans-pytorch wraps it) and GatedResidualMemoryMLP(64, depth 1)
// (the depth titans-pytorch's tests use). Args: model (MemoryModel), threads.
void BM_TitansPytorchModels(benchmark::State& state) {
  MemoryConfig config = MemoryConfig::TitansPytorch(256, 4, 64, 16, 64);
  config.model = static_cast<titans::MemoryModel>(state.range(0));
  if (config.model != titans::MemoryModel::kMlp) config.depth = 1;
  RunMemory(state, config, static_cast<int>(state.range(1)));
}
BENCHMARK(BM_TitansPytorchModels)
    ->ArgsProduct({{0, 1, 2}, {1, 2}})
    ->ArgNames({"model", "threads"})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// The target configuration (paper preset, dh = 256, L = 2, expansion 4, chunk 64) against the
// naive reference (float, one thread), both timed here on the same input.
// Args: threads of the fast path.
void BM_VersusReference(benchmark::State& state) {
  const MemoryConfig config = BenchConfig(256, 2, 64);
  auto memory = std::make_shared<const titans::NeuralMemory>(
      config, titans::MemoryWeights::Random(config, 1));
  const int tokens = 128;
  const std::vector<float> input = RandomInput(tokens, config.d_model, 3);
  std::vector<float> output(static_cast<size_t>(tokens) * memory->output_width());
  double fast_seconds = 0, reference_seconds = 0;
  for (auto _ : state) {
    titans::MemorySession session(memory, titans::SessionOptions{static_cast<int>(state.range(0))});
    titans::reference::ReferenceMemory<float> reference(*memory);
    auto start = Clock::now();
    session.Forward(input, output);
    fast_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    start = Clock::now();
    reference.Forward(input.data(), input.data(), tokens, output.data());
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    reference_seconds += seconds;
    state.SetIterationTime(seconds);
    benchmark::DoNotOptimize(output.data());
  }
  const double iterations = static_cast<double>(state.iterations());
  state.counters["fast_tok/s"] = tokens * iterations / fast_seconds;
  state.counters["reference_tok/s"] = tokens * iterations / reference_seconds;
  state.counters["speedup"] = reference_seconds / fast_seconds;
}
BENCHMARK(BM_VersusReference)
    ->Arg(1)
    ->Arg(2)
    ->ArgName("threads")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(2);

}  // namespace

BENCHMARK_MAIN();
