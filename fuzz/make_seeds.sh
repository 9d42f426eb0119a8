#!/usr/bin/env bash
# Writes the fuzz seeds: fuzz/make_seeds.py (audio, specs, models, CSVs, masks) and bank files written by the
# CLI from the decoding fixtures. Rerun after the bank format changes: the bank seeds must be banks of today's
# format.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 fuzz/tiny/make_tiny_onnx.py
python3 fuzz/make_seeds.py
cargo build --release --bin sonomaly
mkdir -p tests/fixtures/fuzz-seeds/bank
fx=tests/fixtures/decode
fit() { ./target/release/sonomaly fit --force "$@" "$fx/tone.wav" "$fx/tone.flac" "$fx/tone.ogg" 2>&1 | grep -v '^warning'; }
fit --out tests/fixtures/fuzz-seeds/bank/seed-patchcore.bank
fit --grid-stride 8 --no-frequency-position --coreset-ratio 0.05 --out tests/fixtures/fuzz-seeds/bank/seed-small.bank
for d in padim padim-freq baseline; do fit --detector "$d" --padim-d 3 --grid-stride 8 --out "tests/fixtures/fuzz-seeds/bank/seed-$d.bank"; done
ls -l tests/fixtures/fuzz-seeds/*/seed-* | awk '{print $5, $9}'
