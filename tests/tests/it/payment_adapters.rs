//! Payment adapters through the host: one settlement suite run against
//! both `payment-ledger` (balances in the node's SQLite) and
//! `payment-coinpay` (against the local CoinPay-compatible server in
//! `infernet_tests::coinpay_server`), plus CoinPay-only checks: signed
//! webhooks (sent for business escrows only), the `allowed_hosts`
//! capability (scheme, host and port matched exactly), exact amounts (JSON
//! numbers in exponent form too), what the service refuses (refunds of
//! unfunded escrows, short dispute reasons) and secrets staying out of the
//! database, errors and logs.

use infernet_host::runtime::manifest::{Package, PluginKind};
use infernet_host::runtime::{Limits, PluginError, Runtime};
use infernet_host::store::Store;
use infernet_host::worlds::payment::{
    AllowedHost, AllowedScheme, Escrow, EscrowRequest, EscrowState, HostFilter, Money,
    PaymentGrants, PaymentPlugin,
};
use infernet_tests::coinpay_server::{
    sign, unix_now, CoinPayOptions, CoinPayServer, Webhook, TEST_BUSINESS_ID,
};
use infernet_tests::secrets::{contains, files_under, secret_env, LogCapture};
use infernet_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

// ---------------------------------------------------------------- loading

/// One compile cache for the whole binary: each component compiles once.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn load(dir: &Path, name: &str, grants: PaymentGrants) -> PaymentPlugin {
    let pkg = pack_plugin(name, PluginKind::Payment, &dir.join("plugins"));
    let rt = Runtime::new(cache_dir()).unwrap();
    let loaded = rt
        .load(&Package::open(&pkg, None).unwrap(), PluginKind::Payment)
        .unwrap();
    PaymentPlugin::new(&rt, &loaded, Limits::default(), grants).unwrap()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn request(job: &str, amount: u64, currency: &str, expires_in_secs: u64) -> EscrowRequest {
    EscrowRequest {
        job_id: job.into(),
        amount: Money {
            amount,
            currency: currency.into(),
        },
        depositor: format!("{job}-client-wallet"),
        beneficiary: format!("{job}-provider-wallet"),
        arbiter: None,
        expires_in_secs,
        metadata: vec![("model".into(), "tiny".into())],
    }
}

/// `(kind, message)` of a guest error; panics on any other failure.
fn guest_err(e: PluginError) -> (&'static str, String) {
    match e {
        PluginError::Guest { kind, error, .. } => (kind, error),
        other => panic!("expected a guest error, got {other}"),
    }
}

// ---------------------------------------------------------------- harnesses

/// How the generic suite drives one adapter.
trait Harness {
    fn name(&self) -> &'static str;
    fn plugin(&self) -> &PaymentPlugin;
    /// A currency the adapter supports.
    fn currency(&self) -> &'static str;
    /// Makes `depositor` able to pay `amount`.
    fn prepare_depositor(&self, depositor: &str, amount: u64);
    /// Makes a just-created escrow funded (deposit arrives) and returns it.
    fn make_funded(&self, escrow: &Escrow) -> Escrow;
    /// Checks the money went to the beneficiary exactly once.
    fn check_paid_once(&self, req: &EscrowRequest, escrow: &Escrow);
    /// Checks the money went back to the depositor exactly once.
    fn check_refunded_once(&self, req: &EscrowRequest, escrow: &Escrow);
    /// Checks only one escrow was made (and paid for) for `req`'s job.
    fn check_created_once(&self, req: &EscrowRequest);
}

struct Ledger {
    _dir: tempfile::TempDir,
    plugin: PaymentPlugin,
}

impl Ledger {
    fn new() -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in_dir(&dir.path().join("data")).unwrap());
        let plugin = load(
            dir.path(),
            "payment-ledger",
            PaymentGrants {
                account: "ledger-node".into(),
                allowed_hosts: vec![],
                config: BTreeMap::new(),
                secrets: BTreeMap::new(),
                generated: Default::default(),
                kv: store.plugin_kv("payment-ledger"),
            },
        );
        Ledger { _dir: dir, plugin }
    }

    fn balance(&self, account: &str, currency: &str) -> u64 {
        self.plugin
            .kv()
            .get(&format!("balance/{account}/{currency}"))
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap().parse().unwrap())
            .unwrap_or(0)
    }
}

impl Harness for Ledger {
    fn name(&self) -> &'static str {
        "payment-ledger"
    }
    fn plugin(&self) -> &PaymentPlugin {
        &self.plugin
    }
    fn currency(&self) -> &'static str {
        "USDC_POL"
    }
    fn prepare_depositor(&self, depositor: &str, amount: u64) {
        let key = format!("balance/{depositor}/{}", self.currency());
        let now = self.balance(depositor, self.currency());
        self.plugin
            .kv()
            .set(&key, (now + amount).to_string().as_bytes())
            .unwrap();
    }
    fn make_funded(&self, escrow: &Escrow) -> Escrow {
        // The ledger debits at creation: the escrow is funded already.
        let e = self.plugin.status(&escrow.id).unwrap();
        assert_eq!(e.status, EscrowState::Funded);
        e
    }
    fn check_paid_once(&self, req: &EscrowRequest, _escrow: &Escrow) {
        assert_eq!(
            self.balance(&req.beneficiary, &req.amount.currency),
            req.amount.amount
        );
    }
    fn check_refunded_once(&self, req: &EscrowRequest, _escrow: &Escrow) {
        assert_eq!(
            self.balance(&req.depositor, &req.amount.currency),
            req.amount.amount
        );
        assert_eq!(self.balance(&req.beneficiary, &req.amount.currency), 0);
    }
    fn check_created_once(&self, req: &EscrowRequest) {
        // debited once: the depositor had exactly the amount
        assert_eq!(self.balance(&req.depositor, &req.amount.currency), 0);
    }
}

struct CoinPay {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    server: CoinPayServer,
    plugin: PaymentPlugin,
}

/// Options of the CoinPay harness: one real hour is one second.
fn fast_options(secret: &str) -> CoinPayOptions {
    CoinPayOptions {
        webhook_secret: secret.into(),
        hour: Duration::from_secs(1),
        ..CoinPayOptions::default()
    }
}

impl CoinPay {
    fn new() -> CoinPay {
        Self::with(fast_options("whsec_suite"), |_| {})
    }

    /// A server with `opts` and an adapter pointed at it; `tweak` may change the grants.
    fn with(opts: CoinPayOptions, tweak: impl FnOnce(&mut PaymentGrants)) -> CoinPay {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in_dir(&dir.path().join("data")).unwrap());
        let webhook_secret = opts.webhook_secret.clone();
        let server = CoinPayServer::start(opts);
        let business = server.options().business_id.clone();
        let mut grants = PaymentGrants {
            account: "coinpay-node".into(),
            allowed_hosts: vec![server.origin()],
            config: map(&[("base_url", &server.base_url()), ("business_id", &business)]),
            secrets: map(&[("webhook_secret", &secret_env(&webhook_secret))]),
            generated: Default::default(),
            kv: store.plugin_kv("payment-coinpay"),
        };
        tweak(&mut grants);
        let plugin = load(dir.path(), "payment-coinpay", grants);
        CoinPay {
            dir,
            store,
            server,
            plugin,
        }
    }

    /// The adapter's stored record of escrow `id` (no network).
    fn stored(&self, id: &str) -> serde_json::Value {
        let bytes = self
            .plugin
            .kv()
            .get(&format!("escrow/{id}"))
            .unwrap()
            .expect("stored escrow");
        serde_json::from_slice(&bytes).unwrap()
    }

    fn stored_status(&self, id: &str) -> String {
        self.stored(id)["status"].as_str().unwrap().to_string()
    }

    fn last_delivery(&self, event: &str) -> Webhook {
        self.server
            .deliveries()
            .into_iter()
            .rev()
            .find(|w| w.event() == event)
            .unwrap_or_else(|| panic!("no {event} delivery"))
    }
}

impl Harness for CoinPay {
    fn name(&self) -> &'static str {
        "payment-coinpay"
    }
    fn plugin(&self) -> &PaymentPlugin {
        &self.plugin
    }
    fn currency(&self) -> &'static str {
        "USDC_POL"
    }
    fn prepare_depositor(&self, _depositor: &str, _amount: u64) {}
    fn make_funded(&self, escrow: &Escrow) -> Escrow {
        assert_eq!(escrow.status, EscrowState::Pending);
        assert!(self.server.fund(&escrow.id), "server refused to fund");
        let e = self.plugin.status(&escrow.id).unwrap();
        assert_eq!(e.status, EscrowState::Funded);
        e
    }
    fn check_paid_once(&self, _req: &EscrowRequest, escrow: &Escrow) {
        let e = self.server.escrow(&escrow.id).unwrap();
        assert_eq!(e.status, "settled");
        let released = self
            .server
            .deliveries()
            .iter()
            .filter(|w| w.event() == "escrow.released" && w.escrow_id() == escrow.id)
            .count();
        assert_eq!(released, 1, "released more than once");
    }
    fn check_refunded_once(&self, _req: &EscrowRequest, escrow: &Escrow) {
        let e = self.server.escrow(&escrow.id).unwrap();
        assert!(
            e.status == "refunded" || e.status == "expired",
            "{}",
            e.status
        );
        let refunds = self
            .server
            .deliveries()
            .iter()
            .filter(|w| w.event() == "escrow.refunded" && w.escrow_id() == escrow.id)
            .count();
        assert!(refunds <= 1, "refunded more than once");
    }
    fn check_created_once(&self, req: &EscrowRequest) {
        let made = self
            .server
            .escrow_ids()
            .iter()
            .filter(|id| self.server.escrow(id).unwrap().metadata["job_id"] == req.job_id.as_str())
            .count();
        assert_eq!(made, 1);
    }
}

// ---------------------------------------------------------------- the suite

const DAY: u64 = 24 * 3600;

fn happy_path(h: &dyn Harness) {
    let req = request("job-happy", 2_500_000, h.currency(), DAY);
    h.prepare_depositor(&req.depositor, req.amount.amount);
    let e = h.plugin().create_escrow(&req).unwrap();
    assert_eq!(e.amount.amount, 2_500_000);
    assert_eq!(e.amount.currency, h.currency());
    assert!(
        e.expires_at > unix_now(),
        "{}: expires_at in the past",
        h.name()
    );
    let e = h.make_funded(&e);
    let r = h.plugin().release(&e.id).unwrap();
    assert!(
        matches!(r.status, EscrowState::Released | EscrowState::Settled),
        "{}: {:?}",
        h.name(),
        r.status
    );
    let s = h.plugin().status(&e.id).unwrap();
    assert_eq!(s.status, EscrowState::Settled, "{}", h.name());
    // idempotent second release: same state, no second payment
    let again = h.plugin().release(&e.id).unwrap();
    assert_eq!(again.status, EscrowState::Settled);
    h.check_paid_once(&req, &e);
    // a settled escrow cannot be refunded
    let (kind, msg) = guest_err(h.plugin().refund(&e.id).unwrap_err());
    assert_eq!(kind, "invalid-input", "{}: {msg}", h.name());
    assert!(msg.contains("settled"), "{}: {msg}", h.name());
}

fn refund_path(h: &dyn Harness) {
    let req = request("job-refund", 1_000_000, h.currency(), DAY);
    h.prepare_depositor(&req.depositor, req.amount.amount);
    let e = h.plugin().create_escrow(&req).unwrap();
    let e = h.make_funded(&e);
    let r = h.plugin().refund(&e.id).unwrap();
    assert_eq!(r.status, EscrowState::Refunded, "{}", h.name());
    let again = h.plugin().refund(&e.id).unwrap();
    assert_eq!(again.status, EscrowState::Refunded);
    h.check_refunded_once(&req, &e);
    let (kind, msg) = guest_err(h.plugin().release(&e.id).unwrap_err());
    assert_eq!(kind, "invalid-input", "{}: {msg}", h.name());
    assert!(msg.contains("refunded"), "{}: {msg}", h.name());
    assert_eq!(
        h.plugin().status(&e.id).unwrap().status,
        EscrowState::Refunded
    );
}

fn dispute_path(h: &dyn Harness) {
    let req = request("job-dispute", 700, h.currency(), DAY);
    h.prepare_depositor(&req.depositor, req.amount.amount);
    let e = h.plugin().create_escrow(&req).unwrap();
    let e = h.make_funded(&e);
    let d = h.plugin().dispute(&e.id, "output was garbage").unwrap();
    assert_eq!(d.status, EscrowState::Disputed, "{}", h.name());
    let d = h.plugin().dispute(&e.id, "still garbage").unwrap();
    assert_eq!(d.status, EscrowState::Disputed);
    assert_eq!(
        h.plugin().status(&e.id).unwrap().status,
        EscrowState::Disputed
    );
}

/// An escrow left as created past its expiry: expired, its money (if any
/// was taken) back. (The ledger takes it at creation; CoinPay expires only
/// escrows never funded: see `coinpay_funded_escrows_do_not_expire`.)
fn expiry_path(h: &dyn Harness) {
    let req = request("job-expiry", 42_000, h.currency(), 1);
    h.prepare_depositor(&req.depositor, req.amount.amount);
    let e = h.plugin().create_escrow(&req).unwrap();
    std::thread::sleep(Duration::from_millis(2600));
    let s = h.plugin().status(&e.id).unwrap();
    assert_eq!(s.status, EscrowState::Expired, "{}", h.name());
    // refund of an expired escrow: already done
    assert_eq!(
        h.plugin().refund(&e.id).unwrap().status,
        EscrowState::Expired
    );
    h.check_refunded_once(&req, &e);
    let (kind, msg) = guest_err(h.plugin().release(&e.id).unwrap_err());
    assert_eq!(kind, "invalid-input", "{}: {msg}", h.name());
    assert!(msg.contains("expired"), "{}: {msg}", h.name());
}

fn create_is_idempotent(h: &dyn Harness) {
    let req = request("job-twice", 5_000, h.currency(), DAY);
    h.prepare_depositor(&req.depositor, req.amount.amount);
    let a = h.plugin().create_escrow(&req).unwrap();
    let b = h.plugin().create_escrow(&req).unwrap();
    assert_eq!(a.id, b.id, "{}", h.name());
    assert_eq!(a.amount.amount, b.amount.amount);
    h.check_created_once(&req);
}

fn clear_errors(h: &dyn Harness) {
    let (kind, msg) = guest_err(
        h.plugin()
            .create_escrow(&request("job-doge", 10, "DOGE", DAY))
            .unwrap_err(),
    );
    assert_eq!(kind, "unsupported", "{}: {msg}", h.name());
    assert!(
        msg.contains("DOGE") && msg.contains("BTC"),
        "{}: {msg}",
        h.name()
    );
    let (kind, msg) = guest_err(
        h.plugin()
            .create_escrow(&request("job-zero", 0, h.currency(), DAY))
            .unwrap_err(),
    );
    assert_eq!(kind, "invalid-input", "{}: {msg}", h.name());
    let (kind, _) = guest_err(h.plugin().status("no-such-escrow").unwrap_err());
    assert_eq!(kind, "invalid-input");
}

fn suite(h: &dyn Harness) {
    let currencies = h.plugin().currencies().unwrap();
    assert!(
        currencies
            .iter()
            .any(|c| c.code == "USDC_POL" && c.decimals == 6),
        "{}",
        h.name()
    );
    happy_path(h);
    refund_path(h);
    dispute_path(h);
    create_is_idempotent(h);
    clear_errors(h);
    expiry_path(h);
}

#[test]
fn settlement_suite_coinpay() {
    suite(&CoinPay::new());
}

#[test]
fn settlement_suite_ledger() {
    suite(&Ledger::new());
}

// ---------------------------------------------------------------- CoinPay only

#[test]
fn coinpay_amounts_are_exact_decimals() {
    let cp = CoinPay::new();
    // The service answers amounts as JavaScript numbers: exponent form
    // below 1e-6. What went out was the plain decimal.
    for (job, amount, cur, sent, want) in [
        ("a1", 150_000_000u64, "BTC", "1.5", "1.5"),
        ("a2", 1, "ETH", "0.000000000000000001", "1e-18"),
        ("a3", 33, "BTC", "0.00000033", "3.3e-7"),
        ("a4", 2_000_000, "USDC_SOL", "2", "2"),
        ("a5", 123_456_789, "SOL", "0.123456789", "0.123456789"),
        (
            "a7",
            123_456_789_012_345_000,
            "ETH",
            "0.123456789012345",
            "0.123456789012345",
        ),
    ] {
        let e = cp
            .plugin
            .create_escrow(&request(job, amount, cur, 5400))
            .unwrap();
        assert_eq!(e.amount.amount, amount, "{job}");
        let s = cp.server.escrow(&e.id).unwrap();
        assert_eq!(s.amount, want);
        assert_eq!(s.chain, cur);
        let seen = cp.server.requests();
        let body = String::from_utf8_lossy(&seen.last().unwrap().body);
        assert!(
            body.contains(&format!("\"amount\":{sent},")),
            "{job}: {body}"
        );
        assert_eq!(s.expires_in_hours, 2.0, "ceil(5400 s / 3600)");
        assert_eq!(s.depositor_address, format!("{job}-client-wallet"));
        assert_eq!(s.beneficiary_address, format!("{job}-provider-wallet"));
        assert_eq!(s.business_id.as_deref(), Some(TEST_BUSINESS_ID));
        assert_eq!(s.metadata["job_id"], job);
        assert_eq!(s.metadata["model"], "tiny");
        assert_eq!(
            e.deposit_address.as_deref(),
            Some(s.escrow_address.as_str())
        );
        assert_eq!(e.status, EscrowState::Pending);
    }
    // minimum one hour
    let e = cp
        .plugin
        .create_escrow(&request("a6", 1, "BCH", 1))
        .unwrap();
    assert_eq!(cp.server.escrow(&e.id).unwrap().expires_in_hours, 1.0);

    // Amounts a double cannot carry would be changed by the service
    // (u64::MAX wei of POL is held as 18.446744073709553): refused before
    // anything is sent, as are expiries past the service's 720 hours.
    let before = cp.server.counters().requests;
    for (job, amount, cur, secs, says) in [
        ("big", u64::MAX, "POL", DAY, "significant digits"),
        (
            "16",
            1_234_567_890_123_456,
            "ETH",
            DAY,
            "significant digits",
        ),
        ("long", 10, "BTC", 721 * 3600, "720"),
    ] {
        let (kind, msg) = guest_err(
            cp.plugin
                .create_escrow(&request(job, amount, cur, secs))
                .unwrap_err(),
        );
        assert_eq!(kind, "invalid-input", "{job}: {msg}");
        assert!(msg.contains(says), "{job}: {msg}");
    }
    assert_eq!(cp.server.counters().requests, before, "nothing was sent");
}

#[test]
fn coinpay_signed_webhooks_apply() {
    let cp = CoinPay::new();
    let e = cp
        .plugin
        .create_escrow(&request("wh-1", 10_000, "USDC_ETH", DAY))
        .unwrap();
    assert!(cp.server.fund(&e.id));
    let hook = cp.last_delivery("escrow.funded");
    let got = cp.plugin.handle_webhook(&hook.headers, &hook.body).unwrap();
    assert_eq!(got.id, e.id);
    assert_eq!(got.status, EscrowState::Funded);
    assert_eq!(cp.stored_status(&e.id), "funded");
    // a late/duplicate delivery never moves it backwards
    let created = cp.last_delivery("escrow.created");
    let got = cp
        .plugin
        .handle_webhook(&created.headers, &created.body)
        .unwrap();
    assert_eq!(got.status, EscrowState::Funded);

    // release through the API: the server settles and tells us
    let r = cp.plugin.release(&e.id).unwrap();
    assert_eq!(r.status, EscrowState::Settled);
    let settled = cp.last_delivery("escrow.settled");
    let got = cp
        .plugin
        .handle_webhook(&settled.headers, &settled.body)
        .unwrap();
    assert_eq!(got.status, EscrowState::Settled);
    assert_eq!(cp.server.counters().releases, 1);
}

#[test]
fn coinpay_settles_after_a_delay() {
    let mut opts = fast_options("whsec_delay");
    opts.settle_after = Some(Duration::from_millis(400));
    let cp = CoinPay::with(opts, |_| {});
    let e = cp
        .plugin
        .create_escrow(&request("late-settle", 10, "BTC", DAY))
        .unwrap();
    assert!(cp.server.fund(&e.id));
    assert_eq!(
        cp.plugin.release(&e.id).unwrap().status,
        EscrowState::Released
    );
    // released but not settled: a second release is still a no-op
    assert_eq!(
        cp.plugin.release(&e.id).unwrap().status,
        EscrowState::Released
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        cp.plugin.status(&e.id).unwrap().status,
        EscrowState::Settled
    );
    assert_eq!(cp.server.counters().releases, 1);
    assert_eq!(cp.server.counters().release_calls, 1);
}

#[test]
fn coinpay_bad_webhooks_are_rejected_and_change_nothing() {
    let cp = CoinPay::new();
    let e = cp
        .plugin
        .create_escrow(&request("wh-bad", 10_000, "ETH", DAY))
        .unwrap();
    assert!(cp.server.fund(&e.id));
    let hook = cp.last_delivery("escrow.funded");
    let sig = |h: &Webhook| {
        h.headers
            .iter()
            .find(|(k, _)| k == "x-coinpay-signature")
            .unwrap()
            .1
            .clone()
    };
    let with_sig = |value: &str| -> Vec<(String, String)> {
        hook.headers
            .iter()
            .map(|(k, v)| {
                if k == "x-coinpay-signature" {
                    (k.clone(), value.to_string())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    };
    let body_text = String::from_utf8(hook.body.clone()).unwrap();
    let tampered = body_text.replace("\"funded\"", "\"settled\"");
    assert_ne!(tampered, body_text);
    let now = unix_now();
    // A correctly signed body naming no event, relabelled by the unsigned
    // X-CoinPay-Event header.
    let untyped = body_text.replace("\"type\":\"escrow.funded\",", "");
    assert_ne!(untyped, body_text);
    let mut relabelled: Vec<(String, String)> = hook
        .headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "x-coinpay-signature" => (k.clone(), sign("whsec_suite", now, untyped.as_bytes())),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    relabelled.push(("x-coinpay-event".into(), "escrow.settled".into()));
    // Correctly signed, but for another CoinPay business.
    let foreign = body_text.replace(TEST_BUSINESS_ID, "00000000-0000-4000-8000-000000000000");
    assert_ne!(foreign, body_text);
    type Case = (&'static str, Vec<(String, String)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("tampered body", hook.headers.clone(), tampered.into_bytes()),
        (
            "event from a header",
            relabelled,
            untyped.clone().into_bytes(),
        ),
        (
            "wrong secret",
            with_sig(&sign("whsec_wrong", now, &hook.body)),
            hook.body.clone(),
        ),
        (
            "stale timestamp",
            with_sig(&sign("whsec_suite", now - 301, &hook.body)),
            hook.body.clone(),
        ),
        (
            "future timestamp",
            with_sig(&sign("whsec_suite", now + 400, &hook.body)),
            hook.body.clone(),
        ),
        (
            "another business",
            with_sig(&sign("whsec_suite", now, foreign.as_bytes())),
            foreign.clone().into_bytes(),
        ),
        ("malformed header", with_sig("garbage"), hook.body.clone()),
        (
            "non-numeric t",
            with_sig(&sig(&hook).replacen("t=", "t=x", 1)),
            hook.body.clone(),
        ),
        ("no v1", with_sig(&format!("t={now}")), hook.body.clone()),
        (
            "non-hex v1",
            with_sig(&format!("t={now},v1=zz")),
            hook.body.clone(),
        ),
        (
            "missing header",
            hook.headers
                .iter()
                .filter(|(k, _)| k != "x-coinpay-signature")
                .cloned()
                .collect(),
            hook.body.clone(),
        ),
    ];
    for (what, headers, body) in cases {
        let err = cp.plugin.handle_webhook(&headers, &body).unwrap_err();
        let (kind, msg) = guest_err(err);
        assert_eq!(kind, "invalid-input", "{what}: {msg}");
        assert!(!msg.contains("whsec_suite"), "{what}: secret in error");
        assert_eq!(cp.stored_status(&e.id), "pending", "{what} changed state");
    }
    // the genuine one still applies
    let got = cp.plugin.handle_webhook(&hook.headers, &hook.body).unwrap();
    assert_eq!(got.status, EscrowState::Funded);
    // header names are case-insensitive
    let upper: Vec<_> = hook
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect();
    cp.plugin.handle_webhook(&upper, &hook.body).unwrap();
}

/// `(kind, message)` of a create through an adapter granted `allowed` and
/// pointed at `base_url`, and how many requests `cp`'s server saw.
fn create_with_grant(allowed: &[String], base_url: &str) -> (&'static str, String, u64) {
    let cp = CoinPay::with(fast_options("whsec_cap"), |g| {
        g.allowed_hosts = allowed.to_vec();
        g.config.insert("base_url".into(), base_url.to_string());
    });
    let (kind, msg) = guest_err(
        cp.plugin
            .create_escrow(&request("cap-rule", 10, "BTC", DAY))
            .unwrap_err(),
    );
    (kind, msg, cp.server.counters().requests)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare host grants https on port 443 only: a request to the right host
/// on another port is a capability error, not a connection attempt.
#[test]
fn allowed_host_without_a_port_is_the_default_port_only() {
    let port = closed_port();
    let (kind, msg, _) = create_with_grant(
        &["127.0.0.1".into()],
        &format!("https://127.0.0.1:{port}/api"),
    );
    assert_eq!(kind, "unsupported", "{msg}");
    assert!(msg.contains("allowed_hosts"), "{msg}");
    // the same with an explicit scheme: http://host is port 80 only
    let (kind, msg, _) = create_with_grant(
        &["http://127.0.0.1".into()],
        &format!("http://127.0.0.1:{port}/api"),
    );
    assert_eq!(kind, "unsupported", "{msg}");
    assert!(msg.contains("allowed_hosts"), "{msg}");
}

/// An entry without `http://` grants https only: plain HTTP to the same
/// host and port is a capability error, and the server sees nothing.
#[test]
fn allowed_host_without_http_scheme_is_https_only() {
    let server = CoinPayServer::start(fast_options("whsec_cap"));
    let port = server.addr().port();
    for entry in [
        format!("127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let (kind, msg, _) = create_with_grant(std::slice::from_ref(&entry), &server.base_url());
        assert_eq!(kind, "unsupported", "{entry}: {msg}");
        assert!(msg.contains("allowed_hosts"), "{entry}: {msg}");
    }
    // and `http://host:port` grants plain HTTP, not https
    let (kind, msg, _) = create_with_grant(
        &[format!("http://127.0.0.1:{port}")],
        &format!("https://127.0.0.1:{port}/api"),
    );
    assert_eq!(kind, "unsupported", "{msg}");
    assert_eq!(server.counters().requests, 0, "the server saw a request");
}

/// `http://host:port` grants exactly that origin: the adapter reaches the
/// server through it.
#[test]
fn allowed_http_origin_with_its_port_is_reachable() {
    let cp = CoinPay::with(fast_options("whsec_cap"), |g| {
        g.allowed_hosts = vec![g.allowed_hosts[0].to_uppercase()];
    });
    let e = cp
        .plugin
        .create_escrow(&request("cap-ok", 10, "BTC", DAY))
        .unwrap();
    assert_eq!(e.status, EscrowState::Pending);
    assert_eq!(cp.server.counters().creates, 1);
}

/// The matching rules on the filter itself.
#[test]
fn host_filter_matches_scheme_host_and_port_exactly() {
    let f = HostFilter::new(
        "p",
        vec![
            "api.example.com".into(),
            "pay.example.com:8443".into(),
            "http://127.0.0.1:8080".into(),
            "http://plain.example.com".into(),
            "[::1]:9000".into(),
            "not a host/".into(),
        ],
    );
    let allowed = [
        ("https", "api.example.com", None),
        ("https", "API.Example.com", Some(443)),
        ("https", "pay.example.com", Some(8443)),
        ("http", "127.0.0.1", Some(8080)),
        ("http", "plain.example.com", None),
        ("http", "plain.example.com", Some(80)),
        ("https", "[::1]", Some(9000)),
    ];
    for (scheme, host, port) in allowed {
        assert!(f.allows(scheme, host, port), "{scheme}://{host}:{port:?}");
    }
    let refused = [
        ("https", "api.example.com", Some(8443)),
        ("http", "api.example.com", None),
        ("http", "api.example.com", Some(443)),
        ("https", "pay.example.com", None),
        ("http", "pay.example.com", Some(8443)),
        ("https", "127.0.0.1", Some(8080)),
        ("http", "127.0.0.1", None),
        ("http", "127.0.0.1", Some(8081)),
        ("https", "plain.example.com", None),
        ("http", "plain.example.com", Some(8080)),
        ("https", "[::1]", None),
        ("ftp", "api.example.com", None),
        ("https", "evil.example.com", None),
        ("https", "api.example.com.evil.net", None),
        ("https", "not a host", None),
    ];
    for (scheme, host, port) in refused {
        assert!(!f.allows(scheme, host, port), "{scheme}://{host}:{port:?}");
    }
    let parsed = AllowedHost::parse("HTTP://LocalHost:8080").unwrap();
    assert_eq!(
        (parsed.scheme, parsed.host.as_str(), parsed.port),
        (AllowedScheme::Http, "localhost", 8080)
    );
    for bad in [
        "",
        "https://",
        "https://x.io/api",
        "ftp://x.io",
        "x.io:0",
        "x.io:65536",
        "x.io:+80",
        "x.io:080",
        "x.io:",
        "user@x.io",
        "*.x.io",
        "x.io?a=1",
        "[::1",
        "[::1]x",
    ] {
        assert!(AllowedHost::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn coinpay_host_outside_allowed_hosts_is_a_capability_error() {
    let cp = CoinPay::with(fast_options("whsec_cap"), |g| {
        // same server, but named `localhost`, which is not granted
        let url = g.config["base_url"].replace("127.0.0.1", "localhost");
        g.config.insert("base_url".into(), url);
    });
    let err = cp
        .plugin
        .create_escrow(&request("cap-1", 10, "BTC", DAY))
        .unwrap_err();
    let (kind, msg) = guest_err(err);
    assert_eq!(kind, "unsupported", "{msg}");
    assert!(msg.contains("allowed_hosts"), "{msg}");
    assert!(msg.contains("localhost"), "{msg}");
    assert_eq!(cp.server.counters().requests, 0, "the server saw a request");
    assert!(cp.plugin.kv().list_keys("").unwrap().is_empty());
}

#[test]
fn coinpay_wrong_state_and_server_errors_are_clear() {
    let cp = CoinPay::new();
    let e = cp
        .plugin
        .create_escrow(&request("ws-1", 10, "BTC", DAY))
        .unwrap();
    // pending: cannot release or dispute yet, and the server was not asked to
    let (kind, msg) = guest_err(cp.plugin.release(&e.id).unwrap_err());
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("pending"), "{msg}");
    let (kind, msg) = guest_err(
        cp.plugin
            .dispute(&e.id, "the deposit never came")
            .unwrap_err(),
    );
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("pending"), "{msg}");
    let c = cp.server.counters();
    assert_eq!((c.release_calls, c.dispute_calls), (0, 0));
    // dispute reasons shorter than the service's 10 characters: refused here
    let e2 = cp
        .plugin
        .create_escrow(&request("ws-2", 10, "BTC", DAY))
        .unwrap();
    assert!(cp.server.fund(&e2.id));
    for short in [
        " ",
        "late",
        "  too short  ",
        "\u{1F600}\u{1F600}\u{1F600}\u{1F600}",
    ] {
        let (kind, msg) = guest_err(cp.plugin.dispute(&e2.id, short).unwrap_err());
        assert_eq!(kind, "invalid-input", "{short:?}");
        assert!(msg.contains("10"), "{msg}");
    }
    assert_eq!(cp.server.counters().dispute_calls, 0);
    // the service releases a disputed escrow (the depositor gives in)
    assert_eq!(
        cp.plugin
            .dispute(&e2.id, "five emoji \u{1F600}")
            .unwrap()
            .status,
        EscrowState::Disputed
    );
    let (kind, msg) = guest_err(cp.plugin.refund(&e2.id).unwrap_err());
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("disputed"), "{msg}");
    assert_eq!(cp.server.counters().refund_calls, 0);
    assert_eq!(
        cp.plugin.release(&e2.id).unwrap().status,
        EscrowState::Settled
    );
    // settled: a dispute is refused with the state, not retried blindly
    let (kind, msg) = guest_err(
        cp.plugin
            .dispute(&e2.id, "the output was garbage")
            .unwrap_err(),
    );
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("settled"), "{msg}");
    assert_eq!(cp.server.counters().dispute_calls, 1);
}

/// The service refunds funded escrows only and expires unfunded ones: a
/// refund of an escrow never funded sends nothing and answers it pending
/// (not final, so the caller asks again); once the service has expired it,
/// the refund answers expired. A deposit arriving in between makes the
/// next refund a real one.
#[test]
fn coinpay_never_funded_escrow_is_left_to_expire_not_refunded() {
    let cp = CoinPay::new(); // one hour is one second
    let e = cp
        .plugin
        .create_escrow(&request("nf-1", 10, "BTC", 1))
        .unwrap();
    let r = cp.plugin.refund(&e.id).unwrap();
    assert_eq!(r.status, EscrowState::Pending);
    assert_eq!(cp.server.counters().refund_calls, 0, "nothing to refund");
    assert_eq!(cp.server.escrow(&e.id).unwrap().status, "created");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        cp.plugin.refund(&e.id).unwrap().status,
        EscrowState::Expired
    );
    assert_eq!(cp.server.counters().refund_calls, 0);
    assert_eq!(cp.stored_status(&e.id), "expired");

    // refunded once the deposit arrived
    let late = cp
        .plugin
        .create_escrow(&request("nf-2", 10, "BTC", DAY))
        .unwrap();
    assert_eq!(
        cp.plugin.refund(&late.id).unwrap().status,
        EscrowState::Pending
    );
    assert!(cp.server.fund(&late.id));
    assert_eq!(
        cp.plugin.refund(&late.id).unwrap().status,
        EscrowState::Refunded
    );
    let c = cp.server.counters();
    assert_eq!((c.refund_calls, c.refunds), (1, 1));
}

/// A funded escrow is held past its `expires_at` (the service expires
/// unfunded escrows only): still funded, and refundable.
#[test]
fn coinpay_funded_escrows_do_not_expire() {
    let cp = CoinPay::new(); // one hour is one second
    let e = cp
        .plugin
        .create_escrow(&request("held", 10, "ETH", 1))
        .unwrap();
    assert!(cp.server.fund(&e.id));
    std::thread::sleep(Duration::from_millis(1300));
    let s = cp.plugin.status(&e.id).unwrap();
    assert_eq!(s.status, EscrowState::Funded);
    assert!(s.expires_at <= unix_now(), "past its expiry");
    assert_eq!(
        cp.plugin.refund(&e.id).unwrap().status,
        EscrowState::Refunded
    );
}

/// CoinPay sends escrow webhooks only for escrows created with a
/// `business_id`: with webhooks configured the adapter refuses to create
/// without one (nothing sent), refuses one that is no UUID, and sends the
/// configured one (whose escrows then produce deliveries). Without
/// webhooks it creates anonymous escrows, which produce none.
#[test]
fn coinpay_business_id_is_sent_and_required_for_webhooks() {
    let no_business = CoinPay::with(fast_options("whsec_biz"), |g| {
        g.config.remove("business_id");
    });
    let (kind, msg) = guest_err(
        no_business
            .plugin
            .create_escrow(&request("biz-1", 10, "BTC", DAY))
            .unwrap_err(),
    );
    assert_eq!(kind, "unsupported", "{msg}");
    assert!(
        msg.contains("business_id") && msg.contains("webhook"),
        "{msg}"
    );
    assert_eq!(no_business.server.counters().requests, 0);

    let malformed = CoinPay::with(fast_options("whsec_biz"), |g| {
        g.config.insert("business_id".into(), "biz_123".into());
    });
    let (kind, msg) = guest_err(
        malformed
            .plugin
            .create_escrow(&request("biz-2", 10, "BTC", DAY))
            .unwrap_err(),
    );
    assert_eq!(kind, "invalid-input", "{msg}");
    assert!(msg.contains("biz_123") && msg.contains("UUID"), "{msg}");
    assert_eq!(malformed.server.counters().requests, 0);

    let cp = CoinPay::new();
    let e = cp
        .plugin
        .create_escrow(&request("biz-3", 10, "BTC", DAY))
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&cp.server.requests()[0].body).unwrap();
    assert_eq!(sent["business_id"], TEST_BUSINESS_ID);
    assert!(cp.server.fund(&e.id));
    let hook = cp.last_delivery("escrow.funded");
    assert_eq!(hook.escrow_id(), e.id);
    assert_eq!(
        cp.plugin
            .handle_webhook(&hook.headers, &hook.body)
            .unwrap()
            .status,
        EscrowState::Funded
    );

    let anonymous = CoinPay::with(fast_options("whsec_biz"), |g| {
        g.config.remove("business_id");
        g.secrets.remove("webhook_secret");
    });
    let e = anonymous
        .plugin
        .create_escrow(&request("biz-4", 10, "BTC", DAY))
        .unwrap();
    let sent: serde_json::Value =
        serde_json::from_slice(&anonymous.server.requests()[0].body).unwrap();
    assert!(sent.get("business_id").is_none(), "{sent}");
    assert!(anonymous.server.fund(&e.id));
    assert!(anonymous.server.deliveries().is_empty());
}

#[test]
fn coinpay_unreachable_server_is_an_internal_error() {
    let cp = CoinPay::with(fast_options("whsec_down"), |g| {
        // a port nothing listens on
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        g.config
            .insert("base_url".into(), format!("http://127.0.0.1:{port}/api"));
        g.allowed_hosts = vec![format!("http://127.0.0.1:{port}")];
    });
    let (kind, msg) = guest_err(
        cp.plugin
            .create_escrow(&request("down-1", 10, "BTC", DAY))
            .unwrap_err(),
    );
    assert_eq!(kind, "internal", "{msg}");
    assert!(msg.contains("POST /escrow"), "{msg}");
}

#[test]
fn coinpay_secrets_stay_out_of_db_errors_and_logs() {
    let api_key = "sk_live_DISTINCTIVE_api_key_7f3a9c";
    let webhook_secret = "whsec_DISTINCTIVE_hook_secret_51be";
    let token_key = "tk_DISTINCTIVE_token_key_90d2";
    let mut opts = fast_options(webhook_secret);
    opts.api_key = Some(api_key.into());
    let cp = CoinPay::with(opts, |g| {
        g.secrets.insert("api_key".into(), secret_env(api_key));
        g.secrets.insert("token_key".into(), secret_env(token_key));
    });

    let logs = LogCapture::default();
    let subscriber = logs.subscriber(tracing::Level::TRACE);
    let mut errors = Vec::new();
    let mut tokens = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let e = cp
            .plugin
            .create_escrow(&request("sec-1", 10_000, "USDC_POL", DAY))
            .unwrap();
        let s = cp.server.escrow(&e.id).unwrap();
        tokens.push(s.release_token.clone());
        tokens.push(s.beneficiary_token.clone());
        // every call carried the key
        assert!(cp.server.requests().iter().all(|r| r
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == &format!("Bearer {api_key}"))));
        errors.push(cp.plugin.release(&e.id).unwrap_err().to_string());
        let hook = cp.last_delivery("escrow.created");
        errors.push(
            cp.plugin
                .handle_webhook(&hook.headers, b"{\"type\":\"escrow.funded\"}")
                .unwrap_err()
                .to_string(),
        );
        assert!(cp.server.fund(&e.id));
        let hook = cp.last_delivery("escrow.funded");
        cp.plugin.handle_webhook(&hook.headers, &hook.body).unwrap();
        cp.plugin.release(&e.id).unwrap();
        errors.push(cp.plugin.dispute(&e.id, "x").unwrap_err().to_string());
        errors.push(
            cp.plugin
                .dispute(&e.id, "a reason long enough")
                .unwrap_err()
                .to_string(),
        );
        errors.push(cp.plugin.refund(&e.id).unwrap_err().to_string());

        // a second escrow funded, then refunded
        let e2 = cp
            .plugin
            .create_escrow(&request("sec-2", 10_000, "USDC_POL", DAY))
            .unwrap();
        let s2 = cp.server.escrow(&e2.id).unwrap();
        tokens.push(s2.release_token.clone());
        tokens.push(s2.beneficiary_token.clone());
        assert!(cp.server.fund(&e2.id));
        assert_eq!(
            cp.plugin.refund(&e2.id).unwrap().status,
            EscrowState::Refunded
        );
        errors.push(cp.plugin.release(&e2.id).unwrap_err().to_string());
    });
    // tokens are sealed at rest
    let rec = cp.stored(&cp.server.escrow_ids()[0]);
    assert!(rec["release_token"].as_str().unwrap().starts_with("enc1:"));

    let mut secrets: Vec<&str> = vec![api_key, webhook_secret, token_key];
    secrets.extend(tokens.iter().map(String::as_str));
    let log_text = String::from_utf8_lossy(&logs.bytes()).into_owned();
    assert!(
        log_text.contains("payment-coinpay"),
        "no plugin logs captured"
    );
    // the database and its WAL/SHM files
    let _ = &cp.store;
    let data = cp.dir.path().join("data");
    let files = files_under(&data);
    assert!(!files.is_empty());
    for s in &secrets {
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(!contains(&bytes, s), "secret found in {}", f.display());
        }
        for e in &errors {
            assert!(!e.contains(s), "secret in error: {e}");
        }
        assert!(!log_text.contains(s), "secret in logs");
    }
}

#[test]
fn coinpay_wrong_api_key_is_reported_without_the_key() {
    let mut opts = fast_options("whsec_k");
    opts.api_key = Some("sk_live_right_key_123456".into());
    let cp = CoinPay::with(opts, |g| {
        g.secrets
            .insert("api_key".into(), secret_env("sk_live_WRONG_key_987654"));
    });
    let (kind, msg) = guest_err(
        cp.plugin
            .create_escrow(&request("k-1", 10, "BTC", DAY))
            .unwrap_err(),
    );
    assert_eq!(kind, "invalid-input", "{msg}");
    assert!(msg.contains("401") && msg.contains("api_key"), "{msg}");
    assert!(!msg.contains("sk_live_WRONG_key_987654"), "{msg}");
}

#[test]
fn coinpay_auto_funding_is_observed_and_tokens_are_plain_without_token_key() {
    let mut opts = fast_options("whsec_auto");
    opts.auto_fund_after = Some(Duration::from_millis(300));
    let cp = CoinPay::with(opts, |_| {});
    let e = cp
        .plugin
        .create_escrow(&request("auto-1", 10, "SOL", DAY))
        .unwrap();
    assert_eq!(e.status, EscrowState::Pending);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cp.plugin.status(&e.id).unwrap().status, EscrowState::Funded);
    // documented: without `token_key` the tokens are stored as-is
    let rec = cp.stored(&e.id);
    let server_view = cp.server.escrow(&e.id).unwrap();
    assert_eq!(
        rec["release_token"].as_str().unwrap(),
        format!("plain:{}", server_view.release_token)
    );
    assert_eq!(rec["job_id"], "auto-1");
    assert_eq!(rec["amount"], 10);
    assert_eq!(rec["currency"], "SOL");
    // create for the same job after funding: no second escrow, current state
    let again = cp
        .plugin
        .create_escrow(&request("auto-1", 10, "SOL", DAY))
        .unwrap();
    assert_eq!((again.id, again.status), (e.id, EscrowState::Funded));
    assert_eq!(cp.server.counters().creates, 1);
    // same job, different amount: refused
    let (kind, _) = guest_err(
        cp.plugin
            .create_escrow(&request("auto-1", 11, "SOL", DAY))
            .unwrap_err(),
    );
    assert_eq!(kind, "invalid-input");
}

/// A provider confirms its client's escrow with its own adapter, which
/// never created it: `status` reads CoinPay's view (exact amount, chain,
/// status, beneficiary) and stores nothing; an escrow paying someone else
/// is reported with that beneficiary (the host, not the adapter, refuses
/// it: contract 0.2); an id that could leave `/escrow/` in the URL is
/// refused before any request.
#[test]
fn coinpay_status_of_an_escrow_made_elsewhere_is_read_exactly() {
    let cp = CoinPay::new();
    let other_dir = tempfile::tempdir().unwrap();
    let other_store = Arc::new(Store::open_in_dir(&other_dir.path().join("data")).unwrap());
    let provider = load(
        other_dir.path(),
        "payment-coinpay",
        PaymentGrants {
            account: "elsewhere-provider".into(),
            allowed_hosts: vec![cp.server.origin()],
            config: map(&[("base_url", &cp.server.base_url())]),
            secrets: BTreeMap::new(),
            generated: Default::default(),
            kv: other_store.plugin_kv("payment-coinpay"),
        },
    );
    // 15 significant digits: what a double carries exactly
    let wei = 1_234_567_890_123_450_000u64;
    let made = cp
        .plugin
        .create_escrow(&request("elsewhere", wei, "ETH", DAY))
        .unwrap();
    let seen = provider.status(&made.id).unwrap();
    assert_eq!(seen.status, EscrowState::Pending);
    assert_eq!(
        (seen.amount.amount, seen.amount.currency.as_str()),
        (wei, "ETH")
    );
    assert_eq!(seen.deposit_address, made.deposit_address);
    assert!(cp.server.fund(&made.id));
    assert_eq!(
        provider.status(&made.id).unwrap().status,
        EscrowState::Funded
    );
    assert!(
        provider
            .kv()
            .get(&format!("escrow/{}", made.id))
            .unwrap()
            .is_none(),
        "nothing stored for an escrow this adapter did not make"
    );
    // Released by its maker: the provider sees it move on.
    cp.plugin.release(&made.id).unwrap();
    assert!(matches!(
        provider.status(&made.id).unwrap().status,
        EscrowState::Released | EscrowState::Settled
    ));

    // Funded and big enough, but it pays somebody else: reported as such.
    let other = cp
        .plugin
        .create_escrow(&request("other", wei, "ETH", DAY))
        .unwrap();
    assert!(cp.server.fund(&other.id));
    let seen = provider.status(&other.id).unwrap();
    assert_eq!(seen.beneficiary.as_deref(), Some("other-provider-wallet"));
    assert_eq!(seen.status, EscrowState::Funded);

    let before = cp.server.counters().requests;
    for bad in ["..", ".", "../escrow", "a/b", "x?y=1", "", "%2e%2e"] {
        let (kind, msg) = guest_err(provider.status(bad).unwrap_err());
        assert_eq!(kind, "invalid-input", "{bad:?}: {msg}");
    }
    assert_eq!(cp.server.counters().requests, before, "no request was sent");
    // An id the server does not know: an error naming it.
    let err = provider.status("esc_unknown").unwrap_err().to_string();
    assert!(err.contains("esc_unknown"), "{err}");

    // Escrows made by anyone: amounts as the service prints them (exponent
    // form below 1e-6) read exactly; one finer than its chain's decimals
    // is refused, not rounded down.
    let made_by_anyone = |chain: &str, amount: &str| {
        let (status, answer) = cp.server.create_raw(&format!(
            r#"{{"chain":"{chain}","amount":{amount},"depositor_address":"0xsomeone-else-000001","beneficiary_address":"elsewhere-provider"}}"#
        ));
        assert_eq!(status, 201, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    for (chain, amount, printed, minor) in [
        ("BTC", "0.00000033", "3.3e-7", 33u64),
        ("ETH", "0.000000000000000001", "1e-18", 1),
        ("ETH", "0.0000005", "5e-7", 500_000_000_000),
        ("USDC_POL", "12.5", "12.5", 12_500_000),
    ] {
        let id = made_by_anyone(chain, amount);
        assert_eq!(cp.server.escrow(&id).unwrap().amount, printed);
        let seen = provider.status(&id).unwrap();
        assert_eq!(
            (seen.amount.amount, seen.amount.currency.as_str()),
            (minor, chain),
            "{printed}"
        );
    }
    for (chain, amount) in [("BTC", "0.123456789"), ("USDC_SOL", "3.3e-7")] {
        let id = made_by_anyone(chain, amount);
        let (kind, msg) = guest_err(provider.status(&id).unwrap_err());
        assert_eq!(kind, "internal", "{msg}");
        assert!(msg.contains("more precision"), "{msg}");
    }
}
