"""Training throughput of the twin, per kind, as ratios in one process.

    cd python && OMP_NUM_THREADS=1 /usr/bin/python3 -m titans.torch.bench [--length 4096] [--repeats 3]

Times one training step (forward, backward, AdamW) of every equal-size model of the
comparison (train.py: matched_config) on a batch of the preset's shape, after one warm-up
step; reports tokens per second and the ratio to the sliding-window transformer (swa) measured
in the same run, so that a shared, noisy machine still gives comparable numbers. The best of
--repeats steps counts (the least disturbed). --json writes the table.
"""

import argparse
import json
import sys
import time

import torch

from .model import TitansModel
from .train import COMPARE_STEPS, init_weights, matched_config, param_groups


def step_seconds(kind: str, batch: int, length: int, repeats: int) -> float:
    model = TitansModel(matched_config(kind))
    init_weights(model, 1)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 128, (batch, length + 1), generator=gen)
    best = float("inf")
    for i in range(repeats + 1):  # the first step warms up (allocations, BLAS threads)
        start = time.perf_counter()
        logits, _ = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i > 0:
            best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokens = args.batch * args.length
    rows = []
    for kind in COMPARE_STEPS:  # swa first: the baseline
        seconds = step_seconds(kind, args.batch, args.length, args.repeats)
        rows.append({"kind": kind, "step_seconds": round(seconds, 4),
                     "tokens_per_s": round(tokens / seconds, 1)})
    base = rows[0]["tokens_per_s"]
    print(f"twin training step, batch {args.batch} x {args.length} bytes, "
          f"{args.threads} thread(s), torch {torch.__version__}, best of {args.repeats}")
    print(f"{'kind':6} {'s/step':>8} {'tokens/s':>9} {'vs swa':>7}")
    for r in rows:
        r["ratio_to_swa"] = round(r["tokens_per_s"] / base, 3)
        print(f"{r['kind']:6} {r['step_seconds']:8.3f} {r['tokens_per_s']:9.1f} "
              f"{r['ratio_to_swa']:7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "length": args.length, "threads": args.threads,
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
