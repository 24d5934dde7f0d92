// titans/memory.hpp: the neural long-term memory (docs/SEMANTICS.md section 1).
//
//   NeuralMemory   immutable: config + learned weights of one memory layer; share it freely
//                  (std::shared_ptr<const NeuralMemory>) across threads and sessions.
//   MemoryState    the mutable state of one stream: fast weights, momentum, convolution tails,
//                  the not yet written tokens of the current unit, the position.
//   MemorySession  runs a stream through a NeuralMemory: Forward any number of tokens at a time,
//                  Save / Load / Clone / Reset. One session is used by one thread at a time.
//
// Layout: every matrix is row-major float32; `x W` with W stored (in, out). Shapes are given as
// [rows, cols] with d = d_model, H = heads, dh = head_dim, dm = hidden_dim(), K = conv_kernel,
// U = unit() (tokens written together: a commit block, or a step).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "titans/memory_config.hpp"
#include "titans/tensor.hpp"

namespace titans {

// The learned weights of one memory layer. Tensors an option switches off are empty.
struct MemoryWeights {
  std::vector<float> store_norm;               // [d] RMSNorm gain of the store input
  std::vector<float> retrieve_norm;            // [d] RMSNorm gain of the retrieve input
  std::vector<float> w_q, w_k, w_v;            // [d, H*dh] each
  std::vector<float> conv_q, conv_k, conv_v;   // [K, H*dh]: tap j weighs the input at t-K+1+j
  std::vector<float> q_norm, k_norm;           // [H, dh] gains of kRms q/k normalisation
  std::vector<float> w_theta, w_eta, w_alpha;  // [d, H] gate projections (step, momentum, decay;
                                               // w_eta [d, H*O], channel h*O + o - 1)
  std::vector<float> b_theta, b_eta, b_alpha;  // [H] their biases
  std::vector<float> w_pool, b_pool;           // attention_pool: [d, d] (x W_pool), [d]
  std::vector<float> w_mod, b_mod;    // lr_modulation: [d, H*P], [H*P] (channel h*P + p, P =
                                      // parameter_tensors(), p in titans-pytorch's order)
  std::vector<float> w_mix, b_mix;    // weight_residual: [d, H], [H]
  std::vector<float> w_comb, b_comb;  // learned_combine: [d, H*O'], [H*O'] (channel h*O' + j)
  // The memory model's initial fast weights W0, per model tensor i (MLP layer i for kMlp):
  // [H, tensor_rows(i), tensor_cols(i)].
  std::vector<std::vector<float>> mlp;
  std::vector<float> gain;             // [H, dh] initial g of kLnResidual
  std::vector<float> post_norm;        // [H, dh] gain of the post_norm RMSNorm
  std::vector<float> transition_gate;  // [1] raw; sigmoid of it is the commit's lerp weight
  std::vector<float> w_gate;           // [d, H] output gate
  std::vector<float> w_out;            // [H*dh, d] output projection

  // Every tensor the config uses, filled with zeros.
  static MemoryWeights Zeros(const MemoryConfig& config);
  // Seeded random weights of sensible scale for `config` (tests, benchmarks, demos): gains near
  // 1, eta ~ 0.9, alpha ~ 0.001 per token, and theta scaled down by the number of gradients a
  // commit block sums and by the MLP's curvature, so that the memory's test-time training
  // stays stable on long streams.
  static MemoryWeights Random(const MemoryConfig& config, uint64_t seed);

  // Every tensor the config uses, with its name and expected shape.
  std::vector<TensorView> Tensors(const MemoryConfig& config);
  std::vector<ConstTensorView> Tensors(const MemoryConfig& config) const;

  // Throws Error(kMismatch) naming the first tensor whose size does not fit `config`.
  void Validate(const MemoryConfig& config) const;
};

namespace ops {
class Bf16Copies;  // src/ops/bf16.hpp
}

class NeuralMemory {
 public:
  // Validates the config and the weights' shapes; throws titans::Error. With WeightType::kBf16
  // the projections w_q, w_k, w_v are rounded to bf16 (weights() then holds the rounded values)
  // and multiplied from bf16 copies; Error(kInvalidArgument) if a value overflows bf16.
  NeuralMemory(MemoryConfig config, MemoryWeights weights,
               WeightType weight_type = WeightType::kF32);
  // A copy builds its own bf16 copies (they are found by the address of its weights).
  NeuralMemory(const NeuralMemory& other);
  NeuralMemory& operator=(const NeuralMemory&) = delete;

  // Memory weight files: safetensors with the config and a format version in the metadata and
  // one F32 tensor per entry of MemoryWeights::Tensors (docs/STATE_FORMAT.md). Save writes
  // atomically; Load checks format, config, every name, shape and value (titans::Error).
  static std::shared_ptr<const NeuralMemory> Load(const std::string& path);
  void Save(const std::string& path) const;

  const MemoryConfig& config() const { return config_; }
  const MemoryWeights& weights() const { return weights_; }
  int input_width() const { return config_.d_model; }
  int output_width() const { return config_.output_proj ? config_.d_model : config_.inner_dim(); }
  WeightType weight_type() const { return weight_type_; }
  // The bf16 copies of the projections (internal: src/ops/bf16.hpp; empty for kF32).
  const ops::Bf16Copies& bf16_copies() const { return *bf16_; }

 private:
  MemoryConfig config_;
  MemoryWeights weights_;
  WeightType weight_type_;
  std::shared_ptr<const ops::Bf16Copies> bf16_;
};

// Mutable state of one stream through one memory layer. Plain buffers, all sized at creation.
struct MemoryState {
  int64_t position = 0;  // tokens consumed so far (t of the next token)
  // Fast weights, per model tensor i: [H, tensor_rows(i), tensor_cols(i)]; gains [H, dh]
  // (kLnResidual).
  std::vector<std::vector<float>> w_cur, w_base, momentum;  // momentum empty without momentum
  std::vector<float> g_cur, g_base, g_momentum;
  // momentum_order O > 1: the momenta of orders 2..O, per (order o, tensor i) at index
  // (o - 2) * model_tensors() + i, shaped as tensor i; of the gain [O - 1, H, dh].
  std::vector<std::vector<float>> momentum_high;
  std::vector<float> g_momentum_high;
  // Causal convolution tails: the last K-1 projected (pre-convolution) rows, [K-1, H*dh];
  // conv_q_read is the query tail of the read-only stream (MemorySession::Read).
  std::vector<float> conv_q, conv_k, conv_v, conv_q_read;
  // The current unit's tokens not yet written: `pending` rows of keys and values [U, H*dh]
  // and gate logits [U, gate_columns()] (columns [0,H) theta, [H,2H) eta, [2H,3H) alpha
  // logits, then with lr_modulation the H*P modulation logits, with weight_residual the H mix
  // logits).
  // With attention_pool also the normalised store rows [U, d], pooled when the unit completes.
  int pending = 0;
  std::vector<float> pending_k, pending_v, pending_gates, pending_x;

  // Fresh state: fast weights = W0, momentum and tails zero, nothing pending.
  static MemoryState Initial(const NeuralMemory& memory);

  std::vector<TensorView> Tensors(const MemoryConfig& config);
  std::vector<ConstTensorView> Tensors(const MemoryConfig& config) const;
};

// The numerical health of a memory's state. A memory whose fast weights grow without bound, or
// decay to exactly zero (zero is absorbing: a zero memory reads nothing and its gradient
// writes nothing), no longer works, and its outputs alone do not show it
// (`titans forward --stats`, `titans generate --stats`, `titans bench`).
struct MemoryHealth {
  int64_t position = 0;
  // Frobenius norms over every MLP layer and head: the fast weights (with the kLnResidual
  // gains), the model's initial fast weights W0 (their scale), the momentum (0 without).
  double weights_norm = 0.0, initial_norm = 0.0, momentum_norm = 0.0;
  bool finite = true;     // no NaN or Inf in the fast weights or the momentum
  bool all_zero = false;  // every fast weight exactly 0
};

struct SessionOptions {
  int threads = 0;  // OpenMP threads for this session's work; 0 = omp_get_max_threads()
  // The engine's one threading rule (src/ops/threading.hpp): a parallel region (a memory unit or
  // tile, a chain of the stack's products, an attention call) takes one thread per this many
  // FLOPs of its work between two synchronisations, up to `threads`. A barrier costs tens of
  // microseconds on this kind of VM, so a thread joins only for some tens of microseconds of work:
  // an attention call or a product of 4e6 FLOPs, a memory unit of 2e7 (it counts as 5
  // synchronisations: three barriers and bandwidth-bound passes; docs/PERFORMANCE.md), a decoded
  // token's chain of one-row products from 62.5 KB of weights per thread (a byte counts as 64
  // FLOPs: such products are bound by reading the weights). 0: every thread always joins (tests
  // use it to exercise threading).
  double min_flops_per_thread = 4e6;
  // The thread governor (docs/PERFORMANCE.md, "Busy cores"): with threads > 1, each piece of
  // work (a runner's piece of tokens, a memory session's tile, a batched step) runs on the whole
  // team or on one thread, whichever the session measured faster on pieces of its size (timed
  // over windows of at least 0.1 s), and the other is tried again now and then for a window. A
  // core taken by another process makes a team 2-20x slower than one thread; this keeps the
  // session at the faster one. The two settings' results agree up to float rounding
  // (docs/SEMANTICS.md invariant 7), so a run that must repeat bit for bit sets this false (or
  // threads = 1). false: the team always runs (so does min_flops_per_thread <= 0).
  bool adapt_threads = true;
};

// The fast weights a memory had before each step it wrote in one Forward call, in order: per
// step the w_cur of every model tensor, then g_cur (kLnResidual). The next memory layer of a
// titans-pytorch MAC with neural_mem_weight_residual takes its step k's gradient at
// W_base + mix * (step k of this) (MemoryConfig::weight_residual). Sized once, for up to
// `capacity` steps per call; recording allocates nothing.
class WeightTrajectory {
 public:
  WeightTrajectory(const MemoryConfig& config, int capacity);
  // The fast-weight values of one step: H (sum over i of tensor_rows(i) tensor_cols(i)), + H dh.
  static int64_t ValuesPerStep(const MemoryConfig& config);
  int steps() const { return steps_; }  // recorded by the last call
  int capacity() const { return capacity_; }
  int64_t values_per_step() const { return values_per_step_; }
  const float* step(int k) const { return data_.data() + k * values_per_step_; }

 private:
  friend class MemorySession;
  int64_t values_per_step_;
  int capacity_;
  int steps_ = 0;
  std::vector<float> data_;  // [capacity, values_per_step]
};

// What a call of a weight_residual memory takes from the memory layer before it and records
// for the one after it (either may be null: the first layer has no previous, the last no next).
struct WeightResidual {
  const WeightTrajectory* previous = nullptr;  // that layer's trajectory of the same rows
  WeightTrajectory* record = nullptr;          // receives this call's trajectory
};

class MemorySession {
 public:
  explicit MemorySession(std::shared_ptr<const NeuralMemory> memory, SessionOptions options = {});
  ~MemorySession();
  MemorySession(MemorySession&&) noexcept;
  MemorySession& operator=(MemorySession&&) noexcept;
  MemorySession(const MemorySession&) = delete;  // copying megabytes is explicit: Clone()
  MemorySession& operator=(const MemorySession&) = delete;

  // Runs n = store.size() / d tokens: writes them into the memory and reads it back.
  //   store    [n, d]  store input x (keys, values, gates)
  //   retrieve [n, d]  retrieve input r (queries, output gate); the 1-argument form uses x
  //   out      [n, output_width()]
  // n = 0 is a no-op. A NaN/Inf input or a size mismatch throws Error(kInvalidArgument) and
  // leaves the session unchanged.
  void Forward(std::span<const float> store, std::span<float> out);
  void Forward(std::span<const float> store, std::span<const float> retrieve, std::span<float> out);
  // The store input in two views (titans-pytorch qkv_receives_diff_views): keys [n, d] feeds
  // the keys, the learning rates and every gate, values [n, d] only the values; both go
  // through the store norm.
  void Forward(std::span<const float> keys, std::span<const float> values,
               std::span<const float> retrieve, std::span<float> out);
  // The same with the weight residual (MemoryConfig::weight_residual): step k of this call takes
  // its gradient at W_base + mix * residual.previous->step(k), which must hold at least the
  // steps this call writes, and records into residual.record (capacity at least as many).
  // Error(kInvalidArgument) otherwise, with the session unchanged.
  void Forward(std::span<const float> keys, std::span<const float> values,
               std::span<const float> retrieve, std::span<float> out, WeightResidual residual);
  // Reads n = retrieve.size() / d tokens with the current fast weights and writes nothing
  // (memory as context, MAC: the segment's queries read the memory as it was at the segment
  // start). These queries are a stream of their own: with a convolution, they have their own
  // causal tail. out [n, output_width()]. Same checks as Forward.
  void Read(std::span<const float> retrieve, std::span<float> out);

  int64_t position() const { return state_.position; }
  const MemoryState& state() const { return state_; }
  const NeuralMemory& memory() const { return *memory_; }
  MemoryHealth Health() const;

  // Replaces the stream's state, e.g. with one assembled by a container format. Throws
  // Error(kMismatch) when a tensor's size does not fit this memory, Error(kInvalidArgument)
  // when position and pending disagree or a value is not finite; unchanged on error.
  void SetState(MemoryState state);
  void Reset();                 // back to the initial state (position 0)
  MemorySession Clone() const;  // an independent copy of this stream

  // State files: safetensors with the config and a format version in the metadata, written
  // atomically (temp file + rename). Load checks that the file was saved for this memory's
  // config (Error kMismatch), is well formed (kFormat) and readable (kIo); on any error the
  // session is left as it was.
  void Save(const std::string& path) const;
  void Load(const std::string& path);

 private:
  friend class MemoryBatch;  // one token of many sessions (src/memory/batch.hpp)
  std::shared_ptr<const NeuralMemory> memory_;
  SessionOptions options_;
  MemoryState state_;
  class Workspace;  // the fast path's scratch and packed gates (src/memory/kernels.hpp)
  std::unique_ptr<Workspace> workspace_;
};

}  // namespace titans
