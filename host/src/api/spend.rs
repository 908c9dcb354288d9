//! Per-key spending limits (`[[api.keys]] max_spend`, in `api.currency`).
//!
//! A request from a limited key reserves its budget before the job starts:
//! the job's `max_budget` becomes at most what the key has left and its
//! currency the limit's, so no quote above it is accepted, and concurrent
//! requests cannot overspend together. When the job ends the reservation
//! is replaced by the price actually paid (or released on failure). Totals
//! are kept by key name in `<data_dir>/api-spend.json`, rewritten after
//! each job, so a restart does not reset a limit.

use super::error::ApiError;
use crate::config::ApiConfig;
use crate::payments::{display, Amount};
use crate::sdk::InferOptions;
use axum::http::StatusCode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The file totals are kept in, under the data dir.
pub const SPEND_FILE: &str = "api-spend.json";

/// Limits and what each key has spent or holds reserved.
pub(super) struct Spend {
    /// Per key (by index): name and limit in minor units.
    limits: Vec<(String, Option<u64>)>,
    currency: Option<String>,
    state: Mutex<Totals>,
    path: PathBuf,
}

#[derive(Default)]
struct Totals {
    /// Settled spending by key name.
    spent: BTreeMap<String, u64>,
    /// Reserved by jobs in flight, by key index.
    held: BTreeMap<usize, u64>,
}

impl Spend {
    /// Limits from `cfg`, totals from `path` (missing: none spent yet).
    pub(super) fn load(cfg: &ApiConfig, path: PathBuf) -> Result<Spend, String> {
        let mut limits = Vec::with_capacity(cfg.keys.len());
        for (i, k) in cfg.keys.iter().enumerate() {
            let limit = k
                .limit(cfg.currency.as_deref())
                .map_err(|m| format!("api.keys[{i}].max_spend: {m}"))?;
            limits.push((k.name.clone(), limit));
        }
        let spent = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a spending record: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Spend {
            limits,
            currency: cfg.currency.clone(),
            state: Mutex::new(Totals {
                spent,
                held: BTreeMap::new(),
            }),
            path,
        })
    }

    /// Bounds `opts` by what key `key` has left and reserves it; `None`
    /// for a key without a limit (or no key).
    pub(super) fn reserve(
        self: &Arc<Self>,
        key: Option<usize>,
        opts: &mut InferOptions,
    ) -> Result<Option<Reservation>, ApiError> {
        let Some((idx, (name, Some(limit)))) = key.and_then(|k| self.limits.get(k).map(|l| (k, l)))
        else {
            return Ok(None);
        };
        let currency = self.currency.clone().unwrap_or_default();
        if opts.currency.as_deref().is_some_and(|c| c != currency) {
            return Err(ApiError::bad_field(
                "infernet.currency",
                format!("this key's spending limit is in {currency}"),
            ));
        }
        let asked = match opts.max_budget {
            Some(b) if b.currency != currency => {
                return Err(ApiError::bad_field(
                    "infernet.max_budget",
                    format!("this key's spending limit is in {currency}, the budget is {b}"),
                ))
            }
            Some(b) => Some(u64::try_from(b.minor).unwrap_or(u64::MAX)),
            None => None,
        };
        let mut t = self
            .state
            .lock()
            .map_err(|_| ApiError::internal("spending record lock poisoned"))?;
        let used = t.spent.get(name).copied().unwrap_or(0);
        let held = t.held.get(&idx).copied().unwrap_or(0);
        let left = limit.saturating_sub(used.saturating_add(held));
        if left == 0 {
            let mut e = ApiError::bad_request(
                "insufficient_quota",
                format!(
                    "API key `{name}` has spent its limit of {} ({} held by jobs running now)",
                    display(*limit, &currency),
                    display(held, &currency)
                ),
            );
            e.status = StatusCode::TOO_MANY_REQUESTS;
            e.kind = "insufficient_quota";
            return Err(e);
        }
        let amount = asked.map_or(left, |b| b.min(left));
        opts.max_budget = Some(
            Amount::from_minor(u128::from(amount), &currency)
                .map_err(|e| ApiError::internal(format!("api.currency: {e}")))?,
        );
        opts.currency = Some(currency);
        *t.held.entry(idx).or_default() += amount;
        Ok(Some(Reservation {
            spend: self.clone(),
            idx,
            amount,
            settled: false,
        }))
    }
}

/// A job's reserved budget; released on drop unless settled.
pub(super) struct Reservation {
    spend: Arc<Spend>,
    idx: usize,
    amount: u64,
    settled: bool,
}

impl Reservation {
    /// The job cost `amount` of `currency` (a price in another currency,
    /// which the job's currency filter rules out, counts as the whole
    /// reservation).
    pub(super) fn settle(mut self, amount: u64, currency: &str) {
        let same = self.spend.currency.as_deref() == Some(currency);
        self.release(Some(if same { amount } else { self.amount }));
        self.settled = true;
    }

    fn release(&self, price: Option<u64>) {
        let Ok(mut t) = self.spend.state.lock() else {
            return;
        };
        if let Some(h) = t.held.get_mut(&self.idx) {
            *h = h.saturating_sub(self.amount);
        }
        let Some(price) = price else {
            return;
        };
        let name = self.spend.limits[self.idx].0.clone();
        let total = t.spent.entry(name).or_default();
        *total = total.saturating_add(price);
        let tmp = self.spend.path.with_extension("json.partial");
        let write = serde_json::to_vec(&t.spent)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.spend.path));
        if let Err(e) = write {
            tracing::error!(error = %e, path = %self.spend.path.display(), "cannot save API spending");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.release(None);
        }
    }
}
