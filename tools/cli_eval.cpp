// `titans eval`: bits per byte of a byte-level model on a text file, overall and by position
// bucket, with the memory's writes on, off and (--reset-every) reset every N tokens; a table on
// stdout, JSON records and an SVG chart. The measurement is titans/evals/eval.hpp; docs/CLI.md
// describes the command.
#include "cli_eval.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
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
#include "titans/evals/eval.hpp"
#include "titans/evals/plot.hpp"
#include "titans/titans.hpp"

namespace titans::cli {
namespace {

struct EvalArgs {
  std::string model_path, text_path;
  int64_t window = 0;       // 0: the model's (eval::DefaultWindow)
  int64_t reset_every = 0;  // 0: no reset variant
  int64_t max_bytes = 0;    // 0: the whole file
  int piece = 4096;
  int threads = 0;
  std::string json_path, plot_path;
  std::optional<WeightType> weights;  // nullopt: as the file stores them
};

std::string ReadText(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw Error(ErrorCode::kIo, "text file '" + path + "' is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kIo, "cannot open text file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(ErrorCode::kIo, "cannot read text file '" + path + "'");
  return text.str();
}

// An output's directory must exist before the run starts, so that a typo does not cost the run.
void CheckOutputDirectory(const std::string& option, const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    throw Error(ErrorCode::kIo,
                option + " " + path + ": the directory '" + parent.string() + "' does not exist");
  }
}

std::string BucketLabel(const eval::Bucket& b) {
  return plot::TokenCountLabel(b.begin) + "-" + plot::TokenCountLabel(b.end);
}

std::string Fixed(double v, int decimals, bool sign = false) {
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, sign ? "%+.*f" : "%.*f", decimals, v);
  return buffer;
}

// A plain text table: left-aligned first column, the others right-aligned, two spaces apart.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      const std::string pad(widths[i] - row[i].size(), ' ');
      line += i == 0 ? row[i] + pad : "  " + pad + row[i];
    }
    std::cout << line << "\n";
  }
}

void PrintResults(const eval::Evaluation& e) {
  const auto& variants = e.variants;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"bucket", "tokens", variants[0].label};
  for (size_t v = 1; v < variants.size(); ++v) {
    header.emplace_back(variants[v].label);
    header.emplace_back("diff");
  }
  rows.push_back(header);
  const auto& on = variants[0].result;
  const auto row = [&](const std::string& label, const eval::Bucket& base,
                       auto&& bucket_of) -> std::vector<std::string> {
    std::vector<std::string> r = {label, std::to_string(base.tokens),
                                  Fixed(base.bits_per_byte(), 4)};
    for (size_t v = 1; v < variants.size(); ++v) {
      const eval::Bucket& b = bucket_of(variants[v].result);
      r.push_back(Fixed(b.bits_per_byte(), 4));
      r.push_back(Fixed(b.bits_per_byte() - base.bits_per_byte(), 4, true));
    }
    return r;
  };
  for (size_t i = 0; i < on.buckets.size(); ++i) {
    rows.push_back(
        row(BucketLabel(on.buckets[i]), on.buckets[i],
            [i](const eval::Measurement& m) -> const eval::Bucket& { return m.buckets[i]; }));
  }
  rows.push_back(row("overall", on.overall,
                     [](const eval::Measurement& m) -> const eval::Bucket& { return m.overall; }));
  std::cout << "\nbits per byte by position (bucket a-b: the bytes at offsets a..b-1, each "
               "predicted from all before it;\ndiff: the variant minus "
            << variants[0].label << ")\n";
  PrintTable(rows);
  std::cout << "time:";
  for (size_t v = 0; v < variants.size(); ++v) {
    const eval::Measurement& m = variants[v].result;
    std::cout << (v ? ", " : " ") << variants[v].label << " " << Duration(m.seconds) << " ("
              << Fixed(static_cast<double>(m.overall.tokens) / std::max(m.seconds, 1e-9), 0)
              << " tokens/s)";
  }
  std::cout << std::endl;
}

nlohmann::ordered_json ToJson(const eval::Evaluation& e, const EvalArgs& a, WeightType weights) {
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  const eval::Measurement& on = e.variants[0].result;
  for (const eval::Variant& v : e.variants) {
    const auto record = [&](const eval::Bucket& b, const eval::Bucket& base, bool overall) {
      nlohmann::ordered_json r;
      r["model"] = a.model_path;
      r["weights"] = ToString(weights);
      r["text"] = a.text_path;
      r["bytes"] = e.bytes;
      r["window"] = e.window.size;
      r["variant"] = v.name;
      r["reset_every"] = v.reset_every > 0 ? nlohmann::ordered_json(v.reset_every) : nullptr;
      r["overall"] = overall;
      r["bucket_begin"] = b.begin;
      r["bucket_end"] = b.end;
      r["tokens"] = b.tokens;
      r["bits_per_byte"] = b.bits_per_byte();
      r["difference"] = b.bits_per_byte() - base.bits_per_byte();  // against writes_on
      records.push_back(std::move(r));
    };
    for (size_t i = 0; i < v.result.buckets.size(); ++i) {
      record(v.result.buckets[i], on.buckets[i], false);
    }
    record(v.result.overall, on.overall, true);
  }
  return records;
}

std::string PlotSvg(const eval::Evaluation& e, const EvalArgs& a) {
  const eval::Measurement& on = e.variants[0].result;
  plot::Axis x{.title = "position in the text (bytes; bucket midpoints)", .log = true, .ticks = {}};
  for (const eval::Bucket& b : on.buckets) {
    if (b.begin > 0)
      x.ticks.emplace_back(static_cast<double>(b.begin), plot::TokenCountLabel(b.begin));
  }
  plot::LineChart bits{.title = "Bits per byte by position",
                       .x = x,
                       .y = {.title = "bits per byte", .log = false, .ticks = {}},
                       .series = {}};
  plot::LineChart diff{.title = "Difference against " + e.variants[0].label,
                       .x = x,
                       .y = {.title = "difference (bits per byte)", .log = false, .ticks = {}},
                       .series = {}};
  for (const eval::Variant& v : e.variants) {
    const plot::Series empty{.name = v.label, .x = {}, .y = {}, .skipped = {}};
    plot::Series s = empty, d = empty;
    for (size_t i = 0; i < v.result.buckets.size(); ++i) {
      const eval::Bucket& b = v.result.buckets[i];
      const double mid = 0.5 * static_cast<double>(b.begin + b.end);
      s.x.push_back(mid);
      s.y.push_back(b.bits_per_byte());
      d.x.push_back(mid);
      d.y.push_back(b.bits_per_byte() - on.buckets[i].bits_per_byte());
    }
    bits.series.push_back(std::move(s));
    diff.series.push_back(std::move(d));
  }
  std::vector<plot::LineChart> charts = {bits};
  if (e.variants.size() > 1) charts.push_back(diff);
  const std::string title =
      "titans eval: " + std::filesystem::path(a.model_path).filename().string() + " on " +
      std::filesystem::path(a.text_path).filename().string() + " (" +
      plot::TokenCountLabel(e.bytes) + " bytes, window " + std::to_string(e.window.size) + ")";
  return plot::LineChartsSvg({.title = title, .caption = {}, .columns = 0}, charts);
}

int RunEval(const EvalArgs& a) {
  CheckOutputDirectory("--json", a.json_path);
  CheckOutputDirectory("--plot", a.plot_path);
  const std::shared_ptr<const Model> model = WithWeights(Model::Load(a.model_path), a.weights);
  std::string text = ReadText(a.text_path);
  if (text.empty())
    throw Error(ErrorCode::kInvalidArgument, "text file '" + a.text_path + "' is empty");
  const auto file_bytes = static_cast<int64_t>(text.size());
  if (a.max_bytes > 0 && file_bytes > a.max_bytes) text.resize(static_cast<size_t>(a.max_bytes));
  eval::CheckByteModel(*model);

  const eval::EvalOptions options{
      .window = a.window, .piece = a.piece, .reset_every = a.reset_every, .threads = a.threads};
  std::unique_ptr<ProgressLine> line;
  size_t shown = static_cast<size_t>(-1);
  const auto progress = [&](size_t index, const std::string& label, int64_t done, int64_t total) {
    if (index != shown) {
      line.reset();  // ends the previous variant's line
      line = std::make_unique<ProgressLine>(label, total);
      shown = index;
    }
    line->Update(done);
  };
  std::cout << "eval: " << a.model_path << " (" << model->config().layers.size()
            << " layers, d_model " << model->config().d_model
            << (model->weight_type() == WeightType::kBf16 ? ", bf16 weights" : "") << ") on "
            << a.text_path << ": " << text.size() << " bytes";
  if (static_cast<int64_t>(text.size()) < file_bytes) std::cout << " of " << file_bytes;
  std::cout << ", " << text.size() - 1 << " predicted" << std::endl;
  const eval::Evaluation e = eval::Evaluate(model, text, options, progress);
  line.reset();

  std::cout << "buckets by W = " << e.window.size << " (" << e.window.source << "); variants: ";
  for (size_t v = 0; v < e.variants.size(); ++v) {
    const eval::Variant& variant = e.variants[v];
    std::cout << (v ? "; " : "") << variant.label;
    if (variant.name == "writes_off") std::cout << " (the memory keeps its initial weights)";
    if (variant.name == "reset") {
      std::cout << " (the memory back to its initial weights every " << variant.reset_every
                << " tokens)";
    }
  }
  if (e.variants.size() == 1) std::cout << " (the model has no memory)";
  std::cout << "\n";
  PrintResults(e);

  // Both outputs are made before either is written.
  const std::string json =
      a.json_path.empty() ? "" : ToJson(e, a, model->weight_type()).dump(2) + "\n";
  const std::string image = a.plot_path.empty() ? "" : plot::ImageFile(a.plot_path, PlotSvg(e, a));
  if (!a.json_path.empty()) {
    io::WriteFileAtomically(a.json_path, json);
    std::cout << "wrote " << a.json_path << "\n";
  }
  if (!a.plot_path.empty()) {
    io::WriteFileAtomically(a.plot_path, image);
    std::cout << "wrote " << a.plot_path << "\n";
  }
  return 0;
}

}  // namespace

std::function<int()> AddEvalCommand(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Bits per byte of a byte-level model on a text file, overall and by position, with the "
      "memory's writes on, off and (--reset-every) reset every N tokens");
  cmd->add_option("MODEL", args->model_path, "a byte-level model file (vocab 256)")->required();
  cmd->add_option("TEXT", args->text_path, "the text file; its bytes are the tokens")->required();
  const CLI::Validator tokens = TokenCount();
  cmd->add_option("--window", args->window,
                  "W of the position buckets [0,W), [W,4W), [4W,16W), ... [the model's attention "
                  "window; without one, the memory's unit]")
      ->transform(tokens)
      ->check(AtLeast(1));
  cmd->add_option("--reset-every", args->reset_every,
                  "also measure the model with its memory reset to its initial weights every N "
                  "tokens (a multiple of the memory's unit; K = 1024)")
      ->transform(tokens)
      ->check(AtLeast(1));
  cmd->add_option("--max-bytes", args->max_bytes, "use only the first N bytes of the text")
      ->transform(tokens)
      ->check(AtLeast(1));
  cmd->add_option("--piece", args->piece, "tokens per Forward call")
      ->transform(tokens)
      ->check(AtLeast(1))
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "OpenMP threads (0 = all)")
      ->check(AtLeast(0))
      ->capture_default_str();
  AddWeightsOption(*cmd, args->weights, "as the file stores them");
  cmd->add_option("--json", args->json_path,
                  "write one record per variant and bucket, and per variant overall");
  cmd->add_option("--plot", args->plot_path,
                  "write a chart, SVG or PNG by the name (*.svg, *.png): bits per byte against "
                  "position, one line per variant")
      ->check(ImagePath());
  return [cmd, args]() { return cmd->parsed() ? RunEval(*args) : -1; };
}

}  // namespace titans::cli
