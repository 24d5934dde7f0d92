// No heap allocation in the per-token hot path: MemorySession::Forward allocates nothing once
// the session exists (all scratch is sized at construction). This file also defines, once for
// the whole test binary, the interposed malloc behind tests/alloc_counter.hpp.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "alloc_counter.hpp"
#include "sanitizers.hpp"
#include "titans/titans.hpp"

namespace {
void CountOne() {
  if (titans::testing::counting_allocations.load(std::memory_order_relaxed)) {
    titans::testing::allocation_count.fetch_add(1);
  }
}
}  // namespace

#ifdef TITANS_ASAN
// AddressSanitizer owns malloc; it reports every allocation to an installed hook instead.
// (Declared here: GCC installs no sanitizer/allocator_interface.h.)
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*,
                                                                             size_t),
                                                         void (*free_hook)(const volatile void*));
namespace {
void OnMalloc(const volatile void*, size_t) { CountOne(); }
void OnFree(const volatile void*) {}
const int hooks_installed = __sanitizer_install_malloc_and_free_hooks(OnMalloc, OnFree);
}  // namespace
#else
extern "C" void* __libc_malloc(size_t size);

extern "C" void* malloc(size_t size) {
  CountOne();
  return __libc_malloc(size);
}
#endif

namespace titans {
namespace {

long AllocationsDuring(MemorySession& session, const std::vector<float>& x, std::vector<float>& y,
                       int tokens_per_call) {
  const size_t d = static_cast<size_t>(session.memory().input_width());
  const size_t d_out = static_cast<size_t>(session.memory().output_width());
  testing::CountAllocations counter;
  for (size_t t = 0; t + tokens_per_call <= x.size() / d; t += tokens_per_call) {
    session.Forward(std::span<const float>(x.data() + t * d, tokens_per_call * d),
                    std::span<float>(y.data() + t * d_out, tokens_per_call * d_out));
  }
  return counter.count();
}

TEST(NoAllocation, ForwardAllocatesNothing) {
  // The benchmark's shapes (large GEMMs whose packing buffers could spill to the heap) and a
  // small multi-head titans-pytorch memory with every option on, also with its other memory
  // models.
  MemoryConfig tp = MemoryConfig::TitansPytorch(64, 4, 16, 8, 16);
  tp.conv_kernel = 4;
  tp.qk_norm = QkNorm::kRms;
  MemoryConfig swiglu = tp, gated = tp;  // titans-pytorch's other memory models
  swiglu.model = MemoryModel::kSwiGlu;
  gated.model = MemoryModel::kGatedResidual;
  for (const MemoryConfig& config : {MemoryConfig::Paper(256, 1, 256, 2, 64), tp, swiglu, gated}) {
    SCOPED_TRACE(config.ToJson());
    auto memory = std::make_shared<const NeuralMemory>(config, MemoryWeights::Random(config, 3));
    for (int threads : {1, 2}) {
      MemorySession session(memory, SessionOptions{.threads = threads, .min_flops_per_thread = 0});
      const int tokens = 512;
      std::vector<float> x(static_cast<size_t>(tokens) * config.d_model, 0.25f);
      for (size_t i = 0; i < x.size(); ++i)
        x[i] = static_cast<float>((i * 7919) % 97) / 97.0f - 0.5f;
      std::vector<float> y(static_cast<size_t>(tokens) * memory->output_width());
      {  // Sanity check of the counter itself: an allocation made while counting is seen.
        testing::CountAllocations counter;
        // volatile: at -O1 and above GCC deletes an unused malloc/free pair.
        void* volatile probe = std::malloc(64);
        std::free(probe);
        ASSERT_EQ(counter.count(), 1);
      }

      // One call first: the process's first parallel region with this many threads makes
      // libgomp create its worker threads, which allocates once per process, not per call.
      const size_t warm_up = 128;  // enough work for every thread to join
      session.Forward(std::span<const float>(x.data(), warm_up * config.d_model),
                      std::span<float>(y.data(), warm_up * memory->output_width()));
      EXPECT_EQ(AllocationsDuring(session, x, y, tokens), 0) << "whole, threads " << threads;
      EXPECT_EQ(AllocationsDuring(session, x, y, 1), 0) << "token by token, threads " << threads;
      EXPECT_EQ(AllocationsDuring(session, x, y, 37), 0) << "pieces of 37, threads " << threads;
    }
  }
}

// A titans-pytorch MAC with train_mac.py's options (the tp_mac golden: weight residual
// trajectories, qkv views, attention pooling, lr modulation, spectral norm) decodes token by
// token and in pieces without allocating.
TEST(NoAllocation, TitansPytorchMacForwardAllocatesNothing) {
  const auto model =
      Model::Load(std::string(TITANS_TEST_DATA_DIR) + "/tp_mac/train_mac.model.safetensors");
  ASSERT_TRUE(model->config().memory.weight_residual && model->config().tp_mac.qkv_views);
  for (int threads : {1, 2}) {
    Session session(model, SessionOptions{.threads = threads, .min_flops_per_thread = 0});
    const size_t vocab = static_cast<size_t>(model->config().vocab_size);
    std::vector<int32_t> tokens(200);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 37) % vocab);
    std::vector<float> logits(tokens.size() * vocab);
    session.Forward(std::span<const int32_t>(tokens).first(64),
                    std::span<float>(logits).first(64 * vocab));  // libgomp's threads, once
    testing::CountAllocations counter;
    for (size_t t = 64; t < 100; ++t) {
      session.Forward(std::span<const int32_t>(tokens).subspan(t, 1),
                      std::span<float>(logits).subspan(t * vocab, vocab));
    }
    session.Forward(std::span<const int32_t>(tokens).subspan(100, 100),
                    std::span<float>(logits).subspan(100 * vocab, 100 * vocab));
    EXPECT_EQ(counter.count(), 0) << "threads " << threads;
  }
}

// Sampling a decoded token (Session::Generate's loop): after the first call on a thread has
// grown its scratch to the vocabulary, drawing with temperature, top-k and top-p allocates
// nothing.
TEST(NoAllocation, SampleTokenAllocatesNothing) {
  std::vector<float> logits(256);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 37) % 101) / 10;
  std::mt19937_64 rng(1);
  const SamplerOptions options[] = {{.temperature = 0.7f},
                                    {.temperature = 1.0f, .top_k = 40},
                                    {.temperature = 0.9f, .top_p = 0.9f}};
  for (const SamplerOptions& o : options) SampleToken(logits, o, rng);  // warm-up
  testing::CountAllocations counter;
  for (int i = 0; i < 100; ++i) {
    for (const SamplerOptions& o : options) SampleToken(logits, o, rng);
  }
  EXPECT_EQ(counter.count(), 0);
}

}  // namespace
}  // namespace titans
