#!/usr/bin/env python3
"""Reference outputs of the embedded default backbone (models/aisfx-cnn14/model.onnx) for the Rust tests.

Regenerate (from the repository root, with ../shared/data present):

    python3 tests/reference/backbone_ref.py \
        [--model models/aisfx-cnn14/model.onnx] [--data ../shared/data] \
        [--out tests/fixtures/backbone_aisfx.safetensors]

Writes, with the safetensors.numpy API, all float32:

  logmel              [1, 1, 100, 96]  aisfx log-mel (librosa reference front end, no peak normalisation) of the
                                       first 100 frames of industrial/mimii_fan_id00/abnormal/<first file, sorted>,
                                       the 16 kHz clip resampled to 44.1 kHz with librosa.resample (soxr_hq)
  conv_block2         [1, 128, 25, 24] onnxruntime outputs of model.onnx on `logmel`
  conv_block3         [1, 256, 12, 12]
  conv_block4         [1, 512, 12, 12]
  random_logmel       [1, 1, 37, 96]   numpy.random.default_rng(0).standard_normal(...) (odd frame count)
  random_conv_block2  [1, 128, 9, 24]  onnxruntime outputs on `random_logmel`
  random_conv_block3  [1, 256, 4, 12]
  random_conv_block4  [1, 512, 4, 12]

aisfx front end (aisfx/spectrogram/spectrogram_librosa.py, then spectrogram_normalize('original')):
librosa.feature.melspectrogram(sr=44100, n_fft=2048, hop_length=1024, win_length=2048, window='hann',
center=True, pad_mode='constant', power=2.0, n_mels=96, fmin=0, fmax=22050, htk=True, norm=1.0),
then log10(1 + 10000 x) / 9.457798957824707, transposed to [frames, 96].

The metadata records the source clip, the model's sha256 and the library versions.
"""

import argparse
import glob
import hashlib
import os

import librosa
import numpy as np
import onnxruntime as ort
import soundfile as sf
from safetensors.numpy import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SR = 44100
LOG_MAX = 9.457798957824707
CLIP_DIR = "industrial/mimii_fan_id00/abnormal"


def aisfx_logmel(y):
    s = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=2048, hop_length=1024, win_length=2048, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=96, fmin=0.0, fmax=22050.0, htk=True, norm=1.0,
    )
    return (np.log10(1.0 + 10000.0 * s) / LOG_MAX).T.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "aisfx-cnn14", "model.onnx"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "backbone_aisfx.safetensors"))
    args = ap.parse_args()

    clips = sorted(glob.glob(os.path.join(args.data, CLIP_DIR, "*.wav")))
    if not clips:
        raise SystemExit(f"no clips under {os.path.join(args.data, CLIP_DIR)}")
    clip = clips[0]
    y, sr = sf.read(clip, dtype="float32")
    assert y.ndim == 1 and sr == 16000, (y.shape, sr)
    y44 = librosa.resample(y, orig_sr=sr, target_sr=SR)  # default res_type: soxr_hq
    logmel = aisfx_logmel(y44)[:100]
    assert logmel.shape == (100, 96), logmel.shape
    logmel = np.ascontiguousarray(logmel[None, None])

    random_logmel = np.random.default_rng(0).standard_normal((1, 1, 37, 96)).astype(np.float32)

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    names = ["conv_block2", "conv_block3", "conv_block4"]
    tensors = {"logmel": logmel, "random_logmel": random_logmel}
    for prefix, x in (("", logmel), ("random_", random_logmel)):
        for name, out in zip(names, sess.run(names, {"logmel": x})):
            tensors[prefix + name] = np.ascontiguousarray(out.astype(np.float32))

    with open(args.model, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    metadata = {
        "source_clip": os.path.join(CLIP_DIR, os.path.basename(clip)),
        "source_licence": "MIMII dataset (Hitachi), CC BY-SA 4.0",
        "model_sha256": model_sha,
        "generator": "tests/reference/backbone_ref.py",
        "random_logmel": "numpy.random.default_rng(0).standard_normal((1, 1, 37, 96)).astype(float32)",
        "versions": f"numpy {np.__version__}, librosa {librosa.__version__}, onnxruntime {ort.__version__}",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=metadata)
    for k, v in tensors.items():
        print(f"{k:20s} {str(list(v.shape)):18s} mean {float(v.mean()):+.4f} max {float(v.max()):.4f}")
    print(f"{args.out}: {os.path.getsize(args.out):,} bytes (clip {metadata['source_clip']}, model {model_sha[:12]})")


if __name__ == "__main__":
    main()
