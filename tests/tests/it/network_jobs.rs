//! The job lifecycle across a real local network, through the SDK: three
//! provider nodes and a client on 127.0.0.1, each with its own data dir and
//! swarm, the client bootstrapped from one provider only. Real plugins
//! (llama on a generated checkpoint, echo, pricing-flat), real SQLite.

use futures::future::join_all;
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::p2p::protocol::{hash_output, Encoded};
use infernet_host::p2p::WireOutput;
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{Amount, ClientError, InferOptions, Infernet, StreamEvent};
use infernet_host::store::{JobRole, JobState, Store};
use infernet_host::worlds::backend::JobOutput;
use infernet_tests::net::start_node as start;
use infernet_tests::net::{client_toml, echo_provider_toml, wait_for_providers};
use infernet_tests::pack_plugin;
use std::path::Path;
use std::time::{Duration, Instant};

/// Rewrites a config file in place (`from -> to` for each pair).
fn edit(path: std::path::PathBuf, replacements: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    std::fs::write(&path, text).unwrap();
    path
}

async fn bootstrap_of(node: &Infernet) -> Vec<String> {
    vec![node.dialable_addrs().await.unwrap()[0].to_string()]
}

fn llama_provider_toml(
    root: &Path,
    name: &str,
    rate: u64,
    bootstrap: &[String],
) -> std::path::PathBuf {
    let model = root.join("tiny-llama");
    if !model.join("model.safetensors").exists() {
        write_llama_fixture(&LlamaFixtureSpec::tiny(), &model).unwrap();
        pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
        pack_plugin("pricing-flat", PluginKind::Pricing, &root.join("plugins"));
    }
    let boot: Vec<String> = bootstrap.iter().map(|b| format!("{b:?}")).collect();
    let text = format!(
        "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{}]\nadvert_interval_secs = 1\n\n\
         [[backend]]\nplugin = {:?}\n[[backend.models]]\nid = \"tiny-llama\"\npath = {:?}\n\n\
         [pricing]\nplugin = {:?}\n[pricing.config]\nper_input_token = 2\nper_output_token = {rate}\nminimum = 100\n",
        root.join(name),
        boot.join(", "),
        root.join("plugins/llama"),
        model,
        root.join("plugins/pricing-flat"),
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_providers_one_bootstrap_a_signed_result_quotes_budget_and_unknown_models() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let p0 = start(&llama_provider_toml(root, "p0", 12, &[])).await;
    let boot = bootstrap_of(&p0).await;
    let p1 = start(&llama_provider_toml(root, "p1", 10, &boot)).await;
    let p2 = start(&llama_provider_toml(root, "p2", 15, &boot)).await;
    // Price alone ranks them: on a loaded machine loopback round trips
    // differ by tens of ms, which the latency weight would count.
    let client = start(&client_toml(
        root,
        "client",
        &boot,
        "[client]\ndiscovery_timeout_ms = 1500\n[client.weights]\nlatency = 0.0\n",
    ))
    .await;
    wait_for_providers(&client, "tiny-llama", 3).await;

    let opts = InferOptions {
        max_tokens: Some(8),
        max_budget: Some(Amount::parse("0.001", "USD").unwrap()),
        ..Default::default()
    };
    let out = client
        .infer("tiny-llama", "hello world", opts.clone())
        .await
        .unwrap();

    // Same tokens as the provider's backend run locally, greedy.
    let local = p1
        .node()
        .unwrap()
        .generate(
            "tiny-llama",
            "hello world",
            &[("max_tokens", "8".into())],
            None,
        )
        .unwrap();
    let JobOutput::Text(expected) = local.output else {
        panic!("text expected")
    };
    assert_eq!(out.text(), Some(expected.as_str()));
    // Cheapest of three equal-reputation, idle providers: p1 (rate 10).
    assert_eq!(
        out.provider,
        p1.peer_id(),
        "the cheapest provider should serve"
    );
    assert_eq!(out.attempts, 1);
    // Signed by the provider over exactly this output, naming this client.
    assert_eq!(
        out.signed
            .verify_output(&Encoded::new(out.output.clone()).unwrap())
            .unwrap(),
        p1.peer_id()
    );
    assert_eq!(out.signed.payload.output_hash, hash_output(&out.output));
    assert_eq!(
        out.signed.payload.client.as_deref(),
        Some(client.peer_id().to_string().as_str())
    );
    assert_eq!(out.signed.payload.backend.name, "llama");
    assert_eq!(out.usage().output_tokens, 8);
    // The price is p1's quote: 2 per input token + 10 per output token, min 100.
    let quotes = client.store().quotes().for_job(&out.job_id).unwrap();
    assert_eq!(
        quotes.len(),
        3,
        "all three providers were asked: {quotes:?}"
    );
    let accepted: Vec<_> = quotes.iter().filter(|q| q.accepted).collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].provider_peer, p1.peer_id().to_string());
    assert_eq!(out.price.amount, accepted[0].price);
    assert!(quotes.iter().all(|q| q.price >= out.price.amount));

    // Every step of the lifecycle was persisted, in order.
    let events: Vec<JobState> = client
        .store()
        .jobs()
        .events(&out.job_id)
        .unwrap()
        .iter()
        .map(|e| e.to)
        .collect();
    use JobState::*;
    assert_eq!(
        events,
        vec![Created, Quoted, Escrowed, Assigned, Running, Delivered, Settled]
    );
    // The provider recorded its side under the wire id `<job>.1`, delivered.
    let served = p1
        .store()
        .jobs()
        .get(&format!("{}.1", out.job_id))
        .unwrap()
        .unwrap();
    assert_eq!((served.role, served.state), (JobRole::Provider, Delivered));

    // Streaming: the tokens add up to the signed output.
    let mut stream = client
        .infer_stream("tiny-llama", "hello world", opts.clone())
        .await
        .unwrap();
    let (mut text, mut assigned) = (String::new(), None);
    while let Some(ev) = stream.next().await {
        match ev {
            StreamEvent::Assigned { provider, .. } => assigned = Some(provider),
            StreamEvent::Token(t) => text.push_str(&t),
            StreamEvent::Failover { .. } => panic!("no provider failed"),
        }
    }
    let streamed = stream.finish().await.unwrap();
    assert_eq!(Some(text.as_str()), streamed.text());
    assert_eq!(assigned, Some(streamed.provider));

    // A budget below every quote: a clear error naming the cheapest one.
    let err = client
        .infer(
            "tiny-llama",
            "hello world",
            InferOptions {
                max_budget: Some(Amount::parse("0.000005", "USD").unwrap()),
                ..opts.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::OverBudget { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("budget of 0.000005 USD; cheapest seen: 0.0")
            && msg.contains(" USD from ")
            && msg.contains(&p1.peer_id().to_string()),
        "{msg}"
    );

    // A model nobody serves: a clear error listing what the network has.
    let err = client.infer("gpt-17", "hi", opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ClientError::NoProviders { .. }), "{msg}");
    assert!(
        msg.contains("gpt-17") && msg.contains("tiny-llama"),
        "{msg}"
    );

    // The client remembers the providers it heard about.
    let peers = client.peers().unwrap();
    for p in [&p0, &p1, &p2] {
        let rec = peers.iter().find(|r| r.peer_id == p.peer_id().to_string());
        let rec = rec.unwrap_or_else(|| panic!("peer {} not recorded: {peers:?}", p.peer_id()));
        assert_eq!(rec.models, vec!["tiny-llama".to_string()]);
    }
    for n in [client, p0, p1, p2] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_jobs_over_three_providers_are_all_accounted_for() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let p0 = start(&echo_provider_toml(root, "p0", 5, &[])).await;
    let boot = bootstrap_of(&p0).await;
    let p1 = start(&echo_provider_toml(root, "p1", 5, &boot)).await;
    let p2 = start(&echo_provider_toml(root, "p2", 5, &boot)).await;
    let client = start(&client_toml(root, "client", &boot, "")).await;
    wait_for_providers(&client, "echo", 3).await;

    let started = Instant::now();
    let jobs = (0..100).map(|i| {
        let client = &client;
        async move {
            let prompt = format!("job number {i} says hello");
            let out = client.infer("echo", &prompt, InferOptions::default()).await;
            (prompt, out)
        }
    });
    let results = join_all(jobs).await;
    let took = started.elapsed();
    let mut served_by = std::collections::HashMap::new();
    for (prompt, out) in &results {
        let out = out
            .as_ref()
            .unwrap_or_else(|e| panic!("job `{prompt}` failed: {e}"));
        assert_eq!(out.output, WireOutput::Text(prompt.clone()));
        *served_by.entry(out.provider).or_insert(0) += 1;
    }
    eprintln!("100 jobs in {took:?}: {served_by:?}");

    // The client's store: 100 jobs, all settled.
    let client_jobs = client.store().jobs().list(1000).unwrap();
    assert_eq!(client_jobs.len(), 100);
    assert!(client_jobs
        .iter()
        .all(|j| j.state == JobState::Settled && j.role == JobRole::Client));
    // The providers' stores: 100 executions in all, each job exactly once,
    // and each provider's count matches what the client saw.
    let mut executed = 0;
    for p in [&p0, &p1, &p2] {
        let rows: Vec<_> = p.store().jobs().list(1000).unwrap();
        assert!(rows
            .iter()
            .all(|r| r.role == JobRole::Provider && r.state == JobState::Delivered));
        assert_eq!(
            rows.len(),
            *served_by.get(&p.peer_id()).unwrap_or(&0),
            "provider {}",
            p.peer_id()
        );
        executed += rows.len();
    }
    assert_eq!(executed, 100);
    assert!(
        served_by.len() >= 2,
        "load should spread over providers: {served_by:?}"
    );
    for n in [client, p0, p1, p2] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_job_ends_failed_on_both_sides_and_is_not_delivered() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let p0 = start(&echo_provider_toml(root, "p0", 5, &[])).await;
    let boot = bootstrap_of(&p0).await;
    let client = start(&client_toml(root, "client", &boot, "")).await;
    wait_for_providers(&client, "echo", 1).await;

    let opts = InferOptions {
        params: vec![("delay_ms".into(), "200".into())],
        ..Default::default()
    };
    let mut stream = client
        .infer_stream("echo", "one two three four five six", opts)
        .await
        .unwrap();
    // Wait for the first token: the job is running on the provider.
    loop {
        match stream.next().await {
            Some(StreamEvent::Token(_)) => break,
            Some(_) => continue,
            None => panic!("stream ended before any token"),
        }
    }
    let job_id = stream.job_id.clone();
    client.client().cancel(&job_id).await.unwrap();
    let err = stream.finish().await.unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    let rec = client.store().jobs().get(&job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Failed);
    // The provider marked it failed too; its result, when the backend
    // finishes, is discarded rather than delivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let served = p0
        .store()
        .jobs()
        .get(&format!("{job_id}.1"))
        .unwrap()
        .unwrap();
    assert_eq!(served.state, JobState::Failed, "{served:?}");
    assert!(served.error.unwrap_or_default().contains("cancelled"));
    for n in [client, p0] {
        n.shutdown().await;
    }
}

/// The store files outlive the nodes: reopening shows the same jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_records_survive_the_node() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let p0 = start(&echo_provider_toml(root, "p0", 5, &[])).await;
    let boot = bootstrap_of(&p0).await;
    let client = start(&client_toml(root, "client", &boot, "")).await;
    wait_for_providers(&client, "echo", 1).await;
    let out = client
        .infer("echo", "persist me", InferOptions::default())
        .await
        .unwrap();
    for n in [client, p0] {
        n.shutdown().await;
    }
    let store = Store::open_in_dir(&root.join("client")).unwrap();
    let rec = store.jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Settled);
    assert_eq!(
        rec.result.unwrap()["output_hash"],
        out.signed.payload.output_hash.as_str()
    );
}

/// The same job over QUIC only: the provider listens on UDP, the client
/// bootstraps from its `/quic-v1` address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_runs_over_quic() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let quic = [("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")];
    let p0 = start(&edit(echo_provider_toml(root, "p0", 5, &[]), &quic)).await;
    let boot = bootstrap_of(&p0).await;
    assert!(boot[0].contains("/quic-v1/"), "{boot:?}");
    let client = start(&edit(client_toml(root, "client", &boot, ""), &quic)).await;
    wait_for_providers(&client, "echo", 1).await;
    let out = client
        .infer("echo", "over quic", InferOptions::default())
        .await
        .unwrap();
    assert_eq!(out.output, WireOutput::Text("over quic".into()));
    assert_eq!(out.provider, p0.peer_id());
    for n in [client, p0] {
        n.shutdown().await;
    }
}

/// mDNS alone (no bootstrap): a client finds a provider on the same LAN.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mdns_finds_a_provider_without_bootstrap() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let lan = |path| {
        edit(
            path,
            &[
                ("/ip4/127.0.0.1/tcp/0", "/ip4/0.0.0.0/tcp/0"),
                ("[node]\n", "[node]\nmdns = true\n"),
            ],
        )
    };
    let p0 = start(&lan(echo_provider_toml(root, "p0", 5, &[]))).await;
    let client = start(&lan(client_toml(root, "client", &[], ""))).await;
    wait_for_providers(&client, "echo", 1).await;
    let out = client
        .infer("echo", "found on the lan", InferOptions::default())
        .await
        .unwrap();
    assert_eq!(out.provider, p0.peer_id());
    for n in [client, p0] {
        n.shutdown().await;
    }
}
