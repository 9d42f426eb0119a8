#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora (tests/fixtures/fuzz-seeds/<target>/seed-*): small files of every kind each target
parses, intact and damaged (the damage of tests/reference/decode_fixtures.py, smaller). fuzz/make_seeds.sh runs it
and adds bank files written by the CLI.

    python3 fuzz/make_seeds.py
"""

import io
import os
import struct

import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def put(target, name, data):
    d = os.path.join(HERE, "..", "tests", "fixtures", "fuzz-seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def tone(n, rate, ch=1, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * (440 + 110 * c) * t) + 0.02 * rng.standard_normal(n) for c in range(ch)], 1)
    return x.astype(np.float32)


def encode(x, rate, fmt, subtype):
    b = io.BytesIO()
    b.name = "x." + fmt.lower()
    sf.write(b, x, rate, format=fmt, subtype=subtype)
    return b.getvalue()


def wav_pcm16(x, rate, riff_delta=0, extra=b"", cut=None):
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    n, ch = pcm.shape
    fmt = struct.pack("<HHIIHH", 1, ch, rate, rate * ch * 2, ch * 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + extra
    data = pcm.tobytes()
    body += b"data" + struct.pack("<I", len(data)) + data
    out = b"RIFF" + struct.pack("<I", len(body) + riff_delta) + body
    return out if cut is None else out[:cut]


def main():
    if os.path.isdir(os.path.join(HERE, "..", "tests", "fixtures", "fuzz-seeds")):
        for t in os.listdir(os.path.join(HERE, "..", "tests", "fixtures", "fuzz-seeds")):
            for f in os.listdir(os.path.join(HERE, "..", "tests", "fixtures", "fuzz-seeds", t)):
                if f.startswith("seed-"):
                    os.remove(os.path.join(HERE, "..", "tests", "fixtures", "fuzz-seeds", t, f))
    x1 = tone(400, 8000)
    x2 = tone(300, 11025, 2, 2)
    # WAV: every sample format symphonia reads, and the damaged cases.
    for sub in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW", "IMA_ADPCM", "MS_ADPCM"):
        put("wav", f"{sub.lower()}.wav", encode(x1, 8000, "WAV", sub))
    put("wav", "stereo-extensible.wav", encode(x2, 11025, "WAVEX", "PCM_16"))
    put("wav", "riff-size-short.wav", wav_pcm16(x1, 8000, riff_delta=-8))
    put("wav", "odd-chunk-no-pad.wav", wav_pcm16(x1, 8000, extra=b"note" + struct.pack("<I", 3) + b"abc"))
    put("wav", "truncated.wav", wav_pcm16(x2, 11025, cut=44 + 4 * 100 + 2))
    put("wav", "list-info.wav", wav_pcm16(x1, 8000, extra=b"LIST" + struct.pack("<I", 16) + b"INFOISFT" + struct.pack("<I", 4) + b"abc\0"))
    # FLAC: bit depths, channels, the minimum block size of 0, an ID3v2 tag in front.
    for sub in ("PCM_S8", "PCM_16", "PCM_24"):
        put("flac", f"{sub.lower()}.flac", encode(x1, 8000, "FLAC", sub))
    f = bytearray(encode(x2, 11025, "FLAC", "PCM_16"))
    put("flac", "stereo.flac", bytes(f))
    f[8:10] = b"\0\0"
    put("flac", "min-block-0.flac", bytes(f))
    tag = b"ID3\x03\x00\x00\x00\x00\x00\x0aTIT2\x00\x00\x00\x00\x00\x00"
    put("flac", "id3.flac", tag + encode(x1, 8000, "FLAC", "PCM_16"))
    # Ogg: Vorbis mono and stereo, a chained stream of two links at two rates, Opus (refused).
    a = encode(x1, 8000, "OGG", "VORBIS")
    b = encode(x2, 11025, "OGG", "VORBIS")
    put("ogg", "vorbis-mono.ogg", a)
    put("ogg", "vorbis-stereo.ogg", b)
    put("ogg", "chained.ogg", a + b)
    put("ogg", "opus.ogg", encode(tone(960, 48000), 48000, "OGG", "OPUS"))
    # MP3: mono, stereo, behind an ID3v2 tag.
    m = encode(tone(2304, 22050), 22050, "MP3", "MPEG_LAYER_III")
    put("mp3", "mono.mp3", m)
    put("mp3", "stereo.mp3", encode(tone(2304, 44100, 2), 44100, "MP3", "MPEG_LAYER_III"))
    put("mp3", "id3.mp3", tag + m)
    # Resampler: two rate fields (mode byte, then rate bytes), a piece-size byte, then f32 samples.
    samples = struct.pack("<64f", *np.sin(np.arange(64) / 3.0))
    put("resample", "common.bin", bytes([1, 2, 0, 0, 1, 6, 0, 0, 3]) + samples)
    put("resample", "any.bin", bytes([0, 0x11, 0x2b, 0, 0, 0x80, 0x3e, 0, 0]) + samples)
    put("resample", "nan.bin", bytes([1, 6, 0, 0, 1, 2, 0, 0, 1]) + struct.pack("<4f", float("nan"), float("inf"), -1.0, 0.5))
    # Backbone specs and models.
    with open(os.path.join(HERE, "tiny", "tiny.json"), "rb") as fh:
        put("spec", "tiny.json", fh.read())
    with open(os.path.join(ROOT, "models", "aisfx-cnn14", "spec.json"), "rb") as fh:
        put("spec", "aisfx-cnn14.json", fh.read())
    for n in ("tiny.onnx", "tiny-tract.onnx"):
        with open(os.path.join(HERE, "tiny", n), "rb") as fh:
            put("onnx", n, fh.read())
    # eval CSVs and masks.
    put("eval_csv", "labels.csv", b"path,label\nnormal/a.wav,normal\nabnormal/b.wav,anomaly\n")
    put("eval_csv", "envmix.csv", b"path,label,onset_s,offset_s,snr_db,mask\nmix_000.wav,1,2.5,3.25,-6,mask_000.pgm\n"
        b"mix_001.wav,0,,,,\n\"quoted, name.wav\",abnormal,0.1,0.2,6,m.pgm\n")
    put("mask_pgm", "mask.pgm", b"P5\n4 3\n255\n" + bytes([0, 255, 128, 0] * 3))
    put("mask_pgm", "comment-free.pgm", b"P5 2 2 255 " + bytes([255, 0, 0, 255]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
