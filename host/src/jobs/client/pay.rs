//! The client's side of payment, at the seams of the lifecycle:
//! - `quoted`: [`Inner::hold`] writes the escrow intent (`creating`), asks
//!   the adapter to create it (idempotent per wire id), waits until it is
//!   `funded`, and hands the [`EscrowRef`] to the provider in `Accept`;
//! - `delivered`/`verified`: [`Inner::release`] releases it before the job
//!   goes `settled`;
//! - failover, failure, a rejected proof: [`Inner::refund_open`] refunds
//!   every escrow of the job that is not the current attempt's (or all);
//! - [`JobClient::sweep`]: at start and periodically, refunds what failed
//!   jobs still hold and asks the adapter about escrows past their expiry.
//!
//! Every step writes the escrow row before and after the adapter call, and
//! every adapter call is idempotent, so a process killed anywhere resumes
//! without paying twice or losing an escrow.

use super::*;
use crate::p2p::protocol::{EscrowRef, PayTo};
use crate::payments::{display, PayPlan};
use crate::store::{EscrowKind, EscrowRecord};
use crate::worlds::payment::{EscrowRequest, EscrowState, Money as WitMoney};

/// What [`Inner::release`] did.
pub(super) struct Released {
    /// One line for the job's event log.
    pub summary: String,
    /// The escrow's status after the release (`None`: the job was free).
    pub status: Option<String>,
}

/// How often a pending escrow is polled while waiting for funds.
const FUNDING_POLL: Duration = Duration::from_millis(200);

impl Inner {
    /// Whether this client can pay a quote (free, unpaid provider, or a
    /// shared adapter and currency).
    pub(super) fn can_pay(&self, peer: &PeerId, price: &Money, pay_to: &[PayTo]) -> bool {
        price.amount == 0
            || pay_to.is_empty()
            || self.payments.as_ref().is_some_and(|p| {
                p.plan(
                    &peer.to_string(),
                    pay_to,
                    price.amount,
                    &price.currency,
                    self.cfg.pay_currency.as_deref(),
                )
                .is_ok()
            })
    }

    /// Why [`can_pay`](Self::can_pay) said no.
    pub(super) fn cannot_pay_reason(
        &self,
        peer: &PeerId,
        price: &Money,
        pay_to: &[PayTo],
    ) -> String {
        match &self.payments {
            None => format!(
                "it is paid ({} via {}) and this node has no [[payment]] adapter",
                display(price.amount, &price.currency),
                pay_to
                    .iter()
                    .map(|p| p.adapter.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(p) => match p.plan(
                &peer.to_string(),
                pay_to,
                price.amount,
                &price.currency,
                self.cfg.pay_currency.as_deref(),
            ) {
                Err(e) => e.to_string(),
                Ok(_) => "payable".into(),
            },
        }
    }

    /// Holds the price of the current attempt in escrow; `None` when the
    /// job is free or the provider unpaid.
    pub(super) async fn hold(
        &self,
        rec: &JobRecord,
        provider: PeerId,
    ) -> Result<Option<EscrowRef>, StepError> {
        let Some(payments) = self.payments.clone() else {
            return Ok(None);
        };
        let Some(quote_id) = rec.quote_id.clone() else {
            return Ok(None);
        };
        let wire = wire_id(rec);
        let (quote, pay_to) = {
            let (job, qid) = (rec.id.clone(), quote_id.clone());
            self.db(move |s| {
                let q = s.quotes().get(&qid)?.filter(|q| q.job_id == job);
                Ok((q, s.quotes().pay_to(&qid)?))
            })
            .await?
        };
        let Some(quote) = quote else {
            return Ok(None);
        };
        let pay_to: Vec<PayTo> = serde_json::from_str(&pay_to).unwrap_or_default();
        if quote.price == 0 || pay_to.is_empty() {
            return Ok(None);
        }
        let plan = {
            let (p, peer, cur) = (
                payments.clone(),
                provider.to_string(),
                self.cfg.pay_currency.clone(),
            );
            let (price, code) = (quote.price, quote.currency.clone());
            tokio::task::spawn_blocking(move || {
                p.plan(&peer, &pay_to, price, &code, cur.as_deref())
            })
            .await
            .map_err(|e| ClientError::Worker(e.to_string()))?
            .map_err(|e| StepError::Provider(e.to_string()))?
        };
        let now = crate::store::now_ms();
        let intent = EscrowRecord {
            id: wire.clone(),
            kind: EscrowKind::Pay,
            job_id: Some(rec.id.clone()),
            adapter: plan.adapter.clone(),
            escrow_id: None,
            amount: plan.amount,
            currency: plan.currency.clone(),
            depositor: plan.depositor.clone(),
            beneficiary: plan.beneficiary.clone(),
            client_peer: Some(self.net.peer_id().to_string()),
            provider_peer: Some(provider.to_string()),
            status: "creating".into(),
            confirmed_by: None,
            expires_at_ms: now.saturating_add(
                i64::try_from(self.cfg.escrow_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            ),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let row = self
            .db(move |s| Ok(s.escrows().insert_or_get(&intent)?))
            .await?;
        crash_at("escrow-intent");
        let plan = PayPlan {
            adapter: row.adapter.clone(),
            amount: row.amount,
            currency: row.currency.clone(),
            beneficiary: row.beneficiary.clone(),
            depositor: row.depositor.clone(),
            prepay: plan.prepay,
        };
        let left_secs = u64::try_from((row.expires_at_ms - now).max(1000) / 1000).unwrap_or(1);
        let request = EscrowRequest {
            job_id: wire.clone(),
            amount: WitMoney {
                amount: plan.amount,
                currency: plan.currency.clone(),
            },
            depositor: plan.depositor.clone(),
            beneficiary: plan.beneficiary.clone(),
            arbiter: None,
            expires_in_secs: left_secs,
            metadata: vec![
                ("job".into(), rec.id.clone()),
                ("provider".into(), provider.to_string()),
                ("quote".into(), quote_id),
            ],
        };
        let mut escrow = match self
            .adapter_call(&plan.adapter, move |a| a.plugin.create_escrow(&request))
            .await?
        {
            Ok(e) => e,
            Err(e) => {
                // Refused outright (e.g. insufficient balance): nothing was
                // created, so nothing is held. Any other failure (a trap,
                // a timeout, the network) may have created it: the row
                // stays `creating` and the refund creates-then-refunds.
                if refused(&e) {
                    let id = wire.clone();
                    self.db(move |s| Ok(s.escrows().update(&id, None, "abandoned")?))
                        .await?;
                }
                return Err(StepError::Fatal(ClientError::Payment {
                    job_id: rec.id.clone(),
                    message: format!("cannot create the escrow through {}: {e}", plan.adapter),
                }));
            }
        };
        self.note_escrow(&wire, &escrow.id, escrow.status).await?;
        crash_at("escrow-created");
        let deadline = Instant::now() + Duration::from_millis(self.cfg.funding_timeout_ms);
        while escrow.status == EscrowState::Pending && Instant::now() < deadline {
            tokio::time::sleep(FUNDING_POLL).await;
            let id = escrow.id.clone();
            if let Ok(e) = self
                .adapter_call(&plan.adapter, move |a| a.plugin.status(&id))
                .await?
            {
                escrow = e;
                self.note_escrow(&wire, &escrow.id, escrow.status).await?;
            }
        }
        if escrow.status != EscrowState::Funded {
            let message = match escrow.status {
                EscrowState::Pending => format!(
                    "escrow {} was not funded within {} ms (client.funding_timeout_ms){}",
                    escrow.id,
                    self.cfg.funding_timeout_ms,
                    escrow
                        .deposit_address
                        .as_deref()
                        .map(|a| format!(
                            "; deposit {} to {a}",
                            display(plan.amount, &plan.currency)
                        ))
                        .unwrap_or_default()
                ),
                other => format!("escrow {} is {}, not funded", escrow.id, other.name()),
            };
            return Err(StepError::Fatal(ClientError::Payment {
                job_id: rec.id.clone(),
                message,
            }));
        }
        crash_at("escrow-funded");
        Ok(Some(EscrowRef {
            adapter: plan.adapter,
            escrow_id: escrow.id,
            amount: Money {
                amount: plan.amount,
                currency: plan.currency,
            },
            depositor: plan.depositor,
            beneficiary: plan.beneficiary,
            expires_at_ms: u64::try_from(row.expires_at_ms).unwrap_or(0),
        }))
    }

    /// Releases the current attempt's escrow (if any): the line for the
    /// job's event log and the status the receipt reports.
    pub(super) async fn release(&self, rec: &JobRecord) -> Result<Released, ClientError> {
        let wire = wire_id(rec);
        let id = wire.clone();
        let Some(row) = self.db(move |s| Ok(s.escrows().get(&id)?)).await? else {
            return Ok(Released {
                summary: "payment: none".into(),
                status: None,
            });
        };
        let amount = display(row.amount, &row.currency);
        if matches!(row.status.as_str(), "released" | "settled") {
            return Ok(Released {
                summary: format!("payment: {amount} released to {}", row.beneficiary),
                status: Some(row.status.clone()),
            });
        }
        let Some(escrow_id) = row.escrow_id.clone() else {
            return Err(ClientError::Payment {
                job_id: rec.id.clone(),
                message: format!("escrow of {wire} was never created"),
            });
        };
        let eid = escrow_id.clone();
        let released = self
            .adapter_call(&row.adapter, move |a| a.plugin.release(&eid))
            .await
            .map_err(|e| match e {
                StepError::Fatal(e) => e,
                StepError::Provider(m) => ClientError::Worker(m),
            })?
            .map_err(|e| ClientError::Payment {
                job_id: rec.id.clone(),
                message: format!("release of escrow {escrow_id} failed: {e}"),
            })?;
        self.note_escrow(&wire, &released.id, released.status)
            .await
            .map_err(|e| match e {
                StepError::Fatal(e) => e,
                StepError::Provider(m) => ClientError::Worker(m),
            })?;
        crash_at("escrow-released");
        Ok(Released {
            summary: format!(
                "payment: {amount} released to {} via {} (escrow {escrow_id}, {})",
                row.beneficiary,
                row.adapter,
                released.status.name()
            ),
            status: Some(released.status.name().to_string()),
        })
    }

    /// Refunds the job's open escrows of attempts before `before_attempt`
    /// (all of them when `None`). Bounded by an attempt number, not "all
    /// but the current one", so a refund racing a failover never touches
    /// the escrow of an attempt that began after the caller looked.
    /// Returns how many were refunded.
    pub(super) async fn refund_open(
        &self,
        job_id: &str,
        before_attempt: Option<i64>,
    ) -> Result<usize, ClientError> {
        let Some(payments) = self.payments.clone() else {
            return Ok(0);
        };
        let job = job_id.to_string();
        let rows = self.db(move |s| Ok(s.escrows().by_job(&job)?)).await?;
        let mut refunded = 0;
        for row in rows {
            let stale = match before_attempt {
                None => true,
                Some(n) => attempt_of(&row.id).is_some_and(|a| a < n),
            };
            if row.kind != EscrowKind::Pay || row.is_final() || !stale {
                continue;
            }
            let p = payments.clone();
            let r = row.clone();
            let outcome = tokio::task::spawn_blocking(move || refund_row(&p, &r))
                .await
                .map_err(|e| ClientError::Worker(e.to_string()))?;
            match outcome {
                Ok((escrow_id, status)) => {
                    let (id, st) = (row.id.clone(), status.clone());
                    self.db(move |s| Ok(s.escrows().update(&id, escrow_id.as_deref(), &st)?))
                        .await?;
                    crash_at("escrow-refunded");
                    if status == "refunded" {
                        tracing::info!(job = %job_id, escrow = %row.id, "escrow refunded");
                        refunded += 1;
                    } else {
                        // A never-funded escrow is not refunded: the
                        // service expires it (the sweep records that).
                        tracing::info!(job = %job_id, escrow = %row.id, %status, "escrow not refunded (not funded); it expires");
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %job_id, escrow = %row.id, error = %e, "refund failed; the sweep retries it")
                }
            }
        }
        Ok(refunded)
    }

    /// Fails the job, then refunds what it holds (`failed -> refunded`).
    pub(super) async fn fail_and_refund(
        &self,
        rec: &JobRecord,
        message: String,
    ) -> Result<(), ClientError> {
        self.fail(rec, message).await?;
        self.settle_failed(&rec.id).await
    }

    /// A failed job's open escrows refunded, and the job moved to
    /// `refunded` once all are final and one was refunded or expired (also
    /// when that happened before a crash and this call refunds nothing).
    pub(super) async fn settle_failed(&self, job_id: &str) -> Result<(), ClientError> {
        self.refund_open(job_id, None).await?;
        let job = job_id.to_string();
        let (all_final, any_refunded) = self
            .db(move |s| {
                let rows = s.escrows().by_job(&job)?;
                let pay = || rows.iter().filter(|r| r.kind == EscrowKind::Pay);
                Ok((
                    pay().all(|r| r.is_final()),
                    pay().any(|r| matches!(r.status.as_str(), "refunded" | "expired")),
                ))
            })
            .await?;
        if all_final && any_refunded {
            self.advance(
                job_id,
                JobState::Failed,
                JobState::Refunded,
                "escrow refunded".into(),
                JobUpdate::default(),
            )
            .await?;
        }
        Ok(())
    }

    async fn note_escrow(
        &self,
        wire: &str,
        escrow_id: &str,
        status: EscrowState,
    ) -> Result<(), StepError> {
        let (w, e) = (wire.to_string(), escrow_id.to_string());
        self.db(move |s| Ok(s.escrows().update(&w, Some(&e), status.name())?))
            .await?;
        Ok(())
    }

    /// Runs one blocking call on adapter `name`.
    async fn adapter_call<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&crate::payments::Adapter) -> Result<T, crate::runtime::PluginError>
            + Send
            + 'static,
    ) -> Result<Result<T, crate::runtime::PluginError>, StepError> {
        let payments = self
            .payments
            .clone()
            .ok_or_else(|| StepError::Fatal(ClientError::Worker("no payment adapters".into())))?;
        let name = name.to_string();
        tokio::task::spawn_blocking(move || match payments.adapter(&name) {
            Some(a) => Ok(f(a)),
            None => Err(StepError::Fatal(ClientError::Worker(format!(
                "payment adapter `{name}` is no longer configured"
            )))),
        })
        .await
        .map_err(|e| StepError::Fatal(ClientError::Worker(e.to_string())))?
    }
}

/// Whether an adapter error is a refusal of the request itself (nothing
/// was created), as opposed to a failure that may have left an escrow
/// behind (a trap, a timeout, an `internal` error such as the network).
fn refused(e: &crate::runtime::PluginError) -> bool {
    matches!(
        e,
        crate::runtime::PluginError::Guest {
            kind: "invalid-input" | "unsupported",
            ..
        }
    )
}

/// The attempt number of a pay row (its id is the wire id `<job>.<attempt>`).
fn attempt_of(row_id: &str) -> Option<i64> {
    row_id.rsplit_once('.')?.1.parse().ok()
}

/// Refunds one escrow row through its adapter. A row still `creating`
/// (the process died around the create call) is created first — our
/// adapters are idempotent per job id, so this finds the escrow if it
/// exists — and then refunded. Returns the escrow id and final status.
fn refund_row(
    payments: &crate::payments::Payments,
    row: &EscrowRecord,
) -> Result<(Option<String>, String), String> {
    let adapter = payments
        .adapter(&row.adapter)
        .ok_or_else(|| format!("payment adapter `{}` is not configured", row.adapter))?;
    let escrow_id = match &row.escrow_id {
        Some(id) => id.clone(),
        None => {
            let request = EscrowRequest {
                job_id: row.id.clone(),
                amount: WitMoney {
                    amount: row.amount,
                    currency: row.currency.clone(),
                },
                depositor: row.depositor.clone(),
                beneficiary: row.beneficiary.clone(),
                arbiter: None,
                expires_in_secs: 60,
                metadata: vec![("job".into(), row.job_id.clone().unwrap_or_default())],
            };
            match adapter.plugin.create_escrow(&request) {
                Ok(e) => e.id,
                // Refused: it never existed, nothing is held.
                Err(e) if refused(&e) => return Ok((None, "abandoned".into())),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let escrow = adapter
        .plugin
        .refund(&escrow_id)
        .map_err(|e| e.to_string())?;
    Ok((Some(escrow_id), escrow.status.name().to_string()))
}

impl JobClient {
    /// Settles what a dead or failed run left behind: failed jobs' open
    /// escrows are refunded (`failed -> refunded`), and escrows past their
    /// expiry are refreshed from the adapter (which expires and refunds
    /// them). Run at start and periodically by the SDK. Returns how many
    /// escrows changed.
    pub async fn sweep(&self) -> Result<usize, ClientError> {
        let inner = &self.inner;
        let Some(payments) = inner.payments.clone() else {
            return Ok(0);
        };
        let mut changed = 0;
        // Refunded before a crash, the job still `failed`: finish the step.
        for job_id in inner
            .db(|s| Ok(s.escrows().refunded_but_failed_jobs()?))
            .await?
        {
            inner.settle_failed(&job_id).await?;
            changed += 1;
        }
        let rows = inner.db(|s| Ok(s.escrows().open()?)).await?;
        for row in rows.into_iter().filter(|r| r.kind == EscrowKind::Pay) {
            let Some(job_id) = row.job_id.clone() else {
                continue;
            };
            let job = inner.record(&job_id).await?;
            if matches!(job.state, JobState::Failed | JobState::Refunded) {
                inner.settle_failed(&job_id).await?;
                changed += 1;
                continue;
            }
            let expired = row.expires_at_ms <= crate::store::now_ms();
            // An earlier attempt's escrow (its refund at failover failed):
            // refunded whatever became of the job since.
            if attempt_of(&row.id).is_some_and(|a| a < job.attempts) {
                changed += inner.refund_open(&job_id, Some(job.attempts)).await?;
                continue;
            }
            if expired {
                if let Some(eid) = row.escrow_id.clone() {
                    let p = payments.clone();
                    let adapter = row.adapter.clone();
                    let seen = tokio::task::spawn_blocking(move || {
                        p.adapter(&adapter).map(|a| a.plugin.status(&eid))
                    })
                    .await
                    .map_err(|e| ClientError::Worker(e.to_string()))?;
                    if let Some(Ok(e)) = seen {
                        let id = row.id.clone();
                        let status = e.status.name();
                        inner
                            .db(move |s| Ok(s.escrows().update(&id, None, status)?))
                            .await?;
                        changed += 1;
                    }
                }
            }
        }
        Ok(changed)
    }
}
