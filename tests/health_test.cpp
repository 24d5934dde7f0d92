// Session::Health and MemorySession::Health (issue 13, item 10): the norms are those of the
// state's tensors, computed here naively in double; a memory whose weights are all zero, or
// not finite, is flagged.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
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

// A value that overflows inside the stack (found by fuzz/state_fuzz.cpp: a state file with
// fast weights of 1e31) is a kNumerical error, and the session, whose first layer has taken
// the tokens while the second has not, refuses to go on until Reset or Load.
TEST(Health, AnOverflowInsideTheStackBreaksTheSessionUntilResetOrLoad) {
  const ModelConfig c = Small({kMag, kMag});
  ModelWeights w = ModelWeights::Random(c, 2);
  const auto healthy = std::make_shared<const Model>(c, w);
  MemoryWeights& first = w.layers[0].memory.memory;
  for (float& v : first.w_v) v = 3e38f;  // layer 0's memory writes values that overflow
  for (float& v : first.b_theta) v = 30.0f;
  const auto model = std::make_shared<const Model>(c, w);
  Session session(model);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> logits(tokens.size() * static_cast<size_t>(c.vocab_size));
  ExpectError([&] { session.Forward(tokens, logits); }, ErrorCode::kNumerical,
              {"tokens 0..7", "not finite"});
  const std::string path = ::testing::TempDir() + "/broken_session.safetensors";
  for (const auto& refused : std::vector<std::function<void()>>{
           [&] { session.Forward(tokens, logits); },
           [&] {
             std::vector<float> hidden(static_cast<size_t>(c.d_model));
             session.ForwardEmbeddings(std::vector<float>(hidden.size(), 0.5f), hidden);
           },
           [&] { session.Generate(tokens, 2, {}); }, [&] { session.ResetMemory(); },
           [&] { session.Save(path); }, [&] { (void)session.Clone(); }}) {
    ExpectError(refused, ErrorCode::kNumerical, {"broken", "Reset() or Load()"});
  }
  session.Reset();  // whole again: runs from position 0 (and breaks again on this model)
  EXPECT_EQ(session.position(), 0);
  ExpectError([&] { session.Forward(tokens, logits); }, ErrorCode::kNumerical, {"tokens 0..7"});

  // A successful Load also makes it whole: the state of the healthy model at position 3 (a
  // state file checks the config, which the two models share).
  Session good(healthy);
  std::vector<float> three(3 * static_cast<size_t>(c.vocab_size));
  good.Forward(std::span<const int32_t>(tokens.data(), 3), three);
  good.Save(path);
  session.Load(path);
  EXPECT_EQ(session.position(), 3);
  EXPECT_NO_THROW(session.Save(path));
}

}  // namespace
}  // namespace titans
