// titans/tensor.hpp: a named view of one tensor (file IO and validation): MemoryWeights,
// MemoryState and ModelWeights list their tensors as these.
#pragma once

#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

namespace titans {

// shape is row-major, outermost first; data points into the owner's buffer.
struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  float* data;
  int64_t size() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  }
};
struct ConstTensorView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
  int64_t size() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  }
};

// How a Model (or NeuralMemory) stores its big product matrices (docs/SEMANTICS.md 3.5). kBf16
// rounds them to bf16 (round to nearest, ties to even) and multiplies with the rounded values
// widened to float32: every computation stays float32, a decode step reads half the bytes of
// those matrices. Everything else (norm gains, biases, embeddings, gates, the memory's initial
// fast weights, every session's state) stays float32.
enum class WeightType { kF32, kBf16 };
const char* ToString(WeightType type);  // "f32", "bf16"

// Whether the tensor `name` (a file name: "layers.2.attention.w_q", or a memory's own "w_k") is
// one of the product matrices kBf16 stores as bf16: the attention and memory projections w_q,
// w_k, w_v, the attention output w_o, the memory branch's w_g and w_o, the feed-forward ffn_gate,
// ffn_up, ffn_down and lm_head.
bool IsBf16Candidate(std::string_view name);

}  // namespace titans
