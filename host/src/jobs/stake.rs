//! A provider's side of its stake (`[stake]`): asks the arbiter to hold
//! it, keeps the arbiter's certificate fresh (renewed at half its life),
//! and hands every change to a watcher (the node re-advertises). With
//! `withdraw = true` it asks for the stake back until it is refunded.

use crate::config::StakeConfig;
use crate::p2p::protocol::{now_ms, JobBody, JobMessage, Money};
use crate::p2p::verification::{SignedStakeCert, StakeRequest};
use crate::p2p::{NetworkHandle, PeerId};
use std::time::Duration;
use tokio::sync::watch;

/// Longest wait between two requests while nothing is certified.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs until the stake is withdrawn (or forever): sends `[stake]`'s
/// request to its arbiter and publishes each valid certificate (or `None`
/// when there is none) on `certs`.
pub async fn keep_stake(
    net: NetworkHandle,
    cfg: StakeConfig,
    certs: watch::Sender<Option<SignedStakeCert>>,
) {
    let (arbiter, amount) = match (cfg.arbiter.parse::<PeerId>(), cfg.minor_amount()) {
        (Ok(a), Ok(m)) => (a, m),
        _ => return tracing::error!("[stake] does not validate; no stake is kept"),
    };
    let me = net.peer_id().to_string();
    let request = StakeRequest {
        adapter: cfg.adapter.clone(),
        amount: Money {
            amount,
            currency: cfg.currency.clone(),
        },
        depositor: cfg.depositor.clone(),
        withdraw: cfg.withdraw,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let reply = net
            .verify_request(arbiter, JobMessage::new(JobBody::Stake(request.clone())))
            .await;
        let wait = match reply.map(|m| m.body) {
            Ok(JobBody::StakeState(state)) => {
                let cert = state.cert.map(|c| *c).filter(|c| {
                    c.verify().ok() == Some(arbiter)
                        && c.payload.provider == me
                        && c.payload.amount == request.amount
                        && c.payload.valid_until_ms > now_ms()
                });
                if cfg.withdraw && state.status == "refunded" {
                    tracing::info!(%arbiter, escrow = %state.escrow_id, "stake withdrawn");
                    certs.send_replace(None);
                    return;
                }
                match &cert {
                    Some(c) => {
                        tracing::info!(%arbiter, escrow = %c.payload.escrow_id, until = c.payload.valid_until_ms, "stake certified");
                        backoff = Duration::from_secs(1);
                    }
                    None => tracing::info!(
                        %arbiter,
                        status = %state.status,
                        note = %state.note,
                        deposit = state.deposit_address.as_deref().unwrap_or("-"),
                        "stake not certified yet"
                    ),
                }
                let renew = cert.as_ref().map(|c| {
                    Duration::from_millis(c.payload.valid_until_ms.saturating_sub(now_ms()) / 2)
                        .max(Duration::from_secs(1))
                });
                certs.send_replace(cert);
                renew
            }
            Ok(JobBody::Error(e)) => {
                tracing::warn!(%arbiter, error = %e.message, "the arbiter refused the stake");
                None
            }
            Ok(_) => {
                tracing::warn!(%arbiter, "the arbiter answered a stake request with something else");
                None
            }
            Err(e) => {
                tracing::debug!(%arbiter, error = %e, "arbiter not reachable yet");
                None
            }
        };
        let wait = wait.unwrap_or_else(|| {
            let w = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            w
        });
        tokio::time::sleep(wait).await;
    }
}
