#include "titans/memory_config.hpp"

#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "titans/error.hpp"

namespace titans {

// Enum <-> JSON string tables, one per enum; the names are the file format. They live in
// namespace titans so that nlohmann finds them by argument-dependent lookup.
NLOHMANN_JSON_SERIALIZE_ENUM(Activation, {{Activation::kNone, "none"},
                                          {Activation::kGelu, "gelu"},
                                          {Activation::kSilu, "silu"}})
NLOHMANN_JSON_SERIALIZE_ENUM(MemoryOutput, {{MemoryOutput::kPlain, "plain"},
                                            {MemoryOutput::kLnResidual, "ln_residual"}})
NLOHMANN_JSON_SERIALIZE_ENUM(QkNorm, {{QkNorm::kNone, "none"},
                                      {QkNorm::kL2, "l2"},
                                      {QkNorm::kRms, "rms"}})
NLOHMANN_JSON_SERIALIZE_ENUM(ReadRule, {{ReadRule::kChunk, "chunk"}, {ReadRule::kStep, "step"}})
NLOHMANN_JSON_SERIALIZE_ENUM(LossScale, {{LossScale::kSum, "sum"}, {LossScale::kMean, "mean"}})

namespace {

void Require(bool ok, const std::string& message) {
  if (!ok) throw Error(ErrorCode::kConfig, message);
}

template <class Enum>
const char* EnumName(Enum value) {
  // Names from the JSON table, so the two cannot drift apart; built once, stable pointers.
  static const std::map<Enum, std::string> names = [] {
    std::map<Enum, std::string> m;
    for (int i = 0; i < 3; ++i) {
      const nlohmann::json j = static_cast<Enum>(i);
      if (j.is_string()) m.emplace(static_cast<Enum>(i), j.get<std::string>());
    }
    return m;
  }();
  const auto it = names.find(value);
  return it == names.end() ? "?" : it->second.c_str();
}

// Reads enum `key`, rejecting names outside the table (nlohmann maps them to the first entry).
template <class Enum>
Enum ReadEnum(const nlohmann::json& j, const char* key) {
  const auto& node = j.at(key);
  const Enum value = node.get<Enum>();
  if (nlohmann::json(value) != node) {
    throw Error(ErrorCode::kFormat, std::string("config: unknown value ") + node.dump() +
                                        " for \"" + key + "\"");
  }
  return value;
}

}  // namespace

const char* ToString(Activation a) { return EnumName(a); }
const char* ToString(MemoryOutput o) { return EnumName(o); }
const char* ToString(QkNorm n) { return EnumName(n); }
const char* ToString(ReadRule r) { return EnumName(r); }
const char* ToString(LossScale l) { return EnumName(l); }

void MemoryConfig::Validate() const {
  Require(d_model >= 1, "d_model must be >= 1");
  Require(heads >= 1, "heads must be >= 1");
  Require(head_dim >= 1, "head_dim must be >= 1");
  Require(depth >= 1, "depth must be >= 1");
  Require(std::isfinite(expansion) && expansion > 0 && hidden_dim() >= 1,
          "expansion must give a hidden width >= 1");
  Require(depth == 1 || activation != Activation::kNone,
          "the memory MLP needs an activation (gelu or silu) when depth > 1");
  Require(qkv_activation != Activation::kGelu, "qkv_activation must be none or silu");
  Require(layer_norm_eps > 0 && rms_eps > 0, "norm epsilons must be > 0");
  Require(conv_kernel >= 0, "conv_kernel must be >= 0 (0 = no convolution)");
  Require(std::isfinite(max_lr) && max_lr >= 0, "max_lr must be finite and >= 0");
  Require(step >= 1, "step (s) must be >= 1");
  Require(chunk >= 0, "chunk must be >= 0 (0 = never commit)");
  Require(chunk % step == 0, "chunk must be a multiple of step (s)");
  Require(read != ReadRule::kChunk || chunk > 0,
          "read = chunk needs chunk > 0 (with chunk = 0 use read = step)");
  Require(read_offset == 0 || read_offset == 1, "read_offset must be 0 or 1");
}

double MemoryConfig::FlopsPerToken() const {
  double mlp = 0, backward = 0;  // per head: one forward pass; the backward products
  for (int l = 0; l < depth; ++l) {
    mlp += 2.0 * layer_in(l) * layer_out(l);
    if (l > 0) backward += 2.0 * layer_in(l) * layer_out(l);
  }
  const double gradient_products = momentum ? 2.0 * mlp : mlp;  // A^T diag(c) D (and diag(e))
  const double projections = 2.0 * d_model * 3.0 * (inner_dim() + heads);
  const double output = output_proj ? 2.0 * inner_dim() * d_model : 0.0;
  return projections + output + heads * (mlp + backward + gradient_products + mlp);
}

MemoryConfig MemoryConfig::Paper(int d_model, int heads, int head_dim, int depth, int chunk) {
  MemoryConfig c;
  c.d_model = d_model;
  c.heads = heads;
  c.head_dim = head_dim;
  c.depth = depth;
  c.chunk = chunk;
  c.Validate();
  return c;
}

MemoryConfig MemoryConfig::TitansPytorch(int d_model, int heads, int head_dim, int chunk_size,
                                         int batch_size) {
  MemoryConfig c;
  c.d_model = d_model;
  c.heads = heads;
  c.head_dim = head_dim;
  c.depth = 2;
  c.expansion = 4.0f;
  c.activation = Activation::kGelu;
  c.output = MemoryOutput::kLnResidual;
  c.rms_eps = std::numeric_limits<float>::epsilon();
  c.conv_kernel = 0;
  c.qkv_activation = Activation::kNone;
  c.qk_norm = QkNorm::kNone;
  c.loss = LossScale::kMean;
  c.step = chunk_size;
  c.chunk = batch_size;
  c.read = ReadRule::kStep;
  c.read_offset = 1;
  c.output_gate = heads > 1;
  c.output_proj = heads > 1;
  c.Validate();
  return c;
}

std::string MemoryConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["d_model"] = d_model;
  j["heads"] = heads;
  j["head_dim"] = head_dim;
  j["depth"] = depth;
  j["expansion"] = expansion;
  j["activation"] = nlohmann::json(activation);
  j["output"] = nlohmann::json(output);
  j["layer_norm_eps"] = layer_norm_eps;
  j["store_norm"] = store_norm;
  j["retrieve_norm"] = retrieve_norm;
  j["rms_eps"] = rms_eps;
  j["conv_kernel"] = conv_kernel;
  j["qkv_activation"] = nlohmann::json(qkv_activation);
  j["qk_norm"] = nlohmann::json(qk_norm);
  j["max_lr"] = max_lr;
  j["momentum"] = momentum;
  j["loss"] = nlohmann::json(loss);
  j["step"] = step;
  j["chunk"] = chunk;
  j["read"] = nlohmann::json(read);
  j["read_offset"] = read_offset;
  j["output_gate"] = output_gate;
  j["output_proj"] = output_proj;
  return j.dump();
}

MemoryConfig MemoryConfig::FromJson(const std::string& text) {
  MemoryConfig c;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    c.d_model = j.at("d_model").get<int>();
    c.heads = j.at("heads").get<int>();
    c.head_dim = j.at("head_dim").get<int>();
    c.depth = j.at("depth").get<int>();
    c.expansion = j.at("expansion").get<float>();
    c.activation = ReadEnum<Activation>(j, "activation");
    c.output = ReadEnum<MemoryOutput>(j, "output");
    c.layer_norm_eps = j.at("layer_norm_eps").get<float>();
    c.store_norm = j.at("store_norm").get<bool>();
    c.retrieve_norm = j.at("retrieve_norm").get<bool>();
    c.rms_eps = j.at("rms_eps").get<float>();
    c.conv_kernel = j.at("conv_kernel").get<int>();
    c.qkv_activation = ReadEnum<Activation>(j, "qkv_activation");
    c.qk_norm = ReadEnum<QkNorm>(j, "qk_norm");
    c.max_lr = j.at("max_lr").get<float>();
    c.momentum = j.at("momentum").get<bool>();
    c.loss = ReadEnum<LossScale>(j, "loss");
    c.step = j.at("step").get<int>();
    c.chunk = j.at("chunk").get<int>();
    c.read = ReadEnum<ReadRule>(j, "read");
    c.read_offset = j.at("read_offset").get<int>();
    c.output_gate = j.at("output_gate").get<bool>();
    c.output_proj = j.at("output_proj").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kFormat, std::string("memory config JSON: ") + e.what());
  }
  c.Validate();
  return c;
}

}  // namespace titans
