//! Fair exchange on the provider side. A provider whose stake an arbiter
//! holds (a valid certificate) is paid before the run: its quotes ask for
//! `prepay`, `Accept` must name a released escrow, and the stake is the
//! collateral that it delivers. If it does not, the client's `Claim` goes
//! to the arbiter, which asks the provider to `Deliver` the stored result
//! (answered here, to that arbiter only, for a claim the job's client
//! signed) and slashes the stake when no valid result comes (the
//! arbiter's side is [`ProviderHandler::claim`]).

use super::*;
use crate::p2p::verification::{SignedClaim, SignedStakeCert};

impl Inner {
    /// Whether this provider's stake is certified past `until_ms`.
    pub(super) fn staked(&self, until_ms: u64) -> bool {
        lock_cert(&self.stake_cert)
            .as_ref()
            .is_some_and(|c| c.payload.valid_until_ms > until_ms)
    }

    /// A `Deliver` is answered only to the arbiter the job's client named
    /// in a claim it signed about this provider's job; to anyone else the
    /// job does not exist.
    pub(super) fn check_claim(
        &self,
        from: PeerId,
        job_id: &str,
        claim: &SignedClaim,
    ) -> Result<(), ProviderError> {
        let unknown = || ProviderError::UnknownJob(job_id.to_string());
        let record = self.store.jobs().get(job_id)?.ok_or_else(unknown)?;
        let signer = claim.verify().map_err(|_| unknown())?;
        let c = &claim.payload;
        let me = self.key.public().to_peer_id().to_string();
        let valid = record.role == JobRole::Provider
            && record.client_peer.as_deref() == Some(signer.to_string().as_str())
            && c.job_id == job_id
            && c.provider == me
            && c.arbiter == from.to_string();
        valid.then_some(()).ok_or_else(unknown)
    }

    /// The stored result of a delivered job, for its client's arbiter.
    pub(super) fn deliver(&self, job_id: &str) -> Result<JobMessage, ProviderError> {
        self.withheld()?;
        let record = self
            .store
            .jobs()
            .get(job_id)?
            .ok_or_else(|| ProviderError::UnknownJob(job_id.to_string()))?;
        execute::stored_outcome(&record)
    }

    /// Under the test hook, a provider that took the money and delivers
    /// nothing.
    pub(super) fn withheld(&self) -> Result<(), ProviderError> {
        #[cfg(feature = "test-hooks")]
        if self.withhold.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ProviderError::Backend("result withheld (test hook)".into()));
        }
        Ok(())
    }
}

fn lock_cert(
    m: &Mutex<Option<SignedStakeCert>>,
) -> std::sync::MutexGuard<'_, Option<SignedStakeCert>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProviderHandler {
    /// The arbiter's current certificate for this provider's stake (`None`:
    /// not staked, or withdrawn): quotes ask for prepayment while it is
    /// valid.
    pub fn set_stake_cert(&self, cert: Option<SignedStakeCert>) {
        *lock_cert(&self.inner.stake_cert) = cert;
    }

    /// Test hook: take prepaid jobs' money, then refuse `Run` and
    /// `Deliver` (a provider withholding after payment).
    #[cfg(feature = "test-hooks")]
    pub fn withhold_for_tests(&self, on: bool) {
        self.inner
            .withhold
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The arbiter service, or why this node has none.
    pub(super) fn arbiter_service(
        &self,
    ) -> Result<Arc<crate::jobs::arbiter::Arbiter>, ProviderError> {
        self.inner.arbiter.get().cloned().ok_or_else(|| {
            ProviderError::Unsupported(
                "this node holds no stakes (an arbiter is a referee with a [[payment]] adapter)"
                    .into(),
            )
        })
    }

    /// On an arbiter: a client's claim that a prepaid job was not
    /// delivered (see [`crate::jobs::arbiter::Arbiter::claim`]).
    pub(super) async fn claim(
        &self,
        from: PeerId,
        claim: SignedClaim,
    ) -> Result<JobMessage, ProviderError> {
        self.arbiter_service()?
            .claim(from, claim)
            .await
            .map_err(|e| ProviderError::Unsupported(e.to_string()))
    }
}
