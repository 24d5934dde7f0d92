// `titans bench`: prefill cost and peak memory against context length (docs/CLI.md).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace titans::cli {

// Registers the subcommand on `app`; after a successful parse, the returned function runs it if
// it was chosen (exit status; -1 if it was not chosen). Errors propagate to main's handler.
std::function<int()> AddBenchCommand(CLI::App& app);

}  // namespace titans::cli
