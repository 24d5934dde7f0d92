// Memory files: NeuralMemory::Save / Load (learned weights) and MemorySession::Save / Load
// (one stream's state). Both are safetensors (src/io/safetensors.hpp) holding
//   metadata  "format": "titans.memory" or "titans.memory_state", "format_version": "1",
//             "config": MemoryConfig::ToJson();
//   tensors   weights: every tensor of MemoryWeights::Tensors(config) as F32;
//             state: "position" I64 [1], "pending" I64 [1], then every tensor of
//             MemoryState::Tensors(config) as F32.
// docs/STATE_FORMAT.md describes both. Loading builds the new object completely and checks it
// before anything is replaced, so a failed Load leaves the session as it was.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>

#include "io/checked_file.hpp"
#include "io/safetensors.hpp"
#include "titans/error.hpp"
#include "titans/memory.hpp"

namespace titans {
namespace {

using io::Fail;
using io::Truncated;

constexpr const char* kWeightsFormat = "titans.memory";
constexpr const char* kStateFormat = "titans.memory_state";
constexpr const char* kPosition = "position";
constexpr const char* kPending = "pending";

// SetState ends with `state_ = std::move(...)`, which must not throw: a failed Load must leave
// the session as it was.
static_assert(std::is_nothrow_move_assignable_v<MemoryState>);

// Names the first config field in which the file's config differs from this memory's (both in
// the canonical ToJson form, which lists every field in a fixed order).
std::string DescribeDifference(const MemoryConfig& file, const MemoryConfig& ours) {
  const std::string file_json = file.ToJson(), our_json = ours.ToJson();
  const auto a = nlohmann::ordered_json::parse(file_json),
             b = nlohmann::ordered_json::parse(our_json);
  // Optional keys (MemoryConfig 1.7) may be in one and not the other: absent reads "off".
  auto shown = [](const nlohmann::ordered_json& j, const std::string& key) {
    return j.contains(key) ? j.at(key).dump() : std::string("(absent: off)");
  };
  for (const auto* keys : {&b, &a}) {
    for (const auto& [key, value] : keys->items()) {
      if (shown(a, key) != shown(b, key)) {
        return "the file is for " + key + " = " + shown(a, key) + ", this memory has " + key +
               " = " + shown(b, key);
      }
    }
  }
  // Only reachable if ToJson ever leaves out a field that operator== compares.
  return "the configs differ: file " + Truncated(file_json) + ", this memory " +
         Truncated(our_json);
}

}  // namespace

std::shared_ptr<const NeuralMemory> NeuralMemory::Load(const std::string& path) {
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);
  const MemoryConfig config =
      io::ParseConfig<MemoryConfig>(path, io::CheckHeader(path, file, "memory", kWeightsFormat));
  {  // the file holds every tensor of the config before any is allocated (Model::Load too)
    MemoryWeights skeleton;  // empty vectors: names and shapes only
    skeleton.mlp.resize(static_cast<size_t>(config.model_tensors()));
    io::CheckTensors(path, file, skeleton.Tensors(config));
  }
  MemoryWeights weights = MemoryWeights::Zeros(config);
  io::ReadTensors(path, file, weights.Tensors(config));
  return std::make_shared<const NeuralMemory>(config, std::move(weights));
}

void NeuralMemory::Save(const std::string& path) const {
  std::vector<io::TensorToWrite> tensors;
  for (const ConstTensorView& view : weights_.Tensors(config_)) {
    tensors.push_back({view.name, io::DType::kF32, view.shape, view.data});
  }
  io::WriteSafetensors(path,
                       {{"format", kWeightsFormat},
                        {"format_version", io::FormatVersion(config_.UsesTitansPytorchOptions())},
                        {"config", config_.ToJson()}},
                       tensors);
}

void MemorySession::Save(const std::string& path) const {
  const MemoryConfig& config = memory_->config();
  const int64_t pending = state_.pending;
  std::vector<io::TensorToWrite> tensors{
      {kPosition, io::DType::kI64, {1}, &state_.position},
      {kPending, io::DType::kI64, {1}, &pending},
  };
  for (const ConstTensorView& view : state_.Tensors(config)) {
    tensors.push_back({view.name, io::DType::kF32, view.shape, view.data});
  }
  io::WriteSafetensors(path,
                       {{"format", kStateFormat},
                        {"format_version", io::FormatVersion(config.UsesTitansPytorchOptions())},
                        {"config", config.ToJson()}},
                       tensors);
}

void MemorySession::Load(const std::string& path) {
  const MemoryConfig& config = memory_->config();
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);

  const MemoryConfig saved = io::ParseConfig<MemoryConfig>(
      path, io::CheckHeader(path, file, "memory state", kStateFormat));
  if (!(saved == config)) {
    Fail(ErrorCode::kMismatch, path,
         "state saved for another memory config: " + DescribeDifference(saved, config));
  }

  // Initial() sizes every buffer for this config; the file then overwrites all of them.
  MemoryState next = MemoryState::Initial(*memory_);
  next.position = io::ReadI64Scalar(path, file, kPosition);
  next.pending = static_cast<int>(std::clamp<int64_t>(io::ReadI64Scalar(path, file, kPending), -1,
                                                      std::numeric_limits<int>::max()));
  io::ReadTensors(path, file, next.Tensors(config), {kPosition, kPending});
  try {
    SetState(std::move(next));  // checks position and pending
  } catch (const Error& e) {
    Fail(ErrorCode::kFormat, path, e.what());
  }
}

}  // namespace titans
