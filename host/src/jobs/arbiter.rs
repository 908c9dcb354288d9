//! An arbiter: a referee node that holds providers' stakes and slashes
//! them on its own rulings.
//!
//! *Custody.* The arbiter creates each stake's escrow itself, through its
//! own payment adapter (depositor: the provider; beneficiary and arbiter:
//! the arbiter's account), so the release token — the power to release or
//! refund — is the arbiter's alone: a provider cannot take its stake back
//! ahead of a ruling (a stake it created itself, as `infernet stake post`
//! does, it could). On the ledger the provider's money is the account
//! `<provider peer id>` in the arbiter's books (a node's default ledger account), never a name the
//! request chooses, so no peer can lock another's balance. While funded
//! and not being withdrawn, the arbiter signs a [`StakeCert`] for the
//! provider to advertise; a withdrawal is refunded only once the last
//! certificate expired and `unbond_grace_secs` passed, so a provider
//! cannot withdraw between cheating and the ruling.
//!
//! *Slashing.* A ruling of this node's referee that names a cheater with a
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

use crate::config::VerifyConfig;
use crate::p2p::protocol::Money as WireMoney;
use crate::p2p::protocol::{JobBody, JobMessage};
use crate::p2p::verification::{
    PayoutTo, SignedClaim, SignedStakeCert, SlashReport, StakeCert, StakeRequest, StakeState,
};
use crate::p2p::{NetworkHandle, PeerId};
use crate::payments::ledger::LEDGER;
use crate::payments::{Adapter, Payments};
use crate::store::{now_ms, SlashRecord, StakeHeld, Store, StoreError};
use crate::worlds::payment::{EscrowRequest, EscrowState, Money};
use libp2p::identity::Keypair;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Stake and payout escrows live this long at the adapter, seconds (CoinPay
/// takes at most 720 hours).
const ESCROW_SECS: u64 = 30 * 24 * 3600;
/// How often a provider is asked to deliver a claimed job before its
/// stake is forfeited, and the pause after each unanswered ask.
const DELIVER_ASKS: u32 = 3;
const DELIVER_PAUSE: Duration = Duration::from_secs(1);
/// How many "still running" answers are waited out (a second each).
const MAX_BUSY_ASKS: u32 = 20;
/// Bound on one `Deliver` ask.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(10);

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
            expires_in_secs: ESCROW_SECS,
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
                self.store
                    .custody()
                    .update_stake(provider, None, "abandoned")?;
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
        if matches!(held.status.as_str(), "slashed" | "refunded" | "withdrawing") {
            return Ok(held);
        }
        let e = a.plugin.status(&id).map_err(|e| ArbiterError::Adapter {
            adapter: held.adapter.clone(),
            message: e.to_string(),
        })?;
        let status = match e.status {
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
            "funded" => {
                let until = now_ms().saturating_add(
                    i64::try_from(self.cfg.cert_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
                );
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
            super::crash_at("slash-ruled");
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
            super::crash_at(&format!("slash-{to}"));
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

    /// A client's claim that a prepaid job was not delivered: checked
    /// (signed by its client, names this arbiter, carries the provider's
    /// signed commitment to that job and escrow, a stake of the provider
    /// held here; where this arbiter can read the escrow, released to the
    /// provider's address), then the provider is asked to `Deliver` until
    /// [`DELIVER_ASKS`] asks went unanswered (a job still running is
    /// waited for, up to [`MAX_BUSY_ASKS`] seconds). Its signed result for that client and job is
    /// handed to the client; no valid result forfeits its stake (the
    /// evidence: the claim and the unanswered asks).
    pub async fn claim(
        &self,
        from: PeerId,
        claim: SignedClaim,
    ) -> Result<JobMessage, ArbiterError> {
        let refuse = |m: String| ArbiterError::Refused(m);
        let signer = claim
            .verify()
            .map_err(|e| refuse(format!("the claim's signature: {e}")))?;
        let c = claim.payload.clone();
        if signer != from || c.arbiter != self.me {
            return Err(refuse(
                "a claim is signed by the client sending it and names this arbiter".into(),
            ));
        }
        let provider: PeerId = c
            .provider
            .parse()
            .map_err(|_| refuse(format!("`{}` is not a peer id", c.provider)))?;
        // Only a job the provider committed to can be claimed: its signed
        // commitment names this client, job and escrow.
        let k = &c.commitment.payload;
        let committed = c.commitment.verify().ok() == Some(provider)
            && k.client == c.client
            && k.job_id == c.job_id
            && k.adapter == c.escrow.adapter
            && k.escrow_id == c.escrow.escrow_id;
        if !committed {
            return Err(refuse(format!(
                "the claim carries no commitment of {provider} to job {} for escrow {}",
                c.job_id, c.escrow.escrow_id
            )));
        }
        let held = self.store.custody().stake(&c.provider)?;
        let Some(held) =
            held.filter(|h| matches!(h.status.as_str(), "funded" | "withdrawing" | "slashed"))
        else {
            return Err(refuse(format!("no stake of {provider} is held here")));
        };
        self.check_paid(&held, &c).await?;
        let net = self
            .net
            .get()
            .cloned()
            .ok_or_else(|| refuse("the arbiter's network is not running yet".into()))?;
        let ask = JobMessage::new(JobBody::Deliver {
            job_id: c.job_id.clone(),
            claim: Box::new(claim.clone()),
        });
        let mut answers = Vec::new();
        let mut busy = 0;
        while answers.len() < DELIVER_ASKS as usize {
            if !answers.is_empty() || busy > 0 {
                tokio::time::sleep(DELIVER_PAUSE).await;
            }
            let asked =
                tokio::time::timeout(DELIVER_TIMEOUT, net.verify_request(provider, ask.clone()));
            let why = match asked.await {
                Err(_) => Err(format!("no answer within {} s", DELIVER_TIMEOUT.as_secs())),
                Ok(r) => r.map(|m| m.body).map_err(|e| e.to_string()),
            };
            let why = match why {
                // Still running: not an unanswered ask, within a bound.
                Ok(JobBody::Error(e))
                    if e.code == crate::p2p::ErrorCode::Busy && busy < MAX_BUSY_ASKS =>
                {
                    busy += 1;
                    continue;
                }
                Ok(JobBody::Result {
                    output,
                    signed,
                    proof,
                }) => {
                    let p = &signed.payload;
                    let ok = signed.verify().ok() == Some(provider)
                        && p.job_id == c.job_id
                        && p.client.as_deref() == Some(c.client.as_str());
                    if ok {
                        tracing::info!(job = %c.job_id, %provider, "claimed job delivered through the arbiter");
                        return Ok(JobMessage::new(JobBody::Result {
                            output,
                            signed,
                            proof,
                        }));
                    }
                    "a result that is not the claimed job's".to_string()
                }
                Ok(JobBody::Error(e)) => format!("refused: {}", e.message),
                Ok(other) => format!("answered {:?}", other.job_id()),
                Err(e) => e,
            };
            answers.push(why);
        }
        let evidence = serde_json::to_vec(&serde_json::json!({
            "kind": "undelivered",
            "claim": hex::encode(crate::p2p::protocol::encode(&claim).unwrap_or_default()),
            "asked": DELIVER_ASKS,
            "answers": answers,
            "arbiter": self.me,
            "at_ms": now_ms(),
        }))
        .unwrap_or_default();
        tracing::warn!(job = %c.job_id, %provider, "prepaid job not delivered: forfeiting the stake");
        let (client, job, bundle, payout) = (
            c.client.clone(),
            c.job_id.clone(),
            evidence.clone(),
            c.payout.clone(),
        );
        let arbiter = self.clone_handle();
        let slashes = tokio::task::spawn_blocking(move || {
            arbiter.slash(
                &[provider.to_string()],
                &client,
                &job,
                &bundle,
                payout.as_ref(),
            )
        })
        .await
        .map_err(|e| refuse(format!("the slash worker failed: {e}")))?;
        Ok(JobMessage::new(JobBody::Ruling {
            job_id: c.job_id.clone(),
            evidence,
            slashes,
        }))
    }

    /// Where this arbiter can read the claimed escrow (a non-ledger adapter
    /// of its own): it must be released or settled, to the address the
    /// provider's stake came from. The ledger is the client's own books:
    /// there the claim is taken on the client's signed word, as the
    /// provider itself took it (`confirm = "client"`).
    async fn check_paid(
        &self,
        held: &StakeHeld,
        c: &crate::p2p::verification::Claim,
    ) -> Result<(), ArbiterError> {
        if c.escrow.adapter == LEDGER || self.payments.adapter(&c.escrow.adapter).is_none() {
            return Ok(());
        }
        let (payments, adapter, id) = (
            self.payments.clone(),
            c.escrow.adapter.clone(),
            c.escrow.escrow_id.clone(),
        );
        let seen = tokio::task::spawn_blocking(move || {
            payments
                .adapter(&adapter)
                .map(|a| a.plugin.status(&id).map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| ArbiterError::Refused(format!("the status worker failed: {e}")))?;
        let seen = match seen {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return Err(ArbiterError::Refused(format!(
                    "cannot read escrow {}: {e}",
                    c.escrow.escrow_id
                )))
            }
            None => return Ok(()),
        };
        let paid = matches!(seen.status, EscrowState::Released | EscrowState::Settled);
        let to_provider = seen
            .beneficiary
            .as_deref()
            .is_some_and(|b| b.eq_ignore_ascii_case(&held.depositor));
        if !paid || !to_provider {
            return Err(ArbiterError::Refused(format!(
                "escrow {} is {} and pays {}: not a payment released to {}",
                c.escrow.escrow_id,
                seen.status.name(),
                seen.beneficiary.as_deref().unwrap_or("?"),
                held.provider_peer
            )));
        }
        Ok(())
    }

    fn clone_handle(&self) -> Arbiter {
        Arbiter {
            store: self.store.clone(),
            payments: self.payments.clone(),
            key: self.key.clone(),
            me: self.me.clone(),
            cfg: self.cfg.clone(),
            net: OnceLock::new(),
        }
    }

    /// This arbiter's peer id.
    pub fn peer_id(&self) -> &str {
        &self.me
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
