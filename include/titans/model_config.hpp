// titans/model_config.hpp: the configuration of a whole Titans model (docs/SEMANTICS.md
// sections 2 and 3): token embedding (or raw input embeddings), a stack of blocks whose kinds
// may mix per layer, a final RMSNorm and an LM head (optionally tied to the embedding). A config
// can also describe titans-pytorch's MemoryAsContextTransformer (Architecture::kTitansPytorchMac,
// docs/SEMANTICS.md section 5, docs/TITANS_PYTORCH.md), which the engine runs as a model kind of
// its own.
#pragma once

#include <string>
#include <vector>

#include "titans/memory_config.hpp"

namespace titans {

// One block of the stack (pre-norm, residual; docs/SEMANTICS.md section 3).
enum class BlockKind {
  kLmm,        // h = x + Mem(n(x)); out = h + FFN(n(h))
  kMal,        // h = x + Mem(n(x)); h = h + SWA(n(h)); out = h + FFN(n(h))
  kMag,        // u = n(x); h = x + N_y(SWA(u)) * sigmoid(N_m(Mem(u))); out = h + FFN(n(h))
  kMac,        // memory as context, segments of `segment` tokens
  kAttention,  // h = x + SWA(n(x)); out = h + FFN(n(h)): a plain (windowed) transformer layer
};

// The network a ModelConfig describes.
enum class Architecture {
  kTitans,            // this engine's stack of blocks (docs/SEMANTICS.md section 3)
  kTitansPytorchMac,  // titans-pytorch MemoryAsContextTransformer (docs/TITANS_PYTORCH.md)
};

// What kTitansPytorchMac needs beyond the shared fields. There `layers` holds, per layer, kMac
// (neural memory, attention, feedforward) or kAttention (attention and feedforward, no memory);
// `segment` is titans-pytorch's segment_len; attention.window is its attention window
// W = segment + longterm_tokens; `memory` configures every memory layer.
struct TpMacOptions {
  int longterm_tokens = 0;        // M learned long-term memory tokens after every segment
  int memory_segment = 1;         // C (neural_memory_segment_len): the memory's step and the inner
                                  // axis of the axial position embedding
  bool sliding = false;           // sliding_window_attn: every position sees the W + 1 latest
                                  // positions; otherwise block-diagonal windows of W positions
  int streams = 4;                // S residual streams (hyper-connections); 1: a plain residual
  bool gate_attn_output = false;  // neural_mem_gate_attn_output
  // neural_memory_qkv_receives_diff_views: every memory layer but the first selects its
  // queries', keys' and values' inputs from its own branch input and the four branch tensors
  // of each earlier layer (attention in and out, feedforward in and out).
  bool qkv_views = false;
  bool operator==(const TpMacOptions&) const = default;
};

struct AttentionOptions {
  int heads = 8;
  int kv_heads = 8;  // grouped-query attention when < heads (heads % kv_heads == 0)
  int head_dim = 32;
  int window = 512;    // w: token t sees keys t-w < j <= t; 0 = full causal attention
  int persistent = 0;  // N_p learned key/value pairs per layer, always visible, no rotary
  float rope_base = 10000.0f;
  bool operator==(const AttentionOptions&) const = default;
};

struct ModelConfig {
  Architecture architecture = Architecture::kTitans;
  int vocab_size = 256;  // 0: the model takes raw input embeddings [T, d] and returns hidden
  int d_model = 256;
  int ffn_hidden = 1024;       // SwiGLU hidden width
  float norm_eps = 1e-6f;      // every RMSNorm of the blocks and the final norm
  bool tie_embeddings = true;  // LM head = embedding^T
  std::vector<BlockKind> layers;
  AttentionOptions attention;
  // Every memory layer of the stack uses this config; d_model must equal the model's and
  // output_proj must be false (the memory branch projects after its norm and gate).
  MemoryConfig memory;
  int segment = 0;      // MAC segment length C_s (> 0 when a layer is kMac): equal to the
                        // memory's unit, so the memory is written once per segment, at its end
  TpMacOptions tp_mac;  // architecture kTitansPytorchMac only

  // Whether a file of this config needs format_version 2 (an option added in version 2: the
  // memory's, or tp_mac.qkv_views).
  bool UsesTitansPytorchOptions() const {
    return memory.UsesTitansPytorchOptions() || tp_mac.qkv_views;
  }
  // Throws titans::Error(kConfig) naming the first inconsistent or unsupported option.
  void Validate() const;
  std::string ToJson() const;
  static ModelConfig FromJson(const std::string& text);  // validates; Error(kFormat) if bad
  bool operator==(const ModelConfig&) const = default;
};

const char* ToString(BlockKind kind);  // "lmm", "mal", "mag", "mac", "attention"

// Which parts a block kind has (the one definition): every kind but kAttention has a neural
// memory; every kind but kLmm has sliding-window attention.
constexpr bool HasMemory(BlockKind kind) { return kind != BlockKind::kAttention; }
constexpr bool HasAttention(BlockKind kind) { return kind != BlockKind::kLmm; }
const char* ToString(Architecture a);  // "titans", "titans_pytorch_mac"

}  // namespace titans
