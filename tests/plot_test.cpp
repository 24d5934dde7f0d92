// The evaluations' SVG charts (evals/plot.cpp): well-formed files that show the given
// values and labels, bad input rejected with titans::Error before any file is written.
#include "titans/evals/plot.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "scratch_dir.hpp"
#include "svg_check.hpp"
#include "titans/error.hpp"

namespace titans {
namespace {

using testing::ScratchDir;
using testing::SvgProblem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

template <class F>
void ExpectInvalid(F&& write, const std::string& what) {
  try {
    write();
    ADD_FAILURE() << "no error, expected one naming \"" << what << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

plot::LineChart TwoSeries() {
  plot::LineChart chart;
  chart.title = "time <per> token & more";
  chart.x.title = "context";
  chart.x.ticks = {{1024, "1K"}, {4096, "4K"}, {16384, "16K"}};
  chart.y.title = "us";
  chart.y.log = true;
  // A NaN splits "full" into two polylines; 3 + 2 points are drawn.
  chart.series = {{"lmm", {1024, 4096, 16384}, {200, 210, 205}},
                  {"full", {1024, 4096, 16384}, {300, std::nan(""), 9000}}};
  return chart;
}

TEST(PlotTest, LineChartsAreWellFormedAndShowTheirData) {
  const ScratchDir scratch("plot_test_");
  const std::string path = scratch.Path("chart.svg");
  plot::LineChart linear = TwoSeries();
  linear.title = "linear";
  linear.y.log = false;
  plot::WriteLineChartsSvg(path, "two panels", {TwoSeries(), linear});
  const std::string svg = ReadFile(path);
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  EXPECT_EQ(scratch.Listing(), std::vector<std::string>{"chart.svg"});  // no temporary left
  for (const char* text : {">two panels<", ">time &lt;per&gt; token &amp; more<", ">linear<",
                           ">context<", ">us<", ">1K<", ">4K<", ">16K<", ">lmm<", ">full<"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }
  EXPECT_EQ(Count(svg, "<circle"), 2u * 5u);  // every non-NaN point of both panels
  EXPECT_EQ(Count(svg, "<polyline"), 2u * 3u);
  // Automatic ticks: decades on the log axis (200..9000 -> 100..10000), 1-2-5 steps otherwise.
  EXPECT_NE(svg.find(">100<"), std::string::npos);
  EXPECT_NE(svg.find(">10000<"), std::string::npos);
  EXPECT_NE(svg.find(">2000<"), std::string::npos);

  // Charts without data (every point skipped) still draw their axes.
  plot::LineChart empty = TwoSeries();
  for (plot::Series& s : empty.series) s.y.assign(s.x.size(), std::nan(""));
  plot::WriteLineChartsSvg(path, "empty", {empty});
  EXPECT_EQ(SvgProblem(ReadFile(path)), "");
}

TEST(PlotTest, ZeroIsLabelledZero) {
  // A linear axis through 0 whose steps do not add up to 0 exactly (-0.03 + 3 x 0.01) labels its
  // zero tick "0", not the rounding error; a token count of 0 is "0".
  plot::LineChart chart;
  chart.x.log = true;
  chart.series = {{"d", {32, 160, 640, 2560}, {0.0, -0.0011, 0.0062, -0.0267}}};
  const std::string svg = plot::LineChartsSvg("zero", {chart});
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  EXPECT_NE(svg.find(">0<"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("e-1"), std::string::npos) << svg;
  EXPECT_EQ(plot::TokenCountLabel(0), "0");
  EXPECT_EQ(plot::TokenCountLabel(64), "64");
  EXPECT_EQ(plot::TokenCountLabel(3 << 10), "3K");
  EXPECT_EQ(plot::TokenCountLabel(int64_t{2} << 20), "2M");
  // The text WriteLineChartsSvg writes.
  const ScratchDir scratch("plot_test_");
  plot::WriteLineChartsSvg(scratch.Path("z.svg"), "zero", {chart});
  EXPECT_EQ(ReadFile(scratch.Path("z.svg")), svg);
}

TEST(PlotTest, HeatmapShowsEveryCell) {
  const ScratchDir scratch("plot_test_");
  const std::string path = scratch.Path("heat.svg");
  const std::vector<std::vector<double>> values = {{1.0, 0.5, 0.0}, {0.25, std::nan(""), 0.999}};
  plot::WriteHeatmapSvg(path, "recall", "context length", "depth", {"1K", "4K", "16K"},
                        {"0%", "100%"}, values);
  const std::string svg = ReadFile(path);
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  for (const char* text : {">recall<", ">context length<", ">depth<", ">1K<", ">4K<", ">16K<",
                           ">0%<", ">100%<", ">50%<", ">25%<", ">n/a<"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }
  // The cells: red at 0, amber at 0.5, green at 1.
  EXPECT_NE(svg.find("fill=\"#d73027\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"#fdbe3c\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"#1a9850\""), std::string::npos);
}

TEST(PlotTest, BadInputIsAnErrorAndWritesNothing) {
  const ScratchDir scratch("plot_test_");
  const std::string path = scratch.Path("bad.svg");
  ExpectInvalid([&] { plot::WriteLineChartsSvg(path, "t", {}); }, "no chart");
  plot::LineChart chart = TwoSeries();
  chart.series[1].y.pop_back();
  ExpectInvalid([&] { plot::WriteLineChartsSvg(path, "t", {chart}); }, "3 x values and 2 y");
  chart = TwoSeries();
  chart.series[0].y[1] = 0;
  ExpectInvalid([&] { plot::WriteLineChartsSvg(path, "t", {chart}); }, "log axis");
  chart = TwoSeries();
  chart.series[0].x[0] = std::nan("");
  ExpectInvalid([&] { plot::WriteLineChartsSvg(path, "t", {chart}); }, "x value nan");

  const std::vector<std::string> x = {"1K", "4K"}, y = {"0%"};
  ExpectInvalid([&] { plot::WriteHeatmapSvg(path, "t", "x", "y", {}, y, {{}}); }, "at least one");
  ExpectInvalid([&] { plot::WriteHeatmapSvg(path, "t", "x", "y", x, y, {}); }, "1 row labels");
  ExpectInvalid([&] { plot::WriteHeatmapSvg(path, "t", "x", "y", x, y, {{0.5}}); },
                "row 0 has 1 values");
  ExpectInvalid(
      [&] {
        plot::WriteHeatmapSvg(path, "t", "x", "y", x, y, {{0.5, 1.5}});
      },
      "1.5 at row 0, column 1");
  ExpectInvalid(
      [&] {
        plot::WriteHeatmapSvg(path, "t", "x", "y", x, y, {{0.5, INFINITY}});
      },
      "outside [0, 1]");
  EXPECT_TRUE(scratch.Listing().empty());

  // A file that cannot be written: an i/o error, nothing left behind.
  try {
    plot::WriteHeatmapSvg(scratch.Path("missing/dir.svg"), "t", "x", "y", x, y, {{0.5, 1.0}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
  }
  EXPECT_TRUE(scratch.Listing().empty());
}

}  // namespace
}  // namespace titans
