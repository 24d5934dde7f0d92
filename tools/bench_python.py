#!/usr/bin/env python3
"""What the Python binding costs on top of the engine (docs/PYTHON.md, "Overhead").

    VENV/bin/python tools/bench_python.py [--kinds lmm,attention,...] [--decode-tokens 1024]
                        [--chunk 32] [--context 4096] [--repeats 5] [--threads 1] [--json F]

For each benchmark model (the engine's bench models, evals/include/titans/evals/bench_models.hpp:
four layers of one kind, d 256, seeded weights 1234, forgetting bias -16) it times, in this one
process and on the same model object:
  - the binding's fixed cost per call: `session.forward([])`, which gives the engine no work;
  - one-token decode: the Python loop `for t in tokens: session.forward([t])` against the same
    loop in C++ (titans._titans._decode_loop_seconds: Session::Forward one token at a time into
    one buffer). Both run on one session, taking turns every --chunk tokens, so that a busy
    machine slows both alike; each decodes every position once. The median of --repeats
    measurements of the ratio Python / C++ is printed, with each measurement;
  - one forward of `--context` tokens from position 0: `session.forward(array)` against one
    C++ Forward (with the allocation of its logits in both), the best of a few runs per side.
lmm and attention (the defaults) cost least per token (docs/PERFORMANCE.md: 689 and 956 us per
decoded token on one thread), so the binding's fixed cost shows most there.
"""
import argparse
import json
import statistics
import time

import numpy as np

import titans
from titans import _titans

KINDS = ["lmm", "mal", "mag", "mac", "attention", "full"]


def bench_config(kind):
    """BenchModelConfig(kind) of evals/include/titans/evals/bench_models.hpp, as JSON."""
    memory = {  # MemoryConfig::Paper(256, 4, 64, 2, 64) without its output projection
        "d_model": 256, "heads": 4, "head_dim": 64, "depth": 2, "expansion": 4.0,
        "activation": "silu", "output": "plain", "layer_norm_eps": 1e-5, "store_norm": True,
        "retrieve_norm": True, "rms_eps": 1e-6, "conv_kernel": 4, "qkv_activation": "silu",
        "qk_norm": "l2", "max_lr": 1.0, "momentum": True, "loss": "sum", "step": 1,
        "chunk": 64, "read": "chunk", "read_offset": 0, "output_gate": False,
        "output_proj": False,
    }
    block = "attention" if kind == "full" else kind
    return {
        "vocab_size": 256, "d_model": 256, "ffn_hidden": 1024, "norm_eps": 1e-6,
        "tie_embeddings": True, "layers": [block] * 4,
        "attention": {"heads": 8, "kv_heads": 8, "head_dim": 32,
                      "window": 0 if kind == "full" else 512, "persistent": 4,
                      "rope_base": 10000.0},
        "memory": memory, "segment": 64 if kind == "mac" else 0,
    }


def bench_model(kind):
    """MakeBenchModel(kind): seeded weights, the memories' forgetting bias at -16."""
    config = bench_config(kind)
    tensors = titans.Model.random(config, seed=1234).tensors()
    for name in tensors:
        if name.endswith(".memory.b_alpha"):
            tensors[name][:] = -16.0
    return titans.Model.from_tensors(config, tensors)


def stream_tokens(n):
    """bench::StreamToken: every byte value in turn."""
    return [(i * 7919) % 256 for i in range(n)]


def decode_seconds(model, tokens, threads, chunk):
    """(Python seconds, C++ seconds) for one-token decode over every position of `tokens`.

    One session takes the tokens in chunks, the Python loop and the C++ loop taking turns
    chunk by chunk (so that a busy neighbour slows both alike); a second pass swaps which side
    takes the even chunks, so that each side decodes every position exactly once."""
    py = cpp = 0.0
    for parity in range(2):
        s = titans.Session(model, threads=threads)
        for i, at in enumerate(range(0, len(tokens), chunk)):
            piece = tokens[at:at + chunk]
            if (i + parity) % 2 == 0:
                start = time.perf_counter()
                for t in piece:
                    s.forward([t])
                py += time.perf_counter() - start
            else:
                cpp += _titans._decode_loop_seconds(s, piece)
    return py, cpp


def forward_seconds(model, context, threads, repeats):
    """(best Python seconds, best C++ seconds) of one forward of `context` from position 0, the
    two sides alternating which runs first."""
    py, cpp = [], []
    for r in range(repeats):
        runs = [("py", py), ("cpp", cpp)]
        if r % 2:
            runs.reverse()
        for side, times in runs:
            s = titans.Session(model, threads=threads)
            if side == "py":
                start = time.perf_counter()
                s.forward(context)
                times.append(time.perf_counter() - start)
            else:
                times.append(_titans._forward_seconds(s, context))
    return min(py), min(cpp)


def call_cost_us(model, threads, calls=20000):
    """Microseconds per `session.forward([])`: the binding's fixed cost per call (argument
    conversion, the output array, the GIL release, the session's lock) with no engine work."""
    s = titans.Session(model, threads=threads)
    empty = []
    start = time.perf_counter()
    for _ in range(calls):
        s.forward(empty)
    return 1e6 * (time.perf_counter() - start) / calls


def measure(kind, args):
    model = bench_model(kind)
    tokens = stream_tokens(args.decode_tokens)
    ratios, py_us, cpp_us = [], [], []
    for _ in range(args.repeats):
        py, cpp = decode_seconds(model, tokens, args.threads, args.chunk)
        ratios.append(py / cpp)
        py_us.append(1e6 * py / (2 * len(tokens)))
        cpp_us.append(1e6 * cpp / (2 * len(tokens)))
    context = np.array(stream_tokens(args.context), dtype=np.int32)
    py_fwd, cpp_fwd = forward_seconds(model, context, args.threads, max(2, args.repeats // 2))
    return {
        "kind": kind,
        "call_cost_us": call_cost_us(model, args.threads),
        "decode_us_per_token_python": statistics.median(py_us),
        "decode_us_per_token_cpp": statistics.median(cpp_us),
        "decode_ratio": statistics.median(ratios),
        "decode_ratios": ratios,
        "forward_tokens": args.context,
        "forward_s_python": py_fwd,
        "forward_s_cpp": cpp_fwd,
        "forward_ratio": py_fwd / cpp_fwd,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="lmm,attention",
                   help=f"comma-separated bench models of {','.join(KINDS)} (default: lmm and "
                        f"attention, the cheapest per token)")
    p.add_argument("--decode-tokens", type=int, default=1024, help="tokens per decode pass")
    p.add_argument("--chunk", type=int, default=32,
                   help="decode tokens per turn of one side")
    p.add_argument("--context", type=int, default=4096, help="tokens of the one-call forward")
    p.add_argument("--repeats", type=int, default=5,
                   help="decode measurements (the median counts); forward: half as many runs "
                        "per side, the best counts")
    p.add_argument("--threads", type=int, default=1, help="session threads (0 = all)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    results = []
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            p.error(f"unknown kind {kind!r}")
        r = measure(kind, args)
        results.append(r)
        print(f"{kind:9s} call {r['call_cost_us']:.2f} us | one-token decode: Python "
              f"{r['decode_us_per_token_python']:7.1f} us, C++ {r['decode_us_per_token_cpp']:7.1f} "
              f"us per token: ratio {r['decode_ratio']:.3f} (runs "
              f"{', '.join(f'{x:.3f}' for x in r['decode_ratios'])}) | {args.context}-token "
              f"forward: Python {r['forward_s_python']:.3f} s, C++ {r['forward_s_cpp']:.3f} s: "
              f"ratio {r['forward_ratio']:.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
