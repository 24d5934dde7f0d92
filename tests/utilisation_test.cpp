// The FLOP counts of the benchmarks' utilisation figures (titans/evals/utilisation.hpp), against
// counts written out by hand for small configurations, and the GEMM baseline's size and rate.
#include "titans/evals/utilisation.hpp"

#include <gtest/gtest.h>

#include <cmath>

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

TEST(Utilisation, DecodeBytesByHand) {
  const ModelConfig c = AttentionOnly();
  const Model model(c, ModelWeights::Random(c, 1));
  // Tied embedding 10 x 8 (read whole by the head); the layer: norms 8 + 8, q, k, v, o 4 x 64,
  // persistent pair 2 x 8, FFN 3 x 128; the final norm 8: 760 floats.
  const DecodeBytes at5 = DecodeBytesAt(model, 5);
  EXPECT_DOUBLE_EQ(at5.weights, 4.0 * 760);
  // A key and a value of 8 floats per visible row: 3 rows (the window) at position 5, 1 at 0.
  EXPECT_DOUBLE_EQ(at5.per_stream, 3 * 64.0);
  EXPECT_DOUBLE_EQ(DecodeBytesAt(model, 0).per_stream, 64.0);
  EXPECT_DOUBLE_EQ(at5.per_token(4), 4.0 * 760 / 4 + 3 * 64.0);

  ModelConfig untied = c;  // the embedding: one row of 8 floats; the head 8 x 10
  untied.tie_embeddings = false;
  EXPECT_DOUBLE_EQ(DecodeBytesAt(Model(untied, ModelWeights::Random(untied, 1)), 5).weights,
                   4.0 * (760 - 80 + 8 + 80));

  ModelConfig lmm = c;  // a memory instead of the attention: its fast weights, its write
  lmm.layers = {BlockKind::kLmm};
  lmm.memory = MemoryConfig::Paper(8, 2, 4, 2, 4);
  lmm.memory.output_proj = false;
  const double fast = 4.0 * 2 * (4 * 16 + 16 * 4);  // 2 heads, 4 -> 16 -> 4
  const double pending = 4.0 * 2 * 4 * 8;           // unit 4 of keys and values [4, H dh = 8]
  EXPECT_DOUBLE_EQ(DecodeBytesAt(Model(lmm, ModelWeights::Random(lmm, 1)), 5).per_stream,
                   fast + (6 * fast + pending) / 4);
}

TEST(Utilisation, BandwidthBaselineReadsItsBuffer) {
  BandwidthBaseline read(1 << 20, 2);
  EXPECT_DOUBLE_EQ(read.bytes(), 1 << 20);
  EXPECT_GT(read.Rate(1), 0);
  EXPECT_DOUBLE_EQ(BandwidthBaseline(100, 1).bytes(), 4096);  // at least 4 KiB
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
