#!/usr/bin/env bash
# Dev ROC-AUCs of PatchCore with the capped coreset against the exact greedy (`--max-bank-rows none`).
#
#   benches/coreset_accuracy.sh [CASE...]     # default: every case below; about 30 minutes on 2 cores
#
# Sets: MIMII fan id_00 (fit normal 0-9, test normal 10-19 against abnormal 0-19, as scripts/results.sh) and the
# EnvMix set of scripts/results.sh (`sonomaly mix ... --seed 0`: 30 fit clips, 30 normal + 60 anomalous test
# clips), remade here in target/coreset/envmix; `envmix360` is the same mix with 360 fit clips (one hour; its
# test clips differ, since the fit clips draw from the same random stream first). Each case is one
# `sonomaly eval --bootstrap 200 --faithfulness-clips 0` (ROC-AUCs without faithfulness) with the options shown.
# Results: target/coreset/<set>.<case>.json; one line per case on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA=${DATA:-$ROOT/../shared/data}
OUT=$ROOT/target/coreset
CNN=conv_block2,conv_block3,conv_block4
# set:name:options (a + stands for a space)
CASES=(
    "fan:default:"  "fan:exact:--max-bank-rows+none"
    "fan:cap1000:--max-bank-rows+1000"  "fan:exact-1000-rows:--max-bank-rows+none+--coreset-ratio+0.0501"
    "fan:cap500:--max-bank-rows+500"  "fan:exact-500-rows:--max-bank-rows+none+--coreset-ratio+0.02503"
    "fan:cap250:--max-bank-rows+250"  "fan:exact-250-rows:--max-bank-rows+none+--coreset-ratio+0.012513"
    "fan:cnn-default:--layers+$CNN"  "fan:cnn-exact:--layers+$CNN+--max-bank-rows+none"
    "fan:cnn-cap1000:--layers+$CNN+--max-bank-rows+1000"
    "fan:cnn-exact-1000-rows:--layers+$CNN+--max-bank-rows+none+--coreset-ratio+0.0501"
    "envmix:default:"  "envmix:exact:--max-bank-rows+none"
    "envmix:cap4096:--max-bank-rows+4096"  "envmix:exact-4096-rows:--max-bank-rows+none+--coreset-ratio+0.06834"
    "envmix:cap2048:--max-bank-rows+2048"  "envmix:exact-2048-rows:--max-bank-rows+none+--coreset-ratio+0.03417"
    "envmix:cap1024:--max-bank-rows+1024"  "envmix:exact-1024-rows:--max-bank-rows+none+--coreset-ratio+0.017085"
    "envmix:cap512:--max-bank-rows+512"  "envmix:exact-512-rows:--max-bank-rows+none+--coreset-ratio+0.008543"
    "envmix360:cap16384:--max-bank-rows+16384"  "envmix360:cap8192:--max-bank-rows+8192"
)
[ "$#" -gt 0 ] && CASES=("$@")
cargo build --release --quiet --bin sonomaly
BIN=$ROOT/target/release/sonomaly
mkdir -p "$OUT"
FAN=$DATA/industrial/mimii_fan_id00
{
    echo "path,label"
    for i in $(seq 10 19); do printf '%s/normal/%08d.wav,normal\n' "$FAN" "$i"; done
    for i in $(seq 0 19); do printf '%s/abnormal/%08d.wav,anomaly\n' "$FAN" "$i"; done
} > "$OUT/fan_test.csv"
mix() { # out fit-clips
    [ -f "$1/test.csv" ] && return
    local E=$DATA/env U=$DATA/env/urbansound8k_subset
    "$BIN" mix --out "$1" --seed 0 --fit-clips "$2" \
        --backgrounds "$U/air_conditioner" "$U/engine_idling" "$U/street_music" "$U/children_playing" \
                      "$E/opensoundscape" "$E/lincity_ng" \
        --events "$U/gun_shot" "$U/dog_bark" "$U/car_horn" "$U/siren" "$U/drilling" "$U/jackhammer" \
                 "$E/ovos_animals_cc0" >&2
}
for c in "${CASES[@]}"; do
    IFS=: read -r set name opts <<< "$c"
    read -r -a OPTS <<< "${opts//+/ }"
    if [ "$set" = fan ]; then
        FIT=(); for i in $(seq 0 9); do FIT+=("$(printf '%s/normal/%08d.wav' "$FAN" "$i")"); done
        TEST=$OUT/fan_test.csv
    else
        [ "$set" = envmix ] && mix "$OUT/envmix" 30 || mix "$OUT/envmix360" 360
        FIT=("$OUT/$set/fit.csv"); TEST=$OUT/$set/test.csv
    fi
    json=$OUT/$set.$name.json
    "$BIN" eval --name "$set" --json --bootstrap 200 --faithfulness-clips 0 ${OPTS[@]+"${OPTS[@]}"} \
        --test "$TEST" --fit "${FIT[@]}" > "$json" 2> "$OUT/$set.$name.log" || { cat "$OUT/$set.$name.log" >&2; exit 1; }
    python3 - "$json" "$set" "$name" "${opts//+/ }" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o = r["overall"]
g = lambda k: "—" if not o.get(k) else f"{o[k]['value']:.3f}"
print(f"| {sys.argv[2]} | {sys.argv[3]} | `{sys.argv[4]}` | {r['bank']} | {g('sample_auc')} | {g('temporal_auc')} | "
      f"{g('spectrogram_auc')} | {r['fit_seconds']:.1f} |")
PY
done
