// Reading a MemoryConfig from a JSON object (internal): MemoryConfig::FromJson and the "memory"
// object of a model config (src/model/config.cpp) share it, so both apply the same field
// ranges (docs/FILE_FORMAT.md "Value ranges").
#pragma once

#include <cstdint>

#include "io/json.hpp"
#include "titans/memory_config.hpp"

namespace titans::config_limits {

// Caps on what a config may ask for. Widths bound every tensor dimension (the tensors
// themselves must then be in the file); the unit (chunk, step) sizes per-session buffers that
// no tensor of the file justifies, so it has a tighter cap.
inline constexpr int kMaxWidth = 1 << 24;  // d_model, heads, head_dim, vocab_size, ...
inline constexpr int kMaxDepth = 1024;     // memory MLP depth
inline constexpr int kMaxConvKernel = 4096;
inline constexpr int kMaxUnit = 1 << 16;  // chunk, step, MAC segment, memory_segment
inline constexpr int kMaxStreams = 1024;  // titans-pytorch MAC residual streams
// Per-session buffers of a unit's rows (a memory unit x H*dh, a MAC memory_segment x d): at
// most this many values each, whatever the widths.
inline constexpr int64_t kMaxUnitValues = int64_t{1} << 28;

}  // namespace titans::config_limits

namespace titans {

// Reads every field (each in its range), then Validate(). Error(kFormat) naming the field, or
// the Error(kConfig) of Validate.
MemoryConfig ReadMemoryConfig(const io::ConfigObject& j);

}  // namespace titans
