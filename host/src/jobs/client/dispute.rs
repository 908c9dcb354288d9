//! Asking a referee to settle a disagreement between two results of one
//! job over `/infernet/verify/1`, and checking the evidence it returns.

use super::{ClientError, JobClient};
use crate::p2p::protocol::{now_ms, JobBody, JobMessage, SignedResult};
use crate::p2p::verification::{
    DisputeRequest, JobSpec, PayoutTo, SignedTicket, SlashReport, Ticket,
};
use crate::p2p::PeerId;
use crate::verify::evidence::{decode_result, Evidence, EvidenceError};

/// How long a referee's tickets are valid.
const TICKET_MS: u64 = 15 * 60 * 1000;

impl JobClient {
    /// Sends both results of `job` to `referee` with a ticket per result
    /// (the providers answer its questions on them), and checks the
    /// evidence it returns before believing it: the bundle must be about
    /// these two results, its bisection must hold against their signed
    /// roots, and a one-op ruling is re-executed here. A ruling that only
    /// a replay of the plugin can check is taken on the referee's word
    /// (this client may not hold the model); anyone with the plugin and
    /// weights can check it later with `infernet verify evidence`.
    /// Also returns what the ruling did to the cheaters' stakes, when the
    /// referee holds them (the client's share is paid to its account at
    /// the referee's adapter: the first of this client's adapters other
    /// than the ledger, or the ledger account named by this client's peer id).
    pub async fn dispute(
        &self,
        referee: PeerId,
        job: JobSpec,
        a: SignedResult,
        b: SignedResult,
    ) -> Result<(Evidence, Vec<SlashReport>), ClientError> {
        let err = |m: String| ClientError::Verification(m);
        let me = self.inner.net.peer_id().to_string();
        let ticket = |r: &SignedResult| {
            let t = Ticket {
                job_id: r.payload.job_id.clone(),
                client: me.clone(),
                referee: referee.to_string(),
                expires_ms: now_ms() + TICKET_MS,
            };
            SignedTicket::sign(t, &self.inner.key)
                .map_err(|e| err(format!("signing a ticket: {e}")))
        };
        let tickets = vec![ticket(&a)?, ticket(&b)?];
        let job_id = a.payload.job_id.clone();
        let msg = JobMessage::new(JobBody::Dispute {
            job_id: job_id.clone(),
            dispute: Box::new(DisputeRequest {
                job,
                results: vec![a.clone(), b.clone()],
                tickets,
                payout: self.inner.payments.as_ref().and_then(|p| {
                    p.adapters()
                        .iter()
                        .find(|x| x.plugin.name() != crate::payments::ledger::LEDGER)
                        .map(|x| PayoutTo {
                            adapter: x.plugin.name().to_string(),
                            account: x.account.clone(),
                        })
                }),
            }),
        });
        let reply = self
            .inner
            .net
            .verify_request(referee, msg)
            .await
            .map_err(|e| err(format!("referee {referee}: {e}")))?;
        let (evidence, slashes) = match reply.body {
            JobBody::Ruling {
                evidence, slashes, ..
            } => (
                serde_json::from_slice::<Evidence>(&evidence).map_err(|e| {
                    err(format!(
                        "referee {referee} sent evidence that does not parse: {e}"
                    ))
                })?,
                slashes,
            ),
            JobBody::Error(e) => {
                return Err(err(format!("referee {referee} refused: {}", e.message)))
            }
            other => {
                return Err(err(format!(
                    "referee {referee} answered a dispute with {:?}",
                    other.job_id()
                )))
            }
        };
        for (i, r) in [&a, &b].into_iter().enumerate() {
            let theirs = decode_result(&evidence.results[i])
                .map_err(|e| err(format!("referee {referee}: {e}")))?;
            if theirs.payload.job_id != r.payload.job_id || theirs.signature != r.signature {
                return Err(err(format!(
                    "referee {referee} ruled on other results than the ones sent"
                )));
            }
        }
        match evidence.check(None) {
            Ok(_) | Err(EvidenceError::Needs(_)) => Ok((evidence, slashes)),
            Err(e) => Err(err(format!(
                "referee {referee}'s evidence does not hold: {e}"
            ))),
        }
    }
}
