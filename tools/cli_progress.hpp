// Progress and durations shared by the long-running subcommands (`titans niah`, `titans eval`).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include "titans/evals/plot.hpp"

namespace titans::cli {

// 42 s, 3m05s, 1h02m.
inline std::string Duration(double seconds) {
  const long long s = std::llround(seconds);
  char buffer[32];
  if (s >= 3600)
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", s / 3600, s / 60 % 60);
  else if (s >= 60)
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buffer, sizeof buffer, "%llds", s);
  return buffer;
}

// One-line progress on stderr (tokens/s and time left), redrawn at most twice a second; only
// on a terminal, so that logs stay clean.
class ProgressLine {
 public:
  using Clock = std::chrono::steady_clock;

  ProgressLine(std::string label, int64_t total)
      : label_(std::move(label)),
        total_(total),
        enabled_(isatty(fileno(stderr)) != 0),
        start_(Clock::now()),
        last_(start_) {}
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void Update(int64_t done) {
    if (!enabled_ || total_ <= 0) return;
    const auto now = Clock::now();
    if (now - last_ < std::chrono::milliseconds(500) && done < total_) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const double left = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
    std::fprintf(stderr, "\r%s: %5.1f%% of %s tokens, %.0f tokens/s, %s left   ", label_.c_str(),
                 100.0 * static_cast<double>(done) / static_cast<double>(total_),
                 plot::TokenCountLabel(total_).c_str(), rate, Duration(left).c_str());
    shown_ = true;
  }
  ~ProgressLine() {
    if (shown_) std::fprintf(stderr, "\n");
  }

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  Clock::time_point start_, last_;
  bool shown_ = false;
};

}  // namespace titans::cli
