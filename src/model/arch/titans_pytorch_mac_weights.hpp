// The tensor table of a titans-pytorch MemoryAsContextTransformer model (architecture
// kTitansPytorchMac; internal). src/model/weights.cpp walks it for views, validation, allocation
// and random initialisation, exactly as it walks the Titans table (titans_weights.hpp);
// docs/FILE_FORMAT.md lists the names and tools/convert_titans_pytorch.py (mac_weights) writes
// them in this order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "titans/model.hpp"

namespace titans::arch {

// tensor(name, shape, vector&) for every plain tensor of `c`, memory(layer, prefix,
// MemoryWeights&) for the NeuralMemory of every kMac layer, in file order. Layers beyond
// w.tp_mac.layers.size() are skipped (Validate reports a wrong layer count first).
template <class Weights, class Tensor, class Memory>
void ForEachTitansPytorchMacWeight(const ModelConfig& c, Weights& w, Tensor&& tensor,
                                   Memory&& memory) {
  using Shape = std::vector<int64_t>;
  const int64_t d = c.d_model, f = c.ffn_hidden, v = c.vocab_size, h = c.attention.heads;
  const int64_t qw = h * c.attention.head_dim, np = c.attention.persistent;
  const int64_t s = c.tp_mac.streams, m = c.tp_mac.longterm_tokens;
  auto& t = w.tp_mac;

  auto hyper_connection = [&](const std::string& p, auto& hc, bool adds_branch) {
    if (s == 1) return;  // a plain residual
    tensor(p + "norm", Shape{d}, hc.norm);
    tensor(p + "static_alpha", Shape{s, 1 + s}, hc.static_alpha);
    tensor(p + "dynamic_alpha", Shape{d, 1 + s}, hc.dynamic_alpha);
    tensor(p + "alpha_scale", Shape{2}, hc.alpha_scale);
    if (adds_branch) {
      tensor(p + "static_beta", Shape{s}, hc.static_beta);
      tensor(p + "dynamic_beta", Shape{d}, hc.dynamic_beta);
      tensor(p + "beta_scale", Shape{1}, hc.beta_scale);
    }
  };

  tensor("embedding", Shape{v, d}, w.embedding);
  for (int a = 0; a < 2; ++a) {
    const std::string p = "tp_mac.axial." + std::to_string(a) + ".";
    tensor(p + "w0", Shape{1, 2 * d}, t.axial[a].w0);
    tensor(p + "b0", Shape{2 * d}, t.axial[a].b0);
    tensor(p + "w1", Shape{2 * d, 2 * d}, t.axial[a].w1);
    tensor(p + "b1", Shape{2 * d}, t.axial[a].b1);
    tensor(p + "w2", Shape{2 * d, d}, t.axial[a].w2);
    tensor(p + "b2", Shape{d}, t.axial[a].b2);
  }
  if (m > 0) tensor("tp_mac.longterm", Shape{m, d}, t.longterm);
  if (s > 1) tensor("tp_mac.stream_embed", Shape{s, d}, t.stream_embed);
  for (size_t l = 0; l < c.layers.size() && l < t.layers.size(); ++l) {
    auto& layer = t.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    if (c.layers[l] == BlockKind::kMac) {
      hyper_connection(p + "memory_hc.", layer.memory_hc, !c.tp_mac.gate_attn_output);
      memory(l, p + "memory.", layer.memory);
      if (c.tp_mac.qkv_views && l > 0) {
        const int64_t choices = 3 * (4 * static_cast<int64_t>(l) + 1);
        tensor(p + "memory_views.norm", Shape{d}, layer.views_norm);
        tensor(p + "memory_views.w", Shape{d, choices}, layer.views_w);
        tensor(p + "memory_views.b", Shape{choices}, layer.views_b);
      }
    }
    hyper_connection(p + "attention_hc.", layer.attention_hc, true);
    tensor(p + "attention.norm", Shape{d}, layer.attention_norm);
    tensor(p + "attention.w_q", Shape{d, qw}, layer.attention.w_q);
    tensor(p + "attention.w_k", Shape{d, qw}, layer.attention.w_k);
    tensor(p + "attention.w_v", Shape{d, qw}, layer.attention.w_v);
    tensor(p + "attention.w_o", Shape{qw, d}, layer.attention.w_o);
    if (np > 0) {
      tensor(p + "attention.persistent_k", Shape{np, qw}, layer.attention.persistent_k);
      tensor(p + "attention.persistent_v", Shape{np, qw}, layer.attention.persistent_v);
    }
    if (l > 0) {
      tensor(p + "attention.v_mix", Shape{d, h}, layer.v_mix);
      tensor(p + "attention.v_mix_bias", Shape{h}, layer.v_mix_bias);
    }
    hyper_connection(p + "ffn_hc.", layer.ffn_hc, true);
    tensor(p + "ffn_norm", Shape{d}, layer.ffn_norm);
    tensor(p + "ffn_up", Shape{d, f}, layer.ffn_up);
    tensor(p + "ffn_up_bias", Shape{f}, layer.ffn_up_bias);
    tensor(p + "ffn_gate", Shape{d, f}, layer.ffn_gate);
    tensor(p + "ffn_gate_bias", Shape{f}, layer.ffn_gate_bias);
    tensor(p + "ffn_down", Shape{f, d}, layer.ffn_down);
    tensor(p + "ffn_down_bias", Shape{d}, layer.ffn_down_bias);
  }
  tensor("final_norm", Shape{d}, w.final_norm);
  tensor("lm_head", Shape{d, v}, w.lm_head);
}

}  // namespace titans::arch
