//! The overview (this node, the models on the network) and the network view
//! (stored peers; providers from the signed adverts this node holds, with
//! this node's reputation score for each and the stake they advertise,
//! certified or not).

use super::super::request::Message;
use super::super::template;
use super::{authorize, blocking, clip, money, reply, ApiState};
use crate::p2p::protocol::Advert;
use crate::store::now_ms;
use crate::verify::reputation::{certified_stake, scores, Params, Score};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use std::collections::BTreeMap;

/// Most peers or providers listed.
const MAX_ROWS: usize = 500;
/// Most addresses shown per peer.
const MAX_ADDRS: usize = 4;

/// Per currency: the lowest and highest advertised price, minor units.
type Prices = BTreeMap<String, (u64, u64)>;

/// `GET /dashboard/api/overview`.
pub(super) async fn overview(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    reply(overview_json(&s, &headers).await)
}

async fn overview_json(
    s: &ApiState,
    headers: &HeaderMap,
) -> Result<serde_json::Value, super::ApiError> {
    authorize(s, headers)?;
    let adverts = adverts(s).await?;
    // Per model: providers, and the price range in each currency.
    let mut models: BTreeMap<String, (usize, Prices)> = BTreeMap::new();
    for a in adverts.iter().filter(|a| !a.verifier) {
        for m in &a.models {
            let (n, prices) = models.entry(m.clone()).or_default();
            *n += 1;
            let r = prices
                .entry(a.quote.currency.clone())
                .or_insert((u64::MAX, 0));
            r.0 = r.0.min(a.quote.amount);
            r.1 = r.1.max(a.quote.amount);
        }
    }
    let ids: Vec<String> = models.keys().take(MAX_ROWS).cloned().collect();
    // A model has a chat template here when one renders (files: off the
    // async threads).
    let chat = blocking(s, move |node| {
        let probe = [Message {
            role: "user".into(),
            content: Some("hi".into()),
        }];
        Ok::<_, String>(
            ids.iter()
                .map(|id| template::render(node.config(), id, &probe).is_ok())
                .collect::<Vec<bool>>(),
        )
    })
    .await?;
    let models: Vec<serde_json::Value> = models
        .into_iter()
        .take(MAX_ROWS)
        .zip(chat)
        .map(|((id, (providers, prices)), chat)| {
            let prices: Vec<serde_json::Value> = prices
                .into_iter()
                .map(|(c, (min, max))| {
                    serde_json::json!({
                        "currency": c,
                        "min": money(min.into(), &c),
                        "max": money(max.into(), &c),
                    })
                })
                .collect();
            serde_json::json!({"id": id, "providers": providers, "chat": chat, "prices": prices})
        })
        .collect();
    let node = &s.node;
    let roles: Vec<String> = node
        .roles()
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    Ok(serde_json::json!({
        "peer_id": node.peer_id().to_string(),
        "roles": roles,
        "version": env!("CARGO_PKG_VERSION"),
        "wit_version": crate::runtime::version::host_wit_version().to_string(),
        "api": {
            "currency": s.cfg.currency,
            "max_budget": s.cfg.max_budget,
            "verify": s.cfg.verify.as_ref().map(|v| v.to_string()),
            "keys": s.keys.len(),
        },
        "models": models,
        "providers": adverts.iter().filter(|a| !a.verifier).count(),
    }))
}

/// `GET /dashboard/api/network`.
pub(super) async fn network(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    reply(network_json(&s, &headers).await)
}

async fn network_json(
    s: &ApiState,
    headers: &HeaderMap,
) -> Result<serde_json::Value, super::ApiError> {
    authorize(s, headers)?;
    let mut adverts = adverts(s).await?;
    adverts.truncate(MAX_ROWS);
    let me = s.node.peer_id().to_string();
    let subjects: Vec<String> = adverts.iter().map(|a| a.peer_id.clone()).collect();
    let (peers, scores) = blocking(s, move |node| {
        let params = Params::from_config(&node.config().client.reputation);
        let mut peers = node.peers()?;
        peers.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
        peers.truncate(MAX_ROWS);
        let mut all = subjects;
        all.extend(peers.iter().map(|p| p.peer_id.clone()));
        all.sort();
        all.dedup();
        let scores = scores(node.store(), &me, &all, &params, now_ms())?;
        let by_peer: BTreeMap<String, Score> = all.into_iter().zip(scores).collect();
        Ok::<_, crate::store::StoreError>((peers, by_peer))
    })
    .await?;
    let score = |peer: &str| scores.get(peer).map(score_json);
    let arbiters = &s.node.config().verify.referees;
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let providers: Vec<serde_json::Value> = adverts
        .iter()
        .map(|a| {
            let stake = match certified_stake(a, arbiters, now) {
                Some(m) => Some((m, true)),
                None => a.stake.clone().map(|m| (m, false)),
            };
            serde_json::json!({
                "peer_id": a.peer_id,
                "models": a.models.iter().take(64).map(|m| clip(m, 128)).collect::<Vec<_>>(),
                "price": money(a.quote.amount.into(), &a.quote.currency),
                "capacity": a.capacity,
                "wit_version": clip(&a.wit_version, 32),
                "protocol_version": a.protocol_version,
                "stake": stake.map(|(m, certified)| {
                    let mut v = money(m.amount.into(), &m.currency);
                    v["certified"] = certified.into();
                    v
                }),
                "verifier": a.verifier,
                "untraced": a.untraced.iter().take(64).map(|m| clip(m, 128)).collect::<Vec<_>>(),
                "proofs": a.proofs.iter().take(16).map(|p| serde_json::json!({
                    "model": clip(&p.model, 128), "system": clip(&p.system, 32), "vk_id": clip(&p.vk_id, 80),
                })).collect::<Vec<_>>(),
                "advertised_at_ms": a.timestamp_ms,
                "reputation": score(&a.peer_id),
            })
        })
        .collect();
    let peers: Vec<serde_json::Value> = peers
        .iter()
        .map(|p| {
            serde_json::json!({
                "peer_id": p.peer_id,
                "addrs": p.addrs.iter().take(MAX_ADDRS).map(|a| clip(a, 200)).collect::<Vec<_>>(),
                "models": p.models.iter().take(64).map(|m| clip(m, 128)).collect::<Vec<_>>(),
                "last_seen_ms": p.last_seen_ms,
                "latency_ms": p.latency_ms,
                "successes": p.successes,
                "failures": p.failures,
                "reputation": score(&p.peer_id),
            })
        })
        .collect();
    Ok(
        serde_json::json!({"peer_id": s.node.peer_id().to_string(), "providers": providers, "peers": peers}),
    )
}

/// The adverts this node holds.
async fn adverts(s: &ApiState) -> Result<Vec<Advert>, super::ApiError> {
    s.node
        .network()
        .adverts()
        .await
        .map_err(|e| super::ApiError::internal(format!("network: {e}")))
}

fn score_json(sc: &Score) -> serde_json::Value {
    serde_json::json!({
        "mean": sc.mean,
        "lower": sc.lower,
        "barred": sc.barred,
        "verified_ok": sc.first_hand.ok + sc.third_party.ok,
        "cheats": sc.first_hand.bad + sc.third_party.bad,
        "first_hand_ok": sc.first_hand.ok,
        "third_party_ok": sc.third_party.ok,
    })
}
