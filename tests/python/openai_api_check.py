"""The node's OpenAI-compatible API through the official `openai` client.

Run by tests/tests/it/openai_api.rs against a live local network:
    openai_api_check.py BASE_URL API_KEY LIMITED_KEY SENTENCE...
Every check is an assert (a failure exits non-zero with its message). Prints
one JSON report on stdout for the Rust side: the usage of each job (to
compare with the provider's signed usage) and the embeddings of SENTENCE...
(to compare with native BERT).
"""

import json
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

import openai

base, key, limited_key, sentences = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
usages = []


def keep_usage(resp_id, usage):
    usages.append({"id": resp_id, "prompt_tokens": usage.prompt_tokens,
                   "completion_tokens": usage.completion_tokens})
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage


def expect_error(status, fn, code=None, param=None, contains=None):
    try:
        fn()
    except openai.APIStatusError as e:
        assert e.status_code == status, (status, e.status_code, e.body)
        body = e.body if isinstance(e.body, dict) else {}
        for k in ("message", "type", "param", "code"):
            assert k in body, (k, e.body)
        if code is not None:
            assert body["code"] == code, (code, e.body)
        if param is not None:
            assert body["param"] == param, (param, e.body)
        if contains is not None:
            assert contains in body["message"], (contains, e.body)
        return body
    raise AssertionError(f"expected HTTP {status}")


def http(method, path, body=None, raw=None, auth=True):
    """(status, headers, body bytes) of a plain request (stdlib only)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"content-type": "application/json"}
    if auth:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def sse(body):
    """Raw SSE `data:` payloads of a streamed request."""
    status, headers, raw = http("POST", body.pop("_path"), body)
    assert status == 200, (status, raw)
    assert headers["content-type"].startswith("text/event-stream"), headers
    assert headers.get("x-infernet-provider"), headers
    lines = raw.decode().splitlines()
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def check_stream_rules(events, chat, include_usage):
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("error" not in c for c in chunks), chunks
    assert len({c["id"] for c in chunks}) == 1, "every chunk carries the same id"
    with_choices = [c for c in chunks if c["choices"]]
    finishes = [c["choices"][0]["finish_reason"] for c in with_choices
                if c["choices"][0]["finish_reason"] is not None]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length"), finishes
    assert with_choices[-1]["choices"][0]["finish_reason"] == finishes[0], "finish comes last"
    if chat:
        assert with_choices[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0]
        assert all("role" not in c["choices"][0]["delta"] for c in with_choices[1:])
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices)
    else:
        text = "".join(c["choices"][0]["text"] for c in with_choices)
    usage = None
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"], chunks[-1]
        usage = chunks[-1]["usage"]
        usages.append({"id": chunks[-1]["id"], **{k: usage[k] for k in ("prompt_tokens", "completion_tokens")}})
        finished = with_choices[-1]
        if finishes[0] == "length":
            assert usage["completion_tokens"] >= 1
        assert finished["infernet"]["provider"], finished
    else:
        assert all(not c.get("usage") for c in chunks)
    return text, finishes[0], usage


# --- health, models, keys --------------------------------------------------
status, _, raw = http("GET", "/health", auth=False)
assert status == 200 and json.loads(raw)["status"] == "ok", raw
models = {m.id: m for m in client.models.list().data}
assert {"tiny-llama", "minilm", "broken"} <= set(models), models
raw_models = json.loads(http("GET", "/v1/models")[2])
llama = next(m for m in raw_models["data"] if m["id"] == "tiny-llama")
assert llama["infernet"]["providers"] == 1 and llama["infernet"]["prices"][0]["currency"], llama
assert http("GET", "/v1/models", auth=False)[0] == 401
bad = openai.OpenAI(base_url=base + "/v1", api_key="sk-wrong", max_retries=0)
expect_error(401, lambda: bad.models.list(), code="invalid_api_key")

# --- chat, non-streaming ---------------------------------------------------
msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": " hello world "}]
chat = client.chat.completions.create(model="tiny-llama", messages=msgs, max_tokens=6)
assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-"), chat
choice = chat.choices[0]
assert choice.message.role == "assistant" and isinstance(choice.message.content, str), choice
assert choice.finish_reason == ("length" if chat.usage.completion_tokens == 6 else "stop"), chat
keep_usage(chat.id, chat.usage)
extra = chat.model_extra["infernet"]
assert extra["provider"] and extra["price"]["currency"] and extra["verification"]["verdict"] == "none", extra
raw = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=msgs, max_tokens=6)
assert raw.headers["x-infernet-provider"] == extra["provider"], raw.headers
assert raw.headers["x-infernet-price"] and raw.headers["x-infernet-verification"] == "none"
assert raw.parse().choices[0].message.content == choice.message.content, "greedy is deterministic"

# The chat template was applied: the same prompt by hand gives the same answer.
rendered = "<s>system: be brief\nuser: hello world\nassistant:"
same = client.completions.create(model="tiny-llama", prompt=rendered, max_tokens=6)
assert same.choices[0].text == choice.message.content, (same, choice)
assert same.usage.prompt_tokens == chat.usage.prompt_tokens, (same.usage, chat.usage)
keep_usage(same.id, same.usage)

# --- chat, streaming through the client and checked rule by rule ----------
streamed = client.chat.completions.create(model="tiny-llama", messages=msgs, max_tokens=6,
                                          stream=True, stream_options={"include_usage": True})
parts, finish = [], None
for c in streamed:
    if c.choices:
        parts.append(c.choices[0].delta.content or "")
        finish = c.choices[0].finish_reason or finish
assert "".join(parts) == choice.message.content and finish == choice.finish_reason, (parts, finish)
text, finish, usage = check_stream_rules(
    sse({"_path": "/v1/chat/completions", "model": "tiny-llama", "messages": msgs, "max_tokens": 6,
         "stream": True, "stream_options": {"include_usage": True}}), chat=True, include_usage=True)
assert text == choice.message.content and finish == choice.finish_reason, (text, finish)
assert usage["completion_tokens"] == chat.usage.completion_tokens
text, _, _ = check_stream_rules(
    sse({"_path": "/v1/chat/completions", "model": "tiny-llama", "messages": msgs, "max_tokens": 6,
         "stream": True}), chat=True, include_usage=False)
assert text == choice.message.content

# --- completions, seeds, stop strings ---------------------------------------
long = client.completions.create(model="tiny-llama", prompt="the cat sat on", max_tokens=12)
assert long.object == "text_completion" and long.id.startswith("cmpl-"), long
keep_usage(long.id, long.usage)
full = long.choices[0].text
assert long.choices[0].finish_reason == ("length" if long.usage.completion_tokens == 12 else "stop")
assert len(full) > 6, full
stop = full[len(full) // 2:len(full) // 2 + 3]
cut = client.completions.create(model="tiny-llama", prompt="the cat sat on", max_tokens=12, stop=[stop])
assert cut.choices[0].text == full[:full.find(stop)] and cut.choices[0].finish_reason == "stop", (cut, stop)
assert cut.usage.completion_tokens == long.usage.completion_tokens, "usage is what the provider signed"
text, finish, _ = check_stream_rules(
    sse({"_path": "/v1/completions", "model": "tiny-llama", "prompt": "the cat sat on", "max_tokens": 12,
         "stop": stop, "stream": True, "stream_options": {"include_usage": True}}),
    chat=False, include_usage=True)
assert text == full[:full.find(stop)] and finish == "stop", (text, stop)

seeded = [client.completions.create(model="tiny-llama", prompt="the cat", max_tokens=10,
                                    temperature=0.9, top_p=0.95, seed=42).choices[0].text
          for _ in range(2)]
assert seeded[0] == seeded[1], seeded

# --- embeddings ---------------------------------------------------------------
emb = client.embeddings.create(model="minilm", input=sentences)  # base64 on the wire
floats = client.embeddings.create(model="minilm", input=sentences, encoding_format="float")
assert [d.index for d in emb.data] == list(range(len(sentences)))
for a, b in zip(emb.data, floats.data):
    assert len(a.embedding) == 384 and max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
one = client.embeddings.create(model="minilm", input=sentences[0], encoding_format="float")
assert len(one.data) == 1 and one.data[0].embedding == floats.data[0].embedding
assert emb.usage.prompt_tokens > 0
# Sharded (`infernet.shards`): one shard per provider found (one here),
# the same vectors, the shards listed with the texts each covered.
sharded = client.embeddings.create(model="minilm", input=sentences, encoding_format="float",
                                   extra_body={"infernet": {"shards": 2}})
assert [d.embedding for d in sharded.data] == [d.embedding for d in floats.data]
parts = sharded.model_extra["infernet"]["shards"]
assert [p["texts"] for p in parts] == [[0, len(sentences)]], parts
assert sharded.usage.prompt_tokens == floats.usage.prompt_tokens

# --- errors ---------------------------------------------------------------------
expect_error(404, lambda: client.chat.completions.create(model="no-such-model", messages=msgs),
             code="model_not_found", param="model")
expect_error(400, lambda: client.chat.completions.create(model="tiny-llama", messages=msgs, n=2),
             param="n")
expect_error(400, lambda: client.chat.completions.create(model="tiny-llama", messages=msgs, temperature=5),
             param="temperature")
expect_error(400, lambda: client.chat.completions.create(
    model="tiny-llama", messages=[{"role": "wizard", "content": "x"}]), param="messages[0].role")
expect_error(400, lambda: client.completions.create(model="tiny-llama", prompt="x", max_tokens="many"),
             param="max_tokens")
status, _, raw = http("POST", "/v1/chat/completions", {"messages": msgs})
assert status == 400 and json.loads(raw)["error"]["param"] == "model", raw
status, _, raw = http("POST", "/v1/chat/completions", raw=b"{not json")
assert status == 400 and json.loads(raw)["error"]["code"] == "invalid_json", raw
expect_error(400, lambda: client.chat.completions.create(model="minilm", messages=msgs),
             code="chat_template_missing")
expect_error(400, lambda: client.chat.completions.create(
    model="tiny-llama", messages=msgs, extra_body={"infernet": {"shards": 2}}), param="infernet.shards")
for bad in (0, 33):
    expect_error(400, lambda: client.embeddings.create(
        model="minilm", input=sentences, extra_body={"infernet": {"shards": bad}}), param="infernet.shards")
over = {"infernet": {"max_budget": "0.000001", "currency": "USD"}}
expect_error(402, lambda: client.completions.create(model="tiny-llama", prompt="x", extra_body=over),
             code="over_budget", contains="cheapest")
expect_error(402, lambda: client.chat.completions.create(model="tiny-llama", messages=msgs, stream=True,
                                                           extra_body=over), code="over_budget")
# Providers exist but none can serve the job as asked (no prover of the model): 503.
unproved = {"infernet": {"verify": "proof(groth16)"}}
expect_error(503, lambda: client.completions.create(model="tiny-llama", prompt="x", extra_body=unproved),
             code="no_provider_available", contains="groth16")
# Network options as headers, for clients that cannot add body fields.
by_header = client.with_options(default_headers={"x-infernet-max-budget": "0.000001"})
expect_error(402, lambda: by_header.completions.create(model="tiny-llama", prompt="x"), code="over_budget")
# A key's spending limit: one job fits, the next is refused.
limited = openai.OpenAI(base_url=base + "/v1", api_key=limited_key, max_retries=0)
first = limited.completions.create(model="tiny-llama", prompt="x", max_tokens=1)
limited_spent = int(first.model_extra["infernet"]["price"]["minor"])
expect_error(429, lambda: limited.completions.create(model="tiny-llama", prompt="x", max_tokens=1),
             code="insufficient_quota")
trap = {"infernet": {"params": {"attack": "trap"}}}
expect_error(502, lambda: client.completions.create(model="broken", prompt="x", extra_body=trap),
             code="provider_failed")
# A provider failing after the stream started: an `error` event, then [DONE].
events = sse({"_path": "/v1/completions", "model": "broken", "prompt": "x", "stream": True, **trap})
assert events[-1] == "[DONE]" and "error" in json.loads(events[-2]), events
try:
    for _ in client.completions.create(model="broken", prompt="x", stream=True, extra_body=trap):
        pass
    raise AssertionError("the stream's error event must raise")
except openai.APIError as e:
    assert "failed" in str(e), e

# A streaming client that goes away: the node cancels the job (checked on the Rust side).
where = urllib.parse.urlparse(base)
payload = json.dumps({"model": "echo", "prompt": " ".join(["w"] * 40), "stream": True,
                      "infernet": {"params": {"delay_ms": "100"}}})
sock = socket.create_connection((where.hostname, where.port), timeout=30)
sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n{payload}").encode())
seen = b""
while b'"text":"w' not in seen:
    part = sock.recv(4096)
    assert part, seen
    seen += part
cancelled_job = re.search(rb"x-infernet-job-id: (\S+)", seen, re.I).group(1).decode()
sock.close()

print(json.dumps({"usages": usages, "embeddings": [d.embedding for d in floats.data],
                  "limited_spent": limited_spent, "cancelled_job": cancelled_job}))
