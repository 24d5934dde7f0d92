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

// The memory branch of a block (docs/SEMANTICS.md 3.1): NeuralMemory (without its own output
// projection) -> per-head RMSNorm -> times SiLU(r W_g) -> output projection.
struct MemoryBranchWeights {
  MemoryWeights memory;     // the NeuralMemory's weights (its config: ModelConfig::memory)
  std::vector<float> norm;  // [H, dh] per-head RMSNorm gain
  std::vector<float> w_g;   // [d, H*dh] gate projection (SiLU)
  std::vector<float> w_o;   // [H*dh, d] output projection
};

struct LayerWeights {
  std::vector<float> norm;                      // [d] pre-norm of the block input (every kind)
  std::vector<float> attn_norm;                 // [d] kMal: pre-norm of the attention sub-layer
  std::vector<float> gate_norm_y, gate_norm_m;  // [d] kMag: N_y, N_m
  AttentionWeights attention;                   // every kind but kLmm
  MemoryBranchWeights memory;                   // every kind but kAttention
  std::vector<float> ffn_norm;                  // [d]
  std::vector<float> ffn_gate, ffn_up;          // [d, f] SwiGLU: (SiLU(x W_gate) * (x W_up)) W_down
  std::vector<float> ffn_down;                  // [f, d]
};

// titans-pytorch MemoryAsContextTransformer (Architecture::kTitansPytorchMac;
// docs/TITANS_PYTORCH.md has the mapping from its state_dict). S = tp_mac.streams,
// M = tp_mac.longterm_tokens, Ha = attention heads, da = head_dim, Np = persistent.
// These structs are public API and as stable as the rest of ModelWeights, which holds them by
// value (ModelWeights::tp_mac): they are this architecture's model-file tensors one for one
// (docs/FILE_FORMAT.md), so they change only with the file format's version.

// One manifold-constrained hyper-connection (mHC) around a branch; all empty when S = 1 (a
// plain residual). Per token, with streams h_s and n_s = h_s / |h_s| * sqrt(d) * norm:
// branch input sum_s sigmoid(a_s) h_s, a_s = alpha_scale[0] (n_s dynamic_alpha[:, 0]) +
// static_alpha[s, 0]; streams mixed by Sinkhorn(L), L[s, t] = alpha_scale[1]
// (n_s dynamic_alpha[:, 1 + t]) + static_alpha[s, 1 + t]; branch output added to stream t times
// 2 sigmoid(beta_scale (n_t dynamic_beta) + static_beta[t]).
struct HyperConnectionWeights {
  std::vector<float> norm;           // [d] gain of the stream norm (titans-pytorch gamma + 1)
  std::vector<float> static_alpha;   // [S, 1 + S]
  std::vector<float> dynamic_alpha;  // [d, 1 + S]
  std::vector<float> alpha_scale;    // [2] pre_branch_scale, residual_scale
  std::vector<float> static_beta;    // [S]  (these three are empty for a memory branch that
  std::vector<float> dynamic_beta;   // [d]   gates the attention output instead of adding
  std::vector<float> beta_scale;     // [1]   to the streams: h_post_scale)
};

struct TpMacLayerWeights {
  HyperConnectionWeights memory_hc;  // kMac layers
  MemoryWeights memory;              // kMac layers (config: ModelConfig::memory)
  // tp_mac.qkv_views, kMac layers l > 0 (0-based), L = 4 l + 1 candidates: the selector's
  // RMSNorm gain [d] and Linear [d, 3L] + [3L]; logit column v L + j weighs candidate j of view v.
  std::vector<float> views_norm, views_w, views_b;
  HyperConnectionWeights attention_hc;
  std::vector<float> attention_norm;  // [d] RMSNorm before the attention projections
  AttentionWeights attention;         // w_q, w_k, w_v [d, Ha*da]; w_o; persistent_k/v [Np, Ha*da]
  std::vector<float> v_mix;           // [d, Ha] value residual mix, layers after the first
  std::vector<float> v_mix_bias;      // [Ha]
  HyperConnectionWeights ffn_hc;
  std::vector<float> ffn_norm;                    // [d]
  std::vector<float> ffn_up, ffn_gate;            // [d, f]: (x W_up + b_up) * SiLU(x W_gate
  std::vector<float> ffn_up_bias, ffn_gate_bias;  // [f]      + b_gate), then W_down + b_down
  std::vector<float> ffn_down;                    // [f, d]
  std::vector<float> ffn_down_bias;               // [d]
};

// Axis a of the axial position embedding: MLP_a(i) = (SiLU(SiLU(i w0 + b0) w1 + b1)) w2 + b2
// of the scalar position index i on that axis.
struct AxialMlpWeights {
  std::vector<float> w0, b0;  // [1, 2d], [2d]
  std::vector<float> w1, b1;  // [2d, 2d], [2d]
  std::vector<float> w2, b2;  // [2d, d], [d]
};

struct TpMacWeights {
  AxialMlpWeights axial[2];         // position p: MLP_0(p / C) + MLP_1(p mod C)
  std::vector<float> longterm;      // [M, d] long-term memory tokens
  std::vector<float> stream_embed;  // [S, d] (S > 1)
  std::vector<TpMacLayerWeights> layers;
};

struct ModelWeights {
  std::vector<float> embedding;      // [V, d] (V > 0)
  std::vector<LayerWeights> layers;  // architecture kTitans
  std::vector<float> final_norm;     // [d]
  std::vector<float> lm_head;        // [d, V] (V > 0 and not tied)
  TpMacWeights tp_mac;               // architecture kTitansPytorchMac (then `layers` is empty)

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
  // Validates config and weights; throws titans::Error. With WeightType::kBf16 every tensor
  // IsBf16Candidate names is rounded to bf16 (weights() then holds the rounded values) and
  // multiplied from a bf16 copy (docs/SEMANTICS.md 3.5); Error(kInvalidArgument) if a value
  // overflows bf16.
  Model(ModelConfig config, ModelWeights weights, WeightType weight_type = WeightType::kF32);
  // A copy builds its own bf16 copies (they are found by the address of its weights).
  Model(const Model& other);
  Model& operator=(const Model&) = delete;

  // Model files: safetensors, the config as JSON in the metadata (docs/FILE_FORMAT.md). Load
  // checks every name, shape and dtype against the config and fails with a message naming
  // the problem; a file whose product matrices are BF16 loads as a kBf16 model. Save writes
  // atomically, the product matrices of a kBf16 model as BF16.
  static std::shared_ptr<const Model> Load(const std::string& path);
  void Save(const std::string& path) const;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  WeightType weight_type() const { return weight_type_; }
  // The NeuralMemory of layer l (null for layers without memory), shared by every session.
  const std::shared_ptr<const NeuralMemory>& memory(int layer) const;
  // The bf16 copies of the product matrices (internal: src/ops/bf16.hpp; empty for kF32).
  const ops::Bf16Copies& bf16_copies() const { return *bf16_; }

 private:
  ModelConfig config_;
  ModelWeights weights_;
  WeightType weight_type_;
  std::shared_ptr<const ops::Bf16Copies> bf16_;
  std::vector<std::shared_ptr<const NeuralMemory>> memories_;
};

}  // namespace titans
