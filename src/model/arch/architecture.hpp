// The architectures a Session runs (internal). Session (src/model/session.cpp) checks the
// inputs, owns the stream's state (src/model/session_state.hpp) and leaves the rest to a Runner
// of the model's architecture, one file each:
//   titans.cpp              Architecture::kTitans: the stack of LMM, MAL, MAG, MAC and attention
//                           blocks (docs/SEMANTICS.md sections 2 and 3)
//   titans_pytorch_mac.cpp  Architecture::kTitansPytorchMac: titans-pytorch's
//                           MemoryAsContextTransformer (docs/SEMANTICS.md section 5,
//                           docs/TITANS_PYTORCH.md)
// Each has a tensor table next to it (titans_weights.hpp, titans_pytorch_mac_weights.hpp) that
// src/model/weights.cpp walks. A new architecture is a new runner and table here, a case in
// MakeRunner (src/model/session.cpp) and in ModelWeights' table (src/model/weights.cpp), and its
// config checks (src/model/config.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "ops/attention.hpp"
#include "titans/memory.hpp"
#include "titans/model.hpp"

namespace titans {
namespace session {
struct State;
}  // namespace session

namespace arch {

// One session's way through its model: the architecture's computation and its scratch, sized
// once when the session is made. The Model must outlive the runner.
class Runner {
 public:
  virtual ~Runner() = default;

  // The shape of layer l's attention cache (layers with attention).
  virtual AttentionShape CacheShape(size_t layer) const = 0;
  // Where the memories and layer l's attention cache stand after the session has been fed
  // `position` tokens (Session::Load checks saved sessions against these).
  virtual int64_t MemoryPosition(int64_t position) const = 0;
  virtual int64_t CachePosition(size_t layer, int64_t position) const = 0;

  // Runs n inputs after the state's position and advances it: tokens[i] (embedding rows) or,
  // when tokens is null, embeddings [n, d]. Writes logits [n, V] when `logits` is given, else
  // the hidden states after the final norm into hidden [n, d]. The caller (Session::Forward /
  // ForwardEmbeddings) has checked the inputs and holds a FlushDenormals.
  virtual void Run(session::State& state, const int32_t* tokens, const float* embeddings, int64_t n,
                   float* logits, float* hidden) = 0;
};

// One decode step, or a prefill, of many sessions of one model (BatchDecoder,
// src/model/batch.cpp): the products with the model's weights are shared by the sessions, the
// rest runs on each one's state. Its scratch is sized once for up to max_batch sessions. The Model
// must outlive it.
class BatchRunner {
 public:
  virtual ~BatchRunner() = default;

  // Feeds tokens[i] to states[i] (1 <= states.size() <= max_batch, distinct states of this
  // model) and advances it; writes logits [states.size(), V]. The caller (BatchDecoder::Step)
  // has checked the inputs and holds a FlushDenormals.
  virtual void Step(std::span<session::State* const> states, const int32_t* tokens,
                    float* logits) = 0;
  // Feeds prompts[i] to states[i] (same conditions; prompts of any lengths) and writes logits
  // [sum of the lengths, V]: states[0]'s rows, then states[1]'s, ...
  virtual void Prefill(std::span<session::State* const> states,
                       std::span<const std::span<const int32_t>> prompts, float* logits) = 0;
};

// options.threads is resolved (> 0).
std::unique_ptr<Runner> MakeTitans(const Model& model, const SessionOptions& options);
// kTitans models only: a kTitansPytorchMac model's sessions decode one by one (BatchDecoder).
std::unique_ptr<BatchRunner> MakeTitansBatch(const Model& model, const SessionOptions& options,
                                             int max_batch);
std::unique_ptr<Runner> MakeTitansPytorchMac(const Model& model, const SessionOptions& options);

}  // namespace arch
}  // namespace titans
