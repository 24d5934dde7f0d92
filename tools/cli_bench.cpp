// `titans bench`: the cost of a token and the peak resident memory against context length
// (issue 4), for the benchmark models of titans/evals/bench_models.hpp (4 layers, d_model 256:
// lmm, mac, mag, mal, the sliding-window transformer and the full-attention baseline). Every
// point is bench::MeasureContext (titans/evals/context_cost.hpp): a fresh session prefilled
// over C tokens streamed in pieces. Prints a table, writes JSON records and a plot (SVG or PNG)
// (docs/CLI.md, docs/PERFORMANCE.md). --weights bf16 runs the models with bf16 product matrices;
// the table's first line, every JSON record and the plot's title name the weights, and after
// the table a line per kind says how far the bf16 model's logits are from the float32 model's.
//
// Points a run cannot afford are skipped and recorded with the reason: a context whose growing
// KV cache (full attention) would need more than half the available memory, a context whose
// predicted prefill time exceeds --max-seconds, and every larger context of a kind after one of
// its points hit --max-seconds (that point stops after the piece that crossed the limit).
#include "cli_bench.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "io/safetensors.hpp"
#include "titans/evals/bench_models.hpp"
#include "titans/evals/context_cost.hpp"
#include "titans/evals/logit_difference.hpp"
#include "titans/evals/plot.hpp"
#include "titans/evals/utilisation.hpp"
#include "titans/titans.hpp"

namespace titans::cli {
namespace {

using bench::ContextCost;

struct BenchArgs {
  std::vector<int64_t> contexts = {1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20};
  std::vector<std::string> kinds = {"lmm", "mac", "mag", "mal", "full"};
  int threads = 0;
  int piece = 4096;
  double max_seconds = 600;
  std::string json_path, plot_path;
  std::vector<int> batch;  // non-empty: measure batched decode for these stream counts instead
  int steps = 256;         // decode steps per stream (--batch)
  std::optional<WeightType> weights;  // of the bench models; nullopt: f32, as they are made
};

// A bench model with the run's --weights.
std::shared_ptr<const Model> MakeModel(const std::string& kind, const BenchArgs& a) {
  return WithWeights(bench::MakeBenchModel(*bench::ModelKindNamed(kind)), a.weights);
}

// The kinds, in the order given, each once.
std::vector<std::string> DistinctKinds(const std::vector<std::string>& given) {
  std::vector<std::string> kinds;
  for (const std::string& kind : given) {
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
  }
  return kinds;
}

// With --weights bf16, what the speed costs in accuracy: per kind, one line of how far the bf16
// model's logits are from the float32 model's (the bench model as made) over the first 1024
// tokens of the bench stream, on the run's threads. Returns the figures by kind (for --json);
// nothing without --weights bf16.
std::map<std::string, eval::LogitDifference> PrintBf16Differences(
    const std::vector<std::string>& kinds, const BenchArgs& a, int threads) {
  std::map<std::string, eval::LogitDifference> differences;
  if (a.weights != WeightType::kBf16) return differences;
  std::vector<int32_t> tokens(1024);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = bench::StreamToken(i);
  std::printf("\n");
  for (const std::string& kind : kinds) {
    const auto f32 = bench::MakeBenchModel(*bench::ModelKindNamed(kind));
    const eval::LogitDifference d =
        eval::CompareLogits(WithWeights(f32, WeightType::kBf16), f32, tokens, threads);
    std::printf("bf16 vs f32 logits (%s, %lld tokens): %s\n", kind.c_str(),
                static_cast<long long>(d.tokens), eval::LogitDifferenceText(d).c_str());
    std::fflush(stdout);
    differences[kind] = d;
  }
  return differences;
}

struct Point {
  std::string kind;
  int64_t context = 0;
  ContextCost cost;     // cost.tokens == 0: not run
  std::string skipped;  // empty: measured; otherwise why it was not (or not completely)
  // Utilisation (titans/evals/utilisation.hpp): the products' GFLOP/s over the prefill, and the
  // rate of a square GEMM of one piece's FLOPs on the same threads, measured right after it.
  double gflops = 0, gemm_gflops = 0;

  bool measured() const { return skipped.empty(); }
};

std::string Format(const char* format, double value) {
  char text[64];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

double Mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }
double Gib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 30); }

// Prefill seconds at `context`, from the last two complete points of the kind: t = a C + b C^2
// (a: the per-token work, b: attention over a growing cache), a, b >= 0. With one point the
// cost is taken as linear. Negative when there is nothing to go by.
double PredictSeconds(const std::vector<const Point*>& done, int64_t context) {
  if (done.empty()) return -1;
  const auto c = static_cast<double>(context);
  const Point& last = *done.back();
  const double c2 = static_cast<double>(last.context), t2 = last.cost.seconds;
  if (done.size() == 1) return t2 * c / c2;
  const Point& before = *done[done.size() - 2];
  const double c1 = static_cast<double>(before.context), t1 = before.cost.seconds;
  double b = (t2 / c2 - t1 / c1) / (c2 - c1);
  double a = t1 / c1 - b * c1;
  if (b < 0) {
    b = 0;
    a = t2 / c2;
  } else if (a < 0) {
    a = 0;
    b = t2 / (c2 * c2);
  }
  return a * c + b * c * c;
}

// The point's GFLOP/s and its GEMM baseline: a square product of the FLOPs of one piece at the
// point's average cost per token, at most 4096 x 4096 x 4096 (the GEMM's rate has long reached
// its plateau there; full attention's pieces at long contexts would ask for far more).
void Utilisation(const ModelConfig& config, int piece, int threads, Point& p) {
  const double flops = bench::TokensFlops(config, 0, p.cost.tokens);
  p.gflops = flops / p.cost.seconds / 1e9;
  const double piece_flops = flops / static_cast<double>(p.cost.tokens) * piece;
  bench::GemmBaseline gemm(std::min(piece_flops, 2.0 * 4096.0 * 4096.0 * 4096.0), threads);
  p.gemm_gflops = gemm.Rate() / 1e9;
}

// Why the point should not run, or "" if it should.
std::string SkipReason(const BenchArgs& a, const ModelConfig& config,
                       const std::vector<const Point*>& done, int64_t context) {
  const int64_t cache = bench::GrowingCacheBytes(config, context);
  const int64_t available = bench::AvailableMemoryBytes();
  // A growing std::vector holds its old and its new buffer while it moves: up to twice the cache.
  if (cache > 0 && available >= 0 && 2 * cache > available) {
    return "its KV cache needs " + Format("%.1f", Gib(cache)) + " GiB (up to twice that while it " +
           "grows), " + Format("%.1f", Gib(available)) + " GiB available";
  }
  const double predicted = PredictSeconds(done, context);
  if (a.max_seconds > 0 && predicted > a.max_seconds) {
    return "predicted " + Format("%.0f", predicted) + " s of prefill > --max-seconds " +
           Format("%g", a.max_seconds);
  }
  return "";
}

void PrintHeader() {
  std::printf("%-9s %8s %10s %10s %14s %8s %6s %12s %13s %9s  %s\n", "kind", "context", "tokens/s",
              "us/token", "last us/token", "GFLOP/s", "/GEMM", "session MiB", "peak RSS MiB",
              "cpu/wall", "memory |W|/|W0|");
}

// The memory layers' fast-weight norms against their initial weights' at the end of the point:
// "min..max" over the layers, with the layers outside the alive band named ("-" without memory).
std::string MemoryColumn(const ContextCost& cost) {
  if (cost.memory_health.empty()) return "-";
  double lo = 1e300, hi = 0;
  std::string dead;
  for (const LayerHealth& l : cost.memory_health) {
    const double r = bench::WeightsRatio(l.memory);
    lo = std::min(lo, r);
    hi = std::max(hi, r);
    if (!bench::MemoryAlive(l.memory)) {
      dead += (dead.empty() ? " NOT ALIVE: layer " : ", ") + std::to_string(l.layer) +
              (l.memory.finite ? "" : " (not finite)");
    }
  }
  return Format("%.3g", lo) + ".." + Format("%.3g", hi) + dead;
}

void PrintRow(const Point& p) {
  if (p.measured()) {
    std::printf("%-9s %8s %10.0f %10.1f %14.1f %8.1f %6.2f %12.1f %13.1f %9.2f  %s\n",
                p.kind.c_str(), plot::TokenCountLabel(p.context).c_str(), p.cost.tokens_per_s(),
                1e6 * p.cost.s_per_token(), 1e6 * p.cost.last_piece_s_per_token(), p.gflops,
                p.gflops / p.gemm_gflops, Mib(p.cost.session_bytes), Mib(p.cost.peak_rss_bytes),
                p.cost.cpu_seconds / p.cost.seconds, MemoryColumn(p.cost).c_str());
  } else {
    std::printf("%-9s %8s   skipped: %s\n", p.kind.c_str(),
                plot::TokenCountLabel(p.context).c_str(), p.skipped.c_str());
  }
  std::fflush(stdout);
}

// Per kind: the largest measured context against 4K (or the smallest measured context).
void PrintRatios(const std::vector<Point>& points, const std::vector<std::string>& kinds) {
  bool header = false;
  for (const std::string& kind : kinds) {
    std::vector<const Point*> measured;  // by context: points are in increasing context
    for (const Point& p : points) {
      if (p.kind == kind && p.measured()) measured.push_back(&p);
    }
    if (measured.size() < 2) continue;
    const auto at_4k = std::find_if(measured.begin(), measured.end(),
                                    [](const Point* p) { return p->context == 4096; });
    const Point& reference = at_4k != measured.end() ? **at_4k : *measured.front();
    const Point& largest = *measured.back();
    if (&reference == &largest) continue;
    if (!header) {
      std::printf("\nlargest context against the reference (time per token; peak memory):\n");
      header = true;
    }
    const ContextCost &r = reference.cost, &l = largest.cost;
    std::printf("%-9s %s / %s: s/token x%.3f, last piece x%.3f, peak RSS x%.3f\n", kind.c_str(),
                plot::TokenCountLabel(largest.context).c_str(),
                plot::TokenCountLabel(reference.context).c_str(), l.s_per_token() / r.s_per_token(),
                l.last_piece_s_per_token() / r.last_piece_s_per_token(),
                static_cast<double>(l.peak_rss_bytes) / static_cast<double>(r.peak_rss_bytes));
  }
}

nlohmann::ordered_json ToJson(const std::vector<Point>& points, int threads, int piece,
                              WeightType weights,
                              const std::map<std::string, eval::LogitDifference>& bf16_vs_f32) {
  auto records = nlohmann::ordered_json::array();
  for (const Point& p : points) {
    nlohmann::ordered_json r = {
        {"kind", p.kind}, {"context", p.context}, {"status", p.measured() ? "ok" : "skipped"}};
    if (!p.measured()) r["reason"] = p.skipped;
    const bool ok = p.measured();
    r["tokens_per_s"] = ok ? nlohmann::ordered_json(p.cost.tokens_per_s()) : nullptr;
    r["s_per_token"] = ok ? nlohmann::ordered_json(p.cost.s_per_token()) : nullptr;
    r["last_piece_s_per_token"] =
        ok ? nlohmann::ordered_json(p.cost.last_piece_s_per_token()) : nullptr;
    r["peak_rss_bytes"] =
        ok && p.cost.peak_rss_bytes >= 0 ? nlohmann::ordered_json(p.cost.peak_rss_bytes) : nullptr;
    r["peak_rss_per_point"] = p.cost.peak_rss_per_point;
    r["session_bytes"] =
        ok && p.cost.session_bytes >= 0 ? nlohmann::ordered_json(p.cost.session_bytes) : nullptr;
    r["tokens"] = p.cost.tokens;  // fed: less than context when --max-seconds stopped the point
    r["seconds"] = p.cost.seconds;
    r["cpu_seconds"] = p.cost.cpu_seconds;  // of the process: noise shows as cpu < wall
    r["gflops"] = ok ? nlohmann::ordered_json(p.gflops) : nullptr;
    r["gemm_gflops"] = ok ? nlohmann::ordered_json(p.gemm_gflops) : nullptr;
    r["gemm_ratio"] = ok ? nlohmann::ordered_json(p.gflops / p.gemm_gflops) : nullptr;
    r["threads"] = threads;
    r["piece"] = piece;
    r["weights"] = ToString(weights);
    // The kind's figures of PrintBf16Differences, on each of its records (there is no record per
    // kind); top1_agreement is a fraction.
    if (const auto d = bf16_vs_f32.find(p.kind); d != bf16_vs_f32.end()) {
      r["bf16_vs_f32"] = {{"tokens", d->second.tokens},
                          {"relative", d->second.relative},
                          {"max_abs", d->second.max_abs},
                          {"top1_agreement", d->second.top1_agreement}};
    }
    auto memory = nlohmann::ordered_json::array();  // each memory layer at the end of the point
    for (const LayerHealth& l : p.cost.memory_health) {
      memory.push_back({{"layer", l.layer},
                        {"weights_norm", l.memory.weights_norm},
                        {"initial_norm", l.memory.initial_norm},
                        {"momentum_norm", l.memory.momentum_norm},
                        {"finite", l.memory.finite},
                        {"alive", bench::MemoryAlive(l.memory)}});
    }
    r["memory"] = std::move(memory);
    records.push_back(std::move(r));
  }
  return records;
}

// Four charts against context length, one line per kind: the average and the last piece's time
// per token, the session's own memory and the process's peak. A skipped point is a cross with
// its reason in a note.
std::string PlotSvg(const std::vector<Point>& points, const std::vector<std::string>& kinds,
                    const std::vector<int64_t>& contexts, int threads, int piece,
                    WeightType weights) {
  plot::Axis x{.title = "context length (tokens)", .log = true, .ticks = {}};
  for (int64_t c : contexts) x.ticks.emplace_back(static_cast<double>(c), plot::TokenCountLabel(c));
  const auto chart = [&](const std::string& title, const std::string& y_title) {
    return plot::LineChart{
        .title = title, .x = x, .y = {.title = y_title, .log = true, .ticks = {}}, .series = {}};
  };
  plot::LineChart average = chart("Average time per token (prefill / C)", "microseconds per token");
  plot::LineChart last =
      chart("Last piece: time per token at C (marginal)", "microseconds per token");
  plot::LineChart session = chart("The session's own memory (state, caches)", "MiB");
  plot::LineChart peak = chart("Peak resident memory of the process", "MiB");
  for (const std::string& kind : kinds) {
    const plot::Series empty{.name = kind, .x = {}, .y = {}, .skipped = {}};
    plot::Series a = empty, l = empty, s = empty, p = empty;
    for (const Point& point : points) {
      if (point.kind != kind) continue;
      const auto c = static_cast<double>(point.context);
      if (!point.measured()) {
        for (plot::Series* series : {&a, &l, &s, &p}) series->skipped.push_back({c, point.skipped});
        continue;
      }
      a.x.push_back(c);
      a.y.push_back(1e6 * point.cost.s_per_token());
      l.x.push_back(c);
      l.y.push_back(1e6 * point.cost.last_piece_s_per_token());
      if (point.cost.session_bytes > 0) {
        s.x.push_back(c);
        s.y.push_back(Mib(point.cost.session_bytes));
      }
      if (point.cost.peak_rss_bytes > 0) {
        p.x.push_back(c);
        p.y.push_back(Mib(point.cost.peak_rss_bytes));
      }
    }
    average.series.push_back(std::move(a));
    last.series.push_back(std::move(l));
    session.series.push_back(std::move(s));
    peak.series.push_back(std::move(p));
  }
  const plot::Figure figure{
      .title = "Prefill cost against context length (4 layers, d_model 256, " +
               std::string(ToString(weights)) + " weights, " + std::to_string(threads) +
               (threads == 1 ? " thread)" : " threads)"),
      .caption =
          {"benchmark models with random weights; a fresh session per point, fed C tokens in "
           "pieces of " +
               std::to_string(piece) + "; the last piece is the final " + std::to_string(piece) +
               " tokens",
           "session: heap bytes it holds after the prefill (memory state, attention caches, "
           "scratch); peak RSS: the whole process (program, weights, buffers, session)"},
      .columns = 2};
  return plot::LineChartsSvg(figure, {average, last, session, peak});
}

int RunBench(const BenchArgs& a) {
  std::vector<int64_t> contexts = a.contexts;
  std::sort(contexts.begin(), contexts.end());
  contexts.erase(std::unique(contexts.begin(), contexts.end()), contexts.end());
  const int threads = a.threads > 0 ? a.threads : omp_get_max_threads();
  const WeightType weights = a.weights.value_or(WeightType::kF32);
  std::printf(
      "prefill of a fresh session per point, pieces of %d tokens, %s weights, %d thread%s\n",
      a.piece, ToString(weights), threads, threads == 1 ? "" : "s");
  PrintHeader();

  const std::vector<std::string> kinds = DistinctKinds(a.kinds);

  std::vector<Point> points;
  points.reserve(kinds.size() * contexts.size());  // never moves: `done` points into it
  for (const std::string& kind : kinds) {
    const auto model = MakeModel(kind, a);
    std::vector<const Point*> done;  // this kind's measured points
    std::string stopped;             // set when a point of this kind hit --max-seconds
    for (const int64_t context : contexts) {
      Point p{.kind = kind, .context = context, .cost = {}, .skipped = stopped};
      if (p.skipped.empty()) p.skipped = SkipReason(a, model->config(), done, context);
      if (p.skipped.empty()) {
        const std::string label = kind + " " + plot::TokenCountLabel(context);
        double last_report = 0;
        bench::ContextOptions options{
            .threads = threads,
            .piece = a.piece,
            .max_seconds = a.max_seconds,
            // Progress of long points on stderr, every 10 s.
            .on_piece = [&](int64_t tokens, double seconds) {
              if (seconds - last_report < 10 || tokens == context) return;
              last_report = seconds;
              const double rate = static_cast<double>(tokens) / seconds;
              std::fprintf(stderr, "bench: %s: %lld of %lld tokens, %.0f tokens/s, %.0f s left\n",
                           label.c_str(), static_cast<long long>(tokens),
                           static_cast<long long>(context), rate,
                           static_cast<double>(context - tokens) / rate);
            }};
        p.cost = bench::MeasureContext(model, context, options);
        if (!p.cost.finite) {
          throw std::runtime_error("bench: " + label + ": the model's logits are not finite");
        }
        if (!p.cost.complete()) {
          p.skipped = "stopped at --max-seconds " + Format("%g", a.max_seconds) + " after " +
                      std::to_string(p.cost.tokens) + " tokens (" + Format("%.0f", p.cost.seconds) +
                      " s)";
          stopped = "a smaller context of this kind hit --max-seconds";
        }
        if (p.measured()) Utilisation(model->config(), a.piece, threads, p);
      }
      PrintRow(p);
      points.push_back(std::move(p));
      if (points.back().measured()) done.push_back(&points.back());
    }
  }
  PrintRatios(points, kinds);
  const auto bf16_vs_f32 = PrintBf16Differences(kinds, a, threads);

  if (!a.json_path.empty()) {
    io::WriteFileAtomically(a.json_path,
                            ToJson(points, threads, a.piece, weights, bf16_vs_f32).dump(2) + "\n");
    std::printf("wrote %s\n", a.json_path.c_str());
  }
  if (!a.plot_path.empty()) {
    plot::WriteImage(a.plot_path, PlotSvg(points, kinds, contexts, threads, a.piece, weights));
    std::printf("wrote %s\n", a.plot_path.c_str());
  }
  return 0;
}

// Decode tokens per second of `streams` sessions advanced together by a BatchDecoder (one
// stream: Session::Forward of one token, the baseline), over `steps` steps after prompts of
// 0..63 tokens, stream i's of i mod 64: the streams' memory units complete at different steps,
// as independent streams' would.
double DecodeTokensPerSecond(const std::shared_ptr<const Model>& model, int streams, int steps,
                             int threads) {
  const SessionOptions options{threads};
  const size_t vocab = static_cast<size_t>(model->config().vocab_size);
  std::vector<Session> sessions;
  sessions.reserve(static_cast<size_t>(streams));
  std::vector<Session*> pointers;
  std::vector<int32_t> tokens(static_cast<size_t>(streams));
  for (int i = 0; i < streams; ++i) {
    sessions.emplace_back(model, options);
    std::vector<int32_t> prompt(static_cast<size_t>(i % 64));
    for (size_t j = 0; j < prompt.size(); ++j) prompt[j] = bench::StreamToken(j);
    std::vector<float> prompt_logits(prompt.size() * vocab);
    sessions.back().Forward(prompt, prompt_logits);
  }
  pointers.reserve(sessions.size());
  for (Session& s : sessions) pointers.push_back(&s);
  BatchDecoder decoder(model, streams, options);
  std::vector<float> logits(static_cast<size_t>(streams) * vocab);
  const auto step = [&] {
    for (int i = 0; i < streams; ++i) tokens[i] = bench::StreamToken(sessions[i].position());
    if (streams == 1) {
      sessions[0].Forward(tokens, logits);
    } else {
      decoder.Step(pointers, tokens, logits);
    }
  };
  step();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) step();
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  return static_cast<double>(streams) * steps / seconds.count();
}

// Prefill tokens per second of one session fed `tokens` tokens in pieces of 64 (the engine's
// piece, src/model/arch/titans.cpp): every product has 64 rows, as a batch of 64 streams, so
// this is about the most batched decode can reach.
double PrefillTokensPerSecond(const std::shared_ptr<const Model>& model, int tokens, int threads) {
  constexpr int kPiece = 64;
  Session session(model, SessionOptions{threads});
  const size_t vocab = static_cast<size_t>(model->config().vocab_size);
  std::vector<int32_t> piece(kPiece);
  std::vector<float> logits(kPiece * vocab);
  const auto feed = [&] {
    for (int j = 0; j < kPiece; ++j) piece[j] = bench::StreamToken(session.position() + j);
    session.Forward(piece, logits);
  };
  feed();  // warm-up
  const int pieces = std::max(1, tokens / kPiece);
  const auto start = std::chrono::steady_clock::now();
  for (int p = 0; p < pieces; ++p) feed();
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  return static_cast<double>(pieces) * kPiece / seconds.count();
}

// Prompt tokens per second of `streams` fresh sessions each fed a prompt of `length` tokens:
// with one BatchDecoder::Prefill of all of them (`batched`), or one Session::Forward after
// another (the baseline). Repeated (the sessions reset in between, untimed) until at least 8192
// tokens were fed, after one untimed repetition.
double PromptsTokensPerSecond(const std::shared_ptr<const Model>& model, int streams, int length,
                              int threads, bool batched) {
  const SessionOptions options{threads};
  const size_t vocab = static_cast<size_t>(model->config().vocab_size);
  std::vector<Session> sessions;
  sessions.reserve(static_cast<size_t>(streams));
  std::vector<Session*> pointers;
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(streams));
  std::vector<std::span<const int32_t>> views;
  for (int i = 0; i < streams; ++i) {
    sessions.emplace_back(model, options);
    pointers.push_back(&sessions.back());
    for (int j = 0; j < length; ++j) prompts[i].push_back(bench::StreamToken(1000 * i + j));
    views.emplace_back(prompts[i]);
  }
  BatchDecoder decoder(model, streams, options);
  std::vector<float> logits(static_cast<size_t>(streams) * length * vocab);
  const auto feed = [&] {
    if (batched) {
      decoder.Prefill(pointers, views, logits);
    } else {
      for (int i = 0; i < streams; ++i) {
        sessions[i].Forward(prompts[i], std::span<float>(logits.data(), length * vocab));
      }
    }
  };
  feed();  // warm-up
  const int repetitions = std::max(1, 8192 / (streams * length));
  std::chrono::duration<double> seconds{0};
  for (int r = 0; r < repetitions; ++r) {
    for (Session& s : sessions) s.Reset();
    const auto start = std::chrono::steady_clock::now();
    feed();
    seconds += std::chrono::steady_clock::now() - start;
  }
  return static_cast<double>(repetitions) * streams * length / seconds.count();
}

// The decode row's traffic (titans/evals/utilisation.hpp, DecodeBytes): bytes per token at the
// streams' mean position over the measured steps, the rate they were read at, and that rate over
// a same-run read of a buffer of one step's bytes on the same threads.
void PrintDecodeRow(const std::string& kind, const Model& model, int streams, int steps,
                    int threads, double tokens_per_s, double one_stream) {
  double prompts = 0;  // stream i's prompt: i mod 64 tokens
  for (int i = 0; i < streams; ++i) prompts += i % 64;
  const auto position = static_cast<int64_t>(prompts / streams + 1 + steps / 2.0);
  const bench::DecodeBytes bytes = bench::DecodeBytesAt(model, position);
  const double per_token = bytes.per_token(streams);
  bench::BandwidthBaseline read(per_token * streams, threads);
  const double rate = per_token * tokens_per_s, bound = read.Rate();
  std::printf("%-10s %8d %12.0f %11.2fx %12.2f %8.1f %10.2f\n", kind.c_str(), streams, tokens_per_s,
              tokens_per_s / one_stream, per_token / (1 << 20), rate / 1e9, rate / bound);
}

// The prompts of the batched prefill rows: short, as a chat turn's (a session alone runs them as
// one piece of 32 rows).
constexpr int kPromptTokens = 32;

int RunBatchBench(const BenchArgs& a) {
  const int threads = a.threads > 0 ? a.threads : omp_get_max_threads();
  std::printf(
      "decode, %d steps per stream after prompts of 0..63 tokens, %s weights, %d thread%s: 1 "
      "stream with Session::Forward, N streams with BatchDecoder::Step; prefill: one stream fed "
      "%d tokens in pieces of 64 (the rate batching approaches); prompts: N fresh sessions fed "
      "%d tokens each with BatchDecoder::Prefill, vs one Session::Forward after another\n",
      a.steps, ToString(a.weights.value_or(WeightType::kF32)), threads, threads == 1 ? "" : "s",
      a.steps * 4, kPromptTokens);
  std::printf("%-10s %8s %12s %12s %12s %8s %10s\n", "kind", "streams", "tokens/s", "vs 1 stream",
              "MiB/token", "GB/s", "/bandwidth");
  for (const std::string& kind : a.kinds) {
    const auto model = MakeModel(kind, a);
    const double one = DecodeTokensPerSecond(model, 1, a.steps, threads);
    PrintDecodeRow(kind, *model, 1, a.steps, threads, one, one);
    for (const int streams : a.batch) {
      if (streams == 1) continue;
      const double many = DecodeTokensPerSecond(model, streams, a.steps, threads);
      PrintDecodeRow(kind, *model, streams, a.steps, threads, many, one);
    }
    const double prefill = PrefillTokensPerSecond(model, a.steps * 4, threads);
    std::printf("%-10s %8s %12.0f %11.2fx\n", kind.c_str(), "prefill", prefill, prefill / one);
    for (const int streams : a.batch) {
      if (streams == 1) continue;
      const double alone = PromptsTokensPerSecond(model, streams, kPromptTokens, threads, false);
      const double together = PromptsTokensPerSecond(model, streams, kPromptTokens, threads, true);
      std::printf("%-10s %8s %12.0f %11.2fx  (%d prompts of %d tokens; one by one: %.0f)\n",
                  kind.c_str(), "prompts", together, together / alone, streams, kPromptTokens,
                  alone);
    }
    std::fflush(stdout);
  }
  PrintBf16Differences(DistinctKinds(a.kinds), a, threads);
  return 0;
}

}  // namespace

std::function<int()> AddBenchCommand(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Prefill cost and peak memory against context length for the benchmark models (4 layers, "
      "d_model 256, random weights): a fresh session per point, fed in pieces "
      "(docs/PERFORMANCE.md)");
  const CLI::Validator tokens = TokenCount();
  cmd->add_option("--contexts", args->contexts, "context lengths in tokens (K = 1024, M = 1024^2)")
      ->delimiter(',')
      ->transform(tokens)
      ->check(AtLeast(1))
      ->type_name("N,N,...")
      ->capture_default_str();
  std::vector<std::string> names(bench::kModelKindNames.begin(), bench::kModelKindNames.end());
  cmd->add_option("--kinds", args->kinds,
                  "models: lmm, mac, mag, mal (Titans), attention (window 512), full (full "
                  "attention)")
      ->delimiter(',')
      ->check(CLI::IsMember(names))
      ->type_name("KIND,...")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "OpenMP threads (0 = all)")
      ->check(AtLeast(0))
      ->capture_default_str();
  cmd->add_option("--piece", args->piece, "tokens per Forward call")
      ->check(AtLeast(1))
      ->capture_default_str();
  cmd->add_option("--max-seconds", args->max_seconds,
                  "time limit of one point's prefill (0 = none): a point stops after the piece "
                  "that crosses it, and larger contexts predicted to cross it are skipped")
      ->check(AtLeast(0))
      ->capture_default_str();
  cmd->add_option("--json", args->json_path,
                  "write one record per kind and context (kind, context, tokens_per_s, "
                  "s_per_token, peak_rss_bytes, ...)");
  cmd->add_option("--plot", args->plot_path,
                  "write a plot, SVG or PNG by the name (*.svg, *.png): average and last-piece "
                  "time per token, the session's memory and the peak RSS against context length")
      ->check(ImagePath());
  cmd->add_option("--batch", args->batch,
                  "instead of the prefill points: decode tokens/s of N streams advanced together "
                  "(BatchDecoder) against one stream, per kind and N (--contexts is not used)")
      ->delimiter(',')
      ->check(AtLeast(1))
      ->type_name("N,N,...");
  cmd->add_option("--steps", args->steps, "decode steps per stream of --batch")
      ->check(AtLeast(1))
      ->capture_default_str();
  AddWeightsOption(*cmd, args->weights, "f32");
  return [cmd, args]() {
    if (!cmd->parsed()) return -1;
    return args->batch.empty() ? RunBench(*args) : RunBatchBench(*args);
  };
}

}  // namespace titans::cli
