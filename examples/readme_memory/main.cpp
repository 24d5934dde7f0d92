#include <titans/titans.hpp>

#include <memory>
#include <vector>

int main() {
  auto config = titans::MemoryConfig::Paper(/*d_model=*/256, /*heads=*/1, /*head_dim=*/256,
                                            /*depth=*/2, /*chunk=*/64);
  auto memory = std::make_shared<const titans::NeuralMemory>(
      config, titans::MemoryWeights::Random(config, /*seed=*/1));  // or your trained weights
  titans::MemorySession session(memory);             // one stream's state
  const size_t n = 100;                               // tokens in this call
  std::vector<float> x(n * 256, 0.5f), y(n * 256);    // [n, d] in, [n, d] out
  session.Forward(x, y);                              // any n, any number of calls
  session.Save("state.safetensors");                  // atomic; Load() checks the config
}
