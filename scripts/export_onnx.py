#!/usr/bin/env python3
"""Export the digits MLPs (verifier/models/digits-*.json) to ONNX for ezkl.

Reads the float weights written by `scripts/train_digits.py` and writes, next
to each JSON file, `<name>.onnx`: a graph with one float input `input` of
shape [1, 64] (value = pixel * input_scale, i.e. pixel / 16), one `Gemm`
(`y = x W^T + b`, weights stored [out][in] as in the JSON, transB = 1) per
layer, `Relu` between layers, and one float output `output` of shape [1, 10]
(the logits). Only the `onnx` and `numpy` packages are needed, no torch.

Deterministic: the same JSON always gives byte-identical ONNX (fixed opset,
fixed names, no timestamps or producer version strings).

    .venv/bin/python scripts/export_onnx.py                 # both models
    .venv/bin/python scripts/export_onnx.py --out-dir DIR NAME.json ...
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(ROOT, "verifier", "models")
DEFAULT_MODELS = ["digits-64-32-10", "digits-64-128-10"]


def build(doc):
    """The ONNX ModelProto for one model document."""
    layers = doc["layers"]
    dims = doc["dims"]
    nodes, inits = [], []
    prev = "input"
    for i, layer in enumerate(layers):
        w = np.asarray(layer["weights"], dtype=np.float32)
        b = np.asarray(layer["bias"], dtype=np.float32)
        if w.shape != (dims[i + 1], dims[i]) or b.shape != (dims[i + 1],):
            raise ValueError(f"layer {i}: shape {w.shape}/{b.shape} does not match dims {dims}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ValueError(f"layer {i}: non-finite weights")
        inits.append(numpy_helper.from_array(w, name=f"W{i}"))
        inits.append(numpy_helper.from_array(b, name=f"b{i}"))
        last = i + 1 == len(layers)
        out = "output" if last else f"z{i}"
        nodes.append(
            helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [out], name=f"gemm{i}", transB=1)
        )
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"a{i}"], name=f"relu{i}"))
            prev = f"a{i}"
    graph = helper.make_graph(
        nodes,
        doc["name"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, dims[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, dims[-1]])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="infernet/export_onnx.py",
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def reference_logits(doc, pixels):
    """Float forward pass in numpy (float32, like an ONNX runtime)."""
    a = np.asarray(pixels, dtype=np.float32) * np.float32(doc["input_scale"])
    for i, layer in enumerate(doc["layers"]):
        w = np.asarray(layer["weights"], dtype=np.float32)
        b = np.asarray(layer["bias"], dtype=np.float32)
        a = a @ w.T + b
        if i + 1 < len(doc["layers"]):
            a = np.maximum(a, 0)
    return a


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="model JSON files (default: the bundled digits models)")
    ap.add_argument("--out-dir", help="write the .onnx files here (default: next to each JSON)")
    args = ap.parse_args(argv)
    paths = args.models or [os.path.join(MODELS_DIR, f"{n}.json") for n in DEFAULT_MODELS]
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        model = build(doc)
        stem = os.path.splitext(os.path.basename(path))[0]
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(path))
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, f"{stem}.onnx")
        data = model.SerializeToString(deterministic=True)
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
        print(f"{out}: {len(data)} bytes, dims {doc['dims']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
