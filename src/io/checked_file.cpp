#include "io/checked_file.hpp"

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

void CheckTensors(const std::string& path, const SafetensorsFile& file,
                  const std::vector<TensorView>& views, const std::set<std::string>& others) {
  std::unordered_map<std::string, const TensorRecord*> records;
  for (const TensorRecord& t : file.tensors()) {
    if (!others.count(t.name)) records.emplace(t.name, &t);
  }
  for (const TensorView& view : views) {
    RequireTensor(path, file, view.name, DType::kF32, view.shape);
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
}

void ReadTensors(const std::string& path, const SafetensorsFile& file,
                 const std::vector<TensorView>& views, const std::set<std::string>& others) {
  CheckTensors(path, file, views, others);
  for (const TensorView& view : views) {
    const TensorRecord& t = *file.Find(view.name);
    // The reader checked that the byte count matches shape x dtype size.
    if (!t.bytes.empty()) std::memcpy(view.data, t.bytes.data(), t.bytes.size());
    for (int64_t i = 0; i < view.size(); ++i) {
      if (!std::isfinite(view.data[i])) {
        Fail(ErrorCode::kFormat, path,
             "tensor \"" + view.name + "\" has a non-finite value (" +
                 std::to_string(view.data[i]) + ") at flat index " + std::to_string(i));
      }
    }
  }
}

}  // namespace titans::io
