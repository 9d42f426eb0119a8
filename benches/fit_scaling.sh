#!/usr/bin/env bash
# How `sonomaly fit` scales with the normal audio: 15, 90 and 360 clips of 10 s (2.5 min, 15 min, 1 hour), wall
# time, peak resident memory and the time spent in coreset selection.
#
#   benches/fit_scaling.sh [FIT ARGS...]      # e.g. --max-bank-rows none for the exact greedy
#
# The clips: the 40 MIMII fan id_00 clips of ../shared/data (20 normal, 20 abnormal), each rotated in time by
# 0, 1, ..., 8 s (cut at that offset and the two parts swapped: 40 x 9 = 360 distinct clips), taken in the order
# offset by offset, so 15 clips are 15 fan clips as recorded and 90 are all 40 at offsets 0 and 1 and 10 at offset 2.
# Each fit runs once under /usr/bin/time -v with SONOMALY_CORESET_LOG=1, which makes every PatchCore fit print its
# coreset selection time and every fitting stage (decoding and analysis; per member: fit, replacement rows,
# held-out scoring) its wall time on stderr; the second table lists the stages. Writes
# target/bench/fitscale.json (and the logs beside it) and prints a table.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/bench"
FAN="$ROOT/../shared/data/industrial/mimii_fan_id00"
[ -d "$FAN" ] || { echo "fit_scaling.sh: $FAN is missing (../shared/data beside the repository)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "fit_scaling.sh: /usr/bin/time is missing (Debian: apt-get install time)" >&2; exit 1; }
mkdir -p "$OUT"
cargo build --release --bin sonomaly
SONOMALY="$ROOT/target/release/sonomaly"

CLIPS="$OUT/fit360"
if [ ! -f "$CLIPS/done" ]; then
    rm -rf "$CLIPS" && mkdir -p "$CLIPS"
    python3 - "$CLIPS" "$FAN" <<'PY'
import os, sys
import numpy as np
import soundfile as sf
out, fan = sys.argv[1], sys.argv[2]
clips = sorted(os.path.join(fan, k, f) for k in ("normal", "abnormal") for f in os.listdir(os.path.join(fan, k))
               if f.endswith(".wav"))
assert len(clips) == 40, len(clips)
n = 0
for shift_s in range(9):
    for path in clips:
        y, sr = sf.read(path, dtype="int16")
        assert len(y) == 10 * sr, path
        name = f"{n:03d}_{os.path.basename(os.path.dirname(path))}_{os.path.basename(path)[:-4]}_shift{shift_s}s.wav"
        sf.write(os.path.join(out, name), np.roll(y, -shift_s * sr, axis=0), sr, subtype="PCM_16")
        n += 1
print(f"{n} clips of 10 s in {out}")
PY
    touch "$CLIPS/done"
fi

TAG=default
[ "$#" -gt 0 ] && TAG=$(echo "$*" | tr -c 'a-zA-Z0-9\n' '_')
RESULTS=()
for N in 15 90 360; do
    mapfile -t FILES < <(find "$CLIPS" -name '*.wav' | sort | head -"$N")
    LOG="$OUT/fitscale.$TAG.$N.log"
    echo "fit of $N clips ($TAG) ..." >&2
    SONOMALY_CORESET_LOG=1 /usr/bin/time -v "$SONOMALY" fit --force --out "$OUT/fitscale.$TAG.$N.bank" "$@" "${FILES[@]}" \
        > "$LOG" 2>&1 || { tail -20 "$LOG" >&2; exit 1; }
    "$SONOMALY" info --json "$OUT/fitscale.$TAG.$N.bank" > "$OUT/fitscale.$TAG.$N.info.json"
    RESULTS+=("$N:$LOG:$OUT/fitscale.$TAG.$N.info.json")
done

python3 - "$OUT/fitscale.$TAG.json" "$TAG" "$*" "${RESULTS[@]}" <<'PY'
import json, re, sys
out, tag, args, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows = []
for run in runs:
    n, log, info = run.split(":")
    text = open(log).read()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    user = float(re.search(r"User time \(seconds\): (\S+)", text).group(1))
    system = float(re.search(r"System time \(seconds\): (\S+)", text).group(1))
    cores = [(int(m[0]), int(m[1]), int(m[2]), float(m[3])) for m in
             re.findall(r"coreset: (\d+) x \d+ patches, (\d+) candidates -> (\d+) rows in (\S+) s", text)]
    bank = json.load(open(info))["memory_bank"]
    stages = {m[0]: float(m[1]) for m in re.findall(r"stage: (.+?) in (\S+) s", text)}
    rows.append({"clips": int(n), "audio_s": 10 * int(n), "seconds": seconds, "cpu_seconds": user + system,
                 "peak_rss_kib": rss_kib, "coresets": len(cores), "coreset_seconds": sum(c[3] for c in cores),
                 "final_patches": cores[-1][0] if cores else None, "final_candidates": cores[-1][1] if cores else None,
                 "memory_bank": bank, "stages": stages})
json.dump({"tag": tag, "args": args, "runs": rows}, open(out, "w"), indent=1)
print("| clips (audio) | fit s | CPU s | coreset s (selections) | rest s | peak RSS MiB | patches (final fit) | candidates | bank |")
for r in rows:
    print(f"| {r['clips']} ({r['audio_s'] / 60:.1f} min) | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['coreset_seconds']:.1f} ({r['coresets']}) | "
          f"{r['seconds'] - r['coreset_seconds']:.1f} | {r['peak_rss_kib'] / 1024:.0f} | {r['final_patches']} | "
          f"{r['final_candidates']} | {r['memory_bank']} |")
names = list(dict.fromkeys(k for r in rows for k in r["stages"]))
if names:
    print()
    print("| clips | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['clips']} | " + " | ".join(f"{r['stages'].get(k, float('nan')):.1f}" for k in names) + " |")
    print()
a = {r["clips"]: r["seconds"] for r in rows}
print(f"360 / 90 clips: {a[360] / a[90]:.2f} (linear: 4)")
print("wrote", out)
PY
