"""llama.cpp (through llama-cpp-python) on a GGUF file, for `infernet bench --gguf`.

Usage: bench_llama_cpp.py FILE N_THREADS N_TOKENS ROUNDS ID [ID ...]

Feeds the prompt token ids, then decodes N_TOKENS greedy tokens one at a
time (what the plugin and candle do), ROUNDS times; prints one JSON line:
{"tok_s": median tokens/s of the decode steps, "tokens": [...], "rss_mb":
resident MB after load}.

The prompt is fed one token at a time (`n_batch=1`) and left out of the
timing: the llama.cpp that llama-cpp-python 0.3 builds on this box
(AVX512/AMX) crashes on a batched prompt with quantized weights (f32 and
f16 files run), and single-token decode steps are what the figure is
about.
"""
import json
import sys
import time

import llama_cpp
import numpy


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    path, threads, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    prompt = [int(t) for t in sys.argv[5:]]
    before = rss_mb()
    llm = llama_cpp.Llama(
        model_path=path,
        n_ctx=len(prompt) + n + 8,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=1,
        verbose=False,
        logits_all=False,
    )
    loaded = rss_mb() - before
    vocab = llm.n_vocab()
    rates, tokens = [], []
    for _ in range(rounds + 1):  # the first round warms up
        llm.reset()
        out = []
        llm.eval(prompt)
        start = time.perf_counter()
        for _ in range(n):
            # The last position's logits, straight from the context.
            ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            tok = int(numpy.ctypeslib.as_array(ptr, shape=(vocab,)).argmax())
            out.append(tok)
            llm.eval([tok])
        rates.append(n / (time.perf_counter() - start))
        tokens = out
    rates = sorted(rates[1:])
    print(json.dumps({"tok_s": rates[len(rates) // 2], "tokens": tokens, "rss_mb": loaded}))


if __name__ == "__main__":
    main()
