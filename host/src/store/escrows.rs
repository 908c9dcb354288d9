//! The `escrows` table: the node's own record of every escrow it pays
//! into (`pay`, client side), is paid from (`earn`, provider side) or
//! holds as provider stake (`stake`). The payment adapter is the source of
//! truth for money; this table is what makes settlement resumable: a row
//! is written (`creating`) before the adapter is asked to create the escrow,
//! and every status the adapter reports afterwards is written back, so a
//! restarted node knows which escrows are still open and must be released,
//! refunded or expired. Amounts are exact: `u64` minor units stored as text.

use super::rows::{parsed, query, query_one, FromRow};
use super::{now_ms, Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

/// Why this node has the escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscrowKind {
    /// This node (a client) pays a provider for a job.
    Pay,
    /// This node (a provider) is paid for a job.
    Earn,
    /// This node (a provider) locked stake with the network's arbiter.
    Stake,
}

impl EscrowKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            EscrowKind::Pay => "pay",
            EscrowKind::Earn => "earn",
            EscrowKind::Stake => "stake",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pay" => Ok(EscrowKind::Pay),
            "earn" => Ok(EscrowKind::Earn),
            "stake" => Ok(EscrowKind::Stake),
            other => Err(StoreError::Corrupt(format!("escrow kind `{other}`"))),
        }
    }
}

/// Statuses after which nothing more happens to an escrow.
pub const FINAL_STATUSES: &[&str] = &["settled", "refunded", "expired", "abandoned"];

/// One escrow as this node knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EscrowRecord {
    /// Host-side id: the job's wire id (`<job>.<attempt>`) or `stake-…`.
    pub id: String,
    /// Pay, earn or stake.
    pub kind: EscrowKind,
    /// Local job id, for pay/earn.
    pub job_id: Option<String>,
    /// Payment adapter name.
    pub adapter: String,
    /// The adapter's escrow id, once created.
    pub escrow_id: Option<String>,
    /// Amount in minor units of `currency`.
    pub amount: u64,
    /// Currency code.
    pub currency: String,
    /// Who pays (account at the adapter).
    pub depositor: String,
    /// Who is paid on release.
    pub beneficiary: String,
    /// Client peer id.
    pub client_peer: Option<String>,
    /// Provider peer id.
    pub provider_peer: Option<String>,
    /// `creating`, then the adapter's status (`pending`, `funded`,
    /// `released`, `settled`, `refunded`, `disputed`, `expired`), or
    /// `abandoned` (created nowhere: the node died before the adapter call).
    pub status: String,
    /// How the provider confirmed the escrow: `status` (asked its adapter)
    /// or `client` (took the client's statement; local ledger).
    pub confirmed_by: Option<String>,
    /// Expiry, ms since epoch.
    pub expires_at_ms: i64,
    /// Written, ms since epoch.
    pub created_at_ms: i64,
    /// Last change, ms since epoch.
    pub updated_at_ms: i64,
}

/// `INSERT OR IGNORE` of `rec` (columns bound as `?1`..`?16` in
/// [`FromRow::COLUMNS`] order), only when `condition` (`WHERE ...`, may be empty)
/// holds. Returns how many rows were inserted.
fn insert_if(
    conn: &rusqlite::Connection,
    rec: &EscrowRecord,
    condition: &str,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        &format!(
            "INSERT OR IGNORE INTO escrows ({}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
             ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16 {condition}",
            EscrowRecord::COLUMNS
        ),
        params![
            rec.id,
            rec.kind.as_str(),
            rec.job_id,
            rec.adapter,
            rec.escrow_id,
            rec.amount.to_string(),
            rec.currency,
            rec.depositor,
            rec.beneficiary,
            rec.client_peer,
            rec.provider_peer,
            rec.status,
            rec.confirmed_by,
            rec.expires_at_ms,
            rec.created_at_ms,
            rec.updated_at_ms,
        ],
    )?)
}

/// [`FINAL_STATUSES`] as an SQL list: `'settled', 'refunded', ...`.
fn final_statuses_sql() -> String {
    FINAL_STATUSES
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl EscrowRecord {
    /// True once nothing more will happen to it.
    pub fn is_final(&self) -> bool {
        FINAL_STATUSES.contains(&self.status.as_str())
    }
}

/// What [`EscrowsRepo::insert_earn`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EarnInsert {
    /// The row is new.
    Inserted,
    /// Another row (its id given) already holds this adapter escrow.
    EscrowTaken(String),
    /// A row with this id exists already.
    IdTaken,
}

/// One provider's money in one currency, from [`EscrowsRepo::earnings`].
/// Sums are `u128`: many `u64` amounts of an 18-decimal currency overflow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Earnings {
    /// Provider peer id (or the beneficiary account when no peer is known).
    pub provider: String,
    /// Currency code.
    pub currency: String,
    /// Released to the provider (`released`, `settled`), minor units.
    pub released: u128,
    /// Held in escrow, not yet decided (`creating`, `pending`, `funded`,
    /// `disputed`).
    pub held: u128,
    /// Returned to the client (`refunded`), or expired unreleased.
    pub returned: u128,
    /// Escrows counted.
    pub escrows: u64,
}

/// Escrows repository; see [`Store::escrows`].
pub struct EscrowsRepo<'a> {
    pub(super) store: &'a Store,
}

impl FromRow for EscrowRecord {
    const COLUMNS: &'static str = "id, kind, job_id, adapter, escrow_id, amount, currency, \
         depositor, beneficiary, client_peer, provider_peer, status, confirmed_by, \
         expires_at_ms, created_at_ms, updated_at_ms";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        let kind: String = r.get(1)?;
        Ok(EscrowRecord {
            id: r.get(0)?,
            kind: EscrowKind::parse(&kind)?,
            job_id: r.get(2)?,
            adapter: r.get(3)?,
            escrow_id: r.get(4)?,
            amount: parsed(r, 5, "escrow amount")?,
            currency: r.get(6)?,
            depositor: r.get(7)?,
            beneficiary: r.get(8)?,
            client_peer: r.get(9)?,
            provider_peer: r.get(10)?,
            status: r.get(11)?,
            confirmed_by: r.get(12)?,
            expires_at_ms: r.get(13)?,
            created_at_ms: r.get(14)?,
            updated_at_ms: r.get(15)?,
        })
    }
}

impl EscrowsRepo<'_> {
    /// Writes `rec` unless a row with its id exists; returns the stored row
    /// either way (so a retried step sees what the first attempt wrote).
    pub fn insert_or_get(&self, rec: &EscrowRecord) -> Result<EscrowRecord, StoreError> {
        insert_if(&self.store.conn(), rec, "")?;
        self.get(&rec.id)?
            .ok_or_else(|| StoreError::Corrupt(format!("escrow {} vanished", rec.id)))
    }

    /// One escrow by host-side id.
    pub fn get(&self, id: &str) -> Result<Option<EscrowRecord>, StoreError> {
        query_one(&self.store.conn(), "escrows WHERE id = ?1", [id])
    }

    /// Inserts a provider's `earn` row unless its id is taken or another
    /// row of this node (any kind) already holds the same adapter escrow:
    /// one escrow pays one job, and never one of this node's own payments.
    /// Atomic: the check and the insert are one statement.
    pub fn insert_earn(&self, rec: &EscrowRecord) -> Result<EarnInsert, StoreError> {
        let conn = self.store.conn();
        let inserted = insert_if(
            &conn,
            rec,
            "WHERE NOT EXISTS (SELECT 1 FROM escrows WHERE adapter = ?4 AND escrow_id = ?5)",
        )?;
        if inserted == 1 {
            return Ok(EarnInsert::Inserted);
        }
        let holder: Option<String> = conn
            .query_row(
                "SELECT id FROM escrows WHERE adapter = ?1 AND escrow_id = ?2 LIMIT 1",
                params![rec.adapter, rec.escrow_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match holder {
            Some(other) if other != rec.id => EarnInsert::EscrowTaken(other),
            _ => EarnInsert::IdTaken,
        })
    }

    /// One escrow by host-side id, or by the adapter's escrow id.
    pub fn find(&self, id: &str) -> Result<Option<EscrowRecord>, StoreError> {
        if let Some(r) = self.get(id)? {
            return Ok(Some(r));
        }
        self.query("WHERE escrow_id = ?1 ORDER BY created_at_ms LIMIT 1", [id])
            .map(|v| v.into_iter().next())
    }

    /// Records what the adapter reported: its escrow id (once known) and
    /// status. A final row is never reopened: a stale report (an earlier
    /// read finishing late) changes nothing. Returns whether the row changed.
    pub fn update(
        &self,
        id: &str,
        escrow_id: Option<&str>,
        status: &str,
    ) -> Result<bool, StoreError> {
        let changed = self.store.conn().execute(
            &format!(
                "UPDATE escrows SET escrow_id = COALESCE(?2, escrow_id), status = ?3, \
             updated_at_ms = ?4 WHERE id = ?1 \
             AND status NOT IN ({})",
                final_statuses_sql()
            ),
            params![id, escrow_id, status, now_ms()],
        )?;
        Ok(changed == 1)
    }

    /// Escrows of one local job, oldest first (one per attempt).
    pub fn by_job(&self, job_id: &str) -> Result<Vec<EscrowRecord>, StoreError> {
        self.query("WHERE job_id = ?1 ORDER BY created_at_ms, id", [job_id])
    }

    /// Every escrow, newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Result<Vec<EscrowRecord>, StoreError> {
        self.query(
            "ORDER BY created_at_ms DESC, id DESC LIMIT ?1",
            [limit as i64],
        )
    }

    /// Money per provider and currency over this node's pay and earn
    /// escrows (stake excluded): released, still held, and returned,
    /// exactly, ordered by provider then currency.
    pub fn earnings(&self) -> Result<Vec<Earnings>, StoreError> {
        let mut table: std::collections::BTreeMap<(String, String), Earnings> =
            std::collections::BTreeMap::new();
        for e in self.query("WHERE kind != 'stake'", [])? {
            let provider = e
                .provider_peer
                .clone()
                .unwrap_or_else(|| e.beneficiary.clone());
            let t = table
                .entry((provider.clone(), e.currency.clone()))
                .or_insert_with(|| Earnings {
                    provider,
                    currency: e.currency.clone(),
                    ..Earnings::default()
                });
            let slot = match e.status.as_str() {
                "released" | "settled" => &mut t.released,
                "funded" | "pending" | "creating" | "disputed" => &mut t.held,
                "refunded" | "expired" => &mut t.returned,
                _ => continue,
            };
            *slot += u128::from(e.amount);
            t.escrows += 1;
        }
        Ok(table.into_values().collect())
    }

    /// Amounts summed by kind, status and currency, exactly, in minor
    /// units: what `/metrics` exports.
    pub fn totals(&self) -> Result<Vec<(EscrowKind, String, String, u128)>, StoreError> {
        let mut table = std::collections::BTreeMap::new();
        for e in self.query("", [])? {
            let (_, sum) = table
                .entry((e.kind.as_str(), e.status, e.currency))
                .or_insert((e.kind, 0u128));
            *sum += u128::from(e.amount);
        }
        Ok(table
            .into_iter()
            .map(|((_, status, currency), (kind, sum))| (kind, status, currency, sum))
            .collect())
    }

    /// Escrows not yet final (to release, refund or expire), oldest first.
    pub fn open(&self) -> Result<Vec<EscrowRecord>, StoreError> {
        self.query(
            &format!(
                "WHERE status NOT IN ({}) ORDER BY created_at_ms",
                final_statuses_sql()
            ),
            [],
        )
    }

    /// Client jobs still `failed` although every escrow they held is
    /// final and one was refunded (or expired, the money back with the
    /// client): a process stopped between the refund and the job's
    /// `failed -> refunded` step.
    pub fn refunded_but_failed_jobs(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.store.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT j.id FROM jobs j WHERE j.role = 'client' AND j.state = 'failed' \
             AND EXISTS (SELECT 1 FROM escrows e WHERE e.job_id = j.id AND e.kind = 'pay' \
                         AND e.status IN ('refunded', 'expired')) \
             AND NOT EXISTS (SELECT 1 FROM escrows e WHERE e.job_id = j.id AND e.kind = 'pay' \
                             AND e.status NOT IN ({})) \
             ORDER BY j.created_at_ms",
            final_statuses_sql()
        ))?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    fn query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<EscrowRecord>, StoreError> {
        query(&self.store.conn(), &format!("escrows {tail}"), args)
    }
}
