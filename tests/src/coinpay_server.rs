//! A local CoinPay-compatible escrow server for tests.
//!
//! It follows CoinPay Portal's documented token-based escrow API
//! (<https://coinpayportal.com/docs>, the escrow section of
//! <https://coinpayportal.com/skill.md> and the integration prompts
//! <https://coinpayportal.com/docs/prompts/ESCROW> and
//! <https://coinpayportal.com/docs/prompts/WEBHOOKS>):
//!
//! * `POST /api/escrow` with `{chain, amount, depositor_address,
//!   beneficiary_address, arbiter_address?, metadata, expires_in_hours}`;
//!   `amount` is a JSON number of whole units of `chain`. Answers `201` with
//!   `{id, escrow_address, status: "created", release_token,
//!   beneficiary_token, expires_at (RFC 3339), ...}`.
//! * `GET /api/escrow/{id}`; `POST /api/escrow/{id}/release` and
//!   `/refund` with `{release_token}`; `POST /api/escrow/{id}/dispute` with
//!   `{token, reason}` (the release or the beneficiary token).
//! * Statuses `created → funded → released → settled`, or `refunded`,
//!   `disputed`, `expired` (created/funded escrows past `expires_at`, applied
//!   when the escrow is next observed).
//! * Webhooks `escrow.created|funded|released|settled|refunded|disputed|expired`
//!   as `{id, type, created_at, data: {escrow}}`, signed
//!   `X-CoinPay-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//!   with `X-CoinPay-Event` and `X-CoinPay-Delivery`.
//! * Errors are JSON `{"error": "..."}`: 400 bad body or chain/amount, 401
//!   missing/wrong `Authorization: Bearer` (only when [`CoinPayOptions::api_key`]
//!   is set), 403 wrong token, 404 unknown escrow, 409 wrong state.
//!
//! What is not documented publicly (exact error codes per case, the webhook
//! body shape beyond the event names) is this module's choice. Test-only
//! extras: `POST /api/__test/escrow/{id}/fund` (also without `/api`),
//! [`CoinPayServer::fund`], and the clock knobs in [`CoinPayOptions`].
//!
//! Plain `std::net` + one thread per connection; HTTP/1.1 with
//! `Content-Length` or chunked request bodies, `Connection: close` answers.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Chains and their decimals, as CoinPay names them.
pub const CHAINS: &[(&str, u32)] = &[
    ("BTC", 8),
    ("ETH", 18),
    ("SOL", 9),
    ("POL", 18),
    ("BCH", 8),
    ("USDC_ETH", 6),
    ("USDC_POL", 6),
    ("USDC_SOL", 6),
];

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct CoinPayOptions {
    /// Signing secret of webhook deliveries.
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
    /// The event name, e.g. `escrow.funded`.
    pub fn event(&self) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == "x-coinpay-event")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// The server's view of one escrow.
#[derive(Clone, Debug)]
pub struct ServerEscrow {
    pub id: String,
    pub chain: String,
    /// The amount exactly as the client sent it (decimal, whole units).
    pub amount: String,
    pub depositor_address: String,
    pub beneficiary_address: String,
    pub arbiter_address: Option<String>,
    pub escrow_address: String,
    pub status: String,
    pub release_token: String,
    pub beneficiary_token: String,
    pub metadata: Value,
    pub expires_in_hours: u64,
    /// Unix seconds reported as `expires_at`.
    pub expires_at: u64,
    pub dispute_reason: Option<String>,
    created: Instant,
    released: Option<Instant>,
}

/// Call counters, for "never released twice" style assertions.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Every HTTP request received.
    pub requests: u64,
    /// `POST /escrow` that created an escrow.
    pub creates: u64,
    /// `GET /escrow/{id}`.
    pub gets: u64,
    /// `POST .../release`, any outcome.
    pub release_calls: u64,
    /// Releases that moved funded → released.
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

/// A running server; stops when dropped.
pub struct CoinPayServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl CoinPayServer {
    /// Starts listening on `127.0.0.1:0` in background threads.
    pub fn start(opts: CoinPayOptions) -> CoinPayServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
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
        let server = Arc::clone(&inner);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if server.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let server = Arc::clone(&server);
                std::thread::spawn(move || {
                    let _ = serve(&server, conn);
                });
            }
        });
        CoinPayServer { inner, addr }
    }

    /// `http://127.0.0.1:PORT/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Marks escrow `id` funded (as if the deposit arrived); false when it is
    /// unknown or not waiting for funds.
    pub fn fund(&self, id: &str) -> bool {
        let mut st = self.inner.state.lock().unwrap();
        let opts = &self.inner.opts;
        fund_locked(&mut st, opts, id).is_ok()
    }

    /// The server's view of escrow `id` (time-driven transitions applied).
    pub fn escrow(&self, id: &str) -> Option<ServerEscrow> {
        let mut st = self.inner.state.lock().unwrap();
        observe(&mut st, &self.inner.opts, id);
        st.escrows.get(id).cloned()
    }

    /// Every escrow id, in creation order.
    pub fn escrow_ids(&self) -> Vec<String> {
        let st = self.inner.state.lock().unwrap();
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
        self.inner.state.lock().unwrap().deliveries.clone()
    }

    /// Call counters.
    pub fn counters(&self) -> Counters {
        self.inner.state.lock().unwrap().counters.clone()
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.inner.state.lock().unwrap().seen.clone()
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
        .unwrap()
        .as_secs()
}

/// RFC 3339 UTC of unix seconds `t`.
pub fn rfc3339(t: u64) -> String {
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
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn token(prefix: &str) -> String {
    let mut b = [0u8; 24];
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
            .unwrap()
            .as_nanos()
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

fn public_json(e: &ServerEscrow) -> Value {
    json!({
        "id": e.id,
        "chain": e.chain,
        "amount": e.amount,
        "depositor_address": e.depositor_address,
        "beneficiary_address": e.beneficiary_address,
        "arbiter_address": e.arbiter_address,
        "escrow_address": e.escrow_address,
        "status": e.status,
        "metadata": e.metadata,
        "expires_at": rfc3339(e.expires_at),
    })
}

/// Serializes `v` with its `"amount"` string emitted as a raw JSON number.
fn with_numeric_amount(v: &Value) -> String {
    let amount = v
        .get("amount")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("amount");
    }
    let rest = v.to_string();
    if rest == "{}" {
        format!("{{\"amount\":{amount}}}")
    } else {
        format!("{{\"amount\":{amount},{}", &rest[1..])
    }
}

fn emit(st: &mut State, opts: &CoinPayOptions, event: &str, escrow_id: &str) {
    let Some(e) = st.escrows.get(escrow_id) else {
        return;
    };
    let n = st.deliveries.len() + 1;
    let data = with_numeric_amount(&public_json(e));
    let body = format!(
        "{{\"id\":\"evt_{n}\",\"type\":\"{event}\",\"created_at\":\"{}\",\"data\":{data}}}",
        rfc3339(unix_now())
    )
    .into_bytes();
    let t = unix_now();
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-coinpay-event".to_string(), event.to_string()),
        ("x-coinpay-delivery".to_string(), format!("dlv_{n}")),
        (
            "x-coinpay-signature".to_string(),
            sign(&opts.webhook_secret, t, &body),
        ),
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

/// Applies time-driven transitions to escrow `id`.
fn observe(st: &mut State, opts: &CoinPayOptions, id: &str) {
    let now = Instant::now();
    let Some(e) = st.escrows.get(id) else { return };
    let expiry = e.created + opts.hour * (e.expires_in_hours as u32);
    let fund_at = opts.auto_fund_after.map(|d| e.created + d);
    let mut events = Vec::new();
    let e = st.escrows.get_mut(id).unwrap();
    if e.status == "created" {
        if let Some(f) = fund_at {
            if now >= f && f < expiry {
                e.status = "funded".into();
                events.push("escrow.funded");
            }
        }
    }
    if (e.status == "created" || e.status == "funded") && now >= expiry {
        e.status = "expired".into();
        events.push("escrow.expired");
    }
    if e.status == "released" {
        if let (Some(d), Some(r)) = (opts.settle_after, e.released) {
            if now >= r + d {
                e.status = "settled".into();
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
        .ok_or((404, format!("escrow {id} not found")))?;
    if e.status != "created" {
        return Err((409, format!("escrow is {}, not awaiting funds", e.status)));
    }
    e.status = "funded".into();
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
            let mut chunk = vec![0; n];
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
        let mut st = inner.state.lock().unwrap();
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
        409 => "Conflict",
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
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
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
            Ok(()) => (200, with_numeric_amount(&public_json(&st.escrows[*id]))),
            Err((s, m)) => err(s, m),
        };
    }
    if let Some(key) = &opts.api_key {
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        if auth != Some(&format!("Bearer {key}")) {
            return err(401, "missing or invalid API key");
        }
    }
    match (method, segs.as_slice()) {
        ("POST", ["escrow"]) => create(st, opts, body),
        ("GET", ["escrow", id]) => {
            st.counters.gets += 1;
            observe(st, opts, id);
            match st.escrows.get(*id) {
                Some(e) => (200, with_numeric_amount(&public_json(e))),
                None => err(404, format!("escrow {id} not found")),
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

/// Checks a decimal amount for `decimals`: positive, plain digits, at most
/// `decimals` fraction digits.
pub fn valid_amount(s: &str, decimals: u32) -> Result<(), String> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return Err(format!("amount `{s}` is not a plain decimal number"));
    }
    if frac.len() > decimals as usize {
        return Err(format!(
            "amount `{s}` has more than {decimals} decimal places"
        ));
    }
    if int.bytes().chain(frac.bytes()).all(|c| c == b'0') {
        return Err("amount must be greater than zero".into());
    }
    Ok(())
}

fn create(st: &mut State, opts: &CoinPayOptions, body: &[u8]) -> Reply {
    let Ok(text) = std::str::from_utf8(body) else {
        return err(400, "body is not UTF-8");
    };
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return err(400, "body is not JSON");
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(chain) = s("chain") else {
        return err(400, "chain is required");
    };
    let Some((_, decimals)) = CHAINS.iter().find(|(c, _)| *c == chain) else {
        return err(400, format!("unsupported chain `{chain}`"));
    };
    let Some(amount) = raw_amount(text) else {
        return err(400, "amount is required");
    };
    if let Err(m) = valid_amount(&amount, *decimals) {
        return err(400, m);
    }
    let (Some(depositor), Some(beneficiary)) = (s("depositor_address"), s("beneficiary_address"))
    else {
        return err(
            400,
            "depositor_address and beneficiary_address are required",
        );
    };
    let hours = match v.get("expires_in_hours") {
        None => 24,
        Some(h) => match h.as_u64() {
            Some(h) if (1..=24 * 365).contains(&h) => h,
            _ => return err(400, "expires_in_hours must be a positive integer"),
        },
    };
    let metadata = v
        .get("metadata")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    if !metadata.is_object() {
        return err(400, "metadata must be an object");
    }
    let id = format!("esc_{:06}", st.next);
    st.next += 1;
    let hour_secs = opts.hour.as_secs().max(1);
    let e = ServerEscrow {
        id: id.clone(),
        chain,
        amount,
        depositor_address: depositor,
        beneficiary_address: beneficiary,
        arbiter_address: s("arbiter_address"),
        escrow_address: format!("addr_{}", &token("")[..32]),
        status: "created".into(),
        release_token: token("rel_"),
        beneficiary_token: token("ben_"),
        metadata,
        expires_in_hours: hours,
        expires_at: unix_now() + hours * hour_secs,
        dispute_reason: None,
        created: Instant::now(),
        released: None,
    };
    let mut out = public_json(&e);
    out["release_token"] = Value::String(e.release_token.clone());
    out["beneficiary_token"] = Value::String(e.beneficiary_token.clone());
    out["created_at"] = Value::String(rfc3339(unix_now()));
    st.escrows.insert(id.clone(), e);
    st.counters.creates += 1;
    emit(st, opts, "escrow.created", &id);
    (201, with_numeric_amount(&out))
}

fn act(st: &mut State, opts: &CoinPayOptions, id: &str, action: &str, body: &[u8]) -> Reply {
    match action {
        "release" => st.counters.release_calls += 1,
        "refund" => st.counters.refund_calls += 1,
        "dispute" => st.counters.dispute_calls += 1,
        _ => return err(404, format!("no action `{action}`")),
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return err(400, "body is not JSON");
    };
    observe(st, opts, id);
    let Some(e) = st.escrows.get_mut(id) else {
        return err(404, format!("escrow {id} not found"));
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let (event, ok) = match action {
        "release" | "refund" => {
            let Some(t) = s("release_token") else {
                return err(400, "release_token is required");
            };
            if t != e.release_token {
                return err(403, "invalid release_token");
            }
            if action == "release" {
                if e.status != "funded" {
                    return err(
                        409,
                        format!("cannot release an escrow that is {}", e.status),
                    );
                }
                e.status = "released".into();
                e.released = Some(Instant::now());
                st.counters.releases += 1;
                ("escrow.released", true)
            } else {
                if e.status != "created" && e.status != "funded" {
                    return err(409, format!("cannot refund an escrow that is {}", e.status));
                }
                e.status = "refunded".into();
                st.counters.refunds += 1;
                ("escrow.refunded", true)
            }
        }
        _ => {
            let Some(t) = s("token") else {
                return err(400, "token is required");
            };
            let Some(reason) = s("reason").filter(|r| !r.trim().is_empty()) else {
                return err(400, "reason is required");
            };
            if t != e.release_token && t != e.beneficiary_token {
                return err(403, "invalid token");
            }
            if !matches!(e.status.as_str(), "created" | "funded" | "released") {
                return err(
                    409,
                    format!("cannot dispute an escrow that is {}", e.status),
                );
            }
            e.status = "disputed".into();
            e.dispute_reason = Some(reason.to_string());
            ("escrow.disputed", true)
        }
    };
    debug_assert!(ok);
    emit(st, opts, event, id);
    if event == "escrow.released" && opts.settle_after.is_none() {
        if let Some(e) = st.escrows.get_mut(id) {
            e.status = "settled".into();
        }
        emit(st, opts, "escrow.settled", id);
    }
    (200, with_numeric_amount(&public_json(&st.escrows[id])))
}
