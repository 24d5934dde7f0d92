#!/usr/bin/env python3
"""Checks that the C++ sources keep to the layers of README.md "Layout".

    python3 tools/check_layers.py [REPO_ROOT]

Every `#include` of a file of this repository is resolved (as the compiler does: the including
file's directory first, then include/, src/ and evals/include/) and must go to a layer the
including file may use. The layers, lowest first:

    public API   include/titans/: error.hpp, tensor.hpp < memory_config.hpp, memory.hpp
                 < model_config.hpp, model.hpp, session.hpp, titans.hpp (each group may include
                 only the groups before it and itself); titans.h, the C API, is a group of
                 its own that includes no header of the repository
    ops          src/ops/         kernels and helpers: the base public headers only
    io           src/io/          safetensors and checked files: the base public headers only
    memory       src/memory/      ops, io and the public API up to memory.hpp
    model        src/model/       ops, io, memory and the whole public API; in src/model/arch/ an
                                  architecture includes architecture.hpp and its own files, not
                                  another architecture's
    reference    src/reference/   naive references (tests, benchmarks): ops, public memory API
    capi         src/capi/        the C API's implementation: titans.h, the whole public C++ API
                                  and io
    evals        evals/           the public API and io
    tools        tools/           the command-line programs: the public API, io and evals only
    examples     examples/        the public API (also titans.h) and evals

src/error.cpp implements error.hpp and includes only the base public headers. tests/ and bench/
are white-box and may include anything. A file under src/ outside these directories, a public
header this script does not know, or a quoted include that names no file of the repository is
an error too (the layer of a new file must be decided, not guessed).

Prints one line per violation (file:line: what) and exits 1 if there is any, else prints a
summary and exits 0. Python 3 standard library only.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

SOURCE_SUFFIXES = {".cpp", ".hpp", ".h", ".cc", ".c"}
INCLUDE_ROOTS = ["include", "src", "evals/include"]
CHECKED_DIRS = ["include", "src", "evals", "tools", "examples"]

# Public headers, by group. A new public header must be added here.
PUBLIC = {
    "error.hpp": "api-base",
    "tensor.hpp": "api-base",
    "memory_config.hpp": "api-memory",
    "memory.hpp": "api-memory",
    "model_config.hpp": "api-model",
    "model.hpp": "api-model",
    "session.hpp": "api-model",
    "titans.hpp": "api-model",
    "titans.h": "api-c",
}

API = {"api-base", "api-memory", "api-model"}
ALLOWED = {
    "api-base": {"api-base"},
    "api-memory": {"api-base", "api-memory"},
    "api-model": API,
    "api-c": {"api-c"},
    "base": {"api-base"},
    "ops": {"api-base", "ops"},
    "io": {"api-base", "io"},
    "memory": {"api-base", "api-memory", "ops", "io", "memory"},
    "model": API | {"ops", "io", "memory", "model"},
    "reference": {"api-base", "api-memory", "ops", "reference"},
    "capi": API | {"api-c", "io", "capi"},
    "evals": API | {"io", "evals"},
    "tools": API | {"io", "evals", "tools"},
    "examples": API | {"api-c", "evals", "examples"},
}

SRC_LAYERS = {"ops", "io", "memory", "model", "reference", "capi"}
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def layer_of(rel: str) -> str | None:
    """The layer of a repository path (posix, relative), None if not checked, or an error
    message starting with '!'."""
    parts = rel.split("/")
    if parts[0] == "include":
        if len(parts) == 3 and parts[1] == "titans":
            return PUBLIC.get(parts[2], f"!public header {rel} has no layer in check_layers.py")
        return f"!{rel} is outside include/titans/"
    if parts[0] == "src":
        if rel == "src/error.cpp":
            return "base"
        if len(parts) >= 3 and parts[1] in SRC_LAYERS:
            return parts[1]
        return f"!{rel} is in no layer (src/ops, io, memory, model, reference, capi)"
    if parts[0] in ("evals", "tools", "examples"):
        return parts[0]
    return None  # tests/, bench/: white-box


def arch_name(rel: str) -> str | None:
    """src/model/arch/<name>[_weights].<ext> -> name; None outside src/model/arch/."""
    if not rel.startswith("src/model/arch/"):
        return None
    stem = Path(rel).stem
    return stem[: -len("_weights")] if stem.endswith("_weights") else stem


def resolve(root: Path, including: Path, quote: str, name: str) -> Path | None:
    candidates = [including.parent / name] if quote == '"' else []
    candidates += [root / r / name for r in INCLUDE_ROOTS]
    for c in candidates:
        if c.is_file():
            return Path(os.path.normpath(c))
    return None


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    root = root.resolve()
    errors: list[str] = []
    files = includes = 0
    for top in CHECKED_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            layer = layer_of(rel)
            if layer is None:
                continue
            if layer.startswith("!"):
                errors.append(f"{rel}: {layer[1:]}")
                continue
            files += 1
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, 1):
                m = INCLUDE_RE.match(line)
                if not m:
                    continue
                quote, name = m.groups()
                target = resolve(root, path, quote, name)
                if target is None:
                    if quote == '"':
                        errors.append(f'{rel}:{number}: #include "{name}" names no file of the '
                                      "repository")
                    continue  # <system header>
                includes += 1
                try:
                    target_rel = target.relative_to(root).as_posix()
                except ValueError:
                    continue
                target_layer = layer_of(target_rel)
                if target_layer is None or target_layer.startswith("!"):
                    errors.append(f"{rel}:{number}: includes {target_rel}, which is in no layer "
                                  f"that {layer} may use")
                    continue
                if target_layer not in ALLOWED[layer]:
                    allowed = ", ".join(sorted(ALLOWED[layer]))
                    errors.append(f"{rel}:{number}: includes {target_rel} ({target_layer}); "
                                  f"{layer} may include only {allowed}")
                    continue
                a, b = arch_name(rel), arch_name(target_rel)
                if a and b and b not in (a, "architecture") and a != "architecture":
                    errors.append(f"{rel}:{number}: includes {target_rel}: one architecture "
                                  "does not include another's files")
    for e in errors:
        print(e)
    if errors:
        print(f"check_layers: {len(errors)} violation(s) in {files} files", file=sys.stderr)
        return 1
    print(f"check_layers: {files} files, {includes} includes of the repository's headers, "
          "no upward include")
    return 0


if __name__ == "__main__":
    sys.exit(main())
