#!/usr/bin/env python3
"""Independent check that models/aisfx-cnn14/model.onnx holds the real, trained aisfx weights.

    python3 models/check_aisfx_weights.py [--wheel PATH] [--model models/aisfx-cnn14/model.onnx] \
        [--data /work/shared/data]

(a) A plain numpy implementation of conv_block1..4 (float32, straight from the checkpoint tensors, with the
    float16 rounding the ONNX file applies) must agree with onnxruntime on model.onnx to 1e-4 max abs.
(b) On real audio (MIMII fan clips and environmental clips, resampled to 44.1 kHz, aisfx front end), the
    per-channel mean / variance of every convolution's output before its batch norm is compared with that
    batch norm's running_mean / running_var (Pearson r). Trained running statistics track the activations a
    network produces on audio; random or mis-loaded weights would not. Done with and without aisfx's peak
    normalisation of the waveform.

The checkpoint is read with the torch-free reader in convert_aisfx.py; everything else here is independent of
the converter (own forward pass, own front end). Audio is read from --data and never written anywhere.
"""

import argparse
import glob
import os
import sys

import librosa
import numpy as np
import onnxruntime as ort
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_aisfx  # noqa: E402  (checkpoint reader only)

HERE = os.path.dirname(os.path.abspath(__file__))
SR = 44100
LOG_MAX = 9.457798957824707
BN_EPS = 1e-5
BLOCK, HOP = 100, 50


# ---------------------------------------------------------------- front end (aisfx, librosa flavour)


def load_audio_44k(path):
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR)  # default res_type soxr_hq
    return y.astype(np.float32)


def aisfx_logmel(y, peak_normalise):
    """[frames, 96] float32, as aisfx/spectrogram/spectrogram_librosa.py + spectrogram_normalize('original')."""
    if peak_normalise:
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        y = y / (peak if peak != 0 else 1.0)
    s = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=2048, hop_length=1024, win_length=2048, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=96, fmin=0.0, fmax=22050.0, htk=True, norm=1.0,
    )
    return (np.log10(1.0 + 10000.0 * s) / LOG_MAX).T.astype(np.float32)


def blocks_of(logmel):
    """aisfx blocking, 100 frames with hop 50, partial last block dropped (a short clip gives one padded block)."""
    n = logmel.shape[0]
    if n <= BLOCK:
        out = np.zeros((1, BLOCK, logmel.shape[1]), np.float32)
        out[0, :n] = logmel
        return out
    k = (n - BLOCK) // HOP + 1
    return np.stack([logmel[i * HOP: i * HOP + BLOCK] for i in range(k)])


# ---------------------------------------------------------------- numpy forward pass


def conv3x3(x, w):
    """x [N,C,T,F], w [O,C,3,3]; stride 1, zero padding 1, no bias; float32."""
    n, c, t, f = x.shape
    xp = np.zeros((n, c, t + 2, f + 2), np.float32)
    xp[:, :, 1:-1, 1:-1] = x
    out = np.zeros((n, w.shape[0], t, f), np.float32)
    for i in range(3):
        for j in range(3):
            # [O,C] x [N,C,T,F] -> [N,O,T,F]
            out += np.einsum("oc,nctf->notf", w[:, :, i, j], xp[:, :, i:i + t, j:j + f], optimize=True)
    return out


def batch_norm(x, w, prefix):
    g, b = w[prefix + ".weight"], w[prefix + ".bias"]
    m, v = w[prefix + ".running_mean"], w[prefix + ".running_var"]
    scale = (g / np.sqrt(v + np.float32(BN_EPS))).astype(np.float32)
    return ((x - m[None, :, None, None]) * scale[None, :, None, None] + b[None, :, None, None]).astype(np.float32)


def max_pool2(x):
    n, c, t, f = x.shape
    t2, f2 = t // 2, f // 2
    x = x[:, :, : 2 * t2, : 2 * f2].reshape(n, c, t2, 2, f2, 2)
    return x.max(axis=(3, 5))


def forward(x, w, taps=None):
    """Returns the four block outputs; if `taps` is a dict, stores each conv's pre-BN output there."""
    outs = []
    for b in range(1, 5):
        blk = f"conv_block{b}"
        for i in (1, 2):
            y = conv3x3(x, w[f"{blk}.conv{i}.weight"])
            if taps is not None:
                taps[f"{blk}.bn{i}"] = y
            x = np.maximum(batch_norm(y, w, f"{blk}.bn{i}"), 0)
        if b < 4:
            x = max_pool2(x)
        outs.append(x)
    return outs


# ---------------------------------------------------------------- checks


def check_a(weights16, weights32, model_path, real_block):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == [f"conv_block{b}" for b in range(1, 5)], names
    rng = np.random.default_rng(1234)
    inputs = {
        "random [2,1,100,96]": rng.standard_normal((2, 1, 100, 96)).astype(np.float32),
        "random [1,1,37,96]": rng.standard_normal((1, 1, 37, 96)).astype(np.float32),
        "random [1,1,8,96]": rng.standard_normal((1, 1, 8, 96)).astype(np.float32),
        "real log-mel [1,1,100,96]": real_block[None, None],
    }
    worst = 0.0
    print("(a) numpy (float32, fp16-rounded weights) vs onnxruntime on model.onnx")
    for label, x in inputs.items():
        ref = forward(x, weights16)
        got = sess.run(None, {"logmel": x})
        exact32 = forward(x, weights32)
        for b, (r, g, e) in enumerate(zip(ref, got, exact32), start=1):
            assert r.shape == g.shape, (label, b, r.shape, g.shape)
            d = float(np.max(np.abs(r - g)))
            worst = max(worst, d)
            print(f"    {label:28s} conv_block{b} {str(g.shape):18s} max|numpy-ort| = {d:.2e}   "
                  f"max|out| = {float(np.max(np.abs(r))):7.3f}   "
                  f"fp16 rounding effect max|fp32w-fp16w| = {float(np.max(np.abs(e - r))):.2e}")
    print(f"    worst max abs diff: {worst:.3e} ({'OK' if worst <= 1e-4 else 'FAIL'}, tolerance 1e-4)")
    return worst


def pearson(a, b):
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def bn_stats(clip_blocks, weights16, batch=8):
    """Per-channel mean / variance of each conv's pre-BN output, pooled over all positions of all blocks."""
    s1, s2, cnt = {}, {}, {}
    for blocks in clip_blocks:
        for k in range(0, len(blocks), batch):
            x = blocks[k: k + batch][:, None]
            taps = {}
            forward(x, weights16, taps)
            for name, y in taps.items():
                y = y.astype(np.float64)
                s1[name] = s1.get(name, 0) + y.sum(axis=(0, 2, 3))
                s2[name] = s2.get(name, 0) + (y * y).sum(axis=(0, 2, 3))
                cnt[name] = cnt.get(name, 0) + y.shape[0] * y.shape[2] * y.shape[3]
    out = {}
    for name in s1:
        mean = s1[name] / cnt[name]
        out[name] = (mean, s2[name] / cnt[name] - mean * mean)
    return out


def check_b(weights16, clips):
    print(f"(b) running statistics vs activations on real audio ({len(clips)} clips resampled to 44.1 kHz)")
    w1 = weights16["conv_block1.conv1.weight"].reshape(64, 9)
    for peak in (False, True):
        logmels = {p: aisfx_logmel(load_audio_44k(p), peak) for p in clips}
        all_frames = np.concatenate(list(logmels.values()))
        print(f"  peak normalisation {'ON ' if peak else 'OFF'}: log-mel mean {all_frames.mean():.4f}, "
              f"std {all_frames.std():.4f}, max {all_frames.max():.4f}")
        stats = bn_stats([blocks_of(m) for m in logmels.values()], weights16)
        for name in sorted(stats):
            mean, var = stats[name]
            rm, rv = weights16[name + ".running_mean"], weights16[name + ".running_var"]
            print(f"    {name:18s} r(mean, running_mean) = {pearson(mean, rm):+.3f}   "
                  f"r(var, running_var) = {pearson(var, rv):+.3f}   "
                  f"r(log var, log running_var) = {pearson(np.log(var + 1e-12), np.log(rv)):+.3f}   "
                  f"median var/running_var = {np.median(var / rv):.3f}")
        # block1.conv1 sees one input channel: away from the borders its mean is sum(w_c) * E[x]
        rm = weights16["conv_block1.bn1.running_mean"]
        sw = w1.sum(axis=1)
        implied = float(np.dot(sw, rm) / np.dot(sw, sw))
        print(f"    conv_block1.bn1: running_mean ~ sum(w_c) * m gives a training input mean m = {implied:.4f} "
              f"(r = {pearson(sw, rm):+.3f}); this audio's log-mel mean = {all_frames.mean():.4f}")


def pick_clips(data):
    fan = sorted(glob.glob(os.path.join(data, "industrial/mimii_fan_id00/normal/*.wav")))[:4]
    fan += sorted(glob.glob(os.path.join(data, "industrial/mimii_fan_id00/abnormal/*.wav")))[:4]
    env = []
    for cls in ("dog_bark", "siren", "drilling", "street_music", "car_horn", "jackhammer"):
        env += sorted(glob.glob(os.path.join(data, f"env/urbansound8k_subset/{cls}/*.wav")))[:1]
    env += sorted(glob.glob(os.path.join(data, "env/ovos_animals_cc0/*.wav")))[:4]
    env += sorted(glob.glob(os.path.join(data, "env/lincity_ng/*.wav")))[:3]
    env += sorted(glob.glob(os.path.join(data, "env/opensoundscape/*.wav")))[:1]
    return fan + env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", default="/tmp/aisfx/aisfx-0.1.2-py2.py3-none-any.whl")
    ap.add_argument("--model", default=os.path.join(HERE, "aisfx-cnn14", "model.onnx"))
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    args = ap.parse_args()

    ckpt = convert_aisfx.load_checkpoint(convert_aisfx.read_wheel_checkpoint(args.wheel))
    weights32 = convert_aisfx.embedding_state(ckpt)
    weights16 = convert_aisfx.fp16_round(weights32)

    clips = pick_clips(args.data)
    if clips:
        real_block = blocks_of(aisfx_logmel(load_audio_44k(clips[0]), False))[0]
    else:
        print(f"no audio under {args.data}: part (b) skipped, part (a) uses a synthetic block")
        real_block = np.abs(np.random.default_rng(0).standard_normal((BLOCK, 96))).astype(np.float32) * 0.3

    worst = check_a(weights16, weights32, args.model, real_block)
    if clips:
        check_b(weights16, clips)
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
