#!/usr/bin/env python3
"""Reference log-mels of the `efficientat` front end for tests/efficientat.rs: EfficientAT's own code (torch +
torchaudio) where it runs, and an independent numpy implementation that must agree with it.

    python3 -m pip install -r tests/reference/requirements-torch.txt   # torch + torchaudio, CPU is enough
    python3 tests/reference/efficientat_frontend_ref.py [--data ../shared/data] \
        [--out tests/fixtures/efficientat_frontend_ref.safetensors]

Only this script needs torch; the Rust test reads the committed fixture.

Upstream (github.com/fschmid56/EfficientAT, models/preprocess.py, `AugmentMelSTFT` with its defaults n_mels=128,
sr=32000, win_length=800, hopsize=320, n_fft=1024, fmin=0, fmax=None -> sr // 2 - fmax_aug_range // 2 = 15000),
in eval mode (no fmin/fmax jitter, no masking), reproduced line by line in `torch_frontend`:

    x = conv1d(x.unsqueeze(1), [[[-0.97, 1]]]).squeeze(1)               # y[n] = x[n+1] - 0.97 x[n]
    x = torch.stft(x, 1024, hop_length=320, win_length=800, center=True, normalized=False,
                   window=torch.hann_window(800, periodic=False))        # reflect padding (torch's default)
    x = re^2 + im^2                                                      # upstream: (x ** 2).sum(dim=-1)
    mel_basis = pad(kaldi.get_mel_banks(128, 1024, 32000, 0, 15000, vtln_low=100, vtln_high=-500,
                                        vtln_warp_factor=1.0)[0], (0, 1))
    x = ((mel_basis @ x + 1e-5).log() + 4.5) / 5

(Upstream calls stft with return_complex=False, which newer torch warns about; `view_as_real` of the complex
result is the same tensor.) torch's reflect padding needs more than n_fft / 2 = 512 samples after pre-emphasis;
for shorter inputs the reference is the numpy implementation, whose `np.pad(mode="reflect")` reflects repeatedly
(what sonomaly does). `numpy_frontend` is written from the definitions, in float64 (float32 pre-emphasis), with
its own Kaldi filterbank; the script stops if it differs from torch by more than 1e-4 on any case both run.

Fixture tensors (float32):
  efficientat/<case>      [frames, 128] reference log-mel (torch where torch runs, else numpy; metadata
                          `source/<case>` says which)
  efficientat/filterbank  [128, 513] torchaudio's get_mel_banks padded with the zero Nyquist column
Cases (regenerated identically by the Rust test):
  birds        first 10 s of env/opensoundscape/birds_10s.wav (32 kHz: 1000 frames), PCM16 / 32768
  mimii_fan    first 3 s of the first sorted WAV in industrial/mimii_fan_id00/abnormal/ (16 kHz clip fed at
               32 kHz without resampling: checks the maths, not the resampler), PCM16 / 32768
  silence      32000 zeros
  square       32000 samples, +1 if 2 * ((n * 441) % 32000) < 32000 else -1
  sine_514     514 samples of 0.5 sin(2 pi 1000 n / 32000): 513 after pre-emphasis, the shortest torch takes
  sine_513     513 samples: 512 after pre-emphasis (numpy reference)
  short_sine   300 samples (numpy)
  tiny_sine    37 samples (numpy; reflection folds many times)
  two_samples  [0.25, -0.5]: one sample after pre-emphasis (numpy)
"""

import argparse
import os
import sys

import numpy as np
import soundfile as sf
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SR = 32000
N_FFT = 1024
WIN = 800
HOP = 320
N_MELS = 128
FMIN = 0.0
FMAX = 15000.0


def torch_frontend(x):
    """EfficientAT's AugmentMelSTFT.forward in eval mode on one float32 clip; returns [frames, 128] float32."""
    import torch
    import torchaudio

    window = torch.hann_window(WIN, periodic=False)
    preemphasis_coefficient = torch.as_tensor([[[-0.97, 1]]])
    x = torch.from_numpy(x.astype(np.float32))[None]
    x = torch.nn.functional.conv1d(x.unsqueeze(1), preemphasis_coefficient).squeeze(1)
    x = torch.stft(x, N_FFT, hop_length=HOP, win_length=WIN, center=True, normalized=False, window=window,
                   return_complex=True)
    x = (torch.view_as_real(x) ** 2).sum(dim=-1)
    mel_basis, _ = torchaudio.compliance.kaldi.get_mel_banks(N_MELS, N_FFT, SR, FMIN, FMAX, vtln_low=100.0,
                                                             vtln_high=-500.0, vtln_warp_factor=1.0)
    mel_basis = torch.nn.functional.pad(mel_basis, (0, 1), mode="constant", value=0)
    melspec = torch.matmul(mel_basis, x)
    melspec = (melspec + 0.00001).log()
    melspec = (melspec + 4.5) / 5.0
    return melspec[0].T.contiguous().numpy().astype(np.float32)


def torch_filterbank():
    import torch
    import torchaudio

    mel_basis, _ = torchaudio.compliance.kaldi.get_mel_banks(N_MELS, N_FFT, SR, FMIN, FMAX, vtln_low=100.0,
                                                             vtln_high=-500.0, vtln_warp_factor=1.0)
    return torch.nn.functional.pad(mel_basis, (0, 1), mode="constant", value=0).numpy().astype(np.float32)


def kaldi_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def numpy_filterbank():
    """Kaldi mel banks from their definition, float64: [128, 513] with a zero Nyquist column."""
    lo, hi = kaldi_mel(FMIN), kaldi_mel(FMAX)
    delta = (hi - lo) / (N_MELS + 1)
    i = np.arange(N_MELS, dtype=np.float64)[:, None]
    left, centre, right = lo + i * delta, lo + (i + 1) * delta, lo + (i + 2) * delta
    mel = kaldi_mel(np.arange(N_FFT // 2) * (SR / N_FFT))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.concatenate([banks, np.zeros((N_MELS, 1))], axis=1)


def numpy_frontend(x):
    """The same front end in numpy (float32 pre-emphasis, float64 after), [frames, 128] float32."""
    x = x.astype(np.float32)
    y = (x[1:] - np.float32(0.97) * x[:-1]).astype(np.float32)
    if len(y) == 0:
        raise ValueError("nothing left after pre-emphasis")
    yp = np.pad(y.astype(np.float64), N_FFT // 2, mode="reflect")
    window = np.zeros(N_FFT)
    lpad = (N_FFT - WIN) // 2
    window[lpad:lpad + WIN] = np.hanning(WIN)  # symmetric Hann = torch.hann_window(periodic=False)
    n_frames = 1 + (len(yp) - N_FFT) // HOP
    frames = np.stack([yp[t * HOP:t * HOP + N_FFT] for t in range(n_frames)])
    spec = np.fft.rfft(frames * window, axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    mel = power @ numpy_filterbank().T
    return ((np.log(mel + 1e-5) + 4.5) / 5.0).astype(np.float32)


def pcm16(path, seconds=None):
    pcm, rate = sf.read(path, dtype="int16", always_2d=True)
    assert pcm.shape[1] == 1, f"{path}: expected mono"
    n = pcm.shape[0] if seconds is None else seconds * rate
    return pcm[:n, 0].astype(np.float32) / 32768, rate


def cases(data):
    mimii_dir = os.path.join(data, "industrial", "mimii_fan_id00", "abnormal")
    mimii_file = sorted(f for f in os.listdir(mimii_dir) if f.lower().endswith(".wav"))[0]
    birds, rate = pcm16(os.path.join(data, "env", "opensoundscape", "birds_10s.wav"), 10)
    assert rate == SR and len(birds) == 10 * SR, (rate, len(birds))
    sine = lambda k: (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(k) / SR)).astype(np.float32)
    n = np.arange(SR, dtype=np.int64)
    out = {
        "birds": birds,
        "mimii_fan": pcm16(os.path.join(mimii_dir, mimii_file), 3)[0],
        "silence": np.zeros(SR, dtype=np.float32),
        "square": np.where(2 * ((n * 441) % SR) < SR, 1.0, -1.0).astype(np.float32),
        "sine_514": sine(514),
        "sine_513": sine(513),
        "short_sine": sine(300),
        "tiny_sine": sine(37),
        "two_samples": np.array([0.25, -0.5], dtype=np.float32),
    }
    return out, f"industrial/mimii_fan_id00/abnormal/{mimii_file}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "efficientat_frontend_ref.safetensors"))
    args = ap.parse_args()
    import torch
    import torchaudio

    inputs, mimii_file = cases(args.data)
    tensors, meta = {}, {}
    fb_torch = torch_filterbank()
    fb_diff = float(np.abs(fb_torch - numpy_filterbank()).max())
    print(f"filterbank: torchaudio vs numpy max abs diff {fb_diff:.2e}")
    # torchaudio computes the banks in float32 (mels near 3000 carry about 2e-4 of rounding against band widths of
    # 23 mel), the numpy ones in float64: they agree to about 1e-5.
    assert fb_diff < 1e-4, fb_diff
    tensors["efficientat/filterbank"] = np.ascontiguousarray(fb_torch)
    worst = 0.0
    for case, x in inputs.items():
        ref_np = numpy_frontend(x)
        assert ref_np.shape == (1 + (len(x) - 1) // HOP, N_MELS), (case, ref_np.shape)
        try:
            ref = torch_frontend(x)
        except RuntimeError as e:  # reflect padding longer than the signal
            print(f"{case:12s} torch refuses ({str(e).splitlines()[0][:80]}): numpy reference")
            ref, source = ref_np, "numpy"
        else:
            assert ref.shape == ref_np.shape, (case, ref.shape, ref_np.shape)
            diff = float(np.abs(ref - ref_np).max())
            worst = max(worst, diff)
            print(f"{case:12s} torch vs numpy max abs diff {diff:.2e}")
            if diff > 1e-4:
                raise SystemExit(f"{case}: the numpy implementation differs from torch by {diff}")
            source = "torch"
        tensors[f"efficientat/{case}"] = np.ascontiguousarray(ref)
        meta[f"source/{case}"] = source
    meta.update({
        "mimii_file": mimii_file,
        "birds_file": "env/opensoundscape/birds_10s.wav",
        "torch_vs_numpy_max_abs_diff": f"{worst:.3e}",
        "filterbank_torch_vs_numpy_max_abs_diff": f"{fb_diff:.3e}",
        "versions": f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, numpy {np.__version__}",
        "generator": "tests/reference/efficientat_frontend_ref.py",
    })
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
