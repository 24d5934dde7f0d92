"""tools/train.py (titans.torch.train): a run is reproducible, learns, and its model file runs in
the engine. Uses the `tiny` preset (seconds) on data prepared from the Debian packages."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

from titans.torch import train  # noqa: E402
from titans.torch.model import load_engine_model  # noqa: E402

CLI = os.environ.get("TITANS_CLI", os.path.join(ROOT, "build", "release", "tools", "titans"))


def losses(run_dir):
    with open(run_dir / "train.jsonl") as f:
        return [json.loads(line)["bpb"] for line in f]


def test_same_seed_same_losses_and_the_model_learns(tmp_path, data_dir):
    steps = "100"
    for name in ("a", "b"):
        assert train.main(["--preset", "tiny", "--data", str(data_dir), "--out",
                           str(tmp_path / name), "--steps", steps]) == 0
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) == 100 and a == b
    # It learns: the last ten steps average well below the first ten (8 bits = uniform).
    assert sum(a[-10:]) / 10 < sum(a[:10]) / 10 - 1.0
    assert train.main(["--preset", "tiny", "--data", str(data_dir), "--out",
                       str(tmp_path / "c"), "--steps", "5", "--seed", "2"]) == 0
    assert losses(tmp_path / "c")[:5] != a[:5]


@pytest.mark.parametrize("preset", ["tiny", "tiny-long"])  # tiny-long: 4-piece streams
def test_resume_continues_the_same_run(tmp_path, data_dir, preset):
    common = ["--preset", preset, "--data", str(data_dir)]
    train.main(common + ["--out", str(tmp_path / "whole"), "--steps", "20"])
    train.main(common + ["--out", str(tmp_path / "parts"), "--steps", "20", "--stop-after", "7"])
    run = json.loads((tmp_path / "parts" / "run.json").read_text())
    assert run["steps_done"] == 7
    train.main(common + ["--out", str(tmp_path / "parts"), "--steps", "20", "--resume"])
    assert losses(tmp_path / "parts") == losses(tmp_path / "whole")


@pytest.mark.skipif(not os.path.exists(CLI), reason="the titans program is not built")
def test_trained_model_file_loads_in_engine_and_twin(tmp_path, data_dir):
    train.main(["--preset", "tiny", "--data", str(data_dir), "--out", str(tmp_path),
                "--steps", "10"])
    path = tmp_path / "model.safetensors"
    subprocess.run([CLI, "info", str(path)], check=True, capture_output=True)
    model = load_engine_model(str(path))
    assert model.config["layers"] == train.PRESETS["tiny"]["config"]["layers"]


def test_streams_carry_the_state_between_pieces(tmp_path, data_dir, monkeypatch):
    """In a stream preset the model gets the previous piece's state (detached) for pieces
    2..stream of a stream and None at each stream's start."""
    seen = []
    forward = train.TitansModel.forward

    def spy(self, tokens, state=None, **kw):
        seen.append(state)
        if state is not None:
            assert all(not t.requires_grad for t in _tensors(state))
        return forward(self, tokens, state, **kw)

    monkeypatch.setattr(train.TitansModel, "forward", spy)
    monkeypatch.setitem(train.PRESETS["tiny-long"], "eval_every", 1000)
    train.main(["--preset", "tiny-long", "--data", str(data_dir), "--out", str(tmp_path),
                "--steps", "9"])
    stream = train.PRESETS["tiny-long"]["stream"]
    starts = [s is None for s in seen[:9]]
    assert starts == [i % stream == 0 for i in range(9)]
    assert seen[1]["position"] == train.PRESETS["tiny-long"]["length"]


def _tensors(state):
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for v in state.values():
            yield from _tensors(v)
    elif isinstance(state, (list, tuple)):
        for v in state:
            yield from _tensors(v)


def test_init_starts_from_a_trained_model(tmp_path, data_dir, monkeypatch):
    """Recipe key `init` (the mag-recall fine-tune): the run starts from the weights of an
    engine model file (with learning rate 0 it ends with them), and a file of another config
    is refused."""
    common = ["--preset", "tiny", "--data", str(data_dir), "--steps"]
    train.main(common + ["3", "--out", str(tmp_path / "first")])
    first = tmp_path / "first" / "model.safetensors"
    monkeypatch.setitem(train.PRESETS, "tiny-init", {**train.PRESETS["tiny"], "init": str(first),
                                                     "lr": 0.0, "min_lr": 0.0})
    train.main(["--preset", "tiny-init"] + common[2:] + ["1", "--out", str(tmp_path / "tuned")])
    a = dict(load_engine_model(str(first)).named_engine_tensors())
    b = dict(load_engine_model(str(tmp_path / "tuned" / "model.safetensors")).named_engine_tensors())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = dict(train.PRESETS["tiny"]["config"], ffn_hidden=72)
    monkeypatch.setitem(train.PRESETS, "tiny-other", {**train.PRESETS["tiny-init"],
                                                      "config": other})
    with pytest.raises(ValueError, match="config is not the preset's"):
        train.main(["--preset", "tiny-other"] + common[2:] + ["1", "--out", str(tmp_path / "x")])


def test_recall_probe_counts_the_answer_bytes_by_distance(tmp_path, data_dir):
    """titans.torch.probe: a prediction at position i is of byte i + 1, so a model that is
    right exactly at the positions before the answer bytes recalls everything, one shifted by
    a position nothing; and the probe runs on a trained model file."""
    import numpy as np

    from titans.torch import probe
    from titans.torch.data import Corpus, sample_batch

    corpus = Corpus(str(data_dir), split="heldout_kjv")
    b = sample_batch(corpus, np.random.default_rng(3), 1, 512, 1.0, min_distance=16)
    facts, mask = b["facts"][0], b["answer_mask"][0]
    edges = [0, 64, 128, 256, 512]
    right = mask[1:].copy()  # predictions of the answer bytes
    counts = probe.bucket_counts(right, facts, edges)
    assert counts[3].sum() == len(facts) >= 1
    assert counts[1].sum() == mask.sum() and (counts[0] == counts[1]).all()
    assert (counts[2] == counts[3]).all()
    shifted = probe.bucket_counts(mask[:-1].copy(), facts, edges)
    assert shifted[2].sum() == 0  # off by one: no whole answer right
    for fact in facts:  # each fact in the bucket of its distance
        distance = fact["answer_start"] - fact["statement_end"]
        bucket = max(i for i, e in enumerate(edges) if e <= distance)
        assert counts[3, bucket] >= 1
    train.main(["--preset", "tiny", "--data", str(data_dir), "--out", str(tmp_path),
                "--steps", "2"])
    assert probe.main([str(tmp_path / "model.safetensors"), "--data", str(data_dir),
                       "--rows", "2", "--length", "256", "--json",
                       str(tmp_path / "probe.json")]) == 0
    table = json.load(open(tmp_path / "probe.json"))["table"]
    assert sum(r["answers"] for r in table) >= 2
    assert all(0 <= r["bytes_recalled"] <= 1 for r in table)
