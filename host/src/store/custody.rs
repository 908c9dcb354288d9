//! What an arbiter holds for others: providers' stakes (`custody`, one row
//! per provider) and the slashes its rulings make (`slashes`, one row per
//! forfeited stake, so a stake is forfeited once however many rulings
//! name its provider). Each slash moves through `ruled → forfeited →
//! paying → paid`, one adapter call per step, every step idempotent, so a
//! process killed between two of them finishes the slash when it restarts.

use super::rows::{parsed, query, query_one, FromRow};
use super::{now_ms, Store, StoreError};
use rusqlite::{params, Row};

/// A provider's stake as the arbiter holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StakeHeld {
    /// The provider, peer id.
    pub provider_peer: String,
    /// The escrow's job id at the adapter (`stake-<provider>-<ms>`): what
    /// makes a repeated create return the same escrow.
    pub stake_job: String,
    /// The arbiter's adapter holding it.
    pub adapter: String,
    /// The adapter's escrow id, once created.
    pub escrow_id: Option<String>,
    /// Minor units of `currency`.
    pub amount: u64,
    /// Currency code.
    pub currency: String,
    /// Who deposits it (ledger account or chain address).
    pub depositor: String,
    /// `creating`, `pending`, `funded`, `withdrawing`, `refunded`,
    /// `slashed`, `abandoned`.
    pub status: String,
    /// The newest certificate's expiry, ms since epoch (0: none issued).
    pub cert_until_ms: i64,
    /// Written, ms since epoch.
    pub created_at_ms: i64,
}

impl FromRow for StakeHeld {
    const COLUMNS: &'static str = "provider_peer, stake_job, adapter, escrow_id, amount, \
         currency, depositor, status, cert_until_ms, created_at_ms";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        Ok(StakeHeld {
            provider_peer: r.get(0)?,
            stake_job: r.get(1)?,
            adapter: r.get(2)?,
            escrow_id: r.get(3)?,
            amount: parsed(r, 4, "stake amount")?,
            currency: r.get(5)?,
            depositor: r.get(6)?,
            status: r.get(7)?,
            cert_until_ms: r.get(8)?,
            created_at_ms: r.get(9)?,
        })
    }
}

/// A forfeited stake and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct SlashRecord {
    /// The stake's escrow id (one slash per stake).
    pub stake_escrow: String,
    /// The cheater, peer id.
    pub provider_peer: String,
    /// The wronged client, peer id.
    pub client_peer: String,
    /// The job the ruling was about.
    pub job_id: String,
    /// The adapter holding the stake (and paying out).
    pub adapter: String,
    /// Currency code.
    pub currency: String,
    /// The client's share, minor units.
    pub to_client: u64,
    /// The referee's share, minor units.
    pub to_referee: u64,
    /// The client's account at `adapter` (none: its share waits).
    pub payout_account: Option<String>,
    /// The escrow paying the client, once created.
    pub payout_escrow: Option<String>,
    /// The evidence bundle (JSON) the slash rests on.
    pub evidence: Vec<u8>,
    /// `ruled`, `forfeited`, `paying`, `paid`.
    pub status: String,
}

impl FromRow for SlashRecord {
    const COLUMNS: &'static str = "stake_escrow, provider_peer, client_peer, job_id, adapter, \
         currency, to_client, to_referee, payout_account, payout_escrow, evidence, status";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        Ok(SlashRecord {
            stake_escrow: r.get(0)?,
            provider_peer: r.get(1)?,
            client_peer: r.get(2)?,
            job_id: r.get(3)?,
            adapter: r.get(4)?,
            currency: r.get(5)?,
            to_client: parsed(r, 6, "client share")?,
            to_referee: parsed(r, 7, "referee share")?,
            payout_account: r.get(8)?,
            payout_escrow: r.get(9)?,
            evidence: r.get(10)?,
            status: r.get(11)?,
        })
    }
}

/// Custody repository; see [`Store::custody`].
pub struct CustodyRepo<'a> {
    pub(super) store: &'a Store,
}

impl CustodyRepo<'_> {
    /// The stake held for `provider`, if any.
    pub fn stake(&self, provider: &str) -> Result<Option<StakeHeld>, StoreError> {
        let conn = self.store.conn();
        query_one(&conn, "custody WHERE provider_peer = ?1", [provider])
    }

    /// Every stake held, newest first.
    pub fn stakes(&self) -> Result<Vec<StakeHeld>, StoreError> {
        let conn = self.store.conn();
        query(&conn, "custody ORDER BY created_at_ms DESC", [])
    }

    /// How many stakes are waiting for their deposit (`creating`,
    /// `pending`).
    pub fn waiting(&self) -> Result<usize, StoreError> {
        let conn = self.store.conn();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM custody WHERE status IN ('creating', 'pending')",
            [],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Forgets a stake whose escrow could not be created (nothing is held:
    /// a refused request leaves no row behind).
    pub fn forget_unopened(&self, provider: &str) -> Result<(), StoreError> {
        self.store.write(|tx| {
            tx.execute(
                "DELETE FROM custody WHERE provider_peer = ?1 AND status = 'creating' \
                 AND escrow_id IS NULL",
                [provider],
            )?;
            Ok(())
        })
    }

    /// Records `stake` unless a row for its provider exists that is still
    /// open (not `refunded`/`abandoned`); returns the row that stands.
    pub fn open_stake(&self, stake: &StakeHeld) -> Result<StakeHeld, StoreError> {
        let now = now_ms();
        self.store.write(|tx| {
            tx.execute(
                "INSERT INTO custody (provider_peer, stake_job, adapter, escrow_id, amount, \
                 currency, depositor, status, cert_until_ms, created_at_ms, updated_at_ms) \
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, 'creating', 0, ?7, ?7) \
                 ON CONFLICT(provider_peer) DO UPDATE SET stake_job = ?2, adapter = ?3, \
                 escrow_id = NULL, amount = ?4, currency = ?5, depositor = ?6, \
                 status = 'creating', cert_until_ms = 0, created_at_ms = ?7, updated_at_ms = ?7 \
                 WHERE status IN ('refunded', 'abandoned')",
                params![
                    stake.provider_peer,
                    stake.stake_job,
                    stake.adapter,
                    stake.amount.to_string(),
                    stake.currency,
                    stake.depositor,
                    now
                ],
            )?;
            query_one(
                tx,
                "custody WHERE provider_peer = ?1",
                [&stake.provider_peer],
            )?
            .ok_or_else(|| StoreError::Corrupt("custody row vanished".into()))
        })
    }

    /// Sets the escrow id (when known) and status of `provider`'s stake,
    /// unless it is `slashed` (final: a late status never reopens it).
    pub fn update_stake(
        &self,
        provider: &str,
        escrow_id: Option<&str>,
        status: &str,
    ) -> Result<(), StoreError> {
        self.store.write(|tx| {
            tx.execute(
                "UPDATE custody SET escrow_id = COALESCE(?2, escrow_id), status = ?3, \
                 updated_at_ms = ?4 WHERE provider_peer = ?1 AND status != 'slashed'",
                params![provider, escrow_id, status, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Notes a certificate valid until `until_ms` for `provider`'s stake.
    pub fn certified(&self, provider: &str, until_ms: i64) -> Result<(), StoreError> {
        self.store.write(|tx| {
            tx.execute(
                "UPDATE custody SET cert_until_ms = MAX(cert_until_ms, ?2), updated_at_ms = ?3 \
                 WHERE provider_peer = ?1",
                params![provider, until_ms, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Records a slash of `slash.stake_escrow` and marks the stake
    /// `slashed`, in one transaction, unless that stake was already
    /// slashed or is not held (funded or withdrawing). Returns whether
    /// this call recorded it.
    pub fn record_slash(&self, slash: &SlashRecord) -> Result<bool, StoreError> {
        let now = now_ms();
        self.store.write(|tx| {
            let marked = tx.execute(
                "UPDATE custody SET status = 'slashed', updated_at_ms = ?3 \
                 WHERE provider_peer = ?1 AND escrow_id = ?2 \
                 AND status IN ('funded', 'withdrawing')",
                params![slash.provider_peer, slash.stake_escrow, now],
            )?;
            if marked == 0 {
                return Ok(false);
            }
            tx.execute(
                &format!(
                    "INSERT INTO slashes ({}, created_at_ms, updated_at_ms) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, 'ruled', ?11, ?11)",
                    SlashRecord::COLUMNS
                ),
                params![
                    slash.stake_escrow,
                    slash.provider_peer,
                    slash.client_peer,
                    slash.job_id,
                    slash.adapter,
                    slash.currency,
                    slash.to_client.to_string(),
                    slash.to_referee.to_string(),
                    slash.payout_account,
                    slash.evidence,
                    now
                ],
            )?;
            Ok(true)
        })
    }

    /// The slash of stake escrow `id`.
    pub fn slash(&self, id: &str) -> Result<Option<SlashRecord>, StoreError> {
        let conn = self.store.conn();
        query_one(&conn, "slashes WHERE stake_escrow = ?1", [id])
    }

    /// Slashes not yet `paid`, oldest first.
    pub fn unfinished_slashes(&self) -> Result<Vec<SlashRecord>, StoreError> {
        let conn = self.store.conn();
        query(
            &conn,
            "slashes WHERE status != 'paid' ORDER BY created_at_ms",
            [],
        )
    }

    /// Every slash, newest first.
    pub fn slashes(&self) -> Result<Vec<SlashRecord>, StoreError> {
        let conn = self.store.conn();
        query(&conn, "slashes ORDER BY created_at_ms DESC", [])
    }

    /// Moves slash `id` from `from` to `to` (and records the payout
    /// escrow, the payout account when given); false when it was not in
    /// `from` (another worker moved it).
    pub fn advance_slash(
        &self,
        id: &str,
        from: &str,
        to: &str,
        payout_escrow: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.store.write(|tx| {
            Ok(tx.execute(
                "UPDATE slashes SET status = ?3, payout_escrow = COALESCE(?4, payout_escrow), \
                 updated_at_ms = ?5 WHERE stake_escrow = ?1 AND status = ?2",
                params![id, from, to, payout_escrow, now_ms()],
            )? == 1)
        })
    }

    /// Gives a slash whose client share waits an account to pay it to.
    pub fn set_payout_account(&self, id: &str, account: &str) -> Result<(), StoreError> {
        self.store.write(|tx| {
            tx.execute(
                "UPDATE slashes SET payout_account = ?2, updated_at_ms = ?3 \
                 WHERE stake_escrow = ?1 AND payout_account IS NULL",
                params![id, account, now_ms()],
            )?;
            Ok(())
        })
    }
}
