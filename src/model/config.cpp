#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/json.hpp"
#include "memory/config_json.hpp"
#include "titans/error.hpp"
#include "titans/model_config.hpp"

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
                        "\"attention\", not \"") +
                ToString(kind) + "\"");
  }
  Require(c.segment >= 1, "titans_pytorch_mac needs segment (segment_len) >= 1");
  Require(o.longterm_tokens >= 0, "tp_mac.longterm_tokens must be >= 0");
  Require(o.memory_segment >= 1, "tp_mac.memory_segment must be >= 1");
  Require(int64_t{o.memory_segment} * c.d_model <= config_limits::kMaxUnitValues,
          "tp_mac.memory_segment times d_model must be <= 2^28");
  Require(o.streams >= 1, "tp_mac.streams must be >= 1");
  const AttentionOptions& a = c.attention;
  Require(a.heads >= 1 && a.kv_heads == a.heads,
          "titans_pytorch_mac attention has heads >= 1 and kv_heads == heads");
  Require(a.head_dim >= 2 && a.head_dim % 2 == 0, "attention head_dim must be even (rotary)");
  Require(a.persistent >= 0, "attention persistent must be >= 0");
  Require(std::isfinite(a.rope_base) && a.rope_base > 1, "attention rope_base must be > 1");
  Require(int64_t{a.heads} * a.head_dim <= config_limits::kMaxWidth,
          "attention heads * head_dim must be <= " + std::to_string(config_limits::kMaxWidth));
  Require(o.streams <= config_limits::kMaxStreams,
          "tp_mac.streams must be <= " + std::to_string(config_limits::kMaxStreams));
  Require(int64_t{a.window} == int64_t{c.segment} + o.longterm_tokens,
          "titans_pytorch_mac attention window must be segment + tp_mac.longterm_tokens (" +
              std::to_string(int64_t{c.segment} + o.longterm_tokens) + "), got " +
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
    case Architecture::kTitans:
      return "titans";
    case Architecture::kTitansPytorchMac:
      return "titans_pytorch_mac";
  }
  return "?";
}

const char* ToString(BlockKind kind) {
  switch (kind) {
    case BlockKind::kLmm:
      return "lmm";
    case BlockKind::kMal:
      return "mal";
    case BlockKind::kMag:
      return "mag";
    case BlockKind::kMac:
      return "mac";
    case BlockKind::kAttention:
      return "attention";
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
  const bool any_attention = std::any_of(layers.begin(), layers.end(), HasAttention);
  const bool any_memory = std::any_of(layers.begin(), layers.end(), HasMemory);
  const bool any_mac = std::find(layers.begin(), layers.end(), BlockKind::kMac) != layers.end();
  if (any_attention) {
    const AttentionOptions& a = attention;
    Require(a.heads >= 1 && a.kv_heads >= 1 && a.heads % a.kv_heads == 0,
            "attention heads must be a positive multiple of kv_heads");
    Require(a.head_dim >= 2 && a.head_dim % 2 == 0, "attention head_dim must be even (rotary)");
    Require(int64_t{a.heads} * a.head_dim <= config_limits::kMaxWidth,
            "attention heads * head_dim must be <= " + std::to_string(config_limits::kMaxWidth));
    Require(a.window >= 0, "attention window must be >= 0 (0 = full causal attention)");
    Require(a.persistent >= 0, "attention persistent must be >= 0");
    Require(std::isfinite(a.rope_base) && a.rope_base > 1, "attention rope_base must be > 1");
  }
  if (any_memory) {
    memory.Validate();
    Require(memory.d_model == d_model, "memory.d_model must equal d_model");
    Require(!memory.weight_residual,
            "memory.weight_residual is an option of titans_pytorch_mac models (a chain of memory "
            "layers as titans-pytorch's MAC runs them)");
    Require(!memory.output_proj,
            "memory.output_proj must be false: the memory branch applies its per-head norm and "
            "gate before its own output projection");
  }
  if (any_mac) {
    Require(segment > 0, "a mac layer needs segment > 0");
    Require(segment <= (1 << 30), "segment must be <= 2^30 (its cache holds 2 segment rows)");
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
  j["attention"] = {{"heads", attention.heads},           {"kv_heads", attention.kv_heads},
                    {"head_dim", attention.head_dim},     {"window", attention.window},
                    {"persistent", attention.persistent}, {"rope_base", attention.rope_base}};
  j["memory"] = nlohmann::ordered_json::parse(memory.ToJson());
  j["segment"] = segment;
  if (architecture == Architecture::kTitansPytorchMac) {
    j["tp_mac"] = {{"longterm_tokens", tp_mac.longterm_tokens},
                   {"memory_segment", tp_mac.memory_segment},
                   {"sliding", tp_mac.sliding},
                   {"streams", tp_mac.streams},
                   {"gate_attn_output", tp_mac.gate_attn_output}};
    if (tp_mac.qkv_views) j["tp_mac"]["qkv_views"] = true;  // optional: absent means off
  }
  return j.dump();
}

ModelConfig ModelConfig::FromJson(const std::string& text) {
  using namespace config_limits;  // NOLINT(google-build-using-namespace): the bounds by name
  const std::string what = "model config JSON";
  const nlohmann::json parsed = io::ParseConfigText(text, what);
  const io::ConfigObject j{parsed, what, ""};
  ModelConfig c;
  if (!parsed.is_object()) {
    throw Error(ErrorCode::kFormat, what + ": the config is a JSON " +
                                        std::string(parsed.type_name()) + ", not an object");
  }
  if (parsed.contains("architecture")) {
    const nlohmann::json& node = parsed.at("architecture");
    c.architecture = node.get<Architecture>();
    if (!node.is_string() || nlohmann::json(c.architecture) != node) {
      throw Error(ErrorCode::kFormat, what + ": unknown architecture " + io::Shown(node));
    }
  }
  c.vocab_size = io::IntField(j, "vocab_size", 0, kMaxWidth);
  c.d_model = io::IntField(j, "d_model", 1, kMaxWidth);
  c.ffn_hidden = io::IntField(j, "ffn_hidden", 1, kMaxWidth);
  c.norm_eps = io::FloatField(j, "norm_eps", 1e-30, 1.0);
  c.tie_embeddings = io::BoolField(j, "tie_embeddings");
  const nlohmann::json& layers = io::Field(j, "layers");
  if (!layers.is_array()) {
    throw Error(ErrorCode::kFormat,
                what + ": layers must be an array of block kinds, got " + io::Shown(layers));
  }
  c.layers.clear();
  for (const auto& name : layers) {
    const BlockKind kind = name.get<BlockKind>();
    if (!name.is_string() || nlohmann::json(kind) != name) {
      throw Error(ErrorCode::kFormat, what + ": unknown layer kind " + io::Shown(name));
    }
    c.layers.push_back(kind);
  }
  const io::ConfigObject a = io::ObjectField(j, "attention");
  c.attention.heads = io::IntField(a, "heads", 1, kMaxWidth);
  c.attention.kv_heads = io::IntField(a, "kv_heads", 1, kMaxWidth);
  c.attention.head_dim = io::IntField(a, "head_dim", 1, kMaxWidth);
  // The window only bounds the cache, which grows with the stream: any int.
  c.attention.window = io::IntField(a, "window", 0, std::numeric_limits<int>::max());
  c.attention.persistent = io::IntField(a, "persistent", 0, kMaxWidth);
  c.attention.rope_base = io::FloatField(a, "rope_base", 1.0, 1e12, /*lo_open=*/true);
  c.memory = ReadMemoryConfig(io::ObjectField(j, "memory"));
  c.segment = io::IntField(j, "segment", 0, kMaxUnit);
  if (c.architecture == Architecture::kTitansPytorchMac) {
    const io::ConfigObject o = io::ObjectField(j, "tp_mac");
    c.tp_mac.longterm_tokens = io::IntField(o, "longterm_tokens", 0, kMaxWidth);
    c.tp_mac.memory_segment = io::IntField(o, "memory_segment", 1, kMaxUnit);
    c.tp_mac.sliding = io::BoolField(o, "sliding");
    c.tp_mac.streams = io::IntField(o, "streams", 1, kMaxStreams);
    c.tp_mac.gate_attn_output = io::BoolField(o, "gate_attn_output");
    if (o.object.is_object() && o.object.contains("qkv_views")) {  // files before the option
      c.tp_mac.qkv_views = io::BoolField(o, "qkv_views");
    }
  }
  c.Validate();
  return c;
}

}  // namespace titans
