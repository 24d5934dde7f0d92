#!/usr/bin/env bash
# Fails (and lists the files) when a C or C++ file of the repository is not as clang-format (14,
# with .clang-format) writes it. `tools/check_format.sh --fix` rewrites them instead. Skipped:
# examples/readme_memory/main.cpp, which the README shows verbatim with its comments aligned
# for reading (ctest readme_examples keeps the two equal).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.c' | grep -v '^examples/readme_memory/main.cpp$')
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ "${#bad[@]}" -gt 0 ]; then
  echo "check_format: not formatted (run tools/check_format.sh --fix): ${bad[*]}" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
