// The cost of a context (issue 4): a fresh session prefilled over C tokens, streamed in pieces,
// with its time per token and the process's peak resident memory. Shared by
// bench/context_bench.cpp and the `titans bench` command (tools/cli_bench.cpp).
//
// One point, MeasureContext(model, C):
// - Tokens are made on the fly (StreamToken) one piece at a time into one buffer, and the logits
//   of a piece overwrite the previous piece's, so nothing outside the session grows with C.
// - The session is new. One untimed piece and Reset() come first, so the first touch of the
//   session's buffers and the start of OpenMP's threads are not counted as a cost of the context.
// - Time: the sum of the Forward calls. s_per_token() = total time / C (the average over the
//   whole prefill); last_piece_s_per_token() = the final piece's time / its tokens (the marginal
//   cost at context C). cpu_seconds is the process's CPU time over the same calls: on one
//   thread, clearly less than `seconds` means that other processes held the core.
// - Peak memory: glibc's free memory is returned to the system (malloc_trim), then the kernel's
//   high-water mark of resident memory is reset to the current RSS by writing "5" to
//   /proc/self/clear_refs (Linux >= 4.0), and VmHWM of /proc/self/status is read after the point.
//   The figure is the whole process's peak during the point: the model's weights, the program
//   and the session. Where the mark cannot be reset, the figure is the peak of the process so far
//   (peak_rss_per_point = false), an upper bound.
// - The memories' health at the end (Session::Health): the fast weights' norms, for the check
//   that a long context still has a working memory (MemoryAlive).
// - The session's own memory: the heap bytes in use (glibc's mallinfo2: allocated chunks and
//   mmapped blocks) after the prefill, less those in use just before the session was made; the
//   buffers of tokens and logits are made before that. It is what the session holds at the end:
//   the memories' state, the attention caches and the runner's scratch, without the program,
//   the model's weights and the allocator's free pages that the process's RSS also counts.
#pragma once

#include <sys/resource.h>
#include <time.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "titans/evals/bench_models.hpp"
#include "titans/titans.hpp"

namespace titans::bench {

// The "<key>: <number> kB" line of a /proc file such as /proc/self/status, in bytes; -1 if
// there is none.
inline int64_t ProcKilobytes(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    int64_t kb = -1;
    fields >> kb;
    return kb < 0 ? -1 : kb * 1024;
  }
  return -1;
}

// Resets the kernel's high-water mark of this process's resident memory to its current RSS;
// false where that is not possible (not Linux, or /proc/self/clear_refs is not writable).
inline bool ResetPeakRss() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.flush();
  return clear_refs.good();
}

// The peak resident memory of this process since the last ResetPeakRss() (VmHWM), or since it
// started (getrusage) where /proc is not there; -1 if unknown.
inline int64_t PeakRssBytes() {
  const int64_t hwm = ProcKilobytes("/proc/self/status", "VmHWM");
  if (hwm >= 0) return hwm;
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // kilobytes on Linux
}

// Heap bytes this process has allocated and not freed (glibc: mallinfo2, every arena and the
// mmapped blocks); -1 without glibc 2.33 or later, and under AddressSanitizer, whose allocator
// replaces glibc's (mallinfo2 then reports nothing).
inline int64_t HeapBytesInUse() {
#if defined(__has_feature)
#if __has_feature(address_sanitizer)  // clang's spelling of __SANITIZE_ADDRESS__
#define TITANS_EVALS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(TITANS_EVALS_ASAN)
  return -1;
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
#else
  return -1;
#endif
}

// CPU time of this process (all threads), in seconds.
inline double CpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Memory the system can give without swapping (MemAvailable); -1 if unknown.
inline int64_t AvailableMemoryBytes() { return ProcKilobytes("/proc/meminfo", "MemAvailable"); }

// Bytes that grow with the context in a session of `config` at `context` tokens: the keys and
// values of every full-attention layer (window 0). Windowed layers keep a fixed ring, MAC layers
// a segment, LMM layers no attention at all.
inline int64_t GrowingCacheBytes(const ModelConfig& config, int64_t context) {
  if (config.attention.window != 0) return 0;
  const int64_t layers =
      std::count_if(config.layers.begin(), config.layers.end(), [](BlockKind kind) {
        return kind == BlockKind::kAttention || kind == BlockKind::kMal || kind == BlockKind::kMag;
      });
  const int64_t per_token = 2 * int64_t{config.attention.kv_heads} * config.attention.head_dim *
                            static_cast<int64_t>(sizeof(float));
  return layers * context * per_token;
}

struct ContextOptions {
  int threads = 1;         // SessionOptions::threads (0 = all)
  int piece = 4096;        // tokens per Forward
  double max_seconds = 0;  // stop the prefill after the piece that exceeds this time (0: never)
  // Called after every piece with the tokens fed so far and the seconds they took.
  std::function<void(int64_t tokens, double seconds)> on_piece;
};

struct ContextCost {
  int64_t context = 0;     // tokens asked for
  int64_t tokens = 0;      // tokens fed: fewer than `context` when max_seconds stopped the prefill
  double seconds = 0;      // time of the Forward calls
  double cpu_seconds = 0;  // CPU time of the process during them (every thread)
  int64_t last_piece_tokens = 0;
  double last_piece_seconds = 0;
  int64_t peak_rss_bytes = -1;     // -1: unknown
  int64_t session_bytes = -1;      // heap bytes the session holds after the prefill; -1: unknown
  bool peak_rss_per_point = true;  // false: the process's peak so far (an upper bound)
  bool finite = true;              // the last piece's logits are all finite
  // Every memory layer's health at the end of the prefill (Session::Health): a long-context
  // figure measures a working memory only if its fast weights are finite and alive there.
  std::vector<LayerHealth> memory_health;

  bool complete() const { return tokens == context; }
  double tokens_per_s() const { return static_cast<double>(tokens) / seconds; }
  double s_per_token() const { return seconds / static_cast<double>(tokens); }
  double last_piece_s_per_token() const {
    return last_piece_seconds / static_cast<double>(last_piece_tokens);
  }
};

// The band in which a memory counts as alive after a long stream: finite, and the norm of its
// fast weights between a tenth and ten times that of its initial weights W0. Below, the memory
// has decayed towards zero, which is absorbing for a deep memory (every gradient is a product of
// the other layers' weights: they stay zero); above, its writes have run away.
constexpr double kAliveMinRatio = 0.1, kAliveMaxRatio = 10.0;

// The fast-weight norm of a memory relative to its initial weights', |W| / |W0|.
inline double WeightsRatio(const MemoryHealth& h) {
  return h.initial_norm > 0 ? h.weights_norm / h.initial_norm : 0.0;
}

inline bool MemoryAlive(const MemoryHealth& h) {
  const double r = WeightsRatio(h);
  return h.finite && !h.all_zero && r >= kAliveMinRatio && r <= kAliveMaxRatio;
}

inline ContextCost MeasureContext(const std::shared_ptr<const Model>& model, int64_t context,
                                  const ContextOptions& options) {
  using Clock = std::chrono::steady_clock;
  ContextCost cost;
  cost.context = context;
#if defined(__GLIBC__)
  malloc_trim(0);  // what earlier points freed is not resident during this one
#endif
  cost.peak_rss_per_point = ResetPeakRss();
  {
    const int64_t piece =
        std::min<int64_t>(std::max(options.piece, 1), std::max<int64_t>(context, 1));
    const int64_t vocab = model->config().vocab_size;
    std::vector<int32_t> tokens(static_cast<size_t>(piece));
    std::vector<float> logits(static_cast<size_t>(piece * vocab));
    const int64_t heap_before = HeapBytesInUse();
    Session session(model, SessionOptions{options.threads});
    auto feed = [&](int64_t n) {
      tokens.resize(static_cast<size_t>(n));
      logits.resize(static_cast<size_t>(n * vocab));
      const int64_t p = session.position();
      for (int64_t i = 0; i < n; ++i) tokens[static_cast<size_t>(i)] = StreamToken(p + i);
      const auto start = Clock::now();
      const double cpu_start = CpuSeconds();
      session.Forward(tokens, logits);
      cost.cpu_seconds += CpuSeconds() - cpu_start;
      return std::chrono::duration<double>(Clock::now() - start).count();
    };
    feed(piece);  // warm-up
    session.Reset();
    cost.cpu_seconds = 0;
    while (cost.tokens < context) {
      const int64_t n = std::min(piece, context - cost.tokens);
      const double s = feed(n);
      cost.tokens += n;
      cost.seconds += s;
      cost.last_piece_tokens = n;
      cost.last_piece_seconds = s;
      if (options.on_piece) options.on_piece(cost.tokens, cost.seconds);
      if (options.max_seconds > 0 && cost.seconds > options.max_seconds) break;
    }
    cost.finite =
        std::all_of(logits.begin(), logits.end(), [](float x) { return std::isfinite(x); });
    cost.memory_health = session.Health();
    const int64_t heap_after = HeapBytesInUse();
    if (heap_before >= 0 && heap_after >= 0) cost.session_bytes = heap_after - heap_before;
  }
  cost.peak_rss_bytes = PeakRssBytes();
  return cost;
}

}  // namespace titans::bench
