//! The provider's side of `/infernet/verify/1`: questions about the trace
//! of a job it delivered — from that job's client, or from a referee that
//! holds the client's ticket — answered from the kept trace and, for
//! values, by replaying the job; and, on a node serving as a referee,
//! disputes put to it by clients ([`crate::jobs::referee`]).

use super::*;
use crate::kernels::trace::{Digest, Trace, Tree};
use crate::p2p::verification::{
    ByteString, DisputeRequest, Hash32, SignedTicket, StakeRequest, TraceAnswer, TraceQuery,
};
use crate::verify::dispute::TraceOwner;

/// The last trace questioned, with its tree: a bisection asks about one
/// job some 30 times in a row.
pub(super) type TraceCache = Mutex<Option<(String, Arc<(Trace, Tree, JobRequest)>)>>;

impl Inner {
    /// A referee may question the provider about `job_id` when the job's
    /// client signed it a ticket naming it, for this job, still valid.
    pub(super) fn check_ticket(
        &self,
        from: PeerId,
        job_id: &str,
        ticket: &SignedTicket,
    ) -> Result<(), ProviderError> {
        let unknown = || ProviderError::UnknownJob(job_id.to_string());
        let record = self.store.jobs().get(job_id)?.ok_or_else(unknown)?;
        let signer = ticket.verify().map_err(|_| unknown())?;
        let t = &ticket.payload;
        let valid = record.role == JobRole::Provider
            && record.client_peer.as_deref() == Some(signer.to_string().as_str())
            && t.job_id == job_id
            && t.referee == from.to_string()
            && t.expires_ms >= now_ms();
        valid.then_some(()).ok_or_else(unknown)
    }

    /// Answers one question about a delivered job's trace.
    pub(super) fn trace_answer(
        &self,
        job_id: String,
        query: TraceQuery,
    ) -> Result<JobMessage, ProviderError> {
        let kept = self.kept_trace(&job_id)?;
        let (trace, tree, job) = &*kept;
        let owner = TraceOwner::new(trace, tree, &self.node, job);
        let nodes = |n: Vec<Digest>| TraceAnswer::Nodes(n.into_iter().map(Hash32).collect());
        let answer = match query {
            TraceQuery::Top => nodes(vec![owner.top()]),
            TraceQuery::Children { level, index } => {
                let (l, r) = owner.children(level, index).ok_or_else(|| {
                    ProviderError::Unsupported(format!("no node at level {level} has children"))
                })?;
                nodes(vec![l, r])
            }
            TraceQuery::Leaf { index } => {
                TraceAnswer::Leaf(owner.leaf(index).map(|l| encode(&l)).transpose()?)
            }
            TraceQuery::Reveal { digests, until } => {
                let wanted: Vec<Digest> = digests.iter().map(|h| h.0).collect();
                let r = owner.reveal(&wanted, until);
                TraceAnswer::Values {
                    values: r
                        .values
                        .iter()
                        .map(|v| encode(v).map(ByteString))
                        .collect::<Result<_, _>>()?,
                    derivations: r
                        .derivations
                        .iter()
                        .map(|l| encode(l).map(ByteString))
                        .collect::<Result<_, _>>()?,
                }
            }
        };
        Ok(JobMessage::new(JobBody::TraceAnswer { job_id, answer }))
    }

    /// The kept trace of a delivered job, its tree and the job itself.
    fn kept_trace(&self, job_id: &str) -> Result<Arc<(Trace, Tree, JobRequest)>, ProviderError> {
        let mut cache = self.trace_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, kept)) = &*cache {
            if id == job_id {
                return Ok(kept.clone());
            }
        }
        let unknown = || ProviderError::UnknownJob(job_id.to_string());
        let record = self.store.jobs().get(job_id)?.ok_or_else(unknown)?;
        if record.role != JobRole::Provider || record.state < JobState::Delivered {
            return Err(unknown());
        }
        let job = stored_job(&record).ok_or_else(|| {
            ProviderError::Unsupported(format!("job {job_id} was stored without its input"))
        })?;
        let trace = self.traces.get(job_id).ok_or_else(|| {
            ProviderError::Unsupported(format!("the trace of job {job_id} is no longer kept"))
        })?;
        let tree = trace.tree();
        let kept = Arc::new((trace, tree, job));
        *cache = Some((job_id.to_string(), kept.clone()));
        Ok(kept)
    }
}

/// The job a provider row was run as (its stored model, input, params).
fn stored_job(record: &JobRecord) -> Option<JobRequest> {
    let req = record.request.as_ref()?;
    let input: WireInput = serde_json::from_value(req.get("input")?.clone()).ok()?;
    let params: Vec<(String, String)> = serde_json::from_value(req.get("params")?.clone()).ok()?;
    Some(JobRequest {
        id: record.id.clone(),
        model: record.model.clone(),
        input: to_job_input(input),
        params,
    })
}

impl ProviderHandler {
    /// A client's dispute: refused unless this node serves as a referee.
    pub(super) async fn referee(
        &self,
        from: PeerId,
        job_id: String,
        dispute: DisputeRequest,
    ) -> Result<JobMessage, ProviderError> {
        let referee = self.inner.referee.get().cloned().ok_or_else(|| {
            ProviderError::Unsupported(
                "this node is not a referee ([verify] referee = true)".into(),
            )
        })?;
        let payout = dispute.payout.clone();
        let evidence = referee
            .rule(from, dispute)
            .await
            .map_err(ProviderError::Unsupported)?;
        let cheated = evidence.ruling.cheated.clone();
        let parties = evidence.parties();
        let evidence = serde_json::to_vec(&evidence)
            .map_err(|e| ProviderError::Unsupported(format!("evidence: {e}")))?;
        if let Some(net) = referee.network() {
            self.attest_ruling(&net, &parties, &cheated, &evidence)
                .await;
        }
        let slashes = match self.inner.arbiter.get().cloned() {
            Some(arbiter) if !cheated.is_empty() => {
                let (client, job, bundle) = (from.to_string(), job_id.clone(), evidence.clone());
                blocking(move || {
                    Ok(arbiter.slash(&cheated, &client, &job, &bundle, payout.as_ref()))
                })
                .await?
            }
            _ => Vec::new(),
        };
        Ok(JobMessage::new(JobBody::Ruling {
            job_id,
            evidence,
            slashes,
        }))
    }

    /// A referee's first-hand verified outcomes: for each party of its
    /// ruling, `cheated` (naming the evidence's hash) or `verified`, signed,
    /// kept and gossiped like a client's.
    async fn attest_ruling(
        &self,
        net: &crate::p2p::NetworkHandle,
        parties: &[(String, String)],
        cheated: &[String],
        evidence: &[u8],
    ) {
        use crate::p2p::attestation::Outcome;
        let hash = crate::verify::reputation::evidence_hash(evidence);
        for (provider, job) in parties {
            let outcome = match cheated.contains(provider) {
                true => Outcome::Cheated,
                false => Outcome::Verified,
            };
            self.attest(net, provider, job, outcome, Some(hash.clone()))
                .await;
        }
    }

    /// Serves a provider's stake request, on a node that holds stakes.
    pub(super) async fn stake(
        &self,
        from: PeerId,
        request: StakeRequest,
    ) -> Result<JobMessage, ProviderError> {
        let arbiter = self.arbiter_service()?;
        blocking(move || {
            arbiter
                .stake(from, request)
                .map(|s| JobMessage::new(JobBody::StakeState(Box::new(s))))
                .map_err(|e| ProviderError::Unsupported(e.to_string()))
        })
        .await
    }

    /// Makes this node an arbiter: it holds stakes and its rulings slash
    /// them.
    pub fn set_arbiter(&self, arbiter: Arc<crate::jobs::arbiter::Arbiter>) {
        let _ = self.inner.arbiter.set(arbiter);
    }

    /// The arbiter service, when this node is one.
    pub fn arbiter(&self) -> Option<Arc<crate::jobs::arbiter::Arbiter>> {
        self.inner.arbiter.get().cloned()
    }

    /// Makes this node a referee: it rules on disputes put to it.
    pub fn set_referee(&self, referee: Arc<crate::jobs::referee::Referee>) {
        let _ = self.inner.referee.set(referee);
    }
}
