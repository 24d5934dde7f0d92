// Prefill cost against context length (issue 4): for the Titans kinds lmm, mac, mag, mal and the
// full-attention baseline of titans/evals/bench_models.hpp (4 layers, d_model 256), a fresh
// session prefilled over C tokens streamed in pieces of 4096 (titans/evals/context_cost.hpp
// describes the measurement). `titans bench` measures the same points with the same code and
// adds JSON, a plot and time limits.
//
// BM_Context/<kind>/<C>: one iteration is one point; C = 1K, 4K, 16K, 64K, 256K, 1M (full
// attention up to 64K: its prefill grows with C^2, 256K would take about 50 minutes). Manual
// time: the Forward calls. Counters: tok/s, us/token (whole prefill / C), last_us/token (the
// final piece: the marginal cost at C), cpu/wall (the process's CPU time over the wall time: below
// the thread count when other processes took the cores) and peak_MiB (the process's peak
// resident memory during the point; the models of the kinds run before stay loaded, so compare
// it within a kind).
//
// Flags of this program (besides Google Benchmark's own):
//   --threads=N        OpenMP threads of the sessions (default 1: steadier on a shared machine)
//   --max_context=N    largest context of the Titans kinds (default 1M; 2M and more allowed)
//   --full_max_context=N  largest context of full attention (default 64K)
//
// Run: build/release/bench/titans_context_bench --benchmark_filter='BM_Context/(lmm|full)/'
#include <benchmark/benchmark.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "bench_main.hpp"
#include "titans/evals/bench_models.hpp"
#include "titans/evals/context_cost.hpp"

namespace {

using titans::bench::ModelKind;

int threads = 1;                              // --threads
int64_t max_context = int64_t{1} << 20;       // --max_context
int64_t full_max_context = int64_t{1} << 16;  // --full_max_context

void Context(benchmark::State& state, ModelKind kind) {
  static std::array<std::shared_ptr<const titans::Model>, titans::bench::kModelKinds> models;
  if (!models[kind]) models[kind] = titans::bench::MakeBenchModel(kind);
  const int64_t context = state.range(0);
  titans::bench::ContextOptions options;
  options.threads = threads;
  titans::bench::ContextCost cost;
  for (auto _ : state) {
    cost = titans::bench::MeasureContext(models[kind], context, options);
    state.SetIterationTime(cost.seconds);
  }
  if (!cost.finite) {
    state.SkipWithError("non-finite logits");
    return;
  }
  state.counters["tok/s"] = cost.tokens_per_s();
  state.counters["us/token"] = 1e6 * cost.s_per_token();
  state.counters["last_us/token"] = 1e6 * cost.last_piece_s_per_token();
  state.counters["cpu/wall"] = cost.cpu_seconds / cost.seconds;
  state.counters["peak_MiB"] = static_cast<double>(cost.peak_rss_bytes) / (1 << 20);
  state.counters["session_MiB"] = static_cast<double>(cost.session_bytes) / (1 << 20);
}

void RegisterAll() {
  for (ModelKind kind : {titans::bench::kLmm, titans::bench::kMac, titans::bench::kMag,
                         titans::bench::kMal, titans::bench::kFull}) {
    const std::string name = std::string("BM_Context/") + titans::bench::kModelKindNames[kind];
    auto* b = benchmark::RegisterBenchmark(name.c_str(), Context, kind)
                  ->UseManualTime()
                  ->Unit(benchmark::kMillisecond)
                  ->Iterations(1);
    const int64_t largest = kind == titans::bench::kFull ? full_max_context : max_context;
    for (int64_t context = 1 << 10; context <= largest; context *= 4) b->Arg(context);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using titans::bench::Flag;
  return titans::bench::BenchmarkMain(
      argc, argv,
      {Flag{"--threads=", [](const char* v) { threads = std::atoi(v); }},
       Flag{"--max_context=", [](const char* v) { max_context = std::atoll(v); }},
       Flag{"--full_max_context=", [](const char* v) { full_max_context = std::atoll(v); }}},
      [] {
        if (threads < 1 || max_context < 1 || full_max_context < 1) {
          std::fprintf(stderr, "--threads, --max_context and --full_max_context must be >= 1\n");
          return false;
        }
        RegisterAll();
        return true;
      });
}
