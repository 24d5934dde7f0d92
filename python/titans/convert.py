"""Convert a titans-pytorch `NeuralMemory` or `MemoryAsContextTransformer` for the engine.

Importing this module imports torch and titans-pytorch (tools/requirements-goldens.txt);
`import titans` does not: `titans.convert_titans_pytorch` imports it when called.

A NeuralMemory becomes an engine memory (docs/STATE_FORMAT.md, `NeuralMemory::Load`): the
MemoryConfig of the engine's `MemoryConfig::TitansPytorch` preset and one F32 tensor per weight
the config uses (src/memory/weights.cpp, ForEachWeight). A file of it is safetensors with the
metadata
    format = "titans.memory", format_version = "1", config = MemoryConfig JSON
(format_version "2" when the config uses an option older engines do not know: a memory model
other than MemoryMLP, post_norm, transition_gate, max_grad_norm, lr_modulation, spectral_norm,
attention_pool, ...; VERSION_2_KEYS).

The memory model may be MemoryMLP (config without "model"), MemorySwiGluMLP ("model":
"swiglu", a GEGLU with an inner LayerNorm whose gamma is a fast weight) or
GatedResidualMemoryMLP ("model": "gated_residual"), each with or without NeuralMemory's
ResidualNorm wrapper; its per-head fast weights are the engine tensors mlp.0, mlp.1, ... in the
order of memory_tensor_names, the wrapper's gamma is `gain`. FactorizedMemoryMLP,
MemoryAttention and custom classes (subclasses included) are refused by name.

A MemoryAsContextTransformer becomes an engine model (docs/FILE_FORMAT.md, `Model::Load`): a
ModelConfig with architecture "titans_pytorch_mac" and its tensor table
(src/model/arch/titans_pytorch_mac_weights.hpp); a file of it has the metadata
    format = "titans.model", format_version = "1", config = ModelConfig JSON.
docs/TITANS_PYTORCH.md has the full tables. Every option the engine cannot reproduce is refused
with an `UnsupportedError` that names it; nothing is dropped silently.

In process (no file; the result runs in the engine at once):

    import titans
    memory = titans.convert_titans_pytorch(neural_memory)        # -> titans.NeuralMemory
    model = titans.convert_titans_pytorch(mac_transformer)       # -> titans.Model
    model = titans.convert_titans_pytorch(state_dict, kwargs)    # module built from kwargs

To files (this module's functions, as tools/convert_titans_pytorch.py has always offered):

    from titans.convert import convert, convert_mac
    convert(neural_memory, "memory.safetensors")            # returns the config dict
    convert_mac(mac_transformer, "model.safetensors")       # likewise

From the command line (titans.convert_cli: `python -m titans convert` or
tools/convert_titans_pytorch.py; a state_dict plus the constructor arguments as JSON; a NeuralMemory
itself cannot be pickled with torch.save, its per-sample gradient function is a closure):

    python tools/convert_titans_pytorch.py --state-dict mem.pt --kwargs kwargs.json \
        --out memory.safetensors [--prefix mem.] [--ttt-batch-size 64]
    python tools/convert_titans_pytorch.py --state-dict mac.pt --kwargs mac_kwargs.json \
        --out model.safetensors

kwargs.json holds the keyword arguments of `NeuralMemory(...)` or
`MemoryAsContextTransformer(...)` (recognised by its num_tokens; or say --class). Arguments that
are Python objects are written as: "activation": "silu" (nn.SiLU), "gelu" (nn.GELU, exact) or
null; "model" (NeuralMemory)
and "neural_memory_model" (MAC): {"type": "MemoryMLP", "depth": 2, "expansion_factor": 4.0},
with "type" also "MemorySwiGluMLP" or "GatedResidualMemoryMLP" (the memory models the engine
runs; built with width dim_head); "neural_memory_kwargs" as a JSON object of NeuralMemory
arguments. Anything else that is not plain JSON cannot be described and is refused.

Tested with the versions in tools/requirements-goldens.txt (titans-pytorch 0.5.5, torch 2.x).
"""
from __future__ import annotations

import functools
import json
import re
import struct
from collections import OrderedDict

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
    """Options the engine does not reproduce: the message names each once; `problems` lists
    them (a MemoryAsContextTransformer's per-layer problems merged: "layers 2, 4, 6: ...")."""

    def __init__(self, message, problems=None):
        super().__init__(message)
        self.problems = problems if problems is not None else [message]

    @classmethod
    def refusing(cls, what, problems):
        merged = _merge_layers(problems)
        return cls(f"the titans engine cannot run this {what}: " + "; ".join(merged), merged)


def _merge_layers(problems):
    """One entry per distinct problem: "layer 2: X", "layer 4: X" -> "layers 2, 4: X"."""
    layers = OrderedDict()  # problem text after the layer number -> layer numbers
    for problem in problems:
        m = re.fullmatch(r"layer (\d+)(\b.*)", problem, re.S)
        rest, layer = (m.group(2), m.group(1)) if m else (problem, None)
        layers.setdefault(rest, [])
        if layer is not None and layer not in layers[rest]:
            layers[rest].append(layer)
    return [rest if not numbers else
            f"layer{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}{rest}"
            for rest, numbers in layers.items()]


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
        raise UnsupportedError.refusing("NeuralMemory", problems)


def _rms_eps(norm, dtype):
    """The eps nn.RMSNorm uses: its own, or (eps=None) finfo(input dtype).eps.

    torch: fp16/bf16/fp32 inputs use the float32 eps, fp64 inputs the float64 eps; a model's
    inputs have its parameters' dtype (`dtype`)."""
    if norm.eps is not None:
        return float(norm.eps)
    return float(torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps)


def _is_gate_head(module, last, out_features, d_model):
    """Whether `module` is Sequential(Linear(d_model, out_features) with a bias, Rearrange,
    `last`): the form of titans-pytorch's chunk-level gates (modulation, mix, combination)."""
    return (type(module) is nn.Sequential and len(module) == 3 and
            type(module[0]) is nn.Linear and type(module[2]) is last and
            module[0].bias is not None and
            tuple(module[0].weight.shape) == (out_features, d_model))


def _qkv_linear(m):
    """The nn.Linear of to_queries / to_keys / to_values: bare, or Sequential(Linear, act)."""
    if type(m) is nn.Linear:
        return m
    if type(m) is nn.Sequential and len(m) >= 1 and type(m[0]) is nn.Linear:
        return m[0]
    return None


def _qkv_activation(mem, problems):
    """Returns 'none', 'silu' or 'gelu' from to_queries / to_keys / to_values (activation=...)."""
    names = []
    for attr in ("to_queries", "to_keys", "to_values"):
        m = getattr(mem, attr)
        if type(m) is nn.Linear:
            names.append("none")
        elif type(m) is nn.Sequential and len(m) == 2 and type(m[0]) is nn.Linear:
            act = m[1]
            if type(act) is nn.SiLU:
                names.append("silu")
            elif type(act) is nn.GELU and act.approximate == "none":
                names.append("gelu")  # the exact (erf) GELU; the engine's Activate kGelu
            elif type(act) is nn.GELU:
                problems.append(f"activation=GELU(approximate={act.approximate!r}) (only None, "
                                f"nn.SiLU and the exact nn.GELU are supported)")
                names.append(None)
            else:
                problems.append(f"activation={type(act).__name__} (only None, nn.SiLU and the "
                                f"exact nn.GELU are supported)")
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


# The memory models the engine runs (MemoryConfig "model"; absent = "mlp"), by exact class.
_MEMORY_MODELS = {tp_mm.MemoryMLP: "mlp", tp_mm.MemorySwiGluMLP: "swiglu",
                  tp_mm.GatedResidualMemoryMLP: "gated_residual"}
# Why the other titans-pytorch memory models are refused (docs/TITANS_PYTORCH_OPTIONS.md,
# "Still refused").
_REFUSED_MEMORY_MODELS = {
    "FactorizedMemoryMLP": "not supported: the engine has no factorised (x A B) layers",
    "MemoryAttention": "a token's read depends on the other queries of its retrieval chunk "
                       "(causal attention inside the chunk), which the engine's per-token read "
                       "cannot express",
}
_CUSTOM_MODEL = "a custom memory model class or subclass: arbitrary Python"
# MemorySwiGluMLP's expansion_factor candidates, the class default first.
_SWIGLU_EXPANSIONS = (4.0, 2.0, 8.0, 1.0, 3.0, 6.0)


def _float32_expansion(hidden, head_dim):
    """The float32 e closest above hidden / dh, and whether the engine's hidden width
    int(float32(dh) * e) (MemoryConfig::hidden_dim) gives back `hidden` with it."""
    expansion = np.float32(hidden / head_dim)
    if int(np.float32(head_dim) * expansion) != hidden:
        expansion = np.nextafter(expansion, np.float32(np.inf))
    return expansion, int(np.float32(head_dim) * expansion) == hidden


def _mlp_expansion(mlp, head_dim, depth, problems):
    """MemoryMLP: e with int(float32(dh) * e) = hidden (the engine's hidden_dim, in float32)."""
    hidden = int(mlp.weights[0].shape[1]) if depth > 1 else 4 * head_dim
    expansion, exact = _float32_expansion(hidden, head_dim)
    if depth > 1 and not exact:
        problems.append(f"hidden width {hidden} is not int(dim_head * e) for a float32 e")
    for i, w in enumerate(mlp.weights):
        want = (head_dim if i == 0 else hidden, head_dim if i == depth - 1 else hidden)
        if tuple(w.shape) != want:
            problems.append(f"MemoryMLP weights.{i} has shape {tuple(w.shape)}, expected {want}")
    return expansion


def _check_layer_norm(norm, where, problems):
    """titans-pytorch's memory_models.LayerNorm: no affine, eps 1e-5, a gamma of shape (dh,)."""
    if type(norm) is not tp_mm.LayerNorm or norm.ln.elementwise_affine:
        problems.append(f"{where} is not titans_pytorch LayerNorm")
    elif abs(norm.ln.eps - LAYER_NORM_EPS) > 0:
        problems.append(f"{where} eps {norm.ln.eps} (engine: 1e-5)")


def _swiglu_expansion(mlp, head_dim, problems):
    """MemorySwiGluMLP: e with int(dh * e * 2 / 3) = inner, computed in double from the float32
    e as the engine's swiglu_inner() does; the candidates first, then (inner + 0.5) * 1.5 / dh."""
    blocks = list(mlp.weights)
    inner = int(blocks[0][1].shape[0]) if blocks and len(blocks[0]) == 2 else 0
    for j, block in enumerate(blocks):
        want = [(head_dim, 2 * inner), (inner, head_dim)]
        if len(block) != 2 or [tuple(w.shape) for w in block] != want:
            problems.append(f"MemorySwiGluMLP weights.{j} has shapes "
                            f"{[tuple(w.shape) for w in block]}, expected {want}")
    _check_layer_norm(mlp.norm, "MemorySwiGluMLP norm", problems)
    if tuple(mlp.norm.gamma.shape) != (head_dim,):
        problems.append(f"MemorySwiGluMLP norm.gamma has shape {tuple(mlp.norm.gamma.shape)}")

    def inner_of(e):  # MemoryConfig::swiglu_inner
        return int(float(head_dim) * float(np.float32(e)) * 2.0 / 3.0)

    for e in _SWIGLU_EXPANSIONS:
        if inner_of(e) == inner:
            return np.float32(e)
    e = np.float32((inner + 0.5) * 1.5 / head_dim)
    if inner < 1 or inner_of(e) != inner:
        problems.append(f"MemorySwiGluMLP inner width {inner} is not int(dim_head * e * 2 / 3) "
                        f"for a float32 e")
    return e


def _gated_residual_expansion(mlp, head_dim, problems):
    """GatedResidualMemoryMLP: e with int(float32(dh) * e) = hidden, as for MemoryMLP."""
    blocks = list(mlp.weights)
    hidden = int(blocks[0][0].shape[1]) if blocks and len(blocks[0]) == 3 else 0
    for j, block in enumerate(blocks):
        want = [(head_dim, hidden), (hidden, head_dim), (2 * head_dim, head_dim)]
        if len(block) != 3 or [tuple(w.shape) for w in block] != want:
            problems.append(f"GatedResidualMemoryMLP weights.{j} has shapes "
                            f"{[tuple(w.shape) for w in block]}, expected {want}")
    if tuple(mlp.final_proj.shape) != (head_dim, head_dim):
        problems.append(f"GatedResidualMemoryMLP final_proj has shape "
                        f"{tuple(mlp.final_proj.shape)}, expected {(head_dim, head_dim)}")
    expansion, exact = _float32_expansion(hidden, head_dim)
    if hidden < 1 or not exact:
        problems.append(f"GatedResidualMemoryMLP hidden width {hidden} is not int(dim_head * e) "
                        f"for a float32 e")
    return expansion


def memory_tensor_names(model, depth, output):
    """titans-pytorch's memory_model_parameter_names of the engine's fast-weight tensors mlp.0,
    mlp.1, ... in the engine's order (MemoryConfig::model_tensors), for the MemoryConfig fields
    model ("mlp", "swiglu", "gated_residual"), depth and output. The ResidualNorm wrapper's
    gain (`norm.gamma`, the engine's `gain`) is not among them."""
    prefix = "model." if output == "ln_residual" else ""
    if model == "mlp":
        names = [f"weights.{l}" for l in range(depth)]
    elif model == "swiglu":  # block j: W1, W2; then the inner LayerNorm's gamma
        names = [f"weights.{j}.{k}" for j in range(depth) for k in range(2)] + ["norm.gamma"]
    elif model == "gated_residual":  # block j: W1, W2, to_gates; then final_proj
        names = [f"weights.{j}.{k}" for j in range(depth) for k in range(3)] + ["final_proj"]
    else:
        raise ValueError(f"memory model {model!r}")
    return [prefix + n for n in names]


def engine_parameter_names(model, depth, output):
    """The memory model's parameter tensors in the engine's order (MemoryConfig
    parameter_index_of_layer: the wrapper's gain first when ln_residual, then mlp.0, mlp.1, ...)
    as titans-pytorch names them. The order of titans-pytorch's memory_model_parameter_names
    for MemoryMLP and MemorySwiGluMLP; GatedResidualMemoryMLP's final_proj, a parameter of the
    model itself, comes before its ParameterList there (nn.Module.named_parameters lists a
    module's own parameters before its children's), see _engine_parameter_order."""
    gain = ["norm.gamma"] if output == "ln_residual" else []
    return gain + memory_tensor_names(model, depth, output)


def _engine_parameter_order(mem, config):
    """For each engine parameter q (engine_parameter_names), its index p in titans-pytorch's
    memory_model_parameter_names: the identity but for GatedResidualMemoryMLP."""
    names = list(mem.memory_model_parameter_names)
    engine = engine_parameter_names(config.get("model", "mlp"), config["depth"],
                                    config["output"])
    if sorted(names) != sorted(engine):
        raise ValueError(f"memory model parameters {names} are not the expected {engine}")
    order = [names.index(n) for n in engine]
    assert config.get("model") == "gated_residual" or order == list(range(len(order))), order
    return order


def memory_config(mem, ttt_batch_size=None, identical_views=False, weight_residual=False):
    """MemoryConfig JSON (dict, keys in MemoryConfig::ToJson order) for a NeuralMemory.

    ttt_batch_size: the `ttt_batch_size` you pass to forward(), if any (it overrides the
    constructor's batch_size; no tensor or attribute records it).
    identical_views: the caller feeds the same tensor as every view of a
    `qkv_receives_diff_views` memory (MemoryAsContextTransformer without the qkv layer
    selector), which computes exactly what a memory without diff views computes.
    weight_residual: the memory is a layer of a MemoryAsContextTransformer with
    neural_mem_weight_residual, which hands it the previous memory layer's weights (the first
    memory layer of such a model has no mix and takes none; its config says weight_residual
    too, so that every layer shares one config)."""
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
    kind = _MEMORY_MODELS.get(type(mlp))  # `type(x) is`: subclasses are custom code
    if kind is None:
        problems.append(f"memory model {type(mlp).__name__} ("
                        f"{_REFUSED_MEMORY_MODELS.get(type(mlp).__name__, _CUSTOM_MODEL)}; the "
                        f"engine runs MemoryMLP, MemorySwiGluMLP and GatedResidualMemoryMLP, "
                        f"with or without the ResidualNorm wrapper)")
        _refuse(problems)
    depth = len(mlp.weights)
    if kind == "mlp":
        expansion = _mlp_expansion(mlp, head_dim, depth, problems)
    elif kind == "swiglu":
        expansion = _swiglu_expansion(mlp, head_dim, problems)
    else:
        expansion = _gated_residual_expansion(mlp, head_dim, problems)
    if depth < 1:
        problems.append(f"{type(mlp).__name__} of depth {depth} (the engine needs depth >= 1)")
    if not problems:
        names = list(mem.memory_model_parameter_names)
        engine = engine_parameter_names(kind, depth, output)
        if sorted(names) != sorted(engine):
            problems.append(f"memory model parameters {names} are not the expected {engine}")
        elif kind != "gated_residual" and names != engine:  # see _engine_parameter_order
            problems.append(f"memory model parameters {names} are not in the order {engine}")

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
    if mem.qkv_receives_diff_views and not identical_views:
        problems.append("qkv_receives_diff_views=True (keys and values from different inputs)")
    attention_pool = type(mem.reduce_to_chunk_rep) is tp_nm.AttentionPool
    if not attention_pool and type(mem.reduce_to_chunk_rep) is not tp_nm.AveragePool:
        problems.append(f"chunk representation {type(mem.reduce_to_chunk_rep).__name__} (only "
                        f"AveragePool and attn_pool_chunks' AttentionPool)")
    momentum_order = int(mem.momentum_order)
    if not 1 <= momentum_order <= 8:
        problems.append(f"momentum_order={momentum_order} (the engine runs 1 to 8)")
    learned_combine = mem.to_learned_momentum_combine is not None
    combine_zeroth = learned_combine and bool(mem.learned_combine_include_zeroth)
    if mem.to_momentum is None and momentum_order > 1:
        momentum_order = 1  # titans-pytorch ignores the order without momentum (no gates)
    if learned_combine:
        terms = momentum_order + int(combine_zeroth)
        if not _is_gate_head(mem.to_learned_momentum_combine, nn.Softmax, heads * terms, d_model):
            problems.append("learned_momentum_combine=True with an unexpected "
                            "to_learned_momentum_combine structure")
    mix = mem.to_learned_weight_residual_mix
    if mix is not None and not weight_residual:
        problems.append("accept_weight_residual=True (prev_weights come from a previous memory "
                        "layer: supported inside a MemoryAsContextTransformer)")
    elif mix is not None and not _is_gate_head(mix, nn.Sigmoid, heads, d_model):
        problems.append("accept_weight_residual=True with an unexpected "
                        "to_learned_weight_residual_mix structure")
    if getattr(mem, "store_with_lookahead_value", False):
        problems.append("store_with_lookahead_value=True")
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

    # The options of docs/TITANS_PYTORCH.md "Options beyond the preset" (format_version "2").
    # max_grad_norm: titans-pytorch's soft clamp of each (head, tensor, chunk) gradient norm.
    max_grad_norm = mem.max_grad_norm
    if max_grad_norm is not None and not (np.isfinite(max_grad_norm) and max_grad_norm > 0):
        problems.append(f"max_grad_norm={max_grad_norm} (must be finite and > 0)")
    # per_parameter_lr_modulation: Sequential(Linear(d, H * P), Rearrange, Sigmoid).
    lr_modulation = mem.to_layer_modulation is not None
    n_params = len(mem.memory_model_parameter_names)
    if lr_modulation:
        if not _is_gate_head(mem.to_layer_modulation, nn.Sigmoid, heads * n_params, d_model):
            problems.append("per_parameter_lr_modulation=True with an unexpected "
                            "to_layer_modulation structure")
        m = mem.max_mem_layer_modulation
        if not (np.isfinite(m) and m > 0):
            problems.append(f"per_parameter_lr_modulation=True with max_mem_layer_modulation={m} "
                            f"(must be finite and > 0)")
    # gated_transition: a scalar parameter, sigmoid of it lerps at every commit.
    transition_gate = mem.transition_gate is not None
    if transition_gate and tuple(mem.transition_gate.shape) != ():
        problems.append(f"gated_transition=True with a transition_gate of shape "
                        f"{tuple(mem.transition_gate.shape)}")
    # post_rmsnorm: MultiheadRMSNorm(dim_head, heads) on every head's read.
    post = mem.multihead_rmsnorm
    post_norm = not isinstance(post, nn.Identity)
    if post_norm and not (type(post) is tp_nm.MultiheadRMSNorm and
                          type(post.rmsnorm) is nn.RMSNorm and post.rmsnorm.weight is None and
                          tuple(post.gamma.shape) == (heads, 1, head_dim)):
        problems.append("post_rmsnorm=True with a multihead_rmsnorm other than "
                        "MultiheadRMSNorm(dim_head, heads)")
        post_norm = False

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
    if post_norm:  # its eps (None: finfo) is the engine's rms_eps too
        eps.add(_rms_eps(post.rmsnorm, post.gamma.dtype))
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
    # The options beyond the preset: each key only when the option is on, so that a config
    # without them is what it always was (and its file keeps format_version "1").
    if kind != "mlp":  # absent: "mlp"
        config["model"] = kind
    if post_norm:
        config["post_norm"] = True
    if transition_gate:
        config["transition_gate"] = True
    if max_grad_norm is not None:
        config["max_grad_norm"] = float(max_grad_norm)
    if lr_modulation:
        config["lr_modulation"] = True
        config["max_layer_modulation"] = float(mem.max_mem_layer_modulation)
    if mem.spectral_norm_surprises:
        config["spectral_norm"] = True
    if attention_pool:
        config["attention_pool"] = True
    if weight_residual:
        config["weight_residual"] = True
    if momentum_order != 1:
        config["momentum_order"] = momentum_order
    if learned_combine:
        config["learned_combine"] = True
    if combine_zeroth:
        config["combine_zeroth"] = True
    return config


# MemoryConfig keys that older engines do not know: a config with any of them is written with
# format_version "2", which such engines refuse instead of silently ignoring the keys.
VERSION_2_KEYS = ("model", "post_norm", "transition_gate", "max_grad_norm", "lr_modulation",
                  "max_layer_modulation", "spectral_norm", "attention_pool", "weight_residual",
                  "momentum_order", "learned_combine", "combine_zeroth")


def memory_format_version(config):
    """"2" when the MemoryConfig `config` uses an option of VERSION_2_KEYS, else "1"."""
    return "2" if any(k in config for k in VERSION_2_KEYS) else FORMAT_VERSION


def _array(t):
    a = t.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy()
    if not np.all(np.isfinite(a)):
        raise ValueError("a parameter has non-finite values")
    return a


def _tensor_list():
    """([], add): add(name, array, shape) appends (name, float32 copy), checking the shape."""
    out = []

    def add(name, array, shape):
        array = np.ascontiguousarray(np.asarray(array, dtype=np.float64).astype(np.float32))
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{name}: shape {array.shape}, expected {tuple(shape)}")
        out.append((name, array))

    return out, add


def memory_weights(mem, config):
    """[(engine tensor name, float32 array)] in the engine's order (ForEachWeight)."""
    H, dh, d = config["heads"], config["head_dim"], config["d_model"]
    out, add = _tensor_list()

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
        # Linear(d, H * O): channel h * O + o - 1 for order o, kept as it is.
        O = config.get("momentum_order", 1)
        add("w_eta", _array(mem.to_momentum[0].weight).T, (d, H * O))
        add("b_eta", _array(mem.to_momentum[0].bias), (H * O,))
    add("w_alpha", _array(mem.to_decay_factor[0].weight).T, (d, H))
    add("b_alpha", _array(mem.to_decay_factor[0].bias), (H,))
    if config.get("attention_pool"):
        # attn_pool_chunks: the per-feature softmax logits Linear(d, d) of AttentionPool.
        pool = mem.reduce_to_chunk_rep.to_attn_logits
        add("w_pool", _array(pool.weight).T, (d, d))
        add("b_pool", _array(pool.bias), (d,))
    if config.get("lr_modulation"):
        # Linear(d, H * P): channel h * P + p, p in memory_model_parameter_names order (for the
        # ResidualNorm wrapper p = 0 is norm.gamma, p = 1 + i is model tensor i); the engine
        # maps p itself (MemoryConfig::parameter_index_of_layer), in its own tensor order
        # (engine_parameter_names). That is titans-pytorch's but for GatedResidualMemoryMLP,
        # whose final_proj titans-pytorch lists before the blocks: its channels are permuted
        # into the engine's order (channel h * P + q of the file = titans h * P + order[q]).
        P = len(mem.memory_model_parameter_names)
        order = _engine_parameter_order(mem, config)
        columns = [h * P + p for h in range(H) for p in order]
        add("w_mod", _array(mem.to_layer_modulation[0].weight).T[:, columns], (d, H * P))
        add("b_mod", _array(mem.to_layer_modulation[0].bias)[columns], (H * P,))
    if config.get("weight_residual"):
        # Linear(d, H) of the chunk representation; the first memory layer of a MAC has none
        # and takes no previous weights (zeros, never read).
        mix = mem.to_learned_weight_residual_mix
        add("w_mix", _array(mix[0].weight).T if mix is not None else np.zeros((d, H)), (d, H))
        add("b_mix", _array(mix[0].bias) if mix is not None else np.zeros(H), (H,))
    if config.get("learned_combine"):
        # Linear(d, H * O'): channel h * O' + j over (u if combine_zeroth, S_1 .. S_O).
        terms = config["momentum_order"] + int(config.get("combine_zeroth", False))
        comb = mem.to_learned_momentum_combine[0]
        add("w_comb", _array(comb.weight).T, (d, H * terms))
        add("b_comb", _array(comb.bias), (H * terms,))

    # The per-head initial fast weights. memory_model.* are unused by forward (functional_call
    # substitutes these); per-head tensors may be stride-0 expanded views (issue #64), so copy.
    params = dict(zip(mem.memory_model_parameter_names, mem.memory_model_parameters))
    _engine_parameter_order(mem, config)  # every parameter has its engine tensor

    def per_head(p):
        a = _array(p.contiguous())
        if not mem.per_head_learned_parameters:  # one set shared by every head
            a = np.repeat(a[None], H, axis=0)
        return a

    # mlp.<i>: the model's tensors as they are ((in, out) matrices, no transposes) in the
    # engine's order (memory_tensor_names): MemoryMLP weights.l; MemorySwiGluMLP W1_j, W2_j per
    # block, then its inner LayerNorm's gamma as [H, 1, dh]; GatedResidualMemoryMLP W1_j, W2_j,
    # to_gates_j per block, then final_proj.
    for i, name in enumerate(memory_tensor_names(config.get("model", "mlp"), config["depth"],
                                                 config["output"])):
        w = per_head(params[name])
        if w.ndim == 2:  # a gain vector (MemorySwiGluMLP norm.gamma): one row
            w = w[:, None, :]
        add(f"mlp.{i}", w, (H,) + tuple(w.shape[1:]))
    if config["output"] == "ln_residual":
        # LayerNorm(.) * (gamma + 1): the engine's g is gamma itself (it is a fast weight).
        add("gain", per_head(params["norm.gamma"]), (H, dh))
    if config.get("post_norm"):
        # MultiheadRMSNorm multiplies by (gamma + 1), gamma (H, 1, dh): the effective gain.
        add("post_norm", _array(mem.multihead_rmsnorm.gamma).reshape(H, dh) + 1.0, (H, dh))
    if config["output_gate"]:
        add("w_gate", _array(mem.retrieve_gate[0].weight).T, (d, H))
    if config["output_proj"]:
        add("w_out", _array(mem.combine_heads.weight).T, (H * dh, d))
    if config.get("transition_gate"):
        # the raw scalar parameter (shape ()); the engine takes its sigmoid at each commit
        add("transition_gate", _array(mem.transition_gate).reshape(1), (1,))
    return out


def convert(mem, path, ttt_batch_size=None):
    """Writes the engine memory file for NeuralMemory `mem`; returns the config dict."""
    config = memory_config(mem, ttt_batch_size)
    _write_engine_file(path, FORMAT, config, memory_weights(mem, config),
                       memory_format_version(config))
    return config


def _write_engine_file(path, file_format, config, tensors, format_version=FORMAT_VERSION):
    """An engine file: the tensors, with the format, its version and the config as metadata."""
    write_safetensors(path, tensors, {
        "format": file_format,
        "format_version": format_version,
        "config": json.dumps(config, separators=(",", ":")),
    })


# --------------------------------------------------------------------------------------------
# MemoryAsContextTransformer -> engine model file (src/model/model.cpp; ModelConfig architecture
# "titans_pytorch_mac", tensor table src/model/arch/titans_pytorch_mac_weights.hpp;
# docs/TITANS_PYTORCH.md)

MODEL_FORMAT = "titans.model"
SINKHORN_ITERS = 20  # the engine's mHC runs the package default (sinkhorn_knopps, 20 iterations)


def _mac_modules():
    from titans_pytorch import mac_transformer as tp_mac
    from hyper_connections import manifold_constrained_hyper_connections as mhc
    from x_transformers.attend import Attend
    return tp_mac, mhc, Attend


def _check_hyper_connection(hc, streams, dim, add_branch, where, problems):
    """One mHC module (or the plain Residual when streams == 1) as the engine runs it."""
    _, mhc, _ = _mac_modules()
    if streams == 1:
        if type(hc) is not mhc.Residual:
            problems.append(f"{where}: {type(hc).__name__} with num_residual_streams=1")
        return
    if type(hc) is not mhc.ManifoldConstrainedHyperConnections:
        problems.append(f"{where}: {type(hc).__name__} (only the manifold-constrained "
                        f"hyper-connections of titans-pytorch >= 0.5 / hyper-connections >= 0.4)")
        return
    fn = hc.residual_mix_constraint_fn
    if (hc.num_residual_streams != streams or hc.num_fracs != 1 or hc.num_input_views != 1 or
            hc.num_dynamic_alpha_proposals != 1 or hc.channel_first or
            not isinstance(hc.residual_transform, nn.Identity) or
            hc.depth_residual_fn is not mhc.add):
        problems.append(f"{where}: hyper-connection options other than "
                        f"MemoryAsContextTransformer's (fractions, input views, alpha proposals, "
                        f"channel first, transforms)")
    if not (isinstance(fn, functools.partial) and fn.func is mhc.sinkhorn_knopps and
            fn.keywords.get("iters") == SINKHORN_ITERS):
        problems.append(f"{where}: residual mixing constraint other than sinkhorn_knopps with "
                        f"{SINKHORN_ITERS} iterations")
    if hc.add_branch_out_to_residual != add_branch:
        problems.append(f"{where}: add_branch_out_to_residual={hc.add_branch_out_to_residual}")
    if tuple(hc.dynamic_alpha_fn.shape) != (1, dim, 1 + streams):
        problems.append(f"{where}: dynamic_alpha_fn has shape {tuple(hc.dynamic_alpha_fn.shape)}, "
                        f"expected {(1, dim, 1 + streams)}")


def _default_rotary_freqs(dim_head):
    # rotary-embedding-torch RotaryEmbedding(dim_head): theta 10000, computed in float32.
    return 1.0 / (10000 ** (torch.arange(0, dim_head, 2)[:dim_head // 2].float() / dim_head))


def mac_config(model):
    """ModelConfig JSON (dict, keys in ModelConfig::ToJson order) for a MemoryAsContextTransformer.

    Raises UnsupportedError naming every option the engine does not reproduce."""
    tp_mac, mhc, Attend = _mac_modules()
    if not isinstance(model, tp_mac.MemoryAsContextTransformer):
        raise TypeError(f"expected MemoryAsContextTransformer, got {type(model).__name__}")
    problems = []

    emb = model.token_emb
    if type(emb) is not nn.Embedding:
        _refuse_mac([f"token_emb={type(emb).__name__} (only the default nn.Embedding)"])
    vocab, d = emb.num_embeddings, emb.embedding_dim
    if (type(model.to_logits) is not nn.Linear or model.to_logits.bias is not None or
            tuple(model.to_logits.weight.shape) != (vocab, d)):
        problems.append("to_logits is not Linear(dim, num_tokens, bias=False)")

    if isinstance(model.expand_streams, mhc.StreamEmbed):
        streams = int(model.expand_streams.num_streams)
    elif isinstance(model.expand_streams, nn.Identity):
        streams = 1
    else:
        _refuse_mac([f"stream expansion {type(model.expand_streams).__name__}"])

    # Positions: ContinuousAxialPositionalEmbedding(dim, 2), MLPs 1 -> 2d -> 2d -> d (SiLU).
    axial = model.axial_pos_emb
    for a, mlp in enumerate(axial.mlps):
        kinds = [type(m) for m in mlp]
        shapes = [tuple(m.weight.shape) for m in mlp if type(m) is nn.Linear]
        if (kinds != [nn.Linear, nn.SiLU, nn.Linear, nn.SiLU, nn.Linear] or
                shapes != [(2 * d, 1), (2 * d, 2 * d), (d, 2 * d)]):
            problems.append(f"axial position MLP {a} is not Linear(1, 2d) SiLU Linear(2d, 2d) "
                            f"SiLU Linear(2d, d)")
    if len(axial.mlps) != 2:
        problems.append(f"axial position embedding with {len(axial.mlps)} axes (expected 2)")

    segment, longterm = int(model.segment_len), int(model.num_longterm_mem_tokens)
    persistent, window = int(model.num_persist_mem_tokens), int(model.attn_window_size)
    memory_segment, sliding = int(model.neural_memory_segment_len), bool(model.sliding_window_attn)
    gate = bool(model.gate_attn_output)

    attn0, ff0 = model.layers[0][5], model.layers[0][6]
    _, heads, _, dim_head = attn0.persistent_memory.shape
    ffn_hidden = ff0[-1].in_features if type(ff0[-1]) is nn.Linear else 0
    eps, kinds, memory = set(), [], None
    # neural_memory_qkv_receives_diff_views: a layer selector on every memory layer but layer 1.
    qkv_views = any(layer[3] is not None for layer in model.layers)
    for i, (mem_hc, attn_hc, ff_hc, selector, mem, attn, ff) in enumerate(model.layers):
        where = f"layer {i + 1}"
        if (selector is not None) != (qkv_views and mem is not None and i > 0):
            problems.append(f"{where}: a memory layer selector where "
                            f"neural_memory_qkv_receives_diff_views would not put one")
        elif selector is not None:
            _check_layer_selector(selector, d, 4 * i + 1, f"{where} memory layer selector",
                                  problems)
            eps.add(_rms_eps(selector[0], selector[0].weight.dtype))
        if mem is not None:
            _check_hyper_connection(mem_hc, streams, d, not gate,
                                    f"{where} memory hyper-connection", problems)
            # neural_mem_weight_residual: a mix on every memory layer but the first.
            residual = bool(model.neural_mem_weight_residual)
            if (mem.to_learned_weight_residual_mix is not None) != (residual and
                                                                    "mac" in kinds):
                problems.append(f"{where}: a weight residual mix where "
                                f"neural_mem_weight_residual would not put one")
            try:
                config = memory_config(mem, identical_views=True, weight_residual=residual)
            except UnsupportedError as e:
                problems += [f"{where} neural memory: {problem}" for problem in e.problems]
                config = None
            if config is not None:
                if memory is not None and config != memory:
                    problems.append(f"{where}: neural memory config differs from an earlier "
                                    f"layer's")
                memory = memory or config
        kinds.append("mac" if mem is not None else "attention")
        _check_hyper_connection(attn_hc, streams, d, True, f"{where} attention hyper-connection",
                                problems)
        _check_hyper_connection(ff_hc, streams, d, True, f"{where} feedforward hyper-connection",
                                problems)

        if type(attn) is not tp_mac.SegmentedAttention:
            problems.append(f"{where}: attention {type(attn).__name__}")
            continue
        inner = heads * dim_head
        rot = attn.rotary_emb
        if (tuple(attn.persistent_memory.shape) != (2, heads, persistent, dim_head) or
                tuple(attn.to_qkv.weight.shape) != (3 * inner, d) or attn.to_qkv.bias is not None or
                tuple(attn.to_out.weight.shape) != (d, inner) or attn.to_out.bias is not None):
            problems.append(f"{where}: attention shapes differ from the first layer's")
        if (attn.sliding != sliding or attn.segment_len != segment or
                attn.num_longterm_mem_tokens != longterm or
                attn.num_persist_mem_tokens != persistent):
            problems.append(f"{where}: attention options differ from the model's")
        if (rot.learned_freq or rot.use_xpos or rot.interpolate_factor != 1 or
                rot.freqs_for != "lang" or tuple(rot.freqs.shape) != (dim_head // 2,) or
                not torch.equal(rot.freqs.detach().float().cpu(), _default_rotary_freqs(dim_head))):
            problems.append(f"{where}: rotary embedding other than RotaryEmbedding(dim_head)")
        if (type(attn.attend) is not Attend or not attn.attend.causal or
                attn.attend.scale is not None):
            problems.append(f"{where}: Attend options other than causal=True")
        if (attn.to_learned_v_mix is not None) != (i > 0):
            problems.append(f"{where}: value residual mix only on layers after the first")
        eps.add(_rms_eps(attn.norm, attn.norm.weight.dtype))

        if (type(ff) is not nn.Sequential or len(ff) != 4 or type(ff[0]) is not nn.RMSNorm or
                type(ff[1]) is not nn.Linear or type(ff[2]) is not tp_mac.GEGLU or
                type(ff[3]) is not nn.Linear or ff[1].bias is None or ff[3].bias is None or
                tuple(ff[1].weight.shape) != (2 * ffn_hidden, d) or
                tuple(ff[3].weight.shape) != (d, ffn_hidden)):
            problems.append(f"{where}: feedforward is not RMSNorm, Linear(d, 2f), GEGLU, "
                            f"Linear(f, d) with biases")
        else:
            eps.add(_rms_eps(ff[0], ff[0].weight.dtype))
    eps.add(_rms_eps(model.norm, model.norm.weight.dtype))
    if len(eps) > 1:
        problems.append(f"RMSNorms use different eps values {sorted(eps)} (the engine has one)")
    if memory is not None and memory["step"] != memory_segment:
        problems.append(f"memory chunk size {memory['step']} differs from "
                        f"neural_memory_segment_len {memory_segment}")
    _refuse_mac(problems)
    if memory is None:  # no memory layer: a placeholder the engine validates but never runs
        memory = memory_config(tp_nm.NeuralMemory(dim=d, chunk_size=memory_segment))

    config = OrderedDict()
    config["architecture"] = "titans_pytorch_mac"
    config["vocab_size"] = vocab
    config["d_model"] = d
    config["ffn_hidden"] = ffn_hidden
    config["norm_eps"] = eps.pop()
    config["tie_embeddings"] = False
    config["layers"] = kinds
    config["attention"] = OrderedDict(heads=heads, kv_heads=heads, head_dim=dim_head,
                                      window=window, persistent=persistent, rope_base=10000.0)
    config["memory"] = memory
    config["segment"] = segment
    config["tp_mac"] = OrderedDict(longterm_tokens=longterm, memory_segment=memory_segment,
                                   sliding=sliding, streams=streams, gate_attn_output=gate)
    if qkv_views:  # a format_version 2 key (model_format_version)
        config["tp_mac"]["qkv_views"] = True
    return config


def _check_layer_selector(selector, d, choices, where, problems):
    """The MAC's mem_qkv_layer_selector: RMSNorm(d), Linear(d, 3 L), Rearrange, Softmax(-1)."""
    kinds = [type(m).__name__ for m in selector]
    if (kinds != ["RMSNorm", "Linear", "Rearrange", "Softmax"] or
            tuple(selector[0].weight.shape) != (d,) or selector[1].bias is None or
            tuple(selector[1].weight.shape) != (3 * choices, d) or selector[3].dim != -1):
        problems.append(f"{where} is not RMSNorm(dim), Linear(dim, 3 * {choices}), "
                        f"Rearrange, Softmax(dim=-1)")


def model_format_version(config):
    """"2" when the ModelConfig `config` uses an option of format version 2 (the memory's
    VERSION_2_KEYS, tp_mac.qkv_views), else "1"."""
    if config.get("tp_mac", {}).get("qkv_views"):
        return "2"
    return memory_format_version(config["memory"])


def _refuse_mac(problems):
    if problems:
        raise UnsupportedError.refusing("MemoryAsContextTransformer", problems)


def mac_weights(model, config):
    """[(engine tensor name, float32 array)] in the engine's table order
    (src/model/arch/titans_pytorch_mac_weights.hpp)."""
    d, V, f = config["d_model"], config["vocab_size"], config["ffn_hidden"]
    H, dh = config["attention"]["heads"], config["attention"]["head_dim"]
    P, S = config["attention"]["persistent"], config["tp_mac"]["streams"]
    M = config["tp_mac"]["longterm_tokens"]
    out, add = _tensor_list()

    def linear(prefix, lin, n_in, n_out):  # nn.Linear (out, in) -> the engine's (in, out)
        add(prefix + "w", _array(lin.weight).T, (n_in, n_out))
        add(prefix + "b", _array(lin.bias), (n_out,))

    def hyper_connection(prefix, hc):
        if S == 1:
            return  # a plain residual: no parameters
        add(prefix + "norm", _array(hc.norm.gamma) + 1.0, (d,))  # RMSNorm * (gamma + 1)
        add(prefix + "static_alpha", _array(hc.static_alpha), (S, 1 + S))
        add(prefix + "dynamic_alpha", _array(hc.dynamic_alpha_fn)[0], (d, 1 + S))
        add(prefix + "alpha_scale", np.concatenate([_array(hc.pre_branch_scale),
                                                    _array(hc.residual_scale)]), (2,))
        if hc.add_branch_out_to_residual:
            add(prefix + "static_beta", _array(hc.static_beta), (S,))
            add(prefix + "dynamic_beta", _array(hc.dynamic_beta_fn), (d,))
            add(prefix + "beta_scale", _array(hc.h_post_scale).reshape(1), (1,))

    add("embedding", _array(model.token_emb.weight), (V, d))
    for a, mlp in enumerate(model.axial_pos_emb.mlps):
        p = f"tp_mac.axial.{a}."
        for k, (lin, n_in, n_out) in enumerate(((mlp[0], 1, 2 * d), (mlp[2], 2 * d, 2 * d),
                                                (mlp[4], 2 * d, d))):
            add(p + f"w{k}", _array(lin.weight).T, (n_in, n_out))
            add(p + f"b{k}", _array(lin.bias), (n_out,))
    if M > 0:
        add("tp_mac.longterm", _array(model.longterm_mems), (M, d))
    if S > 1:
        add("tp_mac.stream_embed", _array(model.expand_streams.stream_embed), (S, d))

    for l, (mem_hc, attn_hc, ff_hc, selector, mem, attn, ff) in enumerate(model.layers):
        p = f"layers.{l}."
        if mem is not None:
            hyper_connection(p + "memory_hc.", mem_hc)
            for name, array in memory_weights(mem, config["memory"]):
                out.append((p + "memory." + name, array))
            if selector is not None:
                choices = 3 * (4 * l + 1)
                add(p + "memory_views.norm", _array(selector[0].weight), (d,))
                add(p + "memory_views.w", _array(selector[1].weight).T, (d, choices))
                add(p + "memory_views.b", _array(selector[1].bias), (choices,))
        hyper_connection(p + "attention_hc.", attn_hc)
        add(p + "attention.norm", _array(attn.norm.weight), (d,))
        qkv = _array(attn.to_qkv.weight)  # (3 H dh, d): q | k | v, heads '(h d)'
        for k, name in enumerate(("w_q", "w_k", "w_v")):
            add(p + "attention." + name, qkv[k * H * dh:(k + 1) * H * dh].T, (d, H * dh))
        add(p + "attention.w_o", _array(attn.to_out.weight).T, (H * dh, d))
        if P > 0:
            pm = _array(attn.persistent_memory)  # (2, H, P, dh) -> [P, H*dh] for k and v
            add(p + "attention.persistent_k", pm[0].transpose(1, 0, 2).reshape(P, H * dh),
                (P, H * dh))
            add(p + "attention.persistent_v", pm[1].transpose(1, 0, 2).reshape(P, H * dh),
                (P, H * dh))
        if l > 0:
            add(p + "attention.v_mix", _array(attn.to_learned_v_mix[0].weight).T, (d, H))
            add(p + "attention.v_mix_bias", _array(attn.to_learned_v_mix[0].bias), (H,))
        hyper_connection(p + "ffn_hc.", ff_hc)
        add(p + "ffn_norm", _array(ff[0].weight), (d,))
        w_in, b_in = _array(ff[1].weight), _array(ff[1].bias)  # (2f, d): GEGLU's x | gate halves
        add(p + "ffn_up", w_in[:f].T, (d, f))
        add(p + "ffn_up_bias", b_in[:f], (f,))
        add(p + "ffn_gate", w_in[f:].T, (d, f))
        add(p + "ffn_gate_bias", b_in[f:], (f,))
        add(p + "ffn_down", _array(ff[3].weight).T, (f, d))
        add(p + "ffn_down_bias", _array(ff[3].bias), (d,))
    add("final_norm", _array(model.norm.weight), (d,))
    add("lm_head", _array(model.to_logits.weight).T, (d, V))
    return out


def convert_mac(model, path):
    """Writes the engine model file for MemoryAsContextTransformer `model`; returns the config."""
    config = mac_config(model)
    _write_engine_file(path, MODEL_FORMAT, config, mac_weights(model, config),
                       model_format_version(config))
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
        elif isinstance(act, str) and act.lower() == "gelu":
            kwargs["activation"] = nn.GELU()  # the exact (erf) form, nn.GELU's default
        else:
            raise UnsupportedError(f"activation={act!r} (only null, \"silu\" and \"gelu\")")
    if "model" in kwargs and kwargs["model"] is not None:
        spec = dict(kwargs["model"])
        kind = spec.pop("type", None)
        classes = {cls.__name__: cls for cls in _MEMORY_MODELS}
        if kind not in classes:
            reason = _REFUSED_MEMORY_MODELS.get(kind, "not a titans-pytorch memory model the "
                                                      "engine runs")
            raise UnsupportedError(f"model type {kind!r} ({reason}; only MemoryMLP, "
                                   f"MemorySwiGluMLP and GatedResidualMemoryMLP)")
        # the memory model's width is the memory's dim_head
        kwargs["model"] = classes[kind](kwargs.get("dim_head") or kwargs["dim"], **spec)
    if isinstance(kwargs.get("chunk_size"), list):
        kwargs["chunk_size"] = tuple(kwargs["chunk_size"])
    for name in ("store_memory_loss_fn", "adaptive_step_transform"):
        if name in kwargs:
            raise UnsupportedError(f"{name} cannot be given as JSON (custom functions are not "
                                   f"supported)")
    return kwargs


def _decode_mac_kwargs(kwargs):
    kwargs = dict(kwargs)
    if kwargs.get("token_emb") is not None:
        raise UnsupportedError("token_emb cannot be given as JSON (only the default nn.Embedding)")
    kwargs.pop("token_emb", None)
    mem_kwargs = dict(kwargs.get("neural_memory_kwargs") or {})
    dim_head = mem_kwargs.get("dim_head") or kwargs["dim"]
    if kwargs.get("neural_memory_model") is not None:
        # the same JSON form as NeuralMemory's "model"; its width is the memory's dim_head
        kwargs["neural_memory_model"] = _decode_kwargs(
            {"dim": dim_head, "model": kwargs["neural_memory_model"]})["model"]
    kwargs["neural_memory_kwargs"] = _decode_kwargs({"dim": kwargs["dim"], **mem_kwargs})
    del kwargs["neural_memory_kwargs"]["dim"]
    if kwargs.get("neural_memory_layers") is not None:
        kwargs["neural_memory_layers"] = tuple(kwargs["neural_memory_layers"])
    return kwargs


def _contiguous_memory_parameters(mem):
    # With heads > 1 the per-head parameters are stride-0 views (issue #64): load_state_dict
    # cannot copy into them, so give the module contiguous copies first.
    mem.memory_model_parameters = nn.ParameterList(
        [nn.Parameter(p.detach().clone().contiguous()) for p in mem.memory_model_parameters])


def _strip_prefix(state_dict, prefix):
    if not prefix:
        return state_dict
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def neural_memory_from_state_dict(state_dict, kwargs, prefix=""):
    """Builds NeuralMemory(**kwargs) (JSON form, see the module doc) and loads state_dict."""
    mem = tp_nm.NeuralMemory(**_decode_kwargs(kwargs))
    _contiguous_memory_parameters(mem)
    mem.load_state_dict(_strip_prefix(state_dict, prefix), strict=True)
    return mem


def mac_from_state_dict(state_dict, kwargs, prefix=""):
    """Builds MemoryAsContextTransformer(**kwargs) (JSON form, see the module doc) and loads
    state_dict."""
    tp_mac, _, _ = _mac_modules()
    model = tp_mac.MemoryAsContextTransformer(**_decode_mac_kwargs(kwargs))
    for layer in model.layers:
        if layer[4] is not None:
            _contiguous_memory_parameters(layer[4])
    model.load_state_dict(_strip_prefix(state_dict, prefix), strict=True)
    return model


def module_from_state_dict(state_dict, kwargs, cls="auto", prefix=""):
    """NeuralMemory or MemoryAsContextTransformer (cls; auto: the latter when kwargs has
    num_tokens) built from kwargs (JSON form, see the module doc), with state_dict loaded."""
    if cls == "auto":
        cls = "MemoryAsContextTransformer" if "num_tokens" in kwargs else "NeuralMemory"
    if cls == "MemoryAsContextTransformer":
        return mac_from_state_dict(state_dict, kwargs, prefix)
    if cls == "NeuralMemory":
        return neural_memory_from_state_dict(state_dict, kwargs, prefix)
    raise ValueError(f"cls={cls!r}: auto, NeuralMemory or MemoryAsContextTransformer")


def _no_ttt_batch_size(ttt_batch_size):
    if ttt_batch_size is not None:
        raise UnsupportedError("ttt_batch_size applies to a NeuralMemory only (a "
                               "MemoryAsContextTransformer never passes one)")


def convert_titans_pytorch(module_or_state_dict, kwargs=None, *, cls="auto", prefix="",
                           ttt_batch_size=None, path=None):
    """Converts a titans-pytorch module into the engine, in this process.

    module_or_state_dict: a NeuralMemory or MemoryAsContextTransformer, or its state_dict (a
    mapping of tensors) with `kwargs`, the constructor arguments in the JSON form of the module
    doc (cls and prefix as for module_from_state_dict). ttt_batch_size: a NeuralMemory's
    forward() argument, if it is given one. Returns a titans.NeuralMemory for a NeuralMemory, a
    titans.Model for a MemoryAsContextTransformer; with `path`, also writes its engine file.
    Raises UnsupportedError naming every option the engine does not reproduce."""
    from titans import Model, NeuralMemory  # the extension; this module's file path needs none

    module = module_or_state_dict
    if not isinstance(module, nn.Module):
        if kwargs is None:
            raise TypeError("a state_dict needs kwargs, the module's constructor arguments")
        module = module_from_state_dict(module_or_state_dict, kwargs, cls, prefix)
    if isinstance(module, tp_nm.NeuralMemory):
        config = memory_config(module, ttt_batch_size)
        engine = NeuralMemory.from_tensors(config, dict(memory_weights(module, config)))
    else:
        _no_ttt_batch_size(ttt_batch_size)
        config = mac_config(module)
        engine = Model.from_tensors(config, dict(mac_weights(module, config)))
    if path is not None:
        engine.save(path)
    return engine
