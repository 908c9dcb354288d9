//! `infernet bench --bridge URL`: what the engine bridge
//! (`plugins/engine-openai`) adds to a job, against calling the same
//! engine directly in the same run: the same streamed `/v1/completions`
//! request (greedy, the same prompt and `max_tokens`), alternately direct
//! (a plain HTTP/1.1 client reading the whole SSE answer) and through a node
//! running the bridge in its sandbox. Plain `http://` engines only.

use anyhow::{bail, Context, Result};
use infernet_host::config::Config;
use infernet_host::node::Node;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const PROMPT: &str = "The quick brown fox jumps over the lazy dog, and then";

/// Host and port of an `http://host:port/...` URL.
fn authority(base: &str) -> Result<String> {
    let rest = base
        .strip_prefix("http://")
        .context("--bridge takes an http:// base URL, e.g. http://127.0.0.1:8000/v1")?;
    Ok(rest.split('/').next().unwrap_or(rest).to_string())
}

/// One streamed completion straight to the engine: (first text, total).
fn direct(base: &str, model: &str, tokens: u32) -> Result<(Duration, Duration)> {
    let auth = authority(base)?;
    let path = format!(
        "/{}/completions",
        base.trim_end_matches('/')
            .splitn(4, '/')
            .nth(3)
            .unwrap_or("v1")
    );
    let body = serde_json::json!({
        "model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true},
    })
    .to_string();
    let t = Instant::now();
    let mut s = TcpStream::connect(&auth).with_context(|| format!("connecting to {auth}"))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: {auth}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let (mut buf, mut first) = (Vec::new(), None);
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if first.is_none() && has_text(&buf) {
            first = Some(t.elapsed());
        }
    }
    let total = t.elapsed();
    if !String::from_utf8_lossy(&buf).contains("[DONE]") {
        bail!(
            "the engine's answer has no [DONE]: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(300)])
        );
    }
    Ok((first.unwrap_or(total), total))
}

/// Whether a complete SSE event in `buf` carries generated text.
fn has_text(buf: &[u8]) -> bool {
    String::from_utf8_lossy(buf)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .any(|v| {
            v.pointer("/choices/0/text")
                .and_then(|t| t.as_str())
                .is_some_and(|t| !t.is_empty())
        })
}

/// The same request through the bridge in a node: (first token, total).
fn bridged(node: &Node, tokens: u32) -> Result<(Duration, Duration)> {
    let first = std::sync::Arc::new(std::sync::Mutex::new(None::<Duration>));
    let t = Instant::now();
    let seen = std::sync::Arc::clone(&first);
    let sink = Box::new(move |_| {
        if let Ok(mut f) = seen.lock() {
            f.get_or_insert(t.elapsed());
        }
    });
    node.generate(
        "bridged",
        PROMPT,
        &[
            ("max_tokens", tokens.to_string()),
            ("temperature", "0".into()),
        ],
        Some(sink),
    )?;
    let total = t.elapsed();
    let first = first.lock().ok().and_then(|f| *f).unwrap_or(total);
    Ok((first, total))
}

pub fn run(
    plugins: &Path,
    dir: &Path,
    base: &str,
    model: &str,
    tokens: u32,
    requests: usize,
) -> Result<()> {
    let auth = authority(base)?;
    let model_dir = dir.join("bridged-model");
    infernet_host::models::fixture::write_weightless_model_dir(&model_dir)?;
    let text = format!(
        "[node]\ndata_dir = {:?}\n[[backend]]\nplugin = {:?}\nallowed_hosts = [\"http://{auth}\"]\n\
         [backend.config]\nbase_url = {base:?}\nengine_model = {model:?}\ntimeout_ms = 120000\n\
         [[backend.models]]\nid = \"bridged\"\npath = {model_dir:?}\n",
        dir.join("node"),
        plugins.join("engine-openai"),
    );
    let node = Node::from_config(&Config::parse(&text, dir)?)?;
    println!("\n## engine bridge: {base} model `{model}`, {tokens} tokens greedy, {requests} requests each, alternating");
    // Warm both paths (the engine's first request loads caches).
    direct(base, model, tokens)?;
    bridged(&node, tokens)?;
    let (mut d_first, mut d_total, mut b_first, mut b_total) = (vec![], vec![], vec![], vec![]);
    for _ in 0..requests {
        let (f, t) = direct(base, model, tokens)?;
        d_first.push(f.as_secs_f64() * 1e3);
        d_total.push(t.as_secs_f64() * 1e3);
        let (f, t) = bridged(&node, tokens)?;
        b_first.push(f.as_secs_f64() * 1e3);
        b_total.push(t.as_secs_f64() * 1e3);
    }
    let p = |v: &[f64], q: f64| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        s[((s.len() - 1) as f64 * q).round() as usize]
    };
    println!("| path | first token p50 (ms) | whole job p50 (ms) | p90 (ms) |");
    println!("|---|---|---|---|");
    println!(
        "| direct HTTP | {:.1} | {:.1} | {:.1} |",
        p(&d_first, 0.5),
        p(&d_total, 0.5),
        p(&d_total, 0.9)
    );
    println!(
        "| through the bridge | {:.1} | {:.1} | {:.1} |",
        p(&b_first, 0.5),
        p(&b_total, 0.5),
        p(&b_total, 0.9)
    );
    let over: Vec<f64> = b_total.iter().zip(&d_total).map(|(b, d)| b - d).collect();
    println!(
        "bridge overhead per job: p50 {:.1} ms, p90 {:.1} ms; bridged / direct = {:.3}",
        p(&over, 0.5),
        p(&over, 0.9),
        p(&b_total, 0.5) / p(&d_total, 0.5)
    );
    Ok(())
}
