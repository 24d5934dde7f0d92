// Sessions on one shared Model from many threads (a server keeping one memory per user): the
// Model is immutable and shared, each Session is used by one thread, so eight sessions fed at
// the same time give bit for bit the logits of the same work done one after another. The second
// test gives each session two OpenMP threads that always join (min_flops_per_thread 0), so
// that under ThreadSanitizer (the tsan preset) the engine's own parallel regions race-check too;
// the third does the same for a BatchDecoder, whose threads share out the sessions' own work.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "hostile_input.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

using namespace hostile;

// Session `user` of a stream: its own tokens, fed in pieces of 1..7, then saved, loaded into a
// clone and continued; the logits of every token in order.
std::vector<float> Stream(const std::shared_ptr<const Model>& model, int user,
                          const SessionOptions& options = {.threads = 1}) {
  Session session(model, options);
  std::vector<float> all;
  std::vector<float> logits(7 * 64);
  int32_t next = user;
  for (int piece = 0; piece < 24; ++piece) {
    const int n = 1 + (piece + user) % 7;
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    for (int32_t& t : tokens) t = next = (next * 37 + 11) % 64;
    session.Forward(tokens, std::span<float>(logits.data(), tokens.size() * 64));
    all.insert(all.end(), logits.begin(), logits.begin() + n * 64);
  }
  Session copy = session.Clone();
  copy.Reset();  // the clone diverges; the original goes on
  const std::vector<int32_t> tail = {1, 2, 3};
  session.Forward(tail, std::span<float>(logits.data(), 3 * 64));
  all.insert(all.end(), logits.begin(), logits.begin() + 3 * 64);
  return all;
}

TEST(Concurrency, EightSessionsOnOneModelEqualTheSameWorkInSequence) {
  const ModelConfig c = Small({kMag, kAttention, kMal, kMac, kLmm});
  const auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 9));
  constexpr int kUsers = 8;
  std::vector<std::vector<float>> sequential(kUsers), concurrent(kUsers);
  for (int u = 0; u < kUsers; ++u) sequential[u] = Stream(model, u);
  std::vector<std::thread> threads;
  for (int u = 0; u < kUsers; ++u) {
    threads.emplace_back([&, u] { concurrent[u] = Stream(model, u); });
  }
  for (std::thread& t : threads) t.join();
  for (int u = 0; u < kUsers; ++u) {
    ASSERT_FALSE(sequential[u].empty());
    EXPECT_EQ(concurrent[u], sequential[u]) << "user " << u;
  }
  EXPECT_NE(sequential[0], sequential[1]);  // the users' streams differ
}

TEST(Concurrency, SessionsWithTwoThreadsEachOnOneModel) {
  const ModelConfig c = Small({kMag, kAttention, kMac});
  const auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 4));
  const SessionOptions two{.threads = 2, .min_flops_per_thread = 0};  // every region: 2 threads
  constexpr int kUsers = 3;
  std::vector<std::vector<float>> sequential(kUsers), concurrent(kUsers);
  for (int u = 0; u < kUsers; ++u) sequential[u] = Stream(model, u);  // one thread each
  std::vector<std::thread> threads;
  for (int u = 0; u < kUsers; ++u) {
    threads.emplace_back([&, u] { concurrent[u] = Stream(model, u, two); });
  }
  for (std::thread& t : threads) t.join();
  for (int u = 0; u < kUsers; ++u) {
    ASSERT_EQ(concurrent[u].size(), sequential[u].size());
    for (size_t i = 0; i < concurrent[u].size(); ++i) {  // threads may reorder a sum
      ASSERT_NEAR(concurrent[u][i], sequential[u][i], 1e-4f * (1.0f + std::abs(sequential[u][i])))
          << "user " << u << ", value " << i;
    }
  }
}

TEST(Concurrency, BatchDecoderWithTwoThreadsDecodesAsWithOne) {
  const ModelConfig c = Small({kMag, kAttention, kMal, kMac, kLmm});
  const auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 6));
  constexpr int kSessions = 6, kSteps = 20;
  // Sessions at different positions: prompts of 0, 5, 10, ... tokens.
  const auto prompted = [&](const SessionOptions& options) {
    std::vector<Session> sessions;
    for (int i = 0; i < kSessions; ++i) {
      sessions.emplace_back(model, options);
      std::vector<int32_t> prompt(static_cast<size_t>(5 * i));
      for (size_t j = 0; j < prompt.size(); ++j) prompt[j] = static_cast<int32_t>((j * 7 + i) % 64);
      std::vector<float> logits(prompt.size() * 64);
      sessions.back().Forward(prompt, logits);
    }
    return sessions;
  };
  const auto decode = [&](const SessionOptions& options) {
    std::vector<Session> sessions = prompted(options);
    std::vector<Session*> pointers;
    for (Session& s : sessions) pointers.push_back(&s);
    BatchDecoder decoder(model, kSessions, options);
    std::vector<int32_t> tokens(kSessions);
    std::vector<float> logits(kSessions * 64), all;
    for (int step = 0; step < kSteps; ++step) {
      for (int i = 0; i < kSessions; ++i) tokens[i] = (step * 13 + i * 5) % 64;
      decoder.Step(pointers, tokens, logits);
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  };
  const std::vector<float> one = decode({.threads = 1});
  const std::vector<float> two = decode({.threads = 2, .min_flops_per_thread = 0});
  ASSERT_EQ(two.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) {  // the split products may sum in another order
    ASSERT_NEAR(two[i], one[i], 1e-4f * (1.0f + std::abs(one[i]))) << "value " << i;
  }
}

}  // namespace
}  // namespace titans
