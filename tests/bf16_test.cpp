// bf16 product matrices (WeightType::kBf16, src/ops/bf16.hpp, docs/SEMANTICS.md 3.5): the
// rounding against a float64 rule, the bf16 products against a float64 reference, and models:
// a kBf16 model computes what a float32 model with the rounded weights computes, bit for bit, for
// every block kind and titans-pytorch's MAC, decodes in batches as
// alone, allocates nothing per token, survives copies, and its files store exactly the product
// matrices as BF16; malformed BF16 files are refused.
#include "ops/bf16.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "io/safetensors.hpp"
#include "model_cases.hpp"
#include "ops/linalg.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

using linalg::Index;

// The bf16 value nearest to x, ties to the even mantissa, by float64 arithmetic: the two bf16
// neighbours of x are its truncation and the next value away from zero.
uint16_t NearestBf16(float x) {
  const auto bits = std::bit_cast<uint32_t>(x);
  const auto low = static_cast<uint16_t>(bits >> 16);
  const auto high = static_cast<uint16_t>(low + 1);
  const double below = std::fabs(static_cast<double>(x) - bf16::ToFloat(low));
  const double above = std::fabs(static_cast<double>(bf16::ToFloat(high)) - x);
  if (below != above) return below < above ? low : high;
  return (low & 1u) == 0 ? low : high;
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(bf16::FromFloat(1.0f), 0x3f80);
  EXPECT_EQ(bf16::FromFloat(-2.0f), 0xc000);
  EXPECT_EQ(bf16::FromFloat(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(bf16::FromFloat(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(bf16::FromFloat(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_EQ(bf16::FromFloat(std::numeric_limits<float>::max()), 0x7f80);  // overflows to inf
  EXPECT_TRUE(std::isnan(bf16::Round(std::numeric_limits<float>::quiet_NaN())));
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7f7fffffu);  // every finite positive float
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    if (i % 2 == 1) b |= 0x80000000u;
    const float x = std::bit_cast<float>(b);
    if (std::fabs(x) > 3.38e38f) continue;  // beyond the largest bf16: checked above
    ASSERT_EQ(bf16::FromFloat(x), NearestBf16(x)) << std::hexfloat << x;
  }
}

std::vector<float> RandomVector(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(size);
  for (float& x : v) x = normal(rng);
  return v;
}

// c = (or +=) a [m, k] b [k, n] through linalg::Multiply with b stored as bf16, against float64
// sums of the same (widened) values, and equal to the product with b stored as float32. a is a view
// with a row stride wider than k, as the MAC's interleaved rows are; n > 4096 crosses the one-row
// kernel's column blocks; for more rows (linalg::MultiplyWeights), m, k and n that are not
// multiples of its 6-row tiles, 256-deep blocks and 64- and 16-column panels leave every tail
// (7 x 513 x 85: a tile of 6 rows and one of 1, three depth blocks, a 64-, a 16- and 5 single
// columns).
TEST(Bf16, ProductsMatchAFloat64Reference) {
  struct Shape {
    Index m, k, n;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{1, 7, 33}, Shape{1, 301, 4100}, Shape{2, 5, 3},
                        Shape{5, 257, 129}, Shape{7, 513, 85}, Shape{130, 300, 260}}) {
    for (const bool accumulate : {false, true}) {
      SCOPED_TRACE(std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n) +
                   (accumulate ? " accumulate" : ""));
      const Index stride = s.k + 3;
      const std::vector<float> a = RandomVector(static_cast<size_t>(s.m * stride), 1);
      std::vector<float> b = RandomVector(static_cast<size_t>(s.k * s.n), 2);
      ops::Bf16Copies copies;
      ASSERT_TRUE(copies.Add(b.data(), b.size()));  // b now holds the widened bf16 values
      const linalg::WeightMatrix w = copies.Matrix(b, s.k, s.n);
      ASSERT_NE(w.bf16, nullptr);
      const std::vector<float> c0 = RandomVector(static_cast<size_t>(s.m * s.n), 3);
      std::vector<float> c = c0, c_f32 = c0;
      linalg::Multiply(linalg::View(c.data(), s.m, s.n, s.n),
                       linalg::ConstView(a.data(), s.m, s.k, stride), w, accumulate);
      // The same values stored as float32: the same sums (a model and its rounded twin agree).
      linalg::Multiply(linalg::View(c_f32.data(), s.m, s.n, s.n),
                       linalg::ConstView(a.data(), s.m, s.k, stride),
                       linalg::WeightMatrix{b.data(), nullptr, s.k, s.n}, accumulate);
      ASSERT_EQ(c, c_f32);
      for (Index i = 0; i < s.m; ++i) {
        for (Index j = 0; j < s.n; ++j) {
          double sum = accumulate ? c0[static_cast<size_t>(i * s.n + j)] : 0.0, size = 0;
          for (Index p = 0; p < s.k; ++p) {
            const double term = static_cast<double>(a[static_cast<size_t>(i * stride + p)]) *
                                b[static_cast<size_t>(p * s.n + j)];
            sum += term;
            size += std::fabs(term);
          }
          // float32 summation: at most k + 1 roundings of partial sums bounded by `size`.
          const double bound = static_cast<double>(s.k + 1) * 6e-8 * (size + std::fabs(sum));
          ASSERT_NEAR(c[static_cast<size_t>(i * s.n + j)], sum, bound) << i << ", " << j;
        }
      }
    }
  }
}

// c = a^T b through linalg::MultiplyTransposed (the memories' gradient products: a layer's
// inputs [k, m] against its output errors [k, n], both read in place with row strides wider
// than their widths), against float64 sums, over shapes that leave every tail of
// MultiplyWeights' blocking (6-row tiles, 256-deep blocks, 64- and 16-column panels, single
// columns); and equal to MultiplyWeights of the explicitly transposed a (the same sums).
TEST(Bf16, TransposedProductsMatchAFloat64Reference) {
  struct Shape {
    Index m, k, n;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{2, 5, 3}, Shape{7, 513, 85}, Shape{64, 64, 256},
                        Shape{256, 64, 128}, Shape{13, 300, 100}}) {
    SCOPED_TRACE(std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n));
    const Index lda = s.m + 5, ldb = s.n + 2;
    const std::vector<float> a = RandomVector(static_cast<size_t>(s.k * lda), 6);
    const std::vector<float> b = RandomVector(static_cast<size_t>(s.k * ldb), 7);
    std::vector<float> c(static_cast<size_t>(s.m * s.n), 1e30f);  // overwritten, not added to
    linalg::MultiplyTransposed(linalg::View(c.data(), s.m, s.n, s.n),
                               linalg::ConstView(a.data(), s.k, s.m, lda),
                               linalg::ConstView(b.data(), s.k, s.n, ldb));
    std::vector<float> a_rows(static_cast<size_t>(s.m * s.k));
    for (Index i = 0; i < s.m; ++i) {
      for (Index p = 0; p < s.k; ++p) {
        a_rows[static_cast<size_t>(i * s.k + p)] = a[static_cast<size_t>(p * lda + i)];
      }
    }
    std::vector<float> c_rows(c.size());
    linalg::MultiplyWeights(s.m, a_rows.data(), s.k, b.data(), ldb, s.k, s.n, c_rows.data(), s.n,
                            false);
    ASSERT_EQ(c, c_rows);
    for (Index i = 0; i < s.m; ++i) {
      for (Index j = 0; j < s.n; ++j) {
        double sum = 0.0, size = 0.0;
        for (Index p = 0; p < s.k; ++p) {
          const double term = static_cast<double>(a[static_cast<size_t>(p * lda + i)]) *
                              b[static_cast<size_t>(p * ldb + j)];
          sum += term;
          size += std::fabs(term);
        }
        const double bound = static_cast<double>(s.k + 1) * 6e-8 * (size + std::fabs(sum));
        ASSERT_NEAR(c[static_cast<size_t>(i * s.n + j)], sum, bound) << i << ", " << j;
      }
    }
  }
}

// A row of a product with more than one row has the same bits whichever rows share the call:
// the sessions of a batched step and the threads' shares of a piece's rows (split by rows) must
// not change a row's result. Every row of a [13, k] product against the same row in [2, k] calls
// beside each other row, both storages.
TEST(Bf16, AProductRowDoesNotDependOnTheRowsBesideIt) {
  constexpr Index kRows = 13, kDepth = 300, kCols = 100;
  const std::vector<float> a = RandomVector(static_cast<size_t>(kRows * kDepth), 4);
  std::vector<float> b = RandomVector(static_cast<size_t>(kDepth * kCols), 5);
  ops::Bf16Copies copies;
  ASSERT_TRUE(copies.Add(b.data(), b.size()));
  for (const linalg::WeightMatrix w :
       {copies.Matrix(b, kDepth, kCols), linalg::WeightMatrix{b.data(), nullptr, kDepth, kCols}}) {
    std::vector<float> all(static_cast<size_t>(kRows * kCols));
    linalg::Multiply(linalg::View(all.data(), kRows, kCols, kCols),
                     linalg::ConstView(a.data(), kRows, kDepth, kDepth), w);
    for (Index r = 0; r < kRows; ++r) {
      for (Index other = 0; other < kRows; other += 4) {
        std::vector<float> pair_in(static_cast<size_t>(2 * kDepth)), pair(2 * kCols);
        std::copy_n(a.begin() + r * kDepth, kDepth, pair_in.begin());
        std::copy_n(a.begin() + other * kDepth, kDepth, pair_in.begin() + kDepth);
        linalg::Multiply(linalg::View(pair.data(), 2, kCols, kCols),
                         linalg::ConstView(pair_in.data(), 2, kDepth, kDepth), w);
        ASSERT_TRUE(std::equal(pair.begin(), pair.begin() + kCols, all.begin() + r * kCols))
            << "row " << r << " beside row " << other << (w.bf16 ? ", bf16" : ", f32");
      }
    }
  }
}

// The weights a kBf16 model computes with: every IsBf16Candidate tensor rounded.
ModelWeights Rounded(const ModelConfig& config, ModelWeights w) {
  for (const TensorView& view : w.Tensors(config)) {
    if (!IsBf16Candidate(view.name)) continue;
    for (int64_t i = 0; i < view.size(); ++i) view.data[i] = bf16::Round(view.data[i]);
  }
  return w;
}

bool SameWeights(const ModelConfig& config, const ModelWeights& a, const ModelWeights& b) {
  const std::vector<ConstTensorView> x = a.Tensors(config), y = b.Tensors(config);
  if (x.size() != y.size()) return false;
  for (size_t t = 0; t < x.size(); ++t) {
    if (x[t].name != y[t].name || x[t].size() != y[t].size() ||
        !std::equal(x[t].data, x[t].data + x[t].size(), y[t].data)) {
      return false;
    }
  }
  return true;
}

std::vector<int32_t> Tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

// The logits of `tokens` fed in one call (piece = 0) or in pieces of `piece` tokens.
std::vector<float> Logits(const std::shared_ptr<const Model>& model,
                          const std::vector<int32_t>& tokens, size_t piece) {
  Session session(model, SessionOptions{1});
  const auto vocab = static_cast<size_t>(model->config().vocab_size);
  std::vector<float> logits(tokens.size() * vocab);
  if (piece == 0) piece = tokens.size();
  for (size_t t = 0; t < tokens.size(); t += piece) {
    const size_t n = std::min(piece, tokens.size() - t);
    session.Forward(std::span<const int32_t>(tokens.data() + t, n),
                    std::span<float>(logits.data() + t * vocab, n * vocab));
  }
  return logits;
}

// |a - b| / |b| over all logits.
double Difference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

// A kBf16 model's products are those of the float32 model with the rounded weights, in the same
// order: one row through the same kernel (linalg::MultiplyRow), more rows through the same
// kernel (linalg::MultiplyWeights). So its logits are the rounded model's, bit
// for bit, in one call, token by token and in pieces.

void ExpectComputesAsRounded(const ModelConfig& config, const ModelWeights& weights) {
  const auto bf16_model = std::make_shared<const Model>(config, weights, WeightType::kBf16);
  const auto rounded = std::make_shared<const Model>(config, Rounded(config, weights));
  const auto f32_model = std::make_shared<const Model>(config, weights);
  EXPECT_EQ(bf16_model->weight_type(), WeightType::kBf16);
  EXPECT_TRUE(SameWeights(config, bf16_model->weights(), rounded->weights()));
  EXPECT_FALSE(SameWeights(config, bf16_model->weights(), f32_model->weights()));
  const std::vector<int32_t> tokens = Tokens(40, config.vocab_size, 9);
  for (const size_t piece : {size_t{0}, size_t{1}, size_t{7}}) {
    SCOPED_TRACE("piece " + std::to_string(piece));
    const std::vector<float> got = Logits(bf16_model, tokens, piece);
    EXPECT_EQ(got, Logits(rounded, tokens, piece));
    // The rounding of the weights itself (bf16 keeps 8 significant bits): a few 1e-3 of the
    // logits on these small random models; bounded here only to catch a wrong product.
    const double to_f32 = Difference(got, Logits(f32_model, tokens, piece));
    EXPECT_LE(to_f32, 0.05);
    ::testing::Test::RecordProperty("piece" + std::to_string(piece) + "_to_f32",
                                    ::testing::PrintToString(to_f32));
  }
}

class Bf16ModelTest : public ::testing::TestWithParam<test::ModelCase> {};

TEST_P(Bf16ModelTest, ComputesWhatTheRoundedFloat32ModelComputes) {
  const ModelConfig config = test::ConfigFor(GetParam());
  ExpectComputesAsRounded(config, ModelWeights::Random(config, 11));
}

// A batch's products have more than one row (MultiplyWeights instead of the one-row kernel), with
// the same sums per row: a bf16 batch decodes each session as alone, bit for bit.
TEST_P(Bf16ModelTest, BatchedDecodeMatchesDecodingAlone) {
  const ModelConfig config = test::ConfigFor(GetParam());
  const auto model =
      std::make_shared<const Model>(config, ModelWeights::Random(config, 12), WeightType::kBf16);
  constexpr int kSessions = 3;
  std::vector<Session> batched, alone;
  std::vector<Session*> pointers;
  for (int i = 0; i < kSessions; ++i) {
    batched.emplace_back(model, SessionOptions{1});
    std::vector<int32_t> prompt = Tokens(5 + 9 * i, config.vocab_size, 20 + i);
    std::vector<float> ignored(prompt.size() * static_cast<size_t>(config.vocab_size));
    batched.back().Forward(prompt, ignored);
  }
  for (Session& s : batched) {
    alone.push_back(s.Clone());
    pointers.push_back(&s);
  }
  BatchDecoder decoder(model, kSessions, SessionOptions{1});
  const auto vocab = static_cast<size_t>(config.vocab_size);
  std::vector<float> logits(kSessions * vocab), expected(vocab);
  for (int step = 0; step < 12; ++step) {
    const std::vector<int32_t> tokens = Tokens(kSessions, config.vocab_size, 100 + step);
    decoder.Step(pointers, tokens, logits);
    for (size_t i = 0; i < kSessions; ++i) {
      alone[i].Forward(std::span<const int32_t>(&tokens[i], 1), expected);
      const std::vector<float> got(logits.begin() + static_cast<std::ptrdiff_t>(i * vocab),
                                   logits.begin() + static_cast<std::ptrdiff_t>((i + 1) * vocab));
      ASSERT_EQ(got, expected) << "step " << step << ", session " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, Bf16ModelTest, ::testing::ValuesIn(test::ModelCases()),
                         [](const auto& info) { return info.param.name; });

const std::string kTpMac =
    std::string(TITANS_TEST_DATA_DIR) + "/tp_mac/train_mac.model.safetensors";

// titans-pytorch's MAC (train_mac.py's options) has its own products.
TEST(Bf16, TitansPytorchMacComputesWhatTheRoundedFloat32ModelComputes) {
  const std::shared_ptr<const Model> model = Model::Load(kTpMac);
  ExpectComputesAsRounded(model->config(), model->weights());
}

TEST(Bf16, DecodingAllocatesNothing) {
  const ModelConfig config = test::ConfigFor(test::ModelCases()[6]);  // the mixed stack
  for (const std::shared_ptr<const Model>& model :
       {std::make_shared<const Model>(config, ModelWeights::Random(config, 3), WeightType::kBf16),
        std::shared_ptr<const Model>(Model::Load(kTpMac))}) {
    const auto bf16_model =
        std::make_shared<const Model>(model->config(), model->weights(), WeightType::kBf16);
    Session session(bf16_model, SessionOptions{1});
    const std::vector<int32_t> tokens = Tokens(64, bf16_model->config().vocab_size, 4);
    std::vector<float> logits(tokens.size() * static_cast<size_t>(bf16_model->config().vocab_size));
    session.Forward(std::span<const int32_t>(tokens.data(), 32),
                    std::span<float>(logits.data(), logits.size() / 2));
    testing::CountAllocations counter;
    for (size_t t = 32; t < tokens.size(); ++t) {
      const auto vocab = static_cast<size_t>(bf16_model->config().vocab_size);
      session.Forward(std::span<const int32_t>(&tokens[t], 1),
                      std::span<float>(logits.data() + t * vocab, vocab));
    }
    EXPECT_EQ(counter.count(), 0);
  }
}

// The bf16 copies are found by the address of the model's own weights: a copy of the model
// must find its own, and compute what the original computes.
TEST(Bf16, ACopiedModelComputesTheSame) {
  const ModelConfig config = test::ConfigFor(test::ModelCases()[6]);
  auto original =
      std::make_unique<Model>(config, ModelWeights::Random(config, 5), WeightType::kBf16);
  const auto copy = std::make_shared<const Model>(*original);
  const std::vector<int32_t> tokens = Tokens(30, config.vocab_size, 6);
  const std::vector<float> expected = Logits(std::make_shared<const Model>(*original), tokens, 1);
  original.reset();
  EXPECT_EQ(copy->weight_type(), WeightType::kBf16);
  EXPECT_EQ(Logits(copy, tokens, 1), expected);
  // Found by the copy's own addresses (a lookup by the original's would find nothing, and the
  // products would silently read float32).
  const ModelWeights& w = copy->weights();
  EXPECT_NE(copy->bf16_copies().Matrix(w.layers[0].ffn_up, config.d_model, config.ffn_hidden).bf16,
            nullptr);
  const auto memory = std::make_unique<NeuralMemory>(*copy->memory(0));
  EXPECT_NE(memory->bf16_copies().Matrix(memory->weights().w_k, 0, 0).bf16, nullptr);
}

// Every product matrix of a kBf16 model, and of its memories, has a bf16 copy holding its
// values; no other tensor has one.
TEST(Bf16, EveryProductMatrixHasItsCopy) {
  const ModelConfig config = test::ConfigFor(test::ModelCases()[6]);  // every block kind
  const Model model(config, ModelWeights::Random(config, 10), WeightType::kBf16);
  const ModelWeights& w = model.weights();
  const auto check = [](const ops::Bf16Copies& copies, const std::vector<float>& tensor,
                        bool candidate, const std::string& name) {
    const uint16_t* copy = copies.Matrix(tensor, 0, 0).bf16;
    if (!candidate || tensor.empty()) {
      EXPECT_EQ(copy, nullptr) << name;
      return;
    }
    ASSERT_NE(copy, nullptr) << name;
    for (size_t i = 0; i < tensor.size(); ++i) {
      ASSERT_EQ(bf16::ToFloat(copy[i]), tensor[i]) << name << " at " << i;
    }
  };
  int copies = 0;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& layer = w.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    for (const auto* t :
         {&layer.attention.w_q, &layer.attention.w_k, &layer.attention.w_v, &layer.attention.w_o,
          &layer.memory.w_g, &layer.memory.w_o, &layer.ffn_gate, &layer.ffn_up, &layer.ffn_down}) {
      check(model.bf16_copies(), *t, true, p + "product");
      copies += t->empty() ? 0 : 1;
    }
    for (const auto* t : {&layer.norm, &layer.ffn_norm, &layer.memory.norm}) {
      check(model.bf16_copies(), *t, false, p + "norm");
    }
    if (model.memory(static_cast<int>(l))) {
      const NeuralMemory& memory = *model.memory(static_cast<int>(l));
      const MemoryWeights& m = memory.weights();
      for (const auto* t : {&m.w_q, &m.w_k, &m.w_v})
        check(memory.bf16_copies(), *t, true, p + "memory");
      check(memory.bf16_copies(), m.w_theta, false, p + "memory w_theta");
    }
  }
  EXPECT_GT(copies, 20);
  check(model.bf16_copies(), w.embedding, false, "embedding");
}

// The inputs' finiteness check: every length around the register width, a NaN or an infinity
// at every place (in whole registers and in the tail), and large finite values (whose
// differences x - x are still exactly 0).
TEST(Simd, AllFiniteFindsEveryNonFiniteValue) {
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (Index n = 0; n <= 3 * linalg::simd::kWidth + 3; ++n) {
    std::vector<float> x(static_cast<size_t>(n));
    for (Index i = 0; i < n; ++i) x[i] = i % 2 == 0 ? 3.0e38f : -1.5f * static_cast<float>(i);
    EXPECT_TRUE(linalg::simd::AllFinite(x.data(), n)) << n;
    for (Index i = 0; i < n; ++i) {
      for (const float b : bad) {
        std::vector<float> y = x;
        y[i] = b;
        EXPECT_FALSE(linalg::simd::AllFinite(y.data(), n)) << n << " " << i << " " << b;
      }
    }
  }
}

// The kernels' broadcast puts the value itself, bit for bit, in every lane: -0 stays -0 (x + 0
// would make it +0), and so do the infinities, the extremes and the subnormals.
TEST(Simd, BroadcastPutsTheValueItselfInEveryLane) {
  using linalg::simd::kWidth;
  const float values[] = {-0.0f,
                          0.0f,
                          1.5f,
                          -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::denorm_min(),
                          -std::numeric_limits<float>::denorm_min()};
  for (const float x : values) {
    float lanes[kWidth];
    linalg::simd::Store(lanes, linalg::simd::Broadcast(x));
    for (Index l = 0; l < kWidth; ++l) {
      EXPECT_EQ(std::bit_cast<uint32_t>(lanes[l]), std::bit_cast<uint32_t>(x))
          << x << " lane " << l;
    }
  }
  float lanes[kWidth];
  linalg::simd::Store(lanes, linalg::simd::Broadcast(std::numeric_limits<float>::quiet_NaN()));
  for (const float lane : lanes) EXPECT_TRUE(std::isnan(lane));
}

TEST(Bf16, AValueBeyondBf16IsRefused) {
  const ModelConfig config = test::ConfigFor(test::ModelCases()[1]);
  ModelWeights w = ModelWeights::Random(config, 7);
  w.layers[1].ffn_up[3] = 3.399e38f;  // finite in float32, infinite once rounded
  try {
    const Model model(config, w, WeightType::kBf16);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("layers.1.ffn_up"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(Model(config, w));  // float32 holds it
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) /
          ("titans_bf16_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

TEST(Bf16, FilesStoreTheProductMatricesAsBf16) {
  const ModelConfig config = test::ConfigFor(test::ModelCases()[6]);
  const ModelWeights weights = ModelWeights::Random(config, 8);
  const Model f32_model(config, weights);
  const auto bf16_model = std::make_shared<const Model>(config, weights, WeightType::kBf16);
  const std::string f32_path = TempPath("f32.safetensors"),
                    bf16_path = TempPath("bf16.safetensors");
  f32_model.Save(f32_path);
  bf16_model->Save(bf16_path);

  const io::SafetensorsFile file = io::SafetensorsFile::Open(bf16_path);
  double halved = 0;  // bytes the product matrices save
  int candidates = 0;
  for (const io::TensorRecord& t : file.tensors()) {
    const bool candidate = IsBf16Candidate(t.name);
    EXPECT_EQ(t.dtype, candidate ? io::DType::kBF16 : io::DType::kF32) << t.name;
    if (candidate) {
      halved += static_cast<double>(t.bytes.size());
      ++candidates;
    }
  }
  EXPECT_GT(candidates, 20);  // 5 layers of attention, memory and feed-forward products
  const io::SafetensorsFile f32_file = io::SafetensorsFile::Open(f32_path);
  for (const io::TensorRecord& t : f32_file.tensors()) {
    EXPECT_EQ(t.dtype, io::DType::kF32) << t.name;
  }
  const double saved = static_cast<double>(std::filesystem::file_size(f32_path)) -
                       static_cast<double>(std::filesystem::file_size(bf16_path));
  EXPECT_NEAR(saved, halved, 4096);  // the headers differ only in the dtype strings

  const std::shared_ptr<const Model> loaded = Model::Load(bf16_path);
  EXPECT_EQ(loaded->weight_type(), WeightType::kBf16);
  EXPECT_TRUE(SameWeights(config, loaded->weights(), bf16_model->weights()));
  const std::vector<int32_t> tokens = Tokens(20, config.vocab_size, 3);
  EXPECT_EQ(Logits(loaded, tokens, 1), Logits(bf16_model, tokens, 1));
  EXPECT_EQ(Model::Load(f32_path)->weight_type(), WeightType::kF32);
  std::filesystem::remove(f32_path);
  std::filesystem::remove(bf16_path);
}

// A model file rewritten with `edit` applied to its tensors' dtypes and bytes.
struct EditedTensor {
  std::string name;
  io::DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

template <class Edit>
std::string Rewritten(const std::string& source, const std::string& name, Edit edit) {
  const io::SafetensorsFile file = io::SafetensorsFile::Open(source);
  std::vector<EditedTensor> tensors;
  for (const io::TensorRecord& t : file.tensors()) {
    tensors.push_back({t.name, t.dtype, t.shape, {t.bytes.begin(), t.bytes.end()}});
    edit(tensors.back());
  }
  std::vector<io::TensorToWrite> out;
  for (const EditedTensor& t : tensors) out.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  const std::string path = TempPath(name);
  io::WriteSafetensors(path, file.metadata(), out);
  return path;
}

void ToBf16(EditedTensor& t) {
  std::vector<std::byte> bytes(t.bytes.size() / 2);
  for (size_t i = 0; i < bytes.size() / 2; ++i) {
    float x = 0;
    std::memcpy(&x, t.bytes.data() + 4 * i, sizeof x);
    const uint16_t b = bf16::FromFloat(x);
    std::memcpy(bytes.data() + 2 * i, &b, sizeof b);
  }
  t.bytes = std::move(bytes);
  t.dtype = io::DType::kBF16;
}

void ToF32(EditedTensor& t) {
  std::vector<std::byte> bytes(t.bytes.size() * 2);
  for (size_t i = 0; i < t.bytes.size() / 2; ++i) {
    uint16_t b = 0;
    std::memcpy(&b, t.bytes.data() + 2 * i, sizeof b);
    const float x = bf16::ToFloat(b);
    std::memcpy(bytes.data() + 4 * i, &x, sizeof x);
  }
  t.bytes = std::move(bytes);
  t.dtype = io::DType::kF32;
}

void ExpectRefused(const std::string& path, const std::string& words) {
  try {
    Model::Load(path);
    ADD_FAILURE() << "loaded " << path;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFormat) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(Bf16, MalformedBf16FilesAreRefused) {
  const ModelConfig config = test::ConfigFor(test::ModelCases()[1]);
  const std::string source = TempPath("source.safetensors");
  Model(config, ModelWeights::Random(config, 9), WeightType::kBf16).Save(source);
  // One product matrix left in F32 among BF16 ones.
  ExpectRefused(Rewritten(source, "mixed.safetensors",
                          [](EditedTensor& t) {
                            if (t.name == "layers.1.ffn_down") ToF32(t);
                          }),
                "all as BF16");
  // A tensor that is not a product matrix stored as BF16.
  ExpectRefused(Rewritten(source, "norm.safetensors",
                          [](EditedTensor& t) {
                            if (t.name == "final_norm") ToBf16(t);
                          }),
                "\"final_norm\" has dtype BF16");
  // A non-finite BF16 value.
  ExpectRefused(Rewritten(source, "nan.safetensors",
                          [](EditedTensor& t) {
                            if (t.name == "layers.0.attention.w_k") {
                              const uint16_t nan = 0x7fc0;
                              std::memcpy(t.bytes.data() + 2 * 5, &nan, sizeof nan);
                            }
                          }),
                "non-finite value");
  std::filesystem::remove(source);
}

}  // namespace
}  // namespace titans
