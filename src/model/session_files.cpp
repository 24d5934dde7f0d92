// Session::Save / Load: session files.
//
// A session file is safetensors holding
//   metadata  "format": "titans.session", "format_version": "1",
//             "config": ModelConfig::ToJson() of the model the session runs;
//   tensors   "position" I64 [1];
//             per memory layer l: "layers.<l>.memory.position", ".pending" I64 [1] and every
//             tensor of MemoryState::Tensors(config.memory) as "layers.<l>.memory.<name>" F32;
//             per attention layer l: "layers.<l>.attention.position" I64 [1] and
//             "layers.<l>.attention.keys", ".values" F32 [count, kv_heads * head_dim]: the
//             cache's rows in chronological order (count = min(window, cache position)).
// Load builds a complete new state and checks it before replacing the session's, so a failed
// Load leaves the session as it was. SaveToBytes / LoadFromBytes are Save / Load with the file's
// bytes in memory (the same bytes, the same checks). docs/FILE_FORMAT.md describes the format.
#include <algorithm>
#include <cstddef>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "io/checked_file.hpp"
#include "model/arch/architecture.hpp"
#include "model/session_state.hpp"
#include "ops/attention.hpp"
#include "titans/error.hpp"

namespace titans {
namespace {

constexpr const char* kSessionFormat = "titans.session";

std::string Prefix(size_t layer, const char* part) {
  return "layers." + std::to_string(layer) + "." + part + ".";
}

// Hands the session file's metadata and tensors of `state` to `write` (which writes a file or
// serializes them): the tensors point into buffers that live until `write` returns.
template <class Write>
void WriteState(const ModelConfig& c, const session::State& state, Write&& write) {
  // The tensors point into these buffers until the file is written.
  std::vector<int64_t> scalars;
  scalars.reserve(1 + 3 * c.layers.size());
  std::vector<std::vector<float>> rows;  // attention caches, unrolled in order
  std::vector<io::TensorToWrite> tensors;
  auto scalar = [&](std::string name, int64_t value) {
    scalars.push_back(value);
    tensors.push_back({std::move(name), io::DType::kI64, {1}, &scalars.back()});
  };
  scalar("position", state.position);
  for (size_t l = 0; l < c.layers.size(); ++l) {
    if (const MemorySession* memory = state.memory[l].get()) {
      const std::string prefix = Prefix(l, "memory");
      scalar(prefix + "position", memory->state().position);
      scalar(prefix + "pending", memory->state().pending);
      for (const ConstTensorView& view : memory->state().Tensors(c.memory)) {
        tensors.push_back({prefix + view.name, io::DType::kF32, view.shape, view.data});
      }
    }
    if (const AttentionCache* cache = state.attention[l].get()) {
      const std::string prefix = Prefix(l, "attention");
      scalar(prefix + "position", cache->position());
      const int64_t width = cache->kv_width();
      for (auto row : {&AttentionCache::key, &AttentionCache::value}) {
        std::vector<float>& unrolled = rows.emplace_back();
        unrolled.reserve(static_cast<size_t>(cache->size() * width));
        for (int64_t j = cache->first(); j < cache->position(); ++j) {
          const float* r = (cache->*row)(j);
          unrolled.insert(unrolled.end(), r, r + width);
        }
        tensors.push_back({prefix + (row == &AttentionCache::key ? "keys" : "values"),
                           io::DType::kF32,
                           {cache->size(), width},
                           unrolled.data()});
      }
    }
  }
  write(std::map<std::string, std::string>{{"format", kSessionFormat},
                                           {"format_version",
                                            io::FormatVersion(c.UsesTitansPytorchOptions())},
                                           {"config", c.ToJson()}},
        tensors);
}

// The complete state a session file holds, checked against the session's model; `path` names
// the file (or the bytes) in messages.
session::State ReadState(const Model& model, const arch::Runner& runner,
                         const SessionOptions& options, const io::SafetensorsFile& file,
                         const std::string& path) {
  const ModelConfig& c = model.config();
  const ModelConfig saved =
      io::ParseConfig<ModelConfig>(path, io::CheckHeader(path, file, "session", kSessionFormat));
  if (!(saved == c)) {
    io::Fail(ErrorCode::kMismatch, path,
             "session saved for another model config: file " + io::Truncated(saved.ToJson()) +
                 ", this model " + io::Truncated(c.ToJson()));
  }
  session::State next;
  next.position = io::ReadI64Scalar(path, file, "position");
  std::set<std::string> scalars{"position"};
  std::vector<TensorView> views;  // every F32 tensor, read and checked at once below
  std::vector<MemoryState> memory_states(c.layers.size());
  for (size_t l = 0; l < c.layers.size(); ++l) {
    if (!HasMemory(c.layers[l])) continue;
    const std::string prefix = Prefix(l, "memory");
    MemoryState& s = memory_states[l] = MemoryState::Initial(*model.memory(static_cast<int>(l)));
    s.position = io::ReadI64Scalar(path, file, prefix + "position");
    s.pending = static_cast<int>(
        std::clamp<int64_t>(io::ReadI64Scalar(path, file, prefix + "pending"), -1, 1 << 30));
    scalars.insert({prefix + "position", prefix + "pending"});
    for (TensorView view : s.Tensors(c.memory)) {
      view.name = prefix + view.name;
      views.push_back(std::move(view));
    }
  }
  // Attention rows: their count follows from the position, so the shapes are known up front.
  std::vector<std::vector<float>> rows(2 * c.layers.size());
  std::vector<int64_t> cache_positions(c.layers.size(), 0);
  for (size_t l = 0; l < c.layers.size(); ++l) {
    if (!HasAttention(c.layers[l])) continue;
    const std::string prefix = Prefix(l, "attention");
    const AttentionShape shape = runner.CacheShape(l);
    const int64_t position = io::ReadI64Scalar(path, file, prefix + "position");
    if (position < 0) io::Fail(ErrorCode::kFormat, path, prefix + "position is negative");
    const int64_t count = shape.window > 0 ? std::min<int64_t>(shape.window, position) : position;
    cache_positions[l] = position;
    scalars.insert(prefix + "position");
    const std::vector<int64_t> dims{count, shape.kv_width()};
    for (int which = 0; which < 2; ++which) {
      const std::string name = prefix + (which == 0 ? "keys" : "values");
      // The rows are in the file before they are allocated (the position is the file's word).
      io::RequireTensor(path, file, name, io::DType::kF32, dims);
      std::vector<float>& r = rows[2 * l + static_cast<size_t>(which)];
      r.resize(static_cast<size_t>(count * shape.kv_width()));
      views.push_back({name, dims, r.data()});
    }
  }
  io::ReadTensors(path, file, views, scalars);

  // Assemble; every part checks its own consistency.
  try {
    for (size_t l = 0; l < c.layers.size(); ++l) {
      if (HasMemory(c.layers[l])) {
        auto memory = std::make_unique<MemorySession>(model.memory(static_cast<int>(l)), options);
        memory->SetState(std::move(memory_states[l]));
        if (memory->position() != runner.MemoryPosition(next.position)) {
          throw Error(ErrorCode::kInvalidArgument,
                      "layer " + std::to_string(l) + "'s memory is at position " +
                          std::to_string(memory->position()) + ", expected " +
                          std::to_string(runner.MemoryPosition(next.position)) +
                          " for a session at " + std::to_string(next.position));
        }
        next.memory.push_back(std::move(memory));
      } else {
        next.memory.push_back(nullptr);
      }
      if (HasAttention(c.layers[l])) {
        const int64_t expected = runner.CachePosition(l, next.position);
        if (cache_positions[l] != expected) {
          throw Error(ErrorCode::kInvalidArgument, "layer " + std::to_string(l) +
                                                       "'s attention cache is at position " +
                                                       std::to_string(cache_positions[l]) +
                                                       ", expected " + std::to_string(expected));
        }
        auto cache =
            std::make_unique<AttentionCache>(runner.CacheShape(l), session::kReservedCacheRows);
        cache->Restore(cache_positions[l], rows[2 * l].data(), rows[2 * l + 1].data(),
                       static_cast<int64_t>(rows[2 * l].size()) / cache->kv_width());
        next.attention.push_back(std::move(cache));
      } else {
        next.attention.push_back(nullptr);
      }
    }
  } catch (const Error& e) {
    io::Fail(ErrorCode::kFormat, path, e.what());
  }
  return next;
}

// The name of a session's bytes in error messages (in place of a path).
constexpr const char* kBytesName = "session bytes";

}  // namespace

void Session::Save(const std::string& path) const {
  RequireUsable("Save");
  WriteState(model_->config(), impl_->state, [&](const auto& metadata, const auto& tensors) {
    io::WriteSafetensors(path, metadata, tensors);
  });
}

std::vector<std::byte> Session::SaveToBytes() const {
  RequireUsable("SaveToBytes");
  std::vector<std::byte> bytes;
  WriteState(model_->config(), impl_->state, [&](const auto& metadata, const auto& tensors) {
    bytes = io::SerializeSafetensors(kBytesName, metadata, tensors);
  });
  return bytes;
}

void Session::Load(const std::string& path) {
  const io::SafetensorsFile file = io::SafetensorsFile::Open(path);
  session::State next = ReadState(*model_, *impl_->runner, options_, file, path);
  impl_->state = std::move(next);
  impl_->broken.clear();
}

void Session::LoadFromBytes(std::span<const std::byte> bytes) {
  const io::SafetensorsFile file = io::SafetensorsFile::FromBytes(bytes, kBytesName);
  session::State next = ReadState(*model_, *impl_->runner, options_, file, kBytesName);
  impl_->state = std::move(next);
  impl_->broken.clear();
}

}  // namespace titans
