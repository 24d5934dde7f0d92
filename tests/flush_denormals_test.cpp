// Flush-to-zero in the kernels (src/ops/flush_denormals.hpp): denormals are zeros while a kernel
// computes, and the host's floating-point mode is what it was afterwards, on the calling thread
// and on OpenMP's worker threads.
#include "ops/flush_denormals.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <memory>
#include <vector>

#include "titans/session.hpp"

#ifdef TITANS_HAS_MXCSR

namespace titans {
namespace {

constexpr unsigned kFtzDaz = 0x8040;

// The FTZ and DAZ bits of every thread of a team of `threads` (libgomp reuses its threads).
std::vector<unsigned> TeamModes(int threads) {
  std::vector<unsigned> modes(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  modes[static_cast<size_t>(omp_get_thread_num())] = _mm_getcsr() & kFtzDaz;
  return modes;
}

TEST(FlushDenormalsTest, DenormalsAreZeroInsideAndTheModeIsRestored) {
  volatile float tiny = 1e-39f;  // below FLT_MIN
  for (const unsigned host : {0u, kFtzDaz}) {
    const unsigned saved = _mm_getcsr();
    _mm_setcsr((saved & ~kFtzDaz) | host);
    {
      const FlushDenormals flush;
      const float product = tiny * 3.0f;
      EXPECT_EQ(product, 0.0f);
    }
    EXPECT_EQ(_mm_getcsr() & kFtzDaz, host);
    const float product = tiny * 3.0f;
    EXPECT_EQ(product == 0.0f, host != 0);
    _mm_setcsr(saved);
  }
}

TEST(FlushDenormalsTest, SessionsLeaveEveryThreadsModeAsItWas) {
  ModelConfig c;
  c.vocab_size = 32;
  c.d_model = 32;
  c.ffn_hidden = 48;
  c.layers = {BlockKind::kMag, BlockKind::kLmm};
  c.attention.heads = 4;
  c.attention.kv_heads = 4;
  c.attention.head_dim = 8;
  c.attention.window = 16;
  c.memory = MemoryConfig::Paper(32, 2, 16, 2, 4);
  c.memory.output_proj = false;
  const auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 3));
  // Every kernel on both threads, whatever the work.
  Session session(model, SessionOptions{.threads = 2, .min_flops_per_thread = 0});
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  std::vector<float> logits(tokens.size() * 32);
  const unsigned saved = _mm_getcsr();
  for (const unsigned host : {0u, kFtzDaz}) {
    _mm_setcsr((saved & ~kFtzDaz) | host);
    const std::vector<unsigned> before = TeamModes(2);
    session.Forward(tokens, logits);
    EXPECT_EQ(_mm_getcsr() & kFtzDaz, host);
    EXPECT_EQ(TeamModes(2), before);
  }
  _mm_setcsr(saved);
}

}  // namespace
}  // namespace titans

#endif  // TITANS_HAS_MXCSR
