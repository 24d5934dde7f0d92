// The FLOP counts of the benchmarks' utilisation figures (titans/evals/utilisation.hpp), against
// counts written out by hand for small configurations, and the GEMM baseline's size and rate.
#include <gtest/gtest.h>

#include <cmath>

#include "titans/evals/utilisation.hpp"

namespace titans::bench {
namespace {

// One attention layer: d 8, 2 heads x 4 (2 kv heads), window 3, 1 persistent pair, FFN 16,
// vocabulary 10.
ModelConfig AttentionOnly() {
  ModelConfig c;
  c.vocab_size = 10;
  c.d_model = 8;
  c.ffn_hidden = 16;
  c.layers = {BlockKind::kAttention};
  c.attention.heads = 2;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 4;
  c.attention.window = 3;
  c.attention.persistent = 1;
  return c;
}

TEST(Utilisation, AttentionLayerByHand) {
  const ModelConfig c = AttentionOnly();
  // q, k, v: 2 * 8 * (8 + 8 + 8) = 384; o: 2 * 8 * 8 = 128; FFN 3 * 2 * 8 * 16 = 768; head
  // 2 * 8 * 10 = 160; attention 4 * 8 = 32 per key.
  const double fixed = 384 + 128 + 768 + 160;
  EXPECT_DOUBLE_EQ(TokenFlops(c, 0), fixed + 32 * (1 + 1));  // itself and the persistent pair
  EXPECT_DOUBLE_EQ(TokenFlops(c, 1), fixed + 32 * (2 + 1));
  EXPECT_DOUBLE_EQ(TokenFlops(c, 2), fixed + 32 * (3 + 1));
  EXPECT_DOUBLE_EQ(TokenFlops(c, 1000), fixed + 32 * (3 + 1));  // the window is full
  EXPECT_DOUBLE_EQ(TokensFlops(c, 0, 4), 4 * fixed + 32 * (2 + 3 + 4 + 4));
  ModelConfig full = c;
  full.attention.window = 0;
  EXPECT_DOUBLE_EQ(TokenFlops(full, 1000), fixed + 32 * (1001 + 1));  // every key
}

TEST(Utilisation, MemoryLayersAddTheirBranch) {
  ModelConfig c = AttentionOnly();
  c.memory = MemoryConfig::Paper(8, 2, 4, 2, 4);
  c.memory.output_proj = false;
  const double attention = TokenFlops(c, 5);
  const double branch = c.memory.FlopsPerToken() + 2 * (2 * 8 * 8);  // + W_g, W_o
  c.layers = {BlockKind::kLmm};
  const double ffn_and_head = 768 + 160;
  EXPECT_DOUBLE_EQ(TokenFlops(c, 5), ffn_and_head + branch);
  c.layers = {BlockKind::kMag};
  EXPECT_DOUBLE_EQ(TokenFlops(c, 5), attention + branch);
  c.layers = {BlockKind::kMal};
  EXPECT_DOUBLE_EQ(TokenFlops(c, 5), attention + branch);
  // MAC (segment 4): the read of h (q projection 2 * 8 * 8, the MLP 2 * (4 * 16 + 16 * 4) per
  // head, W_g and W_o), q, k, v of 2 rows, o of one, 2 rows over the segment's 2 (i + 1) rows
  // and the persistent pair, the branch on y.
  c.layers = {BlockKind::kMac};
  c.segment = 4;
  const double read = 128 + 2 * (2 * (4 * 16 + 16 * 4)) + 128 + 128;
  const int i = 5 % 4;
  EXPECT_DOUBLE_EQ(TokenFlops(c, 5),
                   ffn_and_head + read + 2 * 384 + 128 + 2 * 32 * (2 * (i + 1) + 1) + branch);
}

TEST(Utilisation, GemmBaselineIsTheSquareOfTheFlops) {
  GemmBaseline gemm(2.0 * 100 * 100 * 100, 1);
  EXPECT_EQ(gemm.n(), 100);
  EXPECT_DOUBLE_EQ(gemm.flops(), 2e6);
  EXPECT_GT(gemm.Rate(1), 0);
  EXPECT_EQ(GemmBaseline(10, 2).n(), 64);  // at least 64
}

}  // namespace
}  // namespace titans::bench
