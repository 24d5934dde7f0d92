// titans/session.hpp: one stream through a Model.
//
// A Session holds everything that changes while a model runs: per memory layer a
// MemorySession (fast weights, momentum, ...), per attention layer the ring of the last w keys
// and values, and the position (tokens fed so far). The same holds for a titans-pytorch
// MemoryAsContextTransformer model (docs/TITANS_PYTORCH.md), whose memories and caches also
// see the long-term memory tokens it inserts after every segment. It feeds a stream of any length
// in pieces of any size, decodes token by token, and can be saved, loaded, cloned and reset. The
// Model it runs is shared and never modified. One session is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "titans/memory.hpp"
#include "titans/model.hpp"

namespace titans {

struct SamplerOptions {
  float temperature = 0.0f;  // 0: greedy (argmax); otherwise softmax(logits / temperature)
  int top_k = 0;             // keep the k most likely tokens (0 = all)
  float top_p = 1.0f;        // keep the smallest set whose probability reaches top_p
  uint64_t seed = 0;         // the sampler's random stream (Generate)
};

// Draws one token from `logits` [V] (greedy when temperature is 0). Throws
// Error(kInvalidArgument) for empty or non-finite logits or bad options.
int32_t SampleToken(std::span<const float> logits, const SamplerOptions& options,
                    std::mt19937_64& rng);

// One memory layer's health in a Session: its index in ModelConfig::layers and its state's
// MemoryHealth (titans/memory.hpp).
struct LayerHealth {
  int layer = 0;
  MemoryHealth memory;
};

class Session {
 public:
  explicit Session(std::shared_ptr<const Model> model, SessionOptions options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  Session(const Session&) = delete;  // copying megabytes is explicit: Clone()
  Session& operator=(const Session&) = delete;

  // Token models (vocab_size > 0): tokens [n] -> logits [n, V]. A token outside [0, V) throws
  // Error(kInvalidArgument) before anything changes; n = 0 is a no-op.
  // A value that overflows inside the stack (a diverged memory, or a loaded state with huge
  // values) throws Error(kNumerical) with the tokens and the layer's message. Some layers have
  // then taken the tokens and others not, so the session is broken: Forward,
  // ForwardEmbeddings, Generate, ResetMemory, Save and Clone throw Error(kNumerical) until
  // Reset() or a successful Load() makes it whole again.
  void Forward(std::span<const int32_t> tokens, std::span<float> logits);
  // Any model: input embeddings [n, d] -> hidden states after the final norm [n, d]. For token
  // models the input is what the embedding table would give. NaN/Inf input throws
  // Error(kInvalidArgument) before anything changes.
  void ForwardEmbeddings(std::span<const float> embeddings, std::span<float> hidden);

  // Feeds the prompt, then samples `max_new_tokens` tokens one at a time, feeding each back
  // (the last one is returned, not fed). Returns the new tokens. Sampling needs the logits of
  // a prompt token, so the prompt must not be empty when max_new_tokens > 0.
  std::vector<int32_t> Generate(std::span<const int32_t> prompt, int max_new_tokens,
                                const SamplerOptions& sampler);

  int64_t position() const;
  const Model& model() const;
  // Every memory layer's health, in layer order (empty without memory layers): cheap (one pass
  // over the fast weights), for monitoring long streams.
  std::vector<LayerHealth> Health() const;

  void Reset();           // back to position 0
  Session Clone() const;  // an independent copy of this stream

  // Forgets what the memories have written while the stream goes on: every memory layer's
  // fast weights (and kLnResidual gains) go back to the model's initial W0 and its momentum to
  // zero, as in a new session; the position, the attention caches and the memories'
  // convolution tails (the projections of the last K-1 inputs, from which the next keys and
  // queries are made: an input window like the attention caches, not written content) are
  // kept. So a stream that calls ResetMemory every N tokens differs from one that does not only
  // by what its memories wrote before each reset (`titans eval --reset-every`, docs/CLI.md).
  // Allowed only where every memory has written all it was given: its position a multiple of
  // MemoryConfig::unit() (for kTitans models: a multiple of the unit in tokens, which for MAC
  // layers is the segment); otherwise throws Error(kInvalidArgument) and changes nothing. A
  // model without memory layers has nothing to forget (no-op).
  void ResetMemory();

  // Session files: safetensors with the model config and a format version in the metadata,
  // written atomically. Load checks that the file belongs to this model's config; on any
  // error the session is left as it was.
  void Save(const std::string& path) const;
  void Load(const std::string& path);
  // The same with the file's bytes in memory: SaveToBytes returns exactly what Save writes to
  // the file, LoadFromBytes makes the same checks as Load (the bytes are not kept).
  std::vector<std::byte> SaveToBytes() const;
  void LoadFromBytes(std::span<const std::byte> bytes);

 private:
  friend class BatchDecoder;                   // runs a step of many sessions on their states
  void RequireUsable(const char* what) const;  // Error(kNumerical) while broken
  // The architecture's forward pass, marking the session broken if it fails.
  void Run(const int32_t* tokens, const float* embeddings, int64_t n, float* logits, float* hidden);

  // The stream's state and the architecture that runs it (src/model/session_state.hpp).
  struct Impl;
  std::shared_ptr<const Model> model_;
  SessionOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Decodes many sessions of one token model together, one token each per Step (or a prompt each
// per Prefill), so that every weight matrix is read once for all of them: with N sessions the
// embedding lookup, every product with the model's weights (attention q, k, v and output
// projections, the memory branch's gate and output projections, the FFN, the LM head) is one
// product [N, d] x [d, ...] instead of N products [1, d] x [d, ...], and so are the memories' input
// norms and projections (keys, values, queries, gate logits). What belongs to a stream runs per
// session, on its own state and at its own position: rotary angles, attention over its cache (MAC:
// its segment), and each memory's convolution, read and write (the chunk-wise gradient step when
// the session's unit completes), as MemorySession::Forward of its token.
//
// Logits: each session's logits [V] and state are those of Forward of its one token, bit for bit
// (tests/batch_decode_test.cpp): every product with the model's weights computes each row as the
// same chain of multiply-adds whatever the rows beside it (one row or N, the LM head tied or not),
// and the per-session work runs on the session's own state as alone.
//
// Architecture::kTitans models batch every block kind (MAC too: a step is one token, which lies
// in one segment; a session whose step starts a segment empties its own MAC caches). A
// kTitansPytorchMac model's sessions are decoded one after the other with Forward (no shared
// products): its long-term memory tokens are inserted at segment ends, so the sessions'
// steps would not have the same rows.
//
// The decoder holds scratch for up to max_batch sessions, sized once: Step allocates nothing
// (as Forward: unless an attention cache larger than session::kReservedCacheRows grows).
// Threads, by the decoder's SessionOptions (the sessions' own options are not used by Step): the
// shared products are split by rows; the per-session work of each layer (attention over the
// session's cache, its memory's convolution, read and write) is handed out one session at a
// time, each session on one thread, so a session's per-session work is computed the same way
// whatever the thread count: the results do not depend on it, bit for bit. One decoder and the
// sessions of a Step are used by one thread at a time.
class BatchDecoder {
 public:
  // Throws Error(kInvalidArgument) without a model, for max_batch < 1, for a model that takes
  // input embeddings (vocab_size 0) or bad options.
  BatchDecoder(std::shared_ptr<const Model> model, int max_batch, SessionOptions options = {});
  ~BatchDecoder();
  BatchDecoder(BatchDecoder&&) noexcept;
  BatchDecoder& operator=(BatchDecoder&&) noexcept;
  BatchDecoder(const BatchDecoder&) = delete;
  BatchDecoder& operator=(const BatchDecoder&) = delete;

  // Feeds tokens[i] to sessions[i] for every i < N = sessions.size() and advances it by one
  // token; writes logits [N, V] (row i: sessions[i]'s). Sessions may be at any positions.
  // Checked before anything changes, Error(kInvalidArgument): N > max_batch(), tokens of
  // another size than N, logits of another size than N * V, a null session, a session of
  // another Model (by identity: the decoder's shared_ptr), the same session twice, a token
  // outside [0, V); Error(kNumerical) for a broken session (as Forward). N = 0 is a no-op.
  // A value that overflows inside the stack throws Error(kNumerical), as Forward, and breaks
  // every session of the call (their layers have taken the step in part); in the one-by-one
  // decode of kTitansPytorchMac, the sessions before the failing one have taken their step.
  void Step(std::span<Session* const> sessions, std::span<const int32_t> tokens,
            std::span<float> logits);

  // A prefill of N prompts: feeds prompts[i] (any length, 0 included) to sessions[i] for every
  // i < N and writes logits [T, V], T = the sum of the lengths: sessions[0]'s rows, then
  // sessions[1]'s, ... It runs in rounds of at most max(max_batch(), 256) rows, filled with
  // the sessions' next pieces of up to 64 tokens in order, so each product with the model's
  // weights is one product for the sessions of the round; each session's share is a piece of
  // its stream (its memories and MAC segments run on its own rows, as in Forward; a round of one
  // token each, as in Step). Each session ends as Forward of its prompt leaves it, with its logits,
  // up to rounding: a round may cut a prompt into other pieces than Forward's, and a memory's
  // chunked write sums a piece's tokens in another order (relative 2e-6, measured 3.4e-7;
  // tests/batch_decode_test.cpp). One session: bit for bit.
  // Checked before anything changes, as Step: N > max_batch(), prompts of another size than N,
  // logits of another size than T * V, the sessions as in Step, a token outside [0, V)
  // (Error(kInvalidArgument)), a broken session (Error(kNumerical)). Failure inside the stack:
  // as Step. kTitansPytorchMac models run Forward of each prompt, one session after the other.
  void Prefill(std::span<Session* const> sessions,
               std::span<const std::span<const int32_t>> prompts, std::span<float> logits);

  int max_batch() const;
  const Model& model() const;

 private:
  // The checks Step and Prefill share (how many sessions, and which), with `what` in the
  // messages.
  void CheckSessions(const char* what, std::span<Session* const> sessions) const;
  // Runs `run` (the runner's step or prefill); a failure breaks every session of the call.
  template <class Run>
  void RunBatch(const char* what, std::span<Session* const> sessions, Run run);

  struct Impl;  // src/model/batch.cpp
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace titans
