#!/usr/bin/env bash
# Reproduces RESULTS.md from ../shared/data: builds the CLI, writes an EnvMix set from env/, and evaluates every
# detector on MIMII fan id_00 and on that EnvMix set with `sonomaly eval`.
#
#   scripts/results.sh            # writes RESULTS.md and target/results/ (JSON, Markdown, HTML reports, the mix)
#
# Environment: DATA (default ../shared/data), OUT (default target/results), BOOTSTRAP (default 1000),
# CNN=1 to add PatchCore and PaDiM rows with the paper's conv_block2,3,4 patches (about 10 more minutes on
# 2 cores). Needs python3 (standard library only) to assemble the tables.
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
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# (a) MIMII fan id_00: fit on normal 0-9, test normal 10-19 against abnormal 0-19.
FAN=$DATA/industrial/mimii_fan_id00
{
  echo "path,label"
  for i in $(seq 10 19); do printf '%s/normal/%08d.wav,normal\n' "$FAN" "$i"; done
  for i in $(seq 0 19); do printf '%s/abnormal/%08d.wav,anomaly\n' "$FAN" "$i"; done
} > "$OUT/mimii_fan_test.csv"
FIT_FAN=()
for i in $(seq 0 9); do FIT_FAN+=("$(printf '%s/normal/%08d.wav' "$FAN" "$i")"); done

# (b) EnvMix from env/: 30 fit clips, 30 normal + 60 anomalous test clips (20 per SNR), seed 0.
E=$DATA/env
U=$E/urbansound8k_subset
rm -rf "$OUT/envmix"
"$BIN" mix --out "$OUT/envmix" --seed 0 \
  --backgrounds "$U/air_conditioner" "$U/engine_idling" "$U/street_music" "$U/children_playing" \
                "$E/opensoundscape" "$E/lincity_ng" \
  --events "$U/gun_shot" "$U/dog_bark" "$U/car_horn" "$U/siren" "$U/drilling" "$U/jackhammer" \
           "$E/ovos_animals_cc0"

run() { # set name, detector, layers, fit..., -- test csv
  local set=$1 det=$2 layers=$3 test=$4; shift 4
  local tag="${set}_${det}_${layers//,/+}"
  echo "== $tag" >&2
  "$BIN" eval --name "$set" --detector "$det" --layers "$layers" --bootstrap "$BOOTSTRAP" --json \
    --markdown "$OUT/$tag.md" --html "$OUT/$tag.html" --test "$test" --fit "$@" > "$OUT/$tag.json"
}
DETS="patchcore padim padim-freq baseline"
for d in $DETS; do run mimii_fan "$d" logmel "$OUT/mimii_fan_test.csv" "${FIT_FAN[@]}"; done
for d in $DETS; do run envmix "$d" logmel "$OUT/envmix/test.csv" "$OUT/envmix/fit.csv"; done
if [ "$CNN" = 1 ]; then
  for d in patchcore padim-freq; do
    run mimii_fan "$d" conv_block2,conv_block3,conv_block4 "$OUT/mimii_fan_test.csv" "${FIT_FAN[@]}"
    run envmix "$d" conv_block2,conv_block3,conv_block4 "$OUT/envmix/test.csv" "$OUT/envmix/fit.csv"
  done
fi
elapsed=$(( $(date +%s) - start ))
python3 scripts/results_table.py "$OUT" "$elapsed" "$CNN" > RESULTS.md
echo "wrote RESULTS.md in ${elapsed} s" >&2
