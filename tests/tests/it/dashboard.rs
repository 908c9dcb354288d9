//! The dashboard a node serves at `/` (`host/src/api/dashboard`), on the
//! network `openai_api` already runs (no network of its own): its headers
//! and key checks over plain HTTP here, then the page in a real headless
//! Chromium (`tests/python/dashboard_check.py`, Selenium): every view with
//! no console error, a job streamed in the playground, then found in the
//! jobs view with its provider and price. Screenshots go to
//! `target/dashboard-screenshots/`.

use infernet_host::sdk::Infernet;
use infernet_host::store::JobState;
use infernet_tests::{python, repo_root};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One HTTP/1.1 GET: (status line, lower-cased head, body).
fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> (String, String, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_lowercase(), body.to_string())
}

/// A keyless API (the provider's: loopback, no keys) spends money for
/// whoever reaches it, so it refuses what a foreign web page could send:
/// a cross-site form POST (`text/plain`, no preflight) and a request to a
/// DNS name rebound to 127.0.0.1. Neither starts a job.
async fn keyless_refuses_what_a_web_page_could_send(node: &Infernet, addr: SocketAddr) {
    let before = node.jobs(500).unwrap().len();
    let body = r#"{"model": "echo", "prompt": "spend", "max_tokens": 4}"#;
    let probes = [
        format!("Host: {addr}\r\nOrigin: https://evil.example\r\nContent-Type: text/plain"),
        format!("Host: {addr}\r\nOrigin: null\r\nContent-Type: text/plain"),
        format!("Host: {addr}\r\nSec-Fetch-Site: cross-site\r\nContent-Type: text/plain"),
        "Host: rebound.evil.example:8080\r\nContent-Type: application/json".to_string(),
    ];
    for head in probes {
        let (status, body) = tokio::task::spawn_blocking(move || {
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            write!(
                conn,
                "POST /v1/completions HTTP/1.1\r\n{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut answer = String::new();
            conn.read_to_string(&mut answer).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            (head.lines().next().unwrap_or_default().to_string(), body.to_string())
        })
        .await
        .unwrap();
        assert!(status.contains(" 403 "), "{status}: {body}");
        assert!(body.contains("permission_error"), "{body}");
    }
    assert_eq!(node.jobs(500).unwrap().len(), before, "no job was started");
}

/// Checks the dashboards of `client` (its API has `key` among its
/// `[[api.keys]]`) and `provider` (no keys: loopback, keyless), both
/// already on one network that serves `tiny-llama` (with a chat template on
/// the client) and `echo`.
pub async fn check(client: &Arc<Infernet>, provider: Infernet, key: &str) {
    let started = Instant::now();
    let provider = Arc::new(provider);
    let loopback = "127.0.0.1:0".parse().unwrap();
    let c = infernet_host::api::serve(client.clone(), loopback)
        .await
        .unwrap();
    let p = infernet_host::api::serve(provider.clone(), loopback)
        .await
        .unwrap();
    let (addr, k) = (c.addr, key.to_string());
    tokio::task::spawn_blocking(move || {
        // The page: strict CSP, no data in it, served without a key.
        let (status, head, body) = get(addr, "/", None);
        assert!(status.contains(" 200 "), "{status}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(
            head.contains("content-security-policy: default-src 'self'; script-src 'self';"),
            "{head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(body.contains("/dashboard/app.js") && !body.contains("<script>"));
        let (status, head, _) = get(addr, "/dashboard/app.js", None);
        assert!(
            status.contains(" 200 ") && head.contains("text/javascript"),
            "{head}"
        );
        let (_, _, session) = get(addr, "/dashboard/api/session", None);
        assert_eq!(session, r#"{"key_required":true}"#);
        // Every JSON endpoint wants the key.
        for path in ["overview", "network", "jobs", "jobs/x", "plugins", "wallet"] {
            let path = format!("/dashboard/api/{path}");
            let (status, _, _) = get(addr, &path, None);
            assert!(status.contains(" 401 "), "{path}: {status}");
            let (status, _, _) = get(addr, &path, Some("sk-wrong"));
            assert!(status.contains(" 401 "), "{path}: {status}");
        }
        let (status, _, body) = get(addr, "/dashboard/api/jobs?limit=100000", Some(&k));
        assert!(status.contains(" 200 "), "{status}: {body}");
        let jobs: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            jobs["jobs"].as_array().unwrap().len() <= 200,
            "limit capped"
        );
        let (status, _, _) = get(addr, "/dashboard/api/jobs/no-such-job", Some(&k));
        assert!(status.contains(" 404 "), "{status}");
    })
    .await
    .unwrap();
    keyless_refuses_what_a_web_page_could_send(&provider, p.addr).await;

    let shots = repo_root().join("target/dashboard-screenshots");
    let (client_url, provider_url) = (c.url(), p.url());
    let key = key.to_string();
    let browser = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(repo_root().join("tests/python/dashboard_check.py"))
            .args([&client_url, &key, &provider_url])
            .arg(&shots)
            .output()
            .expect("running the dashboard check (scripts/test.sh installs selenium into .venv, chromium and chromium-driver)")
    })
    .await
    .unwrap();
    let browser = browser.elapsed();
    assert!(
        out.status.success(),
        "dashboard_check.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad report ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    // The job the page streamed is the store's, with the provider it named.
    let id = report["job_id"].as_str().unwrap();
    let job = client
        .jobs(500)
        .unwrap()
        .into_iter()
        .find(|j| j.id == id)
        .unwrap_or_else(|| panic!("the playground's job {id} is not in the store"));
    assert_eq!(job.state, JobState::Settled, "{job:?}");
    assert_eq!(
        job.provider_peer.as_deref(),
        report["provider"].as_str(),
        "{report}"
    );
    assert_eq!(
        report["provider"].as_str(),
        Some(provider.peer_id().to_string().as_str())
    );
    assert!(
        report["observations"].as_array().unwrap().len() >= 2,
        "{report}"
    );
    c.stop();
    p.stop();
    eprintln!(
        "dashboard: {:.1}s ({:.1}s in the browser; the stream seen at {} lengths)",
        started.elapsed().as_secs_f64(),
        browser.as_secs_f64(),
        report["observations"]
    );
}
