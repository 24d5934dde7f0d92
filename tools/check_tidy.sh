#!/usr/bin/env bash
# Runs clang-tidy (14, with .clang-tidy) over the translation units of the library, the evals
# and the command-line program, using a build directory's compile_commands.json (default
# build/release: configure it first). Fails on any finding. Tests, benchmarks and examples are
# not checked: they follow the same code but are not shipped, and checking them would double
# CI's time for tidy.
#   tools/check_tidy.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build/release}"
if [ ! -f "$build/compile_commands.json" ]; then
  echo "check_tidy: $build/compile_commands.json not found (cmake --preset release)" >&2
  exit 1
fi
mapfile -t files < <(git ls-files 'src/*.cpp' 'evals/*.cpp' 'tools/*.cpp')
# -Wno-unknown-warning-option: the GCC-only warning flags of the build (cmake/TitansOptions.cmake).
run-clang-tidy -quiet -p "$build" -j "$(nproc)" -extra-arg=-Wno-unknown-warning-option \
  "${files[@]}" >"$build/clang-tidy.log" 2>&1 || {
  grep -E "(warning|error):" "$build/clang-tidy.log" | sort -u >&2
  echo "check_tidy: findings above (full log: $build/clang-tidy.log)" >&2
  exit 1
}
echo "check_tidy: ${#files[@]} files clean"
