#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "io/json.hpp"
#include "memory/config_json.hpp"
#include "titans/error.hpp"
#include "titans/memory_config.hpp"

namespace titans {

// Enum <-> JSON string tables, one per enum; the names are the file format. They live in
// namespace titans so that nlohmann finds them by argument-dependent lookup.
NLOHMANN_JSON_SERIALIZE_ENUM(Activation, {{Activation::kNone, "none"},
                                          {Activation::kGelu, "gelu"},
                                          {Activation::kSilu, "silu"}})
NLOHMANN_JSON_SERIALIZE_ENUM(MemoryOutput, {{MemoryOutput::kPlain, "plain"},
                                            {MemoryOutput::kLnResidual, "ln_residual"}})
NLOHMANN_JSON_SERIALIZE_ENUM(QkNorm,
                             {{QkNorm::kNone, "none"}, {QkNorm::kL2, "l2"}, {QkNorm::kRms, "rms"}})
NLOHMANN_JSON_SERIALIZE_ENUM(ReadRule, {{ReadRule::kChunk, "chunk"}, {ReadRule::kStep, "step"}})
NLOHMANN_JSON_SERIALIZE_ENUM(LossScale, {{LossScale::kSum, "sum"}, {LossScale::kMean, "mean"}})
NLOHMANN_JSON_SERIALIZE_ENUM(MemoryModel, {{MemoryModel::kMlp, "mlp"},
                                           {MemoryModel::kSwiGlu, "swiglu"},
                                           {MemoryModel::kGatedResidual, "gated_residual"}})

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
Enum ReadEnum(const io::ConfigObject& c, const char* key) {
  const nlohmann::json& node = io::Field(c, key);
  const Enum value = node.get<Enum>();
  if (!node.is_string() || nlohmann::json(value) != node) {
    throw Error(ErrorCode::kFormat,
                c.what + ": unknown value " + io::Shown(node) + " for \"" + c.prefix + key + "\"");
  }
  return value;
}

}  // namespace

const char* ToString(Activation a) { return EnumName(a); }
const char* ToString(MemoryOutput o) { return EnumName(o); }
const char* ToString(QkNorm n) { return EnumName(n); }
const char* ToString(ReadRule r) { return EnumName(r); }
const char* ToString(LossScale l) { return EnumName(l); }
const char* ToString(MemoryModel m) { return EnumName(m); }

int MemoryConfig::tensor_rows(int i) const {
  switch (model) {
    case MemoryModel::kSwiGlu:
      if (i == 2 * depth) return 1;  // the LayerNorm gain
      return i % 2 == 0 ? head_dim : swiglu_inner();
    case MemoryModel::kGatedResidual:
      if (i == 3 * depth) return head_dim;  // W_final
      return i % 3 == 0 ? head_dim : i % 3 == 1 ? hidden_dim() : 2 * head_dim;
    case MemoryModel::kMlp:
      break;
  }
  return layer_in(i);
}

int MemoryConfig::tensor_cols(int i) const {
  switch (model) {
    case MemoryModel::kSwiGlu:
      if (i == 2 * depth) return head_dim;
      return i % 2 == 0 ? 2 * swiglu_inner() : head_dim;
    case MemoryModel::kGatedResidual:
      return i % 3 == 0 && i != 3 * depth ? hidden_dim() : head_dim;
    case MemoryModel::kMlp:
      break;
  }
  return layer_out(i);
}

void MemoryConfig::Validate() const {
  Require(d_model >= 1, "d_model must be >= 1");
  Require(heads >= 1, "heads must be >= 1");
  Require(head_dim >= 1, "head_dim must be >= 1");
  Require(depth >= 1, "depth must be >= 1");
  // Products in int64 / double first: the int accessors below must not overflow.
  Require(int64_t{heads} * head_dim <= config_limits::kMaxWidth,
          "heads * head_dim must be <= " + std::to_string(config_limits::kMaxWidth));
  Require(std::isfinite(expansion) && expansion > 0 &&
              static_cast<double>(head_dim) * expansion <= config_limits::kMaxWidth,
          "expansion must give a hidden width <= " + std::to_string(config_limits::kMaxWidth));
  Require(hidden_dim() >= 1, "expansion must give a hidden width >= 1");
  Require(depth == 1 || activation != Activation::kNone,
          "the memory MLP needs an activation (gelu or silu) when depth > 1");
  Require(
      model == MemoryModel::kMlp || activation != Activation::kNone,
      std::string("the ") + ToString(model) + " memory model needs an activation (gelu or silu)");
  Require(model != MemoryModel::kSwiGlu || swiglu_inner() >= 1,
          "expansion must give the swiglu model an inner width >= 1");
  Require(
      std::isfinite(layer_norm_eps) && layer_norm_eps > 0 && std::isfinite(rms_eps) && rms_eps > 0,
      "norm epsilons must be finite and > 0");
  Require(conv_kernel >= 0, "conv_kernel must be >= 0 (0 = no convolution)");
  Require(std::isfinite(max_lr) && max_lr >= 0, "max_lr must be finite and >= 0");
  Require(step >= 1, "step (s) must be >= 1");
  Require(chunk >= 0, "chunk must be >= 0 (0 = never commit)");
  Require(chunk % step == 0, "chunk must be a multiple of step (s)");
  Require(read != ReadRule::kChunk || chunk > 0,
          "read = chunk needs chunk > 0 (with chunk = 0 use read = step)");
  Require(read_offset == 0 || read_offset == 1, "read_offset must be 0 or 1");
  Require(std::isfinite(max_grad_norm) && max_grad_norm >= 0,
          "max_grad_norm must be finite and >= 0 (0 = off)");
  Require(std::isfinite(max_layer_modulation) && max_layer_modulation > 0,
          "max_layer_modulation must be finite and > 0");
  Require(!attention_pool || read == ReadRule::kStep,
          "attention_pool needs read = step (one step per unit)");
  Require(!weight_residual || read == ReadRule::kStep,
          "weight_residual needs read = step (one step per unit)");
  Require(momentum_order >= 1 && momentum_order <= 8, "momentum_order must be in [1, 8]");
  Require(momentum || (momentum_order == 1 && !learned_combine),
          "momentum_order > 1 and learned_combine need momentum");
  Require(learned_combine || !combine_zeroth, "combine_zeroth needs learned_combine");
  Require(!learned_combine || momentum_order > 1, "learned_combine needs momentum_order > 1");
  Require((momentum_order == 1 && !learned_combine) || read == ReadRule::kStep,
          "momentum_order > 1 and learned_combine need read = step (one step per unit)");
  Require(!tensorwise_write() || read == ReadRule::kStep,
          "max_grad_norm, lr_modulation, spectral_norm and the swiglu and gated_residual models "
          "need read = step (one step per unit)");
  // Every session keeps the keys, values and gates of one unit: bound what a config implies.
  Require(int64_t{unit()} * inner_dim() <= config_limits::kMaxUnitValues,
          "the unit (" + std::to_string(unit()) + " tokens) times heads * head_dim (" +
              std::to_string(inner_dim()) + ") must be <= 2^28");
}

double MemoryConfig::FlopsPerToken() const {
  double mlp = 0, backward = 0;  // per head: one forward pass; the backward products
  for (int i = 0; i < model_tensors(); ++i) {
    if (tensor_is_vector(i)) continue;
    const double product = 2.0 * tensor_rows(i) * tensor_cols(i);
    mlp += product;
    // Every matrix but the MLP's first layer passes the error back to its input.
    if (model != MemoryModel::kMlp || i > 0) backward += product;
  }
  const double gradient_products = momentum ? 2.0 * mlp : mlp;  // A^T diag(c) D (and diag(e))
  const double projections = 2.0 * d_model * 3.0 * (inner_dim() + heads);
  const double output = output_proj ? 2.0 * inner_dim() * d_model : 0.0;
  // Newton-Schulz per step and matrix: 5 x (X X^T, A A, B X) on an r x n matrix, r <= n.
  double spectral = 0;
  for (int i = 0; spectral_norm && i < model_tensors(); ++i) {
    if (tensor_is_vector(i)) continue;
    const double r = std::min(tensor_rows(i), tensor_cols(i));
    const double n = std::max(tensor_rows(i), tensor_cols(i));
    spectral += 5.0 * (2.0 * r * r * n + 2.0 * r * r * r + 2.0 * r * r * n) / step;
  }
  const double modulation = lr_modulation ? 2.0 * d_model * heads * parameter_tensors() : 0.0;
  const double pool = attention_pool ? 2.0 * d_model * d_model : 0.0;
  const double mix = weight_residual ? 2.0 * d_model * heads : 0.0;
  return projections + modulation + pool + mix + output +
         heads * (mlp + backward + gradient_products + mlp + spectral);
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
  // The options of 1.7 only when on: files without them stay as they were.
  if (model != MemoryModel::kMlp) j["model"] = nlohmann::json(model);
  if (post_norm) j["post_norm"] = true;
  if (transition_gate) j["transition_gate"] = true;
  if (max_grad_norm > 0) j["max_grad_norm"] = max_grad_norm;
  if (lr_modulation) {
    j["lr_modulation"] = true;
    j["max_layer_modulation"] = max_layer_modulation;
  }
  if (spectral_norm) j["spectral_norm"] = true;
  if (attention_pool) j["attention_pool"] = true;
  if (weight_residual) j["weight_residual"] = true;
  if (momentum_order != 1) j["momentum_order"] = momentum_order;
  if (learned_combine) j["learned_combine"] = true;
  if (combine_zeroth) j["combine_zeroth"] = true;
  return j.dump();
}

MemoryConfig ReadMemoryConfig(const io::ConfigObject& j) {
  using namespace config_limits;  // NOLINT(google-build-using-namespace): the bounds by name
  MemoryConfig c;
  c.d_model = io::IntField(j, "d_model", 1, kMaxWidth);
  c.heads = io::IntField(j, "heads", 1, kMaxWidth);
  c.head_dim = io::IntField(j, "head_dim", 1, kMaxWidth);
  c.depth = io::IntField(j, "depth", 1, kMaxDepth);
  c.expansion = io::FloatField(j, "expansion", 0.0, 1024.0, /*lo_open=*/true);
  c.activation = ReadEnum<Activation>(j, "activation");
  c.output = ReadEnum<MemoryOutput>(j, "output");
  c.layer_norm_eps = io::FloatField(j, "layer_norm_eps", 1e-30, 1.0);
  c.store_norm = io::BoolField(j, "store_norm");
  c.retrieve_norm = io::BoolField(j, "retrieve_norm");
  c.rms_eps = io::FloatField(j, "rms_eps", 1e-30, 1.0);
  c.conv_kernel = io::IntField(j, "conv_kernel", 0, kMaxConvKernel);
  c.qkv_activation = ReadEnum<Activation>(j, "qkv_activation");
  c.qk_norm = ReadEnum<QkNorm>(j, "qk_norm");
  c.max_lr = io::FloatField(j, "max_lr", 0.0, 1e6);
  c.momentum = io::BoolField(j, "momentum");
  c.loss = ReadEnum<LossScale>(j, "loss");
  c.step = io::IntField(j, "step", 1, kMaxUnit);
  c.chunk = io::IntField(j, "chunk", 0, kMaxUnit);
  c.read = ReadEnum<ReadRule>(j, "read");
  c.read_offset = io::IntField(j, "read_offset", 0, 1);
  c.output_gate = io::BoolField(j, "output_gate");
  c.output_proj = io::BoolField(j, "output_proj");
  // Optional: absent means off (the files written before these options existed).
  auto has = [&j](const char* key) { return j.object.is_object() && j.object.contains(key); };
  if (has("model")) c.model = ReadEnum<MemoryModel>(j, "model");
  if (has("post_norm")) c.post_norm = io::BoolField(j, "post_norm");
  if (has("transition_gate")) c.transition_gate = io::BoolField(j, "transition_gate");
  if (has("max_grad_norm")) c.max_grad_norm = io::FloatField(j, "max_grad_norm", 0.0, 1e6);
  if (has("lr_modulation")) c.lr_modulation = io::BoolField(j, "lr_modulation");
  if (c.lr_modulation) {
    c.max_layer_modulation = io::FloatField(j, "max_layer_modulation", 0.0, 1e6, /*lo_open=*/true);
  }
  if (has("spectral_norm")) c.spectral_norm = io::BoolField(j, "spectral_norm");
  if (has("attention_pool")) c.attention_pool = io::BoolField(j, "attention_pool");
  if (has("weight_residual")) c.weight_residual = io::BoolField(j, "weight_residual");
  if (has("momentum_order")) c.momentum_order = io::IntField(j, "momentum_order", 1, 8);
  if (has("learned_combine")) c.learned_combine = io::BoolField(j, "learned_combine");
  if (has("combine_zeroth")) c.combine_zeroth = io::BoolField(j, "combine_zeroth");
  c.Validate();
  return c;
}

MemoryConfig MemoryConfig::FromJson(const std::string& text) {
  const nlohmann::json j = io::ParseConfigText(text, "memory config JSON");
  return ReadMemoryConfig(io::ConfigObject{j, "memory config JSON", ""});
}

}  // namespace titans
