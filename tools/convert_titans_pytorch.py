#!/usr/bin/env python3
"""Convert a titans-pytorch `NeuralMemory` or `MemoryAsContextTransformer` into an engine file.

The converter is python/titans/convert.py (the package titans, docs/TITANS_PYTORCH.md); this
script runs it from a checkout without installing the package and keeps the module name the
goldens and benchmark scripts import (`import convert_titans_pytorch as conv`):

    python tools/convert_titans_pytorch.py --state-dict mem.pt --kwargs kwargs.json \\
        --out memory.safetensors [--prefix mem.] [--ttt-batch-size 64]
    python tools/convert_titans_pytorch.py --state-dict mac.pt --kwargs mac_kwargs.json \\
        --out model.safetensors

python/titans/convert.py's doc describes kwargs.json and the conversion.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "python"))

from titans.convert_cli import main  # noqa: E402 (needs neither torch nor titans-pytorch)

if __name__ == "__main__":  # --help and command-line errors then import neither
    sys.exit(main())

from titans.convert import *  # noqa: E402,F401,F403 (the module's functions, as before)
from titans.convert import _contiguous_memory_parameters  # noqa: E402,F401
