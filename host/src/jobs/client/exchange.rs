//! Fair exchange on the client side. A provider that asks to be paid
//! before the run (`prepay` in its quote's terms) answers `Accept` with a
//! signed commitment to deliver; it is paid so only when its advert
//! carries a stake certificate, signed by an arbiter this client trusts
//! (one of its `[verify] referees`), that covers the price: then the
//! escrow is released before `Run`, so this client can never take the
//! money back after delivery. If the provider then fails to deliver, the
//! client's signed `Claim` goes to that arbiter, which obtains the result
//! from the provider (and hands it over) or forfeits the stake — the
//! client's share to the client — and the job fails over as usual.

use super::*;
use crate::p2p::protocol::EscrowRef;
use crate::p2p::verification::{Claim, PayoutTo, SignedClaim, SignedCommitment, SignedStakeCert};

/// The store namespace where prepaid jobs' commitments are kept, by wire
/// id (what a claim needs, also after a restart).
const COMMITMENTS: &str = "infernet/commitments";

/// A prepaid job's provider commitment, with the arbiter whose
/// certificate the client paid against.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    commitment: SignedCommitment,
    arbiter: String,
}

/// What a prepaid job's claim got: the result, or why not (with what the
/// arbiter slashed).
pub(super) type Claimed = Result<
    (
        Encoded<WireOutput>,
        SignedResult,
        Option<Box<Encoded<ProofAttachment>>>,
    ),
    String,
>;

impl Inner {
    /// The provider's stake certificate, if an arbiter this client trusts
    /// signed it for this provider and it is still valid.
    async fn trusted_stake(
        &self,
        model: &str,
        provider: PeerId,
    ) -> Option<(PeerId, SignedStakeCert)> {
        let adverts = self.net.providers_of(model).await.ok()?;
        let cert = adverts
            .into_iter()
            .find(|p| p.peer_id == provider)?
            .advert?
            .stake_cert?;
        let arbiter = cert.verify().ok()?;
        let trusted = self
            .verify
            .referees
            .iter()
            .any(|r| *r == arbiter.to_string());
        let ok = trusted
            && cert.payload.provider == provider.to_string()
            && cert.payload.valid_until_ms > now_ms();
        ok.then_some((arbiter, *cert))
    }

    /// The provider answered `Accept` with its commitment: checked against
    /// this attempt's escrow and kept (the claim rests on it), then — once
    /// the provider's certified stake covers the payment — the escrow is
    /// released and the signed receipt saying so sent. A provider without
    /// such a stake, or with a commitment that is not for this escrow, is
    /// passed over (the escrow, not released, is refunded).
    pub(super) async fn prepay(
        &self,
        rec: &JobRecord,
        provider: PeerId,
        commitment: SignedCommitment,
    ) -> Result<(), StepError> {
        let wire = wire_id(rec);
        let id = wire.clone();
        let row = self
            .db(move |s| Ok(s.escrows().get(&id)?))
            .await?
            .ok_or_else(|| {
                StepError::Provider("a commitment for a job this client does not pay".into())
            })?;
        let c = &commitment.payload;
        let ok = commitment.verify().ok() == Some(provider)
            && c.job_id == wire
            && c.client == self.net.peer_id().to_string()
            && c.adapter == row.adapter
            && Some(&c.escrow_id) == row.escrow_id.as_ref()
            && c.amount.amount == row.amount
            && c.amount.currency == row.currency;
        if !ok {
            return Err(StepError::Provider(format!(
                "a commitment that is not for job {wire} and its escrow"
            )));
        }
        let refuse = |why: String| {
            StepError::Provider(format!(
                "asks to be paid before the run {why}; this client prepays only against a stake certified by one of its [verify] referees"
            ))
        };
        let Some((arbiter, cert)) = self.trusted_stake(&rec.model, provider).await else {
            return Err(refuse("without a valid stake certificate".into()));
        };
        let stake = &cert.payload.amount;
        let covered = match &self.payments {
            _ if stake.currency == row.currency => stake.amount >= row.amount,
            Some(p) => p
                .convert(stake.amount, &stake.currency, &row.currency)
                .map(|s| s >= row.amount)
                .or_else(|_| {
                    p.convert(row.amount, &row.currency, &stake.currency)
                        .map(|n| n <= stake.amount)
                })
                .unwrap_or(false),
            None => false,
        };
        if !covered {
            return Err(refuse(format!(
                "with a stake of {} {} that does not cover {} {}",
                crate::payments::display(stake.amount, &stake.currency),
                stake.currency,
                crate::payments::display(row.amount, &row.currency),
                row.currency
            )));
        }
        // Kept with the arbiter that certified the stake now: a provider
        // that withholds and then stops advertising is still claimed against.
        let kept = Kept {
            commitment,
            arbiter: arbiter.to_string(),
        };
        let bytes = crate::p2p::protocol::encode(&kept)
            .map_err(|e| StepError::Provider(format!("the commitment does not encode: {e}")))?;
        let kv = self.store.plugin_kv(COMMITMENTS);
        let key = wire.clone();
        let job_id = rec.id.clone();
        self.db(move |_| {
            kv.set(&key, &bytes).map_err(|e| ClientError::Payment {
                job_id,
                message: format!("keeping the provider's commitment: {e}"),
            })
        })
        .await?;
        let released = self.release(rec).await.map_err(StepError::Fatal)?;
        let body = ReceiptBody {
            job_id: wire.clone(),
            output_hash: String::new(),
            client: self.net.peer_id().to_string(),
            provider: provider.to_string(),
            accepted: true,
            timestamp_ms: now_ms(),
            escrow_status: released.status.clone(),
        };
        let receipt = SignedReceipt::sign(body, &self.key)
            .map_err(|e| StepError::Provider(format!("cannot sign the receipt: {e}")))?;
        match self
            .exchange(
                provider,
                JobMessage::new(JobBody::Receipt(receipt)),
                self.step_timeout(),
            )
            .await
        {
            Ok(JobBody::Ack { .. }) => {}
            Ok(other) => {
                tracing::warn!(job = %wire, reply = body_name(&other), "prepaid receipt not acknowledged")
            }
            Err(StepError::Provider(e)) => {
                tracing::warn!(job = %wire, error = %e, "prepaid receipt not delivered; the run says")
            }
            Err(StepError::Fatal(e)) => return Err(StepError::Fatal(e)),
        }
        tracing::info!(job = %wire, %provider, "prepaid: escrow released before the run ({})", released.summary);
        Ok(())
    }

    /// After a prepaid job's run failed: asks the arbiter holding the
    /// provider's stake for the result. `None`: the job was not prepaid
    /// (nothing to claim).
    pub(super) async fn claim_undelivered(
        &self,
        rec: &JobRecord,
        provider: PeerId,
    ) -> Result<Option<Claimed>, ClientError> {
        let wire = wire_id(rec);
        let id = wire.clone();
        let Some(row) = self.db(move |s| Ok(s.escrows().get(&id)?)).await? else {
            return Ok(None);
        };
        let prepaid = row.kind == crate::store::EscrowKind::Pay
            && matches!(row.status.as_str(), "released" | "settled");
        let kv = self.store.plugin_kv(COMMITMENTS);
        let key = wire.clone();
        let job_id = rec.id.clone();
        let stored = self
            .db(move |_| {
                kv.get(&key).map_err(|e| ClientError::Payment {
                    job_id,
                    message: format!("reading the provider's commitment: {e}"),
                })
            })
            .await?;
        let kept = stored.and_then(|b| crate::p2p::protocol::decode::<Kept>(&b).ok());
        let (
            true,
            Some(Kept {
                commitment,
                arbiter,
            }),
        ) = (prepaid, kept)
        else {
            return Ok(None);
        };
        let Ok(arbiter) = arbiter.parse::<PeerId>() else {
            return Ok(Some(Err(format!(
                "the kept arbiter `{arbiter}` is not a peer id"
            ))));
        };
        let claim = Claim {
            job_id: wire.clone(),
            client: self.net.peer_id().to_string(),
            provider: provider.to_string(),
            arbiter: arbiter.to_string(),
            escrow: EscrowRef {
                adapter: row.adapter.clone(),
                escrow_id: row.escrow_id.clone().unwrap_or_default(),
                amount: Money {
                    amount: row.amount,
                    currency: row.currency.clone(),
                },
                depositor: row.depositor.clone(),
                beneficiary: row.beneficiary.clone(),
                expires_at_ms: u64::try_from(row.expires_at_ms).unwrap_or(0),
            },
            commitment,
            payout: self.payments.as_ref().and_then(|p| {
                p.adapters()
                    .iter()
                    .find(|x| x.plugin.name() != crate::payments::ledger::LEDGER)
                    .map(|x| PayoutTo {
                        adapter: x.plugin.name().to_string(),
                        account: x.account.clone(),
                    })
            }),
            timestamp_ms: now_ms(),
        };
        let signed = SignedClaim::sign(claim, &self.key).map_err(|e| ClientError::Payment {
            job_id: rec.id.clone(),
            message: format!("signing the claim: {e}"),
        })?;
        tracing::warn!(job = %wire, %provider, %arbiter, "prepaid job not delivered: claiming with the arbiter");
        let reply = self
            .net
            .verify_request(arbiter, JobMessage::new(JobBody::Claim(Box::new(signed))))
            .await;
        Ok(Some(match reply.map(|m| m.body) {
            Ok(JobBody::Result {
                output,
                signed,
                proof,
            }) => {
                let p = &signed.payload;
                let by = signed.verify().ok();
                if by != Some(provider)
                    || p.job_id != wire
                    || p.model_id != rec.model
                    || p.client.as_deref() != Some(&self.net.peer_id().to_string())
                {
                    Err(format!(
                        "arbiter {arbiter} relayed a result that is not this job's from {provider}"
                    ))
                } else {
                    tracing::info!(job = %wire, %arbiter, "result obtained through the arbiter");
                    Ok((output, signed, proof))
                }
            }
            Ok(JobBody::Ruling { slashes, .. }) => Err(format!(
                "prepaid and not delivered; arbiter {arbiter} ruled: {}",
                if slashes.is_empty() {
                    "nothing slashed".to_string()
                } else {
                    slashed(&slashes)
                }
            )),
            Ok(JobBody::Error(e)) => Err(format!(
                "arbiter {arbiter} refused the claim: {}",
                e.message
            )),
            Ok(other) => Err(format!(
                "arbiter {arbiter} answered the claim with {}",
                body_name(&other)
            )),
            Err(e) => Err(format!("arbiter {arbiter}: {e}")),
        }))
    }
}

/// `e` with what the claim found appended to its reason.
pub(super) fn with_note(e: StepError, note: &str) -> StepError {
    match e {
        StepError::Provider(r) => StepError::Provider(format!("{r}; {note}")),
        StepError::Fatal(ClientError::Rejected {
            job_id,
            provider,
            message,
        }) => StepError::Fatal(ClientError::Rejected {
            job_id,
            provider,
            message: format!("{message}; {note}"),
        }),
        other => other,
    }
}

/// What the arbiter's slashes gave this client, for the job's log.
pub(super) fn slashed(slashes: &[crate::p2p::verification::SlashReport]) -> String {
    slashes
        .iter()
        .map(|s| {
            format!(
                "{} forfeits its stake, {} {} to this client ({})",
                s.provider,
                crate::payments::display(s.to_client.amount, &s.to_client.currency),
                s.to_client.currency,
                s.status
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
