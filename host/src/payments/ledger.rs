//! Host-side access to the `payment-ledger` plugin's balances, for
//! `infernet wallet` and local networks. The key layout is the ledger's
//! documented contract: the balance of `account` in `currency` is at kv key
//! `balance/<account>/<CURRENCY>`, an ASCII decimal of minor units (missing
//! = 0). Updates are single SQLite transactions.

use crate::store::{KvError, PluginKv};

/// The embedded default adapter's plugin name (its kv namespace).
pub const LEDGER: &str = "payment-ledger";

fn key(account: &str, currency: &str) -> String {
    format!("balance/{account}/{currency}")
}

fn parse(bytes: &[u8]) -> Result<u64, KvError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| KvError::Limit("ledger balance is not a decimal number".into()))
}

/// Credits `minor` units of `currency` to `account`; returns the new balance.
pub fn fund(kv: &PluginKv, account: &str, currency: &str, minor: u64) -> Result<u64, KvError> {
    if account.is_empty() || account.contains('/') {
        return Err(KvError::Limit(format!(
            "`{account}` is not a ledger account name (non-empty, no `/`)"
        )));
    }
    // The ledger plugin moves balances in several kv steps under this lock;
    // a credit must not land between its read and its write.
    let _exclusive = kv.exclusive()?;
    let new = kv.update(&key(account, currency), |old| {
        let old = old.as_deref().map(parse).transpose()?.unwrap_or(0);
        let new = old
            .checked_add(minor)
            .ok_or_else(|| KvError::Limit("balance overflow".into()))?;
        Ok::<_, KvError>(new.to_string().into_bytes())
    })?;
    parse(&new)
}

/// The balance of `account` in `currency` (minor units).
pub fn balance(kv: &PluginKv, account: &str, currency: &str) -> Result<u64, KvError> {
    Ok(kv
        .get(&key(account, currency))?
        .as_deref()
        .map(parse)
        .transpose()?
        .unwrap_or(0))
}

/// Every balance (of `account`, or of all accounts): `(account, currency, minor)`.
pub fn balances(
    kv: &PluginKv,
    account: Option<&str>,
) -> Result<Vec<(String, String, u64)>, KvError> {
    let prefix = match account {
        Some(a) => format!("balance/{a}/"),
        None => "balance/".into(),
    };
    let mut rows = Vec::new();
    for k in kv.list_keys(&prefix)? {
        let Some((acct, cur)) = k["balance/".len()..].rsplit_once('/') else {
            continue;
        };
        let value = kv.get(&k)?.unwrap_or_default();
        rows.push((acct.to_string(), cur.to_string(), parse(&value)?));
    }
    Ok(rows)
}
