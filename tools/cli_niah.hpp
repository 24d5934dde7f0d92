// `titans niah`: the needle-in-a-haystack grid (docs/NIAH.md).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace titans::cli {

// Registers the subcommand on `app`; after a successful parse, if it was chosen, the returned
// function runs it (exit status; titans::Error propagates to main's handler).
std::function<int()> AddNiahCommand(CLI::App& app);

}  // namespace titans::cli
