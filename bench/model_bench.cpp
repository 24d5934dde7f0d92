// Whole 4-layer models of every block kind (issue 3, "What must be shown"): tokens per second
// for prefill, and the cost of one decoded token at context position 1K, 64K and 1M.
//
// Models and token stream: titans/evals/bench_models.hpp (4 layers of one kind, d_model 256, seeded
// random weights; kinds lmm, mal, mag, mac, attention and full).
//
// BM_Prefill/<kind>/<threads>: one Forward of 2048 tokens per iteration; 8 iterations cover
// the contexts 0..16K of a fresh stream (the session is reset outside the timed region when it
// reaches 16K: random weights are not trained, and a fixed context range keeps the
// full-attention baseline comparable between runs). Counters tok/s, GFLOP/s of the model's
// products (titans/evals/utilisation.hpp), gemm_GFLOP/s of a square GEMM of one Forward's FLOPs
// on the same threads timed after every Forward, and gemm_ratio.
//
// BM_Decode/<kind>/<position>: the cost of ONE token (a Forward of 1 token) at a context
// position. Setup (before the first benchmark, once per process, reused by every repetition):
// for every kind whose decode benchmarks --benchmark_filter selects, one stream is fed in pieces
// of 4096 tokens up to the largest position, and a snapshot is kept at each position measured;
// the prefill rate of every 64K stretch and the setup times are logged on stderr. A run clones
// two sessions from the snapshots: the target at <position> and a reference at 1K, then
// alternates single-token steps between them (the order flips every step, so noise and the
// machine's state hit both alike): 64 untimed warm-up steps, then kSteps timed steps each. kSteps
// is a multiple of the memory's unit (64), so both sessions pay the same number of memory commits
// (MAC and the memory write their unit at its 64th token). Counters: us/token and tok/s of the
// target, ref_us/token of the 1K reference, and vs_1K = target time / reference time, measured in
// the same run (at 1K the target is a second copy of the reference: its vs_1K shows the noise
// floor). Target of the issue: vs_1K <= 1.15 at 1M for every Titans kind. The full baseline is
// measured at 1K, 16K and 64K only. (The CPU column of a decode run counts both sessions' steps.)
//
// The memory of a random model dies out: ModelWeights::Random forgets about 1/1000 per token
// and the memory's bias-free SiLU MLP has W = 0 as a fixed point of its updates, so the fast
// weights decay geometrically. In the streams of this benchmark most fast weights of every kind
// fall below FLT_MIN by 64K tokens, where the kernels flush them to zero
// (src/ops/flush_denormals.hpp): the 64K and 1M decode runs compute with memory weights that are
// mostly zeros (the arithmetic is the same: no step skips zeros).
//
// Flags of this program (besides Google Benchmark's own):
//   --decode_threads=N  OpenMP threads of the decode sessions (default 1: a single token is
//                       too little work to share)
//   --setup_jobs=N      setup streams fed at the same time, each on its own std::thread
//                       (default 2: one per core)
//   --setup_threads=N   OpenMP threads of each setup stream (default 1: on this shared 2-core
//                       machine a 2-thread prefill collapses whenever another process holds a
//                       core, while independent streams do not wait for each other)
//   --snapshot_dir=DIR  keep the setup's snapshots as session files in DIR and load them in
//                       later runs (named by kind, position and a hash of config and weights;
//                       the 1M setup of the five kinds takes about 15 minutes with 2 jobs)
//
// Run: build/release/bench/titans_model_bench --benchmark_repetitions=3
//        --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench_main.hpp"
#include "titans/evals/bench_models.hpp"
#include "titans/evals/utilisation.hpp"
#include "titans/titans.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using titans::Model;
using titans::Session;
using titans::SessionOptions;

using Kind = titans::bench::ModelKind;
using enum titans::bench::ModelKind;
constexpr int kKinds = titans::bench::kModelKinds;
constexpr const auto& kKindNames = titans::bench::kModelKindNames;

constexpr int kPrefillTokens = 2048;      // tokens per Forward of BM_Prefill
constexpr int64_t kPrefillReset = 16384;  // BM_Prefill resets its stream here
constexpr int kSetupPiece = 4096;         // tokens per Forward while reaching a decode position
constexpr int kWarmupSteps = 64;          // untimed decode steps per session and run
constexpr int kSteps = 256;               // timed decode steps per session and run
int decode_threads = 1;                   // --decode_threads
int setup_jobs = 2;                       // --setup_jobs
int setup_threads = 1;                    // --setup_threads
std::string snapshot_dir;                 // --snapshot_dir (empty: no cache)

std::shared_ptr<const Model> ModelFor(Kind kind) {
  static std::array<std::shared_ptr<const Model>, kKinds> models;
  if (!models[kind]) models[kind] = titans::bench::MakeBenchModel(kind);
  return models[kind];
}

// FNV-1a over the config and every weight: names a cached snapshot of this exact model.
std::string Fingerprint(Kind kind) {
  static std::array<std::string, kKinds> cache;
  static std::mutex mutex;
  const std::lock_guard<std::mutex> lock(mutex);
  if (!cache[kind].empty()) return cache[kind];
  const Model& model = *ModelFor(kind);
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* data, size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  const std::string json = model.config().ToJson();
  mix(json.data(), json.size());
  for (const auto& t : model.weights().Tensors(model.config())) {
    mix(t.data, static_cast<size_t>(t.size()) * sizeof(float));
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  cache[kind] = text;
  return cache[kind];
}

// Feeds the stream's next n tokens (from session.position()) in one Forward; returns seconds.
double Feed(Session& session, int n, std::vector<int32_t>& tokens, std::vector<float>& logits) {
  tokens.resize(static_cast<size_t>(n));
  logits.resize(static_cast<size_t>(n) * 256);
  const int64_t p = session.position();
  for (int i = 0; i < n; ++i) tokens[static_cast<size_t>(i)] = titans::bench::StreamToken(p + i);
  const auto start = Clock::now();
  session.Forward(tokens, logits);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool AllFinite(const std::vector<float>& v) {
  for (float x : v) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Prefill.

void Prefill(benchmark::State& state, Kind kind, int threads) {
  Session session(ModelFor(kind), SessionOptions{threads});
  std::vector<int32_t> tokens;
  std::vector<float> logits;
  Feed(session, kPrefillTokens, tokens, logits);  // warm up: first touch of every buffer
  session.Reset();
  // The GEMM baseline: a product of one Forward's FLOPs, timed after every Forward (noise hits
  // both alike); FLOPs of the products, titans/evals/utilisation.hpp.
  const titans::ModelConfig& config = ModelFor(kind)->config();
  const double piece_flops = titans::bench::TokensFlops(config, 0, kPrefillReset) /
                             static_cast<double>(kPrefillReset) * kPrefillTokens;
  titans::bench::GemmBaseline gemm(piece_flops, threads);
  gemm.Run();
  double seconds = 0, flops = 0, gemm_seconds = 0;
  for (auto _ : state) {
    if (session.position() >= kPrefillReset) session.Reset();
    flops += titans::bench::TokensFlops(config, session.position(), kPrefillTokens);
    const double s = Feed(session, kPrefillTokens, tokens, logits);
    state.SetIterationTime(s);
    seconds += s;
    benchmark::DoNotOptimize(logits.data());
    gemm_seconds += gemm.Run();  // outside the manual time
  }
  if (!AllFinite(logits)) {
    state.SkipWithError("non-finite logits");
    return;
  }
  const double tokens_done = static_cast<double>(state.iterations()) * kPrefillTokens;
  state.counters["tok/s"] = tokens_done / seconds;
  state.counters["us/token"] = 1e6 * seconds / tokens_done;
  const double gflops = flops / seconds / 1e9;
  const double gemm_gflops =
      gemm.flops() * static_cast<double>(state.iterations()) / gemm_seconds / 1e9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["gemm_GFLOP/s"] = gemm_gflops;
  state.counters["gemm_ratio"] = gflops / gemm_gflops;
}

// ---------------------------------------------------------------------------------------------
// Decode.

// A copy of `s` running on `threads` threads: Clone() when the thread count is the same,
// otherwise through a session file (Save / Load into a new session).
Session CopyWithThreads(const Session& s, Kind kind, int threads, int from_threads) {
  if (threads == from_threads) return s.Clone();
  const auto model = ModelFor(kind);
  const std::string path =
      (std::filesystem::temp_directory_path() /
       ("titans_model_bench_" + std::to_string(getpid()) + "_" + kKindNames[kind] + ".session"))
          .string();
  s.Save(path);
  Session copy(model, SessionOptions{threads});
  copy.Load(path);
  std::filesystem::remove(path);
  return copy;
}

std::vector<int64_t> DecodePositions(Kind kind) {
  return kind == kFull ? std::vector<int64_t>{1 << 10, 1 << 14, 1 << 16}
                       : std::vector<int64_t>{1 << 10, 1 << 16, 1 << 20};
}

// Per kind: one stream fed up to the largest position, a snapshot at each decode position.
// With --snapshot_dir the snapshots are loaded from session files there when present (named by
// kind, position and a fingerprint of the model), and saved there after a setup.
class Snapshots {
 public:
  // Builds the snapshots of `kinds` before any benchmark runs, up to `jobs` streams at a time,
  // each on its own thread (independent streams share the two cores without any barrier).
  static void Prepare(const std::vector<Kind>& kinds, int jobs) {
    if (kinds.empty()) return;
    for (Kind kind : kinds) ModelFor(kind);  // the models first, on this thread
    const auto start = Clock::now();
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int j = 0; j < std::min<int>(jobs, static_cast<int>(kinds.size())); ++j) {
      workers.emplace_back([&] {
        for (size_t i = next++; i < kinds.size(); i = next++) {
          auto built = std::make_unique<Snapshots>(kinds[i]);
          const std::lock_guard<std::mutex> lock(Mutex());
          All()[kinds[i]] = std::move(built);
        }
      });
    }
    for (auto& w : workers) w.join();
    std::fprintf(stderr, "# setup: %zu kinds in %.1f s (%d jobs of %d threads)\n", kinds.size(),
                 std::chrono::duration<double>(Clock::now() - start).count(), jobs, setup_threads);
  }

  static const Session& At(Kind kind, int64_t position) {
    const std::lock_guard<std::mutex> lock(Mutex());
    auto& s = All()[kind];
    if (!s) s = std::make_unique<Snapshots>(kind);  // not prepared: build it now
    return s->sessions_.at(position);
  }

  explicit Snapshots(Kind kind) {
    const auto model = ModelFor(kind);
    const std::vector<int64_t> positions = DecodePositions(kind);
    const auto start = Clock::now();
    if (!snapshot_dir.empty() && LoadAll(kind, model, positions)) {
      std::fprintf(stderr, "# setup %s: loaded %zu snapshots from %s in %.1f s\n", kKindNames[kind],
                   positions.size(), snapshot_dir.c_str(),
                   std::chrono::duration<double>(Clock::now() - start).count());
      return;
    }
    Session stream(model, SessionOptions{setup_threads});
    std::vector<int32_t> tokens;
    std::vector<float> logits;
    double stretch_seconds = 0;
    int64_t stretch_start = 0;
    for (int64_t target : positions) {
      while (stream.position() < target) {
        const int n = static_cast<int>(std::min<int64_t>(kSetupPiece, target - stream.position()));
        stretch_seconds += Feed(stream, n, tokens, logits);
        // Log every 64K tokens (and at every snapshot) how fast the stream goes.
        if (stream.position() % (1 << 16) == 0 || stream.position() == target) {
          std::fprintf(stderr, "# setup %s: tokens %lld..%lld at %.0f tok/s\n", kKindNames[kind],
                       static_cast<long long>(stretch_start),
                       static_cast<long long>(stream.position()),
                       static_cast<double>(stream.position() - stretch_start) / stretch_seconds);
          stretch_start = stream.position();
          stretch_seconds = 0;
        }
      }
      if (!AllFinite(logits)) {
        std::fprintf(stderr, "# setup %s: non-finite logits at %lld\n", kKindNames[kind],
                     static_cast<long long>(target));
        std::exit(1);
      }
      sessions_.emplace(target, CopyWithThreads(stream, kind, decode_threads, setup_threads));
      if (!snapshot_dir.empty()) stream.Save(PathOf(kind, target));
    }
    std::fprintf(stderr, "# setup %s: %lld tokens in %.1f s (%d threads)\n", kKindNames[kind],
                 static_cast<long long>(stream.position()),
                 std::chrono::duration<double>(Clock::now() - start).count(), setup_threads);
  }

 private:
  static std::array<std::unique_ptr<Snapshots>, kKinds>& All() {
    static std::array<std::unique_ptr<Snapshots>, kKinds> all;
    return all;
  }
  static std::mutex& Mutex() {
    static std::mutex mutex;
    return mutex;
  }

  static std::string PathOf(Kind kind, int64_t position) {
    return (std::filesystem::path(snapshot_dir) /
            (std::string(kKindNames[kind]) + "-" + std::to_string(position) + "-" +
             Fingerprint(kind) + ".session"))
        .string();
  }

  bool LoadAll(Kind kind, const std::shared_ptr<const Model>& model,
               const std::vector<int64_t>& positions) {
    for (int64_t p : positions) {
      if (!std::filesystem::exists(PathOf(kind, p))) return false;
    }
    for (int64_t p : positions) {
      Session s(model, SessionOptions{decode_threads});
      s.Load(PathOf(kind, p));
      sessions_.emplace(p, std::move(s));
    }
    return true;
  }

  std::map<int64_t, Session> sessions_;
};

double Step(Session& session, std::vector<int32_t>& token, std::vector<float>& logits) {
  token[0] = titans::bench::StreamToken(session.position());
  const auto start = Clock::now();
  session.Forward(token, logits);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Decode(benchmark::State& state, Kind kind, int64_t position) {
  // Fresh copies every run: each repetition starts at exactly the same positions.
  Session target = Snapshots::At(kind, position).Clone();
  Session reference = Snapshots::At(kind, 1 << 10).Clone();
  std::vector<int32_t> token(1);
  std::vector<float> logits(256);
  for (int i = 0; i < kWarmupSteps; ++i) {
    Step(target, token, logits);
    Step(reference, token, logits);
  }
  const int64_t start_position = target.position();
  double target_seconds = 0, reference_seconds = 0;
  bool target_first = true;
  for (auto _ : state) {
    double t, r;
    if (target_first) {
      t = Step(target, token, logits);
      r = Step(reference, token, logits);
    } else {
      r = Step(reference, token, logits);
      t = Step(target, token, logits);
    }
    target_first = !target_first;
    state.SetIterationTime(t);
    target_seconds += t;
    reference_seconds += r;
    benchmark::DoNotOptimize(logits.data());
  }
  if (!AllFinite(logits)) {
    state.SkipWithError("non-finite logits");
    return;
  }
  const double steps = static_cast<double>(state.iterations());
  state.counters["position"] = static_cast<double>(start_position);
  state.counters["us/token"] = 1e6 * target_seconds / steps;
  state.counters["tok/s"] = steps / target_seconds;
  state.counters["ref_us/token"] = 1e6 * reference_seconds / steps;
  state.counters["vs_1K"] = target_seconds / reference_seconds;
}

std::string PositionName(int64_t p) {
  return p >= (1 << 20) ? std::to_string(p >> 20) + "M" : std::to_string(p >> 10) + "K";
}

// The kinds whose decode benchmarks --benchmark_filter selects (matched as Google Benchmark
// matches it: an extended regex searched in the name, a leading '-' negates).
std::vector<Kind> SelectedDecodeKinds() {
  std::string filter = benchmark::GetBenchmarkFilter();
  if (filter.empty() || filter == "all") filter = ".";
  const bool negative = filter[0] == '-';
  const std::regex re(negative ? filter.substr(1) : filter, std::regex::extended);
  // The costliest setups first, so that two jobs finish at about the same time.
  std::vector<Kind> kinds;
  for (Kind kind : {kMag, kMac, kMal, kFull, kLmm, kAttention}) {
    for (int64_t p : DecodePositions(kind)) {
      const std::string name = std::string("BM_Decode/") + kKindNames[kind] + "/" + PositionName(p);
      if (std::regex_search(name, re) != negative) {
        kinds.push_back(kind);
        break;
      }
    }
  }
  return kinds;
}

void RegisterAll() {
  for (int threads : {1, 2}) {
    for (int k = 0; k < kKinds; ++k) {
      const Kind kind = static_cast<Kind>(k);
      const std::string name =
          std::string("BM_Prefill/") + kKindNames[kind] + "/" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), Prefill, kind, threads)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->Iterations(kPrefillReset / kPrefillTokens);
    }
  }
  for (int k = 0; k < kKinds; ++k) {
    const Kind kind = static_cast<Kind>(k);
    for (int64_t p : DecodePositions(kind)) {
      const std::string name = std::string("BM_Decode/") + kKindNames[kind] + "/" + PositionName(p);
      benchmark::RegisterBenchmark(name.c_str(), Decode, kind, p)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond)
          ->Iterations(kSteps);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  using titans::bench::Flag;
  return titans::bench::BenchmarkMain(
      argc, argv,
      {Flag{"--decode_threads=", [](const char* v) { decode_threads = std::atoi(v); }},
       Flag{"--setup_jobs=", [](const char* v) { setup_jobs = std::atoi(v); }},
       Flag{"--setup_threads=", [](const char* v) { setup_threads = std::atoi(v); }},
       Flag{"--snapshot_dir=",
            [](const char* v) {
              snapshot_dir = v;
              std::filesystem::create_directories(snapshot_dir);
            }}},
      [] {
        if (decode_threads < 1 || setup_jobs < 1 || setup_threads < 1) {
          std::fprintf(stderr, "--decode_threads, --setup_jobs and --setup_threads must be >= 1\n");
          return false;
        }
        RegisterAll();
        Snapshots::Prepare(SelectedDecodeKinds(), setup_jobs);
        return true;
      });
}
