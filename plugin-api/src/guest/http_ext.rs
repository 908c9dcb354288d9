//! A small blocking HTTP client for payment plugins and backends, over the raw
//! `wasi:http@0.2` bindings.
//!
//! ```ignore
//! use infernet_plugin_api::http;
//!
//! let res = http::post_json(
//!     "https://api.example.com/v1/escrow",
//!     &[("authorization", "Bearer ...")],
//!     r#"{"amount": 1}"#,
//! )?;                                   // `?` turns an `HttpError` into the WIT `Error`
//! if !res.is_success() {
//!     return Err(Error::internal(format!("escrow API answered {}", res.status)));
//! }
//! let body: &str = res.text()?;
//! ```
//!
//! * Every call blocks until the whole response is read (or fails); there is
//!   no async runtime in a plugin.
//! * Only `http://` and `https://` URLs are accepted; user info in the URL
//!   (`user:pass@host`) is refused: put credentials in headers instead.
//! * Response bodies are capped ([`DEFAULT_MAX_RESPONSE_BYTES`], 4 MiB, or
//!   [`Options::max_response_bytes`]); a larger body is
//!   [`HttpError::TooLarge`], never a silently truncated body.
//! * The node only lets a plugin reach the origins its config lists in
//!   `allowed_hosts`, matching scheme, host and port exactly (`host` is https
//!   on 443 only; `host:port` https on that port; plain HTTP only as
//!   `http://host[:port]`). Any other origin is refused by the host before a
//!   byte is sent, and surfaces here as [`HttpError::Denied`]; converted into the WIT
//!   [`Error`](crate::Error) it becomes `unsupported("capability denied: host
//!   `X` is not in this plugin's allowed_hosts")`, which tells the node
//!   operator exactly what to change.
//! * A non-2xx status is **not** an error here: it is a [`Response`] like any
//!   other, so the plugin can read the server's error body. Check
//!   [`Response::is_success`].
//!
//! [`request_streaming`] returns once the head is in and hands the body out
//! piece by piece (server-sent events). The raw `wasi:http` bindings stay
//! available as [`types`](crate::http::types) and
//! [`outgoing_handler`](crate::http::outgoing_handler).

use crate::bindings::backend::wasi::http::{outgoing_handler, types};
use crate::bindings::backend::wasi::io::streams::StreamError;
use core::fmt;

pub use types::Method;

/// Response bodies larger than this (4 MiB) are refused unless [`Options`] says otherwise.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Per-request settings; [`Options::default`] is what [`request`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Connect timeout (ms); `None` leaves the host default.
    pub connect_timeout_ms: Option<u64>,
    /// Time to the first response byte (ms); `None` leaves the host default.
    pub first_byte_timeout_ms: Option<u64>,
    /// Longest pause between two body chunks (ms); `None` leaves the host default.
    pub between_bytes_timeout_ms: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            connect_timeout_ms: Some(10_000),
            first_byte_timeout_ms: Some(30_000),
            between_bytes_timeout_ms: Some(30_000),
        }
    }
}

/// A complete HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. `200`.
    pub status: u16,
    /// Header names (lower-case, as the host reports them) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        is_success(self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, HttpError> {
        core::str::from_utf8(&self.body)
            .map_err(|_| HttpError::Protocol("response body is not UTF-8".into()))
    }
}

/// Why a request produced no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is malformed or uses something other than `http`/`https`.
    InvalidUrl(String),
    /// The node refused the request: `host` is not in this plugin's `allowed_hosts`.
    Denied {
        /// The host the plugin tried to reach (without port).
        host: String,
    },
    /// The response body exceeded the size limit (bytes).
    TooLarge {
        /// The limit that was hit.
        limit: usize,
    },
    /// Connecting, sending or receiving failed (DNS, refused connection, timeout, TLS...).
    Transport(String),
    /// The exchange broke the protocol (bad header, unreadable body...).
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            HttpError::Denied { host } => write!(
                f,
                "capability denied: host `{host}` is not in this plugin's allowed_hosts"
            ),
            HttpError::TooLarge { limit } => {
                write!(f, "HTTP response body larger than {limit} bytes")
            }
            HttpError::Transport(m) => write!(f, "HTTP request failed: {m}"),
            HttpError::Protocol(m) => write!(f, "HTTP protocol error: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::Error {
    /// `Denied` → `unsupported`, `TooLarge` → `limit-exceeded`, `InvalidUrl` →
    /// `invalid-input`, anything else → `internal`.
    fn from(e: HttpError) -> Self {
        let message = e.to_string();
        match e {
            HttpError::Denied { .. } => crate::Error::Unsupported(message),
            HttpError::TooLarge { .. } => crate::Error::LimitExceeded(message),
            HttpError::InvalidUrl(_) => crate::Error::InvalidInput(message),
            HttpError::Transport(_) | HttpError::Protocol(_) => crate::Error::Internal(message),
        }
    }
}

/// The parts of a URL wasi:http wants.
struct Target {
    scheme: types::Scheme,
    authority: String,
    host: String,
    path_with_query: String,
}

fn parse_url(url: &str) -> Result<Target, HttpError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (types::Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (types::Scheme::Http, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!(
            "`{}`: only http:// and https:// URLs are supported",
            url.split(':').next().unwrap_or("")
        )));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let mut path = rest[end..].split('#').next().unwrap_or("").to_string();
    if authority.is_empty() {
        return Err(HttpError::InvalidUrl("the URL has no host".into()));
    }
    if authority.contains('@') {
        return Err(HttpError::InvalidUrl(
            "credentials in the URL are not supported; send them in a header".into(),
        ));
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(HttpError::InvalidUrl(
            "the host contains whitespace or control characters".into(),
        ));
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_string()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    if path.is_empty() {
        path.push('/');
    } else if path.starts_with('?') {
        path.insert(0, '/');
    }
    Ok(Target {
        scheme,
        authority: authority.to_string(),
        host,
        path_with_query: path,
    })
}

fn error_code(code: types::ErrorCode, host: &str) -> HttpError {
    use types::ErrorCode as E;
    match code {
        E::HttpRequestDenied => HttpError::Denied {
            host: host.to_string(),
        },
        E::DnsTimeout => HttpError::Transport(format!("DNS lookup of `{host}` timed out")),
        E::DnsError(p) => HttpError::Transport(format!(
            "DNS lookup of `{host}` failed{}",
            p.rcode.map(|r| format!(": {r}")).unwrap_or_default()
        )),
        E::DestinationNotFound => HttpError::Transport(format!("host `{host}` not found")),
        E::ConnectionRefused => HttpError::Transport(format!("connection to `{host}` refused")),
        E::ConnectionTimeout => HttpError::Transport(format!("connecting to `{host}` timed out")),
        E::ConnectionReadTimeout => {
            HttpError::Transport(format!("`{host}` stopped sending (read timeout)"))
        }
        E::TlsCertificateError | E::TlsProtocolError | E::TlsAlertReceived(_) => {
            HttpError::Transport(format!("TLS with `{host}` failed: {code:?}"))
        }
        E::InternalError(Some(m)) => HttpError::Transport(m),
        other => HttpError::Transport(format!("{other:?} (host `{host}`)")),
    }
}

/// Sends one request and reads the whole response, with [`Options::default`].
///
/// `headers` are `(name, value)` pairs; `body`, when given, is sent as is
/// (set `content-type` yourself, or use [`post_json`]).
pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    request_with(&Options::default(), method, url, headers, body)
}

/// `GET url`, asking for JSON.
pub fn get_json(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
    let mut all = vec![("accept", "application/json")];
    all.extend_from_slice(headers);
    request(Method::Get, url, &all, None)
}

/// `POST url` with a JSON body, asking for JSON.
pub fn post_json(url: &str, headers: &[(&str, &str)], json: &str) -> Result<Response, HttpError> {
    let mut all = vec![
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    all.extend_from_slice(headers);
    request(Method::Post, url, &all, Some(json.as_bytes()))
}

/// [`request`] with explicit [`Options`].
pub fn request_with(
    options: &Options,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let (response, host) = send(options, method, url, headers, body)?;
    let status = response.status();
    let headers = header_list(&response);
    let body = read_body(&response, options.max_response_bytes, &host)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A response whose body is read as it arrives ([`request_streaming`]):
/// server-sent events, or any body too large to hold at once.
pub struct StreamingResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower-case) and values, in order.
    pub headers: Vec<(String, String)>,
    // Dropped in this order: the stream before its body, the body before
    // the response (wasi:http child resources).
    stream: Option<crate::bindings::backend::wasi::io::streams::InputStream>,
    body: Option<types::IncomingBody>,
    _response: types::IncomingResponse,
    host: String,
    read: usize,
    limit: usize,
}

impl StreamingResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        is_success(self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The next piece of the body as it arrives (blocking until there is
    /// one, at most the host's between-bytes timeout); `None` at the end.
    /// Past [`Options::max_response_bytes`] in all: [`HttpError::TooLarge`].
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        let Some(stream) = &self.stream else {
            return Ok(None);
        };
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                self.read += chunk.len();
                if self.read > self.limit {
                    return Err(HttpError::TooLarge { limit: self.limit });
                }
                Ok(Some(chunk))
            }
            Err(StreamError::Closed) => {
                self.stream = None;
                if let Some(body) = self.body.take() {
                    let _ = types::IncomingBody::finish(body);
                }
                Ok(None)
            }
            Err(StreamError::LastOperationFailed(e)) => Err(HttpError::Transport(format!(
                "reading the response from `{}` failed: {}",
                self.host,
                e.to_debug_string()
            ))),
        }
    }

    /// The rest of the body, at most `limit` bytes (an error body, say).
    pub fn rest(&mut self, limit: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            if out.len() + chunk.len() > limit {
                return Err(HttpError::TooLarge { limit });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Sends one request and returns once the status and headers are in; the
/// body is read piece by piece with [`StreamingResponse::next_chunk`].
/// `options.max_response_bytes` caps the whole body.
pub fn request_streaming(
    options: &Options,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<StreamingResponse, HttpError> {
    let (response, host) = send(options, method, url, headers, body)?;
    let status = response.status();
    let headers = header_list(&response);
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Protocol("response body already taken".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::Protocol("response body stream unavailable".into()))?;
    Ok(StreamingResponse {
        status,
        headers,
        stream: Some(stream),
        body: Some(incoming),
        _response: response,
        host,
        read: 0,
        limit: options.max_response_bytes,
    })
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_list(response: &types::IncomingResponse) -> Vec<(String, String)> {
    response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// Sends the request and its body; returns the response head and the host.
fn send(
    options: &Options,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(types::IncomingResponse, String), HttpError> {
    let target = parse_url(url)?;
    let host = target.host.clone();

    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    // A known body goes out with its length (not chunked): some servers insist.
    if let Some(bytes) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            entries.push((
                "content-length".into(),
                bytes.len().to_string().into_bytes(),
            ));
        }
    }
    let fields = types::Fields::from_list(&entries).map_err(|e| {
        // Never echo header values: they may hold credentials.
        HttpError::Protocol(format!("invalid request header ({e:?})"))
    })?;
    let req = types::OutgoingRequest::new(fields);
    req.set_method(&method)
        .map_err(|()| HttpError::Protocol("invalid method".into()))?;
    req.set_scheme(Some(&target.scheme))
        .map_err(|()| HttpError::InvalidUrl("invalid scheme".into()))?;
    req.set_authority(Some(&target.authority))
        .map_err(|()| HttpError::InvalidUrl(format!("invalid host `{}`", target.authority)))?;
    req.set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| HttpError::InvalidUrl("invalid path".into()))?;
    let outgoing_body = req
        .body()
        .map_err(|()| HttpError::Protocol("request body already taken".into()))?;

    let opts = types::RequestOptions::new();
    const MS: u64 = 1_000_000;
    // A host that does not support a timeout refuses it; that is fine.
    if let Some(ms) = options.connect_timeout_ms {
        let _ = opts.set_connect_timeout(Some(ms.saturating_mul(MS)));
    }
    if let Some(ms) = options.first_byte_timeout_ms {
        let _ = opts.set_first_byte_timeout(Some(ms.saturating_mul(MS)));
    }
    if let Some(ms) = options.between_bytes_timeout_ms {
        let _ = opts.set_between_bytes_timeout(Some(ms.saturating_mul(MS)));
    }

    let future =
        outgoing_handler::handle(req, Some(opts)).map_err(|code| error_code(code, &host))?;

    // Send the body (if any), then finish it so the host ends the request.
    {
        let stream = outgoing_body
            .write()
            .map_err(|()| HttpError::Protocol("request body stream unavailable".into()))?;
        if let Some(bytes) = body {
            for chunk in bytes.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    // The request may have failed already (e.g. denied):
                    // prefer the response's reason over the stream error.
                    drop(stream);
                    let _ = types::OutgoingBody::finish(outgoing_body, None);
                    return match wait(&future, &host) {
                        Err(err) => Err(err),
                        Ok(_) => Err(HttpError::Transport(format!(
                            "sending the request body failed: {}",
                            stream_error(e)
                        ))),
                    };
                }
            }
        }
    }
    if let Err(code) = types::OutgoingBody::finish(outgoing_body, None) {
        // Surface the response's own error when there is one.
        wait(&future, &host)?;
        return Err(error_code(code, &host));
    }

    let response = wait(&future, &host)?;
    Ok((response, host))
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".into(),
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    }
}

fn wait(
    future: &types::FutureIncomingResponse,
    host: &str,
) -> Result<types::IncomingResponse, HttpError> {
    loop {
        if let Some(result) = future.get() {
            return match result {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(code)) => Err(error_code(code, host)),
                Err(()) => Err(HttpError::Protocol("response already taken".into())),
            };
        }
        future.subscribe().block();
    }
}

fn read_body(
    response: &types::IncomingResponse,
    limit: usize,
    host: &str,
) -> Result<Vec<u8>, HttpError> {
    let body = response
        .consume()
        .map_err(|()| HttpError::Protocol("response body already taken".into()))?;
    let mut out = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| HttpError::Protocol("response body stream unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if out.len() + chunk.len() > limit {
                        return Err(HttpError::TooLarge { limit });
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Transport(format!(
                        "reading the response from `{host}` failed: {}",
                        e.to_debug_string()
                    )))
                }
            }
        }
    }
    let _ = types::IncomingBody::finish(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_wasi_parts() {
        let t = parse_url("http://127.0.0.1:8080/api/escrow?x=1#frag").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.path_with_query, "/api/escrow?x=1");
        let t = parse_url("https://example.com").unwrap();
        assert_eq!(t.path_with_query, "/");
        let t = parse_url("https://[::1]:443?q").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.path_with_query, "/?q");
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("https://u:p@x/").is_err());
        assert!(parse_url("https:///x").is_err());
    }
}
