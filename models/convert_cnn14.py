#!/usr/bin/env python3
"""Convert a real CNN14 checkpoint (PANNs or Microsoft CLAP 2022) into a sonomaly backbone, without torch.

    python3 models/convert_cnn14.py CHECKPOINT --variant panns|panns-16k|clap-2022 --out DIR [--fp32]
    python3 models/convert_cnn14.py --synthetic FILE.pth --variant ... [--seed N] [--format zip|legacy]
                                    [--compact] [--drop-key KEY]

Checkpoints (downloaded by the user; nothing is fetched here):

* ``panns``     PANNs ``Cnn14_mAP=0.431.pth`` (32 kHz), Zenodo record 3987831;
* ``panns-16k`` PANNs ``Cnn14_16k_mAP=0.438.pth`` (16 kHz, window 512, hop 160, f_max 8000), same record;
* ``clap-2022`` Microsoft CLAP ``CLAP_weights_2022.pth`` (44.1 kHz); its CNN14 is the audio encoder's ``base``.

The file is read with ``models/torch_zip.py`` (zip or legacy torch format, restricted unpickler, only the
needed tensors are read). The CNN14 tensors are found under any key prefix: a prefix qualifies when
``<prefix>conv_block1.conv1.weight`` exists, and it is used when every tensor listed in ``REQUIRED`` exists
under it (PANNs: no prefix; CLAP 2022: ``audio_encoder.base.``, the attribute path of msclap's
``CLAP.audio_encoder.base``; msclap's CLAPWrapper loads ``torch.load(path)['model']`` into ``CLAP``). A file
without them is refused with the list of the missing keys.

The network written (PANNs ``Cnn14.forward`` up to ``conv_block4``, inference mode):

    logmel [batch, 1, frames, 64]
    -> bn0: BatchNorm2d(64) over the mel bins (transpose so mel bins are channels, normalise, transpose back)
    -> conv_block1..4: (Conv3x3 pad 1 no bias -> BatchNorm -> ReLU) x 2 -> AvgPool 2x2 (floor)
    outputs conv_block1..4 (after pooling): 64/128/256/512 channels, strides 2/4/8/16 in time and frequency

The dropout layers are identities at inference; conv_block5/6 and the fully connected head are not written.
Convolution weights are stored as float16 initializers each followed by a Cast to float32 (``--fp32`` keeps
them float32: twice the size, exactly the checkpoint's values); batch-norm parameters stay float32 (bn eps
1e-5, torch's default). Opset 17; the output is byte-for-byte reproducible.

Writes ``<out>/model.onnx`` and ``<out>/spec.json`` (front end ``panns-cnn14`` / ``panns-16k`` / ``clap-2022``,
windows of 256 frames with hop 128, see ``WINDOW_FRAMES``).

``--synthetic`` writes a checkpoint with the exact key names, shapes and dtypes of the variant's real file
(random seeded weights, torchlibrosa's STFT and mel filter buffers) in torch's own format, so that the
converter can be exercised on a file shaped like the real one. ``--compact`` stores the tensors the converter
does not need (conv_block5/6, fc1, fc_audioset, STFT kernels, CLAP projection and text tower) as expanded
constants (stride-0 views of one element, as torch saves ``x.expand(...)``): same keys and shapes, a small file.
The CLAP synthetic file abbreviates the BERT text tower to a few small keys.
"""

import argparse
import collections
import hashlib
import json
import os
import pickle
import sys
import zipfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_zip  # noqa: E402  (models/torch_zip.py)

CHANNELS = [64, 128, 256, 512]
N_MELS = 64
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default
OPSET = 17
IR_VERSION = 8
PRODUCER = "sonomaly models/convert_cnn14.py"
PRODUCER_VERSION = "1"
# Analysis window: 256 frames (2.56 s at 10 ms hops; 1.86 s for CLAP's 7.26 ms) with half overlap. Divisible by
# 16 so that conv_block4 sees whole 2x2 pools (256 x 64 -> 16 x 4). Each frame is judged by the window whose
# centre is nearest, so it sits at least 64 frames from a window edge, which keeps most of conv_block4's receptive
# field (about 100 frames) inside real signal. A 10 s clip at 32 kHz (1001 frames) makes 7 windows.
WINDOW_FRAMES = 256
WINDOW_HOP = 128

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
REQUIRED = [f"bn0.{p}" for p in BN_PARAMS]
for _b in range(1, 5):
    REQUIRED += [f"conv_block{_b}.conv1.weight", f"conv_block{_b}.conv2.weight"]
    REQUIRED += [f"conv_block{_b}.bn{_i}.{_p}" for _i in (1, 2) for _p in BN_PARAMS]

VARIANTS = {
    "panns": dict(
        preset="panns-cnn14", name="panns-cnn14", sample_rate=32000, n_fft=1024, hop=320, fmin=50.0, fmax=14000.0,
        prefix="", checkpoint="Cnn14_mAP=0.431.pth",
        description="PANNs CNN14 (AudioSet, 32 kHz) conv_block1..4 with bn0 over the mel bins, 2x2 average pooling "
        "after every block. Input: PANNs log-mel, 32 kHz, frame 1024, hop 320, periodic Hann, centred with "
        "reflect padding, power, 64 Slaney mel bands 50-14000 Hz, 10 log10(max(x, 1e-10)); windows of 256 frames.",
        licence="see Zenodo record 3987831 (PANNs pretrained models, Kong et al.)",
        source="PANNs Cnn14_mAP=0.431.pth, Zenodo record 3987831; Kong et al., PANNs: Large-Scale Pretrained Audio "
        "Neural Networks for Audio Pattern Recognition, IEEE/ACM TASLP 2020; code qiuqiangkong/audioset_tagging_cnn",
    ),
    "panns-16k": dict(
        preset="panns-16k", name="panns-cnn14-16k", sample_rate=16000, n_fft=512, hop=160, fmin=50.0, fmax=8000.0,
        prefix="", checkpoint="Cnn14_16k_mAP=0.438.pth",
        description="PANNs CNN14 16 kHz (AudioSet) conv_block1..4 with bn0 over the mel bins, 2x2 average pooling "
        "after every block. Input: PANNs 16 kHz log-mel, frame 512, hop 160, periodic Hann, centred with reflect "
        "padding, power, 64 Slaney mel bands 50-8000 Hz, 10 log10(max(x, 1e-10)); windows of 256 frames.",
        licence="see Zenodo record 3987831 (PANNs pretrained models, Kong et al.)",
        source="PANNs Cnn14_16k_mAP=0.438.pth, Zenodo record 3987831; Kong et al., PANNs: Large-Scale Pretrained "
        "Audio Neural Networks for Audio Pattern Recognition, IEEE/ACM TASLP 2020; code "
        "qiuqiangkong/audioset_tagging_cnn",
    ),
    "clap-2022": dict(
        preset="clap-2022", name="clap-2022-cnn14", sample_rate=44100, n_fft=1024, hop=320, fmin=50.0, fmax=14000.0,
        prefix="audio_encoder.base.", checkpoint="CLAP_weights_2022.pth",
        description="Microsoft CLAP 2022 audio encoder (CNN14) conv_block1..4 with bn0 over the mel bins, 2x2 "
        "average pooling after every block. Input: msclap config_2022 log-mel, 44.1 kHz, frame 1024, hop 320, "
        "periodic Hann, centred with reflect padding, power, 64 Slaney mel bands 50-14000 Hz, "
        "10 log10(max(x, 1e-10)); windows of 256 frames.",
        licence="MIT (microsoft/CLAP, msclap); check the model card of the weights you downloaded",
        source="Microsoft CLAP CLAP_weights_2022.pth (msclap 2022 weights), tensors audio_encoder.base.*; Elizalde "
        "et al., CLAP: Learning Audio Concepts From Natural Language Supervision, ICASSP 2023; front end from "
        "msclap 1.3.4 configs/config_2022.yml",
    ),
}


# ----------------------------------------------------------------------------------------------
# front-end buffers (torchlibrosa), used to identify the variant of a checkpoint and by --synthetic
# ----------------------------------------------------------------------------------------------


def _hz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, mels)


def _mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def slaney_mel_filters(sr, n_fft, n_mels, fmin, fmax):
    """``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)`` (Slaney scale and area
    normalisation), ``[n_mels, n_fft // 2 + 1]`` float32; torchlibrosa stores its transpose as ``melW``."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, len(fftfreqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


def stft_kernels(n_fft):
    """torchlibrosa ``STFT`` conv kernels (``conv_real`` / ``conv_imag`` weights), ``[n_fft // 2 + 1, 1, n_fft]``:
    the DFT matrix's first n_fft/2+1 columns times a periodic Hann window."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    k = np.arange(n_fft // 2 + 1)
    phase = 2 * np.pi * ((np.outer(n, k) % n_fft) / n_fft)
    real = (np.cos(phase) * window[:, None]).T[:, None, :].astype(np.float32)
    imag = (-np.sin(phase) * window[:, None]).T[:, None, :].astype(np.float32)
    return real, imag


# ----------------------------------------------------------------------------------------------
# finding and checking the CNN14 tensors
# ----------------------------------------------------------------------------------------------


class ConvertError(Exception):
    pass


def find_cnn14(state, prefix=None):
    """Returns (prefix, {key without prefix: LazyTensor}) for the CNN14 in ``state``."""
    keys = [k for k, v in state.items() if isinstance(k, str) and torch_zip.is_tensor(v)]
    anchor = "conv_block1.conv1.weight"
    if prefix is not None:
        candidates = [prefix]
    else:
        candidates = sorted({k[: -len(anchor)] for k in keys if k.endswith(anchor)}, key=lambda p: (len(p), p))
    if not candidates:
        sample = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        raise ConvertError(
            f"no CNN14 found: no key ends with '{anchor}' ({len(keys)} tensors in the file: {sample})"
        )
    complete, partial = [], []
    keyset = set(keys)
    for p in candidates:
        missing = [p + r for r in REQUIRED if p + r not in keyset]
        (partial if missing else complete).append((p, missing))
    if len(complete) > 1:
        raise ConvertError(
            "several complete CNN14 layouts in the file, under prefixes "
            + ", ".join(repr(p) for p, _ in complete)
            + "; choose one with --prefix"
        )
    if not complete:
        p, missing = min(partial, key=lambda pm: len(pm[1]))
        hint = ""
        if all(m.startswith(p + "bn0.") for m in missing):
            hint = (" (the network has no input batch norm bn0: it is not a PANNs/CLAP CNN14; the aisfx model is "
                    "converted by models/convert_aisfx.py)")
        raise ConvertError(
            f"the CNN14 under prefix '{p}' is incomplete: missing "
            + ", ".join(missing[:12])
            + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
            + hint
        )
    p = complete[0][0]
    return p, collections.OrderedDict((r, state[p + r]) for r in REQUIRED)


def _as_f32(name, t):
    a = t.numpy()
    if a.dtype.kind != "f":
        raise ConvertError(f"{name}: dtype {a.dtype}, expected a floating-point tensor")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ConvertError(f"{name}: contains NaN or infinity")
    return a


def check_and_read(prefix, tensors):
    """Checks shapes and values; returns {key: float32 array}."""
    expected = {f"bn0.{p}": (N_MELS,) for p in BN_PARAMS}
    cin = 1
    for b, cout in enumerate(CHANNELS, start=1):
        expected[f"conv_block{b}.conv1.weight"] = (cout, cin, 3, 3)
        expected[f"conv_block{b}.conv2.weight"] = (cout, cout, 3, 3)
        for i in (1, 2):
            for p in BN_PARAMS:
                expected[f"conv_block{b}.bn{i}.{p}"] = (cout,)
        cin = cout
    out = collections.OrderedDict()
    for k, t in tensors.items():
        if tuple(t.shape) != expected[k]:
            raise ConvertError(f"{prefix}{k}: shape {list(t.shape)}, a CNN14 has {list(expected[k])}")
        out[k] = _as_f32(prefix + k, t)
    for k, v in out.items():
        if k.endswith("running_var") and np.any(v + BN_EPS <= 0):
            raise ConvertError(f"{prefix}{k}: a running variance is <= -eps, the batch norm would divide by zero")
    return out


def check_front_end(state, prefix, variant):
    """Compares the checkpoint's torchlibrosa buffers, when present, with the variant's front end. Returns notes
    for the user; raises when the buffers clearly belong to another variant."""
    notes = []
    v = VARIANTS[variant]
    conv = state.get(prefix + "spectrogram_extractor.stft.conv_real.weight")
    if torch_zip.is_tensor(conv):
        n_fft = conv.shape[-1] if len(conv.shape) == 3 else None
        if n_fft != v["n_fft"] or conv.shape[0] != v["n_fft"] // 2 + 1:
            fits = [n for n, m in VARIANTS.items() if m["n_fft"] == n_fft]
            raise ConvertError(
                f"{prefix}spectrogram_extractor.stft.conv_real.weight has shape {list(conv.shape)}: the network was "
                f"trained with n_fft {n_fft}, variant '{variant}' uses {v['n_fft']}"
                + (f" (try --variant {' or '.join(fits)})" if fits else "")
            )
        notes.append(f"STFT kernels: n_fft {n_fft}, as variant '{variant}'")
    melw = state.get(prefix + "logmel_extractor.melW")
    if torch_zip.is_tensor(melw):
        m = melw.numpy().astype(np.float64)
        errs = {}
        for name, meta in VARIANTS.items():
            ref = slaney_mel_filters(meta["sample_rate"], meta["n_fft"], N_MELS, meta["fmin"], meta["fmax"]).T
            if ref.shape == m.shape:
                errs[name] = float(np.max(np.abs(m - ref)) / np.max(np.abs(ref)))
        # PANNs 32 kHz and CLAP 44.1 kHz share n_fft 1024: only the mel filters tell them apart
        tol = 1e-3
        if errs.get(variant, 1.0) <= tol:
            notes.append(f"mel filterbank (logmel_extractor.melW) matches variant '{variant}' "
                         f"(max relative difference {errs[variant]:.1e})")
        else:
            others = [n for n, e in errs.items() if e <= tol]
            if others:
                raise ConvertError(
                    f"{prefix}logmel_extractor.melW is the mel filterbank of variant '{others[0]}' "
                    f"({VARIANTS[others[0]]['sample_rate']} Hz, {VARIANTS[others[0]]['fmin']:g}-"
                    f"{VARIANTS[others[0]]['fmax']:g} Hz), not of '{variant}': use --variant {others[0]} "
                    "(or --skip-front-end-check if you know better)"
                )
            notes.append(f"WARNING: logmel_extractor.melW matches no known variant (relative differences "
                         f"{ {n: round(e, 4) for n, e in errs.items()} }); converting as '{variant}'")
    if not notes:
        notes.append("no front-end buffers in the checkpoint: the variant could not be cross-checked")
    return notes


# ----------------------------------------------------------------------------------------------
# ONNX graph
# ----------------------------------------------------------------------------------------------


def is_conv(key):
    return key.endswith(("conv1.weight", "conv2.weight"))


def conv_weights_as_stored(weights, fp32=False):
    """The weights as the ONNX file holds them: conv kernels rounded to float16 unless fp32, the rest float32."""
    out = collections.OrderedDict()
    for k, v in weights.items():
        out[k] = v if (fp32 or not is_conv(k)) else v.astype(np.float16).astype(np.float32)
    return out


def build_model(weights, variant, fp32=False):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def f32(name):
        inits.append(numpy_helper.from_array(weights[name].astype(np.float32), name))
        return name

    def conv_weight(name):
        if fp32:
            return f32(name)
        w16 = weights[name].astype(np.float16)
        if not np.all(np.isfinite(w16)):
            raise ConvertError(f"{name} overflows float16; convert with --fp32")
        inits.append(numpy_helper.from_array(w16, name + ".f16"))
        nodes.append(helper.make_node("Cast", [name + ".f16"], [name], name=name + ".cast", to=TensorProto.FLOAT))
        return name

    # bn0 over the mel bins: [N, 1, T, M] -> [N, M, T, 1] -> BatchNorm (M channels) -> back
    nodes.append(helper.make_node("Transpose", ["logmel"], ["bn0.in"], name="bn0.transpose_in", perm=[0, 3, 2, 1]))
    nodes.append(
        helper.make_node(
            "BatchNormalization", ["bn0.in"] + [f32(f"bn0.{p}") for p in BN_PARAMS], ["bn0.out"], name="bn0",
            epsilon=BN_EPS,
        )
    )
    nodes.append(helper.make_node("Transpose", ["bn0.out"], ["bn0"], name="bn0.transpose_out", perm=[0, 3, 2, 1]))
    x = "bn0"
    for b in range(1, 5):
        blk = f"conv_block{b}"
        for i in (1, 2):
            w = conv_weight(f"{blk}.conv{i}.weight")
            conv_out = f"{blk}.conv{i}.out"
            nodes.append(
                helper.make_node(
                    "Conv", [x, w], [conv_out], name=f"{blk}.conv{i}",
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1,
                )
            )
            bn_out = f"{blk}.bn{i}.out"
            nodes.append(
                helper.make_node(
                    "BatchNormalization", [conv_out] + [f32(f"{blk}.bn{i}.{p}") for p in BN_PARAMS], [bn_out],
                    name=f"{blk}.bn{i}", epsilon=BN_EPS,
                )
            )
            relu_out = f"{blk}.relu{i}.out"
            nodes.append(helper.make_node("Relu", [bn_out], [relu_out], name=f"{blk}.relu{i}"))
            x = relu_out
        nodes.append(
            helper.make_node(
                "AveragePool", [x], [blk], name=f"{blk}.pool",
                kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0, count_include_pad=0,
            )
        )
        x = blk

    inputs = [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", 1, "frames", N_MELS])]
    outputs = [
        helper.make_tensor_value_info(
            f"conv_block{b}", TensorProto.FLOAT, ["batch", c, f"floor(frames/{2 ** b})", N_MELS // 2 ** b]
        )
        for b, c in enumerate(CHANNELS, start=1)
    ]
    meta = VARIANTS[variant]
    graph = helper.make_graph(
        nodes, f"{meta['name'].replace('-', '_')}_conv_blocks", inputs, outputs, initializer=inits,
        doc_string=f"CNN14 bn0 + conv_block1..4 ({meta['source']})",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string=f"sonomaly backbone {meta['name']}; weights licence: {meta['licence']}",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def make_spec(variant, licence=None, source=None, name=None, checkpoint_note=""):
    meta = VARIANTS[variant]
    outputs = [
        collections.OrderedDict(
            [("name", f"conv_block{b}"), ("channels", c), ("time_stride", 2 ** b), ("freq_stride", 2 ** b)]
        )
        for b, c in enumerate(CHANNELS, start=1)
    ]
    return collections.OrderedDict(
        [
            ("name", name or meta["name"]),
            ("description", meta["description"]),
            ("front_end", meta["preset"]),
            ("input_name", "logmel"),
            ("layout", "nctf"),
            ("outputs", outputs),
            ("window_frames", WINDOW_FRAMES),
            ("window_hop", WINDOW_HOP),
            ("licence", licence or meta["licence"]),
            ("source", (source or meta["source"]) + checkpoint_note),
        ]
    )


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(checkpoint, variant, out_dir, fp32=False, prefix=None, skip_front_end_check=False, licence=None,
            source=None, name=None, log=print):
    obj, opaque = torch_zip.load(checkpoint)
    state, where = torch_zip.state_dict_of(obj)
    if opaque:
        log(f"note: {len(opaque)} non-tensor globals in the checkpoint were skipped: {', '.join(sorted(opaque)[:6])}")
    found_prefix, tensors = find_cnn14(state, prefix)
    log(f"CNN14 tensors: checkpoint{where}, prefix '{found_prefix}'")
    weights = check_and_read(found_prefix, tensors)
    if not skip_front_end_check:
        for n in check_front_end(state, found_prefix, variant):
            log(n)
    model = build_model(weights, variant, fp32=fp32)
    data = model.SerializeToString(deterministic=True)
    note = f"; converted from {os.path.basename(checkpoint)} (sha256 {sha256_file(checkpoint)})"
    spec = make_spec(variant, licence=licence, source=source, name=name, checkpoint_note=note)
    os.makedirs(out_dir, exist_ok=True)
    onnx_path = os.path.join(out_dir, "model.onnx")
    spec_path = os.path.join(out_dir, "spec.json")
    with open(onnx_path, "wb") as f:
        f.write(data)
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2, ensure_ascii=False)
        f.write("\n")
    n_conv = sum(v.size for k, v in weights.items() if is_conv(k))
    n_all = sum(v.size for v in weights.values())
    log(f"parameters: {n_all:,} ({n_conv:,} conv weights + {n_all - n_conv:,} batch-norm values incl. bn0)")
    log(f"{onnx_path}: {len(data):,} bytes ({'float32' if fp32 else 'float16'} conv weights)")
    log(f"{spec_path}: front end '{spec['front_end']}', windows of {WINDOW_FRAMES} frames, hop {WINDOW_HOP}")
    return onnx_path, spec_path


# ----------------------------------------------------------------------------------------------
# synthetic checkpoints
# ----------------------------------------------------------------------------------------------


def _cnn14_layout(meta, out_emb=2048, classes=527):
    """(key, shape, kind) of a torchlibrosa-based CNN14 state dict, in ``state_dict()`` order."""
    nb = meta["n_fft"] // 2 + 1
    rows = [
        ("spectrogram_extractor.stft.conv_real.weight", (nb, 1, meta["n_fft"]), "stft_real"),
        ("spectrogram_extractor.stft.conv_imag.weight", (nb, 1, meta["n_fft"]), "stft_imag"),
        ("logmel_extractor.melW", (nb, N_MELS), "melW"),
    ]
    rows += [(f"bn0.{p}", (N_MELS,), f"bn0_{p}") for p in BN_PARAMS] + [("bn0.num_batches_tracked", (), "nbt")]
    cin = 1
    for b, cout in enumerate([64, 128, 256, 512, 1024, 2048], start=1):
        rows += [(f"conv_block{b}.conv1.weight", (cout, cin, 3, 3), "conv"),
                 (f"conv_block{b}.conv2.weight", (cout, cout, 3, 3), "conv")]
        for i in (1, 2):
            rows += [(f"conv_block{b}.bn{i}.{p}", (cout,), f"bn_{p}") for p in BN_PARAMS]
            rows += [(f"conv_block{b}.bn{i}.num_batches_tracked", (), "nbt")]
        cin = cout
    rows += [("fc1.weight", (out_emb, 2048), "linear_w"), ("fc1.bias", (out_emb,), "linear_b"),
             ("fc_audioset.weight", (classes, out_emb), "linear_w"), ("fc_audioset.bias", (classes,), "linear_b")]
    return rows


def synthetic_layout(variant):
    """(key, shape, kind) of the variant's real checkpoint state dict (the CLAP text tower abbreviated)."""
    meta = VARIANTS[variant]
    if variant != "clap-2022":
        return [(k, s, kind) for k, s, kind in _cnn14_layout(meta)]
    rows = [("logit_scale", (), "logit_scale")]
    rows += [("audio_encoder.base." + k, s, kind) for k, s, kind in _cnn14_layout(meta)]
    rows += [("audio_encoder.projection.linear1.weight", (1024, 2048), "linear_w"),
             ("audio_encoder.projection.linear2.weight", (1024, 1024), "linear_w"),
             ("audio_encoder.projection.layer_norm.weight", (1024,), "ones"),
             ("audio_encoder.projection.layer_norm.bias", (1024,), "zeros")]
    # bert-base-uncased text tower (caption_encoder.base.*): only a few small keys of it
    rows += [("caption_encoder.base.embeddings.position_ids", (1, 512), "position_ids"),
             ("caption_encoder.base.embeddings.LayerNorm.weight", (768,), "ones"),
             ("caption_encoder.base.embeddings.LayerNorm.bias", (768,), "zeros"),
             ("caption_encoder.projection.linear1.weight", (1024, 768), "linear_w"),
             ("caption_encoder.projection.linear2.weight", (1024, 1024), "linear_w"),
             ("caption_encoder.projection.layer_norm.weight", (1024,), "ones"),
             ("caption_encoder.projection.layer_norm.bias", (1024,), "zeros")]
    return rows


def _rng(seed, key):
    # one generator per key: a tensor's values depend on the seed and its name without prefix only
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def synthetic_value(kind, shape, key, seed, meta):
    """The synthetic value of one tensor. Batch-norm statistics are plausible: positive variances, bn0 running
    statistics in the range of log-mel decibels."""
    r = _rng(seed, key)
    f32 = np.float32
    if kind == "stft_real":
        return stft_kernels(meta["n_fft"])[0]
    if kind == "stft_imag":
        return stft_kernels(meta["n_fft"])[1]
    if kind == "melW":
        return np.ascontiguousarray(
            slaney_mel_filters(meta["sample_rate"], meta["n_fft"], N_MELS, meta["fmin"], meta["fmax"]).T)
    if kind == "conv":
        fan_in = shape[1] * shape[2] * shape[3]
        return (r.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(f32)
    if kind in ("bn_weight", "bn0_weight"):
        return r.uniform(0.5, 1.5, shape).astype(f32)
    if kind in ("bn_bias", "bn0_bias"):
        return (r.standard_normal(shape) * 0.2).astype(f32)
    if kind == "bn_running_mean":
        return (r.standard_normal(shape) * 0.2).astype(f32)
    if kind == "bn_running_var":
        return r.uniform(0.5, 2.0, shape).astype(f32)
    if kind == "bn0_running_mean":
        return r.uniform(-60.0, -20.0, shape).astype(f32)
    if kind == "bn0_running_var":
        return r.uniform(100.0, 600.0, shape).astype(f32)
    if kind == "nbt":
        return np.array(1_000_000, dtype=np.int64)
    if kind == "linear_w":
        return (r.standard_normal(shape) * 0.02).astype(f32)
    if kind == "linear_b":
        return np.zeros(shape, f32)
    if kind == "ones":
        return np.ones(shape, f32)
    if kind == "zeros":
        return np.zeros(shape, f32)
    if kind == "logit_scale":
        return np.array(np.log(1 / 0.07), dtype=f32)
    if kind == "position_ids":
        return np.arange(shape[1], dtype=np.int64)[None, :]
    raise ValueError(kind)


def _needed(key):
    k = key.split("audio_encoder.base.", 1)[-1]
    return k in REQUIRED or k.endswith("num_batches_tracked") or k == "logmel_extractor.melW" or k == "logit_scale"


def synthetic_state_dict(variant, seed=0, compact=False, drop=()):
    meta = VARIANTS[variant]
    sd = collections.OrderedDict()
    for key, shape, kind in synthetic_layout(variant):
        if key in drop:
            continue
        if compact and not _needed(key):
            sd[key] = torch_zip.Expanded(0.01, shape, np.int64 if kind == "position_ids" else np.float32)
        else:
            bare = key[len(meta["prefix"]):] if key.startswith(meta["prefix"]) else key
            sd[key] = synthetic_value(kind, shape, bare, seed, meta)
    unknown = set(drop) - {k for k, _, _ in synthetic_layout(variant)}
    if unknown:
        raise ConvertError(f"--drop-key: the {variant} checkpoint has no key {', '.join(sorted(unknown))}")
    return sd


def synthetic_weights(variant, seed=0):
    """What the converter should extract from a synthetic checkpoint: {REQUIRED key: float32 array}, generated
    directly (not read back from the file)."""
    meta = VARIANTS[variant]
    kinds = {k[len(meta["prefix"]):]: (s, kind) for k, s, kind in synthetic_layout(variant)}
    return collections.OrderedDict(
        (k, synthetic_value(kinds[k][1], kinds[k][0], k, seed, meta)) for k in REQUIRED
    )


def write_synthetic(path, variant, seed=0, fmt="zip", compact=False, drop=()):
    sd = synthetic_state_dict(variant, seed=seed, compact=compact, drop=drop)
    torch_zip.save({"model": sd}, path, fmt=fmt)
    return path


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="the .pth file (PANNs or CLAP 2022)")
    ap.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    ap.add_argument("--out", help="output directory, e.g. models/panns-cnn14")
    ap.add_argument("--fp32", action="store_true", help="store conv weights as float32 (default float16)")
    ap.add_argument("--prefix", help="key prefix of the CNN14 tensors (default: found automatically)")
    ap.add_argument("--skip-front-end-check", action="store_true",
                    help="do not compare the checkpoint's STFT/mel buffers with the variant's front end")
    ap.add_argument("--name", help="backbone name in spec.json (default per variant)")
    ap.add_argument("--licence", help="licence text for spec.json (default per variant)")
    ap.add_argument("--source", help="source text for spec.json (default per variant)")
    ap.add_argument("--synthetic", metavar="FILE", help="write a synthetic checkpoint of the variant to FILE")
    ap.add_argument("--seed", type=int, default=0, help="--synthetic: random seed")
    ap.add_argument("--format", choices=["zip", "legacy"], default="zip", help="--synthetic: torch file format")
    ap.add_argument("--compact", action="store_true", help="--synthetic: unused tensors as expanded constants")
    ap.add_argument("--drop-key", action="append", default=[], help="--synthetic: leave this key out (repeatable)")
    args = ap.parse_args(argv)

    try:
        if args.synthetic:
            write_synthetic(args.synthetic, args.variant, seed=args.seed, fmt=args.format, compact=args.compact,
                            drop=args.drop_key)
            print(f"{args.synthetic}: synthetic {args.variant} checkpoint ({args.format} format"
                  f"{', compact' if args.compact else ''}), {os.path.getsize(args.synthetic):,} bytes")
            return 0
        if not args.checkpoint or not args.out:
            ap.error("give CHECKPOINT and --out (or --synthetic FILE)")
        if not os.path.isfile(args.checkpoint):
            raise ConvertError(f"{args.checkpoint}: no such file")
        convert(args.checkpoint, args.variant, args.out, fp32=args.fp32, prefix=args.prefix,
                skip_front_end_check=args.skip_front_end_check, licence=args.licence, source=args.source,
                name=args.name)
        return 0
    except (ConvertError, ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
