// Utilisation figures of the benchmarks (issue 14): the FLOPs of the matrix products a kTitans
// model performs per token, and a GEMM baseline to divide the achieved rate by, measured in the
// same run on the same threads (the machine is shared and noisy, so only in-run ratios mean
// anything). Used by `titans bench` (tools/cli_bench.cpp).
//
// What is counted (products only, 2 FLOPs per multiply-add; norms, activations, rotary angles,
// softmax and the memories' elementwise recurrences are not), per token and layer:
//   attention     q, k, v, o projections 2 d (2 H da + 2 Hkv da) and the attention itself,
//                 4 H da per visible key (q.k and p.v; the keys the token sees: its window,
//                 the persistent pairs)
//   memory        MemoryConfig::FlopsPerToken (projections, the write's forward, backward and
//                 coefficient-weighted products, the read, its own output projection), plus the
//                 branch's gate and output projections 2 d H dh each
//   MAC           the memory read of the context token h (q projection and the MLP forward per
//                 head), attention over 2 rows per token (h and u; q, k, v projections of both,
//                 o of the u row; keys of the segment so far, both kinds), the memory branch on y
//   FFN           3 products 2 d f
// and once per token the LM head 2 d V.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "titans/model.hpp"

namespace titans::bench {

// Keys a token at `position` attends to in a window of `window` keys (0 = full), persistent
// pairs not included; as the engine's attention (docs/SEMANTICS.md 2.2).
inline double VisibleKeys(int window, int64_t position) {
  return static_cast<double>(window == 0 ? position + 1 : std::min<int64_t>(position + 1, window));
}

// Weights of one head's memory MLP (sum of layer_in x layer_out over its layers): its read costs
// twice this many FLOPs, its fast weights are this many floats.
inline double MlpWeightsPerHead(const MemoryConfig& m) {
  double weights = 0;
  for (int l = 0; l < m.depth; ++l) weights += static_cast<double>(m.layer_in(l)) * m.layer_out(l);
  return weights;
}

// The memory branch of a layer on one token, with its write: Mem(u) = W_o (norm(M(u)) * SiLU(u
// W_g)).
inline double MemoryBranchFlops(const ModelConfig& c) {
  const double d = c.d_model, hd = c.memory.inner_dim();
  return c.memory.FlopsPerToken() + 2.0 * d * hd + 2.0 * hd * d;
}

// A read only (MAC's context token h): the query projection, each head's MLP forward pass, the
// branch's gate and output projections.
inline double MemoryReadFlops(const ModelConfig& c) {
  const MemoryConfig& m = c.memory;
  const double d = c.d_model, hd = m.inner_dim();
  return 2.0 * d * hd + m.heads * 2.0 * MlpWeightsPerHead(m) + 2.0 * d * hd + 2.0 * hd * d;
}

// FLOPs of the products of one token at `position` through a kTitans model.
inline double TokenFlops(const ModelConfig& c, int64_t position) {
  const AttentionOptions& a = c.attention;
  const double d = c.d_model, qw = static_cast<double>(a.heads) * a.head_dim;
  const double kvw = static_cast<double>(a.kv_heads) * a.head_dim;
  const double qkv = 2.0 * d * (qw + 2.0 * kvw), output = 2.0 * qw * d;  // one row's projections
  const double per_key = 4.0 * qw;
  const double ffn = 3.0 * 2.0 * d * c.ffn_hidden;
  const double attention =
      qkv + output + per_key * (VisibleKeys(a.window, position) + a.persistent);
  double flops = 2.0 * d * c.vocab_size;  // the LM head
  for (const BlockKind kind : c.layers) {
    flops += ffn;
    switch (kind) {
      case BlockKind::kLmm:
        flops += MemoryBranchFlops(c);
        break;
      case BlockKind::kMal:
      case BlockKind::kMag:
        flops += MemoryBranchFlops(c) + attention;
        break;
      case BlockKind::kAttention:
        flops += attention;
        break;
      case BlockKind::kMac: {
        // Rows of the segment so far, h and u of each token up to this one (a bound: the h row
        // of token i sees one row fewer than its u row).
        const double keys = 2.0 * static_cast<double>(position % c.segment + 1);
        flops += MemoryReadFlops(c) + 2.0 * qkv + output + 2.0 * per_key * (keys + a.persistent) +
                 MemoryBranchFlops(c);
        break;
      }
    }
  }
  return flops;
}

// The sum of TokenFlops over positions [first, first + count).
inline double TokensFlops(const ModelConfig& c, int64_t first, int64_t count) {
  double flops = 0;
  for (int64_t p = first; p < first + count; ++p) flops += TokenFlops(c, p);
  return flops;
}

// The bytes one decoded token reads (the decode side of the utilisation figures): the model's
// weights, read once per step however many streams it advances (every tensor once, but an
// untied embedding matrix only its one row and the memories' initial fast weights not at all;
// 4 bytes a value, 2 for the product matrices of a kBf16 model, IsBf16Candidate, which it
// multiplies from their bf16 copies), and what each stream reads of its own state: each
// attention layer's visible cache rows (keys and values; MAC: its segment's h and u rows), each
// memory's fast weights for the read and, spread over its unit, the write's passes over fast
// weights, base weights and momentum (each read and written) and the unit's queued keys and
// values. An estimate of the traffic a decode step cannot avoid, not a measurement.
struct DecodeBytes {
  double weights = 0;     // per step, shared by the streams of a batch
  double per_stream = 0;  // per stream and step
  double per_token(int streams) const { return weights / streams + per_stream; }
};

inline DecodeBytes DecodeBytesAt(const Model& model, int64_t position) {
  const ModelConfig& c = model.config();
  constexpr double kFloat = sizeof(float);
  constexpr double kBf16 = 2;
  const bool bf16 = model.weight_type() == WeightType::kBf16;
  DecodeBytes bytes;
  for (const ConstTensorView& t : model.weights().Tensors(c)) {
    // A memory's initial fast weights (memory.mlp.*) are read only at a reset: the session's
    // own copies are its state.
    if (t.name.find(".memory.mlp.") != std::string::npos) continue;
    const bool untied_embedding = t.name == "embedding" && !c.tie_embeddings;
    const double value = bf16 && IsBf16Candidate(t.name) ? kBf16 : kFloat;
    bytes.weights += value * static_cast<double>(untied_embedding ? c.d_model : t.size());
  }
  const AttentionOptions& a = c.attention;
  const double kv_row = 2.0 * a.kv_heads * a.head_dim * kFloat;  // a key and a value
  const MemoryConfig& m = c.memory;
  const double fast = m.heads * MlpWeightsPerHead(m) * kFloat;  // one memory's fast weights
  const double pending = 2.0 * m.unit() * m.inner_dim() * kFloat;
  const double memory = fast + (6.0 * fast + pending) / m.unit();
  for (const BlockKind kind : c.layers) {
    if (HasAttention(kind) && kind != BlockKind::kMac) {
      bytes.per_stream += kv_row * VisibleKeys(a.window, position);
    }
    if (kind == BlockKind::kMac) bytes.per_stream += kv_row * 2.0 * (position % c.segment + 1);
    if (HasMemory(kind)) bytes.per_stream += kind == BlockKind::kMac ? 2.0 * memory : memory;
  }
  return bytes;
}

// A square float GEMM of about `flops` FLOPs (n = cbrt(flops / 2), at least 64), its columns
// split over `threads` threads, one single-threaded product each, as the library splits a
// product: the rate a kernel of the same size could reach on these threads now.
class GemmBaseline {
 public:
  GemmBaseline(double flops, int threads);
  ~GemmBaseline();
  GemmBaseline(const GemmBaseline&) = delete;
  GemmBaseline& operator=(const GemmBaseline&) = delete;

  int64_t n() const { return n_; }
  double flops() const { return 2.0 * static_cast<double>(n_) * n_ * n_; }
  // Seconds of one product (the benchmark programs alternate it with the kernel they time).
  double Run();
  // FLOP/s of the fastest of `runs` products (after one untimed run): the best is the rate the
  // threads reach when nothing else holds their cores, as a kernel's best figure is.
  double Rate(int runs = 3);

 private:
  int threads_;
  int64_t n_;
  struct Matrices;  // Eigen's, in gemm_baseline.cpp
  std::unique_ptr<Matrices> m_;
};

// A STREAM-style read of a buffer of `bytes` bytes (at least 4 KiB), split over `threads`
// threads: the rate at which the level of the memory hierarchy that holds that many bytes
// delivers them (on a host with a large last-level cache a small model's weights live there,
// and DRAM's rate would be the wrong bound).
class BandwidthBaseline {
 public:
  BandwidthBaseline(double bytes, int threads);
  double bytes() const { return static_cast<double>(data_.size()) * sizeof(float); }
  // Bytes per second of the fastest of `runs` timed reads (each repeats the read until it has
  // read at least 64 MiB, after one untimed read).
  double Rate(int runs = 5);

 private:
  int threads_;
  std::vector<float> data_;
};

}  // namespace titans::bench
