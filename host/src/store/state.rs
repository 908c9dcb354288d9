//! The job state machine of DESIGN §5, as data: the states, their names in
//! the database, and the table of legal transitions.

use std::fmt;
use std::str::FromStr;

/// Where a job is in its life. The happy path is
/// `created -> quoted -> escrowed -> assigned -> running -> delivered ->
/// verified -> settled`; `failed`, `refunded`, `disputed` and `slashed` are the
/// exits. See [`JobState::can_transition`] for the full table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// The job exists locally; nobody has priced it yet.
    Created,
    /// A provider's quote is attached.
    Quoted,
    /// The quoted price is held in escrow (the payment seam).
    Escrowed,
    /// A provider has accepted the job.
    Assigned,
    /// The provider is executing it.
    Running,
    /// The provider returned a signed result.
    Delivered,
    /// The result passed the job's verification policy (the verifier seam).
    Verified,
    /// Escrow released to the provider. Terminal.
    Settled,
    /// The job could not be completed. Escrow, if any, is still to be refunded.
    Failed,
    /// Escrow returned to the client. Terminal.
    Refunded,
    /// The result is contested; escrow frozen until resolved.
    Disputed,
    /// Fraud proven; provider stake forfeited to the client. Terminal.
    Slashed,
}

use JobState::*;

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 12] = [
        Created, Quoted, Escrowed, Assigned, Running, Delivered, Verified, Settled, Failed,
        Refunded, Disputed, Slashed,
    ];

    /// The lower-case name used in the database and on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Created => "created",
            Quoted => "quoted",
            Escrowed => "escrowed",
            Assigned => "assigned",
            Running => "running",
            Delivered => "delivered",
            Verified => "verified",
            Settled => "settled",
            Failed => "failed",
            Refunded => "refunded",
            Disputed => "disputed",
            Slashed => "slashed",
        }
    }

    /// The states reachable from `self` in one step.
    ///
    /// Beyond the happy path:
    /// - any non-terminal state before delivery may fail;
    /// - `assigned`/`running -> quoted` is failover: the provider died or
    ///   timed out, its escrow is refunded and the job is re-quoted elsewhere;
    /// - escrow can be refunded from `escrowed`, `assigned`, `running`,
    ///   `delivered`, `failed` and `disputed`;
    /// - `delivered -> settled` skips verification when the policy is `none`;
    /// - a dispute ends `settled` (provider was right), `refunded` (client was
    ///   right, no stake) or `slashed` (fraud proven).
    pub fn next_states(self) -> &'static [JobState] {
        match self {
            Created => &[Quoted, Failed],
            Quoted => &[Escrowed, Failed],
            Escrowed => &[Assigned, Refunded, Failed],
            Assigned => &[Running, Quoted, Refunded, Failed],
            Running => &[Delivered, Quoted, Refunded, Failed],
            Delivered => &[Verified, Settled, Disputed, Refunded, Failed],
            Verified => &[Settled, Disputed],
            Disputed => &[Settled, Refunded, Slashed],
            Failed => &[Refunded],
            Settled | Refunded | Slashed => &[],
        }
    }

    /// Whether `from -> to` is a legal single step.
    pub fn can_transition(from: JobState, to: JobState) -> bool {
        from.next_states().contains(&to)
    }

    /// No transition leaves this state.
    pub fn is_terminal(self) -> bool {
        self.next_states().is_empty()
    }

    /// The job still needs work from this node or its peers (not terminal and
    /// not `failed`, which only waits for a refund). A restarted node resumes
    /// jobs in these states.
    pub fn is_active(self) -> bool {
        !matches!(self, Settled | Refunded | Slashed | Failed)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Which side of a job this node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobRole {
    /// This node asked for the job and pays for it.
    Client,
    /// This node executes the job and gets paid.
    Provider,
}

impl JobRole {
    /// Name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobRole::Client => "client",
            JobRole::Provider => "provider",
        }
    }
}

impl fmt::Display for JobRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobRole {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(JobRole::Client),
            "provider" => Ok(JobRole::Provider),
            other => Err(UnknownState(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("bogus".parse::<JobState>().is_err());
    }

    #[test]
    fn happy_path_is_legal_and_terminals_are_closed() {
        let path = [
            Created, Quoted, Escrowed, Assigned, Running, Delivered, Verified, Settled,
        ];
        for w in path.windows(2) {
            assert!(JobState::can_transition(w[0], w[1]), "{} -> {}", w[0], w[1]);
        }
        for s in [Settled, Refunded, Slashed] {
            assert!(s.is_terminal());
            for t in JobState::ALL {
                assert!(!JobState::can_transition(s, t));
            }
        }
        assert!(!JobState::can_transition(Created, Running));
        assert!(!JobState::can_transition(Running, Running));
    }
}
