#!/usr/bin/env python3
"""Convert the pre-trained aisfx 0.1.2 embedding network into sonomaly's default backbone.

    python3 models/convert_aisfx.py [--wheel PATH] --out models/aisfx-cnn14

Without --wheel, `pip download --no-deps aisfx==0.1.2` fetches the wheel into a temporary directory.

The wheel ships `aisfx/models/checkpoint.pth`, a zip-format torch pickle holding a tuple
(state_dict, ds_dict). It is read WITHOUT torch: a restricted unpickler allows only the few globals a
tensor state dict needs (plus numpy integer scalars, which the
checkpoint's ds_dict uses) and maps each storage to the raw little-endian bytes of `<archive>/data/<key>`.

Only the four conv blocks of `embedding_net` (EmbeddingNet('max', ks=3, strd=1, hl1=64), a CNN14-style
conv_block1..4 with 64/128/256/512 channels) are kept; the cross-dataset classifier heads are dropped.
Each block: Conv3x3(pad 1, no bias) -> BN -> ReLU -> Conv3x3 -> BN -> ReLU -> MaxPool 2x2 (blocks 1-3;
block 4 pools with (1, 1), i.e. not at all). The four block outputs are the graph outputs.

Weights are stored as float16 initializers, each followed by a Cast to float32, so the graph computes in
float32 and the file stays under 10 MB. The output is byte-for-byte reproducible.

Writes `<out>/model.onnx` and `<out>/spec.json`.
"""

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WHEEL_NAME = "aisfx-0.1.2-py2.py3-none-any.whl"
WHEEL_SHA256 = "bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194"
CHECKPOINT_IN_WHEEL = "aisfx/models/checkpoint.pth"
PREFIX = "embedding_net."
CHANNELS = [64, 128, 256, 512]
N_MELS = 96
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; keeps older runtimes happy
PRODUCER = "sonomaly models/convert_aisfx.py"
PRODUCER_VERSION = "1"

SPEC = collections.OrderedDict(
    [
        ("name", "aisfx-cnn14"),
        (
            "description",
            "CNN14-style conv_block1..4 (64/128/256/512 channels, 3x3 convs, batch norm, ReLU, 2x2 max pooling "
            "after blocks 1-3) with the pre-trained weights of the aisfx 0.1.2 embedding network (X-Sequential-CE, "
            "cross-dataset sound-effects training). Input: aisfx log-mel, 44.1 kHz, frame 2048, hop 1024, "
            "96 HTK mel bands 0-22050 Hz, log10(1 + 10000 x) / 9.457798957824707, blocks of 100 frames. "
            "Classifier heads dropped; weights rounded to float16.",
        ),
        ("front_end", "aisfx"),
        ("input_name", "logmel"),
        ("layout", "nctf"),
        (
            "outputs",
            [
                collections.OrderedDict(
                    [("name", "conv_block1"), ("channels", 64), ("time_stride", 2), ("freq_stride", 2)]
                ),
                collections.OrderedDict(
                    [("name", "conv_block2"), ("channels", 128), ("time_stride", 4), ("freq_stride", 4)]
                ),
                collections.OrderedDict(
                    [("name", "conv_block3"), ("channels", 256), ("time_stride", 8), ("freq_stride", 8)]
                ),
                collections.OrderedDict(
                    [("name", "conv_block4"), ("channels", 512), ("time_stride", 8), ("freq_stride", 8)]
                ),
            ],
        ),
        ("window_frames", 100),
        ("window_hop", 50),
        ("licence", "CC BY 4.0"),
        (
            "source",
            "aisfx 0.1.2 (PyPI), aisfx/models/checkpoint.pth; Ma & Lerch, Representation Learning for the "
            "Automatic Indexing of Sound Effects Libraries, ISMIR 2022",
        ),
    ]
)


# ----------------------------------------------------------------------------------------------
# torch-free checkpoint reader
# ----------------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for torch.<X>Storage: only carries the numpy dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    """numpy equivalent of torch._utils._rebuild_tensor_v2: a strided view into the storage (copied)."""
    itemsize = storage.dtype.itemsize
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) * itemsize for s in stride)
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=storage.dtype.newbyteorder("="))
    needed = storage_offset + (
        1 + sum((n - 1) * s // itemsize for n, s in zip(size, stride)) if size else 1
    )
    if needed > storage.size:
        raise ValueError(f"tensor view out of storage bounds ({needed} > {storage.size})")
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size, strides=stride)
    return np.ascontiguousarray(view).astype(storage.dtype.newbyteorder("="))


def _numpy_dtype(spec, align=False, copy=False):
    """numpy.dtype, restricted to plain numeric/bool types (the checkpoint's ds_dict holds numpy ints)."""
    dt = np.dtype(spec)
    if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not allowed")
    return dt


def _numpy_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar for plain numeric dtypes: the value from its raw bytes."""
    if not isinstance(dtype, np.dtype) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("unexpected numpy scalar payload")
    _numpy_dtype(dtype)
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _codecs_encode(text, encoding="utf-8"):
    """_codecs.encode as protocol-2 pickles use it to carry bytes: str -> latin-1 bytes only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # ds_dict (dataset name -> (index, number of classes)) stores numpy ints:
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights checkpoint")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            arr = np.frombuffer(raw, dtype=storage_type.dtype)
            if arr.size != numel:
                raise pickle.UnpicklingError(f"storage {key}: {arr.size} elements, expected {numel}")
            self._storages[key] = arr
        return self._storages[key]


def load_checkpoint(path_or_bytes):
    """Load a zip-format torch checkpoint into nested Python objects with numpy arrays as tensors."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    with zipfile.ZipFile(src) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"expected one */data.pkl in the checkpoint, found {pkl}")
        prefix = pkl[0][: -len("/data.pkl")]
        with archive.open(pkl[0]) as f:
            return _RestrictedUnpickler(io.BytesIO(f.read()), archive, prefix).load()


def read_wheel_checkpoint(wheel_path, verify=True):
    if verify:
        with open(wheel_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != WHEEL_SHA256:
            raise ValueError(f"{wheel_path}: sha256 {digest}, expected {WHEEL_SHA256} (aisfx 0.1.2 from PyPI)")
    with zipfile.ZipFile(wheel_path) as wheel:
        return wheel.read(CHECKPOINT_IN_WHEEL)


def embedding_state(checkpoint):
    """Return {'conv_block1.conv1.weight': array, ...} for the four conv blocks (float32)."""
    state = checkpoint[0] if isinstance(checkpoint, tuple) else checkpoint
    out = collections.OrderedDict()
    for b in range(1, 5):
        for part in ("conv1", "conv2"):
            out[f"conv_block{b}.{part}.weight"] = state[f"{PREFIX}conv_block{b}.{part}.weight"]
        for part in ("bn1", "bn2"):
            for p in ("weight", "bias", "running_mean", "running_var"):
                out[f"conv_block{b}.{part}.{p}"] = state[f"{PREFIX}conv_block{b}.{part}.{p}"]
    cin = 1
    for b, cout in enumerate(CHANNELS, start=1):
        assert out[f"conv_block{b}.conv1.weight"].shape == (cout, cin, 3, 3)
        assert out[f"conv_block{b}.conv2.weight"].shape == (cout, cout, 3, 3)
        for part in ("bn1", "bn2"):
            for p in ("weight", "bias", "running_mean", "running_var"):
                assert out[f"conv_block{b}.{part}.{p}"].shape == (cout,)
        cin = cout
    for k, v in out.items():
        assert v.dtype == np.float32, (k, v.dtype)
        assert np.all(np.isfinite(v)), k
    return out


def fp16_round(weights):
    """The weights as the ONNX file holds them: rounded to float16, computed in float32."""
    return collections.OrderedDict((k, v.astype(np.float16).astype(np.float32)) for k, v in weights.items())


# ----------------------------------------------------------------------------------------------
# ONNX graph
# ----------------------------------------------------------------------------------------------


def build_model(weights):
    nodes, inits = [], []

    def const(name):
        w16 = weights[name].astype(np.float16)
        if not np.all(np.isfinite(w16)):
            raise ValueError(f"{name} overflows float16")
        inits.append(numpy_helper.from_array(w16, name + ".f16"))
        nodes.append(helper.make_node("Cast", [name + ".f16"], [name], name=name + ".cast", to=TensorProto.FLOAT))
        return name

    x = "logmel"
    for b in range(1, 5):
        blk = f"conv_block{b}"
        for i in (1, 2):
            w = const(f"{blk}.conv{i}.weight")
            conv_out = f"{blk}.conv{i}.out"
            nodes.append(
                helper.make_node(
                    "Conv", [x, w], [conv_out], name=f"{blk}.conv{i}",
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1,
                )
            )
            bn = [const(f"{blk}.bn{i}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
            bn_out = f"{blk}.bn{i}.out"
            nodes.append(
                helper.make_node("BatchNormalization", [conv_out] + bn, [bn_out], name=f"{blk}.bn{i}", epsilon=BN_EPS)
            )
            relu_out = f"{blk}.relu{i}.out" if (i == 1 or b < 4) else blk
            nodes.append(helper.make_node("Relu", [bn_out], [relu_out], name=f"{blk}.relu{i}"))
            x = relu_out
        if b < 4:
            nodes.append(
                helper.make_node(
                    "MaxPool", [x], [blk], name=f"{blk}.pool",
                    kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0,
                )
            )
            x = blk
        # block 4: pool (1, 1) is the identity; its last Relu already writes `conv_block4`

    def sym(div):
        # an ONNX shape expression (what onnx's symbolic inference writes; tract-onnx parses it)
        return f"floor(frames/{div})"

    inputs = [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", 1, "frames", N_MELS])]
    outputs = []
    for b, (c, div) in enumerate(zip(CHANNELS, [2, 4, 8, 8]), start=1):
        outputs.append(
            helper.make_tensor_value_info(f"conv_block{b}", TensorProto.FLOAT, ["batch", c, sym(div), N_MELS // div])
        )
    graph = helper.make_graph(
        nodes, "aisfx_cnn14_conv_blocks", inputs, outputs, initializer=inits,
        doc_string="aisfx 0.1.2 EmbeddingNet conv_block1..4 (CC BY 4.0, Ma & Lerch, ISMIR 2022); see models/NOTICE",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string="sonomaly default backbone aisfx-cnn14; licence CC BY 4.0 (see models/NOTICE)",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def count_params(weights):
    return int(sum(v.size for v in weights.values()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help=f"path to {WHEEL_NAME} (default: pip download it)")
    ap.add_argument("--out", required=True, help="output directory, e.g. models/aisfx-cnn14")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "aisfx==0.1.2", "-d", tmp],
                check=True,
            )
            wheel = os.path.join(tmp, WHEEL_NAME)
        ckpt = load_checkpoint(read_wheel_checkpoint(wheel))

    weights = embedding_state(ckpt)
    model = build_model(weights)

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    data = model.SerializeToString(deterministic=True)
    with open(onnx_path, "wb") as f:
        f.write(data)
    spec_path = os.path.join(args.out, "spec.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(SPEC, f, indent=2, ensure_ascii=False)
        f.write("\n")

    n_conv = sum(v.size for k, v in weights.items() if k.endswith("conv1.weight") or k.endswith("conv2.weight"))
    print(f"parameters: {count_params(weights):,} ({n_conv:,} conv weights + "
          f"{count_params(weights) - n_conv:,} batch-norm weights/biases/running statistics)")
    print(f"{onnx_path}: {len(data):,} bytes")
    print(f"{spec_path}: {os.path.getsize(spec_path):,} bytes")


if __name__ == "__main__":
    main()
