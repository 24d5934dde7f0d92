// titans/evals/niah.hpp: needle-in-a-haystack recall (docs/NIAH.md).
//
// A single-needle test in the style of RULER's S-NIAH: a haystack of `length` tokens (a repeated
// noise block, or any text) holds one sentence "One of the special magic numbers for {key} is:
// {7 digits}." at a chosen depth; the context ends with the question and the answer prefix, the
// model generates 7 tokens greedily, and the answer counts when it equals the 7 digits.
//
// Also here: the demo model, a two-layer Titans model whose weights are constructed rather than
// trained (BuildNeedleModel), so that the demo needs no download, and the two baselines the
// demo compares it with. Text is tokenised as bytes (vocabulary 256) for every model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "titans/model.hpp"
#include "titans/session.hpp"

namespace titans::niah {

inline constexpr int kDigits = 7;  // the magic number's length, in tokens (bytes)

// RULER's noise haystack: this block, repeated.
inline constexpr std::string_view kNoiseBlock =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";

// Byte tokens: token i of a text is its i-th byte (0..255).
std::vector<int32_t> EncodeBytes(std::string_view text);
std::string DecodeBytes(std::span<const int32_t> tokens);

struct NeedleModelOptions {
  int window = 256;  // the attention window (tokens); recall beyond it needs the memory
  // Baseline: the recall layer is plain causal attention over the whole context (window 0)
  // and has no memory, so attention alone must find the needle.
  bool full_attention = false;
};

// The demo model (docs/NIAH.md explains every weight). Layer 0 copies the codes of the last
// three tokens into the residual stream; layer 1 (MAL) has a neural memory that learns, for
// every position, "the six tokens before -> this token" by its test-time gradient step, and
// an induction head over the attention window that does the same by lookup. d_model = 176.
std::shared_ptr<const Model> BuildNeedleModel(const NeedleModelOptions& options = {});

// A copy of `model` whose memories never write (step size max_lr = 0) and never forget (decay
// gate alpha = 0: w_alpha zero, b_alpha -1e4): each keeps its initial weights W0 exactly,
// however long the context. (max_lr = 0 alone would leave W = (1 - alpha) W, which fades W0
// towards zero.) The baseline that shows what the memory's writes contribute. It stores its
// weights as `model` does (WeightType).
std::shared_ptr<const Model> WithoutMemoryWrites(const Model& model);

// One test case. The haystack text is repeated as needed to fill the context.
struct TrialSpec {
  int64_t length = 4096;  // context tokens: haystack + needle + question + answer prefix
  double depth = 0.5;     // needle position as a fraction of the haystack (0 = first, 1 = last)
  uint64_t seed = 0;      // picks the key and the number
};

// The token stream of one trial, produced in pieces (nothing of size `length` is built).
class TrialText {
 public:
  // Throws Error(kInvalidArgument) for an empty haystack, a depth outside [0, 1], or a length
  // too short to hold the needle and the question.
  TrialText(std::string_view haystack, const TrialSpec& spec);

  int64_t size() const { return size_; }
  // Bytes [begin, begin + out.size()) of the context, as tokens.
  void Fill(int64_t begin, std::span<int32_t> out) const;

  const std::string& key() const { return key_; }
  const std::string& number() const { return number_; }  // the expected answer (7 digits)
  const std::string& needle() const { return needle_; }
  const std::string& question() const { return question_; }  // question + answer prefix
  int64_t needle_position() const { return needle_begin_; }  // first token of the needle

 private:
  char At(int64_t i) const;

  std::string_view haystack_;
  std::string key_, number_, needle_, question_;
  int64_t haystack_tokens_ = 0, needle_begin_ = 0, size_ = 0;
};

struct TrialResult {
  std::string expected;  // the 7 digits
  std::string answer;    // the 7 generated tokens, as bytes
  bool correct = false;
  int64_t needle_position = 0;
  double seconds = 0;  // prefill and generation
};

// Called while a trial runs with (tokens fed so far, tokens in the context).
using Progress = std::function<void(int64_t done, int64_t total)>;

// Runs one trial on a fresh stream of `session` (it is Reset first): feeds the context in
// pieces of `piece` tokens, then generates kDigits tokens greedily. The haystack must outlive
// the call. Errors from the model propagate as titans::Error.
TrialResult RunTrial(Session& session, std::string_view haystack, const TrialSpec& spec,
                     const Progress& progress = {}, int piece = 4096);

}  // namespace titans::niah
