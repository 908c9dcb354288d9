"""llama.cpp (through llama-cpp-python) on a GGUF file, for `infernet bench --gguf`.

Usage: bench_llama_cpp.py FILE N_THREADS N_TOKENS ROUNDS ID [ID ...]

Feeds the prompt token ids, then decodes N_TOKENS greedy tokens one at a
time (what the plugin and candle do), ROUNDS times; prints one JSON line:
{"tok_s": median tokens/s, "tokens": [...], "rss_mb": resident MB after load}.
"""
import json
import sys
import time

import llama_cpp


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
        n_batch=len(prompt),
        verbose=False,
        logits_all=False,
    )
    loaded = rss_mb() - before
    rates, tokens = [], []
    for _ in range(rounds + 1):  # the first round warms up
        llm.reset()
        out = []
        start = time.perf_counter()
        llm.eval(prompt)
        for _ in range(n):
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
            out.append(tok)
            llm.eval([tok])
        rates.append(n / (time.perf_counter() - start))
        tokens = out
    rates = sorted(rates[1:])
    print(json.dumps({"tok_s": rates[len(rates) // 2], "tokens": tokens, "rss_mb": loaded}))


if __name__ == "__main__":
    main()
