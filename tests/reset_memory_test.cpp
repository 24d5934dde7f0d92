// Session::ResetMemory: the memories forget what they wrote (fast weights back to W0, momentum
// zero, as in a new session) while the stream goes on (position, attention caches and the
// memories' convolution tails kept); it is refused, changing nothing, in the middle of a unit.
// What that buys: a memory-only stream reset after A continues exactly as a new stream, and a
// chunk-reading memory reset after every unit is exactly the model with its writes off.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "scratch_dir.hpp"
#include "titans/error.hpp"
#include "titans/evals/niah.hpp"
#include "titans/session.hpp"

namespace titans {
namespace {

constexpr int kVocab = 64;
constexpr int kUnit = 8;

ModelConfig Config(std::vector<BlockKind> layers, int conv_kernel = 4) {
  ModelConfig c;
  c.vocab_size = kVocab;
  c.d_model = 32;
  c.ffn_hidden = 48;
  c.tie_embeddings = false;
  c.layers = std::move(layers);
  c.attention.heads = 2;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 16;
  c.attention.window = 12;
  c.attention.persistent = 1;
  c.memory = MemoryConfig::Paper(32, 2, 16, 2, kUnit);
  c.memory.output_proj = false;
  c.memory.conv_kernel = conv_kernel;
  c.segment = c.memory.unit();
  return c;
}

std::shared_ptr<const Model> RandomModel(const ModelConfig& c, uint64_t seed = 5) {
  return std::make_shared<const Model>(c, ModelWeights::Random(c, seed));
}

const std::vector<BlockKind> kMixed = {BlockKind::kLmm, BlockKind::kMal, BlockKind::kMag,
                                       BlockKind::kAttention, BlockKind::kMac};

std::vector<int32_t> Tokens(size_t n, uint32_t seed, int vocab = kVocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

std::vector<float> Feed(Session& s, std::span<const int32_t> tokens) {
  std::vector<float> logits(tokens.size() * static_cast<size_t>(s.model().config().vocab_size));
  s.Forward(tokens, logits);
  return logits;
}

std::vector<std::byte> Bytes(const io::SafetensorsFile& f, const std::string& name) {
  const io::TensorRecord* t = f.Find(name);
  EXPECT_NE(t, nullptr) << name;
  if (t == nullptr) return {};
  return {t->bytes.begin(), t->bytes.end()};
}

// The saved tensors that belong to what a memory has written (and stale pending rows): those
// ResetMemory sets as in a new session. Everything else of a session file it keeps.
bool IsWrittenContent(const std::string& name) {
  if (name.find(".memory.") == std::string::npos) return false;
  for (const char* part : {".w_cur.", ".w_base.", ".momentum.", ".g_cur", ".g_base", ".g_momentum",
                           ".pending_k", ".pending_v", ".pending_gates"}) {
    if (name.find(part) != std::string::npos) return true;
  }
  return false;
}

TEST(ResetMemory, ForgetsTheWritesAndKeepsTheStream) {
  testing::ScratchDir dir("titans_reset_memory_");
  for (bool ln : {false, true}) {  // the plain memory, and kLnResidual's gains
    ModelConfig c = Config(kMixed);
    if (ln) c.memory.output = MemoryOutput::kLnResidual;
    const auto model = RandomModel(c);
    Session fresh(model, {.threads = 1});
    fresh.Save(dir.Path("fresh.safetensors"));
    Session s(model, {.threads = 1});
    const std::vector<int32_t> a = Tokens(5 * kUnit, 1);
    Feed(s, a);
    s.Save(dir.Path("before.safetensors"));
    s.ResetMemory();
    EXPECT_EQ(s.position(), 5 * kUnit);
    s.Save(dir.Path("after.safetensors"));

    const auto f0 = io::SafetensorsFile::Open(dir.Path("fresh.safetensors"));
    const auto before = io::SafetensorsFile::Open(dir.Path("before.safetensors"));
    const auto after = io::SafetensorsFile::Open(dir.Path("after.safetensors"));
    int content = 0, kept = 0, tails = 0;
    for (const io::TensorRecord& t : after.tensors()) {
      if (IsWrittenContent(t.name)) {
        ++content;
        EXPECT_EQ(Bytes(after, t.name), Bytes(f0, t.name)) << t.name << " is not W0's";
        if (t.name.find(".w_cur.") != std::string::npos) {
          EXPECT_NE(Bytes(before, t.name), Bytes(f0, t.name)) << t.name << ": nothing was written";
        }
      } else {
        ++kept;
        tails += t.name.find(".conv_") != std::string::npos ? 1 : 0;
        EXPECT_EQ(Bytes(after, t.name), Bytes(before, t.name)) << t.name << " changed";
      }
    }
    EXPECT_GT(content, 0);
    EXPECT_GT(kept, 0);
    EXPECT_EQ(tails, 4 * 4);  // conv_q, conv_k, conv_v, conv_q_read of the 4 memory layers

    // The state is a consistent one: it saves, loads and goes on as the session itself does.
    Session loaded(model, {.threads = 1});
    loaded.Load(dir.Path("after.safetensors"));
    const std::vector<int32_t> b = Tokens(21, 2);
    EXPECT_EQ(Feed(loaded, b), Feed(s, b));
  }
}

TEST(ResetMemory, AMemoryOnlyStreamGoesOnAsANewOne) {
  // No attention and no convolution: after ResetMemory at a unit's end nothing is left of A.
  const auto model = RandomModel(Config({BlockKind::kLmm, BlockKind::kLmm}, /*conv_kernel=*/0));
  const std::vector<int32_t> a = Tokens(6 * kUnit, 3), b = Tokens(45, 4);
  Session s(model, {.threads = 1});
  Feed(s, a);
  s.ResetMemory();
  Session fresh(model, {.threads = 1});
  EXPECT_EQ(Feed(s, b), Feed(fresh, b));

  // Without the reset the memory remembers A.
  Session carried(model, {.threads = 1});
  Feed(carried, a);
  Session fresh2(model, {.threads = 1});
  EXPECT_NE(Feed(carried, b), Feed(fresh2, b));
}

TEST(ResetMemory, EveryUnitIsTheModelWithItsWritesOff) {
  // The paper's memory reads the weights of its chunk's start. Reset after every unit (chunk),
  // every read sees W0, as with the writes off; the convolution tails and the attention caches
  // go on in both. So the two streams are the same, bit for bit (fed in the same pieces): what a
  // reset removes is what the memory wrote, nothing else.
  const auto model = RandomModel(Config(kMixed));
  const std::vector<int32_t> tokens = Tokens(11 * kUnit + 5, 6);
  const auto run = [&](std::shared_ptr<const Model> m, bool reset) {
    Session s(std::move(m), {.threads = 1});
    std::vector<float> logits;
    for (size_t at = 0; at < tokens.size(); at += kUnit) {
      const size_t n = std::min<size_t>(kUnit, tokens.size() - at);
      const std::vector<float> piece = Feed(s, std::span(tokens).subspan(at, n));
      logits.insert(logits.end(), piece.begin(), piece.end());
      if (reset && n == kUnit) s.ResetMemory();
    }
    return logits;
  };
  const std::vector<float> reset = run(model, true);
  EXPECT_EQ(reset, run(niah::WithoutMemoryWrites(*model), false));
  EXPECT_NE(reset, run(model, false));
}

TEST(ResetMemory, IsRefusedInTheMiddleOfAUnitAndChangesNothing) {
  const auto model = RandomModel(Config(kMixed));
  Session s(model, {.threads = 1});
  Feed(s, Tokens(2 * kUnit + 3, 7));
  Session copy = s.Clone();
  try {
    s.ResetMemory();
    ADD_FAILURE() << "ResetMemory accepted 3 tokens into a unit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("unfinished unit of 8"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.position(), copy.position());
  const std::vector<int32_t> b = Tokens(30, 8);
  EXPECT_EQ(Feed(s, b), Feed(copy, b));

  // A model without memory has nothing to forget, at any position.
  Session attention(RandomModel(Config({BlockKind::kAttention})), {.threads = 1});
  Feed(attention, Tokens(3, 9));
  EXPECT_NO_THROW(attention.ResetMemory());
}

TEST(ResetMemory, TitansPytorchMacAtTheEndOfAMemoryUnit) {
  // The memory also sees the M long-term memory tokens after every segment: after p tokens it is
  // at row p + M floor((p - 1) / segment). Segment 6, M 3, step 3: row 6 after 6 tokens (a
  // unit's end), row 10 after 7 tokens (not).
  ModelConfig c;
  c.architecture = Architecture::kTitansPytorchMac;
  c.vocab_size = kVocab;
  c.d_model = 16;
  c.ffn_hidden = 24;
  c.tie_embeddings = false;
  c.layers = {BlockKind::kMac, BlockKind::kAttention};
  c.segment = 6;
  c.tp_mac.longterm_tokens = 3;
  c.tp_mac.memory_segment = 3;
  c.tp_mac.streams = 2;
  c.attention.heads = 2;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 8;
  c.attention.window = 9;
  c.memory = MemoryConfig::TitansPytorch(16, 2, 8, 3, 6);
  const auto model = RandomModel(c);
  Session s(model, {.threads = 1});
  Feed(s, Tokens(7, 10));
  EXPECT_THROW(s.ResetMemory(), Error);
  Session t(model, {.threads = 1});
  Feed(t, Tokens(6, 10));
  EXPECT_NO_THROW(t.ResetMemory());
  const std::vector<int32_t> b = Tokens(20, 11);
  Session carried(model, {.threads = 1});
  Feed(carried, Tokens(6, 10));
  EXPECT_NE(Feed(t, b), Feed(carried, b));
}

}  // namespace
}  // namespace titans
