//! A client's claim that a prepaid job was not delivered (the fair
//! exchange's recourse): checked against the provider's signed commitment
//! and, where this arbiter can read it, the escrow; then the provider is
//! asked to deliver through the arbiter, or its stake is forfeited.

use super::{Arbiter, ArbiterError};
use crate::p2p::protocol::{JobBody, JobMessage};
use crate::p2p::verification::SignedClaim;
use crate::p2p::PeerId;
use crate::payments::ledger::LEDGER;
use crate::store::{now_ms, StakeHeld};
use crate::worlds::payment::EscrowState;
use std::sync::Arc;
use std::time::Duration;

/// How often a provider is asked to deliver a claimed job before its
/// stake is forfeited, and the pause after each unanswered ask.
const DELIVER_ASKS: u32 = 3;
const DELIVER_PAUSE: Duration = Duration::from_secs(1);
/// How many "still running" answers are waited out (a second each).
const MAX_BUSY_ASKS: u32 = 20;
/// Bound on one `Deliver` ask.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(10);

impl Arbiter {
    /// A client's claim that a prepaid job was not delivered: checked
    /// (signed by its client, names this arbiter, carries the provider's
    /// signed commitment to that job and escrow, a stake of the provider
    /// held here; where this arbiter can read the escrow, released to the
    /// provider's address), then the provider is asked to `Deliver` until
    /// [`DELIVER_ASKS`] asks went unanswered (a job still running is
    /// waited for, up to [`MAX_BUSY_ASKS`] seconds). Its signed result for
    /// that client and job is handed to the client; no valid result
    /// forfeits its stake (the evidence: the claim and the unanswered
    /// asks).
    pub async fn claim(
        self: Arc<Self>,
        from: PeerId,
        claim: SignedClaim,
    ) -> Result<JobMessage, ArbiterError> {
        let refuse = |m: String| ArbiterError::Refused(m);
        let signer = claim
            .verify()
            .map_err(|e| refuse(format!("the claim's signature: {e}")))?;
        let c = claim.payload.clone();
        if signer != from || c.arbiter != self.me {
            return Err(refuse(
                "a claim is signed by the client sending it and names this arbiter".into(),
            ));
        }
        let provider: PeerId = c
            .provider
            .parse()
            .map_err(|_| refuse(format!("`{}` is not a peer id", c.provider)))?;
        // Only a job the provider committed to can be claimed: its signed
        // commitment names this client, job and escrow.
        let k = &c.commitment.payload;
        let committed = c.commitment.verify().ok() == Some(provider)
            && k.client == c.client
            && k.job_id == c.job_id
            && k.adapter == c.escrow.adapter
            && k.escrow_id == c.escrow.escrow_id;
        if !committed {
            return Err(refuse(format!(
                "the claim carries no commitment of {provider} to job {} for escrow {}",
                c.job_id, c.escrow.escrow_id
            )));
        }
        let held = self.store.custody().stake(&c.provider)?;
        let Some(held) =
            held.filter(|h| matches!(h.status.as_str(), "funded" | "withdrawing" | "slashed"))
        else {
            return Err(refuse(format!("no stake of {provider} is held here")));
        };
        self.check_paid(&held, &c).await?;
        let net = self
            .net
            .get()
            .cloned()
            .ok_or_else(|| refuse("the arbiter's network is not running yet".into()))?;
        let ask = JobMessage::new(JobBody::Deliver {
            job_id: c.job_id.clone(),
            claim: Box::new(claim.clone()),
        });
        let mut answers = Vec::new();
        let mut busy = 0;
        while answers.len() < DELIVER_ASKS as usize {
            if !answers.is_empty() || busy > 0 {
                tokio::time::sleep(DELIVER_PAUSE).await;
            }
            let asked =
                tokio::time::timeout(DELIVER_TIMEOUT, net.verify_request(provider, ask.clone()));
            let why = match asked.await {
                Err(_) => Err(format!("no answer within {} s", DELIVER_TIMEOUT.as_secs())),
                Ok(r) => r.map(|m| m.body).map_err(|e| e.to_string()),
            };
            let why = match why {
                // Still running: not an unanswered ask, within a bound.
                Ok(JobBody::Error(e))
                    if e.code == crate::p2p::ErrorCode::Busy && busy < MAX_BUSY_ASKS =>
                {
                    busy += 1;
                    continue;
                }
                Ok(JobBody::Result {
                    output,
                    signed,
                    proof,
                }) => {
                    let p = &signed.payload;
                    let ok = signed.verify().ok() == Some(provider)
                        && p.job_id == c.job_id
                        && p.client.as_deref() == Some(c.client.as_str());
                    if ok {
                        tracing::info!(job = %c.job_id, %provider, "claimed job delivered through the arbiter");
                        return Ok(JobMessage::new(JobBody::Result {
                            output,
                            signed,
                            proof,
                        }));
                    }
                    "a result that is not the claimed job's".to_string()
                }
                Ok(JobBody::Error(e)) => format!("refused: {}", e.message),
                Ok(other) => format!("answered {:?}", other.job_id()),
                Err(e) => e,
            };
            answers.push(why);
        }
        let evidence = serde_json::to_vec(&serde_json::json!({
            "kind": "undelivered",
            "claim": hex::encode(crate::p2p::protocol::encode(&claim).unwrap_or_default()),
            "asked": DELIVER_ASKS,
            "answers": answers,
            "arbiter": self.me,
            "at_ms": now_ms(),
        }))
        .unwrap_or_default();
        tracing::warn!(job = %c.job_id, %provider, "prepaid job not delivered: forfeiting the stake");
        let (client, job, bundle, payout) = (
            c.client.clone(),
            c.job_id.clone(),
            evidence.clone(),
            c.payout.clone(),
        );
        let arbiter = self.clone();
        let slashes = tokio::task::spawn_blocking(move || {
            arbiter.slash(
                &[provider.to_string()],
                &client,
                &job,
                &bundle,
                payout.as_ref(),
            )
        })
        .await
        .map_err(|e| refuse(format!("the slash worker failed: {e}")))?;
        Ok(JobMessage::new(JobBody::Ruling {
            job_id: c.job_id.clone(),
            evidence,
            slashes,
        }))
    }

    /// Where this arbiter can read the claimed escrow (a non-ledger adapter
    /// of its own): it must be released or settled, to the address the
    /// provider's stake came from. The ledger is the client's own books:
    /// there the claim is taken on the client's signed word, as the
    /// provider itself took it (`confirm = "client"`).
    async fn check_paid(
        &self,
        held: &StakeHeld,
        c: &crate::p2p::verification::Claim,
    ) -> Result<(), ArbiterError> {
        if c.escrow.adapter == LEDGER || self.payments.adapter(&c.escrow.adapter).is_none() {
            return Ok(());
        }
        let (payments, adapter, id) = (
            self.payments.clone(),
            c.escrow.adapter.clone(),
            c.escrow.escrow_id.clone(),
        );
        let seen = tokio::task::spawn_blocking(move || {
            payments
                .adapter(&adapter)
                .map(|a| a.plugin.status(&id).map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| ArbiterError::Refused(format!("the status worker failed: {e}")))?;
        let seen = match seen {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return Err(ArbiterError::Refused(format!(
                    "cannot read escrow {}: {e}",
                    c.escrow.escrow_id
                )))
            }
            None => return Ok(()),
        };
        let paid = matches!(seen.status, EscrowState::Released | EscrowState::Settled);
        let to_provider = seen
            .beneficiary
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case(&held.depositor));
        if !paid || !to_provider {
            return Err(ArbiterError::Refused(format!(
                "escrow {} is {} and pays {}: not a payment released to {}",
                c.escrow.escrow_id,
                seen.status.name(),
                seen.beneficiary.as_deref().unwrap_or("?"),
                held.provider_peer
            )));
        }
        Ok(())
    }
}
