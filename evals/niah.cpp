// Needle in a haystack: the constructed demo model, the trial text and the trial runner.
// docs/NIAH.md explains the construction; the comments here give the layout.
#include "titans/evals/niah.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <random>

#include "titans/error.hpp"

namespace titans::niah {
namespace {

// ---------------------------------------------------------------------------------------------
// Character classes. The model sees a byte through its class: letters (case-folded, two to a
// class), digits, whitespace and the common punctuation; everything else shares three. 32
// classes keep every width of the model small.
constexpr int kClasses = 32;
constexpr int kDigit0 = 13, kSpace = 23, kPeriod = 24;

int ClassOf(uint8_t b) {
  if (b >= 'a' && b <= 'z') return (b - 'a') / 2;
  if (b >= 'A' && b <= 'Z') return (b - 'A') / 2;
  if (b >= '0' && b <= '9') return kDigit0 + (b - '0');
  switch (b) {
    case ' ':
    case '\n':
    case '\t':
    case '\r':
      return kSpace;
    case '.':
      return kPeriod;
    case ':':
      return 25;
    case '?':
      return 26;
    case '-':
      return 27;
    case ',':
      return 28;
    case '\'':
    case '"':
    case '!':
    case ';':
    case '(':
    case ')':
      return 29;
    default:
      return b < 128 ? 30 : 31;
  }
}

// The byte the LM head prefers when a class holds several (lower case, the first letter of the
// pair, ' ', '\''): it gets the full logit, the others 1% less. Only digits are scored, and each
// digit has a class of its own.
bool IsPreferred(uint8_t b) {
  const int c = ClassOf(b);
  if (c < kDigit0) return b >= 'a' && (b - 'a') % 2 == 0;
  if (c == kSpace) return b == ' ';
  if (c == 29) return b == '\'';
  return true;
}

// Weight of a class in the memory's keys and queries. Letters, spaces and periods fill any
// haystack; digits and the rarer punctuation mark the needle. Weighting the rare ones up (as
// an IDF weight would) keeps the needle's keys nearly orthogonal to everything the haystack
// writes, so the haystack's later writes barely touch what the needle stored.
constexpr float kRareWeight = 32.0f;
float KeyWeight(int c) { return (c < kDigit0 || c == kSpace || c == kPeriod) ? 1.0f : kRareWeight; }

// ---------------------------------------------------------------------------------------------
// Residual stream layout (d = 176): a constant, the current token's class (one-hot), the classes
// of the three tokens before it (written by layer 0, read by the induction head), and the
// prediction of the next token's class (written by layer 1's memory and attention, read by the
// LM head).
constexpr int kD = 176;
constexpr int kConst = 0;
constexpr int kToken = 1;                    // T0: class of token t
constexpr int kSlots = 3;                    // tokens the induction head compares
constexpr int kPrev[kSlots] = {33, 65, 97};  // S1, S2, S3: classes of tokens t-1, t-2, t-3
constexpr int kPredict = 129;                // P: predicted class of token t+1
static_assert(kPredict + kClasses <= kD);

// Memory: one head of width 6 x 32 (the classes of six tokens), a linear map (depth 1),
// commits every 16 tokens. theta = 1/16 = 1/chunk keeps the chunk-wise gradient step stable for
// any text: a chunk's gradients, all taken at the chunk start, scale the error along a direction
// by 1 - 2 theta lambda, where lambda <= chunk (unit keys) is an eigenvalue of the chunk's sum of
// k k^T, so the error never grows. Six tokens of context (not three) make the
// keys of two digits of one number nearly orthogonal even when digits repeat.
constexpr int kKeySlots = 6, kMemoryWidth = kKeySlots * kClasses, kChunk = 16;
constexpr int kConvKernel = kKeySlots + 1;  // taps for offsets 0..6

// Attention: one head of width 128. Rotary rotates pair i by position * base^(-2i/128); with
// base 1e38 the pairs from 14 on turn by less than 0.03 rad over two million tokens, so the
// content sits there and the scores do not depend on position (the first 28 dims stay zero).
constexpr int kHeadDim = 128, kContent = 28, kSink = kContent + kSlots * kClasses;
static_assert(kSink < kHeadDim);
constexpr float kRopeBase = 1e38f;
constexpr float kScorePerMatch = 20.0f;  // attention logit per matching class slot
constexpr float kSinkMatches = 2.5f;     // the persistent "no match" key scores like 2.5 slots

constexpr float kGateArgument = 4.0f;  // SiLU(4) = 3.93: the memory branch's constant gate

float Silu(float x) { return x / (1.0f + std::exp(-x)); }
// What RMSNorm (gain 1) multiplies a d-wide row of squared norm `norm2` by.
float RmsScale(float norm2) { return std::sqrt(static_cast<float>(kD) / norm2); }

// Row-major [rows, cols] element.
float& At(std::vector<float>& m, int cols, int row, int col) {
  return m[static_cast<size_t>(row) * static_cast<size_t>(cols) + static_cast<size_t>(col)];
}

ModelConfig NeedleConfig(const NeedleModelOptions& options) {
  if (!options.full_attention && (options.window < 1 || options.window > 1024)) {
    throw Error(
        ErrorCode::kInvalidArgument,
        "the needle model's window must be in [1, 1024], got " + std::to_string(options.window));
  }
  ModelConfig c;
  c.vocab_size = 256;
  c.d_model = kD;
  c.ffn_hidden = 1;  // the feed-forward layers are zero: the construction needs none
  c.tie_embeddings = false;
  c.layers = {BlockKind::kLmm, options.full_attention ? BlockKind::kAttention : BlockKind::kMal};
  c.attention.heads = 1;
  c.attention.kv_heads = 1;
  c.attention.head_dim = kHeadDim;
  c.attention.window = options.full_attention ? 0 : options.window;
  c.attention.persistent = 1;
  c.attention.rope_base = kRopeBase;

  MemoryConfig& m = c.memory;
  m.d_model = kD;
  m.heads = 1;
  m.head_dim = kMemoryWidth;
  m.depth = 1;
  m.expansion = 1.0f;
  m.conv_kernel = kConvKernel;
  m.qkv_activation = Activation::kNone;
  m.qk_norm = QkNorm::kL2;
  m.max_lr = 1.0f / kChunk;
  m.momentum = false;
  m.loss = LossScale::kSum;
  m.step = 1;
  m.chunk = kChunk;
  m.read = ReadRule::kChunk;
  m.read_offset = 0;
  m.output_gate = false;
  m.output_proj = false;
  return c;
}

void FillOnes(std::vector<float>& v) { std::fill(v.begin(), v.end(), 1.0f); }

// The memory branch's gate and output projection: the branch output RMSNorm(y) * SiLU(u W_g)
// becomes, in the residual block starting at `to[slot]`, the memory's slot `slot` scaled to unit
// norm. `rms_input` is what the block's pre-norm multiplies the constant by. The per-head
// RMSNorm scales the read to norm sqrt(192); `filled` slots of equal norm share it.
void MemoryBranchOutput(MemoryBranchWeights& b, float rms_input, int filled,
                        std::span<const int> to) {
  const float slot_norm = std::sqrt(static_cast<float>(kMemoryWidth) / static_cast<float>(filled));
  FillOnes(b.norm);
  for (int j = 0; j < kMemoryWidth; ++j)
    At(b.w_g, kMemoryWidth, kConst, j) = kGateArgument / rms_input;
  const float scale = 1.0f / (slot_norm * Silu(kGateArgument));
  for (size_t slot = 0; slot < to.size(); ++slot) {
    for (int c = 0; c < kClasses; ++c) {
      At(b.w_o, kD, static_cast<int>(slot) * kClasses + c, to[slot] + c) = scale;
    }
  }
}

// Layer 0: a memory that never writes (zero key and value projections, so every gradient is
// zero) with W0 = identity, read with queries that the causal convolution shifts by 1, 2 and 3
// tokens (its other three slots stay zero): its output is the classes of tokens t-1, t-2, t-3,
// which it adds to S1, S2, S3. It does the job of the "previous token" heads of trained
// transformers, for the induction head of layer 1.
void BuildShiftLayer(LayerWeights& layer) {
  FillOnes(layer.norm);
  FillOnes(layer.ffn_norm);
  MemoryWeights& m = layer.memory.memory;
  FillOnes(m.store_norm);
  FillOnes(m.retrieve_norm);
  for (int slot = 0; slot < kSlots; ++slot) {
    for (int c = 0; c < kClasses; ++c) {
      const int channel = slot * kClasses + c;
      At(m.w_q, kMemoryWidth, kToken + c, channel) = 1.0f;
      // Tap j weighs the input at t - (K - 1) + j: tap K - 2 - slot is offset slot + 1.
      At(m.conv_q, kMemoryWidth, kConvKernel - 2 - slot, channel) = 1.0f;
    }
  }
  m.b_alpha.assign(m.b_alpha.size(), -30.0f);  // alpha = 0: W0 = identity is never decayed
  for (int j = 0; j < kMemoryWidth; ++j) At(m.mlp[0], kMemoryWidth, j, j) = 1.0f;
  // Input: the constant and one class one-hot (squared norm 2); the read fills three slots.
  MemoryBranchOutput(layer.memory, RmsScale(2.0f), kSlots, std::span<const int>(kPrev, kSlots));
}

// Layer 1's memory: key = classes of t-1 .. t-6 (weighted by KeyWeight, L2-normalised), value =
// class of t, query = classes of t .. t-5; the causal convolution picks the offsets from the
// current token's class. Each step of its test-time training moves M(k_t) towards v_t, so it
// learns "six tokens -> next token"; a read predicts the class that followed the current six
// tokens when they were written. W0 = 0.
void BuildRecallMemory(LayerWeights& layer, float rms_input) {
  MemoryWeights& m = layer.memory.memory;
  FillOnes(m.store_norm);
  FillOnes(m.retrieve_norm);
  for (int slot = 0; slot < kKeySlots; ++slot) {
    for (int c = 0; c < kClasses; ++c) {
      const int channel = slot * kClasses + c;
      At(m.w_q, kMemoryWidth, kToken + c, channel) = KeyWeight(c);
      At(m.w_k, kMemoryWidth, kToken + c, channel) = KeyWeight(c);
      At(m.conv_q, kMemoryWidth, kConvKernel - 1 - slot, channel) = 1.0f;  // offset slot
      At(m.conv_k, kMemoryWidth, kConvKernel - 2 - slot, channel) = 1.0f;  // offset slot + 1
    }
  }
  for (int c = 0; c < kClasses; ++c) {
    At(m.w_v, kMemoryWidth, kToken + c, c) = 1.0f / rms_input;
    At(m.conv_v, kMemoryWidth, kConvKernel - 1, c) = 1.0f;
  }
  m.b_theta.assign(m.b_theta.size(), 30.0f);   // theta = max_lr
  m.b_alpha.assign(m.b_alpha.size(), -30.0f);  // alpha = 0: nothing is forgotten
  // Only the value slot of the read is ever non-zero.
  const int to[1] = {kPredict};
  MemoryBranchOutput(layer.memory, rms_input, 1, to);
}

// Layer 1's attention, an induction head: query = classes of t, t-1, t-2; key of position j =
// classes of j-1, j-2, j-3; value = class of j. A key whose three classes all match scores
// 3 x 20 and wins; the persistent key scores 2.5 x 20 with a zero value, so partial matches
// give (almost) nothing. Its output adds the class of the token that followed the current three
// tokens (within the window) to P.
void BuildInductionHead(AttentionWeights& a, float rms_input) {
  const float scale = std::sqrt(static_cast<float>(kHeadDim));  // scores are divided by it
  const float per_match = kScorePerMatch * scale / rms_input;
  const int query_from[kSlots] = {kToken, kPrev[0], kPrev[1]};
  for (int slot = 0; slot < kSlots; ++slot) {
    for (int c = 0; c < kClasses; ++c) {
      const int dim = kContent + slot * kClasses + c;
      At(a.w_q, kHeadDim, query_from[slot] + c, dim) = per_match;
      At(a.w_k, kHeadDim, kPrev[slot] + c, dim) = 1.0f / rms_input;
    }
  }
  At(a.w_q, kHeadDim, kConst, kSink) = kSinkMatches * per_match;
  At(a.persistent_k, kHeadDim, 0, kSink) = 1.0f;
  for (int c = 0; c < kClasses; ++c) {
    At(a.w_v, kHeadDim, kToken + c, c) = 1.0f / rms_input;
    At(a.w_o, kD, c, kPredict + c) = 1.0f;
  }
}

}  // namespace

std::vector<int32_t> EncodeBytes(std::string_view text) {
  std::vector<int32_t> tokens(text.size());
  std::transform(text.begin(), text.end(), tokens.begin(),
                 [](char ch) { return static_cast<int32_t>(static_cast<uint8_t>(ch)); });
  return tokens;
}

std::string DecodeBytes(std::span<const int32_t> tokens) {
  std::string text(tokens.size(), '\0');
  std::transform(tokens.begin(), tokens.end(), text.begin(),
                 [](int32_t t) { return static_cast<char>(static_cast<uint8_t>(t)); });
  return text;
}

std::shared_ptr<const Model> BuildNeedleModel(const NeedleModelOptions& options) {
  const ModelConfig config = NeedleConfig(options);
  ModelWeights w = ModelWeights::Zeros(config);

  for (int b = 0; b < 256; ++b) {
    At(w.embedding, kD, b, kConst) = 1.0f;
    At(w.embedding, kD, b, kToken + ClassOf(static_cast<uint8_t>(b))) = 1.0f;
    At(w.lm_head, 256, kPredict + ClassOf(static_cast<uint8_t>(b)), b) =
        IsPreferred(static_cast<uint8_t>(b)) ? 1.0f : 0.99f;
  }
  FillOnes(w.final_norm);

  BuildShiftLayer(w.layers[0]);

  // Layer 1 sees the constant and four one-hots (T0, S1..S3): squared norm 5.
  LayerWeights& recall = w.layers[1];
  FillOnes(recall.norm);
  FillOnes(recall.ffn_norm);
  const float rms_layer1 = RmsScale(5.0f);
  if (options.full_attention) {
    BuildInductionHead(recall.attention, rms_layer1);
  } else {
    BuildRecallMemory(recall, rms_layer1);
    FillOnes(recall.attn_norm);
    // After the memory's unit-norm prediction is added: squared norm 6.
    BuildInductionHead(recall.attention, RmsScale(6.0f));
  }
  return std::make_shared<const Model>(config, std::move(w));
}

std::shared_ptr<const Model> WithoutMemoryWrites(const Model& model) {
  ModelConfig config = model.config();
  config.memory.max_lr = 0.0f;  // theta = 0: no gradient enters the momentum or the weights
  // No forgetting either: with theta = 0 the update is still W = (1 - alpha) W, which would fade
  // W0 towards zero. A decay gate with zero weights and bias -1e4 gives alpha = 1 / (1 + e^1e4)
  // = 0 exactly, so the weights are multiplied by exactly 1.
  ModelWeights weights = model.weights();
  const auto no_forgetting = [](MemoryWeights& m) {
    std::fill(m.w_alpha.begin(), m.w_alpha.end(), 0.0f);
    std::fill(m.b_alpha.begin(), m.b_alpha.end(), -1e4f);
  };
  for (LayerWeights& layer : weights.layers) no_forgetting(layer.memory.memory);
  for (TpMacLayerWeights& layer : weights.tp_mac.layers) no_forgetting(layer.memory);
  return std::make_shared<const Model>(config, std::move(weights), model.weight_type());
}

// ---------------------------------------------------------------------------------------------
// Trial text.

namespace {

// Keys in RULER's style: two words joined by a hyphen.
constexpr std::array<std::string_view, 16> kAdjectives = {
    "gentle", "crimson", "silent",  "hollow", "bright",  "frozen", "ancient", "restless",
    "golden", "quiet",   "distant", "bitter", "curious", "hidden", "swift",   "tender"};
constexpr std::array<std::string_view, 16> kNouns = {
    "river",  "lantern", "meadow", "harbor", "falcon", "orchard", "compass", "glacier",
    "violin", "canyon",  "ember",  "willow", "beacon", "thicket", "summit",  "tide"};

}  // namespace

TrialText::TrialText(std::string_view haystack, const TrialSpec& spec) : haystack_(haystack) {
  if (haystack.empty()) throw Error(ErrorCode::kInvalidArgument, "the haystack text is empty");
  if (!(spec.depth >= 0.0 && spec.depth <= 1.0)) {
    throw Error(ErrorCode::kInvalidArgument,
                "needle depth must be in [0, 1], got " + std::to_string(spec.depth));
  }
  std::mt19937_64 rng(spec.seed);
  key_ = std::string(kAdjectives[rng() % kAdjectives.size()]) + "-" +
         std::string(kNouns[rng() % kNouns.size()]);
  number_ = std::to_string(1000000 + rng() % 9000000);
  needle_ = "One of the special magic numbers for " + key_ + " is: " + number_ + ". ";
  question_ = "What is the special magic number for " + key_ + "? The special magic number for " +
              key_ + " is: ";
  haystack_tokens_ = spec.length - static_cast<int64_t>(needle_.size() + question_.size());
  if (haystack_tokens_ < 0) {
    throw Error(ErrorCode::kInvalidArgument, "context length " + std::to_string(spec.length) +
                                                 " cannot hold the needle and "
                                                 "the question (" +
                                                 std::to_string(needle_.size() + question_.size()) +
                                                 " tokens)");
  }
  // Insert at the depth, moved back to the nearest sentence start (after ". ") within 256
  // tokens, as RULER inserts needles between sentences.
  const auto position =
      static_cast<int64_t>(std::llround(spec.depth * static_cast<double>(haystack_tokens_)));
  needle_begin_ = position;
  for (int64_t p = position; p > 0 && p > position - 256; --p) {
    if (p >= 2 && At(p - 1) == ' ' && At(p - 2) == '.') {
      needle_begin_ = p;
      break;
    }
  }
  size_ = spec.length;
}

char TrialText::At(int64_t i) const {
  return haystack_[static_cast<size_t>(i % static_cast<int64_t>(haystack_.size()))];
}

void TrialText::Fill(int64_t begin, std::span<int32_t> out) const {
  const auto needle_size = static_cast<int64_t>(needle_.size());
  const int64_t needle_end = needle_begin_ + needle_size;
  const int64_t question_begin = haystack_tokens_ + needle_size;
  for (size_t k = 0; k < out.size(); ++k) {
    const int64_t i = begin + static_cast<int64_t>(k);
    char ch;
    if (i < needle_begin_) {
      ch = At(i);
    } else if (i < needle_end) {
      ch = needle_[static_cast<size_t>(i - needle_begin_)];
    } else if (i < question_begin) {
      ch = At(i - needle_size);
    } else {
      ch = question_[static_cast<size_t>(i - question_begin)];
    }
    out[k] = static_cast<int32_t>(static_cast<uint8_t>(ch));
  }
}

TrialResult RunTrial(Session& session, std::string_view haystack, const TrialSpec& spec,
                     const Progress& progress, int piece) {
  const TrialText text(haystack, spec);
  if (piece < 1) throw Error(ErrorCode::kInvalidArgument, "piece must be >= 1");
  const auto start = std::chrono::steady_clock::now();
  session.Reset();

  // Everything but the last token goes through Forward; Generate feeds the last one and
  // samples from its logits.
  const int64_t vocab = session.model().config().vocab_size;
  std::vector<int32_t> tokens(static_cast<size_t>(piece));
  std::vector<float> logits(static_cast<size_t>(piece * vocab));
  const int64_t prefix = text.size() - 1;
  for (int64_t begin = 0; begin < prefix; begin += piece) {
    const auto n = static_cast<size_t>(std::min<int64_t>(piece, prefix - begin));
    text.Fill(begin, std::span(tokens.data(), n));
    session.Forward(std::span<const int32_t>(tokens.data(), n),
                    std::span(logits.data(), n * static_cast<size_t>(vocab)));
    if (progress) progress(begin + static_cast<int64_t>(n), text.size());
  }
  int32_t last = 0;
  text.Fill(prefix, std::span(&last, 1));
  const std::vector<int32_t> answer =
      session.Generate(std::span<const int32_t>(&last, 1), kDigits, SamplerOptions{});

  TrialResult result;
  result.expected = text.number();
  result.answer = DecodeBytes(answer);
  result.correct = result.answer == result.expected;
  result.needle_position = text.needle_position();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace titans::niah
