// Charts for the evaluations (`titans bench`, `titans niah`, `titans eval`): figures of line
// charts with log or linear axes, and figures of heatmaps of values in [0, 1] that share one
// colour bar. Made as SVG 1.1 text without dependencies; written as SVG, or as PNG through
// rsvg-convert (Debian: librsvg2-bin), which renders that same SVG text. Files are written
// atomically (a failed write leaves no partial file).
//
// Errors: titans::Error(kInvalidArgument) for malformed input (named in the message), kIo when
// the file cannot be written or the PNG cannot be made.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace titans::plot {

// What every figure has besides its charts.
struct Figure {
  std::string title;
  std::vector<std::string> caption;  // lines under the title: what was run, how it was measured
  size_t columns = 0;                // charts per row; 0: all in one row
};

// A point a series has no value for, with the reason (a skipped measurement): drawn as a cross
// on the top edge of the chart at its x, and explained in a note under the charts.
struct Skipped {
  double x = 0;
  std::string reason;
};

struct Series {
  std::string name;              // the legend's entry
  std::vector<double> x, y;      // the points, drawn in this order; a NaN y leaves a gap
  std::vector<Skipped> skipped;  // x values without a point, and why
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
  // Series i has the same colour, marker and dash pattern in every chart of a figure (so two
  // series with equal values stay distinguishable).
  std::vector<Series> series;
};

// The charts of a figure, in rows of figure.columns. Values on a log axis must be > 0; every x
// (of points and skipped points) must be finite, every y finite or NaN.
std::string LineChartsSvg(const Figure& figure, const std::vector<LineChart>& charts);

// One panel of a heatmap figure: values[row][column] in [0, 1], or NaN for a cell without a
// value (drawn grey, "n/a", and explained in the legend).
struct Heatmap {
  std::string title;
  std::vector<std::vector<double>> values;
};

// Panels side by side with the same rows and columns, coloured by one sequential scale
// (viridis: readable with any common colour-vision deficiency and in grey) that one labelled
// colour bar explains. Cells show their value in percent.
struct HeatmapGrid {
  std::string x_title, y_title;
  std::vector<std::string> x_labels, y_labels;  // columns; rows (row 0 at the top)
  std::string scale_title;  // the colour bar's label, e.g. "exact-match accuracy"
  std::string missing;      // what an "n/a" cell means; the legend shows it when there is one
  std::vector<Heatmap> panels;
};

std::string HeatmapsSvg(const Figure& figure, const HeatmapGrid& grid);

// The colour of value v in [0, 1] on the heatmaps' scale (viridis), as "#rrggbb".
std::string ScaleColour(double v);

// The contents of an image file named `path` showing a figure's SVG text: the text itself when
// the name ends in ".svg", a PNG rendered by rsvg-convert when it ends in ".png" (any case).
// Other names: kInvalidArgument. rsvg-convert is run without a shell, found on PATH; when it is
// missing or fails, Error(kIo) says so.
std::string ImageFile(const std::string& path, const std::string& svg);
// ImageFile(path, svg) written to `path` atomically.
void WriteImage(const std::string& path, const std::string& svg);

// The reason `path` cannot be written by WriteImage, checked before the work that makes the
// figure: "" when its name ends in .svg, or in .png and rsvg-convert runs; otherwise the message.
std::string ImagePathProblem(const std::string& path);

// A token count as the tables and axes show it: 4096 -> "4K", 1048576 -> "1M", 1000 -> "1000".
std::string TokenCountLabel(int64_t n);

}  // namespace titans::plot
