//! A local Supabase REST API (the Kong gateway in front of PostgREST 12)
//! over a real PostgreSQL database, as strict as the real one.
//!
//! Nothing here decides what the database allows: every request runs in
//! its own transaction on a real connection, as the role PostgREST would
//! take, with the settings PostgREST sets, and the database's own errors
//! come back with the status PostgREST maps them to. What this file models
//! is the HTTP layer around it:
//!
//! * **Gateway** (Kong's `key-auth` with `hide_credentials`): the `apikey`
//!   header (or `?apikey=`) must be the project's anon or service key
//!   ([`Responder::anon_key`], [`Responder::service_key`]), else `401`
//!   `{"message":"No API key found in request",...}` or `{"message":"Invalid
//!   API key",...}`; it is removed before PostgREST sees the request, and
//!   `x-forwarded-for` (the client's value with the peer appended),
//!   `x-real-ip`, `x-forwarded-proto|host|port`, `x-consumer-username`
//!   are added. Only `/rest/v1/...` is routed (`404 no Route matched`).
//! * **Authentication** (PostgREST): `Authorization: Bearer <jwt>`, HS256
//!   with the project's secret; a bad signature or shape is `401 PGRST301`,
//!   `exp`/`nbf`/`iat` out of range `401 PGRST303` (no clock skew allowed);
//!   the `role` claim is the database role (`anon` without a token or
//!   without the claim). The role must be one `authenticator` is a member of
//!   (else `permission denied to set role`, 42501), as on Supabase, even
//!   though the responder itself connects as the superuser.
//! * **Transaction**: `BEGIN ISOLATION LEVEL READ COMMITTED`, `READ ONLY`
//!   for `GET`/`HEAD` and for `POST /rpc` of a stable or immutable
//!   function; `search_path` `"public", "extensions"`; the role's own
//!   `statement_timeout` (`ALTER ROLE ... SET`, as PostgREST applies it);
//!   `set_config('request.jwt.claims' | 'request.method' | 'request.path' |
//!   'request.headers' | 'request.cookies', ..., true)` and
//!   `set_config('role', <role>, true)`. Commit on success, roll back on
//!   any error.
//! * **Reads**: `GET|HEAD /rest/v1/<table or view>` with `select=` (column
//!   names or `*`), `order=col[.asc|.desc][.nullsfirst|.nullslast],...`,
//!   `limit=`, `offset=`, and filters `col=[not.]eq|neq|gt|gte|lt|lte|like|
//!   ilike.<value>` or `col=[not.]is.null|true|false|unknown`. Values go to
//!   the database as untyped text parameters (PostgREST's `unknown`
//!   literals: the column's type parses them). `200` with a JSON array and
//!   `Content-Range: 0-(n-1)/*` (`*/*` when empty).
//! * **Calls**: `POST /rest/v1/rpc/<fn>` with a JSON object of named
//!   arguments (also `GET` with the arguments in the query, read-only);
//!   the function is looked up first (`404 PGRST202` when no function of
//!   that name takes exactly those arguments, `300 PGRST203` when several
//!   do). Scalars come back as their JSON, sets as an array, `void` as
//!   `204`.
//! * **Writes**: `POST /rest/v1/<table>` (an object or an array of objects
//!   with the same keys: `201`), `PATCH` (an object: `204`) and `DELETE`
//!   (`204`) with filters, `Prefer: return=representation` for the rows
//!   (`201`/`200`). Unknown columns in a body are `400 PGRST204`. `PATCH` and
//!   `DELETE` without a filter fail with `21000` (Supabase loads
//!   `safeupdate` for the API's roles).
//! * **Errors**: `{"code","details","hint","message"}`; SQLSTATEs map to
//!   statuses as PostgREST maps them ([`status_of`]).
//! * **Bounds**: request body at most [`MAX_BODY`] (`413`), header section
//!   at most [`MAX_HEADER_SECTION`] (`431`), reads time out after
//!   [`READ_TIMEOUT`]. Bodies with `Content-Length` or chunked;
//!   `Connection: close` answers.
//!
//! Not modelled (answered `400 PGRST100`, never silently ignored):
//! embedded resources, aliases, casts and JSON paths in `select`, `or=`/
//! `and=`, `in.` and the other operators, `Range` headers, `PUT`
//! (`405`), upserts (`on_conflict`, `Prefer: resolution=`), counts
//! (`Prefer: count=`), CSV, a single unnamed `json` argument, OpenAPI.
//!
//! Test knobs: [`Responder::set_failing`] (every request answered with a
//! gateway error status), [`Responder::set_dropping`] (connections closed
//! unanswered), [`Responder::set_delay`], [`Responder::set_client_ip`] (the
//! address the gateway reports), and the request log.

use postgres::types::{Format, IsNull, ToSql, Type};
use postgres::{Client, IsolationLevel, NoTls};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest request body accepted (`413` above).
pub const MAX_BODY: usize = 1 << 20;
/// The largest request line plus headers accepted (`431` above).
pub const MAX_HEADER_SECTION: usize = 16 << 10;
/// How long a connection may be silent while a request is read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Supabase's local development JWT secret (`supabase start`).
pub const DEV_JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

/// One request as received, and what it was answered.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered; 0 when the connection was closed unanswered.
    pub status: u16,
}

#[derive(Default)]
struct Knobs {
    failing: Option<u16>,
    dropping: bool,
    delay: Option<Duration>,
    client_ip: Option<IpAddr>,
}

struct Inner {
    db_url: String,
    secret: String,
    anon_key: String,
    service_key: String,
    knobs: Mutex<Knobs>,
    seen: Mutex<Vec<SeenRequest>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running responder on `127.0.0.1`; stops when dropped.
pub struct Responder {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl Responder {
    /// Serves the database at `db_url` (a `postgres` crate connection
    /// string for a superuser), signing its keys with `jwt_secret`.
    pub fn start(db_url: &str, jwt_secret: &str) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener's address");
        let inner = Arc::new(Inner {
            db_url: db_url.to_string(),
            secret: jwt_secret.to_string(),
            anon_key: jwt(jwt_secret, "anon"),
            service_key: jwt(jwt_secret, "service_role"),
            knobs: Mutex::new(Knobs::default()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        crate::accept_loop(
            listener,
            Arc::clone(&inner),
            |s| s.stop.load(Ordering::SeqCst),
            serve,
        );
        Responder { inner, addr }
    }

    /// The project URL, `http://127.0.0.1:PORT` (the REST API is under
    /// `/rest/v1/`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The project's anon key (a JWT with `role: anon`).
    pub fn anon_key(&self) -> String {
        self.inner.anon_key.clone()
    }

    /// The project's service key (a JWT with `role: service_role`).
    pub fn service_key(&self) -> String {
        self.inner.service_key.clone()
    }

    /// The database it serves.
    pub fn db_url(&self) -> String {
        self.inner.db_url.clone()
    }

    /// `Some(status)`: every request from now on is answered `status` by
    /// the gateway (the database is not touched); `None`: served again.
    pub fn set_failing(&self, status: Option<u16>) {
        lock(&self.inner.knobs).failing = status;
    }

    /// `true`: every connection from now on is closed without an answer.
    pub fn set_dropping(&self, drop: bool) {
        lock(&self.inner.knobs).dropping = drop;
    }

    /// Waits this long before handling each request.
    pub fn set_delay(&self, delay: Option<Duration>) {
        lock(&self.inner.knobs).delay = delay;
    }

    /// The client address the gateway reports upstream (`x-real-ip`, last
    /// of `x-forwarded-for`); `None`: the connection's peer.
    pub fn set_client_ip(&self, ip: Option<IpAddr>) {
        lock(&self.inner.knobs).client_ip = ip;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.inner.seen).clone()
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        lock(&self.inner.seen).len()
    }

    /// A request with the anon key as `apikey` and bearer token; `path`
    /// starts with `/rest/v1/`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Vec<(String, String)>, String) {
        self.call_as(&self.anon_key(), method, path, body)
    }

    /// A request with `key` as `apikey` and bearer token.
    pub fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Vec<(String, String)>, String) {
        let bearer = format!("Bearer {key}");
        let mut headers = vec![("apikey", key), ("Authorization", bearer.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        request(method, &format!("{}{path}", self.url()), &headers, body)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

// ---------------------------------------------------------------------------
// JWTs

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 7515 §2).
pub fn b64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..chunk.len() + 1 {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64url without padding; `None` on any other character, a
/// dangling symbol or non-zero trailing bits.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = B64URL.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6 && acc == 0).then_some(out)
}

/// HMAC-SHA256 (RFC 2104); the one the CoinPay fake uses.
pub use crate::coinpay_server::hmac_sha256;

/// An HS256 JWT over the payload text `claims` exactly as given, with the
/// header `{"alg":"HS256","typ":"JWT"}`.
pub fn jwt_claims(secret: &str, claims: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(claims.as_bytes())
    );
    let mac = hmac_sha256(secret.as_bytes(), signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&mac))
}

/// A key like a Supabase project's: `{"iss":"supabase","ref":"local",
/// "role":<role>,"iat":now,"exp":now + 10 years}`, HS256 with `secret`.
pub fn jwt(secret: &str, role: &str) -> String {
    let iat = unix_now();
    let exp = iat + 10 * 365 * 86_400;
    let role = Value::from(role).to_string();
    jwt_claims(
        secret,
        &format!(r#"{{"iss":"supabase","ref":"local","role":{role},"iat":{iat},"exp":{exp}}}"#),
    )
}

/// PostgREST's check of a bearer token: the claims, or `(code, message)`.
fn verify_jwt(secret: &str, token: &str) -> Result<Map<String, Value>, (&'static str, String)> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err((
            "PGRST301",
            format!("Expected 3 parts in JWT; got {}", parts.len()),
        ));
    }
    let invalid = || ("PGRST301", "JWSError JWSInvalidSignature".to_string());
    let header: Value = b64url_decode(parts[0])
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(invalid)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(invalid());
    }
    let sig = b64url_decode(parts[2]).ok_or_else(invalid)?;
    let mac = hmac_sha256(
        secret.as_bytes(),
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
    );
    let diff = sig.len() ^ mac.len()
        | sig
            .iter()
            .zip(mac.iter())
            .fold(0usize, |d, (a, b)| d | usize::from(a ^ b));
    if diff != 0 {
        return Err(invalid());
    }
    let claims = b64url_decode(parts[1])
        .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
        .ok_or((
            "PGRST301",
            "JWSError (JSONDecodeError \"invalid claims\")".to_string(),
        ))?;
    let Value::Object(claims) = claims else {
        return Err(("PGRST303", "Parsing claims failed".to_string()));
    };
    let now = unix_now() as f64;
    let num = |k: &str| {
        claims.get(k).map(|v| {
            v.as_f64()
                .ok_or(("PGRST303", format!("The JWT '{k}' claim must be a number")))
        })
    };
    if let Some(exp) = num("exp") {
        if now >= exp? {
            return Err(("PGRST303", "JWT expired".into()));
        }
    }
    if let Some(nbf) = num("nbf") {
        if now < nbf? {
            return Err(("PGRST303", "JWT not yet valid".into()));
        }
    }
    if let Some(iat) = num("iat") {
        if now < iat? {
            return Err(("PGRST303", "JWT issued at future".into()));
        }
    }
    Ok(claims)
}

// ---------------------------------------------------------------------------
// A blocking HTTP client for tests.

/// An HTTP answer: status, headers (lower-case names), body.
pub type Answer = (u16, Vec<(String, String)>, String);

/// One HTTP/1.1 request to `url` (`http://host:port/path?query`) with
/// `headers` and an optional body (sent with `Content-Length`);
/// `(status, headers with lower-case names, body)`. Panics when no answer
/// comes (see [`try_request`]).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    try_request(method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url}: no HTTP answer: {e}"))
}

/// [`request`], with I/O failures (refused, closed unanswered, timed out
/// after 30 s) as errors.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Answer> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs"))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut conn = TcpStream::connect(authority)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or("").as_bytes());
    conn.write_all(&out)?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete header section in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("truncated chunk"))?;
            let size = std::str::from_utf8(&rest[..nl]).unwrap_or("");
            let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[nl + 2..];
            if n == 0 {
                break;
            }
            if rest.len() < n + 2 {
                return Err(bad("truncated chunk"));
            }
            decoded.extend_from_slice(&rest[..n]);
            rest = &rest[n + 2..];
        }
        body = decoded;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if method != "HEAD" {
            if body.len() < len {
                return Err(bad("answer shorter than its Content-Length"));
            }
            body.truncate(len);
        }
    }
    Ok((status, headers, String::from_utf8_lossy(&body).to_string()))
}

/// The value of header `name` (lower case) in an answer's headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------
// The server.

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body,
        }
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A gateway (Kong) error: `{"message": ...[, "hint": ...]}`.
    fn kong(status: u16, message: &str, hint: Option<&str>) -> Reply {
        let mut body = format!("{{\"message\":{}", Value::from(message));
        if let Some(h) = hint {
            body.push_str(&format!(",\"hint\":{}", Value::from(h)));
        }
        body.push('}');
        Reply::json(status, body)
    }

    /// A PostgREST error body.
    fn pgrst(
        status: u16,
        code: &str,
        message: &str,
        details: Option<&str>,
        hint: Option<&str>,
    ) -> Reply {
        let body = serde_json::json!({
            "code": code,
            "details": details,
            "hint": hint,
            "message": message,
        });
        Reply::json(status, body.to_string())
    }

    fn parse_error(what: &str, details: &str) -> Reply {
        Reply::pgrst(
            400,
            "PGRST100",
            &format!("\"failed to parse {what}\""),
            Some(details),
            None,
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        300 => "Multiple Choices",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_reply(conn: &mut TcpStream, method: &str, r: &Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        if r.status == 204 && k == "Content-Type" {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if r.status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    if method != "HEAD" && r.status != 204 {
        out.extend_from_slice(r.body.as_bytes());
    }
    conn.write_all(&out)?;
    conn.flush()
}

/// After answering early (`413`): reads and discards what the client still
/// sends, for a while, so closing does not reset the connection before the
/// client read the answer (nginx's lingering close).
fn linger(reader: &mut BufReader<TcpStream>) {
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 64 << 10];
    let mut left: usize = 8 * MAX_BODY;
    while left > 0 {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Reads one line (up to `\n`) while `budget` lasts; `None` past it.
fn read_line_bounded(
    reader: &mut impl BufRead,
    budget: &mut usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n > *budget {
        return Ok(None);
    }
    *budget -= n;
    Ok(Some(line))
}

fn serve(inner: &Inner, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let peer = conn.peer_addr()?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut budget = MAX_HEADER_SECTION;
    let too_large = Reply::kong(431, "Request header or cookie too large", None);
    let bad = |m: &str| Reply::kong(400, m, None);

    let Some(line) = read_line_bounded(&mut reader, &mut budget)? else {
        return write_reply(&mut conn, "GET", &too_large);
    };
    if line.is_empty() {
        return Ok(());
    }
    let line = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return write_reply(&mut conn, "GET", &bad("Bad request"));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let Some(h) = read_line_bounded(&mut reader, &mut budget)? else {
            return write_reply(&mut conn, &method, &too_large);
        };
        if h.is_empty() {
            return Ok(()); // closed mid-header
        }
        let h = String::from_utf8_lossy(&h)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if h.is_empty() {
            break;
        }
        match h.split_once(':') {
            Some((k, v)) if !k.is_empty() && !k.contains([' ', '\t']) => {
                headers.push((k.to_ascii_lowercase(), v.trim().to_string()))
            }
            _ => return write_reply(&mut conn, &method, &bad("Bad request")),
        }
    }
    if !matches!(*version, "HTTP/1.1" | "HTTP/1.0") || !target.starts_with('/') {
        return write_reply(&mut conn, &method, &bad("Bad request"));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let chunked = get("transfer-encoding");
    let length = get("content-length");
    if chunked.is_some() && length.is_some() {
        return write_reply(&mut conn, &method, &bad("Bad request"));
    }
    let continue_100 = get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let mut body = Vec::new();
    let body_too_large = Reply::kong(413, "Request Entity Too Large", None);
    if let Some(te) = chunked {
        if !te.eq_ignore_ascii_case("chunked") {
            return write_reply(
                &mut conn,
                &method,
                &Reply::kong(501, "Not Implemented", None),
            );
        }
        if continue_100 {
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        loop {
            let mut b = 1024;
            let Some(size) = read_line_bounded(&mut reader, &mut b)? else {
                return write_reply(&mut conn, &method, &bad("Bad request"));
            };
            let size = String::from_utf8_lossy(&size).to_string();
            let Ok(n) =
                usize::from_str_radix(size.trim().split(';').next().unwrap_or("").trim(), 16)
            else {
                return write_reply(&mut conn, &method, &bad("Bad request"));
            };
            if n == 0 {
                // trailers, then the empty line
                loop {
                    let mut b = MAX_HEADER_SECTION;
                    match read_line_bounded(&mut reader, &mut b)? {
                        Some(l) if l != b"\r\n" && l != b"\n" && !l.is_empty() => continue,
                        _ => break,
                    }
                }
                break;
            }
            if body.len() + n > MAX_BODY {
                write_reply(&mut conn, &method, &body_too_large)?;
                linger(&mut reader);
                return Ok(());
            }
            let start = body.len();
            body.resize(start + n, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return write_reply(&mut conn, &method, &bad("Bad request"));
            }
        }
    } else if let Some(len) = length {
        let Ok(len) = len.parse::<usize>() else {
            return write_reply(&mut conn, &method, &bad("Bad request"));
        };
        if len > MAX_BODY {
            write_reply(&mut conn, &method, &body_too_large)?;
            linger(&mut reader);
            return Ok(());
        }
        if continue_100 && len > 0 {
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        body = vec![0; len];
        reader.read_exact(&mut body)?;
    }

    let (failing, dropping, delay, client_ip) = {
        let k = lock(&inner.knobs);
        (k.failing, k.dropping, k.delay, k.client_ip)
    };
    let mut seen = SeenRequest {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
        body: body.clone(),
        status: 0,
    };
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    if dropping {
        lock(&inner.seen).push(seen);
        let _ = conn.shutdown(Shutdown::Both);
        return Ok(());
    }
    let reply = match failing {
        Some(status) => Reply::kong(
            status,
            match status {
                502 => "An invalid response was received from the upstream server",
                503 => "failure to get a peer from the ring-balancer",
                504 => "The upstream server is timing out",
                _ => "An unexpected error occurred",
            },
            None,
        ),
        None => handle(
            inner,
            &method,
            &target,
            headers,
            &body,
            client_ip.unwrap_or(peer.ip()),
            peer,
        ),
    };
    seen.status = reply.status;
    lock(&inner.seen).push(seen);
    write_reply(&mut conn, &method, &reply)
}

/// Percent-decoding; `plus`: `+` is a space (query strings). Invalid
/// escapes stay as they are.
fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 63
}

/// `"name"`, for names [`is_ident`] accepted.
fn q(name: &str) -> String {
    debug_assert!(is_ident(name));
    format!("\"{name}\"")
}

/// The gateway, then PostgREST.
fn handle(
    inner: &Inner,
    method: &str,
    target: &str,
    mut headers: Vec<(String, String)>,
    body: &[u8],
    client_ip: IpAddr,
    peer: SocketAddr,
) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    let Some(rest) = path
        .strip_prefix("/rest/v1")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return Reply::kong(404, "no Route matched with those values", None);
    };

    // Kong key-auth: header first, then the query; hidden from upstream.
    let key = headers
        .iter()
        .find(|(k, _)| k == "apikey")
        .map(|(_, v)| v.clone())
        .or_else(|| {
            params
                .iter()
                .find(|(k, _)| k == "apikey")
                .map(|(_, v)| v.clone())
        })
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return Reply::kong(
            401,
            "No API key found in request",
            Some("No `apikey` request header or url param was found."),
        );
    };
    let consumer = if key == inner.anon_key {
        "anon"
    } else if key == inner.service_key {
        "service_role"
    } else {
        return Reply::kong(
            401,
            "Invalid API key",
            Some("Double check your Supabase `anon` or `service_role` API key."),
        );
    };
    headers.retain(|(k, _)| k != "apikey");
    params.retain(|(k, _)| k != "apikey");
    let forwarded = match headers.iter().find(|(k, _)| k == "x-forwarded-for") {
        Some((_, v)) => format!("{v}, {client_ip}"),
        None => client_ip.to_string(),
    };
    let host = headers
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| peer.to_string());
    headers.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "x-forwarded-for"
                | "x-real-ip"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-forwarded-port"
                | "x-consumer-username"
        )
    });
    headers.push(("x-forwarded-for".into(), forwarded));
    headers.push(("x-real-ip".into(), client_ip.to_string()));
    headers.push(("x-forwarded-proto".into(), "http".into()));
    headers.push((
        "x-forwarded-host".into(),
        host.split(':').next().unwrap_or("").to_string(),
    ));
    headers.push(("x-forwarded-port".into(), peer.port().to_string()));
    headers.push(("x-consumer-username".into(), consumer.into()));

    Postgrest {
        inner,
        method,
        path: if rest.is_empty() { "/" } else { rest },
        params,
        headers,
        body,
    }
    .handle()
}

/// One value bound as an untyped text parameter (PostgREST's `unknown`
/// literals): the server infers its type from where it stands and parses
/// the text with that type's input function.
#[derive(Debug)]
struct Lit(Option<String>);

impl ToSql for Lit {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    postgres::types::to_sql_checked!();
}

/// Where a request failed before or in the database.
enum Fail {
    Reply(Reply),
    Db(postgres::Error),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

impl From<Reply> for Fail {
    fn from(r: Reply) -> Fail {
        Fail::Reply(r)
    }
}

/// PostgREST's status for SQLSTATE `code`; `anon`: the request's role is
/// the anonymous one.
pub fn status_of(code: &str, anon: bool) -> u16 {
    if let Some(n) = code.strip_prefix("PT") {
        if n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()) {
            return n.parse().unwrap_or(500);
        }
    }
    match code {
        "42501" => return if anon { 401 } else { 403 },
        "23503" | "23505" => return 409,
        "42883" | "42P01" => return 404,
        "P0001" => return 400,
        "25006" => return 405,
        "57014" | "42P17" => return 500,
        _ => {}
    }
    match code.get(..2).unwrap_or("") {
        "08" | "53" => 503,
        "28" => 403,
        "40" | "54" | "55" | "57" | "58" | "F0" | "HV" | "P0" | "XX" | "2D" | "38" | "39"
        | "3B" | "09" | "25" => 500,
        _ => 400,
    }
}

/// A filter: `"rel"."col" <op> $n` or `IS ...`.
struct Filter {
    col: String,
    not: bool,
    op: &'static str,
    /// `None` for `IS` (the keyword is in `op`).
    value: Option<String>,
}

struct Query {
    select: Vec<String>,
    order: Vec<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    filters: Vec<Filter>,
}

struct Postgrest<'a> {
    inner: &'a Inner,
    method: &'a str,
    path: &'a str,
    params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

/// A function PostgREST could call.
struct Func {
    setof: bool,
    void: bool,
    volatile: bool,
    /// Input argument names in order ("" when unnamed).
    args: Vec<String>,
    required: usize,
}

impl Postgrest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn handle(&self) -> Reply {
        // Authentication.
        let mut claims = Map::new();
        if let Some(auth) = self.header("authorization") {
            let mut words = auth.splitn(2, ' ');
            let scheme = words.next().unwrap_or("");
            let token = words.next().unwrap_or("").trim();
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                match verify_jwt(&self.inner.secret, token) {
                    Ok(c) => claims = c,
                    Err((code, msg)) => {
                        return Reply::pgrst(401, code, &msg, None, None).with(
                            "WWW-Authenticate",
                            format!(
                                "Bearer error=\"invalid_token\", error_description={}",
                                Value::from(msg.as_str())
                            ),
                        )
                    }
                }
            }
        }
        let role = match claims.get("role") {
            Some(Value::String(r)) => r.clone(),
            _ => "anon".to_string(),
        };
        if !claims.contains_key("role") {
            claims.insert("role".into(), Value::from(role.as_str()));
        }
        let anon = role == "anon";
        match self.route(&role, &claims) {
            Ok(r) => r,
            Err(Fail::Reply(r)) => r,
            Err(Fail::Db(e)) => match e.as_db_error() {
                Some(db) => {
                    let code = db.code().code();
                    let r = Reply::pgrst(status_of(code, anon), code, db.message(), db.detail(), db.hint());
                    if r.status == 401 {
                        r.with("WWW-Authenticate", "Bearer")
                    } else {
                        r
                    }
                }
                None if e.is_closed() || e.to_string().contains("connect") => Reply::pgrst(
                    503,
                    "PGRST000",
                    "Could not connect with the database due to an incorrect db-uri or due to the PostgreSQL service not running.",
                    Some(&e.to_string()),
                    None,
                ),
                None => Reply::pgrst(500, "PGRST000", "Database client error", Some(&e.to_string()), None),
            },
        }
    }

    fn route(&self, role: &str, claims: &Map<String, Value>) -> Result<Reply, Fail> {
        let segs: Vec<String> = self.path[1..]
            .split('/')
            .map(|s| percent_decode(s, false))
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match segs.as_slice() {
            [""] => Err(Reply::pgrst(
                400,
                "PGRST100",
                "The OpenAPI root is not modelled by this responder",
                None,
                None,
            )
            .into()),
            ["rpc", name] => match self.method {
                "POST" => self.rpc(role, claims, name, false),
                "GET" | "HEAD" => self.rpc(role, claims, name, true),
                m => Err(unsupported_method(m).into()),
            },
            [rel] => match self.method {
                "GET" | "HEAD" => self.read(role, claims, rel),
                "POST" | "PATCH" | "DELETE" => self.write(role, claims, rel),
                m => Err(unsupported_method(m).into()),
            },
            _ => Err(Reply::pgrst(
                404,
                "PGRST125",
                "Invalid path specified in request URL",
                None,
                None,
            )
            .into()),
        }
    }

    fn check_accept(&self) -> Result<(), Fail> {
        let Some(accept) = self.header("accept") else {
            return Ok(());
        };
        let ok = accept.split(',').any(|t| {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            matches!(
                t.as_str(),
                "*/*" | "application/*" | "application/json" | ""
            )
        });
        if ok {
            Ok(())
        } else {
            Err(Reply::pgrst(
                406,
                "PGRST107",
                &format!("None of these media types are available: {accept}"),
                None,
                None,
            )
            .into())
        }
    }

    fn check_content_type(&self) -> Result<(), Fail> {
        let Some(ct) = self.header("content-type") else {
            return Ok(());
        };
        let t = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if t == "application/json" {
            Ok(())
        } else {
            Err(Reply::pgrst(
                415,
                "PGRST107",
                &format!("Content-Type not acceptable: {ct}"),
                None,
                None,
            )
            .into())
        }
    }

    /// The body as JSON (`{}` when empty and `empty_ok`).
    fn json_body(&self, empty_ok: bool) -> Result<Value, Fail> {
        if self.body.iter().all(u8::is_ascii_whitespace) && empty_ok {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(self.body).map_err(|e| {
            Reply::pgrst(
                400,
                "PGRST102",
                "Empty or invalid json",
                Some(&e.to_string()),
                None,
            )
            .into()
        })
    }

    fn prefer_representation(&self) -> Result<bool, Fail> {
        let mut repr = false;
        for (k, v) in &self.headers {
            if k != "prefer" {
                continue;
            }
            for p in v.split(',').map(str::trim) {
                match p {
                    "return=representation" => repr = true,
                    "return=minimal" => repr = false,
                    "" | "return=headers-only" => {}
                    other => {
                        return Err(Reply::pgrst(
                            400,
                            "PGRST100",
                            &format!("Prefer: {other} is not modelled by this responder"),
                            None,
                            None,
                        )
                        .into())
                    }
                }
            }
        }
        Ok(repr)
    }

    /// Parses `select`, `order`, `limit`, `offset` and filters.
    fn query(&self, rel: &str, allow_shape: bool) -> Result<Query, Fail> {
        let mut q = Query {
            select: vec!["*".into()],
            order: Vec::new(),
            limit: None,
            offset: None,
            filters: Vec::new(),
        };
        for (k, v) in &self.params {
            match k.as_str() {
                "select" => {
                    let cols: Vec<String> = v.split(',').map(str::to_string).collect();
                    if cols.iter().any(|c| c != "*" && !is_ident(c)) {
                        return Err(Reply::parse_error(
                            &format!("select parameter ({v})"),
                            "only column names and * are modelled by this responder",
                        )
                        .into());
                    }
                    q.select = cols;
                }
                "order" if allow_shape => {
                    q.order.clear();
                    for term in v.split(',') {
                        let mut words = term.split('.');
                        let col = words.next().unwrap_or("");
                        let mut dir = "ASC";
                        let mut nulls = "";
                        let mut seen = 0;
                        for w in words {
                            seen += 1;
                            match (seen, w) {
                                (1, "asc") => dir = "ASC",
                                (1, "desc") => dir = "DESC",
                                (1 | 2, "nullsfirst") => nulls = " NULLS FIRST",
                                (1 | 2, "nullslast") => nulls = " NULLS LAST",
                                _ => {
                                    return Err(Reply::parse_error(
                                        &format!("order ({term})"),
                                        "unexpected order term",
                                    )
                                    .into())
                                }
                            }
                        }
                        if !is_ident(col) {
                            return Err(Reply::parse_error(
                                &format!("order ({term})"),
                                "only column names are modelled by this responder",
                            )
                            .into());
                        }
                        q.order.push(format!("{} {dir}{nulls}", q_col(rel, col)));
                    }
                }
                "limit" | "offset" if allow_shape => {
                    let Ok(n) = v.parse::<u64>() else {
                        return Err(Reply::parse_error(
                            &format!("{k} parameter ({v})"),
                            "expected a non-negative integer",
                        )
                        .into());
                    };
                    if k == "limit" {
                        q.limit = Some(n);
                    } else {
                        q.offset = Some(n);
                    }
                }
                "order" | "limit" | "offset" | "columns" | "on_conflict" | "or" | "and"
                | "not.or" | "not.and" => {
                    return Err(Reply::parse_error(
                        &format!("{k} parameter ({v})"),
                        "not modelled by this responder for this request",
                    )
                    .into());
                }
                col => {
                    if !is_ident(col) {
                        return Err(Reply::parse_error(
                            &format!("filter ({col}={v})"),
                            "only plain column names are modelled by this responder",
                        )
                        .into());
                    }
                    let (not, rest) = match v.strip_prefix("not.") {
                        Some(r) => (true, r),
                        None => (false, v.as_str()),
                    };
                    let (op, val) = rest.split_once('.').unwrap_or((rest, ""));
                    let filter = |op: &'static str, value: Option<String>| Filter {
                        col: col.to_string(),
                        not,
                        op,
                        value,
                    };
                    q.filters.push(match op {
                        "eq" => filter("=", Some(val.into())),
                        "neq" => filter("<>", Some(val.into())),
                        "gt" => filter(">", Some(val.into())),
                        "gte" => filter(">=", Some(val.into())),
                        "lt" => filter("<", Some(val.into())),
                        "lte" => filter("<=", Some(val.into())),
                        "like" => filter("LIKE", Some(val.replace('*', "%"))),
                        "ilike" => filter("ILIKE", Some(val.replace('*', "%"))),
                        "is" => match val {
                            "null" => filter("IS NULL", None),
                            "true" => filter("IS TRUE", None),
                            "false" => filter("IS FALSE", None),
                            "unknown" => filter("IS UNKNOWN", None),
                            _ => {
                                return Err(Reply::parse_error(
                                    &format!("filter ({v})"),
                                    "is. takes null, true, false or unknown",
                                )
                                .into())
                            }
                        },
                        _ => {
                            return Err(Reply::parse_error(
                                &format!("filter ({v})"),
                                "operator not modelled by this responder",
                            )
                            .into())
                        }
                    });
                }
            }
        }
        Ok(q)
    }

    /// Opens the request's transaction and sets what PostgREST sets.
    fn begin<'c>(
        &self,
        client: &'c mut Client,
        role: &str,
        claims: &Map<String, Value>,
        read_only: bool,
    ) -> Result<postgres::Transaction<'c>, Fail> {
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .read_only(read_only)
            .start()?;
        // Supabase's authenticator may only become the roles granted to it.
        let row = tx.query_one(
            "select r.oid is not null, coalesce(pg_catalog.pg_has_role('authenticator', r.oid, 'MEMBER'), false), \
                    (select s from pg_catalog.pg_db_role_setting d, unnest(d.setconfig) s \
                      where d.setrole = r.oid and d.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database())) \
                        and s like 'statement\\_timeout=%' order by d.setdatabase desc limit 1) \
               from (select $1::text as n) a left join pg_catalog.pg_roles r on r.rolname = a.n",
            &[&role],
        )?;
        let (exists, member, timeout): (bool, bool, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        if exists && !member {
            return Err(Reply::pgrst(
                if role == "anon" { 401 } else { 403 },
                "42501",
                &format!("permission denied to set role \"{role}\""),
                None,
                None,
            )
            .into());
        }
        let mut hdrs = Map::new();
        for (k, v) in &self.headers {
            if k != "cookie" {
                hdrs.insert(k.clone(), Value::from(v.as_str()));
            }
        }
        let mut cookies = Map::new();
        if let Some(c) = self.header("cookie") {
            for kv in c.split(';') {
                if let Some((k, v)) = kv.trim().split_once('=') {
                    cookies.insert(k.to_string(), Value::from(v));
                }
            }
        }
        let claims_text = Value::Object(claims.clone()).to_string();
        let hdrs_text = Value::Object(hdrs).to_string();
        let cookies_text = Value::Object(cookies).to_string();
        let timeout = timeout.map(|s| s["statement_timeout=".len()..].to_string());
        tx.execute(
            "select set_config('search_path', '\"public\", \"extensions\"', true), \
                    set_config('request.jwt.claims', $1, true), \
                    set_config('request.method', $2, true), \
                    set_config('request.path', $3, true), \
                    set_config('request.headers', $4, true), \
                    set_config('request.cookies', $5, true), \
                    set_config('statement_timeout', coalesce($6, current_setting('statement_timeout')), true)",
            &[&claims_text, &self.method, &self.path, &hdrs_text, &cookies_text, &timeout],
        )?;
        tx.execute("select set_config('role', $1, true)", &[&role])?;
        Ok(tx)
    }

    fn connect(&self) -> Result<Client, Fail> {
        Ok(Client::connect(&self.inner.db_url, NoTls)?)
    }

    /// The columns of `public.<rel>` (a table, view, materialized view or
    /// foreign table), `None` when it is not in the schema cache.
    fn relation(
        &self,
        client: &mut Client,
        rel: &str,
    ) -> Result<Option<(String, Vec<String>)>, Fail> {
        if !is_ident(rel) {
            return Ok(None);
        }
        let row = client.query_opt(
            "select c.relkind::text, array(select a.attname::text from pg_catalog.pg_attribute a \
                     where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum) \
               from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
              where n.nspname = 'public' and c.relname = $1::text and c.relkind in ('r', 'v', 'm', 'f', 'p')",
            &[&rel],
        )?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn not_found(rel: &str) -> Fail {
        Reply::pgrst(
            404,
            "PGRST205",
            &format!("Could not find the table 'public.{rel}' in the schema cache"),
            None,
            None,
        )
        .into()
    }

    fn read(&self, role: &str, claims: &Map<String, Value>, rel: &str) -> Result<Reply, Fail> {
        self.check_accept()?;
        let mut client = self.connect()?;
        if self.relation(&mut client, rel)?.is_none() {
            return Err(Self::not_found(rel));
        }
        let query = self.query(rel, true)?;
        let mut args: Vec<Lit> = Vec::new();
        let sql = format!(
            "select coalesce(json_agg(_postgrest_t), '[]')::text, count(*) from (select {} from \"public\".{} {} {} {} {}) _postgrest_t",
            select_list(rel, &query.select),
            q(rel),
            where_clause(rel, &query.filters, &mut args),
            if query.order.is_empty() { String::new() } else { format!("order by {}", query.order.join(", ")) },
            query.limit.map(|n| format!("limit {n}")).unwrap_or_default(),
            query.offset.map(|n| format!("offset {n}")).unwrap_or_default(),
        );
        let mut tx = self.begin(&mut client, role, claims, true)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let row = tx.query_one(&sql, &refs)?;
        let (body, n): (String, i64) = (row.get(0), row.get(1));
        tx.commit()?;
        let from = query.offset.unwrap_or(0);
        let range = if n == 0 {
            "*/*".to_string()
        } else {
            format!("{from}-{}/*", from + n as u64 - 1)
        };
        Ok(Reply::json(200, body).with("Content-Range", range))
    }

    fn write(&self, role: &str, claims: &Map<String, Value>, rel: &str) -> Result<Reply, Fail> {
        let repr = self.prefer_representation()?;
        if repr {
            self.check_accept()?;
        }
        let mut client = self.connect()?;
        let Some((_, columns)) = self.relation(&mut client, rel)? else {
            return Err(Self::not_found(rel));
        };
        let query = self.query(rel, false)?;
        let mut args: Vec<Lit> = Vec::new();
        let known = |c: &str| -> Result<(), Fail> {
            if columns.iter().any(|k| k == c) {
                Ok(())
            } else {
                Err(Reply::pgrst(
                    400,
                    "PGRST204",
                    &format!("Could not find the '{c}' column of '{rel}' in the schema cache"),
                    None,
                    None,
                )
                .into())
            }
        };
        let table = format!("\"public\".{}", q(rel));
        let dml = match self.method {
            "POST" => {
                self.check_content_type()?;
                let body = self.json_body(false)?;
                let rows = match &body {
                    Value::Array(rows) => rows.clone(),
                    Value::Object(_) => vec![body.clone()],
                    _ => {
                        return Err(Reply::pgrst(
                            400,
                            "PGRST102",
                            "Empty or invalid json",
                            None,
                            None,
                        )
                        .into())
                    }
                };
                let mut keys: Option<Vec<String>> = None;
                for row in &rows {
                    let Value::Object(o) = row else {
                        return Err(Reply::pgrst(
                            400,
                            "PGRST102",
                            "Empty or invalid json",
                            None,
                            None,
                        )
                        .into());
                    };
                    let these: Vec<String> = o.keys().cloned().collect();
                    match &keys {
                        None => keys = Some(these),
                        Some(k) if *k != these => {
                            return Err(Reply::pgrst(
                                400,
                                "PGRST102",
                                "All object keys must match",
                                None,
                                None,
                            )
                            .into())
                        }
                        Some(_) => {}
                    }
                }
                let keys = keys.unwrap_or_default();
                for k in &keys {
                    known(k)?;
                }
                args.push(Lit(Some(Value::Array(rows).to_string())));
                let cols: Vec<String> = keys.iter().map(|k| q(k)).collect();
                let picked: Vec<String> = keys.iter().map(|k| format!("_.{}", q(k))).collect();
                format!(
                    "insert into {table}{} select {} from json_populate_recordset(null::{table}, $1) _",
                    if cols.is_empty() { String::new() } else { format!("({})", cols.join(", ")) },
                    picked.join(", "),
                )
            }
            "PATCH" => {
                self.check_content_type()?;
                let body = self.json_body(false)?;
                let Value::Object(o) = &body else {
                    return Err(
                        Reply::pgrst(400, "PGRST102", "Empty or invalid json", None, None).into(),
                    );
                };
                for k in o.keys() {
                    known(k)?;
                }
                if query.filters.is_empty() {
                    return Err(Reply::pgrst(
                        400,
                        "21000",
                        "UPDATE requires a WHERE clause",
                        None,
                        None,
                    )
                    .into());
                }
                if o.is_empty() {
                    return Ok(Reply::json(
                        if repr { 200 } else { 204 },
                        if repr { "[]".into() } else { String::new() },
                    )
                    .with("Content-Range", "*/*"));
                }
                args.push(Lit(Some(body.to_string())));
                let sets: Vec<String> =
                    o.keys().map(|k| format!("{} = _.{}", q(k), q(k))).collect();
                let filters = where_clause(rel, &query.filters, &mut args);
                format!(
                    "update {table} set {} from (select * from json_populate_record(null::{table}, $1)) _ {filters}",
                    sets.join(", ")
                )
            }
            _ => {
                if query.filters.is_empty() {
                    return Err(Reply::pgrst(
                        400,
                        "21000",
                        "DELETE requires a WHERE clause",
                        None,
                        None,
                    )
                    .into());
                }
                format!(
                    "delete from {table} {}",
                    where_clause(rel, &query.filters, &mut args)
                )
            }
        };
        let sql = if repr {
            format!(
                "with pgrst_source as ({dml} returning {}.*) select coalesce(json_agg(_postgrest_t), '[]')::text, count(*) \
                   from (select {} from pgrst_source {}) _postgrest_t",
                q(rel),
                select_list(rel, &query.select),
                q(rel)
            )
        } else {
            format!("with pgrst_source as ({dml} returning 1) select null::text, count(*) from pgrst_source")
        };
        let mut tx = self.begin(&mut client, role, claims, false)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let row = tx.query_one(&sql, &refs)?;
        let (body, n): (Option<String>, i64) = (row.get(0), row.get(1));
        tx.commit()?;
        let range = match (self.method, n) {
            ("POST", _) | (_, 0) => "*/*".to_string(),
            _ => format!("0-{}/*", n - 1),
        };
        let status = match (self.method, repr) {
            ("POST", _) => 201,
            (_, true) => 200,
            (_, false) => 204,
        };
        Ok(Reply::json(
            status,
            if repr {
                body.unwrap_or_else(|| "[]".into())
            } else {
                String::new()
            },
        )
        .with("Content-Range", range))
    }

    fn rpc(
        &self,
        role: &str,
        claims: &Map<String, Value>,
        name: &str,
        get: bool,
    ) -> Result<Reply, Fail> {
        self.check_accept()?;
        let reserved = |k: &str| {
            matches!(
                k,
                "select" | "order" | "limit" | "offset" | "columns" | "on_conflict" | "or" | "and"
            )
        };
        if !get && !self.params.is_empty() || get && self.params.iter().any(|(k, _)| reserved(k)) {
            return Err(Reply::parse_error(
                "query parameters of a function call",
                "filtering or shaping a function's result is not modelled by this responder",
            )
            .into());
        }
        let args: Map<String, Value> = if get {
            let mut m = Map::new();
            for (k, v) in &self.params {
                m.insert(k.clone(), Value::from(v.as_str()));
            }
            m
        } else {
            self.check_content_type()?;
            match self.json_body(true)? {
                Value::Object(m) => m,
                _ => {
                    return Err(Reply::pgrst(
                        400,
                        "PGRST102",
                        "Empty or invalid json",
                        Some("a function's arguments are a JSON object"),
                        None,
                    )
                    .into())
                }
            }
        };
        let keys: Vec<&String> = args.keys().collect();
        let mut client = self.connect()?;
        let mut found: Vec<Func> = Vec::new();
        if is_ident(name) {
            let rows = client.query(
                "select p.proretset, p.prorettype = 'pg_catalog.void'::pg_catalog.regtype, p.provolatile = 'v', \
                        p.pronargs::int4, p.pronargdefaults::int4, coalesce(p.proargnames, '{}')::text[], \
                        coalesce(p.proargmodes::text[], '{}') \
                   from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
                  where n.nspname = 'public' and p.proname = $1::text and p.prokind = 'f'",
                &[&name],
            )?;
            for r in rows {
                let nargs: i32 = r.get(3);
                let ndefaults: i32 = r.get(4);
                let names: Vec<String> = r.get(5);
                let modes: Vec<String> = r.get(6);
                let input: Vec<String> = if modes.is_empty() {
                    (0..nargs as usize)
                        .map(|i| names.get(i).cloned().unwrap_or_default())
                        .collect()
                } else {
                    modes
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| matches!(m.as_str(), "i" | "b" | "v"))
                        .map(|(i, _)| names.get(i).cloned().unwrap_or_default())
                        .collect()
                };
                let f = Func {
                    setof: r.get(0),
                    void: r.get(1),
                    volatile: r.get(2),
                    required: (nargs - ndefaults).max(0) as usize,
                    args: input,
                };
                let all_known = keys.iter().all(|k| f.args.iter().any(|a| a == *k));
                let required_given = f.args[..f.required.min(f.args.len())]
                    .iter()
                    .all(|a| !a.is_empty() && keys.contains(&a));
                if all_known && required_given {
                    found.push(f);
                }
            }
        }
        let listed = keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let f = match found.len() {
            0 => {
                return Err(Reply::pgrst(
                    404,
                    "PGRST202",
                    &format!("Could not find the function public.{name}({listed}) in the schema cache"),
                    Some(&if keys.is_empty() {
                        format!("Searched for the function public.{name} without parameters or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.")
                    } else {
                        format!("Searched for the function public.{name} with parameters {listed} or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.")
                    }),
                    None,
                )
                .into())
            }
            1 => found.pop().expect("one"),
            _ => {
                return Err(Reply::pgrst(
                    300,
                    "PGRST203",
                    &format!("Could not choose the best candidate function between: public.{name}"),
                    None,
                    Some("Try renaming the parameters or the function itself in the database so function overloading can be resolved"),
                )
                .into())
            }
        };
        let mut binds: Vec<Lit> = Vec::new();
        let mut named: Vec<String> = Vec::new();
        for (k, v) in &args {
            binds.push(Lit(match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }));
            named.push(format!("{} => ${}", q(k), binds.len()));
        }
        let call = format!("\"public\".{}({})", q(name), named.join(", "));
        let sql = if f.void {
            format!("select {call}, null::text, 0::int8")
        } else if f.setof {
            format!("select 0, coalesce(json_agg(_postgrest_t), '[]')::text, count(*) from {call} _postgrest_t")
        } else {
            format!("select 0, coalesce(to_json({call}), 'null')::text, 1::int8")
        };
        let read_only = get || !f.volatile;
        let mut tx = self.begin(&mut client, role, claims, read_only)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            binds.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let row = tx.query_one(&sql, &refs)?;
        let (body, n): (Option<String>, i64) = (row.get(1), row.get(2));
        tx.commit()?;
        if f.void {
            return Ok(Reply::json(204, String::new()));
        }
        let mut reply = Reply::json(200, body.unwrap_or_else(|| "null".into()));
        if f.setof {
            reply = reply.with(
                "Content-Range",
                if n == 0 {
                    "*/*".to_string()
                } else {
                    format!("0-{}/*", n - 1)
                },
            );
        }
        Ok(reply)
    }
}

fn unsupported_method(m: &str) -> Reply {
    Reply::pgrst(
        405,
        "PGRST117",
        &format!("Unsupported HTTP method: {m}"),
        None,
        None,
    )
}

fn q_col(rel: &str, col: &str) -> String {
    format!("\"{rel}\".{}", q(col))
}

fn select_list(rel: &str, cols: &[String]) -> String {
    cols.iter()
        .map(|c| {
            if c == "*" {
                format!("{}.*", q(rel))
            } else {
                q_col(rel, c)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn where_clause(rel: &str, filters: &[Filter], args: &mut Vec<Lit>) -> String {
    if filters.is_empty() {
        return String::new();
    }
    let terms: Vec<String> = filters
        .iter()
        .map(|f| {
            let term = match &f.value {
                Some(v) => {
                    args.push(Lit(Some(v.clone())));
                    format!("{} {} ${}", q_col(rel, &f.col), f.op, args.len())
                }
                None => format!("{} {}", q_col(rel, &f.col), f.op),
            };
            if f.not {
                format!("not {term}")
            } else {
                term
            }
        })
        .collect();
    format!("where {}", terms.join(" and "))
}
