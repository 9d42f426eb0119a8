#!/usr/bin/env bash
# Runs fuzz targets one after the other (never two at once), each until 1,000,000 executions or 30 minutes,
# under nice -n 19, with the limits of the fuzzing policy: no input may take more than 10 s or allocate more than
# 1 GB. Logs go to fuzz/logs/<target>.log; the last line of each is the summary (executions, time, coverage).
# Built with -O: dependencies as they ship, sonomaly with overflow checks and debug assertions (fuzz/Cargo.toml).
#
#   fuzz/run.sh                 every target
#   fuzz/run.sh wav flac        some
#   RUNS=100000 MAX_TIME=300 fuzz/run.sh onnx
#
# Needs nightly Rust and cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz). A crash leaves
# its input in fuzz/artifacts/<target>/; once fixed, copy it to fuzz/regressions/<target>/ so that
# tests/fuzz_corpus.rs replays it on stable Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=(bank wav flac ogg mp3 resample spec onnx eval_csv mask_pgm)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${ALL[@]}")
RUNS="${RUNS:-1000000}"
MAX_TIME="${MAX_TIME:-1800}"
mkdir -p fuzz/logs
nice -n 19 cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    # The working corpus (not committed) starts from the committed seeds.
    mkdir -p "fuzz/corpus/$t" && cp -n tests/fixtures/fuzz-seeds/"$t"/* "fuzz/corpus/$t"/
    max_len=16384
    case "$t" in spec|eval_csv|mask_pgm|resample) max_len=4096 ;; esac
    echo "== $t: up to $RUNS executions or $MAX_TIME s (max_len $max_len)"
    start=$SECONDS
    set +e
    nice -n 19 cargo +nightly fuzz run -O "$t" -- -runs="$RUNS" -max_total_time="$MAX_TIME" -rss_limit_mb=1024 \
        -malloc_limit_mb=1024 -timeout=10 -max_len="$max_len" -print_final_stats=1 > "fuzz/logs/$t.log" 2>&1
    rc=$?
    set -e
    line="$(grep -E '^#[0-9]+' "fuzz/logs/$t.log" | tail -1)"
    execs="$(grep -E '^stat::number_of_executed_units' "fuzz/logs/$t.log" | awk '{print $2}')"
    echo "$t: exit $rc, $((SECONDS - start)) s, executions ${execs:-?}; last status: $line"
    ls "fuzz/artifacts/$t" 2>/dev/null | sed 's/^/    finding: /' || true
done
