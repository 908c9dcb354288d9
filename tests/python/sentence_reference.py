"""An independent sentence-transformers reference for BERT-family models
(written for all-MiniLM-L6-v2), in float64 numpy, sharing no code with the
node: it parses the safetensors file by hand, tokenizes with its own BERT
uncased basic tokenizer and WordPiece over vocab.txt (ASCII text), and
follows the sentence-transformers files the model ships (modules.json,
sentence_bert_config.json, the Pooling config) the way sentence-transformers
does: truncate to max_seq_length with [CLS] and [SEP] kept, pool, and
normalise only when a Normalize module is listed.

Usage: python sentence_reference.py MODEL_DIR < text
Prints JSON: {"ids": [...], "embedding": [...]}.
"""

import json
import math
import os
import struct
import sys
import unicodedata

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype="<f4").reshape(meta["shape"])
        tensors[name.removeprefix("bert.")] = arr.astype(np.float64)
    return tensors


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def basic_tokens(text):
    if not text.isascii():
        sys.exit("this reference tokenizes ASCII text only")
    words = []
    for word in text.lower().split():
        current = ""
        for c in word:
            if is_punctuation(c):
                if current:
                    words.append(current)
                    current = ""
                words.append(c)
            else:
                current += c
        if current:
            words.append(current)
    return words


def wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end, piece = len(word), None
        while start < end:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                piece = sub
                break
            end -= 1
        if piece is None:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


erf = np.vectorize(math.erf)


def main():
    model = sys.argv[1]
    text = sys.stdin.read()
    read = lambda name: json.load(open(os.path.join(model, name)))
    config = read("config.json")
    assert config["hidden_act"] == "gelu", config["hidden_act"]
    modules = read("modules.json")
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    assert types[:2] == ["Transformer", "Pooling"], types
    max_len = read("sentence_bert_config.json")["max_seq_length"]
    pooling = read(os.path.join(modules[1]["path"], "config.json"))
    normalize = "Normalize" in types

    with open(os.path.join(model, "vocab.txt"), encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    pieces = [p for w in basic_tokens(text) for p in wordpiece(w, vocab)]
    tokens = ["[CLS]"] + pieces[: max_len - 2] + ["[SEP]"]
    ids = [vocab[t] for t in tokens]

    w = load_safetensors(os.path.join(model, "model.safetensors"))
    eps = config["layer_norm_eps"]
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    heads = config["num_attention_heads"]
    d = config["hidden_size"] // heads
    lin = lambda t, p: t @ w[p + ".weight"].T + w[p + ".bias"]
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        split = lambda t: t.reshape(n, heads, d).transpose(1, 0, 2)
        q = split(lin(x, p + "attention.self.query"))
        k = split(lin(x, p + "attention.self.key"))
        v = split(lin(x, p + "attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
        attn = layer_norm(
            lin(ctx, p + "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = lin(attn, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = layer_norm(
            lin(h, p + "output.dense") + attn,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            eps,
        )

    parts = []
    if pooling.get("pooling_mode_cls_token"):
        parts.append(x[0])
    if pooling.get("pooling_mode_max_tokens"):
        parts.append(x.max(0))
    if pooling.get("pooling_mode_mean_tokens"):
        parts.append(x.sum(0) / n)
    if pooling.get("pooling_mode_mean_sqrt_len_tokens"):
        parts.append(x.sum(0) / math.sqrt(n))
    e = np.concatenate(parts)
    if normalize:
        e = e / max(np.linalg.norm(e), 1e-12)
    json.dump({"ids": ids, "embedding": e.tolist()}, sys.stdout)


main()
