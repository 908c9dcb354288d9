// Infernet dashboard: the playground. A job runs through this node's own
// OpenAI API, streamed: server-sent events read with fetch and a
// ReadableStream, each delta appended as text the moment it arrives, then
// the `infernet` fields (provider, price, verification) shown. Loaded
// before app.js, which calls `InfernetPlayground` with its helpers.
"use strict";

window.InfernetPlayground = ({ $, el, facts, peer, money, authHeaders, state, refresh }) => {
  // The playground's model list, keeping the selection.
  function models() {
    const sel = $("play-model");
    const keep = sel.value;
    sel.replaceChildren(...state.models.map((m) => {
      const o = el("option", m.id + (m.chat ? "" : " (completions)"));
      o.value = m.id;
      return o;
    }));
    if (state.models.some((m) => m.id === keep)) sel.value = keep;
    mode();
  }
  function mode() {
    const m = state.models.find((x) => x.id === $("play-model").value);
    $("play-mode").textContent = m ? (m.chat ? "POST /v1/chat/completions" : "POST /v1/completions") : "";
  }

  // ---- the playground: a streamed job through the API ----
  async function play(ev) {
    ev.preventDefault();
    const out = $("play-output");
    const err = $("play-error");
    err.textContent = "";
    out.textContent = "";
    $("play-meta").replaceChildren();
    const model = $("play-model").value;
    const m = state.models.find((x) => x.id === model);
    const chat = !!(m && m.chat);
    const prompt = $("play-prompt").value;
    const maxTokens = parseInt($("play-max-tokens").value, 10) || 64;
    let options = null;
    const raw = $("play-options").value.trim();
    if (raw) {
      try { options = JSON.parse(raw); } catch (e) { options = undefined; }
      if (!options || typeof options !== "object" || Array.isArray(options)) {
        err.textContent = "Network options must be a JSON object.";
        return;
      }
    }
    const body = chat
      ? { model, messages: [{ role: "user", content: prompt }], max_tokens: maxTokens, stream: true }
      : { model, prompt, max_tokens: maxTokens, stream: true };
    if (options) body.infernet = options;
    const send = $("play-send");
    send.disabled = true;
    out.dataset.state = "starting";
    out.className = "streaming";
    try {
      const r = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
        body: JSON.stringify(body),
        cache: "no-store",
      });
      if (!r.ok) {
        const b = await r.json().catch(() => null);
        throw new Error(b && b.error ? b.error.message : "HTTP " + r.status);
      }
      const jobId = r.headers.get("x-infernet-job-id");
      out.dataset.jobId = jobId || "";
      meta({ job_id: jobId, provider: r.headers.get("x-infernet-provider"), price: r.headers.get("x-infernet-price") });
      out.dataset.state = "streaming";
      await stream(r.body, out, chat);
      out.dataset.state = out.dataset.state === "error" ? "error" : "done";
    } catch (e) {
      out.dataset.state = "error";
      err.textContent = String(e.message || e);
    } finally {
      out.className = "";
      send.disabled = false;
      if (state.view === "jobs") refresh();
    }
  }

  // Reads server-sent events as they arrive and appends each delta.
  async function stream(body, out, chat) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i).replace(/^\r?\n\r?\n/, "");
        const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        let chunk;
        try { chunk = JSON.parse(data); } catch (e) { continue; }
        if (chunk.error) {
          out.dataset.state = "error";
          $("play-error").textContent = chunk.error.message || "the job failed";
          continue;
        }
        const c = chunk.choices && chunk.choices[0];
        const text = c ? (chat ? c.delta && c.delta.content : c.text) : null;
        if (text) out.append(document.createTextNode(text));
        if (chunk.infernet) {
          const n = chunk.infernet;
          meta({
            job_id: n.job_id,
            provider: n.provider,
            price: n.price ? money(n.price) : null,
            verification: n.verification && n.verification.verdict,
            backend: n.backend ? n.backend.name + " " + n.backend.version : null,
            attempts: n.attempts,
          });
        }
      }
    }
  }

  function meta(m) {
    const out = $("play-output");
    if (m.provider) out.dataset.provider = m.provider;
    if (m.price) out.dataset.price = m.price;
    if (m.verification) out.dataset.verification = m.verification;
    facts("play-meta", [
      ["Job", m.job_id],
      ["Provider", m.provider ? peer(m.provider) : null],
      ["Price", m.price],
      ["Verification", m.verification || "when the job ends"],
      ["Backend", m.backend],
      ["Providers tried", m.attempts],
    ]);
  }

  $("play-form").addEventListener("submit", play);
  $("play-model").addEventListener("change", mode);
  return { models };
};
