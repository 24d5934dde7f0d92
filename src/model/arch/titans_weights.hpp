// The tensor table of a Titans model (architecture kTitans; internal). src/model/weights.cpp
// walks it for views, validation, allocation and random initialisation; docs/FILE_FORMAT.md
// lists the names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "titans/model.hpp"

namespace titans::arch {

// tensor(name, shape, vector&) for every plain tensor of `c` and memory(layer, prefix,
// MemoryWeights&) for the NeuralMemory of every memory layer, in file order. Written once as a
// template so the const and mutable uses cannot disagree. Layers beyond w.layers.size() are
// skipped (Validate reports a wrong layer count first).
template <class Weights, class Tensor, class Memory>
void ForEachTitansWeight(const ModelConfig& c, Weights& w, Tensor&& tensor, Memory&& memory) {
  using Shape = std::vector<int64_t>;
  const int64_t d = c.d_model, f = c.ffn_hidden, v = c.vocab_size;
  const int64_t qw = int64_t{c.attention.heads} * c.attention.head_dim;
  const int64_t kvw = int64_t{c.attention.kv_heads} * c.attention.head_dim;
  const int64_t np = c.attention.persistent;
  const int64_t mh = c.memory.heads, mdh = c.memory.head_dim, mw = mh * mdh;

  if (v > 0) tensor("embedding", Shape{v, d}, w.embedding);
  for (size_t l = 0; l < c.layers.size() && l < w.layers.size(); ++l) {
    const BlockKind kind = c.layers[l];
    auto& layer = w.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    tensor(p + "norm", Shape{d}, layer.norm);
    if (kind == BlockKind::kMal) tensor(p + "attn_norm", Shape{d}, layer.attn_norm);
    if (kind == BlockKind::kMag) {
      tensor(p + "gate_norm_y", Shape{d}, layer.gate_norm_y);
      tensor(p + "gate_norm_m", Shape{d}, layer.gate_norm_m);
    }
    if (HasAttention(kind)) {
      auto& a = layer.attention;
      tensor(p + "attention.w_q", Shape{d, qw}, a.w_q);
      tensor(p + "attention.w_k", Shape{d, kvw}, a.w_k);
      tensor(p + "attention.w_v", Shape{d, kvw}, a.w_v);
      tensor(p + "attention.w_o", Shape{qw, d}, a.w_o);
      if (np > 0) {
        tensor(p + "attention.persistent_k", Shape{np, kvw}, a.persistent_k);
        tensor(p + "attention.persistent_v", Shape{np, kvw}, a.persistent_v);
      }
    }
    if (HasMemory(kind)) {
      auto& m = layer.memory;
      memory(l, p + "memory.", m.memory);
      tensor(p + "memory_branch.norm", Shape{mh, mdh}, m.norm);
      tensor(p + "memory_branch.w_g", Shape{d, mw}, m.w_g);
      tensor(p + "memory_branch.w_o", Shape{mw, d}, m.w_o);
    }
    tensor(p + "ffn_norm", Shape{d}, layer.ffn_norm);
    tensor(p + "ffn_gate", Shape{d, f}, layer.ffn_gate);
    tensor(p + "ffn_up", Shape{d, f}, layer.ffn_up);
    tensor(p + "ffn_down", Shape{f, d}, layer.ffn_down);
  }
  tensor("final_norm", Shape{d}, w.final_norm);
  if (v > 0 && !c.tie_embeddings) tensor("lm_head", Shape{d, v}, w.lm_head);
}

}  // namespace titans::arch
