// The mutable state of a Session (internal; src/model_session.cpp runs it, src/session_io.cpp
// saves and loads it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "attention.hpp"
#include "titans/memory.hpp"
#include "titans/session.hpp"

namespace titans {

struct Session::State {
  int64_t position = 0;
  std::vector<std::unique_ptr<MemorySession>> memory;      // per layer; null without memory
  std::vector<std::unique_ptr<AttentionCache>> attention;  // per layer; null without attention
};

namespace session {

inline bool HasAttention(BlockKind kind) { return kind != BlockKind::kLmm; }
inline bool HasMemory(BlockKind kind) { return kind != BlockKind::kAttention; }

inline AttentionShape ShapeOf(const ModelConfig& c) {
  AttentionShape s;
  s.heads = c.attention.heads;
  s.kv_heads = c.attention.kv_heads;
  s.head_dim = c.attention.head_dim;
  s.window = c.attention.window;
  s.persistent = c.attention.persistent;
  s.rope_base = c.attention.rope_base;
  return s;
}

// MAC's segment-local attention: the whole current segment (2 C_s interleaved rows) is visible.
inline AttentionShape MacShapeOf(const ModelConfig& c) {
  AttentionShape s = ShapeOf(c);
  s.window = 2 * c.segment;
  return s;
}

inline bool HasMac(const ModelConfig& c) {
  return std::find(c.layers.begin(), c.layers.end(), BlockKind::kMac) != c.layers.end();
}

// The attention shape of layer l's cache (MAC layers have their own, segment-local one).
inline AttentionShape CacheShapeOf(const ModelConfig& c, size_t l) {
  return c.layers[l] == BlockKind::kMac ? MacShapeOf(c) : ShapeOf(c);
}

}  // namespace session
}  // namespace titans
