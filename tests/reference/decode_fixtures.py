#!/usr/bin/env python3
"""Writes the decoding fixtures in tests/fixtures/decode/: small synthetic files (tones and seeded noise) for each
supported format and for each damaged-file case that sonomaly reads or refuses, plus cases.json, which describes
every file (the signal that was written, what a decoder must return, which warning or error it must give).

The signal is reproducible bit for bit in Rust (tests/common/decode_cases.rs): for link l, channel c, sample i,

    s = xorshift64(seed)                     (s ^= s << 13; s ^= s >> 7; s ^= s << 17, on 64 bits)
    u = (s >> 11) / 2**53                    in [0, 1)
    v = amp * sin(2 * pi * freq * i / rate) + noise * (2 u - 1)
    x = floor(v * 32767 + 0.5)               16-bit PCM

Lossless files (WAV, FLAC) must decode to exactly x / 32768; lossy ones (Vorbis, MP3) to the same signal within a
signal-to-noise ratio. Encoders: libsndfile through the soundfile package (FLAC, Vorbis, Opus, MP3); WAV and the
damage are written by hand below.

    python3 tests/reference/decode_fixtures.py      # rewrites tests/fixtures/decode/
"""

import io
import json
import math
import os
import struct
import sys

import numpy as np
import soundfile as sf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "decode")
M64 = (1 << 64) - 1


def channel(n, rate, freq, seed, amp, noise):
    s = seed
    out = np.empty(n, dtype=np.int16)
    for i in range(n):
        s ^= (s << 13) & M64
        s ^= s >> 7
        s ^= (s << 17) & M64
        u = (s >> 11) / float(1 << 53)
        v = amp * math.sin(2.0 * math.pi * freq * i / rate) + noise * (2.0 * u - 1.0)
        out[i] = max(-32768, min(32767, math.floor(v * 32767.0 + 0.5)))
    return out


def link_signal(link):
    """int16 [frames, channels] of one link description."""
    return np.stack(
        [channel(link["frames"], link["rate"], c["freq"], c["seed"], c["amp"], c["noise"]) for c in link["channels"]],
        axis=1,
    )


def link(rate, seconds, chans, amp=0.3, noise=0.05):
    return {
        "rate": rate,
        "frames": int(round(rate * seconds)),
        "channels": [{"freq": f, "seed": s, "amp": amp, "noise": noise} for f, s in chans],
    }


def wav_bytes(pcm, rate, chunks_before=(), riff_delta=0, data_len=None, cut=None, pad_missing=()):
    """A PCM16 WAV: fmt, the extra chunks (tag, payload), data. riff_delta adds to the RIFF size; data_len overrides
    the data chunk's size; cut keeps only that many bytes of the file; extra chunks whose tag is in pad_missing get
    no pad byte after an odd payload."""
    n, ch = pcm.shape
    fmt = struct.pack("<HHIIHH", 1, ch, rate, rate * ch * 2, ch * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    for tag, payload in chunks_before:
        body += tag + struct.pack("<I", len(payload)) + payload
        if len(payload) % 2 and tag not in pad_missing:
            body += b"\0"
    data = pcm.astype("<i2").tobytes()
    body += b"data" + struct.pack("<I", len(data) if data_len is None else data_len) + data
    out = b"RIFF" + struct.pack("<I", len(body) + riff_delta) + body
    return out if cut is None else out[:cut]


def encode(pcm, rate, fmt, subtype):
    buf = io.BytesIO()
    buf.name = "x." + fmt.lower()
    sf.write(buf, pcm, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def ogg_serial(b):
    return struct.unpack("<I", b[14:18])[0]


def id3v2_tag(title):
    """An ID3v2.3 tag with one TIT2 frame and 64 bytes of padding."""
    text = b"\x00" + title.encode("latin-1")
    frame = b"TIT2" + struct.pack(">I", len(text)) + b"\x00\x00" + text
    body = frame + b"\x00" * 64
    n = len(body)
    size = bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])
    return b"ID3\x03\x00\x00" + size + body


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []

    def add(name, data, links, **expect):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        cases.append({"file": name, "bytes": len(data), "links": links, **expect})
        print(f"{name}: {len(data)} bytes")

    # Intact files, one per format.
    l = link(22050, 1.0, [(440.0, 1), (660.0, 2)])
    add("tone.wav", wav_bytes(link_signal(l), 22050), [l], lossless=True, format="WAV")
    l = link(44100, 1.0, [(523.25, 3)])
    add("tone.flac", encode(link_signal(l), 44100, "FLAC", "PCM_16"), [l], lossless=True, format="FLAC")
    l = link(32000, 1.0, [(700.0, 4)], noise=0.01)
    add("tone.ogg", encode(link_signal(l), 32000, "OGG", "VORBIS"), [l], lossless=False, format="OGG/Vorbis")
    l = link(44100, 1.0, [(330.0, 5)], noise=0.01)
    add("tone.mp3", encode(link_signal(l), 44100, "MP3", "MPEG_LAYER_III"), [l], lossless=False, format="MP3")

    # Chained Ogg Vorbis: link 1 44.1 kHz stereo 1.5 s, link 2 22.05 kHz mono 1.5 s (two streams, one file).
    l1 = link(44100, 1.5, [(440.0, 6), (550.0, 7)], noise=0.01)
    l2 = link(22050, 1.5, [(880.0, 8)], noise=0.01)
    a = encode(link_signal(l1), 44100, "OGG", "VORBIS")
    b = encode(link_signal(l2), 22050, "OGG", "VORBIS")
    assert ogg_serial(a) != ogg_serial(b), "libsndfile gave both links the same serial number: run again"
    add("chained.ogg", a + b, [l1, l2], lossless=False, format="OGG/Vorbis", chained=True)

    # WAV whose RIFF size leaves out the data chunk's 8-byte header.
    l = link(16000, 1.0, [(440.0, 9)])
    add("riff-size-short.wav", wav_bytes(link_signal(l), 16000, riff_delta=-8), [l], lossless=True, format="WAV",
        warning="8-byte header")

    # FLAC whose STREAMINFO minimum block size is 0 (byte 8-9 of the file: after "fLaC" and the block header).
    l = link(16000, 1.0, [(440.0, 10)])
    f = bytearray(encode(link_signal(l), 16000, "FLAC", "PCM_16"))
    assert f[:4] == b"fLaC" and f[4] & 0x7F == 0
    f[8:10] = b"\x00\x00"
    add("flac-min-block-0.flac", bytes(f), [l], lossless=True, format="FLAC", warning="minimum block size of 0")

    # FLAC behind an ID3v2 tag (44.1 kHz: a sniffer that takes the FLAC frame sync for MPEG reads 32 kHz).
    l = link(44100, 1.0, [(392.0, 11)])
    add("id3-flac.flac", id3v2_tag("sonomaly fixture") + encode(link_signal(l), 44100, "FLAC", "PCM_16"), [l],
        lossless=True, format="FLAC")

    # WAV cut off mid-frame: the header says 1.0 s of 22.05 kHz stereo, 0.5 s and half a frame are present.
    l = link(22050, 1.0, [(440.0, 13), (660.0, 14)])
    present = 11025
    w = wav_bytes(link_signal(l), 22050, cut=44 + present * 4 + 2)
    add("truncated.wav", w, [l], lossless=True, format="WAV", present_frames=present,
        warning="shorter than its header says")

    # WAV with an odd-length chunk that lacks its pad byte before the data chunk.
    l = link(16000, 0.75, [(440.0, 15)])
    note = [(b"bext", b"sonomaly test fixture: odd-length chunk written without its pad byte".ljust(601, b" "))]
    assert len(note[0][1]) % 2 == 1
    add("odd-chunk-no-pad.wav", wav_bytes(link_signal(l), 16000, chunks_before=note, pad_missing={b"bext"}), [l],
        lossless=True, format="WAV", warning="lacks the pad byte")

    # The same with the next chunk header destroyed: refused, naming the chunk.
    w = bytearray(wav_bytes(link_signal(l), 16000, chunks_before=note, pad_missing={b"bext"}))
    at = 36 + 8 + 601
    assert w[at:at + 4] == b"data"
    w[at:at + 5] = b"\x01\x02\x03\x04\x05"
    add("odd-chunk-damaged.wav", bytes(w), [l], format="WAV", error="'bext' chunk at byte 36")

    # Ogg Opus: not decoded by sonomaly (the page lets the browser decode it).
    l = link(48000, 1.0, [(440.0, 16)], noise=0.01)
    add("opus.ogg", encode(link_signal(l), 48000, "OGG", "OPUS"), [l], format="OGG/Opus",
        error="codec is not supported", browser_fallback=True)

    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tests/reference/decode_fixtures.py", "soundfile": sf.__version__,
                   "libsndfile": sf.__libsndfile_version__, "cases": cases}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
