// SVG charts (evals/include/titans/evals/plot.hpp). Layout in pixels; text sizes are estimated
// (7 px per character at the 12 px font), which is all the layout needs: labels are short.
#include "titans/evals/plot.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "io/safetensors.hpp"
#include "titans/error.hpp"

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

// ---------------------------------------------------------------------------------------------
// Line charts.

// Tableau 10: distinct colours that stay distinct for colour-blind readers in the first few.
constexpr std::array<const char*, 10> kPalette = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                                  "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                                                  "#9c755f", "#bab0ac"};

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
      for (double v = lo_; v <= hi_ + step / 2; v += step) {
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
  }
}

constexpr double kChartWidth = 600, kChartHeight = 420, kTitleHeight = 36;

void DrawChart(std::ostream& svg, const LineChart& chart, double ox, double oy) {
  std::vector<double> xs, ys;
  for (const Series& s : chart.series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isnan(s.y[i])) continue;
      xs.push_back(s.x[i]);
      ys.push_back(s.y[i]);
    }
  }
  Scale x(chart.x, xs), y(chart.y, ys);
  double legend_width = 0;
  for (const Series& s : chart.series) legend_width = std::max(legend_width, CharsWidth(s.name));
  const double left = ox + 78, right = ox + kChartWidth - legend_width - 50;
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

  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    const char* colour = kPalette[k % kPalette.size()];
    // One polyline per run of points without a NaN y.
    std::string points;
    auto flush = [&] {
      if (!points.empty()) {
        svg << "<polyline points=\"" << points << "\" fill=\"none\" stroke=\"" << colour
            << "\" stroke-width=\"2\"/>\n";
      }
      points.clear();
    };
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isnan(s.y[i])) {
        flush();
        continue;
      }
      points += (points.empty() ? "" : " ") + Px(x(s.x[i])) + "," + Px(y(s.y[i]));
      svg << "<circle cx=\"" << Px(x(s.x[i])) << "\" cy=\"" << Px(y(s.y[i])) << "\" r=\"3\" fill=\""
          << colour << "\"/>\n";
    }
    flush();
    const double ly = top + 10 + 20 * static_cast<double>(k);
    svg << "<line x1=\"" << Px(right + 12) << "\" y1=\"" << Px(ly) << "\" x2=\"" << Px(right + 32)
        << "\" y2=\"" << Px(ly) << "\" stroke=\"" << colour << "\" stroke-width=\"2\"/>\n";
    Text(svg, right + 38, ly + 4, s.name, "start");
  }
}

// ---------------------------------------------------------------------------------------------
// Heatmap.

struct Rgb {
  double r, g, b;
};

// Red (0) -> amber (0.5) -> green (1).
Rgb HeatColour(double v) {
  constexpr Rgb kRed{215, 48, 39}, kAmber{253, 190, 60}, kGreen{26, 152, 80};
  const Rgb& a = v < 0.5 ? kRed : kAmber;
  const Rgb& b = v < 0.5 ? kAmber : kGreen;
  const double t = v < 0.5 ? v * 2 : v * 2 - 1;
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
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

}  // namespace

void WriteLineChartsSvg(const std::string& path, const std::string& title,
                        const std::vector<LineChart>& charts) {
  io::WriteFileAtomically(path, LineChartsSvg(title, charts));
}

std::string LineChartsSvg(const std::string& title, const std::vector<LineChart>& charts) {
  if (charts.empty()) Invalid("no chart to draw");
  for (const LineChart& chart : charts) CheckChart(chart);
  const double width = kChartWidth * static_cast<double>(charts.size());
  const double height = kTitleHeight + kChartHeight;
  std::ostringstream svg;
  svg << SvgStart(width, height);
  Text(svg, width / 2, 24, title, "middle", " font-size=\"15\" font-weight=\"bold\"");
  for (size_t i = 0; i < charts.size(); ++i) {
    DrawChart(svg, charts[i], kChartWidth * static_cast<double>(i), kTitleHeight);
  }
  svg << "</svg>\n";
  return svg.str();
}

void WriteHeatmapSvg(const std::string& path, const std::string& title, const std::string& x_title,
                     const std::string& y_title, const std::vector<std::string>& x_labels,
                     const std::vector<std::string>& y_labels,
                     const std::vector<std::vector<double>>& values) {
  if (x_labels.empty() || y_labels.empty()) Invalid("a heatmap needs at least one row and column");
  if (values.size() != y_labels.size()) {
    Invalid("heatmap has " + std::to_string(y_labels.size()) + " row labels but " +
            std::to_string(values.size()) + " rows of values");
  }
  for (size_t r = 0; r < values.size(); ++r) {
    if (values[r].size() != x_labels.size()) {
      Invalid("heatmap row " + std::to_string(r) + " has " + std::to_string(values[r].size()) +
              " values, expected " + std::to_string(x_labels.size()) + " (one per column label)");
    }
    for (size_t c = 0; c < values[r].size(); ++c) {
      const double v = values[r][c];
      if (!std::isnan(v) && !(v >= 0 && v <= 1)) {
        Invalid("heatmap value " + TickLabel(v) + " at row " + std::to_string(r) + ", column " +
                std::to_string(c) + " is outside [0, 1]");
      }
    }
  }
  constexpr double kCellWidth = 64, kCellHeight = 32, kBarWidth = 16;
  double label_width = 0;
  for (const std::string& label : y_labels) label_width = std::max(label_width, CharsWidth(label));
  const double left = 34 + label_width + 10, top = 44;
  const double grid_width = kCellWidth * static_cast<double>(x_labels.size());
  const double grid_height = kCellHeight * static_cast<double>(y_labels.size());
  const double bar_left = left + grid_width + 24;
  // The title (15 px font) fits the width.
  const double width = std::max(bar_left + kBarWidth + 50, 1.25 * CharsWidth(title) + 40);
  const double height = top + grid_height + 56;

  std::ostringstream svg;
  svg << SvgStart(width, height);
  svg << "<defs><linearGradient id=\"heat\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">"
      << "<stop offset=\"0\" stop-color=\"" << Hex(HeatColour(0)) << "\"/>"
      << "<stop offset=\"0.5\" stop-color=\"" << Hex(HeatColour(0.5)) << "\"/>"
      << "<stop offset=\"1\" stop-color=\"" << Hex(HeatColour(1)) << "\"/>"
      << "</linearGradient></defs>\n";
  Text(svg, width / 2, 24, title, "middle", " font-size=\"15\" font-weight=\"bold\"");
  for (size_t r = 0; r < y_labels.size(); ++r) {
    const double cy = top + kCellHeight * static_cast<double>(r);
    Text(svg, left - 8, cy + kCellHeight / 2 + 4, y_labels[r], "end");
    for (size_t c = 0; c < x_labels.size(); ++c) {
      const double cx = left + kCellWidth * static_cast<double>(c);
      const double v = values[r][c];
      const bool known = !std::isnan(v);
      const Rgb fill = known ? HeatColour(v) : Rgb{224, 224, 224};
      svg << "<rect x=\"" << Px(cx) << "\" y=\"" << Px(cy) << "\" width=\"" << Px(kCellWidth)
          << "\" height=\"" << Px(kCellHeight) << "\" fill=\"" << Hex(fill)
          << "\" stroke=\"white\"/>\n";
      char text[16];
      std::snprintf(text, sizeof text, "%.0f%%", 100 * v);
      Text(svg, cx + kCellWidth / 2, cy + kCellHeight / 2 + 4, known ? text : "n/a", "middle",
           std::string(" fill=\"") + (known ? TextColour(fill) : "#666") + "\"");
    }
  }
  for (size_t c = 0; c < x_labels.size(); ++c) {
    Text(svg, left + kCellWidth * (static_cast<double>(c) + 0.5), top + grid_height + 18,
         x_labels[c]);
  }
  Text(svg, left + grid_width / 2, top + grid_height + 42, x_title);
  const double y_title_y = top + grid_height / 2;
  Text(svg, 16, y_title_y, y_title, "middle",
       " transform=\"rotate(-90 16 " + Px(y_title_y) + ")\"");
  // The colour scale.
  svg << "<rect x=\"" << Px(bar_left) << "\" y=\"" << Px(top) << "\" width=\"" << Px(kBarWidth)
      << "\" height=\"" << Px(grid_height) << "\" fill=\"url(#heat)\" stroke=\"#444\"/>\n";
  const std::pair<double, const char*> kScaleLabels[] = {{1.0, "100%"}, {0.5, "50%"}, {0.0, "0%"}};
  for (const auto& [v, label] : kScaleLabels) {
    Text(svg, bar_left + kBarWidth + 4, top + grid_height * (1 - v) + 4, label, "start");
  }
  svg << "</svg>\n";
  io::WriteFileAtomically(path, svg.str());
}

std::string TokenCountLabel(int64_t n) {
  if (n == 0) return "0";
  if (n % (int64_t{1} << 20) == 0) return std::to_string(n >> 20) + "M";
  if (n % (int64_t{1} << 10) == 0) return std::to_string(n >> 10) + "K";
  return std::to_string(n);
}

}  // namespace titans::plot
