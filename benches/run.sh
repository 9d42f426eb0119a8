#!/usr/bin/env bash
# Speed, side by side with the tools a user would otherwise pick, in one run; writes BENCH.md.
#
#   benches/run.sh [--quick] [--no-browser]
#
# 1. installs what the reference side needs when it is missing (benches/requirements.txt: onnxruntime, faiss-cpu,
#    librosa, scikit-learn; npm: onnxruntime-web and playwright-core in benches/web),
# 2. makes the inputs: a CNN14 in the PANNs layout with random weights (models/convert_cnn14.py --synthetic), a
#    conv_block2,3,4 PatchCore bank of the fan clips (sonomaly fit), the wasm page (./build.sh build),
# 3. runs sonomaly's side (cargo bench --bench speed), the native references (benches/reference.py), fitting on
#    100 clips under /usr/bin/time, and the browser side (node benches/web/run.mjs: our wasm and onnxruntime-web in
#    the same headless Chromium),
# 4. writes BENCH.md (benches/report.py) from target/bench/*.json.
#
# --quick: 3 repetitions instead of 10 (a smoke run; the table says so). --no-browser: native rows only.
# Takes about 20 minutes on 2 cores (most of it the coreset references and the browser).
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
mkdir -p "$OUT"

say "reference tools (pip: benches/requirements.txt)"
python3 -c "import onnxruntime, faiss, librosa, sklearn, safetensors, onnx, threadpoolctl" 2>/dev/null \
    || python3 -m pip install -q -r benches/requirements.txt

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
FAN="$ROOT/../shared/data/industrial/mimii_fan_id00/normal"
[ -d "$FAN" ] || { echo "benches/run.sh: $FAN is missing (../shared/data beside the repository)" >&2; exit 1; }

if [ ! -f "$OUT/fan-cnn.bank" ]; then
    say "conv_block2,3,4 bank of 10 fan clips -> $OUT/fan-cnn.bank"
    "$SONOMALY" fit --layers conv_block2,conv_block3,conv_block4 --out "$OUT/fan-cnn.bank" --force \
        $(ls "$FAN"/*.wav | sort | head -10)
fi

say "sonomaly (cargo bench --bench speed)"
cargo bench --bench speed -- --out "$OUT" "${QUICK[@]}"

say "references (benches/reference.py)"
python3 benches/reference.py --out "$OUT" "${QUICK[@]}"

say "fitting on 100 clips (the 20 normal fan clips, 5 times each), default embedding"
rm -rf "$OUT/fit100" && mkdir -p "$OUT/fit100"
i=0
for rep in 1 2 3 4 5; do
    for f in $(ls "$FAN"/*.wav | sort | head -20); do
        ln -s "$f" "$OUT/fit100/clip$(printf '%03d' $i).wav"
        i=$((i + 1))
    done
done
# Wall time and peak resident memory of the fit (the child's maximum RSS, from getrusage).
python3 - "$OUT/fit100.json" "$SONOMALY" fit --out "$OUT/fit100.bank" --force "$OUT"/fit100/*.wav <<'PY'
import json, resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1].replace(".json", ".log"), "w") as log:
    code = subprocess.run(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT).returncode
seconds = time.perf_counter() - t
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
json.dump({"seconds": seconds, "peak_rss_kib": peak_kib, "exit_code": code, "clips": len(sys.argv) - 7}, open(sys.argv[1], "w"))
print(f"fit of {len(sys.argv) - 7} clips: {seconds:.1f} s, peak RSS {peak_kib / 1024:.0f} MiB, exit {code}")
sys.exit(code)
PY
"$SONOMALY" info --json "$OUT/fit100.bank" > "$OUT/fit100.info.json"

if [ "$BROWSER" = 1 ]; then
    say "browser (./build.sh build, then node benches/web/run.mjs)"
    ./build.sh build
    [ -d benches/web/node_modules ] || (cd benches/web && npm ci --no-audit --no-fund)
    node benches/web/run.mjs --out "$OUT/browser.json" "${QUICK[@]}"
fi

say "BENCH.md"
python3 benches/report.py --out "$OUT" --write BENCH.md
