#!/usr/bin/env python3
"""What the Python binding costs on top of the engine (docs/PYTHON.md, "Overhead").

    VENV/bin/python python/bench_overhead.py [--kinds attention,lmm,...] [--decode-tokens 1024]
                                             [--context 4096] [--repeats 5] [--threads 1]

For each benchmark model (the engine's bench models, evals/include/titans/evals/bench_models.hpp:
four layers of one kind, d 256, seeded weights 1234, forgetting bias -16) it times, in this one
process and on the same model object:
  - one-token decode: the Python loop `for t in tokens: session.forward([t])` against the same
    loop in C++ (titans._titans._decode_loop_seconds: Session::Forward one token at a time into
    one buffer), each from a new session over the same tokens;
  - one forward of `--context` tokens: `session.forward(array)` against one C++ Forward (with
    the allocation of its logits in both).
Each figure is the best of --repeats runs, the two sides alternating (the machine may be shared);
the ratio Python / C++ is printed. The decode of the smallest model (attention: no memory, the
least work per token) is where the binding's fixed cost per call shows most.
"""
import argparse
import json
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


def best_of(repeats, python_run, cpp_run):
    """(best Python seconds, best C++ seconds), alternating which side runs first."""
    py, cpp = [], []
    for r in range(repeats):
        order = [(python_run, py), (cpp_run, cpp)]
        if r % 2:
            order.reverse()
        for run, times in order:
            times.append(run())
    return min(py), min(cpp)


def measure(kind, args):
    model = bench_model(kind)
    tokens = stream_tokens(args.decode_tokens)

    def python_decode():
        s = titans.Session(model, threads=args.threads)
        start = time.perf_counter()
        for t in tokens:
            s.forward([t])
        return time.perf_counter() - start

    def cpp_decode():
        return _titans._decode_loop_seconds(titans.Session(model, threads=args.threads), tokens)

    context = np.array(stream_tokens(args.context), dtype=np.int32)

    def python_forward():
        s = titans.Session(model, threads=args.threads)
        start = time.perf_counter()
        s.forward(context)
        return time.perf_counter() - start

    def cpp_forward():
        return _titans._forward_seconds(titans.Session(model, threads=args.threads), context)

    py_dec, cpp_dec = best_of(args.repeats, python_decode, cpp_decode)
    py_fwd, cpp_fwd = best_of(max(2, args.repeats // 2), python_forward, cpp_forward)
    n = len(tokens)
    return {
        "kind": kind,
        "decode_us_per_token_python": 1e6 * py_dec / n,
        "decode_us_per_token_cpp": 1e6 * cpp_dec / n,
        "decode_ratio": py_dec / cpp_dec,
        "forward_tokens": args.context,
        "forward_s_python": py_fwd,
        "forward_s_cpp": cpp_fwd,
        "forward_ratio": py_fwd / cpp_fwd,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="attention",
                   help=f"comma-separated bench models of {','.join(KINDS)} (default: attention, "
                        f"the smallest)")
    p.add_argument("--decode-tokens", type=int, default=1024, help="tokens per decode run")
    p.add_argument("--context", type=int, default=4096, help="tokens of the one-call forward")
    p.add_argument("--repeats", type=int, default=5, help="runs per side; the best counts")
    p.add_argument("--threads", type=int, default=1, help="session threads (0 = all)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    results = []
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            p.error(f"unknown kind {kind!r}")
        r = measure(kind, args)
        results.append(r)
        print(f"{kind:9s} one-token decode: Python {r['decode_us_per_token_python']:8.1f} us, "
              f"C++ {r['decode_us_per_token_cpp']:8.1f} us per token: ratio "
              f"{r['decode_ratio']:.3f} | {args.context}-token forward: Python "
              f"{r['forward_s_python']:.3f} s, C++ {r['forward_s_cpp']:.3f} s: ratio "
              f"{r['forward_ratio']:.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
