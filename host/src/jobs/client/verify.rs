//! Verification policies on the client: which plan a job's policy makes
//! ([`JobClient::plan`]), and `replicate(k)` ([`JobClient::replicate`]):
//! the job runs on k different providers, each replica a client job of its
//! own (row, escrow, price) held at `delivered`; their signed results are
//! compared, a disagreement goes to a referee, and each replica is then
//! released (`delivered -> verified -> settled`) or, proven to cheat,
//! refunded (`delivered -> failed -> refunded`). `spot-check(p)` is
//! `replicate(2)` with probability p ([`spot_check`]), else one job.
//! Every compared replica is a verified outcome: [`Inner::attest`] records
//! it first-hand and gossips it as a signed attestation.

use super::*;
use crate::p2p::AttestedOutcome;
use crate::verify::evidence::{Evidence, JobSpec};
use crate::verify::reputation;
use rand::Rng;
use serde::Serializer;
use std::path::Path;

/// How a job's result was checked against other providers'.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The policy in effect.
    pub policy: VerifyPolicy,
    /// Whether it ran on more than one provider (a spot check's draw).
    pub checked: bool,
    /// Every replica, the returned one among them, in the order they ran.
    pub replicas: Vec<Replica>,
    /// What the extra executions cost: the prices of the released replicas
    /// other than the returned one (a refunded replica costs nothing).
    #[serde(serialize_with = "moneys_as_decimal")]
    pub cost: Vec<Money>,
    /// What the comparison found.
    pub verdict: Verdict,
    /// What the referee's rulings did to the cheaters' stakes it holds
    /// (empty: no cheat, or no stake held there).
    pub slashes: Vec<crate::p2p::verification::SlashReport>,
    /// The verifier's audit, when a verifier re-ran the spot check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::AuditNote>,
}

/// One execution of a verified job.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    /// Its client job id.
    pub job_id: String,
    /// Who ran it.
    #[serde(serialize_with = "as_text")]
    pub provider: PeerId,
    /// Its accepted price.
    #[serde(serialize_with = "money_as_decimal")]
    pub price: Money,
    /// The trace root its signed result carries.
    pub trace_root: Option<String>,
}

/// What comparing the replicas found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every replica signed the same output and the same trace.
    Agreed,
    /// A referee ruled these providers' results wrong; their replicas were
    /// refunded.
    Cheated {
        /// Peer ids of the cheaters.
        providers: Vec<String>,
        /// The evidence bundle, as saved (`<data_dir>/evidence/<job>.json`).
        evidence: PathBuf,
    },
    /// The replicas disagreed and the referee ruled it honest float noise.
    NoFault {
        /// The evidence bundle, as saved.
        evidence: PathBuf,
    },
    /// A spot check that was not drawn: one provider, nothing compared.
    Unchecked,
}

fn as_text<S: Serializer>(p: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// Money as people read it ([`crate::payments::money_json`]).
fn money_as_decimal<S: Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&crate::payments::money_json(m.amount, &m.currency), s)
}

fn moneys_as_decimal<S: Serializer>(v: &[Money], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        v.iter()
            .map(|m| crate::payments::money_json(m.amount, &m.currency)),
    )
}

/// The draw of `spot-check(p)`: whether this job is checked. A `p`
/// outside (0, 1] (or NaN) never checks (the policy's parser refuses it).
pub fn spot_check(p: f64, rng: &mut impl Rng) -> bool {
    rng.gen::<f64>() < p
}

/// What a submitted job runs as.
pub(super) enum Plan {
    /// One job: policy `none`, or `proof` (set in the options).
    Single(InferOptions),
    /// One job under a spot check that was not drawn.
    Unchecked(InferOptions, VerifyPolicy),
    /// Replicas under `replicate(k)` or a drawn spot check.
    Replicate(InferOptions, VerifyPolicy),
}

/// Whether a new job is a held replica, and which providers it must not use.
pub(super) enum Hold {
    /// A normal job.
    No,
    /// A replica, avoiding the earlier replicas' providers.
    Replica(Vec<PeerId>),
    /// A spot check's replica on one of the trusted verifiers, avoiding
    /// the earlier replicas' providers.
    Audit(Vec<PeerId>),
}

/// An outcome run without a check (a spot check not drawn).
pub(super) fn unchecked(mut outcome: JobOutcome, policy: VerifyPolicy) -> JobOutcome {
    outcome.verification = Some(Verification {
        slashes: Vec::new(),
        policy,
        checked: false,
        replicas: vec![replica(&outcome)],
        cost: Vec::new(),
        verdict: Verdict::Unchecked,
        audit: None,
    });
    outcome
}

/// What a `cheated` attestation names: the saved evidence file's sha256
/// (`None` when it cannot be read).
pub(super) async fn evidence_file_hash(path: &Path) -> Option<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::read(path).ok())
        .await
        .ok()
        .flatten()
        .map(|bytes| reputation::evidence_hash(&bytes))
}

fn replica(o: &JobOutcome) -> Replica {
    Replica {
        job_id: o.job_id.clone(),
        provider: o.provider,
        price: o.price.clone(),
        trace_root: o.signed.payload.trace_root.clone(),
    }
}

/// Whether two results are the same execution with the same output and trace.
pub(super) fn agree(a: &SignedResult, b: &SignedResult) -> bool {
    a.payload.output_hash == b.payload.output_hash && a.payload.trace_root == b.payload.trace_root
}

impl JobClient {
    /// The plan for a job with `opts`: its effective policy
    /// ([`InferOptions::verify`], else the config's, except that options
    /// asking for a proof keep today's proof path), checked by the
    /// policy's own rules, and for replicas a fixed seed when sampling is
    /// random and none is set, so the replicas run the same sampler.
    pub(super) fn plan(&self, opts: &InferOptions) -> Result<Plan, ClientError> {
        let policy = match (&opts.verify, &opts.proof) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => VerifyPolicy::None,
            (None, None) => self.inner.verify.policy.clone(),
        };
        // A policy built in code obeys the parser's bounds too.
        let policy: VerifyPolicy = policy
            .to_string()
            .parse()
            .map_err(ClientError::Verification)?;
        let replicated = |policy| {
            if opts.proof.is_some() {
                return Err(ClientError::Verification(format!(
                    "`{policy}` and a proof are two verification policies: ask for one"
                )));
            }
            Ok(Plan::Replicate(seeded(opts), policy))
        };
        match policy {
            VerifyPolicy::None => Ok(Plan::Single(opts.clone())),
            VerifyPolicy::Proof(system) => match &opts.proof {
                Some(p) if *p != system => Err(ClientError::Verification(format!(
                    "the options ask for a `{p}` proof and the policy for `{system}`: ask for one"
                ))),
                _ => Ok(Plan::Single(InferOptions {
                    proof: Some(system),
                    ..opts.clone()
                })),
            },
            VerifyPolicy::Replicate(_) => replicated(policy),
            VerifyPolicy::SpotCheck(p) => {
                if spot_check(p, &mut rand::thread_rng()) {
                    replicated(policy)
                } else {
                    Ok(Plan::Unchecked(opts.clone(), policy))
                }
            }
        }
    }

    /// Runs the replicas of a job whose first replica `first` is stored
    /// (created from `model`, `input`, `opts`), compares them and settles
    /// each: see the module docs. `events` streams the first replica.
    ///
    /// Replicas run one after another, each excluding the providers the
    /// earlier ones used: a replicated job takes about k times as long as
    /// a single one, in exchange for exact exclusion and no money held for
    /// replicas that would be cancelled when an earlier one fails.
    pub(super) async fn replicate(
        &self,
        first: String,
        (model, input, opts): (String, WireInput, InferOptions),
        policy: VerifyPolicy,
        events: Option<&Events>,
    ) -> Result<JobOutcome, ClientError> {
        let k = policy.replicas() as usize;
        let mut held: Vec<JobOutcome> = Vec::with_capacity(k);
        let mut id = first;
        // A drawn spot check goes to a trusted verifier when there are any
        // (`audit`), else to another provider.
        let mut audit =
            matches!(policy, VerifyPolicy::SpotCheck(_)) && !self.verifiers().is_empty();
        loop {
            let events = if held.is_empty() { events } else { None };
            match self.inner.drive(&id, events).await {
                Ok(o) => held.push(o),
                // No verifier ran the check: it is created again below,
                // on another provider.
                Err(e) if audit && !held.is_empty() && super::audit::verifier_unavailable(&e) => {
                    tracing::warn!(error = %e, "{policy}: no verifier answered: re-running on another provider");
                    audit = false;
                }
                Err(e) => {
                    let why = format!("{policy}: replica {} of {k} failed", held.len() + 1);
                    let refunded = self.refund_all(&held, &why).await?;
                    return Err(replica_failed(&policy, &model, &held, e, &refunded));
                }
            }
            if held.len() == k {
                break;
            }
            let used = held.iter().map(|o| o.provider).collect();
            let hold = match audit {
                true => Hold::Audit(used),
                false => Hold::Replica(used),
            };
            id = match self.create(&model, input.clone(), &opts, hold).await {
                Ok(id) => id,
                Err(e) => {
                    self.refund_all(&held, &format!("{policy}: {e}")).await?;
                    return Err(e);
                }
            };
        }
        let req = stored_request(&self.inner.record(&held[0].job_id).await?)?;
        let spec = JobSpec {
            model: model.clone(),
            input,
            params: req.params,
        };
        let (audited, check) = (held[0].signed.clone(), held.last().cloned());
        let mut outcome = self.compare(held, spec, policy).await?;
        if let (Some(check), Some(v)) = (check, outcome.verification.as_mut()) {
            v.audit = self
                .audit(&check, &audited, v.verdict == Verdict::Agreed)
                .await;
        }
        Ok(outcome)
    }

    /// Compares delivered replicas and settles each one; returns an honest
    /// replica's outcome with its [`Verification`].
    async fn compare(
        &self,
        held: Vec<JobOutcome>,
        spec: JobSpec,
        policy: VerifyPolicy,
    ) -> Result<JobOutcome, ClientError> {
        let first = &held[0].signed.payload;
        let execution = first.execution();
        if let Some(bad) = held
            .iter()
            .find(|o| execution.is_none() || o.signed.payload.execution() != execution)
        {
            let refunded = self
                .refund_all(&held, &format!("{policy}: replicas not comparable"))
                .await?;
            return Err(ClientError::Verification(format!(
                "{policy}: the replicas cannot be compared: provider {}'s result {} ({refunded})",
                bad.provider,
                if bad.signed.payload.binds.is_none() || execution.is_none() {
                    "does not bind its weights, input and parameters (an older provider)"
                } else {
                    "names another execution (weights, plugin, input or parameters) than the first replica's"
                }
            )));
        }
        // Replicas by what they signed: the first of each class stands for it.
        let (mut classes, mut class_of) = (Vec::<usize>::new(), Vec::<usize>::new());
        for (i, o) in held.iter().enumerate() {
            match classes
                .iter()
                .position(|&r| agree(&held[r].signed, &o.signed))
            {
                Some(c) => class_of.push(c),
                None => {
                    classes.push(i);
                    class_of.push(classes.len() - 1);
                }
            }
        }
        let replicas: Vec<Replica> = held.iter().map(replica).collect();
        if classes.len() == 1 {
            let note = format!("verification: {policy}: agreed by {} providers", held.len());
            return self
                .finish(held, &[], policy, Verdict::Agreed, replicas, &note)
                .await;
        }
        // A disagreement: each other class against the first, one referee.
        let providers: Vec<PeerId> = held.iter().map(|o| o.provider).collect();
        let Some(referee) = self.referee_for(&providers) else {
            let refunded = self
                .refund_all(&held, &format!("{policy}: replicas disagree, no referee"))
                .await?;
            return Err(ClientError::Verification(format!(
                "{policy}: the replicas disagree ({}) and no referee is configured that ran no replica: \
                 configure `[verify] referees` with the peer id of a node started with `[verify] referee = true` ({refunded})",
                held.iter()
                    .map(|o| format!("{}: output {}", o.provider, o.signed.payload.output_hash))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let mut cheated_classes: HashSet<usize> = HashSet::new();
        let mut cheaters: Vec<String> = Vec::new();
        let mut proof: Option<PathBuf> = None;
        let mut first_evidence: Option<PathBuf> = None;
        let mut slashes = Vec::new();
        for c in 1..classes.len() {
            let (a, b) = (&held[classes[0]], &held[classes[c]]);
            let evidence = match self
                .dispute(referee, spec.clone(), a.signed.clone(), b.signed.clone())
                .await
            {
                Ok((e, s)) => {
                    slashes.extend(s);
                    e
                }
                Err(e) => {
                    let refunded = self
                        .refund_all(&held, &format!("{policy}: dispute failed"))
                        .await?;
                    return Err(ClientError::Verification(format!(
                        "{policy}: the replicas disagree and the dispute failed: {e} ({refunded})"
                    )));
                }
            };
            let name = match c {
                1 => held[0].job_id.clone(),
                _ => format!("{}.{c}", held[0].job_id),
            };
            let path = self.save_evidence(&name, &evidence).await?;
            first_evidence.get_or_insert_with(|| path.clone());
            for (class, party) in [(0, a), (c, b)] {
                let peer = party.provider.to_string();
                if evidence.ruling.cheated.contains(&peer) {
                    cheated_classes.insert(class);
                    proof.get_or_insert_with(|| path.clone());
                }
            }
        }
        // A replica that signed what a proven cheat signed (same execution,
        // same trace root) is proven wrong by the same evidence.
        for (i, o) in held.iter().enumerate() {
            let p = o.provider.to_string();
            if cheated_classes.contains(&class_of[i]) && !cheaters.contains(&p) {
                cheaters.push(p);
            }
        }
        let (verdict, note) = match proof {
            Some(evidence) => (
                Verdict::Cheated {
                    providers: cheaters.clone(),
                    evidence: evidence.clone(),
                },
                format!(
                    "verification: {policy}: referee {referee} ruled {} cheated (evidence {})",
                    cheaters.join(", "),
                    evidence.display()
                ),
            ),
            None => {
                let evidence = first_evidence.unwrap_or_default();
                let note = format!(
                    "verification: {policy}: the replicas differ by float noise, referee {referee} ruled (evidence {})",
                    evidence.display()
                );
                (Verdict::NoFault { evidence }, note)
            }
        };
        let note = match slashes.iter().filter(|s| s.to_client.amount > 0).count() {
            0 => note,
            _ => format!(
                "{note}; stake slashed: {}",
                super::exchange::slashed(&slashes)
            ),
        };
        let mut out = self
            .finish(held, &cheaters, policy, verdict, replicas, &note)
            .await?;
        if let Some(v) = out.verification.as_mut() {
            v.slashes = slashes;
        }
        Ok(out)
    }

    /// Refunds the cheaters' replicas (one reputation failure each) and
    /// releases the others; returns the first honest replica's outcome.
    async fn finish(
        &self,
        held: Vec<JobOutcome>,
        cheaters: &[String],
        policy: VerifyPolicy,
        verdict: Verdict,
        replicas: Vec<Replica>,
        note: &str,
    ) -> Result<JobOutcome, ClientError> {
        // What the cheats' attestations name: the evidence file's sha256.
        let evidence = match &verdict {
            Verdict::Cheated { evidence, .. } => evidence_file_hash(evidence).await,
            _ => None,
        };
        let mut honest: Vec<JobOutcome> = Vec::new();
        for o in held {
            let peer = o.provider.to_string();
            // Every replica was checked against the others (and, on a
            // disagreement, before a referee): a verified outcome either way.
            let (outcome, hash) = match cheaters.contains(&peer) {
                true => (
                    AttestedOutcome::Cheated,
                    Some(evidence.clone().unwrap_or_else(|| o.signed.payload.hash())),
                ),
                false => (AttestedOutcome::Verified, None),
            };
            self.inner
                .attest(o.provider, &o.job_id, outcome, hash)
                .await;
            if cheaters.contains(&peer) {
                let reason = match &verdict {
                    Verdict::Cheated { evidence, .. } => format!(
                        "{policy}: a held replica proven to cheat (evidence {})",
                        evidence.display()
                    ),
                    _ => format!("{policy}: a held replica proven to cheat"),
                };
                self.refund_held(&o.job_id, &reason).await?;
                self.inner
                    .db(move |s| Ok(s.peers().record_outcome(&peer, false)?))
                    .await?;
            } else {
                honest.push(self.settle_held(&o.job_id, note).await?);
            }
        }
        let mut honest = honest.into_iter();
        let Some(mut outcome) = honest.next() else {
            return Err(ClientError::Verification(format!(
                "{policy}: every replica was proven to cheat ({}); all were refunded",
                match &verdict {
                    Verdict::Cheated { evidence, .. } => format!("evidence {}", evidence.display()),
                    _ => "no evidence".into(),
                }
            )));
        };
        outcome.verification = Some(Verification {
            slashes: Vec::new(),
            policy,
            checked: true,
            replicas,
            cost: honest.map(|o| o.price).collect(),
            verdict,
            audit: None,
        });
        Ok(outcome)
    }

    /// Releases a held replica: `delivered -> verified -> settled`, the
    /// payment released, reputation +1, the receipt sent; `note` goes in
    /// its event log. Returns its outcome (again, when already settled).
    pub async fn settle_held(&self, job_id: &str, note: &str) -> Result<JobOutcome, ClientError> {
        let rec = self.inner.record(job_id).await?;
        match rec.state {
            JobState::Delivered => {
                self.inner
                    .advance(
                        job_id,
                        JobState::Delivered,
                        JobState::Verified,
                        note.to_string(),
                        JobUpdate::default(),
                    )
                    .await?
            }
            JobState::Verified | JobState::Settled => {}
            other => {
                return Err(ClientError::Verification(format!(
                    "job {job_id} is `{other}`, not a held replica"
                )))
            }
        }
        self.inner.drive(job_id, None).await
    }

    /// Refunds a held replica: `delivered -> failed -> refunded` with
    /// `reason`, its escrow returned to this client. Nothing to do when it
    /// already failed.
    pub async fn refund_held(&self, job_id: &str, reason: &str) -> Result<(), ClientError> {
        let rec = self.inner.record(job_id).await?;
        match rec.state {
            JobState::Delivered => self.inner.fail_and_refund(&rec, reason.to_string()).await,
            JobState::Failed => self.inner.settle_failed(job_id).await,
            JobState::Refunded => Ok(()),
            other => Err(ClientError::Verification(format!(
                "job {job_id} is `{other}`, not a held replica"
            ))),
        }
    }

    /// Refunds every held replica (the job failed); says what it refunded.
    async fn refund_all(&self, held: &[JobOutcome], why: &str) -> Result<String, ClientError> {
        for o in held {
            self.refund_held(&o.job_id, why).await?;
        }
        Ok(match held.len() {
            0 => "nothing was held".into(),
            _ => format!(
                "held replicas refunded: {}",
                held.iter()
                    .map(|o| o.job_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The first of `[verify] referees` that is neither this node nor one
    /// of `parties`.
    pub(super) fn referee_for(&self, parties: &[PeerId]) -> Option<PeerId> {
        let me = self.inner.net.peer_id();
        self.inner
            .verify
            .referees
            .iter()
            .filter_map(|r| r.parse::<PeerId>().ok())
            .find(|r| *r != me && !parties.contains(r))
    }

    /// Saves a dispute's evidence as `<data_dir>/evidence/<name>.json`.
    pub(super) async fn save_evidence(
        &self,
        name: &str,
        evidence: &Evidence,
    ) -> Result<PathBuf, ClientError> {
        let dir = match (&self.inner.data_dir, self.inner.store.path()) {
            (Some(d), _) => d.join("evidence"),
            (None, Some(db)) => db.parent().unwrap_or(Path::new(".")).join("evidence"),
            (None, None) => {
                return Err(ClientError::Verification(
                    "no data dir to save the dispute's evidence in (an in-memory store)".into(),
                ))
            }
        };
        let json = serde_json::to_vec_pretty(evidence)
            .map_err(|e| ClientError::Verification(format!("evidence does not encode: {e}")))?;
        let path = dir.join(format!("{name}.json"));
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&p, json))
        })
        .await
        .map_err(|e| ClientError::Worker(e.to_string()))?
        .map_err(|e| {
            ClientError::Verification(format!("cannot save evidence {}: {e}", path.display()))
        })?;
        Ok(path)
    }
}

impl Inner {
    /// Records a verified outcome of `subject`'s result of `job_id`
    /// first-hand (what selection reads) and gossips it as this node's
    /// signed attestation (`infernet/attestations/1`), with the evidence's
    /// sha256 for a cheat. Never fails the job: a failure is logged.
    pub(super) async fn attest(
        &self,
        subject: PeerId,
        job_id: &str,
        outcome: AttestedOutcome,
        evidence: Option<String>,
    ) {
        let signed = match reputation::sign(
            &self.key,
            &subject.to_string(),
            job_id,
            outcome,
            evidence,
            now_ms(),
        ) {
            Ok(s) => s,
            Err(e) => return tracing::warn!(job = job_id, error = %e, "attestation not made"),
        };
        let kept = signed.clone();
        let recorded = self
            .db(move |s| {
                reputation::record(s, &kept, crate::store::now_ms())
                    .map_err(|e| ClientError::Verification(e.to_string()))
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(job = job_id, error = %e, "attestation not recorded");
        }
        if let Err(e) = self.net.publish_attestation(signed).await {
            tracing::debug!(job = job_id, error = %e, "attestation not gossiped");
        }
    }
}

/// Why a replicated job failed when replica `held.len() + 1` did: not
/// enough providers (the usual case), or that replica's own error.
fn replica_failed(
    policy: &VerifyPolicy,
    model: &str,
    held: &[JobOutcome],
    e: ClientError,
    refunded: &str,
) -> ClientError {
    let k = policy.replicas();
    let what = match e {
        ClientError::NoProviders { .. }
        | ClientError::NoQuotes { .. }
        | ClientError::ProvidersFailed { .. }
        | ClientError::OverBudget { .. } => format!(
            "{policy} needs {k} different providers of `{model}` and found {} that ran it",
            held.len()
        ),
        _ => format!("{policy}: replica {} of {k} failed", held.len() + 1),
    };
    let why = match e {
        ClientError::NoProviders { waited_ms, .. } if !held.is_empty() => {
            let used: Vec<String> = held.iter().map(|o| o.provider.to_string()).collect();
            format!(
                "no provider of it but {} was found in {waited_ms} ms",
                used.join(", ")
            )
        }
        e => e.to_string(),
    };
    ClientError::Verification(format!("{what} ({why}); {refunded}"))
}

/// `opts` with a seed when sampling is random (`temperature > 0`) and none
/// is set: replicas must sample alike to be compared.
fn seeded(opts: &InferOptions) -> InferOptions {
    let params = opts.backend_params();
    let last = |key: &str| params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    let random = last("temperature")
        .and_then(|t| t.trim().parse::<f64>().ok())
        .is_some_and(|t| t > 0.0);
    let mut opts = opts.clone();
    if random && last("seed").is_none() {
        opts.seed = Some(rand::thread_rng().gen());
    }
    opts
}
