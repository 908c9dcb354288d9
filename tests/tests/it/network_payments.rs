//! Paid jobs over the network, for real: echo providers as `infernet node
//! start` processes taking the local `payment-ledger` (`confirm = "client"`),
//! a client with its own ledger funded through `infernet wallet fund`.
//! What must hold: money moves exactly (the client pays the accepted price
//! once, the provider's account is credited it once), failed attempts are
//! refunded, a client killed at any settlement step neither pays twice nor
//! leaves an escrow open, and the CLI reports all of it in exact decimals.

use infernet_host::config::Config;
use infernet_host::p2p::{WireInput, WireOutput};
use infernet_host::payments::ledger::{self, LEDGER};
use infernet_host::sdk::{InferOptions, Infernet};
use infernet_host::store::{EscrowKind, JobRecord, JobRole, JobState, Store};
use infernet_tests::net::{
    client_toml, echo_provider_toml, escrow_rows, infernet_bin, job_rows, paid_providers, wait_for,
    wait_for_providers, with_ledger, NodeProc,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const PROMPT: &str = "one two three four five six seven eight";
/// What `wallet fund ... 1` credits, in micro-USD.
const FUNDED: u64 = 1_000_000;

// ---------------------------------------------------------------- helpers

/// `infernet <args> --config <config>`; its stdout, asserting success.
fn cli(config: &Path, args: &[&str]) -> String {
    let out = cli_raw(config, args);
    assert!(
        out.status.success(),
        "infernet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cli_raw(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(infernet_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("INFERNET_LOG", "warn")
        .output()
        .unwrap()
}

fn cli_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let text = cli(config, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// `minor` micro-USD as an exact decimal, written independently of the host.
fn usd(minor: u64) -> String {
    let (whole, frac) = (minor / 1_000_000, minor % 1_000_000);
    if frac == 0 {
        format!("{whole} USD")
    } else {
        let frac = format!("{frac:06}");
        format!("{whole}.{} USD", frac.trim_end_matches('0'))
    }
}

fn open(dir: &Path) -> Arc<Store> {
    Arc::new(Store::open_in_dir(dir).unwrap())
}

/// A USD balance in the ledger of the node under `dir`, read through the
/// host's ledger access on that node's store.
fn balance(dir: &Path, account: &str) -> u64 {
    ledger::balance(&open(dir).plugin_kv(LEDGER), account, "USD").unwrap()
}

/// The same balance through `infernet wallet balance --json`, checking that
/// its decimal agrees with its minor units.
fn cli_balance(config: &Path, account: &str) -> u64 {
    let v = cli_json(
        config,
        &["wallet", "balance", "--json", "--account", account],
    );
    let rows = v.as_array().unwrap();
    let Some(row) = rows.iter().find(|r| r["currency"] == "USD") else {
        return 0;
    };
    assert_eq!(row["account"], account, "{v}");
    let minor: u64 = row["minor"].as_str().unwrap().parse().unwrap();
    assert_eq!(row["amount"], usd(minor).as_str(), "{v}");
    minor
}

/// The peer id (= ledger account) of the node whose data dir is `dir`.
fn peer_of(dir: &Path) -> String {
    infernet_host::p2p::load_or_create_identity(dir)
        .unwrap()
        .public()
        .to_peer_id()
        .to_string()
}

fn provider_dir(root: &Path, providers: &[NodeProc], peer: &str) -> PathBuf {
    let i = providers
        .iter()
        .position(|p| p.peer == peer)
        .unwrap_or_else(|| panic!("{peer} is none of the providers"));
    root.join(format!("p{i}"))
}

/// The provider-side rows of client job `job` across all providers.
fn executions(root: &Path, n: usize, job: &str) -> Vec<JobRecord> {
    (0..n)
        .flat_map(|i| job_rows(&root.join(format!("p{i}"))))
        .filter(|r| r.role == JobRole::Provider && r.id.starts_with(&format!("{job}.")))
        .collect()
}

/// The accepted quote's price of a finished job, as the client stored it.
fn price_of(store: &Store, job: &JobRecord) -> u64 {
    let qid = job.quote_id.as_deref().expect("the job has a quote");
    let q = store
        .quotes()
        .get(qid)
        .unwrap()
        .expect("the quote is stored");
    assert_eq!(q.currency, "USD");
    assert!(q.price > 0, "the providers are paid: {q:?}");
    q.price
}

/// `<root>/client.toml`: a client paying through its own ledger, with
/// `extra` TOML, funded with 1 USD through `infernet wallet fund`.
fn funded_client(root: &Path, boot: &[String], extra: &str) -> PathBuf {
    let config = with_ledger(&client_toml(root, "client", boot, extra), root, "");
    let funded = cli(&config, &["wallet", "fund", "1"]);
    assert!(funded.contains("1 USD"), "{funded}");
    config
}

async fn start_client(config: &Path, providers: usize) -> Infernet {
    let client = Infernet::new(Config::load(config).unwrap())
        .start()
        .await
        .unwrap();
    wait_for_providers(&client, "echo", providers).await;
    client
}

fn delay(ms: u64) -> InferOptions {
    InferOptions {
        params: vec![("delay_ms".into(), ms.to_string())],
        ..Default::default()
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paid_job_settles_with_exact_money_and_the_cli_reports_it() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[5, 7]);
    let boot = vec![providers[0].addr.clone()];
    // Funded through the real CLI before the node starts.
    let config = funded_client(root, &boot, "");
    let client_dir = root.join("client");
    let me = peer_of(&client_dir);
    assert_eq!(cli_balance(&config, &me), FUNDED);

    let client = start_client(&config, 2).await;
    assert_eq!(client.peer_id().to_string(), me);
    let out = client.infer("echo", PROMPT, delay(0)).await.unwrap();
    assert_eq!(out.output, WireOutput::Text(PROMPT.into()));
    let store = client.store().clone();
    let job = store.jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Settled, "{job:?}");
    let price = price_of(&store, &job);
    assert_eq!(out.price.amount, price);
    let provider = out.provider.to_string();
    assert_eq!(job.provider_peer.as_deref(), Some(provider.as_str()));

    // The money: the client paid exactly the price, the provider's
    // account got exactly the price, nobody else got anything.
    assert_eq!(
        ledger::balance(&store.plugin_kv(LEDGER), &me, "USD").unwrap(),
        FUNDED - price
    );
    assert_eq!(balance(&client_dir, &me), FUNDED - price);
    assert_eq!(cli_balance(&config, &me), FUNDED - price);
    assert_eq!(cli_balance(&config, &provider), price);
    let all = cli_json(&config, &["wallet", "balance", "--json"]);
    let total: u64 = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["minor"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, FUNDED, "money is neither made nor lost: {all}");

    // The client's escrow row.
    let wire = format!("{}.1", out.job_id);
    let rows = store.escrows().by_job(&out.job_id).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let pay = &rows[0];
    assert_eq!(pay.id, wire);
    assert_eq!(pay.kind, EscrowKind::Pay);
    assert_eq!(pay.status, "settled", "{pay:?}");
    assert_eq!(pay.amount, price);
    assert_eq!(pay.currency, "USD");
    assert_eq!(pay.depositor, me);
    assert_eq!(pay.beneficiary, provider);
    let escrow_id = pay.escrow_id.clone().expect("the adapter's escrow id");
    assert_eq!(escrow_id, format!("ledger-{wire}"));
    assert!(store.escrows().open().unwrap().is_empty());

    // The job's log tells the escrow's story.
    let events = store.jobs().events(&out.job_id).unwrap();
    let said = |state: JobState| {
        events
            .iter()
            .find(|e| e.to == state)
            .and_then(|e| e.detail.clone())
            .unwrap_or_default()
    };
    assert!(said(JobState::Escrowed).contains(&escrow_id), "{events:?}");
    assert!(said(JobState::Escrowed).contains(&usd(price)), "{events:?}");
    assert!(
        said(JobState::Settled).contains(&escrow_id)
            && said(JobState::Settled).contains("released"),
        "{events:?}"
    );

    // The provider's side: an earn row, settled as the receipt reported.
    let pdir = provider_dir(root, &providers, &provider);
    let earn = wait_for("the earn row settled", Duration::from_secs(10), || {
        escrow_rows(&pdir)
            .into_iter()
            .find(|e| e.id == wire && e.status == "settled")
    });
    assert_eq!(earn.kind, EscrowKind::Earn);
    assert_eq!(earn.amount, price);
    assert_eq!(earn.escrow_id.as_deref(), Some(escrow_id.as_str()));
    assert_eq!(earn.confirmed_by.as_deref(), Some("client"));
    assert_eq!(earn.client_peer.as_deref(), Some(me.as_str()));
    let other = root.join(if pdir.ends_with("p0") { "p1" } else { "p0" });
    assert!(
        escrow_rows(&other).is_empty(),
        "the other provider earned nothing"
    );

    // The CLI.
    let list = cli_json(&config, &["escrow", "list", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let row = &list[0];
    assert_eq!(row["id"], wire.as_str());
    assert_eq!(row["kind"], "pay");
    assert_eq!(row["status"], "settled");
    assert_eq!(row["amount_minor"], price.to_string().as_str());
    assert_eq!(row["amount"], usd(price).as_str());
    assert_eq!(row["escrow_id"], escrow_id.as_str());
    assert_eq!(row["provider_peer"], provider.as_str());
    let show = cli_json(&config, &["escrow", "show", &escrow_id, "--json"]);
    assert_eq!(&show, row, "show by the adapter's id = the listed row");
    let show = cli_json(&config, &["escrow", "show", &wire, "--json"]);
    assert_eq!(&show, row);
    let earnings = cli_json(&config, &["escrow", "earnings", "--json"]);
    assert_eq!(
        earnings,
        serde_json::json!([{
            "provider": provider, "currency": "USD",
            "released": usd(price), "released_minor": price.to_string(),
            "held": "0 USD", "held_minor": "0",
            "refunded": "0 USD", "refunded_minor": "0",
            "escrows": 1,
        }])
    );
    // The same through the SDK.
    let sdk = client.earnings().unwrap();
    assert_eq!(sdk.len(), 1, "{sdk:?}");
    assert_eq!(
        (sdk[0].provider.as_str(), sdk[0].currency.as_str()),
        (provider.as_str(), "USD")
    );
    assert_eq!(
        (
            sdk[0].released,
            sdk[0].held,
            sdk[0].returned,
            sdk[0].escrows
        ),
        (u128::from(price), 0, 0, 1)
    );
    assert_eq!(client.escrows(10).unwrap(), rows);
    super::metrics::after_paid_job(&client, price).await;
    let pconfig = root.join(format!(
        "{}.toml",
        pdir.file_name().unwrap().to_str().unwrap()
    ));
    let plist = cli_json(&pconfig, &["escrow", "list", "--json"]);
    assert_eq!(plist[0]["kind"], "earn", "{plist}");
    assert_eq!(plist[0]["status"], "settled", "{plist}");
    assert_eq!(plist[0]["amount"], usd(price).as_str(), "{plist}");
    client.shutdown().await;
    drop(providers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unfunded_or_unpaying_clients_get_a_clear_error_and_nothing_runs() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[5, 5]);
    let boot = vec![providers[0].addr.clone()];

    // 1. A ledger, but no money in it.
    let config = with_ledger(&client_toml(root, "poor", &boot, ""), root, "");
    let poor_dir = root.join("poor");
    let client = start_client(&config, 2).await;
    let err = client
        .infer("echo", PROMPT, delay(0))
        .await
        .expect_err("an unfunded client cannot pay");
    let text = err.to_string();
    assert!(text.contains("insufficient"), "{text}");
    assert!(text.contains("infernet wallet fund"), "{text}");
    let jobs = client.store().jobs().list(10).unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert!(
        matches!(job.state, JobState::Failed | JobState::Refunded),
        "{job:?}"
    );
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .contains("infernet wallet fund"),
        "the stored reason says how to fund: {job:?}"
    );
    let held = client.store().escrows().by_job(&job.id).unwrap();
    assert!(held.iter().all(|e| e.is_final()), "{held:?}");
    assert!(client.store().escrows().open().unwrap().is_empty());
    assert_eq!(balance(&poor_dir, &client.peer_id().to_string()), 0);
    assert!(executions(root, 2, &job.id).is_empty());
    for i in 0..2 {
        assert!(escrow_rows(&root.join(format!("p{i}"))).is_empty());
    }
    client.shutdown().await;

    // 2. No [[payment]] at all, through the CLI.
    let config = client_toml(root, "nopay", &boot, "");
    let out = Command::new(infernet_bin())
        .args(["infer", "--network", "--model", "echo", "--config"])
        .arg(&config)
        .arg(PROMPT)
        .env("INFERNET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no [[payment]] adapter"), "{stderr}");
    let nopay = job_rows(&root.join("nopay"));
    assert_eq!(nopay.len(), 1, "{nopay:?}");
    assert_eq!(nopay[0].state, JobState::Failed, "{nopay:?}");
    assert!(escrow_rows(&root.join("nopay")).is_empty());
    assert!(executions(root, 2, &nopay[0].id).is_empty());
    drop(providers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts_on_every_provider_refund_every_escrow() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[5, 7]);
    let boot = vec![providers[0].addr.clone()];
    let config = funded_client(
        root,
        &boot,
        "[client]\nrun_timeout_ms = 800\nmax_attempts = 2\n",
    );
    let client_dir = root.join("client");
    let client = start_client(&config, 2).await;
    let me = client.peer_id().to_string();
    let err = client
        .infer("echo", PROMPT, delay(2_000))
        .await
        .expect_err("every provider times out");
    let store = client.store().clone();
    let jobs = store.jobs().list(10).unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.state, JobState::Refunded, "{job:?} ({err})");
    assert_eq!(job.attempts, 2, "{job:?}");
    let held = store.escrows().by_job(&job.id).unwrap();
    assert_eq!(held.len(), 2, "one escrow per attempt: {held:?}");
    for e in &held {
        assert_eq!(e.status, "refunded", "{e:?}");
        assert!(e.amount > 0);
    }
    assert_ne!(held[0].beneficiary, held[1].beneficiary);
    assert!(store.escrows().open().unwrap().is_empty());
    assert_eq!(balance(&client_dir, &me), FUNDED);
    assert_eq!(cli_balance(&config, &me), FUNDED);
    for p in &providers {
        assert_eq!(cli_balance(&config, &p.peer), 0, "{} was paid", p.peer);
    }
    // Both providers did start it (it was the timeout that failed it).
    assert_eq!(executions(root, 2, &job.id).len(), 2);
    let earnings = cli_json(&config, &["escrow", "earnings", "--json"]);
    for row in earnings.as_array().unwrap() {
        assert_eq!(row["released_minor"], "0", "{earnings}");
        assert_eq!(row["held_minor"], "0", "{earnings}");
    }
    client.shutdown().await;
    drop(providers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_killed_mid_job_its_escrow_is_refunded_and_the_next_one_paid() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let mut providers = paid_providers(root, &[5, 9]);
    let boot = vec![providers[0].addr.clone()];
    let config = funded_client(root, &boot, "");
    let client_dir = root.join("client");
    let client = start_client(&config, 2).await;
    let me = client.peer_id().to_string();

    let job = {
        let c = client.client().clone();
        tokio::spawn(async move {
            c.submit("echo", WireInput::Text(PROMPT.into()), &delay(250))
                .await
        })
    };
    let store = client.store().clone();
    let running = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("the job to run", Duration::from_secs(20), || {
                store
                    .jobs()
                    .list(1)
                    .ok()?
                    .into_iter()
                    .find(|r| r.state == JobState::Running)
            })
        })
        .await
        .unwrap()
    };
    let victim_peer = running.provider_peer.clone().unwrap();
    let victim = providers
        .iter()
        .position(|p| p.peer == victim_peer)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    providers[victim].kill();

    let out = job.await.unwrap().expect("the job completes elsewhere");
    assert_eq!(out.output, WireOutput::Text(PROMPT.into()));
    assert_eq!(out.attempts, 2);
    let survivor = out.provider.to_string();
    assert_ne!(survivor, victim_peer);
    let rec = store.jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Settled);
    let price = price_of(&store, &rec);

    let held = store.escrows().by_job(&out.job_id).unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    let first = held
        .iter()
        .find(|e| e.id == format!("{}.1", out.job_id))
        .unwrap();
    let second = held
        .iter()
        .find(|e| e.id == format!("{}.2", out.job_id))
        .unwrap();
    assert_eq!(first.status, "refunded", "{first:?}");
    assert_eq!(first.beneficiary, victim_peer);
    assert_eq!(second.status, "settled", "{second:?}");
    assert_eq!(second.beneficiary, survivor);
    assert_eq!(second.amount, price);
    assert!(store.escrows().open().unwrap().is_empty());

    assert_eq!(balance(&client_dir, &me), FUNDED - price);
    assert_eq!(cli_balance(&config, &me), FUNDED - price);
    assert_eq!(cli_balance(&config, &survivor), price);
    assert_eq!(cli_balance(&config, &victim_peer), 0);
    let all = cli_json(&config, &["wallet", "balance", "--json"]);
    let credited: u64 = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["account"] != me.as_str())
        .map(|r| r["minor"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(credited, price, "paid once, to one provider: {all}");
    let events = store.jobs().events(&out.job_id).unwrap();
    let escrowed: Vec<_> = events
        .iter()
        .filter(|e| e.to == JobState::Escrowed)
        .collect();
    assert_eq!(escrowed.len(), 2, "{events:?}");

    let sdir = provider_dir(root, &providers, &survivor);
    wait_for(
        "the survivor's earn row settled",
        Duration::from_secs(10),
        || {
            escrow_rows(&sdir)
                .into_iter()
                .find(|e| e.id == second.id && e.status == "settled" && e.amount == price)
        },
    );
    client.shutdown().await;
    drop(providers);
}

/// Runs `infernet infer --network --model echo` with `args` as a process
/// told to abort right after step `point`, and checks that it died.
fn infer_and_crash_after(config: &Path, args: &[&str], point: &str) {
    let status = Command::new(infernet_bin())
        .args(["infer", "--network", "--model", "echo"])
        .args(args)
        .arg("--config")
        .arg(config)
        .arg(format!("crash after {point}"))
        .env("INFERNET_CRASH_AFTER", point)
        .env("INFERNET_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the client must die after `{point}`");
}

/// The client process dies right after persisting each settlement step in
/// turn; a restarted client node resumes and sweeps: every job settled,
/// executed once, paid once, no escrow left open.
#[test]
fn client_crash_at_each_settlement_step_pays_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[5, 7]);
    let boot = vec![providers[0].addr.clone()];
    // A loaded machine may take a while to discover the providers.
    let config = funded_client(root, &boot, "[client]\ndiscovery_timeout_ms = 30000\n");
    let client_dir = root.join("client");
    let me = peer_of(&client_dir);

    let points = [
        "escrow-intent",
        "escrow-created",
        "escrow-funded",
        "running",
        "delivered",
        "escrow-released",
    ];
    for point in points {
        infer_and_crash_after(&config, &[], point);
    }
    let mut jobs = job_rows(&client_dir);
    jobs.sort_by_key(|j| j.created_at_ms);
    assert_eq!(jobs.len(), points.len(), "{jobs:?}");
    for (job, point) in jobs.iter().zip(points) {
        assert!(
            job.state.is_active(),
            "died after `{point}`, before settling: {job:?}"
        );
    }
    let before = escrow_rows(&client_dir);
    assert!(
        before.iter().any(|e| e.status == "creating"),
        "the intent was left behind: {before:?}"
    );
    assert!(
        before.iter().any(|e| e.status == "settled"),
        "the money was released before the job settled: {before:?}"
    );

    let _client = NodeProc::start(&config);
    let done = wait_for(
        "every resumed job to settle and every escrow to close",
        Duration::from_secs(60),
        || {
            let rows = job_rows(&client_dir);
            let open = open(&client_dir).escrows().open().ok()?;
            (rows.iter().all(|r| !r.state.is_active())
                && open.iter().all(|e| e.kind != EscrowKind::Pay))
            .then_some(rows)
        },
    );
    let store = open(&client_dir);
    let mut total = 0;
    for job in &done {
        assert_eq!(job.state, JobState::Settled, "{job:?}");
        let price = price_of(&store, job);
        total += price;
        let ran = executions(root, 2, &job.id);
        assert_eq!(
            ran.len(),
            1,
            "job {} ran {} times: {ran:?}",
            job.id,
            ran.len()
        );
        assert_eq!(ran[0].state, JobState::Delivered);
        let held = store.escrows().by_job(&job.id).unwrap();
        let paid: Vec<_> = held.iter().filter(|e| e.status == "settled").collect();
        assert_eq!(paid.len(), 1, "released exactly once: {held:?}");
        assert_eq!(paid[0].amount, price);
        assert_eq!(paid[0].id, format!("{}.{}", job.id, job.attempts));
        assert_eq!(paid[0].beneficiary, job.provider_peer.clone().unwrap());
        for e in held.iter().filter(|e| e.status != "settled") {
            assert!(
                matches!(e.status.as_str(), "refunded" | "abandoned"),
                "{e:?}"
            );
        }
    }
    assert!(
        store
            .escrows()
            .open()
            .unwrap()
            .iter()
            .all(|e| e.kind != EscrowKind::Pay),
        "no escrow left open"
    );
    assert_eq!(balance(&client_dir, &me), FUNDED - total);
    assert_eq!(cli_balance(&config, &me), FUNDED - total);
    let credited: u64 = providers
        .iter()
        .map(|p| balance(&client_dir, &p.peer))
        .sum();
    assert_eq!(credited, total, "providers credited Σ prices, once each");
    drop(providers);
}

/// The client dies right after refunding a failed job's escrow, before
/// the job's `failed -> refunded` step: the restarted node's sweep finds
/// the refunded escrow and finishes the step; the money is back once.
#[test]
fn client_crash_after_the_final_refund_the_job_ends_refunded_on_restart() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[5]);
    let boot = vec![providers[0].addr.clone()];
    let config = funded_client(
        root,
        &boot,
        "[client]\ndiscovery_timeout_ms = 30000\nrun_timeout_ms = 800\nmax_attempts = 1\n",
    );
    let client_dir = root.join("client");
    let me = peer_of(&client_dir);
    infer_and_crash_after(&config, &["--param", "delay_ms=2000"], "escrow-refunded");
    let jobs = job_rows(&client_dir);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        jobs[0].state,
        JobState::Failed,
        "died before failed -> refunded"
    );
    let held = escrow_rows(&client_dir);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].status, "refunded");
    assert_eq!(balance(&client_dir, &me), FUNDED);

    let _client = NodeProc::start(&config);
    let job = wait_for(
        "the sweep to finish the refund step",
        Duration::from_secs(30),
        || {
            job_rows(&client_dir)
                .into_iter()
                .find(|j| j.state == JobState::Refunded)
        },
    );
    assert_eq!(job.id, jobs[0].id);
    assert_eq!(
        escrow_rows(&client_dir),
        held,
        "the escrow is not touched again"
    );
    assert_eq!(balance(&client_dir, &me), FUNDED, "refunded once");
    drop(providers);
}

#[test]
fn stake_post_show_withdraw_moves_the_providers_money_exactly() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let config = echo_provider_toml(root, "p0", 5, &[]);
    with_ledger(&config, root, "confirm = \"client\"");
    let me = peer_of(&root.join("p0"));
    cli(&config, &["wallet", "fund", "1"]);
    assert_eq!(cli_balance(&config, &me), FUNDED);

    let posted = cli(&config, &["stake", "post", "0.5"]);
    assert!(posted.contains("0.5 USD"), "{posted}");
    let show = cli_json(&config, &["stake", "show", "--json"]);
    let stakes = show.as_array().unwrap();
    assert_eq!(stakes.len(), 1, "{show}");
    let stake = &stakes[0];
    assert_eq!(stake["kind"], "stake");
    assert_eq!(stake["status"], "funded", "{show}");
    assert_eq!(stake["amount_minor"], "500000");
    assert_eq!(stake["amount"], "0.5 USD");
    assert_eq!(stake["depositor"], me.as_str());
    assert!(posted.contains(stake["id"].as_str().unwrap()), "{posted}");
    assert_eq!(cli_balance(&config, &me), 500_000);
    assert_eq!(balance(&root.join("p0"), &me), 500_000);

    cli(&config, &["stake", "withdraw"]);
    let show = cli_json(&config, &["stake", "show", "--json"]);
    assert_eq!(show[0]["status"], "refunded", "{show}");
    assert_eq!(cli_balance(&config, &me), FUNDED);
    // Nothing left to withdraw.
    let again = cli_raw(&config, &["stake", "withdraw"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no open stake"),
        "{again:?}"
    );
    assert_eq!(cli_balance(&config, &me), FUNDED);
}

/// A provider process dies at each of its settlement steps in turn — after
/// confirming the escrow (its `earn` row written, the `Ack` not sent),
/// after its run went `running`, after the signed result was stored but
/// not sent — on one job that fails over from each dying provider to the
/// next. The client refunds each dead attempt's escrow and pays the
/// survivor exactly once; restarted, the dead providers close their earn
/// rows (no receipt came: `expired` after the escrow's expiry) and never
/// run the job again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_crash_at_each_settlement_step_refunds_it_and_pays_the_survivor_once() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // p0 survives (the dearest); p1..p3 die, cheapest first.
    let survivor = {
        let config = echo_provider_toml(root, "p0", 40, &[]);
        with_ledger(&config, root, "confirm = \"client\"");
        NodeProc::start(&config)
    };
    let boot = vec![survivor.addr.clone()];
    let points = [
        "provider-escrow-confirmed",
        "provider-running",
        "provider-delivered",
    ];
    let mut dying: Vec<(PathBuf, NodeProc)> = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let name = format!("p{}", i + 1);
        let config = echo_provider_toml(root, &name, 1 + i as u64, &boot);
        with_ledger(&config, root, "confirm = \"client\"");
        let proc = NodeProc::start_with_env(&config, &[("INFERNET_CRASH_AFTER", point)]);
        dying.push((config, proc));
    }
    // Price decides; escrows expire soon after the job so the restarted
    // providers' rows reach their expiry within the test.
    const ESCROW_SECS: u64 = 15;
    let config = funded_client(
        root,
        &boot,
        &format!(
            "[client]\nmax_attempts = 4\nescrow_secs = {ESCROW_SECS}\n\
                 [client.weights]\nprice = 1.0\nreputation = 0.0\nlatency = 0.0\nload = 0.0\n"
        ),
    );
    let client = start_client(&config, 4).await;
    let me = client.peer_id().to_string();

    let out = client.infer("echo", PROMPT, delay(0)).await.unwrap();
    let done_at = std::time::Instant::now();
    assert_eq!(out.output, WireOutput::Text(PROMPT.into()));
    assert_eq!(out.provider.to_string(), survivor.peer, "{out:?}");
    assert_eq!(out.attempts, 4, "one attempt per dying provider, then p0");
    for (config, proc) in &mut dying {
        let status = wait_for("the provider to die", Duration::from_secs(10), || {
            proc.child.try_wait().unwrap()
        });
        assert!(!status.success(), "{} exited cleanly", config.display());
    }

    // The client: attempts 1-3 refunded, attempt 4 settled, paid once.
    let store = client.store().clone();
    let rec = store.jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Settled, "{rec:?}");
    let price = price_of(&store, &rec);
    let held = store.escrows().by_job(&out.job_id).unwrap();
    assert_eq!(held.len(), 4, "{held:?}");
    for (i, (_, proc)) in dying.iter().enumerate() {
        let e = held
            .iter()
            .find(|e| e.id == format!("{}.{}", out.job_id, i + 1))
            .unwrap_or_else(|| panic!("attempt {} has no escrow: {held:?}", i + 1));
        assert_eq!(e.beneficiary, proc.peer, "{e:?}");
        assert_eq!(e.status, "refunded", "{e:?}");
    }
    let paid = held
        .iter()
        .find(|e| e.id == format!("{}.4", out.job_id))
        .unwrap();
    assert_eq!((paid.status.as_str(), paid.amount), ("settled", price));
    assert_eq!(paid.beneficiary, survivor.peer);
    assert!(store.escrows().open().unwrap().is_empty());
    assert_eq!(cli_balance(&config, &me), FUNDED - price);
    assert_eq!(cli_balance(&config, &survivor.peer), price);
    for (_, proc) in &dying {
        assert_eq!(
            cli_balance(&config, &proc.peer),
            0,
            "{} was paid",
            proc.peer
        );
    }
    // The survivor's receipt says how the client's ledger ended it.
    wait_for("the survivor's earn row", Duration::from_secs(10), || {
        escrow_rows(&root.join("p0"))
            .into_iter()
            .find(|e| e.id == paid.id && e.status == "settled" && e.amount == price)
    });
    client.shutdown().await;

    // The dead providers: each left its earn row open, and what it ran.
    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("p{i}"))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let rows = escrow_rows(dir);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].id, format!("{}.{}", out.job_id, i + 1));
        assert_eq!(rows[0].status, "funded", "{rows:?}");
    }
    let ran = |dir: &Path| -> Vec<JobState> { job_rows(dir).iter().map(|r| r.state).collect() };
    assert_eq!(ran(&dirs[0]), [] as [JobState; 0], "no Run reached p1");
    assert_eq!(ran(&dirs[1]), [JobState::Running]);
    assert_eq!(ran(&dirs[2]), [JobState::Delivered]);

    // Restarted after the escrows' expiry: no earn row stays open, nothing
    // runs again, and a stray receipt-less row is not counted as paid.
    let expiry = Duration::from_secs(ESCROW_SECS + 1);
    if let Some(left) = expiry.checked_sub(done_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let restarted: Vec<NodeProc> = dying
        .iter()
        .map(|(config, _)| NodeProc::start(config))
        .collect();
    for dir in &dirs {
        let row = wait_for("the earn row to close", Duration::from_secs(20), || {
            escrow_rows(dir).into_iter().find(|e| e.is_final())
        });
        assert_eq!(row.status, "expired", "{row:?}");
    }
    assert_eq!(ran(&dirs[0]), [] as [JobState; 0]);
    assert_eq!(ran(&dirs[1]), [JobState::Failed], "recovered, not rerun");
    assert_eq!(ran(&dirs[2]), [JobState::Delivered]);
    let executions = executions(root, 4, &out.job_id);
    let delivered = executions
        .iter()
        .filter(|r| r.state == JobState::Delivered)
        .count();
    assert_eq!(delivered, 2, "p3 (result lost) and p0: {executions:?}");
    drop(restarted);
    drop(survivor);
}
