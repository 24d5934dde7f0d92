// safetensors reading and atomic writing (internal).
//
// Format: 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str, ...}, "<name>": {"dtype": "F32", "shape": [...],
//    "data_offsets": [begin, end]}, ...}
// then the raw little-endian tensor bytes; offsets are relative to the end of the header.
// Reading maps the file read-only and checks everything before anything is used: header length
// within the file, valid JSON, known dtypes, offsets inside the data, byte counts equal to
// shape x dtype size, no overlaps. Errors are titans::Error (kIo, kFormat).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace titans::io {

enum class DType { kF32, kF64, kI32, kI64, kBF16 };
size_t DTypeSize(DType dtype);
const char* ToString(DType dtype);  // "F32", "F64", "I32", "I64", "BF16"

struct TensorRecord {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;  // into the mapping; valid while the file object lives
};

class SafetensorsFile {
 public:
  static SafetensorsFile Open(const std::string& path);  // throws titans::Error
  // The same checks on a safetensors image in memory, which is not copied: `bytes` must outlive
  // the returned object. `name` stands for the path in error messages.
  static SafetensorsFile FromBytes(std::span<const std::byte> bytes, const std::string& name);
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorRecord>& tensors() const { return tensors_; }
  const TensorRecord* Find(const std::string& name) const;  // nullptr if absent

  // Copies the named F32 tensor into `out` after checking name, dtype and shape; throws
  // Error(kMismatch) naming the tensor and what differs.
  void ReadF32(const std::string& name, const std::vector<int64_t>& shape,
               std::span<float> out) const;

 private:
  SafetensorsFile() = default;
  void Parse();  // header and tensor records of mapping_'s bytes
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorRecord> tensors_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // shape-product x DTypeSize(dtype) bytes
};

// Writes `path` atomically: a temporary file in the same directory, fsync, rename over `path`.
// On error `path` is untouched and the temporary file removed; throws Error(kIo).
void WriteSafetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                      const std::vector<TensorToWrite>& tensors);

// The bytes WriteSafetensors would write to a file, in memory; `name` stands for the path in
// error messages. Throws Error(kInvalidArgument) as WriteSafetensors does.
std::vector<std::byte> SerializeSafetensors(const std::string& name,
                                            const std::map<std::string, std::string>& metadata,
                                            const std::vector<TensorToWrite>& tensors);

// Writes `contents` to `path` the same atomic way (the command-line program's JSON and SVG
// outputs). Throws Error(kIo).
void WriteFileAtomically(const std::string& path, std::string_view contents);

// The output files of one command that must all be written or none (titans forward --output
// with --save-state). Stage(target) returns a temporary path next to `target`, in the pattern
// "<target>.tmp.<pid>.<n>" that a later save to `target` removes if this process dies first;
// the caller writes the whole file there with any writer above (or Session::Save). Commit()
// renames every staged file over its target, after all were written: a failed write leaves
// every target as it was. Destroyed uncommitted, the set removes its staged files. A rename
// can still fail midway in Commit (the directory removed meanwhile): it throws Error(kIo) and
// the targets renamed before stay renamed.
class OutputSet {
 public:
  OutputSet() = default;
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;
  ~OutputSet();

  // Throws Error(kIo) if `target` is a directory (its rename would fail only at Commit).
  const std::string& Stage(const std::string& target);
  void Commit();

 private:
  struct Staged {
    std::string path, target;
    bool renamed = false;
  };
  std::vector<Staged> staged_;
};

}  // namespace titans::io
