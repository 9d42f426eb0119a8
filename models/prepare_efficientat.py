#!/usr/bin/env python3
"""Prepare the EfficientAT mn04_as ONNX export as a sonomaly backbone: block outputs become graph outputs.

    python3 models/prepare_efficientat.py [--onnx ../shared/models/efficientat-mn04/mn04_as.onnx] \
        [--out models/efficientat-mn04/model.onnx]

Input: `mn04_as.onnx` (3,952,020 bytes, sha256 8fc05d32...5a15, checked before anything else), a torch.onnx
export of EfficientAT's `mn04_as` (MobileNetV3 width 0.4 trained on AudioSet; Schmid, Koutini & Widmer,
"Efficient Large-scale Audio Tagging via Transformer-to-CNN Knowledge Distillation", ICASSP 2023; MIT licence,
github.com/fschmid56/EfficientAT). Its input is `spec` `[batch, 1, 128, time_frames]` (mel bins before time), its
only output `logits` `[batch, 527]`.

What this script changes, with numpy and onnx only (no torch, no onnxruntime), and nothing else:
  0. The eight `Unsqueeze(x, axes=[0]) -> ReduceMax(axes=[0], keepdims=0)` pairs are removed and their consumers
     read `x`: EfficientAT's squeeze-excitation takes the maximum over a stack of its (here: one) excitation
     outputs (`ConcurrentSEBlock` with `agg_op="max"`), and the maximum of one value is that value, bit for bit.
     tract runs such a reduction elementwise: on a 10 s input these eight no-ops took 85 % of its time
     (114 of 135 ms, one thread).
  1. The outputs of the 17 blocks `model.features.0` .. `model.features.16` become graph outputs named
     `features.0` .. `features.16` (the exporter's tensor names such as `add_1511` are renamed everywhere), after
     `logits`, which is kept. A block's output is the tensor the next block's first convolution reads; the last
     block (`features.16`, Conv -> BN -> Hardswish) ends at the Hardswish after its convolution.
  2. The symbolic dimensions (`batch`, `time_frames`, `unk__N`) are cleared from `value_info` and the outputs
     (left unknown), so a runtime that fixes the input shape accepts the graph: tract, given `[1, 1, 128, 256]`,
     otherwise stops at the first convolution with "Impossible to unify Sym(batch) with Val(1)". Fixed
     dimensions (channels, mel bins) are kept. The graph input keeps its symbolic
     `batch` and `time_frames`, so onnxruntime still takes any batch and length.
  3. Two metadata entries record the source file's sha256 and this script.

The weights and the other operators and their order are untouched, and every output equals the original graph's
bit for bit (onnxruntime on random inputs; tests/efficientat.rs compares tract with onnxruntime on the result).
The output is byte-for-byte the same on every run.
"""

import argparse
import hashlib
import os
import sys

import onnx
from onnx import TensorProto, numpy_helper

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_IN = os.path.join(ROOT, "..", "shared", "models", "efficientat-mn04", "mn04_as.onnx")
DEFAULT_OUT = os.path.join(ROOT, "models", "efficientat-mn04", "model.onnx")
SOURCE_SIZE = 3_952_020
SOURCE_SHA256 = "8fc05d32eeb06b50aa539f8e34e22bf38ed992a94baf04db0b9a247702675a15"
N_BLOCKS = 17
INPUT_NAME = "spec"
N_MELS = 128


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def block_outputs(graph):
    """Exporter tensor name of each block's output, `[features.0 .. features.16]`."""
    convs = [n for n in graph.node if n.op_type == "Conv"]
    names = []
    for b in range(1, N_BLOCKS):
        first = next((n for n in convs if n.input[1].startswith(f"model.features.{b}.")), None)
        if first is None:
            raise SystemExit(f"no convolution of model.features.{b} in the graph")
        names.append(first.input[0])
    last = [n for n in convs if n.input[1] == f"model.features.{N_BLOCKS - 1}.0.weight"]
    if len(last) != 1:
        raise SystemExit(f"expected one convolution model.features.{N_BLOCKS - 1}.0, found {len(last)}")
    consumers = [n for n in graph.node if last[0].output[0] in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "HardSwish":
        raise SystemExit("model.features.16's convolution is not followed by a single HardSwish")
    names.append(consumers[0].output[0])
    # The first block's output is its Hardswish, which the second block's first convolution reads.
    producer = {o: n for n in graph.node for o in n.output}
    if producer[names[0]].op_type != "HardSwish" or producer[names[0]].input[0] != next(
        n.output[0] for n in convs if n.input[1] == "model.features.0.0.weight"
    ):
        raise SystemExit("features.0 does not end with the Hardswish after its convolution")
    if len(set(names)) != N_BLOCKS:
        raise SystemExit(f"block outputs are not distinct: {names}")
    return names


def drop_singleton_max(graph):
    """Removes `Unsqueeze(x, [0]) -> ReduceMax([0], keepdims=0)` pairs (the identity); returns how many."""
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    uses = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    rewire, dead = {}, set()
    for n in graph.node:
        if n.op_type != "ReduceMax" or len(n.input) != 2:
            continue
        u = producer.get(n.input[0])
        keepdims = next((a.i for a in n.attribute if a.name == "keepdims"), 1)
        if (u is None or u.op_type != "Unsqueeze" or len(u.input) != 2 or uses.get(u.output[0]) != 1
                or keepdims != 0 or u.input[1] not in consts or n.input[1] not in consts
                or consts[u.input[1]].tolist() != [0] or consts[n.input[1]].tolist() != [0]):
            continue
        rewire[n.output[0]] = u.input[0]
        dead.update([n.name, u.name])
    kept = [n for n in graph.node if n.name not in dead]
    for n in kept:
        for i, name in enumerate(n.input):
            if name in rewire:
                n.input[i] = rewire[name]
    gone = set(rewire) | {producer[r].input[0] for r in rewire}
    del graph.node[:]
    graph.node.extend(kept)
    infos = [vi for vi in graph.value_info if vi.name not in gone]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return len(rewire)


def clear_symbolic(value_info):
    """Unsets every `dim_param` of a ValueInfoProto's tensor shape (the dimension becomes unknown)."""
    t = value_info.type.tensor_type
    for d in t.shape.dim:
        if d.HasField("dim_param"):
            d.ClearField("dim_param")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", default=DEFAULT_IN, help="mn04_as.onnx (default: %(default)s)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="where to write (default: %(default)s)")
    args = ap.parse_args()

    with open(args.onnx, "rb") as f:
        data = f.read()
    if len(data) != SOURCE_SIZE or sha256(data) != SOURCE_SHA256:
        raise SystemExit(
            f"{args.onnx}: {len(data):,} bytes, sha256 {sha256(data)}; expected {SOURCE_SIZE:,} bytes, sha256 "
            f"{SOURCE_SHA256} (the mn04_as export described in shared/models/efficientat-mn04/SOURCE.md)"
        )
    model = onnx.load_from_string(data)
    graph = model.graph
    if [i.name for i in graph.input] != [INPUT_NAME] or [o.name for o in graph.output] != ["logits"]:
        raise SystemExit(f"unexpected inputs/outputs: {[i.name for i in graph.input]} -> {[o.name for o in graph.output]}")

    removed = drop_singleton_max(graph)
    if removed != 8:
        raise SystemExit(f"expected 8 Unsqueeze -> ReduceMax pairs in the squeeze-excitation blocks, found {removed}")
    old = block_outputs(graph)
    new = [f"features.{b}" for b in range(N_BLOCKS)]
    taken = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    clash = [n for n in new if n in taken]
    if clash:
        raise SystemExit(f"the graph already has tensors named {clash}")
    rename = dict(zip(old, new))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for i, name in enumerate(node.output):
            if name in rename:
                node.output[i] = rename[name]

    # Block outputs leave value_info for the graph outputs (keeping the exporter's element type and fixed dims).
    infos = {vi.name: vi for vi in graph.value_info}
    kept = []
    moved = {}
    for vi in graph.value_info:
        if vi.name in rename:
            moved[rename[vi.name]] = vi
        else:
            kept.append(vi)
    for name in new:
        if name not in moved:
            raise SystemExit(f"the export has no value_info for the output of {name}")
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(moved[name])
        vi.name = name
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT or len(vi.type.tensor_type.shape.dim) != 4:
            raise SystemExit(f"{name}: expected a float32 tensor of rank 4")
        moved[name] = vi
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for vi in graph.value_info:
        clear_symbolic(vi)
    for name in new:
        clear_symbolic(moved[name])
        graph.output.append(moved[name])
    clear_symbolic(graph.output[0])  # logits: [batch, 527] -> [?, 527]
    assert len(infos) == len(kept) + N_BLOCKS

    for key, value in (
        ("sonomaly.source_sha256", SOURCE_SHA256),
        ("sonomaly.prepared_by", "models/prepare_efficientat.py (block outputs features.0..16 as graph outputs, "
                                 "8 single-input maxima removed)"),
    ):
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value

    onnx.checker.check_model(model, full_check=False)
    out = model.SerializeToString()
    # Same input, same bytes: serialising the parsed result again must not change it.
    if onnx.load_from_string(out).SerializeToString() != out:
        raise SystemExit("serialisation is not stable")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(out)
    print(f"{args.out}: {len(out):,} bytes, sha256 {sha256(out)}")
    channels = {}
    for name, vi in moved.items():
        dims = [d.dim_value if d.HasField("dim_value") else "?" for d in vi.type.tensor_type.shape.dim]
        channels[name] = dims
    for name in new:
        print(f"  {name:12s} <- {[k for k, v in rename.items() if v == name][0]:14s} dims {channels[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
