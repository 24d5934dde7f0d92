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

inline bool IsTpMac(const ModelConfig& c) {
  return c.architecture == Architecture::kTitansPytorchMac;
}

// titans-pytorch MAC: positions (rows) of the interspersed sequence a session has run after
// `position` tokens. The M long-term memory tokens after a segment are run when the next
// token arrives (titans-pytorch appends them only to a segment that is followed by a token).
inline int64_t TpMacRows(const ModelConfig& c, int64_t position) {
  return position == 0 ? 0 : position + c.tp_mac.longterm_tokens * ((position - 1) / c.segment);
}

// The attention shape of layer l's cache (MAC layers have their own, segment-local one;
// titans-pytorch MAC layers see the W + 1 latest rows when sliding, else their window's rows).
inline AttentionShape CacheShapeOf(const ModelConfig& c, size_t l) {
  if (IsTpMac(c)) {
    AttentionShape s = ShapeOf(c);
    s.window = c.attention.window + (c.tp_mac.sliding ? 1 : 0);
    return s;
  }
  return c.layers[l] == BlockKind::kMac ? MacShapeOf(c) : ShapeOf(c);
}

// Where a session's memories and attention caches stand after `position` tokens (session
// files are checked against these).
inline int64_t MemoryPositionOf(const ModelConfig& c, int64_t position) {
  return IsTpMac(c) ? TpMacRows(c, position) : position;
}
inline int64_t CachePositionOf(const ModelConfig& c, size_t l, int64_t position) {
  // A segment-local cache holds its segment's rows (a segment that just ended is emptied by
  // the next row); the others are at the stream's position.
  auto local = [](int64_t rows, int64_t segment) {
    const int64_t in_segment = rows % segment;
    return in_segment == 0 && rows > 0 ? segment : in_segment;
  };
  if (IsTpMac(c)) {
    const int64_t rows = TpMacRows(c, position);
    return c.tp_mac.sliding ? rows : local(rows, c.attention.window);
  }
  if (c.layers[l] == BlockKind::kMac) return 2 * local(position, c.segment);  // interleaved h, u
  return position;
}

}  // namespace session
}  // namespace titans
