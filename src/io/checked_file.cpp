#include "io/checked_file.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "io/json.hpp"

namespace titans::io {

void Fail(ErrorCode code, const std::string& path, const std::string& problem) {
  throw Error(code, path + ": " + problem);
}

std::string Truncated(const std::string& s, size_t limit) {
  return s.size() <= limit ? s : s.substr(0, limit) + "...";
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {
const std::string& RequireMetadata(const std::string& path, const SafetensorsFile& file,
                                   const std::string& what, const std::string& key) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end()) {
    Fail(ErrorCode::kFormat, path,
         "not a titans " + what + " file (no \"" + key + "\" in the metadata)");
  }
  return it->second;
}
}  // namespace

const std::string& CheckHeader(const std::string& path, const SafetensorsFile& file,
                               const std::string& what, const char* format) {
  const std::string& found = RequireMetadata(path, file, what, "format");
  if (found != format) {
    Fail(ErrorCode::kFormat, path, "format is " + Quoted(found) + ", expected \"" + format + "\"");
  }
  const std::string& found_version = RequireMetadata(path, file, what, "format_version");
  if (found_version != FormatVersion(false) && found_version != FormatVersion(true)) {
    Fail(ErrorCode::kFormat, path,
         "unsupported format_version " + Quoted(found_version) + " (this build reads 1 and 2)");
  }
  return RequireMetadata(path, file, what, "config");
}

const TensorRecord& RequireTensor(const std::string& path, const SafetensorsFile& file,
                                  const std::string& name, DType dtype,
                                  const std::vector<int64_t>& shape) {
  const TensorRecord* t = file.Find(name);
  const std::string expected = std::string(ToString(dtype)) + " " + ShapeString(shape);
  if (t == nullptr) {
    Fail(ErrorCode::kFormat, path, "missing tensor \"" + name + "\" (expected " + expected + ")");
  }
  if (t->dtype != dtype) {
    Fail(ErrorCode::kFormat, path,
         "tensor \"" + name + "\" has dtype " + ToString(t->dtype) + ", expected " + expected);
  }
  if (t->shape != shape) {
    Fail(ErrorCode::kFormat, path,
         "tensor \"" + name + "\" has shape " + ShapeString(t->shape) + ", expected " +
             ShapeString(shape));
  }
  return *t;
}

int64_t ReadI64Scalar(const std::string& path, const SafetensorsFile& file,
                      const std::string& name) {
  const TensorRecord& t = RequireTensor(path, file, name, DType::kI64, {1});
  int64_t value = 0;
  std::memcpy(&value, t.bytes.data(), sizeof value);
  return value;
}

WeightType CheckTensors(const std::string& path, const SafetensorsFile& file,
                        const std::vector<TensorView>& views, const std::set<std::string>& others,
                        bool bf16_candidates) {
  std::unordered_map<std::string, const TensorRecord*> records;
  for (const TensorRecord& t : file.tensors()) {
    if (!others.count(t.name)) records.emplace(t.name, &t);
  }
  // The first candidate decides; each later one must agree with it.
  const std::string* first_candidate = nullptr;
  WeightType type = WeightType::kF32;
  for (const TensorView& view : views) {
    const TensorRecord* t = file.Find(view.name);
    const bool candidate = bf16_candidates && IsBf16Candidate(view.name);
    const bool bf16 = candidate && t != nullptr && t->dtype == DType::kBF16;
    if (candidate && t != nullptr && (t->dtype == DType::kF32 || bf16)) {
      const WeightType stored = bf16 ? WeightType::kBf16 : WeightType::kF32;
      if (first_candidate == nullptr) {
        first_candidate = &view.name;
        type = stored;
      } else if (stored != type) {
        Fail(ErrorCode::kFormat, path,
             "tensor " + Quoted(view.name) + " is " + ToString(t->dtype) + " but " +
                 Quoted(*first_candidate) + " is " + (type == WeightType::kBf16 ? "BF16" : "F32") +
                 ": a model stores all its product matrices as F32 or all as BF16");
      }
    }
    RequireTensor(path, file, view.name, bf16 ? DType::kBF16 : DType::kF32, view.shape);
    records.erase(view.name);
  }
  // Name the first leftover in file order, so the message does not depend on hashing.
  for (const TensorRecord& t : file.tensors()) {
    if (records.count(t.name)) {
      Fail(ErrorCode::kFormat, path,
           "unexpected tensor " + Quoted(t.name) + " (" + std::to_string(records.size()) +
               " unexpected in all)");
    }
  }
  return type;
}

WeightType ReadTensors(const std::string& path, const SafetensorsFile& file,
                       const std::vector<TensorView>& views, const std::set<std::string>& others,
                       bool bf16_candidates) {
  const WeightType type = CheckTensors(path, file, views, others, bf16_candidates);
  for (const TensorView& view : views) {
    const TensorRecord& t = *file.Find(view.name);
    // The reader checked that the byte count matches shape x dtype size.
    if (t.dtype == DType::kBF16) {
      // A bf16 value is the upper half of the float32 it widens to (little-endian file).
      for (int64_t i = 0; i < view.size(); ++i) {
        uint16_t b = 0;
        std::memcpy(&b, t.bytes.data() + 2 * i, sizeof b);
        view.data[i] = std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
      }
    } else if (!t.bytes.empty()) {
      std::memcpy(view.data, t.bytes.data(), t.bytes.size());
    }
    for (int64_t i = 0; i < view.size(); ++i) {
      if (!std::isfinite(view.data[i])) {
        Fail(ErrorCode::kFormat, path,
             "tensor \"" + view.name + "\" has a non-finite value (" +
                 std::to_string(view.data[i]) + ") at flat index " + std::to_string(i));
      }
    }
  }
  return type;
}

}  // namespace titans::io
