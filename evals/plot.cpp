// Charts as SVG, and PNG through rsvg-convert (evals/include/titans/evals/plot.hpp). Layout in
// pixels; text sizes are estimated (7 px per character at the 12 px font), which is all the
// layout needs: labels are short.
//
// PNG: rsvg-convert (librsvg, Debian's librsvg2-bin) renders the SVG text this file makes, so
// both formats come from one drawing and what the tests check in the SVG is what the PNG shows;
// drawing again through Cairo would be a second renderer of every chart to keep in step, and
// linking librsvg itself would bring GLib into the library for one function.
#include "titans/evals/plot.hpp"

#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <tuple>

#include "io/safetensors.hpp"
#include "titans/error.hpp"

extern char** environ;  // the environment rsvg-convert inherits (PATH, locale)

namespace titans::plot {
namespace {

[[noreturn]] void Invalid(const std::string& problem) {
  throw Error(ErrorCode::kInvalidArgument, "plot: " + problem);
}

std::string Escape(const std::string& text) {
  std::string s;
  for (char c : text) {
    switch (c) {
      case '&':
        s += "&amp;";
        break;
      case '<':
        s += "&lt;";
        break;
      case '>':
        s += "&gt;";
        break;
      case '"':
        s += "&quot;";
        break;
      default:
        s += c;
    }
  }
  return s;
}

// A coordinate or size, to a tenth of a pixel.
std::string Px(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", v);
  return text;
}

// An automatic tick's label: "%g" with a short exponent (1e+06 -> 1e6).
std::string TickLabel(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  std::string s = text;
  const size_t e = s.find('e');
  if (e == std::string::npos) return s;
  const int exponent = std::stoi(s.substr(e + 1));
  return s.substr(0, e) + "e" + std::to_string(exponent);
}

double CharsWidth(const std::string& text) { return 7.0 * static_cast<double>(text.size()); }

void Text(std::ostream& svg, double x, double y, const std::string& text,
          const char* anchor = "middle", const std::string& extra = "") {
  svg << "<text x=\"" << Px(x) << "\" y=\"" << Px(y) << "\" text-anchor=\"" << anchor << "\""
      << extra << ">" << Escape(text) << "</text>\n";
}

std::string SvgStart(double width, double height) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
         Px(width) + "\" height=\"" + Px(height) + "\" viewBox=\"0 0 " + Px(width) + " " +
         Px(height) +
         "\" font-family=\"sans-serif\" font-size=\"12\">\n"
         "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
}

// The figure's title and caption lines, centred; returns the y below them.
constexpr double kTitleHeight = 36, kLineHeight = 16;
double TitleAndCaption(std::ostream& svg, const Figure& figure, double width) {
  Text(svg, width / 2, 24, figure.title, "middle", " font-size=\"15\" font-weight=\"bold\"");
  double y = kTitleHeight;
  for (const std::string& line : figure.caption) {
    Text(svg, width / 2, y + 4, line, "middle", " fill=\"#333\"");
    y += kLineHeight;
  }
  return y;
}

// The width the title (15 px font) and caption lines need.
double TitleAndCaptionWidth(const Figure& figure) {
  double width = 1.25 * CharsWidth(figure.title) + 40;
  for (const std::string& line : figure.caption) width = std::max(width, CharsWidth(line) + 40);
  return width;
}

// ---------------------------------------------------------------------------------------------
// Line charts.

// Tableau 10: distinct colours that stay distinct for colour-blind readers in the first few.
constexpr std::array<const char*, 10> kPalette = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                                  "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                                                  "#9c755f", "#bab0ac"};
// Dash patterns (stroke-dasharray; "" solid) and marker shapes, by series: two series with the
// same values (mag and mal in `titans bench`) still show both lines and both markers.
constexpr std::array<const char*, 5> kDashes = {"", "8 4", "2 3", "10 3 2 3", "5 2 1 2"};
enum class Marker { kCircle, kSquare, kTriangleUp, kDiamond, kTriangleDown, kCount };
constexpr std::array<const char*, 5> kMarkerNames = {"circle", "square", "triangle-up", "diamond",
                                                     "triangle-down"};

struct SeriesStyle {
  const char* colour;
  const char* dashes;
  Marker marker;
  bool hollow;  // every other marker is an outline, so a marker on top of another shows both
};

SeriesStyle StyleOf(size_t k) {
  return {kPalette[k % kPalette.size()], kDashes[k % kDashes.size()],
          static_cast<Marker>(k % static_cast<size_t>(Marker::kCount)), k % 2 == 1};
}

// An SVG shape around (x, y), about 9 px across, with its class ("marker diamond").
void DrawMarker(std::ostream& svg, const SeriesStyle& style, double x, double y) {
  const std::string paint =
      std::string("class=\"marker ") + kMarkerNames[static_cast<size_t>(style.marker)] + "\" " +
      (style.hollow
           ? std::string("fill=\"none\" stroke=\"") + style.colour + "\" stroke-width=\"1.6\""
           : std::string("fill=\"") + style.colour + "\" stroke=\"white\" stroke-width=\"0.8\"");
  auto polygon = [&](std::initializer_list<std::pair<double, double>> corners) {
    svg << "<polygon points=\"";
    const char* separator = "";
    for (const auto& [dx, dy] : corners) {
      svg << separator << Px(x + dx) << "," << Px(y + dy);
      separator = " ";
    }
    svg << "\" " << paint << "/>\n";
  };
  switch (style.marker) {
    case Marker::kCircle:
      svg << "<circle cx=\"" << Px(x) << "\" cy=\"" << Px(y) << "\" r=\"4\" " << paint << "/>\n";
      break;
    case Marker::kSquare:
      svg << "<rect x=\"" << Px(x - 3.6) << "\" y=\"" << Px(y - 3.6)
          << "\" width=\"7.2\" height=\"7.2\" " << paint << "/>\n";
      break;
    case Marker::kTriangleUp:
      polygon({{0, -5}, {4.6, 3.5}, {-4.6, 3.5}});
      break;
    case Marker::kDiamond:
      polygon({{0, -5.2}, {4.6, 0}, {0, 5.2}, {-4.6, 0}});
      break;
    case Marker::kTriangleDown:
    case Marker::kCount:
      polygon({{0, 5}, {4.6, -3.5}, {-4.6, -3.5}});
      break;
  }
}

std::string LineStyle(const SeriesStyle& style) {
  std::string s = std::string("fill=\"none\" stroke=\"") + style.colour + "\" stroke-width=\"2\"";
  if (*style.dashes != '\0') s += std::string(" stroke-dasharray=\"") + style.dashes + "\"";
  return s;
}

// A skipped point's mark: a cross in the series' colour.
void DrawCross(std::ostream& svg, const SeriesStyle& style, double x, double y) {
  svg << "<path class=\"skipped\" d=\"M" << Px(x - 4.5) << "," << Px(y - 4.5) << "L" << Px(x + 4.5)
      << "," << Px(y + 4.5) << "M" << Px(x - 4.5) << "," << Px(y + 4.5) << "L" << Px(x + 4.5) << ","
      << Px(y - 4.5) << "\" stroke=\"" << style.colour << "\" stroke-width=\"2.2\"/>\n";
}

// An axis mapped onto pixels: value -> position, through log10 on a log axis.
class Scale {
 public:
  // `values`: every finite value the axis shows (already checked: > 0 on a log axis).
  Scale(const Axis& axis, const std::vector<double>& values) : log_(axis.log) {
    lo_ = std::numeric_limits<double>::infinity();
    hi_ = -lo_;
    for (double v : values) Include(v);
    for (const auto& tick : axis.ticks) Include(tick.first);
    if (lo_ > hi_) {  // nothing to show
      lo_ = 0;
      hi_ = 1;
    }
    if (hi_ - lo_ < 1e-12) {  // one value: a range around it
      const double pad = log_ ? 0.5 : std::max(1.0, std::abs(lo_) * 0.1);
      lo_ -= pad;
      hi_ += pad;
    }
    if (!axis.ticks.empty()) {
      ticks_ = axis.ticks;
      const double pad = 0.04 * (hi_ - lo_);
      lo_ -= pad;
      hi_ += pad;
    } else if (log_) {
      lo_ = std::floor(lo_);
      hi_ = std::ceil(hi_);
      for (int k = static_cast<int>(lo_); k <= static_cast<int>(hi_); ++k) {
        for (double m : {1.0, 2.0, 5.0}) {
          // 2 and 5 only on short axes, where the decades alone are too few ticks.
          if (m > 1 && (hi_ - lo_ > 2 || k == static_cast<int>(hi_))) continue;
          const double v = m * std::pow(10.0, k);
          ticks_.emplace_back(v, TickLabel(v));
        }
      }
    } else {
      const double raw = (hi_ - lo_) / 5, magnitude = std::pow(10.0, std::floor(std::log10(raw)));
      const double r = raw / magnitude;
      const double step = magnitude * (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10);
      lo_ = std::floor(lo_ / step) * step;
      hi_ = std::ceil(hi_ / step) * step;
      const auto count = static_cast<int>(std::lround((hi_ - lo_) / step));
      for (int i = 0; i <= count; ++i) {
        const double v = lo_ + i * step;
        const double tick = std::abs(v) < step / 2 ? 0.0 : v;  // not 5e-18 after rounding
        ticks_.emplace_back(tick, TickLabel(tick));
      }
    }
  }

  void SetPixels(double from, double to) {
    from_ = from;
    to_ = to;
  }
  double operator()(double v) const {
    return from_ + (Transform(v) - lo_) / (hi_ - lo_) * (to_ - from_);
  }
  const std::vector<std::pair<double, std::string>>& ticks() const { return ticks_; }

 private:
  double Transform(double v) const { return log_ ? std::log10(v) : v; }
  void Include(double v) {
    lo_ = std::min(lo_, Transform(v));
    hi_ = std::max(hi_, Transform(v));
  }

  bool log_;
  double lo_, hi_;  // the shown range, in transformed units
  double from_ = 0, to_ = 1;
  std::vector<std::pair<double, std::string>> ticks_;
};

void CheckAxisValue(const LineChart& chart, const Axis& axis, const char* which, double v) {
  if (!std::isfinite(v) || (axis.log && v <= 0)) {
    Invalid("chart \"" + chart.title + "\": " + which + " value " + TickLabel(v) +
            (axis.log ? " on a log axis (values must be finite and > 0)" : " is not finite"));
  }
}

void CheckChart(const LineChart& chart) {
  for (const auto& tick : chart.x.ticks) CheckAxisValue(chart, chart.x, "x tick", tick.first);
  for (const auto& tick : chart.y.ticks) CheckAxisValue(chart, chart.y, "y tick", tick.first);
  for (const Series& s : chart.series) {
    if (s.x.size() != s.y.size()) {
      Invalid("chart \"" + chart.title + "\": series \"" + s.name + "\" has " +
              std::to_string(s.x.size()) + " x values and " + std::to_string(s.y.size()) +
              " y values");
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      CheckAxisValue(chart, chart.x, "x", s.x[i]);
      if (!std::isnan(s.y[i])) CheckAxisValue(chart, chart.y, "y", s.y[i]);
    }
    for (const Skipped& skipped : s.skipped) CheckAxisValue(chart, chart.x, "skipped x", skipped.x);
  }
}

// The label of x on the axis: its tick's, or the number.
std::string XLabel(const Axis& axis, double x) {
  for (const auto& [v, label] : axis.ticks) {
    if (v == x) return label;
  }
  return TickLabel(x);
}

constexpr double kChartWidth = 600, kChartHeight = 420;

void DrawChart(std::ostream& svg, const LineChart& chart, double ox, double oy) {
  std::vector<double> xs, ys;
  for (const Series& s : chart.series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isnan(s.y[i])) continue;
      xs.push_back(s.x[i]);
      ys.push_back(s.y[i]);
    }
    for (const Skipped& skipped : s.skipped) xs.push_back(skipped.x);
  }
  Scale x(chart.x, xs), y(chart.y, ys);
  double legend_width = 0;
  for (const Series& s : chart.series) legend_width = std::max(legend_width, CharsWidth(s.name));
  const double left = ox + 78, right = ox + kChartWidth - legend_width - 58;
  const double top = oy + 34, bottom = oy + kChartHeight - 56;
  x.SetPixels(left, right);
  y.SetPixels(bottom, top);

  Text(svg, (left + right) / 2, oy + 20, chart.title, "middle", " font-weight=\"bold\"");
  for (const auto& [v, label] : x.ticks()) {
    svg << "<line x1=\"" << Px(x(v)) << "\" y1=\"" << Px(top) << "\" x2=\"" << Px(x(v))
        << "\" y2=\"" << Px(bottom + 4) << "\" stroke=\"#e0e0e0\"/>\n";
    Text(svg, x(v), bottom + 18, label);
  }
  for (const auto& [v, label] : y.ticks()) {
    svg << "<line x1=\"" << Px(left - 4) << "\" y1=\"" << Px(y(v)) << "\" x2=\"" << Px(right)
        << "\" y2=\"" << Px(y(v)) << "\" stroke=\"#e0e0e0\"/>\n";
    Text(svg, left - 7, y(v) + 4, label, "end");
  }
  svg << "<rect x=\"" << Px(left) << "\" y=\"" << Px(top) << "\" width=\"" << Px(right - left)
      << "\" height=\"" << Px(bottom - top) << "\" fill=\"none\" stroke=\"#444\"/>\n";
  Text(svg, (left + right) / 2, bottom + 42, chart.x.title);
  const double y_title_x = ox + 16, y_title_y = (top + bottom) / 2;
  Text(svg, y_title_x, y_title_y, chart.y.title, "middle",
       " transform=\"rotate(-90 " + Px(y_title_x) + " " + Px(y_title_y) + ")\"");

  std::map<double, int> crosses_at;  // skipped points already drawn at an x: stacked downwards
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    const SeriesStyle style = StyleOf(k);
    svg << "<g class=\"series\">\n";
    // One polyline per run of points without a NaN y; the markers over all lines.
    std::string points;
    auto flush = [&] {
      if (!points.empty())
        svg << "<polyline points=\"" << points << "\" " << LineStyle(style) << "/>\n";
      points.clear();
    };
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isnan(s.y[i])) {
        flush();
        continue;
      }
      points += (points.empty() ? "" : " ") + Px(x(s.x[i])) + "," + Px(y(s.y[i]));
    }
    flush();
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isnan(s.y[i])) DrawMarker(svg, style, x(s.x[i]), y(s.y[i]));
    }
    for (const Skipped& skipped : s.skipped) {
      DrawCross(svg, style, x(skipped.x), top + 10 + 12 * crosses_at[skipped.x]++);
    }
    const double ly = top + 10 + 20 * static_cast<double>(k);
    svg << "<line x1=\"" << Px(right + 12) << "\" y1=\"" << Px(ly) << "\" x2=\"" << Px(right + 44)
        << "\" y2=\"" << Px(ly) << "\" " << LineStyle(style) << "/>\n";
    DrawMarker(svg, style, right + 28, ly);
    Text(svg, right + 50, ly + 4, s.name, "start");
    svg << "</g>\n";
  }
}

// ---------------------------------------------------------------------------------------------
// Heatmaps.

struct Rgb {
  double r, g, b;
};

// Viridis (van der Walt and Smith, matplotlib's default map; CC0) at v = 0, 1/16, ..., 1: its
// 256-entry table at entries 0, 16, ..., 240, 255. Between them linear interpolation, within
// 1/255 of the table. Perceptually uniform, readable with any common colour-vision deficiency
// and in grey: dark purple (0) -> teal (0.5) -> yellow (1).
constexpr std::array<Rgb, 17> kViridis = {{{68, 1, 84},
                                           {72, 24, 106},
                                           {71, 45, 123},
                                           {66, 64, 134},
                                           {59, 82, 139},
                                           {51, 99, 141},
                                           {44, 114, 142},
                                           {38, 130, 142},
                                           {33, 145, 140},
                                           {31, 160, 136},
                                           {40, 174, 128},
                                           {63, 188, 115},
                                           {94, 201, 98},
                                           {132, 212, 75},
                                           {173, 220, 48},
                                           {216, 226, 25},
                                           {253, 231, 37}}};

Rgb Viridis(double v) {
  const double t = std::clamp(v, 0.0, 1.0) * 16;
  const auto i = std::min<size_t>(static_cast<size_t>(t), 15);
  const double f = t - static_cast<double>(i);
  const Rgb &a = kViridis[i], &b = kViridis[i + 1];
  return {a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f};
}

std::string Hex(const Rgb& c) {
  char text[8];
  std::snprintf(text, sizeof text, "#%02x%02x%02x", static_cast<int>(std::lround(c.r)),
                static_cast<int>(std::lround(c.g)), static_cast<int>(std::lround(c.b)));
  return text;
}

// Dark text on light cells, white on dark ones (relative luminance).
const char* TextColour(const Rgb& c) {
  return 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b > 140 ? "#000" : "#fff";
}

constexpr Rgb kMissingFill{224, 224, 224};

// Checks the grid; true if a cell has no value.
bool CheckGrid(const HeatmapGrid& grid) {
  if (grid.x_labels.empty() || grid.y_labels.empty()) {
    Invalid("a heatmap needs at least one row and column");
  }
  if (grid.panels.empty()) Invalid("no heatmap to draw");
  bool missing = false;
  for (const Heatmap& panel : grid.panels) {
    const std::string name = "heatmap \"" + panel.title + "\"";
    if (panel.values.size() != grid.y_labels.size()) {
      Invalid(name + " has " + std::to_string(panel.values.size()) + " rows of values but " +
              std::to_string(grid.y_labels.size()) + " row labels");
    }
    for (size_t r = 0; r < panel.values.size(); ++r) {
      if (panel.values[r].size() != grid.x_labels.size()) {
        Invalid(name + " row " + std::to_string(r) + " has " +
                std::to_string(panel.values[r].size()) + " values, expected " +
                std::to_string(grid.x_labels.size()) + " (one per column label)");
      }
      for (size_t c = 0; c < panel.values[r].size(); ++c) {
        const double v = panel.values[r][c];
        missing = missing || std::isnan(v);
        if (!std::isnan(v) && !(v >= 0 && v <= 1)) {
          Invalid(name + ": value " + TickLabel(v) + " at row " + std::to_string(r) + ", column " +
                  std::to_string(c) + " is outside [0, 1]");
        }
      }
    }
  }
  if (missing && grid.missing.empty()) {
    Invalid("a heatmap has cells without a value (n/a) but the grid does not say why (missing)");
  }
  return missing;
}

// ---------------------------------------------------------------------------------------------
// PNG through rsvg-convert.

[[noreturn]] void FailErrno(const std::string& action) {
  throw Error(ErrorCode::kIo, "plot: " + action + ": " + std::strerror(errno));
}

constexpr const char* kConverter = "rsvg-convert";
constexpr const char* kConverterMissing =
    "PNG output needs rsvg-convert (Debian package librsvg2-bin; tools/install-deps.sh installs "
    "it), which is not on PATH; or name the plot *.svg";

struct Completed {
  int not_started = 0;  // the error number when the program could not be started (0: it ran)
  int status = -1;      // its exit status; -1 when it ended by a signal
  std::string out, err;
};

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

// An unlinked temporary file: nothing to remove afterwards, whatever happens.
File TemporaryFile() {
  File file(std::tmpfile(), &std::fclose);
  if (!file) FailErrno("cannot create a temporary file");
  return file;
}

std::string ReadAll(FILE* file) {
  std::rewind(file);
  std::string text;
  char buffer[1 << 16];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, file)) > 0;) text.append(buffer, n);
  if (std::ferror(file)) FailErrno("cannot read a temporary file");
  return text;
}

// Runs `args` (args[0] found on PATH) without a shell, with `input` as its standard input, and
// waits for it. Standard input, output and error are unlinked temporary files rather than pipes:
// no pipe can fill while another is read, and nothing is left on disk.
Completed Run(const std::vector<std::string>& args, const std::string& input) {
  File in = TemporaryFile(), out = TemporaryFile(), err = TemporaryFile();
  if (std::fwrite(input.data(), 1, input.size(), in.get()) != input.size() ||
      std::fflush(in.get()) != 0) {
    FailErrno("cannot write a temporary file");
  }
  std::rewind(in.get());  // the child reads from the shared offset, now 0
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Completed c;
  posix_spawn_file_actions_t actions;
  c.not_started = posix_spawn_file_actions_init(&actions);
  if (c.not_started != 0) return c;
  pid_t pid = -1;
  for (const auto& [file, fd] : {std::pair{in.get(), 0}, {out.get(), 1}, {err.get(), 2}}) {
    if (c.not_started == 0) {
      c.not_started = posix_spawn_file_actions_adddup2(&actions, fileno(file), fd);
    }
  }
  if (c.not_started == 0) {
    c.not_started = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  }
  posix_spawn_file_actions_destroy(&actions);
  if (c.not_started != 0) return c;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) FailErrno("waitpid for " + args[0]);
  }
  c.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  c.out = ReadAll(out.get());
  c.err = ReadAll(err.get());
  return c;
}

// Why rsvg-convert did not do its job, or "" if it did (ran and exited with status 0).
std::string ConverterProblem(const Completed& c) {
  if (c.not_started == ENOENT) return kConverterMissing;
  if (c.not_started != 0)
    return "cannot run rsvg-convert: " + std::string(std::strerror(c.not_started));
  if (c.status == 0) return "";
  // Its complaint: the first line of its standard error.
  const std::string message = c.err.empty() ? "no message" : c.err.substr(0, c.err.find('\n'));
  return "rsvg-convert failed (" +
         (c.status < 0 ? std::string("killed by a signal")
                       : "exit status " + std::to_string(c.status)) +
         "): " + message;
}

std::string SvgToPng(const std::string& svg) {
  // Without a file argument rsvg-convert reads the SVG from standard input and writes the PNG to
  // standard output.
  const Completed c = Run({kConverter, "--format", "png"}, svg);
  std::string problem = ConverterProblem(c);
  if (problem.empty() && c.out.rfind("\x89PNG\r\n\x1a\n", 0) != 0) {
    problem = "rsvg-convert wrote no PNG";
  }
  if (!problem.empty()) throw Error(ErrorCode::kIo, "plot: " + problem);
  return c.out;
}

enum class ImageFormat { kSvg, kPng, kOther };

ImageFormat FormatOf(const std::string& path) {
  std::string lower = path;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower.size() > 4 && lower.ends_with(".svg")) return ImageFormat::kSvg;
  if (lower.size() > 4 && lower.ends_with(".png")) return ImageFormat::kPng;
  return ImageFormat::kOther;
}

constexpr const char* kImageNames = "plots are SVG or PNG: name the file *.svg or *.png";

}  // namespace

std::string LineChartsSvg(const Figure& figure, const std::vector<LineChart>& charts) {
  if (charts.empty()) Invalid("no chart to draw");
  for (const LineChart& chart : charts) CheckChart(chart);
  // The skipped points' notes, each once however many charts show it.
  std::vector<std::string> notes;
  std::set<std::tuple<std::string, double, std::string>> noted;
  for (const LineChart& chart : charts) {
    for (const Series& s : chart.series) {
      for (const Skipped& skipped : s.skipped) {
        if (!noted.insert({s.name, skipped.x, skipped.reason}).second) continue;
        notes.push_back("\u00d7 " + s.name + " at " + XLabel(chart.x, skipped.x) + ": skipped, " +
                        skipped.reason);
      }
    }
  }
  const size_t columns =
      figure.columns == 0 ? charts.size() : std::min(figure.columns, charts.size());
  const size_t rows = (charts.size() + columns - 1) / columns;
  double width = std::max(kChartWidth * static_cast<double>(columns), TitleAndCaptionWidth(figure));
  for (const std::string& note : notes) width = std::max(width, CharsWidth(note) + 40);
  const double charts_top = kTitleHeight + kLineHeight * static_cast<double>(figure.caption.size());
  const double charts_bottom = charts_top + kChartHeight * static_cast<double>(rows);
  const double height =
      charts_bottom + kLineHeight * static_cast<double>(notes.size()) + (notes.empty() ? 0 : 10);
  std::ostringstream svg;
  svg << SvgStart(width, height);
  TitleAndCaption(svg, figure, width);
  const double charts_left = (width - kChartWidth * static_cast<double>(columns)) / 2;
  for (size_t i = 0; i < charts.size(); ++i) {
    const size_t row = i / columns, column = i % columns;  // charts fill the grid row by row
    DrawChart(svg, charts[i], charts_left + kChartWidth * static_cast<double>(column),
              charts_top + kChartHeight * static_cast<double>(row));
  }
  for (size_t i = 0; i < notes.size(); ++i) {
    Text(svg, charts_left + 24, charts_bottom + kLineHeight * static_cast<double>(i) + 4, notes[i],
         "start", " class=\"note\"");
  }
  svg << "</svg>\n";
  return svg.str();
}

std::string HeatmapsSvg(const Figure& figure, const HeatmapGrid& grid) {
  const bool missing = CheckGrid(grid);
  constexpr double kCellWidth = 64, kCellHeight = 32, kGap = 28, kBarWidth = 16;
  double label_width = 0;
  for (const std::string& label : grid.y_labels)
    label_width = std::max(label_width, CharsWidth(label));
  const double grid_width = kCellWidth * static_cast<double>(grid.x_labels.size());
  const double grid_height = kCellHeight * static_cast<double>(grid.y_labels.size());
  // Each panel as wide as its grid or its title (13 px bold), whichever is wider.
  std::vector<double> panel_left;
  double x = 34 + label_width + 10;
  for (const Heatmap& panel : grid.panels) {
    const double panel_width = std::max(grid_width, 1.1 * CharsWidth(panel.title));
    panel_left.push_back(x + (panel_width - grid_width) / 2);
    x += panel_width + kGap;
  }
  const double bar_left = x + 6;
  const double bar_height = std::max(grid_height, 128.0);  // room for its five labels
  const double top = kTitleHeight + kLineHeight * static_cast<double>(figure.caption.size()) + 28;
  const std::string missing_text = "n/a: " + grid.missing;
  const double legend_y = top + grid_height + 70;
  double width = std::max(bar_left + kBarWidth + 64, TitleAndCaptionWidth(figure));
  if (missing) width = std::max(width, panel_left[0] + 22 + CharsWidth(missing_text) + 20);
  const double height = std::max(legend_y + (missing ? 24 : -8), top + bar_height + 16);

  std::ostringstream svg;
  svg << SvgStart(width, height);
  svg << "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (size_t i = 0; i < kViridis.size(); ++i) {
    svg << "<stop offset=\"" << Px(static_cast<double>(i) / 16) << "\" stop-color=\""
        << Hex(kViridis[i]) << "\"/>";
  }
  svg << "</linearGradient></defs>\n";
  TitleAndCaption(svg, figure, width);
  for (size_t r = 0; r < grid.y_labels.size(); ++r) {
    Text(svg, panel_left[0] - 8, top + kCellHeight * (static_cast<double>(r) + 0.5) + 4,
         grid.y_labels[r], "end");
  }
  // The rows' title just left of their labels (the first panel may be centred under its title).
  const double y_title_x = panel_left[0] - label_width - 26, y_title_y = top + grid_height / 2;
  Text(svg, y_title_x, y_title_y, grid.y_title, "middle",
       " transform=\"rotate(-90 " + Px(y_title_x) + " " + Px(y_title_y) + ")\"");
  for (size_t p = 0; p < grid.panels.size(); ++p) {
    const Heatmap& panel = grid.panels[p];
    const double left = panel_left[p];
    Text(svg, left + grid_width / 2, top - 10, panel.title, "middle",
         " font-size=\"13\" font-weight=\"bold\"");
    for (size_t r = 0; r < grid.y_labels.size(); ++r) {
      const double cy = top + kCellHeight * static_cast<double>(r);
      for (size_t c = 0; c < grid.x_labels.size(); ++c) {
        const double cx = left + kCellWidth * static_cast<double>(c);
        const double v = panel.values[r][c];
        const bool known = !std::isnan(v);
        const Rgb fill = known ? Viridis(v) : kMissingFill;
        svg << "<rect x=\"" << Px(cx) << "\" y=\"" << Px(cy) << "\" width=\"" << Px(kCellWidth)
            << "\" height=\"" << Px(kCellHeight) << "\" fill=\"" << Hex(fill)
            << "\" stroke=\"white\"/>\n";
        char text[16];
        std::snprintf(text, sizeof text, "%.0f%%", 100 * v);
        Text(svg, cx + kCellWidth / 2, cy + kCellHeight / 2 + 4, known ? text : "n/a", "middle",
             std::string(" fill=\"") + (known ? TextColour(fill) : "#555") + "\"");
      }
    }
    for (size_t c = 0; c < grid.x_labels.size(); ++c) {
      Text(svg, left + kCellWidth * (static_cast<double>(c) + 0.5), top + grid_height + 18,
           grid.x_labels[c]);
    }
    Text(svg, left + grid_width / 2, top + grid_height + 40, grid.x_title);
  }
  // The one colour bar, labelled.
  svg << "<rect x=\"" << Px(bar_left) << "\" y=\"" << Px(top) << "\" width=\"" << Px(kBarWidth)
      << "\" height=\"" << Px(bar_height) << "\" fill=\"url(#scale)\" stroke=\"#444\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double v = i / 4.0, y = top + bar_height * (1 - v);
    svg << "<line x1=\"" << Px(bar_left + kBarWidth) << "\" y1=\"" << Px(y) << "\" x2=\""
        << Px(bar_left + kBarWidth + 4) << "\" y2=\"" << Px(y) << "\" stroke=\"#444\"/>\n";
    Text(svg, bar_left + kBarWidth + 7, y + 4, std::to_string(25 * i) + "%", "start");
  }
  const double scale_title_x = bar_left + kBarWidth + 52, scale_title_y = top + bar_height / 2;
  Text(svg, scale_title_x, scale_title_y, grid.scale_title, "middle",
       " class=\"scale-title\" transform=\"rotate(90 " + Px(scale_title_x) + " " +
           Px(scale_title_y) + ")\"");
  if (missing) {  // the legend of the grey cells
    svg << "<rect class=\"missing-legend\" x=\"" << Px(panel_left[0]) << "\" y=\""
        << Px(legend_y - 11) << "\" width=\"16\" height=\"14\" fill=\"" << Hex(kMissingFill)
        << "\" stroke=\"#999\"/>\n";
    Text(svg, panel_left[0] + 22, legend_y, missing_text, "start");
  }
  svg << "</svg>\n";
  return svg.str();
}

std::string ScaleColour(double v) { return Hex(Viridis(v)); }

std::string ImageFile(const std::string& path, const std::string& svg) {
  switch (FormatOf(path)) {
    case ImageFormat::kSvg:
      return svg;
    case ImageFormat::kPng:
      return SvgToPng(svg);
    case ImageFormat::kOther:
      break;
  }
  Invalid(std::string(kImageNames) + ", not '" + path + "'");
}

void WriteImage(const std::string& path, const std::string& svg) {
  io::WriteFileAtomically(path, ImageFile(path, svg));
}

std::string ImagePathProblem(const std::string& path) {
  switch (FormatOf(path)) {
    case ImageFormat::kSvg:
      return "";
    case ImageFormat::kPng:
      return ConverterProblem(Run({kConverter, "--version"}, ""));
    case ImageFormat::kOther:
      break;
  }
  return kImageNames;
}

std::string TokenCountLabel(int64_t n) {
  if (n == 0) return "0";
  if (n % (int64_t{1} << 20) == 0) return std::to_string(n >> 20) + "M";
  if (n % (int64_t{1} << 10) == 0) return std::to_string(n >> 10) + "K";
  return std::to_string(n);
}

}  // namespace titans::plot
