// `titans niah`: runs the needle-in-a-haystack grid (context lengths x needle depths x trials)
// on the constructed demo model or a model file, prints the accuracy table, and writes JSON and
// one figure of heatmaps (the model and its baselines side by side). docs/NIAH.md describes the
// task and the model; docs/CLI.md the options. With bf16 weights it first says how far the
// model's logits are from its float32 form's.
#include "cli_niah.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "cli_progress.hpp"
#include "io/safetensors.hpp"
#include "titans/evals/logit_difference.hpp"
#include "titans/evals/niah.hpp"
#include "titans/evals/plot.hpp"
#include "titans/titans.hpp"

namespace titans::cli {
namespace {

struct NiahArgs {
  std::string model_path;     // empty: the constructed demo model
  std::string haystack_path;  // empty: the noise block
  std::vector<int64_t> lengths = {1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20};
  std::vector<double> depths = {0, 25, 50, 75, 100};  // percent
  int trials = 3;
  uint64_t seed = 0;
  int window = 256;
  int threads = 1;  // the demo model is small: a second thread gains little and suffers most
                    // when another process holds a core
  bool baseline = false;
  int64_t full_max = 1 << 14;
  std::string json_path, plot_path;
  std::optional<WeightType> weights;  // of every model run; nullopt: as made or stored
};

std::string DepthLabel(double percent) {
  std::ostringstream s;
  s << percent << "%";
  return s.str();
}

// A distinct, reproducible needle (key and number) per trial of every cell.
uint64_t TrialSeed(uint64_t seed, int64_t length, double depth, int trial) {
  uint64_t x = seed;
  for (uint64_t v : {static_cast<uint64_t>(length), static_cast<uint64_t>(depth * 1000.0),
                     static_cast<uint64_t>(trial)}) {
    x ^= v + 0x9e3779b97f4a7c15ULL + (x << 6) + (x >> 2);
  }
  return x;
}

struct TrialRecord {
  std::string expected, answer;
};

struct Cell {
  int64_t length = 0;
  double depth = 0;  // percent
  int correct = 0;
  double seconds = 0;
  std::vector<TrialRecord> trials;
  double accuracy() const {
    return static_cast<double>(correct) / static_cast<double>(trials.size());
  }
};

struct GridRun {
  std::string name;                       // "titans", "writes_off", "full_attention"
  std::string description;                // one line for the table's title
  std::vector<Cell> cells;                // lengths x depths, in the order of the grid
  WeightType weights = WeightType::kF32;  // of the model run

  // The cell of (length, depth), or null where the run skipped it (a baseline's long lengths).
  const Cell* Find(int64_t length, double depth) const {
    for (const Cell& c : cells) {
      if (c.length == length && c.depth == depth) return &c;
    }
    return nullptr;
  }
};

GridRun RunGrid(const std::string& name, const std::string& description,
                std::shared_ptr<const Model> model, const std::string& haystack,
                const std::vector<int64_t>& lengths, const NiahArgs& a) {
  GridRun run{name, description, {}, model->weight_type()};
  int64_t total = 0;
  for (int64_t length : lengths) total += length * static_cast<int64_t>(a.depths.size()) * a.trials;
  Session session(std::move(model), SessionOptions{.threads = a.threads});
  ProgressLine progress(name, total);
  int64_t finished = 0;  // tokens of the finished trials
  for (int64_t length : lengths) {
    for (double depth : a.depths) {
      Cell cell{length, depth, 0, 0.0, {}};
      for (int trial = 0; trial < a.trials; ++trial) {
        const niah::TrialSpec spec{length, depth / 100.0, TrialSeed(a.seed, length, depth, trial)};
        const niah::TrialResult r =
            niah::RunTrial(session, haystack, spec,
                           [&](int64_t done, int64_t) { progress.Update(finished + done); });
        finished += length;
        cell.correct += r.correct ? 1 : 0;
        cell.seconds += r.seconds;
        cell.trials.push_back({r.expected, r.answer});
      }
      run.cells.push_back(std::move(cell));
    }
  }
  progress.Update(total);
  return run;
}

// A bf16 model's logits against those of `source`, the model it was converted from, in float32,
// over the context of the grid's first trial of its shortest length (the first depth), on the
// run's threads: what the bf16 rounding costs on this model and text. A model stored as bf16
// (`source` is bf16 too) has no float32 weights to compare with: its float32 form holds the same
// rounded values and computes the same logits (docs/SEMANTICS.md 3.5), so the line says so.
void PrintBf16Difference(const std::string& label, const std::shared_ptr<const Model>& model,
                         const std::shared_ptr<const Model>& source, const std::string& haystack,
                         const NiahArgs& a) {
  if (source->weight_type() == WeightType::kBf16) {
    std::cout << "bf16 vs f32 logits (" << label
              << "): not measured, the file stores bf16 weights (no float32 weights to compare)"
              << std::endl;
    return;
  }
  const int64_t length = *std::min_element(a.lengths.begin(), a.lengths.end());
  const double depth = a.depths.front();
  const niah::TrialText text(haystack,
                             {length, depth / 100.0, TrialSeed(a.seed, length, depth, 0)});
  std::vector<int32_t> tokens(static_cast<size_t>(text.size()));
  text.Fill(0, tokens);
  const eval::LogitDifference d = eval::CompareLogits(model, source, tokens, a.threads);
  std::cout << "bf16 vs f32 logits (" << label << ", " << d.tokens
            << " tokens): " << eval::LogitDifferenceText(d) << std::endl;
}

void PrintTable(const GridRun& run, const std::vector<int64_t>& lengths, const NiahArgs& a) {
  std::cout << "\n"
            << run.description << "\nexact match, % of " << a.trials
            << (a.trials == 1 ? " trial" : " trials") << "\n";
  std::cout << std::setw(8) << "depth";
  for (int64_t length : lengths) std::cout << std::setw(7) << plot::TokenCountLabel(length);
  std::cout << "\n";
  for (double depth : a.depths) {
    std::cout << std::setw(8) << DepthLabel(depth);
    for (int64_t length : lengths) {
      const Cell* found = run.Find(length, depth);
      std::cout << std::setw(7);
      if (found)
        std::cout << std::lround(100.0 * found->accuracy());
      else
        std::cout << "-";
    }
    std::cout << "\n";
  }
  double seconds = 0;
  int64_t tokens = 0;
  for (const Cell& c : run.cells) {
    seconds += c.seconds;
    tokens += c.length * static_cast<int64_t>(c.trials.size());
  }
  std::cout << "time " << Duration(seconds) << ", " << std::fixed << std::setprecision(0)
            << static_cast<double>(tokens) / seconds << " tokens/s" << std::defaultfloat
            << std::endl;
}

nlohmann::json ToJson(const std::vector<GridRun>& runs, const std::string& haystack_name) {
  nlohmann::json records = nlohmann::json::array();
  for (const GridRun& run : runs) {
    for (const Cell& c : run.cells) {
      nlohmann::json answers = nlohmann::json::array();
      for (const TrialRecord& t : c.trials) {
        answers.push_back({{"expected", t.expected}, {"answer", t.answer}});
      }
      records.push_back({{"model", run.name},
                         {"weights", ToString(run.weights)},
                         {"haystack", haystack_name},
                         {"length", c.length},
                         {"depth", c.depth},
                         {"trials", c.trials.size()},
                         {"correct", c.correct},
                         {"accuracy", c.accuracy()},
                         {"seconds", c.seconds},
                         {"answers", answers}});
    }
  }
  return records;
}

// One figure, the runs side by side under one colour bar; its caption says what a cell is.
std::string PlotSvg(const std::vector<GridRun>& runs, const std::vector<int64_t>& lengths,
                    const NiahArgs& a, const std::string& haystack_name) {
  plot::HeatmapGrid grid{.x_title = "context length (tokens)",
                         .y_title = "needle depth",
                         .x_labels = {},
                         .y_labels = {},
                         .scale_title = "exact-match accuracy",
                         .missing = "not run: full attention only up to --full-max " +
                                    plot::TokenCountLabel(a.full_max) +
                                    " (its cost grows with the square of the length)",
                         .panels = {}};
  for (int64_t length : lengths) grid.x_labels.push_back(plot::TokenCountLabel(length));
  for (double depth : a.depths) grid.y_labels.push_back(DepthLabel(depth));
  for (const GridRun& run : runs) {
    // values[depth][length]; NaN where the run has no cell.
    plot::Heatmap panel{.title = run.description,
                        .values = std::vector<std::vector<double>>(
                            a.depths.size(), std::vector<double>(lengths.size(), std::nan("")))};
    for (size_t y = 0; y < a.depths.size(); ++y) {
      for (size_t x = 0; x < lengths.size(); ++x) {
        if (const Cell* c = run.Find(lengths[x], a.depths[y])) panel.values[y][x] = c->accuracy();
      }
    }
    grid.panels.push_back(std::move(panel));
  }
  const std::string haystack = a.haystack_path.empty()
                                   ? "the noise block \"The grass is green. ...\" repeated"
                                   : haystack_name + ", repeated as needed";
  const plot::Figure figure{
      .title = "Needle in a haystack: recall of a 7-digit number by context length and depth",
      .caption = {"haystack: " + haystack + "; " + std::to_string(a.trials) +
                      (a.trials == 1 ? " trial" : " trials") + " (needles) per cell, seed " +
                      std::to_string(a.seed),
                  "a cell is the share of its trials whose 7 greedy digits are exactly the "
                  "needle's number"},
      .columns = 0};
  return plot::HeatmapsSvg(figure, grid);
}

int RunNiah(const NiahArgs& a) {
  const std::vector<int64_t>& lengths = a.lengths;
  const int64_t full_max = a.full_max;

  std::string haystack(niah::kNoiseBlock);
  std::string haystack_name = "noise";
  if (!a.haystack_path.empty()) {
    std::ifstream in(a.haystack_path, std::ios::binary);
    if (!in) throw Error(ErrorCode::kIo, "cannot open haystack file '" + a.haystack_path + "'");
    std::ostringstream text;
    text << in.rdbuf();
    haystack = text.str();
    if (haystack.empty())
      throw Error(ErrorCode::kInvalidArgument, "haystack file '" + a.haystack_path + "' is empty");
    haystack_name = std::filesystem::path(a.haystack_path).filename().string();
  }

  std::shared_ptr<const Model> source;  // the model as made or stored
  std::string description;
  if (a.model_path.empty()) {
    source = niah::BuildNeedleModel({.window = a.window});
    description = "titans: constructed model, window " + std::to_string(a.window);
  } else {
    source = Model::Load(a.model_path);
    if (source->config().vocab_size != 256) {
      throw Error(ErrorCode::kInvalidArgument,
                  "niah feeds bytes as tokens: the model needs vocab_size 256, '" + a.model_path +
                      "' has " + std::to_string(source->config().vocab_size));
    }
    description = "titans: " + a.model_path;
  }
  const std::shared_ptr<const Model> model = WithWeights(source, a.weights);
  if (model->weight_type() == WeightType::kBf16) description += ", bf16 weights";
  std::cout << "needle in a haystack: haystack " << haystack_name << ", lengths";
  for (int64_t length : lengths) std::cout << " " << plot::TokenCountLabel(length);
  std::cout << ", " << a.trials << (a.trials == 1 ? " trial" : " trials") << " per cell, seed "
            << a.seed << std::endl;
  if (model->weight_type() == WeightType::kBf16) {
    PrintBf16Difference(a.model_path.empty() ? "constructed model" : a.model_path, model, source,
                        haystack, a);
  }

  std::vector<GridRun> runs;
  runs.push_back(RunGrid("titans", description, model, haystack, lengths, a));
  PrintTable(runs.back(), lengths, a);
  if (a.baseline) {
    runs.push_back(RunGrid("writes_off", "baseline: memory writes off (step size 0)",
                           niah::WithoutMemoryWrites(*model), haystack, lengths, a));
    PrintTable(runs.back(), lengths, a);
    if (a.model_path.empty()) {
      std::vector<int64_t> fitting;
      for (int64_t length : lengths) {
        if (length <= full_max) fitting.push_back(length);
      }
      runs.push_back(RunGrid(
          "full_attention",
          "baseline: full attention, no memory (<= " + plot::TokenCountLabel(full_max) + ")",
          WithWeights(niah::BuildNeedleModel({.full_attention = true}), a.weights), haystack,
          fitting, a));
      PrintTable(runs.back(), lengths, a);
    } else {
      std::cout << "(no full-attention baseline for a model file: only the constructed model has "
                   "one)\n";
    }
  }

  if (!a.json_path.empty()) {
    io::WriteFileAtomically(a.json_path, ToJson(runs, haystack_name).dump(2) + "\n");
    std::cout << "wrote " << a.json_path << "\n";
  }
  if (!a.plot_path.empty()) {
    plot::WriteImage(a.plot_path, PlotSvg(runs, lengths, a, haystack_name));
    std::cout << "heatmaps: " << a.plot_path << "\n";
  }
  return 0;
}

}  // namespace

std::function<int()> AddNiahCommand(CLI::App& app) {
  auto args = std::make_shared<NiahArgs>();
  CLI::App* cmd = app.add_subcommand(
      "niah",
      "Needle in a haystack: recall of a 7-digit number from far back in the context, over a "
      "grid of context lengths and needle depths (docs/NIAH.md)");
  cmd->add_option("-m,--model", args->model_path,
                  "a byte-level model file (vocab 256); default: the constructed demo model");
  cmd->add_option("--haystack", args->haystack_path,
                  "a UTF-8 text file, repeated as needed; default: the noise block \"The grass is "
                  "green. ...\"");
  const CLI::Validator tokens = TokenCount();
  cmd->add_option("--lengths", args->lengths, "context lengths in tokens (K = 1024, M = 1024^2)")
      ->delimiter(',')
      ->transform(tokens)
      ->check(AtLeast(1))
      ->type_name("N,N,...")
      ->capture_default_str();
  cmd->add_option("--depths", args->depths, "needle depths in percent of the haystack")
      ->delimiter(',')
      ->check(Between(0, 100))
      ->capture_default_str();
  cmd->add_option("--trials", args->trials, "needles (seeds) per cell")
      ->check(AtLeast(1))
      ->capture_default_str();
  cmd->add_option("-s,--seed", args->seed, "first seed of the needles")->capture_default_str();
  cmd->add_option("--window", args->window, "attention window of the constructed model (1..1024)")
      ->check(Between(1, 1024))
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "OpenMP threads (0 = all)")
      ->check(AtLeast(0))
      ->capture_default_str();
  cmd->add_flag("--baseline", args->baseline,
                "also run the model with its memory writes off and (constructed model only) a "
                "full-attention model up to --full-max");
  cmd->add_option("--full-max", args->full_max,
                  "longest context for the full-attention baseline (its cost grows with the "
                  "square of the length)")
      ->transform(tokens)
      ->check(AtLeast(1))
      ->capture_default_str();
  AddWeightsOption(*cmd, args->weights,
                   "as the model file stores them; the constructed models: f32");
  cmd->add_option("--json", args->json_path, "write one record per cell and model as JSON");
  cmd->add_option("--plot", args->plot_path,
                  "write the accuracy heatmaps of every model, side by side, as SVG or PNG "
                  "(by the name: *.svg, *.png)")
      ->check(ImagePath());
  return [cmd, args]() { return cmd->parsed() ? RunNiah(*args) : -1; };
}

}  // namespace titans::cli
