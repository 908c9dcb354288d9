//! Verification policies on the client, over real nodes: echo providers
//! as `infernet node start` processes paid through the local ledger, and a
//! client that runs `replicate(k)` / `spot-check(p)` jobs. What must hold:
//! replicas run on different providers, each its own paid job held until
//! the results are compared, and agreeing replicas are all paid (the extra
//! ones are the verification's cost); a replicated job that cannot find k
//! providers fails clearly and pays nothing; a spot check catches at its
//! rate; bad `[verify]` settings name their key. (Disputes with cheating
//! providers are in `verifier.rs`.)

use infernet_host::config::Config;
use infernet_host::p2p::WireOutput;
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{spot_check, InferOptions, Infernet, Verdict, VerifyPolicy};
use infernet_host::store::{JobRecord, JobState, Store};
use infernet_host::verify::reputation::{self, Params, Score};
use infernet_tests::net::{
    cli, cli_fails, client_toml, funded_client, ledger_balance, llama_node_toml, paid_providers,
    pay_escrow, verify_evidence_cli, wait_for_providers, FUNDED,
};
use infernet_tests::postgrest::request;
use infernet_tests::{pack_cheat, pack_plugin};
use rand::SeedableRng;
use std::path::{Path, PathBuf};

const PROMPT: &str = "one two three four five six seven eight";

// ---------------------------------------------------------------- helpers

async fn start_client(config: &Path, providers: usize) -> Infernet {
    let client = Infernet::new(Config::load(config).unwrap())
        .start()
        .await
        .unwrap();
    wait_for_providers(&client, "echo", providers).await;
    client
}

fn replicate(k: u32) -> InferOptions {
    InferOptions {
        verify: Some(VerifyPolicy::Replicate(k)),
        ..Default::default()
    }
}

fn job(store: &Store, id: &str) -> JobRecord {
    store.jobs().get(id).unwrap().unwrap()
}

/// A stored job's parameters as it sent them.
fn params(rec: &JobRecord) -> Vec<(String, String)> {
    serde_json::from_value(rec.request.as_ref().unwrap()["params"].clone()).unwrap()
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_2_runs_on_two_providers_and_pays_both_when_they_agree() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[5, 7, 9]);
    let boot = vec![providers[0].addr.clone()];
    // The config's default policy is a spot check that always draws.
    let config = funded_client(root, &boot, "[verify]\npolicy = \"spot-check(1.0)\"\n");
    let client = start_client(&config, 3).await;
    let store = client.store().clone();
    let mut paid = 0;

    // 1. replicate(2), greedy.
    let out = client.infer("echo", PROMPT, replicate(2)).await.unwrap();
    assert_eq!(out.output, WireOutput::Text(PROMPT.into()));
    let v = out.verification.clone().expect("a verified outcome");
    assert_eq!(v.policy, VerifyPolicy::Replicate(2));
    assert!(v.checked);
    assert_eq!(v.verdict, Verdict::Agreed, "{v:?}");
    assert_eq!(v.replicas.len(), 2, "{v:?}");
    let (a, b) = (&v.replicas[0], &v.replicas[1]);
    assert_ne!(a.provider, b.provider, "two different providers");
    assert_ne!(a.job_id, b.job_id, "each replica is a job of its own");
    assert_eq!(out.job_id, a.job_id, "the outcome is the first replica's");
    assert_eq!(out.provider, a.provider);
    assert_eq!(
        v.cost,
        vec![b.price.clone()],
        "the extra cost is the second replica's price"
    );
    assert!(
        a.trace_root.is_some() && a.trace_root == b.trace_root,
        "{v:?}"
    );
    for r in &v.replicas {
        let rec = job(&store, &r.job_id);
        assert_eq!(rec.state, JobState::Settled, "{rec:?}");
        assert_eq!(
            rec.provider_peer.as_deref(),
            Some(r.provider.to_string().as_str())
        );
        let (status, amount) = pay_escrow(&store, &r.job_id);
        assert_eq!(status, "settled", "both escrows are released");
        assert_eq!(amount, r.price.amount);
        assert!(amount > 0);
        paid += amount;
        let events = store.jobs().events(&r.job_id).unwrap();
        // The transition log names the price in currency units.
        let quoted = events
            .iter()
            .find(|e| e.to == JobState::Quoted)
            .and_then(|e| e.detail.clone())
            .unwrap_or_default();
        assert!(
            quoted.ends_with(&format!(
                " at {}",
                infernet_host::payments::display(amount, "USD")
            )),
            "{quoted}"
        );
        let verified = events
            .iter()
            .find(|e| e.to == JobState::Verified)
            .and_then(|e| e.detail.clone())
            .unwrap_or_default();
        assert!(
            verified.contains("replicate(2): agreed by 2 providers"),
            "{events:?}"
        );
    }
    // Both replicas are verified outcomes: attested first-hand (and
    // gossiped), so both providers now score above a stranger.
    for r in &v.replicas {
        let mine = store
            .attestations()
            .by(&client.peer_id().to_string(), 0, 100)
            .unwrap();
        let row = mine
            .iter()
            .find(|a| a.job_id == r.job_id)
            .unwrap_or_else(|| panic!("no attestation of {}: {mine:?}", r.job_id));
        assert_eq!(row.subject, r.provider.to_string());
        assert_eq!(row.outcome, "verified");
        let score = client.reputation(&r.provider).unwrap();
        assert!(
            score.lower > Score::stranger(&Params::default()).lower,
            "{score:?}"
        );
    }
    // The second replica stayed away from the first one's provider.
    let second = job(&store, &b.job_id);
    assert_eq!(
        second.request.as_ref().unwrap()["exclude"],
        serde_json::json!([a.provider.to_string()])
    );
    assert_eq!(ledger_balance(&client), FUNDED - paid);

    // 2. Random sampling without a seed: the client picks one, the same
    //    for both replicas, and they still agree.
    let opts = InferOptions {
        temperature: Some(0.8),
        ..replicate(2)
    };
    let out = client.infer("echo", PROMPT, opts).await.unwrap();
    let v = out.verification.clone().unwrap();
    assert_eq!(v.verdict, Verdict::Agreed, "{v:?}");
    let sent: Vec<_> = v
        .replicas
        .iter()
        .map(|r| params(&job(&store, &r.job_id)))
        .collect();
    assert!(sent[0].iter().any(|(k, _)| k == "seed"), "{sent:?}");
    assert_eq!(sent[0], sent[1], "both replicas sample alike");
    let binds = out
        .signed
        .payload
        .binds
        .as_ref()
        .expect("the result binds its params");
    assert!(binds.params.iter().any(|(k, _)| k == "seed"), "{binds:?}");
    for r in &v.replicas {
        paid += pay_escrow(&store, &r.job_id).1;
    }

    // 3. No policy in the options: the config's spot-check(1.0) checks.
    let out = client
        .infer("echo", PROMPT, InferOptions::default())
        .await
        .unwrap();
    let v = out.verification.clone().unwrap();
    assert_eq!(v.policy, VerifyPolicy::SpotCheck(1.0));
    assert!(v.checked, "p = 1 always checks");
    assert_eq!(v.verdict, Verdict::Agreed);
    assert_eq!(v.replicas.len(), 2);
    for r in &v.replicas {
        paid += pay_escrow(&store, &r.job_id).1;
    }
    assert_eq!(ledger_balance(&client), FUNDED - paid);
    assert!(store.escrows().open().unwrap().is_empty());

    // 3b. Through the OpenAI-compatible API: the policy from the request's
    // `infernet` object, the verdict and both replicas (prices in currency
    // units) in the answer and its headers.
    let client = std::sync::Arc::new(client);
    let api = infernet_host::api::serve(client.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("{}/v1/completions", api.url());
    let body = serde_json::json!({"model": "echo", "prompt": PROMPT, "max_tokens": 8,
        "infernet": {"verify": "replicate(2)", "max_budget": "0.01", "currency": "USD"}})
    .to_string();
    let (status, headers, answer) = tokio::task::spawn_blocking(move || {
        request(
            "POST",
            &url,
            &[("content-type", "application/json")],
            Some(&body),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let meta = &answer["infernet"];
    assert_eq!(meta["verification"]["verdict"], "agreed", "{answer}");
    let replicas = meta["verification"]["detail"]["replicas"]
        .as_array()
        .unwrap();
    assert_eq!(replicas.len(), 2, "{answer}");
    assert_ne!(replicas[0]["provider"], replicas[1]["provider"], "{answer}");
    for r in replicas {
        let id = r["job_id"].as_str().unwrap();
        let (status, minor) = pay_escrow(&store, id);
        assert_eq!(status, "settled", "{answer}");
        assert_eq!(r["price"]["minor"], minor.to_string(), "{answer}");
        assert_eq!(
            r["price"]["amount"].as_str().unwrap(),
            infernet_host::payments::currency::to_decimal(u128::from(minor), 6)
        );
        paid += minor;
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("x-infernet-verification"),
        Some("agreed"),
        "{headers:?}"
    );
    assert_eq!(ledger_balance(&client), FUNDED - paid);
    api.stop();
    // The server's handlers let go of the node once their connections end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut client = client;
    let client = loop {
        match std::sync::Arc::try_unwrap(client) {
            Ok(c) => break c,
            Err(c) if std::time::Instant::now() < deadline => {
                client = c;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(_) => panic!("the API still holds the client node"),
        }
    };
    client.shutdown().await;

    // 4. The CLI prints the verification after the output, and in --json.
    let text = cli(
        &config,
        &[
            "infer",
            "--network",
            "--model",
            "echo",
            "--verify",
            "replicate(2)",
            PROMPT,
        ],
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("verification: "))
        .unwrap_or_else(|| panic!("no verification line: {text}"));
    assert!(
        line.starts_with("verification: replicate(2): agreed by 2 providers (extra cost ")
            && line.ends_with(" USD)"),
        "{line}"
    );
    let json: serde_json::Value = serde_json::from_str(&cli(
        &config,
        &[
            "infer",
            "--network",
            "--model",
            "echo",
            "--verify",
            "replicate(2)",
            "--max-budget",
            "0.01",
            "--currency",
            "USD",
            "--json",
            PROMPT,
        ],
    ))
    .unwrap();
    // Prices are shown in currency units, exactly; minor units beside them.
    let price = &json["price"];
    let minor: u64 = price["minor"].as_str().unwrap().parse().unwrap();
    assert_eq!(price["currency"], "USD", "{json}");
    assert_eq!(
        price["amount"].as_str().unwrap(),
        infernet_host::payments::currency::to_decimal(u128::from(minor), 6),
        "{json}"
    );
    assert!(minor > 0 && minor <= 10_000, "within 0.01 USD: {json}");
    let v = &json["verification"];
    assert_eq!(v["policy"], "replicate(2)", "{json}");
    assert_eq!(v["verdict"], "agreed", "{json}");
    assert_eq!(v["checked"], true, "{json}");
    assert_eq!(v["replicas"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(v["replicas"][0]["provider"], json["provider"], "{json}");

    // 5. Budgets are given in currency units: one below every quote is
    // refused naming the budget and the cheapest quote, both as decimals.
    let budget = |extra: &[&str]| {
        let mut args = vec!["infer", "--network", "--model", "echo"];
        args.extend_from_slice(extra);
        args.push(PROMPT);
        cli_fails(&config, &args)
    };
    let err = budget(&["--max-budget", "0.000001", "--currency", "USD"]);
    assert!(
        err.contains("no quote within the budget of 0.000001 USD; cheapest seen: 0.0"),
        "{err}"
    );
    let err = budget(&["--max-budget", "0.01"]);
    assert!(err.contains("--max-budget 0.01 needs --currency"), "{err}");
    let err = budget(&["--max-budget", "0.0000001", "--currency", "USD"]);
    assert!(
        err.contains("--max-budget 0.0000001 --currency USD"),
        "{err}"
    );
    drop(providers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_2_with_one_provider_fails_clearly_and_refunds_the_held_replica() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[5]);
    let boot = vec![providers[0].addr.clone()];
    let config = funded_client(root, &boot, "[client]\ndiscovery_timeout_ms = 1500\n");
    let client = start_client(&config, 1).await;
    let store = client.store().clone();

    let err = client
        .infer("echo", PROMPT, replicate(2))
        .await
        .expect_err("one provider cannot make two replicas");
    let text = err.to_string();
    assert!(
        text.contains("replicate(2) needs 2 different providers of `echo` and found 1"),
        "{text}"
    );
    assert!(text.contains("held replicas refunded"), "{text}");

    let jobs = store.jobs().list(10).unwrap();
    assert_eq!(
        jobs.len(),
        2,
        "the replica that ran and the one that found no provider"
    );
    let ran = jobs
        .iter()
        .find(|j| j.provider_peer.as_deref() == Some(providers[0].peer.as_str()))
        .expect("the first replica ran on the only provider");
    assert_eq!(ran.state, JobState::Refunded, "{ran:?}");
    assert!(ran.result.is_some(), "it had delivered: {ran:?}");
    assert!(
        ran.error
            .as_deref()
            .unwrap_or_default()
            .contains("replicate(2)"),
        "{ran:?}"
    );
    assert_eq!(pay_escrow(&store, &ran.id).0, "refunded");
    let other = jobs.iter().find(|j| j.id != ran.id).unwrap();
    assert!(
        matches!(other.state, JobState::Failed | JobState::Refunded),
        "{other:?}"
    );
    assert!(
        store.escrows().by_job(&other.id).unwrap().is_empty(),
        "nothing held"
    );
    assert!(store.escrows().open().unwrap().is_empty());
    assert_eq!(ledger_balance(&client), FUNDED, "nothing was paid");
    client.shutdown().await;
    drop(providers);
}

/// A node started in-process from `config`.
async fn start(config: PathBuf) -> Infernet {
    Infernet::new(Config::load(&config).unwrap())
        .start()
        .await
        .unwrap()
}

/// `<root>/<name>.toml`: an unpaid provider of `tiny-llama` with `plugin`.
fn llama_provider(root: &Path, name: &str, plugin: &Path, boot: &[String]) -> PathBuf {
    llama_node_toml(root, name, plugin, boot, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_of_different_plugins_are_not_compared_and_not_paid_for() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    // Another build under the same name: its results name its own sha256.
    let other = pack_cheat("perturb", root);
    let p0 = start(llama_provider(root, "p0", &honest, &[])).await;
    let boot = vec![p0.dialable_addrs().await.unwrap()[0].to_string()];
    let p1 = start(llama_provider(root, "p1", &other, &boot)).await;
    let client = start(client_toml(root, "client", &boot, "")).await;
    wait_for_providers(&client, "tiny-llama", 2).await;

    let opts = InferOptions {
        max_tokens: Some(4),
        ..replicate(2)
    };
    let err = client
        .infer("tiny-llama", "hello world", opts)
        .await
        .expect_err("two plugins' results are not one execution");
    let text = err.to_string();
    assert!(
        text.contains("cannot be compared") && text.contains("names another execution"),
        "{text}"
    );
    let jobs = client.store().jobs().list(10).unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for j in &jobs {
        assert_eq!(j.state, JobState::Failed, "both replicas fail: {j:?}");
        assert!(j.result.is_some(), "both had delivered: {j:?}");
        assert!(
            j.error
                .as_deref()
                .unwrap_or_default()
                .contains("not comparable"),
            "{j:?}"
        );
    }
    let mut ran: Vec<_> = jobs
        .iter()
        .filter_map(|j| j.provider_peer.clone())
        .collect();
    ran.sort();
    let mut both = vec![p0.peer_id().to_string(), p1.peer_id().to_string()];
    both.sort();
    assert_eq!(ran, both);
    client.shutdown().await;
    p1.shutdown().await;
    p0.shutdown().await;
}

#[test]
fn a_spot_check_catches_at_its_rate() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = 10_000u32;
    for p in [0.01, 0.1, 0.5, 0.9] {
        let caught = (0..n).filter(|_| spot_check(p, &mut rng)).count() as f64;
        let (mean, sigma) = (f64::from(n) * p, (f64::from(n) * p * (1.0 - p)).sqrt());
        assert!(
            (caught - mean).abs() <= 3.0 * sigma,
            "p = {p}: {caught} of {n} checked, expected {mean} ± {}",
            3.0 * sigma
        );
    }
    assert!(
        (0..n).all(|_| spot_check(1.0, &mut rng)),
        "p = 1 always checks"
    );
    assert!(!(0..n).any(|_| spot_check(0.0, &mut rng)));
    assert!(!(0..n).any(|_| spot_check(f64::NAN, &mut rng)));
}

#[test]
fn bad_verify_settings_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map_err(|e| e.to_string())
    };
    for (text, key) in [
        ("[verify]\npolicy = \"replicate(1)\"\n", "verify.policy"),
        ("[verify]\npolicy = \"spot-check(0)\"\n", "verify.policy"),
        ("[verify]\npolicy = \"majority\"\n", "verify.policy"),
        (
            "[verify]\nreferees = [\"referee-1\"]\n",
            "verify.referees[0]",
        ),
        ("[verify]\nreferee = 1\n", "referee"),
        ("[verify]\nstake = 5\n", "stake"),
        ("[verify]\ncert_secs = 0\n", "verify.cert_secs"),
        (
            "[verify]\nslash_client_permille = 1001\n",
            "verify.slash_client_permille",
        ),
        (
            "[verify]\nstake_escrow_secs = 2592001\n",
            "verify.stake_escrow_secs",
        ),
        (
            "[verify]\nstake_escrow_secs = 60\nunbond_grace_secs = 60\n",
            "verify.stake_escrow_secs",
        ),
        (
            "[stake]\narbiter = \"arbiter-1\"\namount = \"1\"\n",
            "stake.arbiter",
        ),
        (
            "[stake]\narbiter = \"12D3KooWCjt4j2MazWpXBdyu22UatNChNwtLGCSsDpZ6awgvrhQD\"\namount = \"0\"\n",
            "stake.amount",
        ),
        (
            "[stake]\narbiter = \"12D3KooWCjt4j2MazWpXBdyu22UatNChNwtLGCSsDpZ6awgvrhQD\"\namount = \"lots\"\n",
            "stake.amount",
        ),
    ] {
        let err = load(text).expect_err(text);
        assert!(err.contains(key), "{text}: {err}");
    }
    let ok = load("[verify]\npolicy = \"proof(groth16)\"\nreferee = true\n").unwrap();
    assert_eq!(ok.verify.policy, VerifyPolicy::Proof("groth16".into()));
    assert!(ok.verify.referee);
}

/// replicate(2) against a provider that runs a cheating plugin and claims
/// the honest plugin's sha256: the replicas disagree (trace roots), the
/// client takes both results to its referee over `/infernet/verify/1`, the
/// referee questions both providers and rules, the cheat's replica is
/// refunded, the honest one paid, and the evidence the client saved checks
/// offline with `infernet verify evidence`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_provider_is_disputed_before_the_referee_and_not_paid() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let cheat = pack_cheat("perturb", root);
    let p0 = start(llama_provider(root, "p0", &honest, &[])).await;
    let boot = vec![p0.dialable_addrs().await.unwrap()[0].to_string()];
    let p1 = start(llama_provider(root, "p1", &cheat, &boot)).await;
    let honest_sha = p0.provider().unwrap().backend_sha256("tiny-llama").unwrap();
    p1.provider()
        .unwrap()
        .claim_backend_sha256_for_tests(&honest_sha);
    let referee_cfg = llama_provider(root, "referee", &honest, &boot);
    let mut text = std::fs::read_to_string(&referee_cfg).unwrap();
    text.push_str("\n[verify]\nreferee = true\n");
    std::fs::write(&referee_cfg, text).unwrap();
    let referee = start(referee_cfg).await;
    let extra = format!("[verify]\nreferees = [\"{}\"]\n", referee.peer_id());
    let client_cfg = client_toml(root, "client", &boot, &extra);
    let client = start(client_cfg.clone()).await;
    wait_for_providers(&client, "tiny-llama", 3).await;

    let opts = InferOptions {
        max_tokens: Some(6),
        ..replicate(2)
    };
    let out = client
        .infer("tiny-llama", "hello world", opts)
        .await
        .unwrap();
    let v = out.verification.clone().unwrap();
    let cheater = p1.peer_id().to_string();
    let Verdict::Cheated {
        providers,
        evidence,
    } = &v.verdict
    else {
        panic!("expected the cheat caught: {v:?}")
    };
    assert_eq!(providers, &vec![cheater.clone()]);
    assert_eq!(
        out.provider,
        p0.peer_id(),
        "the honest replica's result is returned"
    );
    let replicas: Vec<String> = v.replicas.iter().map(|r| r.provider.to_string()).collect();
    assert!(
        !replicas.contains(&referee.peer_id().to_string()),
        "the referee ran no replica"
    );
    for r in &v.replicas {
        let rec = job(client.store(), &r.job_id);
        if r.provider == p1.peer_id() {
            // Unpaid here, so nothing to refund: the replica ends failed,
            // naming the evidence.
            assert_eq!(rec.state, JobState::Failed, "{rec:?}");
            assert!(rec
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("proven to cheat"));
        } else {
            assert_eq!(rec.state, JobState::Settled, "{rec:?}");
        }
    }
    // The ruling is a verified outcome: the cheat is attested `cheated`
    // with the evidence file's sha256 and barred from this client's
    // selection; the honest replica is attested `verified`.
    let attested = client
        .store()
        .attestations()
        .by(&client.peer_id().to_string(), 0, 100)
        .unwrap();
    let against = attested.iter().find(|a| a.subject == cheater).unwrap();
    assert_eq!(against.outcome, "cheated");
    let bytes = std::fs::read(evidence).unwrap();
    assert_eq!(
        against.evidence.as_deref(),
        Some(reputation::evidence_hash(&bytes).as_str())
    );
    assert!(client.reputation(&p1.peer_id()).unwrap().barred);
    let cleared = attested
        .iter()
        .find(|a| a.subject == p0.peer_id().to_string())
        .unwrap();
    assert_eq!(cleared.outcome, "verified");
    // The saved evidence proves it offline, with the plugin and weights.
    let out = verify_evidence_cli(evidence, &honest, &root.join("tiny-llama"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("cheated: {cheater}")), "{stdout}");
    let cheat_job = v
        .replicas
        .iter()
        .find(|r| r.provider == p1.peer_id())
        .unwrap()
        .job_id
        .clone();
    for n in [client, referee, p1, p0] {
        n.shutdown().await;
    }
    // The audit of the cheat's replica names the parties, the bound result
    // and the evidence, checked again.
    let audit: serde_json::Value =
        serde_json::from_str(&cli(&client_cfg, &["audit", &cheat_job, "--json"])).unwrap();
    assert_eq!(audit["job"]["provider"], cheater.as_str(), "{audit}");
    assert_eq!(
        audit["result"]["backend"]["sha256"],
        honest_sha.as_str(),
        "the lie is on record"
    );
    assert!(audit["result"]["trace_root"].is_string(), "{audit}");
    assert!(
        audit["result"]["binds"]["weights_hash"].is_string(),
        "{audit}"
    );
    assert_eq!(audit["evidence"]["cheated"][0], cheater.as_str(), "{audit}");
    let check = audit["evidence"]["check"].as_str().unwrap_or_default();
    assert!(
        check.starts_with("holds") || check.contains("cannot check"),
        "{check}"
    );
    let text = cli(&client_cfg, &["audit", &cheat_job]);
    assert!(
        text.contains("dispute evidence") && text.contains(&cheater),
        "{text}"
    );
}
