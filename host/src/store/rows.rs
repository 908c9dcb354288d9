//! Reading rows into records, once for every table. A column can fail in
//! two ways: SQLite's own error, or a value this build cannot read (a
//! state name, a JSON list, an amount) — [`FromRow`] maps a row in one
//! step with both, and [`query`] / [`query_one`] run a `SELECT` of a
//! record's columns.

use super::StoreError;
use rusqlite::{Connection, Params, Row};
use std::str::FromStr;

/// A record read from one row of `SELECT {COLUMNS} ...`.
pub(super) trait FromRow: Sized {
    /// The column list, in the order `from_row` reads them.
    const COLUMNS: &'static str;
    /// The record in `r`.
    fn from_row(r: &Row<'_>) -> Result<Self, StoreError>;
}

/// Every row of `SELECT {T::COLUMNS} FROM {tail}`.
pub(super) fn query<T: FromRow>(
    conn: &Connection,
    tail: &str,
    params: impl Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {} FROM {tail}", T::COLUMNS))?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(T::from_row(r)?);
    }
    Ok(out)
}

/// The first row of `SELECT {T::COLUMNS} FROM {tail}`, if any.
pub(super) fn query_one<T: FromRow>(
    conn: &Connection,
    tail: &str,
    params: impl Params,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {} FROM {tail}", T::COLUMNS))?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(T::from_row).transpose()
}

/// Column `i` parsed with `FromStr`; `what` names it when it does not parse.
pub(super) fn parsed<T: FromStr>(r: &Row<'_>, i: usize, what: &str) -> Result<T, StoreError> {
    let s: String = r.get(i)?;
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} `{s}`")))
}

/// Optional column `i` parsed with `FromStr`.
pub(super) fn parsed_opt<T: FromStr>(
    r: &Row<'_>,
    i: usize,
    what: &str,
) -> Result<Option<T>, StoreError> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| {
        s.parse()
            .map_err(|_| StoreError::Corrupt(format!("{what} `{s}`")))
    })
    .transpose()
}

/// Column `i` as JSON.
pub(super) fn json<T: serde::de::DeserializeOwned>(r: &Row<'_>, i: usize) -> Result<T, StoreError> {
    let s: String = r.get(i)?;
    Ok(serde_json::from_str(&s)?)
}

/// Column `i` as optional JSON.
pub(super) fn json_opt<T: serde::de::DeserializeOwned>(
    r: &Row<'_>,
    i: usize,
) -> Result<Option<T>, StoreError> {
    let s: Option<String> = r.get(i)?;
    Ok(s.map(|s| serde_json::from_str(&s)).transpose()?)
}
