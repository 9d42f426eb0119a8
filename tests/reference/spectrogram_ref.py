#!/usr/bin/env python3
"""Reference log-mel outputs for tests/spectrogram_parity.rs, computed with librosa 0.11.

Writes tests/fixtures/spectrogram_ref.safetensors with one float32 tensor `<preset>/<case>` of shape
[frames, n_mels] per preset and input (the log-mel, never the audio). Run from the crate root:

    python3 tests/reference/spectrogram_ref.py

Inputs (regenerated identically by the Rust test):
  mimii_fan   first 3 s of the first sorted WAV in ../shared/data/industrial/mimii_fan_id00/abnormal/
  birds       first 3 s of ../shared/data/env/opensoundscape/birds_10s.wav
              (both PCM16 / 32768 as float32, at their own rate, fed to every preset WITHOUT resampling:
              this checks the front-end maths, not the resampler)
  silence     1 s of zeros at the preset rate
  square      1 s full-scale square wave: +1 if 2 * ((n * 441) % sr) < sr else -1 (period sr / 441 samples)
  short_sine  300 samples of 0.5 sin(2 pi 1000 n / sr) (float64, cast to float32): shorter than one frame
  tiny_sine   37 samples of the same sine: reflect padding folds several times (numpy np.pad rules)
  one_sample  a single sample 0.25 (numpy repeats a 1-sample signal for reflect padding)

References:
  aisfx: librosa.feature.melspectrogram(y, sr=44100, n_fft=2048, hop_length=1024, win_length=2048, n_mels=96,
         fmin=0, fmax=22050, htk=True, norm=1.0, power=2.0, center=True, pad_mode="constant"),
         then np.log10(1 + 10000 S) / 9.457798957824707
  panns-cnn14 (32 kHz, 1024/320), panns-16k (16 kHz, 512/160, fmax 8000), clap-2022 (44.1 kHz, 1024/320):
         torchlibrosa semantics = |librosa.stft(y, n_fft, hop, win_length=n_fft, window="hann", center=True,
         pad_mode="reflect")|^2 @ librosa.filters.mel(sr, n_fft, n_mels=64, fmin=50, fmax, htk=False,
         norm="slaney").T, then 10 log10(max(x, 1e-10)) (ref 1, no top_db)
"""

import os
import sys
import warnings

import librosa
import numpy as np
import soundfile as sf
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data")
OUT = os.path.join(ROOT, "tests", "fixtures", "spectrogram_ref.safetensors")

PRESETS = {
    "aisfx": dict(sr=44100, n_fft=2048, hop=1024),
    "panns-cnn14": dict(sr=32000, n_fft=1024, hop=320, fmax=14000),
    "panns-16k": dict(sr=16000, n_fft=512, hop=160, fmax=8000),
    "clap-2022": dict(sr=44100, n_fft=1024, hop=320, fmax=14000),
}


def logmel(name, y):
    p = PRESETS[name]
    if name == "aisfx":
        s = librosa.feature.melspectrogram(
            y=y, sr=44100, n_fft=2048, hop_length=1024, win_length=2048, n_mels=96, fmin=0, fmax=22050,
            htk=True, norm=1.0, power=2.0, center=True, pad_mode="constant",
        )
        out = np.log10(1 + 10000 * s) / 9.457798957824707
    else:
        spec = np.abs(librosa.stft(y, n_fft=p["n_fft"], hop_length=p["hop"], win_length=p["n_fft"], window="hann",
                                   center=True, pad_mode="reflect")) ** 2
        fb = librosa.filters.mel(sr=p["sr"], n_fft=p["n_fft"], n_mels=64, fmin=50, fmax=p["fmax"], htk=False,
                                 norm="slaney")
        mel = np.einsum("ft,mf->mt", spec, fb, optimize=True)
        out = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    out = np.ascontiguousarray(out.T.astype(np.float32))  # [frames, n_mels]
    assert out.shape[0] == 1 + len(y) // p["hop"], (name, out.shape, len(y))
    return out


def wav_first_3s(path):
    pcm, rate = sf.read(path, dtype="int16", always_2d=True)
    assert pcm.shape[1] == 1, f"{path}: expected mono"
    return pcm[: 3 * rate, 0].astype(np.float32) / 32768, rate


def synthetic(sr):
    n = np.arange(sr, dtype=np.int64)
    sine = lambda k: (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(k) / sr)).astype(np.float32)
    return {
        "silence": np.zeros(sr, dtype=np.float32),
        "square": np.where(2 * ((n * 441) % sr) < sr, 1.0, -1.0).astype(np.float32),
        "short_sine": sine(300),
        "tiny_sine": sine(37),
        "one_sample": np.array([0.25], dtype=np.float32),
    }


def main():
    warnings.filterwarnings("ignore", message="n_fft=.* is too large")
    mimii_dir = os.path.join(DATA, "industrial", "mimii_fan_id00", "abnormal")
    mimii_file = sorted(f for f in os.listdir(mimii_dir) if f.lower().endswith(".wav"))[0]
    real = {
        "mimii_fan": wav_first_3s(os.path.join(mimii_dir, mimii_file))[0],
        "birds": wav_first_3s(os.path.join(DATA, "env", "opensoundscape", "birds_10s.wav"))[0],
    }
    tensors = {}
    for name, p in PRESETS.items():
        inputs = dict(real)
        inputs.update(synthetic(p["sr"]))
        for case, y in inputs.items():
            tensors[f"{name}/{case}"] = logmel(name, y)
    # 10 s at 32 kHz through panns-cnn14 gives 1001 frames.
    assert logmel("panns-cnn14", np.zeros(320000, dtype=np.float32)).shape == (1001, 64)
    meta = {
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "mimii_file": f"industrial/mimii_fan_id00/abnormal/{mimii_file}",
        "birds_file": "env/opensoundscape/birds_10s.wav",
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata=meta)
    for k, v in tensors.items():
        print(f"{k:28s} {v.shape}")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
