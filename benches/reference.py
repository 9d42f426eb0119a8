#!/usr/bin/env python3
"""The reference tools on the same work as `benches/speed.rs`, for the side-by-side table in BENCH.md.

    python3 benches/reference.py [--out target/bench] [--reps 10] [--quick]

Reads `<out>/inputs.safetensors` and `<out>/outputs.safetensors` (written by `cargo bench --bench speed`) and
writes `<out>/reference.json`: the same record layout as `native.json` (median and minimum of `--reps` runs after
warm-up runs, milliseconds), plus sameness checks against sonomaly's results. Measured:

- `spectrogram.*.librosa`: librosa 0.11 log-mel of the same resampled clip, as `tests/reference/spectrogram_ref.py`
  defines each preset (aisfx, PANNs CNN14), BLAS limited to one thread.
- `backbone.<model>.onnxruntime.whole-{1,2}t`: onnxruntime (CPU execution provider, all graph optimisations,
  intra-op threads 1 and 2, sequential execution) on the same ONNX file and the same log-mel tensor, all outputs;
  `max_abs_diff` against sonomaly's outputs.
- `knn.*.faiss.{1,2}t`: faiss-cpu `IndexFlatL2` (exact search, k = 1) on the same bank and queries; `max_abs_diff`
  of the distances against sonomaly's.
- `coreset.*.numpy`: anomalib's PatchCore coreset (scikit-learn `SparseRandomProjection(eps=0.9)` when it lowers
  the dimension, then the greedy k-center loop of `anomalib.models.image.patchcore.KCenterGreedy`, in numpy rather
  than torch) on the same patches, one thread; `coreset.capped.*.numpy`: the same greedy on the candidates of
  sonomaly's capped selection (the random subset it drew), with the cap as the coreset size. 896-dimensional
  cases run the first 1000 centres only; the time per centre excludes the projection (timed on its own).
  `--coreset-only` runs these rows alone on the files of `cargo bench --bench speed -- --only coreset`.
- `sgemm.numpy.{1,2}t`: numpy (OpenBLAS) float32 2048^3 matrix product: the machine's measured sgemm peak.
- `flops.<model>`: multiply-adds of each ONNX model's convolutions for the 10 s input (from ONNX shape inference),
  and of those with one input channel (which sonomaly computes directly, not by Winograd).
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
import spectrogram_ref  # noqa: E402

MODELS = {"aisfx": os.path.join(ROOT, "models", "aisfx-cnn14"), "cnn14-panns": None}


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


def conv_macs(onnx_path, input_shape):
    """Multiply-adds of the Conv nodes for the given input shape: all of them, and those with one input channel."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(onnx_path)
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
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            out = shapes[node.output[0]]
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
    ap.add_argument("--coreset-only", action="store_true",
                    help="only the coreset rows, on the files of `cargo bench --bench speed -- --only coreset` "
                         "(inputs-partial.safetensors, native-partial.json); writes reference-partial.json")
    a = ap.parse_args()
    reps, warmup = (3, 1) if a.quick else (a.reps, 2)
    if a.coreset_only:
        records = []
        coreset_rows(load_file(os.path.join(a.out, "inputs-partial.safetensors")),
                     load_json(os.path.join(a.out, "native-partial.json")), records)
        with open(os.path.join(a.out, "reference-partial.json"), "w") as fh:
            json.dump({"records": records, "python": platform.python_version(), "numpy": np.__version__}, fh, indent=1)
        print("wrote", os.path.join(a.out, "reference-partial.json"))
        return
    MODELS["cnn14-panns"] = os.path.join(a.out, "cnn14-panns")
    for name in ("inputs.safetensors", "outputs.safetensors"):
        if not os.path.exists(os.path.join(a.out, name)):
            raise SystemExit(f"reference.py: {os.path.join(a.out, name)} is missing: "
                             f"run `cargo bench --bench speed -- --out {a.out}` first (benches/run.sh does)")
    inputs = load_file(os.path.join(a.out, "inputs.safetensors"))
    ours = load_file(os.path.join(a.out, "outputs.safetensors"))
    records = []

    import librosa
    from threadpoolctl import threadpool_limits

    for key, preset in (("aisfx", "aisfx"), ("panns", "panns-cnn14")):
        y = inputs[f"audio_{key}"]
        ref = spectrogram_ref.logmel(preset, y)
        diff = float(np.abs(ref - inputs[f"logmel_{key}"][0, 0]).max())
        with threadpool_limits(limits=1):  # one thread, as sonomaly's front end
            t = measure(lambda: spectrogram_ref.logmel(preset, y), reps, warmup)
        record(records, f"spectrogram.{key}.librosa", t, group="spectrogram", impl="librosa",
               version=librosa.__version__, threads=1, max_abs_diff=diff)

    import onnxruntime as ort

    for model, folder in MODELS.items():
        onnx_path = os.path.join(folder, "model.onnx")
        if not os.path.exists(onnx_path):
            print(f"backbone.{model}: skipped, {onnx_path} is missing")
            continue
        spec = json.load(open(os.path.join(folder, "spec.json")))
        x = inputs["logmel_aisfx" if model == "aisfx" else "logmel_panns"]
        names = [o["name"] for o in spec["outputs"]]
        macs, macs_cin1 = conv_macs(onnx_path, list(x.shape))
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
                   version=ort.__version__, model=model, threads=threads, frames=int(x.shape[2]), max_abs_diff=diff)

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

    coreset_rows(inputs, load_json(os.path.join(a.out, "native.json")), records)

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
    with open(os.path.join(a.out, "reference.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    print("wrote", os.path.join(a.out, "reference.json"))


if __name__ == "__main__":
    main()
