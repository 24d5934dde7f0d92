// The fast path of the neural memory (docs/SEMANTICS.md 1.6): per tile of tokens the
// projections, per unit (commit block, or step) the gradients of all its tokens at W_base and
// the momentum and decay recurrences folded into coefficient-weighted products, and batched
// reads. All scratch is sized here once per session; Run allocates nothing.
//
// Threading: Run opens one OpenMP parallel region per tile (fewer threads when the tile has
// little work). Every thread walks the same control flow and does its share (ith, nth) of each
// stage; stages that read what another thread wrote are separated by barriers. Everything
// that is independent per token (projections, reads, output) is split by token rows and needs
// no barrier inside; the keys' forward and backward pass is split by heads when they share out
// evenly (else by rows), and the gradient products and the weight update by heads when there are
// enough of them (else by weight columns). A unit costs three barriers.
#pragma once

#include <Eigen/Core>
#include <vector>

#include "memory/models.hpp"
#include "ops/linalg.hpp"
#include "ops/thread_governor.hpp"
#include "titans/memory.hpp"

namespace titans {

class MemorySession::Workspace {
 public:
  Workspace(const NeuralMemory& memory, const SessionOptions& options);

  // A call's inputs, [n, d] each: the store input's key view (keys, gates, pooling), its value
  // view (values; the key view again unless the caller has separate views) and the retrieve
  // input (queries, output gate). keys and values are null for a read-only pass.
  struct Inputs {
    const float* keys;
    const float* values;
    const float* retrieve;
    Inputs Offset(linalg::Index rows, linalg::Index d) const;  // the inputs from row `rows` on
  };

  // Runs n tokens (any n >= 0) through `state`; out [n, memory.output_width()]. Inputs must
  // already be checked (finite, sizes; the residual's trajectories large enough).
  void Run(const NeuralMemory& memory, MemoryState& state, Inputs in, int n, float* out,
           WeightResidual residual = {});
  // Reads n tokens with the current fast weights (retrieve [n, d] -> out): no write, no
  // queueing; only the read path's own convolution tail (state.conv_q_read) advances.
  void ReadOnly(const NeuralMemory& memory, MemoryState& state, const float* retrieve, int n,
                float* out);

  // One token whose input norms and projections `from` has made (MemoryBatch: one row per
  // session, made together): row `row` of from's tile, which ProjectRows filled. The rest as
  // Run (or ReadOnly, without `write`) of that token, on the calling thread; out
  // [1, memory.output_width()].
  void RunProjected(const NeuralMemory& memory, MemoryState& state, const Workspace& from, int row,
                    float* out, bool write);

  int threads() const { return threads_; }
  static constexpr int kTile = 128;  // tokens projected together

 private:
  friend class MemoryBatch;  // projects many sessions' tokens with ProjectRows
  struct Part {
    int ith, nth;
  };
  void RunTiles(const NeuralMemory& memory, MemoryState& state, Inputs in, int n, float* out,
                bool write);
  void RunTile(const NeuralMemory& memory, MemoryState& state, Inputs in, int n, float* out,
               bool write, Part part);
  // RunTile after Project: reads, queues and writes units, output.
  void ReadAndWrite(const NeuralMemory& memory, MemoryState& state, int n, float* out, bool write,
                    Part part);
  // Norms, projections, convolution, activation and q/k norm of a tile; without `write` only
  // the query path (and the output gate). Two stages, a barrier after each: ProjectRows
  // (norms, projections, gate logits) and ConvolveRows (convolution, activation, q/k norm).
  void Project(const NeuralMemory& memory, MemoryState& state, Inputs in, int n, bool write,
               Part part);
  void ProjectRows(const NeuralMemory& memory, MemoryState& state, Inputs in, int n, bool write,
                   Part part);
  void ConvolveRows(const NeuralMemory& memory, MemoryState& state, int n, bool write, Part part);
  // Reads rows [r0, r1) of the tile's queries with the current fast weights into y_.
  void Read(const NeuralMemory& memory, const MemoryState& state, int r0, int r1, Part part);
  // Writes the full unit in state.pending_* into the fast weights; commits when due. Two
  // stages, a barrier after each: UnitGradients (coefficients; every token's forward and
  // backward pass at W_base, split by heads or rows) and FoldUnit (the coefficient-weighted
  // gradient products folded into the weights, split by heads or columns).
  void WriteUnit(const NeuralMemory& memory, MemoryState& state, int64_t position_after, Part part);
  void UnitGradients(const NeuralMemory& memory, MemoryState& state, int64_t position_after,
                     Part part);
  // weight_residual (thread 0, before the gradients): records the unit's w_cur / g_cur into the
  // call's trajectory, and with a previous trajectory makes the gradient point
  // eval = W_base + mix_h * previous step (eval_w_, eval_g_).
  void ResidualPoint(const MemoryConfig& c, const MemoryState& state, int64_t position_after);
  // attention_pool (thread 0, before the coefficients): replaces the unit's chunk-level gate
  // logits (eta, alpha, modulation) in every pending row by those of its pooled row.
  void PoolUnit(const NeuralMemory& memory, MemoryState& state);
  void FoldUnit(const NeuralMemory& memory, MemoryState& state, int64_t position_after, Part part);
  // The tensorwise write (MemoryConfig::tensorwise_write, one step per unit) in place of
  // FoldUnit, a barrier between the two stages: TensorGradients (each head's full gradient of
  // every parameter tensor, split by heads or columns) and FoldTensors (per (head, tensor):
  // soft clamp, modulation, momentum, Newton-Schulz, decay, commit).
  void TensorGradients(const MemoryConfig& c, const MemoryState& state, Part part);
  void FoldTensors(const NeuralMemory& memory, MemoryState& state, int64_t position_after,
                   Part part);
  linalg::ConstMatMap UnitLayerInput(const MemoryConfig& c, const MemoryState& state, int l,
                                     int head, linalg::Index row, linalg::Index count) const;
  void Output(const NeuralMemory& memory, int n, float* out, Part part);

  int threads_;
  double min_flops_per_thread_;
  ops::ThreadGovernor governor_;  // one thread or the team, per tile (a standalone session's)
  // The gate projections packed into one [d, G] matrix (G = gate_columns()), one product per
  // tile: columns [0,H) = w_theta, [H,2H) = w_eta, [2H,3H) = w_alpha, [3H,G) = w_mod; bias [G]
  // likewise.
  std::vector<float> packed_gates_, packed_gate_bias_;
  // Tile scratch, kTile rows each.
  RowMatrix xs_, xv_, xr_;           // [P, d] normalised key view, value view (when it differs
                                     // from the key view), retrieve input
  RowMatrix q_ext_, k_ext_, v_ext_;  // [K-1+P, H*dh] projections before the convolution
  RowMatrix q_, k_, v_;              // [P, H*dh] after convolution, activation and q/k norm
  RowMatrix gates_;                  // [P, gate_columns()] gate logits (theta, eta, alpha, mod)
  RowMatrix gate_out_;               // [P, H] output gate logits
  RowMatrix y_;                      // [P, H*dh] read values, heads concatenated
  // Read scratch per MLP layer: [H * P, layer_out(l)] (head h owns rows [h*P, (h+1)*P)); for
  // the other models one [H * P, dh] (the model's output).
  std::vector<RowMatrix> read_z_;
  // Write scratch per MLP layer, U rows per head: [H * U, layer_out(l)]; for the other models
  // unit_z_ and unit_delta_ hold one [H * U, dh] (the model's output and dL/d output).
  std::vector<RowMatrix> unit_z_, unit_a_, unit_delta_;
  // The models other than the MLP: the read's forward pass [P rows, heads one after another],
  // the unit's [H * U rows], and per model tensor i the unit's gradient factors Right(i)
  // [H * U, tensor_cols(i)] (memory/models.hpp).
  memory_models::Trace read_trace_, unit_trace_;
  std::vector<RowMatrix> unit_right_;
  RowMatrix unit_dg_;  // [H * U, dh] per-token gradient rows of the kLnResidual gain
  // Per-thread scratch of the coefficient-weighted gradient products (FoldUnit): the scaled
  // output errors [U, 2 cols] (diag(c) Delta, then diag(e) Delta with momentum) and the
  // gradients [in, 2 cols] they make.
  std::vector<RowMatrix> fold_grad_, fold_scaled_;
  std::vector<RowMatrix> row_scratch_;  // per thread [2, dh]: one token's LayerNorm gradients
  // Per-head coefficients of the unit (see UnitCoefficients): [H, U] per token, [H] scalars.
  RowMatrix coef_c_, coef_e_;
  std::vector<float> decay_all_, momentum_all_, momentum_carry_;
  // Tensorwise write: the unit's gradient per model tensor [H * rows, cols] and of the gain [H,
  // dh]; the lr modulation factors [H * P]; per-thread Newton-Schulz scratch (r <= n): X, B X [r,
  // n] and A, B [r, r].
  std::vector<RowMatrix> grad_full_;
  RowMatrix grad_gain_;
  std::vector<float> modulation_;
  // momentum_order > 1: the unit's momentum gates of orders 2..O [H * (O - 1)]; learned_combine:
  // its combination weights [H * O'].
  std::vector<float> momentum_high_, combine_;
  std::vector<RowMatrix> ns_x_, ns_y_, ns_a_, ns_b_;
  // weight_residual: the call's trajectories (null outside a call or when not given), the
  // position where the call's first unit started (units of the call end at origin + k U), and
  // the gradient point of the unit: per model tensor [H, rows, cols], the gain [H, dh].
  WeightResidual residual_;
  int64_t residual_origin_ = 0;
  std::vector<std::vector<float>> eval_w_;
  std::vector<float> eval_g_;
  // attention_pool: the unit's pool logits [U, d], its pooled row [1, d] and that row's gate
  // logits [1, G].
  RowMatrix pool_logits_, pooled_, pooled_gates_;
};

}  // namespace titans
