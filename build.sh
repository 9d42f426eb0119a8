#!/usr/bin/env bash
# Build, serve, test and check the sonomaly web page and crate.
#
#   ./build.sh [build]   compile the crate to wasm32 (+simd128), wasm-bindgen --target web, wasm-opt,
#                        and assemble the static site in dist/
#   ./build.sh serve     build, then serve dist/ on http://localhost:${PORT:-8080}
#   ./build.sh serve --no-build   serve dist/ as it is
#   ./build.sh test      native tests, the Python package's tests (pytest, Dask), wasm-bindgen-test in headless
#                        Chromium, end-to-end page tests; prints a summary and fails if any step failed
#   ./build.sh check     cargo fmt --check (rustfmt.toml; the crate, python/ and fuzz/), cargo clippy with warnings
#                        denied natively (every target of both crates) and for wasm32 (the library and its browser
#                        tests, +simd128, in target/wasm), cargo doc --no-deps with warnings denied (broken
#                        intra-doc links) for both; prints a summary and fails if any step failed
#
# Needs cargo (rustup), python3 and npm; `build` installs the wasm32 target, the wasm-bindgen CLI at the version
# in Cargo.lock and binaryen's wasm-opt (npm) when they are missing. `test` also needs chromium and chromedriver,
# `check` rustup's clippy and rustfmt components (.ci/run installs everything on a fresh Debian machine).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

WASM_TARGET=wasm32-unknown-unknown
# wasm builds get their own target directory: no lock contention with native builds, no invalidation.
TARGET_DIR="$ROOT/target"
WASM_TARGET_DIR="${SONOMALY_WASM_TARGET_DIR:-$ROOT/target/wasm}"
DIST="$ROOT/dist"
# The page's default model, and the aisfx model it loads for banks fitted with it (banks of earlier versions).
MN04_DIR="$ROOT/models/efficientat-mn04"
MODEL_DIR="$ROOT/models/aisfx-cnn14"
# SIMD for the wasm target only: a target-specific variable leaves the native build's flags (and its cache) alone.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:--C target-feature=+simd128}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# The wasm-bindgen version pinned in Cargo.lock; the CLI must match it exactly.
lock_wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

# Installs what the wasm build needs and a fresh machine lacks (the wasm32 target, the wasm-bindgen CLI at the
# version in Cargo.lock, binaryen's wasm-opt from npm), so that `./build.sh serve` works on its own.
check_tools() {
    command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
    if ! rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
        say "installing the $WASM_TARGET target (rustup target add $WASM_TARGET)"
        rustup target add "$WASM_TARGET" || die "could not install the $WASM_TARGET target"
    fi
    local want have
    want="$(lock_wasm_bindgen_version)"
    have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$want" != "$have" ]; then
        say "installing wasm-bindgen-cli $want (cargo install; a few minutes, once)"
        # --locked first; its lock file can name a dependency version the registry no longer serves.
        echo "(trying --locked first: if cargo then prints an error about a dependency it cannot find, that is" \
             "expected, and the install is retried without --locked)"
        cargo install wasm-bindgen-cli --version "$want" --locked \
            || { echo "(the --locked install failed, as can be expected; retrying without --locked)"
                 cargo install wasm-bindgen-cli --version "$want" --force; } \
            || die "could not install wasm-bindgen-cli $want: cargo install wasm-bindgen-cli --version $want"
    fi
    if [ "${WASM_OPT:-1}" != 0 ] && [ ! -x "$ROOT/tests/e2e/node_modules/.bin/wasm-opt" ] && command -v npm >/dev/null; then
        say "installing binaryen's wasm-opt from npm (cd tests/e2e && npm ci)"
        (cd "$ROOT/tests/e2e" && npm ci --no-audit --no-fund) \
            || echo "warning: npm ci failed; the wasm module will be built without wasm-opt" >&2
    fi
}

# wasm-opt: binaryen from npm (tests/e2e, version 132) if installed, else the system's. Debian 12's binaryen 108
# rewrites the export of wasm-bindgen's externref table to the function table, which breaks the module at start;
# the result is checked and, if broken, the unoptimised module is kept. WASM_OPT=0 skips this step (fast
# development builds: the module is then about a third larger).
wasm_opt_tool() {
    local npm_opt="$ROOT/tests/e2e/node_modules/.bin/wasm-opt"
    if [ -x "$npm_opt" ]; then echo "$npm_opt"; else command -v wasm-opt || true; fi
}

# Exits non-zero unless the wasm's export __wbindgen_externrefs (if any) is a table of externref.
check_externref_export() {
    python3 - "$1" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
def leb(i):
    r = s = 0
    while True:
        x = b[i]; i += 1; r |= (x & 0x7F) << s; s += 7
        if x < 0x80: return r, i
i, tables, imported, export = 8, [], 0, None
while i < len(b):
    sid = b[i]; n, j = leb(i + 1); end = j + n
    if sid == 2:  # imports: count imported tables (they come first in the table index space)
        cnt, k = leb(j)
        for _ in range(cnt):
            l, k = leb(k); k += l; l, k = leb(k); k += l; kind = b[k]; k += 1
            if kind == 0: _, k = leb(k)
            elif kind in (1, 2):
                if kind == 1: tables.append(b[k]); k += 1
                fl = b[k]; k += 1; _, k = leb(k)
                if fl & 1: _, k = leb(k)
            elif kind == 3: k += 2
            elif kind == 4: k += 2
    elif sid == 4:
        cnt, k = leb(j)
        for _ in range(cnt):
            tables.append(b[k]); k += 1; fl = b[k]; k += 1; _, k = leb(k)
            if fl & 1: _, k = leb(k)
    elif sid == 7:
        cnt, k = leb(j)
        for _ in range(cnt):
            l, k = leb(k); name = b[k:k + l]; k += l; kind = b[k]; idx, k = leb(k + 1)
            if kind == 1 and name == b"__wbindgen_externrefs": export = idx
    i = end
sys.exit(0 if export is None or tables[export] == 0x6F else 1)
PY
}

optimise_wasm() {
    local wasm="$1" tool
    if [ "${WASM_OPT:-1}" = 0 ]; then say "wasm-opt skipped (WASM_OPT=0)"; return; fi
    tool="$(wasm_opt_tool)"
    if [ -z "$tool" ]; then echo "warning: no wasm-opt found; the module is not optimised" >&2; return; fi
    say "wasm-opt -O3 --enable-simd ($("$tool" --version))"
    # Rust's wasm32 target enables these features by default; wasm-opt must be told to keep them.
    "$tool" -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue "$wasm" -o "$wasm.opt"
    if check_externref_export "$wasm.opt"; then
        mv "$wasm.opt" "$wasm"
    else
        rm -f "$wasm.opt"
        echo "warning: $tool broke the externref table export (binaryen < 116?); keeping the unoptimised module." >&2
        echo "         Install a newer binaryen: (cd tests/e2e && npm ci) brings version 132." >&2
    fi
}

cmd_build() {
    check_tools
    say "cargo build --release --target $WASM_TARGET --lib  (RUSTFLAGS for wasm: $CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS)"
    cargo build --release --target "$WASM_TARGET" --target-dir "$WASM_TARGET_DIR" --lib

    local raw="$WASM_TARGET_DIR/$WASM_TARGET/release/sonomaly.wasm"
    local out="$TARGET_DIR/wasm-web"
    # wasm-bindgen and wasm-opt again only if the compiled module (or the wasm-opt choice) changed.
    local stamp_now stamp_old=""
    stamp_now="$(sha256sum "$raw" | cut -c1-64) opt=${WASM_OPT:-1}"
    [ -f "$out/.source" ] && stamp_old="$(cat "$out/.source")"
    if [ "$stamp_now" = "$stamp_old" ] && [ -f "$out/sonomaly_bg.wasm" ] && [ -f "$out/sonomaly.js" ]; then
        say "wasm-bindgen and wasm-opt: the module is unchanged, reusing $out"
    else
        say "wasm-bindgen --target web"
        rm -rf "$out"
        wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name sonomaly "$raw"
        optimise_wasm "$out/sonomaly_bg.wasm"
        echo "$stamp_now" > "$out/.source"
    fi

    say "assembling $DIST"
    rm -rf "$DIST"
    mkdir -p "$DIST/pkg" "$DIST/models/aisfx-cnn14" "$DIST/models/efficientat-mn04"
    cp -R "$ROOT/www/." "$DIST/"
    cp "$out/sonomaly.js" "$out/sonomaly_bg.wasm" "$DIST/pkg/"
    if [ -f "$MN04_DIR/model.onnx" ] && [ -f "$MN04_DIR/spec.json" ]; then
        cp "$MN04_DIR/model.onnx" "$MN04_DIR/spec.json" "$MN04_DIR/class_labels_indices.csv" "$DIST/models/efficientat-mn04/"
    else
        echo "warning: $MN04_DIR/model.onnx or spec.json is missing; the page will say that no model could be loaded" >&2
    fi
    if [ -f "$MODEL_DIR/model.onnx" ] && [ -f "$MODEL_DIR/spec.json" ]; then
        cp "$MODEL_DIR/model.onnx" "$MODEL_DIR/spec.json" "$DIST/models/aisfx-cnn14/"
    else
        echo "warning: $MODEL_DIR/model.onnx or spec.json is missing; banks fitted with aisfx-cnn14 will not load" >&2
    fi
    # The models' licences and attribution travel with them (the MIT text of EfficientAT asks for it).
    cp "$ROOT/models/NOTICE" "$DIST/models/NOTICE"
    [ -f "$DIST/demo/fan-demo.bank" ] \
        || echo "warning: www/demo/fan-demo.bank is missing; the page will start without a bank" >&2
    # Build stamps let the page's model cache notice a new model: one per shipped model folder, and "model" over
    # both (what pages of earlier versions read).
    local stamp_all stamp_mn04 stamp_aisfx
    stamp_mn04="$( (sha256sum "$DIST/models/efficientat-mn04/"* 2>/dev/null || true) | sha256sum | cut -c1-16)"
    stamp_aisfx="$( (sha256sum "$DIST/models/aisfx-cnn14/"* 2>/dev/null || true) | sha256sum | cut -c1-16)"
    stamp_all="$(printf '%s %s' "$stamp_mn04" "$stamp_aisfx" | sha256sum | cut -c1-16)"
    printf '{"model":"%s","models":{"efficientat-mn04":"%s","aisfx-cnn14":"%s"}}\n' \
        "$stamp_all" "$stamp_mn04" "$stamp_aisfx" > "$DIST/build.json"
    printf 'wasm: %s bytes (%s)\n' "$(stat -c %s "$DIST/pkg/sonomaly_bg.wasm")" "$DIST/pkg/sonomaly_bg.wasm"
}

# Exits with a message naming another port unless PORT (default 8080) is a port number free on localhost; run
# before building, so that a busy port does not end a long build.
check_port() {
    local port="${PORT:-8080}"
    case "$port" in
        ''|*[!0-9]*) die "PORT=$port is not a port number: use e.g. PORT=8081 ./build.sh serve" ;;
    esac
    [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "PORT=$port is not a port number (1-65535): use e.g. PORT=8081 ./build.sh serve"
    python3 - "$port" <<'PY' || die "port $port is in use on localhost (another server?): choose a free one, e.g. PORT=$((port == 65535 ? 8081 : port + 1)) ./build.sh serve"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

# Serves dist/ on localhost with application/wasm for .wasm and no caching (the page does its own caching).
serve_dist() {
    local port="${PORT:-8080}"
    [ -d "$DIST" ] || die "dist/ does not exist: run ./build.sh build first"
    check_port
    say "serving $DIST on http://localhost:$port  (Ctrl-C stops)"
    exec python3 - "$DIST" "$port" <<'PY'
import functools, http.server, os, sys

root, port = sys.argv[1], int(sys.argv[2])

class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
        ".json": "application/json", ".onnx": "application/octet-stream", ".bank": "application/octet-stream",
        ".wav": "audio/wav", ".css": "text/css", ".html": "text/html; charset=utf-8",
    }

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, fmt, *args):
        if not os.environ.get("QUIET"):
            super().log_message(fmt, *args)

http.server.ThreadingHTTPServer.allow_reuse_address = True
try:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=root))
except OSError as e:
    sys.exit(f"build.sh: cannot serve on port {port} ({e.strerror}): choose a free one, e.g. PORT={port + 1} ./build.sh serve")
print(f"http://localhost:{port}/", flush=True)
server.serve_forever()
PY
}

cmd_serve() {
    check_port
    if [ "${1:-}" != "--no-build" ]; then cmd_build; fi
    serve_dist
}

# ---- test -------------------------------------------------------------------------------------------------

RESULTS=()
FAILED=0
step() { # step NAME COMMAND...
    local name="$1"; shift
    say "test step: $name"
    echo "running: $*"
    local start=$SECONDS rc
    # A subshell outside any `if`, so that `set -e` still stops the step at its first failing command.
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        RESULTS+=("PASS  $name  ($((SECONDS - start)) s)")
    else
        RESULTS+=("FAIL  $name  ($((SECONDS - start)) s, exit $rc)")
        FAILED=$((FAILED + 1))
    fi
}

# Tests that need the real recordings and models beside the repository are marked ignored (with the reason);
# they run whenever ../shared/data is there, as on CI.
native_tests() {
    if [ -d "$ROOT/../shared/data" ]; then
        cargo test --release -- --include-ignored
    else
        echo "../shared/data is absent: the tests that need real recordings are listed as ignored"
        cargo test --release
    fi
}

# The Python package (python/, pyo3 + maturin): built and installed from this tree with the maturin pinned in
# python/requirements.txt (no build isolation: nothing is fetched), then its pytest suite, which compares scores with
# the CLI that native_tests built and runs a Dask LocalCluster.
python_tests() {
    python3 -m maturin --version >/dev/null 2>&1 \
        || { echo "maturin is not installed: python3 -m pip install -r python/requirements.txt"; return 1; }
    python3 -m pip install -q --no-build-isolation --force-reinstall --no-deps "$ROOT/python"
    (cd "$ROOT" && python3 -m pytest -q python/tests)
}

# The native side of the wasm parity test: a bank fitted natively on the demo normal clip, and the native score
# of the demo anomalous clip with it. tests/web.rs includes both and checks that wasm gives the same numbers.
native_reference() {
    local ref_dir="$TARGET_DIR/web-test"
    mkdir -p "$ref_dir"
    cargo build --release --bin sonomaly
    # The default fit (EfficientAT mn04, preset both) needs 15 s: the demo normal clip and the same clip turned
    # round by half its length (tests/web.rs fits on the same two in wasm).
    python3 - "$ROOT/www/demo/fan-normal.wav" "$ref_dir/normal-rotated.wav" <<'PY'
import sys, wave
with wave.open(sys.argv[1], "rb") as r:
    params, data = r.getparams(), r.readframes(r.getnframes())
half = (len(data) // params.sampwidth // params.nchannels // 2) * params.sampwidth * params.nchannels
with wave.open(sys.argv[2], "wb") as w:
    w.setparams(params)
    w.writeframes(data[half:] + data[:half])
PY
    "$TARGET_DIR/release/sonomaly" fit --force --out "$ref_dir/ref.bank" "$ROOT/www/demo/fan-normal.wav" \
        "$ref_dir/normal-rotated.wav"
    "$TARGET_DIR/release/sonomaly" score --include-map --bank "$ref_dir/ref.bank" "$ROOT/www/demo/fan-abnormal.wav" \
        > "$ref_dir/native-ref.json"
    # Patches from the aisfx CNN14 (conv_block2 + conv_block3), so that its direct path runs in wasm too.
    "$TARGET_DIR/release/sonomaly" fit --force --model "$ROOT/models/aisfx-cnn14" --layers conv_block2,conv_block3 \
        --out "$ref_dir/ref-cnn.bank" "$ROOT/www/demo/fan-normal.wav"
    "$TARGET_DIR/release/sonomaly" score --include-map --bank "$ref_dir/ref-cnn.bank" "$ROOT/www/demo/fan-abnormal.wav" \
        > "$ref_dir/native-ref-cnn.json"
    # A CFA bank (trained descriptor and centroids) on the log-mel member, fitted on the same two clips.
    "$TARGET_DIR/release/sonomaly" fit --force --preset machine --detector cfa --out "$ref_dir/ref-cfa.bank" \
        "$ROOT/www/demo/fan-normal.wav" "$ref_dir/normal-rotated.wav"
    "$TARGET_DIR/release/sonomaly" score --include-map --bank "$ref_dir/ref-cfa.bank" "$ROOT/www/demo/fan-abnormal.wav" \
        > "$ref_dir/native-ref-cfa.json"
    cat "$ref_dir/native-ref.json" "$ref_dir/native-ref-cnn.json" "$ref_dir/native-ref-cfa.json"
    # tests/web_decode.rs: the decoding fixtures as the native build decodes them (tests/decode_cases.rs writes
    # decode-native.json) and scores them (the CLI's lines; the two refused fixtures are left out).
    cargo test --release --test decode_cases writes_the_native_reference_for_the_wasm_test
    local fixtures=()
    for f in "$ROOT"/tests/fixtures/decode/*.{wav,flac,ogg,mp3}; do
        case "$(basename "$f")" in odd-chunk-damaged.wav|opus.ogg) ;; *) fixtures+=("$f") ;; esac
    done
    "$TARGET_DIR/release/sonomaly" score --bank "$ref_dir/ref.bank" "${fixtures[@]}" > "$ref_dir/decode-native-scores.jsonl"
    wc -l "$ref_dir/decode-native-scores.jsonl"
}

wasm_tests() {
    command -v wasm-bindgen-test-runner >/dev/null || { echo "wasm-bindgen-test-runner not found"; return 1; }
    command -v chromedriver >/dev/null || { echo "chromedriver not found"; return 1; }
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    CHROMEDRIVER="$(command -v chromedriver)" \
    WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-600}" \
        cargo test --release --target "$WASM_TARGET" --target-dir "$WASM_TARGET_DIR" --test web --test web_decode
}

e2e_tests() {
    [ -d "$ROOT/tests/e2e/node_modules/playwright-core" ] || (cd "$ROOT/tests/e2e" && npm ci --no-audit --no-fund)
    local port="${E2E_PORT:-8099}"
    PORT="$port" QUIET=1 "$ROOT/build.sh" serve --no-build > "$TARGET_DIR/e2e-server.log" 2>&1 &
    local server=$!
    local ok=0
    for _ in $(seq 1 50); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; then ok=1; break; fi
        sleep 0.2
    done
    if [ "$ok" != 1 ]; then kill "$server" 2>/dev/null || true; echo "the test server did not start"; return 1; fi
    local rc=0
    (cd "$ROOT/tests/e2e" && BASE_URL="http://localhost:$port" npm test) || rc=$?
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    return $rc
}

# ---- check ------------------------------------------------------------------------------------------------

# Both crates of the workspace, then fuzz/ (its own workspace; its targets.rs is formatted with the crate, through
# tests/fuzz_corpus.rs).
fmt_check() {
    cargo fmt --all --check
    rustfmt --check --edition 2021 "$ROOT"/fuzz/fuzz_targets/*.rs
}

clippy_native() {
    cargo clippy --workspace --all-targets -- -D warnings
}

# web.rs (the wasm-bindgen API) and the browser tests exist only for wasm32. The browser tests include the native
# reference files that `test` writes (target/web-test); on a fresh clone, before any test ran, empty stand-ins let
# them compile for the lint and are removed after it, so a later test never reads one.
clippy_wasm() {
    local ref_dir="$TARGET_DIR/web-test" made=() f rc=0
    mkdir -p "$ref_dir"
    for f in ref.bank native-ref.json ref-cnn.bank native-ref-cnn.json ref-cfa.bank native-ref-cfa.json \
        decode-native.json decode-native-scores.jsonl; do
        [ -e "$ref_dir/$f" ] || { : > "$ref_dir/$f"; made+=("$ref_dir/$f"); }
    done
    cargo clippy --target "$WASM_TARGET" --target-dir "$WASM_TARGET_DIR" --lib --test web --test web_decode \
        -- -D warnings || rc=$?
    [ "${#made[@]}" -eq 0 ] || rm -f "${made[@]}"
    return $rc
}

docs_check() {
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --target "$WASM_TARGET" --target-dir "$WASM_TARGET_DIR"
}

cmd_check() {
    command -v cargo-clippy >/dev/null && command -v rustfmt >/dev/null \
        || die "clippy or rustfmt is missing: rustup component add clippy rustfmt"
    rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET" \
        || die "the $WASM_TARGET target is missing: rustup target add $WASM_TARGET"
    step "format: cargo fmt --all --check, rustfmt --check fuzz/fuzz_targets" fmt_check
    step "lint native: cargo clippy --workspace --all-targets -- -D warnings" clippy_native
    step "lint wasm: cargo clippy --target $WASM_TARGET --lib --test web --test web_decode -- -D warnings" clippy_wasm
    step "docs: cargo doc --no-deps (native and $WASM_TARGET) with RUSTDOCFLAGS=-D warnings" docs_check
    summary
}

summary() {
    say "summary"
    printf '%s\n' "${RESULTS[@]}"
    local total=${#RESULTS[@]}
    echo "$((total - FAILED)) passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

cmd_test() {
    step "native: cargo test --release (-- --include-ignored with ../shared/data)" native_tests
    step "python: pip install ./python, pytest python/tests (Dask LocalCluster)" python_tests
    step "site: ./build.sh build (wasm32 +simd128, wasm-bindgen, wasm-opt, dist/)" cmd_build
    step "native reference for the browser test: sonomaly score on the demo clip" native_reference
    step "wasm: wasm-bindgen-test in headless Chromium (cargo test --release --target $WASM_TARGET --test web --test web_decode)" wasm_tests
    step "end-to-end: playwright-core + Chromium against dist/ (tests/e2e, node --test)" e2e_tests
    summary
}

case "${1:-build}" in
    build) cmd_build ;;
    serve) shift; cmd_serve "$@" ;;
    test) cmd_test ;;
    check) cmd_check ;;
    -h|--help|help) sed -n '2,17p' "$0" ;;
    *) die "unknown command '$1' (build | serve [--no-build] | test | check)" ;;
esac
