//! Paid jobs across a real local network through the CoinPay adapter: an
//! echo provider and a client, each with its own data dir, swarm and
//! `[[payment]] plugin = payment-coinpay`, both pointed at a local
//! CoinPay-compatible server over real HTTP on 127.0.0.1. The client
//! creates and funds the escrow, the provider confirms it with its own
//! adapter (`confirm = "status"`, the default), the client releases it.
//! Amounts in another currency than the quote's follow each node's rate
//! source (a fixed table on one side, a rates file on the other). The
//! server is as strict as CoinPay: an escrow never funded is not refunded
//! but expires, and webhooks need the business id both adapters send.

use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{Amount, InferOptions, Infernet, StreamEvent};
use infernet_host::store::{EscrowKind, JobState};
use infernet_tests::coinpay_server::{
    stored_amount, CoinPayOptions, CoinPayServer, TEST_BUSINESS_ID,
};
use infernet_tests::net::start_node as start;
use infernet_tests::net::{client_toml, echo_provider_toml, infernet_bin, wait_for_providers};
use infernet_tests::pack_plugin;
use infernet_tests::secrets::{contains, files_under, secret_env, LogCapture};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PROVIDER_ACCOUNT: &str = "0xPr0v1der00000000000000000000000000000001";
const CLIENT_ACCOUNT: &str = "0xC113nt0000000000000000000000000000000002";

/// A `[[payment]]` table for payment-coinpay at `base_url`
/// (`http://127.0.0.1:PORT/api`), granted exactly that origin and sending
/// the test business id.
fn coinpay_table(root: &Path, account: &str, base_url: &str, secrets: &[(&str, &str)]) -> String {
    let plugin = root.join("plugins/payment-coinpay");
    if !plugin.join("infernet-plugin.toml").exists() {
        pack_plugin(
            "payment-coinpay",
            PluginKind::Payment,
            &root.join("plugins"),
        );
    }
    let secrets: Vec<String> = secrets
        .iter()
        .map(|(k, env)| format!("{k} = {env:?}"))
        .collect();
    let origin = base_url.trim_end_matches("/api");
    format!(
        "\n[[payment]]\nplugin = {plugin:?}\naccount = {account:?}\nallowed_hosts = [{origin:?}]\n\
         [payment.secrets]\n{}\n[payment.config]\nbase_url = {base_url:?}\nbusiness_id = {TEST_BUSINESS_ID:?}\n",
        secrets.join("\n")
    )
}

/// An echo provider paid through CoinPay at `base_url`.
fn paid_provider_toml(root: &Path, base_url: &str, secrets: &[(&str, &str)]) -> PathBuf {
    let path = echo_provider_toml(root, "provider", 10, &[]);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&coinpay_table(root, PROVIDER_ACCOUNT, base_url, secrets));
    std::fs::write(&path, text).unwrap();
    path
}

/// A client paying through CoinPay at `base_url`, with `client` appended
/// to its `[client]` table.
fn paying_client_toml(
    root: &Path,
    boot: &[String],
    base_url: &str,
    client: &str,
    secrets: &[(&str, &str)],
) -> PathBuf {
    let extra = format!(
        "[client]\ndiscovery_timeout_ms = 1500\n{client}\n{}",
        coinpay_table(root, CLIENT_ACCOUNT, base_url, secrets)
    );
    client_toml(root, "client", boot, &extra)
}

/// Starts the provider, then a client bootstrapping from it (its config
/// written by `client_cfg` from the provider's address), and waits until
/// the client sees the provider's `echo`.
async fn provider_and_client(
    provider_cfg: &Path,
    client_cfg: impl FnOnce(&[String]) -> PathBuf,
) -> (Infernet, Infernet) {
    let provider = start(provider_cfg).await;
    let boot = vec![provider.dialable_addrs().await.unwrap()[0].to_string()];
    let client = start(&client_cfg(&boot)).await;
    wait_for_providers(&client, "echo", 1).await;
    (provider, client)
}

/// `amount` minor units with `decimals` as CoinPay's whole-unit decimal.
fn to_decimal(amount: u128, decimals: usize) -> String {
    let digits = format!("{amount:0>width$}", width = decimals + 1);
    let (int, frac) = digits.split_at(digits.len() - decimals);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

/// Checks that escrow `id` was created for exactly `decimal` (the amount
/// the adapter sent) and that the server holds it (as it prints it).
fn assert_created_for(server: &CoinPayServer, id: &str, decimal: &str) {
    let creates: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/escrow")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        creates
            .iter()
            .any(|b| b.contains(&format!("\"amount\":{decimal},"))),
        "no create for {decimal}: {creates:?}"
    );
    let held = stored_amount(decimal).unwrap().1;
    assert_eq!(server.escrow(id).unwrap().amount, held, "{decimal}");
}

/// Polls `f` until it is true, or panics naming `what`.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn opts() -> InferOptions {
    InferOptions {
        max_tokens: Some(4),
        max_budget: Some(Amount::parse("1", "USD").unwrap()),
        ..Default::default()
    }
}

/// Tests 1 and 4: a paid job through CoinPay, settled, with exact
/// amounts and one release; and no secret anywhere on disk, in the logs
/// or in the CLI's output.
#[test]
fn paid_job_through_coinpay_settles_exactly_and_keeps_secrets() {
    // Every log line of the nodes this test starts (all in-process).
    let logs = LogCapture::default();
    logs.block_on(tracing::Level::INFO, paid_job_keeping_secrets(&logs));
}

async fn paid_job_keeping_secrets(logs: &LogCapture) {
    let api_key = "sk_live_NETCOINPAY_api_key_c0ffee42";
    let webhook_secret = "whsec_NETCOINPAY_hook_secret_beef77";
    let token_key = "tk_NETCOINPAY_token_key_d00d55";
    let (api_env, hook_env, token_env) = (
        secret_env(api_key),
        secret_env(webhook_secret),
        secret_env(token_key),
    );
    let server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: webhook_secret.into(),
        auto_fund_after: Some(Duration::from_millis(300)),
        api_key: Some(api_key.into()),
        ..CoinPayOptions::default()
    });
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let provider = start(&paid_provider_toml(
        root,
        &server.base_url(),
        &[("api_key", &api_env), ("webhook_secret", &hook_env)],
    ))
    .await;
    let boot = vec![provider.dialable_addrs().await.unwrap()[0].to_string()];
    let client_cfg = paying_client_toml(
        root,
        &boot,
        &server.base_url(),
        "pay_currency = \"ETH\"\n",
        &[
            ("api_key", &api_env),
            ("webhook_secret", &hook_env),
            ("token_key", &token_env),
        ],
    );
    let client = start(&client_cfg).await;
    wait_for_providers(&client, "echo", 1).await;

    let t0 = Instant::now();
    let out = client.infer("echo", "hello world", opts()).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(out.provider, provider.peer_id());
    assert!(out.text().is_some());
    assert_eq!(out.price.currency, "USD");
    assert!(out.price.amount > 0);
    // the client waited for the deposit (auto-funded after 300 ms)
    assert!(took >= Duration::from_millis(300), "{took:?}");

    // The job settled, through Escrowed.
    let job = client.store().jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Settled);

    // Exactly one escrow on the server, as configured, for the exact
    // conversion of the USD quote at the default 3,000 USD/ETH, rounded up.
    let ids = server.escrow_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let s = server.escrow(&ids[0]).unwrap();
    let wei = (u128::from(out.price.amount) * 1_000_000_000_000).div_ceil(3000);
    assert_eq!(s.chain, "ETH");
    assert_created_for(&server, &ids[0], &to_decimal(wei, 18));
    assert_eq!(s.depositor_address, CLIENT_ACCOUNT);
    assert_eq!(s.beneficiary_address, PROVIDER_ACCOUNT);
    assert_eq!(s.status, "settled");
    let c = server.counters();
    assert_eq!((c.creates, c.release_calls, c.releases), (1, 1, 1), "{c:?}");
    assert_eq!((c.refund_calls, c.dispute_calls), (0, 0), "{c:?}");
    // The provider asked the server itself: a GET of this escrow that came
    // after the client's last poll saw it funded, and before the release.
    let reqs = server.requests();
    let get_path = format!("/api/escrow/{}", ids[0]);
    let gets = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path == get_path)
        .count();
    // client: >= 1 poll and the refresh before release; provider: the
    // check on accept and the refresh after the receipt
    assert!(gets >= 4, "client polls and the provider's checks: {gets}");
    assert!(c.gets as usize >= gets);
    let release_at = reqs
        .iter()
        .position(|r| r.method == "POST" && r.path.ends_with("/release"))
        .unwrap();
    // Only the provider asks after the release (on the receipt).
    eventually("the provider's GET after the release", || {
        server.requests()[release_at..]
            .iter()
            .any(|r| r.method == "GET" && r.path == get_path)
    })
    .await;

    // The client's row: released (settled) at the configured addresses.
    let rows = client.store().escrows().by_job(&out.job_id).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.kind, EscrowKind::Pay);
    assert_eq!(row.escrow_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!((row.amount as u128, row.currency.as_str()), (wei, "ETH"));
    assert_eq!(row.depositor, CLIENT_ACCOUNT);
    assert_eq!(row.beneficiary, PROVIDER_ACCOUNT);
    assert!(
        matches!(row.status.as_str(), "released" | "settled"),
        "{row:?}"
    );

    // The provider's earn row: confirmed by status, then updated from the
    // server after the receipt.
    let wire = format!("{}.1", out.job_id);
    let store = provider.store().clone();
    eventually("the provider's earn row to settle", || {
        store
            .escrows()
            .get(&wire)
            .unwrap()
            .is_some_and(|e| e.status == "settled")
    })
    .await;
    let earn = store.escrows().get(&wire).unwrap().unwrap();
    assert_eq!(earn.kind, EscrowKind::Earn);
    assert_eq!(earn.confirmed_by.as_deref(), Some("status"));
    assert_eq!(earn.escrow_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(
        (earn.amount as u128, earn.beneficiary.as_str()),
        (wei, PROVIDER_ACCOUNT)
    );
    // Every call to the server carried the API key.
    assert!(server.requests().iter().all(|r| r
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == &format!("Bearer {api_key}"))));

    // Test 4: secrets (and the escrow's bearer tokens, sealed under
    // token_key on the client) appear nowhere on disk, in the logs or in
    // `infernet escrow list/show`.
    let client_dir = root.join("client");
    let provider_dir = root.join("provider");
    provider.shutdown().await;
    client.shutdown().await;
    let mut cli_out = Vec::new();
    for args in [
        vec!["escrow", "list", "--config"],
        vec!["escrow", "list", "--json", "--config"],
    ] {
        let run = std::process::Command::new(infernet_bin())
            .args(&args)
            .arg(&client_cfg)
            .env(&api_env, api_key)
            .env(&hook_env, webhook_secret)
            .env(&token_env, token_key)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        cli_out.extend_from_slice(&run.stdout);
        cli_out.extend_from_slice(&run.stderr);
    }
    assert!(
        contains(&cli_out, &ids[0]),
        "{}",
        String::from_utf8_lossy(&cli_out)
    );
    let mut secrets = vec![
        api_key.to_string(),
        webhook_secret.to_string(),
        token_key.to_string(),
    ];
    secrets.push(s.release_token.clone());
    secrets.push(s.beneficiary_token.clone());
    let files: Vec<PathBuf> = files_under(&client_dir)
        .into_iter()
        .chain(files_under(&provider_dir))
        .collect();
    assert!(files.iter().any(|f| f.starts_with(&client_dir)));
    assert!(files.iter().any(|f| f.starts_with(&provider_dir)));
    let log_text = logs.bytes();
    assert!(contains(&log_text, "escrow"), "no node logs captured");
    for secret in &secrets {
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(!contains(&bytes, secret), "a secret is in {}", f.display());
        }
        assert!(!contains(&cli_out, secret), "a secret is in the CLI output");
        assert!(!contains(&log_text, secret), "a secret is in the logs");
    }
}

/// Test 2: the deposit never arrives; the job fails naming the escrow and
/// where to deposit, the provider ran nothing. CoinPay refunds funded
/// escrows only: nothing is refunded, the job stays `failed` with its
/// escrow `pending` until the service expires it, and then the sweep moves
/// the job to `refunded` (the money never left the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unfunded_escrow_times_out_fails_the_job_and_expires() {
    let hook_env = secret_env("whsec_NETCOINPAY_second_1234");
    let server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: "whsec_NETCOINPAY_second_1234".into(),
        // the client's one-hour escrow expires 4 s after its creation
        hour: Duration::from_secs(4),
        ..CoinPayOptions::default()
    });
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let secrets = [("webhook_secret", hook_env.as_str())];
    let (provider, client) = provider_and_client(
        &paid_provider_toml(root, &server.base_url(), &secrets),
        |boot| {
            let path = paying_client_toml(
                root,
                boot,
                &server.base_url(),
                "pay_currency = \"USDC_POL\"\nfunding_timeout_ms = 1500\n",
                &secrets,
            );
            // sweep every second, to see the expiry settle the job
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replacen("[node]\n", "[node]\nescrow_sweep_secs = 1\n", 1);
            std::fs::write(&path, text).unwrap();
            path
        },
    )
    .await;

    let t0 = Instant::now();
    let err = client
        .infer("echo", "hello world", opts())
        .await
        .unwrap_err()
        .to_string();
    assert!(t0.elapsed() >= Duration::from_millis(1500), "{err}");
    let ids = server.escrow_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let s = server.escrow(&ids[0]).unwrap();
    assert!(err.contains(&ids[0]), "{err}");
    assert!(err.contains(&s.escrow_address), "{err}");
    assert!(err.contains("funding_timeout_ms"), "{err}");
    assert_eq!(s.chain, "USDC_POL");
    assert_eq!(s.beneficiary_address, PROVIDER_ACCOUNT);

    // Never funded: nothing to refund (the service would refuse), so
    // nothing asked; the job failed, its escrow pending.
    assert_eq!(s.status, "created");
    let c = server.counters();
    assert_eq!(
        (c.refund_calls, c.refunds, c.releases, c.release_calls),
        (0, 0, 0, 0),
        "{c:?}"
    );
    let jobs = client.store().jobs().list(10).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Failed);
    let rows = client.store().escrows().by_job(&jobs[0].id).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "pending");

    // The service expires it; the client's sweep sees that and settles
    // the job as refunded (its money never left).
    let (store, job_id) = (client.store().clone(), jobs[0].id.clone());
    eventually("the job to be refunded after the escrow expired", || {
        store
            .jobs()
            .get(&job_id)
            .unwrap()
            .is_some_and(|j| j.state == JobState::Refunded)
    })
    .await;
    assert_eq!(server.escrow(&ids[0]).unwrap().status, "expired");
    let rows = client.store().escrows().by_job(&job_id).unwrap();
    assert_eq!(rows[0].status, "expired");
    assert_eq!(server.counters().refund_calls, 0);

    // The provider never saw an accept: no escrow, nothing run.
    assert!(provider.store().escrows().list(10).unwrap().is_empty());
    assert!(provider
        .store()
        .jobs()
        .list(10)
        .unwrap()
        .iter()
        .all(|j| j.state < JobState::Running));
    provider.shutdown().await;
    client.shutdown().await;
}

/// Creates an escrow directly on `server` over HTTP; returns its id.
fn create_on(server: &CoinPayServer, beneficiary: &str) -> String {
    let body = format!(
        r#"{{"chain":"USDC_POL","amount":5,"depositor_address":"0xf0123000000000000000000000000000000000f0","beneficiary_address":"{beneficiary}"}}"#
    );
    let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
    write!(
        s,
        "POST /api/escrow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let json = out.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Test 3: the client's CoinPay says the escrow is funded, the provider's
/// says the same escrow id is still pending: the provider refuses, runs
/// nothing, and the client refunds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_refuses_an_escrow_its_own_coinpay_sees_unfunded() {
    let hook_env = secret_env("whsec_NETCOINPAY_third_5678");
    // The client's view: funded after 100 ms.
    let clients_server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: "whsec_NETCOINPAY_third_5678".into(),
        auto_fund_after: Some(Duration::from_millis(100)),
        ..CoinPayOptions::default()
    });
    // The provider's view: an escrow with the same id, never funded.
    let providers_server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: "whsec_NETCOINPAY_third_5678".into(),
        ..CoinPayOptions::default()
    });
    let forged = create_on(&providers_server, PROVIDER_ACCOUNT);
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let secrets = [("webhook_secret", hook_env.as_str())];
    let (provider, client) = provider_and_client(
        &paid_provider_toml(root, &providers_server.base_url(), &secrets),
        |boot| {
            paying_client_toml(
                root,
                boot,
                &clients_server.base_url(),
                "pay_currency = \"USDC_POL\"\n",
                &secrets,
            )
        },
    )
    .await;

    let mut stream = client
        .infer_stream("echo", "hello world", opts())
        .await
        .unwrap();
    let mut refusals = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            StreamEvent::Failover { from, reason } => {
                assert_eq!(from, provider.peer_id());
                refusals.push(reason);
            }
            StreamEvent::Token(_) => panic!("the provider ran the job"),
            StreamEvent::Assigned { .. } => {}
        }
    }
    let err = stream.finish().await.unwrap_err().to_string();
    let ids = clients_server.escrow_ids();
    assert_eq!(
        ids,
        std::slice::from_ref(&forged),
        "same id on both servers"
    );
    // the provider's refusal, as the client saw it
    assert_eq!(refusals.len(), 1, "{refusals:?} / {err}");
    assert!(
        refusals[0].contains(&format!("escrow {forged} is pending, not funded")),
        "{refusals:?}"
    );
    assert!(err.contains(&refusals[0]), "{err}");
    // the provider asked its own server, which still says created
    let gets = providers_server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == format!("/api/escrow/{forged}"))
        .count();
    assert!(gets >= 1, "the provider never asked its server");
    assert_eq!(providers_server.escrow(&forged).unwrap().status, "created");
    // nothing run, nothing recorded as earned
    assert!(provider.store().escrows().list(10).unwrap().is_empty());
    assert!(provider
        .store()
        .jobs()
        .list(10)
        .unwrap()
        .iter()
        .all(|j| j.state < JobState::Running));
    // the client's funded escrow went back
    let s = clients_server.escrow(&ids[0]).unwrap();
    assert_eq!(s.status, "refunded", "{err}");
    let c = clients_server.counters();
    assert_eq!((c.refunds, c.release_calls), (1, 0), "{c:?}");
    provider.shutdown().await;
    client.shutdown().await;
}

/// Contract 0.2: the provider's own CoinPay reports an escrow that is
/// funded and holds enough, but pays someone else. The adapter only reports
/// the beneficiary; the host compares it with its account and refuses:
/// nothing runs, and the client's escrow goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_refuses_a_funded_escrow_that_pays_someone_else() {
    let hook_env = secret_env("whsec_NETCOINPAY_payee_4321");
    let clients_server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: "whsec_NETCOINPAY_payee_4321".into(),
        auto_fund_after: Some(Duration::from_millis(100)),
        ..CoinPayOptions::default()
    });
    let providers_server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: "whsec_NETCOINPAY_payee_4321".into(),
        ..CoinPayOptions::default()
    });
    let someone_else = "0x5031e0ne000000000000000000000000000000e1";
    let forged = create_on(&providers_server, someone_else);
    assert!(providers_server.fund(&forged));
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let secrets = [("webhook_secret", hook_env.as_str())];
    let (provider, client) = provider_and_client(
        &paid_provider_toml(root, &providers_server.base_url(), &secrets),
        |boot| {
            paying_client_toml(
                root,
                boot,
                &clients_server.base_url(),
                "pay_currency = \"USDC_POL\"\n",
                &secrets,
            )
        },
    )
    .await;

    let err = client
        .infer("echo", "hello world", opts())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(clients_server.escrow_ids(), std::slice::from_ref(&forged));
    assert!(
        err.contains(&format!(
            "escrow {forged} pays `{someone_else}`, not this provider's account `{PROVIDER_ACCOUNT}`"
        )),
        "{err}"
    );
    assert!(provider.store().escrows().list(10).unwrap().is_empty());
    assert!(provider
        .store()
        .jobs()
        .list(10)
        .unwrap()
        .iter()
        .all(|j| j.state < JobState::Running));
    eventually("the client's escrow to be refunded", || {
        clients_server.escrow(&forged).unwrap().status == "refunded"
    })
    .await;
    provider.shutdown().await;
    client.shutdown().await;
}

/// Test 5: rates come from the source each node's config names. The
/// client converts with its fixed table (`[client.rates] ETH` = 2,500
/// USD); the provider checks escrow amounts against a rates file. While
/// the file says 2,000 USD/ETH the client's escrow is short and the
/// provider refuses it (refunded, nothing run); once the file says 2,500
/// the provider, without a restart, accepts the same conversion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escrow_amounts_follow_each_nodes_rate_source() {
    let hook_env = secret_env("whsec_NETCOINPAY_rates_9abc");
    let server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: "whsec_NETCOINPAY_rates_9abc".into(),
        auto_fund_after: Some(Duration::from_millis(100)),
        ..CoinPayOptions::default()
    });
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let secrets = [("webhook_secret", hook_env.as_str())];
    let rates_file = root.join("rates.json");
    std::fs::write(&rates_file, r#"{"ETH": 2000000000}"#).unwrap();
    let provider_cfg = paid_provider_toml(root, &server.base_url(), &secrets);
    let mut text = std::fs::read_to_string(&provider_cfg).unwrap();
    text.push_str(&format!(
        "\n[client]\nrate_source = \"file\"\nrates_file = {rates_file:?}\nrates_max_age_secs = 600\n"
    ));
    std::fs::write(&provider_cfg, text).unwrap();
    let (provider, client) = provider_and_client(&provider_cfg, |boot| {
        paying_client_toml(
            root,
            boot,
            &server.base_url(),
            "pay_currency = \"ETH\"\n[client.rates]\nETH = 2500000000\n",
            &secrets,
        )
    })
    .await;
    // wei for `micro_usd` at `usd_per_eth`, rounded up
    let wei = |micro_usd: u64, usd_per_eth: u128| {
        (u128::from(micro_usd) * 1_000_000_000_000).div_ceil(usd_per_eth)
    };

    // 1. Short by the provider's rate: refused before anything runs.
    let mut stream = client
        .infer_stream("echo", "hello world", opts())
        .await
        .unwrap();
    let mut refusals = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            StreamEvent::Failover { reason, .. } => refusals.push(reason),
            StreamEvent::Token(_) => panic!("the provider ran an underpaid job"),
            StreamEvent::Assigned { .. } => {}
        }
    }
    let err = stream.finish().await.unwrap_err().to_string();
    assert_eq!(refusals.len(), 1, "{refusals:?} / {err}");
    assert!(refusals[0].contains("the quote needs"), "{refusals:?}");
    // the final error names the provider and its reason
    assert!(
        err.contains("every provider of `echo` failed this job")
            && err.contains(&provider.peer_id().to_string())
            && err.contains("the quote needs"),
        "{err}"
    );
    let ids = server.escrow_ids();
    assert_eq!(ids.len(), 1, "{ids:?} / {err}");
    let first = server.escrow(&ids[0]).unwrap();
    assert_eq!(first.status, "refunded", "{err}");
    assert!(provider
        .store()
        .jobs()
        .list(10)
        .unwrap()
        .iter()
        .all(|j| j.state < JobState::Running));

    // 2. The feed moves to 2,500 USD/ETH: the same conversion is accepted.
    std::fs::write(&rates_file, r#"{"ETH": 2500000000}"#).unwrap();
    let out = client.infer("echo", "hello world", opts()).await.unwrap();
    assert_eq!(out.provider, provider.peer_id());
    let ids = server.escrow_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let second = ids
        .iter()
        .map(|id| server.escrow(id).unwrap())
        .find(|s| s.status == "settled")
        .expect("the second job's escrow settled");
    assert_eq!(second.chain, "ETH");
    assert_created_for(
        &server,
        &second.id,
        &to_decimal(wei(out.price.amount, 2500), 18),
    );
    // the refused one was the same conversion, short of 2,000 USD/ETH
    assert_eq!(first.amount, second.amount);
    assert!(wei(out.price.amount, 2500) < wei(out.price.amount, 2000));
    provider.shutdown().await;
    // No `token_key` configured: the node still stores the escrows'
    // release tokens encrypted (a key derived from its node secret), never
    // in clear (issue 12, hole 7).
    let dir = client.config().node.data_dir.clone();
    let mut db = std::fs::read(dir.join("node.db")).unwrap();
    db.extend(std::fs::read(dir.join("node.db-wal")).unwrap_or_default());
    let has = |needle: &[u8]| db.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"enc1:"), "no encrypted token in the client's store");
    assert!(!has(b"plain:"), "a release token is stored in clear");
    client.shutdown().await;
}

/// Attack (issue 12, hole 8): CoinPay escrow ids are UUIDs, so `ABC…` and
/// `abc…` name one escrow. A client funds one escrow and offers it, in two
/// letter cases, for two jobs: the second is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_escrow_in_two_letter_cases_pays_one_job() {
    use infernet_host::p2p::Money;
    use infernet_tests::raw_peer::{is_ack, refused, Peer};
    let hook_env = secret_env("whsec_NETCOINPAY_case_5678");
    let server = CoinPayServer::start(CoinPayOptions {
        webhook_secret: "whsec_NETCOINPAY_case_5678".into(),
        ..CoinPayOptions::default()
    });
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let secrets = [("webhook_secret", hook_env.as_str())];
    let provider = start(&paid_provider_toml(root, &server.base_url(), &secrets)).await;
    let addr = provider.dialable_addrs().await.unwrap()[0].to_string();
    let mallory = Peer::to(root, "mallory", &addr, provider.peer_id()).await;
    let escrow = create_on(&server, PROVIDER_ACCOUNT);
    assert!(server.fund(&escrow));
    let held = Money {
        amount: 5_000_000,
        currency: "USDC_POL".into(),
    };
    let (qa, _, pay_to) = mallory.quote("job-a", "echo", 4).await;
    is_ack(
        &mallory
            .accept("job-a.1", &qa, &held, &pay_to, &escrow)
            .await,
    );
    let (qb, _, _) = mallory.quote("job-b", "echo", 4).await;
    let shouted = escrow.to_ascii_uppercase();
    assert_ne!(shouted, escrow);
    refused(
        &mallory
            .accept("job-b.1", &qb, &held, &pay_to, &shouted)
            .await,
        "already pays job-a.1",
    );
    provider.shutdown().await;
}
