// Session::Health and MemorySession::Health (issue 13, item 10): the norms are those of the
// state's tensors, computed here naively in double; a memory whose weights are all zero, or
// not finite, is flagged.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "hostile_input.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

using namespace hostile;

double Norm(const std::vector<std::vector<float>>& tensors, const std::vector<float>& extra = {}) {
  double sum = 0.0;
  for (const auto& t : tensors) {
    for (const float v : t) sum += static_cast<double>(v) * v;
  }
  for (const float v : extra) sum += static_cast<double>(v) * v;
  return std::sqrt(sum);
}

std::vector<float> Inputs(int64_t n, int64_t d, float scale) {
  std::vector<float> x(static_cast<size_t>(n * d));
  for (size_t i = 0; i < x.size(); ++i) x[i] = scale * std::sin(0.37f * static_cast<float>(i));
  return x;
}

TEST(Health, NormsAreThoseOfTheStateAndMoveWithWrites) {
  MemoryConfig c = MemoryConfig::Paper(16, 2, 8, 2, 4);  // 2-layer MLP with momentum
  auto memory = std::make_shared<const NeuralMemory>(c, MemoryWeights::Random(c, 3));
  MemorySession s(memory);
  MemoryHealth h = s.Health();
  EXPECT_EQ(h.position, 0);
  EXPECT_NEAR(h.weights_norm, Norm(memory->weights().mlp), 1e-9 * h.weights_norm);
  EXPECT_DOUBLE_EQ(h.weights_norm, h.initial_norm);  // a new session holds W0
  EXPECT_EQ(h.momentum_norm, 0.0);
  EXPECT_TRUE(h.finite);
  EXPECT_FALSE(h.all_zero);

  const std::vector<float> x = Inputs(12, 16, 1.0f);
  std::vector<float> out(static_cast<size_t>(12 * s.memory().output_width()));
  s.Forward(x, out);
  h = s.Health();
  EXPECT_EQ(h.position, 12);
  EXPECT_NEAR(h.weights_norm, Norm(s.state().w_cur, s.state().g_cur), 1e-9 * h.weights_norm);
  EXPECT_NE(h.weights_norm, h.initial_norm);
  EXPECT_NEAR(h.momentum_norm, Norm(s.state().momentum, s.state().g_momentum),
              1e-9 * h.momentum_norm + 1e-30);
  EXPECT_GT(h.momentum_norm, 0.0);
  EXPECT_NEAR(h.initial_norm, Norm(memory->weights().mlp), 1e-9 * h.initial_norm);
}

TEST(Health, FlagsAZeroMemoryAndANonFiniteOne) {
  MemoryConfig c = MemoryConfig::Paper(16, 2, 8, 1, 4);  // linear memory
  MemoryWeights w = MemoryWeights::Random(c, 5);
  for (auto& layer : w.mlp) std::fill(layer.begin(), layer.end(), 0.0f);
  MemorySession zero(std::make_shared<const NeuralMemory>(c, w));
  EXPECT_TRUE(zero.Health().all_zero);
  EXPECT_TRUE(zero.Health().finite);

  // Values that overflow float (a value projection of 3e38s): the fast weights become
  // non-finite (the memory does not check its own state on every write: this report shows it).
  MemoryWeights huge = MemoryWeights::Random(c, 5);
  for (float& v : huge.w_v) v = 3e38f;      // the value projection alone overflows
  for (float& v : huge.b_theta) v = 30.0f;  // the largest step
  MemorySession blown(std::make_shared<const NeuralMemory>(c, huge));
  const std::vector<float> x = Inputs(8, 16, 1e6f);
  std::vector<float> out(static_cast<size_t>(8 * blown.memory().output_width()));
  blown.Forward(x, out);
  const MemoryHealth h = blown.Health();
  EXPECT_FALSE(std::isfinite(Norm(blown.state().w_cur)));  // the premise: it did blow up
  EXPECT_FALSE(h.finite);
  EXPECT_FALSE(h.all_zero);
}

TEST(Health, SessionReportsEveryMemoryLayerInOrder) {
  ModelConfig c = Small({kAttention, kMag, kLmm});
  auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 2));
  Session session(model);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  std::vector<float> logits(tokens.size() * static_cast<size_t>(c.vocab_size));
  session.Forward(tokens, logits);
  const std::vector<LayerHealth> health = session.Health();
  ASSERT_EQ(health.size(), 2u);
  EXPECT_EQ(health[0].layer, 1);
  EXPECT_EQ(health[1].layer, 2);
  for (const LayerHealth& l : health) {
    EXPECT_EQ(l.memory.position, 10);
    EXPECT_TRUE(l.memory.finite);
    EXPECT_GT(l.memory.weights_norm, 0.0);
  }
  c.layers = {kAttention};
  Session attention_only(std::make_shared<const Model>(c, ModelWeights::Random(c, 2)));
  EXPECT_TRUE(attention_only.Health().empty());
}

}  // namespace
}  // namespace titans
