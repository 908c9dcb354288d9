//! Stakes over real nodes: slashing, fair exchange, and who may question
//! a provider's trace.
//!
//! A referee that is also an arbiter holds a cheating provider's stake (the
//! arbiter created the escrow through its own adapter, the real ledger or
//! the CoinPay adapter against the local CoinPay server), a replicate(2)
//! job catches the cheat, and the ruling forfeits the stake — the client's
//! share to the client, the rest to the referee — exactly once, also when
//! the arbiter is killed at any step of the slash and restarted. A provider
//! cannot take a held stake back before its certificate and the grace
//! after it have run out. A staked provider is paid before the run and a
//! client cannot refund after delivery; a staked provider that withholds
//! a paid result loses its stake (both on the ledger and on CoinPay); a
//! claim without the provider's commitment moves nothing. Trace questions
//! are answered to the job's client and its ticketed referee only.
use infernet_host::jobs::arbiter::MAX_WAITING_STAKES;
use infernet_host::p2p::load_or_create_identity;
use infernet_host::p2p::protocol::Money as WireMoney;
use infernet_host::p2p::verification::StakeRequest;
use infernet_host::p2p::{ErrorCode, PeerId};
use infernet_host::payments::ledger::{self, LEDGER};
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{InferOptions, Infernet, Verdict, VerifyPolicy};
use infernet_host::store::Store;
use infernet_tests::coinpay_server::{CoinPayOptions, CoinPayServer, TEST_BUSINESS_ID};
use infernet_tests::net::start_node as start;
use infernet_tests::net::{
    cli, client_toml, echo_provider_toml, llama_node_toml, wait_for, wait_for_providers,
    with_ledger, NodeProc,
};
use infernet_tests::raw_peer::{refused, refused_with, Peer};
use infernet_tests::{pack_cheat, pack_plugin};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The stake, in micro-USD (0.5 USD).
const STAKE: u64 = 500_000;
/// What the cheater's account holds in the arbiter's ledger before.
const FUNDED: u64 = 2_000_000;

fn ledger_table(root: &Path) -> String {
    let plugins = root.join("plugins");
    let ledger = plugins.join("payment-ledger");
    if !ledger
        .join(infernet_host::runtime::manifest::MANIFEST_FILE)
        .exists()
    {
        pack_plugin("payment-ledger", PluginKind::Payment, &plugins);
    }
    format!("\n[[payment]]\nplugin = {ledger:?}\n")
}

/// A provider's identity, made before it starts (so its stake account can
/// be funded first).
fn identity(root: &Path, name: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    load_or_create_identity(&dir)
        .unwrap()
        .public()
        .to_peer_id()
        .to_string()
}

fn replicate2() -> InferOptions {
    InferOptions {
        verify: Some(VerifyPolicy::Replicate(2)),
        max_tokens: Some(6),
        ..Default::default()
    }
}

/// The ledger balance of `account` in the node store at `dir`.
fn ledger_balance(dir: &Path, account: &str) -> u64 {
    let store = std::sync::Arc::new(Store::open_in_dir(dir).unwrap());
    ledger::balance(&store.plugin_kv(LEDGER), account, "USD").unwrap()
}

/// `infernet wallet fund` into `account` of the ledger of `config`.
fn fund(config: &Path, account: &str, whole: &str) {
    cli(config, &["wallet", "fund", whole, "--account", account]);
}

/// Chain addresses of the CoinPay tests' parties.
const ARBITER: &str = "0xArb1ter000000000000000000000000000000003";
const PROVIDER: &str = "0xPr0v1der00000000000000000000000000000001";
const CLIENT: &str = "0xC113nt0000000000000000000000000000000002";

/// The local CoinPay server, funding every escrow 200 ms after it is made.
fn coinpay_server() -> CoinPayServer {
    CoinPayServer::start(CoinPayOptions {
        auto_fund_after: Some(Duration::from_millis(200)),
        ..CoinPayOptions::default()
    })
}

/// A `[[payment]]` table for payment-coinpay at `server` as `account`.
fn coinpay_table(root: &Path, server: &CoinPayServer, account: &str) -> String {
    let plugin = root.join("plugins/payment-coinpay");
    if !plugin.join("infernet-plugin.toml").exists() {
        pack_plugin(
            "payment-coinpay",
            PluginKind::Payment,
            &root.join("plugins"),
        );
    }
    let base = server.base_url();
    let origin = base.trim_end_matches("/api").to_string();
    format!(
        "\n[[payment]]\nplugin = {plugin:?}\naccount = {account:?}\nallowed_hosts = [{origin:?}]\n\
         [payment.config]\nbase_url = {base:?}\nbusiness_id = {TEST_BUSINESS_ID:?}\n"
    )
}

/// Waits until the arbiter at `dir` has paid its one slash.
fn wait_slash_paid(dir: &Path) -> infernet_host::store::SlashRecord {
    wait_for("the slash paid", Duration::from_secs(60), || {
        let store = Store::open_in_dir(dir).ok()?;
        let s = store.custody().slashes().ok()?;
        (s.len() == 1 && s[0].status == "paid").then(|| s[0].clone())
    })
}

/// Waits until the arbiter at `dir` holds a certified stake for `provider`.
fn wait_certified(dir: &Path, provider: &str) {
    wait_for("the stake certified", Duration::from_secs(60), || {
        let store = Store::open_in_dir(dir).ok()?;
        let s = store.custody().stake(provider).ok()??;
        (s.status == "funded" && s.cert_until_ms > 0).then_some(())
    });
}

/// replicate(2) with the honest p0 and a cheat staked at the referee: the
/// cheat is caught, its stake forfeited 80/20 to the client and the
/// referee in the referee's ledger, once; a second caught job slashes
/// nothing more; the cheat's next stake request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proven_cheat_forfeits_its_stake_to_the_client_and_the_referee_once() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let cheat = pack_cheat("perturb", root);
    let p0 = start(&llama_node_toml(root, "p0", &honest, &[], "")).await;
    let boot = vec![p0.dialable_addrs().await.unwrap()[0].to_string()];
    let referee_cfg = llama_node_toml(
        root,
        "referee",
        &honest,
        &boot,
        &format!("{}\n[verify]\nreferee = true\n", ledger_table(root)),
    );
    let cheater = identity(root, "p1");
    fund(&referee_cfg, &cheater, "2");
    let referee = start(&referee_cfg).await;
    let arbiter = referee.peer_id().to_string();
    let p1 = start(&llama_node_toml(
        root,
        "p1",
        &cheat,
        &boot,
        &format!("[stake]\narbiter = {arbiter:?}\namount = \"0.5\"\n"),
    ))
    .await;
    assert_eq!(p1.peer_id().to_string(), cheater);
    let honest_sha = p0.provider().unwrap().backend_sha256("tiny-llama").unwrap();
    p1.provider()
        .unwrap()
        .claim_backend_sha256_for_tests(&honest_sha);
    let client = start(&client_toml(
        root,
        "client",
        &boot,
        &format!("[verify]\nreferees = [{arbiter:?}]\n"),
    ))
    .await;
    let client_id = client.peer_id().to_string();
    let referee_dir = root.join("referee");
    wait_certified(&referee_dir, &cheater);
    // The arbiter holds it: debited from the cheater's account at once.
    assert_eq!(ledger_balance(&referee_dir, &cheater), FUNDED - STAKE);
    // A stranger's stake request that its balance cannot cover leaves
    // nothing behind.
    let arb = referee.provider().unwrap().arbiter().unwrap();
    let stranger = PeerId::random();
    let asked = tokio::task::spawn_blocking(move || {
        arb.stake(
            stranger,
            StakeRequest {
                adapter: LEDGER.into(),
                amount: WireMoney {
                    amount: STAKE,
                    currency: "USD".into(),
                },
                depositor: String::new(),
                withdraw: false,
            },
        )
    })
    .await
    .unwrap();
    assert!(
        asked
            .as_ref()
            .is_err_and(|e| e.to_string().contains("insufficient")),
        "{asked:?}"
    );
    assert!(Store::open_in_dir(&referee_dir)
        .unwrap()
        .custody()
        .stake(&stranger.to_string())
        .unwrap()
        .is_none());
    wait_for_providers(&client, "tiny-llama", 3).await;

    let out = client
        .infer("tiny-llama", "hello world", replicate2())
        .await
        .unwrap();
    let v = out.verification.unwrap();
    assert!(
        matches!(&v.verdict, Verdict::Cheated { providers, .. } if providers == &vec![cheater.clone()]),
        "{v:?}"
    );
    assert_eq!(v.slashes.len(), 1, "{:?}", v.slashes);
    let s = &v.slashes[0];
    assert_eq!(
        (s.provider.as_str(), s.status.as_str()),
        (cheater.as_str(), "paid")
    );
    assert_eq!(
        (s.to_client.amount, s.to_referee.amount),
        (400_000, 100_000)
    );
    // The money moved in the arbiter's books: the client got 80 %, the
    // referee kept 20 %, the cheater's account is down by the stake.
    assert_eq!(ledger_balance(&referee_dir, &client_id), 400_000);
    assert_eq!(ledger_balance(&referee_dir, &arbiter), 100_000);
    assert_eq!(ledger_balance(&referee_dir, &cheater), FUNDED - STAKE);

    // The referee's ruling is a first-hand verified outcome: it attests
    // the cheat (naming the evidence) and gossips it; the client keeps it.
    let seen = wait_for("the referee's attestation", Duration::from_secs(20), || {
        let rows = client.store().attestations().about(&cheater, 0, 10).ok()?;
        rows.into_iter().find(|a| a.attester == arbiter)
    });
    assert_eq!(seen.outcome, "cheated");
    assert!(seen.evidence.is_some());

    // Caught again: the stake is gone, nothing more moves.
    let again = client
        .infer("tiny-llama", "hello again", replicate2())
        .await
        .unwrap();
    let v = again.verification.unwrap();
    assert!(matches!(&v.verdict, Verdict::Cheated { .. }), "{v:?}");
    assert!(
        v.slashes
            .iter()
            .all(|s| s.status.starts_with("already slashed")),
        "{:?}",
        v.slashes
    );
    assert_eq!(ledger_balance(&referee_dir, &client_id), 400_000);
    assert_eq!(ledger_balance(&referee_dir, &arbiter), 100_000);

    // The slash rests on the evidence, stored with it.
    let store = Store::open_in_dir(&referee_dir).unwrap();
    let slashes = store.custody().slashes().unwrap();
    assert_eq!(slashes.len(), 1);
    let evidence: serde_json::Value = serde_json::from_slice(&slashes[0].evidence).unwrap();
    assert_eq!(evidence["ruling"]["cheated"][0], cheater.as_str());
    assert_eq!(
        store.custody().stake(&cheater).unwrap().unwrap().status,
        "slashed"
    );
    for n in [client, p1, referee, p0] {
        n.shutdown().await;
    }
}

/// The arbiter is killed right after each step of a slash (recorded,
/// stake forfeited, payout created, paid) and restarted: the slash
/// finishes once — the client paid its share exactly once, the cheater's
/// stake taken once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slash_interrupted_at_any_step_finishes_once_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let cheat = pack_cheat("perturb", root);
    let p0 = start(&llama_node_toml(root, "p0", &honest, &[], "")).await;
    let boot = vec![p0.dialable_addrs().await.unwrap()[0].to_string()];
    let honest_sha = p0.provider().unwrap().backend_sha256("tiny-llama").unwrap();
    for point in [
        "slash-ruled",
        "slash-forfeited",
        "slash-paying",
        "slash-paid",
    ] {
        let case = root.join(point);
        std::fs::create_dir_all(&case).unwrap();
        let referee_cfg = llama_node_toml(
            &case,
            "referee",
            &honest,
            &boot,
            &format!("{}\n[verify]\nreferee = true\n", ledger_table(root)),
        );
        let cheater = identity(&case, "p1");
        fund(&referee_cfg, &cheater, "2");
        let mut referee =
            NodeProc::start_with_env(&referee_cfg, &[("INFERNET_CRASH_AFTER", point)]);
        let arbiter = referee.peer.clone();
        let p1 = start(&llama_node_toml(
            &case,
            "p1",
            &cheat,
            &boot,
            &format!("[stake]\narbiter = {arbiter:?}\namount = \"0.5\"\n"),
        ))
        .await;
        p1.provider()
            .unwrap()
            .claim_backend_sha256_for_tests(&honest_sha);
        let client = start(&client_toml(
            &case,
            "client",
            &boot,
            &format!("[verify]\nreferees = [{arbiter:?}]\n"),
        ))
        .await;
        let client_id = client.peer_id().to_string();
        let referee_dir = case.join("referee");
        wait_certified(&referee_dir, &cheater);
        wait_for_providers(&client, "tiny-llama", 3).await;
        // The referee dies in the middle of its slash: the dispute fails.
        let out = client
            .infer("tiny-llama", "hello world", replicate2())
            .await;
        assert!(out.is_err(), "{point}: the referee died mid-slash");
        let _ = referee.child.wait();
        // Restarted, it finishes the slash by itself.
        let _referee = NodeProc::start(&referee_cfg);
        wait_for(
            &format!("{point}: the slash paid after a restart"),
            Duration::from_secs(60),
            || {
                let store = Store::open_in_dir(&referee_dir).ok()?;
                let s = store.custody().slashes().ok()?;
                (s.len() == 1 && s[0].status == "paid").then_some(())
            },
        );
        assert_eq!(
            ledger_balance(&referee_dir, &client_id),
            400_000,
            "{point}: the client's share paid once"
        );
        assert_eq!(ledger_balance(&referee_dir, &arbiter), 100_000, "{point}");
        assert_eq!(
            ledger_balance(&referee_dir, &cheater),
            FUNDED - STAKE,
            "{point}"
        );
        client.shutdown().await;
        p1.shutdown().await;
    }
    p0.shutdown().await;
}

/// The arbiter holds stake through the CoinPay adapter against the local
/// CoinPay server: it creates the stake escrow (only it holds the release
/// token), the provider's deposit funds it, a proven cheat releases it to
/// the arbiter and a payout escrow pays the client's address its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coinpay_stake_is_held_by_the_arbiter_and_paid_out_to_the_client() {
    let server = coinpay_server();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let coinpay = |account: &str| coinpay_table(root, &server, account);
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let cheat = pack_cheat("perturb", root);
    let p0 = start(&llama_node_toml(root, "p0", &honest, &[], "")).await;
    let boot = vec![p0.dialable_addrs().await.unwrap()[0].to_string()];
    let referee = start(&llama_node_toml(
        root,
        "referee",
        &honest,
        &boot,
        &format!("{}\n[verify]\nreferee = true\n", coinpay(ARBITER)),
    ))
    .await;
    let arbiter = referee.peer_id().to_string();
    let p1 = start(&llama_node_toml(
        root,
        "p1",
        &cheat,
        &boot,
        &format!(
            "[stake]\narbiter = {arbiter:?}\nadapter = \"payment-coinpay\"\ncurrency = \"ETH\"\n\
             amount = \"0.01\"\ndepositor = {PROVIDER:?}\n"
        ),
    ))
    .await;
    let cheater = p1.peer_id().to_string();
    let honest_sha = p0.provider().unwrap().backend_sha256("tiny-llama").unwrap();
    p1.provider()
        .unwrap()
        .claim_backend_sha256_for_tests(&honest_sha);
    let client = start(&client_toml(
        root,
        "client",
        &boot,
        &format!("[verify]\nreferees = [{arbiter:?}]\n{}", coinpay(CLIENT)),
    ))
    .await;
    let referee_dir = root.join("referee");
    wait_certified(&referee_dir, &cheater);
    // The stake escrow: created by the arbiter, from the provider's
    // address to the arbiter's.
    let stake_id = Store::open_in_dir(&referee_dir)
        .unwrap()
        .custody()
        .stake(&cheater)
        .unwrap()
        .unwrap()
        .escrow_id
        .unwrap();
    let e = server.escrow(&stake_id).unwrap();
    assert_eq!(e.depositor_address, PROVIDER);
    assert_eq!(e.beneficiary_address, ARBITER);
    assert_eq!(e.status, "funded");
    wait_for_providers(&client, "tiny-llama", 3).await;

    let out = client
        .infer("tiny-llama", "hello world", replicate2())
        .await
        .unwrap();
    let v = out.verification.unwrap();
    assert_eq!(v.slashes.len(), 1, "{:?}", v.slashes);
    // The payout may wait for its deposit; the sweep finishes it.
    wait_slash_paid(&referee_dir);
    let stake = server.escrow(&stake_id).unwrap();
    assert!(
        matches!(stake.status.as_str(), "released" | "settled"),
        "{}",
        stake.status
    );
    let rec = Store::open_in_dir(&referee_dir)
        .unwrap()
        .custody()
        .slashes()
        .unwrap()
        .remove(0);
    let payout = server
        .escrow(rec.payout_escrow.as_deref().unwrap())
        .unwrap();
    assert_eq!(payout.depositor_address, ARBITER);
    assert_eq!(payout.beneficiary_address, CLIENT);
    assert!(matches!(payout.status.as_str(), "released" | "settled"));
    assert_eq!(rec.to_client, rec.to_referee * 4, "80/20");

    // Any identity may ask for a stake, and each is an escrow created at
    // the service: those waiting for their deposit are bounded.
    let arb = referee.provider().unwrap().arbiter().unwrap();
    let (opened, refusal) = tokio::task::spawn_blocking(move || {
        let mut opened = 0;
        for _ in 0..=MAX_WAITING_STAKES {
            let asked = arb.stake(
                PeerId::random(),
                StakeRequest {
                    adapter: "payment-coinpay".into(),
                    amount: WireMoney {
                        amount: 10_000_000_000_000_000,
                        currency: "ETH".into(),
                    },
                    depositor: PROVIDER.into(),
                    withdraw: false,
                },
            );
            match asked {
                Ok(s) => {
                    assert_eq!(s.status, "pending", "{s:?}");
                    opened += 1;
                }
                Err(e) => return (opened, e.to_string()),
            }
        }
        (opened, String::new())
    })
    .await
    .unwrap();
    assert_eq!(opened, MAX_WAITING_STAKES);
    assert!(refusal.contains("waiting for their deposit"), "{refusal}");
    for n in [client, p1, referee, p0] {
        n.shutdown().await;
    }
}

/// A stake held by the arbiter cannot be withdrawn while a certificate
/// for it is valid (and the grace after it): the provider asking for it
/// back gets it only once they ran out, and it is refunded to its account.
/// No certificate outlives the stake's escrow (less the grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_stake_is_refunded_only_after_its_certificate_and_grace() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let referee_cfg = llama_node_toml(
        root,
        "referee",
        &honest,
        &[],
        &format!(
            "{}\n[verify]\nreferee = true\ncert_secs = 3600\nunbond_grace_secs = 2\nstake_escrow_secs = 12\n",
            ledger_table(root)
        ),
    );
    let provider = identity(root, "p1");
    fund(&referee_cfg, &provider, "2");
    let referee = start(&referee_cfg).await;
    let arbiter = referee.peer_id().to_string();
    let boot = vec![referee.dialable_addrs().await.unwrap()[0].to_string()];
    let stake = format!("[stake]\narbiter = {arbiter:?}\namount = \"0.5\"\n");
    let p1 = start(&llama_node_toml(root, "p1", &honest, &boot, &stake)).await;
    let referee_dir = root.join("referee");
    wait_certified(&referee_dir, &provider);
    p1.shutdown().await;
    let held = Store::open_in_dir(&referee_dir)
        .unwrap()
        .custody()
        .stake(&provider)
        .unwrap()
        .unwrap();
    let certified_until = held.cert_until_ms;
    // An hour asked for, but no certificate outlives the escrow (12 s)
    // less the grace for disputes (2 s).
    assert!(
        certified_until <= held.created_at_ms + 10_000,
        "certified until {certified_until}, the escrow made at {} lives 12 s",
        held.created_at_ms
    );

    let p1 = start(&llama_node_toml(
        root,
        "p1",
        &honest,
        &boot,
        &format!("{stake}withdraw = true\n"),
    ))
    .await;
    let refunded_at = wait_for("the stake refunded", Duration::from_secs(60), || {
        let store = Store::open_in_dir(&referee_dir).ok()?;
        let s = store.custody().stake(&provider).ok()??;
        (s.status == "refunded").then(infernet_host::store::now_ms)
    });
    assert!(
        refunded_at >= certified_until + 2_000,
        "refunded at {refunded_at}, before the certificate ({certified_until}) and its grace ran out"
    );
    assert_eq!(ledger_balance(&referee_dir, &provider), FUNDED);
    p1.shutdown().await;
    referee.shutdown().await;
}

// ------------------------------------------------------------ fair exchange

/// A paid echo provider `<name>` on the ledger (the client's word on
/// escrows), with `extra` appended (a `[stake]`).
fn paid_echo(root: &Path, name: &str, rate: u64, boot: &[String], extra: &str) -> PathBuf {
    let config = echo_provider_toml(root, name, rate, boot);
    with_ledger(&config, root, "confirm = \"client\"");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    config
}

/// `reply` is the provider's signed commitment to job `wire`.
fn committed(reply: &infernet_host::p2p::JobMessage, provider: &str, wire: &str) {
    match &reply.body {
        infernet_host::p2p::JobBody::Committed { job_id, commitment } => {
            assert_eq!(job_id, wire);
            assert_eq!(commitment.verify().unwrap().to_string(), provider);
            assert_eq!(commitment.payload.job_id, wire);
        }
        other => panic!("expected the provider's commitment, got {other:?}"),
    }
}

/// Waits until `client` sees `provider`'s advert carrying a stake
/// certificate.
async fn wait_stake_advertised(client: &Infernet, model: &str, provider: &str) {
    for _ in 0..300 {
        let seen = client.network().providers_of(model).await.unwrap();
        if seen.iter().any(|p| {
            p.peer_id.to_string() == provider
                && p.advert.as_ref().is_some_and(|a| a.stake_cert.is_some())
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the client never saw {provider}'s stake certificate");
}

/// Fair exchange on the ledger. A staked provider is paid before the run:
/// its quotes ask for prepayment, it answers `Accept` with a signed
/// commitment, a `Run` whose escrow is not released is refused, and after
/// a job the client cannot refund what it paid. A staked provider that takes the money and withholds the result
/// loses its stake: the client's claim goes to the arbiter, which asks the
/// provider to deliver, forfeits the stake when it does not (80 % to the
/// client), and the job fails over to an honest provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepaid_jobs_cannot_be_refunded_and_withholding_forfeits_the_stake() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let arbiter_cfg = llama_node_toml(
        root,
        "arbiter",
        &honest,
        &[],
        &format!("{}\n[verify]\nreferee = true\n", ledger_table(root)),
    );
    let staked = identity(root, "p1");
    fund(&arbiter_cfg, &staked, "2");
    let arbiter = start(&arbiter_cfg).await;
    let arbiter_id = arbiter.peer_id().to_string();
    let boot = vec![arbiter.dialable_addrs().await.unwrap()[0].to_string()];
    let p1 = start(&paid_echo(
        root,
        "p1",
        2,
        &boot,
        &format!("\n[stake]\narbiter = {arbiter_id:?}\namount = \"0.5\"\n"),
    ))
    .await;
    let p2 = start(&paid_echo(root, "p2", 40, &boot, "")).await;
    let client_cfg = with_ledger(
        &client_toml(
            root,
            "client",
            &boot,
            &format!("[verify]\nreferees = [{arbiter_id:?}]\n"),
        ),
        root,
        "",
    );
    fund(&client_cfg, &identity(root, "client"), "1");
    let client = start(&client_cfg).await;
    let client_id = client.peer_id().to_string();
    wait_certified(&root.join("arbiter"), &staked);
    wait_for_providers(&client, "echo", 2).await;
    wait_stake_advertised(&client, "echo", &staked).await;

    // A client that would pay after delivery is refused: the quote asks
    // for prepayment, the provider commits to the job, and an escrow that
    // is not released does not buy the run.
    let p1_addr = p1.dialable_addrs().await.unwrap()[0].to_string();
    let raw = Peer::to(root, "raw", &p1_addr, p1.peer_id()).await;
    let (quote, price, pay_to) = raw.quote("raw-1", "echo", 8).await;
    assert!(pay_to.iter().all(|p| p.prepay), "{pay_to:?}");
    let reply = raw
        .accept("raw-1.1", &quote, &price, &pay_to, "ledger-raw-1.1")
        .await;
    committed(&reply, &p1.peer_id().to_string(), "raw-1.1");
    refused(&raw.run("raw-1.1", "echo", Some(8)).await, "not released");

    // Prepaid: served by the cheap staked provider, the escrow released
    // before its Accept (the provider's earn row was born released), and
    // refunding it afterwards fails.
    let opts = InferOptions {
        max_tokens: Some(8),
        ..Default::default()
    };
    let out = client
        .infer("echo", "hello world", opts.clone())
        .await
        .unwrap();
    assert_eq!(out.provider, p1.peer_id());
    let pay = client.store().escrows().by_job(&out.job_id).unwrap();
    assert_eq!(pay.len(), 1, "{pay:?}");
    assert!(
        matches!(pay[0].status.as_str(), "released" | "settled"),
        "{pay:?}"
    );
    let wallet = client.payments().unwrap().adapter(LEDGER).unwrap();
    let before = ledger::balance(wallet.plugin.kv(), &client_id, "USD").unwrap();
    let refund = wallet.plugin.refund(pay[0].escrow_id.as_deref().unwrap());
    assert!(
        refund.is_err(),
        "a delivered, prepaid escrow was refunded: {refund:?}"
    );
    assert_eq!(
        ledger::balance(wallet.plugin.kv(), &client_id, "USD").unwrap(),
        before,
        "the refund moved nothing"
    );

    // Withholding after payment: the claim goes to the arbiter, the stake
    // is forfeited, and the job fails over to the honest p2.
    p1.provider().unwrap().withhold_for_tests(true);
    let out = client.infer("echo", "hello again", opts).await.unwrap();
    assert_eq!(out.provider, p2.peer_id(), "failed over after the claim");
    let events = client.store().jobs().events(&out.job_id).unwrap();
    let log: Vec<String> = events.iter().filter_map(|e| e.detail.clone()).collect();
    assert!(
        log.iter()
            .any(|d| d.contains("forfeits its stake") && d.contains("paid")),
        "{log:#?}"
    );
    let arbiter_dir = root.join("arbiter");
    let store = Store::open_in_dir(&arbiter_dir).unwrap();
    let slashes = store.custody().slashes().unwrap();
    assert_eq!(slashes.len(), 1);
    assert_eq!(slashes[0].status, "paid");
    assert_eq!(slashes[0].client_peer, client_id);
    let evidence: serde_json::Value = serde_json::from_slice(&slashes[0].evidence).unwrap();
    assert_eq!(evidence["kind"], "undelivered", "{evidence}");
    assert_eq!(ledger_balance(&arbiter_dir, &client_id), 400_000);
    assert_eq!(ledger_balance(&arbiter_dir, &staked), FUNDED - STAKE);

    // A claim for a job the provider never committed to (a commitment the
    // claimant signed itself) is refused: no stake moves on a made-up job.
    let arbiter_addr = arbiter.dialable_addrs().await.unwrap()[0].to_string();
    let liar = Peer::to(root, "liar", &arbiter_addr, arbiter.peer_id()).await;
    let forged = infernet_host::p2p::verification::Commitment {
        job_id: "made-up.1".into(),
        client: liar.id(),
        provider: staked.clone(),
        adapter: LEDGER.into(),
        escrow_id: "ledger-made-up.1".into(),
        amount: infernet_host::p2p::protocol::Money {
            amount: 10,
            currency: "USD".into(),
        },
        timestamp_ms: infernet_host::p2p::protocol::now_ms(),
    };
    let claim = infernet_host::p2p::verification::Claim {
        job_id: "made-up.1".into(),
        client: liar.id(),
        provider: staked.clone(),
        arbiter: arbiter_id.clone(),
        escrow: infernet_host::p2p::protocol::EscrowRef {
            adapter: LEDGER.into(),
            escrow_id: "ledger-made-up.1".into(),
            amount: forged.amount.clone(),
            depositor: liar.id(),
            beneficiary: staked.clone(),
            expires_at_ms: infernet_host::p2p::protocol::now_ms() + 3_600_000,
        },
        // Names the staked provider, signed by the liar.
        commitment: infernet_host::p2p::verification::SignedCommitment::sign(forged, &liar.key)
            .unwrap(),
        payout: None,
        timestamp_ms: infernet_host::p2p::protocol::now_ms(),
    };
    let signed = infernet_host::p2p::verification::SignedClaim::sign(claim, &liar.key).unwrap();
    let reply = liar
        .net
        .verify_request(
            arbiter.peer_id(),
            infernet_host::p2p::JobMessage::new(infernet_host::p2p::JobBody::Claim(Box::new(
                signed,
            ))),
        )
        .await
        .unwrap();
    refused_with(&reply, ErrorCode::InvalidRequest, "no commitment");
    assert_eq!(
        store.custody().slashes().unwrap().len(),
        1,
        "nothing more slashed"
    );
    for n in [client, p2, p1, arbiter] {
        n.shutdown().await;
    }
}

/// Fair exchange on the CoinPay adapter against the local CoinPay server:
/// the staked provider checks with its own CoinPay that a prepaid escrow
/// is released before it runs (a client's signed word that it is, on a
/// merely funded escrow, is not enough); after delivery the client's refund is refused by the
/// service; a provider that withholds after payment is claimed against —
/// the arbiter reads the escrow itself (released, to the provider's
/// address) — and its stake, held in a CoinPay escrow the arbiter
/// created, is paid out to the client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coinpay_prepaid_jobs_cannot_be_refunded_and_withholding_forfeits_the_stake() {
    let server = coinpay_server();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let coinpay = |account: &str| coinpay_table(root, &server, account);
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let arbiter = start(&llama_node_toml(
        root,
        "arbiter",
        &honest,
        &[],
        &format!("{}\n[verify]\nreferee = true\n", coinpay(ARBITER)),
    ))
    .await;
    let arbiter_id = arbiter.peer_id().to_string();
    let boot = vec![arbiter.dialable_addrs().await.unwrap()[0].to_string()];
    let p1_cfg = echo_provider_toml(root, "p1", 2, &boot);
    let mut text = std::fs::read_to_string(&p1_cfg).unwrap();
    text.push_str(&format!(
        "\n[stake]\narbiter = {arbiter_id:?}\nadapter = \"payment-coinpay\"\ncurrency = \"ETH\"\n\
         amount = \"0.01\"\ndepositor = {PROVIDER:?}\n{}",
        coinpay(PROVIDER)
    ));
    std::fs::write(&p1_cfg, text).unwrap();
    let p1 = start(&p1_cfg).await;
    let staked = p1.peer_id().to_string();
    let client = start(&client_toml(
        root,
        "client",
        &boot,
        &format!(
            "[client]\npay_currency = \"ETH\"\n[verify]\nreferees = [{arbiter_id:?}]\n{}",
            coinpay(CLIENT)
        ),
    ))
    .await;
    wait_certified(&root.join("arbiter"), &staked);
    wait_for_providers(&client, "echo", 1).await;
    wait_stake_advertised(&client, "echo", &staked).await;

    // A client claiming "released" on an escrow that is only funded: the
    // provider asks its own CoinPay and refuses.
    let p1_addr = p1.dialable_addrs().await.unwrap()[0].to_string();
    let raw = Peer::to(root, "raw", &p1_addr, p1.peer_id()).await;
    let (quote, _price, pay_to) = raw.quote("raw-1", "echo", 8).await;
    assert!(pay_to.iter().all(|p| p.prepay), "{pay_to:?}");
    let (status, body) = server.create_raw(&format!(
        r#"{{"chain":"ETH","amount":1,"depositor_address":"0xf0123000000000000000000000000000000000f0","beneficiary_address":"{PROVIDER}"}}"#
    ));
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(server.fund(&id));
    let reply = raw
        .send(infernet_host::p2p::JobBody::Accept {
            job_id: "raw-1.1".into(),
            quote_id: quote,
            escrow: Some(infernet_host::p2p::protocol::EscrowRef {
                adapter: "payment-coinpay".into(),
                escrow_id: id,
                amount: infernet_host::p2p::protocol::Money {
                    amount: 1_000_000_000_000_000_000,
                    currency: "ETH".into(),
                },
                depositor: "0xf0123000000000000000000000000000000000f0".into(),
                beneficiary: PROVIDER.into(),
                expires_at_ms: infernet_host::p2p::protocol::now_ms() + 3_600_000,
            }),
        })
        .await;
    committed(&reply, &staked, "raw-1.1");
    // The client's signed word that it released: the provider asks its
    // own CoinPay, which says funded, and runs nothing.
    let receipt = infernet_host::p2p::protocol::SignedReceipt::sign(
        infernet_host::p2p::protocol::ReceiptBody {
            job_id: "raw-1.1".into(),
            output_hash: String::new(),
            client: raw.id(),
            provider: staked.clone(),
            accepted: true,
            timestamp_ms: infernet_host::p2p::protocol::now_ms(),
            escrow_status: Some("released".into()),
        },
        &raw.key,
    )
    .unwrap();
    raw.send(infernet_host::p2p::JobBody::Receipt(receipt))
        .await;
    refused(&raw.run("raw-1.1", "echo", Some(8)).await, "not released");

    // Prepaid, delivered; the service refuses the client's refund.
    let opts = InferOptions {
        max_tokens: Some(8),
        ..Default::default()
    };
    let out = client
        .infer("echo", "hello world", opts.clone())
        .await
        .unwrap();
    assert_eq!(out.provider, p1.peer_id());
    let pay = client.store().escrows().by_job(&out.job_id).unwrap();
    let escrow_id = pay[0].escrow_id.clone().unwrap();
    let e = server.escrow(&escrow_id).unwrap();
    assert!(
        matches!(e.status.as_str(), "released" | "settled"),
        "{}",
        e.status
    );
    assert_eq!(e.beneficiary_address, PROVIDER);
    let wallet = client
        .payments()
        .unwrap()
        .adapter("payment-coinpay")
        .unwrap();
    assert!(
        wallet.plugin.refund(&escrow_id).is_err(),
        "refunded after delivery"
    );
    assert_eq!(server.counters().refunds, 0);

    // Withheld after payment: the only provider, so the job fails — with
    // the stake forfeited to the client's address.
    p1.provider().unwrap().withhold_for_tests(true);
    let err = client
        .infer("echo", "hello again", opts)
        .await
        .expect_err("withheld");
    assert!(err.to_string().contains("forfeits its stake"), "{err}");
    let arbiter_dir = root.join("arbiter");
    let rec = wait_slash_paid(&arbiter_dir);
    let payout = server
        .escrow(rec.payout_escrow.as_deref().unwrap())
        .unwrap();
    assert_eq!(payout.depositor_address, ARBITER);
    assert_eq!(payout.beneficiary_address, CLIENT);
    let stake = server.escrow(&rec.stake_escrow).unwrap();
    assert!(matches!(stake.status.as_str(), "released" | "settled"));
    for n in [client, p1, arbiter] {
        n.shutdown().await;
    }
}

// ------------------------------------------- who may ask about a trace

/// `/infernet/verify/1` answers trace questions about a delivered job to
/// its client, or to the referee named in the client's unexpired ticket —
/// to nobody else: a stranger, a stranger with a ticket it signed itself,
/// the named referee with an expired ticket, and the right peer with a
/// ticket naming someone else all get `UnknownJob`; a verification body
/// sent on the job protocol is refused; a reveal of more digests than the
/// protocol allows is refused before the provider sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_questions_are_answered_to_the_client_and_its_ticketed_referee_only() {
    use infernet_host::p2p::protocol::now_ms;
    use infernet_host::p2p::verification::{
        Hash32, SignedTicket, Ticket, TraceAnswer, TraceQuery, MAX_REVEAL_DIGESTS,
    };
    use infernet_host::p2p::{JobBody, JobMessage};
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let provider = start(&llama_node_toml(root, "p0", &honest, &[], "")).await;
    let addr = provider.dialable_addrs().await.unwrap()[0].to_string();
    let client = Peer::to(root, "client", &addr, provider.peer_id()).await;
    let stranger = Peer::to(root, "stranger", &addr, provider.peer_id()).await;
    let referee = Peer::to(root, "referee", &addr, provider.peer_id()).await;
    let reply = client
        .run_with(
            "job-1.1",
            "tiny-llama",
            "hello",
            vec![("max_tokens".into(), "4".into())],
        )
        .await;
    assert!(matches!(reply.body, JobBody::Result { .. }), "{reply:?}");

    let ask = |peer: &Peer, ticket: Option<SignedTicket>, query: TraceQuery| {
        let msg = JobMessage::new(JobBody::Trace {
            job_id: "job-1.1".into(),
            query,
            ticket: ticket.map(Box::new),
        });
        let (net, to) = (peer.net.clone(), peer.provider);
        async move { net.verify_request(to, msg).await.unwrap() }
    };
    let ticket = |signer: &Peer, client: String, referee: String, expires_ms: u64| {
        SignedTicket::sign(
            Ticket {
                job_id: "job-1.1".into(),
                client,
                referee,
                expires_ms,
            },
            &signer.key,
        )
        .unwrap()
    };
    let unknown = |reply: &JobMessage| {
        refused_with(reply, ErrorCode::UnknownJob, "job-1.1");
    };
    // The client gets the top of its trace.
    let top = ask(&client, None, TraceQuery::Top).await;
    assert!(
        matches!(&top.body, JobBody::TraceAnswer { answer: TraceAnswer::Nodes(n), .. } if n.len() == 1),
        "{top:?}"
    );
    // The referee with the client's ticket too.
    let good = ticket(&client, client.id(), referee.id(), now_ms() + 60_000);
    let reply = ask(&referee, Some(good.clone()), TraceQuery::Top).await;
    assert_eq!(reply.body, top.body);
    // Nobody else.
    unknown(&ask(&stranger, None, TraceQuery::Top).await);
    let forged = ticket(&stranger, client.id(), stranger.id(), now_ms() + 60_000);
    unknown(&ask(&stranger, Some(forged), TraceQuery::Top).await);
    let expired = ticket(&client, client.id(), referee.id(), now_ms() - 1);
    unknown(&ask(&referee, Some(expired), TraceQuery::Top).await);
    unknown(&ask(&stranger, Some(good), TraceQuery::Top).await);
    // A verification body on the job protocol.
    let on_job = stranger
        .send(JobBody::Trace {
            job_id: "job-1.1".into(),
            query: TraceQuery::Top,
            ticket: None,
        })
        .await;
    refused_with(&on_job, ErrorCode::InvalidRequest, "verify");
    // A reveal past the bound, from the client itself.
    let digests = vec![Hash32([0; 32]); MAX_REVEAL_DIGESTS + 1];
    let msg = JobMessage::new(JobBody::Trace {
        job_id: "job-1.1".into(),
        query: TraceQuery::Reveal { digests, until: 0 },
        ticket: None,
    });
    let too_many = client.net.verify_request(client.provider, msg).await;
    match too_many {
        Ok(reply) => refused_with(&reply, ErrorCode::InvalidRequest, "digests"),
        Err(e) => assert!(e.to_string().contains("digests"), "{e}"),
    }
    provider.shutdown().await;
}
