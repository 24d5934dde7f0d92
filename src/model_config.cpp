#include "titans/model_config.hpp"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "titans/error.hpp"

namespace titans {

// The names are the file format (docs/FILE_FORMAT.md); in namespace titans for ADL.
NLOHMANN_JSON_SERIALIZE_ENUM(BlockKind, {{BlockKind::kLmm, "lmm"},
                                         {BlockKind::kMal, "mal"},
                                         {BlockKind::kMag, "mag"},
                                         {BlockKind::kMac, "mac"},
                                         {BlockKind::kAttention, "attention"}})

namespace {

void Require(bool ok, const std::string& message) {
  if (!ok) throw Error(ErrorCode::kConfig, "model config: " + message);
}

bool UsesMemory(BlockKind kind) { return kind != BlockKind::kAttention; }
bool UsesSlidingAttention(BlockKind kind) { return kind != BlockKind::kLmm; }

}  // namespace

const char* ToString(BlockKind kind) {
  switch (kind) {
    case BlockKind::kLmm: return "lmm";
    case BlockKind::kMal: return "mal";
    case BlockKind::kMag: return "mag";
    case BlockKind::kMac: return "mac";
    case BlockKind::kAttention: return "attention";
  }
  return "?";
}

void ModelConfig::Validate() const {
  Require(vocab_size >= 0, "vocab_size must be >= 0 (0 = raw input embeddings)");
  Require(d_model >= 1, "d_model must be >= 1");
  Require(ffn_hidden >= 1, "ffn_hidden must be >= 1");
  Require(std::isfinite(norm_eps) && norm_eps > 0, "norm_eps must be > 0");
  Require(vocab_size > 0 || !tie_embeddings, "tie_embeddings needs a vocabulary");
  Require(!layers.empty(), "the model needs at least one layer");
  const bool any_attention = std::any_of(layers.begin(), layers.end(), UsesSlidingAttention);
  const bool any_memory = std::any_of(layers.begin(), layers.end(), UsesMemory);
  const bool any_mac = std::find(layers.begin(), layers.end(), BlockKind::kMac) != layers.end();
  if (any_attention) {
    const AttentionOptions& a = attention;
    Require(a.heads >= 1 && a.kv_heads >= 1 && a.heads % a.kv_heads == 0,
            "attention heads must be a positive multiple of kv_heads");
    Require(a.head_dim >= 2 && a.head_dim % 2 == 0, "attention head_dim must be even (rotary)");
    Require(a.window >= 0, "attention window must be >= 0 (0 = full causal attention)");
    Require(a.persistent >= 0, "attention persistent must be >= 0");
    Require(std::isfinite(a.rope_base) && a.rope_base > 1, "attention rope_base must be > 1");
  }
  if (any_memory) {
    memory.Validate();
    Require(memory.d_model == d_model, "memory.d_model must equal d_model");
    Require(!memory.output_proj,
            "memory.output_proj must be false: the memory branch applies its per-head norm and "
            "gate before its own output projection");
  }
  if (any_mac) {
    Require(segment > 0, "a mac layer needs segment > 0");
    Require(segment == memory.unit(),
            "segment must equal the memory's unit (chunk for read = chunk, step for read = "
            "step): the memory is written once per segment, at its end, so every token of a "
            "segment reads the memory as it was at the segment start");
  }
}

std::string ModelConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["vocab_size"] = vocab_size;
  j["d_model"] = d_model;
  j["ffn_hidden"] = ffn_hidden;
  j["norm_eps"] = norm_eps;
  j["tie_embeddings"] = tie_embeddings;
  j["layers"] = nlohmann::json(layers);
  j["attention"] = {{"heads", attention.heads},         {"kv_heads", attention.kv_heads},
                    {"head_dim", attention.head_dim},   {"window", attention.window},
                    {"persistent", attention.persistent}, {"rope_base", attention.rope_base}};
  j["memory"] = nlohmann::ordered_json::parse(memory.ToJson());
  j["segment"] = segment;
  return j.dump();
}

ModelConfig ModelConfig::FromJson(const std::string& text) {
  ModelConfig c;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    c.vocab_size = j.at("vocab_size").get<int>();
    c.d_model = j.at("d_model").get<int>();
    c.ffn_hidden = j.at("ffn_hidden").get<int>();
    c.norm_eps = j.at("norm_eps").get<float>();
    c.tie_embeddings = j.at("tie_embeddings").get<bool>();
    c.layers.clear();
    for (const auto& name : j.at("layers")) {
      const BlockKind kind = name.get<BlockKind>();
      if (nlohmann::json(kind) != name) {
        throw Error(ErrorCode::kFormat, "model config: unknown layer kind " + name.dump());
      }
      c.layers.push_back(kind);
    }
    const auto& a = j.at("attention");
    c.attention.heads = a.at("heads").get<int>();
    c.attention.kv_heads = a.at("kv_heads").get<int>();
    c.attention.head_dim = a.at("head_dim").get<int>();
    c.attention.window = a.at("window").get<int>();
    c.attention.persistent = a.at("persistent").get<int>();
    c.attention.rope_base = a.at("rope_base").get<float>();
    c.memory = MemoryConfig::FromJson(j.at("memory").dump());
    c.segment = j.at("segment").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kFormat, std::string("model config JSON: ") + e.what());
  }
  c.Validate();
  return c;
}

}  // namespace titans
