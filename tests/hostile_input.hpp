// Helpers of the hostile-input tests (tests/hostile_*_test.cpp, issue 13): hand-made
// safetensors files, a small model config, an error check that also insists on printable,
// bounded messages.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "titans/titans.hpp"

namespace titans::hostile {

using enum BlockKind;

inline void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A safetensors file by hand: header length (u64 LE), header text, data bytes.
inline std::string Build(const std::string& header, const std::string& data = "") {
  const uint64_t size = header.size();
  return std::string(reinterpret_cast<const char*>(&size), 8) + header + data;
}

// Runs `call`, expects a titans::Error with `code` whose message contains every needle and no
// byte outside printable ASCII (no terminal escapes); returns the message.
template <class F>
std::string ExpectError(F&& call, ErrorCode code, const std::vector<std::string>& needles) {
  try {
    call();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(e.code(), code) << message;
    for (const std::string& needle : needles) {
      EXPECT_NE(message.find(needle), std::string::npos)
          << "no \"" << needle << "\" in: " << io::Printable(message, 2000);
    }
    for (unsigned char ch : message) {
      EXPECT_TRUE(ch >= 0x20 && ch < 0x7f)
          << "byte " << int{ch} << " in: " << io::Printable(message, 2000);
    }
    EXPECT_LT(message.size(), 2000u) << message.substr(0, 300);
    return message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a titans::Error: " << e.what();
    return "";
  }
  ADD_FAILURE() << "accepted";
  return "";
}

// A small model of every kind with memory (d = 32).
inline ModelConfig Small(std::vector<BlockKind> layers = {kMac, kMag, kAttention},
                         int window = 16) {
  ModelConfig c;
  c.vocab_size = 64;
  c.d_model = 32;
  c.ffn_hidden = 48;
  c.tie_embeddings = false;
  c.layers = std::move(layers);
  c.attention = AttentionOptions{.heads = 4,
                                 .kv_heads = 2,
                                 .head_dim = 8,
                                 .window = window,
                                 .persistent = 3,
                                 .rope_base = 10000.0f};
  c.memory = MemoryConfig::Paper(32, 2, 8, /*depth=*/2, /*chunk=*/4);
  c.memory.output_proj = false;
  c.segment = 4;
  c.Validate();
  return c;
}

inline std::string Nested(int depth, char open, char close, const std::string& inner = "1") {
  return std::string(static_cast<size_t>(depth), open) + inner +
         std::string(static_cast<size_t>(depth), close);
}

// Sets the field at `pointer` ("/attention/window") of the config's JSON to `value` (JSON text).
inline std::string WithField(const ModelConfig& c, const std::string& pointer,
                             const std::string& value) {
  nlohmann::json j = nlohmann::json::parse(c.ToJson());
  j[nlohmann::json::json_pointer(pointer)] = nlohmann::json::parse(value);
  return j.dump();
}

// The tensors of `model`, to write with io::WriteSafetensors under another header.
inline std::vector<io::TensorToWrite> TensorsOf(const Model& model) {
  std::vector<io::TensorToWrite> tensors;
  for (const ConstTensorView& v : model.weights().Tensors(model.config())) {
    tensors.push_back({v.name, io::DType::kF32, v.shape, v.data});
  }
  return tensors;
}

}  // namespace titans::hostile
