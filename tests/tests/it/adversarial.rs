//! The attack catalogue (issue 12): each test is one attack, tried the way
//! an attacker would (a hand-built client on `infernet_host`, speaking raw
//! `/infernet/job/2` messages to a real `infernet node start` process), and
//! what the provider must do instead of giving work or results away. Each
//! failed on the code before its fix.
//!
//! 1. Quote swap on re-accept: terms, once accepted with an escrow, are
//!    immutable.
//! 2. Duplicate parameters: refused at the protocol edge.
//! 3. Price zero on request: no job runs below the provider's minimum, and
//!    the provider counts the input itself.
//! 4. Another client's job: `Poll`, a replayed `Run` or `Cancel` for a job
//!    are answered only to that job's client.
//! 8. Escrow checks: an escrow in a currency the provider does not take
//!    through that adapter is refused (here); one CoinPay escrow named in
//!    two letter cases pays one job (`network_coinpay::
//!    one_escrow_in_two_letter_cases_pays_one_job`); `allowed_hosts`
//!    match scheme and port exactly (`payment_adapters::allowed_host_*`).
//! 5. Exhaustion: one peer opens 1,000 job streams and 200 fresh
//!    identities flood adverts while an honest client runs jobs.
//! 7. A local user: secrets and the database are the node user's only, and
//!    a compiled artifact planted in the cache is not loaded.

use infernet_host::p2p::{ErrorCode, JobBody, JobMessage};
use infernet_tests::net::{echo_provider_toml, NodeProc};
use infernet_tests::raw_peer::{
    is_ack, paid_echo_provider, paid_echo_provider_with, refused, refused_with, Peer,
};

fn output_words(reply: &JobMessage) -> u32 {
    match &reply.body {
        JobBody::Result { signed, .. } => signed.payload.usage.output_tokens,
        other => panic!("expected a result, got {other:?}"),
    }
}

/// 1. Alice accepts job J with a cheap quote (1 output token) and a
/// matching escrow, then asks for an expensive quote (1,000 tokens) for the
/// same job and accepts again with the same escrow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaccept_cannot_swap_the_quote_behind_an_escrow() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (provider, _) = paid_echo_provider(root);
    let alice = Peer::new(root, "alice", &provider).await;

    let (cheap, cheap_price, pay_to) = alice.quote("job-j", "echo", 1).await;
    is_ack(
        &alice
            .accept("job-j.1", &cheap, &cheap_price, &pay_to, "esc-j")
            .await,
    );
    let (dear, dear_price, _) = alice.quote("job-j", "echo", 1000).await;
    assert!(dear_price.amount > cheap_price.amount);
    // The escrow statement still says the cheap price: the swap is refused.
    refused(
        &alice
            .accept("job-j.1", &dear, &cheap_price, &pay_to, "esc-j")
            .await,
        "accepted terms cannot change",
    );
    // And the job still runs only as first accepted.
    refused(
        &alice.run("job-j.1", "echo", Some(1000)).await,
        "quoted for 1 output tokens",
    );
    // Re-sending the same accept stays idempotent.
    is_ack(
        &alice
            .accept("job-j.1", &cheap, &cheap_price, &pay_to, "esc-j")
            .await,
    );
    drop(provider);
}

/// 2. `max_tokens` twice: a gate that reads the last and a plugin that
/// reads the first disagree, so duplicates are refused before either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_parameters_are_refused_at_the_protocol_edge() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (provider, _) = paid_echo_provider(root);
    let alice = Peer::new(root, "alice", &provider).await;
    let (quote, price, pay_to) = alice.quote_for("job-d", "echo", 5, 1).await;
    is_ack(
        &alice
            .accept("job-d.1", &quote, &price, &pay_to, "esc-d")
            .await,
    );
    let dup = vec![
        ("max_tokens".to_string(), "100000".to_string()),
        ("max_tokens".to_string(), "1".to_string()),
    ];
    let reply = alice
        .run_with("job-d.1", "echo", "one two three four five", dup)
        .await;
    refused_with(
        &reply,
        ErrorCode::InvalidRequest,
        "duplicate parameter `max_tokens`",
    );
    // With one `max_tokens` it runs, and the host holds the backend to the
    // paid bound whatever the plugin reads: echo ignores `max_tokens` and
    // streams five words, so the host stops it at the second.
    let one = vec![("max_tokens".to_string(), "1".to_string())];
    let reply = alice
        .run_with("job-d.1", "echo", "one two three four five", one)
        .await;
    refused_with(&reply, ErrorCode::Internal, "paid for 1 output tokens");
    // A job within its bound is delivered.
    let (quote, price, _) = alice.quote_for("job-e", "echo", 5, 5).await;
    is_ack(
        &alice
            .accept("job-e.1", &quote, &price, &pay_to, "esc-e")
            .await,
    );
    let five = vec![("max_tokens".to_string(), "5".to_string())];
    let reply = alice
        .run_with("job-e.1", "echo", "one two three four five", five)
        .await;
    assert_eq!(output_words(&reply), 5, "{reply:?}");
    drop(provider);
}

/// 3. A quote for 0 input and 0 output tokens from a provider whose rate
/// card has per-token rates and no explicit minimum; then a Run whose
/// input is far longer than the quote claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_runs_for_less_than_the_providers_minimum_or_on_a_short_input_claim() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (provider, _) = paid_echo_provider_with(root, |t| t.replace("minimum = 10\n", ""));
    let mallory = Peer::new(root, "mallory", &provider).await;

    let (quote, price, _) = mallory.quote_for("job-z", "echo", 0, 0).await;
    assert!(
        price.amount > 0,
        "a priced provider quoted {price:?} for an empty job"
    );
    // Without an escrow, nothing runs.
    let reply = mallory
        .send(JobBody::Accept {
            job_id: "job-z.1".into(),
            quote_id: quote.clone(),
            escrow: None,
        })
        .await;
    refused(&reply, "accept with an escrow");
    refused(
        &mallory.run("job-z.1", "echo", Some(0)).await,
        "no accepted quote",
    );

    // A quote for 1 input token, paid, then a 40-word input.
    let (quote, price, pay_to) = mallory.quote_for("job-long", "echo", 1, 4).await;
    is_ack(
        &mallory
            .accept("job-long.1", &quote, &price, &pay_to, "esc-long")
            .await,
    );
    let long = vec!["word"; 40].join(" ");
    let params = vec![("max_tokens".to_string(), "4".to_string())];
    let reply = mallory.run_with("job-long.1", "echo", &long, params).await;
    refused(&reply, "quoted for 1 input tokens");
    drop(provider);
}

/// 4. Mallory learns Alice's job id and asks about it: polls it, replays
/// Alice's exact `Run` (on a free provider, where no payment gate stands
/// in the way), and cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_about_a_job_are_answered_only_to_its_client() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let config = echo_provider_toml(root, "free", 0, &[]);
    let provider = NodeProc::start(&config);
    let alice = Peer::new(root, "alice", &provider).await;
    let mallory = Peer::new(root, "mallory", &provider).await;

    let secret = "alice's private prompt";
    let mine = alice.run_with("job-a.1", "echo", secret, vec![]).await;
    assert!(matches!(mine.body, JobBody::Result { .. }), "{mine:?}");

    let poll = mallory
        .send(JobBody::Poll {
            job_id: "job-a.1".into(),
            after_seq: 0,
        })
        .await;
    refused_with(&poll, ErrorCode::UnknownJob, "job-a.1");
    let replay = mallory.run_with("job-a.1", "echo", secret, vec![]).await;
    refused_with(&replay, ErrorCode::UnknownJob, "job-a.1");
    let cancel = mallory
        .send(JobBody::Cancel {
            job_id: "job-a.1".into(),
            reason: "mine now".into(),
        })
        .await;
    refused_with(&cancel, ErrorCode::UnknownJob, "job-a.1");

    // Alice still gets her own result, by Poll and by a re-sent Run.
    let again = alice
        .send(JobBody::Poll {
            job_id: "job-a.1".into(),
            after_seq: 0,
        })
        .await;
    assert!(matches!(again.body, JobBody::Result { .. }), "{again:?}");
    drop(provider);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// 7a. Another user on the machine reads nothing of a node: the data dir
/// is 0700, its identity key, database (and WAL) and the cache's MAC key
/// 0600, a publisher's secret key 0600.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_the_database_are_the_node_users_only() {
    use infernet_host::config::Config;
    use infernet_host::sdk::Infernet;
    let root = tempfile::tempdir().unwrap();
    let cfg = echo_provider_toml(root.path(), "node", 1, &[]);
    let node = Infernet::new(Config::load(&cfg).unwrap())
        .start()
        .await
        .unwrap();
    let dir = root.path().join("node");
    assert_eq!(mode(&dir), 0o700, "data dir");
    for f in [
        "identity.key",
        "node.db",
        "node.db-wal",
        "cache/compiled/mac.key",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    node.shutdown().await;

    let key = root.path().join("publisher.key");
    let out = std::process::Command::new(infernet_tests::net::infernet_bin())
        .args(["plugin", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&key), 0o600, "publisher secret key");
}

/// 7b. Someone who can write the data dir puts another component's valid
/// compiled artifact where the cache keeps this one's: the node must not
/// run it (the signature it checked was on the wasm, not this file).
#[test]
fn a_compiled_artifact_planted_in_the_cache_is_not_loaded() {
    use infernet_host::runtime::manifest::{Package, PluginKind};
    use infernet_host::runtime::Runtime;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let echo = Package::open(
        &infernet_tests::pack_plugin("echo", PluginKind::Backend, dir.path()),
        None,
    )
    .unwrap();
    let hostile = Package::open(
        &infernet_tests::pack_plugin("hostile", PluginKind::Backend, dir.path()),
        None,
    )
    .unwrap();
    let rt = Runtime::new(&cache).unwrap();
    rt.load(&echo, PluginKind::Backend).unwrap();
    rt.load(&hostile, PluginKind::Backend).unwrap();
    let file_of = |sha: &str| {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha))
            .unwrap()
    };
    let (echo_file, hostile_file) = (
        file_of(&echo.manifest.sha256),
        file_of(&hostile.manifest.sha256),
    );
    std::fs::copy(&hostile_file, &echo_file).unwrap();
    let loaded = Runtime::new(&cache)
        .unwrap()
        .load(&echo, PluginKind::Backend)
        .unwrap();
    assert!(
        !loaded.from_cache,
        "the planted artifact was loaded as the echo plugin"
    );
    // Recompiled from the signed wasm, and cached again under its own MAC.
    let again = Runtime::new(&cache)
        .unwrap()
        .load(&echo, PluginKind::Backend)
        .unwrap();
    assert!(again.from_cache);
}

/// The resident memory of process `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// 5. While an honest client runs jobs on a free provider (capacity 4):
/// one peer opens 1,000 job streams at once, each a slow run (2 s a word),
/// and four peers gossip adverts signed by 200 fresh identities, five
/// rounds. The provider answers the excess `Busy` (or refuses the
/// streams), ignores gossip past each source's rate, and stays within a
/// stated memory bound; the honest jobs complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_flood_and_an_identity_flood_leave_memory_bounded_and_honest_jobs_served() {
    use infernet_host::config::Config;
    use infernet_host::p2p::libp2p::futures::StreamExt;
    use infernet_host::p2p::libp2p::identity::Keypair;
    use infernet_host::p2p::libp2p::request_response;
    use infernet_host::p2p::libp2p::swarm::SwarmEvent;
    use infernet_host::p2p::protocol::{encode, now_ms, Advert, PROTOCOL_VERSION};
    use infernet_host::p2p::{codec::frame, start, Money, NetworkConfig, SignedAdvert, WireInput};
    use infernet_host::sdk::{InferOptions, Infernet};
    use infernet_tests::net::{client_toml, wait_for_providers};
    use infernet_tests::raw_swarm::raw_swarm_with;
    use std::time::{Duration, Instant};

    /// Memory a provider may grow by under this attack: 64 in-flight
    /// requests and 16 streams per connection of at most 1 MiB each, 1,024
    /// remembered peers, gossip caches: well under 200 MiB.
    const BOUND_KIB: u64 = 200 * 1024;

    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let cfg = echo_provider_toml(root, "free", 0, &[]);
    let text =
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replacen("[node]\n", "[node]\ncapacity = 4\n", 1);
    std::fs::write(&cfg, text).unwrap();
    let mut provider = NodeProc::start(&cfg);
    let pid = provider.child.id();
    let provider_id: infernet_host::p2p::PeerId = provider.peer.parse().unwrap();
    let client = Infernet::new(
        Config::load(&client_toml(root, "honest", &[provider.addr.clone()], "")).unwrap(),
    )
    .start()
    .await
    .unwrap();
    wait_for_providers(&client, "echo", 1).await;
    client
        .infer("echo", "warm up", InferOptions::default())
        .await
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss_kib(pid);

    // Sample the provider's memory every 50 ms until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };

    // The stream flood: 1,000 slow runs on one connection at once.
    let flood = tokio::spawn({
        let addr: infernet_host::p2p::libp2p::Multiaddr = provider.addr.parse().unwrap();
        async move {
            let mut raw = raw_swarm_with(2000);
            raw.dial(addr).unwrap();
            loop {
                if let SwarmEvent::ConnectionEstablished { .. } = raw.select_next_some().await {
                    break;
                }
            }
            for i in 0..1000 {
                let run = JobMessage::new(JobBody::Run {
                    job_id: format!("flood-{i}.1"),
                    model: "echo".into(),
                    input: WireInput::Text("slow slow".into()),
                    params: vec![("delay_ms".into(), "2000".into())],
                    stream: false,
                    proof: None,
                });
                raw.behaviour_mut()
                    .send_request(&provider_id, frame(&encode(&run).unwrap()));
            }
            let (mut busy, mut other_answers, mut refused) = (0u32, 0u32, 0u32);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while busy + other_answers + refused < 1000 {
                let Ok(ev) = tokio::time::timeout_at(deadline, raw.select_next_some()).await else {
                    break;
                };
                match ev {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    }) => {
                        if String::from_utf8_lossy(&response).contains("Busy") {
                            busy += 1;
                        } else {
                            other_answers += 1;
                        }
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                        refused += 1
                    }
                    _ => {}
                }
            }
            (busy, other_answers, refused)
        }
    });

    // The identity flood: four gossiping peers, 50 fresh identities each,
    // five rounds.
    let mut spammers = Vec::new();
    for n in 0..4 {
        let net = start(NetworkConfig::loopback(root.join(format!("spam{n}"))), None)
            .await
            .unwrap();
        net.dial(provider.addr.parse().unwrap()).await.unwrap();
        spammers.push(net);
    }
    std::thread::sleep(Duration::from_secs(2));
    let identities: Vec<Keypair> = (0..200).map(|_| Keypair::generate_ed25519()).collect();
    for round in 0..5 {
        for (i, key) in identities.iter().enumerate() {
            let advert = Advert {
                peer_id: key.public().to_peer_id().to_string(),
                addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + i)],
                models: vec![format!("spam-{round}-{i}")],
                quote: Money {
                    amount: 1,
                    currency: "USD".into(),
                },
                capacity: 1,
                wit_version: "0.2.0".into(),
                protocol_version: PROTOCOL_VERSION,
                stake: None,
                stake_cert: None,
                timestamp_ms: now_ms(),
                proofs: vec![],
                verifier: false,
                untraced: vec![],
            };
            let signed = SignedAdvert::sign(advert, key).unwrap();
            let _ = spammers[i % 4].publish_signed_advert(signed).await;
        }
    }

    // The honest client's jobs, during both floods.
    let t = Instant::now();
    for i in 0..5 {
        let out = client
            .infer("echo", &format!("honest job {i}"), InferOptions::default())
            .await
            .unwrap_or_else(|e| panic!("honest job {i} failed under the flood: {e}"));
        assert_eq!(out.text().unwrap_or_default(), format!("honest job {i}"));
    }
    let honest = t.elapsed();
    let (busy, answered, refused) = flood.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!(
        "flood: 1000 streams -> {busy} busy, {answered} other answers, {refused} refused or timed out; \
         honest 5 jobs in {honest:?}; provider RSS {baseline} KiB idle, {peak} KiB peak (+{} KiB)",
        peak.saturating_sub(baseline)
    );
    assert!(busy > 0, "the flood was never told Busy");
    assert!(
        peak.saturating_sub(baseline) < BOUND_KIB,
        "provider memory grew {} KiB (bound {BOUND_KIB} KiB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        provider.child.try_wait().unwrap().is_none(),
        "the provider died"
    );
    for s in spammers {
        s.shutdown().await;
    }
    client.shutdown().await;
    provider.kill();
}

/// 8a. This ledger takes USD only; Mallory's escrow statement says ETH
/// (the host could convert the price, but the adapter moves no ETH).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escrow_in_a_currency_the_adapter_does_not_take_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let config = echo_provider_toml(root, "usd-only", 5, &[]);
    infernet_tests::net::with_ledger(
        &config,
        root,
        "confirm = \"client\"\n[payment.config]\ncurrencies = \"USD\"",
    );
    let provider = NodeProc::start(&config);
    let mallory = Peer::new(root, "mallory", &provider).await;
    let (quote, _, pay_to) = mallory.quote_for("job-c", "echo", 2, 4).await;
    assert_eq!(pay_to[0].currencies, vec!["USD".to_string()]);
    let eth = infernet_host::p2p::Money {
        amount: 1_000_000_000_000_000_000,
        currency: "ETH".into(),
    };
    refused(
        &mallory
            .accept("job-c.1", &quote, &eth, &pay_to, "esc-eth")
            .await,
        "this provider takes",
    );
    drop(provider);
}
