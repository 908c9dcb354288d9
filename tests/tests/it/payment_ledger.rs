//! The payment-ledger adapter through the host: balances in the plugin's kv
//! namespace of the node's SQLite (`balance/<account>/<CUR>`, the layout
//! `infernet wallet` relies on), money conserved through release, refund
//! and expiry, exact insufficient-balance messages, idempotent operations,
//! disputes, interrupted balance moves finished on next access, and state
//! that survives reopening the database.

use infernet_host::runtime::manifest::{Package, PluginKind};
use infernet_host::runtime::{Limits, PluginError, Runtime};
use infernet_host::store::{PluginKv, Store};
use infernet_host::worlds::payment::{
    Escrow, EscrowRequest, EscrowState, Money, PaymentGrants, PaymentPlugin,
};
use infernet_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const NAME: &str = "payment-ledger";
/// One dollar in micro-dollars.
const USD: u64 = 1_000_000;

struct Ledger {
    plugin: PaymentPlugin,
    kv: PluginKv,
}

fn open_with(dir: &Path, config: &[(&str, &str)]) -> Ledger {
    let pkg = pack_plugin(NAME, PluginKind::Payment, &dir.join("pkg"));
    let rt = Runtime::new(&dir.join("cache")).unwrap();
    let loaded = rt
        .load(&Package::open(&pkg, None).unwrap(), PluginKind::Payment)
        .unwrap();
    let store = Arc::new(Store::open_in_dir(&dir.join("data")).unwrap());
    let kv = store.plugin_kv(NAME);
    let grants = PaymentGrants {
        account: "ledger-node".into(),
        allowed_hosts: vec![],
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        secrets: BTreeMap::new(),
        generated: Default::default(),
        kv: kv.clone(),
    };
    let plugin = PaymentPlugin::new(&rt, &loaded, Limits::default(), grants).unwrap();
    Ledger { plugin, kv }
}

fn open(dir: &Path) -> Ledger {
    open_with(dir, &[])
}

impl Ledger {
    /// What `infernet wallet fund` does: write the balance key directly.
    fn fund(&self, account: &str, currency: &str, amount: u64) {
        self.kv
            .set(
                &format!("balance/{account}/{currency}"),
                amount.to_string().as_bytes(),
            )
            .unwrap();
    }

    /// What `infernet wallet balance` does: read the balance key (missing = 0).
    fn balance(&self, account: &str, currency: &str) -> u64 {
        match self
            .kv
            .get(&format!("balance/{account}/{currency}"))
            .unwrap()
        {
            None => 0,
            Some(raw) => std::str::from_utf8(&raw).unwrap().parse().unwrap(),
        }
    }

    fn record(&self, id: &str) -> serde_json::Value {
        serde_json::from_slice(&self.kv.get(&format!("escrow/{id}")).unwrap().unwrap()).unwrap()
    }
}

fn request(job: &str, amount: u64, currency: &str) -> EscrowRequest {
    EscrowRequest {
        job_id: job.into(),
        amount: Money {
            amount,
            currency: currency.into(),
        },
        depositor: "alice".into(),
        beneficiary: "bob".into(),
        arbiter: None,
        expires_in_secs: 3600,
        metadata: vec![("model".into(), "llama-3".into())],
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn is(e: &Escrow, status: EscrowState) -> bool {
    std::mem::discriminant(&e.status) == std::mem::discriminant(&status)
}

#[track_caller]
fn assert_status(e: &Escrow, status: EscrowState) {
    assert!(
        is(e, status),
        "escrow {} is {:?}, expected {status:?}",
        e.id,
        e.status
    );
}

#[track_caller]
fn assert_kind(err: &PluginError, kind: &str, needle: &str) {
    match err {
        PluginError::Guest { kind: k, .. } => assert_eq!(*k, kind, "{err}"),
        other => panic!("expected a guest {kind} error, got {other}"),
    }
    assert!(err.to_string().contains(needle), "{err}");
}

#[test]
fn currencies_are_listed_and_restrictable() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let list: Vec<(String, u8)> = ledger
        .plugin
        .currencies()
        .unwrap()
        .into_iter()
        .map(|c| (c.code, c.decimals))
        .collect();
    let expected = [
        ("USD", 6),
        ("BTC", 8),
        ("ETH", 18),
        ("SOL", 9),
        ("POL", 18),
        ("BCH", 8),
        ("USDC_ETH", 6),
        ("USDC_POL", 6),
        ("USDC_SOL", 6),
    ];
    assert_eq!(
        list,
        expected
            .iter()
            .map(|(c, d)| (c.to_string(), *d))
            .collect::<Vec<_>>()
    );
    // an unknown currency is unsupported, and nothing is written
    ledger.fund("alice", "DOGE", 100);
    let err = ledger
        .plugin
        .create_escrow(&request("j", 10, "DOGE"))
        .unwrap_err();
    assert_kind(&err, "unsupported", "DOGE");
    assert!(ledger.kv.get("escrow/ledger-j").unwrap().is_none());

    let dir = tempfile::tempdir().unwrap();
    let ledger = open_with(dir.path(), &[("currencies", "USD, BTC")]);
    let codes: Vec<String> = ledger
        .plugin
        .currencies()
        .unwrap()
        .into_iter()
        .map(|c| c.code)
        .collect();
    assert_eq!(codes, ["USD", "BTC"]);
    ledger.fund("alice", "ETH", 100);
    let err = ledger
        .plugin
        .create_escrow(&request("j", 10, "ETH"))
        .unwrap_err();
    assert_kind(&err, "unsupported", "ETH");
    ledger.fund("alice", "BTC", 100);
    ledger
        .plugin
        .create_escrow(&request("j", 10, "BTC"))
        .unwrap();
    assert_eq!(ledger.balance("alice", "BTC"), 90);

    // a malformed restriction names the key
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_with(dir.path(), &[("currencies", "USD,XYZ")]);
    ledger.fund("alice", "USD", 100);
    let err = ledger
        .plugin
        .create_escrow(&request("j", 10, "USD"))
        .unwrap_err();
    assert_kind(&err, "invalid-input", "currencies");
}

#[test]
fn release_moves_the_money_and_conserves_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "USD", 5 * USD);

    let before = unix_now();
    let e = p
        .create_escrow(&request("job-1", 2_500_000, "USD"))
        .unwrap();
    assert_eq!(e.id, "ledger-job-1");
    assert_status(&e, EscrowState::Funded);
    assert_eq!(e.amount.amount, 2_500_000);
    assert_eq!(e.amount.currency, "USD");
    assert_eq!(e.deposit_address, None);
    assert!(
        (before + 3600..=unix_now() + 3601).contains(&e.expires_at),
        "{}",
        e.expires_at
    );
    // held: the depositor is debited at once
    assert_eq!(ledger.balance("alice", "USD"), 2_500_000);
    assert_eq!(ledger.balance("bob", "USD"), 0);
    // the job index and the metadata are stored
    assert_eq!(
        ledger.kv.get("job/job-1").unwrap().as_deref(),
        Some(&b"ledger-job-1"[..])
    );
    let record = ledger.record("ledger-job-1");
    assert!(
        record.to_string().contains("llama-3"),
        "metadata not stored: {record}"
    );
    assert_status(&p.status(&e.id).unwrap(), EscrowState::Funded);

    let released = p.release(&e.id).unwrap();
    assert_status(&released, EscrowState::Settled);
    assert_eq!(ledger.balance("alice", "USD"), 2_500_000);
    assert_eq!(ledger.balance("bob", "USD"), 2_500_000);
    // idempotent: no second credit
    assert_status(&p.release(&e.id).unwrap(), EscrowState::Settled);
    assert_status(&p.status(&e.id).unwrap(), EscrowState::Settled);
    assert_eq!(ledger.balance("bob", "USD"), 2_500_000);
    // a settled escrow cannot be refunded or disputed
    assert_kind(&p.refund(&e.id).unwrap_err(), "invalid-input", "settled");
    assert_kind(
        &p.dispute(&e.id, "late").unwrap_err(),
        "invalid-input",
        "settled",
    );
    assert_eq!(
        ledger.balance("alice", "USD") + ledger.balance("bob", "USD"),
        5 * USD
    );

    // several escrows at once: held + balances = initial
    let a = p
        .create_escrow(&request("job-2", 1_000_000, "USD"))
        .unwrap();
    let b = p.create_escrow(&request("job-3", 700_000, "USD")).unwrap();
    assert_eq!(ledger.balance("alice", "USD"), 800_000);
    let held = 1_000_000 + 700_000;
    assert_eq!(
        ledger.balance("alice", "USD") + ledger.balance("bob", "USD") + held,
        5 * USD
    );
    p.release(&a.id).unwrap();
    p.refund(&b.id).unwrap();
    assert_eq!(ledger.balance("alice", "USD"), 1_500_000);
    assert_eq!(ledger.balance("bob", "USD"), 3_500_000);
}

#[test]
fn refund_returns_the_money_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "BTC", 100_000);
    let e = p.create_escrow(&request("job", 40_000, "BTC")).unwrap();
    assert_eq!(ledger.balance("alice", "BTC"), 60_000);
    assert_status(&p.refund(&e.id).unwrap(), EscrowState::Refunded);
    assert_eq!(ledger.balance("alice", "BTC"), 100_000);
    // idempotent
    assert_status(&p.refund(&e.id).unwrap(), EscrowState::Refunded);
    assert_eq!(ledger.balance("alice", "BTC"), 100_000);
    assert_eq!(ledger.balance("bob", "BTC"), 0);
    // a refunded escrow cannot be released or disputed
    assert_kind(&p.release(&e.id).unwrap_err(), "invalid-input", "refunded");
    assert_kind(
        &p.dispute(&e.id, "x").unwrap_err(),
        "invalid-input",
        "refunded",
    );
    // and creating it again returns it as it is: no second debit
    assert_status(
        &p.create_escrow(&request("job", 40_000, "BTC")).unwrap(),
        EscrowState::Refunded,
    );
    assert_eq!(ledger.balance("alice", "BTC"), 100_000);
}

#[test]
fn insufficient_balance_is_explained_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "USD", 1_200_000);
    let err = p
        .create_escrow(&request("job", 2_500_000, "USD"))
        .unwrap_err();
    assert_kind(
        &err,
        "invalid-input",
        "insufficient balance: account alice holds 1.2 USD, the escrow needs 2.5 USD; \
         fund it with `infernet wallet fund`",
    );
    // nothing was written or debited
    assert_eq!(ledger.balance("alice", "USD"), 1_200_000);
    assert!(ledger.kv.get("escrow/ledger-job").unwrap().is_none());
    assert!(ledger.kv.get("job/job").unwrap().is_none());
    assert_kind(
        &p.status("ledger-job").unwrap_err(),
        "invalid-input",
        "ledger-job",
    );

    // an account never funded holds 0; whole amounts have no decimals
    let mut r = request("job", 3 * USD, "USD");
    r.depositor = "carol".into();
    assert_kind(
        &p.create_escrow(&r).unwrap_err(),
        "invalid-input",
        "account carol holds 0 USD, the escrow needs 3 USD",
    );
    // 18 decimals, exactly, no floats
    ledger.fund("alice", "ETH", 1);
    assert_kind(
        &p.create_escrow(&request("eth", 1_500_000_000_000_000_001, "ETH"))
            .unwrap_err(),
        "invalid-input",
        "holds 0.000000000000000001 ETH, the escrow needs 1.500000000000000001 ETH",
    );
    // 8 decimals
    ledger.fund("alice", "BTC", 12_345);
    assert_kind(
        &p.create_escrow(&request("btc", 100_000_000, "BTC"))
            .unwrap_err(),
        "invalid-input",
        "holds 0.00012345 BTC, the escrow needs 1 BTC",
    );
    // the exact balance is enough
    ledger.fund("alice", "USD", 2_500_000);
    p.create_escrow(&request("job", 2_500_000, "USD")).unwrap();
    assert_eq!(ledger.balance("alice", "USD"), 0);
}

#[test]
fn create_is_idempotent_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "USD", 10 * USD);
    let first = p.create_escrow(&request("job", 3 * USD, "USD")).unwrap();
    let again = p.create_escrow(&request("job", 3 * USD, "USD")).unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(first.expires_at, again.expires_at);
    assert_status(&again, EscrowState::Funded);
    assert_eq!(ledger.balance("alice", "USD"), 7 * USD, "debited twice");

    // the same job with different terms is refused
    let mut other = request("job", 4 * USD, "USD");
    assert_kind(
        &p.create_escrow(&other).unwrap_err(),
        "invalid-input",
        "amount",
    );
    other = request("job", 3 * USD, "USDC_POL");
    assert_kind(
        &p.create_escrow(&other).unwrap_err(),
        "invalid-input",
        "amount",
    );
    other = request("job", 3 * USD, "USD");
    other.beneficiary = "mallory".into();
    assert_kind(
        &p.create_escrow(&other).unwrap_err(),
        "invalid-input",
        "beneficiary",
    );
    other = request("job", 3 * USD, "USD");
    other.depositor = "dave".into();
    ledger.fund("dave", "USD", 10 * USD);
    assert_kind(
        &p.create_escrow(&other).unwrap_err(),
        "invalid-input",
        "depositor",
    );
    assert_eq!(ledger.balance("alice", "USD"), 7 * USD);
    assert_eq!(ledger.balance("dave", "USD"), 10 * USD);

    // after release, a retried create returns the settled escrow
    p.release(&first.id).unwrap();
    assert_status(
        &p.create_escrow(&request("job", 3 * USD, "USD")).unwrap(),
        EscrowState::Settled,
    );
    assert_eq!(ledger.balance("alice", "USD"), 7 * USD);
    assert_eq!(ledger.balance("bob", "USD"), 3 * USD);
}

#[test]
fn requests_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "USD", 10 * USD);
    let cases: Vec<(EscrowRequest, &str)> = vec![
        (request("job", 0, "USD"), "positive"),
        (request("", USD, "USD"), "job id"),
        (
            EscrowRequest {
                depositor: "".into(),
                ..request("job", USD, "USD")
            },
            "depositor",
        ),
        (
            EscrowRequest {
                beneficiary: " ".into(),
                ..request("job", USD, "USD")
            },
            "beneficiary",
        ),
        (
            EscrowRequest {
                beneficiary: "bob/USD".into(),
                ..request("job", USD, "USD")
            },
            "beneficiary",
        ),
        (
            EscrowRequest {
                expires_in_secs: 0,
                ..request("job", USD, "USD")
            },
            "expire",
        ),
        (
            EscrowRequest {
                expires_in_secs: u64::MAX,
                ..request("job", USD, "USD")
            },
            "expiry",
        ),
    ];
    for (r, needle) in cases {
        assert_kind(&p.create_escrow(&r).unwrap_err(), "invalid-input", needle);
    }
    assert_eq!(ledger.balance("alice", "USD"), 10 * USD);
    assert!(ledger.kv.list_keys("escrow/").unwrap().is_empty());
    for unknown in ["ledger-nope", "", "escrow/x"] {
        assert_kind(&p.status(unknown).unwrap_err(), "invalid-input", "unknown");
        assert_kind(&p.release(unknown).unwrap_err(), "invalid-input", "unknown");
        assert_kind(&p.refund(unknown).unwrap_err(), "invalid-input", "unknown");
        assert_kind(
            &p.dispute(unknown, "r").unwrap_err(),
            "invalid-input",
            "unknown",
        );
    }
    // the ledger takes no webhooks
    assert_kind(
        &p.handle_webhook(&[], b"{}").unwrap_err(),
        "unsupported",
        "webhook",
    );
}

#[test]
fn expired_escrows_refund_the_depositor() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "SOL", 20_000);
    let short = |job: &str| EscrowRequest {
        expires_in_secs: 1,
        ..request(job, 4_000, "SOL")
    };
    let a = p.create_escrow(&short("a")).unwrap();
    let b = p.create_escrow(&short("b")).unwrap();
    let c = p.create_escrow(&short("c")).unwrap();
    let d = p.create_escrow(&request("d", 1_000, "SOL")).unwrap();
    assert_eq!(ledger.balance("alice", "SOL"), 7_000);
    std::thread::sleep(Duration::from_millis(1200));

    // on access: status expires it and credits the depositor
    assert_status(&p.status(&a.id).unwrap(), EscrowState::Expired);
    assert_eq!(ledger.balance("alice", "SOL"), 11_000);
    // idempotent
    assert_status(&p.status(&a.id).unwrap(), EscrowState::Expired);
    assert_status(&p.refund(&a.id).unwrap(), EscrowState::Expired);
    assert_eq!(ledger.balance("alice", "SOL"), 11_000);
    assert_kind(&p.release(&a.id).unwrap_err(), "invalid-input", "expired");
    assert_kind(
        &p.dispute(&a.id, "too late").unwrap_err(),
        "invalid-input",
        "expired",
    );

    // release of an escrow whose time is up expires it and says so
    let err = p.release(&b.id).unwrap_err();
    assert_kind(&err, "invalid-input", "expired");
    assert_eq!(ledger.balance("alice", "SOL"), 15_000);
    assert_eq!(ledger.balance("bob", "SOL"), 0);
    assert_status(&p.status(&b.id).unwrap(), EscrowState::Expired);

    // refund of one expires it too: the depositor is paid once
    assert_status(&p.refund(&c.id).unwrap(), EscrowState::Expired);
    assert_eq!(ledger.balance("alice", "SOL"), 19_000);
    assert_status(&p.refund(&c.id).unwrap(), EscrowState::Expired);
    assert_eq!(ledger.balance("alice", "SOL"), 19_000);

    // an escrow with time left is unaffected and conserves the total
    assert_status(&p.status(&d.id).unwrap(), EscrowState::Funded);
    p.release(&d.id).unwrap();
    assert_eq!(
        ledger.balance("alice", "SOL") + ledger.balance("bob", "SOL"),
        20_000
    );
}

#[test]
fn disputes_hold_the_money_until_decided() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "USDC_SOL", 10 * USD);
    let mut r = request("refunded", 2 * USD, "USDC_SOL");
    r.arbiter = Some("arbiter".into());
    r.expires_in_secs = 1;
    let e = p.create_escrow(&r).unwrap();
    let d = p.dispute(&e.id, "wrong output").unwrap();
    assert_status(&d, EscrowState::Disputed);
    assert_eq!(
        ledger.record(&e.id)["dispute_reason"],
        serde_json::json!("wrong output")
    );
    // idempotent, keeps the first reason
    assert_status(
        &p.dispute(&e.id, "another reason").unwrap(),
        EscrowState::Disputed,
    );
    assert_eq!(
        ledger.record(&e.id)["dispute_reason"],
        serde_json::json!("wrong output")
    );
    // a disputed escrow does not expire
    std::thread::sleep(Duration::from_millis(1200));
    assert_status(&p.status(&e.id).unwrap(), EscrowState::Disputed);
    assert_eq!(ledger.balance("alice", "USDC_SOL"), 8 * USD);
    // the arbiter decides: refund
    assert_status(&p.refund(&e.id).unwrap(), EscrowState::Refunded);
    assert_eq!(ledger.balance("alice", "USDC_SOL"), 10 * USD);

    // or release
    let e = p
        .create_escrow(&request("released", 2 * USD, "USDC_SOL"))
        .unwrap();
    p.dispute(&e.id, "slow").unwrap();
    assert_status(&p.release(&e.id).unwrap(), EscrowState::Settled);
    assert_eq!(ledger.balance("alice", "USDC_SOL"), 8 * USD);
    assert_eq!(ledger.balance("bob", "USDC_SOL"), 2 * USD);
}

#[test]
fn state_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (held, released) = {
        let ledger = open(dir.path());
        ledger.fund("alice", "POL", 5_000_000_000_000_000_000);
        let held = ledger
            .plugin
            .create_escrow(&request("held", 2_000_000_000_000_000_000, "POL"))
            .unwrap();
        let released = ledger
            .plugin
            .create_escrow(&request("released", 1_000_000_000_000_000_000, "POL"))
            .unwrap();
        ledger.plugin.release(&released.id).unwrap();
        (held.id, released.id)
    };
    // a new store on the same db file, a new plugin instance
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    assert_eq!(ledger.balance("alice", "POL"), 2_000_000_000_000_000_000);
    assert_eq!(ledger.balance("bob", "POL"), 1_000_000_000_000_000_000);
    assert_status(&p.status(&held).unwrap(), EscrowState::Funded);
    assert_status(&p.status(&released).unwrap(), EscrowState::Settled);
    // idempotency holds across the reopen
    p.create_escrow(&request("held", 2_000_000_000_000_000_000, "POL"))
        .unwrap();
    assert_eq!(ledger.balance("alice", "POL"), 2_000_000_000_000_000_000);
    p.release(&held).unwrap();
    assert_eq!(ledger.balance("bob", "POL"), 3_000_000_000_000_000_000);
    assert_eq!(
        ledger.balance("alice", "POL") + ledger.balance("bob", "POL"),
        5_000_000_000_000_000_000
    );
}

#[test]
fn interrupted_balance_moves_are_finished_on_next_access() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let p = &ledger.plugin;
    ledger.fund("alice", "USD", 10 * USD);
    let e = p.create_escrow(&request("job", 4 * USD, "USD")).unwrap();
    let funded = ledger.record(&e.id);
    assert!(funded["pending"].is_null(), "{funded}");

    // A release that trapped after writing its intent (step 1), before
    // crediting bob: the next access credits bob exactly once.
    let mut interrupted = funded.clone();
    interrupted["pending"] = serde_json::json!({
        "account": "bob", "before": 0, "after": 4 * USD, "then": "settled"
    });
    let write = |v: &serde_json::Value| {
        ledger
            .kv
            .set(&format!("escrow/{}", e.id), v.to_string().as_bytes())
            .unwrap()
    };
    write(&interrupted);
    assert_status(&p.status(&e.id).unwrap(), EscrowState::Settled);
    assert_eq!(ledger.balance("bob", "USD"), 4 * USD);
    assert_status(&p.status(&e.id).unwrap(), EscrowState::Settled);
    assert_eq!(ledger.balance("bob", "USD"), 4 * USD);

    // The same release trapped after crediting bob (step 2): not credited again.
    write(&interrupted);
    ledger.fund("bob", "USD", 4 * USD);
    assert_status(&p.release(&e.id).unwrap(), EscrowState::Settled);
    assert_eq!(ledger.balance("bob", "USD"), 4 * USD);

    // The balance moved elsewhere in between: reported, never guessed.
    write(&interrupted);
    ledger.fund("bob", "USD", 123);
    let err = p.status(&e.id).unwrap_err();
    assert_kind(&err, "internal", "reconcile");
    assert_eq!(ledger.balance("bob", "USD"), 123);

    // A create that trapped between its intent and the debit: a retried
    // create debits once and funds the escrow.
    let mut creating = funded.clone();
    creating["id"] = serde_json::json!("ledger-job2");
    creating["job_id"] = serde_json::json!("job2");
    creating["status"] = serde_json::json!("pending");
    creating["debited"] = serde_json::json!(false);
    creating["pending"] = serde_json::json!({
        "account": "alice", "before": 6 * USD, "after": 2 * USD, "then": "funded"
    });
    ledger
        .kv
        .set("escrow/ledger-job2", creating.to_string().as_bytes())
        .unwrap();
    let e2 = p.create_escrow(&request("job2", 4 * USD, "USD")).unwrap();
    assert_status(&e2, EscrowState::Funded);
    assert_eq!(ledger.balance("alice", "USD"), 2 * USD);
    assert_eq!(
        ledger.kv.get("job/job2").unwrap().as_deref(),
        Some(&b"ledger-job2"[..])
    );
    assert_status(&p.refund(&e2.id).unwrap(), EscrowState::Refunded);
    assert_eq!(ledger.balance("alice", "USD"), 6 * USD);
}

/// Two processes on one database — a node paying escrows and
/// `infernet wallet fund` beside it — are modelled by two stores and two
/// plugin instances on the same file: nothing shared in memory, so only the
/// namespace's file lock keeps a credit from landing between a debit's read
/// and its write. Every micro-dollar is accounted for.
#[test]
fn balance_moves_from_two_processes_never_lose_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    node.fund("alice", "USD", USD);
    let cli_store = Arc::new(Store::open_in_dir(&dir.path().join("data")).unwrap());
    let cli_kv = cli_store.plugin_kv(NAME);
    const ROUNDS: u64 = 40;
    let payer = std::thread::spawn(move || {
        for i in 0..ROUNDS {
            node.plugin
                .create_escrow(&request(&format!("job-{i}"), 1_000, "USD"))
                .unwrap();
        }
        node
    });
    for _ in 0..ROUNDS {
        infernet_host::payments::ledger::fund(&cli_kv, "alice", "USD", 7).unwrap();
    }
    let node = payer.join().unwrap();
    assert_eq!(
        node.balance("alice", "USD"),
        USD - ROUNDS * 1_000 + ROUNDS * 7,
        "a balance update was lost"
    );
    for i in 0..ROUNDS {
        let e = node.record(&format!("ledger-job-{i}"));
        assert_eq!(e["status"], "funded", "{e}");
    }
}
