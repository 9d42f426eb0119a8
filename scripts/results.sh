#!/usr/bin/env bash
# Reproduces RESULTS.md from ../shared/data: builds the CLI, writes two seeded EnvMix sets from env/, and evaluates
# the default fused bank, each of its members alone, the other detectors and the previous default on MIMII fan id_00
# and on both EnvMix sets with `sonomaly eval`; then scores the MIMII pump/slider/valve pairs.
#
#   scripts/results.sh            # writes RESULTS.md and target/results/ (JSON, Markdown, HTML reports, the mixes)
#
# Environment: DATA (default ../shared/data), OUT (default target/results), BOOTSTRAP (default 1000),
# CNN=1 to add PatchCore rows with the aisfx CNN14 conv_block2,3,4 patches (the paper's; about 30 more minutes on
# 2 cores), SMALL=1 to remake the "Small banks" section (scripts/small_banks.py; about 40 more minutes). Needs
# python3 (standard library only) to assemble the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-target/results}
BOOTSTRAP=${BOOTSTRAP:-1000}
CNN=${CNN:-0}
if [ ! -d "$DATA/industrial/mimii_fan_id00" ] || [ ! -d "$DATA/env" ]; then
  echo "results.sh: $DATA does not hold industrial/mimii_fan_id00 and env/ (see ../shared/data/SOURCES.md)" >&2
  exit 1
fi
DATA=$(cd "$DATA" && pwd)
start=$(date +%s)
cargo build --release --quiet
BIN=$PWD/target/release/sonomaly
AISFX=$PWD/models/aisfx-cnn14
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/*.json

# (a) MIMII fan id_00: fit on normal 0-9, test normal 10-19 against abnormal 0-19.
FAN=$DATA/industrial/mimii_fan_id00
{
  echo "path,label"
  for i in $(seq 10 19); do printf '%s/normal/%08d.wav,normal\n' "$FAN" "$i"; done
  for i in $(seq 0 19); do printf '%s/abnormal/%08d.wav,anomaly\n' "$FAN" "$i"; done
} > "$OUT/mimii_fan_test.csv"
{ echo "path,label"; for i in $(seq 0 9); do printf '%s/normal/%08d.wav,normal\n' "$FAN" "$i"; done; } > "$OUT/mimii_fan_fit.csv"

# (b) EnvMix from env/, seeds 0 and 1: 30 fit clips, 30 normal + 60 anomalous test clips (20 per SNR) each.
E=$DATA/env
U=$E/urbansound8k_subset
for seed in 0 1; do
  rm -rf "$OUT/envmix$seed"
  "$BIN" mix --out "$OUT/envmix$seed" --seed "$seed" \
    --backgrounds "$U/air_conditioner" "$U/engine_idling" "$U/street_music" "$U/children_playing" \
                  "$E/opensoundscape" "$E/lincity_ng" \
    --events "$U/gun_shot" "$U/dog_bark" "$U/car_horn" "$U/siren" "$U/drilling" "$U/jackhammer" \
             "$E/ovos_animals_cc0"
done

run() { # tag, then eval options; on the three sets
  local tag=$1; shift
  for set in mimii_fan envmix0 envmix1; do
    local fit test
    if [ "$set" = mimii_fan ]; then fit=$OUT/mimii_fan_fit.csv; test=$OUT/mimii_fan_test.csv
    else fit=$OUT/$set/fit.csv; test=$OUT/$set/test.csv; fi
    echo "== $set $tag" >&2
    "$BIN" eval --name "$set" --bootstrap "$BOOTSTRAP" --json --markdown "$OUT/${set}_$tag.md" \
      --html "$OUT/${set}_$tag.html" --test "$test" --fit "$fit" "$@" > "$OUT/${set}_$tag.json.part"
    python3 - "$OUT/${set}_$tag.json.part" "$tag" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r["tag"] = sys.argv[2]
json.dump(r, open(sys.argv[1][:-5], "w"))
PY
    rm "$OUT/${set}_$tag.json.part"
  done
}
run default                                                        # preset both: the shipped default
run machine     --preset machine                                   # the log-mel member alone
run environment --preset environment                               # the EfficientAT member alone
run padim-freq  --preset machine --detector padim-freq
run baseline    --preset machine --detector baseline
run cfa-machine --preset machine --detector cfa                     # CFA on log-mel patches
run cfa-environment --preset environment --detector cfa             # CFA on the EfficientAT layers
run aisfx-logmel --model "$AISFX" --preset machine                 # the previous default's patches
if [ "$CNN" = 1 ]; then
  run aisfx-cnn --model "$AISFX" --layers conv_block2,conv_block3,conv_block4
fi

# (c) The MIMII pump, slider and valve pairs (one normal and one abnormal clip each): against the fan bank of (a)
# (another machine: does the bank say so?), and each against a bank fitted on the first 5 s of its own normal clip
# (the aisfx model's 2.3 s windows, which a 5 s fit can calibrate; the default's 10 s windows need 15 s).
P=$DATA/industrial/mimii_4machines_pairs
"$BIN" fit --force --out "$OUT/fan.bank" $(tail -n +2 "$OUT/mimii_fan_fit.csv" | cut -d, -f1) 2>/dev/null
"$BIN" score --bank "$OUT/fan.bank" "$P"/*.wav > "$OUT/pairs_vs_fan.jsonl"
mkdir -p "$OUT/pairs"
python3 - "$P" "$OUT/pairs" <<'PY'
import sys, wave, os
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    with wave.open(os.path.join(src, name), "rb") as r:
        p, data = r.getparams(), r.readframes(r.getnframes())
    half = (len(data) // (p.sampwidth * p.nchannels) // 2) * p.sampwidth * p.nchannels
    for tag, part in (("a", data[:half]), ("b", data[half:])):
        with wave.open(os.path.join(dst, name[:-4] + f"_{tag}.wav"), "wb") as w:
            w.setparams(p)
            w.writeframes(part)
PY
: > "$OUT/pairs_own.jsonl"
for m in pump slider valve; do
  "$BIN" fit --force --model "$AISFX" --preset machine --out "$OUT/pairs/$m.bank" "$OUT/pairs/${m}_normal_a.wav" 2>/dev/null
  "$BIN" score --bank "$OUT/pairs/$m.bank" "$OUT/pairs/${m}_normal_b.wav" "$OUT/pairs/${m}_abnormal_a.wav" \
    "$OUT/pairs/${m}_abnormal_b.wav" >> "$OUT/pairs_own.jsonl"
done
# (d) Sharded fits (needs the Python package: pip install ./python): merged banks by calibration.
if python3 -c "import sonomaly, sklearn" 2>/dev/null; then
  python3 scripts/sharded_calibration.py > "$OUT/sharded.md"
else
  echo "results.sh: the Python package is not installed, the sharded-fit table is left out" >&2
  rm -f "$OUT/sharded.md"
fi
# (e) Banks fitted on little normal audio (SMALL=1; about 40 minutes on 2 cores): the "Small banks" section.
if [ "${SMALL:-0}" = 1 ]; then
  BIN="$BIN" DATA="$DATA" python3 scripts/small_banks.py --rules --out "$OUT/small_banks" > "$OUT/small_banks.md"
fi
elapsed=$(( $(date +%s) - start ))
python3 scripts/results_table.py "$OUT" "$elapsed" "$CNN" > RESULTS.md
echo "wrote RESULTS.md in ${elapsed} s" >&2
