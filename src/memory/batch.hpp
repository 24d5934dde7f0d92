// One token each of many sessions of one NeuralMemory (internal; the model's BatchDecoder,
// src/model/arch/titans.cpp): the input norms and projections (keys, values, queries, gate
// logits) of all of them are products [N, d] x [d, ...] that read each weight once; each
// session's convolution, read and write (the unit's gradient step when its token completes a
// unit) then run on its own state, as MemorySession::Forward (Read) of its one token.
//
// Threads (the SessionOptions given here, the decoder's): the projections are split by rows
// and the sessions are handed out one at a time to up to options.threads threads, each
// session's whole token (a unit's write included) on one thread, so a session's result does
// not depend on the thread count.
#pragma once

#include <memory>
#include <span>

#include "titans/memory.hpp"

namespace titans {

class MemoryBatch {
 public:
  MemoryBatch(std::shared_ptr<const NeuralMemory> memory, const SessionOptions& options);
  ~MemoryBatch();

  // sessions[i] (distinct sessions of this memory) takes row i of store and retrieve [N, d]
  // and writes row i of out [N, output_width()], N = sessions.size(). The inputs are checked as
  // by MemorySession::Forward before any session changes.
  void Forward(std::span<MemorySession* const> sessions, const float* store, const float* retrieve,
               float* out);
  // The same as MemorySession::Read: no write.
  void Read(std::span<MemorySession* const> sessions, const float* retrieve, float* out);

 private:
  void Run(std::span<MemorySession* const> sessions, const float* store, const float* retrieve,
           float* out, bool write);

  std::shared_ptr<const NeuralMemory> memory_;
  SessionOptions options_;
  // Its tile holds the projections of up to kTile sessions' tokens (ProjectRows).
  std::unique_ptr<MemorySession::Workspace> projections_;
};

}  // namespace titans
