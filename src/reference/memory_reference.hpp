// memory_reference.hpp: a naive reference of the neural long-term memory (header-only, tests).
//
// Written for clarity, not speed: it follows docs/SEMANTICS.md section 1 literally, one token
// at a time, in any floating point type (double for ground truth, float to compare
// rounding). It MATERIALISES all memory parameters after every update step and keeps that
// history, so `weights_after(k)` is the full set of fast weights after k steps (k = 0 is W0).
// Nothing here is shared with the fast path (src/memory/kernels.cpp): the point is to be an
// independent second implementation.
//
// Conventions (the same as the fast path): row vectors, `x W` with W row-major (in, out); the
// per-head slice of a projected row is columns [h*dh, (h+1)*dh); tensors of all heads are
// concatenated head-major: [H, in, out] for MLP layers, [H, dh] for the gain g.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "titans/memory.hpp"
#include "titans/memory_config.hpp"

namespace titans::reference {

// ---------------------------------------------------------------------------------------------
// Scalar helpers.

template <class Scalar>
Scalar Sigmoid(Scalar x) {
  return Scalar(1) / (Scalar(1) + std::exp(-x));
}

// The MLP / q,k,v activation. kGelu is the exact erf form.
template <class Scalar>
Scalar Activate(Activation a, Scalar z) {
  switch (a) {
    case Activation::kNone:
      return z;
    case Activation::kGelu:
      return Scalar(0.5) * z * (Scalar(1) + std::erf(z / std::sqrt(Scalar(2))));
    case Activation::kSilu:
      return z * Sigmoid(z);
  }
  throw std::logic_error("unknown activation");
}

// d act / d z. GELU: Phi(z) + z phi(z). SiLU: s(z) (1 + z (1 - s(z))).
template <class Scalar>
Scalar ActivateDerivative(Activation a, Scalar z) {
  switch (a) {
    case Activation::kNone:
      return Scalar(1);
    case Activation::kGelu: {
      const Scalar pi = Scalar(3.14159265358979323846264338327950288L);
      const Scalar cdf = Scalar(0.5) * (Scalar(1) + std::erf(z / std::sqrt(Scalar(2))));
      const Scalar pdf = std::exp(Scalar(-0.5) * z * z) / std::sqrt(Scalar(2) * pi);
      return cdf + z * pdf;
    }
    case Activation::kSilu: {
      const Scalar s = Sigmoid(z);
      return s * (Scalar(1) + z * (Scalar(1) - s));
    }
  }
  throw std::logic_error("unknown activation");
}

template <class Scalar>
std::vector<Scalar> ToScalar(const std::vector<float>& v) {
  return std::vector<Scalar>(v.begin(), v.end());
}

// ---------------------------------------------------------------------------------------------
// One head's memory parameters: W_1..W_L (layer l is [layer_in(l), layer_out(l)], row-major)
// and, with kLnResidual, the gain g [dh] (empty with kPlain). Also used for gradients and
// momentum, which have the same shapes.

template <class Scalar>
struct HeadParams {
  std::vector<std::vector<Scalar>> w;
  std::vector<Scalar> g;

  static HeadParams Zeros(const MemoryConfig& config) {
    HeadParams p;
    p.w.resize(config.depth);
    for (int l = 0; l < config.depth; ++l) {
      p.w[l].assign(static_cast<size_t>(config.layer_in(l)) * config.layer_out(l), Scalar(0));
    }
    if (config.output == MemoryOutput::kLnResidual) p.g.assign(config.head_dim, Scalar(0));
    return p;
  }

  // this = a * this + b * other (elementwise over every tensor)
  void Combine(Scalar a, Scalar b, const HeadParams& other) {
    for (size_t l = 0; l < w.size(); ++l) {
      for (size_t i = 0; i < w[l].size(); ++i) w[l][i] = a * w[l][i] + b * other.w[l][i];
    }
    for (size_t i = 0; i < g.size(); ++i) g[i] = a * g[i] + b * other.g[i];
  }
};

// Everything the forward pass of M computes, kept for the backward pass.
template <class Scalar>
struct MemoryTrace {
  std::vector<std::vector<Scalar>> a;  // a[l] = input of layer l (a[0] = u), l = 0..L-1
  std::vector<std::vector<Scalar>> z;  // z[l] = a[l] W_{l+1}, l = 0..L-1 (z[L-1] = MLP output)
  std::vector<Scalar> n;               // kLnResidual: LN(z_L)
  Scalar rstd = Scalar(0);             // kLnResidual: (var + eps)^(-1/2)
  std::vector<Scalar> y;               // M(u)
};

// M(u) for one head (docs/SEMANTICS.md 1.1), keeping every intermediate.
template <class Scalar>
MemoryTrace<Scalar> MemoryForwardTrace(const MemoryConfig& config, const HeadParams<Scalar>& p,
                                       const Scalar* u) {
  const int L = config.depth;
  const int dh = config.head_dim;
  MemoryTrace<Scalar> tr;
  tr.a.resize(L);
  tr.z.resize(L);
  tr.a[0].assign(u, u + dh);
  for (int l = 0; l < L; ++l) {
    const int in = config.layer_in(l);
    const int out = config.layer_out(l);
    if (static_cast<int>(tr.a[l].size()) != in) throw std::logic_error("layer width");
    tr.z[l].assign(out, Scalar(0));
    for (int j = 0; j < out; ++j) {
      Scalar acc = Scalar(0);
      for (int i = 0; i < in; ++i) acc += tr.a[l][i] * p.w[l][static_cast<size_t>(i) * out + j];
      tr.z[l][j] = acc;
    }
    if (l + 1 < L) {
      tr.a[l + 1].resize(out);
      for (int j = 0; j < out; ++j) tr.a[l + 1][j] = Activate(config.activation, tr.z[l][j]);
    }
  }
  const std::vector<Scalar>& zL = tr.z[L - 1];
  if (config.output == MemoryOutput::kPlain) {
    tr.y = zL;
    return tr;
  }
  // kLnResidual: LN(z_L) * (1 + g) + u, LN without affine, biased variance.
  Scalar mean = Scalar(0);
  for (int j = 0; j < dh; ++j) mean += zL[j];
  mean /= Scalar(dh);
  Scalar var = Scalar(0);
  for (int j = 0; j < dh; ++j) var += (zL[j] - mean) * (zL[j] - mean);
  var /= Scalar(dh);
  tr.rstd = Scalar(1) / std::sqrt(var + Scalar(config.layer_norm_eps));
  tr.n.resize(dh);
  tr.y.resize(dh);
  for (int j = 0; j < dh; ++j) {
    tr.n[j] = (zL[j] - mean) * tr.rstd;
    tr.y[j] = tr.n[j] * (Scalar(1) + p.g[j]) + u[j];
  }
  return tr;
}

template <class Scalar>
std::vector<Scalar> MemoryForward(const MemoryConfig& config, const HeadParams<Scalar>& p,
                                  const Scalar* u) {
  return MemoryForwardTrace(config, p, u).y;
}

// lambda of docs/SEMANTICS.md 1.3: 1 (kSum) or 1/dh (kMean).
template <class Scalar>
Scalar LossLambda(const MemoryConfig& config) {
  return config.loss == LossScale::kSum ? Scalar(1) : Scalar(1) / Scalar(config.head_dim);
}

// l = lambda * theta * ||M(k) - v||^2 for one token and head.
template <class Scalar>
Scalar Loss(const MemoryConfig& config, const HeadParams<Scalar>& p, const Scalar* k,
            const Scalar* v, Scalar theta, Scalar lambda) {
  const std::vector<Scalar> y = MemoryForward(config, p, k);
  Scalar sq = Scalar(0);
  for (int j = 0; j < config.head_dim; ++j) sq += (y[j] - v[j]) * (y[j] - v[j]);
  return lambda * theta * sq;
}

// d Loss / d (W_1..W_L, g), by hand (docs/SEMANTICS.md 1.3):
//   e = 2 lambda theta (y - v)                         (dL/dy)
//   plain:       dz_L = e
//   ln_residual: dg = e * n;  gn = e * (1 + g);
//                dz_L = rstd (gn - mean(gn) - n mean(gn * n))
//   dW_l = a_{l-1}^T dz_l;  da_{l-1} = dz_l W_l^T;  dz_{l-1} = da_{l-1} * act'(z_{l-1})
// (the residual + u does not depend on the parameters).
template <class Scalar>
HeadParams<Scalar> Gradient(const MemoryConfig& config, const HeadParams<Scalar>& p,
                            const Scalar* k, const Scalar* v, Scalar theta, Scalar lambda) {
  const int L = config.depth;
  const int dh = config.head_dim;
  const MemoryTrace<Scalar> tr = MemoryForwardTrace(config, p, k);
  HeadParams<Scalar> grad = HeadParams<Scalar>::Zeros(config);

  std::vector<Scalar> e(dh);
  for (int j = 0; j < dh; ++j) e[j] = Scalar(2) * lambda * theta * (tr.y[j] - v[j]);

  std::vector<Scalar> dz(dh);
  if (config.output == MemoryOutput::kPlain) {
    dz = e;
  } else {
    std::vector<Scalar> gn(dh);
    Scalar mean_gn = Scalar(0), mean_gnn = Scalar(0);
    for (int j = 0; j < dh; ++j) {
      grad.g[j] = e[j] * tr.n[j];
      gn[j] = e[j] * (Scalar(1) + p.g[j]);
      mean_gn += gn[j];
      mean_gnn += gn[j] * tr.n[j];
    }
    mean_gn /= Scalar(dh);
    mean_gnn /= Scalar(dh);
    for (int j = 0; j < dh; ++j) dz[j] = tr.rstd * (gn[j] - mean_gn - tr.n[j] * mean_gnn);
  }

  for (int l = L - 1; l >= 0; --l) {
    const int in = config.layer_in(l);
    const int out = config.layer_out(l);
    for (int i = 0; i < in; ++i) {
      for (int j = 0; j < out; ++j) {
        grad.w[l][static_cast<size_t>(i) * out + j] = tr.a[l][i] * dz[j];
      }
    }
    if (l == 0) break;
    std::vector<Scalar> dz_prev(in);
    for (int i = 0; i < in; ++i) {
      Scalar da = Scalar(0);
      for (int j = 0; j < out; ++j) da += dz[j] * p.w[l][static_cast<size_t>(i) * out + j];
      dz_prev[i] = da * ActivateDerivative(config.activation, tr.z[l - 1][i]);
    }
    dz = std::move(dz_prev);
  }
  return grad;
}

// titans-pytorch's newtonschulz5 on one [rows, cols] row-major matrix, literally: transpose when
// rows > cols, X = m / max(|m|_F, 1e-7), five times A = X X^T, B = b A + c A A, X = a X + B X,
// transpose back.
template <class Scalar>
std::vector<Scalar> NewtonSchulz(const std::vector<Scalar>& m, int rows, int cols) {
  const Scalar a = Scalar(3.4445), b = Scalar(-4.7750), c = Scalar(2.0315);
  const bool tall = rows > cols;
  const int r = tall ? cols : rows, n = tall ? rows : cols;
  std::vector<Scalar> x(static_cast<size_t>(r) * n);
  Scalar norm = Scalar(0);
  for (int i = 0; i < r; ++i) {
    for (int j = 0; j < n; ++j) {
      const Scalar v =
          tall ? m[static_cast<size_t>(j) * cols + i] : m[static_cast<size_t>(i) * cols + j];
      x[static_cast<size_t>(i) * n + j] = v;
      norm += v * v;
    }
  }
  norm = std::max(std::sqrt(norm), Scalar(1e-7));
  for (Scalar& v : x) v /= norm;
  for (int iter = 0; iter < 5; ++iter) {
    std::vector<Scalar> A(static_cast<size_t>(r) * r, Scalar(0)), B(A.size(), Scalar(0));
    for (int i = 0; i < r; ++i) {
      for (int k = 0; k < r; ++k) {
        for (int j = 0; j < n; ++j) {
          A[static_cast<size_t>(i) * r + k] +=
              x[static_cast<size_t>(i) * n + j] * x[static_cast<size_t>(k) * n + j];
        }
      }
    }
    for (int i = 0; i < r; ++i) {
      for (int k = 0; k < r; ++k) {
        Scalar aa = Scalar(0);
        for (int j = 0; j < r; ++j)
          aa += A[static_cast<size_t>(i) * r + j] * A[static_cast<size_t>(j) * r + k];
        B[static_cast<size_t>(i) * r + k] = b * A[static_cast<size_t>(i) * r + k] + c * aa;
      }
    }
    std::vector<Scalar> next(x.size());
    for (int i = 0; i < r; ++i) {
      for (int j = 0; j < n; ++j) {
        Scalar bx = Scalar(0);
        for (int k = 0; k < r; ++k)
          bx += B[static_cast<size_t>(i) * r + k] * x[static_cast<size_t>(k) * n + j];
        next[static_cast<size_t>(i) * n + j] = a * x[static_cast<size_t>(i) * n + j] + bx;
      }
    }
    x = std::move(next);
  }
  std::vector<Scalar> out(m.size());
  for (int i = 0; i < r; ++i) {
    for (int j = 0; j < n; ++j) {
      (tall ? out[static_cast<size_t>(j) * cols + i] : out[static_cast<size_t>(i) * cols + j]) =
          x[static_cast<size_t>(i) * n + j];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The learned weights, converted to Scalar (same names and layouts as titans::MemoryWeights).

template <class Scalar>
struct ReferenceWeights {
  std::vector<Scalar> store_norm, retrieve_norm, w_q, w_k, w_v, conv_q, conv_k, conv_v;
  std::vector<Scalar> q_norm, k_norm, w_theta, w_eta, w_alpha, b_theta, b_eta, b_alpha;
  std::vector<Scalar> gain, w_gate, w_out;
  std::vector<Scalar> w_mod, b_mod, post_norm, transition_gate, w_pool, b_pool;
  std::vector<HeadParams<Scalar>> w0;  // per head: the initial memory parameters

  ReferenceWeights() = default;
  ReferenceWeights(const MemoryConfig& c, const MemoryWeights& w)
      : store_norm(ToScalar<Scalar>(w.store_norm)),
        retrieve_norm(ToScalar<Scalar>(w.retrieve_norm)),
        w_q(ToScalar<Scalar>(w.w_q)),
        w_k(ToScalar<Scalar>(w.w_k)),
        w_v(ToScalar<Scalar>(w.w_v)),
        conv_q(ToScalar<Scalar>(w.conv_q)),
        conv_k(ToScalar<Scalar>(w.conv_k)),
        conv_v(ToScalar<Scalar>(w.conv_v)),
        q_norm(ToScalar<Scalar>(w.q_norm)),
        k_norm(ToScalar<Scalar>(w.k_norm)),
        w_theta(ToScalar<Scalar>(w.w_theta)),
        w_eta(ToScalar<Scalar>(w.w_eta)),
        w_alpha(ToScalar<Scalar>(w.w_alpha)),
        b_theta(ToScalar<Scalar>(w.b_theta)),
        b_eta(ToScalar<Scalar>(w.b_eta)),
        b_alpha(ToScalar<Scalar>(w.b_alpha)),
        gain(ToScalar<Scalar>(w.gain)),
        w_gate(ToScalar<Scalar>(w.w_gate)),
        w_out(ToScalar<Scalar>(w.w_out)),
        w_mod(ToScalar<Scalar>(w.w_mod)),
        b_mod(ToScalar<Scalar>(w.b_mod)),
        post_norm(ToScalar<Scalar>(w.post_norm)),
        transition_gate(ToScalar<Scalar>(w.transition_gate)),
        w_pool(ToScalar<Scalar>(w.w_pool)),
        b_pool(ToScalar<Scalar>(w.b_pool)) {
    if (c.model != MemoryModel::kMlp) {
      throw std::invalid_argument("the reference computes the MLP memory model only");
    }
    const int H = c.heads;
    w0.resize(H);
    for (int h = 0; h < H; ++h) {
      HeadParams<Scalar>& p = w0[h];
      p = HeadParams<Scalar>::Zeros(c);
      for (int l = 0; l < c.depth; ++l) {
        const size_t n = p.w[l].size();
        if (w.mlp.at(l).size() != n * H) throw std::invalid_argument("mlp weight size");
        for (size_t i = 0; i < n; ++i) p.w[l][i] = Scalar(w.mlp[l][h * n + i]);
      }
      if (c.output == MemoryOutput::kLnResidual) {
        if (w.gain.size() != static_cast<size_t>(H) * c.head_dim) {
          throw std::invalid_argument("gain size");
        }
        for (int j = 0; j < c.head_dim; ++j) p.g[j] = Scalar(w.gain[h * c.head_dim + j]);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// The streaming reference.

template <class Scalar>
class ReferenceMemory {
 public:
  using Params = std::vector<HeadParams<Scalar>>;  // all heads

  // Everything computed for one token, kept for tests and debugging.
  struct TokenTrace {
    std::vector<Scalar> xn, rn;               // normalised store / retrieve inputs [d]
    std::vector<Scalar> q_raw, k_raw, v_raw;  // projections before the convolution [H*dh]
    std::vector<Scalar> q, k, v;              // final queries, keys, values [H*dh]
    std::vector<Scalar> theta;                // [H]
    int64_t read_steps = 0;                   // index into weights_after() read by the token
  };
  // Gates of one update step.
  struct StepTrace {
    std::vector<Scalar> c;  // the step's normalised store inputs pooled (mean or attention) [d]
    std::vector<Scalar> eta, alpha;  // [H] (eta empty without momentum)
  };

  explicit ReferenceMemory(const NeuralMemory& memory)
      : config_(memory.config()), weights_(config_, memory.weights()) {
    Reset();
  }
  ReferenceMemory(const MemoryConfig& config, const MemoryWeights& weights)
      : config_(config), weights_(config_, weights) {
    Reset();
  }

  void Reset() {
    history_.assign(1, weights_.w0);
    base_steps_ = 0;
    momentum_.assign(config_.heads, HeadParams<Scalar>::Zeros(config_));
    tokens_.clear();
    steps_.clear();
  }

  const MemoryConfig& config() const { return config_; }
  const ReferenceWeights<Scalar>& weights() const { return weights_; }
  int output_width() const { return config_.output_proj ? config_.d_model : config_.inner_dim(); }

  // store, retrieve [n, d]; out [n, output_width()]. State carries across calls.
  // `values` [n, d] (or null: the store input) is the store input's value view, the source of
  // the values alone (titans-pytorch qkv_receives_diff_views).
  void Forward(const Scalar* store, const Scalar* retrieve, int n, Scalar* out,
               const Scalar* values = nullptr) {
    const int d = config_.d_model;
    const int ow = output_width();
    for (int i = 0; i < n; ++i) {
      const size_t row = static_cast<size_t>(i) * d;
      Token(store + row, (values != nullptr ? values : store) + row, retrieve + row,
            out + static_cast<size_t>(i) * ow);
    }
  }
  void Forward(const std::vector<Scalar>& store, const std::vector<Scalar>& retrieve,
               std::vector<Scalar>& out) {
    const int n = static_cast<int>(store.size() / config_.d_model);
    if (store.size() != retrieve.size() || store.size() % config_.d_model != 0) {
      throw std::invalid_argument("ReferenceMemory::Forward: size mismatch");
    }
    out.assign(static_cast<size_t>(n) * output_width(), Scalar(0));
    Forward(store.data(), retrieve.data(), n, out.data());
  }

  // --- State, in the layout of titans::MemoryState ------------------------------------------
  int64_t position() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t steps() const { return static_cast<int64_t>(history_.size()) - 1; }
  int64_t base_steps() const { return base_steps_; }  // W_base = weights_after(base_steps())
  const Params& weights_after(int64_t k) const { return history_.at(static_cast<size_t>(k)); }
  const Params& current() const { return history_.back(); }
  const Params& base() const { return history_.at(static_cast<size_t>(base_steps_)); }
  const Params& momentum_params() const { return momentum_; }

  // [H, in, out] of layer l / [H, dh]; w_cur = after the last complete step.
  std::vector<Scalar> w_cur(int l) const { return FlattenLayer(current(), l); }
  std::vector<Scalar> w_base(int l) const { return FlattenLayer(base(), l); }
  std::vector<Scalar> momentum(int l) const {
    return config_.momentum ? FlattenLayer(momentum_, l) : std::vector<Scalar>();
  }
  std::vector<Scalar> g_cur() const { return FlattenGain(current()); }
  std::vector<Scalar> g_base() const { return FlattenGain(base()); }
  std::vector<Scalar> g_momentum() const {
    return config_.momentum ? FlattenGain(momentum_) : std::vector<Scalar>();
  }

  const std::vector<TokenTrace>& tokens() const { return tokens_; }
  const std::vector<StepTrace>& step_trace() const { return steps_; }

  // docs/SEMANTICS.md 1.4: the number of steps whose weights token t reads.
  int64_t ReadSteps(int64_t t) const { return ReadStepsOf(config_, t); }
  static int64_t ReadStepsOf(const MemoryConfig& config, int64_t t) {
    const int64_t o = config.read_offset;
    const int64_t s = config.step;
    if (config.read == ReadRule::kChunk) {
      const int64_t b = config.chunk;
      if (b <= 0) throw std::logic_error("read = chunk needs chunk > 0");
      return (b * ((t + o) / b)) / s;
    }
    return (t + o) / s;
  }

 private:
  static std::vector<Scalar> FlattenLayer(const Params& p, int l) {
    std::vector<Scalar> out;
    for (const HeadParams<Scalar>& h : p) out.insert(out.end(), h.w[l].begin(), h.w[l].end());
    return out;
  }
  static std::vector<Scalar> FlattenGain(const Params& p) {
    std::vector<Scalar> out;
    for (const HeadParams<Scalar>& h : p) out.insert(out.end(), h.g.begin(), h.g.end());
    return out;
  }

  // x / sqrt(mean(x^2) + eps) * gain (gain may be null: no affine).
  static std::vector<Scalar> RmsNorm(const Scalar* x, int n, Scalar eps, const Scalar* gain) {
    Scalar ms = Scalar(0);
    for (int i = 0; i < n; ++i) ms += x[i] * x[i];
    ms /= Scalar(n);
    const Scalar inv = Scalar(1) / std::sqrt(ms + eps);
    std::vector<Scalar> y(n);
    for (int i = 0; i < n; ++i) y[i] = x[i] * inv * (gain ? gain[i] : Scalar(1));
    return y;
  }

  // y = x W, x [rows], W [rows, cols] row-major.
  static std::vector<Scalar> VecMat(const std::vector<Scalar>& x, const std::vector<Scalar>& w,
                                    int cols) {
    const int rows = static_cast<int>(x.size());
    if (w.size() != static_cast<size_t>(rows) * cols) throw std::logic_error("VecMat shape");
    std::vector<Scalar> y(cols, Scalar(0));
    for (int j = 0; j < cols; ++j) {
      Scalar acc = Scalar(0);
      for (int i = 0; i < rows; ++i) acc += x[i] * w[static_cast<size_t>(i) * cols + j];
      y[j] = acc;
    }
    return y;
  }

  // x . w[:, h] with w [d, H] row-major.
  Scalar DotColumn(const std::vector<Scalar>& x, const std::vector<Scalar>& w, int h) const {
    const int H = config_.heads;
    Scalar acc = Scalar(0);
    for (size_t i = 0; i < x.size(); ++i) acc += x[i] * w[i * H + h];
    return acc;
  }

  // Causal depthwise convolution of channel row t of `which` (q_raw, k_raw or v_raw):
  // out_t[c] = sum_j conv[j][c] * in_{t-K+1+j}[c], inputs before position 0 are zero.
  std::vector<Scalar> Convolve(std::vector<Scalar> TokenTrace::*which,
                               const std::vector<Scalar>& conv) const {
    const int K = config_.conv_kernel;
    const int C = config_.inner_dim();
    const int64_t t = static_cast<int64_t>(tokens_.size()) - 1;
    std::vector<Scalar> y(C, Scalar(0));
    for (int j = 0; j < K; ++j) {
      const int64_t src = t - K + 1 + j;
      if (src < 0) continue;
      const std::vector<Scalar>& in = tokens_[static_cast<size_t>(src)].*which;
      for (int c = 0; c < C; ++c) y[c] += conv[static_cast<size_t>(j) * C + c] * in[c];
    }
    return y;
  }

  // Per-head normalisation of q or k (docs/SEMANTICS.md 1.2 step 5).
  void QkNormalise(std::vector<Scalar>& x, const std::vector<Scalar>& gain) const {
    const int dh = config_.head_dim;
    for (int h = 0; h < config_.heads; ++h) {
      Scalar* xh = x.data() + static_cast<size_t>(h) * dh;
      if (config_.qk_norm == QkNorm::kL2) {
        Scalar sq = Scalar(0);
        for (int j = 0; j < dh; ++j) sq += xh[j] * xh[j];
        const Scalar norm = std::max(std::sqrt(sq), Scalar(1e-12));
        for (int j = 0; j < dh; ++j) xh[j] /= norm;
      } else if (config_.qk_norm == QkNorm::kRms) {
        const std::vector<Scalar> y =
            RmsNorm(xh, dh, Scalar(config_.rms_eps), gain.data() + static_cast<size_t>(h) * dh);
        for (int j = 0; j < dh; ++j) xh[j] = y[j];
      }
    }
  }

  // One token: compute q, k, v, theta; write (complete the step if it is full); read.
  void Token(const Scalar* x, const Scalar* x_values, const Scalar* r, Scalar* out) {
    const MemoryConfig& c = config_;
    const int d = c.d_model;
    const int H = c.heads;
    const int dh = c.head_dim;
    const int HD = c.inner_dim();
    const ReferenceWeights<Scalar>& w = weights_;
    const Scalar eps = Scalar(c.rms_eps);

    tokens_.emplace_back();
    {
      TokenTrace& tk = tokens_.back();
      tk.xn =
          c.store_norm ? RmsNorm(x, d, eps, w.store_norm.data()) : std::vector<Scalar>(x, x + d);
      tk.rn = c.retrieve_norm ? RmsNorm(r, d, eps, w.retrieve_norm.data())
                              : std::vector<Scalar>(r, r + d);
      tk.q_raw = VecMat(tk.rn, w.w_q, HD);
      tk.k_raw = VecMat(tk.xn, w.w_k, HD);
      // The value view goes through the same store norm.
      const std::vector<Scalar> xv = c.store_norm ? RmsNorm(x_values, d, eps, w.store_norm.data())
                                                  : std::vector<Scalar>(x_values, x_values + d);
      tk.v_raw = VecMat(xv, w.w_v, HD);
    }
    std::vector<Scalar> q, k, v;
    if (c.conv_kernel > 0) {
      q = Convolve(&TokenTrace::q_raw, w.conv_q);
      k = Convolve(&TokenTrace::k_raw, w.conv_k);
      v = Convolve(&TokenTrace::v_raw, w.conv_v);
    } else {
      q = tokens_.back().q_raw;
      k = tokens_.back().k_raw;
      v = tokens_.back().v_raw;
    }
    for (int i = 0; i < HD; ++i) {
      q[i] = Activate(c.qkv_activation, q[i]);
      k[i] = Activate(c.qkv_activation, k[i]);
      v[i] = Activate(c.qkv_activation, v[i]);
    }
    QkNormalise(q, w.q_norm);
    QkNormalise(k, w.k_norm);

    TokenTrace& tk = tokens_.back();
    tk.q = std::move(q);
    tk.k = std::move(k);
    tk.v = std::move(v);
    tk.theta.resize(H);
    for (int h = 0; h < H; ++h) {
      tk.theta[h] = Scalar(c.max_lr) * Sigmoid(DotColumn(tk.xn, w.w_theta, h) + w.b_theta[h]);
    }

    // Write before read: complete the step if this token fills it.
    const int64_t t = position() - 1;
    if ((t + 1) % c.step == 0) WriteStep(t + 1 - c.step);

    // Read (docs/SEMANTICS.md 1.4).
    const int64_t k_read = ReadSteps(t);
    if (k_read > steps()) throw std::logic_error("read rule reads weights not yet written");
    tk.read_steps = k_read;
    const Params& wr = weights_after(k_read);
    std::vector<Scalar> y(HD);
    for (int h = 0; h < H; ++h) {
      std::vector<Scalar> yh = MemoryForward(c, wr[h], tk.q.data() + static_cast<size_t>(h) * dh);
      if (c.post_norm) {
        yh = RmsNorm(yh.data(), dh, eps, w.post_norm.data() + static_cast<size_t>(h) * dh);
      }
      const Scalar gate = c.output_gate ? Sigmoid(DotColumn(tk.rn, w.w_gate, h)) : Scalar(1);
      for (int j = 0; j < dh; ++j) y[static_cast<size_t>(h) * dh + j] = yh[j] * gate;
    }
    if (c.output_proj) {
      const std::vector<Scalar> o = VecMat(y, w.w_out, d);
      for (int i = 0; i < d; ++i) out[i] = o[i];
    } else {
      for (int i = 0; i < HD; ++i) out[i] = y[i];
    }
  }

  // docs/SEMANTICS.md 1.3 for the step made of tokens [first, first + s).
  void WriteStep(int64_t first) {
    const MemoryConfig& c = config_;
    const int d = c.d_model;
    const int H = c.heads;
    const int dh = c.head_dim;
    const int s = c.step;
    const ReferenceWeights<Scalar>& w = weights_;
    const Scalar lambda = LossLambda<Scalar>(c);

    StepTrace st;
    st.c.assign(d, Scalar(0));
    for (int64_t t = first; t < first + s; ++t) {
      for (int i = 0; i < d; ++i) st.c[i] += tokens_[static_cast<size_t>(t)].xn[i];
    }
    for (int i = 0; i < d; ++i) st.c[i] /= Scalar(s);
    if (c.attention_pool) {
      // c[f] = sum_t softmax_t(xn_t W_pool + b_pool)[f] xn_t[f]: a softmax over the step's
      // tokens per feature.
      for (int f = 0; f < d; ++f) {
        std::vector<Scalar> logit(static_cast<size_t>(s));
        for (int64_t t = first; t < first + s; ++t) {
          const std::vector<Scalar>& xn = tokens_[static_cast<size_t>(t)].xn;
          Scalar acc = w.b_pool[static_cast<size_t>(f)];
          for (int i = 0; i < d; ++i) acc += xn[i] * w.w_pool[static_cast<size_t>(i) * d + f];
          logit[static_cast<size_t>(t - first)] = acc;
        }
        const Scalar top = *std::max_element(logit.begin(), logit.end());
        Scalar num = Scalar(0), den = Scalar(0);
        for (int64_t t = first; t < first + s; ++t) {
          const Scalar e = std::exp(logit[static_cast<size_t>(t - first)] - top);
          den += e;
          num += e * tokens_[static_cast<size_t>(t)].xn[f];
        }
        st.c[f] = num / den;
      }
    }
    st.alpha.resize(H);
    if (c.momentum) st.eta.resize(H);

    const Params base = this->base();  // copy: history_ grows below
    Params next = current();
    for (int h = 0; h < H; ++h) {
      st.alpha[h] = Sigmoid(DotColumn(st.c, w.w_alpha, h) + w.b_alpha[h]);
      // Surprise u = - sum over the step's tokens of grad l_t(W_base).
      HeadParams<Scalar> u = HeadParams<Scalar>::Zeros(c);
      for (int64_t t = first; t < first + s; ++t) {
        const TokenTrace& tk = tokens_[static_cast<size_t>(t)];
        const HeadParams<Scalar> g =
            Gradient(c, base[h], tk.k.data() + static_cast<size_t>(h) * dh,
                     tk.v.data() + static_cast<size_t>(h) * dh, tk.theta[h], lambda);
        u.Combine(Scalar(1), Scalar(-1), g);
      }
      // titans-pytorch's options, per parameter tensor of the head (max_grad_norm, lr_modulation).
      ScaleTensors(u, h, st.c);
      // Momentum S_j = eta_j S_{j-1} + u_j (or S_j = u_j).
      if (c.momentum) {
        st.eta[h] = Sigmoid(DotColumn(st.c, w.w_eta, h) + w.b_eta[h]);
        momentum_[h].Combine(st.eta[h], Scalar(1), u);
      } else {
        momentum_[h] = u;
      }
      // Forgetting W_j = (1 - alpha_j) W_{j-1} + S_j, with S_j's matrices orthogonalised
      // (spectral_norm; the momentum keeps S_j itself).
      HeadParams<Scalar> update = momentum_[h];
      for (int l = 0; l < c.depth && c.spectral_norm; ++l) {
        update.w[l] = NewtonSchulz(update.w[l], c.layer_in(l), c.layer_out(l));
      }
      next[h].Combine(Scalar(1) - st.alpha[h], Scalar(1), update);
    }
    // Commit after every `chunk` tokens; with the transition gate W = W_base + s (W - W_base).
    const int64_t done = first + s;
    const bool commit = c.chunk > 0 && done % c.chunk == 0;
    if (commit && c.transition_gate) {
      const Scalar gate = Sigmoid(w.transition_gate[0]);
      for (int h = 0; h < H; ++h) {
        next[h].Combine(gate, Scalar(1) - gate, base[h]);
      }
    }
    history_.push_back(std::move(next));
    steps_.push_back(std::move(st));
    if (commit) base_steps_ = steps();
  }

  // u (one head's surprise, all tensors) *= s(|u_p|)/|u_p| (max_grad_norm) and the modulation
  // max * sigmoid(c W_mod[:, h P + p] + b_mod) (lr_modulation), per tensor p in titans-pytorch's
  // order (the gain first with kLnResidual). A zero tensor stays zero (the engine's choice where
  // titans-pytorch divides 0 by 0).
  void ScaleTensors(HeadParams<Scalar>& u, int h, const std::vector<Scalar>& chunk_mean) const {
    const MemoryConfig& c = config_;
    const int P = c.parameter_tensors();
    auto scale_tensor = [&](std::vector<Scalar>& tensor, int p) {
      Scalar factor = Scalar(1);
      if (c.max_grad_norm > 0) {
        Scalar sq = Scalar(0);
        for (Scalar v : tensor) sq += v * v;
        const Scalar norm = std::sqrt(sq), m = Scalar(c.max_grad_norm);
        factor = norm > 0 ? (m / 2 * std::tanh(2 * norm / m) + m / 2) / norm : Scalar(0);
      }
      if (c.lr_modulation) {
        Scalar logit = weights_.b_mod[static_cast<size_t>(h) * P + p];
        for (size_t i = 0; i < chunk_mean.size(); ++i) {
          logit += chunk_mean[i] * weights_.w_mod[i * P * c.heads + static_cast<size_t>(h) * P + p];
        }
        factor *= Scalar(c.max_layer_modulation) * Sigmoid(logit);
      }
      for (Scalar& v : tensor) v *= factor;
    };
    for (int l = 0; l < c.depth; ++l) scale_tensor(u.w[l], c.parameter_index_of_layer(l));
    if (c.output == MemoryOutput::kLnResidual) scale_tensor(u.g, MemoryConfig::kGainParameterIndex);
  }

  MemoryConfig config_;
  ReferenceWeights<Scalar> weights_;
  std::vector<Params> history_;  // history_[k] = all heads' parameters after k steps
  int64_t base_steps_ = 0;
  Params momentum_;  // S of the last step (zero before the first)
  std::vector<TokenTrace> tokens_;
  std::vector<StepTrace> steps_;
};

}  // namespace titans::reference
