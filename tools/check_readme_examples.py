#!/usr/bin/env python3
"""Checks that the README's code blocks are the example files CMake builds, verbatim.

    python3 tools/check_readme_examples.py [REPO_ROOT]

A code block of README.md that stands for a file is preceded (on the line just before its
opening fence) by a comment naming the file, relative to the repository root:

    <!-- examples/readme_memory/main.cpp: this block is that file, verbatim ... -->
    ```cpp
    ...the whole file...
    ```

The block's text must equal the file's, byte for byte. Every C++ block (```cpp, ```c++) must
name its file this way, so that no C++ in the README escapes the build (examples/CMakeLists.txt
compiles the files). Exit status 0 when all agree; 1 with a diff of each difference otherwise.
A ctest test (readme_examples) and so CI run it.
"""

import difflib
import pathlib
import re
import sys

MARKER = re.compile(r"^<!--\s*(\S+?):?\s.*-->\s*$|^<!--\s*(\S+?)\s*-->\s*$")
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
CPP = {"cpp", "c++", "cxx"}


def blocks(lines):
    """Yields (line number of the opening fence, language, text, marker path or None)."""
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, language = match.group(1), match.group(2).lower()
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip("\n") != fence:
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        marker = None
        if start > 0:
            m = MARKER.match(lines[start - 1].rstrip("\n"))
            if m:
                marker = m.group(1) or m.group(2)
        yield start + 1, language, "".join(body), marker


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[1])
    readme = root / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines(keepends=True)
    problems = []
    checked = 0
    for line, language, text, marker in blocks(lines):
        if marker is None:
            if language in CPP:
                problems.append(f"README.md:{line}: a C++ block without a file comment "
                                f"(<!-- examples/.../main.cpp: ... -->) just before it")
            continue
        path = root / marker
        if not path.is_file():
            problems.append(f"README.md:{line}: the block names {marker}, which does not exist")
            continue
        expected = path.read_text(encoding="utf-8")
        checked += 1
        if text != expected:
            diff = "".join(difflib.unified_diff(
                expected.splitlines(keepends=True), text.splitlines(keepends=True),
                fromfile=marker, tofile=f"README.md:{line}"))
            problems.append(f"README.md:{line}: the block differs from {marker}:\n{diff}")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"README.md: {checked} code block(s) equal to their files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
