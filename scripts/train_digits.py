#!/usr/bin/env python3
"""Train the digits models used by the zkML verifier and export them as JSON.

Trains, on scikit-learn's bundled `load_digits` dataset (8x8 images, pixel
values 0..16, shipped inside the package: nothing is downloaded), with the
same 75/25 stratified split:

  digits-64-32-10, digits-64-128-10
      two ReLU MLPs (scikit-learn's MLPClassifier);
  digits-cnn-4-8
      a small CNN, trained here in plain numpy (He init, Adam, softmax
      cross-entropy, minibatches, a fixed number of epochs, small L2, random
      one-pixel shifts of half the training images):
        input  1 x 8 x 8 (pixel * 1/16)
        conv0  1 -> 4 channels, 3x3, stride 1, zero padding 1 -> 4 x 8 x 8, ReLU
        conv1  4 -> 8 channels, 3x3, stride 2, zero padding 1 -> 8 x 4 x 4, ReLU
        dense  128 -> 10 on the CHW-flattened conv1 output (raw logits)

and writes `verifier/models/<name>.json` for each, containing:

  name, dims                 model name and per-layer flattened widths, input
                             first ([64, 256, 128, 10] for the CNN)
  input_scale                float input = pixel * input_scale (1/16)
  layers[i].weights          float weights, [out][in]; for a conv layer one
                             row per output channel, the kernel flattened in
                             (in_channel, ky, kx) order (PyTorch's
                             `weight.reshape(out_channels, -1)`)
  layers[i].bias             float biases, [out] (conv: one per out channel)
  layers[i].conv             conv layers only: in_channels, in_h, in_w,
                             out_channels, kernel, stride, padding. The layer
                             is a cross-correlation as in PyTorch / ONNX Conv:
                               out[c,y,x] = bias[c] + sum_{ic,ky,kx}
                                 W[c,ic,ky,kx] * in[ic, y*stride+ky-padding,
                                                        x*stride+kx-padding]
                             (zero outside the image), out_h = (in_h +
                             2*padding - kernel) // stride + 1; inputs and
                             outputs are flattened CHW: index = c*h*w + y*w + x
                             (the 64 pixels are the 1 x 8 x 8 input as is)
  activation_max[i]          max post-ReLU activation of hidden layer i over
                             the *training* split (used by the Rust side to
                             pick the power-of-two activation scales)
  float_test_accuracy        accuracy of the exported (rounded) float weights
                             on the held-out split
  test.x / test.y            the held-out split: raw integer pixels 0..16 and
                             labels

Deterministic: fixed seeds for the split and the optimisers; the CNN trains in
float64 with BLAS limited to one thread, so its summation order does not depend
on the machine's core count (another BLAS build or CPU family may still change
last bits, and a rounded weight with them). Only numpy and scikit-learn are
needed:

    .venv/bin/pip install numpy scikit-learn
    .venv/bin/python scripts/train_digits.py
"""

import json
import os
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

SEED = 0
TEST_SIZE = 0.25
INPUT_SCALE = 1.0 / 16.0
DECIMALS = 6  # exported floats are rounded to this many decimals
HIDDEN_SIZES = [32, 128]

CNN_NAME = "digits-cnn-4-8"
CNN_CONVS = [
    {"in_channels": 1, "in_h": 8, "in_w": 8, "out_channels": 4, "kernel": 3, "stride": 1, "padding": 1},
    {"in_channels": 4, "in_h": 8, "in_w": 8, "out_channels": 8, "kernel": 3, "stride": 2, "padding": 1},
]
CNN_CLASSES = 10
CNN_EPOCHS = 60
CNN_BATCH = 32
CNN_LR = 3e-3  # Adam, beta1 0.9, beta2 0.999, eps 1e-8
CNN_L2 = 1e-4  # added to the loss as CNN_L2 / 2 * |W|^2 (weights, not biases)
# Augmentation: each time an image is drawn into a minibatch it is, with this
# probability, shifted by (dy, dx) drawn uniformly from {-1, 0, 1}^2 (zero
# fill); otherwise it is used as is.
CNN_SHIFT_PROB = 0.5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "verifier", "models")


def forward(layers, x):
    """Float forward pass of the exported (rounded) weights; returns logits."""
    a = x
    for i, (w, b) in enumerate(layers):
        a = a @ w.T + b
        if i + 1 < len(layers):
            a = np.maximum(a, 0.0)
    return a


def hidden_max(layers, x):
    maxes = []
    a = x
    for w, b in layers[:-1]:
        a = np.maximum(a @ w.T + b, 0.0)
        maxes.append(float(a.max()))
    return maxes


def conv_out_hw(c):
    out_h = (c["in_h"] + 2 * c["padding"] - c["kernel"]) // c["stride"] + 1
    out_w = (c["in_w"] + 2 * c["padding"] - c["kernel"]) // c["stride"] + 1
    return out_h, out_w


def conv_gather(c):
    """im2col indices for one conv layer: [out_h*out_w, in_c*k*k] indices into
    the CHW-flattened input with one extra zero appended (index in_c*in_h*in_w
    stands for the zero padding); columns in (in_channel, ky, kx) order."""
    k, s, p = c["kernel"], c["stride"], c["padding"]
    ih, iw = c["in_h"], c["in_w"]
    oh, ow = conv_out_hw(c)
    zero = c["in_channels"] * ih * iw
    idx = np.full((oh * ow, c["in_channels"] * k * k), zero, dtype=np.int64)
    for y in range(oh):
        for x in range(ow):
            col = 0
            for ic in range(c["in_channels"]):
                for ky in range(k):
                    for kx in range(k):
                        iy, ix = y * s + ky - p, x * s + kx - p
                        if 0 <= iy < ih and 0 <= ix < iw:
                            idx[y * ow + x, col] = ic * ih * iw + iy * iw + ix
                        col += 1
    return idx


def conv_forward(x, w, b, idx):
    """Conv layer on CHW-flattened inputs x [N, in]: returns the CHW-flattened
    pre-activation [N, out_c*out_h*out_w] and the patches [N, P, in_c*k*k]."""
    n = x.shape[0]
    patches = np.concatenate([x, np.zeros((n, 1))], axis=1)[:, idx]
    z = patches @ w.T + b  # [N, P, out_c]
    return z.transpose(0, 2, 1).reshape(n, -1), patches


def cnn_forward(params, x, idxs):
    """Float CNN forward pass; returns (logits, post-ReLU conv activations,
    conv patches)."""
    acts, patches = [], []
    a = x
    for (w, b), idx in zip(params[:-1], idxs):
        z, pt = conv_forward(a, w, b, idx)
        a = np.maximum(z, 0.0)
        acts.append(a)
        patches.append(pt)
    w, b = params[-1]
    return a @ w.T + b, acts, patches


def shifted_images(x):
    """[9, N, 64]: the 8x8 images x [N, 64] shifted by (dy, dx) in
    {-1, 0, 1}^2 with zero fill; index (dy+1)*3 + (dx+1), 4 = unshifted."""
    n = len(x)
    pad = np.pad(x.reshape(n, 8, 8), ((0, 0), (1, 1), (1, 1)))
    return np.stack(
        [pad[:, dy : dy + 8, dx : dx + 8].reshape(n, 64) for dy in range(3) for dx in range(3)]
    )


def train_cnn(x_tr, y_tr):
    """Train the CNN with Adam on softmax cross-entropy, with random one-pixel
    shifts; returns float64 [(weights, bias)] per layer (conv weights
    [out_c, in_c*k*k])."""
    rng = np.random.default_rng(SEED)
    shifted = shifted_images(x_tr)
    idxs = [conv_gather(c) for c in CNN_CONVS]
    params = []
    for c in CNN_CONVS:
        fan_in = c["in_channels"] * c["kernel"] ** 2
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), (c["out_channels"], fan_in))
        params.append([w, np.zeros(c["out_channels"])])
    last = CNN_CONVS[-1]
    flat = last["out_channels"] * int(np.prod(conv_out_hw(last)))
    params.append([rng.normal(0.0, np.sqrt(2.0 / flat), (CNN_CLASSES, flat)), np.zeros(CNN_CLASSES)])
    # Scatter matrices (the transpose of the im2col gather) for the gradient
    # with respect to a conv layer's input; layer 0's is unused.
    scatters = []
    for c, idx in zip(CNN_CONVS, idxs):
        sc = np.zeros((idx.size, c["in_channels"] * c["in_h"] * c["in_w"] + 1))
        sc[np.arange(idx.size), idx.ravel()] = 1.0
        scatters.append(sc[:, :-1])
    m = [[np.zeros_like(t) for t in layer] for layer in params]
    v = [[np.zeros_like(t) for t in layer] for layer in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    n = len(y_tr)
    onehot = np.eye(CNN_CLASSES)[y_tr]
    for _epoch in range(CNN_EPOCHS):
        order = rng.permutation(n)
        for start in range(0, n, CNN_BATCH):
            bi = order[start : start + CNN_BATCH]
            nb = len(bi)
            shift = rng.integers(0, 9, nb)
            shift[rng.random(nb) >= CNN_SHIFT_PROB] = 4
            xb, yb = shifted[shift, bi], onehot[bi]
            logits, acts, patches = cnn_forward(params, xb, idxs)
            logits = logits - logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            g = (prob - yb) / nb  # d loss / d logits (mean cross-entropy)
            grads = [None] * len(params)
            w, _ = params[-1]
            grads[-1] = [g.T @ acts[-1] + CNN_L2 * w, g.sum(axis=0)]
            da = g @ w
            for li in range(len(CNN_CONVS) - 1, -1, -1):
                c = CNN_CONVS[li]
                oc = c["out_channels"]
                p = int(np.prod(conv_out_hw(c)))
                dz = da * (acts[li] > 0)
                gz = dz.reshape(nb, oc, p).transpose(0, 2, 1)  # [N, P, out_c]
                w, _ = params[li]
                pt = patches[li]
                grads[li] = [
                    gz.reshape(-1, oc).T @ pt.reshape(-1, pt.shape[2]) + CNN_L2 * w,
                    gz.sum(axis=(0, 1)),
                ]
                if li > 0:
                    da = (gz @ w).reshape(nb, -1) @ scatters[li]
            step += 1
            for layer, gl, ml, vl in zip(params, grads, m, v):
                for j in range(2):
                    ml[j] = b1 * ml[j] + (1 - b1) * gl[j]
                    vl[j] = b2 * vl[j] + (1 - b2) * gl[j] ** 2
                    mh = ml[j] / (1 - b1**step)
                    vh = vl[j] / (1 - b2**step)
                    layer[j] = layer[j] - CNN_LR * mh / (np.sqrt(vh) + eps)
    return [(w, b) for w, b in params]


def write_doc(doc, name):
    path = os.path.join(OUT_DIR, f"{name}.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    return path


def main_cnn(x_tr, y_tr, x_te, y_te, x_te_raw):
    with threadpool_limits(limits=1):
        params = train_cnn(x_tr, y_tr)
        layers = [(np.round(w, DECIMALS), np.round(b, DECIMALS)) for w, b in params]
        idxs = [conv_gather(c) for c in CNN_CONVS]
        logits, _, _ = cnn_forward(layers, x_te, idxs)
        _, acts_tr, _ = cnn_forward(layers, x_tr, idxs)
    acc = float((logits.argmax(axis=1) == y_te).mean())
    dims = [CNN_CONVS[0]["in_channels"] * CNN_CONVS[0]["in_h"] * CNN_CONVS[0]["in_w"]]
    for c in CNN_CONVS:
        dims.append(c["out_channels"] * int(np.prod(conv_out_hw(c))))
    dims.append(CNN_CLASSES)
    out_layers = []
    for i, (w, b) in enumerate(layers):
        layer = {"weights": w.tolist(), "bias": b.tolist()}
        if i < len(CNN_CONVS):
            layer["conv"] = dict(CNN_CONVS[i])
        out_layers.append(layer)
    doc = {
        "name": CNN_NAME,
        "dims": dims,
        "input_scale": INPUT_SCALE,
        "seed": SEED,
        "layers": out_layers,
        "activation_max": [float(a.max()) for a in acts_tr],
        "float_test_accuracy": acc,
        "train_size": int(len(y_tr)),
        "test": {"x": x_te_raw.tolist(), "y": y_te.tolist()},
    }
    path = write_doc(doc, CNN_NAME)
    print(
        f"{CNN_NAME}: float test accuracy {acc * 100:.2f}% ({len(y_te)} held-out, "
        f"{CNN_EPOCHS} epochs, activation max {doc['activation_max']}) -> "
        f"{os.path.relpath(path, ROOT)}"
    )


def main():
    digits = load_digits()
    x_raw = digits.data.astype(np.int64)  # pixels 0..16
    y = digits.target.astype(np.int64)
    x_tr_raw, x_te_raw, y_tr, y_te = train_test_split(
        x_raw, y, test_size=TEST_SIZE, random_state=SEED, stratify=y
    )
    x_tr = x_tr_raw * INPUT_SCALE
    x_te = x_te_raw * INPUT_SCALE

    os.makedirs(OUT_DIR, exist_ok=True)
    for hidden in HIDDEN_SIZES:
        name = f"digits-64-{hidden}-10"
        clf = MLPClassifier(
            hidden_layer_sizes=(hidden,),
            activation="relu",
            solver="adam",
            alpha=1e-4,
            learning_rate_init=1e-3,
            max_iter=600,
            random_state=SEED,
        )
        clf.fit(x_tr, y_tr)
        # sklearn stores coefs as [in][out]; export [out][in].
        layers = [
            (np.round(w.T, DECIMALS), np.round(b, DECIMALS))
            for w, b in zip(clf.coefs_, clf.intercepts_)
        ]
        sk_acc = float(clf.score(x_te, y_te))
        acc = float((forward(layers, x_te).argmax(axis=1) == y_te).mean())
        doc = {
            "name": name,
            "dims": [64, hidden, 10],
            "input_scale": INPUT_SCALE,
            "seed": SEED,
            "layers": [
                {"weights": w.tolist(), "bias": b.tolist()} for w, b in layers
            ],
            "activation_max": hidden_max(layers, x_tr),
            "float_test_accuracy": acc,
            "train_size": int(len(y_tr)),
            "test": {"x": x_te_raw.tolist(), "y": y_te.tolist()},
        }
        path = write_doc(doc, name)
        print(
            f"{name}: float test accuracy {acc * 100:.2f}% "
            f"(sklearn {sk_acc * 100:.2f}%, {len(y_te)} held-out, "
            f"{clf.n_iter_} epochs) -> {os.path.relpath(path, ROOT)}"
        )
    main_cnn(x_tr, y_tr, x_te, y_te, x_te_raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
