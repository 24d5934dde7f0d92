// Bits per byte of a byte-level model on a text, by position (titans/evals/eval.hpp).
#include "titans/evals/eval.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <span>
#include <utility>

#include "titans/error.hpp"
#include "titans/evals/niah.hpp"
#include "titans/evals/plot.hpp"
#include "titans/session.hpp"

namespace titans::eval {
namespace {

[[noreturn]] void Invalid(const std::string& message) {
  throw Error(ErrorCode::kInvalidArgument, message);
}

bool AnyMemory(const ModelConfig& c) {
  return std::any_of(c.layers.begin(), c.layers.end(), [](BlockKind k) { return HasMemory(k); });
}

// A sum of many doubles with the rounding error carried along (Neumaier).
class Sum {
 public:
  void Add(double v) {
    const double t = sum_ + v;
    compensation_ += std::abs(sum_) >= std::abs(v) ? (sum_ - t) + v : (v - t) + sum_;
    sum_ = t;
  }
  double value() const { return sum_ + compensation_; }

 private:
  double sum_ = 0, compensation_ = 0;
};

void CheckText(std::string_view text) {
  if (text.size() < 2) {
    Invalid("the text has " + std::to_string(text.size()) +
            (text.size() == 1 ? " byte" : " bytes") +
            "; bits per byte needs at least 2 (byte p is predicted from the bytes before it)");
  }
}

void CheckOptions(const Model& model, std::string_view text, int64_t window,
                  const MeasureOptions& o) {
  CheckByteModel(model);
  CheckText(text);
  if (window < 1) Invalid("the bucket window must be >= 1, got " + std::to_string(window));
  if (o.piece < 1) Invalid("piece must be >= 1, got " + std::to_string(o.piece));
  if (o.threads < 0) Invalid("threads must be >= 0, got " + std::to_string(o.threads));
  if (o.reset_every != 0) CheckResetEvery(model, o.reset_every);
  if (o.align < 0) Invalid("align must be >= 0, got " + std::to_string(o.align));
}

}  // namespace

double Bucket::bits_per_byte() const {
  return tokens > 0 ? nats / static_cast<double>(tokens) / std::log(2.0)
                    : std::numeric_limits<double>::quiet_NaN();
}

std::vector<Bucket> PositionBuckets(int64_t length, int64_t window) {
  if (length < 2) Invalid("buckets need a text of at least 2 bytes, got " + std::to_string(length));
  if (window < 1) Invalid("the bucket window must be >= 1, got " + std::to_string(window));
  std::vector<Bucket> buckets;
  int64_t begin = 0, end = window;
  while (begin < length) {
    Bucket b;
    b.begin = begin;
    b.end = std::min(end, length);
    b.tokens = b.end - std::max<int64_t>(b.begin, 1);
    if (b.tokens > 0) buckets.push_back(b);
    begin = b.end;
    // The next bucket is four times as far out; past the text it ends at the text's end.
    end = end > (std::numeric_limits<int64_t>::max() / 4) ? length : end * 4;
  }
  return buckets;
}

Window DefaultWindow(const ModelConfig& c) {
  if (c.architecture == Architecture::kTitansPytorchMac) {
    return {c.attention.window, "attention window"};
  }
  Window w;
  for (BlockKind kind : c.layers) {
    int64_t size = 0;
    std::string source;
    if (kind == BlockKind::kMac) {
      size = c.segment;
      source = "MAC segment";
    } else if (HasAttention(kind)) {
      size = c.attention.window;  // 0: full causal attention, no window
      source = "attention window";
    }
    if (size > 0 && (w.size == 0 || size < w.size)) w = {size, source};
  }
  if (w.size == 0 && AnyMemory(c)) w = {c.memory.unit(), "memory unit"};
  return w;
}

double NegativeLogLikelihood(const float* logits, int vocab, int target) {
  if (target < 0 || target >= vocab) {
    Invalid("target " + std::to_string(target) + " is outside the vocabulary [0, " +
            std::to_string(vocab) + ")");
  }
  double max = -std::numeric_limits<double>::infinity();
  for (int v = 0; v < vocab; ++v) {
    if (!std::isfinite(logits[v])) Invalid("a logit is not finite");
    max = std::max(max, static_cast<double>(logits[v]));
  }
  double sum = 0;  // >= 1: the largest term is exp(0)
  for (int v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - max);
  return max + std::log(sum) - static_cast<double>(logits[target]);
}

void CheckByteModel(const Model& model) {
  const int vocab = model.config().vocab_size;
  if (vocab == 0) {
    Invalid(
        "the model takes input embeddings (vocab_size 0), not tokens: bits per byte needs a "
        "byte-level model (vocab_size 256)");
  }
  if (vocab != 256) {
    Invalid(
        "bits per byte feeds the text's bytes as tokens: the model needs vocab_size 256, it "
        "has " +
        std::to_string(vocab));
  }
}

void CheckResetEvery(const Model& model, int64_t n) {
  const ModelConfig& c = model.config();
  if (n < 1) Invalid("reset every N tokens needs N >= 1, got " + std::to_string(n));
  if (!AnyMemory(c)) Invalid("the model has no memory layer to reset");
  const std::string every = "reset every " + std::to_string(n) + " tokens: ";
  if (c.architecture == Architecture::kTitansPytorchMac) {
    // The memory sees the tokens and, after every segment, the M long-term memory tokens, run
    // when the next token arrives (docs/TITANS_PYTORCH.md): after p >= 1 tokens it is at row
    // p + M floor((p - 1) / segment). The reset points k n are rows k n + M (k n / segment - 1),
    // linear in k: aligned at n and 2n means aligned at every k.
    if (n % c.segment != 0) {
      Invalid(every + "N must be a multiple of the MAC segment (" + std::to_string(c.segment) +
              ")");
    }
    const int64_t step = c.memory.unit(), m = c.tp_mac.longterm_tokens;
    for (int64_t k : {1, 2}) {
      const int64_t p = k * n, rows = p + m * ((p - 1) / c.segment);
      if (rows % step != 0) {
        Invalid(every + "after " + std::to_string(p) + " tokens the memory is at row " +
                std::to_string(rows) + " (tokens and " + std::to_string(m) +
                " long-term memory tokens per segment), not at the end of a unit of " +
                std::to_string(step) + "; choose N so that every reset falls at a unit's end");
      }
    }
    return;
  }
  const int64_t unit = c.memory.unit();
  if (n % unit != 0) {
    const bool mac = std::find(c.layers.begin(), c.layers.end(), BlockKind::kMac) != c.layers.end();
    Invalid(every + "N must be a multiple of the memory's unit (" + std::to_string(unit) +
            " tokens, written together" + (mac ? "; the MAC segment" : "") +
            "), so that a reset falls between two units");
  }
}

Measurement Measure(std::shared_ptr<const Model> model, std::string_view text, int64_t window,
                    const MeasureOptions& options, const Progress& progress) {
  if (!model) Invalid("no model");
  CheckOptions(*model, text, window, options);
  const auto start = std::chrono::steady_clock::now();
  const auto length = static_cast<int64_t>(text.size());
  const int64_t inputs = length - 1;  // the last byte is predicted, never fed
  constexpr int kVocab = 256;

  Measurement m;
  m.buckets = PositionBuckets(length, window);
  std::vector<Sum> sums(m.buckets.size());
  Sum total;
  Session session(std::move(model), SessionOptions{.threads = options.threads});
  const auto piece = static_cast<int64_t>(options.piece);
  std::vector<int32_t> tokens(static_cast<size_t>(std::min(piece, inputs)));
  std::vector<float> logits(tokens.size() * kVocab);
  size_t b = 0;
  for (int64_t fed = 0; fed < inputs;) {
    int64_t n = std::min(piece, inputs - fed);
    const int64_t align = options.reset_every > 0 ? options.reset_every : options.align;
    if (align > 0) n = std::min(n, align - fed % align);
    for (int64_t i = 0; i < n; ++i) {
      tokens[static_cast<size_t>(i)] = static_cast<uint8_t>(text[static_cast<size_t>(fed + i)]);
    }
    session.Forward(std::span<const int32_t>(tokens.data(), static_cast<size_t>(n)),
                    std::span<float>(logits.data(), static_cast<size_t>(n * kVocab)));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = fed + i + 1;  // the byte row i predicts
      double nats = 0;
      try {
        nats = NegativeLogLikelihood(logits.data() + i * kVocab, kVocab,
                                     static_cast<uint8_t>(text[static_cast<size_t>(p)]));
      } catch (const Error&) {
        Invalid("the model's logits for byte " + std::to_string(p) +
                " are not finite: the model diverged on this text");
      }
      while (p >= m.buckets[b].end) ++b;
      sums[b].Add(nats);
      total.Add(nats);
    }
    fed += n;
    if (options.reset_every > 0 && fed % options.reset_every == 0 && fed < inputs) {
      session.ResetMemory();
    }
    if (progress) progress(fed, inputs);
  }
  for (size_t i = 0; i < m.buckets.size(); ++i) m.buckets[i].nats = sums[i].value();
  m.overall = {0, length, inputs, total.value()};
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return m;
}

Evaluation Evaluate(const std::shared_ptr<const Model>& model, std::string_view text,
                    const EvalOptions& options, const VariantProgress& progress) {
  if (!model) Invalid("no model");
  const ModelConfig& c = model->config();
  Evaluation e;
  e.bytes = static_cast<int64_t>(text.size());
  if (options.window < 0)
    Invalid("the bucket window must be >= 1, got " + std::to_string(options.window));
  if (options.window > 0) {
    e.window = {options.window, "--window"};
  } else {
    e.window = DefaultWindow(c);
    if (e.window.size == 0) {
      Invalid(
          "the model has neither a windowed attention layer nor a memory: give the bucket "
          "window (--window)");
    }
  }
  const MeasureOptions on{.piece = options.piece,
                          .reset_every = 0,
                          .threads = options.threads,
                          .align = std::max<int64_t>(options.reset_every, 0)};
  CheckOptions(*model, text, e.window.size, on);  // every check before the first pass
  if (options.reset_every != 0) CheckResetEvery(*model, options.reset_every);

  const auto run = [&](const std::string& name, const std::string& label, int64_t reset_every,
                       std::shared_ptr<const Model> m) {
    const size_t index = e.variants.size();
    MeasureOptions o = on;
    o.reset_every = reset_every;
    Progress report;
    if (progress) {
      report = [&progress, index, label](int64_t done, int64_t total) {
        progress(index, label, done, total);
      };
    }
    Variant v{name, label, reset_every, Measure(std::move(m), text, e.window.size, o, report)};
    e.variants.push_back(std::move(v));
  };
  run("writes_on", "writes on", 0, model);
  if (AnyMemory(c)) run("writes_off", "writes off", 0, niah::WithoutMemoryWrites(*model));
  if (options.reset_every > 0) {
    run("reset", "reset every " + plot::TokenCountLabel(options.reset_every), options.reset_every,
        model);
  }
  return e;
}

}  // namespace titans::eval
