//! The plugins this node loaded (backends, pricing, payment: manifest name,
//! version, sha256, world, the contract version serving it, the publisher's
//! signature, the limits in effect) and the wallet (payment adapters with
//! this node's account, its local-ledger balances, escrows, earnings). No
//! secret leaves: adapter secrets are environment-variable names the page
//! never sees, and no config value is sent.

use super::jobs::escrow_json;
use super::{authorize, blocking, clip, limit, money, reply, ApiState};
use crate::config::LimitsConfig;
use crate::payments::{ledger, Confirm};
use crate::runtime::manifest::Manifest;
use crate::runtime::version::{contracts, serving};
use crate::runtime::Limits;
use crate::sdk::Infernet;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use std::path::Path;

/// Escrows listed when `limit` is not given.
const DEFAULT_ESCROWS: usize = 50;

/// `GET /dashboard/api/plugins`.
pub(super) async fn plugins(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let r = match authorize(&s, &headers) {
        Ok(()) => blocking(&s, |node| Ok::<_, String>(plugins_json(node))).await,
        Err(e) => Err(e),
    };
    reply(r)
}

fn plugins_json(node: &Infernet) -> serde_json::Value {
    let config = node.config();
    let mut out = Vec::new();
    if let Some(n) = node.node() {
        for (slot, cfg) in n.backends().iter().zip(&config.backend) {
            let l = &slot.plugin.loaded;
            let mut v = manifest_json(
                &l.manifest,
                Some(l.contract.to_string()),
                cfg.publisher_key.as_deref(),
                &cfg.limits,
            );
            v["models"] = slot.plugin.model_ids().into();
            out.push(v);
        }
        if let (Some(_), Some(p)) = (n.pricing(), &config.pricing) {
            out.push(read_manifest(
                &p.plugin,
                p.publisher_key.as_deref(),
                &p.limits,
            ));
        }
    }
    if node.payments().is_some() {
        for p in &config.payment {
            out.push(read_manifest(
                &p.plugin,
                p.publisher_key.as_deref(),
                &p.limits,
            ));
        }
    }
    let contracts: Vec<String> = contracts().iter().map(ToString::to_string).collect();
    serde_json::json!({"contracts": contracts, "plugins": out})
}

/// A pricing or payment plugin's manifest, read again from its package (the
/// node keeps only the compiled component; the wasm was hash-checked
/// against this manifest at load).
fn read_manifest(path: &Path, pinned: Option<&str>, limits: &LimitsConfig) -> serde_json::Value {
    match Manifest::read(path) {
        Ok((m, _)) => {
            let contract = serving(&contracts(), std::slice::from_ref(&m.wit));
            manifest_json(&m, contract.map(|v| v.to_string()), pinned, limits)
        }
        Err(e) => serde_json::json!({"error": clip(&e.to_string(), 300)}),
    }
}

fn manifest_json(
    m: &Manifest,
    contract: Option<String>,
    pinned: Option<&str>,
    limits: &LimitsConfig,
) -> serde_json::Value {
    serde_json::json!({
        "name": clip(&m.name, 64),
        "version": m.version.to_string(),
        "kind": m.kind.to_string(),
        "sha256": clip(&m.sha256, 64),
        "wit": m.wit.to_string(),
        "contract": contract,
        "signature": m.signature.as_ref().map(|s| serde_json::json!({
            "publisher": clip(&s.publisher, 64),
            "signature": clip(&s.signature, 128),
            "pinned": pinned.is_some(),
        })),
        "limits": limits_json(&limits.limits()),
    })
}

fn limits_json(l: &Limits) -> serde_json::Value {
    const MIB: f64 = 1024.0 * 1024.0;
    serde_json::json!({
        "memory_mb": l.memory_bytes as f64 / MIB,
        "wall_time_ms": l.wall_time.as_millis() as u64,
        "kernel_time_ms": l.kernel_time.as_millis() as u64,
        "kernel_work_mflop": l.kernel_work.map(|w| w / 1_000_000),
        "tensor_mb": l.tensor_bytes as f64 / MIB,
        "tensor_handles": l.tensor_handles,
        "copy_out_mb": l.copy_out_bytes as f64 / MIB,
        "stream_tokens": l.stream_tokens,
        "stream_mb": l.stream_bytes as f64 / MIB,
        "fuel": l.fuel,
    })
}

/// `GET /dashboard/api/wallet?limit=N` (N escrows, at most 200).
pub(super) async fn wallet(State(s): State<ApiState>, headers: HeaderMap, uri: Uri) -> Response {
    let n = limit(uri.query(), DEFAULT_ESCROWS);
    let r = match authorize(&s, &headers) {
        Ok(()) => blocking(&s, move |node| wallet_json(node, n)).await,
        Err(e) => Err(e),
    };
    reply(r)
}

fn wallet_json(node: &Infernet, n: usize) -> Result<serde_json::Value, String> {
    let mut adapters = Vec::new();
    if let Some(p) = node.payments() {
        for a in p.adapters() {
            // Only the local ledger can be read from here; other adapters
            // keep balances where they live (a chain, a processor).
            let balances = if a.plugin.name() == ledger::LEDGER {
                let rows =
                    ledger::balances(a.plugin.kv(), Some(&a.account)).map_err(|e| e.to_string())?;
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .take(64)
                    .map(|(_, c, minor)| money((*minor).into(), c))
                    .collect();
                Some(rows)
            } else {
                None
            };
            adapters.push(serde_json::json!({
                "name": clip(a.plugin.name(), 64),
                "account": clip(&a.account, 128),
                "confirm": match a.confirm { Confirm::Status => "status", Confirm::Client => "client" },
                "currencies": a.currencies,
                "balances": balances,
            }));
        }
    }
    let escrows: Vec<serde_json::Value> = node
        .escrows(n)
        .map_err(|e| e.to_string())?
        .iter()
        .map(escrow_json)
        .collect();
    let earnings: Vec<serde_json::Value> = node
        .earnings()
        .map_err(|e| e.to_string())?
        .iter()
        .take(super::MAX_LIMIT)
        .map(|e| {
            serde_json::json!({
                "provider": clip(&e.provider, 128),
                "released": money(e.released, &e.currency),
                "held": money(e.held, &e.currency),
                "returned": money(e.returned, &e.currency),
                "escrows": e.escrows,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "adapters": adapters,
        "escrows": escrows,
        "earnings": earnings,
    }))
}
