// Model weights and model files: the tensor table (names, shapes, when present), Random /
// Zeros / Validate, Model construction, Save / Load round trips that are bit-exact for every
// block kind, and every kind of bad model file rejected with a titans::Error naming the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "titans/model.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) /
          ("titans_model_file_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteAll(const std::string& path, const std::string& bytes, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(size));
}

// The memory of every memory layer: the paper preset without its own output projection (the
// branch projects H*dh -> d itself), committing every 4 tokens.
MemoryConfig BranchMemory(int d, int heads, int head_dim) {
  MemoryConfig m = MemoryConfig::Paper(d, heads, head_dim, /*depth=*/2, /*chunk=*/4);
  m.output_proj = false;
  return m;
}

ModelConfig Small(std::vector<BlockKind> layers, int vocab, bool tie, int persistent) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = 32;
  c.ffn_hidden = 48;
  c.tie_embeddings = tie;
  c.layers = std::move(layers);
  c.attention = AttentionOptions{.heads = 4,
                                 .kv_heads = 2,
                                 .head_dim = 8,
                                 .window = 16,
                                 .persistent = persistent,
                                 .rope_base = 10000.0f};
  c.memory = BranchMemory(32, 2, 8);
  c.segment = 4;  // the memory's unit (chunk 4)
  c.Validate();
  return c;
}

using enum BlockKind;

// Every block kind, persistent pairs, an untied LM head.
ModelConfig AllKinds() { return Small({kMac, kMag, kMal, kLmm, kAttention}, 64, false, 3); }

// The configs of the round trip: all five kinds, raw embeddings (no vocabulary), a tied head,
// titans-pytorch-style memory (read = step, LayerNorm-residual gain, output gate), attention
// only (the memory config is not used), d = 16 with 4 memory heads of width 4 (H*dh = d).
std::vector<ModelConfig> RoundTripConfigs() {
  std::vector<ModelConfig> configs{AllKinds()};
  configs.push_back(Small({kLmm, kAttention, kMal}, 0, false, 0));
  ModelConfig pytorch = Small({kAttention, kMag, kMac}, 64, true, 3);
  pytorch.memory = MemoryConfig::TitansPytorch(32, 2, 8, /*chunk_size=*/2, /*batch_size=*/4);
  pytorch.memory.output_proj = false;
  pytorch.segment = pytorch.memory.unit();  // a step of 2 tokens
  pytorch.Validate();
  configs.push_back(pytorch);
  ModelConfig attention_only = Small({kAttention, kAttention}, 64, true, 0);
  attention_only.memory = MemoryConfig{};  // d_model 256: irrelevant without memory layers
  attention_only.Validate();
  configs.push_back(attention_only);
  ModelConfig narrow = Small({kMag, kLmm}, 64, false, 3);
  narrow.d_model = 16;
  narrow.ffn_hidden = 24;
  narrow.memory = BranchMemory(16, 4, 4);
  narrow.Validate();
  configs.push_back(narrow);
  return configs;
}

template <class View>
std::map<std::string, std::vector<int64_t>> Shapes(const std::vector<View>& views) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const View& v : views) shapes[v.name] = v.shape;
  return shapes;
}

bool BitEqual(const ConstTensorView& a, const ConstTensorView& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data, b.data, static_cast<size_t>(a.size()) * sizeof(float)) == 0;
}

void ExpectSameWeights(const ModelConfig& config, const ModelWeights& a, const ModelWeights& b) {
  const auto va = a.Tensors(config), vb = b.Tensors(config);
  ASSERT_EQ(va.size(), vb.size());
  for (size_t i = 0; i < va.size(); ++i) {
    EXPECT_EQ(va[i].name, vb[i].name);
    EXPECT_EQ(va[i].shape, vb[i].shape) << va[i].name;
    EXPECT_TRUE(BitEqual(va[i], vb[i])) << va[i].name;
  }
}

TEST(ModelWeights, TableNamesShapesAndPresence) {
  const ModelConfig c = AllKinds();  // mac, mag, mal, lmm, attention
  const ModelWeights w = ModelWeights::Zeros(c);
  const auto views = w.Tensors(c);
  const auto shapes = Shapes(views);
  ASSERT_EQ(shapes.size(), views.size()) << "duplicate tensor names";
  for (const ConstTensorView& v : views) {
    EXPECT_NE(v.data, nullptr) << v.name;
    EXPECT_TRUE(std::all_of(v.data, v.data + v.size(), [](float x) { return x == 0.0f; }));
  }
  using S = std::vector<int64_t>;
  const std::map<std::string, S> expected{
      {"embedding", S{64, 32}},
      {"layers.0.norm", S{32}},
      {"layers.0.attention.w_q", S{32, 32}},
      {"layers.0.attention.w_k", S{32, 16}},
      {"layers.0.attention.w_v", S{32, 16}},
      {"layers.0.attention.w_o", S{32, 32}},
      {"layers.0.attention.persistent_k", S{3, 16}},
      {"layers.0.attention.persistent_v", S{3, 16}},
      {"layers.0.memory.w_q", S{32, 16}},
      {"layers.0.memory.mlp.0", S{2, 8, 32}},
      {"layers.0.memory.mlp.1", S{2, 32, 8}},
      {"layers.0.memory_branch.norm", S{2, 8}},
      {"layers.0.memory_branch.w_g", S{32, 16}},
      {"layers.0.memory_branch.w_o", S{16, 32}},
      {"layers.0.ffn_norm", S{32}},
      {"layers.0.ffn_gate", S{32, 48}},
      {"layers.0.ffn_up", S{32, 48}},
      {"layers.0.ffn_down", S{48, 32}},
      {"layers.1.gate_norm_y", S{32}},
      {"layers.1.gate_norm_m", S{32}},
      {"layers.2.attn_norm", S{32}},
      {"layers.3.memory.w_q", S{32, 16}},
      {"layers.4.attention.w_q", S{32, 32}},
      {"final_norm", S{32}},
      {"lm_head", S{32, 64}},
  };
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(shapes.count(name)) << name;
    EXPECT_EQ(shapes.at(name), shape) << name;
  }
  for (const char* absent :
       {"layers.0.attn_norm", "layers.0.gate_norm_y", "layers.2.gate_norm_m", "layers.1.attn_norm",
        "layers.3.attention.w_q", "layers.3.attention.persistent_k", "layers.4.memory.w_q",
        "layers.4.memory_branch.norm", "layers.0.memory.w_out"}) {
    EXPECT_FALSE(shapes.count(absent)) << absent;
  }
  EXPECT_EQ(views.front().name, "embedding");
  EXPECT_EQ(views.back().name, "lm_head");

  // Each memory layer holds exactly the memory's own table, prefixed and in its order.
  std::vector<std::string> memory_names;
  for (const ConstTensorView& v : views) {
    if (v.name.starts_with("layers.3.memory.")) memory_names.push_back(v.name.substr(16));
  }
  std::vector<std::string> table;
  for (const ConstTensorView& v : w.layers[3].memory.memory.Tensors(c.memory)) {
    table.push_back(v.name);
  }
  EXPECT_EQ(memory_names, table);

  // The number of tensors per layer kind: norm + 6 attention + 4 FFN; kMal +1, kMag +2; a
  // memory branch is the memory's table plus 3.
  const size_t memory_tensors = table.size() + 3;
  EXPECT_EQ(views.size(), 1 + (11 + memory_tensors) + (13 + memory_tensors) +
                              (12 + memory_tensors) + (5 + memory_tensors) + 11 + 2);

  // Persistent pairs off: no persistent tensors. Tied: no lm_head. No vocabulary: no embedding.
  const ModelConfig tied = Small({kAttention}, 64, true, 0);
  const auto tied_shapes = Shapes(ModelWeights::Zeros(tied).Tensors(tied));
  EXPECT_FALSE(tied_shapes.count("lm_head"));
  EXPECT_FALSE(tied_shapes.count("layers.0.attention.persistent_k"));
  EXPECT_TRUE(tied_shapes.count("embedding"));
  const ModelConfig raw = Small({kLmm}, 0, false, 0);
  const auto raw_shapes = Shapes(ModelWeights::Zeros(raw).Tensors(raw));
  EXPECT_FALSE(raw_shapes.count("embedding"));
  EXPECT_FALSE(raw_shapes.count("lm_head"));
  EXPECT_TRUE(raw_shapes.count("final_norm"));
}

double Mean(const ConstTensorView& v) {
  return std::accumulate(v.data, v.data + v.size(), 0.0) / static_cast<double>(v.size());
}
double Std(const ConstTensorView& v) {
  const double m = Mean(v);
  double s = 0;
  for (int64_t i = 0; i < v.size(); ++i) s += (v.data[i] - m) * (v.data[i] - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

TEST(ModelWeights, RandomIsSeededAndScaled) {
  const ModelConfig c = AllKinds();
  const ModelWeights a = ModelWeights::Random(c, 7), b = ModelWeights::Random(c, 7);
  ExpectSameWeights(c, a, b);
  const ModelWeights other = ModelWeights::Random(c, 8);
  const auto va = a.Tensors(c), vo = other.Tensors(c);
  for (size_t i = 0; i < va.size(); ++i) EXPECT_FALSE(BitEqual(va[i], vo[i])) << va[i].name;

  std::map<std::string, ConstTensorView> by_name;
  for (const ConstTensorView& v : va) by_name.emplace(v.name, v);
  // Each memory layer has its own seed.
  EXPECT_FALSE(BitEqual(by_name.at("layers.0.memory.w_q"), by_name.at("layers.1.memory.w_q")));
  EXPECT_FALSE(BitEqual(by_name.at("layers.0.ffn_up"), by_name.at("layers.1.ffn_up")));
  // Scales: gains ~ 1 + 0.1 N, unit-normal embedding and persistent pairs, projections
  // N(0, 1/fan_in).
  EXPECT_NEAR(Mean(by_name.at("layers.0.ffn_norm")), 1.0, 0.1);
  EXPECT_NEAR(Std(by_name.at("layers.0.ffn_norm")), 0.1, 0.05);
  EXPECT_NEAR(Std(by_name.at("layers.1.gate_norm_m")), 0.1, 0.05);
  EXPECT_NEAR(Mean(by_name.at("layers.0.memory_branch.norm")), 1.0, 0.1);
  EXPECT_NEAR(Std(by_name.at("embedding")), 1.0, 0.1);
  EXPECT_NEAR(Std(by_name.at("layers.0.attention.persistent_v")), 1.0, 0.4);
  EXPECT_NEAR(Std(by_name.at("layers.2.ffn_down")), 1.0 / std::sqrt(48.0), 0.02);
  EXPECT_NEAR(Std(by_name.at("layers.2.attention.w_o")), 1.0 / std::sqrt(32.0), 0.03);
  EXPECT_NEAR(Std(by_name.at("lm_head")), 1.0 / std::sqrt(32.0), 0.02);
  // The memory layers are the memory's own Random weights (gates, gains and all).
  EXPECT_NO_THROW(NeuralMemory(c.memory, a.layers[0].memory.memory));
  EXPECT_NO_THROW(Model(c, a));
}

void ExpectError(auto&& call, ErrorCode code, const std::vector<std::string>& needles) {
  try {
    call();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "'" << needle << "' not in: " << e.what();
    }
  }
}

TEST(ModelWeights, ValidateNamesTheTensor) {
  const ModelConfig c = AllKinds();
  const ModelWeights good = ModelWeights::Random(c, 3);
  EXPECT_NO_THROW(good.Validate(c));

  ModelWeights w = good;
  w.layers[1].ffn_up.pop_back();
  ExpectError([&] { w.Validate(c); }, ErrorCode::kMismatch, {"layers.1.ffn_up", "1535", "1536"});
  ExpectError([&] { Model(c, w); }, ErrorCode::kMismatch, {"layers.1.ffn_up"});

  w = good;
  w.layers[0].attention.w_o[5] = std::numeric_limits<float>::infinity();
  ExpectError([&] { w.Validate(c); }, ErrorCode::kInvalidArgument,
              {"layers.0.attention.w_o", "not finite"});

  w = good;
  w.layers[3].memory.memory.w_k.resize(3);
  ExpectError([&] { w.Validate(c); }, ErrorCode::kMismatch, {"layers.3.memory.", "w_k"});
  w = good;
  w.layers[2].memory.memory.mlp[1][0] = std::numeric_limits<float>::quiet_NaN();
  ExpectError([&] { w.Validate(c); }, ErrorCode::kInvalidArgument,
              {"layers.2.memory.", "mlp.1", "not finite"});

  w = good;
  w.layers.pop_back();
  ExpectError([&] { w.Validate(c); }, ErrorCode::kMismatch, {"4 layers", "5"});

  // Tensors the config does not use are ignored (only the table's tensors are checked, read
  // or written), whatever they hold.
  w = good;
  w.layers[3].attention.w_q.assign(7, 1.0f);
  EXPECT_NO_THROW(w.Validate(c));

  ModelConfig bad = c;
  bad.segment = 8;  // not the memory's unit (chunk 4)
  ExpectError([&] { ModelWeights::Zeros(bad); }, ErrorCode::kConfig, {"segment"});
  ExpectError([&] { Model(bad, good); }, ErrorCode::kConfig, {"segment"});
}

TEST(Model, OneNeuralMemoryPerMemoryLayer) {
  const ModelConfig c = AllKinds();
  const ModelWeights w = ModelWeights::Random(c, 11);
  const Model model(c, w);
  EXPECT_EQ(model.config(), c);
  ExpectSameWeights(c, model.weights(), w);
  for (int l = 0; l < 5; ++l) {
    if (c.layers[static_cast<size_t>(l)] == kAttention) {
      EXPECT_EQ(model.memory(l), nullptr);
      continue;
    }
    ASSERT_NE(model.memory(l), nullptr) << l;
    EXPECT_EQ(model.memory(l)->config(), c.memory);
    EXPECT_EQ(model.memory(l)->weights().mlp, w.layers[static_cast<size_t>(l)].memory.memory.mlp);
  }
  EXPECT_NE(model.memory(0).get(), model.memory(1).get());
  ExpectError([&] { model.memory(5); }, ErrorCode::kInvalidArgument, {"layer 5"});
  ExpectError([&] { model.memory(-1); }, ErrorCode::kInvalidArgument, {"layer -1"});
}

TEST(ModelFile, RoundTripIsBitExactForEveryBlockKind) {
  for (const ModelConfig& config : RoundTripConfigs()) {
    SCOPED_TRACE(config.ToJson());
    const Model model(config, ModelWeights::Random(config, 21));
    const std::string path = TempPath("roundtrip.safetensors");
    model.Save(path);
    const auto loaded = Model::Load(path);
    EXPECT_EQ(loaded->config(), config);
    ExpectSameWeights(config, loaded->weights(), model.weights());
    for (int l = 0; l < static_cast<int>(config.layers.size()); ++l) {
      ASSERT_EQ(loaded->memory(l) == nullptr, model.memory(l) == nullptr);
      if (model.memory(l) == nullptr) continue;
      const MemoryConfig& mc = config.memory;
      const auto a = loaded->memory(l)->weights().Tensors(mc);
      const auto b = model.memory(l)->weights().Tensors(mc);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(BitEqual(a[i], b[i])) << a[i].name;
    }
    // Saving what was loaded gives the same bytes.
    const std::string again = TempPath("roundtrip_again.safetensors");
    loaded->Save(again);
    EXPECT_EQ(ReadAll(again), ReadAll(path));
    std::filesystem::remove(path);
    std::filesystem::remove(again);
  }
}

// A model file written by hand: the good model's metadata and tensors, then changed.
struct FileSpec {
  std::map<std::string, std::string> metadata;
  std::vector<io::TensorToWrite> tensors;

  io::TensorToWrite& Tensor(const std::string& name) {
    const auto it = std::find_if(tensors.begin(), tensors.end(),
                                 [&](const io::TensorToWrite& t) { return t.name == name; });
    if (it == tensors.end()) throw std::runtime_error("no tensor " + name);
    return *it;
  }
  void Erase(const std::string& name) {
    tensors.erase(std::find_if(tensors.begin(), tensors.end(),
                               [&](const io::TensorToWrite& t) { return t.name == name; }));
  }
  std::string Write(const std::string& name) const {
    const std::string path = TempPath(name);
    io::WriteSafetensors(path, metadata, tensors);
    return path;
  }
};

FileSpec SpecOf(const Model& model) {
  FileSpec spec;
  spec.metadata = {
      {"format", "titans.model"}, {"format_version", "1"}, {"config", model.config().ToJson()}};
  for (const ConstTensorView& v : model.weights().Tensors(model.config())) {
    spec.tensors.push_back({v.name, io::DType::kF32, v.shape, v.data});
  }
  return spec;
}

class BadModelFile : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const std::string& p : paths_) std::filesystem::remove(p);
  }
  // Loading `path` fails with `code`; the message names the file and every needle.
  void ExpectLoadError(const std::string& path, ErrorCode code, std::vector<std::string> needles) {
    paths_.push_back(path);
    needles.push_back(path);
    ExpectError([&] { Model::Load(path); }, code, needles);
  }

  const ModelConfig config_ = AllKinds();
  const Model model_{config_, ModelWeights::Random(config_, 5)};
  std::vector<std::string> paths_;
};

TEST_F(BadModelFile, GoodSpecLoadsInAnyTensorOrder) {
  FileSpec spec = SpecOf(model_);
  std::reverse(spec.tensors.begin(), spec.tensors.end());
  const std::string path = spec.Write("reversed.safetensors");
  paths_.push_back(path);
  ExpectSameWeights(config_, Model::Load(path)->weights(), model_.weights());
}

TEST_F(BadModelFile, WrongShape) {
  FileSpec spec = SpecOf(model_);
  const std::vector<float> zeros(32 * 16, 0.0f);
  spec.Tensor("layers.1.attention.w_q").shape = {32, 16};
  spec.Tensor("layers.1.attention.w_q").data = zeros.data();
  ExpectLoadError(spec.Write("shape.safetensors"), ErrorCode::kFormat,
                  {"\"layers.1.attention.w_q\"", "shape [32, 16]", "expected [32, 32]"});
  // Same element count, other shape: still the shape that is checked, not the size.
  spec = SpecOf(model_);
  spec.Tensor("layers.0.memory.mlp.0").shape = {2, 32, 8};
  ExpectLoadError(spec.Write("shape2.safetensors"), ErrorCode::kFormat,
                  {"\"layers.0.memory.mlp.0\"", "[2, 32, 8]", "expected [2, 8, 32]"});
}

TEST_F(BadModelFile, MissingTensor) {
  FileSpec spec = SpecOf(model_);
  spec.Erase("layers.0.ffn_up");
  ExpectLoadError(spec.Write("missing.safetensors"), ErrorCode::kFormat,
                  {"missing tensor \"layers.0.ffn_up\"", "F32 [32, 48]"});
  spec = SpecOf(model_);
  spec.Erase("lm_head");
  ExpectLoadError(spec.Write("missing_head.safetensors"), ErrorCode::kFormat,
                  {"missing tensor \"lm_head\""});
}

TEST_F(BadModelFile, ExtraTensor) {
  FileSpec spec = SpecOf(model_);
  const std::vector<float> two{1.0f, 2.0f};
  spec.tensors.push_back({"layers.0.bogus", io::DType::kF32, {2}, two.data()});
  ExpectLoadError(spec.Write("extra.safetensors"), ErrorCode::kFormat,
                  {"unexpected tensor \"layers.0.bogus\""});
  // An lm_head in a file whose config ties the embeddings is unexpected too.
  ModelConfig tied = config_;
  tied.tie_embeddings = true;
  spec = SpecOf(model_);
  spec.metadata["config"] = tied.ToJson();
  ExpectLoadError(spec.Write("tied_head.safetensors"), ErrorCode::kFormat,
                  {"unexpected tensor \"lm_head\""});
}

TEST_F(BadModelFile, BadConfigJson) {
  FileSpec spec = SpecOf(model_);
  spec.metadata["config"] = "{\"vocab_size\": 64, \"d_model\": ";
  ExpectLoadError(spec.Write("json.safetensors"), ErrorCode::kFormat,
                  {"bad config in the metadata", "model config JSON", "parse_error"});
  nlohmann::json j = nlohmann::json::parse(model_.config().ToJson());
  j.erase("segment");
  spec.metadata["config"] = j.dump();
  ExpectLoadError(spec.Write("json_key.safetensors"), ErrorCode::kFormat,
                  {"model config JSON", "segment"});
  j = nlohmann::json::parse(model_.config().ToJson());
  j["layers"][1] = "transformer";
  spec.metadata["config"] = j.dump();
  ExpectLoadError(spec.Write("json_kind.safetensors"), ErrorCode::kFormat,
                  {"unknown layer kind", "transformer"});
}

TEST_F(BadModelFile, ConfigThatFailsValidation) {
  FileSpec spec = SpecOf(model_);
  nlohmann::json j = nlohmann::json::parse(model_.config().ToJson());
  j["ffn_hidden"] = 0;
  spec.metadata["config"] = j.dump();
  ExpectLoadError(spec.Write("invalid.safetensors"), ErrorCode::kFormat,
                  {"bad config in the metadata", "ffn_hidden must be"});  // in [1, 2^24]
  j = nlohmann::json::parse(model_.config().ToJson());
  j["memory"]["d_model"] = 16;
  spec.metadata["config"] = j.dump();
  ExpectLoadError(spec.Write("invalid_memory.safetensors"), ErrorCode::kFormat,
                  {"memory.d_model must equal d_model"});
}

TEST_F(BadModelFile, WrongDtype) {
  FileSpec spec = SpecOf(model_);
  const std::vector<double> wide(32, 1.0);
  spec.Tensor("final_norm").dtype = io::DType::kF64;
  spec.Tensor("final_norm").data = wide.data();
  ExpectLoadError(spec.Write("dtype.safetensors"), ErrorCode::kFormat,
                  {"\"final_norm\"", "dtype F64", "expected F32 [32]"});
}

TEST_F(BadModelFile, TruncatedFile) {
  const std::string path = TempPath("whole.safetensors");
  paths_.push_back(path);
  model_.Save(path);
  const std::string bytes = ReadAll(path);
  const std::string cut = TempPath("cut.safetensors");
  WriteAll(cut, bytes, bytes.size() / 2);
  ExpectLoadError(cut, ErrorCode::kFormat, {"truncated"});
  const std::string one_byte_short = TempPath("short.safetensors");
  WriteAll(one_byte_short, bytes, bytes.size() - 1);
  ExpectLoadError(one_byte_short, ErrorCode::kFormat, {"lm_head"});
  const std::string stub = TempPath("stub.safetensors");
  WriteAll(stub, bytes, 5);
  ExpectLoadError(stub, ErrorCode::kFormat, {"too short"});
  ExpectLoadError(TempPath("does_not_exist.safetensors"), ErrorCode::kIo, {"cannot open"});
}

TEST_F(BadModelFile, NonFiniteValue) {
  for (const float bad :
       {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
        std::numeric_limits<float>::quiet_NaN()}) {
    FileSpec spec = SpecOf(model_);
    std::vector<float> values(model_.weights().layers[2].ffn_down);
    values[5] = bad;
    spec.Tensor("layers.2.ffn_down").data = values.data();
    ExpectLoadError(spec.Write("nonfinite.safetensors"), ErrorCode::kFormat,
                    {"\"layers.2.ffn_down\"", "non-finite", "flat index 5"});
  }
  // Inside a memory layer's own tensors too.
  FileSpec spec = SpecOf(model_);
  std::vector<float> mlp(model_.weights().layers[3].memory.memory.mlp[1]);
  mlp.back() = std::numeric_limits<float>::quiet_NaN();
  spec.Tensor("layers.3.memory.mlp.1").data = mlp.data();
  ExpectLoadError(spec.Write("nonfinite_memory.safetensors"), ErrorCode::kFormat,
                  {"\"layers.3.memory.mlp.1\"", "non-finite"});
}

TEST_F(BadModelFile, WrongFormatOrVersion) {
  FileSpec spec = SpecOf(model_);
  spec.metadata["format"] = "titans.memory";
  ExpectLoadError(spec.Write("format.safetensors"), ErrorCode::kFormat,
                  {"format is \"titans.memory\"", "expected \"titans.model\""});
  spec = SpecOf(model_);
  spec.metadata["format_version"] = "3";
  ExpectLoadError(spec.Write("version.safetensors"), ErrorCode::kFormat,
                  {"unsupported format_version \"3\""});
  spec = SpecOf(model_);
  spec.metadata.erase("format");
  ExpectLoadError(spec.Write("no_format.safetensors"), ErrorCode::kFormat,
                  {"not a titans model file", "\"format\""});
  spec = SpecOf(model_);
  spec.metadata.erase("config");
  ExpectLoadError(spec.Write("no_config.safetensors"), ErrorCode::kFormat,
                  {"not a titans model file", "\"config\""});

  // A memory weights file is not a model file.
  const std::string memory_file = TempPath("memory.safetensors");
  model_.memory(0)->Save(memory_file);
  ExpectLoadError(memory_file, ErrorCode::kFormat, {"expected \"titans.model\""});
}

}  // namespace
}  // namespace titans
