//! The provider's side of payment: the pay-to terms in its quotes, the
//! escrow check on `Accept` (the quote is this client's for this job;
//! amount, currency, beneficiary, expiry; the escrow pays no other job
//! here; and, unless the adapter is a local ledger the provider cannot see,
//! the adapter's own reading of the escrow: `funded`, amount, expiry, and
//! (contract 0.2) a beneficiary that is this provider's account), the `earn` record
//! written before it answers, the gate on `Run` (the accepting client
//! only, the quoted model, at most the quoted output tokens; no confirmed
//! escrow, no execution), and the receipt that settles the earn row.

use super::*;
use crate::p2p::protocol::{EscrowRef, ReceiptBody};
use crate::payments::currency::same_account;
use crate::payments::{display, Confirm};
use crate::store::{EarnInsert, EscrowKind, EscrowRecord};
use crate::worlds::payment::EscrowState;

/// Escrows must outlive the accept by at least this long.
const MIN_ESCROW_LEFT_MS: u64 = 10_000;
/// Live quotes one client may hold here.
const MAX_QUOTES_PER_CLIENT: usize = 64;
/// Live quotes held here in all.
const MAX_QUOTES: usize = 16_384;
/// How long a free job's accepted terms wait for its `Run`.
const FREE_RUN_WINDOW_MS: u64 = 10 * 60 * 1000;

/// What a quote priced, remembered until it expires.
#[derive(Debug, Clone)]
pub(super) struct QuotedTerms {
    /// Who asked.
    pub client: PeerId,
    /// The client's job id (wire ids are `<job>.<attempt>`).
    pub job_id: String,
    /// Model priced.
    pub model: String,
    /// Input tokens priced (counted here, or the client's claim).
    pub input_tokens: u32,
    /// Output tokens priced.
    pub max_output_tokens: u32,
    /// The price.
    pub price: Money,
    /// Offer expiry, ms since epoch.
    pub valid_until_ms: u64,
    /// Paid before the run (this provider's stake is certified).
    pub prepay: bool,
}

/// What an accepted job may run as, by wire id.
#[derive(Debug, Clone)]
pub(super) struct AcceptedTerms {
    client: PeerId,
    /// The accepted quote; with an escrow, the only one this job runs as.
    quote_id: String,
    model: String,
    input_tokens: u32,
    max_output_tokens: u32,
    price: Money,
    /// A paid quote: the job runs only while its earn row is confirmed.
    paid: bool,
    /// Prepaid: the job runs only once its escrow is released.
    prepay: bool,
    /// Forgotten after this (ms since epoch).
    until_ms: u64,
}

/// Locks a mutex, taking it over if a panicking thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// Remembers a quote so its accept can be checked against it. Bounded:
    /// a client keeps at most [`MAX_QUOTES_PER_CLIENT`] live quotes (its
    /// oldest goes), everyone together [`MAX_QUOTES`] (the oldest goes).
    pub(super) fn remember_quote(&self, quote_id: &str, terms: QuotedTerms) {
        let mut quotes = lock(&self.quotes);
        let now = now_ms();
        quotes.retain(|_, q| q.valid_until_ms > now);
        let oldest = |quotes: &HashMap<String, QuotedTerms>, of: Option<PeerId>| {
            quotes
                .iter()
                .filter(|(_, q)| of.is_none_or(|c| q.client == c))
                .min_by_key(|(_, q)| q.valid_until_ms)
                .map(|(id, _)| id.clone())
        };
        let mine = quotes.values().filter(|q| q.client == terms.client).count();
        if mine >= MAX_QUOTES_PER_CLIENT {
            if let Some(id) = oldest(&quotes, Some(terms.client)) {
                quotes.remove(&id);
            }
        }
        if quotes.len() >= MAX_QUOTES {
            if let Some(id) = oldest(&quotes, None) {
                quotes.remove(&id);
            }
        }
        quotes.insert(quote_id.to_string(), terms);
    }

    /// The answer to an accepted paid offer: `Ack`, or for a prepaid one
    /// the signed commitment to deliver once `earn`'s escrow is released.
    fn accepted_reply(
        &self,
        job_id: &str,
        prepay: bool,
        earn: &EscrowRecord,
    ) -> Result<JobMessage, ProviderError> {
        if !prepay {
            return Ok(JobMessage::ack(job_id));
        }
        let commitment = crate::p2p::verification::Commitment {
            job_id: job_id.to_string(),
            client: earn.client_peer.clone().unwrap_or_default(),
            provider: self.key.public().to_peer_id().to_string(),
            adapter: earn.adapter.clone(),
            escrow_id: earn.escrow_id.clone().unwrap_or_default(),
            amount: Money {
                amount: earn.amount,
                currency: earn.currency.clone(),
            },
            timestamp_ms: now_ms(),
        };
        let signed = crate::p2p::verification::SignedCommitment::sign(commitment, &self.key)?;
        Ok(JobMessage::new(JobBody::Committed {
            job_id: job_id.to_string(),
            commitment: Box::new(signed),
        }))
    }

    /// Remembers what an accepted job may run as.
    fn remember_accepted(&self, job_id: &str, quote_id: &str, quote: &QuotedTerms, until_ms: u64) {
        let mut accepted = lock(&self.accepted);
        let now = now_ms();
        accepted.retain(|_, a| a.until_ms > now);
        accepted.insert(
            job_id.to_string(),
            AcceptedTerms {
                client: quote.client,
                quote_id: quote_id.to_string(),
                model: quote.model.clone(),
                input_tokens: quote.input_tokens,
                max_output_tokens: quote.max_output_tokens,
                price: quote.price.clone(),
                paid: quote.price.amount > 0,
                prepay: quote.prepay,
                until_ms,
            },
        );
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
        let refuse = |reason: String| ProviderError::PaymentRequired(reason);
        let quote = lock(&self.quotes).get(quote_id).cloned();
        let Some(quote) = quote else {
            return Err(refuse(format!(
                "quote {quote_id} is unknown here or expired: ask for a new quote"
            )));
        };
        let job_of_wire = job_id.rsplit_once('.').map_or(job_id.as_str(), |(j, _)| j);
        if quote.client != client || quote.job_id != job_of_wire {
            return Err(refuse(format!(
                "quote {quote_id} was given to another client or job"
            )));
        }
        if quote.valid_until_ms < now_ms() {
            return Err(refuse(format!(
                "quote {quote_id} expired: ask for a new quote"
            )));
        }
        // Terms, once accepted, are immutable: an accept for a job already
        // accepted here must name the same quote, or one with exactly the
        // same terms (a client that lost the quote id re-quotes).
        let prior = lock(&self.accepted).get(&job_id).cloned();
        if let Some(prior) = prior {
            let same = prior.client == client
                && (prior.quote_id == quote_id
                    || (prior.model == quote.model
                        && prior.input_tokens >= quote.input_tokens
                        && prior.max_output_tokens == quote.max_output_tokens
                        && prior.price == quote.price));
            if !same {
                return Err(refuse(format!(
                    "job {job_id} was accepted with quote {} (model `{}`, {} input and {} output tokens, {}); accepted terms cannot change: use a new job id",
                    prior.quote_id,
                    prior.model,
                    prior.input_tokens,
                    prior.max_output_tokens,
                    display(prior.price.amount, &prior.price.currency)
                )));
            }
            return match self.store.escrows().get(&job_id)? {
                Some(earn) if prior.prepay && earn.kind == EscrowKind::Earn => {
                    self.accepted_reply(&job_id, true, &earn)
                }
                _ => Ok(JobMessage::ack(job_id)),
            };
        }
        let price = &quote.price;
        if price.amount == 0 {
            self.remember_accepted(&job_id, quote_id, &quote, now_ms() + FREE_RUN_WINDOW_MS);
            return Ok(JobMessage::ack(job_id));
        }
        let Some(escrow) = escrow else {
            return Err(refuse(format!(
                "this provider is paid: accept with an escrow holding {}",
                display(price.amount, &price.currency)
            )));
        };
        if let Some(existing) = self.store.escrows().get(&job_id)? {
            if existing.kind == EscrowKind::Earn
                && existing.client_peer.as_deref() == Some(client.to_string().as_str())
                && existing.escrow_id.as_deref() == Some(escrow.escrow_id.as_str())
            {
                // Paid here before, its terms forgotten (a restart): the
                // escrow must still cover this quote.
                let required = payments
                    .convert(price.amount, &price.currency, &existing.currency)
                    .map_err(|e| refuse(e.to_string()))?;
                if existing.amount < required {
                    return Err(refuse(format!(
                        "escrow {} holds {}, this quote needs {}",
                        escrow.escrow_id,
                        display(existing.amount, &existing.currency),
                        display(required, &existing.currency)
                    )));
                }
                let until = u64::try_from(existing.expires_at_ms).unwrap_or(0);
                self.remember_accepted(&job_id, quote_id, &quote, until);
                return self.accepted_reply(&job_id, quote.prepay, &existing);
            }
            return Err(refuse(format!(
                "job id {job_id} is already paid here by another escrow"
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
        if !adapter
            .currencies
            .iter()
            .any(|c| c == &escrow.amount.currency)
        {
            return Err(refuse(format!(
                "escrow is in `{}`; this provider takes {} through `{}`",
                escrow.amount.currency,
                adapter.currencies.join(", "),
                escrow.adapter
            )));
        }
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
        let min_expiry = now_ms().saturating_add(MIN_ESCROW_LEFT_MS);
        if escrow.expires_at_ms < min_expiry {
            return Err(refuse("escrow expires too soon to run the job".into()));
        }
        // The escrow id as the adapter names it: two spellings of one escrow
        // (CoinPay's UUIDs in another letter case) are one escrow.
        let mut escrow_id = escrow.escrow_id.clone();
        if adapter.confirm == Confirm::Status {
            // Beneficiary, status, amount and expiry are the adapter's own
            // reading of the service, not the client's word.
            let seen = adapter
                .plugin
                .status(&escrow.escrow_id)
                .map_err(|e| refuse(format!("cannot confirm escrow {}: {e}", escrow.escrow_id)))?;
            // A 0.2 adapter reports whom the escrow pays and the host
            // checks it; a 0.1 adapter reports no beneficiary and vouched
            // for it itself (it answers only for escrows paying the
            // `account` it was granted).
            if let Some(pays) = &seen.beneficiary {
                if !same_account(pays, &adapter.account) {
                    return Err(refuse(format!(
                        "escrow {} pays `{}`, not this provider's account `{}`",
                        escrow.escrow_id,
                        clipped(pays),
                        adapter.account
                    )));
                }
            }
            if seen.status != EscrowState::Funded {
                return Err(refuse(format!(
                    "escrow {} is {}, not funded",
                    escrow.escrow_id,
                    seen.status.name()
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
            if seen.expires_at != 0 && seen.expires_at.saturating_mul(1000) < min_expiry {
                return Err(refuse(format!(
                    "escrow {} expires too soon to run the job",
                    escrow.escrow_id
                )));
            }
            if !seen.id.is_empty() {
                escrow_id = seen.id.clone();
            }
        }
        let now = crate::store::now_ms();
        let record = EscrowRecord {
            id: job_id.clone(),
            kind: EscrowKind::Earn,
            job_id: Some(job_of_wire.to_string()),
            adapter: escrow.adapter.clone(),
            escrow_id: Some(escrow_id.clone()),
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
        };
        // One escrow pays one job: an escrow id this node already knows
        // (another job's, or one of its own payments) is refused.
        match self.store.escrows().insert_earn(&record)? {
            EarnInsert::Inserted => {}
            EarnInsert::EscrowTaken(other) => {
                return Err(refuse(format!(
                    "escrow {} already pays {other} here",
                    escrow.escrow_id
                )))
            }
            EarnInsert::IdTaken => {
                return Err(refuse(format!(
                    "job id {job_id} is already paid here by another escrow"
                )))
            }
        }
        self.remember_accepted(&job_id, quote_id, &quote, escrow.expires_at_ms);
        crate::jobs::crash_at("provider-escrow-confirmed");
        tracing::info!(job = %job_id, escrow = %escrow.escrow_id, amount = %crate::payments::display(escrow.amount.amount, &escrow.amount.currency), "escrow confirmed");
        self.accepted_reply(&job_id, quote.prepay, &record)
    }

    /// The output bound the host holds an accepted job to (a paid
    /// provider's quoted `max_output_tokens`); `None` for a free provider.
    /// The quote `job_id` was accepted on, as its result names it.
    pub(super) fn accepted_quote(&self, job_id: &str) -> Option<QuoteRef> {
        lock(&self.accepted).get(job_id).map(|t| QuoteRef {
            id: t.quote_id.clone(),
            price: t.price.clone(),
        })
    }

    pub(super) fn output_bound(&self, job_id: &str) -> Option<u32> {
        self.payments.as_ref()?;
        lock(&self.accepted)
            .get(job_id)
            .map(|t| t.max_output_tokens)
    }

    /// Whether a new job may run: a paid provider runs only what `client`
    /// accepted with a confirmed escrow (or a free quote), for the quoted
    /// model, asking at most the quoted output tokens (`max_tokens`).
    pub(super) fn check_paid(&self, client: PeerId, job: &JobRequest) -> Result<(), ProviderError> {
        if self.payments.is_none() {
            return Ok(());
        }
        let refuse = |reason: String| ProviderError::PaymentRequired(reason);
        let id = job.id.as_str();
        let terms = lock(&self.accepted).get(id).cloned();
        let Some(terms) = terms.filter(|t| t.client == client) else {
            return Err(refuse(format!(
                "job {id} has no accepted quote from this client: send Accept first"
            )));
        };
        if terms.model != job.model {
            return Err(refuse(format!(
                "job {id} was quoted for model `{}`, not `{}`",
                terms.model, job.model
            )));
        }
        let entry = self.node.model(&job.model).map(|m| &**m);
        let input_tokens = super::meter::input_tokens(entry, &job.input);
        if input_tokens > terms.input_tokens {
            return Err(refuse(format!(
                "job {id} was quoted for {} input tokens, its input has {input_tokens}: ask for a quote with the input",
                terms.input_tokens
            )));
        }
        let max_tokens = job
            .params
            .iter()
            .rev()
            .find(|(k, _)| k == "max_tokens")
            .and_then(|(_, v)| v.trim().parse::<u32>().ok());
        match max_tokens {
            Some(n) if n <= terms.max_output_tokens => {}
            _ => {
                return Err(refuse(format!(
                    "job {id} was quoted for {} output tokens: send max_tokens <= {}",
                    terms.max_output_tokens, terms.max_output_tokens
                )))
            }
        }
        if !terms.paid {
            return Ok(());
        }
        let paid_states: &[&str] = match terms.prepay {
            true => &["released", "settled"],
            false => &["funded", "released", "settled"],
        };
        let mut row = self.store.escrows().get(id)?;
        // Prepaid, and the client says it released: ask the adapter
        // where this provider can (the receipt carried the client's word).
        if let Some(e) = row.as_ref().filter(|e| {
            terms.prepay && e.status == "funded" && e.confirmed_by.as_deref() == Some("status")
        }) {
            if let Some(status) = self.adapter_status(e).filter(|s| *s != e.status) {
                self.store.escrows().update(id, None, &status)?;
                row = self.store.escrows().get(id)?;
            }
        }
        match row {
            Some(e)
                if e.kind == EscrowKind::Earn
                    && e.client_peer.as_deref() == Some(client.to_string().as_str())
                    && paid_states.contains(&e.status.as_str()) =>
            {
                Ok(())
            }
            Some(e) if e.kind == EscrowKind::Earn && terms.prepay => Err(refuse(format!(
                "job {id} is prepaid and its escrow is {}, not released: release it and send the receipt, then run (this provider's stake is the collateral)",
                e.status
            ))),
            Some(e) if e.kind == EscrowKind::Earn => {
                Err(refuse(format!("the escrow of job {id} is {}", e.status)))
            }
            _ => Err(refuse(format!(
                "job {id} has no confirmed escrow: send Accept with one first"
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
    pub(super) fn adapter_status(&self, rec: &EscrowRecord) -> Option<String> {
        let adapter = self.payments.as_ref()?.adapter(&rec.adapter)?;
        let id = rec.escrow_id.as_deref()?;
        match adapter.plugin.status(id) {
            Ok(e) => Some(e.status.name().to_string()),
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

/// What an adapter reported, cut to a length fit for an error message (a
/// payment service's answer is not ours to trust with the wire's size).
fn clipped(s: &str) -> String {
    const MAX: usize = 128;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reported_values_are_clipped_in_refusals() {
        assert_eq!(super::clipped("0xabc"), "0xabc");
        let long = "é".repeat(10_000);
        let shown = super::clipped(&long);
        assert_eq!(shown.chars().count(), 129);
        assert!(shown.ends_with('…'));
    }
}
