// Reading the engine's own safetensors files (memory weights, memory states, models): the checks
// they share. Every failure is a titans::Error whose message starts with the file's path.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "titans/error.hpp"
#include "titans/tensor.hpp"

namespace titans::io {

[[noreturn]] void Fail(ErrorCode code, const std::string& path, const std::string& problem);
std::string Truncated(const std::string& s, size_t limit = 200);
std::string ShapeString(const std::vector<int64_t>& shape);

// Format versions, shared by the model, session, memory and memory state files: "1" for every
// file the engine could read before titans-pytorch's options (MemoryConfig 1.7), "2" for files
// whose memory config uses them, so that older builds refuse such files instead of silently
// ignoring the options' keys. This build reads both.
inline const char* FormatVersion(bool uses_titans_pytorch_options) {
  return uses_titans_pytorch_options ? "2" : "1";
}

// Checks the metadata's "format" (== format) and "format_version" ("1" or "2") and returns its
// "config" text. `what` names the kind of file in messages ("model", "memory"). kFormat.
const std::string& CheckHeader(const std::string& path, const SafetensorsFile& file,
                               const std::string& what, const char* format);

// Parses the header's config with Config::FromJson; any error there is a kFormat error.
template <class Config>
Config ParseConfig(const std::string& path, const std::string& text) {
  try {
    return Config::FromJson(text);
  } catch (const Error& e) {  // malformed JSON (kFormat) or an invalid config (kConfig)
    Fail(ErrorCode::kFormat, path, std::string("bad config in the metadata: ") + e.what());
  }
}

// The tensor `name`, of exactly this dtype and shape (kFormat otherwise).
const TensorRecord& RequireTensor(const std::string& path, const SafetensorsFile& file,
                                  const std::string& name, DType dtype,
                                  const std::vector<int64_t>& shape);
int64_t ReadI64Scalar(const std::string& path, const SafetensorsFile& file,
                      const std::string& name);

// Checks that the file holds every view's tensor (present, F32, of exactly the view's shape) and
// no tensor that is neither a view nor in `others` (kFormat). Reads no values and uses no
// view's data: callers check a whole table this way before allocating anything for it, so a
// config in a small file cannot demand memory its tensors do not occupy in the file. With
// `bf16_candidates` the tensors IsBf16Candidate names may instead all be BF16 (not some of
// them: kFormat); returns how they are stored (kF32 when there are none).
WeightType CheckTensors(const std::string& path, const SafetensorsFile& file,
                        const std::vector<TensorView>& views,
                        const std::set<std::string>& others = {}, bool bf16_candidates = false);

// CheckTensors, then fills every view from the file (BF16 widened to float32) and checks that
// every value is finite (kFormat).
WeightType ReadTensors(const std::string& path, const SafetensorsFile& file,
                       const std::vector<TensorView>& views,
                       const std::set<std::string>& others = {}, bool bf16_candidates = false);

}  // namespace titans::io
