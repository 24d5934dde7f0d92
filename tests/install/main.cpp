// Smallest program against the installed library: build a tiny memory, run 8 tokens through a
// session, and check that every output is finite.
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <vector>

#include "titans/titans.hpp"

int main() {
  try {
    auto cfg = titans::MemoryConfig::Paper(/*d_model=*/16, /*heads=*/1, /*head_dim=*/16,
                                           /*depth=*/2, /*chunk=*/4);
    auto mem = std::make_shared<const titans::NeuralMemory>(
        cfg, titans::MemoryWeights::Random(cfg, /*seed=*/1));
    titans::MemorySession s(mem);
    const std::size_t n = 8;
    std::vector<float> x(n * static_cast<std::size_t>(mem->input_width()), 0.5f);
    std::vector<float> y(n * static_cast<std::size_t>(mem->output_width()));
    s.Forward(x, y);
    for (float v : y) {
      if (!std::isfinite(v)) {
        std::fprintf(stderr, "titans_install_test: non-finite output\n");
        return 1;
      }
    }
    std::printf("titans_install_test: %zu tokens, %zu finite outputs, position %lld: OK\n", n,
                y.size(), static_cast<long long>(s.position()));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "titans_install_test: %s\n", e.what());
    return 1;
  }
}
