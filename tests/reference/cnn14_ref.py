#!/usr/bin/env python3
"""Reference outputs for tests/cnn14_convert.rs: an independent numpy implementation of CNN14 bn0 +
conv_block1..4 (PANNs ``Cnn14.forward`` in inference mode) on the weights of a synthetic checkpoint.

    python3 tests/reference/cnn14_ref.py --variant panns --seed 1 --out ref.safetensors [--onnx model.onnx]

The weights are regenerated from the seed by ``models/convert_cnn14.py``'s generator (``synthetic_weights``),
not read back from the checkpoint file, so the reader, the key search and the ONNX graph are all under test.
Convolution kernels are rounded to float16 as the converted ONNX stores them (``--fp32`` for a float32
conversion). Computed in float64.

Writes, for windows of 256 frames (the spec's) and 100 frames (odd pooling sizes: 100 -> 50 -> 25 -> 12 -> 6),
``w<F>_logmel`` [1, 1, F, 64] and ``w<F>_conv_block<b>`` [1, C, T, M] float32 tensors. With ``--onnx`` it also
runs onnxruntime on the converted model and prints its largest error against numpy.
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models"))
import convert_cnn14  # noqa: E402

EPS = 1e-5
FRAMES = (256, 100)


def batch_norm(x, w, prefix):
    """x [C, T, F]; per-channel inference batch norm."""
    g, b = w[prefix + ".weight"], w[prefix + ".bias"]
    m, v = w[prefix + ".running_mean"], w[prefix + ".running_var"]
    scale = g / np.sqrt(v + EPS)
    return (x - m[:, None, None]) * scale[:, None, None] + b[:, None, None]


def conv3x3(x, k):
    """x [Cin, T, F], k [Cout, Cin, 3, 3]; zero padding 1, stride 1, no bias (cross-correlation, as torch)."""
    cin, t, f = x.shape
    xp = np.zeros((cin, t + 2, f + 2))
    xp[:, 1:-1, 1:-1] = x
    out = np.zeros((k.shape[0], t, f))
    for dy in range(3):
        for dx in range(3):
            out += np.tensordot(k[:, :, dy, dx], xp[:, dy : dy + t, dx : dx + f], axes=(1, 0))
    return out


def avg_pool2(x):
    """2x2 average pooling, stride 2, floor (odd last rows/columns dropped)."""
    c, t, f = x.shape
    x = x[:, : t // 2 * 2, : f // 2 * 2]
    return x.reshape(c, t // 2, 2, f // 2, 2).mean(axis=(2, 4))


def forward(logmel, w):
    """logmel [T, 64] -> [conv_block1..4 outputs], each [C, T_b, F_b]."""
    x = logmel.astype(np.float64)
    # bn0 over the mel bins: (x - mean[m]) / sqrt(var[m] + eps) * gamma[m] + beta[m]
    x = (x - w["bn0.running_mean"]) / np.sqrt(w["bn0.running_var"] + EPS) * w["bn0.weight"] + w["bn0.bias"]
    x = x[None]
    outs = []
    for b in range(1, 5):
        for i in (1, 2):
            x = conv3x3(x, w[f"conv_block{b}.conv{i}.weight"])
            x = np.maximum(batch_norm(x, w, f"conv_block{b}.bn{i}"), 0.0)
        x = avg_pool2(x)
        outs.append(x)
    return outs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", required=True, choices=sorted(convert_cnn14.VARIANTS))
    ap.add_argument("--seed", type=int, default=0, help="the synthetic checkpoint's seed")
    ap.add_argument("--input-seed", type=int, default=1234)
    ap.add_argument("--fp32", action="store_true", help="the model was converted with --fp32")
    ap.add_argument("--out", required=True)
    ap.add_argument("--onnx", help="also check this converted model with onnxruntime")
    args = ap.parse_args()

    raw = convert_cnn14.synthetic_weights(args.variant, args.seed)
    stored = convert_cnn14.conv_weights_as_stored(raw, fp32=args.fp32)
    w = {k: v.astype(np.float64) for k, v in stored.items()}
    w_exact = {k: v.astype(np.float64) for k, v in raw.items()}
    rng = np.random.default_rng(args.input_seed)
    tensors, summary = {}, {"variant": args.variant}
    sess = None
    if args.onnx:
        import onnxruntime as ort

        sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    for frames in FRAMES:
        # log-mel decibels around bn0's running means
        logmel = (rng.standard_normal((frames, 64)) * 20.0 - 40.0).astype(np.float32)
        outs = forward(logmel, w)
        tensors[f"w{frames}_logmel"] = logmel[None, None]
        for b, o in enumerate(outs, start=1):
            tensors[f"w{frames}_conv_block{b}"] = o[None].astype(np.float32)
        summary[f"w{frames}_absmax"] = [float(np.abs(o).max()) for o in outs]
        if not args.fp32:
            exact = forward(logmel, w_exact)
            summary[f"w{frames}_fp16_rounding_rel_err"] = [
                float(np.max(np.abs(a - e)) / max(np.abs(e).max(), 1e-30)) for a, e in zip(outs, exact)
            ]
        if sess is not None:
            got = sess.run([f"conv_block{b}" for b in range(1, 5)], {"logmel": logmel[None, None]})
            summary[f"w{frames}_onnxruntime_err"] = [
                float(np.max(np.abs(g[0] - o) / np.maximum(np.abs(o), 1.0))) for g, o in zip(got, outs)
            ]
    save_file(tensors, args.out)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
