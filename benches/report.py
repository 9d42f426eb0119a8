#!/usr/bin/env python3
"""Turns the benchmark results in target/bench/*.json into BENCH.md (run by benches/run.sh).

    python3 benches/report.py [--out target/bench] [--write BENCH.md] [--partial]

--partial reads the results of `cargo bench --bench speed -- --only ...` and `benches/reference.py --only ...`
(native-partial.json, reference-partial.json) instead of a full run's.

Ratios are ours / theirs on the same work in the same run: below 1 means sonomaly is faster. Absolute times on
a shared 2-core machine are noise; ratios within one run are the figures to read.
"""

import argparse
import datetime
import json
import os
import platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def ms(r):
    return "—" if r is None or "median_ms" not in r else f"{r['median_ms']:.1f}"


def ratio(a, b):
    if a is None or b is None or "median_ms" not in a or "median_ms" not in b:
        return "—"
    return f"{a['median_ms'] / b['median_ms']:.2f}x"


def diff(r, key):
    v = None if r is None else r.get(key)
    return "" if v is None else f"{v:.1e}"


NATIVE_MODELS = ("aisfx", "cnn14-panns", "mn04", "mn04-f12-15")
CNN14_MODELS = ("aisfx", "cnn14-panns")

RUNTIME_LABEL = {"cnn14-winograd": "sonomaly (direct CNN14, Winograd)", "tract": "sonomaly on tract (fallback)"}


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def capped_coreset_section(get, fitscales):
    """Markdown for the capped coreset against the exact one (speed) and the fit-scaling runs of
    benches/fit_scaling.sh (`fitscales`: the fitscale.*.json contents)."""
    md = ["\n### Capped coreset against the exact greedy\n",
          "PatchCore fit with the default `max_bank_rows` (the cap): above `cap / coreset_ratio` patches the greedy "
          "runs on that many seeded random candidates, below it on all patches (then it is the exact selection; "
          "the `same bank` column checks it). The reference is anomalib's greedy in numpy on the same candidates "
          "(1 thread, the 896-dimensional cases timed on their first 1000 centres); its total is projection + "
          "per-centre time x coreset. Seeded Gaussian clusters, one run each.\n"]
    rows = []
    for n in (100_000, 1_000_000):
        for d in (10, 896):
            for sel in ("exact", "capped"):
                if sel == "exact":
                    ours = get(f"coreset.d{d}.sonomaly") if n == 100_000 else get(f"coreset.exact.n{n}.d{d}.sonomaly")
                    ref_ = get(f"coreset.d{d}.numpy.1t") if n == 100_000 else None
                else:
                    ours = get(f"coreset.capped.n{n}.d{d}.sonomaly")
                    ref_ = get(f"coreset.capped.n{n}.d{d}.numpy.1t") or (
                        get(f"coreset.d{d}.numpy.1t") if ours and ours.get("candidates") == n else None)
                if ours is None:
                    continue
                total_ref = None
                if ref_:
                    total_ref = ref_["projection_ms"] + ref_["per_centre_ms"] * ours["coreset"]
                same = ours.get("same_bank_as_exact")
                rows.append([f"{n:,} x {d}", sel, ours["candidates"], ours["projected_dims"], ours["coreset"],
                             ours["threads"], f"{ours['median_ms'] / 1e3:.1f} s",
                             "—" if total_ref is None else f"{total_ref / 1e3:.1f} s",
                             "—" if total_ref is None else f"{ours['median_ms'] / total_ref:.2f}x",
                             "" if same is None else ("yes" if same else "**no**")])
    md.append(table(["patches", "selection", "candidates", "projected dims", "bank rows", "threads", "sonomaly",
                     "reference (est.)", "ratio", "same bank as exact"], rows))
    for fs in fitscales:
        runs = fs["runs"]
        md.append(f"\n`sonomaly fit` {('`' + fs['args'] + '`') if fs['args'] else '(default settings)'} on the MIMII fan "
                  "clips rotated in time (`benches/fit_scaling.sh`): wall time and peak resident memory from "
                  "`/usr/bin/time -v`; the coreset time is the sum of every PatchCore fit's selection "
                  "(`SONOMALY_CORESET_LOG=1`: one per calibration fold and the final one), the rest is decoding, "
                  "front end, patches, calibration scoring and writing.\n")
        rows = []
        for r in runs:
            rows.append([f"{r['clips']} ({r['audio_s'] / 60:.1f} min)", f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}",
                         f"{r['coreset_seconds']:.1f} ({r['coresets']} selections)",
                         f"{r['seconds'] - r['coreset_seconds']:.1f}", f"{r['peak_rss_kib'] / 1024:.0f}",
                         r["final_patches"], r["final_candidates"], r["memory_bank"]])
        md.append(table(["clips (audio)", "fit s (wall)", "CPU s (user + sys)", "coreset s (wall)", "rest s (wall)",
                         "peak RSS MiB", "patches (final fit)",
                         "candidates", "memory bank"], rows))
        t = {r["clips"]: r["seconds"] for r in runs}
        if 90 in t and 360 in t:
            md.append(f"\nFit time 360 clips / 90 clips: {t[360] / t[90]:.2f} (linear: 4; target <= 5); "
                      f"1 hour fitted in {t[360]:.0f} s (target <= 60 s).")
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--write", help="write the report here (default: print it)")
    ap.add_argument("--partial", action="store_true", help="read native-partial.json and reference-partial.json")
    ap.add_argument("--coreset-section", action="store_true",
                    help="print only the capped-coreset section, from native-partial.json, reference-partial.json "
                         "and fitscale.*.json (cargo bench --bench speed -- --only coreset, reference.py "
                         "--only coreset, benches/fit_scaling.sh)")
    a = ap.parse_args()
    fitscales = [load(os.path.join(a.out, f)) for f in sorted(os.listdir(a.out))
                 if f.startswith("fitscale.") and f.endswith(".json") and f.count(".") == 2] if os.path.isdir(a.out) else []
    fitscales.sort(key=lambda f: f["tag"] != "default")
    if a.coreset_section:
        recs = {r["id"]: r for f in ("native-partial.json", "reference-partial.json")
                for r in (load(os.path.join(a.out, f)) or {"records": []})["records"]}
        print("\n".join(capped_coreset_section(recs.get, fitscales)))
        return
    suffix = "-partial" if a.partial else ""
    native = load(os.path.join(a.out, f"native{suffix}.json")) or {"records": []}
    ref = load(os.path.join(a.out, f"reference{suffix}.json")) or {"records": []}
    browser = load(os.path.join(a.out, "browser.json")) or {"records": []}
    fit = load(os.path.join(a.out, "fit100.json"))
    fit_info = load(os.path.join(a.out, "fit100.info.json"))
    if not native["records"] and not ref["records"]:
        raise SystemExit(f"report.py: no results in {a.out} (native.json and reference.json are missing): "
                         "run benches/run.sh")
    rec = {r["id"]: r for r in native["records"] + ref["records"] + browser["records"]}
    get = rec.get
    targets = []
    busy = []  # models whose onnxruntime 2-thread run was barely faster than 1 thread: the machine was busy
    md = []
    quick = min([d.get("reps", 10) for d in (native, ref, browser) if d.get("records")] or [10]) < 5
    md.append("# Speed, side by side\n")
    md.append(
        "Made by `benches/run.sh` (one command: installs the reference tools, builds, runs everything below in one go "
        "and writes this file). {}Medians of {} runs after warm-up runs ({}coreset and fit: one run); ratios are "
        "**sonomaly / reference on the same work in one run of the script** (below 1: sonomaly is faster). The "
        "machine is shared and noisy: read the ratios, not the milliseconds. Native sonomaly and the Python "
        "references run one after the other, minutes apart{}.\n".format(
            "**Quick run (3 repetitions): a smoke test, not figures to quote.** " if quick else "",
            native.get("reps", "?"),
            "the page rows: 3 cold runs; " if browser["records"] else "",
            "; the browser cases are interleaved round by round, so their ratios are the steadier ones"
            if browser["records"] else ""))
    md.append("- Report written: {}; CPU: {} ({} threads available); Python {}, numpy {}".format(
        datetime.date.today().isoformat(), native.get("cpu", "?"), native.get("threads_available", "?"),
        ref.get("python", "?"), ref.get("numpy", "?")))
    versions = []
    for key, label in (("backbone.aisfx.onnxruntime.whole-1t", "onnxruntime"), ("knn.demo.faiss.1t", "faiss-cpu"),
                       ("spectrogram.aisfx.librosa", "librosa")):
        if get(key):
            versions.append(f"{label} {get(key).get('version')}")
    if browser.get("ort_web_version"):
        versions.append(f"onnxruntime-web {browser['ort_web_version']}")
    if browser.get("chromium"):
        versions.append(f"Chromium {browser['chromium']}")
    md.append("- References: " + ", ".join(versions))
    md.append("- Input: `www/demo/fan-normal.wav` (10 s, MIMII fan) resampled to each front end's rate; models "
              "`models/aisfx-cnn14` (the default, 431 x 96 log-mel for 10 s) and a CNN14 in the PANNs layout with "
              "random weights (`models/convert_cnn14.py --synthetic`, 1001 x 64), all four conv_block outputs; "
              "EfficientAT `models/efficientat-mn04` (128 x 1000), all 17 blocks (`mn04`) and the two a PatchCore "
              "bank on it uses, features.12 + features.15 (`mn04-f12-15`; tract prunes the rest).\n")

    # Backbone, native
    md.append("## 1. Backbone, native (CPU)\n")
    sgemm1, sgemm2 = get("sgemm.numpy.1t"), get("sgemm.numpy.2t")
    peak = {1: sgemm1["gflops"] if sgemm1 else None, 2: sgemm2["gflops"] if sgemm2 else None}
    rows = []
    for model in NATIVE_MODELS:
        flops = get(f"flops.{model}")
        gflop = 2 * flops["conv_macs"] / 1e9 if flops else None
        for threads in (1, 2):
            ort = get(f"backbone.{model}.onnxruntime.whole-{threads}t")
            for impl, key in (("sonomaly", "sonomaly.whole"), ("tract 0.23", "tract.whole"),
                              ("onnxruntime", "onnxruntime.whole")):
                r = get(f"backbone.{model}.{key}-{threads}t")
                if r is None:
                    continue
                label = RUNTIME_LABEL.get(r.get("runtime"), impl) if impl == "sonomaly" else impl
                rate = gflop / (r["median_ms"] / 1e3) if gflop else None
                rows.append([model, threads, label, ms(r), ratio(r, ort),
                             "—" if rate is None else f"{rate:.0f}",
                             "—" if rate is None or not peak[threads] else f"{100 * rate / peak[threads]:.0f} %",
                             diff(r, "max_abs_diff") or diff(r, "max_abs_diff_vs_tract")])
            ours = get(f"backbone.{model}.sonomaly.whole-{threads}t")
            if ours and ort:
                targets.append((f"native backbone, {model}, {threads} thread(s): <= 1.2x onnxruntime",
                                ours["median_ms"] / ort["median_ms"], 1.2))
        ort1, ort2 = get(f"backbone.{model}.onnxruntime.whole-1t"), get(f"backbone.{model}.onnxruntime.whole-2t")
        if ort1 and ort2 and ort2["median_ms"] > 0.8 * ort1["median_ms"]:
            busy.append(model)
    md.append(table(["model", "threads", "runtime", "ms / 10 s clip", "vs onnxruntime", "GFLOP/s (equivalent)",
                     "of numpy sgemm", "max abs diff vs tract (sonomaly row) or vs sonomaly"], rows))
    if busy:
        md.append("\n**Warning:** onnxruntime on 2 threads was less than 1.25x faster than on 1 thread for {}: the "
                  "machine was busy during this run and its 2-thread rows are unreliable.".format(", ".join(busy)))
    md.append("\nGFLOP/s counts the direct convolution's multiply-adds x 2 for everyone (Winograd does fewer "
              "multiplications, so sonomaly's figure is an equivalent rate). The reference rate is numpy (OpenBLAS) "
              "float32 2048^3 measured in this run, {} GFLOP/s on 1 thread, {} on 2: a well-tuned library's matrix "
              "product, not the hardware's peak (onnxruntime's direct convolution kernels pass it).".format(
                  "—" if not peak[1] else f"{peak[1]:.0f}", "—" if not peak[2] else f"{peak[2]:.0f}"))
    rows = []
    for model in NATIVE_MODELS:
        for threads in (1, 2):
            r = get(f"backbone.{model}.sonomaly.windows-{threads}t")
            w = get(f"backbone.{model}.sonomaly.whole-{threads}t")
            o = get(f"backbone.{model}.onnxruntime.windows-{threads}t")
            if r:
                rows.append([model, threads, f"{r['windows']} x {r['window_frames']} frames (hop {r['window_hop']})",
                             ms(r), f"{r['median_ms'] / r['windows']:.2f}", ratio(r, w), ms(o), ratio(r, o)])
    md.append("\nWhat the pipeline runs: windows of the spec's length every hop frames, the last one aligned to the "
              "end (each frame is judged in the window whose centre is nearest, so the windows overlap by half). "
              "onnxruntime runs the same windows one by one (sonomaly: in batches of 4):\n")
    md.append(table(["model", "threads", "windows per 10 s", "ms / 10 s clip", "ms / window", "vs whole input",
                     "onnxruntime ms / 10 s clip", "vs onnxruntime"], rows))

    # FLOPs per second of audio
    md.append("\n## 2. FLOPs per second of audio\n")
    rows = []
    for model in NATIVE_MODELS:
        f = get(f"flops.{model}")
        win = get(f"backbone.{model}.sonomaly.windows-1t")
        if not f:
            continue
        per_s = 2 * f["conv_macs"] / f["seconds_of_audio"] / 1e9
        frames = win["frames"] if win else f["input_shape"][2]
        overlap = (win["windows"] * win["window_frames"] / frames) if win else None
        cin1 = 2 * f.get("conv_macs_one_input_channel", 0) / f["seconds_of_audio"] / 1e9
        rows.append([model, f"{f['input_shape']}", f"{per_s:.2f}",
                     "—" if overlap is None else f"{per_s * overlap:.2f} ({overlap:.2f}x)",
                     f"{(per_s - cin1) / 2.25 + cin1:.2f}" if model in CNN14_MODELS else "— (tract, no Winograd)"])
    md.append(table(["model", "input for 10 s", "GFLOP per s of audio (whole input)",
                     "with the pipeline's windows", "GFLOP per s of audio sonomaly does (Winograd)"],
                    rows))
    md.append("\nGFLOP = multiply-adds x 2. The last column: the 3x3 convolutions with more than one input channel "
              "at 1/2.25 of their multiply-adds (Winograd F(2x2, 3x3)), the first convolution (one input channel) "
              "direct; whole input, transforms and the padding of odd sizes not counted.")
    mm = get("sgemm.matrixmultiply.1t")
    if mm:
        md.append(f"\nThe matrix products sonomaly uses (matrixmultiply, float32 1024^3, 1 thread): "
                  f"{mm['gflops']:.0f} GFLOP/s, against numpy's {peak[1]:.0f} GFLOP/s on 1 thread (2048^3)."
                  if peak[1] else "")

    # Browser backbone
    md.append("\n## 3. Backbone in the browser (headless Chromium, wasm)\n")
    rows = []
    for model in ("aisfx", "cnn14-panns"):
        ort1 = get(f"browser.backbone.{model}.ort-web.plain-1t")
        ort2 = get(f"browser.backbone.{model}.ort-web.isolated-2t")
        whole = get(f"browser.backbone.{model}.sonomaly.whole")
        for key, label, same in (("sonomaly.whole", "sonomaly, whole input, 1 thread", True),
                                 ("sonomaly.tract-whole", "tract 0.23 (wasm), whole input, 1 thread", True),
                                 ("sonomaly.windows", "sonomaly, the pipeline's windows (batches of 4), 1 worker", False),
                                 ("sonomaly.windows-2workers", "sonomaly, the pipeline's windows, 2 workers", False),
                                 ("ort-web.plain-1t", "onnxruntime-web, plain page, 1 thread", True),
                                 ("ort-web.isolated-2t", "onnxruntime-web, isolated page, 2 threads", True)):
            r = get(f"browser.backbone.{model}.{key}")
            if r is None:
                continue
            if "median_ms" not in r:
                rows.append([model, label, "skipped: " + str(r.get("skipped") or r.get("error")), "", "", "", ""])
                continue
            if key == "sonomaly.whole" and r.get("runtime") == "tract":
                label += " (on tract)"
            rows.append([model, label, ms(r), ratio(r, ort1) if same else "—", ratio(r, ort2) if same else "—",
                         ratio(r, whole), diff(r, "max_abs_diff_vs_sonomaly")])
        ours = whole
        if ours and ort1 and "median_ms" in ort1 and "median_ms" in ours:
            targets.append((f"wasm backbone, {model}: <= 1.0x onnxruntime-web, 1 thread",
                            ours["median_ms"] / ort1["median_ms"], 1.0))
            targets.append((f"wasm backbone, {model}: goal <= 0.5x onnxruntime-web, 1 thread",
                            ours["median_ms"] / ort1["median_ms"], 0.5))
        if ours and ort2 and "median_ms" in ort2 and "median_ms" in ours:
            targets.append((f"wasm backbone, {model}: vs onnxruntime-web, 2 threads on an isolated page (no target)",
                            ours["median_ms"] / ort2["median_ms"], None))
    md.append(table(["model", "runtime", "ms / 10 s clip", "vs ort-web 1 thread", "vs ort-web 2 threads",
                     "vs sonomaly whole", "max abs diff vs sonomaly"], rows)
              if rows else "(no browser results: run without --no-browser)")
    if rows:
        md.append("\nThe window rows are not the same work as the others (the windows overlap by half: about 1.9x the "
                  "input), so they are compared with sonomaly's whole-input row only.")

    # Whole pipeline, native and in the browser
    md.append("\n## 4. Whole pipeline: a 10 s clip scored, native and in the browser\n")
    rows = []
    banks = (("default", "default bank (mn04_as: log-mel + features.12,15 members, fused; the network runs)"),
             ("v1", "previous default (format 1: log-mel patches, aisfx front end; no network)"),
             ("cnn", "aisfx conv_block2,3,4 bank (the CNN14 runs)"))
    for name, label in banks:
        for threads in (1, 2):
            r = get(f"pipeline.{name}.score-10s-{threads}t")
            if r and "median_ms" in r:
                speed = r.get("rtf", 10000 / r["median_ms"])
                rows.append([f"native, {threads} thread(s): {label}", ms(r), f"{speed:.1f}"])
                if name == "default":
                    targets.append((f"native, default bank, {threads} thread(s): >= 100x real time", speed, ">=100"))
        r = get(f"browser.pipeline.{name}.score-10s")
        if r and "median_ms" in r:
            speed = r.get("rtf", 10000 / r["median_ms"])
            rows.append([f"browser (wasm), 1 thread: {label}", ms(r), f"{speed:.1f}"])
            if name == "default":
                targets.append(("browser, default bank, one worker: >= 20x real time", speed, ">=20"))
            elif name == "cnn":
                targets.append(("browser, conv_block2,3,4 bank: >= 10x real time", speed, ">=10"))
    md.append(table(["what", "ms", "x real time (audio s / compute s)"], rows) if rows else "(no pipeline results)")
    if rows:
        md.append("\nThe clip is the demo's anomalous fan clip (`www/demo/fan-abnormal.wav`, 10 s), scored with "
                  "`score_clip` natively (a rayon pool of 1 or 2 threads) and `Engine.scoreClip` in the browser (one "
                  "thread, as in the page's worker): resampling, front end, backbone windows, patch embeddings, "
                  "PatchCore, anomaly maps, fusion, segments; each bank with the model it was fitted with.")
    size = get("browser.wasm.size")
    if size:
        line = f"\nwasm download: {size['bytes'] / 1e6:.1f} MB ({size['gzip_bytes'] / 1e6:.1f} MB gzip -9)"
        osize = get("browser.ortweb.size")
        if osize:
            line += (f"; onnxruntime-web's wasm files: {osize.get('bytes', 0) / 1e6:.1f} MB "
                     f"({osize.get('gzip_bytes', 0) / 1e6:.1f} MB gzip -9).")
        md.append(line)

    # kNN
    md.append("\n## 5. PatchCore nearest neighbours, coreset, fit\n")
    rows = []
    for name, label in (("demo", "demo bank (default embedding)"), ("cnn", "CNN-sized (synthetic clusters)")):
        for threads in (1, 2):
            ours, fa = get(f"knn.{name}.sonomaly.{threads}t"), get(f"knn.{name}.faiss.{threads}t")
            if ours is None:
                continue
            rows.append([label, f"{ours['bank_rows']} x {ours['dims']}", ours["queries"], threads, ms(ours), ms(fa),
                         ratio(ours, fa), diff(fa, "max_abs_diff")])
            if fa:
                targets.append((f"kNN, {label}, {threads} thread(s): <= 1.5x faiss", ours["median_ms"] / fa["median_ms"],
                                1.5))
    md.append(table(["bank", "rows x dims", "queries", "threads", "sonomaly ms", "faiss IndexFlatL2 ms", "ratio",
                     "max distance diff"], rows))
    rows = []
    for d in (10, 896):
        ours, ref_ = get(f"coreset.d{d}.sonomaly"), get(f"coreset.d{d}.numpy.1t")
        if ours is None:
            continue
        per_ours = ours["median_ms"] / ours["coreset"]
        per_ref = ref_["per_centre_ms"] if ref_ else None
        rows.append([f"100,000 x {d}", ours["projected_dims"], ours["coreset"], ours["threads"],
                     f"{ours['median_ms'] / 1e3:.1f} s", f"{per_ours:.2f}",
                     "—" if per_ref is None else f"{per_ref:.2f} ({ref_['centres_timed']} centres)",
                     "—" if per_ref is None else f"{per_ours / per_ref:.2f}x"])
    md.append("\nCoreset selection (PatchCore fit: sparse random projection, then greedy k-center, ratio 0.1). "
              "sonomaly's time per centre includes its projection; the reference (anomalib's algorithm in numpy and "
              "scikit-learn, not torch; 1 thread) excludes it:\n")
    md.append(table(["patches", "projected dims", "coreset", "sonomaly threads", "sonomaly total",
                     "sonomaly ms / centre", "reference ms / centre", "ratio"], rows))
    if get("coreset.capped.n1000000.d10.sonomaly") or fitscales:
        md += capped_coreset_section(get, fitscales)
    if fit:
        info = fit_info or {}
        bank = info.get("memory_bank", "?")
        try:
            patches = int(bank.split(" x ")[0]) * 10  # coreset ratio 0.1
            rate = f"{patches / fit['seconds']:.0f} patches/s (patches = 10 x memory-bank rows)"
        except (ValueError, AttributeError):
            rate = "?"
        md.append(f"\nFit on {fit['clips']} distinct clips of 10 s (`sonomaly fit`, default embedding, threshold "
                  f"calibration included; {info.get('clips_fitted', '?')} clips fitted): "
                  f"{fit['seconds']:.1f} s, about {rate}, peak memory {fit['peak_rss_kib'] / 1024:.0f} MiB; "
                  f"memory bank {bank}.")

    # Spectrogram
    md.append("\n## 6. Log-mel spectrogram\n")
    rows = []
    for key, label, ref_impl in (("aisfx", "aisfx (44.1 kHz, 2048/1024, 96 mels)", "librosa"),
                                 ("panns", "PANNs CNN14 (32 kHz, 1024/320, 64 mels)", "librosa"),
                                 ("efficientat", "EfficientAT (32 kHz, pre-emphasis, 800 in 1024 / 320, 128 Kaldi mels)",
                                  "numpy")):
        ours, lib = get(f"spectrogram.{key}.sonomaly"), get(f"spectrogram.{key}.{ref_impl}")
        if ours:
            rows.append([label, ms(ours), f"{ms(lib)} ({ref_impl})" if lib else "—", ratio(ours, lib),
                         diff(lib, "max_abs_diff")])
    md.append(table(["preset", "sonomaly ms", "reference ms", "ratio", "max abs diff"], rows))

    # Targets
    md.append("\n## Targets\n")
    rows = []
    if not browser["records"]:
        for what in ("wasm backbone: <= 1.0x onnxruntime-web, 1 thread (goal 0.5x)",
                     "browser, default bank, one worker: >= 20x real time"):
            targets.append((what, None, "not measured"))
    for what, value, limit in targets:
        if limit == "not measured":
            rows.append([what, "—", "not measured (--no-browser)"])
        elif limit is None:
            rows.append([what, f"{value:.2f}x", "—"])
        elif isinstance(limit, str) and limit.startswith(">="):
            floor = float(limit[2:])
            rows.append([what, f"{value:.1f}x", "met" if value >= floor else "**not met**"])
        else:
            rows.append([what, f"{value:.2f}x", "met" if value <= limit else "**not met**"])
    md.append(table(["target", "measured", ""], rows))
    md.append("")
    text = "\n".join(md) + "\n"
    if a.write:
        with open(a.write, "w") as fh:
            fh.write(text)
        print("wrote", a.write)
    else:
        print(text)


if __name__ == "__main__":
    main()
