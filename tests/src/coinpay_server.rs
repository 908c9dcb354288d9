//! A local fake of CoinPay Portal's escrow API, as strict as the real one.
//!
//! It models the service's own code (profullstack/coinpayportal:
//! `src/lib/escrow/service.ts`, the route handlers under
//! `src/app/api/escrow/`, `sendEscrowWebhook` in
//! `src/lib/webhooks/service.ts` and the `escrows` table, whose `amount` is
//! `NUMERIC(30, 18)`), independently of the adapter (its own chain list,
//! its own number handling), so the adapter is tested against what the
//! service does, not a friendlier version of it:
//!
//! * `POST /api/escrow` with `{chain, amount, depositor_address,
//!   beneficiary_address, arbiter_address?, metadata?, business_id?,
//!   expires_in_hours?}`, checked like the service's schema: `chain` one of
//!   [`CHAINS`]; `amount` a positive JSON *number* (a string is refused);
//!   addresses at least 10 characters, depositor ≠ beneficiary;
//!   `business_id` a UUID naming a known business (the one in
//!   [`CoinPayOptions::business_id`]); `expires_in_hours` positive, at most
//!   720 (default 24). Answers `201` with the escrow, its `release_token`
//!   and `beneficiary_token`.
//! * Amounts are JavaScript doubles: the body's number is read as the
//!   nearest double, stored rounded to 18 decimals (the column), and every
//!   answer prints it as JavaScript does (`JSON.stringify`): shortest
//!   round-trip digits, exponent form below `1e-6` (`3.3e-7`) and from
//!   `1e21`. An amount with more than 12 integer digits overflows the
//!   column (`400`). No decimals are checked per chain (the service does not).
//! * `GET /api/escrow/{id}`; `POST /api/escrow/{id}/release` and `/refund`
//!   with `{release_token}`; `POST /api/escrow/{id}/dispute` with
//!   `{token | release_token | beneficiary_token, reason}`.
//! * States: `created → funded → released → settled`; release of a
//!   `funded` or `disputed` escrow; refund of a `funded` one only; a dispute
//!   of a `funded` one only, its trimmed reason at least 10 characters
//!   (checked after the state). Only `created` (never funded) escrows
//!   expire, at `expires_at` (the service's cron; applied here when the
//!   escrow is next observed); a funded escrow is held until released or
//!   refunded.
//! * Errors are JSON `{"error": "..."}` with the service's messages: 400
//!   for a bad body and for every wrong state (never 409), 403 for a wrong
//!   token (`Unauthorized...`), 404 for an unknown escrow, 500 for a body
//!   that is not JSON on the action routes (the service's `request.json()`
//!   throws); 401 when [`CoinPayOptions::api_key`] is set (a test knob) and
//!   the call lacks `Authorization: Bearer <key>`.
//! * Webhooks only for escrows created with a `business_id` (anonymous
//!   escrows send none): `escrow.created|funded|released|settled|refunded|
//!   disputed|expired` as `{id, type, data: {escrow_id, status, chain,
//!   amount, ...}, created_at, business_id}`, signed `X-CoinPay-Signature:
//!   t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (the documented
//!   scheme), with `Content-Type` and `User-Agent: CoinPay-Webhook/1.0`.
//!
//! Not modelled: the service's authentication of `GET /api/escrow/{id}`
//! (a token or a credential owning the escrow), fees and USD amounts,
//! arbitration. Test-only extras: `POST /api/__test/escrow/{id}/fund` (also
//! without `/api`), [`CoinPayServer::fund`], [`CoinPayServer::create_raw`]
//! and the clock knobs in [`CoinPayOptions`].
//!
//! Plain `std::net` + one thread per connection; HTTP/1.1 with
//! `Content-Length` or chunked request bodies, `Connection: close` answers.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The chains the service's schema accepts (no decimals: it checks none).
pub const CHAINS: &[&str] = &[
    "BTC", "BCH", "ETH", "POL", "SOL", "DOGE", "XRP", "ADA", "BNB", "USDT", "USDC", "USDC_ETH",
    "USDC_POL", "USDC_SOL",
];

/// The business every test server knows (its webhook endpoint is
/// [`CoinPayOptions::webhook_url`], signed with
/// [`CoinPayOptions::webhook_secret`]).
pub const TEST_BUSINESS_ID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// Longest `expires_in_hours` the service accepts.
pub const MAX_EXPIRES_IN_HOURS: f64 = 720.0;

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct CoinPayOptions {
    /// The one business registered on this server: escrows created with
    /// this `business_id` send webhooks; any other id is refused (the
    /// service's foreign key).
    pub business_id: String,
    /// The business's webhook signing secret.
    pub webhook_secret: String,
    /// Where to POST deliveries (`http://host:port/path`); they are kept in
    /// the outbox either way.
    pub webhook_url: Option<String>,
    /// Created escrows become funded by themselves after this long.
    pub auto_fund_after: Option<Duration>,
    /// Released escrows settle after this long; `None` settles at once.
    pub settle_after: Option<Duration>,
    /// How much real time counts as one hour (expiry), e.g. 1 s in tests.
    pub hour: Duration,
    /// When set, every API call must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
}

impl Default for CoinPayOptions {
    fn default() -> Self {
        CoinPayOptions {
            business_id: TEST_BUSINESS_ID.into(),
            webhook_secret: "whsec_test".into(),
            webhook_url: None,
            auto_fund_after: None,
            settle_after: None,
            hour: Duration::from_secs(3600),
            api_key: None,
        }
    }
}

/// One webhook delivery.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Headers as sent (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The raw signed body.
    pub body: Vec<u8>,
}

impl Webhook {
    /// The event name from the signed body's `type`, e.g. `escrow.funded`
    /// (the service sends no event header).
    pub fn event(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    }

    /// The escrow id the delivery is about (`data.escrow_id`).
    pub fn escrow_id(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.pointer("/data/escrow_id")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// The server's view of one escrow.
#[derive(Clone, Debug)]
pub struct ServerEscrow {
    pub id: String,
    pub chain: String,
    /// The amount as the service answers it: the JSON number text
    /// JavaScript prints for the double it holds (`1.5`, `3.3e-7`).
    pub amount: String,
    /// What arrived (set on funding), same form as `amount`.
    pub deposited_amount: Option<String>,
    pub depositor_address: String,
    pub beneficiary_address: String,
    pub arbiter_address: Option<String>,
    pub escrow_address: String,
    pub status: String,
    pub release_token: String,
    pub beneficiary_token: String,
    pub metadata: Value,
    pub business_id: Option<String>,
    pub expires_in_hours: f64,
    /// Unix seconds reported as `expires_at`.
    pub expires_at: u64,
    pub dispute_reason: Option<String>,
    created: Instant,
    expiry: Instant,
    created_at: u64,
    funded_at: Option<u64>,
    released: Option<(Instant, u64)>,
    settled_at: Option<u64>,
    disputed_at: Option<u64>,
    refunded_at: Option<u64>,
}

/// Call counters, for "never released twice" style assertions.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Every HTTP request received.
    pub requests: u64,
    /// Escrows created.
    pub creates: u64,
    /// `GET /escrow/{id}`.
    pub gets: u64,
    /// `POST .../release`, any outcome.
    pub release_calls: u64,
    /// Releases that happened.
    pub releases: u64,
    /// `POST .../refund`, any outcome.
    pub refund_calls: u64,
    /// Refunds that happened.
    pub refunds: u64,
    /// `POST .../dispute`, any outcome.
    pub dispute_calls: u64,
}

/// One request as received (for assertions on headers).
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

struct State {
    escrows: BTreeMap<String, ServerEscrow>,
    next: u64,
    deliveries: Vec<Webhook>,
    counters: Counters,
    seen: Vec<SeenRequest>,
}

struct Inner {
    opts: CoinPayOptions,
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Inner {
    /// The state; a panic elsewhere while holding it leaves it usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running server; stops when dropped.
pub struct CoinPayServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl CoinPayServer {
    /// Starts listening on `127.0.0.1:0` in background threads.
    pub fn start(opts: CoinPayOptions) -> CoinPayServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener's address");
        let inner = Arc::new(Inner {
            opts,
            state: Mutex::new(State {
                escrows: BTreeMap::new(),
                next: 1,
                deliveries: Vec::new(),
                counters: Counters::default(),
                seen: Vec::new(),
            }),
            stop: AtomicBool::new(false),
        });
        crate::accept_loop(
            listener,
            Arc::clone(&inner),
            |s| s.stop.load(Ordering::SeqCst),
            serve,
        );
        CoinPayServer { inner, addr }
    }

    /// `http://127.0.0.1:PORT/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The `allowed_hosts` entry granting exactly this server:
    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Marks escrow `id` funded (as if the deposit arrived); false when it is
    /// unknown or not waiting for funds.
    pub fn fund(&self, id: &str) -> bool {
        let mut st = self.inner.state();
        fund_locked(&mut st, &self.inner.opts, id).is_ok()
    }

    /// Creates an escrow as any client of the service could, from a raw
    /// JSON body (not counted as a request); `(status, answer)`.
    pub fn create_raw(&self, body: &str) -> (u16, String) {
        let mut st = self.inner.state();
        create(&mut st, &self.inner.opts, body.as_bytes())
    }

    /// The server's view of escrow `id` (time-driven transitions applied).
    pub fn escrow(&self, id: &str) -> Option<ServerEscrow> {
        let mut st = self.inner.state();
        observe(&mut st, &self.inner.opts, id);
        st.escrows.get(id).cloned()
    }

    /// Every escrow id, in creation order.
    pub fn escrow_ids(&self) -> Vec<String> {
        let st = self.inner.state();
        let mut v: Vec<_> = st
            .escrows
            .values()
            .map(|e| (e.created, e.id.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Every webhook delivery so far, oldest first.
    pub fn deliveries(&self) -> Vec<Webhook> {
        self.inner.state().deliveries.clone()
    }

    /// Call counters.
    pub fn counters(&self) -> Counters {
        self.inner.state().counters.clone()
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.inner.state().seen.clone()
    }

    /// The options it runs with.
    pub fn options(&self) -> &CoinPayOptions {
        &self.inner.opts
    }
}

impl Drop for CoinPayServer {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// HMAC-SHA256 (RFC 2104), written out so the tests check the adapter's
/// implementation against an independent one.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..64 {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `X-CoinPay-Signature` value for `body` signed at unix time `t`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &msg))
    )
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Civil date and time of unix seconds `t`.
fn civil(t: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// RFC 3339 UTC of unix seconds `t`, as JavaScript's `toISOString`.
pub fn rfc3339(t: u64) -> String {
    let (y, m, d, h, mi, s) = civil(t);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}

/// A `timestamptz` column as PostgREST answers it (`...+00:00`).
pub fn pg_timestamp(t: u64) -> String {
    let (y, m, d, h, mi, s) = civil(t);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000+00:00")
}

/// `x` as JavaScript's `String(x)` / `JSON.stringify(x)` prints it (ECMA-262
/// Number::toString): the shortest digits that read back to `x`, plain
/// between `1e-6` and `1e21`, exponent form (`3.3e-7`, `1e+21`) outside.
pub fn js_number(x: f64) -> String {
    if !x.is_finite() {
        return "null".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // Rust's `{:e}` prints the shortest round-trip digits: `3.3e-7`, `1e0`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i64;
    let n = exp.parse::<i64>().unwrap_or(0) + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let e_sign = if e < 0 { '-' } else { '+' };
        if k == 1 {
            format!("{digits}e{e_sign}{}", e.abs())
        } else {
            format!("{}.{}e{e_sign}{}", &digits[..1], &digits[1..], e.abs())
        }
    };
    format!("{sign}{body}")
}

/// What the service stores for an incoming amount and then answers: the
/// request's number read as the nearest double (`JSON.parse`), written to
/// the `NUMERIC(30, 18)` column (rounded half away from zero to 18
/// decimals; more than 12 integer digits overflow), read back as a double
/// and printed by [`js_number`]. `raw` is the JSON number text.
pub fn stored_amount(raw: &str) -> Result<(f64, String), String> {
    let x: f64 = raw
        .parse()
        .map_err(|_| format!("`{raw}` is not a number"))?;
    if !x.is_finite() {
        return Err("numeric field overflow".into());
    }
    // The double's shortest digits (what supabase-js sends): m × 10^-scale.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut m: u128 = digits.parse().map_err(|_| "numeric field overflow")?;
    let exp: i64 = exp.parse().map_err(|_| "numeric field overflow")?;
    let mut scale = digits.len() as i64 - 1 - exp;
    if scale > 18 {
        let drop = scale - 18;
        m = if drop > 38 {
            0
        } else {
            let div = 10u128.pow(drop as u32);
            let (q, r) = (m / div, m % div);
            if 2 * r >= div {
                q + 1
            } else {
                q
            }
        };
        scale = 18;
    }
    let integer_digits = if scale >= 0 {
        let int = m / 10u128.pow(scale as u32);
        if int == 0 {
            0
        } else {
            int.ilog10() as i64 + 1
        }
    } else {
        m.checked_ilog10().map_or(0, |d| d as i64 + 1) - scale
    };
    if integer_digits > 12 {
        return Err("numeric field overflow".into());
    }
    let back: f64 = format!("{m}e{}", -scale)
        .parse()
        .map_err(|_| "numeric field overflow")?;
    let back = if x < 0.0 { -back } else { back };
    Ok((back, js_number(back)))
}

fn token(prefix: &str) -> String {
    let mut b = [0u8; 32];
    getrandom_fill(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// Randomness without another dependency: hash time, a counter and the
/// address of a fresh allocation.
fn getrandom_fill(out: &mut [u8]) {
    use std::sync::atomic::AtomicU64;
    static CTR: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_le_bytes(),
    );
    h.update(CTR.fetch_add(1, Ordering::SeqCst).to_le_bytes());
    let b = Box::new(0u8);
    h.update((&*b as *const u8 as usize).to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let d = h.finalize();
    for (i, o) in out.iter_mut().enumerate() {
        *o = d[i % 32] ^ (i as u8);
    }
}

/// A JSON object written field by field, numbers possibly raw (an amount
/// as JavaScript prints it, which `serde_json` cannot carry exactly).
struct Obj(Vec<String>);

impl Obj {
    fn new() -> Obj {
        Obj(Vec::new())
    }
    fn val(mut self, k: &str, v: impl Into<Value>) -> Obj {
        self.0.push(format!("{}:{}", Value::from(k), v.into()));
        self
    }
    fn raw(mut self, k: &str, json: &str) -> Obj {
        self.0.push(format!("{}:{json}", Value::from(k)));
        self
    }
    fn finish(self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

fn opt_ts(t: Option<u64>) -> Value {
    t.map_or(Value::Null, |t| Value::String(pg_timestamp(t)))
}

/// The escrow as the service answers it: the row without its tokens.
fn public_json(e: &ServerEscrow) -> Obj {
    Obj::new()
        .val("id", e.id.as_str())
        .val("depositor_address", e.depositor_address.as_str())
        .val("beneficiary_address", e.beneficiary_address.as_str())
        .val("arbiter_address", e.arbiter_address.clone())
        .val("escrow_address", e.escrow_address.as_str())
        .val("chain", e.chain.as_str())
        .raw("amount", &e.amount)
        .raw(
            "deposited_amount",
            e.deposited_amount.as_deref().unwrap_or("null"),
        )
        .val("status", e.status.as_str())
        .val("metadata", e.metadata.clone())
        .val("dispute_reason", e.dispute_reason.clone())
        .val("business_id", e.business_id.clone())
        .val("created_at", pg_timestamp(e.created_at))
        .val("funded_at", opt_ts(e.funded_at))
        .val("released_at", opt_ts(e.released.map(|(_, t)| t)))
        .val("settled_at", opt_ts(e.settled_at))
        .val("disputed_at", opt_ts(e.disputed_at))
        .val("refunded_at", opt_ts(e.refunded_at))
        .val("expires_at", pg_timestamp(e.expires_at))
}

/// Queues (and posts, when a URL is set) the webhook `event` of escrow
/// `escrow_id`: only for an escrow created with a `business_id`.
fn emit(st: &mut State, opts: &CoinPayOptions, event: &str, escrow_id: &str) {
    let Some(e) = st.escrows.get(escrow_id) else {
        return;
    };
    let Some(business) = e.business_id.clone() else {
        return; // anonymous escrow: the service sends nothing
    };
    let t = unix_now();
    let data = Obj::new()
        .val("escrow_id", e.id.as_str())
        .val("status", e.status.as_str())
        .val("chain", e.chain.as_str())
        .raw("amount", &e.amount)
        .val("escrow_address", e.escrow_address.as_str())
        .val("depositor_address", e.depositor_address.as_str())
        .val("beneficiary_address", e.beneficiary_address.as_str())
        .raw(
            "deposited_amount",
            e.deposited_amount.as_deref().unwrap_or("null"),
        )
        .val(
            "deposit_tx_hash",
            e.funded_at.map(|_| format!("0xdeposit{}", e.id)),
        )
        .val(
            "settlement_tx_hash",
            e.settled_at.map(|_| format!("0xsettle{}", e.id)),
        )
        .val("dispute_reason", e.dispute_reason.clone())
        .val("metadata", e.metadata.clone())
        .finish();
    let body = Obj::new()
        .val("id", format!("evt_esc_{escrow_id}_{t}"))
        .val("type", event)
        .raw("data", &data)
        .val("created_at", rfc3339(t))
        .val("business_id", business)
        .finish()
        .into_bytes();
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (
            "x-coinpay-signature".to_string(),
            sign(&opts.webhook_secret, t, &body),
        ),
        ("user-agent".to_string(), "CoinPay-Webhook/1.0".to_string()),
    ];
    let hook = Webhook { headers, body };
    if let Some(url) = &opts.webhook_url {
        let url = url.clone();
        let hook = hook.clone();
        std::thread::spawn(move || {
            let _ = post(&url, &hook);
        });
    }
    st.deliveries.push(hook);
}

fn post(url: &str, hook: &Webhook) -> std::io::Result<()> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(authority)?;
    let mut req = format!("POST {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n");
    for (k, v) in &hook.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", hook.body.len()));
    s.write_all(req.as_bytes())?;
    s.write_all(&hook.body)?;
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    Ok(())
}

/// Applies time-driven transitions to escrow `id`: the deposit arriving
/// (test knob), the cron expiring unfunded escrows, settlement.
fn observe(st: &mut State, opts: &CoinPayOptions, id: &str) {
    let now = Instant::now();
    let Some(e) = st.escrows.get_mut(id) else {
        return;
    };
    let fund_at = opts.auto_fund_after.map(|d| e.created + d);
    let mut events = Vec::new();
    if e.status == "created" {
        if let Some(f) = fund_at {
            if now >= f && f < e.expiry {
                e.status = "funded".into();
                e.funded_at = Some(unix_now());
                e.deposited_amount = Some(e.amount.clone());
                events.push("escrow.funded");
            }
        }
    }
    // expireStaleEscrows: `status = 'created'` only.
    if e.status == "created" && now >= e.expiry {
        e.status = "expired".into();
        events.push("escrow.expired");
    }
    if e.status == "released" {
        if let (Some(d), Some((r, _))) = (opts.settle_after, e.released) {
            if now >= r + d {
                e.status = "settled".into();
                e.settled_at = Some(unix_now());
                events.push("escrow.settled");
            }
        }
    }
    for ev in events {
        emit(st, opts, ev, id);
    }
}

fn fund_locked(st: &mut State, opts: &CoinPayOptions, id: &str) -> Result<(), (u16, String)> {
    observe(st, opts, id);
    let e = st
        .escrows
        .get_mut(id)
        .ok_or((404, "Escrow not found".to_string()))?;
    if e.status != "created" {
        return Err((400, "Failed to mark escrow as funded".into()));
    }
    e.status = "funded".into();
    e.funded_at = Some(unix_now());
    e.deposited_amount = Some(e.amount.clone());
    emit(st, opts, "escrow.funded", id);
    Ok(())
}

type Reply = (u16, String);

fn err(status: u16, msg: impl Into<String>) -> Reply {
    (status, json!({ "error": msg.into() }).to_string())
}

fn serve(inner: &Inner, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                let _ = reader.read_line(&mut end);
                break;
            }
            let mut chunk = vec![0; n.min(1 << 20)];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; len.min(1 << 20)];
        reader.read_exact(&mut body)?;
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let (status, text) = {
        let mut st = inner.state();
        st.counters.requests += 1;
        st.seen.push(SeenRequest {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
        route(&mut st, &inner.opts, &method, &path, &headers, &body)
    };
    let reason = match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}

fn route(
    st: &mut State,
    opts: &CoinPayOptions,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    // Escrow ids are Postgres `uuid`s: any letter case finds the same row,
    // which answers with its canonical (lowercase) id.
    let canonical: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|p| {
            if is_uuid(p) {
                p.to_ascii_lowercase()
            } else {
                p.to_string()
            }
        })
        .collect();
    let segs: Vec<&str> = canonical.iter().map(String::as_str).collect();
    let segs: Vec<&str> = match segs.first() {
        Some(&"api") => segs[1..].to_vec(),
        _ => segs,
    };
    // test hook, no auth
    if let ["__test", "escrow", id, "fund"] = segs.as_slice() {
        if method != "POST" {
            return err(405, "method not allowed");
        }
        return match fund_locked(st, opts, id) {
            Ok(()) => match st.escrows.get(*id) {
                Some(e) => (200, public_json(e).finish()),
                None => err(404, "Escrow not found"),
            },
            Err((s, m)) => err(s, m),
        };
    }
    if let Some(key) = &opts.api_key {
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        if auth != Some(&format!("Bearer {key}")) {
            return err(401, "Invalid credentials");
        }
    }
    match (method, segs.as_slice()) {
        ("POST", ["escrow"]) => create(st, opts, body),
        ("GET", ["escrow", id]) => {
            st.counters.gets += 1;
            observe(st, opts, id);
            match st.escrows.get(*id) {
                Some(e) => (200, public_json(e).finish()),
                None => err(404, "Escrow not found"),
            }
        }
        ("POST", ["escrow", id, action]) => act(st, opts, id, action, body),
        _ => err(404, format!("no route {method} {path}")),
    }
}

/// The raw text of the top-level `"amount"` value in `body`: a JSON number
/// or string, taken verbatim so no float ever touches it.
pub fn raw_amount(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    match v.get("amount")? {
        Value::String(s) => return Some(s.clone()),
        Value::Number(_) => {}
        _ => return None,
    }
    // Find `"amount"` as a top-level key: scan with depth tracking.
    let b = body.as_bytes();
    let (mut i, mut depth, mut in_str) = (0, 0i32, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b'"' => {
                if depth == 1 && body[i..].starts_with("\"amount\"") {
                    let rest = body[i + 8..].trim_start();
                    let rest = rest.strip_prefix(':')?.trim_start();
                    let end = rest
                        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                        .unwrap_or(rest.len());
                    return Some(rest[..end].to_string());
                }
                in_str = true;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `s` is a UUID as the service's schema checks it.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8usize, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// JavaScript's `s.length`: UTF-16 code units.
fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// An address as the schema takes it: a string of at least 10 characters.
fn address_ok(a: Option<&str>) -> bool {
    a.is_some_and(|a| js_len(a) >= 10)
}

/// The service's `createEscrowSchema`, first failure first (its order).
fn check_create(v: &Value, text: &str, opts: &CoinPayOptions) -> Result<(f64, String), String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    match v.get("chain") {
        None => return Err("Required".into()),
        Some(Value::String(c)) if CHAINS.contains(&c.as_str()) => {}
        Some(other) => {
            return Err(format!(
                "Invalid enum value. Expected {}, received {other}",
                CHAINS
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ))
        }
    }
    let amount = match v.get("amount") {
        None => return Err("Required".into()),
        Some(Value::Number(_)) => {
            let raw = raw_amount(text).ok_or("Required")?;
            let x: f64 = raw.parse().map_err(|_| "Expected number, received nan")?;
            if x.is_nan() || x <= 0.0 {
                return Err("Amount must be greater than zero".into());
            }
            raw
        }
        Some(Value::String(_)) => return Err("Expected number, received string".into()),
        Some(_) => return Err("Expected number".into()),
    };
    if !address_ok(s("depositor_address")) {
        return Err("Invalid depositor address".into());
    }
    if !address_ok(s("beneficiary_address")) {
        return Err("Invalid beneficiary address".into());
    }
    if let Some(a) = v.get("arbiter_address") {
        if !address_ok(a.as_str()) {
            return Err("String must contain at least 10 character(s)".into());
        }
    }
    if let Some(m) = v.get("metadata") {
        if !m.is_object() {
            return Err("Expected object".into());
        }
    }
    if let Some(b) = v.get("business_id") {
        if !b.as_str().is_some_and(is_uuid) {
            return Err("Invalid uuid".into());
        }
    }
    if let Some(h) = v.get("expires_in_hours") {
        match h.as_f64() {
            Some(h) if h > 0.0 && h <= MAX_EXPIRES_IN_HOURS => {}
            Some(h) if h > MAX_EXPIRES_IN_HOURS => {
                return Err("Number must be less than or equal to 720".into())
            }
            Some(_) => return Err("Number must be greater than 0".into()),
            None => return Err("Expected number".into()),
        }
    }
    if s("depositor_address") == s("beneficiary_address") {
        return Err("Depositor and beneficiary must be different addresses".into());
    }
    // The insert: the amount column first, then the business foreign key.
    let stored = stored_amount(&amount).map_err(|e| format!("Failed to create escrow: {e}"))?;
    if let Some(b) = s("business_id") {
        if !b.eq_ignore_ascii_case(&opts.business_id) {
            return Err(
                "Failed to create escrow: insert or update on table \"escrows\" \
                        violates foreign key constraint \"escrows_business_id_fkey\""
                    .into(),
            );
        }
    }
    Ok(stored)
}

fn create(st: &mut State, opts: &CoinPayOptions, body: &[u8]) -> Reply {
    // `request.json()` throwing lands in the route's catch: 500.
    let Ok(text) = std::str::from_utf8(body) else {
        return err(500, "Internal server error");
    };
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return err(500, "Internal server error");
    };
    let (_, amount) = match check_create(&v, text, opts) {
        Ok(a) => a,
        Err(m) => return err(400, m),
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let hours = v
        .get("expires_in_hours")
        .and_then(Value::as_f64)
        .unwrap_or(24.0);
    // A UUID, as the service's `escrows.id` column is.
    let id = format!(
        "e5c0{:04x}-0000-4000-8000-{:012x}",
        st.next & 0xffff,
        st.next
    );
    st.next += 1;
    let now = Instant::now();
    let lifetime = opts.hour.mul_f64(hours);
    let e = ServerEscrow {
        id: id.clone(),
        chain: s("chain").unwrap_or_default(),
        amount,
        deposited_amount: None,
        depositor_address: s("depositor_address").unwrap_or_default(),
        beneficiary_address: s("beneficiary_address").unwrap_or_default(),
        arbiter_address: s("arbiter_address"),
        escrow_address: format!("addr_{}", &token("")[..40]),
        status: "created".into(),
        release_token: token("esc_"),
        beneficiary_token: token("esc_"),
        metadata: v
            .get("metadata")
            .cloned()
            .unwrap_or(Value::Object(Map::new())),
        business_id: s("business_id").map(|b| b.to_ascii_lowercase()),
        expires_in_hours: hours,
        expires_at: unix_now() + lifetime.as_secs_f64().ceil() as u64,
        dispute_reason: None,
        created: now,
        expiry: now + lifetime,
        created_at: unix_now(),
        funded_at: None,
        released: None,
        settled_at: None,
        disputed_at: None,
        refunded_at: None,
    };
    let out = public_json(&e)
        .val("release_token", e.release_token.as_str())
        .val("beneficiary_token", e.beneficiary_token.as_str())
        .finish();
    st.escrows.insert(id.clone(), e);
    st.counters.creates += 1;
    emit(st, opts, "escrow.created", &id);
    (201, out)
}

fn act(st: &mut State, opts: &CoinPayOptions, id: &str, action: &str, body: &[u8]) -> Reply {
    match action {
        "release" => st.counters.release_calls += 1,
        "refund" => st.counters.refund_calls += 1,
        "dispute" => st.counters.dispute_calls += 1,
        _ => return err(404, format!("no action `{action}`")),
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return err(500, "Internal server error");
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|t| !t.is_empty());
    // The route's own checks come before the escrow is looked up.
    let token = match action {
        "dispute" => {
            let Some(t) = s("release_token")
                .or_else(|| s("beneficiary_token"))
                .or_else(|| s("token"))
            else {
                return err(
                    400,
                    "Authentication token is required (release_token or beneficiary_token)",
                );
            };
            if s("reason").is_none() {
                return err(400, "Dispute reason is required");
            }
            t
        }
        _ => match s("release_token") {
            Some(t) => t,
            None => return err(400, "release_token is required"),
        },
    };
    observe(st, opts, id);
    let Some(e) = st.escrows.get_mut(id) else {
        return err(404, "Escrow not found");
    };
    let role = if token == e.release_token {
        Some("depositor")
    } else if token == e.beneficiary_token {
        Some("beneficiary")
    } else {
        None
    };
    let event = match action {
        "release" => {
            if role != Some("depositor") {
                return err(403, "Unauthorized: invalid release token");
            }
            if e.status != "funded" && e.status != "disputed" {
                return err(
                    400,
                    format!("Cannot release escrow in status: {}", e.status),
                );
            }
            e.status = "released".into();
            e.released = Some((Instant::now(), unix_now()));
            st.counters.releases += 1;
            "escrow.released"
        }
        "refund" => {
            if role != Some("depositor") {
                return err(403, "Unauthorized: invalid release token");
            }
            if e.status != "funded" {
                return err(400, format!("Cannot refund escrow in status: {}", e.status));
            }
            e.status = "refunded".into();
            e.refunded_at = Some(unix_now());
            st.counters.refunds += 1;
            "escrow.refunded"
        }
        _ => {
            if role.is_none() {
                return err(403, "Unauthorized");
            }
            if e.status != "funded" {
                return err(
                    400,
                    format!("Cannot dispute escrow in status: {}", e.status),
                );
            }
            let reason = s("reason").unwrap_or_default();
            if js_len(reason.trim()) < 10 {
                return err(400, "Dispute reason must be at least 10 characters");
            }
            e.status = "disputed".into();
            e.disputed_at = Some(unix_now());
            e.dispute_reason = Some(reason.to_string());
            "escrow.disputed"
        }
    };
    emit(st, opts, event, id);
    if event == "escrow.released" && opts.settle_after.is_none() {
        if let Some(e) = st.escrows.get_mut(id) {
            e.status = "settled".into();
            e.settled_at = Some(unix_now());
        }
        emit(st, opts, "escrow.settled", id);
    }
    match st.escrows.get(id) {
        Some(e) => (200, public_json(e).finish()),
        None => err(404, "Escrow not found"),
    }
}
