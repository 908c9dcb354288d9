//! The `peers` table: what this node knows about other nodes.

use super::rows::{json, query, query_one, FromRow};
use super::{now_ms, Store, StoreError};
use rusqlite::{params, Row};

/// A known peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Last known multiaddrs.
    pub addrs: Vec<String>,
    /// Models it advertised.
    pub models: Vec<String>,
    /// Last time we heard from it, ms since epoch.
    pub last_seen_ms: i64,
    /// Last measured round trip, ms.
    pub latency_ms: Option<i64>,
    /// Score in [0, 1]; 0.5 for a stranger.
    pub reputation: f64,
    /// Verified good outcomes.
    pub successes: i64,
    /// Failed or disproven outcomes.
    pub failures: i64,
}

/// Peers repository; see [`Store::peers`].
pub struct PeersRepo<'a> {
    pub(super) store: &'a Store,
}

impl FromRow for PeerRecord {
    const COLUMNS: &'static str =
        "peer_id, addrs, models, last_seen_ms, latency_ms, reputation, successes, failures";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        Ok(PeerRecord {
            peer_id: r.get(0)?,
            addrs: json(r, 1)?,
            models: json(r, 2)?,
            last_seen_ms: r.get(3)?,
            latency_ms: r.get(4)?,
            reputation: r.get(5)?,
            successes: r.get(6)?,
            failures: r.get(7)?,
        })
    }
}

impl PeersRepo<'_> {
    /// Records that `peer_id` was seen now at `addrs` (replacing the known
    /// addresses when non-empty); `models` replaces the advertised models
    /// when given.
    pub fn seen(
        &self,
        peer_id: &str,
        addrs: &[String],
        models: Option<&[String]>,
    ) -> Result<(), StoreError> {
        let addrs_json = serde_json::to_string(addrs)?;
        let models_json = models.map(serde_json::to_string).transpose()?;
        self.store.write(|tx| {
            tx.execute(
                "INSERT INTO peers (peer_id, addrs, models, last_seen_ms) VALUES (?1, ?2, COALESCE(?3, '[]'), ?4)
                 ON CONFLICT(peer_id) DO UPDATE SET
                     addrs = CASE WHEN ?2 = '[]' THEN addrs ELSE ?2 END,
                     models = COALESCE(?3, models),
                     last_seen_ms = ?4",
                params![peer_id, addrs_json, models_json, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Stores a measured round trip.
    pub fn record_latency(&self, peer_id: &str, latency_ms: i64) -> Result<(), StoreError> {
        self.store.write(|tx| {
            tx.execute(
                "INSERT INTO peers (peer_id, last_seen_ms, latency_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(peer_id) DO UPDATE SET latency_ms = ?3, last_seen_ms = ?2",
                params![peer_id, now_ms(), latency_ms],
            )?;
            Ok(())
        })
    }

    /// Counts one outcome and recomputes the score as the mean of
    /// Beta(successes + 1, failures + 1). The verifier replaces this later.
    pub fn record_outcome(&self, peer_id: &str, success: bool) -> Result<f64, StoreError> {
        self.store.write(|tx| {
            tx.execute(
                "INSERT INTO peers (peer_id, last_seen_ms) VALUES (?1, ?2) ON CONFLICT(peer_id) DO NOTHING",
                params![peer_id, now_ms()],
            )?;
            tx.execute(
                "UPDATE peers SET successes = successes + ?2, failures = failures + ?3,
                        reputation = (successes + ?2 + 1.0) / (successes + failures + 1 + 2.0)
                  WHERE peer_id = ?1",
                params![peer_id, success as i64, (!success) as i64],
            )?;
            Ok(tx.query_row("SELECT reputation FROM peers WHERE peer_id = ?1", [peer_id], |r| r.get(0))?)
        })
    }

    /// Overrides the score (clamped to [0, 1]).
    pub fn set_reputation(&self, peer_id: &str, score: f64) -> Result<(), StoreError> {
        let score = if score.is_nan() {
            0.5
        } else {
            score.clamp(0.0, 1.0)
        };
        self.store.write(|tx| {
            tx.execute(
                "INSERT INTO peers (peer_id, last_seen_ms, reputation) VALUES (?1, ?2, ?3)
                 ON CONFLICT(peer_id) DO UPDATE SET reputation = ?3",
                params![peer_id, now_ms(), score],
            )?;
            Ok(())
        })
    }

    /// One peer.
    pub fn get(&self, peer_id: &str) -> Result<Option<PeerRecord>, StoreError> {
        query_one(&self.store.conn(), "peers WHERE peer_id = ?1", [peer_id])
    }

    /// Every peer, most recently seen first.
    pub fn list(&self) -> Result<Vec<PeerRecord>, StoreError> {
        query(
            &self.store.conn(),
            "peers ORDER BY last_seen_ms DESC, peer_id",
            [],
        )
    }

    /// Peers that advertised `model`.
    pub fn with_model(&self, model: &str) -> Result<Vec<PeerRecord>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|p| p.models.iter().any(|m| m == model))
            .collect())
    }
}
