//! The job layer: it drives the lifecycle of DESIGN §5 on top of the
//! network ([`crate::p2p`]), the durable store ([`crate::store`]) and the
//! single-node job path ([`crate::node`]).
//!
//! - [`provider::ProviderHandler`] is the provider side: plugged into
//!   [`crate::p2p::start`] as the `/infernet/job/2` handler, it prices jobs
//!   with the node's pricing plugin, records every accepted job in the store
//!   (persisting each state transition before acting on it, so a job id is
//!   never executed twice), runs it on the node's backend and replies with a
//!   result signed by the node's libp2p key; streamed runs buffer tokens for
//!   the client to `Poll`.
//! - [`client::JobClient`] is the client side: it finds providers, ranks
//!   them ([`select`]), and walks each job through quote, accept, run,
//!   result and receipt, failing over to another provider when one dies and
//!   resuming from the store after a restart.
//! - [`reputation_sim`]: the reputation simulation (ranking on verified
//!   outcomes, cheaters among the providers) `infernet bench --verify` prints.

pub mod arbiter;
pub mod client;
pub mod provider;
pub mod referee;
pub mod reputation_sim;
pub mod select;
pub mod stake;

pub use client::{ClientError, InferOptions, JobClient, JobOutcome, JobStream, StreamEvent};
pub use provider::{ProviderError, ProviderHandler};

/// Fault injection for the crash tests: `INFERNET_CRASH_AFTER=<point>`
/// aborts the process right after that step is persisted — the same as
/// being killed there. Client points: a client job state (`quoted`,
/// `escrowed`, `assigned`, `running`, ...), `escrow-intent`,
/// `escrow-created`, `escrow-funded`, `escrow-released`, `escrow-refunded`.
/// Provider points: `provider-escrow-confirmed` (the `earn` row is written,
/// the `Ack` not sent), `provider-running`, `provider-delivered` (the
/// signed result is stored, not sent). `<point>@<n>` aborts the `n`-th
/// time the process reaches it instead (a pipeline stage that dies
/// mid-generation). Compiled only with the `test-hooks` feature (the test
/// suite's); otherwise no point is ever requested.
pub(crate) fn crash_at(point: &str) {
    if crash_requested(point) || crash_nth(point) {
        tracing::error!(point, "INFERNET_CRASH_AFTER: aborting on purpose");
        std::process::abort();
    }
}

/// Whether the crash tests asked to abort right after `point`.
#[cfg(feature = "test-hooks")]
pub(crate) fn crash_requested(point: &str) -> bool {
    std::env::var("INFERNET_CRASH_AFTER").is_ok_and(|s| s == point)
}

/// Whether `INFERNET_CRASH_AFTER=<point>@<n>` and this is the `n`-th time
/// `point` is reached.
#[cfg(feature = "test-hooks")]
fn crash_nth(point: &str) -> bool {
    use std::sync::atomic::{AtomicU32, Ordering};
    static REACHED: AtomicU32 = AtomicU32::new(0);
    let Ok(spec) = std::env::var("INFERNET_CRASH_AFTER") else {
        return false;
    };
    match spec.split_once('@') {
        Some((name, n)) if name == point => {
            let n: u32 = n.parse().unwrap_or(1);
            REACHED.fetch_add(1, Ordering::Relaxed) + 1 >= n
        }
        _ => false,
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
fn crash_nth(_point: &str) -> bool {
    false
}

/// Without the `test-hooks` feature no crash point exists.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn crash_requested(_point: &str) -> bool {
    false
}
