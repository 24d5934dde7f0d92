// Hostile JSON (issue 13, items 1, 2, 8): headers and configs nested 100K levels deep are
// refused before parsing (no stack overflow); every config field refuses values that are not
// exactly of its kind and in its documented range, naming the field; names from a file are
// printed without terminal escapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hostile_input.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "scratch_dir.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

using namespace hostile;
using testing::ScratchDir;

// ---------------------------------------------------------------------------------------------
// 1. Nesting: refused before parsing, no stack overflow.

TEST(HostileJson, DeeplyNestedSafetensorsHeaderIsRefused) {
  ScratchDir scratch("titans_hostile_");
  const std::string path = scratch.Path("deep.safetensors");
  for (const std::string& header : {"{\"__metadata__\":" + Nested(100000, '[', ']') + "}",
                                    "{\"a\":" + Nested(100000, '[', ']', "{}") + "}", [] {
                                      std::string s;
                                      for (int i = 0; i < 100000; ++i) s += "{\"a\":";
                                      s += "1";
                                      return s + std::string(100000, '}');
                                    }()}) {
    WriteAll(path, Build(header));
    ExpectError([&] { io::SafetensorsFile::Open(path); }, ErrorCode::kFormat,
                {path, "nested deeper than 64"});
  }
  // Brackets inside strings do not count; 64 levels are fine (and then not an object).
  WriteAll(path, Build("{\"__metadata__\":{\"x\":\"" + std::string(100000, '[') + "\"}}"));
  EXPECT_EQ(io::SafetensorsFile::Open(path).metadata().at("x").size(), 100000u);
  WriteAll(path, Build(Nested(64, '[', ']')));
  ExpectError([&] { io::SafetensorsFile::Open(path); }, ErrorCode::kFormat, {"not an object"});
}

TEST(HostileJson, DeeplyNestedConfigJsonIsRefused) {
  nlohmann::json j = nlohmann::json::parse(Small().ToJson());
  std::string text = j.dump();
  const std::string deep = Nested(100000, '[', ']');
  for (const char* key : {"\"memory\":", "\"layers\":", "\"attention\":"}) {
    std::string t = text;
    const size_t at = t.find(key) + std::strlen(key);
    t.insert(at, "{\"x\":" + deep + "},\"unused\":");
    SCOPED_TRACE(key);
    // The key now holds the nested object; JSON keeps the last duplicate, but the depth check
    // comes first.
    ExpectError([&] { ModelConfig::FromJson(t); }, ErrorCode::kFormat,
                {"model config JSON", "nested deeper than 64"});
  }
  ExpectError([&] { MemoryConfig::FromJson(deep); }, ErrorCode::kFormat,
              {"memory config JSON", "nested deeper than 64"});
  // The same through a model file's metadata (a string, so the header itself is flat).
  ScratchDir scratch("titans_hostile_");
  const std::string path = scratch.Path("deep_config.safetensors");
  const ModelConfig c = Small();
  const Model model(c, ModelWeights::Random(c, 1));
  model.Save(path);
  std::string config = c.ToJson();
  config.insert(config.find("\"memory\":") + 9, "{\"x\":" + deep + "},\"unused\":");
  std::vector<io::TensorToWrite> tensors;
  for (const ConstTensorView& v : model.weights().Tensors(c)) {
    tensors.push_back({v.name, io::DType::kF32, v.shape, v.data});
  }
  io::WriteSafetensors(
      path, {{"format", "titans.model"}, {"format_version", "1"}, {"config", config}}, tensors);
  ExpectError([&] { Model::Load(path); }, ErrorCode::kFormat, {path, "nested deeper than 64"});
}

// ---------------------------------------------------------------------------------------------
// 2. Config values: exact, in range, or refused naming the field.

TEST(HostileJson, IssueExamplesAreRefusedNamingTheField) {
  const ModelConfig c = Small();
  struct Case {
    std::string pointer, value, field;
  };
  for (const Case& k : std::vector<Case>{
           {"/d_model", "4294967328", "d_model"},
           {"/attention/window", "-2147483649", "attention.window"},
           {"/attention/window", "1e12", "attention.window"},
           {"/ffn_hidden", "1.5", "ffn_hidden"},
           {"/segment", "1e-50", "segment"},
           {"/memory/expansion", "1e30", "memory.expansion"},
           {"/memory/layer_norm_eps", "1e39", "memory.layer_norm_eps"},
           {"/norm_eps", "1e-50", "norm_eps"},
           {"/memory/chunk", "1e12", "memory.chunk"},
       }) {
    SCOPED_TRACE(k.pointer + " = " + k.value);
    ExpectError([&] { ModelConfig::FromJson(WithField(c, k.pointer, k.value)); },
                ErrorCode::kFormat, {"model config JSON: " + k.field + " must be", "got "});
  }
  // The memory's own files read the same way.
  nlohmann::json m = nlohmann::json::parse(c.memory.ToJson());
  m["d_model"] = nlohmann::json::parse("4294967328");
  ExpectError([&] { MemoryConfig::FromJson(m.dump()); }, ErrorCode::kFormat,
              {"memory config JSON: d_model must be an integer in [1, 16777216], got 4294967328"});
}

// Every numeric and bool field of a config, with values that are not its kind or out of every
// range: each gives a kFormat error naming the field.
TEST(HostileJson, EveryConfigFieldRefusesHostileValues) {
  ModelConfig tp;  // a titans-pytorch MAC config, for the tp_mac fields
  tp.architecture = Architecture::kTitansPytorchMac;
  tp.vocab_size = 64;
  tp.d_model = 32;
  tp.ffn_hidden = 48;
  tp.tie_embeddings = false;
  tp.layers = {kMac, kAttention};
  tp.segment = 4;
  tp.tp_mac.longterm_tokens = 2;
  tp.tp_mac.memory_segment = 2;
  tp.attention = AttentionOptions{.heads = 2,
                                  .kv_heads = 2,
                                  .head_dim = 16,
                                  .window = 6,
                                  .persistent = 0,
                                  .rope_base = 10000.0f};
  tp.memory = MemoryConfig::TitansPytorch(32, 2, 16, /*chunk_size=*/2, /*batch_size=*/4);
  ASSERT_NO_THROW(tp.Validate());
  ASSERT_EQ(ModelConfig::FromJson(tp.ToJson()), tp);

  const std::vector<std::string> ints{"4294967328", "-2147483649", "2147483648", "1.5", "1e-50",
                                      "1e12",       "9.3e18",      "1e30",       "-1",  "\"4\"",
                                      "true",       "null",        "[4]",        "{}"};
  const std::vector<std::string> floats{"1e39",  "-1e39", "1e-50", "1e30", "-1",
                                        "\"1\"", "true",  "null",  "[1]",  "{}"};
  const std::vector<std::string> bools{"1", "0", "\"true\"", "null", "[]"};
  int checked = 0;
  for (const ModelConfig& c : {Small(), tp}) {
    const nlohmann::json j = nlohmann::json::parse(c.ToJson());
    const nlohmann::json flat = j.flatten();
    for (const auto& item : flat.items()) {  // not [key, value]: clang 14 cannot capture them
      const std::string pointer = item.key();
      const nlohmann::json& value = item.value();
      if (value.is_string() || value.is_array()) continue;  // enums, layers
      std::string field = pointer.substr(1);
      std::replace(field.begin(), field.end(), '/', '.');
      const std::vector<std::string>& hostile = value.is_boolean()        ? bools
                                                : value.is_number_float() ? floats
                                                                          : ints;
      for (const std::string& v : hostile) {
        SCOPED_TRACE(pointer + " = " + v);
        ExpectError([&] { ModelConfig::FromJson(WithField(c, pointer, v)); }, ErrorCode::kFormat,
                    {"model config JSON", field});
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 400);
}

TEST(HostileJson, ExactValuesAreAcceptedAndRoundTrip) {
  const ModelConfig c = Small();
  // An integer written as a float with an integral value is that integer.
  EXPECT_EQ(ModelConfig::FromJson(WithField(c, "/segment", "4.0")), c);
  EXPECT_EQ(ModelConfig::FromJson(WithField(c, "/segment", "4e0")), c);
  // The window's whole int range is legal; the ends of the float ranges round trip.
  ModelConfig wide = c;
  wide.attention.window = std::numeric_limits<int>::max();
  wide.memory.layer_norm_eps = 1.0f;
  wide.memory.max_lr = 1e6f;
  wide.norm_eps = 1e-30f;
  EXPECT_EQ(ModelConfig::FromJson(wide.ToJson()), wide);
  EXPECT_EQ(ModelConfig::FromJson(ModelConfig::FromJson(wide.ToJson()).ToJson()), wide);
}

TEST(HostileJson, ValidateRefusesOverflowingProducts) {
  MemoryConfig m = MemoryConfig::Paper(32, 2, 8);
  m.expansion = 1e30f;  // int(head_dim * expansion) would overflow
  EXPECT_THROW(m.Validate(), Error);
  m = MemoryConfig::Paper(32, 2, 8);
  m.heads = 65536;
  m.head_dim = 65536;  // heads * head_dim overflows int
  EXPECT_THROW(m.Validate(), Error);
  ModelConfig c = Small();
  c.attention.heads = 65536;
  c.attention.kv_heads = 65536;
  c.attention.head_dim = 65536;
  EXPECT_THROW(c.Validate(), Error);
}

// ---------------------------------------------------------------------------------------------
// 8. Names from a file are printed without terminal escapes.

TEST(HostileJson, NamesInMessagesAreEscaped) {
  EXPECT_EQ(io::Printable("a\x1b[2J\x0c\x7f\xc2\x9b"
                          "b"),
            "a\\x1b[2J\\x0c\\x7f\\xc2\\x9bb");
  EXPECT_EQ(io::Quoted(std::string(300, 'x')).size(), 2u + 200u + 3u);

  ScratchDir scratch("titans_hostile_");
  const std::string path = scratch.Path("escape.safetensors");
  const std::string esc = "\\u001b[2J\\u001b]0;owned\\u0007\\f\\u009b";  // JSON escapes
  // A bad dtype under a hostile tensor name.
  WriteAll(
      path,
      Build("{\"w" + esc + "\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}", "xx"));
  ExpectError([&] { io::SafetensorsFile::Open(path); }, ErrorCode::kFormat,
              {"tensor \"w\\x1b[2J\\x1b]0;owned\\x07\\x0c\\xc2\\x9b\"", "F16"});
  // A hostile unexpected key in an entry, a hostile metadata name.
  WriteAll(path, Build("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0],\"" + esc +
                       "\":1}}"));
  ExpectError([&] { io::SafetensorsFile::Open(path); }, ErrorCode::kFormat,
              {"unexpected key \"\\x1b"});
  WriteAll(path, Build("{\"__metadata__\":{\"" + esc + "\":5}}"));
  ExpectError([&] { io::SafetensorsFile::Open(path); }, ErrorCode::kFormat, {"__metadata__"});
  // An unexpected tensor of a model file and a hostile format string.
  const ModelConfig c = Small();
  const Model model(c, ModelWeights::Random(c, 1));
  std::vector<io::TensorToWrite> tensors;
  for (const ConstTensorView& v : model.weights().Tensors(c)) {
    tensors.push_back({v.name, io::DType::kF32, v.shape, v.data});
  }
  const float one = 1.0f;
  tensors.push_back({"evil\x1b[31m\x0c", io::DType::kF32, {1}, &one});
  io::WriteSafetensors(
      path, {{"format", "titans.model"}, {"format_version", "1"}, {"config", c.ToJson()}}, tensors);
  ExpectError([&] { Model::Load(path); }, ErrorCode::kFormat,
              {"unexpected tensor \"evil\\x1b[31m\\x0c\""});
  tensors.pop_back();
  io::WriteSafetensors(
      path,
      {{"format", "titans.model\x1b[31m"}, {"format_version", "1\x0c"}, {"config", c.ToJson()}},
      tensors);
  ExpectError([&] { Model::Load(path); }, ErrorCode::kFormat,
              {"format is \"titans.model\\x1b[31m\""});
  // A hostile enum value in a config is shown as JSON (ASCII only).
  ExpectError([&] { ModelConfig::FromJson(WithField(c, "/layers/0", "\"mac\\u001b[2J\"")); },
              ErrorCode::kFormat, {"unknown layer kind", "\\u001b"});
  ExpectError(
      [&] { ModelConfig::FromJson(WithField(c, "/memory/activation", "\"\\u001b\\u009b\"")); },
      ErrorCode::kFormat, {"memory.activation", "\\u001b"});
}

}  // namespace
}  // namespace titans
