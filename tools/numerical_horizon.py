#!/usr/bin/env python3
"""How far titans-pytorch's own float32 result follows its float64 result (issue 10, item 4).

    /work/venv-tp/bin/python tools/numerical_horizon.py [--tokens 2048] [--json OUT] [--only TEXT]

A memory that learns at test time feeds every rounding error back into its weights, so a
float32 run drifts from the float64 run of the same model; where the drift passes the
tolerance, no float32 implementation (the engine included) can be expected to match a float64
golden. For every golden configuration of tools/make_goldens.py (NeuralMemory) and
tools/make_goldens_mac.py (MemoryAsContextTransformer; the option cases opt_* of
make_goldens.py included), and for the memory of train_mac.py's configuration, this builds
the model as the golden script does (float64, perturbed weights that float32 represents
exactly), runs titans-pytorch once in float64 and once in float32 on the same input of
--tokens tokens (one call), and reports

    horizon   the first position whose output differs by more than 1e-3 relative (max over the
              row's outputs, divided by the largest float64 output of the whole run), or "-"
              if none does within --tokens;
    at_T      that difference's maximum over the golden's own T positions (what the engine's
              golden tests compare), which must stay well below the tests' tolerance.

Needs the environment of tools/requirements-goldens.txt (titans-pytorch, PyPI torch).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_goldens as mem_goldens  # noqa: E402
import make_goldens_mac as mac_goldens  # noqa: E402
from titans_pytorch import NeuralMemory  # noqa: E402
from titans_pytorch import MemoryMLP  # noqa: E402

TOLERANCE = 1e-3


def drift(out64: torch.Tensor, out32: torch.Tensor) -> np.ndarray:
    """Per position: max |out32 - out64| over the row / max |out64| over the run."""
    diff = (out32.double() - out64).abs().flatten(2).amax(-1)[0]  # [T]
    return (diff / out64.abs().max()).numpy()


def horizon(d: np.ndarray) -> int | None:
    over = np.flatnonzero(d > TOLERANCE)
    return int(over[0]) if len(over) else None


def memory_drift(mem64: nn.Module, x: torch.Tensor) -> np.ndarray:
    mem32 = copy.deepcopy(mem64).float()
    with torch.no_grad():
        out64, _ = mem64(x.double())
        out32, _ = mem32(x.float())
    return drift(out64, out32)


def memory_cases(tokens: int, only: str | None = None):
    for case in mem_goldens.case_list():
        if only and only not in case["name"]:
            continue
        mem = mem_goldens.build_model(case)
        mem_goldens.scale_outputs_to_unit(mem, case)
        gen = torch.Generator().manual_seed(case["seed"] + 7)
        x = torch.randn(1, max(tokens, case["T"]), case["kwargs"]["dim"], generator=gen)
        yield "memory", case["name"], case["T"], memory_drift(mem, x)


def mac_cases(tokens: int, only: str | None = None):
    for case in mac_goldens.case_list():
        if only and only not in case["name"]:
            continue
        for sliding in case["variants"].values():
            with contextlib.redirect_stdout(io.StringIO()):
                model = mac_goldens.build(case, sliding)
            gen = torch.Generator().manual_seed(case["seed"] + 7)
            x = torch.randint(0, case["kwargs"]["num_tokens"], (1, max(tokens, case["T"])),
                              generator=gen)
            model32 = copy.deepcopy(model).float()  # RMSNorm eps: float32's, as in the golden
            with torch.no_grad():
                d = drift(model(x), model32(x))
            name = f"{case['name']}{'_sliding' if sliding else ''}"
            yield "mac", name, case["T"], d


def train_mac_memory(tokens: int, only: str | None = None):
    """The memory of train_mac.py's layers (docs/TITANS_PYTORCH_OPTIONS.md: dim 384, 4 heads of
    64, MemoryMLP(64, depth 2), chunks of 4 committed every 128, attention-pooled gates,
    qk_rmsnorm, momentum, per-parameter lr modulation, spectral-norm surprises, max_lr 0.1),
    at its initialisation and with the golden script's perturbation of the gates."""
    if only and only not in "train_mac memory initialised":
        return
    torch.manual_seed(5)
    mem = NeuralMemory(dim=384, dim_head=64, heads=4, chunk_size=4, batch_size=128,
                       model=MemoryMLP(dim=64, depth=2), attn_pool_chunks=True,
                       qk_rmsnorm=True, momentum=True, momentum_order=1,
                       default_step_transform_max_lr=0.1, per_parameter_lr_modulation=True,
                       spectral_norm_surprises=True, use_accelerated_scan=False).double()
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, tokens, 384, generator=gen)
    yield "train_mac memory", "initialised", None, memory_drift(mem, x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--json", help="write the table to this file")
    ap.add_argument("--only", help="only the cases whose name contains this text")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print(f"{'kind':17} {'case':42} {'T':>4} {'at_T':>9} {'horizon':>8} {'max':>9}")
    for source in (memory_cases, mac_cases, train_mac_memory):
        for kind, name, T, d in source(args.tokens, args.only):
            h = horizon(d)
            at_T = float(d[:T].max()) if T else None
            rows.append({"kind": kind, "case": name, "T": T, "at_T": at_T, "horizon": h,
                         "max_drift": float(d.max()), "tokens": len(d)})
            print(f"{kind:17} {name:42} {T or '-':>4} "
                  f"{'-' if at_T is None else f'{at_T:.1e}':>9} "
                  f"{'-' if h is None else h:>8} {d.max():9.1e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tolerance": TOLERANCE, "tokens": args.tokens, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
