// Throughput of the sliding-window attention kernel (src/ops/attention.hpp) alone: a stream of
// tokens in pieces of `piece` tokens with the cache carried, in the steady state (the cache is
// filled with more than w tokens before timing, so every token sees exactly w keys). Against a
// plain Eigen GEMM with the same total FLOPs (square, n = cbrt(F / 2)), on the same number of
// threads (column blocks, one single-threaded Eigen GEMM per thread), timed in alternation with
// the kernel inside every iteration.
// Counters: tokens/s (items_per_second), GFLOP/s of the kernel, gemm_GFLOP/s, gemm_ratio =
// kernel GFLOP/s / GEMM GFLOP/s. FLOPs are the useful ones: 4 * dh * (w + N_p) per query head
// and token (QK^T and PV over the visible keys; the masked part of a tile's key range and the
// softmax are not counted).
//
// Run: OMP_PROC_BIND=close OMP_PLACES=cores build/release/bench/titans_attention_bench
//        --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "ops/attention.hpp"

namespace {

using titans::AttentionCache;
using titans::AttentionInputs;
using titans::AttentionShape;
using titans::AttentionWorkspace;
using titans::bench::Clock;

using titans::bench::GemmBaseline;
using titans::bench::RandomInput;

// Args: window, head_dim, threads, piece (tokens per call). Heads: 512 / head_dim (8 x 64 or
// 4 x 128), multi-head (kv_heads = heads), no persistent pairs.
void BM_Attention(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  const int head_dim = static_cast<int>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  const int piece = static_cast<int>(state.range(3));
  const int heads = 512 / head_dim;
  const AttentionShape shape{heads, heads, head_dim, window, 0, 10000.0f};
  AttentionCache cache(shape);
  AttentionWorkspace workspace(shape, threads);
  // One piece of inputs, fed again and again (the cache is what moves on).
  const int call_tokens = std::max(piece, 512);
  const std::vector<float> q = RandomInput(static_cast<size_t>(call_tokens) * shape.q_width(), 1);
  const std::vector<float> k = RandomInput(static_cast<size_t>(call_tokens) * shape.kv_width(), 2);
  const std::vector<float> v = RandomInput(static_cast<size_t>(call_tokens) * shape.kv_width(), 3);
  std::vector<float> out(q.size());
  auto forward = [&](int n) {
    const AttentionInputs in{q.data(), k.data(), v.data(), nullptr, nullptr};
    workspace.Forward(shape, cache, in, n, out.data());
  };
  // Steady state: more than w tokens in the past, then timing in calls of `piece` tokens,
  // `call_tokens` per iteration.
  while (cache.position() < window + 512) forward(512);
  const double flops = AttentionWorkspace::Flops(shape, cache.position(), call_tokens);
  GemmBaseline gemm(flops, threads);
  gemm.Run();

  double kernel_seconds = 0, gemm_seconds = 0;
  for (auto _ : state) {
    const auto start = Clock::now();
    for (int t = 0; t < call_tokens; t += piece) forward(std::min(piece, call_tokens - t));
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    state.SetIterationTime(seconds);
    kernel_seconds += seconds;
    gemm_seconds += gemm.Run();
    benchmark::DoNotOptimize(out.data());
  }
  for (float x : out) {
    if (!std::isfinite(x)) {
      state.SkipWithError("the kernel produced a non-finite output");
      return;
    }
  }
  const double iterations = static_cast<double>(state.iterations());
  const double kernel_rate = flops * iterations / kernel_seconds;
  const double gemm_rate = gemm.flops() * iterations / gemm_seconds;
  state.SetItemsProcessed(state.iterations() * call_tokens);
  state.counters["GFLOP/s"] = kernel_rate / 1e9;
  state.counters["gemm_GFLOP/s"] = gemm_rate / 1e9;
  state.counters["gemm_ratio"] = kernel_rate / gemm_rate;
}

void AttentionGrid(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    for (int head_dim : {64, 128}) {
      for (int window : {128, 512, 1024, 4096}) b->Args({window, head_dim, threads, 512});
    }
  }
  // Pieces of 64 tokens (the stacks' kPiece: one query tile per head and call), head_dim 32 as
  // in the bench models and 64.
  for (int threads : {1, 2}) {
    for (int head_dim : {32, 64}) b->Args({512, head_dim, threads, 64});
  }
  // Decode: one token per call (head_dim 32: the bench models' heads).
  for (int threads : {1, 2}) {
    for (int head_dim : {32, 64}) {
      for (int window : {512, 4096}) b->Args({window, head_dim, threads, 1});
    }
  }
  b->ArgNames({"w", "dh", "threads", "piece"});
}
BENCHMARK(BM_Attention)->Apply(AttentionGrid)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
