#!/usr/bin/env bash
# Measures a trained byte-level model the way models/README.md reports it, with the engine:
#   models/evaluate.sh MODEL.safetensors OUT_DIR [DATA_DIR]
# DATA_DIR (default data/) is tools/prepare_data.py's output. Writes into OUT_DIR:
#   eval_kjv.json/.svg       titans eval on the held-out John + Acts (247,402 bytes, one stream):
#                            writes on, off, and memory reset every 512 tokens (4W)
#   eval_fortunes.json       the same on the held-out fortune files
#   niah_kjv.json/.svg       titans niah on the held-out KJV text: needle 1K..64K tokens back
#   *.txt                    the printed tables
# Single-threaded (-t 1) so that two evaluations can share the 2-core machine.
set -euo pipefail
model="$1"; out="$2"; data="${3:-data}"
titans="${TITANS:-build/release/tools/titans}"
mkdir -p "$out"
"$titans" eval "$model" "$data/heldout_kjv.txt" --reset-every 512 -t 1 \
  --json "$out/eval_kjv.json" --plot "$out/eval_kjv.svg" | tee "$out/eval_kjv.txt"
"$titans" eval "$model" "$data/heldout_fortunes.txt" --reset-every 512 -t 1 \
  --json "$out/eval_fortunes.json" | tee "$out/eval_fortunes.txt"
"$titans" niah --model "$model" --haystack "$data/heldout_kjv.txt" --lengths 1K,4K,16K,64K \
  --depths 0,50,100 --trials 2 --baseline -t 1 \
  --json "$out/niah_kjv.json" --plot "$out/niah_kjv.svg" | tee "$out/niah_kjv.txt"
