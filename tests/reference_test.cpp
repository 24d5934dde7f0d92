// Tests of the naive reference (src/reference/memory_reference.hpp) against the math of
// docs/SEMANTICS.md section 1, independently of the fast path: the hand-written gradient against
// finite differences (invariant 4), the gated delta rule (invariant 9), causality and the read
// rule / offset.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "reference/memory_reference.hpp"
#include "titans/memory.hpp"
#include "titans/memory_config.hpp"

namespace titans {
namespace {

using reference::HeadParams;
using reference::ReferenceMemory;

std::vector<double> RandomVector(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// Local names (test names must not depend on the library's string tables).
const char* Name(Activation a) {
  return a == Activation::kGelu ? "gelu" : a == Activation::kSilu ? "silu" : "none";
}
const char* Name(MemoryOutput o) { return o == MemoryOutput::kPlain ? "plain" : "lnres"; }
const char* Name(LossScale l) { return l == LossScale::kSum ? "sum" : "mean"; }
const char* Name(ReadRule r) { return r == ReadRule::kChunk ? "chunk" : "step"; }

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Invariant 4: the hand-written gradient equals central finite differences of the loss.

struct GradCase {
  int depth;
  Activation act;
  MemoryOutput output;
  LossScale loss;
};

std::string GradCaseName(const testing::TestParamInfo<GradCase>& info) {
  const GradCase& c = info.param;
  return "depth" + std::to_string(c.depth) + "_" + Name(c.act) + "_" + Name(c.output) + "_" +
         Name(c.loss);
}

class GradientTest : public testing::TestWithParam<GradCase> {};

TEST_P(GradientTest, MatchesCentralFiniteDifferences) {
  const GradCase& gc = GetParam();
  MemoryConfig c;
  c.head_dim = 6;
  c.expansion = 1.5f;  // dm = 9: no square hidden matrices to hide a transpose
  c.depth = gc.depth;
  c.activation = gc.act;
  c.output = gc.output;
  c.loss = gc.loss;
  ASSERT_EQ(c.hidden_dim(), 9);

  for (uint64_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    HeadParams<double> p = HeadParams<double>::Zeros(c);
    for (int l = 0; l < c.depth; ++l) {
      const std::vector<double> r =
          RandomVector(p.w[l].size(), 100 * seed + l, 1.2 / std::sqrt(c.layer_in(l)));
      p.w[l] = r;
    }
    if (!p.g.empty()) p.g = RandomVector(p.g.size(), 100 * seed + 50, 0.3);
    const std::vector<double> k = RandomVector(c.head_dim, 100 * seed + 60);
    const std::vector<double> v = RandomVector(c.head_dim, 100 * seed + 61);
    const double theta = 0.37;
    const double lambda = reference::LossLambda<double>(c);
    EXPECT_EQ(lambda, gc.loss == LossScale::kSum ? 1.0 : 1.0 / 6.0);

    const HeadParams<double> g = reference::Gradient(c, p, k.data(), v.data(), theta, lambda);
    auto loss = [&](const HeadParams<double>& q) {
      return reference::Loss(c, q, k.data(), v.data(), theta, lambda);
    };

    // Central differences, step h: truncation error O(h^2 f''') and rounding ~ 1e-16 |f| / h.
    // Observed worst relative error over the grid: 3.7e-9 (W2, depth 3). The bound
    // 1e-7 * max(1, |g|) is far below any sign, factor-2 or missing-term error (those are
    // O(|g|)).
    const double h = 1e-5;
    const double tol = 1e-7;
    auto check_tensor = [&](std::vector<double>& param, const std::vector<double>& grad,
                            const std::string& name) {
      ASSERT_EQ(param.size(), grad.size()) << name;
      double worst = 0;
      for (size_t i = 0; i < param.size(); ++i) {
        const double saved = param[i];
        param[i] = saved + h;
        const double lp = loss(p);
        param[i] = saved - h;
        const double lm = loss(p);
        param[i] = saved;
        const double fd = (lp - lm) / (2 * h);
        const double err = std::abs(grad[i] - fd) / std::max(1.0, std::abs(grad[i]));
        worst = std::max(worst, err);
        EXPECT_LE(err, tol) << name << "[" << i << "]: hand " << grad[i] << " fd " << fd;
      }
      // The gradient must not be trivially zero (a dead test would pass anything).
      EXPECT_GT(MaxAbs(grad), 1e-3) << name;
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.3g", worst);
      RecordProperty(name + "_worst_rel_err_seed" + std::to_string(seed), buf);
    };
    for (int l = 0; l < c.depth; ++l) {
      check_tensor(p.w[l], g.w[l], "W" + std::to_string(l + 1));
    }
    if (c.output == MemoryOutput::kLnResidual) {
      check_tensor(p.g, g.g, "g");
    } else {
      EXPECT_TRUE(g.g.empty());
    }
  }
}

std::vector<GradCase> GradGrid() {
  std::vector<GradCase> cases;
  for (int depth : {1, 2, 3}) {
    for (Activation act : {Activation::kGelu, Activation::kSilu}) {
      for (MemoryOutput out : {MemoryOutput::kPlain, MemoryOutput::kLnResidual}) {
        for (LossScale loss : {LossScale::kSum, LossScale::kMean}) {
          cases.push_back({depth, act, out, loss});
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Grid, GradientTest, testing::ValuesIn(GradGrid()), GradCaseName);

// The activations and their derivatives at a few points, against closed forms / differences.
TEST(ReferenceMath, ActivationDerivatives) {
  for (Activation a : {Activation::kGelu, Activation::kSilu}) {
    for (double z : {-3.1, -1.0, -0.2, 0.0, 0.4, 1.7, 4.2}) {
      const double h = 1e-6;
      const double fd = (reference::Activate(a, z + h) - reference::Activate(a, z - h)) / (2 * h);
      EXPECT_NEAR(reference::ActivateDerivative(a, z), fd, 1e-9) << Name(a) << " " << z;
    }
  }
  // GELU(1) = 0.5 (1 + erf(1/sqrt 2)) = Phi(1) = 0.8413447460685429
  EXPECT_NEAR(reference::Activate(Activation::kGelu, 1.0), 0.8413447460685429, 1e-15);
  EXPECT_NEAR(reference::Activate(Activation::kSilu, 1.0), 1.0 / (1.0 + std::exp(-1.0)), 1e-15);
}

// M(u) for L = 1 plain is u W; for kLnResidual it is LN(u W) (1 + g) + u.
TEST(ReferenceMath, MemoryForwardSmallCases) {
  MemoryConfig c;
  c.head_dim = 3;
  c.depth = 1;
  c.output = MemoryOutput::kPlain;
  HeadParams<double> p = HeadParams<double>::Zeros(c);
  p.w[0] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const double u[3] = {1, -1, 2};
  const std::vector<double> y = reference::MemoryForward(c, p, u);
  EXPECT_EQ(y, (std::vector<double>{1 - 4 + 14, 2 - 5 + 16, 3 - 6 + 18}));

  c.output = MemoryOutput::kLnResidual;
  c.layer_norm_eps = 0.0f;
  p = HeadParams<double>::Zeros(c);
  p.w[0] = {1, 0, 0, 0, 1, 0, 0, 0, 1};  // z = u = (1, -1, 2): mean 2/3, var 14/9
  p.g = {0.5, 0.0, -1.0};
  const std::vector<double> y2 = reference::MemoryForward(c, p, u);
  const double mean = 2.0 / 3.0, sd = std::sqrt(14.0 / 9.0);
  EXPECT_NEAR(y2[0], (1 - mean) / sd * 1.5 + 1, 1e-14);
  EXPECT_NEAR(y2[1], (-1 - mean) / sd * 1.0 - 1, 1e-14);
  EXPECT_NEAR(y2[2], 0.0 + 2, 1e-14);
}

// ---------------------------------------------------------------------------------------------
// Invariant 9: L = 1, no momentum, s = chunk = 1, plain, lambda = 1 is the gated delta rule
// W_t = (1 - alpha_t) W_{t-1} - 2 theta_t k_t^T (k_t W_{t-1} - v_t). The formula side below
// recomputes k, v, theta, alpha from the weights by hand and never calls the reference's
// gradient or update code.

struct DeltaCase {
  const char* name;
  int conv_kernel;
  Activation qkv_activation;
  QkNorm qk_norm;
  bool store_norm;
};

class DeltaRuleTest : public testing::TestWithParam<DeltaCase> {};

TEST_P(DeltaRuleTest, WeightsFollowGatedDeltaRule) {
  const DeltaCase& dc = GetParam();
  MemoryConfig c = MemoryConfig::Paper(/*d_model=*/12, /*heads=*/2, /*head_dim=*/6,
                                       /*depth=*/1, /*chunk=*/1);
  c.momentum = false;
  c.step = 1;
  c.chunk = 1;
  c.output = MemoryOutput::kPlain;
  c.loss = LossScale::kSum;
  c.max_lr = 0.8f;
  c.conv_kernel = dc.conv_kernel;
  c.qkv_activation = dc.qkv_activation;
  c.qk_norm = dc.qk_norm;
  c.store_norm = dc.store_norm;
  c.Validate();
  const NeuralMemory mem(c, MemoryWeights::Random(c, 7));
  const MemoryWeights& w = mem.weights();
  ReferenceMemory<double> ref(mem);

  const int d = c.d_model, H = c.heads, dh = c.head_dim, HD = c.inner_dim(), K = c.conv_kernel;
  const int n = 40;
  const std::vector<double> x = RandomVector(static_cast<size_t>(n) * d, 11);
  const std::vector<double> r = RandomVector(static_cast<size_t>(n) * d, 12);

  auto sig = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
  // By-hand projections, kept for the convolution.
  std::vector<std::vector<double>> k_raw, v_raw;
  // W per head [dh, dh], starting at W0.
  std::vector<std::vector<double>> W(H);
  for (int h = 0; h < H; ++h) {
    W[h].assign(w.mlp[0].begin() + h * dh * dh, w.mlp[0].begin() + (h + 1) * dh * dh);
  }

  std::vector<double> out(static_cast<size_t>(ref.output_width()));
  for (int t = 0; t < n; ++t) {
    const double* xt = x.data() + t * d;
    ref.Forward(xt, r.data() + t * d, 1, out.data());

    // x_n
    std::vector<double> xn(xt, xt + d);
    if (c.store_norm) {
      double ms = 0;
      for (double a : xn) ms += a * a;
      const double inv = 1.0 / std::sqrt(ms / d + static_cast<double>(c.rms_eps));
      for (int i = 0; i < d; ++i) xn[i] = xn[i] * inv * w.store_norm[i];
    }
    std::vector<double> kr(HD, 0.0), vr(HD, 0.0);
    for (int col = 0; col < HD; ++col) {
      for (int i = 0; i < d; ++i) {
        kr[col] += xn[i] * w.w_k[i * HD + col];
        vr[col] += xn[i] * w.w_v[i * HD + col];
      }
    }
    k_raw.push_back(kr);
    v_raw.push_back(vr);
    std::vector<double> k = kr, v = vr;
    if (K > 0) {
      for (int col = 0; col < HD; ++col) {
        double ka = 0, va = 0;
        for (int j = 0; j < K; ++j) {
          const int src = t - K + 1 + j;
          if (src < 0) continue;
          ka += w.conv_k[j * HD + col] * k_raw[src][col];
          va += w.conv_v[j * HD + col] * v_raw[src][col];
        }
        k[col] = ka;
        v[col] = va;
      }
    }
    if (c.qkv_activation == Activation::kSilu) {
      for (int col = 0; col < HD; ++col) {
        k[col] = k[col] * sig(k[col]);
        v[col] = v[col] * sig(v[col]);
      }
    }
    for (int h = 0; h < H; ++h) {
      double* kh = k.data() + h * dh;
      const double* vh = v.data() + h * dh;
      if (c.qk_norm == QkNorm::kL2) {
        double sq = 0;
        for (int j = 0; j < dh; ++j) sq += kh[j] * kh[j];
        for (int j = 0; j < dh; ++j) kh[j] /= std::sqrt(sq);
      } else if (c.qk_norm == QkNorm::kRms) {
        double ms = 0;
        for (int j = 0; j < dh; ++j) ms += kh[j] * kh[j];
        const double inv = 1.0 / std::sqrt(ms / dh + static_cast<double>(c.rms_eps));
        for (int j = 0; j < dh; ++j) kh[j] = kh[j] * inv * w.k_norm[h * dh + j];
      }
      double lt = w.b_theta[h], la = w.b_alpha[h];
      for (int i = 0; i < d; ++i) {
        lt += xn[i] * w.w_theta[i * H + h];
        la += xn[i] * w.w_alpha[i * H + h];
      }
      const double theta = static_cast<double>(c.max_lr) * sig(lt);
      const double alpha = sig(la);
      // err = k W - v; W <- (1 - alpha) W - 2 theta k^T err
      std::vector<double> err(dh, 0.0);
      for (int j = 0; j < dh; ++j) {
        for (int i = 0; i < dh; ++i) err[j] += kh[i] * W[h][i * dh + j];
        err[j] -= vh[j];
      }
      for (int i = 0; i < dh; ++i) {
        for (int j = 0; j < dh; ++j) {
          W[h][i * dh + j] = (1 - alpha) * W[h][i * dh + j] - 2 * theta * kh[i] * err[j];
        }
      }
    }

    const std::vector<double> got = ref.w_cur(0);
    ASSERT_EQ(got.size(), static_cast<size_t>(H * dh * dh));
    double worst = 0, scale = 1;
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < dh * dh; ++i) {
        worst = std::max(worst, std::abs(got[h * dh * dh + i] - W[h][i]));
        scale = std::max(scale, std::abs(W[h][i]));
      }
    }
    ASSERT_LE(worst, 1e-12 * scale) << "token " << t;
    // chunk = 1 commits after every token.
    ASSERT_EQ(ref.w_base(0), got) << "token " << t;
    ASSERT_EQ(ref.steps(), t + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, DeltaRuleTest,
    testing::Values(DeltaCase{"bare", 0, Activation::kNone, QkNorm::kNone, false},
                    DeltaCase{"storenorm", 0, Activation::kNone, QkNorm::kNone, true},
                    DeltaCase{"paper_qkv", 4, Activation::kSilu, QkNorm::kL2, true},
                    DeltaCase{"rms_qk_conv2", 2, Activation::kSilu, QkNorm::kRms, true}),
    [](const testing::TestParamInfo<DeltaCase>& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------
// Causality and the read rule.

struct ReadCase {
  const char* name;
  ReadRule read;
  int offset;
  int step;
  int chunk;
  bool ln_residual;
};

MemoryConfig ReadCaseConfig(const ReadCase& rc) {
  MemoryConfig c = MemoryConfig::Paper(/*d_model=*/16, /*heads=*/2, /*head_dim=*/6, /*depth=*/2,
                                       /*chunk=*/8);
  c.expansion = 2.0f;
  c.read = rc.read;
  c.read_offset = rc.offset;
  c.step = rc.step;
  c.chunk = rc.chunk;
  c.output_gate = true;
  if (rc.ln_residual) {
    c.output = MemoryOutput::kLnResidual;
    c.activation = Activation::kGelu;
    c.loss = LossScale::kMean;
  }
  c.max_lr = 1.0f;
  c.Validate();
  return c;
}

class ReadRuleTest : public testing::TestWithParam<ReadCase> {};

// Changing the store input of token j changes exactly the outputs of the tokens that read
// weights including j's step (ReadSteps(t) * s > j), and nothing before j. Changing the
// retrieve input of token j changes exactly the outputs j .. j+K-1 (the query convolution).
TEST_P(ReadRuleTest, CausalAndReadsTheRightWeights) {
  const ReadCase& rc = GetParam();
  const MemoryConfig c = ReadCaseConfig(rc);
  const NeuralMemory mem(c, MemoryWeights::Random(c, 21));
  const int d = c.d_model;
  const int n = 26;
  const std::vector<double> x = RandomVector(static_cast<size_t>(n) * d, 31);
  const std::vector<double> r = RandomVector(static_cast<size_t>(n) * d, 32);

  ReferenceMemory<double> base_ref(mem);
  std::vector<double> base_out;
  base_ref.Forward(x, r, base_out);
  const int ow = base_ref.output_width();

  auto row_equal = [&](const std::vector<double>& a, const std::vector<double>& b, int t) {
    return std::equal(a.begin() + t * ow, a.begin() + (t + 1) * ow, b.begin() + t * ow);
  };

  for (int j : {0, 3, 7, 8, 9, 15, 16, 25}) {
    SCOPED_TRACE("changed token " + std::to_string(j));
    // Store only.
    {
      std::vector<double> x2 = x;
      for (int i = 0; i < d; ++i) x2[j * d + i] += 0.5 + 0.1 * i;
      ReferenceMemory<double> ref(mem);
      std::vector<double> out;
      ref.Forward(x2, r, out);
      int changed_later = 0;
      for (int t = 0; t < n; ++t) {
        const bool sees_j = base_ref.ReadSteps(t) * c.step > j;
        if (t < j) {
          ASSERT_FALSE(sees_j) << "t " << t;  // the read rule itself is causal
        }
        EXPECT_EQ(row_equal(base_out, out, t), !sees_j) << "store change, t " << t;
        changed_later += sees_j;
      }
      if (j <= 16) {
        EXPECT_GT(changed_later, 0);  // the test is not vacuous
      }
    }
    // Retrieve only.
    {
      std::vector<double> r2 = r;
      for (int i = 0; i < d; ++i) r2[j * d + i] -= 0.7 + 0.05 * i;
      ReferenceMemory<double> ref(mem);
      std::vector<double> out;
      ref.Forward(x, r2, out);
      const int K = std::max(c.conv_kernel, 1);
      for (int t = 0; t < n; ++t) {
        const bool affected = t >= j && t < j + K;
        EXPECT_EQ(row_equal(base_out, out, t), !affected) << "retrieve change, t " << t;
      }
      // The same weights were written.
      EXPECT_EQ(ref.w_cur(0), base_ref.w_cur(0));
    }
  }
}

// Feeding the reference whole or in pieces gives identical outputs and state.
TEST_P(ReadRuleTest, StreamingSplitsAreExact) {
  const ReadCase& rc = GetParam();
  const MemoryConfig c = ReadCaseConfig(rc);
  const NeuralMemory mem(c, MemoryWeights::Random(c, 22));
  const int d = c.d_model;
  const int n = 26;
  const std::vector<double> x = RandomVector(static_cast<size_t>(n) * d, 41);
  const std::vector<double> r = RandomVector(static_cast<size_t>(n) * d, 42);
  ReferenceMemory<double> whole(mem);
  std::vector<double> out_whole;
  whole.Forward(x, r, out_whole);

  ReferenceMemory<double> split(mem);
  std::vector<double> out_split(out_whole.size());
  const int ow = split.output_width();
  int t = 0;
  for (int len : {1, 2, 7, 3, 5, 8}) {
    split.Forward(x.data() + t * d, r.data() + t * d, len, out_split.data() + t * ow);
    t += len;
  }
  ASSERT_EQ(t, n);
  EXPECT_EQ(out_split, out_whole);
  EXPECT_EQ(split.position(), whole.position());
  for (int l = 0; l < c.depth; ++l) {
    EXPECT_EQ(split.w_cur(l), whole.w_cur(l));
    EXPECT_EQ(split.w_base(l), whole.w_base(l));
    EXPECT_EQ(split.momentum(l), whole.momentum(l));
  }
  EXPECT_EQ(split.g_cur(), whole.g_cur());
  EXPECT_EQ(split.g_base(), whole.g_base());
  EXPECT_EQ(split.g_momentum(), whole.g_momentum());
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ReadRuleTest,
    testing::Values(ReadCase{"chunk_o0_s1", ReadRule::kChunk, 0, 1, 8, false},
                    ReadCase{"chunk_o1_s1", ReadRule::kChunk, 1, 1, 8, false},
                    ReadCase{"chunk_o0_s4", ReadRule::kChunk, 0, 4, 8, true},
                    ReadCase{"chunk_o1_s4", ReadRule::kChunk, 1, 4, 8, true},
                    ReadCase{"step_o0_s1", ReadRule::kStep, 0, 1, 8, false},
                    ReadCase{"step_o1_s1", ReadRule::kStep, 1, 1, 8, false},
                    ReadCase{"step_o0_s4", ReadRule::kStep, 0, 4, 8, true},
                    ReadCase{"step_o1_s4", ReadRule::kStep, 1, 4, 8, true},
                    ReadCase{"step_o0_s4_never", ReadRule::kStep, 0, 4, 0, true},
                    ReadCase{"step_o1_s4_never", ReadRule::kStep, 1, 4, 0, true}),
    [](const testing::TestParamInfo<ReadCase>& info) { return std::string(info.param.name); });

// docs/SEMANTICS.md 1.4 and titans-pytorch's read table (docs/TITANS_PYTORCH.md, "Which weights a
// token reads"; C = 4: W0 W0 W0 W1 W1 W1 W1 W2 W2).
TEST(ReferenceReadRule, ReadStepsTables) {
  MemoryConfig c = MemoryConfig::TitansPytorch(8, 1, 8, /*chunk_size=*/4);
  const NeuralMemory tp(c, MemoryWeights::Random(c, 1));
  ReferenceMemory<double> ref(tp);
  const int64_t expect_tp[] = {0, 0, 0, 1, 1, 1, 1, 2, 2};
  for (int t = 0; t < 9; ++t) EXPECT_EQ(ref.ReadSteps(t), expect_tp[t]) << t;

  MemoryConfig p = MemoryConfig::Paper(8, 1, 8, 2, /*chunk=*/4);
  const NeuralMemory paper(p, MemoryWeights::Random(p, 1));
  ReferenceMemory<double> ref_p(paper);
  const int64_t expect_paper[] = {0, 0, 0, 0, 4, 4, 4, 4, 8};
  for (int t = 0; t < 9; ++t) EXPECT_EQ(ref_p.ReadSteps(t), expect_paper[t]) << t;

  p.read_offset = 1;
  const NeuralMemory paper1(p, MemoryWeights::Random(p, 1));
  ReferenceMemory<double> ref_p1(paper1);
  const int64_t expect_paper1[] = {0, 0, 0, 4, 4, 4, 4, 8, 8};
  for (int t = 0; t < 9; ++t) EXPECT_EQ(ref_p1.ReadSteps(t), expect_paper1[t]) << t;

  // read = chunk with s = 2, chunk = 4, o = 0: weights after 0, 0, 0, 0, 2, 2, 2, 2, 4 steps.
  p.read_offset = 0;
  p.step = 2;
  const NeuralMemory paper2(p, MemoryWeights::Random(p, 1));
  ReferenceMemory<double> ref_p2(paper2);
  const int64_t expect_paper2[] = {0, 0, 0, 0, 2, 2, 2, 2, 4};
  for (int t = 0; t < 9; ++t) EXPECT_EQ(ref_p2.ReadSteps(t), expect_paper2[t]) << t;
}

// With o = 1 the last token of a block reads the weights that include its own block; with
// o = 0 it reads the block-start weights. This fails if the offset were ignored.
TEST(ReferenceReadRule, OffsetChangesTheLastTokenOfEachBlock) {
  for (ReadRule rule : {ReadRule::kChunk, ReadRule::kStep}) {
    SCOPED_TRACE(Name(rule));
    MemoryConfig c = MemoryConfig::Paper(/*d_model=*/12, /*heads=*/2, /*head_dim=*/6,
                                         /*depth=*/2, /*chunk=*/4);
    c.read = rule;
    c.step = rule == ReadRule::kChunk ? 1 : 4;
    c.output_proj = false;  // H * dh = d: the output is the concatenated heads
    c.Validate();
    const NeuralMemory mem0(c, MemoryWeights::Random(c, 5));
    c.read_offset = 1;
    const NeuralMemory mem1(c, mem0.weights());
    const int d = c.d_model, dh = c.head_dim, n = 12;
    const std::vector<double> x = RandomVector(static_cast<size_t>(n) * d, 51);
    ReferenceMemory<double> ref0(mem0), ref1(mem1);
    std::vector<double> out0, out1;
    ref0.Forward(x, x, out0);
    ref1.Forward(x, x, out1);
    for (int t = 0; t < n; ++t) {
      const bool last = t % 4 == 3;
      const bool same =
          std::equal(out0.begin() + t * d, out0.begin() + (t + 1) * d, out1.begin() + t * d);
      EXPECT_EQ(same, !last) << "t " << t;
      // With o = 1, t = 3 reads the weights after the first block, i.e. after 4 tokens.
      const int64_t steps_read = ref1.ReadSteps(t);
      EXPECT_EQ(steps_read * c.step, 4 * ((t + 1) / 4)) << "t " << t;
      for (int h = 0; h < c.heads; ++h) {
        const std::vector<double> y = reference::MemoryForward(c, ref1.weights_after(steps_read)[h],
                                                               ref1.tokens()[t].q.data() + h * dh);
        for (int j = 0; j < dh; ++j) EXPECT_EQ(out1[t * d + h * dh + j], y[j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The state accessors and a float instantiation.

TEST(ReferenceState, CommitsAndMomentumFollowTheConfig) {
  MemoryConfig c = MemoryConfig::TitansPytorch(/*d_model=*/16, /*heads=*/2, /*head_dim=*/8,
                                               /*chunk_size=*/2, /*batch_size=*/6);
  const NeuralMemory mem(c, MemoryWeights::Random(c, 3));
  ReferenceMemory<double> ref(mem);
  const int d = c.d_model, n = 15;
  const std::vector<double> x = RandomVector(static_cast<size_t>(n) * d, 61);
  std::vector<double> out(static_cast<size_t>(ref.output_width()));
  for (int t = 0; t < n; ++t) {
    ref.Forward(x.data() + t * d, x.data() + t * d, 1, out.data());
    const int64_t pos = t + 1;
    EXPECT_EQ(ref.position(), pos);
    EXPECT_EQ(ref.steps(), pos / 2);
    EXPECT_EQ(ref.base_steps(), (pos / 6) * 3);  // committed every 6 tokens = 3 steps
    EXPECT_EQ(ref.g_cur().size(), static_cast<size_t>(c.heads * c.head_dim));
    EXPECT_EQ(ref.momentum(0).size(), ref.w_cur(0).size());
  }
  // W_base is the weights after the last commit; W_cur moved on.
  EXPECT_EQ(ref.w_base(0), [&] {
    std::vector<double> v;
    for (const auto& h : ref.weights_after(6)) v.insert(v.end(), h.w[0].begin(), h.w[0].end());
    return v;
  }());
  EXPECT_NE(ref.w_cur(0), ref.w_base(0));
  EXPECT_NE(ref.g_cur(), ref.g_base());

  c.momentum = false;
  c.output = MemoryOutput::kPlain;
  const NeuralMemory plain(c, MemoryWeights::Random(c, 3));
  ReferenceMemory<double> ref2(plain);
  EXPECT_TRUE(ref2.momentum(0).empty());
  EXPECT_TRUE(ref2.g_cur().empty());
  EXPECT_TRUE(ref2.g_momentum().empty());
}

TEST(ReferenceState, FloatAgreesWithDouble) {
  const MemoryConfig c = MemoryConfig::Paper(16, 2, 8, 2, 4);
  const NeuralMemory mem(c, MemoryWeights::Random(c, 9));
  const int d = c.d_model, n = 20;
  const std::vector<double> x = RandomVector(static_cast<size_t>(n) * d, 71);
  const std::vector<float> xf(x.begin(), x.end());
  ReferenceMemory<double> rd(mem);
  ReferenceMemory<float> rf(mem);
  std::vector<double> od;
  std::vector<float> of;
  rd.Forward(x, x, od);
  rf.Forward(xf, xf, of);
  double num = 0, den = 0;
  for (size_t i = 0; i < od.size(); ++i) {
    num += (od[i] - of[i]) * (od[i] - of[i]);
    den += od[i] * od[i];
  }
  EXPECT_GT(den, 0);
  EXPECT_LE(std::sqrt(num / den), 1e-5);
}

}  // namespace
}  // namespace titans
