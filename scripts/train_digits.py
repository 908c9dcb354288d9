#!/usr/bin/env python3
"""Train the digits MLPs used by the zkML verifier and export them as JSON.

Trains two ReLU MLPs (64-32-10 and 64-128-10) on scikit-learn's bundled
`load_digits` dataset (8x8 images, pixel values 0..16, shipped inside the
package: nothing is downloaded) and writes, for each model,
`verifier/models/digits-64-<H>-10.json` containing:

  name, dims                 model name and layer widths
  input_scale                float input = pixel * input_scale (1/16)
  layers[i].weights          float weights, [out][in]
  layers[i].bias             float biases, [out]
  activation_max[i]          max post-ReLU activation of hidden layer i over
                             the *training* split (used by the Rust side to
                             pick the power-of-two activation scales)
  float_test_accuracy        accuracy of the exported (rounded) float weights
                             on the held-out split
  test.x / test.y            the held-out split: raw integer pixels 0..16 and
                             labels

Deterministic: fixed seeds for the split and the optimiser. Only numpy and
scikit-learn are needed:

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

SEED = 0
TEST_SIZE = 0.25
INPUT_SCALE = 1.0 / 16.0
DECIMALS = 6  # exported floats are rounded to this many decimals
HIDDEN_SIZES = [32, 128]

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
        path = os.path.join(OUT_DIR, f"{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(
            f"{name}: float test accuracy {acc * 100:.2f}% "
            f"(sklearn {sk_acc * 100:.2f}%, {len(y_te)} held-out, "
            f"{clf.n_iter_} epochs) -> {os.path.relpath(path, ROOT)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
