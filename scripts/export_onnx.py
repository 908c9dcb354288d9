#!/usr/bin/env python3
"""Export the digits models (verifier/models/digits-*.json) to ONNX for ezkl.

Reads the float weights written by `scripts/train_digits.py` and writes, next
to each JSON file, `<name>.onnx` (opset 13), with one float output `output` of
shape [1, 10] (the logits):

  MLPs (digits-64-<H>-10): one float input `input` of shape [1, 64] (value =
      pixel * input_scale, i.e. pixel / 16), one `Gemm` (`y = x W^T + b`,
      weights stored [out][in] as in the JSON, transB = 1) per layer, `Relu`
      between layers.
  CNN (digits-cnn-4-8, layers carrying "conv"): one float input `input` of
      shape [1, 1, 8, 8] (the 64 pixels row-major, / 16), one `Conv` per conv
      layer (weights [out_c, in_c, k, k] = the JSON rows reshaped, bias
      [out_c], pads [p, p, p, p], strides [s, s], kernel_shape [k, k]) and
      `Relu`, a `Flatten` (axis 1: CHW order) before the first dense layer,
      then `Gemm` + `Relu` as for the MLPs.

Only the `onnx` and `numpy` packages are needed, no torch.

Deterministic: the same JSON always gives byte-identical ONNX (fixed opset,
fixed names, no timestamps or producer version strings).

Self-check: before putting each file in place the script runs it with
`onnx.reference.ReferenceEvaluator` on the model's first 50 held-out images
(or, for a document without a test split, 50 fixed pseudo-random images) and
compares the logits with a direct numpy forward pass of the JSON weights
(max abs diff < 1e-4); a mismatch fails the script (exit status 1).

    .venv/bin/python scripts/export_onnx.py                 # the bundled models
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
DEFAULT_MODELS = ["digits-64-32-10", "digits-64-128-10", "digits-cnn-4-8"]
SELF_CHECK_IMAGES = 50
SELF_CHECK_TOL = 1e-4


def conv_out_hw(c):
    out_h = (c["in_h"] + 2 * c["padding"] - c["kernel"]) // c["stride"] + 1
    out_w = (c["in_w"] + 2 * c["padding"] - c["kernel"]) // c["stride"] + 1
    return out_h, out_w


def _conv_params(doc, i):
    """Checked (weights [out_c, in_c, k, k], bias [out_c], conv dict) of conv
    layer i."""
    layer, dims = doc["layers"][i], doc["dims"]
    c = layer["conv"]
    keys = ("in_channels", "in_h", "in_w", "out_channels", "kernel", "stride", "padding")
    if any(not isinstance(c.get(k), int) or isinstance(c.get(k), bool) for k in keys):
        raise ValueError(f"layer {i}: conv needs integer {keys}")
    if min(c[k] for k in keys) < 0 or min(c[k] for k in keys if k != "padding") < 1:
        raise ValueError(f"layer {i}: bad conv {c}")
    oh, ow = conv_out_hw(c)
    if oh < 1 or ow < 1:
        raise ValueError(f"layer {i}: conv output is empty")
    ic, oc, k = c["in_channels"], c["out_channels"], c["kernel"]
    if dims[i] != ic * c["in_h"] * c["in_w"] or dims[i + 1] != oc * oh * ow:
        raise ValueError(f"layer {i}: conv {c} does not match dims {dims}")
    w = np.asarray(layer["weights"], dtype=np.float32)
    b = np.asarray(layer["bias"], dtype=np.float32)
    if w.shape != (oc, ic * k * k) or b.shape != (oc,):
        raise ValueError(f"layer {i}: shape {w.shape}/{b.shape} does not match conv {c}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ValueError(f"layer {i}: non-finite weights")
    return w.reshape(oc, ic, k, k), b, c


def build(doc):
    """The ONNX ModelProto for one model document."""
    layers = doc["layers"]
    dims = doc["dims"]
    nodes, inits = [], []
    prev = "input"
    is_cnn = "conv" in layers[0]
    if is_cnn:
        c0 = layers[0]["conv"]
        input_shape = [1, c0["in_channels"], c0["in_h"], c0["in_w"]]
    else:
        input_shape = [1, dims[0]]
    spatial = is_cnn  # is `prev` an NCHW tensor?
    for i, layer in enumerate(layers):
        last = i + 1 == len(layers)
        if "conv" in layer:
            if not spatial:
                raise ValueError(f"layer {i}: conv layer after a dense layer")
            if last:
                raise ValueError("the last layer must be dense")
            w, b, c = _conv_params(doc, i)
            inits.append(numpy_helper.from_array(w, name=f"W{i}"))
            inits.append(numpy_helper.from_array(b, name=f"b{i}"))
            p, st, k = c["padding"], c["stride"], c["kernel"]
            nodes.append(
                helper.make_node(
                    "Conv",
                    [prev, f"W{i}", f"b{i}"],
                    [f"z{i}"],
                    name=f"conv{i}",
                    kernel_shape=[k, k],
                    pads=[p, p, p, p],
                    strides=[st, st],
                )
            )
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"a{i}"], name=f"relu{i}"))
            prev = f"a{i}"
            continue
        if spatial:
            nodes.append(helper.make_node("Flatten", [prev], [f"f{i}"], name=f"flatten{i}", axis=1))
            prev = f"f{i}"
            spatial = False
        w = np.asarray(layer["weights"], dtype=np.float32)
        b = np.asarray(layer["bias"], dtype=np.float32)
        if w.shape != (dims[i + 1], dims[i]) or b.shape != (dims[i + 1],):
            raise ValueError(f"layer {i}: shape {w.shape}/{b.shape} does not match dims {dims}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ValueError(f"layer {i}: non-finite weights")
        inits.append(numpy_helper.from_array(w, name=f"W{i}"))
        inits.append(numpy_helper.from_array(b, name=f"b{i}"))
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
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
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


def _conv_reference(a, w, b, c):
    """Cross-correlation straight from the definition (independent of the
    training script's im2col): a [N, C*H*W] CHW-flattened -> [N, O*OH*OW]."""
    n = a.shape[0]
    p, st, k = c["padding"], c["stride"], c["kernel"]
    x = a.reshape(n, c["in_channels"], c["in_h"], c["in_w"])
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = conv_out_hw(c)
    out = np.zeros((n, c["out_channels"], oh, ow), dtype=np.float32)
    for y in range(oh):
        for xx in range(ow):
            patch = x[:, :, y * st : y * st + k, xx * st : xx * st + k]  # [N, C, k, k]
            out[:, :, y, xx] = np.einsum("nijk,oijk->no", patch, w) + b
    return out.reshape(n, -1)


def reference_logits(doc, pixels):
    """Float forward pass in numpy (float32, like an ONNX runtime); pixels is
    [N, 64] (or [64]), conv activations flattened CHW."""
    a = np.asarray(pixels, dtype=np.float32) * np.float32(doc["input_scale"])
    single = a.ndim == 1
    a = np.atleast_2d(a)
    for i, layer in enumerate(doc["layers"]):
        if "conv" in layer:
            w, b, c = _conv_params(doc, i)
            a = _conv_reference(a, w, b, c)
        else:
            w = np.asarray(layer["weights"], dtype=np.float32)
            b = np.asarray(layer["bias"], dtype=np.float32)
            a = a @ w.T + b
        if i + 1 < len(doc["layers"]):
            a = np.maximum(a, 0)
    return a[0] if single else a


def self_check(doc, path):
    """Run the written ONNX file with onnx's reference evaluator and compare
    its logits with `reference_logits`; returns the max abs difference, raises
    on a mismatch."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    pixels = doc.get("test", {}).get("x", [])[:SELF_CHECK_IMAGES]
    if len(pixels) < SELF_CHECK_IMAGES:  # e.g. a hand-made document
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 17, (SELF_CHECK_IMAGES, doc["dims"][0])).tolist()
    want = reference_logits(doc, pixels)
    sess = ReferenceEvaluator(model)
    scale = np.float32(doc["input_scale"])
    worst = 0.0
    for px, ref in zip(pixels, want):
        x = (np.asarray(px, dtype=np.float32) * scale).reshape(shape)
        (got,) = sess.run(None, {"input": x})
        if got.shape != (1, doc["dims"][-1]):
            raise RuntimeError(f"{path}: output shape {got.shape}")
        worst = max(worst, float(np.abs(got[0] - ref).max()))
    if not worst < SELF_CHECK_TOL:
        raise RuntimeError(
            f"{path}: self-check failed: ONNX reference evaluator and numpy forward "
            f"differ by {worst:.3g} (tolerance {SELF_CHECK_TOL})"
        )
    return worst


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
        try:
            diff = self_check(doc, tmp)
        except Exception as e:
            os.remove(tmp)
            print(f"error: {e}", file=sys.stderr)
            return 1
        os.replace(tmp, out)
        print(f"{out}: {len(data)} bytes, dims {doc['dims']}, self-check max |diff| {diff:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
