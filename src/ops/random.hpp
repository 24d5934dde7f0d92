// Seeded random numbers that are the same on every platform (internal). The standard
// distributions are not (std::normal_distribution differs between standard libraries), and
// Random weights must be reproducible from their seed alone.
#pragma once

#include <cmath>
#include <cstdint>

namespace titans {

// splitmix64: a well-mixed 64-bit sequence from any seed (0 included).
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// An independent seed for sub-stream `stream` of `seed` (e.g. one per layer).
inline uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  uint64_t state = seed ^ (stream * 0xD1B54A32D192ED03ull);
  SplitMix64(state);
  return SplitMix64(state);
}

// N(0, 1) samples: splitmix64 + Box-Muller.
class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : state_(seed) {}
  float Next() {
    const double u1 = (static_cast<double>(SplitMix64(state_) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(SplitMix64(state_) >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t state_;
};

}  // namespace titans
