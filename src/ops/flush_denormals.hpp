// Flush-to-zero and denormals-are-zero for the kernels' arithmetic, on the calling thread, for
// the lifetime of a FlushDenormals object (x86 SSE/AVX: the FTZ and DAZ bits of MXCSR).
//
// Why: a memory that meets little surprise forgets geometrically (every unit scales its fast
// weights by 1 - alpha) and its bias-free MLP has W = 0 as a fixed point, so over a long stream
// the fast weights and everything computed from them shrink below FLT_MIN (1.2e-38) into
// denormal numbers: in the benchmark models (random weights) 61% of the memory state is
// denormal and 31% zero at 1M tokens. Many x86 CPUs (most Intel cores) take a microcode assist
// of about a hundred cycles for an operation with a denormal input or result, which would make
// a token at long context cost several times one at 4K. Values that small change no result next
// to the normal-sized ones they meet; with FTZ/DAZ they are zeros. Zen 4, the project's CI
// machine, handles denormals in hardware: there they cost 1-4% at 64K-1M tokens
// (docs/PERFORMANCE.md, "Denormals").
//
// A library must not change its host's floating-point environment, and each thread has its own
// MXCSR: the functions that every computing thread of a kernel runs, in the one-thread path and
// inside the OpenMP region alike (the memory's RunTile, the attention's Step and Attend, the
// session's Forward and ForwardEmbeddings and the workers of its ParallelMultiply), set the
// mode on their thread and restore the two bits as they were when they return (other bits,
// such as the sticky exception flags the computation raised, are left as they are). The same
// mode on every thread also keeps results independent of the thread count. Elsewhere than x86
// this is a no-op.
#pragma once

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define TITANS_HAS_MXCSR 1
#endif

namespace titans {

class FlushDenormals {
 public:
#ifdef TITANS_HAS_MXCSR
  FlushDenormals() : saved_(_mm_getcsr() & kBits) { _mm_setcsr(_mm_getcsr() | kBits); }
  ~FlushDenormals() { _mm_setcsr((_mm_getcsr() & ~kBits) | saved_); }
#else
  FlushDenormals() = default;
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
#ifdef TITANS_HAS_MXCSR
  static constexpr unsigned kBits = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
  unsigned saved_;
#endif
};

}  // namespace titans
