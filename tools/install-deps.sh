#!/usr/bin/env bash
# Installs what titans needs to build, test and benchmark on Debian 12 (bookworm).
# Idempotent: when every package is already installed it does nothing (no network access).
# Runs apt-get as root, or through sudo when started by another user.
set -euo pipefail

packages=(
  build-essential     # g++ 12 (with libgomp for OpenMP), make
  cmake               # 3.25: presets version 6
  libeigen3-dev       # Eigen 3.4 (private, header-only)
  nlohmann-json3-dev  # JSON (safetensors headers, configs)
  libgtest-dev        # GoogleTest
  libgmock-dev        # GoogleMock
  libbenchmark-dev    # Google Benchmark
  libcli11-dev        # command-line parsing for the tools and examples
  clang-format        # tools/check_format.sh (clang-format 14, .clang-format)
  clang               # the fuzz targets (fuzz/, docs/FUZZING.md): clang++ 14 with libFuzzer,
  libclang-rt-14-dev  #   whose runtime is here,
  libomp-dev          #   and clang's OpenMP runtime
  librsvg2-bin        # rsvg-convert: `--plot FILE.png` renders the plots' SVG to PNG
  python3             # tools/check_layers.py (standard library only)
  python3-torch       # the training twin (python/titans/torch) and its tests: torch 1.13, CPU
  python3-numpy       # training data sampler, tests
  python3-pytest      # tests/python
  python3-dev         # the Python package (python/, docs/PYTHON.md): Python.h for its extension,
  python3-venv        #   a venv to pip install it into (Debian's pip refuses system installs),
  pybind11-dev        #   pybind11 (the pip build fetches scikit-build-core from PyPI)
  libopenblas0-openmp # a fast BLAS for Debian's torch (its default is the reference BLAS, ~10x slower)
  bible-kjv           # training and held-out text (tools/prepare_data.py): the `bible` program
  bible-kjv-text      #   and the King James Version
  fortunes            #   fortune files
  jargon-text         #   the Jargon File
  pkg-config
  ca-certificates
  git
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages are already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: apt-get not found; install these packages by hand: ${packages[*]}" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: not root and sudo is not available; run as root" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${packages[@]}"
