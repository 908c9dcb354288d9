//! Spot checks re-run by a verifier. A client with `[verify] verifiers`
//! sends a drawn spot check's second execution to one of them instead of
//! to another provider (a replica like any other: quoted, escrowed, held,
//! compared and paid from the verification price); when the replicas
//! agree it hands the verifier the audited provider's signed result
//! ([`JobBody::Audit`]) and the verifier, having checked that both are the
//! same execution, signs and gossips its `verified` attestation.
//! The draw stays with the client: only a job's client sees the job, and
//! the provider must not learn which of its jobs are checked.

use super::{ClientError, JobClient, JobOutcome};
use crate::p2p::protocol::{ErrorCode, JobBody, JobMessage, SignedResult};
use crate::p2p::PeerId;
use serde::Serialize;

/// How many times an audit refused for want of payment is asked (the
/// receipt that tells the verifier it was paid may still be in flight).
const AUDIT_ATTEMPTS: u32 = 5;

/// What the verifier that re-ran a spot check said of the audited result.
#[derive(Debug, Clone, Serialize)]
pub struct AuditNote {
    /// The verifier's peer id.
    pub verifier: String,
    /// Whether it found the same output and trace (`None`: it was not
    /// asked, or did not answer; see `error`).
    pub agreed: Option<bool>,
    /// Whether it returned a signed attestation of the audited provider.
    pub attested: bool,
    /// Why it was not asked or did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JobClient {
    /// The trusted verifiers that may re-run a spot check: `[verify]
    /// verifiers`, parsed.
    pub(super) fn verifiers(&self) -> Vec<PeerId> {
        self.inner
            .verify
            .verifiers
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Asks `check`'s verifier to audit `audited` (the other replica's
    /// signed result); `None` when `check` did not run on a verifier.
    pub(super) async fn audit(
        &self,
        check: &JobOutcome,
        audited: &SignedResult,
        agreed_here: bool,
    ) -> Option<AuditNote> {
        if !self.verifiers().contains(&check.provider) {
            return None;
        }
        let verifier = check.provider;
        let mut note = AuditNote {
            verifier: verifier.to_string(),
            agreed: None,
            attested: false,
            error: None,
        };
        if !agreed_here {
            // A disagreement is the referee's to rule on and attest: the
            // verifier is a party to it.
            note.error = Some("the replicas disagreed: the referee ruled".into());
            return Some(note);
        }
        // The verifier answers only once it knows its run is paid, and it
        // learns that from this client's receipt, which is sent in the
        // background when the replica settles and may still be on its way
        // (another protocol, another stream): a `PaymentRequired` refusal
        // is asked again a few times, 0.2 s, 0.4 s, ... apart.
        let mut answer = None;
        for attempt in 1..=AUDIT_ATTEMPTS {
            let msg = JobMessage::new(JobBody::Audit {
                job_id: check.signed.payload.job_id.clone(),
                result: Box::new(audited.clone()),
            });
            let reply = self.inner.net.verify_request(verifier, msg).await;
            let unpaid = matches!(&reply, Ok(JobMessage { body: JobBody::Error(e), .. }) if e.code == ErrorCode::PaymentRequired);
            answer = Some(reply);
            if !unpaid || attempt == AUDIT_ATTEMPTS {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await;
        }
        let Some(answer) = answer else {
            return Some(note);
        };
        match answer {
            Ok(JobMessage {
                body:
                    JobBody::Audited {
                        agreed,
                        attestation,
                        ..
                    },
                ..
            }) => {
                note.agreed = Some(agreed);
                note.attested = attestation.is_some_and(|a| {
                    a.verify().is_ok_and(|signer| signer == verifier)
                        && a.payload.subject == audited.payload.provider
                });
            }
            Ok(JobMessage {
                body: JobBody::Error(e),
                ..
            }) => note.error = Some(format!("verifier {verifier} refused: {}", e.message)),
            Ok(other) => {
                note.error = Some(format!(
                    "verifier {verifier} answered an audit with {:?}",
                    other.job_id()
                ))
            }
            Err(e) => note.error = Some(format!("verifier {verifier}: {e}")),
        }
        if let Some(e) = &note.error {
            tracing::warn!(%verifier, error = %e, "audit not answered");
        }
        Some(note)
    }
}

/// Whether a failed spot-check replica on a verifier should be re-run on
/// another provider instead: no trusted verifier serves the model now, or
/// none quoted within budget, or every one tried failed or refused (its
/// job was refunded). Not when the client itself failed (store, payment).
pub(super) fn verifier_unavailable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::NoProviders { .. }
            | ClientError::NoQuotes { .. }
            | ClientError::OverBudget { .. }
            | ClientError::ProvidersFailed { .. }
            | ClientError::Failed { .. }
            | ClientError::Rejected { .. }
    )
}
