// The memory's weight and state tables: one place that names every tensor and its shape, used
// by validation, random initialisation and the state files alike.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string_view>

#include "ops/bf16.hpp"
#include "ops/random.hpp"
#include "titans/error.hpp"
#include "titans/memory.hpp"

namespace titans {
namespace {

int64_t Product(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

// The tensor tables: f(name, shape, vector&) for every tensor `c` uses, in file order. Written
// once as templates so the const and mutable uses (views, validation, allocation) cannot
// disagree.
template <class Weights, class F>
void ForEachWeight(const MemoryConfig& c, Weights& w, F&& f) {
  const int64_t d = c.d_model, h = c.heads, dh = c.head_dim, hd = c.inner_dim();
  if (c.store_norm) f("store_norm", std::vector<int64_t>{d}, w.store_norm);
  if (c.retrieve_norm) f("retrieve_norm", std::vector<int64_t>{d}, w.retrieve_norm);
  f("w_q", std::vector<int64_t>{d, hd}, w.w_q);
  f("w_k", std::vector<int64_t>{d, hd}, w.w_k);
  f("w_v", std::vector<int64_t>{d, hd}, w.w_v);
  if (c.conv_kernel > 0) {
    f("conv_q", std::vector<int64_t>{c.conv_kernel, hd}, w.conv_q);
    f("conv_k", std::vector<int64_t>{c.conv_kernel, hd}, w.conv_k);
    f("conv_v", std::vector<int64_t>{c.conv_kernel, hd}, w.conv_v);
  }
  if (c.qk_norm == QkNorm::kRms) {
    f("q_norm", std::vector<int64_t>{h, dh}, w.q_norm);
    f("k_norm", std::vector<int64_t>{h, dh}, w.k_norm);
  }
  f("w_theta", std::vector<int64_t>{d, h}, w.w_theta);
  f("b_theta", std::vector<int64_t>{h}, w.b_theta);
  if (c.momentum) {  // channel h * O + o - 1 for momentum order o
    const int64_t orders = h * c.momentum_order;
    f("w_eta", std::vector<int64_t>{d, orders}, w.w_eta);
    f("b_eta", std::vector<int64_t>{orders}, w.b_eta);
  }
  f("w_alpha", std::vector<int64_t>{d, h}, w.w_alpha);
  f("b_alpha", std::vector<int64_t>{h}, w.b_alpha);
  if (c.attention_pool) {
    f("w_pool", std::vector<int64_t>{d, d}, w.w_pool);
    f("b_pool", std::vector<int64_t>{d}, w.b_pool);
  }
  if (c.lr_modulation) {
    const int64_t hp = h * c.parameter_tensors();
    f("w_mod", std::vector<int64_t>{d, hp}, w.w_mod);
    f("b_mod", std::vector<int64_t>{hp}, w.b_mod);
  }
  if (c.weight_residual) {
    f("w_mix", std::vector<int64_t>{d, h}, w.w_mix);
    f("b_mix", std::vector<int64_t>{h}, w.b_mix);
  }
  if (c.learned_combine) {
    const int64_t terms = h * c.combine_terms();
    f("w_comb", std::vector<int64_t>{d, terms}, w.w_comb);
    f("b_comb", std::vector<int64_t>{terms}, w.b_comb);
  }
  // The memory model's tensors (MemoryConfig::model_tensors; "mlp" names them for every model).
  for (int i = 0; i < c.model_tensors() && static_cast<size_t>(i) < w.mlp.size(); ++i) {
    f("mlp." + std::to_string(i), std::vector<int64_t>{h, c.tensor_rows(i), c.tensor_cols(i)},
      w.mlp[static_cast<size_t>(i)]);
  }
  if (c.output == MemoryOutput::kLnResidual) f("gain", std::vector<int64_t>{h, dh}, w.gain);
  if (c.post_norm) f("post_norm", std::vector<int64_t>{h, dh}, w.post_norm);
  if (c.output_gate) f("w_gate", std::vector<int64_t>{d, h}, w.w_gate);
  if (c.output_proj) f("w_out", std::vector<int64_t>{hd, d}, w.w_out);
  if (c.transition_gate) f("transition_gate", std::vector<int64_t>{1}, w.transition_gate);
}

template <class State, class F>
void ForEachStateTensor(const MemoryConfig& c, State& s, F&& f) {
  const int64_t h = c.heads, dh = c.head_dim, hd = c.inner_dim(), u = c.unit();
  const int tensors = c.model_tensors();
  for (int l = 0; l < tensors; ++l) {
    const std::vector<int64_t> shape{h, c.tensor_rows(l), c.tensor_cols(l)};
    const auto i = static_cast<size_t>(l);
    f("w_cur." + std::to_string(l), shape, s.w_cur.at(i));
    f("w_base." + std::to_string(l), shape, s.w_base.at(i));
    if (c.momentum) f("momentum." + std::to_string(l), shape, s.momentum.at(i));
  }
  // Momentum orders 2..O: tensor (o - 2) * model_tensors() + i of momentum_high.
  for (int o = 2; o <= c.momentum_order; ++o) {
    for (int l = 0; l < tensors; ++l) {
      f("momentum_" + std::to_string(o) + "." + std::to_string(l),
        std::vector<int64_t>{h, c.tensor_rows(l), c.tensor_cols(l)},
        s.momentum_high.at(static_cast<size_t>(o - 2) * static_cast<size_t>(tensors) +
                           static_cast<size_t>(l)));
    }
  }
  if (c.output == MemoryOutput::kLnResidual) {
    f("g_cur", std::vector<int64_t>{h, dh}, s.g_cur);
    f("g_base", std::vector<int64_t>{h, dh}, s.g_base);
    if (c.momentum) f("g_momentum", std::vector<int64_t>{h, dh}, s.g_momentum);
    if (c.momentum_order > 1) {
      f("g_momentum_high", std::vector<int64_t>{c.momentum_order - 1, h, dh}, s.g_momentum_high);
    }
  }
  if (c.conv_kernel > 1) {
    f("conv_q", std::vector<int64_t>{c.conv_kernel - 1, hd}, s.conv_q);
    f("conv_k", std::vector<int64_t>{c.conv_kernel - 1, hd}, s.conv_k);
    f("conv_v", std::vector<int64_t>{c.conv_kernel - 1, hd}, s.conv_v);
    f("conv_q_read", std::vector<int64_t>{c.conv_kernel - 1, hd}, s.conv_q_read);
  }
  f("pending_k", std::vector<int64_t>{u, hd}, s.pending_k);
  f("pending_v", std::vector<int64_t>{u, hd}, s.pending_v);
  f("pending_gates", std::vector<int64_t>{u, c.gate_columns()}, s.pending_gates);
  if (c.attention_pool) f("pending_x", std::vector<int64_t>{u, c.d_model}, s.pending_x);
}

template <class View, class Visit, class Object>
std::vector<View> Views(const MemoryConfig& c, Object& object, Visit visit) {
  std::vector<View> views;
  visit(c, object, [&views](std::string name, std::vector<int64_t> shape, auto& vec) {
    views.push_back(View{std::move(name), std::move(shape), vec.data()});
  });
  return views;
}

// How Random fills a weight: value = offset + scale * N(0, 1).
struct InitRule {
  float offset, scale;
};
InitRule RuleFor(const MemoryConfig& c, const std::string& name) {
  const float inv_sqrt_d = 1.0f / std::sqrt(static_cast<float>(c.d_model));
  if (name.ends_with("_norm")) return {1.0f, 0.1f};  // RMSNorm gains near 1
  if (name.starts_with("conv_")) return {0.0f, 0.5f};
  if (name == "b_theta") {
    // Stable steps: up to max(chunk, step) gradients are summed at one W_base, momentum
    // multiplies a step by about 1/(1 - eta) = 8, and the loss curvature is about 2 lambda
    // |a|^2 for a layer input a: 1 for the keys (unit scale: L2-normalised, or RMS-scaled with
    // the 1/dh loss), about 0.3 dm lambda for a hidden layer's activations.
    const double lambda = c.loss == LossScale::kMean ? 1.0 / c.head_dim : 1.0;
    const double curvature = c.depth > 1 ? std::max(1.0, 0.3 * c.hidden_dim() * lambda) : 1.0;
    const int gradients = std::max(c.chunk, c.step);
    const double p =
        std::clamp(0.05 / (gradients * curvature) / std::max(c.max_lr, 1e-6f), 1e-7, 0.5);
    return {static_cast<float>(std::log(p / (1.0 - p))), 0.2f};
  }
  if (name == "b_eta") return {2.0f, 0.2f};  // eta ~ 0.88
  if (name == "b_alpha") {
    // Forget about a thousandth per token: a half-life near 700 tokens.
    const double p = std::min(0.5, 1e-3 * c.step);
    return {static_cast<float>(std::log(p / (1.0 - p))), 0.2f};
  }
  if (name == "gain") return {0.0f, 0.1f};             // g of LN(.) * (1 + g)
  if (name == "b_mod") return {0.0f, 1.0f};            // modulation factors spread around 1/2
  if (name == "transition_gate") return {0.0f, 1.0f};  // keeps about half a commit block
  if (name == "w_out") return {0.0f, 1.0f / std::sqrt(static_cast<float>(c.inner_dim()))};
  if (name.starts_with("mlp.")) {
    const int i = std::stoi(name.substr(4));
    if (c.tensor_is_vector(i)) return {0.0f, 0.1f};  // a LayerNorm gain g of (1 + g)
    return {0.0f, 1.0f / std::sqrt(static_cast<float>(c.tensor_rows(i)))};
  }
  return {0.0f, inv_sqrt_d};  // projections from the d-wide input
}

}  // namespace

std::vector<TensorView> MemoryWeights::Tensors(const MemoryConfig& config) {
  return Views<TensorView>(config, *this, [](auto&&... a) { ForEachWeight(a...); });
}
std::vector<ConstTensorView> MemoryWeights::Tensors(const MemoryConfig& config) const {
  return Views<ConstTensorView>(config, *this, [](auto&&... a) { ForEachWeight(a...); });
}

MemoryWeights MemoryWeights::Zeros(const MemoryConfig& config) {
  config.Validate();
  MemoryWeights w;
  w.mlp.resize(static_cast<size_t>(config.model_tensors()));
  ForEachWeight(config, w,
                [](const std::string&, const std::vector<int64_t>& shape, std::vector<float>& vec) {
                  vec.assign(static_cast<size_t>(Product(shape)), 0.0f);
                });
  return w;
}

MemoryWeights MemoryWeights::Random(const MemoryConfig& config, uint64_t seed) {
  MemoryWeights w = Zeros(config);
  NormalRng rng(seed);
  for (TensorView& view : w.Tensors(config)) {
    const InitRule rule = RuleFor(config, view.name);
    for (int64_t i = 0; i < view.size(); ++i) view.data[i] = rule.offset + rule.scale * rng.Next();
  }
  return w;
}

void MemoryWeights::Validate(const MemoryConfig& config) const {
  if (mlp.size() != static_cast<size_t>(config.model_tensors())) {
    throw Error(ErrorCode::kMismatch, "memory weights: " + std::to_string(mlp.size()) +
                                          " memory model tensors, the config's " +
                                          ToString(config.model) + " model of depth " +
                                          std::to_string(config.depth) + " has " +
                                          std::to_string(config.model_tensors()));
  }
  ForEachWeight(config, *this,
                [](const std::string& name, const std::vector<int64_t>& shape,
                   const std::vector<float>& vec) {
                  if (vec.size() != static_cast<size_t>(Product(shape))) {
                    throw Error(ErrorCode::kMismatch,
                                "memory weight '" + name + "' has " + std::to_string(vec.size()) +
                                    " values, the config needs " + std::to_string(Product(shape)));
                  }
                  for (float x : vec) {
                    if (!std::isfinite(x)) {
                      throw Error(ErrorCode::kInvalidArgument,
                                  "memory weight '" + name + "' is not finite");
                    }
                  }
                });
}

const char* ToString(WeightType type) { return type == WeightType::kBf16 ? "bf16" : "f32"; }

bool IsBf16Candidate(std::string_view name) {
  const std::string_view leaf = name.substr(name.rfind('.') + 1);  // all of it without a '.'
  for (const std::string_view product :
       {"w_q", "w_k", "w_v", "w_o", "w_g", "ffn_gate", "ffn_up", "ffn_down", "lm_head"}) {
    if (leaf == product) return true;
  }
  return false;
}

NeuralMemory::NeuralMemory(MemoryConfig config, MemoryWeights weights, WeightType weight_type)
    : config_(config), weights_(std::move(weights)), weight_type_(weight_type) {
  config_.Validate();
  weights_.Validate(config_);
  bf16_ = ops::Bf16Copies::Of(weights_.Tensors(config_), weight_type_, "memory weight");
}

NeuralMemory::NeuralMemory(const NeuralMemory& other)
    : NeuralMemory(other.config_, other.weights_, other.weight_type_) {}

MemoryState MemoryState::Initial(const NeuralMemory& memory) {
  const MemoryConfig& c = memory.config();
  const MemoryWeights& w = memory.weights();
  MemoryState s;
  s.w_cur = w.mlp;
  s.w_base = w.mlp;
  if (c.momentum) {
    for (const auto& layer : w.mlp) s.momentum.emplace_back(layer.size(), 0.0f);
  }
  for (int o = 2; o <= c.momentum_order; ++o) {
    for (const auto& layer : w.mlp) s.momentum_high.emplace_back(layer.size(), 0.0f);
  }
  if (c.output == MemoryOutput::kLnResidual) {
    s.g_cur = w.gain;
    s.g_base = w.gain;
    if (c.momentum) s.g_momentum.assign(w.gain.size(), 0.0f);
    s.g_momentum_high.assign(w.gain.size() * static_cast<size_t>(c.momentum_order - 1), 0.0f);
  }
  const size_t hd = static_cast<size_t>(c.inner_dim());
  const size_t tail = static_cast<size_t>(std::max(c.conv_kernel - 1, 0));
  s.conv_q.assign(tail * hd, 0.0f);
  s.conv_k.assign(tail * hd, 0.0f);
  s.conv_v.assign(tail * hd, 0.0f);
  s.conv_q_read.assign(tail * hd, 0.0f);
  const size_t u = static_cast<size_t>(c.unit());
  s.pending_k.assign(u * hd, 0.0f);
  s.pending_v.assign(u * hd, 0.0f);
  s.pending_gates.assign(u * static_cast<size_t>(c.gate_columns()), 0.0f);
  if (c.attention_pool) s.pending_x.assign(u * static_cast<size_t>(c.d_model), 0.0f);
  return s;
}

std::vector<TensorView> MemoryState::Tensors(const MemoryConfig& config) {
  return Views<TensorView>(config, *this, [](auto&&... a) { ForEachStateTensor(a...); });
}
std::vector<ConstTensorView> MemoryState::Tensors(const MemoryConfig& config) const {
  return Views<ConstTensorView>(config, *this, [](auto&&... a) { ForEachStateTensor(a...); });
}

}  // namespace titans
