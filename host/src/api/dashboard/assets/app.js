// Infernet dashboard. Plain JavaScript, no framework, nothing fetched from
// elsewhere. Every value from the node or the network reaches the page
// through textContent (never parsed as HTML). Read-only: the only request
// that spends is the playground's, through the node's own OpenAI API.
"use strict";

(() => {
  const KEY = "infernet.apiKey";
  const VIEWS = ["overview", "network", "jobs", "plugins", "wallet", "playground"];
  // How often the open view refreshes itself, ms (0: only when opened).
  const REFRESH = { overview: 5000, network: 5000, jobs: 1000, plugins: 0, wallet: 3000, playground: 0 };
  const state = { view: "overview", models: [], job: null, loaded: {}, busy: false, ready: false };
  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}
  // The playground (play.js), once the page is loaded.
  let playground = { models() {} };

  // ---- DOM helpers: text only ----
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function cell(v) {
    const td = document.createElement("td");
    if (v instanceof Node) td.append(v);
    else td.textContent = v === undefined || v === null || v === "" ? "—" : String(v);
    return td;
  }
  // Fills a table's body with rows (arrays of cells); `decorate(tr, i)` may
  // add attributes. An empty list shows one muted row.
  function fill(id, rows, decorate) {
    const table = $(id);
    const tbody = table.tBodies[0];
    const cols = table.tHead.rows[0].cells.length;
    const out = rows.map((r, i) => {
      const tr = document.createElement("tr");
      r.forEach((c) => tr.append(cell(c)));
      if (decorate) decorate(tr, i);
      return tr;
    });
    if (out.length === 0) {
      const tr = document.createElement("tr");
      const td = el("td", "nothing yet", "empty");
      td.colSpan = cols;
      tr.append(td);
      out.push(tr);
    }
    tbody.replaceChildren(...out);
  }
  function facts(id, pairs) {
    const dl = $(id);
    const out = [];
    for (const [k, v] of pairs) {
      out.push(el("dt", k));
      const dd = el("dd");
      if (v instanceof Node) dd.append(v);
      else dd.textContent = v === undefined || v === null || v === "" ? "—" : String(v);
      out.push(dd);
    }
    dl.replaceChildren(...out);
  }
  // A peer id, shortened, the full id in its title.
  function peer(id) {
    if (!id) return "—";
    const s = el("span", id.length > 16 ? "…" + id.slice(-12) : id, "mono");
    s.title = id;
    s.dataset.peer = id;
    return s;
  }
  // Money as the node sends it: `{amount: "0.00025", currency: "USD"}`.
  function money(m) {
    if (!m) return "—";
    if (typeof m === "string") return m;
    const a = String(m.amount);
    return m.currency && !a.endsWith(" " + m.currency) ? a + " " + m.currency : a;
  }
  const when = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
  const list = (xs) => (xs && xs.length ? xs.join(", ") : "—");
  const pct = (x) => (typeof x === "number" ? (100 * x).toFixed(1) + " %" : "—");
  function reputation(r) {
    if (!r) return "—";
    const s = "mean " + pct(r.mean) + ", lower " + pct(r.lower) +
      " (" + r.verified_ok.toFixed(1) + " verified, " + r.cheats.toFixed(1) + " cheats)";
    return r.barred ? s + " — barred" : s;
  }
  function status(text, bad) {
    const s = $("status");
    s.textContent = text;
    s.className = bad ? "error" : "muted";
  }

  // ---- the node's JSON ----
  function authHeaders() {
    const k = sessionStorage.getItem(KEY);
    return k ? { Authorization: "Bearer " + k } : {};
  }
  async function api(path) {
    const r = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    if (r.status === 401) {
      sessionStorage.removeItem(KEY);
      askKey("The node refused this key.");
      throw new AuthError("unauthorized");
    }
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error(body && body.error ? body.error.message : "HTTP " + r.status);
    return body;
  }

  // ---- views ----
  const render = {
    async overview() {
      const o = await api("/dashboard/api/overview");
      $("node-id").textContent = o.peer_id;
      facts("overview-facts", [
        ["Peer id", peer(o.peer_id)],
        ["Roles", list(o.roles)],
        ["Node version", o.version],
        ["Plugin contract", o.wit_version],
        ["Providers seen", o.providers],
        ["API currency", o.api.currency],
        ["Default budget", o.api.max_budget],
        ["Default verification", o.api.verify],
        ["API keys", o.api.keys ? o.api.keys + " configured" : "none (loopback only)"],
      ]);
      state.models = o.models;
      fill("models-table", o.models.map((m) => [
        m.id,
        m.providers,
        m.prices.map((p) => p.min.minor === p.max.minor ? money(p.min) : money(p.min) + " – " + money(p.max)).join("; "),
        m.chat ? "yes (chat)" : "no (completions)",
      ]));
      playground.models();
    },
    async network() {
      const n = await api("/dashboard/api/network");
      fill("providers-table", n.providers.map((p) => [
        peer(p.peer_id),
        // A bridged engine's results carry no kernel trace.
        list(p.models.map((m) => (p.untraced.includes(m) ? m + " (untraced)" : m))),
        money(p.price),
        p.capacity,
        reputation(p.reputation),
        p.stake ? money(p.stake) + (p.stake.certified ? " (certified)" : " (claimed)") : "none",
        p.wit_version + " / protocol " + p.protocol_version,
        p.verifier ? "verifier" : "provider",
      ]));
      fill("peers-table", n.peers.map((p) => [
        peer(p.peer_id),
        list(p.addrs),
        list(p.models),
        p.latency_ms === null ? "—" : p.latency_ms + " ms",
        when(p.last_seen_ms),
        p.successes + " ok / " + p.failures + " failed",
      ]));
    },
    async jobs() {
      const j = await api("/dashboard/api/jobs?limit=100");
      fill("jobs-table", j.jobs.map((x) => [
        el("span", x.id, "mono"),
        x.role,
        x.model,
        x.state,
        peer(x.provider),
        money(x.price),
        x.verification,
        when(x.updated_at_ms),
      ]), (tr, i) => {
        const x = j.jobs[i];
        tr.className = "clickable" + (x.id === state.job ? " selected" : "");
        tr.dataset.jobId = x.id;
        tr.dataset.state = x.state;
        tr.addEventListener("click", () => {
          state.job = x.id;
          job().then(() => $("job-detail").scrollIntoView()).catch((e) => { if (!(e instanceof AuthError)) status(String(e.message || e), true); });
        });
      });
      if (state.job) await job();
    },
    async plugins() {
      const p = await api("/dashboard/api/plugins");
      $("plugins-contracts").textContent = "Contract versions this host serves: " + list(p.contracts);
      fill("plugins-table", p.plugins.map((x) => x.error ? [x.error, "", "", "", "", "", ""] : [
        x.name + (x.models ? " (" + list(x.models) + ")" : ""),
        x.version,
        x.kind,
        x.contract ? x.contract + " (targets " + x.wit + ")" : "targets " + x.wit,
        el("span", x.sha256, "mono"),
        x.signature ? "publisher " + x.signature.publisher + (x.signature.pinned ? " (pinned by config)" : " (checked at load)") : "unsigned",
        limits(x.limits),
      ]));
    },
    async wallet() {
      const w = await api("/dashboard/api/wallet?limit=100");
      fill("adapters-table", w.adapters.map((a) => [
        a.name,
        a.account,
        list(a.currencies),
        a.confirm,
        a.balances === null ? "not readable here (held by the adapter)" : list(a.balances.map(money)),
      ]));
      fill("earnings-table", w.earnings.map((e) => [
        peer(e.provider), money(e.released), money(e.held), money(e.returned), e.escrows,
      ]));
      fill("escrows-table", w.escrows.map((e) => [
        el("span", e.id, "mono"), e.kind, e.job_id, e.adapter, money(e.amount), e.status, when(e.updated_at_ms),
      ]));
    },
    async playground() {
      if (!state.models.length) await render.overview();
      playground.models();
    },
  };

  function limits(l) {
    if (!l) return "—";
    const parts = [
      "memory " + l.memory_mb + " MiB",
      "wall " + l.wall_time_ms + " ms",
      "kernels " + l.kernel_time_ms + " ms",
      "tensors " + l.tensor_mb + " MiB / " + l.tensor_handles + " handles",
      "copy-out " + l.copy_out_mb + " MiB",
      "stream " + l.stream_tokens + " tokens / " + l.stream_mb + " MiB",
      "fuel " + l.fuel,
    ];
    return parts.join(", ");
  }

  async function job() {
    const id = state.job;
    if (!id) return;
    const j = await api("/dashboard/api/jobs/" + encodeURIComponent(id));
    if (state.job !== id) return;
    $("job-detail").hidden = false;
    $("job-detail-id").textContent = j.id;
    const r = j.result;
    facts("job-detail-facts", [
      ["State", j.state],
      ["Role", j.role],
      ["Model", j.model],
      ["Provider", peer(j.provider)],
      ["Price", money(j.price)],
      ["Verification", j.verification],
      ["Attempts", j.attempts],
      ["Backend", r && r.backend ? r.backend.name + " " + r.backend.version + " (sha256 " + r.backend.sha256 + ")" : null],
      ["Usage", r && r.usage ? r.usage.input_tokens + " in, " + r.usage.output_tokens + " out" : null],
      ["Output hash", r ? r.output_hash : null],
      ["Error", j.error],
    ]);
    fill("job-events", j.events.map((e) => [when(e.at_ms), e.from, e.to, e.detail]));
    fill("job-quotes", j.quotes.map((q) => [peer(q.provider), money(q.price), q.accepted ? "yes" : "no"]));
    fill("job-escrows", j.escrows.map((e) => [e.kind, e.adapter, money(e.amount), e.status]));
  }

  // Renders the open view; a call while one runs is run after it.
  async function refresh() {
    if (!state.ready) return;
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    state.last = Date.now();
    try {
      await render[state.view]();
      state.loaded[state.view] = true;
      status("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      if (!(e instanceof AuthError)) status(String(e.message || e), true);
    } finally {
      state.busy = false;
      if (state.again) {
        state.again = false;
        setTimeout(refresh, 0);
      }
    }
  }

  function show(view) {
    if (!VIEWS.includes(view)) view = "overview";
    state.view = view;
    for (const v of VIEWS) {
      $("view-" + v).hidden = v !== view || !state.ready;
      $("nav-" + v).classList.toggle("active", v === view);
    }
    refresh();
  }

  // ---- the key ----
  function askKey(message) {
    state.ready = false;
    for (const v of VIEWS) $("view-" + v).hidden = true;
    $("key-panel").hidden = false;
    $("key-error").textContent = message || "";
    $("key-input").focus();
  }
  async function start() {
    const s = await fetch("/dashboard/api/session", { cache: "no-store" }).then((r) => r.json());
    if (s.key_required && !sessionStorage.getItem(KEY)) return askKey("");
    $("key-panel").hidden = true;
    state.ready = true;
    show(location.hash.slice(1));
  }

  // ---- wiring ----
  document.addEventListener("DOMContentLoaded", () => {
    for (const v of VIEWS) {
      $("nav-" + v).addEventListener("click", () => {
        if (location.hash === "#" + v) show(v);
        else location.hash = v;
      });
    }
    window.addEventListener("hashchange", () => show(location.hash.slice(1)));
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const k = $("key-input").value.trim();
      if (!k) return;
      sessionStorage.setItem(KEY, k);
      $("key-input").value = "";
      start().catch((e) => status(String(e.message || e), true));
    });
    playground = window.InfernetPlayground({ $, el, facts, peer, money, authHeaders, state, refresh });
    setInterval(() => {
      const every = REFRESH[state.view];
      if (!every) return;
      const now = Date.now();
      if (!state.last || now - state.last >= every - 50) refresh();
    }, 250);
    start().catch((e) => status(String(e.message || e), true));
  });
})();
