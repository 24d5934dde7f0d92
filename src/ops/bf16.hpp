// bf16 weight storage (internal): the conversions, a weight matrix that is float32 or bf16, its
// product with float32 activations, and the bf16 copies a Model or NeuralMemory keeps of its
// big product matrices (docs/SEMANTICS.md 3.5).
//
// bf16 is the top half of a float32: widening is a 16-bit shift, so a product with bf16 weights
// is an exact float32 product with the rounded weights. The CPU's BF16 dot-product instructions
// (AVX512_BF16) would round the activations to bf16 as well; they are not used, so a bf16 model
// computes exactly what a float32 model with the same (rounded) weights computes, bit for bit
// (the products below sum in the same order for both storages), and only the weight bytes a
// decode step reads are halved.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ops/linalg.hpp"
#include "titans/error.hpp"
#include "titans/tensor.hpp"

namespace titans {
namespace bf16 {

// Round to nearest, ties to even (what torch's .to(torch.bfloat16) does). A finite float beyond
// the largest bf16 (about 3.39e38) rounds to infinity; callers check.
inline uint16_t FromFloat(float x) {
  const auto bits = std::bit_cast<uint32_t>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x40u);  // NaN stays NaN (quiet)
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}
inline float ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }
inline float Round(float x) { return ToFloat(FromFloat(x)); }

}  // namespace bf16

namespace linalg {

// A row-major weight matrix [rows, cols] stored as float32 (f32) or bf16 (bf16 non-null, then
// f32 holds the same values widened).
struct WeightMatrix {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  Index rows = 0, cols = 0;
};

// A stored weight as float32.
inline float Widen(float w) { return w; }
inline float Widen(uint16_t w) { return bf16::ToFloat(w); }

// c[0, n] = (or +=) a[0, k] b[k, n], b (float32 or bf16) with row stride n: the one-row product
// of a decoded token, a pass over b's rows eight at a time (eight sequential streams, one load
// and store of c per eight rows; c, at most kCols floats at a time, stays in L1). The plain loops
// vectorise (-O3, the host's SIMD width). Measured against Eigen's matrix-vector product on a
// float32 b of [256, 1024], and eight rows against four, in docs/PERFORMANCE.md ("bf16 product
// matrices").
template <class W>
void MultiplyRow(const float* a, const W* b, Index k, Index n, float* c, bool accumulate) {
  constexpr Index kCols = 4096;
  if (!accumulate) std::fill(c, c + n, 0.0f);
  for (Index j0 = 0; j0 < n; j0 += kCols) {
    const Index nd = std::min(kCols, n - j0);
    float* out = c + j0;
    Index i = 0;
    for (; i + 8 <= k; i += 8) {
      const W* b0 = b + i * n + j0;
      const float* ai = a + i;
      for (Index j = 0; j < nd; ++j) {
        out[j] += ai[0] * Widen(b0[j]) + ai[1] * Widen(b0[n + j]) + ai[2] * Widen(b0[2 * n + j]) +
                  ai[3] * Widen(b0[3 * n + j]) + ai[4] * Widen(b0[4 * n + j]) +
                  ai[5] * Widen(b0[5 * n + j]) + ai[6] * Widen(b0[6 * n + j]) +
                  ai[7] * Widen(b0[7 * n + j]);
      }
    }
    for (; i < k; ++i) {
      const float ai = a[i];
      const W* bi = b + i * n + j0;
      for (Index j = 0; j < nd; ++j) out[j] += ai * Widen(bi[j]);
    }
  }
}

// c = a b (or c += a b) for a weight matrix b. One row (a decoded token) goes through
// MultiplyRow for either storage, so that a bf16 model decodes exactly as the float32 model with
// its rounded weights does. More rows: Multiply itself for float32; for bf16, float32 panels of b
// widened on the stack (Multiply's panel sizes, 128 KiB), each once for all of a's rows, and
// multiplied as Multiply multiplies its panels (the same sums, bit for bit).
template <class C, class A>
void Multiply(C&& c, const A& a, const WeightMatrix& b, bool accumulate = false) {
  const Index m = c.rows(), n = c.cols(), k = a.cols();
  if (m == 1) {
    // a and c are rows with unit inner stride (maps, blocks of row-major matrices).
    if (b.bf16 != nullptr) {
      MultiplyRow(a.data(), b.bf16, k, n, c.data(), accumulate);
    } else {
      MultiplyRow(a.data(), b.f32, k, n, c.data(), accumulate);
    }
    return;
  }
  if (b.bf16 == nullptr) {
    Multiply(c, a, ConstView(b.f32, b.rows, b.cols, b.cols), accumulate);
    return;
  }
  constexpr Index kRows = 128, kDepth = 256, kCols = 128;
  alignas(64) float panel[kDepth * kCols];
  for (Index k0 = 0; k0 < k; k0 += kDepth) {
    const Index kd = std::min(kDepth, k - k0);
    for (Index j0 = 0; j0 < n; j0 += kCols) {
      const Index nd = std::min(kCols, n - j0);
      for (Index i = 0; i < kd; ++i) {
        const uint16_t* row = b.bf16 + (k0 + i) * b.cols + j0;
        for (Index j = 0; j < nd; ++j) panel[i * nd + j] = bf16::ToFloat(row[j]);
      }
      const ConstMatMap widened = ConstView(panel, kd, nd, nd);
      for (Index i0 = 0; i0 < m; i0 += kRows) {
        const Index md = std::min(kRows, m - i0);
        auto target = c.block(i0, j0, md, nd);
        const auto product = a.block(i0, k0, md, kd) * widened;
        if (k0 == 0 && !accumulate) {
          target.noalias() = product;
        } else {
          target.noalias() += product;
        }
      }
    }
  }
}

}  // namespace linalg

namespace ops {

// The bf16 copies of an owner's product matrices, found by the address of the float32 tensor
// they copy (the owner's weights never move after construction). Empty for a float32 owner.
class Bf16Copies {
  using Index = linalg::Index;
  using Entry = std::pair<const float*, std::vector<uint16_t>>;

 public:
  // Rounds the tensor data[0, size) to bf16 in place (so its float32 values are the copy's,
  // widened) and keeps a bf16 copy. Returns false, changing nothing, if a value overflows bf16.
  bool Add(float* data, size_t size) {
    if (size == 0) return true;
    std::vector<uint16_t> copy(size);
    for (size_t i = 0; i < size; ++i) {
      copy[i] = bf16::FromFloat(data[i]);
      if ((copy[i] & 0x7f80u) == 0x7f80u) return false;
    }
    for (size_t i = 0; i < size; ++i) data[i] = bf16::ToFloat(copy[i]);
    copies_.insert(Position(data), Entry(data, std::move(copy)));
    return true;
  }

  bool empty() const { return copies_.empty(); }

  // The copies of an owner's weights: for kBf16, every view IsBf16Candidate names is added
  // (rounded in place); none for kF32. A value beyond bf16's range is Error(kInvalidArgument)
  // naming `owner`'s tensor ("model weight 'layers.1.ffn_up' ...").
  static std::shared_ptr<const Bf16Copies> Of(const std::vector<TensorView>& views, WeightType type,
                                              const std::string& owner) {
    auto copies = std::make_shared<Bf16Copies>();
    if (type == WeightType::kBf16) {
      for (const TensorView& view : views) {
        if (IsBf16Candidate(view.name) &&
            !copies->Add(view.data, static_cast<size_t>(view.size()))) {
          throw Error(ErrorCode::kInvalidArgument,
                      owner + " '" + view.name + "' has a value beyond bf16's range");
        }
      }
    }
    return copies;
  }

  // The tensor [rows, cols] as a weight matrix: bf16 if it has a copy.
  linalg::WeightMatrix Matrix(const std::vector<float>& tensor, Index rows, Index cols) const {
    const auto at = Position(tensor.data());
    const bool found = at != copies_.end() && at->first == tensor.data();
    return {tensor.data(), found ? at->second.data() : nullptr, rows, cols};
  }

 private:
  std::vector<Entry>::const_iterator Position(const float* data) const {
    return std::lower_bound(copies_.begin(), copies_.end(), data,
                            [](const Entry& e, const float* p) { return e.first < p; });
  }
  std::vector<Entry> copies_;  // sorted by address
};

}  // namespace ops
}  // namespace titans
