// Session: the model-level invariants of docs/SEMANTICS.md section 4 for every block kind and a
// mixed stack: causality (1), streaming (2), thread count (7), clone/reset, bad input, and the
// sampler.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model_cases.hpp"
#include "titans/error.hpp"
#include "titans/session.hpp"

namespace titans {
namespace {

using Case = test::ModelCase;
using test::ConfigFor;
using test::ModelCases;

std::vector<int32_t> Tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % 48);
  return t;
}

// Logits of `tokens` fed in pieces of the given sizes (the rest in one piece).
std::vector<float> Feed(Session& session, const std::vector<int32_t>& tokens,
                        const std::vector<int>& pieces = {}) {
  const size_t vocab = static_cast<size_t>(session.model().config().vocab_size);
  std::vector<float> logits(tokens.size() * vocab);
  size_t at = 0;
  for (size_t i = 0; at < tokens.size(); ++i) {
    const size_t n =
        i < pieces.size() ? std::min<size_t>(pieces[i], tokens.size() - at) : tokens.size() - at;
    session.Forward(std::span<const int32_t>(tokens.data() + at, n),
                    std::span<float>(logits.data() + at * vocab, n * vocab));
    at += n;
  }
  return logits;
}

double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

class SessionTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const ModelConfig config = ConfigFor(GetParam());
    model_ = std::make_shared<const Model>(config, ModelWeights::Random(config, 11));
  }
  std::shared_ptr<const Model> model_;
};

TEST_P(SessionTest, CausalityChangingATokenChangesNoEarlierOutput) {
  const int n = 70;
  const std::vector<int32_t> base = Tokens(n, 1);
  Session reference(model_, SessionOptions{1});
  const std::vector<float> expected = Feed(reference, base);
  const size_t vocab = 48;
  for (int j : {0, 9, 33, 69}) {
    std::vector<int32_t> changed = base;
    changed[static_cast<size_t>(j)] = (changed[static_cast<size_t>(j)] + 5) % 48;
    Session session(model_, SessionOptions{1});
    const std::vector<float> got = Feed(session, changed);
    for (size_t i = 0; i < static_cast<size_t>(j) * vocab; ++i) {
      ASSERT_EQ(got[i], expected[i]) << "token " << j << " changed output " << i / vocab;
    }
    // And the changed token itself does change its own output (the test can fail).
    double delta = 0;
    for (size_t i = 0; i < vocab; ++i) {
      delta += std::abs(got[j * vocab + i] - expected[j * vocab + i]);
    }
    EXPECT_GT(delta, 0.0) << "token " << j;
  }
}

TEST_P(SessionTest, StreamingWholeOrSplitGivesTheSameOutputsAndContinuation) {
  const int n = 150;
  const std::vector<int32_t> tokens = Tokens(n, 2);
  Session whole(model_, SessionOptions{1});
  const std::vector<float> expected = Feed(whole, tokens);
  const std::vector<std::vector<int>> splits = {{1, 1, 1, 1}, {2, 5}, {7, 7, 7}, {63},
                                                {64},         {65},   {100, 1},  {3, 61, 1, 2, 70}};
  for (const auto& pieces : splits) {
    Session split(model_, SessionOptions{1});
    const std::vector<float> got = Feed(split, tokens, pieces);
    EXPECT_LE(RelativeError(got, expected), 1e-5) << "first piece " << pieces[0];
    EXPECT_EQ(split.position(), n);
  }
  // Token by token (decoding) too.
  Session decode(model_, SessionOptions{1});
  EXPECT_LE(RelativeError(Feed(decode, tokens, std::vector<int>(n, 1)), expected), 1e-5);
}

TEST_P(SessionTest, ThreadCountDoesNotChangeResults) {
  const std::vector<int32_t> tokens = Tokens(130, 3);
  Session one(model_, SessionOptions{1});
  Session two(model_, SessionOptions{.threads = 2, .min_flops_per_thread = 0});  // all join
  const std::vector<float> expected = Feed(one, tokens);
  EXPECT_LE(RelativeError(Feed(two, tokens), expected), 1e-6);
  // Token by token: a decoded row's products are shared out by columns (ForColumnShares).
  Session decode(model_, SessionOptions{.threads = 2, .min_flops_per_thread = 0});
  const std::vector<int> ones(tokens.size(), 1);
  const std::vector<float> decoded = Feed(decode, tokens, ones);
  EXPECT_LE(RelativeError(decoded, expected), 1e-5);
  // Which thread computes an output column changes none of its bits. (The SwiGLU and
  // gated-residual memory networks sum some of their own products in another order on two
  // threads, so their runs are compared above, within rounding.)
  if (model_->config().memory.model == MemoryModel::kMlp) {
    Session decode_one(model_, SessionOptions{1});
    EXPECT_EQ(decoded, Feed(decode_one, tokens, ones));
  }
}

TEST_P(SessionTest, CloneContinuesIdenticallyAndResetStartsOver) {
  const std::vector<int32_t> first = Tokens(40, 4), second = Tokens(30, 5);
  Session a(model_, SessionOptions{1});
  Feed(a, first);
  Session b = a.Clone();
  EXPECT_EQ(b.position(), 40);
  EXPECT_EQ(Feed(a, second), Feed(b, second));
  a.Reset();
  Session fresh(model_, SessionOptions{1});
  EXPECT_EQ(Feed(a, first), Feed(fresh, first));
}

TEST_P(SessionTest, OutOfRangeTokenIsRejectedAndChangesNothing) {
  Session session(model_, SessionOptions{1});
  Feed(session, Tokens(10, 6));
  Session twin = session.Clone();
  std::vector<int32_t> bad = Tokens(5, 7);
  bad[3] = 48;
  std::vector<float> logits(5 * 48);
  try {
    session.Forward(bad, logits);
    ADD_FAILURE() << "accepted token 48";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("48"), std::string::npos) << e.what();
  }
  bad[3] = -1;
  EXPECT_THROW(session.Forward(bad, logits), Error);
  EXPECT_EQ(session.position(), 10);
  const std::vector<int32_t> next = Tokens(12, 8);
  EXPECT_EQ(Feed(session, next), Feed(twin, next));
}

INSTANTIATE_TEST_SUITE_P(Kinds, SessionTest, ::testing::ValuesIn(ModelCases()),
                         [](const auto& info) { return info.param.name; });

// The stack's chains of products share out their output columns between threads
// (session::ForColumnShares) and the attention its (head, tile) items. With widths that are no
// multiple of 16 floats (d 40, a feed-forward of 88: rows that start off a 64-byte line) and
// pieces of odd sizes, neither split may change a bit, prefilled or decoded, on 2 or 3 threads.
// (The memory kinds are left out: the memory's own threads sum a unit's gradients in another
// order, which invariant 7 allows; ThreadCountDoesNotChangeResults compares them within
// rounding.) Splitting rows instead, as the chains did before, failed this: a thread's rows
// from row 19 on took SiLU's exponentials on another grid of vector lanes.
TEST(Session, ThreadsChangeNoBitsOfAnAttentionStackWithOddWidths) {
  for (const bool tied : {false, true}) {
    ModelConfig c = ConfigFor(ModelCases()[3]);  // attention, window 16, persistent pairs
    c.d_model = 40;
    c.ffn_hidden = 88;
    c.attention.heads = 5;
    c.attention.kv_heads = 5;
    c.layers = {BlockKind::kAttention, BlockKind::kAttention};
    c.tie_embeddings = tied;
    const auto model = std::make_shared<const Model>(c, ModelWeights::Random(c, 11));
    const std::vector<int32_t> tokens = Tokens(100, 12);
    const std::vector<int> pieces = {39, 1, 1, 40};  // the rest (19) in one last piece
    Session one(model, SessionOptions{1});
    const std::vector<float> expected = Feed(one, tokens, pieces);
    for (const int threads : {2, 3}) {
      Session many(model, SessionOptions{.threads = threads, .min_flops_per_thread = 0});
      EXPECT_EQ(Feed(many, tokens, pieces), expected) << threads << " threads, tied " << tied;
    }
  }
}

TEST(Session, EmbeddingModelsReturnHiddenStatesAndRejectNaN) {
  ModelConfig config = ConfigFor(ModelCases()[6]);
  config.vocab_size = 0;
  config.tie_embeddings = false;
  auto model = std::make_shared<const Model>(config, ModelWeights::Random(config, 3));
  Session session(model, SessionOptions{1});
  std::vector<float> x(20 * 32, 0.3f), h(20 * 32);
  session.ForwardEmbeddings(x, h);
  for (float v : h) ASSERT_TRUE(std::isfinite(v));
  x[5] = std::nanf("");
  EXPECT_THROW(session.ForwardEmbeddings(x, h), Error);
  EXPECT_EQ(session.position(), 20);
  std::vector<int32_t> tokens{1};
  std::vector<float> logits(1);
  EXPECT_THROW(session.Forward(tokens, logits), Error);  // no vocabulary
}

TEST(Sampler, GreedyTopKTopPAndSeeds) {
  const std::vector<float> logits{0.1f, 3.0f, 2.9f, -1.0f, 0.0f};
  std::mt19937_64 rng(1);
  EXPECT_EQ(SampleToken(logits, SamplerOptions{}, rng), 1);  // greedy
  // top_k = 1 is greedy at any temperature.
  EXPECT_EQ(SampleToken(logits, SamplerOptions{.temperature = 5.0f, .top_k = 1}, rng), 1);
  // top_k = 2 only ever returns the two best; both appear.
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 400; ++i) {
    ++seen[static_cast<size_t>(SampleToken(logits, {.temperature = 1.0f, .top_k = 2}, rng))];
  }
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);
  EXPECT_EQ(seen[0] + seen[3] + seen[4], 0);
  // A tiny top_p keeps only the best token.
  EXPECT_EQ(SampleToken(logits, {.temperature = 1.0f, .top_p = 0.01f}, rng), 1);
  // Equal logits: the candidates keep their index order (as a stable sort), so the nucleus of
  // one and top-k = 1 both give the first of them.
  const std::vector<float> ties = {0.5f, 2.0f, 2.0f, 2.0f};
  EXPECT_EQ(SampleToken(ties, {.temperature = 1.0f, .top_k = 1}, rng), 1);
  EXPECT_EQ(SampleToken(ties, {.temperature = 1.0f, .top_p = 0.01f}, rng), 1);
  // The same seed gives the same draws.
  std::mt19937_64 r1(9), r2(9);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(SampleToken(logits, {.temperature = 2.0f}, r1),
              SampleToken(logits, {.temperature = 2.0f}, r2));
  }
  EXPECT_THROW(SampleToken({}, SamplerOptions{}, rng), Error);
  EXPECT_THROW(SampleToken(logits, {.temperature = -1.0f}, rng), Error);
}

TEST(Session, GenerateIsDeterministicForASeed) {
  const ModelConfig config = ConfigFor(ModelCases()[6]);
  auto model = std::make_shared<const Model>(config, ModelWeights::Random(config, 5));
  const std::vector<int32_t> prompt = Tokens(9, 10);
  Session a(model, SessionOptions{1}), b(model, SessionOptions{1});
  const SamplerOptions sampler{.temperature = 0.8f, .top_k = 10, .top_p = 0.9f, .seed = 42};
  const auto x = a.Generate(prompt, 12, sampler);
  EXPECT_EQ(x, b.Generate(prompt, 12, sampler));
  EXPECT_EQ(x.size(), 12u);
  EXPECT_EQ(a.position(), 9 + 11);  // the last sampled token is not fed
  // Greedy generation equals taking the argmax of Forward step by step.
  Session g(model, SessionOptions{1}), manual(model, SessionOptions{1});
  const auto greedy = g.Generate(prompt, 5, SamplerOptions{});
  std::vector<float> logits(prompt.size() * 48);
  manual.Forward(prompt, logits);
  std::vector<int32_t> expected;
  std::vector<float> last(logits.end() - 48, logits.end());
  for (int i = 0; i < 5; ++i) {
    const int32_t t =
        static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    expected.push_back(t);
    manual.Forward(std::span<const int32_t>(&expected.back(), 1), last);
  }
  EXPECT_EQ(greedy, expected);
}

}  // namespace
}  // namespace titans

namespace titans {
namespace {

std::string TempFile(const std::string& name) {
  return ::testing::TempDir() + "/titans_session_" + std::to_string(::getpid()) + "_" + name;
}

TEST_P(SessionTest, SaveLoadMidStreamContinuesBitForBit) {
  const std::vector<int32_t> first = Tokens(37, 12), second = Tokens(45, 13);
  Session original(model_, SessionOptions{1});
  Feed(original, first);  // 37: mid-unit, mid-segment, past the window
  const std::string path = TempFile(GetParam().name + ".safetensors");
  original.Save(path);
  Session loaded(model_, SessionOptions{1});
  loaded.Load(path);
  EXPECT_EQ(loaded.position(), 37);
  EXPECT_EQ(Feed(loaded, second), Feed(original, second));
  std::filesystem::remove(path);
}

TEST_P(SessionTest, LoadRejectsOtherModelsAndBrokenFilesAndChangesNothing) {
  Session session(model_, SessionOptions{1});
  Feed(session, Tokens(21, 14));
  const std::string path = TempFile(GetParam().name + "_good.safetensors");
  session.Save(path);
  Session target(model_, SessionOptions{1});
  Feed(target, Tokens(5, 15));
  Session twin = target.Clone();

  // Another model config.
  ModelConfig other = model_->config();
  other.ffn_hidden += 8;
  auto other_model = std::make_shared<const Model>(other, ModelWeights::Random(other, 1));
  Session stranger(other_model, SessionOptions{1});
  try {
    stranger.Load(path);
    ADD_FAILURE() << "loaded a session of another model";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMismatch) << e.what();
  }
  // Truncated files.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (size_t cut : {size_t{9}, bytes.size() / 2, bytes.size() - 1}) {
    const std::string broken = TempFile("cut.safetensors");
    std::ofstream(broken, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(cut));
    EXPECT_THROW(target.Load(broken), Error) << "cut at " << cut;
    std::filesystem::remove(broken);
  }
  EXPECT_THROW(target.Load(TempFile("missing.safetensors")), Error);
  EXPECT_EQ(target.position(), 5);
  const std::vector<int32_t> next = Tokens(9, 16);
  EXPECT_EQ(Feed(target, next), Feed(twin, next));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace titans
