// Charts as SVG for the evaluations (`titans bench`, `titans niah`): multi-series line
// charts with log or linear axes, and a heatmap of values in [0, 1]. Plain SVG 1.1 text, no
// dependencies; files are written atomically (a failed write leaves no partial file).
//
// Errors: titans::Error(kInvalidArgument) for malformed input (named in the message), kIo when
// the file cannot be written.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace titans::plot {

struct Series {
  std::string name;          // the legend's entry
  std::vector<double> x, y;  // the points, drawn in this order; a NaN y leaves a gap
};

struct Axis {
  std::string title;
  bool log = false;
  // Tick marks (value, label). Empty: automatic, powers of 10 on a log axis and steps of
  // 1, 2 or 5 x 10^k on a linear one.
  std::vector<std::pair<double, std::string>> ticks;
};

struct LineChart {
  std::string title;
  Axis x{.title = "", .log = true, .ticks = {}};
  Axis y;
  std::vector<Series> series;  // series i has colour i in every chart of a file
};

// One SVG file with the charts side by side under a common title. Values on a log axis must
// be > 0; every x must be finite, every y finite or NaN.
void WriteLineChartsSvg(const std::string& path, const std::string& title,
                        const std::vector<LineChart>& charts);
// The same SVG text, for a caller that writes it later (after other outputs succeeded).
std::string LineChartsSvg(const std::string& title, const std::vector<LineChart>& charts);

// A heatmap: values[y][x] in [0, 1], or NaN for a cell without a value (drawn grey, "n/a").
// Cells are coloured red (0) -> amber (0.5) -> green (1) and show the value in percent. Row y
// is labelled y_labels[y] (row 0 at the top), column x x_labels[x].
void WriteHeatmapSvg(const std::string& path, const std::string& title, const std::string& x_title,
                     const std::string& y_title, const std::vector<std::string>& x_labels,
                     const std::vector<std::string>& y_labels,
                     const std::vector<std::vector<double>>& values);

// A token count as the tables and axes show it: 4096 -> "4K", 1048576 -> "1M", 1000 -> "1000".
std::string TokenCountLabel(int64_t n);

}  // namespace titans::plot
