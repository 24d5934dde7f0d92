// main() of the benchmark programs that have flags of their own besides Google Benchmark's.
#pragma once

#include <benchmark/benchmark.h>

#include <cstring>
#include <functional>
#include <vector>

namespace titans::bench {

// A flag of the program itself: `<prefix><value>`, e.g. prefix "--threads=".
struct Flag {
  const char* prefix;
  std::function<void(const char* value)> set;
};

// Takes the program's own flags out of argv (Google Benchmark rejects flags it does not know),
// initialises Google Benchmark with the rest, then calls `ready`, which checks the flags and
// registers the benchmarks (false: exit status 1; it says why), and runs them. Returns main's
// exit status.
inline int BenchmarkMain(int argc, char** argv, const std::vector<Flag>& flags,
                         const std::function<bool()>& ready) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    bool own = false;
    for (const Flag& flag : flags) {
      if (std::strncmp(argv[i], flag.prefix, std::strlen(flag.prefix)) == 0) {
        flag.set(argv[i] + std::strlen(flag.prefix));
        own = true;
      }
    }
    if (!own) args.push_back(argv[i]);
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);  // argv[argc] is null, as main's
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  if (!ready()) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace titans::bench
