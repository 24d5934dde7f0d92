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
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>

#include "io/safetensors.hpp"
#include "titans/error.hpp"
#include "titans/memory.hpp"

namespace titans {
namespace {

constexpr const char* kWeightsFormat = "titans.memory";
constexpr const char* kStateFormat = "titans.memory_state";
constexpr const char* kFormatVersion = "1";
constexpr const char* kPosition = "position";
constexpr const char* kPending = "pending";

// The final `state_ = std::move(next)` must not throw, or a failed Load could leave it half set.
static_assert(std::is_nothrow_move_assignable_v<MemoryState>);

[[noreturn]] void Fail(ErrorCode code, const std::string& path, const std::string& problem) {
  throw Error(code, path + ": " + problem);
}

const std::string& RequireMetadata(const std::string& path, const io::SafetensorsFile& file,
                                   const std::string& key) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end()) {
    Fail(ErrorCode::kFormat, path,
         "not a titans memory file (no \"" + key + "\" in the metadata)");
  }
  return it->second;
}

std::string Truncated(const std::string& s, size_t limit = 200) {
  return s.size() <= limit ? s : s.substr(0, limit) + "...";
}

// Names the first config field in which the file's config differs from this memory's (both in
// the canonical ToJson form, which lists every field in a fixed order).
std::string DescribeDifference(const MemoryConfig& file, const MemoryConfig& ours) {
  const std::string file_json = file.ToJson(), our_json = ours.ToJson();
  const auto a = nlohmann::ordered_json::parse(file_json),
             b = nlohmann::ordered_json::parse(our_json);
  for (const auto& [key, value] : b.items()) {
    if (a.at(key) != value) {
      return "the file is for " + key + " = " + a.at(key).dump() + ", this memory has " + key +
             " = " + value.dump();
    }
  }
  // Only reachable if ToJson ever leaves out a field that operator== compares.
  return "the configs differ: file " + Truncated(file_json) + ", this memory " +
         Truncated(our_json);
}

// The config matched, so a missing or misshapen tensor means a malformed file (kFormat), not
// one saved for another memory (kMismatch).
const io::TensorRecord& RequireTensor(const std::string& path, const io::SafetensorsFile& file,
                                      const std::string& name, io::DType dtype,
                                      const std::vector<int64_t>& shape) {
  const io::TensorRecord* t = file.Find(name);
  auto describe = [](io::DType type, const std::vector<int64_t>& dims) {
    std::string s = std::string(io::ToString(type)) + " [";
    for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
  };
  if (t == nullptr || t->dtype != dtype || t->shape != shape) {
    Fail(ErrorCode::kFormat, path,
         "tensor \"" + name + "\": expected " + describe(dtype, shape) + ", " +
             (t == nullptr ? "missing" : "found " + describe(t->dtype, t->shape)));
  }
  return *t;
}

int64_t ReadI64Scalar(const std::string& path, const io::SafetensorsFile& file,
                      const std::string& name) {
  const io::TensorRecord& t = RequireTensor(path, file, name, io::DType::kI64, {1});
  int64_t value = 0;
  std::memcpy(&value, t.bytes.data(), sizeof value);
  return value;
}

// Checks format and version and returns the config stored in the metadata.
MemoryConfig ReadHeader(const std::string& path, const io::SafetensorsFile& file,
                        const char* expected_format) {
  const std::string& format = RequireMetadata(path, file, "format");
  if (format != expected_format) {
    Fail(ErrorCode::kFormat, path,
         "format is \"" + Truncated(format) + "\", expected \"" + expected_format + "\"");
  }
  const std::string& version = RequireMetadata(path, file, "format_version");
  if (version != kFormatVersion) {
    Fail(ErrorCode::kFormat, path,
         "unsupported format_version \"" + Truncated(version) + "\" (this build reads " +
             kFormatVersion + ")");
  }
  try {
    return MemoryConfig::FromJson(RequireMetadata(path, file, "config"));
  } catch (const Error& e) {  // malformed JSON (kFormat) or an invalid config (kConfig)
    Fail(ErrorCode::kFormat, path, std::string("bad config in the metadata: ") + e.what());
  }
}

// Reads every tensor of `views` (F32, exact shape, finite) and rejects any other tensor than
// those and `also_expected`.
template <class Views>
void ReadTensors(const std::string& path, const io::SafetensorsFile& file, const Views& views,
                 std::set<std::string> also_expected) {
  for (const TensorView& view : views) {
    RequireTensor(path, file, view.name, io::DType::kF32, view.shape);
    file.ReadF32(view.name, view.shape, {view.data, static_cast<size_t>(view.size())});
    for (int64_t i = 0; i < view.size(); ++i) {
      if (!std::isfinite(view.data[i])) {
        Fail(ErrorCode::kFormat, path,
             "tensor \"" + view.name + "\" has a non-finite value at flat index " +
                 std::to_string(i));
      }
    }
    also_expected.insert(view.name);
  }
  for (const io::TensorRecord& t : file.tensors()) {
    if (!also_expected.count(t.name)) {
      Fail(ErrorCode::kFormat, path, "unexpected tensor \"" + t.name + "\"");
    }
  }
}

}  // namespace

std::shared_ptr<const NeuralMemory> NeuralMemory::Load(const std::string& path) {
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);
  const MemoryConfig config = ReadHeader(path, file, kWeightsFormat);
  MemoryWeights weights = MemoryWeights::Zeros(config);
  ReadTensors(path, file, weights.Tensors(config), {});
  return std::make_shared<const NeuralMemory>(config, std::move(weights));
}

void NeuralMemory::Save(const std::string& path) const {
  std::vector<io::TensorToWrite> tensors;
  for (const ConstTensorView& view : weights_.Tensors(config_)) {
    tensors.push_back({view.name, io::DType::kF32, view.shape, view.data});
  }
  io::WriteSafetensors(
      path,
      {{"format", kWeightsFormat}, {"format_version", kFormatVersion}, {"config", config_.ToJson()}},
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
  io::WriteSafetensors(
      path,
      {{"format", kStateFormat}, {"format_version", kFormatVersion}, {"config", config.ToJson()}},
      tensors);
}

void MemorySession::Load(const std::string& path) {
  const MemoryConfig& config = memory_->config();
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);

  const MemoryConfig saved = ReadHeader(path, file, kStateFormat);
  if (!(saved == config)) {
    Fail(ErrorCode::kMismatch, path,
         "state saved for another memory config: " + DescribeDifference(saved, config));
  }

  // Initial() sizes every buffer for this config; the file then overwrites all of them.
  MemoryState next = MemoryState::Initial(*memory_);
  next.position = ReadI64Scalar(path, file, kPosition);
  if (next.position < 0) {
    Fail(ErrorCode::kFormat, path, "position " + std::to_string(next.position) + " < 0");
  }
  // A unit is written as soon as its last token arrives and units start at position 0, so the
  // tokens waiting are exactly position mod U (U >= 1 for every valid config).
  const int64_t unit = config.unit();
  const int64_t pending = ReadI64Scalar(path, file, kPending);
  if (pending != next.position % unit) {
    Fail(ErrorCode::kFormat, path,
         "pending " + std::to_string(pending) + " does not match position " +
             std::to_string(next.position) + " (it must be position mod " +
             std::to_string(unit) + ")");
  }
  next.pending = static_cast<int>(pending);

  ReadTensors(path, file, next.Tensors(config), {kPosition, kPending});
  state_ = std::move(next);
}

}  // namespace titans
