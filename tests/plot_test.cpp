// The evaluations' charts (evals/plot.cpp): well-formed SVG that shows the given values and
// labels; heatmaps on the viridis scale with one labelled colour bar, a caption and an "n/a"
// legend; series told apart by marker and dash pattern, skipped points marked with their reason;
// PNG through rsvg-convert; bad input rejected with titans::Error before any file is written.
#include "titans/evals/plot.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
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

// The value of attribute `name` in the first element at or after `from` that has it, or "".
std::string Attribute(const std::string& text, const std::string& name, size_t from = 0) {
  const std::string key = " " + name + "=\"";
  const size_t at = text.find(key, from);
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size();
  return text.substr(begin, text.find('"', begin) - begin);
}

template <class F>
void ExpectError(F&& write, ErrorCode code, const std::string& what) {
  try {
    write();
    ADD_FAILURE() << "no error, expected one naming \"" << what << "\"";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

template <class F>
void ExpectInvalid(F&& write, const std::string& what) {
  ExpectError(write, ErrorCode::kInvalidArgument, what);
}

// Whether rsvg-convert runs here (CI installs it: tools/install-deps.sh).
bool HavePngConverter() { return plot::ImagePathProblem("x.png").empty(); }

plot::LineChart TwoSeries() {
  plot::LineChart chart;
  chart.title = "time <per> token & more";
  chart.x.title = "context";
  chart.x.ticks = {{1024, "1K"}, {4096, "4K"}, {16384, "16K"}};
  chart.y.title = "us";
  chart.y.log = true;
  // A NaN splits "full" into two polylines; 3 + 2 points are drawn.
  chart.series = {{"lmm", {1024, 4096, 16384}, {200, 210, 205}, {}},
                  {"full", {1024, 4096, 16384}, {300, std::nan(""), 9000}, {}}};
  return chart;
}

TEST(PlotTest, LineChartsAreWellFormedAndShowTheirData) {
  const ScratchDir scratch("plot_test_");
  const std::string path = scratch.Path("chart.svg");
  plot::LineChart linear = TwoSeries();
  linear.title = "linear";
  linear.y.log = false;
  plot::WriteImage(
      path,
      plot::LineChartsSvg({.title = "two panels", .caption = {"how it was measured"}, .columns = 0},
                          {TwoSeries(), linear}));
  const std::string svg = ReadFile(path);
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  EXPECT_EQ(scratch.Listing(), std::vector<std::string>{"chart.svg"});  // no temporary left
  for (const char* text :
       {">two panels<", ">how it was measured<", ">time &lt;per&gt; token &amp; more<", ">linear<",
        ">context<", ">us<", ">1K<", ">4K<", ">16K<", ">lmm<", ">full<"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }
  // Every non-NaN point and the legend's sample, in both panels: lmm's circles, full's squares.
  EXPECT_EQ(Count(svg, "class=\"marker circle\""), 2u * (3u + 1u));
  EXPECT_EQ(Count(svg, "class=\"marker square\""), 2u * (2u + 1u));
  EXPECT_EQ(Count(svg, "<polyline"), 2u * 3u);
  EXPECT_EQ(Attribute(svg, "width"), "1200.0");  // the panels side by side
  // Automatic ticks: decades on the log axis (200..9000 -> 100..10000), 1-2-5 steps otherwise.
  EXPECT_NE(svg.find(">100<"), std::string::npos);
  EXPECT_NE(svg.find(">10000<"), std::string::npos);
  EXPECT_NE(svg.find(">2000<"), std::string::npos);

  // Charts without data (every point skipped) still draw their axes.
  plot::LineChart empty = TwoSeries();
  for (plot::Series& s : empty.series) s.y.assign(s.x.size(), std::nan(""));
  EXPECT_EQ(
      SvgProblem(plot::LineChartsSvg({.title = "empty", .caption = {}, .columns = 0}, {empty})),
      "");
}

TEST(PlotTest, SeriesWithEqualValuesDifferInMarkerDashAndColour) {
  // mag and mal of `titans bench` cost the same: their lines lie on each other, so each series
  // has its own marker shape and dash pattern as well as its colour.
  plot::LineChart chart;
  for (const char* kind : {"lmm", "mac", "mag", "mal", "full"}) {
    chart.series.push_back({kind, {1024, 4096, 16384}, {280, 280, 280}, {}});
  }
  const std::string svg =
      plot::LineChartsSvg({.title = "same values", .caption = {}, .columns = 0}, {chart});
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  std::set<std::string> markers, dashes, colours;
  size_t groups = 0;
  for (size_t at = svg.find("<g class=\"series\">"); at != std::string::npos;
       at = svg.find("<g class=\"series\">", at + 1)) {
    const std::string group = svg.substr(at, svg.find("</g>", at) - at);
    const size_t line = group.find("<polyline");
    ASSERT_NE(line, std::string::npos) << group;
    const std::string polyline = group.substr(line, group.find('>', line) - line);
    const std::string dash = Attribute(polyline, "stroke-dasharray");
    dashes.insert(dash.empty() ? "solid" : dash);
    colours.insert(Attribute(polyline, "stroke"));
    markers.insert(Attribute(group, "class", group.find("<", line + 1)));
    EXPECT_EQ(Count(group, "class=\"marker "), 3u + 1u) << group;  // the points and the legend
    ++groups;
  }
  EXPECT_EQ(groups, 5u);
  EXPECT_EQ(markers, (std::set<std::string>{"marker circle", "marker square", "marker triangle-up",
                                            "marker diamond", "marker triangle-down"}));
  EXPECT_EQ(dashes.size(), 5u);
  EXPECT_EQ(colours.size(), 5u);
}

TEST(PlotTest, SkippedPointsAreMarkedWithTheirReason) {
  // Two charts in two columns show the same skipped point: a cross in each, one note.
  plot::LineChart chart = TwoSeries();
  chart.series[1].x.pop_back();
  chart.series[1].y.pop_back();
  chart.series[1].skipped = {{16384, "predicted 900 s of prefill > --max-seconds 600"},
                             {65536, "its KV cache needs 16.0 GiB"}};
  plot::LineChart memory = chart;
  memory.title = "memory";
  const std::string svg = plot::LineChartsSvg(
      {.title = "cost", .caption = {"line one", "line two"}, .columns = 1}, {chart, memory});
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  EXPECT_EQ(Count(svg, "class=\"skipped\""), 2u * 2u);
  EXPECT_EQ(Count(svg, "class=\"note\""), 2u);
  EXPECT_NE(svg.find(">\u00d7 full at 16K: skipped, predicted 900 s of prefill &gt; --max-seconds "
                     "600<"),
            std::string::npos)
      << svg;
  // 64K is not a tick: the note gives the number, and the x axis reaches it.
  EXPECT_NE(svg.find(">\u00d7 full at 65536: skipped, its KV cache needs 16.0 GiB<"),
            std::string::npos)
      << svg;
  EXPECT_EQ(Attribute(svg, "width"), "600.0");   // one column: the charts one above the other
  EXPECT_EQ(Attribute(svg, "height"), "950.0");  // title, 2 caption lines, 2 charts, 2 notes
}

TEST(PlotTest, ZeroIsLabelledZero) {
  // A linear axis through 0 whose steps do not add up to 0 exactly (-0.03 + 3 x 0.01) labels its
  // zero tick "0", not the rounding error; a token count of 0 is "0".
  plot::LineChart chart;
  chart.x.log = true;
  chart.series = {{"d", {32, 160, 640, 2560}, {0.0, -0.0011, 0.0062, -0.0267}, {}}};
  const std::string svg =
      plot::LineChartsSvg({.title = "zero", .caption = {}, .columns = 0}, {chart});
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  EXPECT_NE(svg.find(">0<"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("e-1"), std::string::npos) << svg;
  EXPECT_EQ(plot::TokenCountLabel(0), "0");
  EXPECT_EQ(plot::TokenCountLabel(64), "64");
  EXPECT_EQ(plot::TokenCountLabel(3 << 10), "3K");
  EXPECT_EQ(plot::TokenCountLabel(int64_t{2} << 20), "2M");
  // The text WriteImage writes for an SVG name.
  const ScratchDir scratch("plot_test_");
  plot::WriteImage(scratch.Path("z.SVG"), svg);
  EXPECT_EQ(ReadFile(scratch.Path("z.SVG")), svg);
}

TEST(PlotTest, TheHeatmapScaleIsViridis) {
  // Known colours of matplotlib's viridis (its 256-entry table at 0, 64, 128, 192, 255).
  EXPECT_EQ(plot::ScaleColour(0.0), "#440154");
  EXPECT_EQ(plot::ScaleColour(0.25), "#3b528b");
  EXPECT_EQ(plot::ScaleColour(0.5), "#21918c");
  EXPECT_EQ(plot::ScaleColour(0.75), "#5ec962");
  EXPECT_EQ(plot::ScaleColour(1.0), "#fde725");

  const plot::HeatmapGrid grid{.x_title = "context length",
                               .y_title = "depth",
                               .x_labels = {"1K", "4K", "16K"},
                               .y_labels = {"0%", "100%"},
                               .scale_title = "exact-match accuracy",
                               .missing = "",
                               .panels = {{"recall", {{1.0, 0.5, 0.0}, {0.25, 0.75, 0.999}}}}};
  const std::string svg =
      plot::HeatmapsSvg({.title = "one panel", .caption = {}, .columns = 0}, grid);
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  // The cells and the colour bar's gradient are on the scale; no red-green.
  for (const char* colour : {"#440154", "#21918c", "#fde725", "#3b528b", "#5ec962"}) {
    EXPECT_NE(svg.find(std::string("fill=\"") + colour + "\""), std::string::npos) << colour;
    EXPECT_NE(svg.find(std::string("stop-color=\"") + colour + "\""), std::string::npos) << colour;
  }
  EXPECT_EQ(svg.find("#d73027"), std::string::npos);  // the old scale's red
  EXPECT_EQ(svg.find("#1a9850"), std::string::npos);  // and green
  for (const char* text : {">recall<", ">context length<", ">depth<", ">1K<", ">4K<", ">16K<",
                           ">0%<", ">100%<", ">50%<", ">25%<", ">75%<"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }
  // Every value is known: no n/a cell and no legend for one.
  EXPECT_EQ(svg.find("n/a"), std::string::npos);
  EXPECT_EQ(svg.find("missing-legend"), std::string::npos);
}

TEST(PlotTest, HeatmapFigureHasEveryModelOneLabelledColourBarACaptionAndAnNaLegend) {
  const std::vector<std::vector<double>> all = {{1.0, 1.0}, {1.0, 1.0}};
  const plot::HeatmapGrid grid{
      .x_title = "context length (tokens)",
      .y_title = "needle depth",
      .x_labels = {"1K", "2K"},
      .y_labels = {"0%", "100%"},
      .scale_title = "exact-match accuracy",
      .missing = "not run: full attention only up to --full-max 1K",
      .panels = {{"titans: constructed model", all},
                 {"baseline: memory writes off", {{0.0, 0.0}, {1.0, 1.0}}},
                 {"baseline: full attention", {{1.0, std::nan("")}, {1.0, std::nan("")}}}}};
  const ScratchDir scratch("plot_test_");
  const std::string path = scratch.Path("niah.svg");
  plot::WriteImage(path,
                   plot::HeatmapsSvg({.title = "Needle in a haystack",
                                      .caption = {"haystack: noise; 3 trials per cell, seed 7"},
                                      .columns = 0},
                                     grid));
  const std::string svg = ReadFile(path);
  EXPECT_EQ(SvgProblem(svg), "") << svg;
  for (const char* text : {">titans: constructed model<", ">baseline: memory writes off<",
                           ">baseline: full attention<", ">Needle in a haystack<",
                           ">haystack: noise; 3 trials per cell, seed 7<"}) {
    EXPECT_EQ(Count(svg, text), 1u) << text;
  }
  // One colour bar, labelled once; 4 + 4 + 2 cells with values, 2 without.
  EXPECT_EQ(Count(svg, "fill=\"url(#scale)\""), 1u);
  EXPECT_EQ(Count(svg, ">exact-match accuracy<"), 1u);
  EXPECT_EQ(Count(svg, ">100%<"), 4u + 2u + 2u + 1u + 1u);  // cells, row label, bar's top label
  EXPECT_EQ(Count(svg, ">n/a<"), 2u);
  EXPECT_EQ(Count(svg, "class=\"missing-legend\""), 1u);
  EXPECT_EQ(Count(svg, ">n/a: not run: full attention only up to --full-max 1K<"), 1u);
  EXPECT_EQ(Count(svg, ">context length (tokens)<"), 3u);  // under each panel
  EXPECT_EQ(Count(svg, ">needle depth<"), 1u);             // the rows are shared
}

TEST(PlotTest, BadInputIsAnErrorAndWritesNothing) {
  const ScratchDir scratch("plot_test_");
  const plot::Figure figure{.title = "t", .caption = {}, .columns = 0};
  ExpectInvalid([&] { plot::LineChartsSvg(figure, {}); }, "no chart");
  plot::LineChart chart = TwoSeries();
  chart.series[1].y.pop_back();
  ExpectInvalid([&] { plot::LineChartsSvg(figure, {chart}); }, "3 x values and 2 y");
  chart = TwoSeries();
  chart.series[0].y[1] = 0;
  ExpectInvalid([&] { plot::LineChartsSvg(figure, {chart}); }, "log axis");
  chart = TwoSeries();
  chart.series[0].x[0] = std::nan("");
  ExpectInvalid([&] { plot::LineChartsSvg(figure, {chart}); }, "x value nan");
  chart = TwoSeries();
  chart.series[0].skipped = {{0, "why"}};
  ExpectInvalid([&] { plot::LineChartsSvg(figure, {chart}); }, "skipped x value 0");

  const std::vector<std::string> x = {"1K", "4K"}, y = {"0%"};
  auto heatmap = [&](std::vector<std::string> xs, std::vector<std::vector<double>> values,
                     std::string missing = "") {
    plot::HeatmapsSvg(figure, {.x_title = "x",
                               .y_title = "y",
                               .x_labels = std::move(xs),
                               .y_labels = y,
                               .scale_title = "s",
                               .missing = std::move(missing),
                               .panels = {{"p", std::move(values)}}});
  };
  ExpectInvalid([&] { heatmap({}, {{}}); }, "at least one");
  ExpectInvalid([&] { heatmap(x, {}); }, "\"p\" has 0 rows of values but 1 row labels");
  ExpectInvalid([&] { heatmap(x, {{0.5}}); }, "row 0 has 1 values");
  ExpectInvalid([&] { heatmap(x, {{0.5, 1.5}}); }, "1.5 at row 0, column 1");
  ExpectInvalid([&] { heatmap(x, {{0.5, INFINITY}}); }, "outside [0, 1]");
  ExpectInvalid([&] { heatmap(x, {{0.5, std::nan("")}}); }, "does not say why");
  heatmap(x, {{0.5, std::nan("")}}, "not run");  // explained: fine
  ExpectInvalid(
      [&] {
        plot::HeatmapsSvg(figure, {.x_title = "x",
                                   .y_title = "y",
                                   .x_labels = x,
                                   .y_labels = y,
                                   .scale_title = "s",
                                   .missing = "",
                                   .panels = {}});
      },
      "no heatmap");

  // A name that is neither .svg nor .png.
  const std::string svg = plot::LineChartsSvg(figure, {TwoSeries()});
  ExpectInvalid([&] { plot::WriteImage(scratch.Path("chart.pdf"), svg); }, "*.svg or *.png");
  EXPECT_NE(plot::ImagePathProblem("chart.pdf").find("*.svg or *.png"), std::string::npos);
  EXPECT_EQ(plot::ImagePathProblem("chart.svg"), "");
  EXPECT_TRUE(scratch.Listing().empty());

  // A file that cannot be written: an i/o error naming it, nothing left behind.
  ExpectError([&] { plot::WriteImage(scratch.Path("missing/dir.svg"), svg); }, ErrorCode::kIo,
              "missing/dir.svg");
  EXPECT_TRUE(scratch.Listing().empty());
}

TEST(PlotTest, PngThroughRsvgConvert) {
  if (!HavePngConverter()) GTEST_SKIP() << "rsvg-convert is not installed (librsvg2-bin)";
  const ScratchDir scratch("plot_test_");
  const std::string svg = plot::LineChartsSvg({.title = "png", .caption = {}, .columns = 0},
                                              {TwoSeries(), TwoSeries()});
  EXPECT_EQ(plot::ImagePathProblem("chart.PNG"), "");
  plot::WriteImage(scratch.Path("chart.png"), svg);
  EXPECT_EQ(scratch.Listing(), std::vector<std::string>{"chart.png"});  // no temporary left
  const std::string png = ReadFile(scratch.Path("chart.png"));
  ASSERT_GT(png.size(), 33u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // The IHDR chunk: the SVG's size in pixels (1200 x 456), big-endian.
  auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<unsigned char>(png[at])) << 24) |
           (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 2])) << 8) |
           static_cast<uint32_t>(static_cast<unsigned char>(png[at + 3]));
  };
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(be32(16), 1200u);
  EXPECT_EQ(be32(20), 456u);

  // An unwritable path: an i/o error naming it, nothing written; an SVG rsvg-convert cannot
  // read: its complaint in the error.
  ExpectError([&] { plot::WriteImage(scratch.Path("missing/dir.png"), svg); }, ErrorCode::kIo,
              "missing/dir.png");
  ExpectError([&] { plot::WriteImage(scratch.Path("bad.png"), "<svg"); }, ErrorCode::kIo,
              "rsvg-convert failed (exit status");
  EXPECT_EQ(scratch.Listing(), std::vector<std::string>{"chart.png"});
}

TEST(PlotTest, PngWithoutRsvgConvertIsAClearError) {
  // rsvg-convert is looked up on PATH: with a PATH where it is not, both the early check and the
  // write say what to install, and nothing is written.
  const ScratchDir scratch("plot_test_");
  const char* old_path = std::getenv("PATH");
  const std::optional<std::string> saved =
      old_path ? std::optional<std::string>(old_path) : std::nullopt;
  ::setenv("PATH", scratch.dir().c_str(), 1);
  const std::string problem = plot::ImagePathProblem("chart.png");
  std::string error;
  try {
    plot::WriteImage(
        scratch.Path("chart.png"),
        plot::LineChartsSvg({.title = "t", .caption = {}, .columns = 0}, {TwoSeries()}));
  } catch (const Error& e) {
    error = e.what();
    EXPECT_EQ(e.code(), ErrorCode::kIo);
  }
  if (saved) {
    ::setenv("PATH", saved->c_str(), 1);
  } else {
    ::unsetenv("PATH");
  }
  for (const std::string& message : {problem, error}) {
    EXPECT_NE(message.find("needs rsvg-convert (Debian package librsvg2-bin"), std::string::npos)
        << message;
  }
  EXPECT_TRUE(scratch.Listing().empty());
}

}  // namespace
}  // namespace titans
