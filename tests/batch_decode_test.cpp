// BatchDecoder (include/titans/session.hpp): N sessions of one model at different positions
// decoded together, or prefilled with N prompts together, give each session the logits and the
// state of running it alone with Forward, for every block kind and a mixed stack; a refused Step
// or Prefill changes nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "model_cases.hpp"
#include "titans/error.hpp"
#include "titans/session.hpp"

namespace titans {
namespace {

using Case = test::ModelCase;
using test::ConfigFor;
using test::ModelCases;
constexpr int kVocab = test::kCaseVocab;

std::vector<int32_t> Tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % kVocab);
  return t;
}

std::vector<float> Forward(Session& session, const std::vector<int32_t>& tokens) {
  std::vector<float> logits(tokens.size() * kVocab);
  session.Forward(tokens, logits);
  return logits;
}

// |a - b| / |b| (Euclidean norms over a session's logits), for a prefill, whose pieces differ
// from Forward's.
double Difference(std::span<const float> a, std::span<const float> b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

bool Same(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// A batch of sessions and, for each, a clone that decodes the same tokens alone.
struct BatchAndAlone {
  std::vector<Session*> batch;  // the given sessions, in order
  std::vector<Session> alone;
};

BatchAndAlone CloneEach(std::vector<Session>& sessions) {
  BatchAndAlone b;
  for (Session& s : sessions) {
    b.alone.push_back(s.Clone());
    b.batch.push_back(&s);
  }
  return b;
}

class BatchDecodeTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const ModelConfig config = ConfigFor(GetParam());
    model_ = std::make_shared<const Model>(config, ModelWeights::Random(config, 11));
  }

  // n sessions fed prompts of different lengths (0 to 60 tokens: different positions, pending
  // memory units, attention ring fills and MAC segment offsets).
  std::vector<Session> Prompted(int n) const {
    std::vector<Session> sessions;
    for (int i = 0; i < n; ++i) {
      sessions.emplace_back(model_, SessionOptions{1});
      Forward(sessions.back(), Tokens((i * 13 + 5 * (i % 2)) % 61, 100 + i));
    }
    return sessions;
  }

  std::shared_ptr<const Model> model_;
};

// A batched step computes each session's token as decoding it alone does, bit for bit: every
// product row is the same chain of multiply-adds whatever the rows beside it (the weight
// products, linalg::MultiplyWeights and MultiplyRow; the tied head, TransposedTile), and the
// per-session work (attention, memory reads and writes) runs on the session's own state as alone.
TEST_P(BatchDecodeTest, EachSessionDecodesAsItWouldAlone) {
  for (const int n : {1, 3, 16}) {
    SCOPED_TRACE("N = " + std::to_string(n));
    std::vector<Session> batched = Prompted(n);
    auto [pointers, alone] = CloneEach(batched);
    BatchDecoder decoder(model_, n, SessionOptions{1});
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    std::vector<float> logits(static_cast<size_t>(n) * kVocab);
    for (int step = 0; step < 40; ++step) {
      for (int i = 0; i < n; ++i) tokens[i] = Tokens(1, 1000 * step + i)[0];
      decoder.Step(pointers, tokens, logits);
      for (int i = 0; i < n; ++i) {
        const std::vector<float> expected = Forward(alone[i], {tokens[i]});
        ASSERT_TRUE(Same(std::span<const float>(logits.data() + i * kVocab, kVocab), expected))
            << "step " << step << ", session " << i;
      }
    }
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(batched[i].position(), alone[i].position());
      const std::vector<int32_t> next = Tokens(3, 7 + i);
      EXPECT_TRUE(Same(Forward(batched[i], next), Forward(alone[i], next)))
          << "session " << i << " after the steps";
    }
  }
}

// Two threads share out the products' columns and the per-session work (attention, memory reads
// and unit writes) by session; 9 sessions at different positions over 12 steps cross unit ends. A
// row's result does not depend on which thread computes it: the same bits.
TEST_P(BatchDecodeTest, ThreadedStepsDecodeTheSame) {
  constexpr int kSessions = 9;
  std::vector<Session> batched = Prompted(kSessions);
  auto [pointers, alone] = CloneEach(batched);
  // min_flops_per_thread 0: both threads join every product and every per-session stage.
  BatchDecoder decoder(model_, kSessions, SessionOptions{2, 0.0});
  std::vector<float> logits(kSessions * kVocab);
  for (int step = 0; step < 12; ++step) {  // few: a barrier per product on a busy host
    const std::vector<int32_t> tokens = Tokens(kSessions, 50 + step);
    decoder.Step(pointers, tokens, logits);
    for (int i = 0; i < kSessions; ++i) {
      EXPECT_TRUE(Same(std::span<const float>(logits.data() + i * kVocab, kVocab),
                       Forward(alone[i], {tokens[i]})))
          << "step " << step << ", session " << i;
    }
  }
}

// A prefill of N prompts of different lengths (0 to 150 tokens: rounds where some sessions are
// done, pieces cut short by a full round, pieces that cross memory units and MAC segments; and
// prompts of one token, a round that takes the decode step's shared memory path) from
// different positions gives each session the logits and the state of Forward of its prompt, up
// to rounding: the prompts run in other pieces (and the memories see other row counts) than
// Forward's 64-token pieces: measured worst 6.7e-7 (mixed stack, five one-token prompts; each
// test's RecordProperty).
constexpr double kPrefillTolerance = 2e-6;

TEST_P(BatchDecodeTest, PrefillOfNPromptsMatchesForwardOfEach) {
  for (const int n : {1, 3, 16, -5}) {  // -5: five prompts of one token
    const bool one_token = n < 0;
    SCOPED_TRACE("N = " + std::to_string(n));
    std::vector<Session> batched = Prompted(std::abs(n));
    std::vector<Session> alone;
    std::vector<Session*> pointers;
    for (Session& s : batched) {
      alone.push_back(s.Clone());
      pointers.push_back(&s);
    }
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::span<const int32_t>> views;
    size_t total = 0;
    for (int i = 0; i < std::abs(n); ++i) {
      prompts.push_back(Tokens(one_token ? 1 : (i * 37 + 11 * (i % 3)) % 151, 500 + i));
      total += prompts.back().size();
    }
    for (const auto& prompt : prompts) views.emplace_back(prompt);
    BatchDecoder decoder(model_, std::abs(n), SessionOptions{1});
    std::vector<float> logits(total * kVocab);
    decoder.Prefill(pointers, views, logits);
    double worst = 0;
    size_t row = 0;
    for (int i = 0; i < std::abs(n); ++i) {
      const std::vector<float> expected = Forward(alone[i], prompts[i]);
      const std::span<const float> got(logits.data() + row * kVocab, expected.size());
      row += prompts[i].size();
      if (n == 1) {  // one session: Forward's own pieces, bit for bit
        ASSERT_TRUE(std::equal(got.begin(), got.end(), expected.begin()));
      }
      const double difference = Difference(got, expected);
      worst = std::max(worst, difference);
      ASSERT_LE(difference, kPrefillTolerance) << "session " << i;
      EXPECT_EQ(batched[i].position(), alone[i].position());
      // The states agree: the next tokens give the same logits.
      const std::vector<int32_t> next = Tokens(5, 7 + i);
      EXPECT_LE(Difference(Forward(batched[i], next), Forward(alone[i], next)), kPrefillTolerance)
          << "session " << i << " after the prefill";
    }
    RecordProperty("worst_prefill_difference_n" + std::to_string(n),
                   ::testing::PrintToString(worst));
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, BatchDecodeTest, ::testing::ValuesIn(ModelCases()),
                         [](const auto& info) { return info.param.name; });

// Widths that are no multiple of 16 floats (d 40, a feed-forward of 88, memory heads of 12): a
// session's row lies at another offset within a 64-byte line in a batch than alone, and its
// element-wise steps (SiLU, the gates' sigmoids) must not round differently there.
TEST(BatchDecodeOddWidths, EachSessionDecodesAsItWouldAlone) {
  ModelConfig config = ConfigFor(ModelCases()[6]);  // mixed: every block kind
  config.d_model = 40;
  config.ffn_hidden = 88;
  config.attention.heads = 5;
  config.attention.kv_heads = 5;
  config.memory = MemoryConfig::Paper(40, 2, 12, 2, 8);
  config.memory.output_proj = false;
  config.segment = config.memory.unit();
  const auto model = std::make_shared<const Model>(config, ModelWeights::Random(config, 11));
  constexpr int kSessions = 3;
  std::vector<Session> batched;
  for (int i = 0; i < kSessions; ++i) {
    batched.emplace_back(model, SessionOptions{1});
    Forward(batched.back(), Tokens(5 + 11 * i, 300 + i));
  }
  auto [pointers, alone] = CloneEach(batched);
  BatchDecoder decoder(model, kSessions, SessionOptions{1});
  std::vector<float> logits(kSessions * kVocab);
  for (int step = 0; step < 20; ++step) {
    const std::vector<int32_t> tokens = Tokens(kSessions, 400 + step);
    decoder.Step(pointers, tokens, logits);
    for (int i = 0; i < kSessions; ++i) {
      ASSERT_TRUE(Same(std::span<const float>(logits.data() + i * kVocab, kVocab),
                       Forward(alone[i], {tokens[i]})))
          << "step " << step << ", session " << i;
    }
  }
}

// A refused Step throws Error(kInvalidArgument) and leaves every session as it was: same
// position, and the next token gives the same logits as in a clone made before.
TEST(BatchDecodeErrors, RefusedStepsChangeNothing) {
  const ModelConfig config = ConfigFor(ModelCases().back());
  const auto model = std::make_shared<const Model>(config, ModelWeights::Random(config, 3));
  const auto other = std::make_shared<const Model>(config, ModelWeights::Random(config, 3));
  Session a(model, SessionOptions{1}), b(model, SessionOptions{1}), c(other, SessionOptions{1});
  Forward(a, Tokens(11, 1));
  Forward(b, Tokens(4, 2));
  const Session a_before = a.Clone(), b_before = b.Clone();
  BatchDecoder decoder(model, 2, SessionOptions{1});
  std::vector<float> logits(2 * kVocab), one(kVocab), three(3 * kVocab);
  Session* ab[] = {&a, &b};
  Session* aa[] = {&a, &a};
  Session* ac[] = {&a, &c};
  Session* a_null[] = {&a, nullptr};
  Session* abc[] = {&a, &b, &c};
  const std::vector<int32_t> good = {1, 2}, bad_high = {1, kVocab}, bad_low = {-1, 2},
                             three_tokens = {1, 2, 3};
  struct Refused {
    const char* what;
    std::span<Session* const> sessions;
    std::span<const int32_t> tokens;
    std::span<float> logits;
  };
  const Refused refused[] = {
      {"token = V", ab, bad_high, logits},
      {"token < 0", ab, bad_low, logits},
      {"the same session twice", aa, good, logits},
      {"a session of another model with the same config", ac, good, logits},
      {"a null session", a_null, good, logits},
      {"too few tokens", ab, std::span<const int32_t>(good.data(), 1), logits},
      {"too few logits", ab, good, one},
      {"more sessions than max_batch", abc, three_tokens, three},
  };
  for (const Refused& r : refused) {
    try {
      decoder.Step(r.sessions, r.tokens, r.logits);
      ADD_FAILURE() << r.what << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << r.what << ": " << e.what();
    }
  }
  EXPECT_EQ(a.position(), 11);
  EXPECT_EQ(b.position(), 4);
  EXPECT_EQ(c.position(), 0);
  const std::vector<int32_t> next = {5};
  Session a_clone = a_before.Clone(), b_clone = b_before.Clone();
  EXPECT_EQ(Forward(a, next), Forward(a_clone, next));
  EXPECT_EQ(Forward(b, next), Forward(b_clone, next));
  // N = 0 is a no-op.
  decoder.Step({}, {}, {});

  // Prefill refuses the same way.
  const std::vector<int32_t> prompt = {1, 2, 3}, bad_prompt = {1, kVocab, 3};
  const std::span<const int32_t> two_prompts[] = {prompt, prompt};
  const std::span<const int32_t> a_bad_prompt[] = {prompt, bad_prompt};
  const std::span<const int32_t> three_prompts[] = {prompt, prompt, prompt};
  std::vector<float> six(6 * kVocab), nine(9 * kVocab);
  struct RefusedPrefill {
    const char* what;
    std::span<Session* const> sessions;
    std::span<const std::span<const int32_t>> prompts;
    std::span<float> logits;
  };
  const RefusedPrefill refused_prefills[] = {
      {"a token = V at index 1", ab, a_bad_prompt, six},
      {"the same session twice", aa, two_prompts, six},
      {"a session of another model", ac, two_prompts, six},
      {"a null session", a_null, two_prompts, six},
      {"too few prompts", ab, std::span<const std::span<const int32_t>>(two_prompts, 1), six},
      {"too few logits", ab, two_prompts, logits},
      {"more sessions than max_batch", abc, three_prompts, nine},
  };
  for (const RefusedPrefill& r : refused_prefills) {
    try {
      decoder.Prefill(r.sessions, r.prompts, r.logits);
      ADD_FAILURE() << r.what << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << r.what << ": " << e.what();
    }
  }
  EXPECT_EQ(a.position(), 12);  // after `next` above
  EXPECT_EQ(b.position(), 5);
  EXPECT_EQ(c.position(), 0);
  decoder.Prefill({}, {}, {});  // N = 0
  const std::span<const int32_t> empty_prompts[] = {{}, {}};
  decoder.Prefill(ab, empty_prompts, {});  // no tokens
  EXPECT_EQ(a.position(), 12);
}

// Step allocates nothing once the decoder and the sessions exist (all scratch is sized for
// max_batch), on one thread or two.
TEST(BatchDecodeNoAllocation, StepAllocatesNothing) {
  const ModelConfig config = ConfigFor(ModelCases().back());
  const auto model = std::make_shared<const Model>(config, ModelWeights::Random(config, 5));
  for (const int threads : {1, 2}) {
    std::vector<Session> sessions;
    std::vector<Session*> pointers;
    for (int i = 0; i < 16; ++i) {
      sessions.emplace_back(model, SessionOptions{threads});
      Forward(sessions.back(), Tokens(i * 3, 40 + i));
    }
    for (Session& s : sessions) pointers.push_back(&s);
    BatchDecoder decoder(model, 16, SessionOptions{threads});
    std::vector<float> logits(16 * kVocab);
    const std::vector<int32_t> tokens = Tokens(16, 9);
    decoder.Step(pointers, tokens, logits);  // OpenMP starts its threads
    testing::CountAllocations counter;
    for (int step = 0; step < 20; ++step) decoder.Step(pointers, tokens, logits);
    EXPECT_EQ(counter.count(), 0) << "threads " << threads;
    // A prefill of 16 prompts (lengths 0..75: full rounds and a last one of a few pieces).
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::span<const int32_t>> views;
    size_t total = 0;
    for (int i = 0; i < 16; ++i) {
      prompts.push_back(Tokens(i * 5, 60 + i));
      total += prompts.back().size();
    }
    for (const auto& prompt : prompts) views.emplace_back(prompt);
    std::vector<float> prefill_logits(total * kVocab);
    testing::CountAllocations prefill_counter;
    decoder.Prefill(pointers, views, prefill_logits);
    EXPECT_EQ(prefill_counter.count(), 0) << "prefill, threads " << threads;
  }
}

// A titans-pytorch MAC model's sessions decode one after the other with Forward: the same
// logits bit for bit.
TEST(BatchDecodeFallback, TitansPytorchMacDecodesEachSessionWithForward) {
  const auto model =
      Model::Load(std::string(TITANS_TEST_DATA_DIR) + "/tp_mac/plain.model.safetensors");
  ASSERT_EQ(model->config().architecture, Architecture::kTitansPytorchMac);
  const int vocab = model->config().vocab_size;
  std::vector<Session> batched, alone;
  std::vector<Session*> pointers;
  for (int i = 0; i < 3; ++i) {
    batched.emplace_back(model, SessionOptions{1});
    std::vector<int32_t> prompt = Tokens(5 + 9 * i, 20 + i);
    std::vector<float> prompt_logits(prompt.size() * vocab);
    batched.back().Forward(prompt, prompt_logits);
    alone.push_back(batched.back().Clone());
  }
  for (Session& s : batched) pointers.push_back(&s);
  BatchDecoder decoder(model, 3, SessionOptions{1});
  std::vector<float> logits(3 * static_cast<size_t>(vocab)), expected(static_cast<size_t>(vocab));
  for (int step = 0; step < 12; ++step) {
    const std::vector<int32_t> tokens = Tokens(3, 300 + step);
    decoder.Step(pointers, tokens, logits);
    for (int i = 0; i < 3; ++i) {
      alone[i].Forward(std::span<const int32_t>(&tokens[i], 1), expected);
      ASSERT_TRUE(std::equal(expected.begin(), expected.end(), logits.begin() + i * vocab))
          << "step " << step << ", session " << i;
    }
  }
}

// Its prefill runs Forward of each prompt: the same logits bit for bit.
TEST(BatchDecodeFallback, TitansPytorchMacPrefillsEachSessionWithForward) {
  const auto model =
      Model::Load(std::string(TITANS_TEST_DATA_DIR) + "/tp_mac/plain.model.safetensors");
  const auto vocab = static_cast<size_t>(model->config().vocab_size);
  std::vector<Session> batched, alone;
  std::vector<Session*> pointers;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::span<const int32_t>> views;
  size_t total = 0;
  for (int i = 0; i < 3; ++i) {
    batched.emplace_back(model, SessionOptions{1});
    alone.emplace_back(model, SessionOptions{1});
    prompts.push_back(Tokens(7 + 20 * i, 80 + i));
    total += prompts.back().size();
  }
  for (Session& s : batched) pointers.push_back(&s);
  for (const auto& prompt : prompts) views.emplace_back(prompt);
  BatchDecoder decoder(model, 3, SessionOptions{1});
  std::vector<float> logits(total * vocab);
  decoder.Prefill(pointers, views, logits);
  size_t row = 0;
  for (int i = 0; i < 3; ++i) {
    std::vector<float> expected(prompts[i].size() * vocab);
    alone[i].Forward(prompts[i], expected);
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), logits.begin() + row * vocab));
    row += prompts[i].size();
  }
}

TEST(BatchDecodeErrors, RefusesBadConstruction) {
  const ModelConfig config = ConfigFor(ModelCases()[0]);
  const auto model = std::make_shared<const Model>(config, ModelWeights::Random(config, 3));
  for (const int max_batch : {0, -1}) {
    EXPECT_THROW(BatchDecoder(model, max_batch), Error);
  }
  EXPECT_THROW(BatchDecoder(nullptr, 4), Error);
  EXPECT_THROW(BatchDecoder(model, 4, SessionOptions{-1}), Error);
}

}  // namespace
}  // namespace titans
