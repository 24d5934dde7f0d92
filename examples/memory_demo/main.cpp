// memory_demo: the neural long-term memory at work, in one small program.
//
// It stores 8 key -> value "needles", streams a long "haystack" of repeating filler pairs
// (saving the session to a file midway and continuing in a fresh session loaded from it), and
// then asks the memory for the needles' values again.
//
// The memory's weights are *constructed*, not trained, so that recall means something without a
// training run. With depth 1 the memory is one dh x dh matrix W, and with no momentum a write is
// the gated delta rule (docs/SEMANTICS.md 1.3, invariant 9):
//     W <- (1 - alpha) W - 2 theta k^T (k W - v)
// We choose the projections so that an input row [key | value] gives k = key / |key| and
// v = value, theta = 0.5 (one write of a unit key stores its value exactly: k W_new = v) and
// alpha ~ 1e-7 (almost no forgetting). A write is proportional to the error k W - v, so once the
// memory predicts the repeating haystack, more of it changes (almost) nothing: the surprise falls
// to float rounding and the needles stay. Recall is still not perfect, and should not be: while
// the haystack is new, its writes set W along the 16 filler keys to whatever maps those keys to
// their values, and a random needle key has about 16/128 of its energy in that subspace. Add the
// cross-talk of the other associations and expect cosines near 0.9, not 1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <vector>

#include "titans/titans.hpp"

namespace {

constexpr int kDh = 128;      // head width: keys and values live in R^128
constexpr int kD = 2 * kDh;   // input row = [key | value]
constexpr int kChunk = 16;    // commit block: tokens written together
constexpr int kNeedles = 8;   // associations to remember
constexpr int kFillers = 16;  // the haystack repeats a cycle of this many pairs
constexpr int kTotal = 4000;  // needles + haystack, a multiple of kChunk (see Recall)
constexpr int kHaystack = kTotal - kNeedles;

using Vec = std::vector<float>;
struct Pair {
  Vec key, value;
};

// A Gaussian vector scaled to unit length (a random direction in R^dh).
Vec RandomUnit(std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Vec v(kDh);
  double norm2 = 0;
  for (float& x : v) {
    x = normal(rng);
    norm2 += static_cast<double>(x) * x;
  }
  for (float& x : v) x = static_cast<float>(x / std::sqrt(norm2));
  return v;
}

double Dot(const float* a, const float* b) {
  double s = 0;
  for (int i = 0; i < kDh; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}
double Cosine(const float* a, const float* b) {
  return Dot(a, b) / std::sqrt(Dot(a, a) * Dot(b, b) + 1e-300);
}

// The input row [key | value]; value may be empty for a pure query [key | 0].
Vec Row(const Vec& key, const Vec& value) {
  Vec row(kD, 0.0f);
  std::copy(key.begin(), key.end(), row.begin());
  std::copy(value.begin(), value.end(), row.begin() + kDh);
  return row;
}

titans::MemoryConfig DemoConfig() {
  auto cfg = titans::MemoryConfig::Paper(kD, /*heads=*/1, kDh, /*depth=*/1, kChunk);
  cfg.store_norm = cfg.retrieve_norm = false;  // keep the raw key/value halves
  cfg.conv_kernel = 0;                         // each token's k, v is its own row
  cfg.qkv_activation = titans::Activation::kNone;
  cfg.qk_norm = titans::QkNorm::kL2;  // unit keys: that is what makes theta = 0.5 exact
  cfg.momentum = false;               // plain delta rule
  cfg.max_lr = 1.0f;
  cfg.output_proj = true;
  cfg.Validate();
  return cfg;
}

// b_theta = 0 gives theta = sigmoid(0) = 0.5; a very negative b_theta switches writing off.
std::shared_ptr<const titans::NeuralMemory> BuildMemory(const titans::MemoryConfig& cfg,
                                                        float b_theta) {
  // Random() gives every tensor its right shape; we then overwrite all of them that matter.
  auto w = titans::MemoryWeights::Random(cfg, /*seed=*/7);
  auto fill = [](Vec& m, float x) { std::fill(m.begin(), m.end(), x); };
  fill(w.w_q, 0);  // [d, dh]: [I; 0], the query and key are the key half of the row
  fill(w.w_k, 0);
  fill(w.w_v, 0);  // [d, dh]: [0; I], the value is the value half
  for (int i = 0; i < kDh; ++i) {
    w.w_q[i * kDh + i] = w.w_k[i * kDh + i] = 1;
    w.w_v[(kDh + i) * kDh + i] = 1;
  }
  fill(w.w_theta, 0), fill(w.b_theta, b_theta);  // gates that ignore the input
  fill(w.w_alpha, 0), fill(w.b_alpha, -16.0f);   // alpha = sigmoid(-16) ~ 1.1e-7 per token
  fill(w.mlp[0], 0);                             // W0 = 0: the memory starts empty
  fill(w.w_out, 0);  // [dh, d]: [0 | I], the recalled value lands in the value half
  for (int i = 0; i < kDh; ++i) w.w_out[i * kD + kDh + i] = 1;
  return std::make_shared<const titans::NeuralMemory>(cfg, std::move(w));
}

// A 128-wide memory is far too small to be worth splitting across OpenMP threads: the barriers
// would cost more than the arithmetic (and badly so on a busy machine).
const titans::SessionOptions kOneThread{.threads = 1};

struct StreamResult {
  titans::MemorySession session;
  // Per full filler cycle: mean |prediction - value|^2. It cannot fall below float32 rounding
  // (~1e-11 here), since the memory computes in float.
  std::vector<double> surprise;
};

// Needles, then the haystack; with `checkpoint`, save midway and go on in a reloaded session.
StreamResult Stream(const std::shared_ptr<const titans::NeuralMemory>& memory,
                    const std::vector<Pair>& needles, const std::vector<Pair>& fillers,
                    const std::filesystem::path* checkpoint) {
  titans::MemorySession session(memory, kOneThread);
  Vec out(kD);
  for (const Pair& p : needles) session.Forward(Row(p.key, p.value), out);  // one token each

  // The haystack goes in one filler cycle per Forward call. Each token's output is the read
  // with the weights of the last commit, i.e. the memory's prediction for that key before the
  // token is written: its distance to the value is the surprise the write will correct.
  std::vector<double> surprise;
  const int cycles = (kHaystack + kFillers - 1) / kFillers;
  for (int c = 0; c < cycles; ++c) {
    const int n = std::min(kFillers, kHaystack - c * kFillers);
    Vec rows;
    for (int i = 0; i < n; ++i) {
      const Vec row = Row(fillers[i].key, fillers[i].value);
      rows.insert(rows.end(), row.begin(), row.end());
    }
    Vec outs(static_cast<size_t>(n) * kD);
    session.Forward(rows, outs);
    double err = 0;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < kDh; ++j) {
        const double e = outs[i * kD + kDh + j] - fillers[i].value[j];
        err += e * e;
      }
    }
    if (n == kFillers) surprise.push_back(err / n);

    if (checkpoint && c + 1 == cycles / 2) {
      // Mid-chunk on purpose: the state file also holds the tokens not yet written.
      session.Save(checkpoint->string());
      titans::MemorySession reloaded(memory, kOneThread);  // fresh, on the same NeuralMemory
      reloaded.Load(checkpoint->string());
      std::printf("  saved at position %lld to %s (%llu bytes), reloaded into a new session\n",
                  static_cast<long long>(session.position()), checkpoint->string().c_str(),
                  static_cast<unsigned long long>(std::filesystem::file_size(*checkpoint)));
      session = std::move(reloaded);  // and carry on streaming in it
    }
  }
  return {std::move(session), std::move(surprise)};
}

struct Recalled {
  double cosine, norm;
  bool nearest_correct;
};

// Queries [key | 0] on a clone: a query is also a store input and would write key -> 0, but the
// clone is thrown away. The stream ends on a commit boundary, so every query reads the weights
// that include the whole haystack; a query's own write lands only at the end of its chunk, so
// up to kChunk queries in a row all read the same weights.
std::vector<Recalled> Recall(const titans::MemorySession& session,
                             const std::vector<Pair>& needles) {
  titans::MemorySession probe = session.Clone();
  std::vector<Recalled> result;
  Vec out(kD);
  for (int i = 0; i < kNeedles; ++i) {
    probe.Forward(Row(needles[i].key, {}), out);
    const float* got = out.data() + kDh;  // the value half of the output
    int best = 0;                         // the needle whose value is nearest to what came back
    for (int j = 1; j < kNeedles; ++j) {
      if (Cosine(got, needles[j].value.data()) > Cosine(got, needles[best].value.data())) best = j;
    }
    result.push_back({Cosine(got, needles[i].value.data()), std::sqrt(Dot(got, got)), best == i});
  }
  return result;
}

}  // namespace

int main() {
  try {
    const titans::MemoryConfig cfg = DemoConfig();
    const auto memory = BuildMemory(cfg, /*b_theta=*/0.0f);       // theta = 0.5
    const auto no_writes = BuildMemory(cfg, /*b_theta=*/-30.0f);  // theta = 9e-14

    std::mt19937 rng(2024);
    std::vector<Pair> needles(kNeedles), fillers(kFillers);
    for (Pair& p : needles) p = {RandomUnit(rng), RandomUnit(rng)};
    for (Pair& p : fillers) p = {RandomUnit(rng), RandomUnit(rng)};

    std::printf("titans memory demo: linear memory (dh = %d), gated delta rule, chunk = %d\n", kDh,
                kChunk);
    std::printf("stored %d needle associations (key -> value), one token each\n", kNeedles);
    std::printf("streaming a haystack of %d tokens: %d filler pairs repeated\n", kHaystack,
                kFillers);
    const auto file = std::filesystem::temp_directory_path() / "titans_memory_demo.safetensors";
    StreamResult run = Stream(memory, needles, fillers, &file);

    std::printf("  surprise (mean |prediction - value|^2 per token; values have unit length):\n");
    for (int c : {1, 2, 3, 4, 6, 10, 20, 50, 100, 200, static_cast<int>(run.surprise.size())}) {
      if (c <= static_cast<int>(run.surprise.size()))
        std::printf("    cycle %4d: %.2e\n", c, run.surprise[c - 1]);
    }

    std::printf("recall at position %lld (queries [key | 0] on a clone of the session):\n",
                static_cast<long long>(run.session.position()));
    std::printf("  needle  cosine  |recalled|  nearest is right\n");
    const std::vector<Recalled> recall = Recall(run.session, needles);
    int held = 0;
    double mean_cos = 0;
    for (int i = 0; i < kNeedles; ++i) {
      std::printf("  %6d  %6.3f  %10.3f  %s\n", i, recall[i].cosine, recall[i].norm,
                  recall[i].nearest_correct ? "yes" : "no");
      held += recall[i].nearest_correct;
      mean_cos += recall[i].cosine / kNeedles;
    }
    std::printf("recall held: %d/%d associations, mean cosine %.2f after %d tokens of haystack\n",
                held, kNeedles, mean_cos, kHaystack);

    // Contrast: the same stream into a memory that (almost) never writes. Cosine alone does not
    // care about scale, so we also show how little comes back.
    const StreamResult off = Stream(no_writes, needles, fillers, nullptr);
    const std::vector<Recalled> off_recall = Recall(off.session, needles);
    int off_held = 0;
    double off_cos = 0, off_norm = 0;
    for (const Recalled& r : off_recall) {
      off_held += r.nearest_correct;
      off_cos += r.cosine / kNeedles;
      off_norm += r.norm / kNeedles;
    }
    std::printf(
        "contrast, writes off (theta = 9e-14): %d/%d, mean cosine %.2f, "
        "mean |recalled| %.1e\n",
        off_held, kNeedles, off_cos, off_norm);
    return 0;
  } catch (const titans::Error& e) {  // bad config or weights, state file IO, ...
    std::fprintf(stderr, "memory_demo: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // e.g. no usable temp directory
    std::fprintf(stderr, "memory_demo: %s\n", e.what());
    return 1;
  }
}
