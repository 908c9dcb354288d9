//! The OpenAI-compatible HTTP API a node serves (`[api] listen`, or
//! `infernet node start --api ADDR`): `/v1/chat/completions` and
//! `/v1/completions` (with server-sent events), `/v1/embeddings`,
//! `/v1/models` (the models the node has seen advertised, with their price
//! ranges), `/health` and `/metrics` (Prometheus, [`metrics`]). Every
//! request runs over the network through the SDK ([`Infernet`]: provider
//! selection, quote within budget, escrow, verification policy); an
//! OpenAI client works unchanged, and network
//! options ride in the body's `infernet` object. Responses say which
//! provider served, what it cost and how it was verified (an `infernet`
//! field and `x-infernet-*` headers). Errors are OpenAI's
//! `{"error": {...}}` ([`error`]). Bearer keys are checked against the
//! sha256 hashes in `[[api.keys]]`; with none, the API serves loopback only.
//!
//! Layering: above the SDK, beside the CLI; nothing below names it.

mod dashboard;
mod embed;
pub mod error;
mod guard;
pub mod metrics;
mod pipeline;
mod request;
mod spend;
mod stream;
pub mod template;
mod text;

use crate::config::{check_exposure, ApiConfig};
use crate::payments::display;
use crate::sdk::Infernet;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// Non-loopback without keys.
    #[error("refusing to serve the API on {0}")]
    Exposed(String),
    /// A key hash is not hex (the config check catches this first).
    #[error("api.keys[{0}].sha256 is not 64 hex digits")]
    BadKey(usize),
    /// The spending record or a key's limit cannot be used.
    #[error("API spending limits: {0}")]
    Spend(String),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running API server.
pub struct ApiServer {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// The base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    node: Arc<Infernet>,
    cfg: Arc<ApiConfig>,
    keys: Arc<Vec<[u8; 32]>>,
    spend: Arc<spend::Spend>,
}

impl ApiState {
    /// Checks the bearer token when keys are configured; the index of the
    /// key it matched.
    fn authorize(&self, headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
        if self.keys.is_empty() {
            guard::check_keyless(headers)?;
            return Ok(None);
        }
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing API key: send `Authorization: Bearer <key>` (a key of [[api.keys]])",
                )
            })?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every stored hash is compared in full: no early exit on a match.
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            let diff = k.iter().zip(&hash).fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(i);
            }
        }
        match found {
            Some(i) => Ok(Some(i)),
            None => Err(ApiError::unauthorized("incorrect API key")),
        }
    }

    /// [`Self::authorize`] for an endpoint that runs jobs (and spends): a
    /// `read_only` key is refused.
    fn authorize_jobs(&self, headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
        let key = self.authorize(headers)?;
        if let Some(k) = key
            .and_then(|i| self.cfg.keys.get(i))
            .filter(|k| k.read_only)
        {
            return Err(ApiError::forbidden(
                "read_only_key",
                format!(
                    "API key `{}` is read_only: it may look at this node, not run jobs",
                    k.name
                ),
            ));
        }
        Ok(key)
    }

    /// Whether an advert this node has seen lists `model`.
    async fn advertised(&self, model: &str) -> bool {
        self.node
            .network()
            .adverts()
            .await
            .is_ok_and(|ads| ads.iter().any(|a| a.models.iter().any(|m| m == model)))
    }
}

/// Serves the API for `node` on `listen`, with `node`'s `[api]` settings.
pub async fn serve(node: Arc<Infernet>, listen: SocketAddr) -> Result<ApiServer, ApiStartError> {
    let cfg = node.config().api.clone().unwrap_or_default();
    check_exposure(listen, cfg.keys.is_empty()).map_err(ApiStartError::Exposed)?;
    let mut keys = Vec::with_capacity(cfg.keys.len());
    for (i, k) in cfg.keys.iter().enumerate() {
        let bytes = hex::decode(&k.sha256).map_err(|_| ApiStartError::BadKey(i))?;
        keys.push(<[u8; 32]>::try_from(bytes).map_err(|_| ApiStartError::BadKey(i))?);
    }
    let path = node.config().node.data_dir.join(spend::SPEND_FILE);
    let spend = spend::Spend::load(&cfg, path).map_err(ApiStartError::Spend)?;
    let state = ApiState {
        node,
        cfg: Arc::new(cfg),
        keys: Arc::new(keys),
        spend: Arc::new(spend),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ApiStartError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ApiStartError::Bind {
            addr: listen,
            source,
        })?;
    let app = router(state);
    // Events are small writes: without TCP_NODELAY, Nagle and delayed ACKs
    // hold a streamed token back ~40 ms (measured: `examples/bench_api.rs`).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the API server stopped");
        }
    });
    tracing::info!(%addr, "OpenAI-compatible API listening");
    Ok(ApiServer { addr, task })
}

fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/completions", post(text::completions))
        .route("/v1/chat/completions", post(text::chat))
        .route("/v1/embeddings", post(embed::embeddings))
        .merge(dashboard::routes())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    let mut e = ApiError::bad_request("unknown_url", "no such endpoint on this node's API");
    e.status = StatusCode::NOT_FOUND;
    e
}

async fn health(State(s): State<ApiState>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "peer_id": s.node.peer_id().to_string(),
    }))
    .into_response()
}

/// Price range of one currency across adverts.
#[derive(Default)]
struct Range {
    min: u64,
    max: u64,
}

async fn models(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let adverts = s
        .node
        .network()
        .adverts()
        .await
        .map_err(|e| ApiError::internal(format!("network: {e}")))?;
    let mut seen: BTreeMap<String, (usize, BTreeMap<String, Range>)> = BTreeMap::new();
    for a in &adverts {
        for m in &a.models {
            let (n, prices) = seen.entry(m.clone()).or_default();
            *n += 1;
            let r = prices.entry(a.quote.currency.clone()).or_insert(Range {
                min: u64::MAX,
                max: 0,
            });
            r.min = r.min.min(a.quote.amount);
            r.max = r.max.max(a.quote.amount);
        }
    }
    let data: Vec<serde_json::Value> = seen
        .into_iter()
        .map(|(id, (providers, prices))| {
            let prices: Vec<serde_json::Value> = prices
                .into_iter()
                .map(|(c, r)| {
                    serde_json::json!({
                        "currency": c,
                        "min": display(r.min, &c),
                        "max": display(r.max, &c),
                        "min_minor": r.min,
                        "max_minor": r.max,
                    })
                })
                .collect();
            serde_json::json!({
                "id": id,
                "object": "model",
                "created": 0,
                "owned_by": "infernet",
                "infernet": {
                    "providers": providers,
                    "reference_job": "16 input tokens, 64 output tokens",
                    "prices": prices,
                },
            })
        })
        .collect();
    Ok(Json(serde_json::json!({"object": "list", "data": data})).into_response())
}

/// Seconds since the epoch, for `created`.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
