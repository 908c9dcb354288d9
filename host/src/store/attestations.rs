//! The `attestations` table: every verified outcome this node knows of —
//! its own (first-hand: the attester is this node) and those gossiped by
//! others, as signed and received, one row per (attester, job) — and
//! `advertised_stakes`, the stake each peer's latest advert claims. The
//! reputation (`verify::reputation`) reads both; nothing here weighs them.

use super::rows::{query, FromRow};
use super::{now_ms, Store, StoreError};
use rusqlite::{params, Row};

/// One stored attestation.
#[derive(Debug, Clone, PartialEq)]
pub struct AttestationRecord {
    /// Who checked the result (peer id).
    pub attester: String,
    /// The attester's job id.
    pub job_id: String,
    /// The provider whose result was checked (peer id).
    pub subject: String,
    /// `verified` or `cheated`.
    pub outcome: String,
    /// sha256 of the evidence, for `cheated`.
    pub evidence: Option<String>,
    /// The attester's timestamp, ms since the epoch.
    pub at_ms: i64,
    /// When this node stored it.
    pub received_ms: i64,
    /// The signed attestation, as received (CBOR), so it can be checked
    /// again or passed on.
    pub signed: Vec<u8>,
}

impl FromRow for AttestationRecord {
    const COLUMNS: &'static str =
        "attester, job_id, subject, outcome, evidence, at_ms, received_ms, signed";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        Ok(AttestationRecord {
            attester: r.get(0)?,
            job_id: r.get(1)?,
            subject: r.get(2)?,
            outcome: r.get(3)?,
            evidence: r.get(4)?,
            at_ms: r.get(5)?,
            received_ms: r.get(6)?,
            signed: r.get(7)?,
        })
    }
}

/// A stake a peer's advert claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedStake {
    /// Peer id.
    pub peer_id: String,
    /// Amount in minor units.
    pub amount: u64,
    /// Currency code.
    pub currency: String,
    /// When the advert was received, ms since the epoch.
    pub seen_ms: i64,
    /// Whether an arbiter's certificate for it was checked (held money
    /// that a ruling can slash); otherwise it is the peer's own claim.
    pub certified: bool,
}

impl FromRow for AdvertisedStake {
    const COLUMNS: &'static str = "peer_id, amount, currency, seen_ms, certified";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        let amount: String = r.get(1)?;
        Ok(AdvertisedStake {
            peer_id: r.get(0)?,
            amount: amount
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("stake amount `{amount}`")))?,
            currency: r.get(2)?,
            seen_ms: r.get(3)?,
            certified: r.get(4)?,
        })
    }
}

/// Attestations repository; see [`Store::attestations`].
pub struct AttestationsRepo<'a> {
    pub(super) store: &'a Store,
}

impl AttestationsRepo<'_> {
    /// Stores `a` unless its (attester, job) is already stored; returns
    /// whether it was new.
    pub fn insert(&self, a: &AttestationRecord) -> Result<bool, StoreError> {
        self.store.write(|tx| {
            let n = tx.execute(
                "INSERT INTO attestations
                     (attester, job_id, subject, outcome, evidence, at_ms, received_ms, signed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(attester, job_id) DO NOTHING",
                params![
                    a.attester,
                    a.job_id,
                    a.subject,
                    a.outcome,
                    a.evidence,
                    a.at_ms,
                    a.received_ms,
                    a.signed
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Attestations about `subject` since `since_ms`, newest first, at most
    /// `limit`.
    pub fn about(
        &self,
        subject: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        query(
            &self.store.conn(),
            "attestations WHERE subject = ?1 AND at_ms >= ?2 ORDER BY at_ms DESC LIMIT ?3",
            params![subject, since_ms, limit as i64],
        )
    }

    /// Attestations by `attester` since `since_ms`, newest first, at most
    /// `limit` (this node's own: its first-hand observations).
    pub fn by(
        &self,
        attester: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        query(
            &self.store.conn(),
            "attestations WHERE attester = ?1 AND at_ms >= ?2 ORDER BY at_ms DESC LIMIT ?3",
            params![attester, since_ms, limit as i64],
        )
    }

    /// Rows stored.
    pub fn count(&self) -> Result<i64, StoreError> {
        Ok(self
            .store
            .conn()
            .query_row("SELECT COUNT(*) FROM attestations", [], |r| r.get(0))?)
    }

    /// Forgets attestations older than `before_ms` (their weight has
    /// decayed to nothing), and past `keep` rows not by `me`, the oldest
    /// of those; returns how many rows went.
    pub fn prune(&self, me: &str, before_ms: i64, keep: usize) -> Result<usize, StoreError> {
        self.store.write(|tx| {
            let old = tx.execute("DELETE FROM attestations WHERE at_ms < ?1", [before_ms])?;
            let over = tx.execute(
                "DELETE FROM attestations WHERE attester != ?1 AND (attester, job_id) IN (
                     SELECT attester, job_id FROM attestations WHERE attester != ?1
                     ORDER BY at_ms DESC LIMIT -1 OFFSET ?2)",
                params![me, keep as i64],
            )?;
            Ok(old + over)
        })
    }

    /// Records the stake `peer`'s latest advert claims (`None`: none):
    /// amount in minor units, currency, and whether it is certified.
    pub fn set_stake(
        &self,
        peer: &str,
        stake: Option<(u64, &str, bool)>,
    ) -> Result<(), StoreError> {
        self.store.write(|tx| {
            match stake {
                Some((amount, currency, certified)) => tx.execute(
                    "INSERT INTO advertised_stakes (peer_id, amount, currency, seen_ms, certified)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(peer_id) DO UPDATE SET
                         amount = ?2, currency = ?3, seen_ms = ?4, certified = ?5",
                    params![peer, amount.to_string(), currency, now_ms(), certified],
                )?,
                None => tx.execute("DELETE FROM advertised_stakes WHERE peer_id = ?1", [peer])?,
            };
            Ok(())
        })
    }

    /// Stakes advertised since `since_ms`.
    pub fn stakes(&self, since_ms: i64) -> Result<Vec<AdvertisedStake>, StoreError> {
        query(
            &self.store.conn(),
            "advertised_stakes WHERE seen_ms >= ?1 ORDER BY peer_id",
            [since_ms],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(attester: &str, job: &str, at_ms: i64) -> AttestationRecord {
        AttestationRecord {
            attester: attester.into(),
            job_id: job.into(),
            subject: "s".into(),
            outcome: "verified".into(),
            evidence: None,
            at_ms,
            received_ms: at_ms,
            signed: vec![1, 2, 3],
        }
    }

    #[test]
    fn one_row_per_attester_and_job_bounded_and_pruned() {
        let store = Store::open_in_memory().unwrap();
        let a = store.attestations();
        assert!(a.insert(&rec("me", "j1", 10)).unwrap());
        assert!(!a.insert(&rec("me", "j1", 11)).unwrap(), "dedup");
        assert!(a.insert(&rec("x", "j1", 12)).unwrap(), "another attester");
        for i in 0..5 {
            a.insert(&rec("y", &format!("k{i}"), 20 + i)).unwrap();
        }
        assert_eq!(a.about("s", 0, 100).unwrap().len(), 7);
        assert_eq!(a.about("s", 0, 2).unwrap()[0].at_ms, 24, "newest first");
        assert_eq!(a.by("me", 0, 100).unwrap().len(), 1);
        let mut bad = rec("z", "j", 1);
        bad.outcome = "great".into();
        assert!(a.insert(&bad).is_err(), "the outcome is checked");
        // Keep 3 third-party rows: the newest; this node's own stay.
        assert_eq!(a.prune("me", 0, 3).unwrap(), 3);
        let left: Vec<(String, i64)> = a
            .about("s", 0, 100)
            .unwrap()
            .into_iter()
            .map(|r| (r.attester, r.at_ms))
            .collect();
        assert_eq!(
            left,
            vec![
                ("y".into(), 24),
                ("y".into(), 23),
                ("y".into(), 22),
                ("me".into(), 10)
            ]
        );
        // Older than 23: gone, whoever attested.
        a.prune("me", 23, 100).unwrap();
        assert_eq!(a.count().unwrap(), 2);
    }

    #[test]
    fn stakes_are_replaced_and_cleared() {
        let store = Store::open_in_memory().unwrap();
        let a = store.attestations();
        a.set_stake("p", Some((5, "USD", false))).unwrap();
        a.set_stake("p", Some((u64::MAX, "ETH", true))).unwrap();
        let s = a.stakes(0).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].amount, s[0].currency.as_str(), s[0].certified),
            (u64::MAX, "ETH", true)
        );
        a.set_stake("p", None).unwrap();
        assert!(a.stakes(0).unwrap().is_empty());
    }
}
