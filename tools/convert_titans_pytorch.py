#!/usr/bin/env python3
"""Convert a titans-pytorch `NeuralMemory` into a titans engine memory file.

The engine file (docs/STATE_FORMAT.md, `NeuralMemory::Load`) is safetensors with the metadata
    format = "titans.memory", format_version = "1", config = MemoryConfig JSON
and one F32 tensor per weight the config uses (src/memory_weights.cpp, ForEachWeight). The
options map to the engine's `MemoryConfig::TitansPytorch` preset; docs/TITANS_PYTORCH.md has the
full table. Every option the engine cannot reproduce is refused with an `UnsupportedError` that
names it; nothing is dropped silently.

From Python (the module itself):

    from convert_titans_pytorch import convert
    convert(neural_memory, "memory.safetensors")            # returns the config dict

From the command line (a state_dict plus the constructor arguments as JSON; a NeuralMemory
itself cannot be pickled with torch.save, its per-sample gradient function is a closure):

    python tools/convert_titans_pytorch.py --state-dict mem.pt --kwargs kwargs.json \
        --out memory.safetensors [--prefix mem.] [--ttt-batch-size 64]

kwargs.json holds the keyword arguments of `NeuralMemory(...)`. Arguments that are Python
objects are written as: "activation": "silu" (nn.SiLU) or null; "model": {"type": "MemoryMLP",
"depth": 2, "expansion_factor": 4.0} (the only memory model the engine runs). Anything else that
is not plain JSON cannot be described and is refused.

Tested with the versions in tools/requirements-goldens.txt (titans-pytorch 0.5.5, torch 2.x).
"""
from __future__ import annotations

import argparse
import functools
import json
import struct
import sys
from collections import OrderedDict
from importlib.metadata import version as package_version

import numpy as np
import torch
from torch import nn

from titans_pytorch import neural_memory as tp_nm
from titans_pytorch import memory_models as tp_mm

FORMAT = "titans.memory"
FORMAT_VERSION = "1"
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 1.1920928955078125e-07
LAYER_NORM_EPS = 1e-5  # titans-pytorch memory_models.LayerNorm: nn.LayerNorm default


class UnsupportedError(ValueError):
    """A NeuralMemory option the engine does not reproduce (the message names it)."""


# --------------------------------------------------------------------------------------------
# safetensors writing (hand-written so the tensor order is the engine's and no extra package is
# needed): 8-byte LE header length, JSON header padded with spaces to a multiple of 8, then the
# raw little-endian tensors tiling the data section exactly, in the order given.

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64",
           np.dtype("int32"): "I32", np.dtype("int64"): "I64"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: sequence of (name, numpy array); metadata: dict str -> str."""
    header = OrderedDict()
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, array in tensors:
        array = np.ascontiguousarray(array)
        if array.dtype not in _DTYPES:
            raise TypeError(f"tensor {name!r}: unsupported dtype {array.dtype}")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# --------------------------------------------------------------------------------------------
# Options


def _refuse(problems):
    if problems:
        raise UnsupportedError(
            "the titans engine cannot run this NeuralMemory: " + "; ".join(problems))


def _rms_eps(norm, dtype):
    """The eps nn.RMSNorm uses: its own, or (eps=None) finfo(input dtype).eps.

    torch: fp16/bf16/fp32 inputs use the float32 eps, fp64 inputs the float64 eps; a model's
    inputs have its parameters' dtype (`dtype`)."""
    if norm.eps is not None:
        return float(norm.eps)
    return float(torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps)


def _qkv_linear(m):
    """The nn.Linear of to_queries / to_keys / to_values: bare, or Sequential(Linear, act)."""
    if type(m) is nn.Linear:
        return m
    if type(m) is nn.Sequential and len(m) >= 1 and type(m[0]) is nn.Linear:
        return m[0]
    return None


def _qkv_activation(mem, problems):
    """Returns 'none' or 'silu' from to_queries / to_keys / to_values (activation=...)."""
    names = []
    for attr in ("to_queries", "to_keys", "to_values"):
        m = getattr(mem, attr)
        if type(m) is nn.Linear:
            names.append("none")
        elif type(m) is nn.Sequential and len(m) == 2 and type(m[0]) is nn.Linear:
            act = m[1]
            if type(act) is nn.SiLU:
                names.append("silu")
            else:
                problems.append(f"activation={type(act).__name__} (only None and nn.SiLU are "
                                f"supported)")
                names.append(None)
        else:
            problems.append(f"{attr} has an unexpected structure ({type(m).__name__})")
            names.append(None)
    if len(set(names)) != 1:
        problems.append("to_queries / to_keys / to_values use different activations")
    return names[0]


def _step_max_lr(mem, problems):
    t = mem.adaptive_step_transform
    if (isinstance(t, functools.partial) and t.func is tp_nm.default_adaptive_step_transform
            and not t.args and set(t.keywords) == {"max_lr"}):
        return float(t.keywords["max_lr"])
    problems.append("adaptive_step_transform is a custom function (only the default "
                    "sigmoid(x) * default_step_transform_max_lr is supported)")
    return None


def memory_config(mem, ttt_batch_size=None):
    """MemoryConfig JSON (dict, keys in MemoryConfig::ToJson order) for a NeuralMemory.

    ttt_batch_size: the `ttt_batch_size` you pass to forward(), if any (it overrides the
    constructor's batch_size; no tensor or attribute records it)."""
    if not isinstance(mem, tp_nm.NeuralMemory):
        raise TypeError(f"expected titans_pytorch.NeuralMemory, got {type(mem).__name__}")
    problems = []

    # Widths and the memory model.
    heads = int(mem.heads)
    to_q = _qkv_linear(mem.to_queries)
    if to_q is None or to_q.bias is not None:
        problems.append("to_queries is not a Linear without bias (optionally + activation)")
        _refuse(problems)
    d_model, inner = to_q.in_features, to_q.out_features
    head_dim = inner // heads

    model = mem.memory_model
    if type(model) is tp_mm.ResidualNorm:
        output = "ln_residual"
        if type(model.norm) is not tp_mm.LayerNorm or model.norm.ln.elementwise_affine:
            problems.append("memory model norm is not titans_pytorch LayerNorm")
        elif abs(model.norm.ln.eps - LAYER_NORM_EPS) > 0:
            problems.append(f"memory model LayerNorm eps {model.norm.ln.eps} (engine: 1e-5)")
        mlp = model.model
    else:
        output = "plain"  # mem_model_norm_add_residual=False
        mlp = model
    if type(mlp) is not tp_mm.MemoryMLP:
        problems.append(f"memory model {type(mlp).__name__} (only the default MemoryMLP, with "
                        f"or without the ResidualNorm wrapper, is supported)")
        _refuse(problems)
    depth = len(mlp.weights)
    hidden = int(mlp.weights[0].shape[1]) if depth > 1 else 4 * head_dim
    expansion = np.float32(hidden / head_dim)
    if int(np.float32(head_dim) * expansion) != hidden:  # the engine's int(dh * expansion)
        expansion = np.nextafter(expansion, np.float32(np.inf))
    if depth > 1 and int(np.float32(head_dim) * expansion) != hidden:
        problems.append(f"hidden width {hidden} is not int(dim_head * e) for a float32 e")
    for i, w in enumerate(mlp.weights):
        want = (head_dim if i == 0 else hidden, head_dim if i == depth - 1 else hidden)
        if tuple(w.shape) != want:
            problems.append(f"MemoryMLP weights.{i} has shape {tuple(w.shape)}, expected {want}")

    # Chunking.
    retrieve_chunk, store_chunk = int(mem.retrieve_chunk_size), int(mem.store_chunk_size)
    if retrieve_chunk != store_chunk:
        problems.append(f"chunk_size=({retrieve_chunk}, {store_chunk}): retrieve and store "
                        f"chunk sizes differ")
    batch_size = ttt_batch_size if ttt_batch_size is not None else mem.batch_size
    batch_size = 0 if batch_size is None else int(batch_size)
    if batch_size % store_chunk != 0:
        problems.append(f"batch_size {batch_size} is not a multiple of chunk_size {store_chunk}")

    # Options that change the computation in ways the engine does not reproduce.
    if mem.num_kv_per_token != 1:
        problems.append(f"num_kv_per_token={mem.num_kv_per_token}")
    if mem.qkv_receives_diff_views:
        problems.append("qkv_receives_diff_views=True (keys and values from different inputs)")
    if mem.to_layer_modulation is not None:
        problems.append("per_parameter_lr_modulation=True")
    if type(mem.reduce_to_chunk_rep) is not tp_nm.AveragePool:
        problems.append("attn_pool_chunks=True")
    if mem.momentum_order != 1:
        problems.append(f"momentum_order={mem.momentum_order}")
    if mem.to_learned_momentum_combine is not None:
        problems.append("learned_momentum_combine=True")
    if mem.max_grad_norm is not None:
        problems.append(f"max_grad_norm={mem.max_grad_norm}")
    if mem.spectral_norm_surprises:
        problems.append("spectral_norm_surprises=True")
    if mem.to_learned_weight_residual_mix is not None:
        problems.append("accept_weight_residual=True")
    if mem.transition_gate is not None:
        problems.append("gated_transition=True")
    if getattr(mem, "store_with_lookahead_value", False):
        problems.append("store_with_lookahead_value=True")
    if not isinstance(mem.multihead_rmsnorm, nn.Identity):
        problems.append("post_rmsnorm=True")
    if mem.store_memory_loss_fn is not tp_nm.default_loss_fn:
        problems.append("store_memory_loss_fn is custom (only the default mean squared error)")
    max_lr = _step_max_lr(mem, problems)
    qkv_activation = _qkv_activation(mem, problems)
    for attr in ("to_keys", "to_values"):
        lin = _qkv_linear(getattr(mem, attr))
        if (lin is None or lin.in_features != d_model or lin.out_features != inner or
                lin.bias is not None):
            problems.append(f"{attr} is not a Linear ({inner}, {d_model}) without bias")
    momentum = mem.to_momentum is not None

    # Norms.
    eps = set()
    if isinstance(mem.store_norm, nn.RMSNorm) and isinstance(mem.retrieve_norm, nn.RMSNorm):
        pre_norm = True
        for name in ("store_norm", "retrieve_norm"):
            n = getattr(mem, name)
            if n.weight is None:
                problems.append(f"{name} has no learned gain")
            eps.add(_rms_eps(n, n.weight.dtype if n.weight is not None else torch.float32))
    elif isinstance(mem.store_norm, nn.Identity) and isinstance(mem.retrieve_norm, nn.Identity):
        pre_norm = False
    else:
        problems.append("store_norm / retrieve_norm are not nn.RMSNorm (or both Identity)")
        pre_norm = False
    if isinstance(mem.q_norm, tp_nm.MultiheadRMSNorm):
        qk_norm = "rms"
        for name in ("q_norm", "k_norm"):
            eps.add(_rms_eps(getattr(mem, name).rmsnorm, getattr(mem, name).gamma.dtype))
    elif isinstance(mem.q_norm, nn.Identity) and isinstance(mem.k_norm, nn.Identity):
        qk_norm = "none"
    else:
        problems.append("q_norm / k_norm are not MultiheadRMSNorm (or both Identity)")
        qk_norm = "none"
    if len(eps) > 1:
        problems.append(f"RMSNorms use different eps values {sorted(eps)} (the engine has one)")
    rms_eps = eps.pop() if eps else FLOAT32_EPS

    # Heads.
    if heads > 1:
        if not (isinstance(mem.retrieve_gate, nn.Sequential) and
                type(mem.retrieve_gate[0]) is nn.Linear and mem.retrieve_gate[0].bias is None):
            problems.append("retrieve_gate has an unexpected structure")
        if type(mem.combine_heads) is not nn.Linear or mem.combine_heads.bias is not None:
            problems.append("combine_heads has an unexpected structure")
    elif head_dim != d_model:
        problems.append("heads=1 needs dim_head == dim")

    _refuse(problems)
    config = OrderedDict()
    config["d_model"] = d_model
    config["heads"] = heads
    config["head_dim"] = head_dim
    config["depth"] = depth
    config["expansion"] = float(expansion)
    config["activation"] = "gelu"
    config["output"] = output
    config["layer_norm_eps"] = LAYER_NORM_EPS
    config["store_norm"] = pre_norm
    config["retrieve_norm"] = pre_norm
    config["rms_eps"] = rms_eps
    config["conv_kernel"] = 0
    config["qkv_activation"] = qkv_activation
    config["qk_norm"] = qk_norm
    config["max_lr"] = max_lr
    config["momentum"] = momentum
    config["loss"] = "mean"
    config["step"] = store_chunk
    config["chunk"] = batch_size
    config["read"] = "step"
    config["read_offset"] = 1
    config["output_gate"] = heads > 1
    config["output_proj"] = heads > 1
    return config


def _array(t):
    a = t.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy()
    if not np.all(np.isfinite(a)):
        raise ValueError("a parameter has non-finite values")
    return a


def memory_weights(mem, config):
    """[(engine tensor name, float32 array)] in the engine's order (ForEachWeight)."""
    H, dh, d = config["heads"], config["head_dim"], config["d_model"]
    out = []

    def add(name, array, shape):
        array = np.ascontiguousarray(np.asarray(array, dtype=np.float64).astype(np.float32))
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{name}: shape {array.shape}, expected {tuple(shape)}")
        out.append((name, array))

    lin = _qkv_linear

    if config["store_norm"]:
        add("store_norm", _array(mem.store_norm.weight), (d,))
        add("retrieve_norm", _array(mem.retrieve_norm.weight), (d,))
    # nn.Linear stores (out, in) and computes x W^T; the engine computes x W with W (in, out).
    add("w_q", _array(lin(mem.to_queries).weight).T, (d, H * dh))
    add("w_k", _array(lin(mem.to_keys).weight).T, (d, H * dh))
    add("w_v", _array(lin(mem.to_values).weight).T, (d, H * dh))
    if config["qk_norm"] == "rms":
        # MultiheadRMSNorm multiplies by (gamma + 1); the engine stores the effective gain.
        add("q_norm", _array(mem.q_norm.gamma).reshape(H, dh) + 1.0, (H, dh))
        add("k_norm", _array(mem.k_norm.gamma).reshape(H, dh) + 1.0, (H, dh))
    add("w_theta", _array(mem.to_adaptive_step[0].weight).T, (d, H))
    add("b_theta", _array(mem.to_adaptive_step[0].bias), (H,))
    if config["momentum"]:
        # momentum_order = 1, so the Linear's channel h * O + o is just h.
        add("w_eta", _array(mem.to_momentum[0].weight).T, (d, H))
        add("b_eta", _array(mem.to_momentum[0].bias), (H,))
    add("w_alpha", _array(mem.to_decay_factor[0].weight).T, (d, H))
    add("b_alpha", _array(mem.to_decay_factor[0].bias), (H,))

    # The per-head initial fast weights. memory_model.* are unused by forward (functional_call
    # substitutes these); per-head tensors may be stride-0 expanded views (issue #64), so copy.
    params = dict(zip(mem.memory_model_parameter_names, mem.memory_model_parameters))
    prefix = "model." if config["output"] == "ln_residual" else ""

    def per_head(p):
        a = _array(p.contiguous())
        if not mem.per_head_learned_parameters:  # one set shared by every head
            a = np.repeat(a[None], H, axis=0)
        return a

    for l in range(config["depth"]):
        w = per_head(params[f"{prefix}weights.{l}"])
        add(f"mlp.{l}", w, (H,) + tuple(w.shape[1:]))
    if config["output"] == "ln_residual":
        # LayerNorm(.) * (gamma + 1): the engine's g is gamma itself (it is a fast weight).
        add("gain", per_head(params["norm.gamma"]), (H, dh))
    if config["output_gate"]:
        add("w_gate", _array(mem.retrieve_gate[0].weight).T, (d, H))
    if config["output_proj"]:
        add("w_out", _array(mem.combine_heads.weight).T, (H * dh, d))
    return out


def convert(mem, path, ttt_batch_size=None):
    """Writes the engine memory file for NeuralMemory `mem`; returns the config dict."""
    config = memory_config(mem, ttt_batch_size)
    tensors = memory_weights(mem, config)
    write_safetensors(path, tensors, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config, separators=(",", ":")),
    })
    return config


# --------------------------------------------------------------------------------------------
# Building a NeuralMemory from a state_dict and JSON constructor arguments


def _decode_kwargs(kwargs):
    kwargs = dict(kwargs)
    if "activation" in kwargs:
        act = kwargs["activation"]
        if act is None:
            pass
        elif isinstance(act, str) and act.lower() == "silu":
            kwargs["activation"] = nn.SiLU()
        else:
            raise UnsupportedError(f"activation={act!r} (only null and \"silu\")")
    if "model" in kwargs and kwargs["model"] is not None:
        spec = dict(kwargs["model"])
        kind = spec.pop("type", None)
        if kind != "MemoryMLP":
            raise UnsupportedError(f"model type {kind!r} (only MemoryMLP)")
        kwargs["model"] = tp_mm.MemoryMLP(kwargs.get("dim_head") or kwargs["dim"], **spec)
    if isinstance(kwargs.get("chunk_size"), list):
        kwargs["chunk_size"] = tuple(kwargs["chunk_size"])
    for name in ("store_memory_loss_fn", "adaptive_step_transform"):
        if name in kwargs:
            raise UnsupportedError(f"{name} cannot be given as JSON (custom functions are not "
                                   f"supported)")
    return kwargs


def neural_memory_from_state_dict(state_dict, kwargs, prefix=""):
    """Builds NeuralMemory(**kwargs) (JSON form, see the module doc) and loads state_dict."""
    mem = tp_nm.NeuralMemory(**_decode_kwargs(kwargs))
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    # With heads > 1 the per-head parameters are stride-0 views (issue #64): load_state_dict
    # cannot copy into them, so give the module contiguous copies first.
    mem.memory_model_parameters = nn.ParameterList(
        [nn.Parameter(p.detach().clone().contiguous()) for p in mem.memory_model_parameters])
    mem.load_state_dict(state_dict, strict=True)
    return mem


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dict", required=True,
                   help="torch.save(neural_memory.state_dict()) file")
    p.add_argument("--kwargs", required=True,
                   help="JSON file: the NeuralMemory constructor arguments")
    p.add_argument("--prefix", default="", help="key prefix of the memory in the state_dict "
                                                "(e.g. 'mem.'); other keys are ignored")
    p.add_argument("--ttt-batch-size", type=int, default=None,
                   help="the ttt_batch_size passed to forward(), if any")
    p.add_argument("--out", required=True, help="engine memory file to write")
    args = p.parse_args(argv)
    try:
        with open(args.kwargs) as f:
            kwargs = json.load(f)
        state_dict = torch.load(args.state_dict, map_location="cpu", weights_only=True)
        mem = neural_memory_from_state_dict(state_dict, kwargs, args.prefix)
        config = convert(mem, args.out, args.ttt_batch_size)
    except UnsupportedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (titans-pytorch {package_version('titans-pytorch')}): "
          f"{json.dumps(config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
