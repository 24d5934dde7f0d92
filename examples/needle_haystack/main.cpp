// needle_haystack: the needle-in-a-haystack test through the evaluations library
// (titans/evals/niah.hpp, evals/). Builds the constructed demo model, hides a 7-digit number at
// a few depths of a long noise haystack, and asks for it back -- with the memory writing and
// with its writes off.
// `titans niah` runs the full grid, with baselines, JSON and a heatmap (docs/NIAH.md).
//
//   needle_haystack [context_tokens]   (default 65536)
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "titans/evals/niah.hpp"

int main(int argc, char** argv) {
  try {
    const int64_t length = argc > 1 ? std::atoll(argv[1]) : 65536;
    const auto model = titans::niah::BuildNeedleModel();  // attention window 256
    const auto no_writes = titans::niah::WithoutMemoryWrites(*model);
    titans::Session with_memory(model), without_memory(no_writes);

    std::printf("context %lld tokens, attention window %d\n", static_cast<long long>(length),
                model->config().attention.window);
    std::printf("%6s %9s  %-9s %-9s %s\n", "depth", "needle at", "expected", "memory",
                "writes off");
    for (double depth : {0.0, 0.25, 0.5, 0.75, 1.0}) {
      const titans::niah::TrialSpec spec{length, depth, /*seed=*/42};
      const auto a = titans::niah::RunTrial(with_memory, titans::niah::kNoiseBlock, spec);
      const auto b = titans::niah::RunTrial(without_memory, titans::niah::kNoiseBlock, spec);
      std::printf("%5.0f%% %9lld  %-9s %-9s %s   (%.1f s, %.0f tokens/s)\n", depth * 100,
                  static_cast<long long>(a.needle_position), a.expected.c_str(), a.answer.c_str(),
                  b.answer.c_str(), a.seconds, static_cast<double>(length) / a.seconds);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
