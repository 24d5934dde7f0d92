// Bits per byte by position (titans/evals/eval.hpp, `titans eval`): the buckets partition the
// predicted bytes, the figures equal a direct computation from one session's logits, writes off is
// the model with niah::WithoutMemoryWrites (whose memory keeps W0 exactly), reset every N is the
// stream with Session::ResetMemory every N tokens, and bad input is refused before anything runs.
#include "titans/evals/eval.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "scratch_dir.hpp"
#include "titans/error.hpp"
#include "titans/evals/niah.hpp"
#include "titans/session.hpp"

namespace titans::eval {
namespace {

constexpr int kWindow = 16, kUnit = 8;

ModelConfig Config(std::vector<BlockKind> layers, int vocab = 256) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = 32;
  c.ffn_hidden = 64;
  c.tie_embeddings = false;
  c.layers = std::move(layers);
  c.attention.heads = 2;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 16;
  c.attention.window = kWindow;
  c.memory = MemoryConfig::Paper(32, 2, 16, 2, kUnit);
  c.memory.output_proj = false;
  c.segment = c.memory.unit();
  return c;
}

std::shared_ptr<const Model> RandomModel(const ModelConfig& c, uint64_t seed = 3) {
  return std::make_shared<const Model>(c, ModelWeights::Random(c, seed));
}

std::shared_ptr<const Model> MagMal() {
  return RandomModel(Config({BlockKind::kMag, BlockKind::kMal}));
}

// About 700 bytes of prose with digits, punctuation and a non-ASCII byte.
std::string Text() {
  std::string s;
  for (int i = 0; i < 9; ++i) {
    s += "Titans learn to memorize at test time; line " + std::to_string(i * 37) +
         " of the caf\xc3\xa9 text, with a gradient step per chunk.\n";
  }
  return s;
}

// The cost of every predicted byte, directly: one session over the text in pieces of `piece`
// tokens, ResetMemory after every `reset_every` tokens, -ln softmax in long double.
std::vector<long double> DirectCosts(std::shared_ptr<const Model> model, const std::string& text,
                                     size_t piece, size_t reset_every = 0) {
  Session s(std::move(model), {.threads = 1});
  std::vector<long double> costs(text.size(), 0.0L);  // costs[p] of byte p; costs[0] unused
  for (size_t at = 0; at + 1 < text.size();) {
    size_t n = std::min(piece, text.size() - 1 - at);
    if (reset_every > 0) n = std::min(n, reset_every - at % reset_every);
    std::vector<int32_t> tokens(n);
    for (size_t i = 0; i < n; ++i) tokens[i] = static_cast<uint8_t>(text[at + i]);
    std::vector<float> logits(n * 256);
    s.Forward(tokens, logits);
    for (size_t i = 0; i < n; ++i) {
      const float* row = logits.data() + i * 256;
      long double max = row[0], sum = 0;
      for (int v = 0; v < 256; ++v) max = std::max<long double>(max, row[v]);
      for (int v = 0; v < 256; ++v) sum += std::exp(static_cast<long double>(row[v]) - max);
      const int target = static_cast<uint8_t>(text[at + i + 1]);
      costs[at + i + 1] = -std::log(std::exp(static_cast<long double>(row[target]) - max) / sum);
    }
    at += n;
    if (reset_every > 0 && at % reset_every == 0) s.ResetMemory();
  }
  return costs;
}

double BitsPerByte(const std::vector<long double>& costs, int64_t begin, int64_t end) {
  long double sum = 0;
  int64_t n = 0;
  for (int64_t p = std::max<int64_t>(begin, 1); p < end; ++p, ++n) sum += costs[p];
  return static_cast<double>(sum / n / std::log(2.0L));
}

void ExpectEqualTo(const Measurement& m, const std::vector<long double>& costs, double tolerance) {
  const auto length = static_cast<int64_t>(costs.size());
  EXPECT_EQ(m.overall.begin, 0);
  EXPECT_EQ(m.overall.end, length);
  EXPECT_EQ(m.overall.tokens, length - 1);
  EXPECT_NEAR(m.overall.bits_per_byte(), BitsPerByte(costs, 0, length), tolerance);
  for (const Bucket& b : m.buckets) {
    EXPECT_NEAR(b.bits_per_byte(), BitsPerByte(costs, b.begin, b.end), tolerance)
        << "bucket " << b.begin << "-" << b.end;
  }
}

void ExpectSame(const Measurement& a, const Measurement& b) {
  ASSERT_EQ(a.buckets.size(), b.buckets.size());
  for (size_t i = 0; i < a.buckets.size(); ++i) {
    EXPECT_EQ(a.buckets[i].nats, b.buckets[i].nats) << i;
    EXPECT_EQ(a.buckets[i].tokens, b.buckets[i].tokens) << i;
  }
  EXPECT_EQ(a.overall.nats, b.overall.nats);
}

// Runs f and expects Error(kInvalidArgument) whose message contains `what`.
template <class F>
void ExpectInvalid(F&& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "accepted; expected an error about \"" << what << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(EvalBuckets, PartitionThePredictedBytes) {
  const std::vector<Bucket> b = PositionBuckets(1000, 16);
  ASSERT_EQ(b.size(), 4u);
  const int64_t bounds[5] = {0, 16, 64, 256, 1000};  // the last one ends at the text's end
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(b[i].begin, bounds[i]);
    EXPECT_EQ(b[i].end, bounds[i + 1]);
    EXPECT_EQ(b[i].nats, 0.0);
  }
  EXPECT_EQ(b[0].tokens, 15);  // byte 0 is never predicted
  EXPECT_EQ(b[3].tokens, 744);

  for (int64_t length : {2, 3, 15, 16, 17, 64, 65, 1000, 4096, 100003}) {
    for (int64_t window : {1, 2, 3, 16, 64, 5000}) {
      const std::vector<Bucket> buckets = PositionBuckets(length, window);
      ASSERT_FALSE(buckets.empty());
      int64_t tokens = 0;
      for (size_t i = 0; i < buckets.size(); ++i) {
        EXPECT_GT(buckets[i].tokens, 0);
        EXPECT_EQ(buckets[i].tokens, buckets[i].end - std::max<int64_t>(buckets[i].begin, 1));
        if (i > 0) {
          EXPECT_EQ(buckets[i].begin, buckets[i - 1].end);
          EXPECT_EQ(buckets[i].end, std::min(buckets[i].begin * 4, length));
        }
        tokens += buckets[i].tokens;
      }
      EXPECT_EQ(buckets.front().begin, window == 1 ? 1 : 0);  // [0, 1) predicts nothing
      EXPECT_EQ(buckets.front().end, std::min(window == 1 ? 4 : window, length));
      EXPECT_EQ(buckets.back().end, length);
      EXPECT_EQ(tokens, length - 1) << length << " " << window;
    }
  }
  ExpectInvalid([] { PositionBuckets(1, 16); }, "at least 2 bytes");
  ExpectInvalid([] { PositionBuckets(100, 0); }, "window must be >= 1");
}

TEST(EvalBuckets, DefaultWindowIsTheSmallestAttentionWindow) {
  const Window mag = DefaultWindow(Config({BlockKind::kMag, BlockKind::kLmm}));
  EXPECT_EQ(mag.size, kWindow);
  EXPECT_EQ(mag.source, "attention window");
  ModelConfig mac = Config({BlockKind::kMac, BlockKind::kMal});  // segment 8 < window 16
  EXPECT_EQ(DefaultWindow(mac).size, kUnit);
  EXPECT_EQ(DefaultWindow(mac).source, "MAC segment");
  const Window lmm = DefaultWindow(Config({BlockKind::kLmm}));  // no attention: the unit
  EXPECT_EQ(lmm.size, kUnit);
  EXPECT_EQ(lmm.source, "memory unit");
  ModelConfig full = Config({BlockKind::kMag});
  full.attention.window = 0;  // full attention has no window
  EXPECT_EQ(DefaultWindow(full).size, kUnit);
  full.layers = {BlockKind::kAttention};
  EXPECT_EQ(DefaultWindow(full).size, 0);  // neither a window nor a memory
}

TEST(EvalNll, IsALogSoftmaxInDouble) {
  const float extreme[3] = {1000.0f, 0.0f, -1000.0f};
  EXPECT_NEAR(NegativeLogLikelihood(extreme, 3, 0), 0.0, 1e-12);
  EXPECT_NEAR(NegativeLogLikelihood(extreme, 3, 1), 1000.0, 1e-9);
  EXPECT_NEAR(NegativeLogLikelihood(extreme, 3, 2), 2000.0, 1e-9);
  const std::vector<float> uniform(256, -3.5f);
  EXPECT_NEAR(NegativeLogLikelihood(uniform.data(), 256, 17), std::log(256.0), 1e-12);
  const float nan[2] = {0.0f, std::nanf("")};
  ExpectInvalid([&] { NegativeLogLikelihood(nan, 2, 0); }, "not finite");
  ExpectInvalid([&] { NegativeLogLikelihood(extreme, 3, 3); }, "outside the vocabulary");
}

TEST(EvalMeasure, EqualsTheMeanCostOfOneSessionOverTheText) {
  const auto model = MagMal();
  const std::string text = Text();
  const auto length = static_cast<int64_t>(text.size());
  ASSERT_GT(length, 4 * 4 * kWindow);  // four buckets
  // The same pieces as the direct computation: the same logits, so equal up to the sums.
  const Measurement whole = Measure(model, text, kWindow, {.piece = 4096, .threads = 1});
  ASSERT_EQ(whole.buckets.size(), 4u);
  ExpectEqualTo(whole, DirectCosts(model, text, 4096), 1e-12);
  // Other pieces: the logits differ in their last bits only (SEMANTICS.md 4, invariant 2).
  const Measurement pieces = Measure(model, text, kWindow, {.piece = 7, .threads = 1});
  ExpectEqualTo(pieces, DirectCosts(model, text, 4096), 1e-5);
  ExpectEqualTo(pieces, DirectCosts(model, text, 7), 1e-12);
  // Progress after every piece, up to all predictions.
  std::vector<int64_t> done;
  Measure(model, text, kWindow, {.piece = 300, .threads = 1}, [&](int64_t d, int64_t total) {
    EXPECT_EQ(total, length - 1);
    done.push_back(d);
  });
  EXPECT_EQ(done, (std::vector<int64_t>{300, 600, length - 1}));
  // Sanity: a random model is no better than chance (8 bits) by much, nor far worse.
  EXPECT_GT(whole.overall.bits_per_byte(), 6.0);
  EXPECT_LT(whole.overall.bits_per_byte(), 11.0);
}

TEST(EvalVariants, WritesOffIsTheModelWithoutMemoryWrites) {
  const auto model = MagMal();
  const std::string text = Text();
  const Evaluation e = Evaluate(model, text, {.threads = 1});
  EXPECT_EQ(e.bytes, static_cast<int64_t>(text.size()));
  EXPECT_EQ(e.window.size, kWindow);
  ASSERT_EQ(e.variants.size(), 2u);
  EXPECT_EQ(e.variants[0].name, "writes_on");
  EXPECT_EQ(e.variants[1].name, "writes_off");
  EXPECT_EQ(e.variants[1].label, "writes off");
  ExpectSame(e.variants[0].result, Measure(model, text, kWindow, {.threads = 1}));
  const auto off = niah::WithoutMemoryWrites(*model);
  ExpectSame(e.variants[1].result, Measure(off, text, kWindow, {.threads = 1}));
  ExpectEqualTo(e.variants[1].result, DirectCosts(off, text, 4096), 1e-12);
  // The memory matters: its writes change the figures beyond the first unit.
  EXPECT_NE(e.variants[0].result.overall.nats, e.variants[1].result.overall.nats);

  // --window: other buckets, the same overall figure.
  const Evaluation w = Evaluate(model, text, {.window = 100, .threads = 1});
  EXPECT_EQ(w.window.size, 100);
  EXPECT_EQ(w.window.source, "--window");
  ASSERT_EQ(w.variants[0].result.buckets.size(), 3u);  // [0,100) [100,400) [400,end)
  EXPECT_EQ(w.variants[0].result.overall.nats, e.variants[0].result.overall.nats);
}

TEST(EvalVariants, WritesOffKeepsTheInitialWeightsExactly) {
  // MemoryWeights::Random forgets about 0.001 per token: with max_lr = 0 alone the weights would
  // fade from W0 (W = (1 - alpha) W); WithoutMemoryWrites also turns the forgetting off.
  testing::ScratchDir dir("titans_eval_");
  const auto model = RandomModel(Config({BlockKind::kLmm}));
  const std::vector<float>& w0 = model->weights().layers[0].memory.memory.mlp[0];
  const auto saved_w_cur = [&](std::shared_ptr<const Model> m) {
    Session s(std::move(m), {.threads = 1});
    const std::string text = Text();
    std::vector<int32_t> tokens(text.begin(), text.end());
    for (auto& t : tokens) t = static_cast<uint8_t>(t);
    std::vector<float> logits(tokens.size() * 256);
    s.Forward(tokens, logits);
    s.Save(dir.Path("s.safetensors"));
    const auto file = io::SafetensorsFile::Open(dir.Path("s.safetensors"));
    const io::TensorRecord* t = file.Find("layers.0.memory.w_cur.0");
    EXPECT_NE(t, nullptr);
    std::vector<float> w(w0.size());
    std::memcpy(w.data(), t->bytes.data(), w.size() * sizeof(float));
    return w;
  };
  EXPECT_EQ(saved_w_cur(niah::WithoutMemoryWrites(*model)), w0);
  ModelConfig theta_zero = model->config();
  theta_zero.memory.max_lr = 0.0f;
  EXPECT_NE(saved_w_cur(std::make_shared<const Model>(theta_zero, model->weights())), w0);
}

TEST(EvalVariants, ResetEveryIsTheStreamWithResetMemoryEveryNTokens) {
  const auto model = RandomModel(Config({BlockKind::kMag, BlockKind::kMac, BlockKind::kLmm}));
  const std::string text = Text();
  const Evaluation e = Evaluate(model, text, {.reset_every = 32, .threads = 1});
  ASSERT_EQ(e.variants.size(), 3u);
  const Variant& reset = e.variants[2];
  EXPECT_EQ(reset.name, "reset");
  EXPECT_EQ(reset.label, "reset every 32");
  EXPECT_EQ(reset.reset_every, 32);
  EXPECT_EQ(e.window.size, kUnit);  // the MAC segment
  ExpectEqualTo(reset.result, DirectCosts(model, text, 4096, 32), 1e-12);
  EXPECT_NE(reset.result.overall.nats, e.variants[0].result.overall.nats);
  // Up to the first reset (after 32 tokens) both are the same computation: same pieces.
  EXPECT_EQ(reset.result.buckets[0].nats, e.variants[0].result.buckets[0].nats);  // [0, 8)
  EXPECT_EQ(reset.result.buckets[1].nats, e.variants[0].result.buckets[1].nats);  // [8, 32)
  ExpectEqualTo(e.variants[0].result, DirectCosts(model, text, 32), 1e-12);

  // Reset after every unit of the paper's memory (it reads its chunk's start) is writes off:
  // in the same pieces, bit for bit.
  const Evaluation unit = Evaluate(model, text, {.reset_every = kUnit, .threads = 1});
  ExpectSame(unit.variants[2].result, unit.variants[1].result);
}

TEST(EvalErrors, BadInputIsRefusedBeforeAnythingRuns) {
  const auto model = MagMal();
  const std::string text = Text();
  ExpectInvalid([&] { Evaluate(RandomModel(Config({BlockKind::kMag}, 100)), text, {}); },
                "vocab_size 256");
  ExpectInvalid([&] { Evaluate(RandomModel(Config({BlockKind::kMag}, 0)), text, {}); },
                "input embeddings");
  ExpectInvalid([&] { Evaluate(model, "", {}); }, "at least 2");
  ExpectInvalid([&] { Evaluate(model, "a", {}); }, "has 1 byte;");
  ExpectInvalid([&] { Evaluate(model, text, {.piece = 0}); }, "piece");
  ExpectInvalid([&] { Evaluate(model, text, {.window = -1}); }, "window");
  ExpectInvalid([&] { Evaluate(model, text, {.reset_every = 12}); },
                "multiple of the memory's unit (8");
  ExpectInvalid([&] { Evaluate(model, text, {.reset_every = -8}); }, "N >= 1");
  const auto attention = RandomModel(Config({BlockKind::kAttention}));
  ExpectInvalid([&] { Evaluate(attention, text, {.reset_every = 8}); }, "no memory");
  ModelConfig full = Config({BlockKind::kAttention});
  full.attention.window = 0;
  ExpectInvalid([&] { Evaluate(RandomModel(full), text, {}); }, "--window");
  ExpectInvalid([&] { Measure(model, text, 0); }, "window");
  // A model without memory has one variant; with --window a full-attention one runs too.
  EXPECT_EQ(Evaluate(attention, text, {}).variants.size(), 1u);
  EXPECT_EQ(Evaluate(RandomModel(full), text, {.window = 64}).variants.size(), 1u);
}

TEST(EvalErrors, TitansPytorchMacResetsOnlyAtTheEndOfAMemoryUnit) {
  ModelConfig c;
  c.architecture = Architecture::kTitansPytorchMac;
  c.vocab_size = 256;
  c.d_model = 16;
  c.ffn_hidden = 24;
  c.tie_embeddings = false;
  c.layers = {BlockKind::kMac, BlockKind::kAttention};
  c.segment = 6;
  c.tp_mac.longterm_tokens = 2;
  c.tp_mac.memory_segment = 2;
  c.tp_mac.streams = 2;
  c.attention.heads = 2;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 8;
  c.attention.window = 8;
  c.memory = MemoryConfig::TitansPytorch(16, 2, 8, 2, 4);
  const auto model = RandomModel(c);
  const std::string text = Text().substr(0, 200);
  EXPECT_EQ(DefaultWindow(c).size, 8);
  ExpectInvalid([&] { CheckResetEvery(*model, 4); }, "multiple of the MAC segment (6)");
  EXPECT_NO_THROW(CheckResetEvery(*model, 6));  // rows 6, 14, 22, ...: units of 2
  const Evaluation e = Evaluate(model, text, {.reset_every = 12, .threads = 1});
  ExpectEqualTo(e.variants[2].result, DirectCosts(model, text, 4096, 12), 1e-12);
  // Three long-term tokens per segment of 6 with a step of 2: after 6 tokens row 6, after 12
  // row 15, not a unit's end.
  c.tp_mac.longterm_tokens = 3;
  c.attention.window = 9;
  ExpectInvalid([&] { CheckResetEvery(*RandomModel(c), 6); }, "row 15");
}

}  // namespace
}  // namespace titans::eval
