// The logit difference of two models (titans/evals/logit_difference.hpp): a model against itself
// is no difference, a changed weight is one and the figures are those of the two models' logits
// computed directly, a small stack whose logits are set by hand gives the figures worked out by
// hand, and bad input is refused.
#include "titans/evals/logit_difference.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "titans/error.hpp"
#include "titans/session.hpp"

namespace titans::eval {
namespace {

ModelConfig Config(int vocab = 64) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = 32;
  c.ffn_hidden = 64;
  c.tie_embeddings = false;
  c.layers = {BlockKind::kMag, BlockKind::kMal};
  c.attention.heads = 2;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 16;
  c.attention.window = 16;
  c.memory = MemoryConfig::Paper(32, 2, 16, 2, 8);
  c.memory.output_proj = false;
  return c;
}

// 150 tokens: two whole pieces of 64 and a part of one.
std::vector<int32_t> Tokens(int vocab = 64) {
  std::vector<int32_t> tokens(150);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 37 + 5) % vocab);
  return tokens;
}

std::vector<float> Logits(std::shared_ptr<const Model> model, const std::vector<int32_t>& tokens) {
  Session session(std::move(model), SessionOptions{1});
  std::vector<float> logits(tokens.size() *
                            static_cast<size_t>(session.model().config().vocab_size));
  session.Forward(tokens, logits);
  return logits;
}

TEST(LogitDifference, AModelAgainstItselfIsNoDifference) {
  const ModelConfig c = Config();
  const auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 5));
  const auto copy = std::make_shared<const Model>(c, model->weights());
  for (const auto& other : {model, copy}) {
    const LogitDifference d = CompareLogits(model, other, Tokens(), 1);
    EXPECT_EQ(d.tokens, 150);
    EXPECT_EQ(d.relative, 0.0);
    EXPECT_EQ(d.max_abs, 0.0);
    EXPECT_EQ(d.top1_agreement, 1.0);
  }
}

TEST(LogitDifference, AChangedWeightIsTheDifferenceOfTheLogits) {
  const ModelConfig c = Config();
  ModelWeights weights = ModelWeights::Random(c, 5);
  const auto model = std::make_shared<const Model>(c, weights);
  weights.layers[1].ffn_down[7] += 0.5f;
  const auto changed = std::make_shared<const Model>(c, std::move(weights));
  const LogitDifference d = CompareLogits(changed, model, Tokens(), 1);
  EXPECT_GT(d.relative, 0.0);
  EXPECT_GT(d.max_abs, 0.0);
  // The figures of the two models' logits, each computed in one call (the pieces of 64 group
  // float sums differently: equal up to rounding).
  const std::vector<float> la = Logits(changed, Tokens()), lb = Logits(model, Tokens());
  double diff2 = 0, norm2 = 0, max_abs = 0;
  int agree = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    const double diff = static_cast<double>(la[i]) - lb[i];
    diff2 += diff * diff;
    norm2 += static_cast<double>(lb[i]) * lb[i];
    max_abs = std::max(max_abs, std::abs(diff));
  }
  for (size_t row = 0; row < la.size(); row += 64) {
    agree += std::max_element(la.begin() + row, la.begin() + row + 64) - la.begin() ==
             std::max_element(lb.begin() + row, lb.begin() + row + 64) - lb.begin();
  }
  EXPECT_NEAR(d.relative, std::sqrt(diff2 / norm2), 1e-4 * d.relative);
  EXPECT_NEAR(d.max_abs, max_abs, 1e-4 * max_abs);
  EXPECT_DOUBLE_EQ(d.top1_agreement, agree / 150.0);
}

// One attention block that adds nothing (its output and feed-forward down projections are zero),
// so the logits are n(embedding[token]) lm_head. Token 0's embedding (c, c, c, c) and token 1's
// (c, -c, c, -c) normalise to (1, 1, 1, 1) and (1, -1, 1, -1) (c = 1000: the norm's epsilon is
// below float's resolution). With lm_head rows r0 = (1, 2, 3), r1, r2 = r3 = 0:
//   b: r1 = (0, 0, 0): both tokens' logits (1, 2, 3), argmax 2;
//   a: r1 = (3, 0, 0): token 0 (4, 2, 3), argmax 0; token 1 (-2, 2, 3), argmax 2.
// Each position differs by 3 in one logit: relative sqrt(9 n) / sqrt(14 n) = 3 / sqrt(14), max
// abs 3; the argmax agrees for token 1 only.
TEST(LogitDifference, AHandSetStackGivesTheFiguresWorkedOutByHand) {
  ModelConfig c;
  c.vocab_size = 3;
  c.d_model = 4;
  c.ffn_hidden = 4;
  c.tie_embeddings = false;
  c.layers = {BlockKind::kAttention};
  c.attention.heads = 1;
  c.attention.kv_heads = 1;
  c.attention.head_dim = 4;
  c.memory = MemoryConfig::Paper(4, 1, 4);
  c.memory.output_proj = false;
  ModelWeights w = ModelWeights::Zeros(c);
  w.embedding = {1000, 1000, 1000, 1000, 1000, -1000, 1000, -1000, 0, 0, 0, 0};
  w.final_norm = {1, 1, 1, 1};
  w.lm_head = {1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // [d, V]
  const auto b = std::make_shared<const Model>(c, w);
  w.lm_head[3] = 3;
  const auto a = std::make_shared<const Model>(c, std::move(w));
  const std::vector<int32_t> tokens = {0, 1, 1, 0, 1};
  const LogitDifference d = CompareLogits(a, b, tokens, 1);
  EXPECT_EQ(d.tokens, 5);
  EXPECT_NEAR(d.relative, 3.0 / std::sqrt(14.0), 1e-6);
  EXPECT_NEAR(d.max_abs, 3.0, 1e-5);
  EXPECT_DOUBLE_EQ(d.top1_agreement, 3.0 / 5.0);
  EXPECT_EQ(LogitDifferenceText(d), "relative 0.802, max abs 3, top-1 agreement 60.00%");
}

TEST(LogitDifference, BadInputIsRefused) {
  const ModelConfig c = Config(), other = Config(32);
  const auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 5));
  const auto smaller = std::make_shared<const Model>(other, ModelWeights::Random(other, 5));
  EXPECT_THROW(CompareLogits(model, model, {}, 1), Error);
  EXPECT_THROW(CompareLogits(model, smaller, Tokens(32), 1), Error);
  const std::vector<int32_t> outside = {1, 64};
  EXPECT_THROW(CompareLogits(model, model, outside, 1), Error);
}

}  // namespace
}  // namespace titans::eval
