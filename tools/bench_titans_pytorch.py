#!/usr/bin/env python3
"""Side-by-side benchmark: titans-pytorch on CPU against the titans engine, same models.

    cmake --preset release && cmake --build --preset release --target titans_tp_compare
    /work/venv-tp/bin/python tools/bench_titans_pytorch.py \
        --engine build/release/tools/titans_tp_compare [--configs small,readme,...] \
        [--tokens 1024 4096] [--threads 1 2] [--repetitions 7] [--json results.json]
        [--generate 64 [--prompt 512]]

For every configuration (CASES) and token count the script builds the module with
titans-pytorch (float32, CPU, seeded default initialisation), converts it with
tools/convert_titans_pytorch.py, and writes one seeded random input (embeddings for a
NeuralMemory, token ids for a MemoryAsContextTransformer) to a safetensors file. Then, per thread
count, it times one full titans-pytorch call over all tokens (`mem(x)` / `model(tokens)`, under
torch.no_grad, torch.set_num_threads(T)) and the engine on the same files with the same thread
count (tools/tp_compare.cpp: MemorySession / Session Forward on a fresh session), alternating
the two in every round (the order flips each round) so that load from other processes hits
both sides alike, and reports the medians. Each side is warmed up first (titans-pytorch once per
row; the engine once per process, since every round is a new process). The engine's output of
the first round is compared with titans-pytorch's: both are float32, so where the two compute
the same thing they differ by rounding only.

Output: a Markdown table (config, tokens, threads, tokens/s of each side, the ratio, the max
abs difference and the output's scale) on stdout, and with --json every measurement, the
package versions, the CPU and the load average before and after each row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_titans_pytorch as conv  # noqa: E402
from titans.convert import _decode_mac_kwargs  # noqa: E402 (the checkout's, via the shim)
from train_mac_cpu import TRAIN_MAC  # noqa: E402
from titans_pytorch import MemoryAsContextTransformer, NeuralMemory  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ENGINE = REPO / "build" / "release" / "tools" / "titans_tp_compare"
# Above this 1-minute load average before the run starts, other processes compete for the
# cores: the run goes on (both sides alternate, so the ratio stays meaningful) with a warning.
# Once running, the benchmark itself adds 1-2 to the load (recorded per row in the JSON).
BUSY_LOAD = 0.5
# Both sides compute in float32, so they differ by rounding; a max abs difference above this
# fraction of the output's max abs value means the two did not compute the same thing (or the
# model amplifies rounding, see h8_b128), and the row's speed comparison is suspect.
DIFF_WARN = 1e-3


@dataclass(frozen=True)
class Case:
    kind: str     # "memory" (NeuralMemory) or "mac" (MemoryAsContextTransformer): PREPARE key
    kwargs: dict  # the constructor arguments
    note: str


CASES = {
    "small": Case("memory", dict(dim=64, heads=2, dim_head=32, chunk_size=8),
                  "a small memory: d 64, 2 heads x 32, chunk 8"),
    "readme": Case("memory", dict(dim=384, chunk_size=64),
                   "the package README's NeuralMemory(dim=384, chunk_size=64): 1 head x 384, "
                   "MLP 384-1536-384"),
    "h8": Case("memory", dict(dim=512, heads=8, dim_head=64, chunk_size=64),
               "d 512, 8 heads x 64, chunk 64, batch_size None"),
    # With commits (batch_size) and random weights the memory's dynamics amplify rounding: at
    # the default max_lr of 1 the outputs reach inf/NaN after 700-1600 tokens of random input,
    # at 0.1 after ~4K, and at 0.01 they stay finite but titans-pytorch's own float32 result
    # drifts from its float64 evaluation by 0.9 within 4096 tokens, so no float32 comparison
    # can agree. At 0.003 the two implementations agree within 1.1e-6 up to 16K tokens.
    "h8_b128": Case("memory", dict(dim=512, heads=8, dim_head=64, chunk_size=64, batch_size=128,
                                   default_step_transform_max_lr=0.003),
                    "as h8 with batch_size 128 (commits), max_lr 0.003"),
    "mac": Case("mac", dict(num_tokens=256, dim=256, depth=2, segment_len=128,
                            num_persist_mem_tokens=4, num_longterm_mem_tokens=16),
                "the package README's MemoryAsContextTransformer"),
    # titans-pytorch's training script's model (tools/train_mac_cpu.py: its provenance), with
    # the accelerated scan off (a CUDA kernel; the same recurrence).
    "train_mac": Case("mac", TRAIN_MAC,
        "train_mac.py's MemoryAsContextTransformer (dim 384, depth 8, memory on layers 2, 4, 6 "
        "with weight residual, qkv views, attention pooling, lr modulation, spectral norm)"),
}


@dataclass
class Prepared:
    run_tp: Callable[[], np.ndarray]  # one titans-pytorch call; returns its output [n, width]
    engine_args: list[str]            # titans_tp_compare arguments naming the files
    generated: bool = False           # outputs are generated token ids (int32), not floats


def prepare_memory(kwargs, tokens, seed, workdir, name):
    torch.manual_seed(seed)
    mem = NeuralMemory(**kwargs).float().eval()
    model_file = os.path.join(workdir, f"{name}.memory.safetensors")
    conv.convert(mem, model_file)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, tokens, kwargs["dim"], generator=gen)
    input_file = os.path.join(workdir, f"{name}.{tokens}.input.safetensors")
    conv.write_safetensors(input_file, [("x", x[0].numpy())])

    def run_tp():
        retrieved, _ = mem(x)
        return retrieved[0].numpy()
    return Prepared(run_tp, ["--memory", model_file, "--input", input_file])


def build_mac(kwargs, seed):
    torch.manual_seed(seed)
    random.seed(seed)  # hyper-connections put static_alpha's one-hot at random.randrange(S)
    # The converter's JSON form of the constructor arguments (MemoryMLP as a dict).
    return MemoryAsContextTransformer(**_decode_mac_kwargs(kwargs)).float().eval()


def converted_mac(kwargs, tokens, seed, workdir, name, tag):
    """The seeded MAC, its engine file, and `tokens` seeded token ids [1, tokens] in an input
    file (the generator's seed offset by `tag`: 1 for calls, 2 for prompts)."""
    model = build_mac(kwargs, seed)
    model_file = os.path.join(workdir, f"{name}.model.safetensors")
    conv.convert_mac(model, model_file)
    gen = torch.Generator().manual_seed(seed + tag)
    ids = torch.randint(0, kwargs["num_tokens"], (1, tokens), generator=gen)
    input_file = os.path.join(workdir, f"{name}.{tokens}.{tag}.input.safetensors")
    conv.write_safetensors(input_file, [("tokens", ids[0].numpy().astype(np.int32))])
    return model, model_file, ids, input_file


def prepare_mac(kwargs, tokens, seed, workdir, name):
    model, model_file, ids, input_file = converted_mac(kwargs, tokens, seed, workdir, name, 1)

    def run_tp():
        return model(ids)[0].numpy()
    return Prepared(run_tp, ["--model", model_file, "--input", input_file])


def prepare_generate(kwargs, prompt, new, seed, workdir, name):
    """Greedy generation of `new` tokens after a `prompt`-token prompt: titans-pytorch's
    sample(temperature=0., use_cache=True) (its fast path, the KV and memory caches) against
    Session::Generate, each including the prompt's forward."""
    model, model_file, ids, input_file = converted_mac(kwargs, prompt, seed, workdir, name, 2)

    def run_tp():
        return model.sample(ids, prompt + new, temperature=0., use_cache=True,
                            show_progress=False)[0].numpy().astype(np.int32)
    return Prepared(run_tp, ["--model", model_file, "--input", input_file, "--generate",
                             str(new)], generated=True)


PREPARE = {"memory": prepare_memory, "mac": prepare_mac}


def run_engine(engine, args, threads, output=None):
    """One engine process: one warm-up call and one timed call; returns its JSON report."""
    cmd = [str(engine), *args, "--threads", str(threads), "--warmup", "1", "--repetitions", "1"]
    if output:
        cmd += ["--output", output]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"engine exited with {proc.returncode} ({' '.join(cmd)}): "
                           f"{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def time_tp(prepared):
    start = time.perf_counter()
    prepared.run_tp()
    return time.perf_counter() - start


def measure_row(name, prepared, tokens, threads, args, workdir):
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    reference = prepared.run_tp()  # also titans-pytorch's warm-up
    if not np.all(np.isfinite(reference)):
        raise RuntimeError(f"{name}: titans-pytorch's output is not finite at {tokens} tokens "
                           f"(the randomly initialised memory diverged); use fewer tokens or a "
                           f"smaller max_lr")
    engine_output = os.path.join(workdir, f"{name}.{tokens}.engine.f32")
    tp_seconds, engine_seconds = [], []
    for r in range(args.repetitions):
        # Alternate which side goes first so a slow phase of the machine hits both.
        for side in (("tp", "engine") if r % 2 == 0 else ("engine", "tp")):
            if side == "tp":
                tp_seconds.append(time_tp(prepared))
            else:
                report = run_engine(args.engine, prepared.engine_args, threads,
                                    engine_output if r == 0 else None)
                engine_seconds.append(report["median_seconds"])

    out = np.fromfile(engine_output, dtype=np.int32 if prepared.generated else np.float32)
    if out.size != reference.size:
        raise RuntimeError(f"{name}: engine output has {out.size} values, titans-pytorch "
                           f"{reference.size}")
    out = out.reshape(reference.shape)
    tp_median, engine_median = statistics.median(tp_seconds), statistics.median(engine_seconds)
    row = dict(
        config=name, tokens=tokens, threads=threads,
        tp_seconds=tp_seconds, engine_seconds=engine_seconds,
        tp_tokens_per_second=tokens / tp_median,
        engine_tokens_per_second=tokens / engine_median,
        ratio=tp_median / engine_median,
        load_before=load_before, load_after=os.getloadavg()[0])
    if prepared.generated:  # greedy tokens: how many agree before the first difference
        differ = np.nonzero(out != reference)[0]
        row.update(kind="generate", prompt_tokens=args.prompt,
                   equal_prefix=int(differ[0]) if len(differ) else int(out.size))
        print(f"{name} generate {tokens} after {args.prompt} tokens {threads} thread(s): "
              f"titans-pytorch {row['tp_tokens_per_second']:.1f} tokens/s, engine "
              f"{row['engine_tokens_per_second']:.1f} tokens/s ({row['ratio']:.1f}x), "
              f"{row['equal_prefix']} of {tokens} greedy tokens equal", file=sys.stderr)
        return row
    row.update(kind="forward", max_abs_diff=float(np.abs(out - reference).max()),
               output_max_abs=float(np.abs(reference).max()))
    if row["max_abs_diff"] > DIFF_WARN * row["output_max_abs"]:
        print(f"warning: {name}/{tokens}: engine and titans-pytorch outputs differ by "
              f"{row['max_abs_diff']:.1e} (output max {row['output_max_abs']:.2f})",
              file=sys.stderr)
    print(f"{name} {tokens} tokens {threads} thread(s): titans-pytorch "
          f"{row['tp_tokens_per_second']:.0f} tokens/s, engine "
          f"{row['engine_tokens_per_second']:.0f} tokens/s ({row['ratio']:.1f}x), "
          f"max abs diff {row['max_abs_diff']:.1e}", file=sys.stderr)
    return row


def versions():
    packages = ("titans-pytorch", "torch", "numpy", "assoc-scan", "hyper-connections",
                "x-transformers")
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = package_version(p)
        except PackageNotFoundError:  # reported as null rather than failing the run
            out[p] = None
    return out


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(rows):
    print("| config | tokens | threads | titans-pytorch tokens/s | engine tokens/s | "
          "engine / titans-pytorch | max abs diff (output max) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "generate":
            print(f"| {r['config']} | generate {r['tokens']} after {r['prompt_tokens']} | "
                  f"{r['threads']} | {r['tp_tokens_per_second']:.1f} | "
                  f"{r['engine_tokens_per_second']:.1f} | {r['ratio']:.1f}x | "
                  f"{r['equal_prefix']} of {r['tokens']} greedy tokens equal |")
            continue
        print(f"| {r['config']} | {r['tokens']} | {r['threads']} | "
              f"{r['tp_tokens_per_second']:.0f} | {r['engine_tokens_per_second']:.0f} | "
              f"{r['ratio']:.1f}x | {r['max_abs_diff']:.1e} ({r['output_max_abs']:.2f}) |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="configurations:\n" + "\n".join(
                                    f"  {k:8s} {c.note}" for k, c in CASES.items()))
    p.add_argument("--engine", type=Path, default=DEFAULT_ENGINE,
                   help="the titans_tp_compare program (default: %(default)s)")
    p.add_argument("--configs", default=",".join(CASES),
                   help="comma-separated configurations (default: all)")
    p.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096],
                   help="tokens per call (one full call each; default: %(default)s)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts, the same for both sides (default: %(default)s)")
    p.add_argument("--repetitions", type=int, default=7,
                   help="timed calls per side and row; the median is reported (default: "
                        "%(default)s)")
    p.add_argument("--seed", type=int, default=1, help="weights and inputs (default: %(default)s)")
    p.add_argument("--generate", type=int, default=0,
                   help="for the MAC configurations also time greedy generation of this many "
                        "tokens after a --prompt-token prompt (default: none)")
    p.add_argument("--prompt", type=int, default=512,
                   help="the prompt of --generate (default: %(default)s)")
    p.add_argument("--json", help="write every measurement and the environment here")
    p.add_argument("--workdir", help="keep the converted and input files here (default: a "
                                     "temporary directory)")
    args = p.parse_args(argv)

    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    if min(args.tokens) < 1 or min(args.threads) < 1 or args.repetitions < 1:
        p.error("--tokens, --threads and --repetitions must be positive")
    if not os.access(args.engine, os.X_OK):
        p.error(f"{args.engine} is not an executable; build it with `cmake --preset release && "
                f"cmake --build --preset release --target titans_tp_compare`")
    args.engine = args.engine.resolve()

    load_at_start = os.getloadavg()[0]
    if load_at_start > BUSY_LOAD:
        print(f"warning: load average {load_at_start:.2f} before the run: other processes "
              f"compete for the cores", file=sys.stderr)
    torch.set_default_dtype(torch.float32)
    rows, status = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        try:
            with torch.no_grad():
                for name in names:
                    case = CASES[name]
                    for tokens in args.tokens:
                        prepared = PREPARE[case.kind](case.kwargs, tokens, args.seed, workdir,
                                                      name)
                        for threads in args.threads:
                            rows.append(measure_row(name, prepared, tokens, threads, args,
                                                    workdir))
                    if case.kind == "mac" and args.generate > 0:
                        prepared = prepare_generate(case.kwargs, args.prompt, args.generate,
                                                    args.seed, workdir, name)
                        for threads in args.threads:
                            rows.append(measure_row(name, prepared, args.generate, threads,
                                                    args, workdir))
        except (RuntimeError, conv.UnsupportedError) as e:
            # Report what was measured before the failure, then fail.
            print(f"error: {e}", file=sys.stderr)
            status = 1
    if rows:
        print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(versions=versions(), cpu=cpu_name(), engine=str(args.engine),
                           repetitions=args.repetitions, seed=args.seed,
                           load_at_start=load_at_start,
                           configs={n: dict(kind=CASES[n].kind, kwargs=CASES[n].kwargs,
                                            note=CASES[n].note) for n in names},
                           rows=rows), f, indent=1)
            f.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
