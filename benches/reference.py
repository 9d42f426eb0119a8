#!/usr/bin/env python3
"""The reference tools on the same work as `benches/speed.rs`, for the side-by-side table in BENCH.md.

    python3 benches/reference.py [--out target/bench] [--reps 10] [--quick] [--only GROUP,...]

Reads `<out>/inputs.safetensors` and `<out>/outputs.safetensors` (written by `cargo bench --bench speed`) and
writes `<out>/reference.json`: the same record layout as `native.json` (median and minimum of `--reps` runs after
warm-up runs, milliseconds), plus sameness checks against sonomaly's results. Measured:

- `spectrogram.*.librosa`: librosa 0.11 log-mel of the same resampled clip, as `tests/reference/spectrogram_ref.py`
  defines each preset (aisfx, PANNs CNN14), BLAS limited to one thread; `spectrogram.efficientat.numpy`: the numpy
  EfficientAT front end of `tests/reference/efficientat_frontend_ref.py` (float64 FFT, one thread).
- `backbone.<model>.onnxruntime.whole-{1,2}t`: onnxruntime (CPU execution provider, all graph optimisations,
  intra-op threads 1 and 2, sequential execution) on the same ONNX file and the same log-mel tensor, the outputs
  sonomaly computes (all of them; `mn04-f12-15`: features.12 and features.15); `max_abs_diff` against sonomaly's
  outputs. `backbone.<model>.onnxruntime.windows-{1,2}t`: the same session on the windows the pipeline runs (the
  spec's window every hop frames, the last one aligned to the end), one run per window.
- `knn.*.faiss.{1,2}t`: faiss-cpu `IndexFlatL2` (exact search, k = 1) on the same bank and queries; `max_abs_diff`
  of the distances against sonomaly's.
- `coreset.*.numpy`: anomalib's PatchCore coreset (scikit-learn `SparseRandomProjection(eps=0.9)` when it lowers
  the dimension, then the greedy k-center loop of `anomalib.models.image.patchcore.KCenterGreedy`, in numpy rather
  than torch) on the same patches, one thread; `coreset.capped.*.numpy`: the same greedy on the candidates of
  sonomaly's capped selection (the random subset it drew), with the cap as the coreset size. 896-dimensional
  cases run the first 1000 centres only; the time per centre excludes the projection (timed on its own).
  `--coreset-only` runs these rows alone on the files of `cargo bench --bench speed -- --only coreset`.
- `sgemm.numpy.{1,2}t`: numpy (OpenBLAS) float32 2048^3 matrix product: the machine's measured sgemm peak.
- `flops.<model>`: multiply-adds of the convolutions each model runs for the 10 s input (those the outputs need,
  from ONNX shape inference; grouped convolutions counted per group), and of those with one input channel (which
  sonomaly's CNN14 path computes directly, not by Winograd).
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import efficientat_frontend_ref  # noqa: E402
import spectrogram_ref  # noqa: E402

MN04 = os.path.join(ROOT, "models", "efficientat-mn04")
# model key -> (folder, outputs or None for all the spec lists, input tensor in inputs.safetensors)
MODELS = {
    "aisfx": (os.path.join(ROOT, "models", "aisfx-cnn14"), None, "logmel_aisfx"),
    "cnn14-panns": (None, None, "logmel_panns"),
    "mn04": (MN04, None, "logmel_efficientat"),
    "mn04-f12-15": (MN04, ["features.12", "features.15"], "logmel_efficientat"),
}


def measure(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    s = sorted(times)
    return {"median_ms": s[len(s) // 2], "min_ms": s[0], "reps": reps, "times_ms": times}


def record(records, rid, timing, **extra):
    r = {"id": rid, **timing, **extra}
    print(f"{rid:<48} {r['median_ms']:>10.2f} ms (min {r['min_ms']:.2f})", flush=True)
    records.append(r)


def window_starts(t, w, hop):
    """As the pipeline cuts them: every `hop` frames, the last window aligned to the end."""
    if t <= w:
        return [0]
    s = list(range(0, t - w, hop))
    return s + [t - w]


def conv_macs(onnx_path, input_shape, outputs):
    """Multiply-adds of the Conv nodes the `outputs` need for the given input shape: all of them, and those with one
    input channel."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(onnx_path)
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    needed, todo = set(), list(outputs)
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in needed:
            needed.add(i)
            todo.extend(nodes[i].input)
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape):
        d.ClearField("dim_param")
        d.dim_value = v
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:  # weights stored as float16 + Cast
        if node.op_type == "Cast" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    macs = macs_cin1 = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Conv" and i in needed:
            w = inits[node.input[1]]
            # The batch (1) is lost by shape inference behind mn04's Shape -> Concat -> Reshape; the rest is known.
            out = [shapes[node.output[0]][0] or 1] + shapes[node.output[0]][1:]
            assert all(out), (node.output[0], out)
            n = int(np.prod(out)) * w[1] * w[2] * w[3]
            macs += n
            macs_cin1 += n if w[1] == 1 else 0
    return macs, macs_cin1


def load_json(path):
    with open(path) as fh:
        return json.load(fh)


def coreset_rows(inputs, ours_native, records):
    """anomalib's KCenterGreedy on the same patches as sonomaly's exact coreset rows, and on the candidates of its
    capped selection (the same greedy on the random subset sonomaly drew; the cap is the coreset size there)."""
    from sklearn.random_projection import SparseRandomProjection, johnson_lindenstrauss_min_dim

    for key in sorted(k for k in inputs if k.startswith("coreset.") or k.startswith("coreset_capped.")):
        x = inputs[key]
        n, d = x.shape
        if key.startswith("coreset_capped."):
            _, tag, dtag, _ = key.split(".")
            cap = next(r["coreset"] for r in ours_native["records"] if r["id"] == f"coreset.capped.{tag}.{dtag}.sonomaly")
            size, rid = cap, f"coreset.capped.{tag}.{dtag}.numpy.1t"
        else:
            size, rid = int(n * 0.1), f"{key.rsplit('.', 1)[0]}.numpy.1t"
        limit = size if d < 100 else 1000

        k = johnson_lindenstrauss_min_dim(n, eps=0.9)
        t0 = time.perf_counter()
        f = SparseRandomProjection(eps=0.9, random_state=0).fit_transform(x).astype(np.float32) if k < d else x
        projection_ms = (time.perf_counter() - t0) * 1e3

        def greedy():
            # anomalib KCenterGreedy.select_coreset_idxs: min distance to the chosen set, take the farthest
            min_d = None
            idx = 0
            chosen = []
            for _ in range(limit):
                dist = np.linalg.norm(f - f[idx], axis=1)
                min_d = dist if min_d is None else np.minimum(min_d, dist)
                idx = int(np.argmax(min_d))
                min_d[idx] = 0
                chosen.append(idx)
            return chosen

        t = measure(greedy, 1, 0)
        record(records, rid, t, group="coreset", impl="numpy + scikit-learn",
               threads=1, patches=n, dims=d, projected_dims=int(k if k < d else d), coreset=size,
               centres_timed=limit, projection_ms=projection_ms, per_centre_ms=t["median_ms"] / limit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3 reps, 1 warm-up")
    ap.add_argument("--only", help="comma-separated groups (spectrogram, backbone, knn, coreset, sgemm): reads the "
                    "*-partial files of `cargo bench --bench speed -- --only ...` and writes reference-partial.json")
    ap.add_argument("--coreset-only", action="store_true", help="the same as --only coreset")
    a = ap.parse_args()
    if a.coreset_only:
        a.only = "coreset"
    reps, warmup = (3, 1) if a.quick else (a.reps, 2)
    groups = ("spectrogram", "backbone", "knn", "coreset", "sgemm")
    only = a.only.split(",") if a.only else list(groups)
    unknown = [g for g in only if g not in groups]
    if unknown:
        raise SystemExit(f"reference.py: --only: unknown group(s) {unknown} (known: {', '.join(groups)})")
    wants = only.__contains__
    suffix = "-partial" if a.only else ""
    MODELS["cnn14-panns"] = (os.path.join(a.out, "cnn14-panns"), None, "logmel_panns")
    for name in (f"inputs{suffix}.safetensors", f"outputs{suffix}.safetensors"):
        if not os.path.exists(os.path.join(a.out, name)):
            raise SystemExit(f"reference.py: {os.path.join(a.out, name)} is missing: run `cargo bench --bench speed "
                             f"-- --out {a.out}{' --only ' + a.only if a.only else ''}` first (benches/run.sh does)")
    inputs = load_file(os.path.join(a.out, f"inputs{suffix}.safetensors"))
    ours = load_file(os.path.join(a.out, f"outputs{suffix}.safetensors"))
    records = []
    from threadpoolctl import threadpool_limits

    if wants("spectrogram"):
        import librosa

        for key, preset in (("aisfx", "aisfx"), ("panns", "panns-cnn14")):
            y = inputs[f"audio_{key}"]
            ref = spectrogram_ref.logmel(preset, y)
            diff = float(np.abs(ref - inputs[f"logmel_{key}"][0, 0]).max())
            with threadpool_limits(limits=1):  # one thread, as sonomaly's front end
                t = measure(lambda: spectrogram_ref.logmel(preset, y), reps, warmup)
            record(records, f"spectrogram.{key}.librosa", t, group="spectrogram", impl="librosa",
                   version=librosa.__version__, threads=1, max_abs_diff=diff)
        y = inputs["audio_efficientat"]
        ref = efficientat_frontend_ref.numpy_frontend(y)
        diff = float(np.abs(ref.T - inputs["logmel_efficientat"][0, 0]).max())
        with threadpool_limits(limits=1):
            t = measure(lambda: efficientat_frontend_ref.numpy_frontend(y), reps, warmup)
        record(records, "spectrogram.efficientat.numpy", t, group="spectrogram", impl="numpy", version=np.__version__,
               threads=1, max_abs_diff=diff)

    if wants("backbone"):
        import onnxruntime as ort

        for model, (folder, only, input_key) in MODELS.items():
            onnx_path = os.path.join(folder, "model.onnx")
            if not os.path.exists(onnx_path):
                print(f"backbone.{model}: skipped, {onnx_path} is missing")
                continue
            spec = json.load(open(os.path.join(folder, "spec.json")))
            x = inputs[input_key]
            names = only or [o["name"] for o in spec["outputs"]]
            time_axis = 3 if spec["layout"] == "ncft" else 2
            frames = int(x.shape[time_axis])
            macs, macs_cin1 = conv_macs(onnx_path, list(x.shape), names)
            records.append({"id": f"flops.{model}", "group": "flops", "model": model, "input_shape": list(x.shape),
                            "conv_macs": macs, "conv_macs_one_input_channel": macs_cin1, "seconds_of_audio": 10.0,
                            "window_frames": spec["window_frames"],
                            "window_hop": spec["window_hop"]})
            print(f"flops.{model}: {2 * macs / 1e9:.1f} GFLOP for the 10 s input {list(x.shape)}")
            for threads in (1, 2):
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
                so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
                feed = {spec["input_name"]: x}
                outs = sess.run(names, feed)
                diff = max(float(np.abs(o - ours[f"{model}.{n}"]).max()) for o, n in zip(outs, names))
                record(records, f"backbone.{model}.onnxruntime.whole-{threads}t",
                       measure(lambda: sess.run(names, feed), reps, warmup), group="backbone", impl="onnxruntime",
                       version=ort.__version__, model=model, threads=threads, frames=frames, max_abs_diff=diff)
                w, hop = spec["window_frames"], spec["window_hop"]
                starts = window_starts(frames, w, hop)
                feeds = [{spec["input_name"]: np.ascontiguousarray(np.take(x, range(s, s + w), axis=time_axis))}
                         for s in starts]

                def windows():
                    for f in feeds:
                        sess.run(names, f)

                record(records, f"backbone.{model}.onnxruntime.windows-{threads}t", measure(windows, reps, warmup),
                       group="backbone", impl="onnxruntime", version=ort.__version__, model=model, threads=threads,
                       frames=frames, window_frames=w, window_hop=hop, windows=len(starts))

    if wants("knn"):
        import faiss

        for name in ("demo", "cnn"):
            bank, queries = inputs[f"knn.{name}.bank"], inputs[f"knn.{name}.queries"]
            index = faiss.IndexFlatL2(bank.shape[1])
            index.add(bank)
            d2, _ = index.search(queries, 1)
            diff = float(np.abs(np.sqrt(np.maximum(d2[:, 0], 0)) - ours[f"knn.{name}.distance"]).max())
            for threads in (1, 2):
                faiss.omp_set_num_threads(threads)
                record(records, f"knn.{name}.faiss.{threads}t", measure(lambda: index.search(queries, 1), reps, warmup),
                       group="knn", impl="faiss", version=faiss.__version__, threads=threads, bank_rows=bank.shape[0],
                       dims=bank.shape[1], queries=queries.shape[0], max_abs_diff=diff)

    if wants("coreset"):
        coreset_rows(inputs, load_json(os.path.join(a.out, f"native{suffix}.json")), records)

    if wants("sgemm"):
        m = 2048
        g = np.random.default_rng(0)
        A = g.standard_normal((m, m), dtype=np.float32)
        B = g.standard_normal((m, m), dtype=np.float32)
        for threads in (1, 2):
            with threadpool_limits(limits=threads):
                t = measure(lambda: A @ B, reps, warmup)
            record(records, f"sgemm.numpy.{threads}t", t, group="sgemm", impl="numpy", threads=threads, n=m,
                   gflops=2 * m**3 / (t["median_ms"] * 1e6))

    out = {"records": records, "python": platform.python_version(), "numpy": np.__version__}
    with open(os.path.join(a.out, f"reference{suffix}.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    print("wrote", os.path.join(a.out, f"reference{suffix}.json"))


if __name__ == "__main__":
    main()
