//! A minimal client of Supabase's REST API (PostgREST behind the gateway)
//! for the two calls the registry makes: read the view of active nodes and
//! call `register_node`.
//!
//! One HTTP/1.1 connection per call (a call a minute needs no pool), TLS
//! with the webpki roots for `https`, every call bounded in time and in the
//! size of what it reads. PostgREST's conventions: `apikey` and
//! `Authorization: Bearer` headers, errors as
//! `{"code","message","details","hint"}` with the status PostgREST maps
//! the SQLSTATE to (`PT429` → 429, ...).

use super::record::SignedRecord;
use super::RegistryError;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The columns a client reads (`select=`); the signed record is the truth,
/// the others are compared with it.
pub const COLUMNS: &str =
    "peer_id,multiaddrs,models,contract_version,protocol_version,record,signature,last_seen,expires_at";
/// The view of active rows.
pub const VIEW: &str = "active_bootstrap_nodes";
/// Rows read per fetch, newest heartbeat first.
pub const FETCH_LIMIT: usize = 200;
/// The largest answer read (200 rows of at most ~9 KiB each fit).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Each call, connect to last byte.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The anon key: public by design, still kept out of logs and `Debug`.
#[derive(Clone)]
pub struct AnonKey(String);

impl AnonKey {
    /// Wraps the key read from the environment.
    pub fn new(key: String) -> AnonKey {
        AnonKey(key)
    }
}

impl std::fmt::Debug for AnonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnonKey(<redacted>)")
    }
}

/// One row of the view, as PostgREST returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    /// Column `peer_id`.
    pub peer_id: String,
    /// Column `multiaddrs`.
    #[serde(default)]
    pub multiaddrs: Vec<String>,
    /// Column `models`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Column `contract_version`.
    #[serde(default)]
    pub contract_version: String,
    /// Column `protocol_version`.
    #[serde(default)]
    pub protocol_version: String,
    /// The signed record's text.
    pub record: String,
    /// Its signature, hex.
    pub signature: String,
}

/// PostgREST's error body.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    hint: Option<String>,
}

/// The REST endpoint of one Supabase project.
#[derive(Clone)]
pub struct Rest {
    scheme_https: bool,
    host: String,
    port: u16,
    authority: String,
    key: AnonKey,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("authority", &self.authority)
            .field("https", &self.scheme_https)
            .field("key", &self.key)
            .finish()
    }
}

impl Rest {
    /// The project at `url` (validated by the config), called with `key`.
    pub fn new(url: &str, key: AnonKey) -> Result<Rest, RegistryError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| RegistryError::Config(format!("registry.url `{url}`: {e}")))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| RegistryError::Config(format!("registry.url `{url}` has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.clone());
        let tls = https.then(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            if let Ok(c) = &mut config {
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            config.map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
        });
        let tls = tls
            .transpose()
            .map_err(|e| RegistryError::Config(format!("TLS setup: {e}")))?;
        Ok(Rest {
            scheme_https: https,
            host,
            port,
            authority,
            key,
            tls,
        })
    }

    /// The active rows, newest heartbeat first, at most [`FETCH_LIMIT`]; a
    /// row of the wrong shape is one bad row (`Err` with why), not a bad
    /// answer.
    pub async fn active_rows(&self) -> Result<Vec<Result<Row, String>>, RegistryError> {
        let path =
            format!("/rest/v1/{VIEW}?select={COLUMNS}&order=last_seen.desc&limit={FETCH_LIMIT}");
        let body = self.call(Method::GET, &path, None).await?;
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::BadAnswer(format!("rows are not a JSON array: {e}")))?;
        Ok(rows
            .into_iter()
            .take(FETCH_LIMIT)
            .map(|r| serde_json::from_value(r).map_err(|e| format!("row: {e}")))
            .collect())
    }

    /// Calls `register_node` with a signed record.
    pub async fn register(
        &self,
        record: &SignedRecord,
    ) -> Result<serde_json::Value, RegistryError> {
        let body =
            serde_json::to_vec(record).map_err(|e| RegistryError::BadAnswer(e.to_string()))?;
        let answer = self
            .call(Method::POST, "/rest/v1/rpc/register_node", Some(body))
            .await?;
        serde_json::from_slice(&answer)
            .map_err(|e| RegistryError::BadAnswer(format!("register_node answered non-JSON: {e}")))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, RegistryError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(method, path, body))
            .await
            .map_err(|_| RegistryError::Unreachable(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, RegistryError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            RegistryError::Unreachable(format!("{}:{}: {e}", self.host, self.port))
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header("apikey", &self.key.0)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.key.0),
            )
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| RegistryError::Config(format!("request: {e}")))?;
        let res = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| RegistryError::Config(format!("TLS server name: {e}")))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| unreachable(&e))?;
                send(hyper_util::rt::TokioIo::new(stream), req).await
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await,
        }
        .map_err(|e| unreachable(&e))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| RegistryError::BadAnswer(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status, &body))
    }
}

async fn send<T>(
    io: T,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await;
    if res.is_err() {
        driver.abort();
    }
    res
}

/// The error PostgREST (or the gateway) answered, in a bounded message.
fn api_error(status: StatusCode, body: &[u8]) -> RegistryError {
    let parsed: Option<ApiError> = serde_json::from_slice(body).ok();
    let clip = |s: String| s.chars().take(300).collect::<String>();
    let (code, message) = match parsed {
        Some(e) => (
            e.code.unwrap_or_default(),
            clip(match e.hint {
                Some(h) if !h.is_empty() => format!("{} ({h})", e.message.unwrap_or_default()),
                _ => e.message.unwrap_or_default(),
            }),
        ),
        None => (
            String::new(),
            clip(String::from_utf8_lossy(body).into_owned()),
        ),
    };
    RegistryError::Refused {
        status: status.as_u16(),
        code,
        message,
    }
}
