// The sliding-window attention kernel (src/ops/attention.hpp) against the naive masked softmax
// reference (src/reference/attention_reference.hpp; docs/SEMANTICS.md invariant 6) over windows,
// persistent pairs, grouped heads and head widths; streaming with the cache carried (invariant
// 2), the ring wrapping many times, causality (1), thread count (7), rotary positions, shape
// validation and allocation-freedom.
#include "ops/attention.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "reference/attention_reference.hpp"
#include "titans/error.hpp"

namespace titans {
namespace {

// ---------------------------------------------------------------------------------------------
// Helpers.

std::vector<float> Random(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// max |a - b| / max |b|.
double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return diff;
}

std::string Describe(const AttentionShape& s, int tokens) {
  return "H" + std::to_string(s.heads) + "_Hkv" + std::to_string(s.kv_heads) + "_dh" +
         std::to_string(s.head_dim) + "_w" + std::to_string(s.window) + "_Np" +
         std::to_string(s.persistent) + "_T" + std::to_string(tokens);
}

// x [n, heads * dh] turned in place at positions first, first + 1, ... (RotaryAngles, then
// ApplyRotary by them, as the stacks do).
void Rotate(float* x, int n, int heads, int dh, int64_t first, float base) {
  std::vector<float> angles(static_cast<size_t>(n) * dh);
  RotaryAngles(n, dh, first, base, angles.data());
  ApplyRotary(x, n, heads, dh, angles.data());
}

// One layer's inputs for a sequence of T tokens at positions 0..T-1: q and k rotated.
struct Sequence {
  AttentionShape shape;
  int tokens = 0;
  std::vector<float> q, k, v, pk, pv;

  Sequence(const AttentionShape& s, int t, uint64_t seed, float q_scale = 1.0f)
      : shape(s), tokens(t) {
    const size_t qn = static_cast<size_t>(t) * s.q_width();
    const size_t kn = static_cast<size_t>(t) * s.kv_width();
    const size_t pn = static_cast<size_t>(s.persistent) * s.kv_width();
    q = Random(qn, seed, q_scale);
    k = Random(kn, seed + 1);
    v = Random(kn, seed + 2);
    pk = Random(pn, seed + 3);
    pv = Random(pn, seed + 4);
    Rotate(q.data(), t, s.heads, s.head_dim, 0, s.rope_base);
    Rotate(k.data(), t, s.kv_heads, s.head_dim, 0, s.rope_base);
  }

  // Inputs of the rows starting at t0.
  AttentionInputs At(int t0) const {
    AttentionInputs in;
    in.q = q.data() + static_cast<size_t>(t0) * shape.q_width();
    in.k = k.data() + static_cast<size_t>(t0) * shape.kv_width();
    in.v = v.data() + static_cast<size_t>(t0) * shape.kv_width();
    in.persistent_k = shape.persistent > 0 ? pk.data() : nullptr;
    in.persistent_v = shape.persistent > 0 ? pv.data() : nullptr;
    return in;
  }

  std::vector<float> Reference() const {
    std::vector<float> out(static_cast<size_t>(tokens) * shape.q_width());
    ReferenceAttention(shape, At(0), tokens, out.data());
    return out;
  }
};

// Runs the kernel over the sequence in calls ending at each of `cuts` (increasing) and at T, the
// cache carried from call to call. Returns the outputs; leaves the final cache in *cache_out.
std::vector<float> RunKernel(const Sequence& seq, const std::vector<int>& cuts, int threads = 1,
                             AttentionCache* cache_out = nullptr) {
  AttentionCache cache(seq.shape, seq.tokens);
  AttentionWorkspace workspace(seq.shape, threads, /*min_flops_per_thread=*/0);  // all join
  std::vector<float> out(static_cast<size_t>(seq.tokens) * seq.shape.q_width());
  std::vector<int> ends = cuts;
  ends.push_back(seq.tokens);
  int begin = 0;
  for (int end : ends) {
    if (end <= begin) continue;
    EXPECT_EQ(cache.position(), begin);
    workspace.Forward(seq.shape, cache, seq.At(begin), end - begin,
                      out.data() + static_cast<size_t>(begin) * seq.shape.q_width());
    begin = end;
  }
  EXPECT_EQ(cache.position(), seq.tokens);
  if (cache_out) *cache_out = cache;
  return out;
}

std::vector<int> Pieces(int size, int tokens) {
  std::vector<int> cuts;
  for (int t = size; t < tokens; t += size) cuts.push_back(t);
  return cuts;
}

// The cache after a sequence must hold exactly the last w (or all) rotated keys and values.
void ExpectCacheHoldsTail(const AttentionCache& cache, const Sequence& seq) {
  const int w = seq.shape.window;
  const int64_t expected = w > 0 ? std::min(w, seq.tokens) : seq.tokens;
  ASSERT_EQ(cache.size(), expected);
  ASSERT_EQ(cache.first(), seq.tokens - expected);
  const size_t kw = static_cast<size_t>(seq.shape.kv_width());
  for (int64_t j = cache.first(); j < cache.position(); ++j) {
    for (size_t c = 0; c < kw; ++c) {
      ASSERT_EQ(cache.key(j)[c], seq.k[static_cast<size_t>(j) * kw + c]) << "key " << j;
      ASSERT_EQ(cache.value(j)[c], seq.v[static_cast<size_t>(j) * kw + c]) << "value " << j;
    }
  }
}

constexpr double kTolerance = 1e-5;

// ---------------------------------------------------------------------------------------------
// Invariant 6: the kernel equals naive masked softmax attention.

struct GridCase {
  AttentionShape shape;
  int tokens;
  float q_scale;
};

std::vector<GridCase> Grid() {
  std::vector<GridCase> cases;
  const int t = 150;  // three query tiles, the last one partial
  for (auto [h, hkv] : {std::pair{4, 1}, std::pair{4, 2}, std::pair{4, 4}}) {
    for (int dh : {64, 128}) {
      for (int w : {1, 50, t, t + 40, 0}) {
        for (int np : {0, 3}) cases.push_back({{h, hkv, dh, w, np, 10000.0f}, t, 1.0f});
      }
    }
  }
  // Small and odd: one partial tile, head width 8.
  for (int w : {1, 5, 36, 37, 50, 0}) {
    for (int np : {0, 2}) cases.push_back({{2, 1, 8, w, np, 10000.0f}, 37, 1.0f});
  }
  // Several key blocks per segment (w and N_p > kBlock) and several tiles.
  for (int w : {300, 700, 0}) {
    for (int np : {0, 260}) cases.push_back({{2, 1, 64, w, np, 500.0f}, 700, 1.0f});
  }
  // Large scores: the running max must carry the softmax.
  cases.push_back({{4, 2, 64, 40, 3, 10000.0f}, 150, 12.0f});
  cases.push_back({{4, 2, 64, 0, 0, 10000.0f}, 150, 12.0f});
  return cases;
}

class AttentionGridTest : public ::testing::TestWithParam<GridCase> {};

TEST_P(AttentionGridTest, KernelMatchesReference) {
  const GridCase& c = GetParam();
  const Sequence seq(c.shape, c.tokens, 11, c.q_scale);
  const std::vector<float> reference = seq.Reference();
  // Whole, in pieces of 23 (tiles and ring segments cut at other places), and token by token
  // (a decode step's one-row path, AttendRow).
  AttentionCache cache(c.shape);
  const std::vector<float> whole = RunKernel(seq, {}, 1, &cache);
  EXPECT_LE(RelErr(whole, reference), kTolerance) << "whole";
  ExpectCacheHoldsTail(cache, seq);
  const std::vector<float> pieces = RunKernel(seq, Pieces(23, c.tokens), 1, &cache);
  EXPECT_LE(RelErr(pieces, reference), kTolerance) << "pieces of 23";
  ExpectCacheHoldsTail(cache, seq);
  const std::vector<float> tokens = RunKernel(seq, Pieces(1, c.tokens), 1, &cache);
  EXPECT_LE(RelErr(tokens, reference), kTolerance) << "token by token";
  ExpectCacheHoldsTail(cache, seq);
}

INSTANTIATE_TEST_SUITE_P(Grid, AttentionGridTest, ::testing::ValuesIn(Grid()),
                         [](const ::testing::TestParamInfo<GridCase>& info) {
                           return Describe(info.param.shape, info.param.tokens) +
                                  (info.param.q_scale != 1.0f ? "_large" : "");
                         });

// ---------------------------------------------------------------------------------------------
// Invariant 2: streaming. Whole vs split at 1, 2, 7, w-1, w, w+1, in pieces, at random points
// and token by token: the same outputs (float rounding: the key blocks differ) and the same
// cache, bit for bit.

class AttentionStreamingTest : public ::testing::TestWithParam<GridCase> {};

TEST_P(AttentionStreamingTest, SplitsGiveTheSameOutputsAndCache) {
  const GridCase& c = GetParam();
  const Sequence seq(c.shape, c.tokens, 21);
  AttentionCache whole_cache(c.shape);
  const std::vector<float> whole = RunKernel(seq, {}, 1, &whole_cache);
  EXPECT_LE(RelErr(whole, seq.Reference()), kTolerance);

  const int w = c.shape.window > 0 ? c.shape.window : 64;
  std::vector<std::pair<std::string, std::vector<int>>> splits;
  for (int cut : {1, 2, 7, w - 1, w, w + 1}) {
    if (cut > 0 && cut < c.tokens) splits.push_back({"at " + std::to_string(cut), {cut}});
  }
  for (int size : {1, 2, 7, w - 1, w, w + 1}) {
    if (size > 0) splits.push_back({"pieces of " + std::to_string(size), Pieces(size, c.tokens)});
  }
  std::mt19937 rng(5);
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<int> cuts;
    for (int t = 1 + static_cast<int>(rng() % 20); t < c.tokens;
         t += 1 + static_cast<int>(rng() % 90)) {
      cuts.push_back(t);
    }
    splits.push_back({"random " + std::to_string(trial), cuts});
  }
  int exact = 0;
  for (const auto& [name, cuts] : splits) {
    SCOPED_TRACE(name);
    AttentionCache cache(c.shape);
    const std::vector<float> out = RunKernel(seq, cuts, 1, &cache);
    EXPECT_LE(RelErr(out, whole), kTolerance);
    EXPECT_TRUE(cache.SameContents(whole_cache));
    exact += out == whole;
  }
  RecordProperty("exact_outputs", std::to_string(exact) + "/" + std::to_string(splits.size()));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionStreamingTest,
    ::testing::Values(GridCase{{4, 2, 64, 32, 3, 10000.0f}, 300, 1.0f},
                      GridCase{{4, 2, 64, 64, 0, 10000.0f}, 300, 1.0f},   // w = kTile
                      GridCase{{2, 1, 64, 300, 2, 10000.0f}, 700, 1.0f},  // w > kBlock
                      GridCase{{4, 4, 32, 0, 3, 10000.0f}, 300, 1.0f},    // full attention
                      GridCase{{2, 1, 8, 5, 1, 10000.0f}, 37, 1.0f}),
    [](const ::testing::TestParamInfo<GridCase>& info) {
      return Describe(info.param.shape, info.param.tokens);
    });

TEST(AttentionCacheTest, RingWrapsManyTimes) {
  const AttentionShape shape{2, 1, 32, 16, 2, 10000.0f};
  const Sequence seq(shape, 2000, 31);  // the ring of 16 wraps 125 times
  const std::vector<float> reference = seq.Reference();
  for (int size : {1, 5, 16, 17, 2000}) {
    SCOPED_TRACE("pieces of " + std::to_string(size));
    AttentionCache cache(shape);
    const std::vector<float> out = RunKernel(seq, Pieces(size, seq.tokens), 1, &cache);
    EXPECT_LE(RelErr(out, reference), kTolerance);
    ExpectCacheHoldsTail(cache, seq);
  }
}

TEST(AttentionCacheTest, ResetStartsOver) {
  const AttentionShape shape{2, 1, 16, 8, 0, 10000.0f};
  const Sequence seq(shape, 40, 41);
  AttentionCache cache(shape);
  AttentionWorkspace workspace(shape, 1);
  std::vector<float> first(static_cast<size_t>(seq.tokens) * shape.q_width());
  std::vector<float> second(first.size());
  workspace.Forward(shape, cache, seq.At(0), seq.tokens, first.data());
  cache.Reset();
  EXPECT_EQ(cache.position(), 0);
  EXPECT_EQ(cache.size(), 0);
  workspace.Forward(shape, cache, seq.At(0), seq.tokens, second.data());
  EXPECT_EQ(first, second);
}

// Invariant 1: changing token j (its query, key and value) changes no output at t < j.
TEST(AttentionKernelTest, Causality) {
  for (int w : {0, 20}) {
    const AttentionShape shape{4, 2, 32, w, 2, 10000.0f};
    const Sequence seq(shape, 200, 51);
    const std::vector<float> base_split = RunKernel(seq, Pieces(50, seq.tokens), 1);
    for (int j : {0, 63, 64, 130, 199}) {
      Sequence changed = seq;
      for (int c = 0; c < shape.kv_width(); ++c) {
        changed.k[static_cast<size_t>(j) * shape.kv_width() + c] += 1.0f;
        changed.v[static_cast<size_t>(j) * shape.kv_width() + c] -= 2.0f;
      }
      for (int c = 0; c < shape.q_width(); ++c) {
        changed.q[static_cast<size_t>(j) * shape.q_width() + c] *= 3.0f;
      }
      const std::vector<float> out = RunKernel(changed, Pieces(50, seq.tokens), 1);
      const size_t prefix = static_cast<size_t>(j) * shape.q_width();
      EXPECT_TRUE(std::equal(out.begin(), out.begin() + prefix, base_split.begin()))
          << "w " << w << ", j " << j;
      EXPECT_NE(out[prefix], base_split[prefix]) << "w " << w << ", j " << j;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Invariant 7: the thread count does not matter (each (head, tile) item is computed by one
// thread the same way, so the outputs are in fact identical).

TEST(AttentionKernelTest, ThreadCountDoesNotMatter) {
  for (const AttentionShape& shape :
       {AttentionShape{4, 2, 64, 100, 3, 10000.0f}, AttentionShape{3, 1, 64, 0, 0, 10000.0f},
        AttentionShape{1, 1, 128, 300, 5, 10000.0f}}) {
    SCOPED_TRACE(Describe(shape, 500));
    const Sequence seq(shape, 500, 61);
    for (const std::vector<int>& cuts :
         {std::vector<int>{}, Pieces(1, 500), Pieces(7, 500), Pieces(130, 500)}) {
      AttentionCache cache1(shape), cache2(shape);
      const std::vector<float> one = RunKernel(seq, cuts, 1, &cache1);
      // A few runs: a race between the threads shows only when they overlap in time.
      for (int run = 0; run < 3; ++run) {
        const std::vector<float> two = RunKernel(seq, cuts, 2, &cache2);
        EXPECT_LE(MaxAbsDiff(one, two), 1e-6);
        EXPECT_TRUE(cache1.SameContents(cache2));
      }
    }
  }
}

// The (ith, nth) form inside the caller's own parallel region equals the convenience form.
TEST(AttentionKernelTest, CallerParallelRegion) {
  const AttentionShape shape{4, 1, 64, 200, 2, 10000.0f};
  const Sequence seq(shape, 900, 71);
  const std::vector<int> ends = {1, 2, 70, 71, 200, 520, seq.tokens};
  const std::vector<float> expected =
      RunKernel(seq, std::vector<int>(ends.begin(), ends.end() - 1), 1);
  for (int team : {1, 2, 2, 2, 3}) {  // 2 again: a race shows only when the threads overlap
    AttentionCache cache(shape);
    AttentionWorkspace workspace(shape, team);
    std::vector<float> out(expected.size());
#pragma omp parallel num_threads(team)
    {
      int begin = 0;
      for (int end : ends) {
        workspace.Forward(shape, cache, seq.At(begin), end - begin,
                          out.data() + static_cast<size_t>(begin) * shape.q_width(),
                          omp_get_thread_num(), omp_get_num_threads());
        begin = end;
      }
    }
    EXPECT_LE(MaxAbsDiff(out, expected), 1e-6) << "team " << team;
    EXPECT_EQ(cache.position(), seq.tokens);
  }
}

// ---------------------------------------------------------------------------------------------
// Rotary.

TEST(RotaryTest, InterleavedPairsAtTheDocumentedAngles) {
  // dh = 4, base 100: pair 0 turns by pos, pair 1 by pos * 100^(-1/2) = pos / 10.
  std::vector<float> x = {1, 0, 0, 1, /*head 1*/ 2, 0, 0, 0};
  Rotate(x.data(), 1, 2, 4, 3, 100.0f);
  EXPECT_FLOAT_EQ(x[0], static_cast<float>(std::cos(3.0)));
  EXPECT_FLOAT_EQ(x[1], static_cast<float>(std::sin(3.0)));
  EXPECT_FLOAT_EQ(x[2], static_cast<float>(-std::sin(0.3)));
  EXPECT_FLOAT_EQ(x[3], static_cast<float>(std::cos(0.3)));
  EXPECT_FLOAT_EQ(x[4], static_cast<float>(2 * std::cos(3.0)));  // every head alike
  EXPECT_FLOAT_EQ(x[5], static_cast<float>(2 * std::sin(3.0)));
  // Position 0 is the identity.
  std::vector<float> y = Random(2 * 64, 3);
  const std::vector<float> y0 = y;
  Rotate(y.data(), 1, 2, 64, 0, 10000.0f);
  EXPECT_EQ(y, y0);
}

TEST(RotaryTest, PreservesNormsOfEveryPair) {
  const int n = 50, heads = 3, dh = 64;
  std::vector<float> x = Random(static_cast<size_t>(n) * heads * dh, 5);
  const std::vector<float> x0 = x;
  Rotate(x.data(), n, heads, dh, 1000, 10000.0f);
  EXPECT_NE(x, x0);
  for (size_t p = 0; p < x.size(); p += 2) {
    const double before = std::hypot(x0[p], x0[p + 1]);
    const double after = std::hypot(x[p], x[p + 1]);
    EXPECT_NEAR(after, before, 1e-6 * (1 + before)) << "pair " << p / 2;
  }
}

TEST(RotaryTest, DotProductDependsOnlyOnThePositionDifference) {
  const int dh = 64;
  const std::vector<float> q = Random(dh, 7), k = Random(dh, 8);
  double norm = 0;
  for (int i = 0; i < dh; ++i) norm += std::abs(q[i]) * std::abs(k[i]);
  auto dot_at = [&](int64_t pq, int64_t pk) {
    std::vector<float> a = q, b = k;
    Rotate(a.data(), 1, 1, dh, pq, 10000.0f);
    Rotate(b.data(), 1, 1, dh, pk, 10000.0f);
    double dot = 0;
    for (int i = 0; i < dh; ++i) dot += static_cast<double>(a[i]) * b[i];
    return dot;
  };
  for (int64_t diff : {0, 1, 5, 100, 4096}) {
    const double base = dot_at(diff, 0);
    for (int64_t shift : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{123457}, int64_t{1} << 20,
                          int64_t{1} << 30}) {
      EXPECT_NEAR(dot_at(shift + diff, shift), base, 2e-6 * norm)
          << "diff " << diff << ", shift " << shift;
    }
  }
  // And it does depend on the difference.
  EXPECT_GT(std::abs(dot_at(1, 0) - dot_at(0, 0)), 1e-3);
}

TEST(RotaryTest, RowsAtConsecutivePositionsEqualOneCallPerRow) {
  const int n = 20, heads = 2, dh = 130;
  const std::vector<float> x0 = Random(static_cast<size_t>(n) * heads * dh, 9);
  std::vector<float> whole = x0, rows = x0;
  Rotate(whole.data(), n, heads, dh, 77, 10000.0f);
  for (int t = 0; t < n; ++t) {
    Rotate(rows.data() + static_cast<size_t>(t) * heads * dh, 1, heads, dh, 77 + t, 10000.0f);
  }
  EXPECT_EQ(whole, rows);
}

// Against float64: angles from the absolute position, turned in double. At any position (here
// past 2^20, where angles in float would drift) the turn stays within float rounding.
TEST(RotaryTest, MatchesFloat64AtAnyPosition) {
  const int n = 9, heads = 3, dh = 130;
  for (const int64_t first : {int64_t{0}, int64_t{4093}, int64_t{3} << 20}) {
    const std::vector<float> x0 = Random(static_cast<size_t>(n) * heads * dh, 11);
    std::vector<float> x = x0;
    Rotate(x.data(), n, heads, dh, first, 10000.0f);
    EXPECT_NE(x, x0);
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < heads; ++h) {
        for (int i = 0; i < dh / 2; ++i) {
          const double angle = static_cast<double>(first + t) *
                               std::pow(10000.0, -2.0 * i / static_cast<double>(dh));
          const size_t at = (static_cast<size_t>(t) * heads + h) * dh + 2 * static_cast<size_t>(i);
          const double a = x0[at], b = x0[at + 1];
          const double tolerance = 1e-6 * (1 + std::hypot(a, b));
          EXPECT_NEAR(x[at], a * std::cos(angle) - b * std::sin(angle), tolerance);
          EXPECT_NEAR(x[at + 1], b * std::cos(angle) + a * std::sin(angle), tolerance);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Validation.

TEST(AttentionShapeTest, BadShapesThrowConfigErrors) {
  const AttentionShape good{4, 2, 64, 128, 4, 10000.0f};
  EXPECT_NO_THROW(good.Validate());
  auto expect_config_error = [](const AttentionShape& shape, const char* what) {
    try {
      shape.Validate();
      ADD_FAILURE() << what << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kConfig) << what;
    }
    EXPECT_THROW(AttentionCache{shape}, Error) << what;
    EXPECT_THROW((AttentionWorkspace{shape, 1}), Error) << what;
  };
  AttentionShape s = good;
  s.heads = 0;
  expect_config_error(s, "heads 0");
  s = good;
  s.kv_heads = 0;
  expect_config_error(s, "kv_heads 0");
  s = good;
  s.kv_heads = 3;
  expect_config_error(s, "heads not a multiple of kv_heads");
  s = good;
  s.head_dim = 63;
  expect_config_error(s, "odd head_dim");
  s = good;
  s.head_dim = 0;
  expect_config_error(s, "head_dim 0");
  s = good;
  s.window = -1;
  expect_config_error(s, "negative window");
  s = good;
  s.persistent = -1;
  expect_config_error(s, "negative persistent");
  s = good;
  s.rope_base = 0.0f;
  expect_config_error(s, "rope_base 0");
  s = good;
  s.rope_base = std::nanf("");
  expect_config_error(s, "rope_base NaN");
}

TEST(AttentionShapeTest, ForwardRejectsAForeignCacheAndMissingInputs) {
  const AttentionShape shape{2, 1, 16, 8, 2, 10000.0f};
  const Sequence seq(shape, 4, 81);
  AttentionWorkspace workspace(shape, 1);
  std::vector<float> out(4 * shape.q_width());
  AttentionShape other = shape;
  other.window = 9;
  AttentionCache foreign(other);
  EXPECT_THROW(workspace.Forward(shape, foreign, seq.At(0), 4, out.data()), Error);
  AttentionCache cache(shape);
  AttentionInputs missing = seq.At(0);
  missing.persistent_v = nullptr;
  EXPECT_THROW(workspace.Forward(shape, cache, missing, 4, out.data()), Error);
  EXPECT_THROW(workspace.Forward(shape, cache, seq.At(0), -1, out.data()), Error);
  EXPECT_EQ(cache.position(), 0);  // nothing happened
  EXPECT_THROW((AttentionWorkspace{shape, 0}), Error);
}

// ---------------------------------------------------------------------------------------------
// No heap allocation per call (the malloc counter of tests/alloc_counter.hpp).

TEST(AttentionKernelTest, ForwardAllocatesNothing) {
  {  // The counter sees allocations.
    testing::CountAllocations counter;
    std::vector<float> probe(16);
    ASSERT_EQ(counter.count(), 1);
  }
  // The benchmark's widest shape (dh 128: the largest Eigen panels), a long window, decode.
  for (const AttentionShape& shape :
       {AttentionShape{4, 2, 128, 600, 4, 10000.0f}, AttentionShape{8, 8, 64, 128, 0, 10000.0f},
        AttentionShape{4, 1, 64, 0, 3, 10000.0f}}) {
    SCOPED_TRACE(Describe(shape, 1200));
    const Sequence seq(shape, 1200, 91);
    for (int threads : {1, 2}) {
      AttentionCache cache(shape, /*reserve_tokens=*/seq.tokens);
      AttentionWorkspace workspace(shape, threads, /*min_flops_per_thread=*/0);
      std::vector<float> out(seq.q.size());
      auto run = [&](int begin, int end, int piece) {
        for (int t = begin; t < end; t += piece) {
          const int len = std::min(piece, end - t);
          workspace.Forward(shape, cache, seq.At(t), len,
                            out.data() + static_cast<size_t>(t) * shape.q_width());
        }
      };
      run(0, 256, 256);  // warm-up: libgomp creates its threads once per process
      testing::CountAllocations counter;
      run(256, 700, 444);
      run(700, 740, 1);
      run(740, 1200, 37);
      EXPECT_EQ(counter.count(), 0) << "threads " << threads;
    }
  }
}

}  // namespace
}  // namespace titans
