// The memory models other than the MLP (MemoryConfig::model, docs/TITANS_PYTORCH.md "Memory
// models"): titans-pytorch's MemorySwiGluMLP and GatedResidualMemoryMLP, one head at a time,
// forward (reads and the write's gradient point) and backward (the write's per-tensor gradient
// factors). Rows are tokens; with act = MemoryConfig::activation (GELU in titans-pytorch):
//
//   kSwiGlu         per block j:  [a | g] = x W1_j,  x <- x + (a * act(g)) W2_j
//                   out = LN(x) * (1 + gamma)            (LayerNorm without affine; gamma a fast
//                                                         weight, model tensor 2L)
//   kGatedResidual  per block j:  b = act(x W1_j) W2_j,  s = sigmoid([b | x] Wg_j),
//                                 x <- x + s * (b - x)   (torch's lerp)
//                   out = x W_final
//
// The gradient of matrix tensor i over a unit's rows is Left(i)^T Right(i): Left is an input
// the forward pass kept (a block input, an activation, [b | x]), Right the error at that
// matrix's output, written by Backward. The gain gamma's gradient is the column sum of its
// Right rows. Callers split rows between threads: every function touches only the rows it is
// given, so threads never share a row.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <unsupported/Eigen/SpecialFunctions>  // vectorised float erf for the exact GELU
#include <vector>

#include "ops/activations.hpp"
#include "ops/linalg.hpp"
#include "titans/memory_config.hpp"

namespace titans::memory_models {

using linalg::ConstMatMap;
using linalg::Index;
using linalg::MatMap;

// What a forward pass keeps for the backward pass, for `capacity` rows (shapes with L = depth,
// dm = hidden_dim(), dg = swiglu_inner()).
struct Trace {
  std::vector<RowMatrix> x;     // L + 1: block inputs [capacity, dh]; x[L] the last block's out
  std::vector<RowMatrix> pre;   // L: x W1, [capacity, 2 dg] (SwiGLU) or [capacity, dm] (gated)
  std::vector<RowMatrix> act;   // L: a * act(g) [capacity, dg] (SwiGLU) or act(pre) [., dm]
  std::vector<RowMatrix> gact;  // SwiGLU, L: act(g) [capacity, dg]
  std::vector<RowMatrix> cat;   // gated, L: [b | x] [capacity, 2 dh]
  std::vector<RowMatrix> gate;  // gated, L: sigmoid([b | x] Wg) [capacity, dh]
  RowMatrix normed;             // SwiGLU: LN(x[L]) [capacity, dh]
  Eigen::VectorXf rstd;         // SwiGLU: 1 / sqrt(var + eps) of each row of x[L]
  RowMatrix delta, delta_wide;  // backward: dL/dx [capacity, dh]; gated dL/d[b | x] [., 2 dh]

  Trace() = default;
  Trace(const MemoryConfig& c, Index capacity) {
    const Index dh = c.head_dim, depth = c.depth;
    const bool swiglu = c.model == MemoryModel::kSwiGlu;
    const Index width = swiglu ? 2 * c.swiglu_inner() : c.hidden_dim();
    const Index act_width = swiglu ? c.swiglu_inner() : c.hidden_dim();
    for (Index j = 0; j <= depth; ++j) x.emplace_back(RowMatrix::Zero(capacity, dh));
    for (Index j = 0; j < depth; ++j) {
      pre.emplace_back(RowMatrix::Zero(capacity, width));
      act.emplace_back(RowMatrix::Zero(capacity, act_width));
      if (swiglu) {
        gact.emplace_back(RowMatrix::Zero(capacity, act_width));
      } else {
        cat.emplace_back(RowMatrix::Zero(capacity, 2 * dh));
        gate.emplace_back(RowMatrix::Zero(capacity, dh));
      }
    }
    if (swiglu) {
      normed.setZero(capacity, dh);
      rstd.setZero(capacity);
    }
    delta.setZero(capacity, dh);
    if (!swiglu) delta_wide.setZero(capacity, 2 * dh);
  }

  // The kept input whose transpose left-multiplies matrix tensor i's gradient, rows [row, +n).
  auto Left(const MemoryConfig& c, int i, Index row, Index n) const {
    const int per_block = c.model == MemoryModel::kSwiGlu ? 2 : 3;
    const int block = i / per_block, which = i % per_block;
    const RowMatrix& m = block == c.depth ? x[block]
                         : which == 0     ? x[block]
                         : which == 1     ? act[block]
                                          : cat[block];
    return m.middleRows(row, n);
  }
};

// act(z) in place, and delta *= act'(z): the memory's activations (kernels.cpp uses the same).
template <class Block>
void Activate(Activation act, Block&& z) {
  switch (act) {
    case Activation::kGelu:
      z = (0.5f * z.array() * (1.0f + (z.array() * float(M_SQRT1_2)).erf())).matrix();
      break;
    case Activation::kSilu:
      z = ops::Silu(z.array()).matrix();
      break;
    case Activation::kNone:
      break;
  }
}

template <class Delta, class Z>
void MultiplyByDerivative(Activation act, Delta&& delta, const Z& z) {
  switch (act) {
    case Activation::kGelu: {  // Phi(z) + z phi(z)
      const float inv_sqrt_2pi = 0.3989422804014327f;
      delta.array() *= 0.5f * (1.0f + (z.array() * float(M_SQRT1_2)).erf()) +
                       z.array() * inv_sqrt_2pi * (-0.5f * z.array().square()).exp();
      break;
    }
    case Activation::kSilu: {  // s (1 + z (1 - s)), s = sigmoid(z)
      const auto s = ops::Sigmoid(z.array());
      delta.array() *= s * (1.0f + z.array() * (1.0f - s));
      break;
    }
    case Activation::kNone:
      break;
  }
}

// Rows [row, row + n) of the trace: input [n, dh] -> out [n, dh]. tensor(i) is model tensor i of
// this head as a [tensor_rows(i), tensor_cols(i)] map.
template <class Tensor, class Input, class Out>
void Forward(const MemoryConfig& c, Tensor&& tensor, const Input& input, Trace& tr, Index row,
             Index n, Out&& out) {
  const Index dh = c.head_dim;
  tr.x[0].middleRows(row, n) = input;
  for (int j = 0; j < c.depth; ++j) {
    const auto x = tr.x[j].middleRows(row, n);
    auto next = tr.x[j + 1].middleRows(row, n);
    auto pre = tr.pre[j].middleRows(row, n);
    auto act = tr.act[j].middleRows(row, n);
    if (c.model == MemoryModel::kSwiGlu) {
      const Index dg = c.swiglu_inner();
      linalg::Multiply(pre, x, tensor(2 * j));
      auto gact = tr.gact[j].middleRows(row, n);
      gact = pre.rightCols(dg);
      Activate(c.activation, gact);
      act = pre.leftCols(dg).cwiseProduct(gact);
      next = x;
      linalg::Multiply(next, act, tensor(2 * j + 1), /*accumulate=*/true);
    } else {
      linalg::Multiply(pre, x, tensor(3 * j));
      act = pre;
      Activate(c.activation, act);
      auto cat = tr.cat[j].middleRows(row, n);
      auto b = cat.leftCols(dh);
      linalg::Multiply(b, act, tensor(3 * j + 1));
      cat.rightCols(dh) = x;
      auto gate = tr.gate[j].middleRows(row, n);
      linalg::Multiply(gate, cat, tensor(3 * j + 2));
      gate = ops::Sigmoid(gate.array()).matrix();
      next = x + gate.cwiseProduct(b - x);
    }
  }
  const auto last = tr.x[c.depth].middleRows(row, n);
  if (c.model == MemoryModel::kSwiGlu) {
    const auto gain = tensor(2 * c.depth).row(0);
    for (Index t = 0; t < n; ++t) {
      const float mean = last.row(t).mean();
      const float var = (last.row(t).array() - mean).square().mean();
      const float rstd = 1.0f / std::sqrt(var + c.layer_norm_eps);
      tr.rstd[row + t] = rstd;
      auto normed = tr.normed.row(row + t);
      normed = ((last.row(t).array() - mean) * rstd).matrix();
      out.row(t) = (normed.array() * (1.0f + gain.array())).matrix();
    }
  } else {
    linalg::Multiply(out, last, tensor(3 * c.depth));
  }
}

// Rows [row, row + n) after Forward: delta_out [n, dh] = dL/d out. Writes right(i) [n, cols(i)],
// the rows of Right(i) (for the SwiGLU gain its per-row gradients), for every model tensor i.
template <class Tensor, class Right, class DeltaOut>
void Backward(const MemoryConfig& c, Tensor&& tensor, Trace& tr, Index row, Index n,
              const DeltaOut& delta_out, Right&& right) {
  const Index dh = c.head_dim;
  auto delta = tr.delta.middleRows(row, n);  // dL/dx of the current block's output
  if (c.model == MemoryModel::kSwiGlu) {
    // out = n (1 + gamma), n = LN(x): dL/dgamma = e n per row; dL/dx = rstd (dn - mean(dn) -
    // n mean(dn n)) with dn = e (1 + gamma).
    const auto gain = tensor(2 * c.depth).row(0);
    auto dgain = right(2 * c.depth);
    for (Index t = 0; t < n; ++t) {
      const auto normed = tr.normed.row(row + t);
      dgain.row(t) = delta_out.row(t).cwiseProduct(normed);
      auto dx = delta.row(t);  // holds dn first, then dL/dx in place
      dx = (delta_out.row(t).array() * (1.0f + gain.array())).matrix();
      const float mean = dx.mean(), mean_n = dx.cwiseProduct(normed).mean();
      dx = (tr.rstd[row + t] * (dx.array() - mean - normed.array() * mean_n)).matrix();
    }
    const Index dg = c.swiglu_inner();
    for (int j = c.depth - 1; j >= 0; --j) {
      // x' = x + m W2 with m = a * act(g): dW2 = m^T delta; dm = delta W2^T;
      // d[a | g] = [dm * act(g) | dm * a * act'(g)]; dx = delta + d[a | g] W1^T.
      right(2 * j + 1) = delta;
      auto dpre = right(2 * j);
      auto da = dpre.leftCols(dg), dgate = dpre.rightCols(dg);
      linalg::Multiply(da, delta, tensor(2 * j + 1).transpose());
      const auto pre = tr.pre[j].middleRows(row, n);
      dgate = da.cwiseProduct(pre.leftCols(dg));
      MultiplyByDerivative(c.activation, dgate, pre.rightCols(dg));
      da.array() *= tr.gact[j].middleRows(row, n).array();
      linalg::Multiply(delta, dpre, tensor(2 * j).transpose(), /*accumulate=*/true);
    }
    return;
  }
  // out = x W_final.
  right(3 * c.depth) = delta_out;
  linalg::Multiply(delta, delta_out, tensor(3 * c.depth).transpose());
  for (int j = c.depth - 1; j >= 0; --j) {
    // x' = x + s (b - x), s = sigmoid([b | x] Wg), b = act(x W1) W2:
    // dz = delta (b - x) s (1 - s) (dWg = [b | x]^T dz); [db_g | dx_g] = dz Wg^T;
    // db = delta s + db_g (dW2 = act^T db); dpre = (db W2^T) act'(pre) (dW1 = x^T dpre);
    // dx = delta (1 - s) + dx_g + dpre W1^T.
    const auto cat = tr.cat[j].middleRows(row, n);
    const auto b = cat.leftCols(dh), x = cat.rightCols(dh);
    const auto gate = tr.gate[j].middleRows(row, n);
    auto dz = right(3 * j + 2);
    dz = (delta.array() * (b - x).array() * gate.array() * (1.0f - gate.array())).matrix();
    auto dcat = tr.delta_wide.middleRows(row, n);
    linalg::Multiply(dcat, dz, tensor(3 * j + 2).transpose());
    auto db = right(3 * j + 1);
    db = delta.cwiseProduct(gate) + dcat.leftCols(dh);
    delta = (delta.array() * (1.0f - gate.array())).matrix() + dcat.rightCols(dh);
    auto dpre = right(3 * j);
    linalg::Multiply(dpre, db, tensor(3 * j + 1).transpose());
    MultiplyByDerivative(c.activation, dpre, tr.pre[j].middleRows(row, n));
    linalg::Multiply(delta, dpre, tensor(3 * j).transpose(), /*accumulate=*/true);
  }
}

}  // namespace titans::memory_models
