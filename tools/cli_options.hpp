// Option checks shared by the subcommands of the command-line program.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <string>

namespace titans::cli {

// A token count with an optional binary suffix: 4K = 4096, 1M = 1048576 (CLI11's size parser,
// with K = 1024 and the description it would add to --help removed).
inline CLI::Validator TokenCount() {
  CLI::Validator tokens = CLI::AsSizeValue(false);
  tokens.description("");
  return tokens;
}

// --plot FILE: the charts are SVG text, so the name must end in .svg (checked before a long run
// rather than after it). rsvg-convert (Debian: librsvg2-bin) turns one into a PNG.
inline CLI::Validator SvgPath() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        std::string lower = path;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (lower.size() > 4 && lower.ends_with(".svg")) return "";
        return "plots are written as SVG: name the file *.svg (for a PNG: rsvg-convert FILE.svg "
               "-o FILE.png)";
      },
      "FILE.svg");
}

}  // namespace titans::cli
