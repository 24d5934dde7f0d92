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
NLOHMANN_JSON_SERIALIZE_ENUM(Architecture,
                             {{Architecture::kTitans, "titans"},
                              {Architecture::kTitansPytorchMac, "titans_pytorch_mac"}})

namespace {

void Require(bool ok, const std::string& message) {
  if (!ok) throw Error(ErrorCode::kConfig, "model config: " + message);
}

bool UsesMemory(BlockKind kind) { return kind != BlockKind::kAttention; }
bool UsesSlidingAttention(BlockKind kind) { return kind != BlockKind::kLmm; }

// kTitansPytorchMac (docs/TITANS_PYTORCH.md): what its session runs
// (src/model/arch/titans_pytorch_mac.cpp).
void ValidateTpMac(const ModelConfig& c) {
  const TpMacOptions& o = c.tp_mac;
  Require(c.vocab_size > 0, "titans_pytorch_mac needs a vocabulary (vocab_size > 0)");
  Require(!c.tie_embeddings, "titans_pytorch_mac has its own to_logits (tie_embeddings false)");
  Require(c.d_model >= 1 && c.ffn_hidden >= 1, "d_model and ffn_hidden must be >= 1");
  Require(std::isfinite(c.norm_eps) && c.norm_eps > 0, "norm_eps must be > 0");
  Require(!c.layers.empty(), "the model needs at least one layer");
  for (BlockKind kind : c.layers) {
    Require(kind == BlockKind::kMac || kind == BlockKind::kAttention,
            std::string("titans_pytorch_mac layers are \"mac\" (with neural memory) or "
                        "\"attention\", not \"") + ToString(kind) + "\"");
  }
  Require(c.segment >= 1, "titans_pytorch_mac needs segment (segment_len) >= 1");
  Require(o.longterm_tokens >= 0, "tp_mac.longterm_tokens must be >= 0");
  Require(o.memory_segment >= 1, "tp_mac.memory_segment must be >= 1");
  Require(o.streams >= 1, "tp_mac.streams must be >= 1");
  const AttentionOptions& a = c.attention;
  Require(a.heads >= 1 && a.kv_heads == a.heads,
          "titans_pytorch_mac attention has heads >= 1 and kv_heads == heads");
  Require(a.head_dim >= 2 && a.head_dim % 2 == 0, "attention head_dim must be even (rotary)");
  Require(a.persistent >= 0, "attention persistent must be >= 0");
  Require(std::isfinite(a.rope_base) && a.rope_base > 1, "attention rope_base must be > 1");
  Require(a.window == c.segment + o.longterm_tokens,
          "titans_pytorch_mac attention window must be segment + tp_mac.longterm_tokens (" +
              std::to_string(c.segment + o.longterm_tokens) + "), got " +
              std::to_string(a.window));
  if (std::find(c.layers.begin(), c.layers.end(), BlockKind::kMac) != c.layers.end()) {
    c.memory.Validate();
    Require(c.memory.d_model == c.d_model, "memory.d_model must equal d_model");
    Require(c.memory.output_proj || c.memory.inner_dim() == c.d_model,
            "the memory's output must have width d_model (output_proj, or heads * head_dim == "
            "d_model)");
    Require(c.memory.step == o.memory_segment,
            "memory.step must equal tp_mac.memory_segment (titans-pytorch's "
            "neural_memory_segment_len is both)");
  }
}

}  // namespace

const char* ToString(Architecture a) {
  switch (a) {
    case Architecture::kTitans: return "titans";
    case Architecture::kTitansPytorchMac: return "titans_pytorch_mac";
  }
  return "?";
}

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
  if (architecture == Architecture::kTitansPytorchMac) {
    ValidateTpMac(*this);
    return;
  }
  Require(architecture == Architecture::kTitans, "unknown architecture");
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
  // Titans configs leave the architecture out: their JSON (and files) are as before it existed.
  if (architecture != Architecture::kTitans) j["architecture"] = architecture;
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
  if (architecture == Architecture::kTitansPytorchMac) {
    j["tp_mac"] = {{"longterm_tokens", tp_mac.longterm_tokens},
                   {"memory_segment", tp_mac.memory_segment},
                   {"sliding", tp_mac.sliding},
                   {"streams", tp_mac.streams},
                   {"gate_attn_output", tp_mac.gate_attn_output}};
  }
  return j.dump();
}

ModelConfig ModelConfig::FromJson(const std::string& text) {
  ModelConfig c;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.contains("architecture")) {
      c.architecture = j.at("architecture").get<Architecture>();
      if (nlohmann::json(c.architecture) != j.at("architecture")) {
        throw Error(ErrorCode::kFormat,
                    "model config: unknown architecture " + j.at("architecture").dump());
      }
    }
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
    if (c.architecture == Architecture::kTitansPytorchMac) {
      const auto& o = j.at("tp_mac");
      c.tp_mac.longterm_tokens = o.at("longterm_tokens").get<int>();
      c.tp_mac.memory_segment = o.at("memory_segment").get<int>();
      c.tp_mac.sliding = o.at("sliding").get<bool>();
      c.tp_mac.streams = o.at("streams").get<int>();
      c.tp_mac.gate_attn_output = o.at("gate_attn_output").get<bool>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kFormat, std::string("model config JSON: ") + e.what());
  }
  c.Validate();
  return c;
}

}  // namespace titans
