// Model: construction and model files (Model::Save / Model::Load). A model file is safetensors
// (src/io/safetensors.hpp) holding
//   metadata  "format": "titans.model", "format_version": "1", "config": ModelConfig::ToJson();
//   tensors   every tensor of ModelWeights::Tensors(config) in table order, as F32; a kBf16
//             model's product matrices (IsBf16Candidate) as BF16.
// docs/FILE_FORMAT.md describes it. Load checks the whole file against the config before the
// model is built, so a model that loads is complete and finite.
#include "titans/model.hpp"

#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>

#include "io/checked_file.hpp"
#include "io/safetensors.hpp"
#include "ops/bf16.hpp"
#include "titans/error.hpp"

namespace titans {
namespace {

constexpr const char* kModelFormat = "titans.model";

// The config's tensor table (names and shapes; no data: every view's pointer is null), from
// weights whose vectors are all empty: nothing proportional to the tensors is allocated.
std::vector<TensorView> TableOf(const ModelConfig& config, ModelWeights& skeleton) {
  const size_t layers = config.layers.size();
  if (config.architecture == Architecture::kTitansPytorchMac) {
    skeleton.tp_mac.layers.resize(layers);
    for (TpMacLayerWeights& l : skeleton.tp_mac.layers) {
      l.memory.mlp.resize(static_cast<size_t>(config.memory.model_tensors()));
    }
  } else {
    skeleton.layers.resize(layers);
    for (LayerWeights& l : skeleton.layers) {
      l.memory.memory.mlp.resize(static_cast<size_t>(config.memory.model_tensors()));
    }
  }
  return skeleton.Tensors(config);
}

}  // namespace

Model::Model(ModelConfig config, ModelWeights weights, WeightType weight_type)
    : config_(std::move(config)), weights_(std::move(weights)), weight_type_(weight_type) {
  config_.Validate();
  weights_.Validate(config_);
  // The memories' projections are rounded here too (weights() shows what is computed with);
  // each NeuralMemory keeps the bf16 copies of its own.
  bf16_ = ops::Bf16Copies::Of(weights_.Tensors(config_), weight_type_, "model weight");
  memories_.resize(config_.layers.size());
  const bool tp_mac = config_.architecture == Architecture::kTitansPytorchMac;
  for (size_t l = 0; l < config_.layers.size(); ++l) {
    if (HasMemory(config_.layers[l])) {
      memories_[l] = std::make_shared<const NeuralMemory>(
          config_.memory,
          tp_mac ? weights_.tp_mac.layers[l].memory : weights_.layers[l].memory.memory,
          weight_type_);
    }
  }
}

Model::Model(const Model& other) : Model(other.config_, other.weights_, other.weight_type_) {}

const std::shared_ptr<const NeuralMemory>& Model::memory(int layer) const {
  if (layer < 0 || static_cast<size_t>(layer) >= memories_.size()) {
    throw Error(ErrorCode::kInvalidArgument, "Model::memory: layer " + std::to_string(layer) +
                                                 " out of range (the model has " +
                                                 std::to_string(memories_.size()) + " layers)");
  }
  return memories_[static_cast<size_t>(layer)];
}

std::shared_ptr<const Model> Model::Load(const std::string& path) {
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);
  const ModelConfig config =
      io::ParseConfig<ModelConfig>(path, io::CheckHeader(path, file, "model", kModelFormat));
  // Every tensor the config implies must be in the file, of its shape, before any is
  // allocated: a small file whose config asks for a huge model fails here, having allocated
  // nothing in proportion to it (the file's own tensors are bounded by its size).
  {
    ModelWeights skeleton;
    io::CheckTensors(path, file, TableOf(config, skeleton), {}, true);
  }
  ModelWeights weights = ModelWeights::Zeros(config);
  const WeightType type = io::ReadTensors(path, file, weights.Tensors(config), {}, true);
  return std::make_shared<const Model>(config, std::move(weights), type);
}

void Model::Save(const std::string& path) const {
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<uint16_t>> bf16_values;  // the BF16 tensors' data
  for (const ConstTensorView& view : weights_.Tensors(config_)) {
    if (weight_type_ == WeightType::kBf16 && IsBf16Candidate(view.name)) {
      // Exact: the values were rounded to bf16 at construction.
      std::vector<uint16_t>& values = bf16_values.emplace_back(static_cast<size_t>(view.size()));
      for (size_t i = 0; i < values.size(); ++i) values[i] = bf16::FromFloat(view.data[i]);
      tensors.push_back({view.name, io::DType::kBF16, view.shape, values.data()});
    } else {
      tensors.push_back({view.name, io::DType::kF32, view.shape, view.data});
    }
  }
  io::WriteSafetensors(path,
                       {{"format", kModelFormat},
                        {"format_version", io::FormatVersion(config_.UsesTitansPytorchOptions())},
                        {"config", config_.ToJson()}},
                       tensors);
}

}  // namespace titans
