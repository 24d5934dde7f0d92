// Option checks shared by the subcommands of the command-line program.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "titans/evals/plot.hpp"

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

// A token count with an optional binary suffix: 4K = 4096, 1M = 1048576 (CLI11's size parser,
// with K = 1024 and the description it would add to --help removed).
inline CLI::Validator TokenCount() {
  CLI::Validator tokens = CLI::AsSizeValue(false);
  tokens.description("");
  return tokens;
}

// --plot FILE: *.svg, or *.png with rsvg-convert on PATH (plot::WriteImage), checked before a
// long run rather than after it.
inline CLI::Validator ImagePath() {
  return CLI::Validator([](std::string& path) { return plot::ImagePathProblem(path); },
                        "FILE.svg|FILE.png");
}

}  // namespace titans::cli
