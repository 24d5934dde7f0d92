// The small models the model-level tests run every block kind on (a mixed stack included):
// vocabulary 48, d 32, memory unit and MAC segment 8 tokens, windows 16, 7, 5 or full, with and
// without persistent pairs (and so with separate or tied heads), so that prompts of a few dozen
// tokens cross many unit, segment and window boundaries. Two cases swap the memory MLP for
// titans-pytorch's SwiGLU and gated-residual memory models.
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
  // titans-pytorch's other memory models write one step per unit: those cases read per step
  // (steps of 4 tokens, commits every 8).
  MemoryModel memory_model = MemoryModel::kMlp;
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
  if (k.memory_model != MemoryModel::kMlp) {
    c.memory.model = k.memory_model;
    c.memory.activation = Activation::kGelu;
    c.memory.read = ReadRule::kStep;
    c.memory.step = 4;
  }
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
      {"mag_swiglu_memory", {BlockKind::kMag, BlockKind::kMag}, 16, 0, MemoryModel::kSwiGlu},
      {"mal_gated_memory", {BlockKind::kMal, BlockKind::kMal}, 7, 2, MemoryModel::kGatedResidual},
  };
}

}  // namespace titans::test
