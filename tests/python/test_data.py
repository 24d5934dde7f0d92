"""Tests of tools/prepare_data.py and python/titans/torch/data.py.

Run: /usr/bin/python3 -m pytest tests/python/test_data.py
Needs the Debian packages bible-kjv, bible-kjv-text, fortunes, jargon-text (skipped otherwise).
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREPARE = os.path.join(ROOT, "tools", "prepare_data.py")
FILES = ["train.bin", "train_docs.npy", "heldout_kjv.txt", "heldout_fortunes.txt",
         "manifest.json"]

pytestmark = pytest.mark.skipif(
    shutil.which("bible") is None or not os.path.isfile("/usr/lib/bible.data")
    or not os.path.isdir("/usr/share/games/fortunes")
    or not os.path.isfile("/usr/share/doc/jargon-text/jargon.txt.gz"),
    reason="needs the Debian packages bible-kjv, bible-kjv-text, fortunes, jargon-text")


def _load_data_module():
    # Load the file directly: the titans package's __init__ files belong to the trainer.
    path = os.path.join(ROOT, "python", "titans", "torch", "data.py")
    spec = importlib.util.spec_from_file_location("titans_torch_data_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data = _load_data_module()


def _prepare(out):
    subprocess.run([sys.executable, PREPARE, "--out", str(out)], check=True,
                   stdout=subprocess.PIPE)
    return {name: hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest()
            for name in FILES}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    first = tmp_path_factory.mktemp("data1")
    second = tmp_path_factory.mktemp("data2")
    return first, _prepare(first), _prepare(second)


@pytest.fixture(scope="module")
def corpus(prepared):
    return data.Corpus(str(prepared[0]))


def _read(directory, name):
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def test_prepare_is_deterministic(prepared):
    _, first, second = prepared
    assert first == second


def test_manifest_matches_files(prepared):
    directory = prepared[0]
    manifest = json.loads(_read(directory, "manifest.json"))
    for name in FILES[:-1]:
        blob = _read(directory, name)
        assert manifest["files"][name]["bytes"] == len(blob)
        assert manifest["files"][name]["sha256"] == hashlib.sha256(blob).hexdigest()
    train = manifest["splits"]["train"]
    packages = {s["package"] for s in train["sources"]}
    assert packages == {"bible-kjv-text", "fortunes", "jargon-text"}
    books = [s["source"] for s in manifest["splits"]["heldout_kjv"]["sources"]]
    assert books == ["John", "Acts"]
    assert len([s for s in train["sources"] if s["package"] == "bible-kjv-text"]) == 64


def test_bytes_are_printable_ascii(prepared):
    allowed = set(range(32, 127)) | {10}
    for name in ["train.bin", "heldout_kjv.txt", "heldout_fortunes.txt"]:
        assert set(np.unique(np.frombuffer(_read(prepared[0], name), np.uint8))) <= allowed


def test_documents(prepared):
    train = _read(prepared[0], "train.bin")
    starts = np.load(os.path.join(prepared[0], "train_docs.npy"))
    assert starts.dtype == np.int64 and starts[0] == 0 and np.all(np.diff(starts) > 0)
    for s in starts[1:]:
        assert train[s - 2:s] == b"\n\n" and train[s:s + 1] != b"\n"
    assert train.startswith(b"Genesis 1:1 In the beginning God created the heaven")
    assert train.endswith(b"\n") and b"\nRevelation 22:21 The grace of our Lord" in train


def test_heldout_books_not_in_train(prepared):
    train = _read(prepared[0], "train.bin")
    heldout = _read(prepared[0], "heldout_kjv.txt")
    verse = b"John 3:16 For God so loved the world, that he gave his only begotten Son"
    assert verse in heldout and b"For God so loved the world" not in train
    assert b"\nActs 1:1 The former treatise have I made, O Theophilus" in heldout
    assert b"O Theophilus" not in train
    assert re.search(rb"(^|\n)(John|Acts) \d+:\d+ ", train) is None  # no verse of theirs
    assert len(re.findall(rb"(?m)^John \d+:\d+ ", heldout)) == 879
    assert len(re.findall(rb"(?m)^Acts \d+:\d+ ", heldout)) == 1007
    assert b"\n1 John 1:1 " in train  # a different book, which stays in train


def test_heldout_fortunes_not_in_train(prepared):
    train = _read(prepared[0], "train.bin")
    heldout = _read(prepared[0], "heldout_fortunes.txt").decode("ascii")
    fortunes = [f.strip() for f in heldout.split("\n%\n")]
    long_ones = [f for f in fortunes if len(f) > 120]
    assert len(long_ones) > 100
    for f in long_ones:
        assert f.encode("ascii") not in train


def test_sample_batch_shapes_and_determinism(corpus):
    args = dict(batch=4, length=2048, recall_fraction=0.5, min_distance=512)
    a = data.sample_batch(corpus, np.random.default_rng(7), **args)
    b = data.sample_batch(corpus, np.random.default_rng(7), **args)
    c = data.sample_batch(corpus, np.random.default_rng(8), **args)
    assert a["tokens"].shape == (4, 2049) and a["tokens"].dtype == np.int64
    assert a["answer_mask"].shape == (4, 2049) and a["answer_mask"].dtype == np.bool_
    assert a["recall"].shape == (4,)
    assert np.array_equal(a["tokens"], b["tokens"])
    assert np.array_equal(a["answer_mask"], b["answer_mask"])
    assert a["facts"] == b["facts"]
    assert not np.array_equal(a["tokens"], c["tokens"])
    assert a["tokens"].min() >= 0 and a["tokens"].max() < 128


def test_plain_rows_are_corpus_windows(corpus):
    batch = data.sample_batch(corpus, np.random.default_rng(1), 6, 1024, 0.0, 512)
    assert not batch["recall"].any() and not batch["answer_mask"].any()
    train = np.asarray(corpus.data).tobytes()
    for row in batch["tokens"]:
        assert train.find(row.astype(np.uint8).tobytes()) >= 0


def test_recall_fraction(corpus):
    rng = np.random.default_rng(2)
    assert data.sample_batch(corpus, rng, 5, 4096, 1.0, 512)["recall"].all()
    counts = [data.sample_batch(corpus, rng, 4, 1024, 0.5, 256)["recall"].sum()
              for _ in range(20)]
    assert all(c == 2 for c in counts)


def test_recall_facts(corpus):
    min_distance = 512
    rng = np.random.default_rng(3)
    templates, n_facts, distances = set(), 0, []
    for _ in range(40):
        batch = data.sample_batch(corpus, rng, 4, 8192, 1.0, min_distance)
        for row, mask, facts in zip(batch["tokens"], batch["answer_mask"], batch["facts"]):
            assert 1 <= len(facts) <= 4
            text = row.astype(np.uint8).tobytes().decode("ascii")
            expected = np.zeros(len(text), dtype=bool)
            for f in facts:
                template = next(t for t in data.TEMPLATES if t.name == f["template"])
                statement = template.statement.format(key=f["key"], value=f["value"])
                question = template.question.format(key=f["key"])
                # Stated once, at its offsets; asked once, later, followed by the answer
                # (the answer sentence may repeat the statement's words, as in "phone").
                answered = question + f["value"] + "."
                assert text.count(statement) == 1 + answered.count(statement)
                assert text.count(question) == 1
                s, q = f["statement_start"], f["question_start"]
                assert text[s:f["statement_end"]] == statement
                assert text[q:q + len(question)] == question
                assert q - (s + len(statement)) >= min_distance
                distances.append(q - s)
                a = q + len(question)
                assert (a, a + len(f["value"])) == (f["answer_start"], f["answer_end"])
                assert text[a:a + len(f["value"]) + 1] == f["value"] + "."
                expected[a:a + len(f["value"])] = True
                # Inserted at a boundary: a line start or after a sentence.
                assert s == 0 or text[s - 1] == "\n" or text[s - 2:s] in (". ", "? ", "! ")
                templates.add(f["template"])
                n_facts += 1
            assert np.array_equal(mask, expected)
            answer = "".join(text[i] for i in np.flatnonzero(mask))
            assert answer == "".join(f["value"] for f in sorted(facts,
                                                                 key=lambda f: f["answer_start"]))
    assert templates == {t.name for t in data.TEMPLATES}
    assert n_facts > 300
    # Distances spread from min_distance up to nearly the whole row.
    assert min(distances) < 2 * min_distance and max(distances) > 7000


def test_ruler_needle_wording(corpus):
    rng = np.random.default_rng(4)
    for _ in range(50):
        batch = data.sample_batch(corpus, rng, 2, 4096, 1.0, 512)
        for row, facts in zip(batch["tokens"], batch["facts"]):
            text = row.astype(np.uint8).tobytes().decode("ascii")
            for f in facts:
                if f["template"] == "ruler_needle":
                    k, v = f["key"], f["value"]
                    assert ("One of the special magic numbers for %s is: %s." % (k, v)) in text
                    assert ("What is the special magic number for %s? The special magic number "
                            "for %s is: %s." % (k, k, v)) in text
                    return
    pytest.fail("no RULER needle drawn")


def test_too_short_for_min_distance(corpus):
    with pytest.raises(ValueError):
        data.sample_batch(corpus, np.random.default_rng(0), 1, 256, 1.0, 512)


def test_heldout_corpus(prepared):
    held = data.Corpus(str(prepared[0]), split="heldout_kjv")
    assert held.doc_names == ["bible-kjv-text:John", "bible-kjv-text:Acts"]
    assert held.document(1).tobytes().startswith(b"Acts 1:1 ")
    batch = data.sample_batch(held, np.random.default_rng(5), 2, 4096, 1.0, 512)
    assert batch["answer_mask"].any()


def test_word_lists():
    for words in [data.ADJECTIVES, data.NOUNS, data.FIRST_NAMES, data.SURNAMES,
                  data.VALUE_WORDS]:
        assert len(words) >= 64 and len(set(words)) == len(words)


def test_speed(corpus):
    rng = np.random.default_rng(6)
    data.sample_batch(corpus, rng, 4, 8192, 0.5, 512)
    t0 = time.perf_counter()
    for _ in range(10):
        data.sample_batch(corpus, rng, 4, 8192, 1.0, 512)
    per_batch = (time.perf_counter() - t0) / 10
    assert per_batch < 0.05, "%.1f ms per 4 x 8192 batch" % (per_batch * 1e3)


def test_rows_given_starts_continue_the_text(corpus):
    """With starts, row r's text starts there; starts + consumed continues it: the next row's
    first input is this row's last corpus byte (for plain and recall rows alike)."""
    rng = np.random.default_rng(11)
    starts = np.array([1000, 2_000_000, 5_000_000])
    text = np.asarray(corpus.data)
    for _ in range(4):
        batch = data.sample_batch(corpus, rng, 3, 2048, 0.5, 512, starts=starts)
        assert np.array_equal(batch["starts"], starts)
        for r in range(3):
            row, mask = batch["tokens"][r], batch["answer_mask"][r]
            if not batch["recall"][r]:
                assert batch["consumed"][r] == 2048
                assert np.array_equal(row, text[starts[r]:starts[r] + 2049])
            else:  # the row minus its inserts (each with its 1-byte separator) is the text
                keep = np.ones(len(row), dtype=bool)
                for f in batch["facts"][r]:
                    keep[f["statement_start"]:f["statement_end"] + 1] = False
                    keep[f["question_start"]:f["answer_end"] + 2] = False  # + "." + separator
                n = batch["consumed"][r] + 1
                assert n < 2049 and np.array_equal(row[keep], text[starts[r]:starts[r] + n])
        starts = batch["starts"] + batch["consumed"]
    with pytest.raises(ValueError, match="runs past"):
        data.sample_batch(corpus, rng, 1, 2048, 0.0, 512, starts=[len(corpus) - 100])
    with pytest.raises(ValueError, match="offsets for"):
        data.sample_batch(corpus, rng, 2, 2048, 0.0, 512, starts=[0])


def test_window_start_by_source_weights(corpus):
    rng = np.random.default_rng(12)
    assert corpus.packages() == ["bible-kjv-text", "fortunes", "jargon-text"]
    names = np.array([n.split(":", 1)[0] for n in corpus.doc_names])

    def package_at(offset):
        return names[np.searchsorted(corpus.doc_starts, offset, side="right") - 1]

    only_jargon = [package_at(corpus.window_start(rng, 4096, {"jargon-text": 1.0}))
                   for _ in range(50)]
    assert set(only_jargon) == {"jargon-text"}
    draws = [package_at(corpus.window_start(rng, 4096, {"bible-kjv-text": 3, "fortunes": 1}))
             for _ in range(2000)]
    kjv = draws.count("bible-kjv-text") / len(draws)
    assert 0.70 < kjv < 0.80 and "jargon-text" not in draws  # a window never starts in jargon
    with pytest.raises(ValueError, match="not in the corpus"):
        corpus.window_start(rng, 4096, {"gutenberg": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        corpus.window_start(rng, 4096, {"fortunes": 0.0})
