#!/usr/bin/env python3
"""Golden data for tests/titans_pytorch_mac_test.cpp: titans-pytorch MemoryAsContextTransformer
in float64.

Regenerate (from the repository root; writes tests/data/tp_mac/, deterministic):

    python3 -m venv /work/venv-tp
    /work/venv-tp/bin/pip install -r tools/requirements-goldens.txt
    /work/venv-tp/bin/python tools/make_goldens_mac.py [--out tests/data/tp_mac]

Every case builds a small seeded `MemoryAsContextTransformer`, moves every parameter away from
its initial value (zero-initialised persistent memory, hyper-connection weights, stream
embeddings and gates would otherwise hide mistakes) and rounds it to float32; its RMSNorms get
eps = float32 epsilon explicitly (the goldens are the float64 evaluation of a float32 model, as
in tools/make_goldens.py). A case has one or two variants that share every weight and differ
only in `sliding_window_attn` (no tensor depends on it). Per variant, in float64:
  logits          forward() of the case's T fixed random tokens (one call);
  greedy          sample(prompt, ..., temperature=0., use_cache=False): every step recomputes
                  the whole sequence, so this is the package's consistent answer;
  greedy_cached   the same with use_cache=True, recorded to document that titans-pytorch's
                  cached decoding is not its full forward (docs/TITANS_PYTORCH.md: persistent
                  memory keys against cache-relative query rotations, and the non-sliding
                  cache emptied at the wrong rows); the index also records the largest
                  logit difference of cached decoding of the case's tokens against the full
                  call.
The prompt is the first `prompt` tokens of the case's tokens. The script fails if a greedy
step's top-two logit margin is below 1e-3 (the engine's float32 logits could then pick the
other token).
Files:
  <case>.model.safetensors    the engine model file of the first variant
                              (tools/convert_titans_pytorch.py convert_mac, F32)
  <case>.golden.safetensors   tokens I64 [T]; per variant v: logits.<v> F32 [T, V] (the
                              float64 logits rounded to float32, to halve the size; that adds
                              < 1e-7 relative), greedy.<v> and greedy_cached.<v> I64 [n];
                              metadata "case": the case JSON (with each variant's converted
                              config).
  index.json                  every case, the package versions, margins and the differences
                              between the package's own runs.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import sys
import tempfile
from collections import OrderedDict
from importlib.metadata import version as package_version

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_titans_pytorch as conv  # noqa: E402
from make_goldens import expect_refusals  # noqa: E402
from titans_pytorch import MemoryAsContextTransformer, MemoryMLP  # noqa: E402
from titans_pytorch import memory_models as tp_mm  # noqa: E402
from titans_pytorch.memory_models import FactorizedMemoryMLP  # noqa: E402

MEMORY_MODELS = {cls.__name__: cls for cls in (MemoryMLP, tp_mm.MemorySwiGluMLP,
                                                tp_mm.GatedResidualMemoryMLP)}
MIN_MARGIN = 1e-3
HORIZON_DIFF = 1e-3  # the numerical horizon: the first position where float32 leaves float64


def case_list():
    """The README configuration at a smaller width, and two cases for the other options."""
    return [
        # MemoryAsContextTransformer(num_tokens=256, dim=256, depth=2, segment_len=128,
        # num_persist_mem_tokens=4, num_longterm_mem_tokens=16) of the package README, at
        # width 64 and with segments of 16: W = C = 20, every layer has memory (heads 1,
        # dim_head 64, expansion 4, momentum, max_lr 1, batch_size None), 4 streams. The
        # 40-token prompt spans 48 interspersed positions (48 mod 20 != 0: the non-sliding
        # cache is emptied at the wrong rows, docs/TITANS_PYTORCH.md).
        dict(name="readme_small", seed=3008, T=96, prompt=40, new=40,
             variants=OrderedDict(block=False, sliding=True),
             kwargs=dict(num_tokens=256, dim=64, depth=2, segment_len=16,
                         num_persist_mem_tokens=4, num_longterm_mem_tokens=4,
                         heads=4, dim_head=16)),
        # Memory on layers 2 and 3 only (layer 1 has none but still feeds the value residual),
        # memory chunks of 4 inside windows of 10 (the axial embedding's inner axis is 4),
        # two memory heads with qk_rmsnorm, batch_size 8 commits, no momentum, a MemoryMLP of
        # expansion 2, the memory gating the attention output, sliding windows.
        dict(name="options", seed=3007, T=64, prompt=20, new=24,
             variants=OrderedDict(sliding=True),
             kwargs=dict(num_tokens=256, dim=32, depth=3, segment_len=8,
                         num_persist_mem_tokens=2, num_longterm_mem_tokens=2,
                         heads=2, dim_head=16, ff_mult=2,
                         neural_memory_layers=(2, 3), neural_memory_segment_len=4,
                         neural_memory_batch_size=8, neural_mem_gate_attn_output=True,
                         neural_memory_model=dict(type="MemoryMLP", depth=2,
                                                  expansion_factor=2.0),
                         neural_memory_kwargs=dict(heads=2, dim_head=16, qk_rmsnorm=True,
                                                   momentum=False,
                                                   default_step_transform_max_lr=0.1))),
        # neural_memory_qkv_receives_diff_views: memory on layers 1, 3 and 4 of 4; layer 1's
        # memory takes its branch input as every view, layers 3 and 4 select queries, keys and
        # values from 9 and 13 candidates (their branch input and the attention and feedforward
        # inputs and outputs of every earlier layer, layer 2's without memory included).
        dict(name="views", seed=3011, T=64, prompt=20, new=24,
             variants=OrderedDict(sliding=True),
             kwargs=dict(num_tokens=256, dim=32, depth=4, segment_len=8,
                         num_persist_mem_tokens=2, num_longterm_mem_tokens=2,
                         heads=2, dim_head=16, ff_mult=2,
                         neural_memory_layers=(1, 3, 4), neural_memory_segment_len=4,
                         neural_memory_qkv_receives_diff_views=True,
                         neural_memory_kwargs=dict(heads=2, dim_head=16))),
        # neural_mem_weight_residual: memory on layers 1, 2 and 3; layers 2 and 3 take their
        # chunks' gradients at W_base + mix * (the previous memory layer's weights before the
        # same chunk), mix near 0.7; batch_size 8 commits (the trajectory carries each commit).
        dict(name="residual", seed=3013, T=64, prompt=20, new=24,
             variants=OrderedDict(sliding=True),
             kwargs=dict(num_tokens=256, dim=32, depth=3, segment_len=8,
                         num_persist_mem_tokens=2, num_longterm_mem_tokens=2,
                         heads=2, dim_head=16, ff_mult=2,
                         neural_memory_layers=(1, 2, 3), neural_memory_segment_len=4,
                         neural_memory_batch_size=8, neural_mem_weight_residual=True,
                         neural_memory_kwargs=dict(heads=2, dim_head=16))),
        # train_mac.py's configuration (titans-pytorch's training script, TM:45-63 and 104-139)
        # at dim 32 and depth 6 instead of 384 and 8: memory on layers 2, 4 and 6,
        # segment_len 32, 4 persistent and 4 long-term tokens, memory chunks of 4, batch_size
        # 128, weight residual, qkv diff views, sliding windows, MemoryMLP(dim_head, depth 2),
        # memory heads 2 x 16 with attn_pool_chunks, qk_rmsnorm, momentum (order 1),
        # max_lr 0.1, per_parameter_lr_modulation and spectral_norm_surprises; accelerated scan
        # off (its CUDA kernel; the same recurrence). 300 tokens = 336 interspersed rows: two
        # commits.
        dict(name="train_mac", seed=3021, T=300, prompt=160, new=64,
             variants=OrderedDict(sliding=True),
             kwargs=dict(num_tokens=256, dim=32, depth=6, segment_len=32,
                         num_persist_mem_tokens=4, num_longterm_mem_tokens=4,
                         heads=2, dim_head=16,
                         neural_memory_layers=(2, 4, 6), neural_memory_segment_len=4,
                         neural_memory_batch_size=128, neural_mem_gate_attn_output=False,
                         neural_mem_weight_residual=True,
                         neural_memory_qkv_receives_diff_views=True, use_flex_attn=True,
                         neural_memory_model=dict(type="MemoryMLP", depth=2),
                         neural_memory_kwargs=dict(dim_head=16, heads=2, attn_pool_chunks=True,
                                                   qk_rmsnorm=True, momentum=True,
                                                   momentum_order=1,
                                                   default_step_transform_max_lr=0.1,
                                                   use_accelerated_scan=False,
                                                   per_parameter_lr_modulation=True,
                                                   spectral_norm_surprises=True))),
        # titans-pytorch's other memory models inside a MAC: MemorySwiGluMLP (a GEGLU block,
        # its own LayerNorm gain a fast weight) on layers 1, 2 and 3 with the weight residual
        # (the trajectory hand-over over the model's five tensors), batch_size 8 commits, max_lr
        # 0.1 (at the default 1 titans-pytorch's own float32 run leaves its float64 run by 2e-3
        # within the 64 tokens); and
        # GatedResidualMemoryMLP on layers 1 and 2 with qkv diff views.
        dict(name="swiglu_memory", seed=3031, T=64, prompt=20, new=24,
             variants=OrderedDict(sliding=True),
             kwargs=dict(num_tokens=256, dim=32, depth=3, segment_len=8,
                         num_persist_mem_tokens=2, num_longterm_mem_tokens=2,
                         heads=2, dim_head=16, ff_mult=2,
                         neural_memory_layers=(1, 2, 3), neural_memory_segment_len=4,
                         neural_memory_batch_size=8, neural_mem_weight_residual=True,
                         neural_memory_model=dict(type="MemorySwiGluMLP", depth=1),
                         neural_memory_kwargs=dict(heads=2, dim_head=16,
                                                   default_step_transform_max_lr=0.1))),
        dict(name="gated_memory", seed=3032, T=64, prompt=20, new=24,
             variants=OrderedDict(sliding=True),
             kwargs=dict(num_tokens=256, dim=32, depth=2, segment_len=8,
                         num_persist_mem_tokens=2, num_longterm_mem_tokens=2,
                         heads=2, dim_head=16, ff_mult=2,
                         neural_memory_layers=(1, 2), neural_memory_segment_len=4,
                         neural_memory_qkv_receives_diff_views=True,
                         neural_memory_model=dict(type="GatedResidualMemoryMLP", depth=1),
                         neural_memory_kwargs=dict(heads=2, dim_head=16))),
        # One residual stream (no hyper-connections), no persistent or long-term memory tokens,
        # one layer, block-diagonal windows.
        dict(name="plain", seed=3003, T=64, prompt=20, new=24,
             variants=OrderedDict(block=False),
             kwargs=dict(num_tokens=256, dim=32, depth=1, segment_len=8,
                         num_persist_mem_tokens=0, num_longterm_mem_tokens=0,
                         heads=2, dim_head=16, num_residual_streams=1)),
    ]


def constructor_kwargs(case, sliding):
    """The JSON kwargs of the case as Python constructor arguments."""
    kwargs = dict(case["kwargs"], sliding_window_attn=sliding)
    if "neural_memory_model" in kwargs:
        spec = dict(kwargs["neural_memory_model"])
        cls = MEMORY_MODELS[spec.pop("type")]
        dim_head = kwargs.get("neural_memory_kwargs", {}).get("dim_head", kwargs["dim"])
        kwargs["neural_memory_model"] = cls(dim_head, **spec)
    return kwargs


def perturb(model, seed):
    """Moves every parameter away from its initial value (many start at 0 or 1) and rounds it
    to float32, so that every weight the converter maps is exercised."""
    gen = torch.Generator().manual_seed(seed)

    def noise(p, scale):
        return torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale

    d = model.token_emb.embedding_dim
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("rotary_emb.freqs") or ".memory_model." in name:
                continue  # fixed frequencies; unused per-head copies
            if name.endswith("norm.weight") or name.endswith(".0.weight") and p.ndim == 1:
                p.copy_(1.0 + noise(p, 0.2))                 # RMSNorm gains
            elif leaf == "gamma":                            # mHC norms, q/k RMSNorm gammas
                p.copy_(noise(p, 0.2))
            elif leaf == "static_alpha":
                p.add_(noise(p, 0.3))
            elif leaf == "dynamic_alpha_fn" or leaf == "dynamic_beta_fn":
                p.copy_(noise(p, 1.0 / d ** 0.5))
            elif leaf in ("pre_branch_scale", "residual_scale", "h_post_scale"):
                p.copy_(0.2 + noise(p, 0.05))                # package init 1e-2: too small to see
            elif leaf == "static_beta":
                p.copy_(1.0 + noise(p, 0.2))
            elif leaf == "stream_embed":
                p.copy_(noise(p, 0.3))
            elif leaf == "longterm_mems":
                p.copy_(noise(p, 0.5))
            elif leaf == "persistent_memory":
                p.copy_(noise(p, 0.5))
            elif ".to_adaptive_step.0." in name:
                p.copy_(noise(p, 0.5 / d ** 0.5) if leaf == "weight" else -1.0 + noise(p, 0.3))
            elif ".to_momentum.0." in name:
                p.copy_(noise(p, 0.5 / d ** 0.5) if leaf == "weight" else 1.5 + noise(p, 0.3))
            elif ".to_decay_factor.0." in name:
                p.copy_(noise(p, 0.5 / d ** 0.5) if leaf == "weight" else -2.5 + noise(p, 0.3))
            elif ".memory_model_parameters." in name:
                mem = model.get_submodule(name.split(".memory_model_parameters.")[0])
                role = mem.memory_model_parameter_names[int(leaf)]
                if role.endswith("norm.gamma"):  # the wrapper's (and MemorySwiGluMLP's) gain
                    p.copy_(noise(p, 0.2))
                else:
                    inner = getattr(mem.memory_model, "model", mem.memory_model)  # ResidualNorm
                    if type(inner) is tp_mm.MemorySwiGluMLP:
                        p.mul_(p.shape[-2] ** -0.5)  # torch.randn, unscaled: keep it tame
                    p.add_(noise(p, 0.1 * p.std().item()))
            elif ".to_learned_weight_residual_mix.0." in name:  # mix near sigmoid(1) = 0.73
                p.copy_(noise(p, 0.5 / d ** 0.5) if leaf == "weight" else 1.0 + noise(p, 0.3))
            elif ".retrieve_gate.0." in name:
                p.copy_(noise(p, 1.0 / d ** 0.5))
            elif p.ndim == 1:                                # biases
                p.copy_(noise(p, 0.1))
            else:                                            # embeddings and Linear weights
                p.add_(noise(p, 0.1 * p.std().item()))
        for p in model.parameters():
            p.copy_(p.float().double())  # exactly representable in the engine's float32


def build(case, sliding, state_dict=None):
    torch.manual_seed(case["seed"])
    random.seed(case["seed"])  # hyper-connections put static_alpha's one-hot at randrange(S)
    model = MemoryAsContextTransformer(**constructor_kwargs(case, sliding))
    for layer in model.layers:  # per-head parameters: stride-0 views when heads > 1 (issue #64)
        if layer[4] is not None:
            conv._contiguous_memory_parameters(layer[4])
    model = model.double().eval()
    if state_dict is None:
        perturb(model, case["seed"])
    else:
        model.load_state_dict(state_dict, strict=True)
    for m in model.modules():
        if isinstance(m, nn.RMSNorm):
            m.eps = float(torch.finfo(torch.float32).eps)
    return model


def case_tokens(case):
    gen = torch.Generator().manual_seed(case["seed"] + 7)
    return torch.randint(0, case["kwargs"]["num_tokens"], (1, case["T"]), generator=gen)


def run_variant(model, case, tokens):
    prompt, total = tokens[:, :case["prompt"]], case["prompt"] + case["new"]
    with torch.no_grad():
        logits = model(tokens)[0]
        greedy = model.sample(prompt, total, temperature=0., use_cache=False,
                              show_progress=False)[0]
        cached = model.sample(prompt, total, temperature=0., use_cache=True,
                              show_progress=False)[0]
        # The logits each greedy step chose from (one full call over prompt + samples).
        steps = model(torch.cat((prompt[0], greedy)).unsqueeze(0))[0, case["prompt"] - 1:-1]
        top2 = steps.topk(2, dim=-1).values
        assert torch.equal(steps.argmax(-1), greedy), "greedy samples are not the argmax"
        # Causality of the full path: a call over the prompt gives the prefix of the logits.
        prefix_diff = float((model(prompt)[0] - logits[:case["prompt"]]).abs().max())
        # The package's own float32 run of the same weights: how much this configuration
        # amplifies rounding (docs/TITANS_PYTORCH.md, numerical horizon).
        float32 = (copy.deepcopy(model).float()(tokens)[0].double() - logits).abs().amax(-1)
        beyond = (float32 > HORIZON_DIFF).nonzero()
        # Cached decoding of the case's own tokens after the prompt, against the full call.
        _, cache = model(prompt, return_cache=True)
        cached_diff = 0.0
        for t in range(case["prompt"], case["T"]):
            step = None
            while step is None:  # long-term memory positions return no logits
                step, cache = model(tokens[:, :t + 1], cache=cache, return_cache=True)
            cached_diff = max(cached_diff, float((step[0, -1] - logits[t]).abs().max()))
    return OrderedDict(
        logits=logits.numpy(), greedy=greedy.numpy(), greedy_cached=cached.numpy(),
        margin=float((top2[:, 0] - top2[:, 1]).min()),
        cached_equals_uncached=bool(torch.equal(greedy, cached)),
        cached_decode_max_diff=cached_diff,
        prefix_call_diff=prefix_diff,
        float32_max_diff=float(float32.max()),
        horizon=int(beyond[0, 0]) if len(beyond) else None,
        logits_rms=float(logits.pow(2).mean().sqrt()))


def check_state_dict_route(model, case, sliding, model_file):
    """The CLI route (state_dict + JSON kwargs) must write the same file as the module route."""
    with tempfile.TemporaryDirectory() as tmp:
        sd_path, kw_path = os.path.join(tmp, "mac.pt"), os.path.join(tmp, "kwargs.json")
        out_path = os.path.join(tmp, "model.safetensors")
        torch.save(model.state_dict(), sd_path)
        with open(kw_path, "w") as f:
            json.dump(dict(case["kwargs"], sliding_window_attn=sliding), f)
        with contextlib.redirect_stdout(io.StringIO()):
            rc = conv.main(["--state-dict", sd_path, "--kwargs", kw_path, "--out", out_path])
        if rc != 0:
            raise RuntimeError(f"{case['name']}: the state_dict route failed")
        # The state_dict holds float64 values and the CLI builds a float32 module: both round
        # to the same float32 weights, but nn.RMSNorm eps=None means the float32 epsilon there.
        with open(out_path, "rb") as a, open(model_file, "rb") as b:
            if a.read() != b.read():
                raise RuntimeError(f"{case['name']}: state_dict route wrote a different file")


def check_refusals():
    """Every unsupported MemoryAsContextTransformer option is refused, naming it."""
    base = dict(num_tokens=64, dim=16, depth=2, segment_len=4, heads=2, dim_head=8)
    options = [
        ("token_emb", dict(token_emb=nn.Sequential(nn.Embedding(64, 16)))),
        ("momentum_order=9", dict(neural_memory_kwargs=dict(momentum_order=9))),
        ("FactorizedMemoryMLP", dict(neural_memory_model=FactorizedMemoryMLP(16, depth=2))),
    ]
    expect_refusals(options,
                    lambda kwargs: conv.mac_config(MemoryAsContextTransformer(**{**base, **kwargs})))
    print(f"converter refuses all {len(options)} unsupported MAC options, naming each")


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="titans-pytorch MemoryAsContextTransformer goldens")
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "tp_mac"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    check_refusals()

    index = OrderedDict(
        generator="tools/make_goldens_mac.py",
        versions=OrderedDict((pkg, package_version(pkg)) for pkg in
                             ("titans-pytorch", "torch", "hyper-connections",
                              "axial-positional-embedding", "rotary-embedding-torch",
                              "x-transformers", "assoc-scan", "einops", "numpy")),
        tolerance=1e-4, min_margin=MIN_MARGIN, cases=[])
    for case in case_list():
        tokens = case_tokens(case)
        tensors = [("tokens", tokens[0].numpy().astype(np.int64))]
        entry = OrderedDict(name=case["name"], seed=case["seed"], tokens=case["T"],
                            prompt=case["prompt"], new=case["new"],
                            model_file=case["name"] + ".model.safetensors",
                            golden_file=case["name"] + ".golden.safetensors",
                            kwargs=case["kwargs"], variants=OrderedDict())
        state_dict = None
        for variant, sliding in case["variants"].items():
            model = build(case, sliding, state_dict)
            state_dict = state_dict or model.state_dict()
            config = conv.mac_config(model)
            if not entry["variants"]:  # the first variant's file holds the shared weights
                model_file = os.path.join(args.out, entry["model_file"])
                conv.convert_mac(model, model_file)
                check_state_dict_route(model, case, sliding, model_file)
            r = run_variant(model, case, tokens)
            if r["margin"] < MIN_MARGIN:
                raise RuntimeError(f"{case['name']}/{variant}: greedy margin {r['margin']:.2e}")
            if r["prefix_call_diff"] > 1e-9:
                raise RuntimeError(f"{case['name']}/{variant}: a shorter call differs "
                                   f"({r['prefix_call_diff']:.1e})")
            tensors += [(f"logits.{variant}", r["logits"].astype(np.float32)),
                        (f"greedy.{variant}", r["greedy"].astype(np.int64)),
                        (f"greedy_cached.{variant}", r["greedy_cached"].astype(np.int64))]
            entry["variants"][variant] = OrderedDict(
                sliding=sliding, config=config, logits_rms=r["logits_rms"],
                greedy_min_margin=r["margin"],
                cached_decode_max_diff=r["cached_decode_max_diff"],
                float32_max_diff=r["float32_max_diff"], horizon=r["horizon"],
                cached_equals_uncached=r["cached_equals_uncached"],
                first_cached_divergence=(None if r["cached_equals_uncached"] else
                                         int(np.argmax(r["greedy"] != r["greedy_cached"]))))
            print(f"{case['name']:14s} {variant:8s} T={case['T']} rms={r['logits_rms']:.3f} "
                  f"margin={r['margin']:.3f} float32 diff={r['float32_max_diff']:.1e} "
                  f"cached decode diff={r['cached_decode_max_diff']:.1e} "
                  f"cached greedy == uncached: {r['cached_equals_uncached']}")
        conv.write_safetensors(os.path.join(args.out, entry["golden_file"]), tensors,
                               {"case": json.dumps(entry)})
        index["cases"].append(entry)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
