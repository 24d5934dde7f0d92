"""Train a byte-level Titans model with the training twin and save it as an engine model file.

    PYTHONPATH=python /usr/bin/python3 -m titans.torch.train --preset mal --data data --out runs/mal

One command reproduces a run: the preset fixes the architecture, the optimiser, the number of
steps, the batch and sequence length, the data mixture and the seed. Runs use one thread
(torch.set_num_threads(1)): two runs side by side use a 2-core machine better than one run on
two threads, and a one-thread run is deterministic (the same seed gives the same losses).

Writes to --out: `train.jsonl` (one line per step: step, tokens, loss in bits per byte, recall
accuracy of the answer bytes, learning rate, seconds), `eval.jsonl` (held-out bits per byte
every --eval-every steps), `model.safetensors` (engine model file, at the end and at every
checkpoint), `checkpoint.pt` (to resume with --resume), and `run.json` (the preset, the
command, time and tokens).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch

from .data import Corpus, sample_batch
from .model import TitansModel, load_engine_model, save_engine_model

# ---------------------------------------------------------------------------------------------
# Presets: the architecture (the engine's ModelConfig JSON) and the training recipe.


def memory_config(d: int, heads: int, head_dim: int, chunk: int) -> dict:
    """The memory of the trained models: the paper preset (MemoryConfig::Paper: one step per
    token, gradients at the chunk start, L2-normalised keys and queries, conv 4, SiLU) with a
    LINEAR memory (depth 1) and no momentum, and max_lr = 1/chunk. That combination is
    provably stable on any input: a chunk's write is W <- (1 - alpha) (W - 2 sum_k theta_k
    k_k^T (k_k W - v_k)) + ..., whose linear part I - 2 sum theta_k k_k^T k_k has eigenvalues in
    [-1, 1] when sum_k theta_k <= 1, which theta <= 1/chunk guarantees for unit keys. Deeper
    memories and momentum near 1 diverged to NaN within 30 training steps (measured: the
    outer training drives the gates and value scales to where the inner descent is unstable).
    """
    return {
        "d_model": d, "heads": heads, "head_dim": head_dim, "depth": 1, "expansion": 1.0,
        "activation": "silu", "output": "plain", "layer_norm_eps": 1e-5, "store_norm": True,
        "retrieve_norm": True, "rms_eps": 1e-6, "conv_kernel": 4, "qkv_activation": "silu",
        "qk_norm": "l2", "max_lr": 1.0 / chunk, "momentum": False, "loss": "sum", "step": 1,
        "chunk": chunk, "read": "chunk", "read_offset": 0, "output_gate": False,
        "output_proj": False,
    }


def model_config(layers: list[str], d: int = 128, ffn: int = 384, window: int = 128,
                 chunk: int = 64) -> dict:
    return {
        "vocab_size": 256, "d_model": d, "ffn_hidden": ffn, "norm_eps": 1e-6,
        "tie_embeddings": False, "layers": layers,
        "attention": {"heads": 4, "kv_heads": 4, "head_dim": d // 4, "window": window,
                      "persistent": 4, "rope_base": 10000.0},
        "memory": memory_config(d, 2, d // 2, chunk),
        "segment": chunk if "mac" in layers else 0,
    }


def parameters(config: dict) -> int:
    return sum(t.numel() for _, t in TitansModel(config).named_engine_tensors())


def layers_of(kind: str) -> list[str]:
    """Layer 0 is plain attention in every model (a cheap first layer that builds the local
    features the memory's keys use); then three blocks of the kind."""
    return ["attention"] * 4 if kind == "swa" else ["attention"] + [kind] * 3


def matched_config(kind: str) -> dict:
    """The kind's model, its FFN widened until it has as many parameters as the MAG model
    (MAG, MAL and MAC have the same size; LMM lacks attention, SWA lacks memory)."""
    target = parameters(model_config(layers_of("mag")))
    ffn = 384
    while parameters(model_config(layers_of(kind), ffn=ffn + 1)) <= target:
        ffn += 1
    return model_config(layers_of(kind), ffn=ffn)


RECIPE = {
    "seed": 1, "batch": 2, "length": 4096, "lr": 3e-3, "min_lr": 3e-4, "warmup": 30,
    "weight_decay": 0.1, "clip": 1.0, "recall_fraction": 0.5, "recall_weight": 1.0,
    "eval_bytes": 65536, "stream": 0, "source_weights": None,
    "min_distance": None,  # bytes from a fact's statement to its question; None: 4 windows
    "init": None,  # an engine model file (path from the repository root) to start from
}

# Steps that take about 14 minutes on one idle thread of this machine (measured throughput of
# each kind: swa 2470, lmm 1740, mal 1500, mag 1515, mac 1040 tokens/s): the equal-time
# comparison.
COMPARE_STEPS = {"swa": 240, "lmm": 170, "mal": 146, "mag": 146, "mac": 100}

PRESETS = {f"compare-{kind}": {"config": matched_config(kind), **RECIPE, "steps": steps,
                               "eval_every": steps}
           for kind, steps in COMPARE_STEPS.items()}
# The shipped model: MAG trained about 80 minutes on one thread.
PRESETS["mag"] = {"config": matched_config("mag"), **RECIPE, "steps": 850, "eval_every": 100}
# The long-stream models: each row is a stream of `stream` consecutive 4096-byte pieces
# (128 KB), the memory and attention state carried from piece to piece (gradients stop at the
# piece boundary), so the memory meets the states of long texts in training as it does in
# `titans eval`; three quarters of the streams are KJV text (the held-out books are KJV). Steps
# for about two hours on one thread with a second job beside it.
LONG = {**RECIPE, "stream": 32, "eval_every": 100,
        "source_weights": {"bible-kjv-text": 0.75, "fortunes": 0.125, "jargon-text": 0.125}}
PRESETS["mag-long"] = {"config": matched_config("mag"), **LONG, "steps": 1000}
PRESETS["lmm-long"] = {"config": matched_config("lmm"), **LONG, "steps": 1150}
# A recall curriculum: the mag-long model (run that preset first) fine-tuned on rows that are
# all recall rows (1-4 facts in 1024 bytes, each asked 160+ bytes after its statement: just
# beyond the 128-byte window, so only the memory can answer), answers weighted 10x. The long-stream training left
# answer accuracy at guessing level (about 0.09 per byte); this asks whether the memory can
# learn to write and read a fact at all when the distance is short and the signal dense.
PRESETS["mag-recall"] = {
    "config": matched_config("mag"), **RECIPE, "init": "runs/mag-long/model.safetensors",
    "batch": 8, "length": 1024, "recall_fraction": 1.0, "recall_weight": 10.0,
    "min_distance": 160, "lr": 1e-3, "min_lr": 1e-4, "warmup": 10, "steps": 900,
    "eval_every": 100,
}
# Many streams: the two lessons above at once. 8 rows per step (the recall run's independent
# rows made text better) and each row a stream of 64 consecutive 1024-byte pieces (64 KB; the
# long streams made the memory carry), so a step sees 8 texts, not 2, and every memory state up
# to 64 KB. Same token budget per step as mag-long (8 x 1024 = 2 x 4096).
PRESETS["mag-streams"] = {"config": matched_config("mag"), **LONG, "batch": 8, "length": 1024,
                          "stream": 64, "steps": 650}
# The same for twice the steps (10.6M tokens): 46 minutes on one idle core (2026-12-03).
PRESETS["mag-streams-long"] = {**PRESETS["mag-streams"], "steps": 1300}
# The same for 2400 steps (19.7M tokens, 2.3 epochs): the shipped model, 99 minutes on one core
# beside other work (2026-12-03).
PRESETS["mag-streams-xl"] = {**PRESETS["mag-streams"], "steps": 2400}
PRESETS["tiny"] = {  # a smoke test: seconds
    "config": model_config(["attention", "mal"], d=32, ffn=64, window=16, chunk=8),
    **RECIPE, "steps": 20, "batch": 2, "length": 1024, "eval_every": 10, "eval_bytes": 4096,
    "warmup": 5,
}
PRESETS["tiny-long"] = {**PRESETS["tiny"], "stream": 4,
                        "source_weights": LONG["source_weights"]}


# ---------------------------------------------------------------------------------------------
# Initialisation


def init_weights(model: TitansModel, seed: int) -> None:
    """Gains 1; projections N(0, 1/fan_in), output projections of the residual branches scaled
    by 1/sqrt(2 layers); embedding N(0, 1); memory gates mid-range (theta = max_lr / 2,
    momentum 1/2), forgetting ~1e-3 per token; the initial memory
    W0 N(0, 1/fan_in)."""
    gen = torch.Generator().manual_seed(seed)
    c = model.config
    depth_scale = 1.0 / math.sqrt(2 * len(c["layers"]))
    with torch.no_grad():
        for name, t in model.named_engine_tensors():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in leaf:
                t.fill_(1.0)
            elif leaf == "gain":
                t.zero_()
            elif leaf.startswith("conv_"):
                t.zero_()
                t[-1].fill_(1.0)  # identity plus small taps on the earlier tokens
                t[:-1].normal_(0.0, 0.1, generator=gen)
            elif leaf in ("b_theta", "b_eta"):
                t.zero_()  # theta = max_lr / 2, eta = 1/2: mid-range, where they learn fastest
            elif leaf == "b_alpha":
                t.fill_(-7.0)
            elif leaf in ("w_theta", "w_eta", "w_alpha", "w_gate"):
                t.normal_(0.0, 0.02, generator=gen)
            elif name == "embedding":
                t.normal_(0.0, 1.0, generator=gen)
            elif leaf.startswith("persistent_"):
                t.normal_(0.0, 1.0, generator=gen)
            elif ".mlp." in name:
                t.normal_(0.0, 1.0 / math.sqrt(t.shape[-2]), generator=gen)
            else:
                fan_in = t.shape[0]
                std = 1.0 / math.sqrt(fan_in)
                if leaf in ("w_o", "ffn_down") or name.endswith("memory_branch.w_o"):
                    std *= depth_scale
                t.normal_(0.0, std, generator=gen)


# ---------------------------------------------------------------------------------------------
# Evaluation


def heldout_bits_per_byte(model: TitansModel, text: bytes, length: int) -> float:
    """Bits per byte of `text` (one stream, state carried) in pieces of `length` bytes."""
    tokens = torch.tensor(list(text), dtype=torch.long)[None]
    state, total, count = None, 0.0, 0
    with torch.no_grad():
        for a in range(0, tokens.shape[1] - 1, length):
            x = tokens[:, a:a + length]
            y = tokens[:, a + 1:a + length + 1]
            x = x[:, :y.shape[1]]
            logits, state = model(x, state)
            nll = torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum")
            total += nll.item()
            count += y.shape[1]
    return total / count / math.log(2)


# ---------------------------------------------------------------------------------------------
# Training


def param_groups(model: TitansModel, weight_decay: float):
    decay, no_decay = [], []
    for name, t in model.named_engine_tensors():
        leaf = name.rsplit(".", 1)[-1]
        matrix = t.dim() >= 2 and not leaf.startswith(("conv_", "persistent_")) and \
            "norm" not in leaf
        (decay if matrix and name != "embedding" else no_decay).append(t)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def stream_starts(corpus: Corpus, rng: np.random.Generator, r: dict) -> np.ndarray:
    """Corpus offsets of new streams, one per row, each with room for r["stream"] pieces."""
    n = r["stream"] * r["length"] + 1
    return np.array([corpus.window_start(rng, n, r["source_weights"])
                     for _ in range(r["batch"])], dtype=np.int64)


def detached(state):
    """The model state (nested dicts, lists, tuples of tensors) cut from the autograd graph."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {k: detached(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(detached(v) for v in state)
    return state


def learning_rate(step: int, r: dict) -> float:
    if step < r["warmup"]:
        return r["lr"] * (step + 1) / r["warmup"]
    progress = (step - r["warmup"]) / max(1, r["steps"] - r["warmup"])
    return r["min_lr"] + 0.5 * (r["lr"] - r["min_lr"]) * (1 + math.cos(math.pi * progress))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--data", default="data", help="directory of tools/prepare_data.py")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--steps", type=int, help="override the preset's number of steps")
    ap.add_argument("--seed", type=int, help="override the preset's seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--stop-after", type=int,
                    help="checkpoint and stop after this many steps (resume later with "
                         "--resume; the schedule is that of the whole run)")
    args = ap.parse_args(argv)

    recipe = copy.deepcopy(PRESETS[args.preset])
    if args.steps is not None:
        recipe["steps"] = args.steps
    if args.seed is not None:
        recipe["seed"] = args.seed
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(recipe["seed"])

    corpus = Corpus(args.data)
    with open(os.path.join(args.data, "heldout_kjv.txt"), "rb") as f:
        heldout = f.read()[:recipe["eval_bytes"]]

    model = TitansModel(recipe["config"])
    init_weights(model, recipe["seed"])
    if recipe["init"] is not None:  # fine-tuning: the weights of a trained model
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
        trained = load_engine_model(os.path.join(root, recipe["init"]))
        if trained.config != recipe["config"]:
            raise ValueError(f"{recipe['init']}: its config is not the preset's")
        model.load_state_dict(trained.state_dict())
    params = sum(t.numel() for _, t in model.named_engine_tensors())
    opt = torch.optim.AdamW(param_groups(model, recipe["weight_decay"]), lr=recipe["lr"],
                            betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(recipe["seed"])
    start, elapsed_before = 0, 0.0
    streams = recipe["stream"] > 0
    stream = {"starts": None, "state": None}  # where the rows' texts go on, and their state
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    if args.resume and os.path.exists(ckpt_path):
        # The run's own checkpoint (it holds numpy arrays of the data order and generator, which
        # torch >= 2.6 refuses to unpickle by default).
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        rng.bit_generator.state = ckpt["rng"]
        start, elapsed_before = ckpt["step"], ckpt["seconds"]
        stream = ckpt["stream"]
    mode = "a" if start > 0 else "w"
    log = open(os.path.join(args.out, "train.jsonl"), mode)
    evlog = open(os.path.join(args.out, "eval.jsonl"), mode)
    run = {"preset": args.preset, "recipe": recipe, "parameters": params,
           "command": " ".join([sys.executable, "-m", "titans.torch.train"] +
                               (argv if argv is not None else sys.argv[1:])),
           "torch": torch.__version__, "threads": args.threads}
    print(f"{args.preset}: {params} parameters, {recipe['steps']} steps of "
          f"{recipe['batch']} x {recipe['length']} bytes", flush=True)

    def save(step: int, seconds: float) -> None:
        save_engine_model(model, os.path.join(args.out, "model.safetensors"))
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "rng": rng.bit_generator.state, "step": step, "seconds": seconds,
                    "stream": stream},
                   ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)
        run.update(steps_done=step, seconds=seconds,
                   tokens=step * recipe["batch"] * recipe["length"])
        with open(os.path.join(args.out, "run.json"), "w") as f:
            json.dump(run, f, indent=1)

    min_distance = recipe["min_distance"] or 4 * recipe["config"]["attention"]["window"]
    t0 = time.time() - elapsed_before
    for step in range(start, recipe["steps"]):
        lr = learning_rate(step, recipe)
        for group in opt.param_groups:
            group["lr"] = lr
        if streams and step % recipe["stream"] == 0:  # new streams, their memory empty
            stream["starts"], stream["state"] = stream_starts(corpus, rng, recipe), None
        batch = sample_batch(corpus, rng, recipe["batch"], recipe["length"],
                             recipe["recall_fraction"], min_distance,
                             starts=stream["starts"] if streams else None)
        tokens = torch.from_numpy(batch["tokens"])
        answer = torch.from_numpy(batch["answer_mask"][:, 1:])
        logits, state = model(tokens[:, :-1], stream["state"])
        if streams:  # the next piece continues the text and the state (gradients stop here)
            stream["starts"] = batch["starts"] + batch["consumed"]
            stream["state"] = detached(state)
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(),
                                                reduction="none").view(answer.shape)
        weight = 1.0 + (recipe["recall_weight"] - 1.0) * answer.to(nll.dtype)
        loss = (nll * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip"])
        if torch.isfinite(grad_norm):
            opt.step()
        else:  # a diverged inner memory: skip the update, keep the logged loss
            print(f"step {step + 1}: non-finite gradient, update skipped", flush=True)
        with torch.no_grad():
            bpb = nll.mean().item() / math.log(2)
            hits = (logits.argmax(-1) == tokens[:, 1:])[answer]
            recall = hits.float().mean().item() if hits.numel() else float("nan")
        seconds = time.time() - t0
        log.write(json.dumps({"step": step + 1, "tokens": (step + 1) * tokens[:, 1:].numel(),
                              "bpb": round(bpb, 5), "recall": recall, "lr": lr,
                              "grad_norm": round(grad_norm.item(), 4),
                              "seconds": round(seconds, 1)}) + "\n")
        log.flush()
        if (step + 1) % 10 == 0:
            print(f"step {step + 1} bpb {bpb:.3f} recall {recall:.2f} lr {lr:.2e} "
                  f"{seconds:.0f}s", flush=True)
        if (step + 1) % recipe["eval_every"] == 0 or step + 1 == recipe["steps"]:
            model.eval()
            h = heldout_bits_per_byte(model, heldout, recipe["length"])
            model.train()
            evlog.write(json.dumps({"step": step + 1, "heldout_bpb": round(h, 4),
                                    "seconds": round(time.time() - t0, 1)}) + "\n")
            evlog.flush()
            print(f"step {step + 1} held-out bpb {h:.3f}", flush=True)
            save(step + 1, time.time() - t0)
        if args.stop_after is not None and step + 1 >= args.stop_after:
            save(step + 1, time.time() - t0)
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
