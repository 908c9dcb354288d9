//! Jobs as the store records them: state, provider, the price of the
//! accepted quote (a provider's own jobs: the escrow it is paid through),
//! the verification verdict the lifecycle wrote in the transition log, and,
//! for one job, that log, the quotes, the escrows and the signed result.

use super::{authorize, blocking, clip, limit, money, reply, ApiError, ApiState};
use crate::p2p::protocol::{decode, SignedResult};
use crate::sdk::Infernet;
use crate::store::{EscrowRecord, JobEvent, JobRecord, JobState, StoreError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

/// Jobs listed when `limit` is not given.
const DEFAULT_JOBS: usize = 50;
/// Most transition-log rows, quotes or escrows shown for one job.
const MAX_DETAIL_ROWS: usize = 500;

/// `GET /dashboard/api/jobs?limit=N` (N at most 200), newest first.
pub(super) async fn list(State(s): State<ApiState>, headers: HeaderMap, uri: Uri) -> Response {
    let n = limit(uri.query(), DEFAULT_JOBS);
    let r = match authorize(&s, &headers) {
        Ok(()) => {
            blocking(&s, move |node| {
                let jobs = node.jobs(n)?;
                let rows = jobs
                    .iter()
                    .map(|j| summary(node, j))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok::<_, StoreError>(serde_json::json!({ "jobs": rows }))
            })
            .await
        }
        Err(e) => Err(e),
    };
    reply(r)
}

/// `GET /dashboard/api/jobs/{id}`.
pub(super) async fn detail(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = match authorize(&s, &headers) {
        Ok(()) => {
            blocking(&s, move |node| {
                let Some(job) = node.store().jobs().get(&id)? else {
                    return Ok(None);
                };
                Ok::<_, StoreError>(Some(full(node, &job)?))
            })
            .await
        }
        Err(e) => Err(e),
    };
    reply(r.and_then(|v| {
        v.ok_or_else(|| {
            let mut e = ApiError::bad_request("job_not_found", "no such job on this node");
            e.status = StatusCode::NOT_FOUND;
            e
        })
    }))
}

/// One row of the list.
fn summary(node: &Infernet, j: &JobRecord) -> Result<serde_json::Value, StoreError> {
    let store = node.store();
    let events = store.jobs().events(&j.id)?;
    let price = match &j.quote_id {
        Some(q) => store
            .quotes()
            .get(q)?
            .map(|q| money(q.price.into(), &q.currency)),
        None => None,
    };
    let price = match price {
        Some(p) => Some(p),
        None => store
            .escrows()
            .by_job(&j.id)?
            .first()
            .map(|e| money(e.amount.into(), &e.currency)),
    };
    Ok(serde_json::json!({
        "id": j.id,
        "role": j.role.as_str(),
        "model": clip(&j.model, 128),
        "state": j.state.as_str(),
        "provider": j.provider_peer,
        "client": j.client_peer,
        "price": price,
        "verification": verdict(j.state, &events),
        "attempts": j.attempts,
        "error": j.error.as_deref().map(|e| clip(e, 500)),
        "created_at_ms": j.created_at_ms,
        "updated_at_ms": j.updated_at_ms,
    }))
}

/// A job with its log, quotes, escrows and signed result.
fn full(node: &Infernet, j: &JobRecord) -> Result<serde_json::Value, StoreError> {
    let store = node.store();
    let mut v = summary(node, j)?;
    let events: Vec<serde_json::Value> = store
        .jobs()
        .events(&j.id)?
        .iter()
        .take(MAX_DETAIL_ROWS)
        .map(|e| {
            serde_json::json!({
                "from": e.from.map(JobState::as_str),
                "to": e.to.as_str(),
                "detail": e.detail.as_deref().map(|d| clip(d, 1000)),
                "at_ms": e.at_ms,
            })
        })
        .collect();
    let quotes: Vec<serde_json::Value> = store
        .quotes()
        .for_job(&j.id)?
        .iter()
        .take(MAX_DETAIL_ROWS)
        .map(|q| {
            serde_json::json!({
                "provider": q.provider_peer,
                "price": money(q.price.into(), &q.currency),
                "breakdown": q.breakdown.iter().take(16).map(|(k, n)| {
                    serde_json::json!({"name": clip(k, 64), "price": money((*n).into(), &q.currency)})
                }).collect::<Vec<_>>(),
                "accepted": q.accepted,
                "expires_at_ms": q.expires_at_ms,
            })
        })
        .collect();
    let escrows: Vec<serde_json::Value> = store
        .escrows()
        .by_job(&j.id)?
        .iter()
        .take(MAX_DETAIL_ROWS)
        .map(escrow_json)
        .collect();
    v["events"] = events.into();
    v["quotes"] = quotes.into();
    v["escrows"] = escrows.into();
    v["result"] = j.result.as_ref().map(result_json).into();
    Ok(v)
}

/// What the signed result says (who, which backend, usage), never the
/// output itself.
fn result_json(stored: &serde_json::Value) -> serde_json::Value {
    let signed = stored
        .get("signed_cbor")
        .and_then(|v| v.as_str())
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| decode::<SignedResult>(&b).ok());
    match signed {
        Some(s) => {
            let p = &s.payload;
            serde_json::json!({
                "provider": p.provider,
                "model": clip(&p.model_id, 128),
                "output_hash": clip(&p.output_hash, 80),
                "backend": {
                    "name": clip(&p.backend.name, 64),
                    "version": clip(&p.backend.version, 32),
                    "sha256": clip(&p.backend.sha256, 64),
                },
                "usage": {"input_tokens": p.usage.input_tokens, "output_tokens": p.usage.output_tokens},
                "trace_root": p.trace_root.as_deref().map(|t| clip(t, 100)),
                "proof": stored.get("proof").map(|_| true).unwrap_or(false),
                "signed_at_ms": p.timestamp_ms,
            })
        }
        None => serde_json::json!({
            "output_hash": stored.get("output_hash").and_then(|v| v.as_str()).map(|h| clip(h, 80)),
        }),
    }
}

/// An escrow row as the page shows it.
pub(super) fn escrow_json(e: &EscrowRecord) -> serde_json::Value {
    serde_json::json!({
        "id": clip(&e.id, 100),
        "kind": e.kind.as_str(),
        "job_id": e.job_id,
        "adapter": clip(&e.adapter, 64),
        "escrow_id": e.escrow_id.as_deref().map(|x| clip(x, 100)),
        "amount": money(e.amount.into(), &e.currency),
        "depositor": clip(&e.depositor, 100),
        "beneficiary": clip(&e.beneficiary, 100),
        "provider": e.provider_peer,
        "client": e.client_peer,
        "status": clip(&e.status, 32),
        "confirmed_by": e.confirmed_by,
        "expires_at_ms": e.expires_at_ms,
        "updated_at_ms": e.updated_at_ms,
    })
}

/// How the result was checked, as the lifecycle logged it: the
/// `verification: ...` note of the last step, the dispute states, or
/// `pending` while the job runs.
fn verdict(state: JobState, events: &[JobEvent]) -> Option<String> {
    let noted = events.iter().rev().find_map(|e| {
        let d = e.detail.as_deref()?;
        let at = d.find("verification: ")?;
        let rest = &d[at + "verification: ".len()..];
        Some(clip(rest.split(';').next().unwrap_or(rest).trim(), 200))
    });
    match (noted, state) {
        (_, JobState::Disputed | JobState::Slashed) => Some(state.as_str().into()),
        (Some(n), _) => Some(n),
        (None, s) if s.is_terminal() || matches!(s, JobState::Failed) => None,
        (None, _) => Some("pending".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;
    use crate::store::{JobEvent, JobState};

    fn ev(detail: &str) -> JobEvent {
        JobEvent {
            seq: 1,
            job_id: "j".into(),
            from: Some(JobState::Delivered),
            to: JobState::Settled,
            detail: Some(detail.into()),
            at_ms: 0,
        }
    }

    #[test]
    fn the_verdict_is_the_logged_note() {
        let e = [ev("verification: none; released 0.0001 USD")];
        assert_eq!(verdict(JobState::Settled, &e).as_deref(), Some("none"));
        let e = [ev("verification: replicate(2): agreed by 2 providers")];
        assert_eq!(
            verdict(JobState::Settled, &e).as_deref(),
            Some("replicate(2): agreed by 2 providers")
        );
        assert_eq!(verdict(JobState::Running, &[]).as_deref(), Some("pending"));
        assert_eq!(verdict(JobState::Failed, &[]), None);
        assert_eq!(verdict(JobState::Slashed, &e).as_deref(), Some("slashed"));
    }
}
