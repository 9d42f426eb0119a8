#!/usr/bin/env bash
# Speed, side by side with the tools a user would otherwise pick, in one run; writes BENCH.md and prints it.
#
#   benches/run.sh [--quick] [--no-browser]
#
# Needs ../shared/data beside the repository (the MIMII fan clips), cargo, python3 with pip, and for the browser
# rows node/npm and Chromium (/usr/bin/chromium, or CHROMIUM=/path). It
# 1. installs what the reference side needs when it is missing (benches/requirements.txt: onnxruntime, faiss-cpu,
#    librosa, scikit-learn; npm: onnxruntime-web and playwright-core in benches/web),
# 2. makes the inputs: a CNN14 in the PANNs layout with random weights (models/convert_cnn14.py --synthetic), a
#    conv_block2,3,4 PatchCore bank of 10 fan clips (sonomaly fit), 100 distinct 10 s clips for the fit
#    measurement (the 20 normal fan clips, each also rotated in time by 2, 4, 6 and 8 s), the wasm page
#    (./build.sh build),
# 3. runs sonomaly's side (cargo bench --bench speed), the native references (benches/reference.py), a fit on the
#    100 clips (wall time and peak memory from getrusage), fits of 15 / 90 / 360 clips (benches/fit_scaling.sh:
#    wall time, peak memory, time in coreset selection), and the browser side (node benches/web/run.mjs: our
#    wasm and onnxruntime-web in the same headless Chromium),
# 4. writes BENCH.md (benches/report.py) from this run's target/bench/*.json and prints it.
#
# --quick: 3 repetitions instead of 10, report in target/bench/BENCH-quick.md (a smoke run: BENCH.md is left alone;
# the one-run items, coreset and fit, take as long as ever). --no-browser: native rows only.
# Takes about 25 minutes on 2 cores once built (most of it the coresets, their references, the fits and the browser); the
# first run also builds the crate natively and for wasm, 15-25 minutes more.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/bench"
QUICK=()
BROWSER=1
for a in "$@"; do
    case "$a" in
        --quick) QUICK=(--quick) ;;
        --no-browser) BROWSER=0 ;;
        *) echo "benches/run.sh: unknown option '$a' (known: --quick, --no-browser)" >&2; exit 2 ;;
    esac
done
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'benches/run.sh: %s\n' "$*" >&2; exit 1; }

# Everything needed is checked before the long work starts.
FAN="$ROOT/../shared/data/industrial/mimii_fan_id00/normal"
[ -d "$FAN" ] || die "$FAN is missing: the benchmarks read the MIMII fan clips from ../shared/data beside the repository"
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
command -v python3 >/dev/null || die "python3 not found"
if [ "$BROWSER" = 1 ]; then
    command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for the browser rows (or pass --no-browser)"
    [ -x "${CHROMIUM:-/usr/bin/chromium}" ] \
        || die "Chromium not found at ${CHROMIUM:-/usr/bin/chromium} (Debian: apt-get install chromium; or pass --no-browser)"
fi
mkdir -p "$OUT"
# Only this run's results go into the report.
rm -f "$OUT"/native.json "$OUT"/reference.json "$OUT"/browser.json "$OUT"/fit100.json "$OUT"/fit100.info.json "$OUT"/fitscale.*.json

say "reference tools (pip: benches/requirements.txt)"
python3 -c "import onnxruntime, faiss, librosa, sklearn, safetensors, onnx, threadpoolctl, soundfile" 2>/dev/null \
    || python3 -m pip install -q -r benches/requirements.txt
if [ "$BROWSER" = 1 ] && [ ! -d benches/web/node_modules ]; then
    say "browser tools (cd benches/web && npm ci)"
    (cd benches/web && npm ci --no-audit --no-fund)
fi

if [ ! -f "$OUT/cnn14-panns/model.onnx" ]; then
    say "CNN14 (PANNs layout, random weights) -> $OUT/cnn14-panns"
    python3 models/convert_cnn14.py --synthetic "$OUT/cnn14-synthetic.pth" --variant panns --seed 0
    python3 models/convert_cnn14.py "$OUT/cnn14-synthetic.pth" --variant panns --out "$OUT/cnn14-panns"
    rm -f "$OUT/cnn14-synthetic.pth"
fi

say "cargo build --release (CLI) and cargo bench --no-run"
cargo build --release --bin sonomaly
cargo bench --bench speed --no-run
SONOMALY="$ROOT/target/release/sonomaly"
mapfile -t FAN_CLIPS < <(find "$FAN" -maxdepth 1 -name '*.wav' | sort | head -20)

if [ "$BROWSER" = 1 ]; then
    say "aisfx conv_block2,3,4 bank of 10 fan clips (for the browser's pipeline row) -> $OUT/fan-cnn.bank"
    "$SONOMALY" fit --model models/aisfx-cnn14 --layers conv_block2,conv_block3,conv_block4 --out "$OUT/fan-cnn.bank" \
        --force "${FAN_CLIPS[@]:0:10}"
    # The previous default bank (format version 1), for the browser's pipeline row beside the default.
    cp tests/fixtures/fan-demo-v1.bank "$OUT/fan-demo-v1.bank"
fi

say "sonomaly (cargo bench --bench speed)"
cargo bench --bench speed -- --out "$OUT" ${QUICK[@]+"${QUICK[@]}"}

say "references (benches/reference.py)"
python3 benches/reference.py --out "$OUT" ${QUICK[@]+"${QUICK[@]}"}

say "fitting on 100 distinct clips of 10 s, default embedding"
rm -rf "$OUT/fit100" && mkdir -p "$OUT/fit100"
python3 - "$OUT/fit100" "${FAN_CLIPS[@]}" <<'PY'
import os, sys
import numpy as np
import soundfile as sf
out, clips = sys.argv[1], sys.argv[2:]
for i, path in enumerate(clips):
    y, sr = sf.read(path, dtype="int16")
    for k, shift_s in enumerate((0, 2, 4, 6, 8)):
        sf.write(os.path.join(out, f"fan{i:02d}_shift{shift_s}s.wav"), np.roll(y, shift_s * sr, axis=0), sr, subtype="PCM_16")
print(f"{len(clips) * 5} clips in {out}")
PY
# Wall time and peak resident memory of the fit (the child's maximum RSS, from getrusage).
python3 - "$OUT/fit100.json" "$SONOMALY" fit --out "$OUT/fit100.bank" --force "$OUT/fit100" <<'PY'
import json, os, resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1].replace(".json", ".log"), "w") as log:
    code = subprocess.run(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT).returncode
seconds = time.perf_counter() - t
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
clips = len([f for f in os.listdir(sys.argv[-1]) if f.endswith(".wav")])
json.dump({"seconds": seconds, "peak_rss_kib": peak_kib, "exit_code": code, "clips": clips}, open(sys.argv[1], "w"))
print(f"fit of {clips} clips: {seconds:.1f} s, peak RSS {peak_kib / 1024:.0f} MiB, exit {code}")
sys.exit(code)
PY
"$SONOMALY" info --json "$OUT/fit100.bank" > "$OUT/fit100.info.json"

say "fit scaling: 15, 90 and 360 clips of 10 s (benches/fit_scaling.sh)"
benches/fit_scaling.sh

if [ "$BROWSER" = 1 ]; then
    say "browser (./build.sh build, then node benches/web/run.mjs)"
    ./build.sh build
    node benches/web/run.mjs --out "$OUT/browser.json" ${QUICK[@]+"${QUICK[@]}"}
fi

REPORT=BENCH.md
[ "${#QUICK[@]}" -gt 0 ] && REPORT="$OUT/BENCH-quick.md"
say "$REPORT"
python3 benches/report.py --out "$OUT" --write "$REPORT"
cat "$REPORT"
