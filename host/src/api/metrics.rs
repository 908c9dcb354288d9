//! `GET /metrics`: the node's Prometheus metrics ([`crate::metrics`]) in
//! the text format 0.0.4, behind the same bearer keys as every endpoint.
//! Counters are recorded as things happen; the gauges the store and the
//! swarm already know (jobs by state, escrowed and settled money, connected
//! peers) are read here, at each scrape.

use super::error::ApiError;
use super::ApiState;
use crate::metrics::{Metrics, ESCROWED, JOBS, PEERS, SETTLED};
use crate::sdk::Infernet;
use crate::store::EscrowKind;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escrow statuses whose money was locked (funded, whatever came after).
const LOCKED: &[&str] = &[
    "funded", "released", "settled", "refunded", "disputed", "expired",
];

/// Escrow statuses whose money went to the provider.
const RELEASED: &[&str] = &["released", "settled"];

pub(super) async fn metrics(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let text = render(&s.node).await.map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Sets the scrape-time gauges of `node` and renders its registry.
pub async fn render(node: &Infernet) -> Result<String, String> {
    let metrics = node.metrics().clone();
    let store = node.store().clone();
    let m = metrics.clone();
    tokio::task::spawn_blocking(move || store_gauges(&m, &store))
        .await
        .map_err(|e| e.to_string())??;
    match node.network().connected_peers().await {
        Ok(peers) => metrics.set(&PEERS, &[], peers.len() as f64),
        Err(e) => tracing::debug!(error = %e, "metrics: no peer count"),
    }
    Ok(metrics.render())
}

fn store_gauges(metrics: &Metrics, store: &crate::store::Store) -> Result<(), String> {
    let jobs = store.jobs().counts().map_err(|e| e.to_string())?;
    metrics.replace(
        &JOBS,
        jobs.into_iter()
            .map(|(role, state, n)| (vec![role, state], n as f64)),
    );
    let mut escrowed: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    let mut settled: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for (kind, status, currency, minor) in store.escrows().totals().map_err(|e| e.to_string())? {
        let role = match kind {
            EscrowKind::Pay => "client",
            EscrowKind::Earn => "provider",
            EscrowKind::Stake => "stake",
        };
        let decimals = infernet_plugin_api::money::currency(&currency).map_or(0, |c| c.decimals);
        let amount = minor as f64 / 10f64.powi(i32::from(decimals));
        let key = vec![role.to_string(), currency];
        if LOCKED.contains(&status.as_str()) {
            *escrowed.entry(key.clone()).or_default() += amount;
        }
        if RELEASED.contains(&status.as_str()) {
            *settled.entry(key).or_default() += amount;
        }
    }
    metrics.replace(&ESCROWED, escrowed);
    metrics.replace(&SETTLED, settled);
    Ok(())
}
