//! The escrow lifecycle of `payment-api` as plain Rust, shared by the host
//! and adapters: one place that names each state (`funded`, ...) the way
//! the WIT spells it, for records, logs and the node's escrow table.

use core::fmt;

/// Lifecycle of an escrow (the WIT `escrow-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EscrowState {
    /// Created; waiting for the depositor's funds.
    Pending,
    /// Funds are held.
    Funded,
    /// Release authorised; funds on their way to the beneficiary.
    Released,
    /// Funds arrived at the beneficiary.
    Settled,
    /// Funds returned to the depositor.
    Refunded,
    /// Under dispute; the arbiter decides.
    Disputed,
    /// Expired before release; funds returned.
    Expired,
}

impl EscrowState {
    /// Every state, in WIT order.
    pub const ALL: [EscrowState; 7] = [
        EscrowState::Pending,
        EscrowState::Funded,
        EscrowState::Released,
        EscrowState::Settled,
        EscrowState::Refunded,
        EscrowState::Disputed,
        EscrowState::Expired,
    ];

    /// The WIT name (`pending`, `funded`, ...).
    pub fn name(self) -> &'static str {
        match self {
            EscrowState::Pending => "pending",
            EscrowState::Funded => "funded",
            EscrowState::Released => "released",
            EscrowState::Settled => "settled",
            EscrowState::Refunded => "refunded",
            EscrowState::Disputed => "disputed",
            EscrowState::Expired => "expired",
        }
    }

    /// The state a WIT name spells (exactly, lower case).
    pub fn parse(name: &str) -> Option<EscrowState> {
        EscrowState::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for EscrowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in EscrowState::ALL {
            assert_eq!(EscrowState::parse(s.name()), Some(s));
        }
        assert_eq!(EscrowState::parse("Funded"), None);
        assert_eq!(EscrowState::parse("created"), None);
    }
}
