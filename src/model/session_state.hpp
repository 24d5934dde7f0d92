// The mutable state of a Session and what every architecture shares about it (internal;
// src/model/session.cpp creates and resets it, src/model/session_files.cpp saves and loads it,
// the architectures in src/model/arch/ run it).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/arch/architecture.hpp"
#include "ops/attention.hpp"
#include "titans/memory.hpp"
#include "titans/model.hpp"
#include "titans/session.hpp"

namespace titans {
namespace session {

struct State {
  int64_t position = 0;
  std::vector<std::unique_ptr<MemorySession>> memory;      // per layer; null without memory
  std::vector<std::unique_ptr<AttentionCache>> attention;  // per layer; null without attention
};

// Rows of every attention cache allocated when a session is made (or loaded): a window up to
// this size is allocated whole, so Forward allocates nothing; a larger window's cache grows
// with the stream (docs/FILE_FORMAT.md "Session files").
inline constexpr int64_t kReservedCacheRows = 8192;

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

// The rows a segment-local cache holds after `rows` rows of its stream: its segment's (a
// segment that just ended is emptied by the next row).
inline int64_t SegmentLocalRows(int64_t rows, int64_t segment) {
  const int64_t in_segment = rows % segment;
  return in_segment == 0 && rows > 0 ? segment : in_segment;
}

}  // namespace session

struct Session::Impl {
  session::State state;
  std::unique_ptr<arch::Runner> runner;  // the model's architecture, with its scratch
  // Why the stream is broken (empty: it is not): a forward pass that failed inside the stack
  // (a value overflowed) has advanced some layers' state and not others, so the session runs,
  // saves and clones nothing more until Reset or Load gives it a consistent state again.
  std::string broken;
};

}  // namespace titans
