//! Slashing. A ruling of this node's referee that names a cheater with a
//! stake held here forfeits the whole stake (the rule in
//! `docs/ARCHITECTURE.md`): `slash_client_permille` of it to the wronged
//! client, the rest to the referee. The slash is recorded (with the
//! evidence) and the stake marked `slashed` in one transaction, then
//! driven `ruled → forfeited` (stake escrow released to the arbiter) `→
//! paying` (payout escrow from the arbiter to the client created, id
//! derived from the stake's, so a repeat returns the same one) `→ paid`
//! (released). Every step is an idempotent adapter call followed by a row
//! update; a process killed anywhere repeats at most the last call, and
//! [`Arbiter::resume`] (at start and on every sweep) finishes what was
//! left. A stake is forfeited once, whatever number of rulings name it.

use super::{Arbiter, ArbiterError, ESCROW_SECS};
use crate::p2p::protocol::Money as WireMoney;
use crate::p2p::verification::{PayoutTo, SlashReport};
use crate::payments::ledger::LEDGER;
use crate::store::{SlashRecord, StoreError};
use crate::worlds::payment::{EscrowRequest, EscrowState, Money};

impl Arbiter {
    /// Forfeits the stake of every cheater `cheated` names that is held
    /// here, for the ruling in `evidence` (JSON) on `job_id` of `client`;
    /// the client's share goes to `payout`. Blocking.
    pub fn slash(
        &self,
        cheated: &[String],
        client: &str,
        job_id: &str,
        evidence: &[u8],
        payout: Option<&PayoutTo>,
    ) -> Vec<SlashReport> {
        cheated
            .iter()
            .map(|provider| {
                self.slash_one(provider, client, job_id, evidence, payout)
                    .unwrap_or_else(|e| {
                        tracing::warn!(provider, error = %e, "slash failed; the sweep retries");
                        SlashReport {
                            provider: provider.clone(),
                            escrow_id: String::new(),
                            to_client: zero(),
                            to_referee: zero(),
                            status: format!("failed: {e}"),
                        }
                    })
            })
            .collect()
    }

    fn slash_one(
        &self,
        provider: &str,
        client: &str,
        job_id: &str,
        evidence: &[u8],
        payout: Option<&PayoutTo>,
    ) -> Result<SlashReport, ArbiterError> {
        let none = |status: &str| SlashReport {
            provider: provider.to_string(),
            escrow_id: String::new(),
            to_client: zero(),
            to_referee: zero(),
            status: status.into(),
        };
        let Some(held) = self.store.custody().stake(provider)? else {
            return Ok(none("no stake held"));
        };
        let Some(escrow) = held.escrow_id.clone() else {
            return Ok(none("no stake held"));
        };
        let recorded = match held.status.as_str() {
            "funded" | "withdrawing" => {
                let to_client = u64::try_from(
                    u128::from(held.amount) * u128::from(self.cfg.slash_client_permille.min(1000))
                        / 1000,
                )
                .unwrap_or(held.amount);
                let account = match payout {
                    Some(p) if p.adapter == held.adapter => Some(p.account.clone()),
                    _ if held.adapter == LEDGER => Some(client.to_string()),
                    _ => None,
                };
                self.store.custody().record_slash(&SlashRecord {
                    stake_escrow: escrow.clone(),
                    provider_peer: provider.to_string(),
                    client_peer: client.to_string(),
                    job_id: job_id.to_string(),
                    adapter: held.adapter.clone(),
                    currency: held.currency.clone(),
                    to_client,
                    to_referee: held.amount - to_client,
                    payout_account: account,
                    payout_escrow: None,
                    evidence: evidence.to_vec(),
                    status: "ruled".into(),
                })?
            }
            "slashed" => false,
            _ => return Ok(none("no stake held")),
        };
        let Some(mut rec) = self.store.custody().slash(&escrow)? else {
            return Ok(none("no stake held"));
        };
        if let (None, Some(p)) = (&rec.payout_account, payout) {
            if rec.client_peer == client && p.adapter == rec.adapter {
                self.store
                    .custody()
                    .set_payout_account(&escrow, &p.account)?;
                rec.payout_account = Some(p.account.clone());
            }
        }
        if recorded {
            tracing::warn!(provider, client, escrow = %escrow, "stake forfeited for a proven cheat");
            crate::jobs::crash_at("slash-ruled");
        }
        let rec = self.drive(rec)?;
        let mut report = report(&rec);
        if !recorded {
            report.status = format!("already slashed ({})", rec.status);
        }
        Ok(report)
    }

    /// Finishes every slash left unfinished (a crash, an adapter down, a
    /// payout waiting for its deposit). Returns how many are now paid.
    pub fn resume(&self) -> Result<usize, ArbiterError> {
        let mut paid = 0;
        for rec in self.store.custody().unfinished_slashes()? {
            let id = rec.stake_escrow.clone();
            match self.drive(rec) {
                Ok(r) if r.status == "paid" => paid += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(stake = %id, error = %e, "slash not finished; retried later")
                }
            }
        }
        Ok(paid)
    }

    /// Moves a slash as far as it goes now: each step one idempotent
    /// adapter call, then the row.
    fn drive(&self, mut rec: SlashRecord) -> Result<SlashRecord, ArbiterError> {
        let a = self.adapter(&rec.adapter)?;
        let name = rec.adapter.clone();
        let fail = |e: crate::runtime::PluginError| ArbiterError::Adapter {
            adapter: name.clone(),
            message: e.to_string(),
        };
        loop {
            let next = match rec.status.as_str() {
                "ruled" => {
                    let e = a.plugin.release(&rec.stake_escrow).map_err(fail)?;
                    if !matches!(e.status, EscrowState::Released | EscrowState::Settled) {
                        return Err(ArbiterError::Refused(format!(
                            "the stake escrow {} is {} and cannot be forfeited",
                            rec.stake_escrow,
                            e.status.name()
                        )));
                    }
                    ("forfeited", None)
                }
                "forfeited" if rec.to_client == 0 => ("paid", None),
                "forfeited" => {
                    let Some(account) = rec.payout_account.clone() else {
                        return Ok(rec);
                    };
                    let e = a
                        .plugin
                        .create_escrow(&EscrowRequest {
                            job_id: format!("payout-{}", rec.stake_escrow),
                            amount: Money {
                                amount: rec.to_client,
                                currency: rec.currency.clone(),
                            },
                            depositor: a.account.clone(),
                            beneficiary: account,
                            arbiter: None,
                            expires_in_secs: ESCROW_SECS,
                            metadata: vec![
                                ("kind".into(), "slash-payout".into()),
                                ("job".into(), rec.job_id.clone()),
                            ],
                        })
                        .map_err(fail)?;
                    ("paying", Some(e.id))
                }
                "paying" => {
                    let id = rec.payout_escrow.clone().unwrap_or_default();
                    let e = a.plugin.status(&id).map_err(fail)?;
                    match e.status {
                        EscrowState::Pending => return Ok(rec),
                        EscrowState::Released | EscrowState::Settled => ("paid", None),
                        _ => {
                            let e = a.plugin.release(&id).map_err(fail)?;
                            if !matches!(e.status, EscrowState::Released | EscrowState::Settled) {
                                return Err(ArbiterError::Refused(format!(
                                    "the payout escrow {id} is {}",
                                    e.status.name()
                                )));
                            }
                            ("paid", None)
                        }
                    }
                }
                _ => return Ok(rec),
            };
            let (to, payout) = next;
            let from = rec.status.clone();
            self.store
                .custody()
                .advance_slash(&rec.stake_escrow, &from, to, payout.as_deref())?;
            crate::jobs::crash_at(&format!("slash-{to}"));
            rec = self
                .store
                .custody()
                .slash(&rec.stake_escrow)?
                .ok_or_else(|| StoreError::Corrupt("slash row vanished".into()))?;
            if rec.status == from {
                // Another worker holds it; it finishes the slash.
                return Ok(rec);
            }
        }
    }
}

fn zero() -> WireMoney {
    WireMoney {
        amount: 0,
        currency: String::new(),
    }
}

/// What a slash row says, for the ruling's reply.
pub fn report(rec: &SlashRecord) -> SlashReport {
    SlashReport {
        provider: rec.provider_peer.clone(),
        escrow_id: rec.stake_escrow.clone(),
        to_client: WireMoney {
            amount: rec.to_client,
            currency: rec.currency.clone(),
        },
        to_referee: WireMoney {
            amount: rec.to_referee,
            currency: rec.currency.clone(),
        },
        status: rec.status.clone(),
    }
}
