// titans/model.hpp: an immutable Titans model (config + learned weights).
//
// Layout: row-major float32, `x W` with W stored (in, out). d = d_model, f = ffn_hidden,
// V = vocab_size; attention: Ha = heads, Hkv = kv_heads, da = head_dim, Np = persistent;
// memory: H = memory.heads, dh = memory.head_dim. Tensors an option does not use are empty.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "titans/error.hpp"
#include "titans/memory.hpp"
#include "titans/model_config.hpp"

namespace titans {

struct AttentionWeights {
  std::vector<float> w_q;           // [d, Ha*da]
  std::vector<float> w_k, w_v;      // [d, Hkv*da]
  std::vector<float> w_o;           // [Ha*da, d]
  std::vector<float> persistent_k;  // [Np, Hkv*da] (no rotary)
  std::vector<float> persistent_v;  // [Np, Hkv*da]
};

// The memory branch of a block (SEMANTICS.md 3): NeuralMemory (without its own output
// projection) -> per-head RMSNorm -> times SiLU(r W_g) -> output projection.
struct MemoryBranchWeights {
  MemoryWeights memory;     // the NeuralMemory's weights (its config: ModelConfig::memory)
  std::vector<float> norm;  // [H, dh] per-head RMSNorm gain
  std::vector<float> w_g;   // [d, H*dh] gate projection (SiLU)
  std::vector<float> w_o;   // [H*dh, d] output projection
};

struct LayerWeights {
  std::vector<float> norm;       // [d] pre-norm of the block input (every kind)
  std::vector<float> attn_norm;  // [d] kMal: pre-norm of the attention sub-layer
  std::vector<float> gate_norm_y, gate_norm_m;  // [d] kMag: N_y, N_m
  AttentionWeights attention;    // every kind but kLmm
  MemoryBranchWeights memory;    // every kind but kAttention
  std::vector<float> ffn_norm;   // [d]
  std::vector<float> ffn_gate, ffn_up;  // [d, f] SwiGLU: (SiLU(x W_gate) * (x W_up)) W_down
  std::vector<float> ffn_down;          // [f, d]
};

struct ModelWeights {
  std::vector<float> embedding;   // [V, d] (V > 0)
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [d]
  std::vector<float> lm_head;     // [d, V] (V > 0 and not tied)

  static ModelWeights Zeros(const ModelConfig& config);
  // Seeded random weights of sensible scale (tests, benchmarks, demos).
  static ModelWeights Random(const ModelConfig& config, uint64_t seed);
  // Every tensor the config uses, with its file name ("layers.3.attention.w_q", ...) and shape;
  // docs/FILE_FORMAT.md lists them.
  std::vector<TensorView> Tensors(const ModelConfig& config);
  std::vector<ConstTensorView> Tensors(const ModelConfig& config) const;
  // Throws Error(kMismatch) naming the first tensor whose size does not fit, or
  // Error(kInvalidArgument) for a non-finite value.
  void Validate(const ModelConfig& config) const;
};

class Model {
 public:
  // Validates config and weights; throws titans::Error.
  Model(ModelConfig config, ModelWeights weights);

  // Model files: safetensors, the config as JSON in the metadata (docs/FILE_FORMAT.md). Load
  // checks every name, shape and dtype against the config and fails with a message naming
  // the problem; Save writes atomically.
  static std::shared_ptr<const Model> Load(const std::string& path);
  void Save(const std::string& path) const;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // The NeuralMemory of layer l (null for kAttention layers), shared by every session.
  const std::shared_ptr<const NeuralMemory>& memory(int layer) const;

 private:
  ModelConfig config_;
  ModelWeights weights_;
  std::vector<std::shared_ptr<const NeuralMemory>> memories_;
};

}  // namespace titans
