// titans/tensor.hpp: a named view of one tensor (file IO and validation): MemoryWeights,
// MemoryState and ModelWeights list their tensors as these.
#pragma once

#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
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

}  // namespace titans
