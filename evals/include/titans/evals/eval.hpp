// titans/evals/eval.hpp: bits per byte of a byte-level model on a text (`titans eval`,
// docs/CLI.md), overall and by position, with the memory's writes on, off, and reset every N
// tokens.
//
// The text's bytes are the tokens (vocabulary 256). One session runs over the whole text in
// pieces; the logits of byte t give the prediction of byte t + 1, so byte p (p >= 1) is
// predicted from bytes 0..p-1 and its cost is -log2 softmax(logits_{p-1})[byte p], computed in
// double from the float logits (max-shifted log-sum-exp). Bits per byte = the mean cost of the
// predicted bytes. A bucket [begin, end) holds the predictions of the bytes at positions begin
// .. end-1 (byte 0 is never predicted): [0, W), [W, 4W), [4W, 16W), ..., the last one ending at
// the text's length, where W is the model's attention window (DefaultWindow).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "titans/model.hpp"
#include "titans/model_config.hpp"

namespace titans::eval {

struct Bucket {
  int64_t begin = 0, end = 0;  // byte positions [begin, end)
  int64_t tokens = 0;          // predicted bytes in it: end - max(begin, 1)
  double nats = 0;             // their summed cost, -ln p
  double bits_per_byte() const;
};

// The buckets of a text of `length` bytes for window W >= 1: [0, W), [W, 4W), [4W, 16W), ...,
// the last one ending at `length`; a bucket without a predicted byte ([0, 1) when W = 1) is left
// out. Costs are zero. Throws Error(kInvalidArgument) for length < 2 or window < 1.
std::vector<Bucket> PositionBuckets(int64_t length, int64_t window);

// The W of the buckets: the smallest positive attention window of the model's layers (a MAC
// layer of the Titans stack: its segment, the span its attention sees; a titans-pytorch MAC
// model: attention.window); for a model without a windowed attention layer, the memory's unit
// (the tokens it writes together); size 0 when the model has neither (full attention only).
struct Window {
  int64_t size = 0;
  std::string source;  // "attention window", "MAC segment", "memory unit" or "--window"
};
Window DefaultWindow(const ModelConfig& config);

// The cost of `target` under `logits` in nats: logsumexp(logits) - logits[target], in double.
// Throws Error(kInvalidArgument) for a non-finite logit or a target outside [0, logits.size()).
double NegativeLogLikelihood(const float* logits, int vocab, int target);

struct MeasureOptions {
  int piece = 4096;         // tokens per Session::Forward call
  int64_t reset_every = 0;  // > 0: Session::ResetMemory after every reset_every tokens fed
  int threads = 0;          // the session's OpenMP threads (0 = all)
  int64_t align = 0;  // > 0: no piece crosses a multiple of align (reset_every implies its own),
                      // so that runs with and without resets are fed in the same pieces
};

// Called after every piece with (predictions done, predictions in all).
using Progress = std::function<void(int64_t done, int64_t total)>;

// One pass of a fresh session of `model` over `text`: the costs of every bucket of
// PositionBuckets(text.size(), window) and of the whole text. Checks everything first (a byte
// model, text of at least 2 bytes, window >= 1, piece >= 1, reset_every: see CheckResetEvery)
// and throws Error(kInvalidArgument) naming the problem; model errors propagate.
struct Measurement {
  std::vector<Bucket> buckets;
  Bucket overall;      // [0, text length)
  double seconds = 0;  // wall time of the pass
};
Measurement Measure(std::shared_ptr<const Model> model, std::string_view text, int64_t window,
                    const MeasureOptions& options = {}, const Progress& progress = {});

// Throws Error(kInvalidArgument) unless `model` is a byte-level token model (vocab_size 256).
void CheckByteModel(const Model& model);

// Throws Error(kInvalidArgument) unless ResetMemory can be called after every `n` tokens of a
// stream of `model` (n >= 1): the model has a memory, and every reset point is at the end of a
// memory unit: for the Titans stack n is a multiple of the memory's unit (for MAC layers that
// is the segment); for a titans-pytorch MAC model n is a multiple of the segment and the
// memory's position (tokens plus the long-term memory tokens inserted after each segment) is a
// multiple of its step at every reset point.
void CheckResetEvery(const Model& model, int64_t n);

// The variants `titans eval` compares.
struct EvalOptions {
  int64_t window = 0;  // 0: DefaultWindow(config) (which must then be > 0)
  int piece = 4096;
  int64_t reset_every = 0;  // > 0: add the variant "reset" (memory reset every N tokens)
  int threads = 0;
};

struct Variant {
  std::string name;         // "writes_on", "writes_off", "reset"
  std::string label;        // for tables and legends: "writes on", "reset every 1K", ...
  int64_t reset_every = 0;  // the reset variant's N, else 0
  Measurement result;
};

struct Evaluation {
  int64_t bytes = 0;              // the text's length
  Window window;                  // W of the buckets and where it comes from
  std::vector<Variant> variants;  // writes_on; writes_off (models with a memory); reset
};

// Called while a variant runs: (its index in Evaluation::variants, its label, done, total).
using VariantProgress =
    std::function<void(size_t index, const std::string& label, int64_t done, int64_t total)>;

// Checks every option against the model and the text before anything runs (the same errors as
// Measure, CheckResetEvery, and a model without a window when options.window is 0), then
// measures writes_on (the model as it is), writes_off (niah::WithoutMemoryWrites: the memory
// keeps W0) and, with reset_every, reset (the model with ResetMemory every reset_every tokens).
// With reset_every every variant is fed in the same pieces (aligned to it), so that reset and
// writes_on are the same computation, bit for bit, up to the first reset.
Evaluation Evaluate(const std::shared_ptr<const Model>& model, std::string_view text,
                    const EvalOptions& options, const VariantProgress& progress = {});

}  // namespace titans::eval
