// The whole models the benchmarks run (bench/model_bench.cpp, bench/context_bench.cpp and the
// `titans bench` command, tools/cli_bench.cpp), and the token stream they feed.
//
// Four layers of one block kind: d_model 256, SwiGLU 1024, attention 8 heads x 32 (8 kv heads),
// window 512, 4 persistent pairs, memory MemoryConfig::Paper(256, 4, 64, 2, 64) without its own
// output projection, MAC segment 64 (= the memory's unit), byte vocabulary (256), tied head.
// Kinds: lmm, mal, mag, mac, attention (a plain sliding-window transformer) and full (attention
// with window 0: the full-attention baseline, whose cache keeps every key).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "titans/model.hpp"

namespace titans::bench {

enum ModelKind { kLmm, kMal, kMag, kMac, kAttention, kFull, kModelKinds };
constexpr std::array<const char*, kModelKinds> kModelKindNames = {"lmm", "mal",       "mag",
                                                                  "mac", "attention", "full"};

inline std::optional<ModelKind> ModelKindNamed(std::string_view name) {
  for (int k = 0; k < kModelKinds; ++k) {
    if (name == kModelKindNames[k]) return static_cast<ModelKind>(k);
  }
  return std::nullopt;
}

inline ModelConfig BenchModelConfig(ModelKind kind) {
  ModelConfig c;
  c.vocab_size = 256;
  c.d_model = 256;
  c.ffn_hidden = 1024;
  c.tie_embeddings = true;
  const BlockKind block = kind == kLmm   ? BlockKind::kLmm
                          : kind == kMal ? BlockKind::kMal
                          : kind == kMag ? BlockKind::kMag
                          : kind == kMac ? BlockKind::kMac
                                         : BlockKind::kAttention;
  c.layers.assign(4, block);
  c.attention.heads = 8;
  c.attention.kv_heads = 8;
  c.attention.head_dim = 32;
  c.attention.window = kind == kFull ? 0 : 512;
  c.attention.persistent = 4;
  c.memory = MemoryConfig::Paper(256, 4, 64, 2, 64);
  c.memory.output_proj = false;
  c.segment = kind == kMac ? c.memory.unit() : 0;
  return c;
}

// The forgetting gates' bias of the benchmark models' memories: alpha = sigmoid(x w_alpha - 16),
// about 1e-7 per token, a half-life of millions of tokens. With Random's default (about 1e-3 per
// token) these memories decayed to |W|/|W0| of 1e-3 by 4K tokens and 1e-9 by 16K (measured),
// towards zero, where a deep memory stays (each layer's gradient is a product of the other
// layers' weights): long-context figures then timed a memory that held nothing. With this bias
// the fast weights stay near W0 and grow slowly with the writes (|W|/|W0| 1.05-1.09 at 64K for
// lmm); `titans bench` prints the ratio at every point (bench::MemoryAlive).
constexpr float kBenchForgetBias = -16.0f;

// The model with seeded random weights (ModelWeights::Random, seed 1234), its memories'
// forgetting bias set to kBenchForgetBias.
inline std::shared_ptr<const Model> MakeBenchModel(ModelKind kind) {
  const ModelConfig config = BenchModelConfig(kind);
  ModelWeights weights = ModelWeights::Random(config, 1234);
  for (LayerWeights& layer : weights.layers) {
    for (float& b : layer.memory.memory.b_alpha) b = kBenchForgetBias;
  }
  return std::make_shared<const Model>(config, std::move(weights));
}

// The token at stream position i: cheap to make on the fly, every byte value in turn.
inline int32_t StreamToken(int64_t i) { return static_cast<int32_t>((i * 7919) % 256); }

}  // namespace titans::bench
