#!/usr/bin/env bash
# Writes the fuzz targets' seed corpus (fuzz/corpus/<target>/) from valid files made by the
# `titans` program: models of every kind, session states of the state target's model, and their
# config JSON. Run from the repository root after building the release preset; the files are
# committed (about 200 KB), so CI needs no step of its own. The safetensors target takes the
# model and state seeds.
set -euo pipefail
titans="${TITANS:-build/release/tools/titans}"
out=fuzz/corpus
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out"
mkdir -p "$out"/{model,state,config}

small=(--vocab 16 --d-model 8 --heads 2 --memory-heads 2 --window 4 --chunk 2 --ffn-hidden 16)
for kind in mag mal lmm attention mac mixed; do
  "$titans" make-model "$out/model/$kind.safetensors" --kind "$kind" "${small[@]}" >/dev/null
  "$titans" info "$out/model/$kind.safetensors" --config-only >"$out/config/$kind.json"
done
"$titans" make-model "$out/model/gqa_persistent.safetensors" --kind mag,attention,mac \
  "${small[@]}" --kv-heads 1 --persistent 2 --memory-depth 2 >/dev/null

# The state target's model (fuzz/state_fuzz.cpp loads it) and states after 3 and 11 tokens.
"$titans" make-model "$out/state_model.safetensors" --kind mag,attention,mac "${small[@]}" \
  --persistent 2 >/dev/null
python3 - "$tmp" <<'PY'
import json, struct, sys
def tokens(path, ids):
    header = json.dumps({"tokens": {"dtype": "I32", "shape": [len(ids)],
                                    "data_offsets": [0, 4 * len(ids)]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + struct.pack("<%di" % len(ids), *ids))
tokens(sys.argv[1] + "/t3.safetensors", [1, 2, 3])
tokens(sys.argv[1] + "/t11.safetensors", list(range(11)))
PY
for n in 3 11; do
  "$titans" forward "$out/state_model.safetensors" --input "$tmp/t$n.safetensors" \
    --output "$tmp/out$n.safetensors" --save-state "$out/state/after_$n.safetensors" >/dev/null
done
du -sh "$out"
