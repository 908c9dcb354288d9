//! Custody of stakes. The arbiter creates each stake's escrow itself,
//! through its own payment adapter (depositor: the provider; beneficiary
//! and arbiter: the arbiter's account), so the release token — the power
//! to release or refund — is the arbiter's alone: a provider cannot take
//! its stake back ahead of a ruling (a stake it created itself, as
//! `infernet stake post` does, it could). On the ledger the provider's
//! money is the account named by its peer id in the arbiter's books (a
//! node's default ledger account), never a name the request chooses, so
//! no peer can lock another's balance. While funded and not being
//! withdrawn, the arbiter signs a [`StakeCert`] for the provider to
//! advertise; a withdrawal is refunded only once the last certificate
//! expired and `unbond_grace_secs` passed, so a provider cannot withdraw
//! between cheating and the ruling.
use super::{Arbiter, ArbiterError};

/// Most stakes waiting for their deposit at once (each is an escrow at the
/// payment service that any peer identity can ask for).
pub const MAX_WAITING_STAKES: usize = 64;
use crate::p2p::protocol::Money as WireMoney;
use crate::p2p::verification::{SignedStakeCert, StakeCert, StakeRequest, StakeState};
use crate::p2p::PeerId;
use crate::payments::ledger::LEDGER;
use crate::payments::Adapter;
use crate::store::{now_ms, StakeHeld, StoreError};
use crate::worlds::payment::{EscrowRequest, EscrowState, Money};

impl Arbiter {
    /// Serves provider `from`'s stake request: opens the stake (creating
    /// its escrow), reports on it with a fresh certificate while it is
    /// held, or withdraws it. Blocking (adapter calls).
    pub fn stake(&self, from: PeerId, req: StakeRequest) -> Result<StakeState, ArbiterError> {
        let provider = from.to_string();
        let a = self.adapter(&req.adapter)?;
        let held = self.store.custody().stake(&provider)?;
        let open = held
            .as_ref()
            .is_some_and(|h| !matches!(h.status.as_str(), "refunded" | "abandoned"));
        if req.withdraw {
            return match held {
                Some(h) if open => self.withdraw(a, h),
                _ => Err(ArbiterError::Refused(
                    "no stake of yours is held here".into(),
                )),
            };
        }
        let held = match held {
            Some(h) if open => h,
            _ => self.open(a, &provider, &req)?,
        };
        if held.status == "slashed" {
            return Err(ArbiterError::Refused(format!(
                "your stake {} was slashed for a proven cheat; this arbiter holds no other",
                held.escrow_id.unwrap_or_default()
            )));
        }
        if held.adapter != req.adapter
            || held.amount != req.amount.amount
            || held.currency != req.amount.currency
        {
            return Err(ArbiterError::Refused(format!(
                "a stake of {} {} through {} is already held for you; withdraw it first",
                crate::payments::display(held.amount, &held.currency),
                held.currency,
                held.adapter
            )));
        }
        let held = self.refresh(a, held)?;
        self.state(held)
    }

    /// Creates the escrow of a new stake (idempotent: the row names its
    /// job id before the adapter is called).
    fn open(
        &self,
        a: &Adapter,
        provider: &str,
        req: &StakeRequest,
    ) -> Result<StakeHeld, ArbiterError> {
        if req.amount.amount == 0 {
            return Err(ArbiterError::Refused(
                "a stake must be more than zero".into(),
            ));
        }
        if !a.currencies.contains(&req.amount.currency) {
            return Err(ArbiterError::Refused(format!(
                "`{}` does not move {} (it moves {})",
                req.adapter,
                req.amount.currency,
                a.currencies.join(", ")
            )));
        }
        // Any identity may ask, and each new stake is an escrow created at
        // the payment service: those still waiting for their deposit are
        // bounded.
        let waiting = self.store.custody().waiting()?;
        if waiting >= MAX_WAITING_STAKES {
            return Err(ArbiterError::Refused(format!(
                "{waiting} stakes here are waiting for their deposit; ask again later"
            )));
        }
        let depositor = if a.plugin.name() == LEDGER {
            provider.to_string()
        } else if req.depositor.trim().is_empty() {
            return Err(ArbiterError::Refused(format!(
                "name the address your stake comes from (`depositor`) for `{}`",
                req.adapter
            )));
        } else {
            req.depositor.clone()
        };
        let row = self.store.custody().open_stake(&StakeHeld {
            provider_peer: provider.to_string(),
            stake_job: format!("stake-{provider}-{}", now_ms()),
            adapter: req.adapter.clone(),
            escrow_id: None,
            amount: req.amount.amount,
            currency: req.amount.currency.clone(),
            depositor,
            status: "creating".into(),
            cert_until_ms: 0,
            created_at_ms: now_ms(),
        })?;
        if row.escrow_id.is_some() {
            return Ok(row);
        }
        let request = EscrowRequest {
            job_id: row.stake_job.clone(),
            amount: Money {
                amount: row.amount,
                currency: row.currency.clone(),
            },
            depositor: row.depositor.clone(),
            beneficiary: a.account.clone(),
            arbiter: Some(a.account.clone()),
            expires_in_secs: self.cfg.stake_escrow_secs,
            metadata: vec![
                ("kind".into(), "stake".into()),
                ("provider".into(), provider.to_string()),
            ],
        };
        match a.plugin.create_escrow(&request) {
            Ok(e) => {
                self.store
                    .custody()
                    .update_stake(provider, Some(&e.id), e.status.name())?;
                tracing::info!(provider, escrow = %e.id, status = e.status.name(), "stake opened");
            }
            Err(e) => {
                self.store.custody().forget_unopened(provider)?;
                return Err(ArbiterError::Refused(format!(
                    "cannot hold your stake through `{}`: {e}",
                    req.adapter
                )));
            }
        }
        Ok(self
            .store
            .custody()
            .stake(provider)?
            .ok_or_else(|| StoreError::Corrupt("custody row vanished".into()))?)
    }

    /// The stake with its escrow's status as the adapter reports it now.
    fn refresh(&self, a: &Adapter, held: StakeHeld) -> Result<StakeHeld, ArbiterError> {
        let Some(id) = held.escrow_id.clone() else {
            return Ok(held);
        };
        if matches!(held.status.as_str(), "slashed" | "refunded") {
            return Ok(held);
        }
        let withdrawing = held.status == "withdrawing";
        let e = a.plugin.status(&id).map_err(|e| ArbiterError::Adapter {
            adapter: held.adapter.clone(),
            message: e.to_string(),
        })?;
        let status = match e.status {
            EscrowState::Pending | EscrowState::Funded if withdrawing => "withdrawing",
            EscrowState::Pending => "pending",
            EscrowState::Funded => "funded",
            // Released or refunded outside this arbiter, or expired: not
            // held any more.
            _ => "refunded",
        };
        if status != held.status {
            self.store
                .custody()
                .update_stake(&held.provider_peer, None, status)?;
        }
        Ok(StakeHeld {
            status: status.into(),
            ..held
        })
    }

    /// Starts or finishes a withdrawal.
    fn withdraw(&self, a: &Adapter, held: StakeHeld) -> Result<StakeState, ArbiterError> {
        if held.status == "slashed" {
            return Err(ArbiterError::Refused(
                "your stake was slashed for a proven cheat".into(),
            ));
        }
        let held = self.refresh(a, held)?;
        if held.status == "refunded" {
            return self.state(held);
        }
        if held.status != "withdrawing" {
            self.store
                .custody()
                .update_stake(&held.provider_peer, None, "withdrawing")?;
        }
        let free_at = held.cert_until_ms.saturating_add(
            i64::try_from(self.cfg.unbond_grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        );
        let held = StakeHeld {
            status: "withdrawing".into(),
            ..held
        };
        if now_ms() < free_at {
            let mut state = self.state(held)?;
            state.note = format!(
                "unbonding: refunded from {} ms since epoch (the last certificate's expiry plus {} s for disputes)",
                free_at, self.cfg.unbond_grace_secs
            );
            return Ok(state);
        }
        let id = held.escrow_id.clone().unwrap_or_default();
        let e = a.plugin.refund(&id).map_err(|e| ArbiterError::Adapter {
            adapter: held.adapter.clone(),
            message: e.to_string(),
        })?;
        let status = if e.status == EscrowState::Pending {
            "withdrawing"
        } else {
            "refunded"
        };
        self.store
            .custody()
            .update_stake(&held.provider_peer, None, status)?;
        tracing::info!(provider = %held.provider_peer, escrow = %id, "stake withdrawn");
        self.state(StakeHeld {
            status: status.into(),
            ..held
        })
    }

    /// The expiry of a certificate issued now: `cert_secs` from now, but
    /// never past the escrow's own expiry less the grace for disputes (the
    /// ledger returns an expired escrow to its depositor).
    fn cert_until(&self, held: &StakeHeld) -> i64 {
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let last = held
            .created_at_ms
            .saturating_add(ms(self.cfg.stake_escrow_secs))
            .saturating_sub(ms(self.cfg.unbond_grace_secs));
        now_ms().saturating_add(ms(self.cfg.cert_secs)).min(last)
    }

    /// What the provider is told, with a certificate while the stake is
    /// funded.
    fn state(&self, held: StakeHeld) -> Result<StakeState, ArbiterError> {
        let a = self.adapter(&held.adapter)?;
        let escrow_id = held.escrow_id.clone().unwrap_or_default();
        let deposit_address = match (&held.escrow_id, held.status.as_str()) {
            (Some(id), "pending") => a.plugin.status(id).ok().and_then(|e| e.deposit_address),
            _ => None,
        };
        let amount = WireMoney {
            amount: held.amount,
            currency: held.currency.clone(),
        };
        let (cert, note) = match held.status.as_str() {
            "funded" if self.cert_until(&held) <= now_ms() => (
                None,
                "the stake's escrow expires soon: withdraw it and stake again".to_string(),
            ),
            "funded" => {
                let until = self.cert_until(&held);
                self.store.custody().certified(&held.provider_peer, until)?;
                let cert = StakeCert {
                    provider: held.provider_peer.clone(),
                    arbiter: self.me.clone(),
                    adapter: held.adapter.clone(),
                    escrow_id: escrow_id.clone(),
                    amount: amount.clone(),
                    valid_until_ms: u64::try_from(until).unwrap_or(0),
                };
                let signed = SignedStakeCert::sign(cert, &self.key)
                    .map_err(|e| ArbiterError::Refused(format!("signing the certificate: {e}")))?;
                (Some(Box::new(signed)), "held".to_string())
            }
            "pending" | "creating" => (None, "waiting for the deposit".to_string()),
            other => (None, other.to_string()),
        };
        Ok(StakeState {
            escrow_id,
            status: held.status,
            amount,
            deposit_address,
            cert,
            note,
        })
    }
}
