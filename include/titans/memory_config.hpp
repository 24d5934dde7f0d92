// titans/memory_config.hpp: every option of one neural long-term memory layer.
//
// The options follow docs/SEMANTICS.md section 1 one for one; the comment on each field names
// the paragraph it comes from. Two presets cover the common cases: `Paper` (the
// Titans paper, chunk-wise gradient descent) and `TitansPytorch` (the PyPI package
// `titans-pytorch`, NeuralMemory(chunk_size=C, batch_size=B)).
#pragma once

#include <cstdint>
#include <string>

namespace titans {

enum class Activation { kNone, kGelu, kSilu };    // GELU is the exact (erf) form
enum class MemoryOutput { kPlain, kLnResidual };  // 1.1: MLP(u), or LN(MLP(u)) * (1 + g) + u
enum class QkNorm { kNone, kL2, kRms };           // 1.2 step 5
enum class ReadRule { kChunk, kStep };            // 1.4
enum class LossScale { kSum, kMean };             // 1.3: lambda = 1, or 1/dh (mean over features)
// 1.1 The memory model M (docs/TITANS_PYTORCH.md, "Memory models"): the MLP of the paper, or one
// of titans-pytorch's MemorySwiGluMLP (a GEGLU: residual blocks x + (a * act(g)) W2 with
// [a | g] = x W1, then a LayerNorm with a fast-weight gain) and GatedResidualMemoryMLP (blocks
// x + sigmoid([b | x] Wg) * (b - x) with b = act(x W1) W2, then x W_final).
enum class MemoryModel { kMlp, kSwiGlu, kGatedResidual };

struct MemoryConfig {
  // Widths. d = model width, H = heads, dh = head width, dm = hidden width of the MLP.
  int d_model = 256;
  int heads = 1;
  int head_dim = 256;
  MemoryModel model = MemoryModel::kMlp;
  int depth = 2;           // L >= 1: MLP layers (L = 1: one dh x dh matrix), or model blocks
  float expansion = 4.0f;  // dm = int(dh * expansion) (as titans-pytorch computes it)
  Activation activation = Activation::kSilu;  // between MLP layers (in blocks): kGelu or kSilu
  MemoryOutput output = MemoryOutput::kPlain;
  float layer_norm_eps = 1e-5f;  // LN inside kLnResidual

  // 1.2 Queries, keys, values and gates.
  bool store_norm = true;     // RMSNorm (learned gain) on the store input x
  bool retrieve_norm = true;  // RMSNorm (learned gain) on the retrieve input r
  float rms_eps = 1e-6f;      // eps of both input RMSNorms and of kRms q/k normalisation
  int conv_kernel = 4;        // causal depthwise convolution of q, k, v; 0 = none
  Activation qkv_activation = Activation::kSilu;  // after the convolution: kNone or kSilu
  QkNorm qk_norm = QkNorm::kL2;
  float max_lr = 1.0f;  // theta_t = max_lr * sigmoid(x_t w_theta + b_theta)
  bool momentum = true;

  // 1.3 Writing and 1.4 reading.
  LossScale loss = LossScale::kSum;
  int step = 1;    // s: tokens per update step
  int chunk = 16;  // commit W_base <- W_current every `chunk` tokens (a multiple of s); 0 = never
  ReadRule read = ReadRule::kChunk;
  int read_offset = 0;  // o: 0 or 1

  // 1.5 Head output.
  bool output_gate = false;  // per-head sigmoid(r^ W_gate) on the retrieved values (r^: r after
                             // retrieve_norm)
  bool output_proj = true;   // project H*dh -> d; without it the output is [n, H*dh]

  // 1.7 titans-pytorch options (docs/TITANS_PYTORCH.md). The three write options act on each
  // step's gradient per (head, parameter tensor), so they need one step per unit (read = step).
  bool post_norm = false;        // RMSNorm (eps rms_eps, learned gain) of each head's read
  bool transition_gate = false;  // at a commit: W_cur = W_base + sigmoid(gate) (W_cur - W_base)
  float max_grad_norm = 0.0f;    // m > 0: g *= s(|g|) / |g|, s(n) = m/2 tanh(2n/m) + m/2
  bool lr_modulation = false;    // g *= max_layer_modulation * sigmoid(c W_mod + b_mod)
  float max_layer_modulation = 1.0f;
  bool spectral_norm = false;  // matrix updates through 5 Newton-Schulz iterations
  // The step's gates (eta, alpha, modulation) from an attention pool of its normalised store
  // rows, c[f] = sum_t softmax_t(x_t W_pool + b_pool)[f] x_t[f], instead of their mean. Needs
  // read = step.
  bool attention_pool = false;
  // titans-pytorch's weight residual (MAC neural_mem_weight_residual): each step's gradient is
  // taken at W_base + mix (the previous memory layer's fast weights before its same step),
  // mix = sigmoid(c W_mix + b_mix) per head from the step's chunk representation c. The
  // previous layer's weights come with the call (MemorySession::Forward with a
  // WeightResidual); without them the gradient point is W_base. Needs read = step.
  bool weight_residual = false;
  // titans-pytorch momentum_order O > 1: O momenta per tensor, each order scanning the one
  // before, S_1 = eta_1 S_1 + u, S_o = eta_o S_o + S_{o-1} (eta_o from the step's
  // representation, w_eta [d, H*O] with channel h*O + o-1); the update is S_O, or with
  // learned_combine sum_j softmax_j(c W_comb + b_comb) M_j over M = (u if combine_zeroth,
  // S_1..S_O) (w_comb [d, H*O'], channel h*O' + j, O' = O + combine_zeroth). Need momentum and
  // read = step.
  int momentum_order = 1;
  bool learned_combine = false;
  bool combine_zeroth = false;

  // True when any option of 1.7 other than the GELU q/k/v activation is on: files that use them
  // carry format_version "2", which older builds refuse instead of ignoring the keys.
  bool UsesTitansPytorchOptions() const {
    return model != MemoryModel::kMlp || post_norm || transition_gate || max_grad_norm > 0 ||
           lr_modulation || spectral_norm || attention_pool || weight_residual ||
           momentum_order > 1 || learned_combine;
  }
  // O' = the terms of the learned momentum combination.
  int combine_terms() const { return momentum_order + (combine_zeroth ? 1 : 0); }
  // Columns of the per-token gate logits: theta, eta, alpha (H each), then with lr_modulation
  // the modulation logits [H * P] (channel h * P + p, p in titans-pytorch's parameter order),
  // then with weight_residual the mix logits [H] (from column mix_column()), the momentum gates
  // of orders 2..O [H*(O-1)] (channel h*(O-1) + o-2, from eta_column()), the combination logits
  // [H*O'] (channel h*O' + j, from combine_column()).
  int mix_column() const { return 3 * heads + (lr_modulation ? heads * parameter_tensors() : 0); }
  int eta_column() const { return mix_column() + (weight_residual ? heads : 0); }
  int combine_column() const { return eta_column() + heads * (momentum_order - 1); }
  int gate_columns() const {
    return combine_column() + (learned_combine ? heads * combine_terms() : 0);
  }
  // The memory model's fast-weight tensors per head, in titans-pytorch's parameter order
  // (MemoryWeights::mlp, MemoryState::w_cur), each [tensor_rows(i), tensor_cols(i)]:
  //   kMlp            layer l: [layer_in(l), layer_out(l)]
  //   kSwiGlu         block j: W1 [dh, 2 dg] at 2j, W2 [dg, dh] at 2j + 1 (dg = swiglu_inner());
  //                   then the final LayerNorm's gain [1, dh] at 2L
  //   kGatedResidual  block j: W1 [dh, dm] at 3j, W2 [dm, dh] at 3j + 1, Wg [2 dh, dh] at 3j + 2;
  //                   then W_final [dh, dh] at 3L
  int model_tensors() const {
    switch (model) {
      case MemoryModel::kSwiGlu:
        return 2 * depth + 1;
      case MemoryModel::kGatedResidual:
        return 3 * depth + 1;
      case MemoryModel::kMlp:
        break;
    }
    return depth;
  }
  int tensor_rows(int i) const;
  int tensor_cols(int i) const;
  // A gain vector (the SwiGLU model's LayerNorm gain): Newton-Schulz leaves it alone.
  bool tensor_is_vector(int i) const { return model == MemoryModel::kSwiGlu && i == 2 * depth; }
  // All parameter tensors per head: the model's, and the gain g of kLnResidual.
  int parameter_tensors() const {
    return model_tensors() + (output == MemoryOutput::kLnResidual ? 1 : 0);
  }
  // titans-pytorch's index p of model tensor i (its ResidualNorm lists the gain first), and of g.
  int parameter_index_of_layer(int i) const {
    return output == MemoryOutput::kLnResidual ? i + 1 : i;
  }
  static constexpr int kGainParameterIndex = 0;
  // The write works on each step's full per-head gradients (max_grad_norm, lr_modulation,
  // spectral_norm, higher momentum orders, the models other than the MLP), not on the fused
  // coefficient form.
  bool tensorwise_write() const {
    return max_grad_norm > 0 || lr_modulation || spectral_norm || momentum_order > 1 ||
           learned_combine || model != MemoryModel::kMlp;
  }

  int hidden_dim() const { return static_cast<int>(static_cast<float>(head_dim) * expansion); }
  // dg of kSwiGlu: int(dh * expansion * 2 / 3), in double as titans-pytorch computes it.
  int swiglu_inner() const {
    return static_cast<int>(static_cast<double>(head_dim) * expansion * 2.0 / 3.0);
  }
  int inner_dim() const { return heads * head_dim; }  // H*dh
  // kMlp: width of layer l's input and output (l = 0..depth-1): dh -> dm -> ... -> dm -> dh.
  int layer_in(int l) const { return l == 0 ? head_dim : hidden_dim(); }
  int layer_out(int l) const { return l == depth - 1 ? head_dim : hidden_dim(); }
  // Tokens whose write is deferred as one unit: a commit block (read = chunk) or a step.
  int unit() const { return read == ReadRule::kChunk ? chunk : step; }

  // FLOPs of the matrix products the fast path performs per token (projections, the key's
  // forward and backward pass at W_base, the coefficient-weighted gradient products, the read,
  // the output projection); elementwise work is not counted.
  double FlopsPerToken() const;

  // Throws titans::Error(kConfig) naming the first inconsistent or unsupported option.
  void Validate() const;

  // The Titans paper: s = 1, commit every `chunk` tokens, every token reads the chunk-start
  // weights; SiLU MLP, conv 4, SiLU on q/k/v, L2-normalised q/k, lambda = 1.
  static MemoryConfig Paper(int d_model, int heads, int head_dim, int depth = 2, int chunk = 16);
  // titans-pytorch NeuralMemory(dim=d_model, heads, dim_head, chunk_size, batch_size):
  // s = chunk_size, commits every batch_size tokens (0 = None), read = step, offset 1,
  // kLnResidual GELU MLP with expansion 4, no conv, no q/k activation or norm, mean loss,
  // RMSNorm eps = float32 epsilon, output gate and projection when heads > 1.
  static MemoryConfig TitansPytorch(int d_model, int heads, int head_dim, int chunk_size,
                                    int batch_size = 0);

  // Canonical JSON text, stored in state and model files; FromJson validates.
  std::string ToJson() const;
  static MemoryConfig FromJson(const std::string& text);
  bool operator==(const MemoryConfig&) const = default;
};

const char* ToString(Activation a);
const char* ToString(MemoryOutput o);
const char* ToString(QkNorm n);
const char* ToString(ReadRule r);
const char* ToString(LossScale l);
const char* ToString(MemoryModel m);

}  // namespace titans
