"""The node's dashboard in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, nothing downloaded), driven by Selenium.

    dashboard_check.py CLIENT_URL KEY PROVIDER_URL SCREENSHOT_DIR

CLIENT_URL is a client node's API with `[[api.keys]]` (KEY is one of them);
PROVIDER_URL a provider's API without keys (loopback, keyless). Checks: every
view of both loads with no SEVERE browser console entry; the client asks for
the key once; the playground streams a chat job (tiny-llama) and a
completion (echo, slowed down) whose text is seen growing in the page over
at least two distinct non-empty observations before the stream ends; that
job then shows up in the jobs view, polled live without a reload, with its
provider and price; the provider's plugins view lists its plugins with their
sha256. A screenshot of every view is saved in SCREENSHOT_DIR. Prints a JSON
report on stdout; exits non-zero with a message on any failure.
"""

import json
import os
import sys
import time

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download anything

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CLIENT, KEY, PROVIDER, SHOTS = sys.argv[1:5]
VIEWS = ["overview", "network", "jobs", "plugins", "wallet", "playground"]
ECHO_WORDS = [f"word{i}" for i in range(1, 16)]
console = []


def fail(message):
    print(f"dashboard check failed: {message}", file=sys.stderr)
    if console:
        print("browser console:\n" + "\n".join(map(str, console)), file=sys.stderr)
    raise SystemExit(1)


def wait(what, cond, timeout=30.0, every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
        except Exception as e:  # a stale element mid-render: try again
            v = None
            last = e
        else:
            last = None
        if v:
            return v
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else ""))
        time.sleep(every)


def check_console(driver, where):
    entries = driver.get_log("browser")
    console.extend(entries)
    severe = [e for e in entries if e.get("level") == "SEVERE"]
    if severe:
        fail(f"SEVERE browser console entries at {where}: {severe}")


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def rows(driver, table):
    """The text of each body row's cells, skipping the empty-list row."""
    return js(driver, """
        const t = document.getElementById(arguments[0]);
        return Array.from(t.tBodies[0].rows)
          .filter(r => !r.querySelector('td.empty'))
          .map(r => Array.from(r.cells).map(c => c.textContent));
    """, table)


def shot(driver, name):
    path = os.path.join(SHOTS, name + ".png")
    if not driver.save_screenshot(path):
        fail(f"cannot save {path}")


def open_view(driver, view):
    js(driver, "document.getElementById('status').textContent = ''")
    driver.find_element(By.ID, "nav-" + view).click()
    wait(f"the {view} view", lambda: js(driver, """
        const v = document.getElementById('view-' + arguments[0]);
        return !v.hidden && /^updated /.test(document.getElementById('status').textContent);
    """, view))


def all_views(driver, prefix, require):
    for view in VIEWS:
        open_view(driver, view)
        if view in require:
            table = require[view]
            wait(f"rows in {prefix} {table}", lambda: rows(driver, table), timeout=20)
        check_console(driver, f"{prefix} {view}")
        shot(driver, f"{prefix}-{view}")


def play(driver, model, prompt, options, max_tokens):
    """Sends one playground job; returns (observations while streaming, final text, dataset)."""
    sel = driver.find_element(By.ID, "play-model")
    wait(f"model {model} in the playground", lambda: model in js(
        driver, "return Array.from(arguments[0].options).map(o => o.value)", sel))
    js(driver, "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))", sel, model)
    for field, value in [("play-prompt", prompt), ("play-options", options), ("play-max-tokens", str(max_tokens))]:
        e = driver.find_element(By.ID, field)
        e.clear()
        e.send_keys(value)
    driver.find_element(By.ID, "play-send").click()
    seen = []
    deadline = time.monotonic() + 60
    while True:
        text, st = js(driver, "const o = document.getElementById('play-output'); return [o.textContent, o.dataset.state || '']")
        if st == "streaming" and text and (not seen or seen[-1] != text):
            seen.append(text)
        if st in ("done", "error"):
            break
        if time.monotonic() > deadline:
            fail(f"the {model} job did not finish in 60 s (state {st!r}, text {text!r})")
        time.sleep(0.01)
    data = js(driver, "return Object.assign({}, document.getElementById('play-output').dataset)")
    if data.get("state") != "done":
        err = driver.find_element(By.ID, "play-error").text
        fail(f"the {model} job failed in the playground: {err}")
    return seen, text, data


def main():
    os.makedirs(SHOTS, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--no-first-run", "--disable-extensions"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    report = {}
    try:
        # The client: keys configured, so the page asks for one first.
        driver.get(CLIENT + "/")
        wait("the key form", lambda: driver.find_element(By.ID, "key-panel").is_displayed())
        check_console(driver, "client load")
        shot(driver, "client-key")
        driver.find_element(By.ID, "key-input").send_keys(KEY)
        driver.find_element(By.ID, "key-submit").click()
        wait("the overview", lambda: rows(driver, "models-table"))
        models = [r[0] for r in rows(driver, "models-table")]
        for m in ["tiny-llama", "echo"]:
            if m not in models:
                fail(f"model {m} missing from the overview: {models}")
        all_views(driver, "client", {"overview": "models-table", "network": "providers-table"})

        # The playground (no reload from here on: the marker must survive).
        js(driver, "window.__noReload = 1")
        open_view(driver, "playground")
        _, chat_text, chat = play(driver, "tiny-llama", "hello there", "", 16)
        if not chat.get("provider") or not chat.get("price"):
            fail(f"the chat job's provider or price is not shown: {chat}")
        report["chat"] = {"job_id": chat.get("jobId"), "text": chat_text}
        check_console(driver, "playground chat")
        prompt = " ".join(ECHO_WORDS)
        seen, final, data = play(driver, "echo", prompt, json.dumps({"params": {"delay_ms": "100"}}), 64)
        shot(driver, "client-playground-done")
        check_console(driver, "playground stream")
        if final != prompt:
            fail(f"the echo job's text in the page is {final!r}, not {prompt!r}")
        partial = [s for s in seen if s != final]
        if len(seen) < 2 or not partial:
            fail(f"the output was not seen growing while it streamed: {seen!r}")
        for a, b in zip(seen, seen[1:]):
            if not b.startswith(a) or len(b) <= len(a):
                fail(f"the streamed text did not only grow: {a!r} then {b!r}")
        job_id, provider, price = data.get("jobId"), data.get("provider"), data.get("price")
        if not job_id or not provider or not price:
            fail(f"the job id, provider or price is missing after the stream: {data}")

        # The jobs view picks the job up by polling; no reload.
        open_view(driver, "jobs")

        def job_row():
            return js(driver, """
                const r = document.querySelector('#jobs-table tr[data-job-id="' + CSS.escape(arguments[0]) + '"]');
                if (!r) return null;
                const peer = r.cells[4].querySelector('[data-peer]');
                return {state: r.dataset.state, provider: peer ? peer.dataset.peer : '',
                        price: r.cells[5].textContent, verification: r.cells[6].textContent};
            """, job_id)

        row = wait(f"job {job_id} settled in the jobs view", lambda: (lambda r: r if r and r["state"] == "settled" else None)(job_row()))
        if row["provider"] != provider:
            fail(f"the jobs view names provider {row['provider']!r}, the stream said {provider!r}")
        if row["price"] != price:
            fail(f"the jobs view shows price {row['price']!r}, the stream said {price!r}")
        if js(driver, "return window.__noReload") != 1:
            fail("the page reloaded")
        js(driver, """document.querySelector('#jobs-table tr[data-job-id="' + CSS.escape(arguments[0]) + '"]').click()""", job_id)
        events = wait("the job's transition log", lambda: len(rows(driver, "job-events")) >= 4 and rows(driver, "job-events"))
        states = [e[2] for e in events]
        for s in ["running", "delivered", "settled"]:
            if s not in states:
                fail(f"transition to {s} missing from the log: {events}")
        check_console(driver, "jobs view")
        shot(driver, "client-jobs-detail")
        report.update({"job_id": job_id, "provider": provider, "price": price, "verification": row["verification"],
                       "observations": [len(s) for s in seen], "transitions": states})

        # The provider: no keys, loopback, so no key is asked for.
        driver.get(PROVIDER + "/")
        wait("the provider's overview", lambda: rows(driver, "models-table") or js(
            driver, "return !document.getElementById('view-overview').hidden"))
        if driver.find_element(By.ID, "key-panel").is_displayed():
            fail("the keyless provider asked for a key")
        all_views(driver, "provider", {"plugins": "plugins-table", "jobs": "jobs-table"})
        plugins = rows(driver, "plugins-table")
        names = " ".join(r[0] for r in plugins)
        for p in ["llama", "echo", "pricing-flat"]:
            if p not in names:
                fail(f"plugin {p} missing from the provider's plugins view: {plugins}")
        for r in plugins:
            if len(r[4]) != 64:
                fail(f"plugin {r[0]} shows no sha256: {r}")
        report["plugins"] = [r[0] for r in plugins]
        check_console(driver, "provider views")
    finally:
        driver.quit()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
