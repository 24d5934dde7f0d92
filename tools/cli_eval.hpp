// `titans eval`: bits per byte of a byte-level model on a text file, by position, with the
// memory's writes on, off and reset every N tokens (docs/CLI.md).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace titans::cli {

// Registers the subcommand on `app`; after a successful parse, if it was chosen, the returned
// function runs it (exit status; titans::Error propagates to main's handler).
std::function<int()> AddEvalCommand(CLI::App& app);

}  // namespace titans::cli
