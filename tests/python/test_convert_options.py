"""The converter's titans-pytorch options beyond the preset (python/titans/convert.py,
docs/TITANS_PYTORCH.md "Options beyond the preset"): exact GELU for q/k/v, post_rmsnorm,
gated_transition, max_grad_norm, per_parameter_lr_modulation and spectral_norm_surprises.

The conversion tests need torch and titans-pytorch (tools/requirements-goldens.txt) and skip
without them; the checks of the committed goldens (tests/data/tp_memory) need neither. None of
them needs the compiled extension:

    PYTHONPATH=python VENV/bin/python -m pytest -q tests/python/test_convert_options.py
"""

import json
import os
import struct

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDENS = os.path.join(ROOT, "tests", "data", "tp_memory")

# The new MemoryConfig keys, in the order the engine's MemoryConfig::ToJson writes them (after
# "output_proj"), and the tensor order of its ForEachWeight.
NEW_KEYS = ["model", "post_norm", "transition_gate", "max_grad_norm", "lr_modulation",
            "max_layer_modulation", "spectral_norm", "attention_pool", "weight_residual",
            "momentum_order", "learned_combine", "combine_zeroth"]
TENSOR_ORDER = ["store_norm", "retrieve_norm", "w_q", "w_k", "w_v", "q_norm", "k_norm",
                "w_theta", "b_theta", "w_eta", "b_eta", "w_alpha", "b_alpha", "w_pool", "b_pool",
                "w_mod", "b_mod", "w_mix", "b_mix", "w_comb", "b_comb",
                "mlp.0", "mlp.1", "mlp.2", "mlp.3", "mlp.4", "mlp.5", "mlp.6", "gain", "post_norm",
                "w_gate", "w_out",
                "transition_gate"]


def read_header(path):
    """safetensors header: ({name: {dtype, shape, data_offsets}}, metadata)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, header.pop("__metadata__", {})


def check_order(names):
    ranks = [TENSOR_ORDER.index(n) for n in names]
    assert ranks == sorted(ranks), names


# ---------------------------------------------------------------------------------------------
# The committed goldens (no torch needed)

# case -> the config keys it has beyond the grid's (what the C++ ConfigIsThePreset test needs)
GOLDEN_OPTIONS = {
    "opt_gelu_c4_b8_h2": {"qkv_activation": "gelu"},
    "opt_postnorm_c4_b8_h2": {"post_norm": True},
    "opt_transition_c4_b8_h2": {"transition_gate": True},
    "opt_gradnorm_c4_b8_h2": {"max_grad_norm": 0.11328125},
    "opt_lrmod_c4_b8_h2": {"lr_modulation": True, "max_layer_modulation": 2.0},
    "opt_spectral_c4_b8_h2": {"spectral_norm": True},
    "opt_attnpool_c4_b8_h2": {"attention_pool": True},
    "opt_order2_c4_b8_h2": {"momentum_order": 2},
    "opt_combine_c4_b8_h2": {"momentum_order": 2, "learned_combine": True},
    "opt_combine0_c4_b8_h3": {"momentum_order": 3, "learned_combine": True,
                              "combine_zeroth": True},
    "opt_trainmac_memory_c4_b16_h2": {"qk_norm": "rms", "expansion": 2.0, "lr_modulation": True,
                                      "max_layer_modulation": 1.0, "spectral_norm": True,
                                      "attention_pool": True},
    "opt_swiglu_c4_b8_h2": {"model": "swiglu"},
    "opt_swiglu_plain_c4_b8_h2": {"model": "swiglu", "output": "plain"},
    "opt_gated_c4_b8_h2": {"model": "gated_residual"},
    "opt_gated_plain_c4_b8_h2": {"model": "gated_residual", "output": "plain"},
    "opt_swiglu_lrmod_spectral_c4_b8_h2": {"model": "swiglu", "lr_modulation": True,
                                           "max_layer_modulation": 2.0, "spectral_norm": True},
    "opt_gated_lrmod_c4_b8_h2": {"model": "gated_residual", "lr_modulation": True,
                                 "max_layer_modulation": 2.0},
}
# engine tensors mlp.<i> per memory model (MemoryConfig::model_tensors)
MODEL_TENSORS = {"mlp": lambda L: L, "swiglu": lambda L: 2 * L + 1,
                 "gated_residual": lambda L: 3 * L + 1}


def golden_index():
    with open(os.path.join(GOLDENS, "index.json")) as f:
        return {c["name"]: c for c in json.load(f)["cases"]}


@pytest.mark.parametrize("name", sorted(GOLDEN_OPTIONS))
def test_option_goldens_have_their_keys_tensors_and_format_version(name):
    case = golden_index()[name]
    config = case["config"]
    for key, value in GOLDEN_OPTIONS[name].items():
        assert config[key] == value, (key, config)
    extra = [k for k in config if k in NEW_KEYS]
    keys = list(config)
    assert keys[keys.index("output_proj") + 1:] == extra  # appended after output_proj
    assert extra == [k for k in NEW_KEYS if k in extra]   # in the engine's order
    header, meta = read_header(os.path.join(GOLDENS, case["memory_file"]))
    assert meta["format"] == "titans.memory"
    assert meta["format_version"] == ("2" if extra else "1")
    assert json.loads(meta["config"]) == config
    names = list(header)
    check_order(names)
    H, dh, d = config["heads"], config["head_dim"], config["d_model"]
    P = (MODEL_TENSORS[config.get("model", "mlp")](config["depth"]) +
         (config["output"] == "ln_residual"))
    assert [n for n in names if n.startswith("mlp.")] == [f"mlp.{i}" for i in range(P - (
        config["output"] == "ln_residual"))]
    assert ("w_mod" in names) == ("b_mod" in names) == bool(config.get("lr_modulation"))
    if config.get("lr_modulation"):
        assert header["w_mod"]["shape"] == [d, H * P] and header["b_mod"]["shape"] == [H * P]
    assert ("w_pool" in names) == ("b_pool" in names) == bool(config.get("attention_pool"))
    if config.get("attention_pool"):
        assert header["w_pool"]["shape"] == [d, d] and header["b_pool"]["shape"] == [d]
    assert ("post_norm" in names) == bool(config.get("post_norm"))
    if config.get("post_norm"):
        assert header["post_norm"]["shape"] == [H, dh]
    assert ("transition_gate" in names) == bool(config.get("transition_gate"))
    if config.get("transition_gate"):
        assert header["transition_gate"]["shape"] == [1] and names[-1] == "transition_gate"
    assert all(t["dtype"] == "F32" for t in header.values())


def test_grid_goldens_keep_format_version_1():
    for name, case in golden_index().items():
        if name not in GOLDEN_OPTIONS:
            assert not any(k in case["config"] for k in NEW_KEYS), name
            _, meta = read_header(os.path.join(GOLDENS, case["memory_file"]))
            assert meta["format_version"] == "1", name


def test_gradnorm_golden_scales_both_ways():
    case = golden_index()["opt_gradnorm_c4_b8_h2"]
    g, m = case["gradient_norms"], case["config"]["max_grad_norm"]
    assert g["min"] < m / 2 and g["max"] > 2 * m and 0.3 < g["scaled_down"] < 0.7, g


# ---------------------------------------------------------------------------------------------
# Conversion (torch and titans-pytorch)


@pytest.fixture(scope="module")
def tp():
    torch = pytest.importorskip("torch")
    pytest.importorskip("titans_pytorch")
    from titans import convert
    from titans_pytorch import neural_memory as tp_nm
    return torch, convert, tp_nm


def build(tp, **kwargs):
    torch, _, tp_nm = tp
    torch.manual_seed(0)
    args = dict(dim=16, dim_head=8, heads=2, chunk_size=4, batch_size=8)
    args.update(kwargs)
    mem = tp_nm.NeuralMemory(**args)
    # per-head parameters are stride-0 views (issue #64); then move everything off its init
    tp[1]._contiguous_memory_parameters(mem)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mem.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return mem


def convert(tp, mem, tmp_path=None):
    c = tp[1]
    config = c.memory_config(mem)
    tensors = c.memory_weights(mem, config)
    check_order([n for n, _ in tensors])
    return config, dict(tensors)


def new_keys(config):
    keys = list(config)
    assert keys.index("output_proj") == len(keys) - 1 - sum(k in NEW_KEYS for k in keys)
    return [k for k in keys if k in NEW_KEYS]


def test_preset_config_is_unchanged(tp):
    config, tensors = convert(tp, build(tp))
    assert list(config)[-1] == "output_proj" and new_keys(config) == []
    assert tp[1].memory_format_version(config) == "1"
    assert not {"w_mod", "b_mod", "post_norm", "transition_gate"} & set(tensors)


def test_exact_gelu(tp):
    torch = tp[0]
    mem = build(tp, activation=torch.nn.GELU())
    config, tensors = convert(tp, mem)
    assert config["qkv_activation"] == "gelu" and new_keys(config) == []
    assert tp[1].memory_format_version(config) == "1"  # an older engine refuses gelu itself
    np.testing.assert_array_equal(tensors["w_k"],
                                  mem.to_keys[0].weight.detach().numpy().T.astype(np.float32))


def test_post_norm_is_gamma_plus_one(tp):
    mem = build(tp, post_rmsnorm=True)
    config, tensors = convert(tp, mem)
    assert new_keys(config) == ["post_norm"] and config["post_norm"] is True
    gamma = mem.multihead_rmsnorm.gamma.detach().numpy()  # (H, 1, dh)
    assert gamma.shape == (2, 1, 8) and np.abs(gamma).max() > 0.05
    np.testing.assert_array_equal(tensors["post_norm"],
                                  (gamma.reshape(2, 8).astype(np.float64) + 1).astype(np.float32))
    assert tp[1].memory_format_version(config) == "2"


def test_post_norm_eps_joins_the_single_eps_check(tp):
    mem = build(tp, post_rmsnorm=True)
    mem.multihead_rmsnorm.rmsnorm.eps = 1e-5  # the other RMSNorms: finfo(float32).eps
    with pytest.raises(tp[1].UnsupportedError, match="different eps"):
        tp[1].memory_config(mem)
    for m in mem.modules():
        if isinstance(m, tp[0].nn.RMSNorm):
            m.eps = 1e-5
    assert tp[1].memory_config(mem)["rms_eps"] == 1e-5


def test_transition_gate_is_the_raw_parameter(tp):
    mem = build(tp, gated_transition=True)
    config, tensors = convert(tp, mem)
    assert new_keys(config) == ["transition_gate"]
    assert tensors["transition_gate"].shape == (1,)
    assert tensors["transition_gate"][0] == np.float32(mem.transition_gate.item())
    assert list(tensors)[-1] == "transition_gate"


def test_max_grad_norm(tp):
    config, _ = convert(tp, build(tp, max_grad_norm=0.75))
    assert new_keys(config) == ["max_grad_norm"] and config["max_grad_norm"] == 0.75
    with pytest.raises(tp[1].UnsupportedError, match="max_grad_norm=0"):
        tp[1].memory_config(build(tp, max_grad_norm=0.0))


@pytest.mark.parametrize("residual_norm", [True, False])
def test_lr_modulation_is_transposed_in_titans_channel_order(tp, residual_norm):
    mem = build(tp, per_parameter_lr_modulation=True, max_mem_layer_modulation=2.5,
                mem_model_norm_add_residual=residual_norm)
    config, tensors = convert(tp, mem)
    assert new_keys(config) == ["lr_modulation", "max_layer_modulation"]
    assert config["max_layer_modulation"] == 2.5
    P = 3 if residual_norm else 2
    assert mem.memory_model_parameter_names[0] == ("norm.gamma" if residual_norm else "weights.0")
    lin = mem.to_layer_modulation[0]
    assert tensors["w_mod"].shape == (16, 2 * P) and tensors["b_mod"].shape == (2 * P,)
    np.testing.assert_array_equal(tensors["w_mod"], lin.weight.detach().numpy().T)
    np.testing.assert_array_equal(tensors["b_mod"], lin.bias.detach().numpy())


def test_lr_modulation_channel_h_p_is_titans_parameter_p(tp):
    """titans-pytorch itself: channel h * P + p scales memory_model_parameter_names[p] of head h
    (b_mod of one p at -1e4 gives it a factor 0: that tensor never changes)."""
    torch = tp[0]
    for frozen in range(3):
        mem = build(tp, per_parameter_lr_modulation=True, momentum=False).double()
        with torch.no_grad():
            mem.to_layer_modulation[0].weight.zero_()
            bias = torch.zeros(2, 3, dtype=torch.float64)
            bias[:, frozen] = -1e4
            mem.to_layer_modulation[0].bias.copy_(bias.flatten())  # (h, p) -> h * P + p
            _, state = mem(torch.randn(1, 12, 16, dtype=torch.float64))
        for p, name in enumerate(mem.memory_model_parameter_names):
            u = state.updates[name].flatten(2)  # (b h, N + 1, elements)
            u0 = u[:, :1]
            c = (u * u0).sum(-1, keepdim=True) / (u0 * u0).sum(-1, keepdim=True)
            off = ((u - c * u0).norm(dim=-1) / u.norm(dim=-1)).max().item()
            # frozen: only the decay acts, every entry a multiple of the first
            assert (off < 1e-12) == (p == frozen), (frozen, name, off)


def test_spectral_norm(tp):
    config, _ = convert(tp, build(tp, spectral_norm_surprises=True))
    assert new_keys(config) == ["spectral_norm"]


def test_all_options_in_the_engines_order_and_format_version_2(tp, tmp_path):
    torch = tp[0]
    mem = build(tp, post_rmsnorm=True, gated_transition=True, max_grad_norm=1.5,
                per_parameter_lr_modulation=True, spectral_norm_surprises=True, qk_rmsnorm=True,
                attn_pool_chunks=True, activation=torch.nn.GELU(), momentum_order=2,
                learned_momentum_combine=True, learned_combine_include_zeroth=True)
    path = tmp_path / "m.safetensors"
    config = tp[1].convert(mem, str(path))
    # weight_residual only comes with a MemoryAsContextTransformer; model with another model
    assert new_keys(config) == [k for k in NEW_KEYS if k not in ("weight_residual", "model")]
    header, meta = read_header(path)
    assert meta["format_version"] == "2" and json.loads(meta["config"]) == config
    check_order(list(header))
    assert {"w_pool", "b_pool", "w_mod", "b_mod", "post_norm", "transition_gate",
            "q_norm"} <= set(header)


def test_state_dict_route_with_gelu_and_the_options(tp):
    kwargs = dict(dim=16, dim_head=8, heads=2, chunk_size=4, batch_size=8, activation="gelu",
                  post_rmsnorm=True, gated_transition=True, max_grad_norm=0.5,
                  per_parameter_lr_modulation=True, spectral_norm_surprises=True,
                  attn_pool_chunks=True)
    mem = build(tp, **{**kwargs, "activation": tp[0].nn.GELU()})
    again = tp[1].module_from_state_dict(mem.state_dict(), kwargs)
    assert tp[1].memory_config(again) == tp[1].memory_config(mem)
    a = tp[1].memory_weights(again, tp[1].memory_config(again))
    b = tp[1].memory_weights(mem, tp[1].memory_config(mem))
    assert [n for n, _ in a] == [n for n, _ in b]
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("option, kwargs", [
    ("activation=GELU(approximate='tanh')", "gelu_tanh"),
    ("momentum_order=9", dict(momentum_order=9)),
    ("accept_weight_residual", dict(accept_weight_residual=True)),
    ("qkv_receives_diff_views", dict(qkv_receives_diff_views=True)),
    ("store_with_lookahead_value", dict(store_with_lookahead_value=True)),
    ("activation=ReLU", "relu"),
])
def test_still_refused_by_name(tp, option, kwargs):
    torch, c, tp_nm = tp
    if kwargs == "gelu_tanh":
        kwargs = dict(activation=torch.nn.GELU(approximate="tanh"))
    elif kwargs == "relu":
        kwargs = dict(activation=torch.nn.ReLU())
    mem = tp_nm.NeuralMemory(dim=16, dim_head=8, heads=2, chunk_size=4, **kwargs)
    with pytest.raises(c.UnsupportedError) as e:
        c.memory_config(mem)
    assert option in str(e.value)
    with pytest.raises(c.UnsupportedError, match="tanh"):
        c._decode_kwargs({"activation": "gelu_tanh"})


def test_mac_with_the_options_writes_format_version_2(tp, tmp_path):
    pytest.importorskip("x_transformers")
    import titans_pytorch
    mac = titans_pytorch.MemoryAsContextTransformer(
        num_tokens=64, dim=32, depth=2, segment_len=8, num_persist_mem_tokens=2,
        num_longterm_mem_tokens=2, heads=2, dim_head=16, neural_memory_layers=(2,),
        neural_memory_segment_len=4, neural_memory_batch_size=8, sliding_window_attn=True,
        neural_memory_kwargs=dict(per_parameter_lr_modulation=True, spectral_norm_surprises=True))
    path = tmp_path / "mac.safetensors"
    config = tp[1].convert_mac(mac, str(path))
    assert config["memory"]["lr_modulation"] and config["memory"]["spectral_norm"]
    header, meta = read_header(path)
    assert meta["format_version"] == "2"
    assert "layers.1.memory.w_mod" in header and "layers.1.memory.b_mod" in header
