//! `payment-ledger`: the embedded default payment adapter. Balances and
//! escrows live in the plugin's `kv` namespace (the host maps it to a
//! per-plugin namespace of the node's SQLite), so it moves no real money:
//! it is for local networks, development and tests.
//!
//! # Key layout (a contract: the host reads and writes balances directly)
//!
//! | key                          | value                                                   |
//! |------------------------------|---------------------------------------------------------|
//! | `balance/<account>/<CUR>`    | ASCII decimal `u64`, minor units of `CUR`; missing = 0  |
//! | `escrow/<id>`                | the escrow as JSON ([`Record`])                         |
//! | `job/<job_id>`               | the escrow id of that job (UTF-8)                       |
//!
//! `infernet wallet fund|balance` write and read `balance/...` keys; only
//! this plugin touches `escrow/...` and `job/...`. Account names are
//! non-empty and contain no `/`; currency codes are upper case.
//!
//! # Semantics
//!
//! * Currencies: every one of the SDK's table (`money::CURRENCIES`: `USD`
//!   with 6 decimals, micro-dollars, the network's quote unit; `BTC` 8,
//!   `ETH` 18, `SOL` 9, `POL` 18, `BCH` 8, `USDC_ETH` 6, `USDC_POL` 6,
//!   `USDC_SOL` 6). Config key `currencies` (comma list) restricts the set.
//! * `create-escrow` debits the depositor at once; the escrow is `funded`.
//!   The id is `ledger-<job_id>`, and creating again for the same job
//!   returns the existing escrow (a different amount, currency or party is
//!   an error), so a retried create never debits twice.
//! * `release`: funded or disputed → the beneficiary is credited, `settled`.
//! * `refund`: funded, pending or disputed → the depositor is credited, `refunded`.
//! * `dispute`: funded → `disputed` (the reason is stored); the arbiter's
//!   decision is then a `release` or a `refund`.
//! * A funded escrow past its expiry is expired when next touched: the
//!   depositor is credited and the status is `expired`. Disputed escrows do
//!   not expire.
//! * `release`/`refund`/`dispute` are idempotent for an escrow already in
//!   their target state; other transitions out of a final state are
//!   `invalid-input` errors naming the state.
//!
//! # Crash safety
//!
//! `kv` has no transactions, and the instance may trap (fuel, epoch, host
//! error) between two writes. Every balance movement therefore goes through
//! a write-ahead marker in the escrow record ([`Pending`]):
//!
//! 1. the escrow record is written with `pending = {account, before, after,
//!    then}`: the balance it read, the balance it is about to write, and the
//!    status the escrow takes once the money moved;
//! 2. the balance key is set to `after`;
//! 3. the record is written with `status = then` and no marker.
//!
//! Whoever loads a record with a marker first finishes the move: a balance
//! equal to `after` means step 2 happened (only step 3 is redone), equal to
//! `before` means it did not (steps 2 and 3 are redone). Anything else
//! means the balance also changed outside the ledger in between, and the
//! escrow is reported as needing manual reconciliation rather than guessed
//! at. Money is never held by an escrow that did not debit, and never
//! debited without an escrow that holds it.

use infernet_plugin_api::escrow::EscrowState;
use infernet_plugin_api::money::{self, Currency};
use infernet_plugin_api::{
    config, export_payment, kv, log, CurrencyInfo, Error, Escrow, EscrowRequest, Money, Payment,
};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest job id (and so escrow id) the ledger accepts, in bytes.
const MAX_JOB_ID: usize = 256;
/// Longest account name, in bytes.
const MAX_ACCOUNT: usize = 256;
/// Longest dispute reason kept, in bytes.
const MAX_REASON: usize = 4096;

/// The adapter; all its state is in `kv`.
struct Ledger;

/// Escrow states are stored by their WIT names (`funded`, ...).
mod stored_state {
    use infernet_plugin_api::escrow::EscrowState;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(state: &EscrowState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(state.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EscrowState, D::Error> {
        let name = String::deserialize(d)?;
        EscrowState::parse(&name)
            .ok_or_else(|| D::Error::custom(format!("unknown escrow status `{name}`")))
    }
}

/// A balance move in flight (see "Crash safety" in the module doc).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Pending {
    /// Account whose balance moves.
    account: String,
    /// Its balance before the move.
    before: u64,
    /// Its balance after the move.
    after: u64,
    /// The escrow's status once the move is done.
    #[serde(with = "stored_state")]
    then: EscrowState,
}

/// An escrow as stored at `escrow/<id>`.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Record {
    id: String,
    job_id: String,
    /// Minor units of `currency`.
    amount: u64,
    currency: String,
    depositor: String,
    beneficiary: String,
    arbiter: Option<String>,
    /// Unix milliseconds.
    created_at_ms: u64,
    /// Unix milliseconds; the escrow expires when the clock reaches it.
    expires_at_ms: u64,
    #[serde(with = "stored_state")]
    status: EscrowState,
    /// Whether the depositor's balance was debited for this escrow.
    debited: bool,
    #[serde(default)]
    metadata: Vec<(String, String)>,
    #[serde(default)]
    dispute_reason: Option<String>,
    /// A balance move not yet known to be complete.
    #[serde(default)]
    pending: Option<Pending>,
}

impl Record {
    fn to_wit(&self) -> Escrow {
        Escrow {
            id: self.id.clone(),
            status: self.status.into(),
            amount: Money::new(self.amount, &self.currency),
            deposit_address: None,
            expires_at: self.expires_at_ms.div_ceil(1000),
            beneficiary: self.beneficiary.clone(),
        }
    }

    fn money(&self) -> Result<String, Error> {
        format_amount(self.amount, &self.currency)
    }
}

// ---------------------------------------------------------------- helpers --

fn now_ms() -> Result<u64, Error> {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::internal("the clock is before 1970"))?;
    u64::try_from(elapsed.as_millis()).map_err(|_| Error::internal("the clock is out of range"))
}

/// The currencies this instance accepts: every one of the shared table
/// ([`money::CURRENCIES`]), or those named by config `currencies`.
fn enabled_currencies() -> Result<Vec<&'static Currency>, Error> {
    let Some(list) = config::get("currencies") else {
        return Ok(money::CURRENCIES.iter().collect());
    };
    let mut enabled: Vec<&'static Currency> = Vec::new();
    for code in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let known = money::currency(code).map_err(|e| {
            Error::invalid(format!(
                "config key `currencies` names `{code}`, which the ledger does not know: {e}"
            ))
        })?;
        if !enabled.contains(&known) {
            enabled.push(known)
        }
    }
    if enabled.is_empty() {
        return Err(Error::invalid("config key `currencies` names no currency"));
    }
    Ok(enabled)
}

/// `amount` minor units as a decimal number of units with the currency code,
/// e.g. `1200000` USD → `1.2 USD`. Exact: integers only.
fn format_amount(amount: u64, currency: &str) -> Result<String, Error> {
    money::Amount::from_minor(u128::from(amount), currency)
        .map(|a| a.to_string())
        .map_err(|_| Error::unsupported(format!("the ledger does not know currency `{currency}`")))
}

fn kv_err<'a>(what: &'a str, key: &'a str) -> impl FnOnce(Error) -> Error + 'a {
    move |e| {
        let detail = match e {
            Error::InvalidInput(m)
            | Error::Unsupported(m)
            | Error::LimitExceeded(m)
            | Error::Internal(m) => m,
        };
        Error::internal(format!("ledger storage: {what} `{key}` failed: {detail}"))
    }
}

fn balance_key(account: &str, currency: &str) -> String {
    format!("balance/{account}/{currency}")
}

fn escrow_key(id: &str) -> String {
    format!("escrow/{id}")
}

fn job_key(job_id: &str) -> String {
    format!("job/{job_id}")
}

/// The balance of `account` in `currency` (0 when never funded).
fn balance(account: &str, currency: &str) -> Result<u64, Error> {
    let key = balance_key(account, currency);
    let Some(raw) = kv::get(&key).map_err(kv_err("reading", &key))? else {
        return Ok(0);
    };
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            Error::internal(format!(
                "ledger storage: `{key}` does not hold a decimal amount"
            ))
        })
}

fn set_balance(account: &str, currency: &str, amount: u64) -> Result<(), Error> {
    let key = balance_key(account, currency);
    kv::set(&key, amount.to_string().as_bytes()).map_err(kv_err("writing", &key))
}

fn save(record: &Record) -> Result<(), Error> {
    let key = escrow_key(&record.id);
    let json = serde_json::to_vec(record)
        .map_err(|e| Error::internal(format!("encoding escrow `{}`: {e}", record.id)))?;
    kv::set(&key, &json).map_err(kv_err("writing", &key))
}

/// The stored record of escrow `id`, if any, with any interrupted balance
/// move finished.
fn load(id: &str) -> Result<Option<Record>, Error> {
    let key = escrow_key(id);
    let Some(raw) = kv::get(&key).map_err(kv_err("reading", &key))? else {
        return Ok(None);
    };
    let mut record: Record = serde_json::from_slice(&raw)
        .map_err(|e| Error::internal(format!("ledger storage: escrow `{id}` is corrupt: {e}")))?;
    if record.pending.is_some() {
        recover(&mut record)?;
    }
    Ok(Some(record))
}

/// The record of escrow `id`, or an `invalid-input` error when unknown.
fn load_known(id: &str) -> Result<Record, Error> {
    load(id)?.ok_or_else(|| Error::invalid(format!("unknown escrow `{id}`")))
}

/// Finishes a balance move interrupted between its writes.
fn recover(record: &mut Record) -> Result<(), Error> {
    let Some(pending) = record.pending.clone() else {
        return Ok(());
    };
    let current = balance(&pending.account, &record.currency)?;
    if current == pending.before {
        set_balance(&pending.account, &record.currency, pending.after)?;
    } else if current != pending.after {
        return Err(Error::internal(format!(
            "escrow `{}` was interrupted moving {} on account {} (balance {} → {}), and the \
             balance is now {}: reconcile `balance/{}/{}` by hand",
            record.id,
            record.money()?,
            pending.account,
            pending.before,
            pending.after,
            current,
            pending.account,
            record.currency
        )));
    }
    finish(record, pending.then)?;
    log::warn(&format!(
        "finished an interrupted balance move of escrow `{}` (now {})",
        record.id,
        record.status.name()
    ));
    Ok(())
}

/// Step 3 of a balance move: the new status, no marker.
fn finish(record: &mut Record, then: EscrowState) -> Result<(), Error> {
    if then != EscrowState::Pending && record.status == EscrowState::Pending {
        record.debited = true;
    }
    if matches!(
        then,
        EscrowState::Settled | EscrowState::Refunded | EscrowState::Expired
    ) {
        record.debited = false;
    }
    record.status = then;
    record.pending = None;
    save(record)
}

/// Moves the escrow's amount into (`credit`) or out of (`!credit`) `account`
/// and sets the escrow's status to `then`, crash-safely (see module doc).
fn move_money(
    record: &mut Record,
    account: &str,
    credit: bool,
    then: EscrowState,
) -> Result<(), Error> {
    let before = balance(account, &record.currency)?;
    let after = if credit {
        before.checked_add(record.amount).ok_or_else(|| {
            Error::invalid(format!(
                "crediting {} would overflow the balance of account {account}",
                record.money().unwrap_or_default()
            ))
        })?
    } else {
        before
            .checked_sub(record.amount)
            .ok_or_else(|| insufficient(account, before, record))?
    };
    // 1. the intent, with both balances
    record.pending = Some(Pending {
        account: account.to_string(),
        before,
        after,
        then,
    });
    save(record)?;
    // 2. the money
    set_balance(account, &record.currency, after)?;
    // 3. the new state
    finish(record, then)
}

fn insufficient(account: &str, holds: u64, record: &Record) -> Error {
    let holds = format_amount(holds, &record.currency).unwrap_or_else(|e| format!("{e:?}"));
    let needs = record.money().unwrap_or_else(|e| format!("{e:?}"));
    Error::invalid(format!(
        "insufficient balance: account {account} holds {holds}, the escrow needs {needs}; \
         fund it with `infernet wallet fund`"
    ))
}

/// Expires a funded escrow whose time is up, returning the depositor's money.
/// Returns whether it expired.
fn expire_if_due(record: &mut Record) -> Result<bool, Error> {
    if !matches!(record.status, EscrowState::Funded | EscrowState::Pending) {
        return Ok(false);
    }
    if now_ms()? < record.expires_at_ms {
        return Ok(false);
    }
    if record.debited {
        let depositor = record.depositor.clone();
        move_money(record, &depositor, true, EscrowState::Expired)?;
    } else {
        record.status = EscrowState::Expired;
        save(record)?;
    }
    log::info(&format!(
        "escrow `{}` expired; {} returned to {}",
        record.id,
        record.money()?,
        record.depositor
    ));
    Ok(true)
}

/// Checks an account name for use in a `balance/<account>/<CUR>` key.
fn check_account(role: &str, account: &str) -> Result<(), Error> {
    if account.trim().is_empty() {
        return Err(Error::invalid(format!("the {role} account is empty")));
    }
    if account.len() > MAX_ACCOUNT {
        return Err(Error::invalid(format!(
            "the {role} account is longer than {MAX_ACCOUNT} bytes"
        )));
    }
    if account.contains('/') || account.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "the {role} account `{}` contains `/` or a control character",
            account.escape_debug()
        )));
    }
    Ok(())
}

fn check_request(request: &EscrowRequest) -> Result<(), Error> {
    let job = &request.job_id;
    if job.trim().is_empty() {
        return Err(Error::invalid("the escrow's job id is empty"));
    }
    if job.len() > MAX_JOB_ID || job.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "the job id is longer than {MAX_JOB_ID} bytes or contains a control character"
        )));
    }
    if request.amount.amount == 0 {
        return Err(Error::invalid("an escrow must hold a positive amount"));
    }
    let currency = &request.amount.currency;
    let enabled = enabled_currencies()?;
    if !enabled.iter().any(|c| c.code == currency) {
        return Err(Error::unsupported(format!(
            "the ledger does not support currency `{currency}` (supported: {})",
            enabled
                .iter()
                .map(|c| c.code)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    check_account("depositor", &request.depositor)?;
    check_account("beneficiary", &request.beneficiary)?;
    if let Some(arbiter) = &request.arbiter {
        check_account("arbiter", arbiter)?;
    }
    if request.expires_in_secs == 0 {
        return Err(Error::invalid(
            "an escrow must expire in at least one second",
        ));
    }
    Ok(())
}

/// Whether an existing escrow is the one `request` asks for.
fn check_same(existing: &Record, request: &EscrowRequest) -> Result<(), Error> {
    let mut differs = Vec::new();
    if existing.amount != request.amount.amount || existing.currency != request.amount.currency {
        differs.push(format!(
            "amount ({} held, {} asked)",
            existing.money()?,
            format_amount(request.amount.amount, &request.amount.currency).unwrap_or_else(
                |_| format!("{} {}", request.amount.amount, request.amount.currency)
            )
        ));
    }
    if existing.depositor != request.depositor {
        differs.push("depositor".to_string());
    }
    if existing.beneficiary != request.beneficiary {
        differs.push("beneficiary".to_string());
    }
    if existing.arbiter != request.arbiter {
        differs.push("arbiter".to_string());
    }
    if differs.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "job `{}` already has escrow `{}` with a different {}",
            existing.job_id,
            existing.id,
            differs.join(", ")
        )))
    }
}

// ------------------------------------------------------------- the world --

impl Payment for Ledger {
    fn new() -> Self {
        Ledger
    }

    fn currencies(&mut self) -> Vec<CurrencyInfo> {
        let enabled = enabled_currencies().unwrap_or_else(|e| {
            log::error(&format!("{e:?}; offering no currency"));
            Vec::new()
        });
        enabled
            .into_iter()
            .map(|c| CurrencyInfo {
                code: c.code.to_string(),
                decimals: c.decimals,
            })
            .collect()
    }

    fn create_escrow(&mut self, request: EscrowRequest) -> Result<Escrow, Error> {
        check_request(&request)?;
        let id = format!("ledger-{}", request.job_id);

        // Idempotent per job: the id is derived from the job id, so a retry
        // finds the escrow (and any interrupted debit is finished by `load`).
        if let Some(mut existing) = load(&id)? {
            check_same(&existing, &request)?;
            let key = job_key(&existing.job_id);
            if kv::get(&key).map_err(kv_err("reading", &key))?.is_none() {
                kv::set(&key, id.as_bytes()).map_err(kv_err("writing", &key))?;
            }
            expire_if_due(&mut existing)?;
            return Ok(existing.to_wit());
        }

        let now = now_ms()?;
        let expires_at_ms = request
            .expires_in_secs
            .checked_mul(1000)
            .and_then(|ms| now.checked_add(ms))
            .ok_or_else(|| Error::invalid("the escrow's expiry is out of range"))?;
        let mut record = Record {
            id: id.clone(),
            job_id: request.job_id.clone(),
            amount: request.amount.amount,
            currency: request.amount.currency.clone(),
            depositor: request.depositor.clone(),
            beneficiary: request.beneficiary.clone(),
            arbiter: request.arbiter.clone(),
            created_at_ms: now,
            expires_at_ms,
            status: EscrowState::Pending,
            debited: false,
            metadata: request.metadata.clone(),
            dispute_reason: None,
            pending: None,
        };
        // Checked before anything is written, so a failed create leaves no trace.
        let available = balance(&record.depositor, &record.currency)?;
        if available < record.amount {
            return Err(insufficient(&record.depositor, available, &record));
        }
        // The escrow record (with the debit marker) is written before the
        // balance, and `funded` only after: see "Crash safety".
        let depositor = record.depositor.clone();
        move_money(&mut record, &depositor, false, EscrowState::Funded)?;
        // The job index is a convenience for operators; the id is derived.
        let key = job_key(&record.job_id);
        kv::set(&key, id.as_bytes()).map_err(kv_err("writing", &key))?;
        log::info(&format!(
            "escrow `{id}`: {} held from {} for {}",
            record.money()?,
            record.depositor,
            record.beneficiary
        ));
        Ok(record.to_wit())
    }

    fn status(&mut self, id: String) -> Result<Escrow, Error> {
        let mut record = load_known(&id)?;
        expire_if_due(&mut record)?;
        Ok(record.to_wit())
    }

    fn release(&mut self, id: String) -> Result<Escrow, Error> {
        let mut record = load_known(&id)?;
        if expire_if_due(&mut record)? {
            return Err(Error::invalid(format!(
                "escrow `{id}` expired before release; {} went back to {}",
                record.money()?,
                record.depositor
            )));
        }
        match record.status {
            EscrowState::Released | EscrowState::Settled => {}
            EscrowState::Funded | EscrowState::Disputed => {
                let beneficiary = record.beneficiary.clone();
                move_money(&mut record, &beneficiary, true, EscrowState::Settled)?;
                log::info(&format!(
                    "escrow `{id}` released: {} to {}",
                    record.money()?,
                    record.beneficiary
                ));
            }
            EscrowState::Pending | EscrowState::Refunded | EscrowState::Expired => {
                return Err(Error::invalid(format!(
                    "escrow `{id}` is {} and cannot be released",
                    record.status.name()
                )))
            }
        }
        Ok(record.to_wit())
    }

    fn refund(&mut self, id: String) -> Result<Escrow, Error> {
        let mut record = load_known(&id)?;
        expire_if_due(&mut record)?;
        match record.status {
            EscrowState::Refunded | EscrowState::Expired => {}
            EscrowState::Funded | EscrowState::Pending | EscrowState::Disputed => {
                if record.debited {
                    let depositor = record.depositor.clone();
                    move_money(&mut record, &depositor, true, EscrowState::Refunded)?;
                } else {
                    record.status = EscrowState::Refunded;
                    save(&record)?;
                }
                log::info(&format!(
                    "escrow `{id}` refunded: {} to {}",
                    record.money()?,
                    record.depositor
                ));
            }
            EscrowState::Released | EscrowState::Settled => {
                return Err(Error::invalid(format!(
                    "escrow `{id}` is {} and cannot be refunded",
                    record.status.name()
                )))
            }
        }
        Ok(record.to_wit())
    }

    fn dispute(&mut self, id: String, reason: String) -> Result<Escrow, Error> {
        let mut record = load_known(&id)?;
        expire_if_due(&mut record)?;
        match record.status {
            EscrowState::Disputed => {}
            EscrowState::Funded => {
                let mut reason = reason;
                if reason.len() > MAX_REASON {
                    let mut end = MAX_REASON;
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    reason.truncate(end);
                }
                log::info(&format!("escrow `{id}` disputed: {reason}"));
                record.dispute_reason = Some(reason);
                record.status = EscrowState::Disputed;
                save(&record)?;
            }
            EscrowState::Pending
            | EscrowState::Released
            | EscrowState::Settled
            | EscrowState::Refunded
            | EscrowState::Expired => {
                return Err(Error::invalid(format!(
                    "escrow `{id}` is {} and cannot be disputed",
                    record.status.name()
                )))
            }
        }
        Ok(record.to_wit())
    }
}

export_payment!(Ledger);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_stored_by_their_wit_names() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Row {
            #[serde(with = "stored_state")]
            s: EscrowState,
        }
        for s in EscrowState::ALL {
            let text = serde_json::to_string(&Row { s }).unwrap();
            assert_eq!(text, format!(r#"{{"s":"{}"}}"#, s.name()));
            assert_eq!(serde_json::from_str::<Row>(&text).unwrap(), Row { s });
        }
        let err = serde_json::from_str::<Row>(r#"{"s":"Funded"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown escrow status `Funded`"),
            "{err}"
        );
    }
}
