// Parity with the PyPI package titans-pytorch: its NeuralMemory, run in float64 by
// tools/make_goldens.py, against this engine in float32 with the converted weights
// (tools/convert_titans_pytorch.py). The golden files live in tests/data/tp_memory/ and are
// committed, so no Python runs here. docs/TITANS_PYTORCH.md explains the mapping.
//
// Per case (chunk sizes 1, 4, 16; batch_size None and 2C; heads 1 and 2; momentum on and off;
// plus two cases with more converter options) the memory file is loaded with
// NeuralMemory::Load and run as titans-pytorch ran it: one call, chunk-aligned continued calls,
// one token at a time, and also one chunk at a time. Outputs must agree within 1e-4 (max
// absolute difference), and after every call the fast weights W_current (and the LayerNorm gain
// g) must equal titans-pytorch's weights after the same number of complete chunks, and W_base
// the weights of the last batch_size commit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/safetensors.hpp"
#include "titans/titans.hpp"

namespace titans {
namespace {

constexpr double kTolerance = 1e-4;  // issue 5: max abs difference, float32 vs float64

std::string DataDir() { return std::string(TITANS_TEST_DATA_DIR) + "/tp_memory/"; }

nlohmann::json ReadIndex() {
  std::ifstream in(DataDir() + "index.json");
  if (!in) return nlohmann::json();
  return nlohmann::json::parse(in);
}

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  const nlohmann::json index = ReadIndex();
  if (index.is_object()) {
    for (const auto& c : index.at("cases")) names.push_back(c.at("name").get<std::string>());
  }
  return names;
}

template <class T>
std::vector<T> ReadTensor(const io::SafetensorsFile& file, const std::string& name, io::DType dtype,
                          const std::vector<int64_t>& shape) {
  const io::TensorRecord* t = file.Find(name);
  if (t == nullptr) throw std::runtime_error("golden tensor " + name + " missing");
  if (t->dtype != dtype || t->shape != shape || io::DTypeSize(dtype) != sizeof(T)) {
    throw std::runtime_error("golden tensor " + name + " has an unexpected dtype or shape");
  }
  std::vector<T> v(t->bytes.size() / sizeof(T));
  std::memcpy(v.data(), t->bytes.data(), t->bytes.size());
  return v;
}

// One golden case: the engine memory and what titans-pytorch computed.
struct Golden {
  std::string name;
  nlohmann::json entry;
  std::shared_ptr<const NeuralMemory> memory;
  int tokens = 0, d = 0, chunk_size = 0, batch_size = 0, chunks = 0;
  std::vector<float> input;                             // [T, d]
  std::vector<double> out_full, out_calls, out_tokens;  // [T, d]
  std::vector<int> calls;                               // token counts of the continued calls
  std::vector<std::vector<float>> w;                    // per model tensor [N+1, H, rows, cols]
  std::vector<float> gain;                              // [N+1, H, dh] (ln_residual)

  static Golden Load(const std::string& name) {
    Golden g;
    g.name = name;
    const nlohmann::json index = ReadIndex();  // not a temporary in the loop: it must live
    for (const auto& c : index.at("cases")) {
      if (c.at("name") == name) g.entry = c;
    }
    if (g.entry.is_null()) throw std::runtime_error("no case " + name + " in index.json");
    g.memory = NeuralMemory::Load(DataDir() + g.entry.at("memory_file").get<std::string>());
    const MemoryConfig& c = g.memory->config();
    g.tokens = g.entry.at("tokens").get<int>();
    g.d = c.d_model;
    g.chunk_size = g.entry.at("chunk_size").get<int>();
    g.batch_size = g.entry.at("batch_size").get<int>();
    g.chunks = g.tokens / g.chunk_size;
    const auto file =
        io::SafetensorsFile::Open(DataDir() + g.entry.at("golden_file").get<std::string>());
    const int64_t t = g.tokens, d = g.d, n1 = g.chunks + 1, h = c.heads;
    g.input = ReadTensor<float>(file, "input", io::DType::kF32, {t, d});
    g.out_full = ReadTensor<double>(file, "out_full", io::DType::kF64, {t, d});
    g.out_calls = ReadTensor<double>(file, "out_calls", io::DType::kF64, {t, d});
    g.out_tokens = ReadTensor<double>(file, "out_tokens", io::DType::kF64, {t, d});
    const auto calls = file.Find("calls");
    if (calls == nullptr || calls->shape.size() != 1) throw std::runtime_error("calls");
    for (int64_t n : ReadTensor<int64_t>(file, "calls", io::DType::kI64, calls->shape)) {
      g.calls.push_back(static_cast<int>(n));
    }
    for (int i = 0; i < c.model_tensors(); ++i) {
      g.w.push_back(ReadTensor<float>(file, "w." + std::to_string(i), io::DType::kF32,
                                      {n1, h, c.tensor_rows(i), c.tensor_cols(i)}));
    }
    if (c.output == MemoryOutput::kLnResidual) {
      g.gain = ReadTensor<float>(file, "gain", io::DType::kF32, {n1, h, c.head_dim});
    }
    return g;
  }
};

// Largest |a - b| over the fast weights of `state` against the golden weights after `current`
// complete chunks (W_current, g_current) and `base` chunks (W_base, g_base).
struct WeightDiff {
  double cur = 0, base = 0;
};
WeightDiff CompareWeights(const Golden& g, const MemoryConfig& c, const MemoryState& state,
                          int current, int base) {
  WeightDiff diff;
  auto max_diff = [](const float* a, const float* b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
  };
  for (int l = 0; l < c.model_tensors(); ++l) {
    const size_t n = state.w_cur[static_cast<size_t>(l)].size();
    const auto& golden = g.w[static_cast<size_t>(l)];
    diff.cur = std::max(diff.cur, max_diff(state.w_cur[static_cast<size_t>(l)].data(),
                                           golden.data() + current * n, n));
    diff.base = std::max(diff.base, max_diff(state.w_base[static_cast<size_t>(l)].data(),
                                             golden.data() + base * n, n));
  }
  if (c.output == MemoryOutput::kLnResidual) {
    const size_t n = state.g_cur.size();
    diff.cur = std::max(diff.cur, max_diff(state.g_cur.data(), g.gain.data() + current * n, n));
    diff.base = std::max(diff.base, max_diff(state.g_base.data(), g.gain.data() + base * n, n));
  }
  return diff;
}

struct RunResult {
  double out = 0;      // max |engine - golden| over outputs
  double weights = 0;  // over W_current / g after every call
  double base = 0;     // over W_base / g_base after every call
  int weight_checks = 0;
};

// Runs `memory` over the golden input in calls of `sizes` tokens and compares the outputs with
// `expected` and, after every call, the fast weights with the golden per-chunk weights.
RunResult RunMemory(const Golden& g, const std::shared_ptr<const NeuralMemory>& memory,
                    const std::vector<int>& sizes, const std::vector<double>& expected) {
  const MemoryConfig& c = memory->config();
  MemorySession session(memory);
  std::vector<float> out(g.input.size());
  RunResult r;
  int64_t pos = 0;
  for (int n : sizes) {
    const size_t begin = static_cast<size_t>(pos) * static_cast<size_t>(g.d);
    const size_t count = static_cast<size_t>(n) * static_cast<size_t>(g.d);
    session.Forward(std::span<const float>(g.input).subspan(begin, count),
                    std::span<float>(out).subspan(begin, count));
    pos += n;
    // W_current holds floor(pos / C) complete chunks; W_base the last commit (every
    // batch_size tokens, or never).
    const int current = static_cast<int>(pos / g.chunk_size);
    const int base =
        g.batch_size > 0 ? static_cast<int>(pos / g.batch_size * g.batch_size / g.chunk_size) : 0;
    const WeightDiff diff = CompareWeights(g, c, session.state(), current, base);
    r.weights = std::max(r.weights, diff.cur);
    r.base = std::max(r.base, diff.base);
    ++r.weight_checks;
  }
  EXPECT_EQ(pos, g.tokens);
  for (size_t i = 0; i < out.size(); ++i) {
    r.out = std::max(r.out, std::abs(static_cast<double>(out[i]) - expected[i]));
  }
  return r;
}

std::vector<int> Repeat(int total, int size) {
  std::vector<int> sizes(static_cast<size_t>(total / size), size);
  if (total % size != 0) sizes.push_back(total % size);
  return sizes;
}

class TitansPytorchMemory : public testing::TestWithParam<std::string> {};

TEST(TitansPytorchMemoryIndex, CoversTheIssueGrid) {
  const nlohmann::json index = ReadIndex();
  ASSERT_TRUE(index.is_object()) << "missing " << DataDir() << "index.json";
  EXPECT_EQ(index.at("versions").at("titans-pytorch"), "0.5.5");
  std::set<std::string> grid;
  for (const auto& c : index.at("cases")) {
    const int chunk = c.at("chunk_size"), batch = c.at("batch_size");
    grid.insert(std::to_string(chunk) + "/" +
                (batch == 0           ? "none"
                 : batch == 2 * chunk ? "2C"
                                      : "?") +
                "/" + std::to_string(c.at("heads").get<int>()) + "/" +
                (c.at("momentum").get<bool>() ? "mom" : "nomom"));
    EXPECT_TRUE(std::filesystem::exists(DataDir() + c.at("memory_file").get<std::string>()));
    EXPECT_TRUE(std::filesystem::exists(DataDir() + c.at("golden_file").get<std::string>()));
  }
  for (int chunk : {1, 4, 16}) {
    for (const char* batch : {"none", "2C"}) {
      for (int heads : {1, 2}) {
        for (const char* momentum : {"mom", "nomom"}) {
          const std::string key =
              std::to_string(chunk) + "/" + batch + "/" + std::to_string(heads) + "/" + momentum;
          EXPECT_TRUE(grid.count(key)) << "no golden case for " << key;
        }
      }
    }
  }
}

// The converter writes exactly the engine's titans-pytorch preset (plus the options set).
TEST_P(TitansPytorchMemory, ConfigIsThePreset) {
  const Golden g = Golden::Load(GetParam());
  const MemoryConfig& c = g.memory->config();
  EXPECT_EQ(c, MemoryConfig::FromJson(g.entry.at("config").dump()));
  MemoryConfig preset =
      MemoryConfig::TitansPytorch(g.entry.at("dim").get<int>(), g.entry.at("heads").get<int>(),
                                  g.entry.at("dim_head").get<int>(), g.chunk_size, g.batch_size);
  preset.max_lr = g.entry.at("max_lr").get<float>();
  preset.momentum = g.entry.at("momentum").get<bool>();
  // The two cases with non-default titans-pytorch options (tools/make_goldens.py case_list).
  if (g.name.starts_with("opt_qknorm_silu")) {  // qk_rmsnorm=True, activation=nn.SiLU()
    preset.qk_norm = QkNorm::kRms;
    preset.qkv_activation = Activation::kSilu;
  } else if (g.name.starts_with("opt_plain_shared_nonorm_depth3")) {
    // mem_model_norm_add_residual=False, pre_rmsnorm=False, MemoryMLP depth 3 expansion 2
    preset.output = MemoryOutput::kPlain;
    preset.store_norm = preset.retrieve_norm = false;
    preset.depth = 3;
    preset.expansion = 2.0f;
  } else if (g.name.starts_with("opt_gelu")) {  // activation=nn.GELU()
    preset.qkv_activation = Activation::kGelu;
  } else if (g.name.starts_with("opt_postnorm")) {  // post_rmsnorm=True
    preset.post_norm = true;
  } else if (g.name.starts_with("opt_transition")) {  // gated_transition=True
    preset.transition_gate = true;
  } else if (g.name.starts_with("opt_gradnorm")) {  // max_grad_norm=29/256
    preset.max_grad_norm = 29.0f / 256.0f;
  } else if (g.name.starts_with("opt_lrmod")) {  // per_parameter_lr_modulation, max 2
    preset.lr_modulation = true;
    preset.max_layer_modulation = 2.0f;
  } else if (g.name.starts_with("opt_spectral")) {  // spectral_norm_surprises=True
    preset.spectral_norm = true;
  } else if (g.name.starts_with("opt_attnpool")) {  // attn_pool_chunks=True
    preset.attention_pool = true;
  } else if (g.name.starts_with("opt_order2")) {  // momentum_order=2
    preset.momentum_order = 2;
  } else if (g.name.starts_with("opt_combine0")) {
    // momentum_order=3, learned_momentum_combine, learned_combine_include_zeroth
    preset.momentum_order = 3;
    preset.learned_combine = preset.combine_zeroth = true;
  } else if (g.name.starts_with("opt_combine")) {  // momentum_order=2, learned combine
    preset.momentum_order = 2;
    preset.learned_combine = true;
  } else if (g.name.starts_with("opt_trainmac_memory")) {
    // train_mac.py's memory options (those of this page) at small widths: qk_rmsnorm,
    // MemoryMLP(dim_head, 2) (expansion 2), attention pool, lr modulation, spectral norm.
    preset.qk_norm = QkNorm::kRms;
    preset.expansion = 2.0f;
    preset.lr_modulation = true;
    preset.spectral_norm = true;
    preset.attention_pool = true;
  } else if (g.name.starts_with("opt_swiglu") || g.name.starts_with("opt_gated")) {
    // model=MemorySwiGluMLP(dim_head, depth 2) or GatedResidualMemoryMLP(dim_head, depth 2)
    // (expansion 4), with or without the ResidualNorm wrapper; one case adds lr modulation
    // (max 2) and spectral norm, one lr modulation alone.
    preset.model =
        g.name.starts_with("opt_swiglu") ? MemoryModel::kSwiGlu : MemoryModel::kGatedResidual;
    if (g.name.find("_plain_") != std::string::npos) preset.output = MemoryOutput::kPlain;
    if (g.name.find("_lrmod") != std::string::npos) {
      preset.lr_modulation = true;
      preset.max_layer_modulation = 2.0f;
    }
    preset.spectral_norm = g.name.find("_spectral") != std::string::npos;
  } else {
    ASSERT_FALSE(g.name.starts_with("opt_")) << "expected config unknown for " << g.name;
  }
  EXPECT_EQ(c, preset) << c.ToJson() << "\n" << preset.ToJson();
}

TEST_P(TitansPytorchMemory, MatchesInEveryCallPattern) {
  const Golden g = Golden::Load(GetParam());
  struct Mode {
    const char* name;
    std::vector<int> sizes;
    const std::vector<double>* expected;
  };
  // titans-pytorch ran full / calls / tokens; chunk by chunk is a chunk-aligned continuation
  // too, so it must give the full call's outputs (make_goldens.py checks that titans-pytorch's
  // own three runs agree within 1e-9).
  const std::vector<Mode> modes = {
      {"full", {g.tokens}, &g.out_full},
      {"calls", g.calls, &g.out_calls},
      {"tokens", Repeat(g.tokens, 1), &g.out_tokens},
      {"chunks", Repeat(g.tokens, g.chunk_size), &g.out_full},
  };
  for (const Mode& mode : modes) {
    SCOPED_TRACE(mode.name);
    const RunResult r = RunMemory(g, g.memory, mode.sizes, *mode.expected);
    std::printf("[ tp-parity ] %-34s %-6s out %.2e  W_cur %.2e  W_base %.2e  (%d weight checks)\n",
                g.name.c_str(), mode.name, r.out, r.weights, r.base, r.weight_checks);
    EXPECT_LE(r.out, kTolerance);
    EXPECT_LE(r.weights, kTolerance);
    EXPECT_LE(r.base, kTolerance);
    EXPECT_EQ(r.weight_checks, static_cast<int>(mode.sizes.size()));
  }
}

// A comparison that cannot fail proves nothing: each wrong semantic or conversion below, applied
// to the same memory, must move the outputs or weights by far more than the tolerance. This pins
// the read offset, the commit period, the loss scale and the converter's conventions (gamma is
// stored as is, not as gamma + 1; Linear weights are transposed).
TEST_P(TitansPytorchMemory, GoldensRejectWrongSemantics) {
  const Golden g = Golden::Load(GetParam());
  const MemoryConfig& right = g.memory->config();
  struct Variant {
    const char* what;
    bool applies;
    std::function<void(MemoryConfig&, MemoryWeights&)> change;
  };
  const bool ln = right.output == MemoryOutput::kLnResidual;
  const bool square_q = right.d_model == right.inner_dim();
  const int tensors = right.parameter_tensors();
  const std::vector<Variant> variants = {
      {"read offset 0", true, [](MemoryConfig& c, MemoryWeights&) { c.read_offset = 0; }},
      {"loss sum (lambda = 1)", true,
       [](MemoryConfig& c, MemoryWeights&) { c.loss = LossScale::kSum; }},
      {"other commit period", true,
       [&](MemoryConfig& c, MemoryWeights&) { c.chunk = c.chunk == 0 ? g.chunk_size : 0; }},
      {"gain stored as gamma + 1", ln,
       [](MemoryConfig&, MemoryWeights& w) {
         for (float& x : w.gain) x += 1.0f;
       }},
      {"w_q not transposed", square_q,
       [](MemoryConfig& c, MemoryWeights& w) {
         const std::vector<float> q = w.w_q;
         const int n = c.d_model;
         for (int i = 0; i < n; ++i) {
           for (int j = 0; j < n; ++j) w.w_q[i * n + j] = q[j * n + i];
         }
       }},
      // Each titans-pytorch option of the option cases: removed, or in a plausible wrong form.
      {"q/k/v SiLU for GELU", right.qkv_activation == Activation::kGelu,
       [](MemoryConfig& c, MemoryWeights&) { c.qkv_activation = Activation::kSilu; }},
      {"q/k/v no activation for GELU", right.qkv_activation == Activation::kGelu,
       [](MemoryConfig& c, MemoryWeights&) { c.qkv_activation = Activation::kNone; }},
      {"no post norm", right.post_norm,
       [](MemoryConfig& c, MemoryWeights&) { c.post_norm = false; }},
      {"post norm gain gamma, not gamma + 1", right.post_norm,
       [](MemoryConfig&, MemoryWeights& w) {
         for (float& x : w.post_norm) x -= 1.0f;
       }},
      {"no transition gate", right.transition_gate,
       [](MemoryConfig& c, MemoryWeights&) { c.transition_gate = false; }},
      {"no gradient norm clamp", right.max_grad_norm > 0,
       [](MemoryConfig& c, MemoryWeights&) { c.max_grad_norm = 0; }},
      {"gradient norm clamp at 2m", right.max_grad_norm > 0,
       [](MemoryConfig& c, MemoryWeights&) { c.max_grad_norm *= 2; }},
      {"no lr modulation", right.lr_modulation,
       [](MemoryConfig& c, MemoryWeights&) { c.lr_modulation = false; }},
      {"lr modulation tensors rotated", right.lr_modulation,
       [&](MemoryConfig& c, MemoryWeights& w) {
         // Channel h P + p takes p + 1's weights: the tensor order of titans-pytorch is wrong.
         const int hp = c.heads * tensors;
         const std::vector<float> wm = w.w_mod, bm = w.b_mod;
         for (int ch = 0; ch < hp; ++ch) {
           const int from = ch / tensors * tensors + (ch % tensors + 1) % tensors;
           w.b_mod[ch] = bm[from];
           for (int i = 0; i < c.d_model; ++i) w.w_mod[i * hp + ch] = wm[i * hp + from];
         }
       }},
      {"max modulation ignored", right.lr_modulation && right.max_layer_modulation != 1.0f,
       [](MemoryConfig& c, MemoryWeights&) { c.max_layer_modulation = 1.0f; }},
      {"mean pool for attention pool", right.attention_pool,
       [](MemoryConfig& c, MemoryWeights&) { c.attention_pool = false; }},
      {"no Newton-Schulz", right.spectral_norm,
       [](MemoryConfig& c, MemoryWeights&) { c.spectral_norm = false; }},
      {"momentum of order 1 only", right.momentum_order > 1,
       [](MemoryConfig& c, MemoryWeights& w) {
         // Keep each head's first-order gate (channel h*O): titans-pytorch with O = 1.
         const size_t orders = c.momentum_order, d = c.d_model, h = c.heads;
         std::vector<float> w_eta(d * h), b_eta(h);
         for (size_t head = 0; head < h; ++head) {
           b_eta[head] = w.b_eta[head * orders];
           for (size_t i = 0; i < d; ++i)
             w_eta[i * h + head] = w.w_eta[i * h * orders + head * orders];
         }
         w.w_eta = w_eta;
         w.b_eta = b_eta;
         c.momentum_order = 1;
         c.learned_combine = c.combine_zeroth = false;
       }},
      {"last order instead of the learned combination", right.learned_combine,
       [](MemoryConfig& c, MemoryWeights&) { c.learned_combine = c.combine_zeroth = false; }},
      {"combination terms rotated (zeroth last)", right.learned_combine,
       [](MemoryConfig& c, MemoryWeights& w) {
         const size_t terms = c.combine_terms(), width = terms * c.heads;
         const std::vector<float> w_comb = w.w_comb, b_comb = w.b_comb;
         for (size_t col = 0; col < width; ++col) {
           const size_t from = col - col % terms + (col % terms + 1) % terms;
           w.b_comb[col] = b_comb[from];
           for (size_t i = 0; i < size_t(c.d_model); ++i)
             w.w_comb[i * width + col] = w_comb[i * width + from];
         }
       }},
      // The memory models: each part of a block or of the output in a plausible wrong form.
      {"memory model activation SiLU for GELU", right.model != MemoryModel::kMlp,
       [](MemoryConfig& c, MemoryWeights&) { c.activation = Activation::kSilu; }},
      {"SwiGLU halves swapped (gelu on the first)", right.model == MemoryModel::kSwiGlu,
       [](MemoryConfig& c, MemoryWeights& w) {
         // W1 [H, dh, 2 dg]: every row's halves exchanged.
         const size_t dg = c.swiglu_inner(), rows = size_t(c.heads) * c.head_dim;
         for (int j = 0; j < c.depth; ++j) {
           std::vector<float>& w1 = w.mlp[2 * j];
           for (size_t r = 0; r < rows; ++r) {
             std::swap_ranges(w1.begin() + r * 2 * dg, w1.begin() + r * 2 * dg + dg,
                              w1.begin() + r * 2 * dg + dg);
           }
         }
       }},
      {"SwiGLU LayerNorm gain stored as gamma + 1", right.model == MemoryModel::kSwiGlu,
       [](MemoryConfig& c, MemoryWeights& w) {
         for (float& x : w.mlp[2 * c.depth]) x += 1.0f;
       }},
      {"gated residual gate on [x | b] for [b | x]", right.model == MemoryModel::kGatedResidual,
       [](MemoryConfig& c, MemoryWeights& w) {
         // Wg [H, 2 dh, dh]: its two row blocks exchanged.
         const size_t dh = c.head_dim, block = dh * dh;
         for (int j = 0; j < c.depth; ++j) {
           std::vector<float>& wg = w.mlp[3 * j + 2];
           for (size_t head = 0; head < size_t(c.heads); ++head) {
             const auto first = wg.begin() + head * 2 * block;
             std::swap_ranges(first, first + block, first + block);
           }
         }
       }},
      {"gated residual without the final projection", right.model == MemoryModel::kGatedResidual,
       [](MemoryConfig& c, MemoryWeights& w) {
         std::vector<float>& last = w.mlp[3 * c.depth];  // [H, dh, dh] <- identity
         const size_t dh = c.head_dim;
         std::fill(last.begin(), last.end(), 0.0f);
         for (size_t head = 0; head < size_t(c.heads); ++head) {
           for (size_t i = 0; i < dh; ++i) last[head * dh * dh + i * dh + i] = 1.0f;
         }
       }},
  };
  for (const Variant& v : variants) {
    if (!v.applies) continue;
    SCOPED_TRACE(v.what);
    MemoryConfig config = right;
    MemoryWeights weights = g.memory->weights();
    v.change(config, weights);
    const auto memory = std::make_shared<const NeuralMemory>(config, std::move(weights));
    const RunResult r = RunMemory(g, memory, {g.tokens}, g.out_full);
    std::printf("[ tp-detect ] %-34s %-26s out %.2e  W_cur %.2e\n", g.name.c_str(), v.what, r.out,
                r.weights);
    EXPECT_GT(std::max(r.out, r.weights), 10 * kTolerance)
        << "the goldens cannot tell \"" << v.what << "\" from titans-pytorch";
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, TitansPytorchMemory, testing::ValuesIn(CaseNames()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace titans
