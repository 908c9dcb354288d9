//! The dashboard a node serves at `/`: one page of plain JavaScript
//! (`assets/`, embedded in the binary: no CDN, no external font, no inline
//! script, a strict Content-Security-Policy) over read-only JSON under
//! `/dashboard/api/`: the network (peers, providers' adverts with their
//! reputation and stake), jobs with their transition log, the loaded
//! plugins, the wallet (adapters, ledger balances, escrows, earnings). The
//! page's chat playground spends through the API itself
//! (`/v1/chat/completions` or `/v1/completions`, streamed), never through
//! an endpoint of its own. With `[[api.keys]]` every JSON endpoint wants a
//! bearer key, checked like the API's; the page, its assets and
//! `/dashboard/api/session` (whether a key is needed) are public and carry
//! no data. Nothing here writes.

mod jobs;
mod network;
mod wallet;

use super::error::ApiError;
use super::ApiState;
use crate::sdk::Infernet;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const PLAY_JS: &str = include_str!("assets/play.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Same-origin everything; no inline script or style, no plugins, no
/// framing, no form posts.
pub(super) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Most rows one list answer carries.
const MAX_LIMIT: usize = 200;

/// The dashboard's routes, merged into the API's router.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/play.js",
            get(|| async { asset("text/javascript; charset=utf-8", PLAY_JS) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/dashboard/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .route("/dashboard/api/session", get(session))
        .route("/dashboard/api/overview", get(network::overview))
        .route("/dashboard/api/network", get(network::network))
        .route("/dashboard/api/jobs", get(jobs::list))
        .route("/dashboard/api/jobs/{id}", get(jobs::detail))
        .route("/dashboard/api/plugins", get(wallet::plugins))
        .route("/dashboard/api/wallet", get(wallet::wallet))
}

/// The headers every dashboard answer carries.
fn harden(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    harden(body.into_response(), content_type)
}

/// A JSON answer (or the API's error object), hardened.
fn reply(r: Result<serde_json::Value, ApiError>) -> Response {
    let resp = match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    };
    harden(resp, "application/json")
}

/// Whether the JSON endpoints want a key: public, carries nothing else.
async fn session(State(s): State<ApiState>) -> Response {
    reply(Ok(serde_json::json!({"key_required": !s.keys.is_empty()})))
}

/// Runs `f` on the node off the async threads (the store is SQLite).
async fn blocking<T, E>(
    s: &ApiState,
    f: impl FnOnce(&Infernet) -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let node = s.node.clone();
    tokio::task::spawn_blocking(move || f(&node))
        .await
        .map_err(|e| ApiError::internal(format!("dashboard worker: {e}")))?
        .map_err(|e| ApiError::internal(format!("dashboard: {e}")))
}

/// `?limit=N` from a query string: `default` when absent, at most
/// [`MAX_LIMIT`], at least 1.
fn limit(query: Option<&str>, default: usize) -> usize {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, MAX_LIMIT)
}

/// Checks the key like the API does (keyless: loopback names, same origin).
fn authorize(s: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    s.authorize(headers).map(|_| ())
}

/// `minor` units of `code` in the API's money shape, for sums past `u64` too.
fn money(minor: u128, code: &str) -> serde_json::Value {
    crate::payments::money_json(minor, code)
}

/// At most `max` characters of `s` (free text from the store or the network).
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{clip, limit, MAX_LIMIT};

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None, 50), 50);
        assert_eq!(limit(Some("limit=7"), 50), 7);
        assert_eq!(limit(Some("x=1&limit=100000"), 50), MAX_LIMIT);
        assert_eq!(limit(Some("limit=0"), 50), 1);
        assert_eq!(limit(Some("limit=-3"), 50), 50);
    }

    #[test]
    fn money_is_the_apis_shape_past_u64_too() {
        assert_eq!(
            super::money(250, "USD"),
            serde_json::json!({"amount": "0.00025", "currency": "USD", "minor": "250"})
        );
        let wei = u128::from(u64::MAX) * 10;
        assert_eq!(super::money(wei, "ETH")["minor"], wei.to_string());
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hi", 2), "hi");
    }

    #[test]
    fn assets_have_no_inline_script_and_no_remote_url() {
        for a in [super::INDEX, super::APP_JS, super::PLAY_JS, super::STYLE] {
            assert!(!a.contains("http://") && !a.contains("https://"), "{a}");
            assert!(!a.contains("innerHTML"), "data goes in with textContent");
        }
        assert!(!super::INDEX.contains("<script>"));
        assert!(!super::INDEX.contains("style="));
    }
}
