// SampleToken: one token from a row of logits (greedy, or temperature with top-k and top-p);
// Session::Generate draws with it.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "titans/error.hpp"
#include "titans/session.hpp"

namespace titans {

int32_t SampleToken(std::span<const float> logits, const SamplerOptions& options,
                    std::mt19937_64& rng) {
  if (logits.empty()) throw Error(ErrorCode::kInvalidArgument, "no logits to sample from");
  if (!(options.temperature >= 0) || !(options.top_p > 0 && options.top_p <= 1) ||
      options.top_k < 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "sampler options: temperature >= 0, 0 < top_p <= 1, top_k >= 0");
  }
  for (float x : logits) {
    if (!std::isfinite(x)) throw Error(ErrorCode::kInvalidArgument, "non-finite logit");
  }
  const auto best = std::max_element(logits.begin(), logits.end());
  if (options.temperature == 0) return static_cast<int32_t>(best - logits.begin());
  // Candidates by descending logit, ties by index (the order a stable sort gives); keep top_k
  // (only those are sorted), then the top_p nucleus, then draw. The scratch is the calling
  // thread's, kept between calls: a decode loop allocates nothing once it has grown to the
  // vocabulary (std::sort and std::partial_sort allocate nothing; std::stable_sort would).
  thread_local std::vector<int32_t> order;
  thread_local std::vector<double> p;
  order.resize(logits.size());
  std::iota(order.begin(), order.end(), 0);
  size_t keep = order.size();
  if (options.top_k > 0) keep = std::min(keep, static_cast<size_t>(options.top_k));
  const auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (keep == order.size()) {
    std::sort(order.begin(), order.end(), before);
  } else {
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(),
                      before);
  }
  p.resize(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    p[i] = std::exp((static_cast<double>(logits[order[i]]) - *best) / options.temperature);
    total += p[i];
  }
  double mass = 0;
  size_t nucleus = 0;
  while (nucleus < keep && mass < options.top_p * total) mass += p[nucleus++];
  nucleus = std::max<size_t>(nucleus, 1);
  // u in [0, mass): 53 random bits, independent of the standard library's distributions.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * mass;
  double acc = 0;
  for (size_t i = 0; i < nucleus; ++i) {
    acc += p[i];
    if (u < acc) return order[i];
  }
  return order[nucleus - 1];
}

}  // namespace titans
