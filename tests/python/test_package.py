"""Tests of the Python package titans (python/, docs/PYTHON.md) against the engine itself.

Run inside the venv the package is installed in (docs/PYTHON.md):

    VENV/bin/python -m pytest -q tests/python/test_package.py

The comparisons with the engine use this build's `titans` program (TITANS_CLI, default
build/release/tools/titans; those tests skip without it) and the titans-pytorch goldens of
tests/data. Without the installed package the whole file skips, unless TITANS_REQUIRE_PACKAGE=1
(CI sets it), when it fails.
"""

import gc
import importlib.metadata
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("TITANS_CLI", os.path.join(ROOT, "build", "release", "tools", "titans"))
DATA = os.path.join(ROOT, "tests", "data")
SHIPPED = os.path.join(ROOT, "models", "titans-byte-mag.safetensors")

if os.environ.get("TITANS_REQUIRE_PACKAGE") == "1":
    import titans
    import titans._titans  # noqa: F401 (the extension must be there)
else:
    pytest.importorskip("titans._titans", reason="the titans package is not installed "
                                                 "(pip install ./python, docs/PYTHON.md)")
    import titans

needs_cli = pytest.mark.skipif(not os.path.exists(CLI),
                               reason=f"the titans program is not built ({CLI})")

# A small model with every block kind (lmm, mal, mag, mac, attention): the engine's JSON form
# (docs/FILE_FORMAT.md). MAC needs segment = the memory's chunk.
MEMORY = {
    "d_model": 32, "heads": 2, "head_dim": 16, "depth": 2, "expansion": 4.0,
    "activation": "silu", "output": "plain", "layer_norm_eps": 1e-5, "store_norm": True,
    "retrieve_norm": True, "rms_eps": 1e-6, "conv_kernel": 4, "qkv_activation": "silu",
    "qk_norm": "l2", "max_lr": 1.0, "momentum": True, "loss": "sum", "step": 1, "chunk": 16,
    "read": "chunk", "read_offset": 0, "output_gate": False, "output_proj": False,
}
CONFIG = {
    "vocab_size": 64, "d_model": 32, "ffn_hidden": 64, "norm_eps": 1e-6,
    "tie_embeddings": False, "layers": ["lmm", "mal", "mag", "mac", "attention"],
    "attention": {"heads": 4, "kv_heads": 2, "head_dim": 8, "window": 24, "persistent": 2,
                  "rope_base": 10000.0},
    "memory": MEMORY, "segment": 16,
}
V, D = CONFIG["vocab_size"], CONFIG["d_model"]
TOKENS = np.array([(i * 37 + 11) % V for i in range(100)], dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# helpers

_NP = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    """-> ({name: numpy array}, metadata)"""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end],
                                  dtype=np.dtype(_NP[t["dtype"]]).newbyteorder("<"))
        out[name] = out[name].reshape(t["shape"])
    return out, meta


def write_safetensors(path, tensors):
    names = {np.dtype(v): k for k, v in _NP.items()}
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def cli(*args):
    return subprocess.run([CLI, *map(str, args)], check=True, capture_output=True,
                          text=True).stdout


def cli_forward(model_path, tmp_path, *extra, **inputs):
    """`titans forward` over tokens= or embeddings= with one thread; -> its output array."""
    inp, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    write_safetensors(inp, inputs)
    cli("forward", model_path, "--input", inp, "--output", out, "--threads", 1, *extra)
    tensors, _ = read_safetensors(out)
    return tensors["logits" if "tokens" in inputs else "hidden"]


def cli_generate(model_path, prompt, n, *options):
    out = cli("generate", model_path, "--prompt-tokens", ",".join(map(str, prompt)), "-n", n,
              "--threads", 1, *options)
    return [int(t) for t in out.strip().split(",")] if out.strip() else []


def same_config(got, want):
    """Config dicts equal, float fields as the engine's float32 (1e-5 reads back as
    9.999999747378752e-06)."""
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same_config(got[k], want[k]) for k in want)
    if isinstance(want, float):
        return np.float32(got) == np.float32(want)
    return got == want


def rel_diff(a, b):
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module")
def model():
    return titans.Model.random(CONFIG, seed=3)


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "mixed.safetensors"
    model.save(str(path))
    return path


def session(model, **kw):
    return titans.Session(model, threads=1, **kw)


# ---------------------------------------------------------------------------------------------
# model


def test_version_is_the_packages_and_the_engines():
    assert titans.__version__ == importlib.metadata.version("titans")
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        assert re.search(r"^  VERSION (\S+)$", f.read(), re.M).group(1) == titans.__version__


def test_model_properties(model, model_path):
    assert model.config == json.loads(model.config_json)
    assert model.config["layers"] == CONFIG["layers"]
    assert (model.vocab_size, model.d_model, model.num_layers) == (V, D, 5)
    loaded = titans.Model.load(model_path)
    assert loaded.config == model.config
    assert isinstance(model.memory(0), titans.NeuralMemory)
    assert model.memory(4) is None  # the attention block has no memory
    assert "vocab_size=64" in repr(model)
    assert titans.Model.load(str(model_path)).config == model.config  # str or PathLike


@needs_cli
def test_random_is_titans_make_model(model, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    cli("make-model", tmp_path / "made.safetensors", "--config", config, "--seed", 3)
    made = titans.Model.load(tmp_path / "made.safetensors").tensors()
    ours = model.tensors()
    assert made.keys() == ours.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], made[name], err_msg=name)


def test_tensors_round_trip_through_from_tensors(model):
    tensors = model.tensors()
    assert tensors["embedding"].shape == (V, D) and tensors["embedding"].dtype == np.float32
    rebuilt = titans.Model.from_tensors(model.config, tensors)
    np.testing.assert_array_equal(session(rebuilt).forward(TOKENS), session(model).forward(TOKENS))
    with pytest.raises(titans.MismatchError, match="lm_head"):
        titans.Model.from_tensors(model.config, {k: v for k, v in tensors.items()
                                                 if k != "lm_head"})
    with pytest.raises(titans.MismatchError, match="embedding"):
        titans.Model.from_tensors(model.config, {**tensors, "embedding": tensors["embedding"].T})
    with pytest.raises(titans.MismatchError, match="extra"):
        titans.Model.from_tensors(model.config, {**tensors, "extra": np.zeros(1, np.float32)})


# ---------------------------------------------------------------------------------------------
# bf16 weights: the product matrices rounded to bf16 (Model.weight_type, with_weights, weights=)

PRODUCT = "layers.1.ffn_up"  # one of the product matrices bf16 rounds; the embedding is not one


def safetensors_dtypes(path):
    """{tensor name: dtype} of a safetensors file's header."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return {name: t["dtype"] for name, t in header.items()}


def test_with_weights_rounds_the_product_matrices_and_back_keeps_them(model):
    assert model.weight_type == "f32"
    bf16 = model.with_weights("bf16")
    assert (bf16.weight_type, model.weight_type) == ("bf16", "f32")  # the source is unchanged
    assert "weights=bf16" in repr(bf16) and "weights=f32" in repr(model)
    ours, rounded = model.tensors(), bf16.tensors()
    # bf16: the top half of a float32, so the low 16 bits of every rounded value are zero.
    assert not (rounded[PRODUCT].view(np.uint32) & 0xFFFF).any()
    assert not np.array_equal(rounded[PRODUCT], ours[PRODUCT])
    np.testing.assert_allclose(rounded[PRODUCT], ours[PRODUCT], rtol=2.0**-8)
    np.testing.assert_array_equal(rounded["embedding"], ours["embedding"])
    logits, bf16_logits = session(model).forward(TOKENS), session(bf16).forward(TOKENS)
    assert not np.array_equal(bf16_logits, logits)
    assert rel_diff(bf16_logits, logits) < 0.05

    # Back to f32: the rounded values, the bf16 model's logits up to the order of the sums.
    back = bf16.with_weights("f32")
    assert back.weight_type == "f32"
    np.testing.assert_array_equal(back.tensors()[PRODUCT], rounded[PRODUCT])
    assert rel_diff(session(back).forward(TOKENS), bf16_logits) < 1e-5
    np.testing.assert_array_equal(session(bf16.with_weights("bf16")).forward(TOKENS), bf16_logits)

    # random and from_tensors with weights="bf16" are the same model.
    made = titans.Model.random(CONFIG, seed=3, weights="bf16")
    assert made.weight_type == "bf16"
    np.testing.assert_array_equal(session(made).forward(TOKENS), bf16_logits)
    rebuilt = titans.Model.from_tensors(model.config, ours, weights="bf16")
    assert rebuilt.weight_type == "bf16"
    np.testing.assert_array_equal(session(rebuilt).forward(TOKENS), bf16_logits)
    assert titans.Model.random(CONFIG, seed=3).weight_type == "f32"


def test_bf16_model_files_save_and_load(model, model_path, tmp_path):
    bf16 = model.with_weights("bf16")
    path = tmp_path / "bf16.safetensors"
    bf16.save(path)
    dtypes = safetensors_dtypes(path)
    assert dtypes[PRODUCT] == "BF16" and dtypes["embedding"] == "F32"
    assert safetensors_dtypes(model_path)[PRODUCT] == "F32"
    assert os.path.getsize(path) < 0.75 * os.path.getsize(model_path)
    expected = session(bf16).forward(TOKENS)

    loaded = titans.Model.load(path)  # as the file stores them
    assert loaded.weight_type == "bf16"
    np.testing.assert_array_equal(session(loaded).forward(TOKENS), expected)
    converted = titans.Model.load(model_path, weights="bf16")
    assert converted.weight_type == "bf16"
    np.testing.assert_array_equal(session(converted).forward(TOKENS), expected)
    assert titans.Model.load(model_path, weights="f32").weight_type == "f32"
    widened = titans.Model.load(path, weights="f32")
    assert widened.weight_type == "f32"
    np.testing.assert_array_equal(widened.tensors()[PRODUCT], bf16.tensors()[PRODUCT])


@needs_cli
def test_bf16_files_are_the_programs(model, model_path, tmp_path):
    converted = tmp_path / "converted.safetensors"
    out = cli("convert-weights", model_path, converted, "--to", "bf16")
    assert out.startswith(f"wrote {converted}: bf16 weights, ")
    saved = tmp_path / "saved.safetensors"
    model.with_weights("bf16").save(saved)
    assert saved.read_bytes() == converted.read_bytes()
    assert "\nweights: bf16 (product matrices), " in cli("info", converted)
    # `titans forward --weights bf16` of the f32 file: the bf16 model's logits, bit for bit.
    np.testing.assert_array_equal(
        cli_forward(model_path, tmp_path, "--weights", "bf16", tokens=TOKENS),
        session(titans.Model.load(converted)).forward(TOKENS))


def test_bad_weights_values_raise_value_error(model, model_path):
    calls = {
        "Model.load": lambda: titans.Model.load(model_path, weights="fp16"),
        "Model.random": lambda: titans.Model.random(CONFIG, weights="F32"),
        "Model.from_tensors": lambda: titans.Model.from_tensors(model.config, model.tensors(),
                                                                weights="bf"),
        "Model.with_weights": lambda: model.with_weights(""),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f'^invalid argument: {name}: weights must be "f32" '
                                             f'or "bf16", got ') as e:
            call()
        assert isinstance(e.value, titans.InvalidArgumentError)
    with pytest.raises(TypeError):
        model.with_weights(None)


# ---------------------------------------------------------------------------------------------
# forward against the engine's program


@needs_cli
def test_forward_equals_the_engine(model, model_path, tmp_path):
    want = cli_forward(model_path, tmp_path, tokens=TOKENS.astype(np.int64))
    got = session(model).forward(TOKENS)
    assert got.dtype == np.float32 and got.shape == (len(TOKENS), V)
    np.testing.assert_array_equal(got, want)  # same code, same thread count: bit for bit


@needs_cli
def test_forward_embeddings_equals_the_engine(model, model_path, tmp_path):
    x = np.random.default_rng(5).standard_normal((40, D)).astype(np.float32)
    want = cli_forward(model_path, tmp_path, embeddings=x)
    got = session(model).forward_embeddings(x)
    assert got.dtype == np.float32 and got.shape == (40, D)
    np.testing.assert_array_equal(got, want)


@needs_cli
def test_streaming_pieces_equal_the_engines_pieces_and_one_call(model, model_path, tmp_path):
    s = session(model)
    pieces = [s.forward(TOKENS[a:b]) for a, b in ((0, 1), (1, 16), (16, 32), (32, 100))]
    assert s.position == 100
    got = np.concatenate(pieces)
    want = cli_forward(model_path, tmp_path, "--split", "1,15,16", tokens=TOKENS.astype(np.int64))
    np.testing.assert_array_equal(got, want)
    # against one call: equal up to float rounding (docs/SEMANTICS.md invariant 2)
    assert rel_diff(got, session(model).forward(TOKENS)) <= 1e-5
    decoded = titans.Session(model, threads=1)
    one_by_one = np.concatenate([decoded.forward([int(t)]) for t in TOKENS])
    assert rel_diff(one_by_one, got) <= 1e-5


def test_thread_options_change_results_by_rounding_only(model):
    # The thread governor (adapt_threads) picks one thread or the team per piece; the two agree
    # up to float rounding (docs/SEMANTICS.md invariant 7; docs/PERFORMANCE.md, "Busy cores").
    fixed = titans.SessionOptions(threads=2, adapt_threads=False)
    assert not fixed.adapt_threads and titans.SessionOptions().adapt_threads
    assert "adapt_threads=False" in repr(fixed)
    want = session(model).forward(TOKENS)
    for options in (fixed, titans.SessionOptions(threads=2)):
        assert rel_diff(titans.Session(model, options=options).forward(TOKENS), want) <= 1e-6


def test_token_inputs_of_every_kind_give_the_same_logits(model):
    want = session(model).forward(TOKENS)
    wide = np.zeros(2 * len(TOKENS), dtype=np.int64)
    wide[::2] = TOKENS
    for tokens in (TOKENS.tolist(), tuple(TOKENS.tolist()), TOKENS.astype(np.int64),
                   TOKENS.astype(np.uint8), TOKENS.astype(np.int16), wide[::2],
                   [np.int64(t) for t in TOKENS]):
        np.testing.assert_array_equal(session(model).forward(tokens), want)
    assert session(model).forward([]).shape == (0, V)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    model = titans.Model.random(CONFIG, seed=3)
    want = session(model).forward(TOKENS)
    for dtype in (torch.int64, torch.int32):
        got = session(model).forward(torch.tensor(TOKENS.tolist(), dtype=dtype))
        np.testing.assert_array_equal(got, want)
    x = np.random.default_rng(1).standard_normal((8, D)).astype(np.float32)
    hidden = session(model).forward_embeddings(x)
    t = torch.tensor(x, requires_grad=True)
    np.testing.assert_array_equal(session(model).forward_embeddings(t), hidden)
    with pytest.raises(titans.InvalidArgumentError, match="float32"):
        session(model).forward_embeddings(t.double())


# ---------------------------------------------------------------------------------------------
# generation


@needs_cli
@pytest.mark.parametrize("options", [
    {},
    {"temperature": 0.8, "top_k": 40, "seed": 7},
    {"temperature": 1.3, "top_p": 0.9, "seed": 123},
    {"temperature": 0.5, "top_k": 5, "top_p": 0.5, "seed": 2**40 + 1},
])
def test_generate_yields_the_tokens_of_titans_generate(model, model_path, options):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    flags = []
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}", value]
    want = cli_generate(model_path, prompt, 40, *flags)
    s = session(model)
    got = list(s.generate(prompt, max_new_tokens=40, **options))
    assert got == want and len(got) == 40
    assert s.position == len(prompt) + 39  # the last token is not fed


@needs_cli
def test_generate_with_the_shipped_model_equals_the_program():
    prompt = list(b"And Jesus said")
    want = cli_generate(SHIPPED, prompt, 60, "--temperature", 0.7, "--seed", 1)
    s = titans.Session(titans.Model.load(SHIPPED), threads=1)
    assert list(s.generate(prompt, 60, temperature=0.7, seed=1)) == want


def test_generate_streams_and_can_stop_early(model):
    prompt = [1, 2, 3]
    full = list(session(model).generate(prompt, max_new_tokens=10, temperature=0.9, seed=5))
    s = session(model)
    gen = s.generate(prompt, max_new_tokens=10, temperature=0.9, seed=5)
    assert s.position == 0  # nothing runs before the first token is asked for
    first = [next(gen) for _ in range(4)]
    assert first == full[:4]
    assert s.position == len(prompt) + 3
    del gen
    # The stream goes on from there, as generation fed it: the prompt in one piece, then one
    # token at a time.
    ref = session(model)
    ref.forward(prompt)
    for t in full[:3]:
        ref.forward([t])
    np.testing.assert_array_equal(s.forward([full[3]]), ref.forward([full[3]]))
    empty = session(model)
    assert list(empty.generate(prompt, max_new_tokens=0)) == []
    assert empty.position == len(prompt)  # the prompt is fed all the same


# ---------------------------------------------------------------------------------------------
# state


def test_state_round_trip_through_a_file_and_bytes(model, tmp_path):
    a, b = TOKENS[:37], TOKENS[37:]
    s = session(model)
    s.forward(a)
    path = tmp_path / "state.safetensors"
    s.save(path)
    data = s.state_bytes()
    assert data == path.read_bytes()  # state_bytes is exactly the file
    want = s.forward(b)

    from_file = session(model)
    from_file.load(path)
    assert from_file.position == len(a)
    np.testing.assert_array_equal(from_file.forward(b), want)

    from_bytes = titans.Session.from_state_bytes(model, data, threads=1)
    np.testing.assert_array_equal(from_bytes.forward(b), want)
    loaded = session(model)
    loaded.load_state_bytes(bytearray(data))
    np.testing.assert_array_equal(loaded.forward(b), want)
    loaded.load_state_bytes(memoryview(data))
    assert loaded.position == len(a)


def test_clone_is_independent_and_reset_starts_over(model):
    s = session(model)
    s.forward(TOKENS[:30])
    c = s.clone()
    after = s.forward(TOKENS[30:60])
    assert (s.position, c.position) == (60, 30)
    np.testing.assert_array_equal(c.forward(TOKENS[30:60]), after)
    c.forward(TOKENS[60:])  # only the clone moves on
    assert s.position == 60
    np.testing.assert_array_equal(s.forward(TOKENS[60:]),
                                  _continue(model, TOKENS[:30], TOKENS[30:60], TOKENS[60:]))
    s.reset()
    assert s.position == 0
    np.testing.assert_array_equal(s.forward(TOKENS[:30]), session(model).forward(TOKENS[:30]))


def _continue(model, *pieces):
    """The last piece's logits of a new session fed `pieces` one after the other."""
    s = session(model)
    for p in pieces[:-1]:
        s.forward(p)
    return s.forward(pieces[-1])


def test_health_and_reset_memory(model):
    s = session(model)
    s.forward(TOKENS[:32])
    health = s.health()
    assert [h["layer"] for h in health] == [0, 1, 2, 3]
    assert all(h["finite"] and not h["all_zero"] for h in health)
    s.reset_memory()  # position 32 is a multiple of the unit (16)
    assert s.position == 32
    s.forward(TOKENS[32:33])
    with pytest.raises(titans.InvalidArgumentError):
        s.reset_memory()  # 33 is not


# ---------------------------------------------------------------------------------------------
# errors: one Python class per ErrorCode, with the engine's message


def test_error_classes():
    assert issubclass(titans.InvalidArgumentError, titans.Error)
    assert issubclass(titans.InvalidArgumentError, ValueError)
    assert issubclass(titans.IoError, OSError)
    for cls in (titans.ConfigError, titans.FormatError, titans.MismatchError,
                titans.NumericalError):
        assert issubclass(cls, titans.Error)
    assert len(titans.ErrorCode.__members__) == 6


def test_io_and_format_errors(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(titans.IoError, match="missing.safetensors") as e:
        titans.Model.load(missing)
    assert e.value.code == titans.ErrorCode.IO and str(e.value).startswith("i/o error: ")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(titans.FormatError) as e:
        titans.Model.load(garbage)
    assert e.value.code == titans.ErrorCode.FORMAT
    with pytest.raises(titans.FormatError):
        titans.NeuralMemory.load(garbage)
    with pytest.raises(titans.FormatError):
        titans.Model.random("{not json")


def test_config_error():
    bad = json.loads(json.dumps(CONFIG))
    bad["attention"]["kv_heads"] = 3  # 4 heads do not group into 3
    with pytest.raises(titans.ConfigError, match="multiple of kv_heads") as e:
        titans.Model.random(bad)
    assert e.value.code == titans.ErrorCode.CONFIG
    assert str(e.value).startswith("unsupported configuration: ")
    with pytest.raises(titans.ConfigError, match="multiple of step"):
        titans.NeuralMemory.random({**MEMORY, "chunk": 15, "step": 2})


def test_mismatch_error(model, tmp_path):
    other = titans.Model.random({**CONFIG, "d_model": 16, "memory": {**MEMORY, "d_model": 16,
                                                                     "head_dim": 8},
                                 "attention": {**CONFIG["attention"], "head_dim": 4}})
    path = tmp_path / "other.safetensors"
    titans.Session(other).save(path)
    s = session(model)
    s.forward(TOKENS[:5])
    with pytest.raises(titans.MismatchError) as e:
        s.load(path)
    assert e.value.code == titans.ErrorCode.MISMATCH
    assert s.position == 5  # unchanged on error
    with pytest.raises(titans.FormatError):
        s.load_state_bytes(b"garbage")
    assert s.position == 5


def test_bad_tokens_shapes_and_dtypes_raise_before_anything_changes(model):
    s = session(model)
    s.forward(TOKENS[:3])
    before = s.state_bytes()
    cases = [
        ([0, V], "outside the vocabulary"),
        ([-1], "outside the vocabulary"),
        ([2**40], "outside the vocabulary"),
        (np.array([1.0, 2.0]), "integers"),
        ([1.5], "integers"),
        (np.array([True]), "integers"),
        (np.zeros((2, 3), np.int32), "1-D"),
    ]
    for tokens, message in cases:
        with pytest.raises(titans.InvalidArgumentError, match=message) as e:
            s.forward(tokens)
        assert e.value.code == titans.ErrorCode.INVALID_ARGUMENT
    x = np.zeros((4, D), np.float32)
    for bad, message in ((x.astype(np.float64), "float32"), (x[:, :-1], r"\[n, 32\]"),
                         (x[0], r"\[n, 32\]"),
                         (np.full((1, D), np.nan, np.float32), "not finite")):
        with pytest.raises(titans.InvalidArgumentError, match=message):
            s.forward_embeddings(bad)
    assert s.position == 3 and s.state_bytes() == before
    with pytest.raises(titans.InvalidArgumentError):
        session(model).generate([1], temperature=-1.0)
    with pytest.raises(titans.InvalidArgumentError):
        session(model).generate([1], top_p=0.0)
    with pytest.raises(titans.InvalidArgumentError):
        session(model).generate([], max_new_tokens=3)
    with pytest.raises(titans.InvalidArgumentError):
        session(model).generate([V], max_new_tokens=3)
    with pytest.raises(titans.InvalidArgumentError):
        titans.Session(model, threads=-1)


def test_numerical_error_breaks_the_session_until_reset(model, tmp_path):
    s = session(model)
    s.forward(TOKENS[:20])
    path = tmp_path / "state.safetensors"
    s.save(path)
    # Huge but finite fast weights: the state loads, and the next forward overflows.
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    blown = 0
    for name, t in header.items():
        if name != "__metadata__" and t["dtype"] == "F32" and re.search(r"w_cur", name):
            begin, end = t["data_offsets"]
            values = np.full((end - begin) // 4, 1e30, dtype="<f4")
            raw[8 + n + begin:8 + n + end] = values.tobytes()
            blown += 1
    assert blown > 0, sorted(header)
    broken = session(model)
    broken.load_state_bytes(bytes(raw))
    with pytest.raises(titans.NumericalError) as e:
        broken.forward(TOKENS[20:60])
    assert e.value.code == titans.ErrorCode.NUMERICAL
    with pytest.raises(titans.NumericalError):
        broken.forward(TOKENS[:1])  # broken until Reset or Load
    broken.reset()
    np.testing.assert_array_equal(broken.forward(TOKENS[:5]), session(model).forward(TOKENS[:5]))


# ---------------------------------------------------------------------------------------------
# the memory alone


def test_memory_matches_the_titans_pytorch_goldens():
    index = json.load(open(os.path.join(DATA, "tp_memory", "index.json")))
    for case in index["cases"]:
        memory = titans.NeuralMemory.load(os.path.join(DATA, "tp_memory", case["memory_file"]))
        golden, _ = read_safetensors(os.path.join(DATA, "tp_memory", case["golden_file"]))
        x = golden["input"]
        assert same_config(memory.config, case["config"])
        full = titans.MemorySession(memory, threads=1).forward(x)
        assert full.shape == (x.shape[0], memory.output_width)
        assert rel_diff(full, golden["out_full"]) <= index["tolerance"], case["name"]
        s, pieces, at = titans.MemorySession(memory, threads=1), [], 0
        for n in golden["calls"]:
            pieces.append(s.forward(x[at:at + n]))
            at += n
        assert rel_diff(np.concatenate(pieces), golden["out_calls"]) <= index["tolerance"]
        assert s.position == x.shape[0]


def test_mac_model_matches_the_titans_pytorch_goldens():
    index = json.load(open(os.path.join(DATA, "tp_mac", "index.json")))
    for case in index["cases"]:
        model = titans.Model.load(os.path.join(DATA, "tp_mac", case["model_file"]))
        golden, _ = read_safetensors(os.path.join(DATA, "tp_mac", case["golden_file"]))
        # The file holds one variant's config; the others differ in tp_mac.sliding alone.
        sliding = model.config["tp_mac"]["sliding"]
        variant = next(v for v, info in case["variants"].items() if info["sliding"] == sliding)
        assert same_config(model.config, case["variants"][variant]["config"])
        logits = titans.Session(model, threads=1).forward(golden["tokens"])
        assert rel_diff(logits, golden["logits." + variant]) <= index["tolerance"], case["name"]


def test_memory_session_state_clone_read_and_errors(tmp_path):
    memory = titans.NeuralMemory.random(MEMORY, seed=2)
    assert (memory.input_width, memory.output_width) == (32, 32)  # no projection: H * dh
    x = np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32)
    s = titans.MemorySession(memory, threads=1)
    s.forward(x[:20])
    c = s.clone()
    path = tmp_path / "mem_state.safetensors"
    s.save(path)
    want = s.forward(x[20:], x[20:] * 0.5)
    np.testing.assert_array_equal(c.forward(x[20:], x[20:] * 0.5), want)
    loaded = titans.MemorySession(memory, threads=1)
    loaded.load(path)
    np.testing.assert_array_equal(loaded.forward(x[20:], x[20:] * 0.5), want)
    read = loaded.read(x[:3])
    assert read.shape == (3, 32) and loaded.position == 50  # read writes nothing
    assert loaded.health()["finite"]
    s.reset()
    assert s.position == 0
    rebuilt = titans.NeuralMemory.from_tensors(memory.config, memory.tensors())
    np.testing.assert_array_equal(titans.MemorySession(rebuilt, threads=1).forward(x),
                                  titans.MemorySession(memory, threads=1).forward(x))
    with pytest.raises(titans.InvalidArgumentError, match=r"\[n, 32\]"):
        s.forward(x[:, :16])
    with pytest.raises(titans.InvalidArgumentError, match="float32"):
        s.forward(x.astype(np.float64))
    with pytest.raises(titans.InvalidArgumentError, match="same rows"):
        s.forward(x[:4], x[:3])
    assert s.position == 0
    nested = s.forward(x[:2].tolist())  # lists are converted to float32
    assert nested.shape == (2, 32)


# ---------------------------------------------------------------------------------------------
# threads, leaks, imports


def test_two_threads_with_two_sessions_run_in_parallel(model):
    """The GIL is released during compute: prints the speed-up of two threads over running the
    same two sessions one after the other (a measurement, not an assertion: the machine may be
    busy), and checks that the threaded results are the sequential ones."""
    big = titans.Model.random({**CONFIG, "d_model": 128, "ffn_hidden": 256,
                               "memory": {**MEMORY, "d_model": 128, "head_dim": 64},
                               "attention": {**CONFIG["attention"], "head_dim": 32,
                                             "window": 256}}, seed=1)
    tokens = np.arange(1536, dtype=np.int32) % V

    def run(results, i):
        results[i] = titans.Session(big, threads=1).forward(tokens)

    sequential = [None, None]
    start = time.perf_counter()
    run(sequential, 0)
    run(sequential, 1)
    t_seq = time.perf_counter() - start
    threaded = [None, None]
    workers = [threading.Thread(target=run, args=(threaded, i)) for i in range(2)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    t_par = time.perf_counter() - start
    print(f"\nGIL release: two sessions sequential {t_seq:.3f} s, in two threads {t_par:.3f} s: "
          f"{t_seq / t_par:.2f}x (2.0 = perfectly parallel; {os.cpu_count()} cores)")
    for a, b in zip(threaded, sequential):
        np.testing.assert_array_equal(a, b)

    # The same from the other side, which a busy machine does not blur: while one thread
    # computes, the main thread keeps running Python (with the GIL held during compute, its
    # longest pause would be the whole forward).
    worker = threading.Thread(target=run, args=(threaded, 0))
    start = time.perf_counter()
    worker.start()
    last, pause, steps = time.perf_counter(), 0.0, 0
    while worker.is_alive():
        now = time.perf_counter()
        pause, last, steps = max(pause, now - last), now, steps + 1
        time.sleep(0.001)
    worker.join()
    print(f"GIL release: during a {time.perf_counter() - start:.3f} s forward in another thread "
          f"the main thread ran {steps} steps, its longest pause {1e3 * pause:.1f} ms")


def test_one_session_shared_by_two_threads_takes_turns(model):
    s = session(model)
    errors = []

    def feed():
        try:
            for t in TOKENS[:50]:
                s.forward([int(t)])
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    workers = [threading.Thread(target=feed) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and s.position == 100


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_no_leak_over_10000_create_free_cycles():
    small = titans.Model.random({**CONFIG, "layers": ["mag"], "segment": 0}, seed=1)

    def cycle():
        s = titans.Session(small, threads=1)
        s.forward([1, 2])
        c = s.clone()
        c.load_state_bytes(s.state_bytes())
        list(c.generate([3], max_new_tokens=2))
        try:
            s.forward([V])
        except titans.InvalidArgumentError:
            pass
        m = titans.MemorySession(small.memory(0), threads=1)
        m.forward(np.ones((1, D), np.float32))

    for _ in range(1000):  # warm-up: allocator pools, pybind11's type caches
        cycle()
    gc.collect()
    before = _rss_bytes()
    for _ in range(10000):
        cycle()
    gc.collect()
    growth = _rss_bytes() - before
    print(f"\nRSS growth over 10,000 cycles: {growth / 2**20:.2f} MiB")
    assert growth < 20 * 2**20


def test_import_does_not_import_torch():
    code = "import sys, titans; titans.Model; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd="/").stdout
    assert out.strip() == "False"


def test_the_twin_is_importable_from_the_package():
    pytest.importorskip("torch")
    from titans.torch.model import load_engine_model  # noqa: F401


def test_convert_titans_pytorch_in_process(tmp_path):
    torch = pytest.importorskip("torch")
    tp_nm = pytest.importorskip("titans_pytorch.neural_memory")
    torch.manual_seed(0)
    mem = tp_nm.NeuralMemory(dim=16, dim_head=8, heads=2, chunk_size=4)
    engine = titans.convert_titans_pytorch(mem, path=tmp_path / "m.safetensors")
    assert isinstance(engine, titans.NeuralMemory)
    assert titans.NeuralMemory.load(tmp_path / "m.safetensors").config == engine.config
    x = torch.randn(1, 12, 16)
    want = mem(x)[0].detach().numpy()[0]
    got = titans.MemorySession(engine, threads=1).forward(x[0].numpy())
    assert rel_diff(got, want) <= 1e-4


def test_convert_titans_pytorch_mac_in_process_module_and_state_dict():
    torch = pytest.importorskip("torch")
    tp = pytest.importorskip("titans_pytorch")
    torch.manual_seed(0)
    kwargs = dict(num_tokens=64, dim=32, depth=2, segment_len=8, num_persist_mem_tokens=2,
                  num_longterm_mem_tokens=2, heads=2, dim_head=16, sliding_window_attn=True)
    mac = tp.MemoryAsContextTransformer(**kwargs).eval()
    with torch.no_grad():  # away from the initialisation (zeros, ones) that hides mistakes
        for name, p in mac.named_parameters():
            if "rotary" not in name:  # the engine runs the default rotary frequencies only
                p.add_(0.02 * torch.randn_like(p))
    x = torch.randint(0, 64, (1, 40))  # five segments
    with torch.no_grad():
        want = mac(x)[0].numpy()
    engine = titans.convert_titans_pytorch(mac)
    assert isinstance(engine, titans.Model)
    got = titans.Session(engine, threads=1).forward(x[0].numpy())
    assert rel_diff(got, want) <= 1e-4
    from_state_dict = titans.convert_titans_pytorch(mac.state_dict(), kwargs)
    np.testing.assert_array_equal(titans.Session(from_state_dict, threads=1).forward(x[0].numpy()),
                                  got)


def test_converter_help_needs_neither_torch_nor_titans_pytorch():
    code = ("import sys, titans.convert_cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules and 'titans_pytorch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd="/")
    got = module_cli("convert", "--help")
    assert got.returncode == 0 and b"--state-dict" in got.stdout


def test_converter_names_each_refused_option_once():
    """train_mac.py's memory layers (2, 4, 6) with two options the engine refuses (a momentum
    order above 8, a negative max_grad_norm); each appears once in the message, with the layers
    it is on, and train_mac.py's own options not at all."""
    pytest.importorskip("torch")
    tp = pytest.importorskip("titans_pytorch")
    from titans.convert import UnsupportedError

    mac = tp.MemoryAsContextTransformer(
        num_tokens=64, dim=32, depth=6, segment_len=8, num_persist_mem_tokens=2,
        num_longterm_mem_tokens=2, heads=2, dim_head=16, neural_memory_layers=(2, 4, 6),
        neural_memory_segment_len=4, neural_memory_batch_size=8, sliding_window_attn=True,
        neural_memory_kwargs=dict(per_parameter_lr_modulation=True,  # supported since
                                  spectral_norm_surprises=True, attn_pool_chunks=True,
                                  momentum_order=9, max_grad_norm=-1.0))
    with pytest.raises(UnsupportedError) as e:
        titans.convert_titans_pytorch(mac)
    message = str(e.value)
    for option in ("max_grad_norm", "momentum_order"):
        assert message.count(option) == 1, message
    for option in ("per_parameter_lr_modulation", "spectral_norm_surprises", "attn_pool_chunks"):
        assert option not in message, message
    assert all(p.startswith("layers 2, 4, 6 ") for p in e.value.problems
               if "max_grad_norm" in p or "momentum_order" in p), e.value.problems


def test_readme_example_runs(tmp_path):
    """The README's Python block, as it is, from the repository root."""
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"```python\n(import titans\n.*?)```", text, re.S)
    assert block, "README.md has no Python example starting with `import titans`"
    subprocess.run([sys.executable, "-c", block.group(1)], check=True, cwd=ROOT,
                   capture_output=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# python -m titans


def module_cli(*args):
    """`python -m titans ARGS` from outside python/ (whose sources would shadow the package)."""
    return subprocess.run([sys.executable, "-m", "titans", *map(str, args)], capture_output=True,
                          cwd="/")


@needs_cli
@pytest.mark.parametrize("options", [[], ["--temperature", 0.9, "--top-k", 5, "--seed", 7]])
def test_module_generate_prints_what_the_program_prints(model_path, options):
    args = ["generate", model_path, "--prompt-tokens", "3,1,4,1,5", "-n", 20, "-t", 1, *options]
    got = module_cli(*args)
    assert got.returncode == 0, got.stderr
    assert got.stdout.decode() == cli(*args)


@pytest.fixture(scope="module")
def byte_model_path(tmp_path_factory):
    """A random byte-level model: its samples are all 256 byte values, control bytes and
    invalid UTF-8 included, so the escapes are exercised."""
    path = tmp_path_factory.mktemp("bytes") / "bytes.safetensors"
    titans.Model.random({**CONFIG, "vocab_size": 256}, seed=5).save(str(path))
    return path


@needs_cli
@pytest.mark.parametrize("model", ["shipped", "random"])
@pytest.mark.parametrize("flags", [[], ["--raw"], ["--stop", "the"]])
def test_module_generate_text_equals_the_program(flags, model, byte_model_path):
    path = SHIPPED if model == "shipped" else byte_model_path
    args = ["generate", path, "-p", "And Jesus said", "-n", 200, "--temperature", 1.5,
            "--seed", 3, "-t", 1, *flags]
    got = module_cli(*args)
    assert got.returncode == 0, got.stderr
    want = subprocess.run([CLI, *map(str, args)], check=True, capture_output=True).stdout
    assert got.stdout == want


def test_module_info_prints_the_config(model_path, model):
    got = module_cli("info", model_path)
    assert got.returncode == 0, got.stderr
    assert same_config(json.loads(got.stdout)["model"], model.config)


def test_module_errors_exit_1_with_one_line_and_bad_command_lines_2(tmp_path, model_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    for args in (["generate", bad, "--prompt-tokens", "1"], ["info", bad],
                 ["generate", model_path, "--prompt-tokens", V],  # out of range
                 ["generate", model_path, "-p", "text"]):  # not a byte model
        got = module_cli(*args)
        assert got.returncode == 1, args
        lines = got.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, lines)
    assert module_cli("generate").returncode == 2
    assert module_cli("frobnicate").returncode == 2
