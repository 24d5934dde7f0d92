"""The training twin (python/titans/torch/model.py) against the C++ engine.

Random engine models of every block kind and a mixed stack, with the memory options the twin
implements, are run by `titans forward` (whole and in pieces) and by the twin in float64
(whole and in pieces, state carried): logits agree within 1e-4. The other direction: a model
the twin initialises and saves (save_engine_model) loads in the engine and gives the twin's
logits. Needs torch (Debian's python3-torch is enough) and the built `titans` program
(TITANS_CLI, or build/release/tools/titans).
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

from titans.torch.model import (load_engine_model, read_safetensors,  # noqa: E402
                                save_engine_model, TitansModel)
from titans.torch.train import init_weights, model_config  # noqa: E402

CLI = os.environ.get("TITANS_CLI", os.path.join(ROOT, "build", "release", "tools", "titans"))
TOLERANCE = 1e-4

if not os.path.exists(CLI):
    pytest.skip(f"the titans program is not built ({CLI})", allow_module_level=True)


def run(*args):
    subprocess.run([CLI, *map(str, args)], check=True, capture_output=True)


def write_tokens(path, tokens):
    data = np.asarray(tokens, np.int32).tobytes()
    header = json.dumps({"tokens": {"dtype": "I32", "shape": [len(tokens)],
                                    "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-(8 + len(header)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


def engine_logits(tmp, model_path, tokens, split=None):
    write_tokens(tmp / "in.st", tokens)
    extra = ["--split", ",".join(map(str, split))] if split else []
    run("forward", model_path, "--input", tmp / "in.st", "--output", tmp / "out.st",
        "--threads", "1", *extra)
    return read_safetensors(str(tmp / "out.st"))[1]["logits"].double()


def twin_logits(model, tokens, split=None):
    x = torch.tensor(np.asarray(tokens, np.int64))[None]
    with torch.no_grad():
        if not split:
            return model(x)[0][0]
        state, outs, a = None, [], 0
        for size in list(split) + [len(tokens) - sum(split)]:
            logits, state = model(x[:, a:a + size], state)
            outs.append(logits[0])
            a += size
        return torch.cat(outs)


def random_config(tmp, flags, edit=None):
    """A random engine model from make-model flags, its config optionally edited (then made
    again from the edited config)."""
    path = tmp / "model.safetensors"
    run("make-model", path, *flags)
    if edit is not None:
        meta, _ = read_safetensors(str(path))
        config = json.loads(meta["config"])
        edit(config)
        (tmp / "config.json").write_text(json.dumps(config))
        run("make-model", path, "--config", tmp / "config.json", "--seed", "7")
    return path


def set_memory(**fields):
    return lambda c: c["memory"].update(fields)


SMALL = ["--layers", "2", "--d-model", "32", "--chunk", "8", "--window", "16"]
CASES = {
    "lmm": ["--kind", "lmm", *SMALL],
    "mal": ["--kind", "mal", *SMALL],
    "mag": ["--kind", "mag", *SMALL],
    "mac": ["--kind", "mac", *SMALL],
    "attention": ["--kind", "attention", *SMALL],
    "mixed-gqa-persistent": ["--kind", "mixed", "--d-model", "32", "--chunk", "8",
                             "--window", "16", "--heads", "4", "--kv-heads", "2",
                             "--persistent", "3", "--memory-depth", "3"],
    "mac-persistent": ["--kind", "mac,attention", *SMALL, "--persistent", "2"],
    "depth1-full-attention": ["--kind", "mal,mag", "--d-model", "32", "--chunk", "8",
                              "--window", "0", "--memory-depth", "1"],
    "tied": ["--kind", "mag", *SMALL, "--tied"],
}
EDITED = {
    "ln-residual-gelu-rms-gate": (["--kind", "mal,mac", *SMALL], set_memory(
        output="ln_residual", activation="gelu", qk_norm="rms", output_gate=True)),
    "no-momentum-mean-loss": (["--kind", "lmm,mag", *SMALL], set_memory(
        momentum=False, loss="mean")),
    "no-conv-no-norms": (["--kind", "mag,mac", *SMALL], set_memory(
        conv_kernel=0, store_norm=False, retrieve_norm=False, qk_norm="none",
        qkv_activation="none")),
    "conv1-heads4": (["--kind", "mal", *SMALL, "--memory-heads", "4"], set_memory(
        conv_kernel=1)),
}
SPLITS = [None, [1, 6, 7, 8, 9, 1, 40], [8] * 18, [1] * 40]


def check(tmp, path, tokens):
    model = load_engine_model(str(path), torch.float64)
    reference = engine_logits(tmp, path, tokens)
    assert reference.abs().max() > 0.5  # the comparison compares something
    for split in SPLITS:
        diff = (twin_logits(model, tokens, split) - reference).abs().max().item()
        assert diff < TOLERANCE, f"twin vs engine, split {split}: {diff}"
        if split:
            diff = (engine_logits(tmp, path, tokens, split) - reference).abs().max().item()
            assert diff < TOLERANCE, f"engine split {split} vs whole: {diff}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_twin_equals_engine(tmp_path, name):
    tokens = np.random.default_rng(len(name)).integers(0, 256, 150)
    check(tmp_path, random_config(tmp_path, CASES[name]), tokens)


@pytest.mark.parametrize("name", sorted(EDITED))
def test_twin_equals_engine_options(tmp_path, name):
    flags, edit = EDITED[name]
    tokens = np.random.default_rng(len(name)).integers(0, 256, 150)
    check(tmp_path, random_config(tmp_path, flags, edit), tokens)


def test_a_perturbed_twin_differs(tmp_path):
    """The comparison can fail: a twin whose memory never forgets differs from the engine."""
    path = random_config(tmp_path, CASES["mal"])
    tokens = np.random.default_rng(0).integers(0, 256, 150)
    model = load_engine_model(str(path), torch.float64)
    with torch.no_grad():
        model.layers[0].memory.b_alpha.fill_(-40.0)
    diff = (twin_logits(model, tokens) - engine_logits(tmp_path, path, tokens)).abs().max()
    assert diff > 100 * TOLERANCE


@pytest.mark.parametrize("kind", ["mag", "mac"])
def test_twin_saved_model_runs_in_the_engine(tmp_path, kind):
    """save_engine_model writes a file the engine loads and runs to the twin's logits."""
    config = model_config(["attention", kind], d=32, ffn=48, window=16, chunk=8)
    model = TitansModel(config)
    init_weights(model, seed=3)
    path = tmp_path / "twin.safetensors"
    save_engine_model(model, str(path))
    tokens = np.random.default_rng(1).integers(0, 256, 100)
    # The engine computes in float32: compare it with the twin's float64 run of the same
    # float32 weights.
    twin = load_engine_model(str(path), torch.float64)
    diff = (twin_logits(twin, tokens) - engine_logits(tmp_path, path, tokens)).abs().max()
    assert diff < TOLERANCE
    assert (twin_logits(twin, tokens) - twin_logits(model.double(), tokens)).abs().max() < 1e-5
