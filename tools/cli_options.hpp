// Option checks shared by the subcommands of the command-line program.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "titans/evals/plot.hpp"
#include "titans/model.hpp"

namespace titans::cli {

// Numbers in range, with messages in plain words ("--temperature: must be at least 0, got -1")
// instead of CLI11's Range, whose message names DBL_MAX in 300 digits. The value is checked as
// text, before CLI11 converts it to the option's type (which reports a non-integer itself).

// The number in `text`, or NaN when it is not one (the whole text must be a finite number).
inline double ParseNumber(const std::string& text) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return std::nan("");
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(value)) return std::nan("");
  return value;
}

// 0, 1, 1024, 100, 0.5: the shortest form that reads back as the same number.
inline std::string NumberText(double value) {
  char buffer[32];
  if (value == std::floor(value) && std::fabs(value) < 1e15) {  // an integer: all its digits
    std::snprintf(buffer, sizeof buffer, "%.0f", value);
    return buffer;
  }
  std::snprintf(buffer, sizeof buffer, "%.17g", value);
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

// lo <= value <= hi (either bound may be infinite, i.e. absent); `lo_open`: lo < value.
inline CLI::Validator NumberIn(double lo, double hi, bool lo_open = false) {
  std::string words;
  if (std::isinf(hi)) {
    words = lo_open ? "greater than " + NumberText(lo) : "at least " + NumberText(lo);
  } else if (lo_open) {
    words = "greater than " + NumberText(lo) + " and at most " + NumberText(hi);
  } else {
    words = "between " + NumberText(lo) + " and " + NumberText(hi);
  }
  return CLI::Validator(
      [lo, hi, lo_open, words](std::string& text) -> std::string {
        const double v = ParseNumber(text);
        if (std::isnan(v)) return "must be a number " + words + ", got \"" + text + "\"";
        if ((lo_open ? v <= lo : v < lo) || v > hi) return "must be " + words + ", got " + text;
        return "";
      },
      "");
}
inline CLI::Validator AtLeast(double lo) {
  return NumberIn(lo, std::numeric_limits<double>::infinity());
}
inline CLI::Validator GreaterThan(double lo) {
  return NumberIn(lo, std::numeric_limits<double>::infinity(), true);
}
inline CLI::Validator Between(double lo, double hi) { return NumberIn(lo, hi); }

// The largest token count an option takes: 2^40 (1024G), far beyond any run, so that a typo of
// many digits is refused instead of saturating to 2^63 - 1 and running.
inline constexpr uint64_t kMaxTokenCount = uint64_t{1} << 40;

// A token count: digits with an optional binary suffix, K = 1024, M = 1024^2, G = 1024^3 (either
// case), at most kMaxTokenCount; the text is rewritten as the plain number for CLI11.
inline CLI::Validator TokenCount() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::string refused =
            "must be a token count such as 4096, 4K or 1M (K = 1024, M = 1024^2, G = 1024^3) "
            "between 0 and 1024G, got \"" +
            text + "\"";
        size_t digits = 0;
        while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
          ++digits;
        }
        if (digits == 0 || digits > 13 || text.size() > digits + 1) return refused;
        uint64_t value = std::stoull(text.substr(0, digits));  // < 10^13: no overflow
        if (text.size() == digits + 1) {
          const char suffix =
              static_cast<char>(std::toupper(static_cast<unsigned char>(text.back())));
          const int shift = suffix == 'K' ? 10 : suffix == 'M' ? 20 : suffix == 'G' ? 30 : -1;
          if (shift < 0 || value > (kMaxTokenCount >> shift)) return refused;
          value <<= shift;
        }
        if (value > kMaxTokenCount) return refused;
        text = std::to_string(value);
        return "";
      },
      "");
}

// A seed: an integer between 0 and 2^64 - 1 (CLI11 would read "-1" as 2^64 - 1).
inline CLI::Validator SeedValue() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::string refused = "must be an integer between 0 and " +
                              std::to_string(std::numeric_limits<uint64_t>::max()) + ", got \"" +
                              text + "\"";
        if (text.empty() || text.size() > 20 ||
            !std::all_of(text.begin(), text.end(),
                         [](unsigned char c) { return std::isdigit(c) != 0; })) {
          return refused;
        }
        errno = 0;
        std::strtoull(text.c_str(), nullptr, 10);
        return errno == ERANGE ? refused : "";
      },
      "");
}

// Refuses (CLI::ValidationError: exit status 2) a command line whose outputs name the same file
// as one of its inputs or as each other: the output would replace the input before it is read,
// or one output the other. A pair
// `allowed` (output, input) may name the same file (--save-state over the --load-state it read).
// Files that exist are compared by identity, others by their normalised absolute path.
inline void RefuseCollisions(const std::vector<std::pair<std::string, std::string>>& inputs,
                             const std::vector<std::pair<std::string, std::string>>& outputs,
                             const std::pair<std::string, std::string>& allowed = {}) {
  auto same = [](const std::string& a, const std::string& b) {
    std::error_code error;
    if (std::filesystem::equivalent(a, b, error) && !error) return true;
    const auto ca = std::filesystem::weakly_canonical(std::filesystem::absolute(a), error);
    if (error) return a == b;
    const auto cb = std::filesystem::weakly_canonical(std::filesystem::absolute(b), error);
    return error ? a == b : ca == cb;
  };
  for (size_t o = 0; o < outputs.size(); ++o) {
    const auto& [out_name, out_path] = outputs[o];
    if (out_path.empty()) continue;
    for (const auto& [in_name, in_path] : inputs) {
      if (in_path.empty() || (out_name == allowed.first && in_name == allowed.second)) continue;
      if (same(out_path, in_path)) {
        throw CLI::ValidationError(
            out_name, out_path + " is the " + in_name + " file: writing it would destroy it");
      }
    }
    for (size_t p = 0; p < o; ++p) {
      if (!outputs[p].second.empty() && same(out_path, outputs[p].second)) {
        throw CLI::ValidationError(out_name, out_path + " is also the " + outputs[p].first +
                                                 " file: one would overwrite the other");
      }
    }
  }
}

// --plot FILE: *.svg, or *.png with rsvg-convert on PATH (plot::WriteImage), checked before a
// long run rather than after it.
inline CLI::Validator ImagePath() {
  return CLI::Validator([](std::string& path) { return plot::ImagePathProblem(path); },
                        "FILE.svg|FILE.png");
}

// A WeightType option by name, "f32" or "bf16" (titans::ToString): `--weights` of the commands
// that run a model, `--to` of convert-weights. Any other value is refused by CLI11 ("--weights:
// fp16 not in {f32,bf16}", exit status 2); unset, `type` keeps its value.
inline CLI::Option* AddWeightTypeOption(CLI::App& cmd, const std::string& name,
                                        std::optional<WeightType>& type, const std::string& help) {
  const std::vector<std::string> names = {ToString(WeightType::kF32), ToString(WeightType::kBf16)};
  return cmd
      .add_option_function<std::string>(
          name,
          [&type](const std::string& text) {
            type = text == ToString(WeightType::kBf16) ? WeightType::kBf16 : WeightType::kF32;
          },
          help)
      ->check(CLI::IsMember(names).description(""))  // the type name lists the names
      ->type_name("f32|bf16");
}

// --weights f32|bf16: how the run's model stores its product matrices; `default_words` says what
// an unset option (nullopt) means.
inline CLI::Option* AddWeightsOption(CLI::App& cmd, std::optional<WeightType>& type,
                                     const std::string& default_words) {
  return AddWeightTypeOption(
      cmd, "--weights", type,
      "how the model's product matrices (attention and memory projections, feed-forward, LM "
      "head) are stored for this run: f32, or bf16 (rounded to bf16: half the bytes a decode "
      "step reads of them; everything else stays f32) [" +
          default_words + "]");
}

// `model` with its product matrices stored as `type` (nullopt: as they are): `model` itself when
// it already stores them so, otherwise a converted copy (to bf16 the values are rounded; to f32
// a bf16 model's rounded values are kept).
inline std::shared_ptr<const Model> WithWeights(std::shared_ptr<const Model> model,
                                                std::optional<WeightType> type) {
  if (!type || model->weight_type() == *type) return model;
  return std::make_shared<const Model>(model->config(), model->weights(), *type);
}

}  // namespace titans::cli
