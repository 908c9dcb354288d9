//! The provider's side of payment: the pay-to terms in its quotes, the
//! escrow check on `Accept` (amount, currency, beneficiary, expiry, and the
//! adapter's own `funded` status unless the adapter is a local ledger the
//! provider cannot see), the `earn` record written before it answers, the
//! gate on `Run` (no confirmed escrow, no execution), and the receipt
//! that marks the escrow released.

use super::*;
use crate::p2p::protocol::{EscrowRef, ReceiptBody};
use crate::payments::{display, Confirm};
use crate::store::{EscrowKind, EscrowRecord};
use crate::worlds::payment::{status_name, EscrowStatus};

/// Escrows must outlive the accept by at least this long.
const MIN_ESCROW_LEFT_MS: u64 = 10_000;

impl Inner {
    /// Remembers a quote so its accept can be checked against it.
    pub(super) fn remember_quote(&self, quote_id: &str, price: &Money, valid_until_ms: u64) {
        let mut quotes = self.quotes.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        quotes.retain(|_, (_, until)| *until > now);
        quotes.insert(quote_id.to_string(), (price.clone(), valid_until_ms));
    }

    /// Checks the escrow of an accept and records it; `Ack` when the job
    /// may run.
    pub(super) fn accept(
        &self,
        client: PeerId,
        job_id: String,
        quote_id: &str,
        escrow: Option<EscrowRef>,
    ) -> Result<JobMessage, ProviderError> {
        let Some(payments) = self.payments.clone() else {
            return Ok(JobMessage::ack(job_id));
        };
        let price = {
            let quotes = self.quotes.lock().unwrap_or_else(|p| p.into_inner());
            quotes.get(quote_id).cloned()
        };
        let Some((price, valid_until)) = price else {
            return Err(ProviderError::PaymentRequired(format!(
                "quote {quote_id} is unknown here or expired: ask for a new quote"
            )));
        };
        if price.amount == 0 {
            self.free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job_id.clone());
            return Ok(JobMessage::ack(job_id));
        }
        if valid_until < now_ms() {
            return Err(ProviderError::PaymentRequired(format!(
                "quote {quote_id} expired: ask for a new quote"
            )));
        }
        let refuse = |reason: String| ProviderError::PaymentRequired(reason);
        let Some(escrow) = escrow else {
            return Err(refuse(format!(
                "this provider is paid: accept with an escrow holding {}",
                display(price.amount, &price.currency)
            )));
        };
        if let Some(existing) = self.store.escrows().get(&job_id)? {
            if existing.escrow_id.as_deref() == Some(escrow.escrow_id.as_str()) {
                return Ok(JobMessage::ack(job_id));
            }
            return Err(refuse(format!(
                "job {job_id} is already paid by another escrow"
            )));
        }
        let adapter = payments.adapter(&escrow.adapter).ok_or_else(|| {
            refuse(format!(
                "adapter `{}` is not taken here; this provider takes: {}",
                escrow.adapter,
                payments
                    .adapters()
                    .iter()
                    .map(|a| a.plugin.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if escrow.beneficiary != adapter.account {
            return Err(refuse(format!(
                "escrow pays `{}`, not this provider's account `{}`",
                escrow.beneficiary, adapter.account
            )));
        }
        let required = payments
            .convert(price.amount, &price.currency, &escrow.amount.currency)
            .map_err(|e| refuse(e.to_string()))?;
        if escrow.amount.amount < required {
            return Err(refuse(format!(
                "escrow holds {}, the quote needs {}",
                display(escrow.amount.amount, &escrow.amount.currency),
                display(required, &escrow.amount.currency)
            )));
        }
        if escrow.expires_at_ms < now_ms().saturating_add(MIN_ESCROW_LEFT_MS) {
            return Err(refuse("escrow expires too soon to run the job".into()));
        }
        if adapter.confirm == Confirm::Status {
            let seen = adapter
                .plugin
                .status(&escrow.escrow_id)
                .map_err(|e| refuse(format!("cannot confirm escrow {}: {e}", escrow.escrow_id)))?;
            if seen.status != EscrowStatus::Funded {
                return Err(refuse(format!(
                    "escrow {} is {}, not funded",
                    escrow.escrow_id,
                    status_name(seen.status)
                )));
            }
            if seen.amount.currency != escrow.amount.currency || seen.amount.amount < required {
                return Err(refuse(format!(
                    "escrow {} holds {}, the quote needs {}",
                    escrow.escrow_id,
                    display(seen.amount.amount, &seen.amount.currency),
                    display(required, &escrow.amount.currency)
                )));
            }
        }
        let now = crate::store::now_ms();
        let local_job = job_id
            .rsplit_once('.')
            .map_or(job_id.as_str(), |(j, _)| j)
            .to_string();
        self.store.escrows().insert_or_get(&EscrowRecord {
            id: job_id.clone(),
            kind: EscrowKind::Earn,
            job_id: Some(local_job),
            adapter: escrow.adapter.clone(),
            escrow_id: Some(escrow.escrow_id.clone()),
            amount: escrow.amount.amount,
            currency: escrow.amount.currency.clone(),
            depositor: escrow.depositor.clone(),
            beneficiary: escrow.beneficiary.clone(),
            client_peer: Some(client.to_string()),
            provider_peer: Some(self.key.public().to_peer_id().to_string()),
            status: "funded".into(),
            confirmed_by: Some(
                match adapter.confirm {
                    Confirm::Status => "status",
                    Confirm::Client => "client",
                }
                .into(),
            ),
            expires_at_ms: i64::try_from(escrow.expires_at_ms).unwrap_or(i64::MAX),
            created_at_ms: now,
            updated_at_ms: now,
        })?;
        crate::jobs::crash_at("provider-escrow-confirmed");
        tracing::info!(job = %job_id, escrow = %escrow.escrow_id, amount = %crate::payments::display(escrow.amount.amount, &escrow.amount.currency), "escrow confirmed");
        Ok(JobMessage::ack(job_id))
    }

    /// A paid provider runs a job only once its escrow is confirmed (or
    /// its quote was free).
    pub(super) fn check_paid(&self, job_id: &str) -> Result<(), ProviderError> {
        if self.payments.is_none() {
            return Ok(());
        }
        if self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(job_id)
        {
            return Ok(());
        }
        match self.store.escrows().get(job_id)? {
            Some(e) if matches!(e.status.as_str(), "funded" | "released" | "settled") => Ok(()),
            Some(e) => Err(ProviderError::PaymentRequired(format!(
                "the escrow of job {job_id} is {}",
                e.status
            ))),
            None => Err(ProviderError::PaymentRequired(format!(
                "job {job_id} has no confirmed escrow: send Accept with one first"
            ))),
        }
    }

    /// A signed receipt arrived: the client released (or refused) the
    /// escrow. Only the job's own client can say so; the earn row then
    /// takes the adapter's status (`confirm = "status"`) or the status the
    /// client reports (`confirm = "client"`: `released` or `settled`).
    pub(super) fn on_receipt(&self, receipt: &ReceiptBody) -> Result<(), ProviderError> {
        let job_id = receipt.job_id.as_str();
        let Some(rec) = self.store.escrows().get(job_id)? else {
            return Ok(());
        };
        if rec.client_peer.as_deref() != Some(receipt.client.as_str())
            || receipt.provider != self.key.public().to_peer_id().to_string()
        {
            return Err(ProviderError::UnknownJob(job_id.to_string()));
        }
        if rec.is_final() {
            return Ok(());
        }
        let status = match rec.confirmed_by.as_deref() {
            Some("status") => self.adapter_status(&rec),
            _ if receipt.accepted => Some(
                match receipt.escrow_status.as_deref() {
                    Some("settled") => "settled",
                    _ => "released",
                }
                .to_string(),
            ),
            _ => None,
        };
        if let Some(status) = status.filter(|s| *s != rec.status) {
            self.store.escrows().update(job_id, None, &status)?;
        }
        Ok(())
    }

    /// The adapter's current status of an earn row's escrow; `None` when
    /// it cannot be asked (logged).
    fn adapter_status(&self, rec: &EscrowRecord) -> Option<String> {
        let adapter = self.payments.as_ref()?.adapter(&rec.adapter)?;
        let id = rec.escrow_id.as_deref()?;
        match adapter.plugin.status(id) {
            Ok(e) => Some(status_name(e.status).to_string()),
            Err(e) => {
                tracing::warn!(job = %rec.id, escrow = id, error = %e, "cannot refresh escrow status");
                None
            }
        }
    }

    /// Brings every open earn row up to date, so none stays open past its
    /// escrow's expiry: rows this provider confirms itself take the
    /// adapter's status; rows confirmed on the client's word (a ledger this
    /// node cannot see) that reached expiry without a receipt become
    /// `expired`. Returns how many rows changed.
    pub(super) fn sweep_earnings(&self) -> Result<usize, ProviderError> {
        let now = crate::store::now_ms();
        let mut changed = 0;
        for rec in self.store.escrows().open()? {
            if rec.kind != EscrowKind::Earn {
                continue;
            }
            let status = match rec.confirmed_by.as_deref() {
                Some("status") => self.adapter_status(&rec),
                _ if rec.expires_at_ms <= now => {
                    tracing::info!(job = %rec.id, "escrow expired without a receipt from the client");
                    Some("expired".to_string())
                }
                _ => None,
            };
            if let Some(status) = status.filter(|s| *s != rec.status) {
                self.store.escrows().update(&rec.id, None, &status)?;
                changed += 1;
            }
        }
        Ok(changed)
    }
}
