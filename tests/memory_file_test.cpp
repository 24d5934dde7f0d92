// NeuralMemory::Save / Load: a memory's config and learned weights in one safetensors file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) /
          ("titans_memory_file_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

std::vector<float> Outputs(const std::shared_ptr<const NeuralMemory>& memory, int tokens) {
  MemorySession session(memory, SessionOptions{1});
  std::vector<float> x(static_cast<size_t>(tokens) * memory->input_width());
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
  std::vector<float> y(static_cast<size_t>(tokens) * memory->output_width());
  session.Forward(x, y);
  return y;
}

MemoryConfig EveryOption() {
  MemoryConfig c = MemoryConfig::TitansPytorch(24, 3, 8, 4, 8);
  c.conv_kernel = 3;
  c.qk_norm = QkNorm::kRms;
  c.qkv_activation = Activation::kSilu;
  return c;
}

TEST(MemoryFile, RoundTripKeepsConfigWeightsAndOutputs) {
  for (const MemoryConfig& config : {MemoryConfig::Paper(16, 2, 8, 2, 4), EveryOption()}) {
    auto memory = std::make_shared<const NeuralMemory>(config, MemoryWeights::Random(config, 5));
    const std::string path = TempPath("roundtrip.safetensors");
    memory->Save(path);
    const auto loaded = NeuralMemory::Load(path);
    EXPECT_EQ(loaded->config(), config);
    const auto a = memory->weights().Tensors(config), b = loaded->weights().Tensors(config);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].name, b[i].name);
      EXPECT_EQ(std::vector<float>(a[i].data, a[i].data + a[i].size()),
                std::vector<float>(b[i].data, b[i].data + b[i].size()))
          << a[i].name;
    }
    EXPECT_EQ(Outputs(memory, 21), Outputs(loaded, 21));
    std::filesystem::remove(path);
  }
}

// titans-pytorch's options (MemoryConfig 1.7): their keys and tensors round-trip, and files
// that use them say format_version "2" (older builds refuse them instead of ignoring the keys);
// files without them keep "1" and the JSON of before, so they still load in older builds.
TEST(MemoryFile, TitansPytorchOptionsRoundTripWithFormatVersionTwo) {
  MemoryConfig with = MemoryConfig::TitansPytorch(24, 3, 8, 4, 8);
  with.post_norm = with.transition_gate = with.lr_modulation = with.spectral_norm = true;
  with.attention_pool = true;
  with.max_grad_norm = 0.5f;
  with.max_layer_modulation = 3.0f;
  with.qkv_activation = Activation::kGelu;
  const MemoryConfig without = MemoryConfig::TitansPytorch(24, 3, 8, 4, 8);
  EXPECT_EQ(MemoryConfig::FromJson(with.ToJson()), with);
  EXPECT_EQ(without.ToJson().find("post_norm"), std::string::npos);
  for (const MemoryConfig& config : {with, without}) {
    auto memory = std::make_shared<const NeuralMemory>(config, MemoryWeights::Random(config, 9));
    const std::string path = TempPath("options.safetensors");
    memory->Save(path);
    const std::string version = config.UsesTitansPytorchOptions() ? "2" : "1";
    EXPECT_EQ(io::SafetensorsFile::Open(path).metadata().at("format_version"), version);
    const auto loaded = NeuralMemory::Load(path);
    EXPECT_EQ(loaded->config(), config);
    EXPECT_EQ(Outputs(memory, 21), Outputs(loaded, 21));
    const std::string state = TempPath("options_state.safetensors");
    MemorySession session(memory, SessionOptions{1});
    std::vector<float> x(static_cast<size_t>(6) * config.d_model, 0.25f), y(6 * 24);
    session.Forward(x, y);  // mid-unit: pending rows (with the modulation logits) are saved
    session.Save(state);
    EXPECT_EQ(io::SafetensorsFile::Open(state).metadata().at("format_version"), version);
    MemorySession resumed(memory, SessionOptions{1});
    resumed.Load(state);
    EXPECT_EQ(resumed.state().pending_gates, session.state().pending_gates);
    EXPECT_EQ(resumed.state().pending_x, session.state().pending_x);
    EXPECT_EQ(resumed.state().pending_x.empty(), !config.attention_pool);
    std::filesystem::remove(path);
    std::filesystem::remove(state);
  }
  // A state saved with the options does not load into a memory without them, and says why.
  auto memory = std::make_shared<const NeuralMemory>(with, MemoryWeights::Random(with, 9));
  const std::string state = TempPath("options_mismatch.safetensors");
  MemorySession(memory).Save(state);
  MemorySession other(
      std::make_shared<const NeuralMemory>(without, MemoryWeights::Random(without, 9)));
  try {
    other.Load(state);
    ADD_FAILURE() << "loaded a state of another config";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMismatch);
    EXPECT_NE(std::string(e.what()).find("this memory has"), std::string::npos) << e.what();
  }
  std::filesystem::remove(state);
  // The write options need one step per unit.
  MemoryConfig chunked = MemoryConfig::Paper(16, 2, 8, 2, 4);
  chunked.spectral_norm = true;
  EXPECT_THROW(chunked.Validate(), Error);
}

TEST(MemoryFile, RejectsStateFilesMissingTensorsAndGarbage) {
  const MemoryConfig config = EveryOption();
  auto memory = std::make_shared<const NeuralMemory>(config, MemoryWeights::Random(config, 6));
  auto expect_error = [](const std::string& path, ErrorCode code, const std::string& needle) {
    try {
      NeuralMemory::Load(path);
      ADD_FAILURE() << "loaded " << path;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(TempPath("does_not_exist"), ErrorCode::kIo, "does_not_exist");

  // A session state file is not a weights file.
  const std::string state = TempPath("state.safetensors");
  MemorySession(memory).Save(state);
  expect_error(state, ErrorCode::kFormat, "titans.memory_state");

  // Truncated weights.
  const std::string path = TempPath("weights.safetensors");
  memory->Save(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string cut = TempPath("cut.safetensors");
  std::ofstream(cut, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  expect_error(cut, ErrorCode::kFormat, "cut.safetensors");

  // A NaN in a weight is named.
  const std::vector<float> nan_value{std::numeric_limits<float>::quiet_NaN()};
  MemoryWeights weights = memory->weights();
  weights.w_out[3] = nan_value[0];
  EXPECT_THROW(NeuralMemory(config, weights), Error);  // the constructor checks values too
  for (const std::string& p : {state, path, cut}) std::filesystem::remove(p);
}

}  // namespace
}  // namespace titans
