#include "ops/attention.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "ops/bf16.hpp"
#include "ops/flush_denormals.hpp"
#include "ops/linalg.hpp"
#include "titans/error.hpp"

namespace titans {
namespace {

using linalg::Index;
using linalg::Range;
using linalg::Share;

std::string Field(const char* name, int64_t value) {
  return std::string(name) + " = " + std::to_string(value);
}

// Visible window keys (not counting persistent pairs) of the token at absolute position t.
int64_t VisibleKeys(int window, int64_t t) {
  return window > 0 ? std::min<int64_t>(window, t + 1) : t + 1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Shape.

void AttentionShape::Validate() const {
  auto fail = [](const std::string& message) { throw Error(ErrorCode::kConfig, message); };
  if (heads < 1) fail("attention heads must be >= 1, got " + Field("heads", heads));
  if (kv_heads < 1) fail("attention kv_heads must be >= 1, got " + Field("kv_heads", kv_heads));
  if (heads % kv_heads != 0) {
    fail("attention heads must be a multiple of kv_heads, got " + Field("heads", heads) + ", " +
         Field("kv_heads", kv_heads));
  }
  if (head_dim < 2 || head_dim % 2 != 0) {
    fail("attention head_dim must be even and >= 2 (rotary turns pairs), got " +
         Field("head_dim", head_dim));
  }
  if (int64_t{heads} * head_dim > (1 << 24)) {
    fail("attention heads * head_dim is too large: " + Field("heads", heads) + ", " +
         Field("head_dim", head_dim));
  }
  if (window < 0)
    fail("attention window must be >= 0 (0 = full causal), got " + Field("window", window));
  if (persistent < 0)
    fail("attention persistent must be >= 0, got " + Field("persistent", persistent));
  if (!(rope_base > 0.0f) || !std::isfinite(rope_base)) {
    fail("attention rope_base must be finite and > 0, got " + std::to_string(rope_base));
  }
}

// ---------------------------------------------------------------------------------------------
// Rotary.

namespace {

// Pair i's angular frequency base^(-2i/dh), in double.
double RotaryFrequency(float base, int i, int head_dim) {
  return std::pow(static_cast<double>(base),
                  -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
}

// Pair i of every head of one row [heads * dh] turned by the angle of cos c and sin s. The
// multiply-adds are spelled out (simd::MulAdd): left to the compiler's contraction, inlined
// copies could round differently from one caller to another.
void TurnPairs(float* row, int heads, int head_dim, int i, float c, float s) {
  for (int h = 0; h < heads; ++h) {
    float* pair = row + Index{h} * head_dim + 2 * Index{i};
    const float a = pair[0], b = pair[1];
    pair[0] = linalg::simd::MulAdd(a, c, -(b * s));
    pair[1] = linalg::simd::MulAdd(b, c, a * s);
  }
}

}  // namespace

void RotaryAngles(int n, int head_dim, int64_t first_position, float base, float* angles) {
  for (int i = 0; i < head_dim / 2; ++i) {
    const double freq = RotaryFrequency(base, i, head_dim);
    for (int t = 0; t < n; ++t) {
      const double angle = static_cast<double>(first_position + t) * freq;
      float* pair = angles + t * Index{head_dim} + 2 * Index{i};
      pair[0] = static_cast<float>(std::cos(angle));
      pair[1] = static_cast<float>(std::sin(angle));
    }
  }
}

void ApplyRotary(float* x, int n, int heads, int head_dim, const float* angles) {
  const Index width = Index{heads} * head_dim;
  for (int t = 0; t < n; ++t) {
    const float* row = angles + t * Index{head_dim};
    for (int i = 0; i < head_dim / 2; ++i) {
      TurnPairs(x + t * width, heads, head_dim, i, row[2 * Index{i}], row[2 * Index{i} + 1]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cache.

AttentionCache::AttentionCache(const AttentionShape& shape, int64_t reserve_tokens)
    : window_(shape.window), kv_width_(shape.kv_width()) {
  shape.Validate();
  if (reserve_tokens < 0) {
    throw Error(ErrorCode::kInvalidArgument, "AttentionCache: reserve_tokens must be >= 0");
  }
  if (window_ == 0) {
    keys_.reserve(static_cast<size_t>(reserve_tokens) * kv_width_);
    values_.reserve(static_cast<size_t>(reserve_tokens) * kv_width_);
  } else {
    // The first min(w, reserve_tokens) rows now; Reserve grows the ring beyond as the stream
    // arrives.
    const size_t rows = static_cast<size_t>(std::min<int64_t>(window_, reserve_tokens));
    keys_.assign(rows * static_cast<size_t>(kv_width_), 0.0f);
    values_.assign(keys_.size(), 0.0f);
  }
}

void AttentionCache::Reserve(int n) {
  if (window_ == 0 || n <= 0) return;
  const int64_t rows = allocated_rows(), needed = RowsNeeded(n);
  if (needed <= rows) return;
  // Doubling (amortised copies), never beyond the window. Before the ring first wraps the
  // slots are 0 .. position - 1, so the rows keep their slots in the larger buffer.
  const int64_t grown = std::min<int64_t>(window_, std::max<int64_t>({needed, 2 * rows, 16}));
  const size_t size = static_cast<size_t>(grown) * static_cast<size_t>(kv_width_);
  std::vector<float> keys(size, 0.0f), values(size, 0.0f);
  std::copy(keys_.begin(), keys_.end(), keys.begin());
  std::copy(values_.begin(), values_.end(), values.begin());
  keys_.swap(keys);
  values_.swap(values);
}

void AttentionCache::CopyRows(const float* k, const float* v, int r0, int r1, int n,
                              int64_t position) {
  // Only the last w of the n new rows survive.
  r0 = std::max(r0, n - window_);
  const size_t bytes = sizeof(float) * static_cast<size_t>(kv_width_);
  for (int r = r0; r < r1; ++r) {
    const size_t slot = static_cast<size_t>((position + r) % window_);
    std::memcpy(keys_.data() + slot * kv_width_, k + static_cast<size_t>(r) * kv_width_, bytes);
    std::memcpy(values_.data() + slot * kv_width_, v + static_cast<size_t>(r) * kv_width_, bytes);
  }
}

void AttentionCache::Advance(int n) {
  position_ += n;
  count_ = window_ > 0 ? std::min<int64_t>(window_, count_ + n) : count_ + n;
}

void AttentionCache::Append(const float* k, const float* v, int n) {
  if (n <= 0) return;
  if (window_ > 0) {
    Reserve(n);
    CopyRows(k, v, 0, n, n, position_);
  } else {
    const size_t count = static_cast<size_t>(n) * kv_width_;
    keys_.insert(keys_.end(), k, k + count);
    values_.insert(values_.end(), v, v + count);
  }
  Advance(n);
}

void AttentionCache::Reset() {
  position_ = 0;
  count_ = 0;
  if (window_ == 0) {
    keys_.clear();
    values_.clear();
  }
}

void AttentionCache::Restore(int64_t position, const float* k, const float* v, int64_t count) {
  const int64_t expected = window_ > 0 ? std::min<int64_t>(window_, position) : position;
  if (position < 0 || count != expected || count > std::numeric_limits<int>::max()) {
    throw Error(ErrorCode::kInvalidArgument, "AttentionCache::Restore: " + std::to_string(count) +
                                                 " rows at position " + std::to_string(position) +
                                                 ", expected " + std::to_string(expected));
  }
  Reset();
  position_ = position - count;  // Append places row r at position_ + r
  Append(k, v, static_cast<int>(count));
}

bool AttentionCache::SameContents(const AttentionCache& other) const {
  if (window_ != other.window_ || kv_width_ != other.kv_width_ || position_ != other.position_ ||
      count_ != other.count_) {
    return false;
  }
  const size_t bytes = sizeof(float) * static_cast<size_t>(kv_width_);
  for (int64_t j = first(); j < position_; ++j) {
    if (std::memcmp(key(j), other.key(j), bytes) != 0) return false;
    if (std::memcmp(value(j), other.value(j), bytes) != 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Kernel.

AttentionWorkspace::AttentionWorkspace(const AttentionShape& shape, int threads,
                                       double min_flops_per_thread)
    : threads_(threads), min_flops_per_thread_(min_flops_per_thread) {
  shape.Validate();
  if (threads < 1) {
    throw Error(ErrorCode::kInvalidArgument, "AttentionWorkspace: threads must be >= 1");
  }
  const Index dh = shape.head_dim, rows = std::max(kTile, shape.heads);
  scratch_.resize(static_cast<size_t>(threads));
  for (Scratch& s : scratch_) {
    s.q.setZero(rows, dh);
    s.s.setZero(rows, kBlock);
    s.o.setZero(rows, dh);
    s.m.setZero(rows);
    s.l.setZero(rows);
    s.block_max.setZero(kTile);
    s.alpha.setZero(kTile);
    s.shift.setZero(kTile);
  }
}

double AttentionWorkspace::Flops(const AttentionShape& shape, int64_t position, int n) {
  double keys = 0;
  for (int t = 0; t < n; ++t) {
    keys += static_cast<double>(VisibleKeys(shape.window, position + t) + shape.persistent);
  }
  return 4.0 * shape.head_dim * shape.heads * keys;
}

void AttentionWorkspace::Forward(const AttentionShape& shape, AttentionCache& cache,
                                 const AttentionInputs& in, int n, float* out) {
  if (cache.window() != shape.window || cache.kv_width() != shape.kv_width()) {
    throw Error(
        ErrorCode::kInvalidArgument,
        "AttentionWorkspace::Forward: the cache has window " + std::to_string(cache.window()) +
            " and width " + std::to_string(cache.kv_width()) + ", the shape window " +
            std::to_string(shape.window) + " and width " + std::to_string(shape.kv_width()));
  }
  if (n < 0) throw Error(ErrorCode::kInvalidArgument, "AttentionWorkspace::Forward: n < 0");
  if (n == 0) return;
  if (!in.q || !in.k || !in.v || !out ||
      (shape.persistent > 0 && (!in.persistent_k || !in.persistent_v))) {
    throw Error(ErrorCode::kInvalidArgument,
                "AttentionWorkspace::Forward: missing input pointer (q, k, v, out, or the "
                "persistent keys/values of a shape with persistent pairs)");
  }
  cache.Reserve(n);  // outside the parallel region: the ring may grow (and throw bad_alloc)
  // Enough work per thread to pay for the region and its barriers; never more threads than
  // work items.
  const int items = shape.heads * ((n + kTile - 1) / kTile);
  const double flops = Flops(shape, cache.position(), n);
  const int team = ops::TeamSize(flops, threads_, min_flops_per_thread_, items);
  if (team == 1) {
    Step(shape, cache, in, n, out, 0, 1, nullptr);
  } else {
    // Items are handed out one at a time: a thread slowed down by other work on its core
    // (common on a shared machine) holds up the others by at most one item.
    std::atomic<int> next{0};
#pragma omp parallel num_threads(team)
    Step(shape, cache, in, n, out, omp_get_thread_num(), omp_get_num_threads(), &next);
  }
}

void AttentionWorkspace::Forward(const AttentionShape& shape, AttentionCache& cache,
                                 const AttentionInputs& in, int n, float* out, int ith, int nth) {
  Step(shape, cache, in, n, out, ith, nth, nullptr);
}

void AttentionWorkspace::Step(const AttentionShape& shape, AttentionCache& cache,
                              const AttentionInputs& in, int n, float* out, int ith, int nth,
                              std::atomic<int>* next) {
  const FlushDenormals flush;                 // on every thread that computes (flush_denormals.hpp)
  const int64_t position = cache.position();  // read by every thread before the first barrier
  if (next != nullptr && n > 1) {
    const int tiles = (n + kTile - 1) / kTile, items = shape.heads * tiles;
    Scratch& scratch = scratch_[static_cast<size_t>(ith)];
    for (int item = next->fetch_add(1, std::memory_order_relaxed); item < items;
         item = next->fetch_add(1, std::memory_order_relaxed)) {
      const int head = item / tiles, t0 = (item % tiles) * kTile;
      AttendItem(shape, cache, in, out, head, t0, std::min(kTile, n - t0), scratch);
    }
  } else {
    Attend(shape, cache, in, n, out, ith, nth);
  }
  // Whether the ring must grow first (decided by every thread before anything changes; the
  // convenience Forward has reserved already, so only the in-region Forward can get here).
  const bool grow = cache.window() > 0 && cache.RowsNeeded(n) > cache.allocated_rows();
  linalg::Barrier(nth);  // every query has read the old entries that the new keys overwrite
  if (grow) {
    if (ith == 0) cache.Reserve(n);
    linalg::Barrier(nth);
  }
  if (cache.window() > 0) {
    // The copies use the position read above, so thread 0 may advance meanwhile.
    const Range rows = Share(n, ith, nth);
    cache.CopyRows(in.k, in.v, rows.begin, rows.end, n, position);
    if (ith == 0) cache.Advance(n);
  } else if (ith == 0) {
    cache.Append(in.k, in.v, n);  // may reallocate: one thread
  }
  linalg::Barrier(nth);
}

void AttentionWorkspace::Attend(const AttentionShape& shape, const AttentionCache& cache,
                                const AttentionInputs& in, int n, float* out, int ith, int nth) {
  const FlushDenormals flush;
  if (n == 1) {
    const Range heads = Share(shape.heads, ith, nth);
    if (heads.begin < heads.end) {
      AttendRow(shape, cache, in, out, heads.begin, heads.end, scratch_[static_cast<size_t>(ith)]);
    }
    return;
  }
  const int tiles = (n + kTile - 1) / kTile;
  // Head-major items: an equal share of heads per thread when H is a multiple of nth, so the
  // threads get the same mix of short (early) and long tiles; adjacent query heads of a share
  // read the same kv head.
  const Range items = Share(shape.heads * tiles, ith, nth);
  Scratch& scratch = scratch_[static_cast<size_t>(ith)];
  for (int item = items.begin; item < items.end; ++item) {
    const int head = item / tiles, tile = item % tiles;
    const int t0 = tile * kTile;
    AttendItem(shape, cache, in, out, head, t0, std::min(kTile, n - t0), scratch);
  }
}

// A tile works with its query rows as the lanes of every array, so that the products run
// through linalg::MultiplyWeights' register tiles with every operand read in place (nothing
// packed) and the online softmax runs down the keys with the queries' max and sum in registers:
//   q^T [dh, lanes]   the scaled query rows, transposed (the one copy);
//   s^T [nb, lanes]   = K [nb, dh] q^T, a block's scores: a key per row;
//   o^T [dh, lanes]  += V^T [dh, nb] p^T, V read in place as the transposed operand.
// lanes = rows rounded up to whole SIMD registers (rows < kTile only for a call's last tile):
// the extra lanes are zero queries, computed and never written out.
void AttentionWorkspace::AttendItem(const AttentionShape& shape, const AttentionCache& cache,
                                    const AttentionInputs& in, float* out, int head, int t0,
                                    int rows, Scratch& scratch) {
  using Lanes = Eigen::Map<Eigen::ArrayXf>;
  using Chunk = Eigen::Array<float, linalg::simd::kWidth, 1>;  // a register of lanes
  constexpr int kChunk = linalg::simd::kWidth;
  const Index dh = shape.head_dim, qw = shape.q_width(), kw = shape.kv_width();
  const Index kv_col = Index{head / shape.group()} * dh;
  const int window = shape.window;
  const int lanes = (rows + kChunk - 1) / kChunk * kChunk;
  constexpr Index ld = kTile;  // the row stride of q^T, s^T, o^T
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const float minus_inf = -std::numeric_limits<float>::infinity();

  const int64_t position = cache.position();                        // of new row 0
  const int64_t i0 = position + t0, i1 = position + t0 + rows - 1;  // the tile's positions

  float* qt = scratch.q.data();  // [dh, kTile]
  const float* q = in.q + t0 * qw + Index{head} * dh;
  for (Index i = 0; i < dh; ++i) {
    for (int r = 0; r < rows; ++r) qt[i * ld + r] = q[r * qw + i] * scale;
    std::fill(qt + i * ld + rows, qt + i * ld + lanes, 0.0f);
  }
  float* st = scratch.s.data();  // [kBlock, kTile]
  float* ot = scratch.o.data();  // [dh, kTile]
  for (Index i = 0; i < dh; ++i) std::fill_n(ot + i * ld, lanes, 0.0f);
  Lanes m(scratch.m.data(), lanes), l(scratch.l.data(), lanes);
  Lanes block_max(scratch.block_max.data(), lanes), shift(scratch.shift.data(), lanes);
  Lanes alpha(scratch.alpha.data(), lanes);
  m.setConstant(minus_inf);
  l.setZero();

  // Row j of the head's keys or values from `first_row` (rows kw apart), fetched towards L1 for
  // the next block while this one's softmax runs: a window larger than the cache is read from
  // memory, and the products' short runs of dh floats per row give the hardware prefetchers
  // too little to follow.
  const auto prefetch_row = [&](const float* first_row, int j) {
    for (Index i = 0; i < dh; i += kChunk) __builtin_prefetch(first_row + j * kw + kv_col + i);
  };
  // One block of nb consecutive keys: absolute positions first.. (or persistent: all visible);
  // next_nb: rows of the block that follows in the same run (0: none).
  auto block = [&](const float* keys, const float* values, int nb, int64_t first, bool persistent,
                   int next_nb) {
    linalg::MultiplyWeights<false, false>(nb, keys + kv_col, kw, qt, ld, dh, lanes, st, ld, false);
    // Lane r (row i0 + r) sees key j when first + j <= i0 + r and, with a window, first + j >
    // i0 + r - window: the lanes [lo, hi) below. Every lane sees every key of a block within
    // all rows' windows; otherwise the others are set to value (-inf before the softmax, 0
    // after it, so that a key out of a row's window adds exactly nothing).
    const bool all_visible =
        persistent || (first + nb - 1 <= i0 && (window == 0 || first > i1 - window));
    const auto mask = [&](float value) {
      for (int j = 0; j < nb; ++j) {
        const int64_t lag = first + j - i0;  // the first lane that sees key j
        const int lo = static_cast<int>(std::clamp<int64_t>(lag, 0, lanes));
        const int hi =
            window > 0 ? static_cast<int>(std::clamp<int64_t>(lag + window, lo, lanes)) : lanes;
        std::fill(st + j * ld, st + j * ld + lo, value);
        std::fill(st + j * ld + hi, st + j * ld + lanes, value);
      }
    };
    if (!all_visible) mask(minus_inf);
    for (int j = 0; j < next_nb; ++j) prefetch_row(keys + nb * kw, j);
    for (int c = 0; c < lanes; c += kChunk) {
      Chunk most = Chunk::Map(m.data() + c);
      for (int j = 0; j < nb; ++j) most = most.max(Chunk::Map(st + j * ld + c));
      Chunk::Map(block_max.data() + c) = most;
    }
    // A lane that has seen no key yet keeps m = -inf and subtracts 0: its p and alpha are 0.
    // (Plain loops and whole arrays: exp() of an expression with Eigen's select() would not
    // vectorise.)
    for (int r = 0; r < lanes; ++r) shift[r] = block_max[r] == minus_inf ? 0.0f : block_max[r];
    alpha = (m - shift).exp();
    m = block_max;
    for (int c = 0; c < lanes; c += kChunk) {
      const Chunk subtract = Chunk::Map(shift.data() + c);
      Chunk sum = Chunk::Map(l.data() + c) * Chunk::Map(alpha.data() + c);
      for (int j = 0; j < nb; ++j) {
        auto p = Chunk::Map(st + j * ld + c);
        p = (p - subtract).exp();
        sum += p;
      }
      Chunk::Map(l.data() + c) = sum;
    }
    if (!all_visible) mask(0.0f);
    for (int j = 0; j < next_nb; ++j) prefetch_row(values + nb * kw, j);
    for (Index i = 0; i < dh; ++i) Lanes(ot + i * ld, lanes) *= alpha;
    linalg::MultiplyWeights<true, false>(dh, values + kv_col, kw, st, ld, nb, lanes, ot, ld, true);
  };
  // Consecutive positions [a, b) stored contiguously from row pointers k, v: blocks of kBlock.
  auto run = [&](const float* keys, const float* values, int64_t a, int64_t b, bool persistent) {
    for (int64_t j = a; j < b; j += kBlock) {
      const int nb = static_cast<int>(std::min<int64_t>(kBlock, b - j));
      const int next_nb = static_cast<int>(std::clamp<int64_t>(b - j - nb, 0, kBlock));
      block(keys + (j - a) * kw, values + (j - a) * kw, nb, j, persistent, next_nb);
    }
  };

  // 1. Persistent pairs.
  if (shape.persistent > 0) run(in.persistent_k, in.persistent_v, 0, shape.persistent, true);
  // 2. Cached keys the tile needs: [max(first, i0 - w + 1), position), in at most two ring
  //    segments.
  int64_t a = cache.first();
  if (window > 0) a = std::max(a, i0 - window + 1);
  while (a < position) {
    const int64_t slot = cache.Slot(a);
    const int64_t b = window > 0 ? std::min(position, a + (window - slot)) : position;
    run(cache.key(a), cache.value(a), a, b, false);
    a = b;
  }
  // 3. New keys: [max(position, i0 - w + 1), i1].
  a = window > 0 ? std::max(position, i0 - window + 1) : position;
  if (a <= i1) run(in.k + (a - position) * kw, in.v + (a - position) * kw, a, i1 + 1, false);

  // out = o / l (every row saw at least its own key, so l > 0).
  l = l.inverse();
  float* result = out + t0 * qw + Index{head} * dh;
  for (int r = 0; r < rows; ++r) {
    for (Index i = 0; i < dh; ++i) result[r * qw + i] = ot[i * ld + r] * l[r];
  }
}

// A decode step attends with one query row per head, where the tiles' products would be
// matrix-vector products of [1, dh] against [nb, dh] keys read at a row stride of kv_width, a
// head at a time. Here each key row and value row of the cache [slot, kv_width] is read whole,
// once, for every head of the share, in order (sequential streams the hardware prefetchers
// follow: the cache is the part of a decode step's bytes that leaves L2). Same online softmax
// over blocks of kBlock keys as AttendItem; the sums run in another order (dot products of dh
// lanes, simd::Sum), so a token decoded alone and the same token in a prefill tile agree to
// rounding, not bit for bit.
void AttentionWorkspace::AttendRow(const AttentionShape& shape, const AttentionCache& cache,
                                   const AttentionInputs& in, float* out, int h0, int h1,
                                   Scratch& scratch) {
  namespace simd = linalg::simd;
  const Index dh = shape.head_dim, kw = shape.kv_width();
  const int heads = h1 - h0, group = shape.group(), window = shape.window;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const Index vector_end = dh / simd::kWidth * simd::kWidth;

  float* q = scratch.q.data();  // [heads, dh], scaled
  for (Index i = 0; i < heads * dh; ++i) q[i] = in.q[h0 * dh + i] * scale;
  float* o = scratch.o.data();  // [heads, dh]
  std::fill(o, o + heads * dh, 0.0f);
  float* m = scratch.m.data();
  float* l = scratch.l.data();
  std::fill(m, m + heads, -std::numeric_limits<float>::infinity());
  std::fill(l, l + heads, 0.0f);
  float* s = scratch.s.data();  // [heads, kBlock]
  // Calls fn(h, offset of its kv head in a key or value row) for the share's heads in order.
  auto for_heads = [&](auto&& fn) {
    Index kv = Index{h0 / group} * dh;
    for (int h = 0, in_group = h0 % group; h < heads; ++h) {
      fn(h, kv);
      if (++in_group == group) in_group = 0, kv += dh;
    }
  };

  // nb consecutive keys and values (rows kw apart), every one visible to the token.
  auto block = [&](const float* keys, const float* values, int nb) {
    for (int j = 0; j < nb; ++j) {
      const float* key = keys + j * kw;
      for_heads([&](int h, Index kv) {
        const float* qh = q + h * dh;
        const float* kh = key + kv;
        simd::Floats lanes{};
        for (Index d = 0; d < vector_end; d += simd::kWidth) {
          lanes = simd::MulAdd(simd::Load(qh + d), simd::Load(kh + d), lanes);
        }
        float dot = simd::Sum(lanes);
        for (Index d = vector_end; d < dh; ++d) dot = simd::MulAdd(qh[d], kh[d], dot);
        s[h * kBlock + j] = dot;
      });
    }
    for (int h = 0; h < heads; ++h) {
      Eigen::Map<Eigen::ArrayXf> p(s + Index{h} * kBlock, nb);
      const float m_new = std::max(m[h], p.maxCoeff());
      const float alpha = std::exp(m[h] - m_new);  // 0 for the first block
      p = (p - m_new).exp();
      l[h] = l[h] * alpha + p.sum();
      if (alpha != 1.0f) {
        for (Index d = 0; d < dh; ++d) o[h * dh + d] *= alpha;
      }
      m[h] = m_new;
    }
    // o_h += p_h[j] v_j for `keys` keys from j per load and store of o (the chain through
    // memory is what limits this loop): four at a time, then one.
    auto accumulate = [&](int j, auto keys) {
      const float* value = values + j * kw;
      for_heads([&](int h, Index kv) {
        const float* p = s + Index{h} * kBlock + j;
        const float* vh = value + kv;
        float* oh = o + h * dh;
        Index d = 0;
        for (; d < vector_end; d += simd::kWidth) {
          simd::Floats sum = simd::Load(oh + d);
          for (int r = 0; r < keys; ++r) {
            sum = simd::MulAdd(simd::Broadcast(p[r]), simd::Load(vh + r * kw + d), sum);
          }
          simd::Store(oh + d, sum);
        }
        for (; d < dh; ++d) {
          for (int r = 0; r < keys; ++r) oh[d] = simd::MulAdd(p[r], vh[r * kw + d], oh[d]);
        }
      });
    };
    int j = 0;
    for (; j + 4 <= nb; j += 4) accumulate(j, std::integral_constant<int, 4>{});
    for (; j < nb; ++j) accumulate(j, std::integral_constant<int, 1>{});
  };
  auto run = [&](const float* keys, const float* values, int64_t count) {
    for (int64_t j = 0; j < count; j += kBlock) {
      const int nb = static_cast<int>(std::min<int64_t>(kBlock, count - j));
      block(keys + j * kw, values + j * kw, nb);
    }
  };

  // Persistent pairs, the cached keys in the window (at most two ring segments), the new key.
  if (shape.persistent > 0) run(in.persistent_k, in.persistent_v, shape.persistent);
  const int64_t position = cache.position();
  int64_t a = cache.first();
  if (window > 0) a = std::max(a, position - window + 1);
  while (a < position) {
    const int64_t b = window > 0 ? std::min(position, a + (window - cache.Slot(a))) : position;
    run(cache.key(a), cache.value(a), b - a);
    a = b;
  }
  run(in.k, in.v, 1);

  for (int h = 0; h < heads; ++h) {
    const float inverse = 1.0f / l[h];
    for (Index d = 0; d < dh; ++d) out[(h0 + h) * dh + d] = o[h * dh + d] * inverse;
  }
}

}  // namespace titans
