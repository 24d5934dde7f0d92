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
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

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
  Index stride = 0;  // elements from one row to the next; 0: cols (a whole matrix)

  Index ld() const { return stride > 0 ? stride : cols; }
  // Columns [j0, j0 + n) of every row: a thread's share of a product's outputs.
  WeightMatrix Columns(Index j0, Index n) const {
    return {f32 != nullptr ? f32 + j0 : nullptr, bf16 != nullptr ? bf16 + j0 : nullptr, rows, n,
            ld()};
  }
};

// One SIMD register of floats, as GCC and Clang vector extensions: 16 floats with AVX-512, 8 with
// AVX, 4 otherwise (a wider vector type than the target's registers would change the calling
// convention of these inline functions, which the compilers warn about). Loads are unaligned; a
// bf16 load widens kWidth stored values exactly (a 16-bit shift).
namespace simd {
#if defined(__AVX512F__)
constexpr int kBytes = 64;
#elif defined(__AVX__)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;
#endif
using Floats = float __attribute__((vector_size(kBytes)));
using Halves = uint16_t __attribute__((vector_size(kBytes / 2)));
using Words = uint32_t __attribute__((vector_size(kBytes)));
constexpr Index kWidth = kBytes / 4;
// Registers of sums a kernel tile may hold: 24 of AVX-512's 32, 12 of AVX's or SSE's 16.
constexpr int kSumRegisters = kBytes == 64 ? 24 : 12;

inline Floats Load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline Floats Load(const uint16_t* p) {
  Halves h;
  std::memcpy(&h, p, sizeof h);
  return std::bit_cast<Floats>(__builtin_convertvector(h, Words) << 16);
}
inline void Store(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }
// x in every lane. x - 0 is x for every x, so the compiler emits one broadcast load; x + 0 turns
// -0 into +0, so it must keep that addition (a scalar add and a register broadcast in the
// products' inner loops; docs/PERFORMANCE.md, "Where a prefill piece's time goes").
inline Floats Broadcast(float x) { return x - Floats{}; }

// The sum of v's lanes in a fixed tree (halves added until one lane is left), the same bits
// wherever it is used. AVX-512's reduction intrinsic adds the same halves in registers.
inline float Sum(Floats v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps(v);
#else
  float lanes[kWidth];
  Store(lanes, v);
  for (Index width = kWidth / 2; width > 0; width /= 2) {
    for (Index l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  }
  return lanes[0];
#endif
}

// s + x w with one rounding where the CPU has fused multiply-add, spelled out rather than left to
// the compiler's contraction of `s += x * w`, which it may apply in one instantiation of a kernel
// and not in another (float32 and bf16 weights must give the same bits).
inline Floats MulAdd(Floats x, Floats w, Floats s) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(x, w, s);
#elif defined(__FMA__)
  return _mm256_fmadd_ps(x, w, s);
#elif defined(__aarch64__)
  for (int i = 0; i < kWidth; ++i) s[i] = std::fma(x[i], w[i], s[i]);
  return s;
#else
  return s + x * w;  // no fused instruction to contract into: two roundings, everywhere
#endif
}
inline float MulAdd(float x, float w, float s) {
#if defined(__FMA__) || defined(__aarch64__)
  return std::fma(x, w, s);
#else
  return s + x * w;
#endif
}

// Whether all n values are finite: x - x is 0 for a finite x and NaN for NaN or Inf, and NaN
// survives the sums. Whole registers at a time (a loop that stops at the first non-finite value
// does not vectorise); the inputs' checks use it and search for the culprit only when it fails.
inline bool AllFinite(const float* x, Index n) {
  Floats lanes{};
  Index i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    const Floats v = Load(x + i);
    lanes += v - v;  // NOLINT(misc-redundant-expression): 0, or NaN for NaN and Inf
  }
  float rest = Sum(lanes);
  for (; i < n; ++i) rest += x[i] - x[i];  // NOLINT(misc-redundant-expression): as above
  return rest == 0.0f;
}
}  // namespace simd

// A stored weight as float32.
inline float Widen(float w) { return w; }
inline float Widen(uint16_t w) { return bf16::ToFloat(w); }

// c[0, n] = (or +=) a[0, k] b[k, n], b (float32 or bf16) with row stride ldb: the one-row product
// of a decoded token, a pass over b's rows eight at a time (eight sequential streams, one load
// and store of c per eight rows; c, at most kCols floats at a time, stays in L1). The plain loops
// vectorise (-O3; simd::MulAdd is std::fma there). Each c[j] is the same chain of multiply-adds
// over k in order as MultiplyWeights computes for a row, so a token's products have the same
// bits decoded alone, in a batch or in a prefill piece. Measured
// against Eigen's matrix-vector product in docs/PERFORMANCE.md ("bf16 product matrices").
template <class W>
void MultiplyRow(const float* a, const W* b, Index k, Index n, Index ldb, float* c,
                 bool accumulate) {
  constexpr Index kCols = 4096;
  if (!accumulate) std::fill(c, c + n, 0.0f);
  for (Index j0 = 0; j0 < n; j0 += kCols) {
    const Index nd = std::min(kCols, n - j0);
    float* out = c + j0;
    Index i = 0;
    for (; i + 8 <= k; i += 8) {
      const W* b0 = b + i * ldb + j0;
      const float* ai = a + i;
      Index j = 0;
      if constexpr (std::is_same_v<W, float>) {
        // Float32 in explicit registers, two chains at a time: 1.0-1.5x the plain loop below
        // on float32 (measured with titans_weight_product_bench's shapes), while for bf16 the
        // plain loop is the faster form (its explicit form was 20-25% slower).
        simd::Floats x[8];
        for (Index s = 0; s < 8; ++s) x[s] = simd::Broadcast(ai[s]);
        for (; j + 2 * simd::kWidth <= nd; j += 2 * simd::kWidth) {
          simd::Floats sum0 = simd::Load(out + j), sum1 = simd::Load(out + j + simd::kWidth);
          for (Index s = 0; s < 8; ++s) {
            sum0 = simd::MulAdd(x[s], simd::Load(b0 + s * ldb + j), sum0);
            sum1 = simd::MulAdd(x[s], simd::Load(b0 + s * ldb + j + simd::kWidth), sum1);
          }
          simd::Store(out + j, sum0);
          simd::Store(out + j + simd::kWidth, sum1);
        }
      }
      for (; j < nd; ++j) {
        float sum = out[j];
        for (Index s = 0; s < 8; ++s) sum = simd::MulAdd(ai[s], Widen(b0[s * ldb + j]), sum);
        out[j] = sum;
      }
    }
    for (; i < k; ++i) {
      const W* bi = b + i * ldb + j0;
      for (Index j = 0; j < nd; ++j) out[j] = simd::MulAdd(a[i], Widen(bi[j]), out[j]);
    }
  }
}

// MultiplyWeights' blocking: tiles of 6 rows x kPanelRegisters registers of sums (with AVX-512:
// 6 x 4, a panel of 64 columns), depth blocks of 256 rows of b (a panel: 64 KiB at most, in L2).
constexpr int kTileRows = 6;
constexpr int kPanelRegisters = simd::kSumRegisters / kTileRows;
constexpr Index kWeightDepth = 256;

// c[R, kWidth V] (=, or += with load_c) a[R, kd] b[kd, kWidth V]: R rows of activations against a
// panel of V registers' width of weights, all R x V sums in registers (R V <= kSumRegisters), b
// read straight from the weight matrix (row stride ldb), never packed. Each sum adds its kd
// products in order, so a row's result does not depend on R or on the other rows. Rows of b are
// prefetched kAhead ahead: a panel's rows lie a whole row of b apart (a page or more for wide
// matrices), where the hardware prefetchers do not follow.
//
// With kTransposedA, a is stored transposed: element (r, i) at a[i lda + r] (a gradient product
// A^T D of a row-major A read in place: each k reads R neighbouring floats of one row of A).
// Without kPrefetchB nothing is prefetched: b is a small scratch already in L1 (the attention's
// tiles), where the prefetches only take load slots (measured 3-10% slower).
template <int R, int V, bool kTransposedA, bool kPrefetchB, class W>
void WeightTile(const float* a, Index lda, const W* b, Index ldb, Index kd, float* c, Index ldc,
                bool load_c) {
  constexpr Index kAhead = 16;
  simd::Floats sum[R][V];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      sum[r][v] = load_c ? simd::Load(c + r * ldc + v * simd::kWidth) : simd::Floats{};
    }
  }
  for (Index i = 0; i < kd; ++i) {
    simd::Floats w[V];
    for (int v = 0; v < V; ++v) {
      if constexpr (kPrefetchB) {
        __builtin_prefetch(b + std::min(i + kAhead, kd - 1) * ldb + v * simd::kWidth);
      }
      w[v] = simd::Load(b + i * ldb + v * simd::kWidth);
    }
    for (int r = 0; r < R; ++r) {
      const float xi = kTransposedA ? a[i * lda + r] : a[r * lda + i];
      const simd::Floats x = simd::Broadcast(xi);
      for (int v = 0; v < V; ++v) sum[r][v] = simd::MulAdd(x, w[v], sum[r][v]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) simd::Store(c + r * ldc + v * simd::kWidth, sum[r][v]);
  }
}

// Where row `row` of a [m, k] starts (column `row` of its storage with kTransposedA).
template <bool kTransposedA>
const float* RowOf(const float* a, Index lda, Index row) {
  return kTransposedA ? a + row : a + row * lda;
}

// The rows of a [m, kd] against one panel of b, R rows at a time (fewer at the end).
template <int V, bool kTransposedA, bool kPrefetchB, class W>
void WeightPanel(Index m, const float* a, Index lda, const W* b, Index ldb, Index kd, float* c,
                 Index ldc, bool load_c) {
  constexpr int R = kTileRows;
  Index i = 0;
  for (; i + R <= m; i += R) {
    WeightTile<R, V, kTransposedA, kPrefetchB>(RowOf<kTransposedA>(a, lda, i), lda, b, ldb, kd,
                                               c + i * ldc, ldc, load_c);
  }
  const auto tile = [&](auto rows) {
    WeightTile<decltype(rows)::value, V, kTransposedA, kPrefetchB>(
        RowOf<kTransposedA>(a, lda, i), lda, b, ldb, kd, c + i * ldc, ldc, load_c);
  };
  switch (m - i) {
    case 1:
      tile(std::integral_constant<int, 1>{});
      break;
    case 2:
      tile(std::integral_constant<int, 2>{});
      break;
    case 3:
      tile(std::integral_constant<int, 3>{});
      break;
    case 4:
      tile(std::integral_constant<int, 4>{});
      break;
    case 5:
      tile(std::integral_constant<int, 5>{});
      break;
    default:
      break;
  }
}

// The last `cols` (< kWidth) columns of a product: b's columns copied into a zero-padded panel
// [kd, kWidth] and c's into a scratch [R, kWidth], so that the same tile computes them, lane for
// lane the same sums as in a whole panel (the padding lanes are discarded).
template <bool kTransposedA, bool kPrefetchB, class W>
void NarrowPanel(Index m, const float* a, Index lda, const W* b, Index ldb, Index kd, Index cols,
                 float* c, Index ldc, bool load_c) {
  alignas(64) float panel[kWeightDepth * simd::kWidth];
  for (Index i = 0; i < kd; ++i) {
    for (Index j = 0; j < simd::kWidth; ++j) {
      panel[i * simd::kWidth + j] = j < cols ? Widen(b[i * ldb + j]) : 0.0f;
    }
  }
  for (Index r0 = 0; r0 < m; r0 += kTileRows) {
    const Index rows = std::min<Index>(kTileRows, m - r0);
    alignas(64) float scratch[kTileRows * simd::kWidth] = {};
    for (Index r = 0; r < rows && load_c; ++r) {
      std::copy_n(c + (r0 + r) * ldc, cols, scratch + r * simd::kWidth);
    }
    WeightPanel<1, kTransposedA, kPrefetchB>(rows, RowOf<kTransposedA>(a, lda, r0), lda, panel,
                                             simd::kWidth, kd, scratch, simd::kWidth, load_c);
    for (Index r = 0; r < rows; ++r) {
      std::copy_n(scratch + r * simd::kWidth, cols, c + (r0 + r) * ldc);
    }
  }
}

// c[m, n] = (or +=) a[m, k] b[k, n] for a row-major b of float32 or bf16 (row stride ldb), a and
// c with row strides lda and ldc. Columns in panels of kPanelRegisters registers (then of one,
// then a padded one), depth in blocks of 256, so that a panel of b (64 KiB at most) stays in L2
// while every row of a passes over it, and a block of a stays there for the next panel. Every
// c[r, j] is one sum over k in order (c reloaded between depth blocks), whatever m and the
// storage: a row's result does not depend on the rows beside it (a batch's sessions, a thread's
// share), and bf16 weights give exactly the float32 result with the rounded weights. Measured
// against Eigen in docs/PERFORMANCE.md ("Products of more than one row read the weights in
// place"). With kTransposedA, a is given as its transpose [k, m] (row stride lda); without
// kPrefetchB, b is not prefetched (WeightTile).
template <bool kTransposedA = false, bool kPrefetchB = true, class W>
void MultiplyWeights(Index m, const float* a, Index lda, const W* b, Index ldb, Index k, Index n,
                     float* c, Index ldc, bool accumulate) {
  constexpr int kWide = kPanelRegisters;
  const Index wide_end = n / (kWide * simd::kWidth) * (kWide * simd::kWidth);
  const Index narrow_end = n / simd::kWidth * simd::kWidth;
  for (Index k0 = 0; k0 < k; k0 += kWeightDepth) {
    const Index kd = std::min(kWeightDepth, k - k0);
    const bool load_c = accumulate || k0 > 0;
    const float* ak = kTransposedA ? a + k0 * lda : a + k0;
    const W* bk = b + k0 * ldb;
    for (Index j = 0; j < wide_end; j += kWide * simd::kWidth) {
      WeightPanel<kWide, kTransposedA, kPrefetchB>(m, ak, lda, bk + j, ldb, kd, c + j, ldc, load_c);
    }
    for (Index j = wide_end; j < narrow_end; j += simd::kWidth) {
      WeightPanel<1, kTransposedA, kPrefetchB>(m, ak, lda, bk + j, ldb, kd, c + j, ldc, load_c);
    }
    if (narrow_end < n) {
      NarrowPanel<kTransposedA, kPrefetchB>(m, ak, lda, bk + narrow_end, ldb, kd, n - narrow_end,
                                            c + narrow_end, ldc, load_c);
    }
  }
}

// c[m, n] = a[m, k] e[n, k]^T for a row-major e (row stride lde): a tied LM head, logits against
// the embedding rows. Each c[r, j] is a dot product summed the same way whatever m (16 lanes of
// multiply-adds over k in order, the lanes added in a fixed tree, then the last k % 16 terms), so
// a row's logits have the same bits decoded alone or in a batch. Rows four at a time share each
// load of e.
template <int R>
void TransposedTile(const float* a, Index lda, const float* e, Index lde, Index k, Index n,
                    float* c, Index ldc) {
  const Index vector_end = k / simd::kWidth * simd::kWidth;
  for (Index j = 0; j < n; ++j) {
    const float* ej = e + j * lde;
    simd::Floats sum[R] = {};
    for (Index i = 0; i < vector_end; i += simd::kWidth) {
      const simd::Floats w = simd::Load(ej + i);
      for (int r = 0; r < R; ++r) sum[r] = simd::MulAdd(simd::Load(a + r * lda + i), w, sum[r]);
    }
    for (int r = 0; r < R; ++r) {
      float total = simd::Sum(sum[r]);
      for (Index i = vector_end; i < k; ++i) total = simd::MulAdd(a[r * lda + i], ej[i], total);
      c[r * ldc + j] = total;
    }
  }
}

// A row-major matrix [rows, cols] multiplied as its transpose (a tied LM head's embedding
// [vocab, d] as [d, vocab]).
struct TransposedMatrix {
  const float* data = nullptr;
  Index rows = 0, cols = 0;
};

// c = a e^T through TransposedTile; a and c are blocks or maps of row-major matrices.
template <class C, class A>
void Multiply(C&& c, const A& a, const TransposedMatrix& e) {
  const Index m = c.rows(), n = c.cols(), k = a.cols(), lda = a.outerStride();
  const Index ldc = c.outerStride();
  Index r = 0;
  for (; r + 4 <= m; r += 4) {
    TransposedTile<4>(a.data() + r * lda, lda, e.data, e.cols, k, n, c.data() + r * ldc, ldc);
  }
  for (; r < m; ++r) {
    TransposedTile<1>(a.data() + r * lda, lda, e.data, e.cols, k, n, c.data() + r * ldc, ldc);
  }
}

// c = a b (or c += a b) for a weight matrix b, either storage; a and c are blocks or maps of
// row-major matrices (unit inner stride). One row (a decoded token) goes through MultiplyRow,
// whose long sequential passes over b read it faster than MultiplyWeights' panels do (measured
// in docs/PERFORMANCE.md); more rows through MultiplyWeights.
template <class C, class A>
void Multiply(C&& c, const A& a, const WeightMatrix& b, bool accumulate = false) {
  if (c.rows() == 1) {
    if (b.bf16 != nullptr) {
      MultiplyRow(a.data(), b.bf16, a.cols(), c.cols(), b.ld(), c.data(), accumulate);
    } else {
      MultiplyRow(a.data(), b.f32, a.cols(), c.cols(), b.ld(), c.data(), accumulate);
    }
    return;
  }
  if (b.bf16 != nullptr) {
    MultiplyWeights(c.rows(), a.data(), a.outerStride(), b.bf16, b.ld(), a.cols(), c.cols(),
                    c.data(), c.outerStride(), accumulate);
  } else {
    MultiplyWeights(c.rows(), a.data(), a.outerStride(), b.f32, b.ld(), a.cols(), c.cols(),
                    c.data(), c.outerStride(), accumulate);
  }
}

// c = a^T b for row-major a [k, m] and b [k, n], both read in place (blocks or maps with unit
// inner stride): a gradient product, a layer's inputs against its output errors. MultiplyWeights
// with b as the weights and a's transpose as the rows.
template <class C, class A, class B>
void MultiplyTransposed(C&& c, const A& a, const B& b) {
  MultiplyWeights<true>(c.rows(), a.data(), a.outerStride(), b.data(), b.outerStride(), a.rows(),
                        c.cols(), c.data(), c.outerStride(), false);
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
