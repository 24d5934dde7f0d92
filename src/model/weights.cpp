// The model's weight table: one place that names every tensor of a model and its shape (the
// file format, docs/FILE_FORMAT.md), used by the views, validation, allocation and random
// initialisation alike. Each architecture has its table (src/model/arch/titans_weights.hpp,
// src/model/arch/titans_pytorch_mac_weights.hpp), walked by the same code here. The memory
// layers' own tensors come from the memory's table (MemoryWeights), prefixed with
// "layers.<l>.memory.".
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <string_view>

#include "model/arch/titans_pytorch_mac_weights.hpp"
#include "model/arch/titans_weights.hpp"
#include "ops/random.hpp"
#include "titans/error.hpp"
#include "titans/model.hpp"

namespace titans {
namespace {

int64_t Product(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

// The tensor table of the model's architecture (src/model/arch/): tensor(name, shape, vector&)
// for every plain tensor `c` uses and memory(layer, prefix, MemoryWeights&) for the NeuralMemory
// of every memory layer, in file order.
template <class Weights, class Tensor, class Memory>
void ForEachWeight(const ModelConfig& c, Weights& w, Tensor&& tensor, Memory&& memory) {
  if (c.architecture == Architecture::kTitansPytorchMac) {
    arch::ForEachTitansPytorchMacWeight(c, w, tensor, memory);
  } else {
    arch::ForEachTitansWeight(c, w, tensor, memory);
  }
}

template <class View, class Weights>
std::vector<View> Views(const ModelConfig& c, Weights& w) {
  std::vector<View> views;
  ForEachWeight(
      c, w,
      [&views](std::string name, std::vector<int64_t> shape, auto& vec) {
        views.push_back(View{std::move(name), std::move(shape), vec.data()});
      },
      [&views, &c](size_t, const std::string& prefix, auto& memory) {
        for (auto& view : memory.Tensors(c.memory)) {
          views.push_back(View{prefix + view.name, std::move(view.shape), view.data});
        }
      });
  return views;
}

// Random: value = offset + scale * N(0, 1). Norm gains near 1, persistent keys/values and the
// embedding unit normal, every projection (in, out) N(0, 1/in) so activations keep their scale.
// Hyper-connections (titans-pytorch MAC) start near their package init: small dynamic scales,
// output weights 2 sigmoid(1).
struct InitRule {
  float offset, scale;
};
InitRule RuleFor(const std::string& name, const std::vector<int64_t>& shape) {
  const std::string_view leaf = std::string_view(name).substr(name.rfind('.') + 1);
  if (leaf == "alpha_scale" || leaf == "beta_scale") return {0.01f, 0.001f};
  if (leaf == "static_beta") return {1.0f, 0.1f};
  if (leaf.find("norm") != std::string_view::npos) return {1.0f, 0.1f};
  if (leaf.starts_with("persistent_") || name == "embedding") return {0.0f, 1.0f};
  return {0.0f, 1.0f / std::sqrt(static_cast<float>(shape.front()))};
}

// MemoryWeights::Validate's message without its code prefix, so it can be re-thrown with the
// layer's name in front.
std::string WithoutCodePrefix(const Error& e) {
  const std::string what = e.what(), prefix = std::string(ToString(e.code())) + ": ";
  return what.starts_with(prefix) ? what.substr(prefix.size()) : what;
}

}  // namespace

std::vector<TensorView> ModelWeights::Tensors(const ModelConfig& config) {
  return Views<TensorView>(config, *this);
}
std::vector<ConstTensorView> ModelWeights::Tensors(const ModelConfig& config) const {
  return Views<ConstTensorView>(config, *this);
}

ModelWeights ModelWeights::Zeros(const ModelConfig& config) {
  config.Validate();
  ModelWeights w;
  if (config.architecture == Architecture::kTitansPytorchMac) {
    w.tp_mac.layers.resize(config.layers.size());
  } else {
    w.layers.resize(config.layers.size());
  }
  ForEachWeight(
      config, w,
      [](const std::string&, const std::vector<int64_t>& shape, std::vector<float>& vec) {
        vec.assign(static_cast<size_t>(Product(shape)), 0.0f);
      },
      [&config](size_t, const std::string&, MemoryWeights& memory) {
        memory = MemoryWeights::Zeros(config.memory);
      });
  return w;
}

ModelWeights ModelWeights::Random(const ModelConfig& config, uint64_t seed) {
  ModelWeights w = Zeros(config);
  // Stream 0 fills the model's own tensors in table order; memory layer l gets stream l + 1,
  // so each layer's memory differs and no tensor depends on which others the config has.
  NormalRng rng(DeriveSeed(seed, 0));
  ForEachWeight(
      config, w,
      [&rng](const std::string& name, const std::vector<int64_t>& shape, std::vector<float>& vec) {
        const InitRule rule = RuleFor(name, shape);
        for (float& x : vec) x = rule.offset + rule.scale * rng.Next();
      },
      [&config, seed](size_t layer, const std::string&, MemoryWeights& memory) {
        memory = MemoryWeights::Random(config.memory, DeriveSeed(seed, layer + 1));
      });
  return w;
}

void ModelWeights::Validate(const ModelConfig& config) const {
  const size_t count =
      config.architecture == Architecture::kTitansPytorchMac ? tp_mac.layers.size() : layers.size();
  if (count != config.layers.size()) {
    throw Error(ErrorCode::kMismatch, "model weights: " + std::to_string(count) +
                                          " layers, the config has " +
                                          std::to_string(config.layers.size()));
  }
  ForEachWeight(
      config, *this,
      [](const std::string& name, const std::vector<int64_t>& shape,
         const std::vector<float>& vec) {
        if (vec.size() != static_cast<size_t>(Product(shape))) {
          throw Error(ErrorCode::kMismatch,
                      "model weight '" + name + "' has " + std::to_string(vec.size()) +
                          " values, the config needs " + std::to_string(Product(shape)));
        }
        for (float x : vec) {
          if (!std::isfinite(x)) {
            throw Error(ErrorCode::kInvalidArgument, "model weight '" + name + "' is not finite");
          }
        }
      },
      [&config](size_t, const std::string& prefix, const MemoryWeights& memory) {
        try {
          memory.Validate(config.memory);
        } catch (const Error& e) {
          throw Error(e.code(), "model weights '" + prefix + "*': " + WithoutCodePrefix(e));
        }
      });
}

}  // namespace titans
