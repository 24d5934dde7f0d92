// The one threading rule of the engine: how many threads join a parallel region. Every region
// (a memory tile, a chain of a piece's products, an attention call) asks TeamSize with the FLOPs
// of its work (between two synchronisations; a chain's few barriers are not counted) and the
// session's SessionOptions (threads, min_flops_per_thread), so that one setting governs them all.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace titans::ops {

// The default of SessionOptions::min_flops_per_thread (static_assert in src/memory/session.cpp):
// a synchronisation (a region's start and end, a barrier) costs tens of microseconds on a
// shared VM, and a thread whose core is busy far more. Measured (docs/PERFORMANCE.md): the split
// products of the model's stack and the attention kernel (one region each) pay for a second
// thread from a few 1e6 FLOPs each, as a 64-token piece of a d = 256 stack has. (3e7, tried,
// kept such a model's prefill on one thread when given two.)
constexpr double kMinFlopsPerThread = 4e6;

// What a byte of weights counts for in TeamSize when a decoded token's one-row chain shares out
// its products' columns (session::ForColumnShares): such a chain is bound by reading its
// weights, and each thread reads only its share of them. Measured (docs/PERFORMANCE.md,
// "Decoding on both cores"): splitting the bench models' chains from 80 KB or from 256 KiB of
// weights up gave alike, from 1 MiB up less; a second thread joins from 2 x kMinFlopsPerThread
// / 64 = 125 KB.
constexpr double kFlopsPerWeightByte = 64;

// A memory unit counts as this many synchronisations when its work is shared out: it has three
// barriers, and part of its time goes to passes over the weights, momentum and base (bandwidth-
// bound: a second core gains less). Measured 2026-12-04 (docs/PERFORMANCE.md, "The grid"): two
// threads pay from about 4e7 FLOPs per unit, 5 x 2 x kMinFlopsPerThread (1.4-1.8x of one
// thread from there; 0.7-1.2x below, where a unit's barriers cost as much as its work).
constexpr double kMemoryUnitSynchronisations = 5;

// The team cap of the governed piece running on this thread (ops/thread_governor.hpp: 1 or the
// session's threads), no cap outside one.
inline thread_local int current_team_cap = std::numeric_limits<int>::max();

// One thread per min_flops_per_thread FLOPs of `flops` (the work between two synchronisations),
// at least 1, at most `threads`, `items` (the pieces the work comes in) and the governor's cap.
// min_flops_per_thread <= 0: every thread joins (up to `items`); tests use it to exercise the
// threaded paths on small shapes.
inline int TeamSize(double flops, int threads, double min_flops_per_thread,
                    int64_t items = std::numeric_limits<int>::max()) {
  const int most =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({threads, items, current_team_cap})));
  if (min_flops_per_thread <= 0) return most;
  return static_cast<int>(std::clamp(flops / min_flops_per_thread, 1.0, static_cast<double>(most)));
}

}  // namespace titans::ops
