// Session::SaveToBytes / LoadFromBytes: the bytes are those Save writes to a file, and load with
// Load's checks (the C API's titans_session_state_get / _set run on them; tests/c_api_test.c).
#include <gtest/gtest.h>

#include <cstddef>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "scratch_dir.hpp"
#include "titans/error.hpp"
#include "titans/session.hpp"

namespace titans {
namespace {

ModelConfig SmallConfig(std::vector<BlockKind> layers) {
  ModelConfig c;
  c.vocab_size = 48;
  c.d_model = 32;
  c.ffn_hidden = 48;
  c.layers = std::move(layers);
  c.attention.heads = 4;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 8;
  c.attention.window = 7;
  c.memory = MemoryConfig::Paper(32, 2, 8, 2, 8);
  c.memory.output_proj = false;
  c.segment = c.memory.unit();
  return c;
}

std::shared_ptr<const Model> MakeModel(std::vector<BlockKind> layers) {
  const ModelConfig c = SmallConfig(std::move(layers));
  return std::make_shared<const Model>(c, ModelWeights::Random(c, 5));
}

std::vector<std::byte> FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  for (size_t i = 0; i < chars.size(); ++i) bytes[i] = static_cast<std::byte>(chars[i]);
  return bytes;
}

TEST(SessionBytes, AreTheFileBytesAndContinueTheStream) {
  testing::ScratchDir scratch("titans_session_bytes_");
  const auto model = MakeModel({BlockKind::kMag, BlockKind::kMac, BlockKind::kAttention});
  SessionOptions options;
  options.threads = 1;
  Session session(model, options), straight(model, options);
  std::vector<int32_t> first(21), second(9);
  for (size_t i = 0; i < first.size(); ++i) first[i] = static_cast<int32_t>((i * 7) % 48);
  for (size_t i = 0; i < second.size(); ++i) second[i] = static_cast<int32_t>((i * 5 + 3) % 48);
  std::vector<float> logits(first.size() * 48), expected(second.size() * 48),
      got(second.size() * 48);
  session.Forward(first, logits);
  straight.Forward(first, logits);
  straight.Forward(second, expected);

  const std::vector<std::byte> bytes = session.SaveToBytes();
  session.Save(scratch.Path("state.safetensors"));
  EXPECT_EQ(bytes, FileBytes(scratch.Path("state.safetensors")));

  Session loaded(model, options);
  loaded.LoadFromBytes(bytes);
  EXPECT_EQ(loaded.position(), session.position());
  loaded.Forward(second, got);
  EXPECT_EQ(got, expected);
}

TEST(SessionBytes, RefusedBytesChangeNothing) {
  const auto model = MakeModel({BlockKind::kMag});
  const auto other = MakeModel({BlockKind::kLmm});
  Session session(model), stranger(other);
  const std::vector<int32_t> tokens{1, 2, 3};
  std::vector<float> logits(3 * 48);
  session.Forward(tokens, logits);
  stranger.Forward(tokens, logits);
  const std::vector<std::byte> bytes = session.SaveToBytes();

  auto code_of = [&](std::span<const std::byte> b) {
    try {
      session.LoadFromBytes(b);
    } catch (const Error& e) {
      return static_cast<int>(e.code());
    }
    return -1;
  };
  EXPECT_EQ(code_of(stranger.SaveToBytes()), static_cast<int>(ErrorCode::kMismatch));
  EXPECT_EQ(code_of({}), static_cast<int>(ErrorCode::kFormat));
  for (size_t cut : {size_t{7}, size_t{8}, bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_EQ(code_of(std::span<const std::byte>(bytes).first(cut)),
              static_cast<int>(ErrorCode::kFormat))
        << "cut at " << cut;
  }
  EXPECT_EQ(session.position(), 3);
  EXPECT_EQ(session.SaveToBytes(), bytes);
}

}  // namespace
}  // namespace titans
