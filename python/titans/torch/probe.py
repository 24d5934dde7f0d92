"""Recall of synthetic facts on held-out text, by distance: does a model copy a fact at all?

    cd python && OMP_NUM_THREADS=1 /usr/bin/python3 -m titans.torch.probe MODEL --data ../data

`titans niah` asks one needle at distances of 2W and more (only the memory can answer there);
this probe asks the training mixture's facts (data.py: 1-4 per row, every template) in rows of
held-out KJV text (John and Acts, never trained on), at distances from 16 bytes on, so that it
also sees the facts inside the attention window W. One forward pass per row (teacher forcing);
an answer byte counts as recalled when it is the model's most likely byte. Reports, per bucket
of the distance from the end of the statement to the answer, the fraction of answer bytes
recalled and of whole answers with every byte recalled. Guessing digits gets about 0.1 of the
bytes. The rows are the same for every model (seed fixed), so two models' tables compare.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from .data import Corpus, sample_batch
from .model import load_engine_model


def bucket_counts(correct: np.ndarray, facts: list[dict], edges: list[int]) -> np.ndarray:
    """Counts per distance bucket for one row: [4, buckets] = answer bytes recalled, answer
    bytes, whole answers recalled, answers. correct[i] says whether the prediction made at
    position i (of byte i + 1) was right."""
    counts = np.zeros((4, len(edges)))
    for fact in facts:
        distance = fact["answer_start"] - fact["statement_end"]
        bucket = int(np.searchsorted(edges, distance, side="right")) - 1
        ok = correct[fact["answer_start"] - 1:fact["answer_end"] - 1]
        counts[:, bucket] += (ok.sum(), len(ok), ok.all(), 1)
    return counts


def probe(model, corpus: Corpus, rows: int, length: int, seed: int) -> list[dict]:
    """Per distance bucket (multiples of the model's window): answer bytes and whole answers
    recalled, and their counts."""
    window = model.config["attention"]["window"]
    edges = [0, window, 2 * window, 4 * window, 8 * window]
    counts = np.zeros((4, len(edges)))
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _ in range(rows):
            b = sample_batch(corpus, rng, 1, length, recall_fraction=1.0, min_distance=16)
            tokens = torch.from_numpy(b["tokens"])
            logits, _ = model(tokens[:, :-1])
            correct = (logits[0].argmax(-1) == tokens[0, 1:]).numpy()
            counts += bucket_counts(correct, b["facts"][0], edges)
    table = []
    for i, lo in enumerate(edges):
        if counts[3, i] == 0:
            continue
        table.append({"from": lo, "to": edges[i + 1] if i + 1 < len(edges) else None,
                      "answers": int(counts[3, i]),
                      "bytes_recalled": round(counts[0, i] / counts[1, i], 4),
                      "answers_recalled": round(counts[2, i] / counts[3, i], 4)})
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an engine model file (byte-level)")
    ap.add_argument("--data", default="data", help="directory of tools/prepare_data.py")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--length", type=int, default=1024, help="bytes per row")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_engine_model(args.model)
    model.eval()
    table = probe(model, Corpus(args.data, split="heldout_kjv"), args.rows, args.length,
                  args.seed)
    print(f"{'distance':>12} {'answers':>8} {'bytes recalled':>15} {'answers recalled':>17}")
    for r in table:
        span = f"{r['from']}-{r['to'] if r['to'] is not None else ''}"
        print(f"{span:>12} {r['answers']:8d} {r['bytes_recalled']:15.3f} "
              f"{r['answers_recalled']:17.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "rows": args.rows, "length": args.length,
                       "seed": args.seed, "table": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
