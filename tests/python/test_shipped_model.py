"""The shipped trained model (models/titans-byte-mag.safetensors): the engine loads it and
reproduces its recorded held-out figures (models/logs/titans-byte-mag/eval_heldout_16k.json,
the first 16 KB of John), and the training twin computes the same bits per byte."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "titans-byte-mag.safetensors")
RECORDED = os.path.join(ROOT, "models", "logs", "titans-byte-mag", "eval_heldout_16k.json")
CLI = os.environ.get("TITANS_CLI", os.path.join(ROOT, "build", "release", "tools", "titans"))

if not os.path.exists(CLI):
    pytest.skip(f"the titans program is not built ({CLI})", allow_module_level=True)


@pytest.fixture(scope="module")
def heldout(data_dir):
    return data_dir / "heldout_kjv.txt"


def overall(records):
    return {r["variant"]: r["bits_per_byte"] for r in records if r["overall"]}


def test_engine_reproduces_the_recorded_heldout_figures(tmp_path, heldout):
    out = tmp_path / "eval.json"
    subprocess.run([CLI, "eval", MODEL, str(heldout), "--max-bytes", "16K", "--threads", "1",
                    "--json", str(out)], check=True, capture_output=True)
    got, want = overall(json.loads(out.read_text())), overall(json.load(open(RECORDED)))
    assert set(got) == {"writes_on", "writes_off"}
    for variant, value in want.items():
        assert abs(got[variant] - value) < 1e-4, variant
    assert got["writes_on"] < got["writes_off"]  # the memory is used


def test_twin_computes_the_same_bits_per_byte(heldout):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(ROOT, "python"))
    from titans.torch.model import load_engine_model
    from titans.torch.train import heldout_bits_per_byte

    torch.set_num_threads(1)
    text = heldout.read_bytes()[:16 * 1024]
    bpb = heldout_bits_per_byte(load_engine_model(MODEL), text, 4096)
    assert abs(bpb - overall(json.load(open(RECORDED)))["writes_on"]) < 1e-3
    assert not math.isnan(bpb)
