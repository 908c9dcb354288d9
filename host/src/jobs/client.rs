//! The client side of `/infernet/job/1`: the lifecycle driver.
//!
//! A job is a row in the store (role `client`) and [`JobClient::drive`] is a
//! loop that reads the row, does the one step its state calls for, persists
//! the next state, and goes round again:
//!
//! ```text
//! created   find providers, ask the best-ranked for quotes, pick one  -> quoted
//! quoted    Accept (the escrow seam: nothing is held yet)             -> escrowed
//! escrowed  (payments issue: confirm the escrow)                      -> assigned
//! assigned  about to send Run                                         -> running
//! running   Run, stream / poll until the signed Result                -> delivered
//! delivered (proof asked for: verify it)                             -> verified
//! delivered | verified  Receipt, reputation +1                        -> settled
//! ```
//!
//! A job with [`InferOptions::proof`] (`"groth16"`) only goes to providers
//! whose advert lists a verifying key for the model in that system; the
//! `Run` asks for the proof, and in `delivered` the client checks it
//! ([`verify_proof`]): the signed result covers the proof's hash, the key
//! is the advertised one, and the proof shows that the advertised model
//! commitment maps this job's input to the returned output. A proof that
//! fails any check fails the job (`proof rejected: …`, one reputation
//! failure) without trying another provider.
//!
//! Every step is persisted before it is acted on, and every provider
//! request is idempotent on the provider (the wire job id `<id>.<attempt>`
//! names one execution), so a restarted client resumes any job from its
//! row without running it twice. A provider that fails, times out or
//! disappears is recorded (`provider-failed <peer>: <reason>` in the event
//! log, one reputation failure) and the job goes back to `quoted` with the
//! next-best provider, up to `client.max_attempts`.

use super::select::{rank, Candidate};
use crate::config::ClientConfig;
use crate::p2p::protocol::{
    decode, encode, hash_proof, hash_value, now_ms, Money, ProofAdvert, ProofAttachment,
    ReceiptBody, SignedReceipt, SignedResult, Usage, WireError,
};
use crate::p2p::{
    ErrorCode, JobBody, JobMessage, NetworkError, NetworkHandle, PeerId, ProviderInfo, WireInput,
    WireOutput,
};
use crate::store::{
    JobRecord, JobRole, JobState, JobUpdate, NewJob, QuoteRecord, Store, StoreError,
};
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The prefix of the event detail that marks a provider as failed for a job.
const PROVIDER_FAILED: &str = "provider-failed ";
/// Pause between polls while a provider reports the job still running.
const BUSY_POLL: Duration = Duration::from_millis(50);
/// Pause between provider lookups while none is found yet.
const DISCOVERY_RETRY: Duration = Duration::from_millis(200);
/// How long a provider lookup is reused before the DHT is asked again.
const PROVIDER_CACHE_TTL: Duration = Duration::from_secs(2);

/// What a caller may set on a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InferOptions {
    /// Most the client pays, in minor units of `currency`; quotes above it
    /// are refused.
    pub max_budget: Option<u64>,
    /// Only accept quotes in this currency.
    pub currency: Option<String>,
    /// Upper bound on generated tokens (backend parameter `max_tokens`).
    pub max_tokens: Option<u32>,
    /// Sampling temperature (backend parameter `temperature`).
    pub temperature: Option<f64>,
    /// Sampling seed (backend parameter `seed`).
    pub seed: Option<u64>,
    /// Any other backend parameters.
    pub params: Vec<(String, String)>,
    /// Ask for a zk proof of the result in this system (`"groth16"`): only
    /// providers advertising it for the model are used, and the job fails
    /// if the proof does not verify.
    #[serde(default)]
    pub proof: Option<String>,
}

impl InferOptions {
    /// The backend parameters these options stand for.
    pub fn backend_params(&self) -> Vec<(String, String)> {
        let mut p = self.params.clone();
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                p.retain(|(key, _)| key != k);
                p.push((k.into(), v));
            }
        };
        set("max_tokens", self.max_tokens.map(|v| v.to_string()));
        set("temperature", self.temperature.map(|v| v.to_string()));
        set("seed", self.seed.map(|v| v.to_string()));
        p
    }
}

/// The job as stored in its row, enough to resume it after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRequest {
    model: String,
    input: WireInput,
    params: Vec<(String, String)>,
    max_budget: Option<u64>,
    currency: Option<String>,
    max_output_tokens: u32,
    #[serde(default)]
    proof: Option<String>,
}

/// A finished job: the output, the provider's signed result and the price.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// Client-side job id (the store key).
    pub job_id: String,
    /// The output; its hash is signed in `signed`.
    pub output: WireOutput,
    /// The provider's signed result (output hash, usage, model, backend).
    pub signed: SignedResult,
    /// Who served it.
    pub provider: PeerId,
    /// The accepted quote.
    pub price: Money,
    /// Providers tried (1 = no failover).
    pub attempts: u32,
    /// The proof that was asked for, verified before the job settled.
    pub proof: Option<ProofAttachment>,
}

impl JobOutcome {
    /// The generated text, for text outputs.
    pub fn text(&self) -> Option<&str> {
        match &self.output {
            WireOutput::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Token counts as signed by the provider.
    pub fn usage(&self) -> Usage {
        self.signed.payload.usage
    }
}

/// What a streamed job reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A provider took the job.
    Assigned {
        /// Provider.
        provider: PeerId,
        /// Its accepted price.
        price: Money,
        /// Attempt number (1 for the first provider).
        attempt: u32,
    },
    /// Generated text.
    Token(String),
    /// The provider failed; tokens received so far are void and the job
    /// restarts on another provider (an `Assigned` follows).
    Failover {
        /// The provider that failed.
        from: PeerId,
        /// Why.
        reason: String,
    },
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody on the network serves the model.
    #[error("no provider serves model `{model}` (searched {waited_ms} ms); models on the network: {}", if .available.is_empty() { "none seen yet — check [node] bootstrap".to_string() } else { .available.join(", ") })]
    NoProviders {
        /// The model asked for.
        model: String,
        /// How long discovery ran.
        waited_ms: u64,
        /// Models other providers advertise.
        available: Vec<String>,
    },
    /// Every quote was above the budget (or in another currency).
    #[error("no quote within the budget of {budget}; cheapest seen: {}", .cheapest.as_ref().map(|m| format!("{} {} from {}", m.0.amount, m.0.currency, m.1)).unwrap_or_else(|| "none".into()))]
    OverBudget {
        /// The budget, with its currency if one was required.
        budget: String,
        /// Cheapest quote seen and its provider.
        cheapest: Option<(Money, PeerId)>,
    },
    /// No provider answered the quote request.
    #[error("no provider of `{model}` gave a quote: {}", .errors.join("; "))]
    NoQuotes {
        /// Model.
        model: String,
        /// One line per provider.
        errors: Vec<String>,
    },
    /// The job failed on every provider tried, or earlier.
    #[error("job {job_id} failed: {message}")]
    Failed {
        /// Job.
        job_id: String,
        /// The stored reason.
        message: String,
    },
    /// The provider refused the request itself (not a provider fault).
    #[error("provider {provider} rejected job {job_id}: {message}")]
    Rejected {
        /// Job.
        job_id: String,
        /// Provider.
        provider: PeerId,
        /// Its message.
        message: String,
    },
    /// No provider advertises proofs of the model in the asked system.
    #[error("no provider proves model `{model}` with `{system}` (searched {waited_ms} ms); providers of the model without that proof system: {others}")]
    NoProvers {
        /// The model asked for.
        model: String,
        /// The proof system asked for.
        system: String,
        /// How long discovery ran.
        waited_ms: u64,
        /// How many providers serve the model without that proof.
        others: usize,
    },
    /// The provider's proof did not verify; the job failed.
    #[error("job {job_id}: proof rejected: {reason} (provider {provider})")]
    ProofRejected {
        /// Job.
        job_id: String,
        /// Provider.
        provider: String,
        /// Which check failed.
        reason: String,
    },
    /// No such job in this node's store.
    #[error("no client job {0} in this node's store")]
    UnknownJob(String),
    /// The store failed.
    #[error("job store: {0}")]
    Store(#[from] StoreError),
    /// This node's network is down.
    #[error("network: {0}")]
    Network(NetworkError),
    /// A stored row could not be read back (a bug or a hand-edited database).
    #[error("job {job_id} is unreadable: {reason}")]
    Corrupt {
        /// Job.
        job_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A blocking worker panicked.
    #[error("worker task: {0}")]
    Worker(String),
}

/// A failure of one step, sorted by whose fault it is.
enum StepError {
    /// The provider failed: try another.
    Provider(String),
    /// Nothing another provider could fix.
    Fatal(ClientError),
}

impl From<ClientError> for StepError {
    fn from(e: ClientError) -> Self {
        StepError::Fatal(e)
    }
}

/// The provider chosen for an attempt.
struct Pick {
    provider: PeerId,
    quote: QuoteRecord,
    /// This client's slot at the provider, released on drop.
    slot: InFlight,
}

/// One of this client's jobs at a provider (load for selection).
struct InFlight {
    peer: PeerId,
    table: Arc<Mutex<HashMap<PeerId, u32>>>,
}

impl InFlight {
    fn take(table: &Arc<Mutex<HashMap<PeerId, u32>>>, peer: PeerId) -> InFlight {
        if let Ok(mut t) = table.lock() {
            *t.entry(peer).or_default() += 1;
        }
        InFlight {
            peer,
            table: table.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            if let Some(n) = t.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// Drives client jobs over a node's network. Cheap to clone.
#[derive(Clone)]
pub struct JobClient {
    inner: Arc<Inner>,
}

struct Inner {
    net: NetworkHandle,
    store: Arc<Store>,
    key: Keypair,
    cfg: ClientConfig,
    in_flight: Arc<Mutex<HashMap<PeerId, u32>>>,
    /// Recent provider lookups by model.
    providers: Mutex<HashMap<String, (Instant, Vec<ProviderInfo>)>>,
}

type Events = mpsc::UnboundedSender<StreamEvent>;

/// A streamed job: events while it runs, then its outcome.
pub struct JobStream {
    /// The client-side job id.
    pub job_id: String,
    events: mpsc::UnboundedReceiver<StreamEvent>,
    outcome: tokio::task::JoinHandle<Result<JobOutcome, ClientError>>,
}

impl JobStream {
    /// The next event, or `None` once the job has ended.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        self.events.recv().await
    }

    /// Waits for the job's end (remaining events are dropped).
    pub async fn finish(self) -> Result<JobOutcome, ClientError> {
        self.outcome
            .await
            .map_err(|e| ClientError::Worker(e.to_string()))?
    }
}

impl JobClient {
    /// A client submitting jobs over `net`, recording them in `store` and
    /// signing receipts with `key` (the node's identity).
    pub fn new(
        net: NetworkHandle,
        store: Arc<Store>,
        key: Keypair,
        cfg: ClientConfig,
    ) -> JobClient {
        JobClient {
            inner: Arc::new(Inner {
                net,
                store,
                key,
                cfg,
                in_flight: Arc::new(Mutex::new(HashMap::new())),
                providers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs a job on the network and returns its outcome.
    pub async fn submit(
        &self,
        model: &str,
        input: WireInput,
        opts: &InferOptions,
    ) -> Result<JobOutcome, ClientError> {
        let id = self.create(model, input, opts).await?;
        self.inner.drive(&id, None).await
    }

    /// Like [`JobClient::submit`], reporting tokens and provider changes
    /// as they happen.
    pub async fn submit_streaming(
        &self,
        model: &str,
        input: WireInput,
        opts: &InferOptions,
    ) -> Result<JobStream, ClientError> {
        let job_id = self.create(model, input, opts).await?;
        let (tx, events) = mpsc::unbounded_channel();
        let inner = self.inner.clone();
        let id = job_id.clone();
        let outcome = tokio::spawn(async move { inner.drive(&id, Some(&tx)).await });
        Ok(JobStream {
            job_id,
            events,
            outcome,
        })
    }

    /// Drives an existing job (a resumed one) to its end.
    pub async fn resume(&self, job_id: &str) -> Result<JobOutcome, ClientError> {
        self.inner.drive(job_id, None).await
    }

    /// Every unfinished client job in the store, oldest first: what a
    /// restarted node must resume.
    pub async fn unfinished(&self) -> Result<Vec<String>, ClientError> {
        let records = self.inner.db(|s| Ok(s.jobs().active()?)).await?;
        Ok(records
            .into_iter()
            .filter(|r| r.role == JobRole::Client)
            .map(|r| r.id)
            .collect())
    }

    /// Cancels a job: it ends `failed` (reason "cancelled by the client")
    /// unless it already delivered, and its provider is told. A driver
    /// still running it stops at its next step.
    pub async fn cancel(&self, job_id: &str) -> Result<(), ClientError> {
        let id = job_id.to_string();
        let record = self
            .inner
            .db(move |s| {
                let r = s
                    .jobs()
                    .get(&id)?
                    .ok_or(ClientError::UnknownJob(id.clone()))?;
                if JobState::can_transition(r.state, JobState::Failed)
                    && r.state < JobState::Delivered
                {
                    let update = JobUpdate {
                        error: Some("cancelled by the client".into()),
                        ..JobUpdate::default()
                    };
                    s.jobs().transition_with(
                        &id,
                        r.state,
                        JobState::Failed,
                        "cancelled",
                        &update,
                    )?;
                }
                Ok(r)
            })
            .await?;
        if let Some(peer) = record.provider_peer.as_deref().and_then(|p| p.parse().ok()) {
            let msg = JobMessage::new(JobBody::Cancel {
                job_id: wire_id(&record),
                reason: "cancelled by the client".into(),
            });
            let _ = tokio::time::timeout(
                self.inner.step_timeout(),
                self.inner.net.send_job(peer, msg),
            )
            .await;
        }
        Ok(())
    }

    async fn create(
        &self,
        model: &str,
        input: WireInput,
        opts: &InferOptions,
    ) -> Result<String, ClientError> {
        let params = opts.backend_params();
        let request = StoredRequest {
            model: model.to_string(),
            max_output_tokens: opts.max_tokens.unwrap_or(256),
            input,
            params,
            max_budget: opts.max_budget,
            currency: opts.currency.clone(),
            proof: opts.proof.clone(),
        };
        let job = NewJob {
            id: crate::node::new_job_id(),
            role: JobRole::Client,
            model: model.to_string(),
            request_hash: hash_value(&(&request.model, &request.input, &request.params)),
            request: Some(
                serde_json::to_value(&request).map_err(|e| ClientError::Corrupt {
                    job_id: String::new(),
                    reason: e.to_string(),
                })?,
            ),
            client_peer: Some(self.inner.net.peer_id().to_string()),
            provider_peer: None,
        };
        let id = job.id.clone();
        self.inner.db(move |s| Ok(s.jobs().insert(&job)?)).await?;
        crash_point(JobState::Created);
        Ok(id)
    }
}

/// Fault injection for the crash tests: with `INFERNET_CRASH_AFTER=<state>`
/// set, the process aborts right after a client job's move to that state is
/// committed — the same as being killed there.
fn crash_point(state: JobState) {
    if std::env::var("INFERNET_CRASH_AFTER").is_ok_and(|s| s == state.as_str()) {
        tracing::error!(%state, "INFERNET_CRASH_AFTER: aborting on purpose");
        std::process::abort();
    }
}

/// The wire job id of the record's current attempt: `<id>.<attempt>`.
fn wire_id(record: &JobRecord) -> String {
    format!("{}.{}", record.id, record.attempts)
}

/// Providers this job already gave up on, from its event log.
fn failed_providers(events: &[crate::store::JobEvent]) -> HashSet<PeerId> {
    events
        .iter()
        .filter_map(|e| e.detail.as_deref()?.strip_prefix(PROVIDER_FAILED))
        .filter_map(|rest| rest.split(':').next()?.trim().parse().ok())
        .collect()
}

impl Inner {
    fn step_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.step_timeout_ms)
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, ClientError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ClientError::Worker(e.to_string()))?
    }

    async fn record(&self, id: &str) -> Result<JobRecord, ClientError> {
        let id = id.to_string();
        self.db(move |s| s.jobs().get(&id)?.ok_or(ClientError::UnknownJob(id)))
            .await
    }

    /// Persists `from -> to`. A conflict (the job moved on, e.g. cancelled)
    /// is not an error: the driver re-reads the row.
    async fn advance(
        &self,
        id: &str,
        from: JobState,
        to: JobState,
        detail: String,
        update: JobUpdate,
    ) -> Result<(), ClientError> {
        let id = id.to_string();
        self.db(
            move |s| match s.jobs().transition_with(&id, from, to, &detail, &update) {
                Ok(()) => {
                    crash_point(to);
                    Ok(())
                }
                Err(StoreError::StateConflict { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
        )
        .await
    }

    /// Several steps in one transaction (see [`advance`](Self::advance)).
    async fn advance_path(
        &self,
        id: &str,
        steps: Vec<(JobState, JobState, String)>,
    ) -> Result<(), ClientError> {
        let id = id.to_string();
        self.db(move |s| {
            let steps: Vec<(JobState, JobState, &str)> =
                steps.iter().map(|(f, t, d)| (*f, *t, d.as_str())).collect();
            match s.jobs().transition_path(&id, &steps) {
                Ok(()) => {
                    steps.iter().for_each(|(_, to, _)| crash_point(*to));
                    Ok(())
                }
                Err(StoreError::StateConflict { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn fail(&self, record: &JobRecord, message: String) -> Result<(), ClientError> {
        let update = JobUpdate {
            error: Some(message.clone()),
            ..JobUpdate::default()
        };
        self.advance(&record.id, record.state, JobState::Failed, message, update)
            .await
    }

    /// The lifecycle loop: one persisted step per turn until the job is
    /// settled or failed.
    async fn drive(&self, id: &str, events: Option<&Events>) -> Result<JobOutcome, ClientError> {
        let job_id = id.to_string();
        let mut excluded = self
            .db(move |s| Ok(failed_providers(&s.jobs().events(&job_id)?)))
            .await?;
        let mut slot: Option<InFlight> = None;
        loop {
            let rec = self.record(id).await?;
            let req = stored_request(&rec)?;
            let provider: Option<PeerId> =
                rec.provider_peer.as_deref().and_then(|p| p.parse().ok());
            if let (Some(p), None) = (provider, &slot) {
                if rec.state.is_active() && rec.state < JobState::Delivered {
                    slot = Some(InFlight::take(&self.in_flight, p));
                }
            }
            match rec.state {
                JobState::Created => match self.choose(&rec, &req, &excluded).await {
                    Ok(pick) => {
                        let update = JobUpdate {
                            provider_peer: Some(pick.provider.to_string()),
                            quote_id: Some(pick.quote.id.clone()),
                            bump_attempts: true,
                            ..JobUpdate::default()
                        };
                        let detail = format!(
                            "provider {} at {} {}",
                            pick.provider, pick.quote.price, pick.quote.currency
                        );
                        self.advance(id, JobState::Created, JobState::Quoted, detail, update)
                            .await?;
                        slot = Some(pick.slot);
                    }
                    Err(e) => {
                        self.fail(&rec, e.to_string()).await?;
                        return Err(e);
                    }
                },
                JobState::Quoted => {
                    let Some(provider) = provider.filter(|p| !excluded.contains(p)) else {
                        slot = None;
                        self.reassign(&rec, &req, &excluded, &mut slot).await?;
                        continue;
                    };
                    if let Some(tx) = events {
                        let price = self.price_of(&rec).await?;
                        let _ = tx.send(StreamEvent::Assigned {
                            provider,
                            price,
                            attempt: rec.attempts as u32,
                        });
                    }
                    let accept = JobMessage::new(JobBody::Accept {
                        job_id: wire_id(&rec),
                        quote_id: rec.quote_id.clone().unwrap_or_default(),
                        escrow_ref: None,
                    });
                    match self.exchange(provider, accept, self.step_timeout()).await {
                        Ok(JobBody::Ack { .. }) => {
                            // No escrow to confirm yet (the payments seam), so
                            // escrowed -> assigned -> running commit together.
                            let run = format!("run sent as {}", wire_id(&rec));
                            self.advance_path(
                                id,
                                vec![
                                    (
                                        JobState::Quoted,
                                        JobState::Escrowed,
                                        "no escrow: payments are not wired in yet".into(),
                                    ),
                                    (
                                        JobState::Escrowed,
                                        JobState::Assigned,
                                        "escrow confirmed (none held)".into(),
                                    ),
                                    (JobState::Assigned, JobState::Running, run),
                                ],
                            )
                            .await?;
                        }
                        Ok(other) => {
                            let reason =
                                format!("unexpected reply to accept: {}", body_name(&other));
                            self.provider_failed(&rec, provider, &reason, events, &mut excluded)
                                .await?;
                            slot = None;
                            self.reassign(&rec, &req, &excluded, &mut slot).await?;
                        }
                        Err(StepError::Provider(_)) if self.moved_on(&rec).await? => {}
                        Err(StepError::Provider(reason)) => {
                            self.provider_failed(&rec, provider, &reason, events, &mut excluded)
                                .await?;
                            slot = None;
                            self.reassign(&rec, &req, &excluded, &mut slot).await?;
                        }
                        Err(StepError::Fatal(e)) => {
                            self.fail(&rec, e.to_string()).await?;
                            return Err(e);
                        }
                    }
                }
                JobState::Escrowed => {
                    self.advance(
                        id,
                        JobState::Escrowed,
                        JobState::Assigned,
                        "escrow confirmed (none held)".into(),
                        JobUpdate::default(),
                    )
                    .await?;
                }
                JobState::Assigned => {
                    self.advance(
                        id,
                        JobState::Assigned,
                        JobState::Running,
                        format!("run sent as {}", wire_id(&rec)),
                        JobUpdate::default(),
                    )
                    .await?;
                }
                JobState::Running => {
                    let Some(provider) = provider else {
                        return Err(ClientError::Corrupt {
                            job_id: id.into(),
                            reason: "running without a provider".into(),
                        });
                    };
                    match self.run(&rec, &req, provider, events).await {
                        Ok((output, signed, proof)) => {
                            let expect = match &req.proof {
                                Some(system) => {
                                    self.advertised_proof(provider, &req.model, system).await
                                }
                                None => None,
                            };
                            let mut stored = stored_result(&output, &signed)?;
                            add_proof(&mut stored, proof.as_deref(), expect.as_ref()).map_err(
                                |e| ClientError::Corrupt {
                                    job_id: rec.id.clone(),
                                    reason: e.to_string(),
                                },
                            )?;
                            let update = JobUpdate {
                                result: Some(stored),
                                ..JobUpdate::default()
                            };
                            self.advance(
                                id,
                                JobState::Running,
                                JobState::Delivered,
                                format!("result from {provider}"),
                                update,
                            )
                            .await?;
                        }
                        Err(StepError::Provider(_)) if self.moved_on(&rec).await? => {}
                        Err(StepError::Provider(reason)) => {
                            self.provider_failed(&rec, provider, &reason, events, &mut excluded)
                                .await?;
                            slot = None;
                            let detail = format!("{PROVIDER_FAILED}{provider}: {reason}");
                            self.advance(
                                id,
                                JobState::Running,
                                JobState::Quoted,
                                detail,
                                JobUpdate::default(),
                            )
                            .await?;
                        }
                        Err(StepError::Fatal(e)) => {
                            self.fail(&rec, e.to_string()).await?;
                            return Err(e);
                        }
                    }
                }
                JobState::Delivered if req.proof.is_some() => {
                    slot = None;
                    let outcome = self.outcome(&rec).await?;
                    let checked = self.check_proof(&rec, &req, &outcome).await?;
                    match checked {
                        Ok(vk_id) => {
                            let mut stored = rec.result.clone().unwrap_or_default();
                            if let Some(p) = stored.get_mut("proof") {
                                p["verified_vk_id"] = serde_json::Value::String(vk_id.clone());
                            }
                            let system = req.proof.clone().unwrap_or_default();
                            self.advance(
                                id,
                                JobState::Delivered,
                                JobState::Verified,
                                format!("proof verified: {system}, vk {vk_id}"),
                                JobUpdate {
                                    result: Some(stored),
                                    ..JobUpdate::default()
                                },
                            )
                            .await?;
                        }
                        Err(reason) => {
                            tracing::warn!(job = %id, provider = %outcome.provider, %reason, "proof rejected");
                            let peer = outcome.provider.to_string();
                            self.db(move |s| Ok(s.peers().record_outcome(&peer, false)?))
                                .await?;
                            let e = ClientError::ProofRejected {
                                job_id: id.into(),
                                provider: outcome.provider.to_string(),
                                reason,
                            };
                            self.fail(&rec, e.to_string()).await?;
                            return Err(e);
                        }
                    }
                }
                JobState::Delivered | JobState::Verified => {
                    slot = None;
                    let outcome = self.outcome(&rec).await?;
                    self.send_receipt(&rec, &outcome);
                    let peer = outcome.provider.to_string();
                    self.db(move |s| Ok(s.peers().record_outcome(&peer, true)?))
                        .await?;
                    let verification = if rec.state == JobState::Verified {
                        "verification: proof checked; payment: none"
                    } else {
                        "verification: none; payment: none"
                    };
                    self.advance(
                        id,
                        rec.state,
                        JobState::Settled,
                        verification.into(),
                        JobUpdate::default(),
                    )
                    .await?;
                }
                JobState::Settled => return self.outcome(&rec).await,
                JobState::Failed | JobState::Refunded => {
                    return Err(ClientError::Failed {
                        job_id: id.into(),
                        message: rec.error.unwrap_or_else(|| "failed".into()),
                    })
                }
                other => {
                    return Err(ClientError::Corrupt {
                        job_id: id.into(),
                        reason: format!("a client job cannot be `{other}` yet"),
                    })
                }
            }
        }
    }

    /// The job left `rec.state` while a step ran (cancelled): the step's
    /// failure is not the provider's.
    async fn moved_on(&self, rec: &JobRecord) -> Result<bool, ClientError> {
        Ok(self.record(&rec.id).await?.state != rec.state)
    }

    /// Records a provider failure for this job (event log via the caller's
    /// transition, reputation, stream event).
    async fn provider_failed(
        &self,
        rec: &JobRecord,
        provider: PeerId,
        reason: &str,
        events: Option<&Events>,
        excluded: &mut HashSet<PeerId>,
    ) -> Result<(), ClientError> {
        tracing::warn!(job = %rec.id, %provider, reason, "provider failed; failing over");
        excluded.insert(provider);
        let peer = provider.to_string();
        self.db(move |s| Ok(s.peers().record_outcome(&peer, false)?))
            .await?;
        if let Some(tx) = events {
            let _ = tx.send(StreamEvent::Failover {
                from: provider,
                reason: reason.to_string(),
            });
        }
        Ok(())
    }

    /// Picks a new provider for a job in `quoted` (or fails the job).
    async fn reassign(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        excluded: &HashSet<PeerId>,
        slot: &mut Option<InFlight>,
    ) -> Result<(), ClientError> {
        match self.choose(rec, req, excluded).await {
            Ok(pick) => {
                let (id, peer, quote) = (
                    rec.id.clone(),
                    pick.provider.to_string(),
                    pick.quote.id.clone(),
                );
                let failed: Vec<String> = excluded.iter().map(|p| p.to_string()).collect();
                let detail = match rec.provider_peer.as_deref() {
                    Some(old) if failed.iter().any(|f| f == old) => {
                        format!("{PROVIDER_FAILED}{old}: reassigned to {peer}")
                    }
                    _ => format!("reassigned to {peer}"),
                };
                self.db(move |s| {
                    match s
                        .jobs()
                        .reassign(&id, JobState::Quoted, &peer, &quote, &detail)
                    {
                        Ok(()) | Err(StoreError::StateConflict { .. }) => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                })
                .await?;
                *slot = Some(pick.slot);
                Ok(())
            }
            Err(e) => {
                self.fail(rec, e.to_string()).await?;
                Err(e)
            }
        }
    }

    /// Finds providers, asks the best-ranked for quotes, and picks one
    /// within budget.
    async fn choose(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        excluded: &HashSet<PeerId>,
    ) -> Result<Pick, ClientError> {
        if rec.attempts >= i64::from(self.cfg.max_attempts) {
            return Err(ClientError::Failed {
                job_id: rec.id.clone(),
                message: format!(
                    "gave up after {} providers (client.max_attempts); last: {}",
                    rec.attempts,
                    rec.error
                        .clone()
                        .unwrap_or_else(|| "see `infernet jobs --json`".into())
                ),
            });
        }
        let providers = self
            .discover(&req.model, req.proof.as_deref(), excluded)
            .await?;
        let peers: Vec<PeerId> = providers.iter().map(|p| p.peer_id).collect();
        let reputations = self
            .db(move |s| {
                peers
                    .iter()
                    .map(|p| Ok(s.peers().get(&p.to_string())?.map_or(0.5, |r| r.reputation)))
                    .collect::<Result<Vec<f64>, ClientError>>()
            })
            .await?;
        let candidates: Vec<Candidate> = providers
            .iter()
            .enumerate()
            .map(|(i, p)| Candidate {
                index: i,
                price: p.advert.as_ref().map_or(0, |a| a.quote.amount),
                reputation: reputations[i],
                latency: p.latency,
                in_flight: self.load(&p.peer_id),
                capacity: p.advert.as_ref().map_or(0, |a| a.capacity),
            })
            .collect();
        let asked: Vec<usize> = rank(&candidates, &self.cfg.weights)
            .into_iter()
            .take(self.cfg.quote_fanout as usize)
            .map(|(i, _)| i)
            .collect();
        let input_tokens = estimate_tokens(&req.input);
        let quote_timeout = Duration::from_millis(self.cfg.quote_timeout_ms);
        let requests = asked.iter().map(|&i| {
            let peer = providers[i].peer_id;
            let msg = JobMessage::new(JobBody::QuoteRequest {
                job_id: rec.id.clone(),
                model: req.model.clone(),
                input_tokens,
                max_output_tokens: req.max_output_tokens,
                params: req.params.clone(),
            });
            async move { (i, self.exchange(peer, msg, quote_timeout).await) }
        });
        let replies = futures::future::join_all(requests).await;
        let mut errors = Vec::new();
        let mut quotes: Vec<(usize, QuoteRecord)> = Vec::new();
        for (i, reply) in replies {
            let peer = providers[i].peer_id;
            match reply {
                Ok(JobBody::QuoteOffer {
                    quote_id,
                    price,
                    breakdown,
                    valid_until_ms,
                    ..
                }) => quotes.push((
                    i,
                    QuoteRecord {
                        id: quote_id,
                        job_id: rec.id.clone(),
                        provider_peer: peer.to_string(),
                        model: req.model.clone(),
                        price: price.amount,
                        currency: price.currency,
                        breakdown,
                        expires_at_ms: i64::try_from(valid_until_ms).unwrap_or(i64::MAX),
                        accepted: false,
                        created_at_ms: crate::store::now_ms(),
                    },
                )),
                Ok(other) => errors.push(format!("{peer}: unexpected reply {}", body_name(&other))),
                Err(StepError::Provider(reason)) => errors.push(format!("{peer}: {reason}")),
                Err(StepError::Fatal(e)) => return Err(e),
            }
        }
        let records: Vec<QuoteRecord> = quotes.iter().map(|q| q.1.clone()).collect();
        self.db(move |s| {
            for q in &records {
                if let Err(e) = s.quotes().insert(q) {
                    tracing::debug!(quote = %q.id, error = %e, "quote not recorded");
                }
            }
            Ok(())
        })
        .await?;
        if quotes.is_empty() {
            return Err(ClientError::NoQuotes {
                model: req.model.clone(),
                errors,
            });
        }
        let cheapest = quotes.iter().min_by_key(|q| q.1.price).map(|(i, q)| {
            (
                Money {
                    amount: q.price,
                    currency: q.currency.clone(),
                },
                providers[*i].peer_id,
            )
        });
        quotes.retain(|(_, q)| {
            req.max_budget.is_none_or(|b| q.price <= b)
                && req.currency.as_ref().is_none_or(|c| *c == q.currency)
        });
        if quotes.is_empty() {
            let budget = match (&req.max_budget, &req.currency) {
                (Some(b), Some(c)) => format!("{b} {c}"),
                (Some(b), None) => b.to_string(),
                (None, Some(c)) => format!("any amount in {c}"),
                (None, None) => "none".into(),
            };
            return Err(ClientError::OverBudget { budget, cheapest });
        }
        // Rank again on real prices and current load; take the slot under
        // the lock so concurrent jobs see each other's choices.
        let (i, quote) = {
            let mut table = self
                .in_flight
                .lock()
                .map_err(|_| ClientError::Worker("in-flight table poisoned".into()))?;
            let final_candidates: Vec<Candidate> = quotes
                .iter()
                .enumerate()
                .map(|(k, (i, q))| Candidate {
                    index: k,
                    price: q.price,
                    reputation: reputations[*i],
                    latency: providers[*i].latency,
                    in_flight: table.get(&providers[*i].peer_id).copied().unwrap_or(0),
                    capacity: providers[*i].advert.as_ref().map_or(0, |a| a.capacity),
                })
                .collect();
            let best = rank(&final_candidates, &self.cfg.weights)[0].0;
            let picked = quotes.swap_remove(best);
            *table.entry(providers[picked.0].peer_id).or_default() += 1;
            picked
        };
        let provider = providers[i].peer_id;
        let slot = InFlight {
            peer: provider,
            table: self.in_flight.clone(),
        };
        let (job, qid) = (rec.id.clone(), quote.id.clone());
        self.db(move |s| Ok(s.quotes().accept(&job, &qid)?)).await?;
        Ok(Pick {
            provider,
            quote,
            slot,
        })
    }

    fn load(&self, peer: &PeerId) -> u32 {
        self.in_flight
            .lock()
            .ok()
            .and_then(|t| t.get(peer).copied())
            .unwrap_or(0)
    }

    /// Providers of `model` not in `excluded`, waiting up to the discovery
    /// timeout for at least one.
    async fn discover(
        &self,
        model: &str,
        proof: Option<&str>,
        excluded: &HashSet<PeerId>,
    ) -> Result<Vec<ProviderInfo>, ClientError> {
        let proves = |p: &ProviderInfo| {
            proof.is_none_or(|system| {
                p.advert
                    .as_ref()
                    .is_some_and(|a| a.proof_for(model, system).is_some())
            })
        };
        let usable = |all: &[ProviderInfo]| -> Vec<ProviderInfo> {
            all.iter()
                .filter(|p| !excluded.contains(&p.peer_id) && proves(p))
                .cloned()
                .collect()
        };
        let cached = self.providers.lock().ok().and_then(|c| {
            c.get(model)
                .filter(|(at, _)| at.elapsed() < PROVIDER_CACHE_TTL)
                .map(|(_, all)| usable(all))
        });
        if let Some(found) = cached.filter(|f| !f.is_empty()) {
            return Ok(found);
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.cfg.discovery_timeout_ms);
        loop {
            let all = self
                .net
                .providers_of(model)
                .await
                .map_err(ClientError::Network)?;
            let found = usable(&all);
            if !found.is_empty() {
                if let Ok(mut c) = self.providers.lock() {
                    c.insert(model.to_string(), (Instant::now(), all));
                }
                return Ok(found);
            }
            if Instant::now() >= deadline {
                if let (Some(system), false) = (proof, all.is_empty()) {
                    return Err(ClientError::NoProvers {
                        model: model.into(),
                        system: system.into(),
                        waited_ms: started.elapsed().as_millis() as u64,
                        others: all.len(),
                    });
                }
                let mut available: Vec<String> = self
                    .net
                    .adverts()
                    .await
                    .map_err(ClientError::Network)?
                    .into_iter()
                    .flat_map(|a| a.models)
                    .collect();
                available.sort();
                available.dedup();
                return Err(ClientError::NoProviders {
                    model: model.into(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    available,
                });
            }
            tokio::time::sleep(DISCOVERY_RETRY).await;
        }
    }

    /// One request/response with a bound; sorts failures by fault.
    async fn exchange(
        &self,
        peer: PeerId,
        msg: JobMessage,
        bound: Duration,
    ) -> Result<JobBody, StepError> {
        match tokio::time::timeout(bound, self.net.send_job(peer, msg)).await {
            Err(_) => Err(StepError::Provider(format!(
                "no reply within {} ms",
                bound.as_millis()
            ))),
            Ok(Err(NetworkError::Closed)) => {
                Err(StepError::Fatal(ClientError::Network(NetworkError::Closed)))
            }
            Ok(Err(e)) => Err(StepError::Provider(e.to_string())),
            Ok(Ok(reply)) => match reply.body {
                JobBody::Error(e) => Err(classify(peer, e)),
                body => Ok(body),
            },
        }
    }

    /// Sends `Run` and waits for the signed result, streaming or polling.
    async fn run(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        provider: PeerId,
        events: Option<&Events>,
    ) -> Result<(WireOutput, SignedResult, Option<Box<ProofAttachment>>), StepError> {
        let job_id = wire_id(rec);
        let deadline = Instant::now() + Duration::from_millis(self.cfg.run_timeout_ms);
        let msg = JobMessage::new(JobBody::Run {
            job_id: job_id.clone(),
            model: req.model.clone(),
            input: req.input.clone(),
            params: req.params.clone(),
            stream: events.is_some(),
            proof: req.proof.clone(),
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let mut after_seq = 0;
        let mut reply = self.exchange(provider, msg, left).await;
        loop {
            match reply {
                Ok(JobBody::Result {
                    output,
                    signed,
                    proof,
                }) => {
                    let p = &signed.payload;
                    if p.job_id != job_id
                        || p.model_id != req.model
                        || p.client.as_deref() != Some(&self.net.peer_id().to_string())
                    {
                        return Err(StepError::Provider(format!(
                            "signed result names job {} / model {} / client {:?}, not this job",
                            p.job_id, p.model_id, p.client
                        )));
                    }
                    return Ok((output, signed, proof));
                }
                Ok(JobBody::Progress { seq, chunks, .. }) => {
                    if let Some(tx) = events {
                        for c in chunks {
                            let _ = tx.send(StreamEvent::Token(c));
                        }
                    }
                    after_seq = seq;
                }
                // Ack: a streamed run started. Busy: it was already running
                // (a resumed job). Either way, poll.
                Ok(JobBody::Ack { .. }) => {}
                Err(StepError::Provider(ref m)) if m.starts_with(BUSY_PREFIX) => {
                    tokio::time::sleep(BUSY_POLL).await;
                }
                Ok(other) => {
                    return Err(StepError::Provider(format!(
                        "unexpected reply to run: {}",
                        body_name(&other)
                    )))
                }
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StepError::Provider(format!(
                    "no result within client.run_timeout_ms = {}",
                    self.cfg.run_timeout_ms
                )));
            }
            let poll = JobMessage::new(JobBody::Poll {
                job_id: job_id.clone(),
                after_seq,
            });
            reply = self
                .exchange(
                    provider,
                    poll,
                    left.min(self.step_timeout() + Duration::from_secs(1)),
                )
                .await;
        }
    }

    async fn price_of(&self, rec: &JobRecord) -> Result<Money, ClientError> {
        let qid = rec.quote_id.clone().unwrap_or_default();
        let q = self.db(move |s| Ok(s.quotes().get(&qid)?)).await?;
        Ok(q.map(|q| Money {
            amount: q.price,
            currency: q.currency,
        })
        .unwrap_or(Money {
            amount: 0,
            currency: String::new(),
        }))
    }

    async fn outcome(&self, rec: &JobRecord) -> Result<JobOutcome, ClientError> {
        let corrupt = |reason: &str| ClientError::Corrupt {
            job_id: rec.id.clone(),
            reason: reason.into(),
        };
        let stored = rec
            .result
            .as_ref()
            .ok_or_else(|| corrupt("no stored result"))?;
        let field = |name: &str| {
            stored
                .get(name)
                .and_then(|v| v.as_str())
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| corrupt(&format!("result field `{name}` missing")))
        };
        let output: WireOutput =
            decode(&field("output_cbor")?).map_err(|e| corrupt(&e.to_string()))?;
        let signed: SignedResult =
            decode(&field("signed_cbor")?).map_err(|e| corrupt(&e.to_string()))?;
        let provider = signed
            .verify_output(&output)
            .map_err(|e| corrupt(&e.to_string()))?;
        let proof = match stored
            .get("proof")
            .and_then(|p| p.get("attachment_cbor"))
            .and_then(|v| v.as_str())
        {
            Some(h) => Some(
                hex::decode(h)
                    .ok()
                    .and_then(|b| decode::<ProofAttachment>(&b).ok())
                    .ok_or_else(|| corrupt("stored proof unreadable"))?,
            ),
            None => None,
        };
        Ok(JobOutcome {
            job_id: rec.id.clone(),
            output,
            signed,
            provider,
            price: self.price_of(rec).await?,
            attempts: rec.attempts.max(0) as u32,
            proof,
        })
    }

    /// The provider's advertised proof entry for `model` in `system`, from
    /// its latest advert.
    async fn advertised_proof(
        &self,
        provider: PeerId,
        model: &str,
        system: &str,
    ) -> Option<ProofAdvert> {
        let peer = provider.to_string();
        let adverts = self.net.adverts().await.ok()?;
        adverts
            .iter()
            .filter(|a| a.peer_id == peer)
            .find_map(|a| a.proof_for(model, system).cloned())
    }

    /// Checks the stored proof of a delivered job (on a blocking worker):
    /// `Ok(Ok(vk id))` when it verifies, `Ok(Err(reason))` when it does not.
    async fn check_proof(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        outcome: &JobOutcome,
    ) -> Result<Result<String, String>, ClientError> {
        let system = req.proof.clone().unwrap_or_default();
        let expect: Option<ProofAdvert> = rec
            .result
            .as_ref()
            .and_then(|r| r.get("proof"))
            .and_then(|p| p.get("expected"))
            .and_then(|e| serde_json::from_value(e.clone()).ok());
        let Some(expect) = expect else {
            return Ok(Err(format!(
                "provider's advert lists no `{system}` verifying key for model `{}`",
                req.model
            )));
        };
        let Some(proof) = outcome.proof.clone() else {
            return Ok(Err(format!("no `{system}` proof attached to the result")));
        };
        let (input, output, signed) = (
            req.input.clone(),
            outcome.output.clone(),
            outcome.signed.clone(),
        );
        tokio::task::spawn_blocking(move || {
            verify_proof(&system, &expect, &input, &output, &signed, &proof)
        })
        .await
        .map_err(|e| ClientError::Worker(e.to_string()))
    }

    /// Tells the provider the result was accepted, in the background. Best
    /// effort: a lost receipt costs the provider a record, not the client
    /// its result.
    fn send_receipt(&self, rec: &JobRecord, outcome: &JobOutcome) {
        let body = ReceiptBody {
            job_id: outcome.signed.payload.job_id.clone(),
            output_hash: outcome.signed.payload.output_hash.clone(),
            client: self.net.peer_id().to_string(),
            provider: outcome.provider.to_string(),
            accepted: true,
            timestamp_ms: now_ms(),
        };
        let receipt = match SignedReceipt::sign(body, &self.key) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %rec.id, error = %e, "cannot sign receipt");
                return;
            }
        };
        let msg = JobMessage::new(JobBody::Receipt(receipt));
        let (net, peer, bound, job) = (
            self.net.clone(),
            outcome.provider,
            self.step_timeout(),
            rec.id.clone(),
        );
        tokio::spawn(async move {
            match tokio::time::timeout(bound, net.send_job(peer, msg)).await {
                Ok(Ok(reply)) if matches!(reply.body, JobBody::Ack { .. }) => {}
                other => {
                    tracing::debug!(%job, reply = ?other.map(|r| r.map(|m| m.body)), "receipt not acknowledged")
                }
            }
        });
    }
}

const BUSY_PREFIX: &str = "busy: ";

/// A provider's `Error` reply, sorted by fault.
fn classify(peer: PeerId, e: WireError) -> StepError {
    match e.code {
        ErrorCode::Busy => StepError::Provider(format!("{BUSY_PREFIX}{}", e.message)),
        ErrorCode::InvalidRequest | ErrorCode::Cancelled => {
            StepError::Fatal(ClientError::Rejected {
                job_id: e.job_id.unwrap_or_default(),
                provider: peer,
                message: e.message,
            })
        }
        code => StepError::Provider(format!("{code:?}: {}", e.message)),
    }
}

fn body_name(body: &JobBody) -> &'static str {
    match body {
        JobBody::QuoteRequest { .. } => "QuoteRequest",
        JobBody::QuoteOffer { .. } => "QuoteOffer",
        JobBody::Accept { .. } => "Accept",
        JobBody::Run { .. } => "Run",
        JobBody::Poll { .. } => "Poll",
        JobBody::Progress { .. } => "Progress",
        JobBody::Result { .. } => "Result",
        JobBody::Receipt(_) => "Receipt",
        JobBody::Ack { .. } => "Ack",
        JobBody::Cancel { .. } => "Cancel",
        JobBody::Error(_) => "Error",
    }
}

fn stored_request(rec: &JobRecord) -> Result<StoredRequest, ClientError> {
    rec.request
        .clone()
        .ok_or("no stored request")
        .and_then(|v| serde_json::from_value(v).map_err(|_| "stored request does not parse"))
        .map_err(|reason| ClientError::Corrupt {
            job_id: rec.id.clone(),
            reason: reason.into(),
        })
}

/// The delivered result as stored in the job row: CBOR (exact) as hex.
fn stored_result(
    output: &WireOutput,
    signed: &SignedResult,
) -> Result<serde_json::Value, ClientError> {
    let corrupt = |e: crate::p2p::protocol::CodecError| ClientError::Corrupt {
        job_id: signed.payload.job_id.clone(),
        reason: e.to_string(),
    };
    Ok(serde_json::json!({
        "provider": signed.payload.provider,
        "output_hash": signed.payload.output_hash,
        "output_cbor": hex::encode(encode(output).map_err(corrupt)?),
        "signed_cbor": hex::encode(encode(signed).map_err(corrupt)?),
    }))
}

/// Adds the proof (CBOR hex) and the advert entry it must match to the
/// stored result.
fn add_proof(
    stored: &mut serde_json::Value,
    proof: Option<&ProofAttachment>,
    expect: Option<&ProofAdvert>,
) -> Result<(), crate::p2p::protocol::CodecError> {
    if proof.is_none() && expect.is_none() {
        return Ok(());
    }
    let attachment = match proof {
        Some(p) => Some(hex::encode(encode(p)?)),
        None => None,
    };
    stored["proof"] = serde_json::json!({
        "attachment_cbor": attachment,
        "expected": expect,
    });
    Ok(())
}

/// Checks a result's proof against what the provider advertised: the
/// signed result covers the proof's hash, the verifying key is the
/// advertised one, and the Groth16 proof shows that the advertised model
/// commitment maps `input` to `output` (raw logits, or the class that is
/// their argmax). Returns the verifying key's id, or why the proof is
/// rejected.
pub fn verify_proof(
    system: &str,
    expect: &ProofAdvert,
    input: &WireInput,
    output: &WireOutput,
    signed: &SignedResult,
    proof: &ProofAttachment,
) -> Result<String, String> {
    use infernet_verifier::{
        Groth16Verifier, InputClaim, InputMode, MlpShape, ProofEnvelope, ProofVerifier, Statement,
    };
    if system != "groth16" || expect.system != system || proof.system != system {
        return Err(format!(
            "proof system `{}` (advertised `{}`), asked for `{system}`",
            proof.system, expect.system
        ));
    }
    if signed.payload.proof_hash.as_deref() != Some(hash_proof(proof).as_str()) {
        return Err("the signed result does not cover this proof (proof_hash differs)".into());
    }
    let shape = MlpShape {
        dims: expect.dims.iter().map(|&d| d as usize).collect(),
        shifts: expect.shifts.clone(),
        input_mode: InputMode::Public,
    };
    let verifier = Groth16Verifier::from_vk_bytes(shape, &proof.vk)
        .map_err(|e| format!("verifying key: {e}"))?;
    if verifier.vk_id() != expect.vk_id {
        return Err(format!(
            "verifying key {} is not the advertised {}",
            verifier.vk_id(),
            expect.vk_id
        ));
    }
    let envelope: ProofEnvelope =
        serde_json::from_slice(&proof.envelope).map_err(|e| format!("envelope: {e}"))?;
    if envelope.model_commitment != expect.model_commitment {
        return Err(format!(
            "model commitment {} is not the advertised {}",
            envelope.model_commitment, expect.model_commitment
        ));
    }
    let WireInput::Bytes(x) = input else {
        return Err("groth16 proofs are about bytes (int8) inputs".into());
    };
    let matches = match output {
        WireOutput::Bytes(b) => {
            super::provider::decode_logits(b).as_deref() == Some(&proof.logits[..])
        }
        WireOutput::Classes(c) => {
            !proof.logits.is_empty()
                && c.len() == 1
                && usize::try_from(c[0]).ok()
                    == Some(infernet_verifier::quant::argmax(&proof.logits))
        }
        _ => false,
    };
    if !matches {
        return Err("the returned output is not the proved output".into());
    }
    let statement = Statement {
        model_commitment: expect.model_commitment.clone(),
        input: InputClaim::Plain(x.iter().map(|&b| b as i8).collect()),
        output: proof.logits.clone(),
    };
    verifier
        .verify(&envelope, &statement)
        .map_err(|e| format!("groth16 verification failed: {e}"))?;
    Ok(verifier.vk_id().to_string())
}

/// A rough input size for the quote request (words for text).
fn estimate_tokens(input: &WireInput) -> u32 {
    let n = match input {
        WireInput::Text(t) => t.split_whitespace().count() + 1,
        WireInput::Texts(ts) => ts.iter().map(|t| t.split_whitespace().count() + 1).sum(),
        WireInput::Tokens(t) => t.len(),
        WireInput::Tensor(t) => t.data.len(),
        WireInput::Bytes(b) => b.len() / 4,
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}
