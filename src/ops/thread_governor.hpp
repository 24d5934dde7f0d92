// The thread governor: whether a session's next piece of work runs on its whole team or on one
// thread, chosen from the time its earlier pieces took (issue 14; docs/PERFORMANCE.md, "Busy
// cores").
//
// Why: every parallel region ends in a barrier, and a piece of work has hundreds of them. When
// another process holds one of the cores, the thread that shares it arrives late at every
// barrier while the others spin, and two threads run 2-20x slower than one (measured). No
// thread count fixed in advance is right for both an idle and a busy machine, and OpenMP's wait
// policy is fixed when the runtime loads (OMP_WAIT_POLICY), before a library can choose it.
// So the session measures: it times its pieces on both settings, in windows of pieces long
// enough to average out the scheduler's pauses (kWindowSeconds), keeps the faster one, and
// probes the other now and then, rarely enough that the probes cost at most about
// kProbeOverhead of the time when one setting is far slower.
//
// Results depend on the choice only by float rounding (docs/SEMANTICS.md, invariant 7): a
// product split between threads may sum in another order. At the default min_flops_per_thread
// the bench models and a titans-pytorch MAC gave the same floats on both (measured); with every
// region split (min_flops_per_thread 0) small models do not. So a run that must repeat bit for
// bit fixes its team (adapt_threads false, or one thread).
//
// How it acts: a Scope around a piece (a runner's piece of tokens, a memory session's tile, a
// batched decode step) sets the cap that ops::TeamSize applies to every region of the piece on
// this thread. Scopes nest: an inner one (a model's memory layer) leaves the outer one's cap and
// measures nothing. Sized once; nothing is allocated.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>

#include "ops/threading.hpp"

namespace titans::ops {

class ThreadGovernor {
 public:
  // threads, adapt, min_flops_per_thread: the session's SessionOptions (threads resolved). The
  // team always runs without adapt, with min_flops_per_thread <= 0 (every thread joins every
  // region: the tests' setting) or on one thread.
  ThreadGovernor(int threads, bool adapt, double min_flops_per_thread)
      : threads_(threads), adaptive_(adapt && min_flops_per_thread > 0 && threads > 1) {}

  // The team for the next piece of `rows` rows (tokens): 1 or threads. Every piece of an open
  // window gets the window's setting.
  int Team(int64_t rows) {
    if (!adaptive_) return threads_;
    Bucket& b = buckets_[BucketOf(rows)];
    if (!b.window.open) {
      b.window.team = Choose(b);
      b.window.open = true;
    }
    return b.window.team;
  }

  // Records that a piece of `rows` rows took `seconds` on the team Team gave it (its window's).
  void Record(int64_t rows, double seconds) {
    if (!adaptive_) return;
    Bucket& b = buckets_[BucketOf(rows)];
    Window& window = b.window;
    window.seconds += seconds;
    window.rows += std::max<int64_t>(rows, 1);
    if (window.seconds < kWindowSeconds) return;
    const double cost = window.seconds / static_cast<double>(window.rows);
    Arm& arm = b.arm[window.team > 1 ? kTeam : kOne];
    window = Window{};
    // A probe's or a first sample replaces what may be stale; the setting in use is smoothed.
    arm.cost = !arm.known || b.probing ? cost : (1 - kSmoothing) * arm.cost + kSmoothing * cost;
    const bool first = !arm.known;
    arm.known = true;
    if (!b.probing) {
      ++b.since_probe;
      return;
    }
    // After a probe (or the first window on one thread): probe again soon if the choice changed,
    // else later, at least far enough apart that a probe costs about kProbeOverhead of the time
    // spent at the better setting (a team on a busy core can take 100x a thread's time for a
    // decoded token).
    const int best = b.Best();
    const double ratio = b.arm[1 - best].cost / std::max(b.arm[best].cost, 1e-30);
    const bool flipped = !first && best != b.last_best;
    b.last_best = best;
    b.since_probe = 0;
    const double spacing = std::min((ratio - 1.0) / kProbeOverhead, kMaxSpacing);
    const double doubled = std::min(2.0 * static_cast<double>(b.interval), kMaxInterval);
    b.interval =
        static_cast<int64_t>(flipped ? kMinInterval : std::max({doubled, spacing, kMinInterval}));
  }

  bool adaptive() const { return adaptive_; }
  int threads() const { return threads_; }

  // Caps this thread's regions for one piece and records its time (not when it throws).
  class Scope {
   public:
    Scope(ThreadGovernor& governor, int64_t rows)
        : governor_(governor),
          rows_(rows),
          outer_(current_team_cap != std::numeric_limits<int>::max()) {  // a Scope is open
      if (outer_) return;
      current_team_cap = governor_.Team(rows_);
      exceptions_ = std::uncaught_exceptions();
      start_ = std::chrono::steady_clock::now();
    }
    ~Scope() {
      if (outer_) return;
      current_team_cap = std::numeric_limits<int>::max();
      if (std::uncaught_exceptions() != exceptions_) return;
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start_;
      governor_.Record(rows_, took.count());
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    ThreadGovernor& governor_;
    const int64_t rows_;
    const bool outer_;
    int exceptions_ = 0;
    std::chrono::steady_clock::time_point start_;
  };

  // A setting is timed over windows of pieces that last at least kWindowSeconds (a few prefill
  // pieces of the bench models, 50-200 decoded tokens). Next to a busy core a decoded token is
  // usually faster on the team than on one thread, but now and then it waits a scheduler slice
  // (milliseconds) at a barrier: the team's mean was 3.2-3.5x one thread's while its median was
  // faster (measured). One token's time says little about that mean; a window's does. Replayed
  // over recorded token times, windows of 0.03, 0.05 and 0.1 s kept 0.84, 0.91 and 0.96 of one
  // thread's rate at worst on a busy machine, and 0.95-0.97 of the faster setting on an idle one
  // (docs/PERFORMANCE.md, "Busy cores").
  static constexpr double kWindowSeconds = 0.1;
  static constexpr double kProbeOverhead = 0.05;  // a probe's cost, at most, as a fraction
  static constexpr double kSmoothing = 0.25;      // weight of a new window of the setting in use
  // Windows between probes: at least kMinInterval, doubling while the choice holds up to
  // kMaxInterval, or more when a probe costs more than kProbeOverhead allows (up to kMaxSpacing).
  static constexpr double kMinInterval = 8, kMaxInterval = 256, kMaxSpacing = 1 << 16;

 private:
  static constexpr int kOne = 0, kTeam = 1;
  struct Arm {
    double cost = 0.0;  // seconds per row
    bool known = false;
  };
  // The pieces timed together (Team keeps their setting while it is open).
  struct Window {
    double seconds = 0.0;
    int64_t rows = 0;
    int team = 1;
    bool open = false;
  };
  // Pieces of similar size (rows within a factor of 2) are compared with each other only: a
  // decoded token and a prefill piece cost different amounts per row.
  struct Bucket {
    std::array<Arm, 2> arm;
    Window window;
    int64_t since_probe = 0, interval = static_cast<int64_t>(kMinInterval);
    int last_best = kTeam;
    bool probing = false;  // the window under way is a probe
    int Best() const { return arm[kOne].cost < arm[kTeam].cost ? kOne : kTeam; }
  };
  // The setting for a bucket's next window: the team first, then one thread, then the faster,
  // with a probe of the other every `interval` windows.
  int Choose(Bucket& b) {
    b.probing = false;
    if (!b.arm[kTeam].known) return threads_;
    if (!b.arm[kOne].known) {
      b.probing = true;
      return 1;
    }
    const int best = b.Best();
    if (b.since_probe >= b.interval) {
      b.probing = true;
      return best == kTeam ? 1 : threads_;
    }
    return best == kTeam ? threads_ : 1;
  }
  static size_t BucketOf(int64_t rows) {
    return std::min<size_t>(std::bit_width(static_cast<uint64_t>(std::max<int64_t>(rows, 1))) - 1,
                            kBuckets - 1);
  }
  static constexpr size_t kBuckets = 24;

  int threads_;
  bool adaptive_;
  std::array<Bucket, kBuckets> buckets_{};
};

}  // namespace titans::ops
