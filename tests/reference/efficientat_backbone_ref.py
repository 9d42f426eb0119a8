#!/usr/bin/env python3
"""onnxruntime outputs of models/efficientat-mn04/model.onnx for tests/efficientat.rs.

    python3 tests/reference/efficientat_backbone_ref.py [--model models/efficientat-mn04/model.onnx] \
        [--data ../shared/data] [--out tests/fixtures/efficientat_backbone_ref.safetensors]

Needs numpy, soundfile, librosa (resampling only), onnxruntime and safetensors; not torch (the log-mel is the
numpy implementation of tests/reference/efficientat_frontend_ref.py, which equals EfficientAT's torch front end
to 3e-5 there).

Writes, all float32:
  logmel             [1, 1, 128, 256]  EfficientAT log-mel (mel bins before frames, the network's layout) of the
                                       first 256 frames of industrial/mimii_fan_id00/abnormal/<first file, sorted>,
                                       the 16 kHz clip resampled to 32 kHz with librosa.resample (soxr_hq)
  features.N         [1, C, F, T]      onnxruntime outputs of the 17 blocks on `logmel`, N = 0..16
  logits             [1, 527]
  random_logmel      [1, 1, 128, 37]   numpy.random.default_rng(0).standard_normal(...) (odd frame count)
  random_features.N, random_logits     the same on `random_logmel`
The metadata records the clip, the model's sha256 and the library versions. When the original export
(../shared/models/efficientat-mn04/mn04_as.onnx) is there, the script also checks that models/prepare_efficientat.py
changed nothing it computes: the original's logits equal the prepared model's bit for bit on both inputs.
"""

import argparse
import glob
import hashlib
import os
import sys

import librosa
import numpy as np
import onnxruntime as ort
import soundfile as sf
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from efficientat_frontend_ref import numpy_frontend  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CLIP_DIR = "industrial/mimii_fan_id00/abnormal"
FRAMES = 256
RANDOM_FRAMES = 37
N_BLOCKS = 17


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "efficientat-mn04", "model.onnx"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "efficientat_backbone_ref.safetensors"))
    args = ap.parse_args()

    clips = sorted(glob.glob(os.path.join(args.data, CLIP_DIR, "*.wav")))
    if not clips:
        raise SystemExit(f"no clips under {os.path.join(args.data, CLIP_DIR)}")
    clip = clips[0]
    y, sr = sf.read(clip, dtype="float32")
    assert y.ndim == 1 and sr == 16000, (y.shape, sr)
    y32 = librosa.resample(y, orig_sr=sr, target_sr=32000)  # default res_type: soxr_hq
    mel = numpy_frontend(y32)[:FRAMES]  # [frames, 128]
    assert mel.shape == (FRAMES, 128), mel.shape
    logmel = np.ascontiguousarray(mel.T[None, None])
    random_logmel = np.random.default_rng(0).standard_normal((1, 1, 128, RANDOM_FRAMES)).astype(np.float32)

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    names = [f"features.{b}" for b in range(N_BLOCKS)] + ["logits"]
    tensors = {"logmel": logmel, "random_logmel": random_logmel}
    for prefix, x in (("", logmel), ("random_", random_logmel)):
        for name, out in zip(names, sess.run(names, {"spec": x})):
            tensors[prefix + name] = np.ascontiguousarray(out.astype(np.float32))

    original = os.path.join(ROOT, "..", "shared", "models", "efficientat-mn04", "mn04_as.onnx")
    same = "not checked (original export absent)"
    if os.path.exists(original):
        orig = ort.InferenceSession(original, providers=["CPUExecutionProvider"])
        for prefix, x in (("", logmel), ("random_", random_logmel)):
            if not np.array_equal(orig.run(["logits"], {"spec": x})[0], tensors[prefix + "logits"]):
                raise SystemExit(f"{prefix}logits of the prepared model differ from the original export's")
        same = "bit-identical to the original export's (mn04_as.onnx), both inputs"
        print("logits: " + same)

    with open(args.model, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    metadata = {
        "source_clip": os.path.join(CLIP_DIR, os.path.basename(clip)),
        "source_licence": "MIMII dataset (Hitachi), CC BY-SA 4.0",
        "model_sha256": model_sha,
        "generator": "tests/reference/efficientat_backbone_ref.py",
        "random_logmel": f"numpy.random.default_rng(0).standard_normal((1, 1, 128, {RANDOM_FRAMES})).astype(float32)",
        "logits_vs_original": same,
        "versions": f"numpy {np.__version__}, librosa {librosa.__version__}, onnxruntime {ort.__version__}",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=metadata)
    for k, v in tensors.items():
        print(f"{k:22s} {str(list(v.shape)):20s} mean {float(v.mean()):+.4f} max |x| {float(np.abs(v).max()):.4f}")
    print(f"{args.out}: {os.path.getsize(args.out):,} bytes (clip {metadata['source_clip']}, model {model_sha[:12]})")


if __name__ == "__main__":
    main()
