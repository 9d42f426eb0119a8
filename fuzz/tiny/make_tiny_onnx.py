#!/usr/bin/env python3
"""Writes the tiny backbones of the ONNX and spec fuzz targets (fuzz/targets.rs) and seeds of the onnx corpus:

- tiny.onnx: one CNN14 block as models/convert_aisfx.py writes them (float16 weights cast to float32, Conv 3x3,
  BatchNormalization, Relu, twice, then MaxPool 2x2) with 2 channels, output `conv_block1`: the direct CNN14 path.
- tiny-tract.onnx: the same with an Add of a constant after the first Relu, so tract runs it.
- tiny.json: the spec of both (aisfx front end, 96 mel bins, windows of 8 frames).

    python3 fuzz/tiny/make_tiny_onnx.py
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
N_MELS = 96
C = 2


def build(with_add):
    rng = np.random.default_rng(7)
    nodes, inits = [], []

    def const(name, shape):
        w16 = (rng.standard_normal(shape) * 0.3).astype(np.float16)
        inits.append(numpy_helper.from_array(w16, name + ".f16"))
        nodes.append(helper.make_node("Cast", [name + ".f16"], [name], name=name + ".cast", to=TensorProto.FLOAT))
        return name

    x = "logmel"
    for i, cin in ((1, 1), (2, C)):
        w = const(f"conv{i}.weight", (C, cin, 3, 3))
        nodes.append(helper.make_node("Conv", [x, w], [f"conv{i}.out"], name=f"conv{i}", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1))
        bn = [const(f"bn{i}.{p}", (C,)) for p in ("weight", "bias", "running_mean")]
        var = f"bn{i}.running_var"
        inits.append(numpy_helper.from_array(np.full(C, 1.5, dtype=np.float16), var + ".f16"))
        nodes.append(helper.make_node("Cast", [var + ".f16"], [var], name=var + ".cast", to=TensorProto.FLOAT))
        nodes.append(helper.make_node("BatchNormalization", [f"conv{i}.out"] + bn + [var], [f"bn{i}.out"],
                                      name=f"bn{i}", epsilon=1e-5))
        nodes.append(helper.make_node("Relu", [f"bn{i}.out"], [f"relu{i}.out"], name=f"relu{i}"))
        x = f"relu{i}.out"
        if with_add and i == 1:
            inits.append(numpy_helper.from_array(np.array([0.25], dtype=np.float32), "shift"))
            nodes.append(helper.make_node("Add", [x, "shift"], ["shifted"], name="shift"))
            x = "shifted"
    nodes.append(helper.make_node("MaxPool", [x], ["conv_block1"], name="pool", kernel_shape=[2, 2], strides=[2, 2],
                                  pads=[0, 0, 0, 0], ceil_mode=0))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", 1, "frames", N_MELS])],
        [helper.make_tensor_value_info("conv_block1", TensorProto.FLOAT, ["batch", C, "floor(frames/2)", N_MELS // 2])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sonomaly-fuzz")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def main():
    for name, add in (("tiny.onnx", False), ("tiny-tract.onnx", True)):
        b = build(add)
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(b)
        print(f"{name}: {len(b)} bytes")
    spec = {
        "name": "tiny", "front_end": "aisfx", "input_name": "logmel", "layout": "nctf",
        "outputs": [{"name": "conv_block1", "channels": C, "time_stride": 2, "freq_stride": 2}],
        "window_frames": 8, "window_hop": 4,
    }
    with open(os.path.join(HERE, "tiny.json"), "w") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
