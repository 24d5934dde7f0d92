// Causal multi-head attention with a sliding window, rotary positions, grouped key/value heads
// and persistent key/value pairs (docs/SEMANTICS.md section 2). Internal API: the blocks of issue 3
// (MAL, MAG, MAC) call it; it is not a public header. The naive reference the tests compare it
// with is src/reference/attention_reference.hpp.
//
// Shapes (row-major, one row per token, heads concatenated along the row):
//   q, out            [n, heads * head_dim]      query head h: columns [h*dh, (h+1)*dh)
//   k, v              [n, kv_heads * head_dim]   query head h reads kv head h / (heads/kv_heads)
//   persistent k, v   [persistent, kv_heads * head_dim]  always visible, no rotary
// Token at absolute position t attends to every persistent pair and to the keys j with
// t - w < j <= t (w = window; w = 0: every j <= t), softmax in float32 with scale 1/sqrt(dh).
//
// A layer's state is an AttentionCache (the last w rotated keys and values, a ring).
// AttentionWorkspace::Forward attends a block of n new tokens against [persistent | cache |
// new keys] with a tiled online softmax (flash-attention style), then appends the new keys and
// values to the ring. Cost per token is proportional to (min(w, context) + persistent), not to
// the context. Forward allocates nothing (all scratch is sized at construction), except a cache
// that outgrows the rows reserved for it: a windowed cache grows (doubling) until it holds w
// rows, a full-attention cache (w = 0) without bound.
#pragma once

#include <Eigen/Core>
#include <atomic>
#include <cstdint>
#include <vector>

#include "ops/linalg.hpp"
#include "ops/threading.hpp"

namespace titans {

struct AttentionShape {
  int heads = 1;       // query heads H
  int kv_heads = 1;    // key/value heads Hkv; H % Hkv == 0 (Hkv = H: multi-head attention)
  int head_dim = 64;   // dh, even (rotary rotates pairs)
  int window = 0;      // w: keys t - w < j <= t are visible; 0 = full causal (baseline only)
  int persistent = 0;  // N_p persistent key/value pairs per layer
  float rope_base = 10000.0f;

  // Throws titans::Error(kConfig) naming the first inconsistent field.
  void Validate() const;

  int q_width() const { return heads * head_dim; }
  int kv_width() const { return kv_heads * head_dim; }
  int group() const { return heads / kv_heads; }  // query heads per kv head
};

// Rotary position embedding, as rotary-embedding-torch does for titans-pytorch (docs/SEMANTICS.md
// 2.1), in two steps so that a stack's layers share one piece's angles. RotaryAngles writes
// angles [n, head_dim]: row t holds the cos and sin of pair i's angle at absolute position
// first_position + t in [2i] and [2i + 1], the angle pos * base^(-2i/dh) computed in double from
// the absolute position (exact at any position, and independent of how a stream is split into
// calls), cos and sin rounded to float. ApplyRotary turns x [n, heads * dh] in place, row t by
// row t of the angles: in every head the interleaved pairs (x[2i], x[2i+1]) become
//   x'[2i] = x[2i] cos - x[2i+1] sin,   x'[2i+1] = x[2i+1] cos + x[2i] sin.
// No allocation.
void RotaryAngles(int n, int head_dim, int64_t first_position, float base, float* angles);
void ApplyRotary(float* x, int n, int heads, int head_dim, const float* angles);

// One layer's attention state: the rotated keys and values of the last `window` tokens.
// With window w > 0 the rows are a ring: the key of absolute position j is in slot j mod w, so
// the valid entries (positions [first(), position())) form at most two contiguous segments in
// chronological order. Only min(w, reserve_tokens) rows are allocated at construction; beyond
// them the ring grows as the stream needs it (doubling, up to w rows), so a large window costs
// memory only for the tokens actually seen (slot j mod w = j until the ring first wraps). With
// window 0 (full attention, for baselines) every key is kept, in slot j - first(); capacity for
// `reserve_tokens` rows is reserved at construction, and appending beyond it reallocates.
class AttentionCache {
 public:
  explicit AttentionCache(const AttentionShape& shape, int64_t reserve_tokens = 0);

  int window() const { return window_; }
  int kv_width() const { return kv_width_; }
  int64_t position() const { return position_; }        // absolute position of the next token
  int64_t size() const { return count_; }               // valid entries: min(w, position) or all
  int64_t first() const { return position_ - count_; }  // oldest valid position

  // The row of the key (value) of absolute position j, first() <= j < position().
  const float* key(int64_t j) const { return keys_.data() + Slot(j) * kv_width_; }
  const float* value(int64_t j) const { return values_.data() + Slot(j) * kv_width_; }
  int64_t Slot(int64_t j) const { return window_ > 0 ? j % window_ : j - first(); }

  // Appends n rows of rotated keys and values [n, kv_width] at positions position()...
  // (AttentionWorkspace::Forward does this itself after attending.)
  void Append(const float* k, const float* v, int n);
  // Makes room for n more rows (window mode: grows the ring, keeping its rows; may throw
  // std::bad_alloc). Append and the convenience Forward call it; callers of the in-region
  // Forward(..., ith, nth) call it before their parallel region.
  void Reserve(int n);
  // Rows allocated (window mode: at most w).
  int64_t allocated_rows() const {
    return kv_width_ > 0 ? static_cast<int64_t>(keys_.size()) / kv_width_ : 0;
  }
  // Back to position 0, empty (keeps the memory).
  void Reset();
  // Replaces the contents with `count` rows of rotated keys and values [count, kv_width] for
  // the positions [position - count, position), in order (a saved session's cache). count must
  // be min(window, position), or position for window 0; Error(kInvalidArgument) otherwise.
  void Restore(int64_t position, const float* k, const float* v, int64_t count);

  // Same window, width, position and valid rows (bit for bit); slot layout is ignored.
  bool SameContents(const AttentionCache& other) const;

 private:
  friend class AttentionWorkspace;
  // Copies rows [r0, r1) of the n new rows into their slots, counting positions from
  // `position` and `count` (the values before the append). Window mode only.
  void CopyRows(const float* k, const float* v, int r0, int r1, int n, int64_t position);
  void Advance(int n);

  // Rows a window-mode ring needs to append n rows at the current position.
  int64_t RowsNeeded(int n) const { return position_ + n >= window_ ? window_ : position_ + n; }

  int window_, kv_width_;
  int64_t position_ = 0, count_ = 0;
  // [rows, kv_width]: up to w rows (grown by Reserve), or count_ rows when w = 0
  std::vector<float> keys_, values_;
};

// Pointers of one call. q and k are already rotated (ApplyRotary by the RotaryAngles of positions
// cache.position()...); persistent_k/v may be null when the shape has no persistent pairs.
struct AttentionInputs {
  const float* q = nullptr;             // [n, H*dh]
  const float* k = nullptr;             // [n, Hkv*dh]
  const float* v = nullptr;             // [n, Hkv*dh]
  const float* persistent_k = nullptr;  // [N_p, Hkv*dh]
  const float* persistent_v = nullptr;  // [N_p, Hkv*dh]
};

class AttentionWorkspace {
 public:
  // Scratch for up to `threads` threads (each one query tile, score block and accumulator).
  // The convenience Forward runs ops::TeamSize(its FLOPs, threads, min_flops_per_thread)
  // threads (the session's SessionOptions).
  AttentionWorkspace(const AttentionShape& shape, int threads,
                     double min_flops_per_thread = ops::kMinFlopsPerThread);

  // A tile's rows are the lanes of four AVX-512 registers (AttendItem), the width of
  // linalg::MultiplyWeights' register tiles. Blocks of 256 keys measured 0.97-1.07x blocks of 128
  // (bench/attention_bench.cpp, 1 thread, docs/PERFORMANCE.md).
  static constexpr int kTile = 64;    // query rows per work item
  static constexpr int kBlock = 256;  // keys per score block
  int threads() const { return threads_; }

  // Attends n tokens (positions cache.position() ... + n - 1), writes out [n, H*dh], then
  // appends their keys and values to the cache. Opens one OpenMP region of up to threads()
  // threads (fewer for little work) that take (head, query tile) items one at a time (one token,
  // a decode step: an equal share of the heads each, AttendRow). Every
  // item is computed the same way whichever thread takes it: results do not depend on the
  // thread count. Checks that the cache belongs to `shape` and the pointers are there
  // (titans::Error kInvalidArgument); values are not checked.
  void Forward(const AttentionShape& shape, AttentionCache& cache, const AttentionInputs& in, int n,
               float* out);

  // The same, as share ith of nth inside the caller's parallel region: all nth threads must
  // call it with the same arguments (it contains two barriers; the cache is updated when it
  // returns). A static share of the items (as Attend). nth <= threads(). Checks nothing.
  void Forward(const AttentionShape& shape, AttentionCache& cache, const AttentionInputs& in, int n,
               float* out, int ith, int nth);

  // Just the attention, without barriers and without touching the cache: this thread's share
  // of the (head, query tile) items. Callers that append later use this.
  void Attend(const AttentionShape& shape, const AttentionCache& cache, const AttentionInputs& in,
              int n, float* out, int ith, int nth);

  // Useful FLOPs of one call (QK^T and PV over the visible keys only): 4 * dh per query head,
  // token and visible key.
  static double Flops(const AttentionShape& shape, int64_t position, int n);

 private:
  // R = max(kTile, heads): a query tile's kTile rows, or one token's heads (AttendRow). A tile
  // uses the buffers transposed, its rows as lanes (AttendItem): q as q^T [dh, kTile], s as
  // s^T [kBlock, kTile], o as o^T [dh, kTile].
  struct Scratch {
    RowMatrix q;           // [R, dh] scaled query rows
    RowMatrix s;           // [R, kBlock] scores, then probabilities
    RowMatrix o;           // [R, dh] unnormalised output accumulator
    Eigen::VectorXf m, l;  // [R] running max and running sum of the online softmax
    // [kTile] a block's max (then the new max), what the scores subtract, the rescaling of o, l
    Eigen::VectorXf block_max, shift, alpha;
  };
  // Forward's body for thread ith of nth: items from the shared counter `next` when given,
  // else the static share of Attend.
  void Step(const AttentionShape& shape, AttentionCache& cache, const AttentionInputs& in, int n,
            float* out, int ith, int nth, std::atomic<int>* next);
  void AttendItem(const AttentionShape& shape, const AttentionCache& cache,
                  const AttentionInputs& in, float* out, int head, int t0, int rows,
                  Scratch& scratch);
  // One token (a decode step), query heads [h0, h1).
  void AttendRow(const AttentionShape& shape, const AttentionCache& cache,
                 const AttentionInputs& in, float* out, int h0, int h1, Scratch& scratch);

  int threads_;
  double min_flops_per_thread_;
  std::vector<Scratch> scratch_;
};

}  // namespace titans
