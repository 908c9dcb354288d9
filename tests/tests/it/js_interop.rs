//! A second implementation of the protocol, in js-libp2p (`tests/js/`,
//! pinned npm packages, Node 20), against our Rust nodes with no Rust code
//! on its side: it checks the spec's test vectors, then joins a network
//! over TCP, and again over the WebSocket listener, finds the provider
//! through Kademlia, verifies its signed advert, runs an unpaid quote →
//! accept → run job and verifies the signed result; its own advert, signed
//! in its own CBOR layout, is accepted by the provider and forwarded to a
//! Rust node that never connected to it.

use infernet_host::config::Config;
use infernet_host::sdk::Infernet;
use infernet_tests::net::{client_toml, echo_provider_toml, wait_for_providers};
use infernet_tests::repo_root;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "interop from another implementation";

fn js_dir() -> PathBuf {
    let dir = repo_root().join("tests/js");
    assert!(
        dir.join("node_modules/libp2p").is_dir(),
        "js-libp2p is not installed in {}: run `npm ci --prefix tests/js` \
         (scripts/test.sh does; needs Node 20 and npm)",
        dir.display()
    );
    dir
}

/// Runs `node <script> <args>` in tests/js and returns its one JSON line.
fn node(script: &str, args: &[String]) -> Value {
    let dir = js_dir();
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node 20 is needed): {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let value: Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("node {script}: no JSON result\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    assert!(
        out.status.success() && value["ok"] == true,
        "node {script} failed: {value}\nstderr:\n{stderr}"
    );
    value
}

#[test]
fn js_checks_the_test_vectors() {
    let vectors = repo_root().join("docs/protocol/vectors.json");
    let v = node("vectors.mjs", &[vectors.display().to_string()]);
    assert!(v["checked"].as_u64().unwrap() >= 10, "{v}");
}

async fn start(config: &Path) -> Infernet {
    Infernet::new(Config::load(config).unwrap())
        .start()
        .await
        .unwrap()
}

/// A provider listening on TCP and WebSocket, a Rust client bootstrapped
/// from it, and the js client dialing the provider on `transport`'s
/// address; returns the js client's report.
async fn js_job_over(transport: &str) {
    let root = tempfile::tempdir().unwrap();
    let cfg = echo_provider_toml(root.path(), "provider", 10, &[]);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]",
        "listen = [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/tcp/0/ws\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    let provider = start(&cfg).await;
    let addrs = provider.dialable_addrs().await.unwrap();
    let is_ws = |a: &String| a.contains("/ws");
    let addr = addrs
        .iter()
        .map(|a| a.to_string())
        .find(|a| (transport == "ws") == is_ws(a))
        .unwrap_or_else(|| panic!("no {transport} address among {addrs:?}"));
    let boot = vec![addrs
        .iter()
        .map(|a| a.to_string())
        .find(|a| !is_ws(a))
        .unwrap()];
    let observer = start(&client_toml(root.path(), "observer", &boot, "")).await;
    wait_for_providers(&observer, "echo", 1).await;

    let advert_model = format!("js-model-{transport}");
    let args = vec![
        "--bootstrap".into(),
        addr.clone(),
        "--model".into(),
        "echo".into(),
        "--prompt".into(),
        PROMPT.into(),
        "--timeout-ms".into(),
        "60000".into(),
        "--advert-model".into(),
        advert_model.clone(),
    ];
    let report = tokio::task::spawn_blocking(move || node("client.mjs", &args))
        .await
        .unwrap();

    let provider_id = provider.peer_id().to_string();
    assert_eq!(report["provider"], provider_id.as_str(), "{report}");
    assert_eq!(report["found_via_dht"], true, "{report}");
    assert_eq!(report["advert_verified"], true, "{report}");
    assert_eq!(report["result_verified"], true, "{report}");
    assert_eq!(report["output"]["Text"], PROMPT, "{report}");
    assert_eq!(report["published_advert"], true, "{report}");
    let js_peer = report["peer_id"].as_str().unwrap().to_string();

    // The provider ran it for the js peer, and signed that in the result.
    let jobs = provider.jobs(10).unwrap();
    assert_eq!(jobs.len(), 1, "one job on the provider");
    assert_eq!(jobs[0].client_peer.as_deref(), Some(js_peer.as_str()));

    // The js advert: accepted by the provider, forwarded to the observer,
    // which is connected to the provider only.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = observer.network().adverts().await.unwrap();
        if let Some(a) = seen.iter().find(|a| a.peer_id == js_peer) {
            assert_eq!(a.models, vec![advert_model.clone()]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the observer never received the js advert (it saw {:?})",
            seen.iter().map(|a| &a.peer_id).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = observer.network().connected_peers().await.unwrap();
    assert!(
        !connected.iter().any(|p| p.to_string() == js_peer),
        "the observer must have the advert by forwarding, not from the js peer"
    );
    assert!(provider.network().metrics().adverts_accepted >= 1);
    observer.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_client_runs_a_job_over_tcp() {
    js_job_over("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_client_runs_a_job_over_websocket() {
    js_job_over("ws").await;
}
