// The small models the model-level tests run every block kind on (a mixed stack included):
// vocabulary 48, d 32, memory unit and MAC segment 8 tokens, windows 16, 7, 5 or full, with and
// without persistent pairs (and so with separate or tied heads), so that prompts of a few dozen
// tokens cross many unit, segment and window boundaries.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "titans/model_config.hpp"

namespace titans::test {

struct ModelCase {
  std::string name;
  std::vector<BlockKind> layers;
  int window;
  int persistent;
};

inline void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name; }

constexpr int kCaseVocab = 48;

inline ModelConfig ConfigFor(const ModelCase& k) {
  ModelConfig c;
  c.vocab_size = kCaseVocab;
  c.d_model = 32;
  c.ffn_hidden = 48;
  c.layers = k.layers;
  c.attention.heads = 4;
  c.attention.kv_heads = 2;
  c.attention.head_dim = 8;
  c.attention.window = k.window;
  c.attention.persistent = k.persistent;
  c.memory = MemoryConfig::Paper(32, 2, 8, 2, 8);
  c.memory.output_proj = false;
  c.segment = c.memory.unit();           // used by mac layers
  c.tie_embeddings = k.persistent == 0;  // both head forms
  return c;
}

inline std::vector<ModelCase> ModelCases() {
  return {
      {"lmm", {BlockKind::kLmm, BlockKind::kLmm}, 16, 0},
      {"mal", {BlockKind::kMal, BlockKind::kMal}, 16, 2},
      {"mag", {BlockKind::kMag, BlockKind::kMag}, 7, 0},
      {"attention", {BlockKind::kAttention, BlockKind::kAttention}, 16, 3},
      {"full_attention", {BlockKind::kAttention}, 0, 0},
      {"mac", {BlockKind::kMac, BlockKind::kMac}, 16, 2},
      {"mixed",
       {BlockKind::kLmm, BlockKind::kMal, BlockKind::kMag, BlockKind::kAttention, BlockKind::kMac},
       5,
       2},
  };
}

}  // namespace titans::test
