//! An arbiter: a referee node that holds providers' stakes and slashes
//! them on its own rulings. `custody.rs` opens, certifies and withdraws
//! stakes, `slash.rs` forfeits them (crash-safe), `claim.rs` is the fair
//! exchange's recourse: a prepaid job that was not delivered.
//!
//! The rules (who holds the release token, the slashing rule, unbonding,
//! why a claim needs the provider's commitment) are in
//! `docs/ARCHITECTURE.md` "Stake and slashing" and "Fair exchange".

mod claim;
mod custody;
mod slash;

pub use custody::MAX_WAITING_STAKES;
pub use slash::report;

use crate::config::VerifyConfig;
use crate::p2p::NetworkHandle;
use crate::payments::{Adapter, Payments};
use crate::store::{Store, StoreError};
use libp2p::identity::Keypair;
use std::sync::{Arc, OnceLock};

/// Payout escrows live this long at the adapter, seconds (CoinPay takes
/// at most 720 hours); stake escrows live `[verify] stake_escrow_secs`.
const ESCROW_SECS: u64 = 30 * 24 * 3600;
/// Why a stake request or a slash step failed.
#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    /// The request cannot be served as asked.
    #[error("{0}")]
    Refused(String),
    /// The payment adapter failed (the call is repeated later).
    #[error("payment adapter `{adapter}`: {message}")]
    Adapter {
        /// Adapter.
        adapter: String,
        /// What it said.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A node's arbiter service.
pub struct Arbiter {
    store: Arc<Store>,
    payments: Arc<Payments>,
    key: Keypair,
    me: String,
    cfg: VerifyConfig,
    net: OnceLock<NetworkHandle>,
}

impl Arbiter {
    /// An arbiter holding stakes through `payments`, signing with `key`.
    pub fn new(
        store: Arc<Store>,
        payments: Arc<Payments>,
        key: Keypair,
        cfg: VerifyConfig,
    ) -> Arbiter {
        let me = key.public().to_peer_id().to_string();
        Arbiter {
            store,
            payments,
            key,
            me,
            cfg,
            net: OnceLock::new(),
        }
    }

    /// The network it asks providers over (set once the swarm runs).
    pub fn set_network(&self, net: NetworkHandle) {
        let _ = self.net.set(net);
    }

    fn adapter(&self, name: &str) -> Result<&Adapter, ArbiterError> {
        self.payments.adapter(name).ok_or_else(|| {
            let have: Vec<&str> = self
                .payments
                .adapters()
                .iter()
                .map(|a| a.plugin.name())
                .collect();
            ArbiterError::Refused(format!(
                "this arbiter holds stake through {}, not `{name}`",
                have.join(", ")
            ))
        })
    }

    /// This arbiter's peer id.
    pub fn peer_id(&self) -> &str {
        &self.me
    }
}
