// The one threading rule of the engine: how many threads join a parallel region. Every region
// (a memory tile, a split matrix product, an attention call) asks TeamSize with the FLOPs of its
// work between two synchronisations and the session's SessionOptions (threads,
// min_flops_per_thread), so that one setting governs them all.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace titans::ops {

// The default of SessionOptions::min_flops_per_thread (static_assert in src/memory/session.cpp):
// a synchronisation (a region's start and end, a barrier) costs tens of microseconds on a
// shared VM, and a thread whose core is busy far more. Measured (docs/PERFORMANCE.md): a memory
// unit (three barriers) paid for a second thread from about 1e8 FLOPs; the attention kernel and
// large products (one region each) from a few 1e7.
constexpr double kMinFlopsPerThread = 3e7;

// One thread per min_flops_per_thread FLOPs of `flops` (the work between two synchronisations),
// at least 1, at most `threads` and `items` (the pieces the work comes in).
// min_flops_per_thread <= 0: every thread joins (up to `items`); tests use it to exercise the
// threaded paths on small shapes.
inline int TeamSize(double flops, int threads, double min_flops_per_thread,
                    int64_t items = std::numeric_limits<int>::max()) {
  const int most = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
  if (min_flops_per_thread <= 0) return most;
  return static_cast<int>(std::clamp(flops / min_flops_per_thread, 1.0, static_cast<double>(most)));
}

}  // namespace titans::ops
