//! A verifier's side of `/infernet/verify/1` (`infernet verifier start`):
//! a client whose spot check it re-ran (a job like any other, paid from
//! the verification price) hands it the audited provider's result; the
//! verifier checks that both results are the same execution of the same
//! job for that client, compares output and kernel trace, and on agreement
//! signs, keeps and gossips a `verified` attestation of the provider. A
//! disagreement is the client's referee's to rule on (the verifier is a
//! party to it) and the referee attests the ruling.

use super::*;
use crate::p2p::attestation::{Outcome, SignedAttestation};

impl ProviderHandler {
    /// Makes this node a verifier: it answers [`JobBody::Audit`].
    pub fn set_verifier(&self) {
        self.inner.verifier.store(true, Ordering::Relaxed);
    }

    /// Serves a client's audit of `result` against this verifier's own
    /// run of job `job_id`.
    pub(super) async fn audit(
        &self,
        from: PeerId,
        job_id: String,
        result: SignedResult,
    ) -> Result<JobMessage, ProviderError> {
        if !self.inner.verifier.load(Ordering::Relaxed) {
            return Err(ProviderError::Unsupported(
                "this node is not a verifier (`infernet verifier start`)".into(),
            ));
        }
        let inner = self.inner.clone();
        let id = job_id.clone();
        let (mine, provider) =
            blocking(move || inner.audit_pair(from, &id, &result).map(|m| (m, result))).await?;
        let agreed = mine.payload.agrees_with(&provider.payload);
        let attestation = match (agreed, self.inner.referee.get().and_then(|r| r.network())) {
            (true, Some(net)) => {
                self.attest(
                    &net,
                    &provider.payload.provider,
                    &provider.payload.job_id,
                    Outcome::Verified,
                    None,
                )
                .await
            }
            _ => None,
        };
        tracing::info!(job = %job_id, provider = %provider.payload.provider, agreed, "audited");
        Ok(JobMessage::new(JobBody::Audited {
            job_id,
            agreed,
            attestation: attestation.map(Box::new),
        }))
    }

    /// Signs a first-hand verified outcome about `provider`'s job, keeps
    /// it and gossips it; `None` (logged) when it could not be signed.
    pub(super) async fn attest(
        &self,
        net: &crate::p2p::NetworkHandle,
        provider: &str,
        job: &str,
        outcome: Outcome,
        evidence: Option<String>,
    ) -> Option<SignedAttestation> {
        use crate::verify::reputation;
        let signed =
            match reputation::sign(&self.inner.key, provider, job, outcome, evidence, now_ms()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(job, error = %e, "attestation not made");
                    return None;
                }
            };
        let (store, kept) = (self.inner.store.clone(), signed.clone());
        let recorded = blocking(move || {
            reputation::record(&store, &kept, crate::store::now_ms())
                .map_err(|e| ProviderError::Unsupported(e.to_string()))
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(job, error = %e, "attestation not recorded");
        }
        if let Err(e) = net.publish_attestation(signed.clone()).await {
            tracing::debug!(job, error = %e, "attestation not gossiped");
        }
        Some(signed)
    }
}

impl Inner {
    /// This verifier's signed result of `job_id`, when the job is `from`'s,
    /// delivered and paid (its escrow released, when it had one), and `audited` is another provider's signed result of
    /// the same execution (model, weights, plugin, input, parameters) for
    /// the same client.
    fn audit_pair(
        &self,
        from: PeerId,
        job_id: &str,
        audited: &SignedResult,
    ) -> Result<SignedResult, ProviderError> {
        let invalid = |m: String| ProviderError::Unsupported(m);
        let record = self
            .store
            .jobs()
            .get(job_id)?
            .filter(|r| {
                r.role == JobRole::Provider && r.client_peer.as_deref() == Some(&from.to_string())
            })
            .ok_or_else(|| ProviderError::UnknownJob(job_id.to_string()))?;
        // Paid first: a client that refunded the re-run gets no audit.
        if let Some(earn) = self.store.escrows().get(job_id)? {
            let status = match earn.confirmed_by.as_deref() {
                Some("status") => self.adapter_status(&earn),
                _ => None,
            }
            .unwrap_or_else(|| earn.status.clone());
            if !matches!(status.as_str(), "released" | "settled") {
                return Err(ProviderError::PaymentRequired(format!(
                    "job {job_id} is not paid ({status}): release its escrow, then ask for the audit"
                )));
            }
        }
        let mine = match stored_outcome(&record)?.body {
            JobBody::Result { signed, .. } => signed,
            _ => return Err(ProviderError::CorruptResult(job_id.to_string())),
        };
        let provider = audited
            .verify()
            .map_err(|error| ProviderError::BadSignature {
                what: "the audited result",
                error,
            })?;
        if provider == self.key.public().to_peer_id() {
            return Err(invalid(
                "that result is this verifier's own: audit another provider's".into(),
            ));
        }
        if audited.payload.client.as_deref() != Some(&from.to_string()) {
            return Err(invalid(format!(
                "the audited result of job {} is not for you",
                audited.payload.job_id
            )));
        }
        match (mine.payload.execution(), audited.payload.execution()) {
            (Some(a), Some(b)) if a == b => Ok(mine),
            (Some(_), Some(_)) => Err(invalid(format!(
                "the audited result is not of the job this verifier ran as {job_id} \
                 (model, weights, plugin, input or parameters differ)"
            ))),
            _ => Err(invalid(
                "the audited result does not bind its weights, input and parameters".into(),
            )),
        }
    }
}
