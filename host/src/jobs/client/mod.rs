//! The client side of `/infernet/job/2`: the lifecycle driver.
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
//! delivered (a held replica: wait here for the comparison)
//! delivered (proof asked for: verify it; replicas agreed)             -> verified
//! delivered | verified  Receipt, reputation +1                        -> settled
//! ```
//!
//! A job's verification policy ([`InferOptions::verify`], else the
//! config's `[verify] policy`) decides how many providers run it:
//! `replicate(k)` and a drawn `spot-check(p)` run it as k held jobs and
//! compare them (`verify.rs`); `proof(groth16)` is [`InferOptions::proof`].
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
//! A provider that asks to be paid before the run (its stake is held by an
//! arbiter this client trusts) gets its escrow released in `quoted`,
//! before `Accept`; when such a prepaid run then fails, the client claims
//! the result from the arbiter, which relays it or slashes the stake,
//! before the job fails over (`exchange.rs`).
//!
//! Every step is persisted before it is acted on, and every provider
//! request is idempotent on the provider (the wire job id `<id>.<attempt>`
//! names one execution), so a restarted client resumes any job from its
//! row without running it twice. A provider that fails, times out or
//! disappears is recorded (`provider-failed <peer>: <reason>` in the event
//! log, one reputation failure) and the job goes back to `quoted` with the
//! next-best provider, up to `client.max_attempts`.

use super::crash_at;
use super::select::{rank, Candidate};
use crate::config::{ClientConfig, VerifyConfig};
use crate::p2p::protocol::{
    decode, encode, hash_value, now_ms, Encoded, Money, ProofAdvert, ProofAttachment, ReceiptBody,
    SignedReceipt, SignedResult, Usage, WireError,
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
use std::path::PathBuf;
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
    /// Most the client pays, an exact amount in currency units
    /// (`Amount::parse("0.01", "USDC_SOL")`): only quotes in its currency,
    /// at or under it, are accepted.
    #[serde(default, with = "budget_serde")]
    pub max_budget: Option<Amount>,
    /// Only accept quotes in this currency (a budget implies its own; the
    /// two must agree).
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
    /// How the result is checked (`replicate(2)`, `spot-check(0.1)`, …);
    /// `None`: the config's `[verify] policy`.
    #[serde(default)]
    pub verify: Option<VerifyPolicy>,
    /// Ask this provider (a peer id) first and take its quote when it is
    /// within budget; if it cannot, or fails the job, the job moves on to
    /// the others as usual. Batch sharding sets one per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_provider: Option<String>,
    /// Run only on this provider (a peer id), or fail: a pipeline stage's
    /// session lives on one provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_provider: Option<String>,
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

/// Output tokens a job asks for when its options name no bound.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 256;

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
    /// A replica of a verified job: the lifecycle stops at `delivered`,
    /// payment held, until the replicas are compared.
    #[serde(default)]
    hold: bool,
    /// Peer ids this job must not use (the providers of earlier replicas).
    #[serde(default)]
    exclude: Vec<String>,
    /// A spot check re-run by a verifier: the only peers it may use (the
    /// trusted verifiers). Empty: any provider that is not a verifier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    only: Vec<String>,
    /// Asked first, taken when within budget ([`InferOptions::prefer_provider`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefer: Option<String>,
}

impl StoredRequest {
    /// The providers this job must not use, parsed (we wrote them).
    fn excluded(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.exclude.iter().filter_map(|p| p.parse().ok())
    }
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
    pub proof: Option<Encoded<ProofAttachment>>,
    /// How the result was checked against other providers'
    /// (`replicate`/`spot-check`); `None` for the policies `none` and
    /// `proof` (see [`JobOutcome::proof`]).
    pub verification: Option<Verification>,
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
    /// A verification step failed (a dispute could not be run or its
    /// evidence does not hold).
    #[error("verification: {0}")]
    Verification(String),
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
    /// No chain of layer spans on offer covers the model.
    #[error("no pipeline serves `{model}`: the spans on offer ({}) do not cover every layer", if .spans.is_empty() { "none".to_string() } else { .spans.join(", ") })]
    NoPipeline {
        /// The model asked for.
        model: String,
        /// The spans seen.
        spans: Vec<String>,
    },
    /// Every quote was above the budget (or in another currency).
    #[error("no quote within the budget of {budget}; cheapest seen: {}", .cheapest.as_ref().map(|m| format!("{} from {}", crate::payments::display(m.0.amount, &m.0.currency), m.1)).unwrap_or_else(|| "none".into()))]
    OverBudget {
        /// The budget, with its currency if one was required.
        budget: String,
        /// Cheapest quote seen and its provider.
        cheapest: Option<Box<(Money, PeerId)>>,
    },
    /// No provider answered the quote request.
    #[error("no provider of `{model}` gave a quote: {}", .errors.join("; "))]
    NoQuotes {
        /// Model.
        model: String,
        /// One line per provider.
        errors: Vec<String>,
    },
    /// Every provider of the model failed or refused this job.
    #[error("every provider of `{model}` failed this job: {}", .failures.join("; "))]
    ProvidersFailed {
        /// The model asked for.
        model: String,
        /// One `<peer>: <reason>` per provider tried.
        failures: Vec<String>,
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
        provider: String,
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
    /// Providers prove the model, but none under a key this client's
    /// `[client.proof_pins]` accepts.
    #[error("no provider proves `{model}` under a key you pinned: {}", .refusals.join("; "))]
    UntrustedProvers {
        /// The model asked for.
        model: String,
        /// Each prover and why its key is refused (naming both keys).
        refusals: Vec<String>,
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
    /// The options contradict each other (a budget in one currency, quotes
    /// asked in another) or cannot be represented.
    #[error("invalid job options: {0}")]
    BadOptions(String),
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
    /// The escrow could not be created, funded or released.
    #[error("job {job_id}: payment: {message}")]
    Payment {
        /// Job.
        job_id: String,
        /// What failed, and what to do.
        message: String,
    },
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
    /// Payment adapters; `None`: this client pays nobody (unpaid providers only).
    payments: Option<Arc<crate::payments::Payments>>,
    /// `[verify]`: the default policy and the referees.
    verify: VerifyConfig,
    /// Where dispute evidence is saved (`<data_dir>/evidence`); `None`:
    /// next to the store's file.
    data_dir: Option<PathBuf>,
    metrics: Arc<crate::metrics::Metrics>,
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
        Self::with_payments(net, store, key, cfg, None)
    }

    /// A client that pays providers through `payments` (escrow per job).
    pub fn with_payments(
        net: NetworkHandle,
        store: Arc<Store>,
        key: Keypair,
        cfg: ClientConfig,
        payments: Option<Arc<crate::payments::Payments>>,
    ) -> JobClient {
        Self::with_verify(net, store, key, cfg, payments, None, Default::default())
    }

    /// A paying client with `[verify]` settings, saving dispute evidence
    /// under `<data_dir>/evidence` (`verify`: the settings and the data
    /// dir; `None`: policy `none`, no referees), recording finished jobs
    /// into `metrics`.
    pub fn with_verify(
        net: NetworkHandle,
        store: Arc<Store>,
        key: Keypair,
        cfg: ClientConfig,
        payments: Option<Arc<crate::payments::Payments>>,
        verify: Option<(VerifyConfig, PathBuf)>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> JobClient {
        let (verify, data_dir) = match verify {
            Some((v, dir)) => (v, Some(dir)),
            None => (VerifyConfig::default(), None),
        };
        JobClient {
            inner: Arc::new(Inner {
                net,
                store,
                key,
                cfg,
                in_flight: Arc::new(Mutex::new(HashMap::new())),
                providers: Mutex::new(HashMap::new()),
                payments,
                verify,
                data_dir,
                metrics,
            }),
        }
    }

    /// Runs a job on the network under its verification policy (see
    /// [`InferOptions::verify`]) and returns its outcome.
    pub async fn submit(
        &self,
        model: &str,
        input: WireInput,
        opts: &InferOptions,
    ) -> Result<JobOutcome, ClientError> {
        match self.plan(opts)? {
            Plan::Single(opts) => {
                let id = self.create(model, input, &opts, Hold::No).await?;
                self.inner.drive(&id, None).await
            }
            Plan::Unchecked(opts, policy) => {
                let id = self.create(model, input, &opts, Hold::No).await?;
                let outcome = self.inner.drive(&id, None).await?;
                Ok(verify::unchecked(outcome, policy))
            }
            Plan::Replicate(opts, policy) => {
                let first = self
                    .create(model, input.clone(), &opts, Hold::Replica(vec![]))
                    .await?;
                self.replicate(first, (model.into(), input, opts), policy, None)
                    .await
            }
        }
    }

    /// Like [`JobClient::submit`], reporting tokens and provider changes
    /// as they happen. Under `replicate`/`spot-check` the first replica is
    /// streamed; the others run after it, then the results are compared
    /// before the outcome is returned.
    pub async fn submit_streaming(
        &self,
        model: &str,
        input: WireInput,
        opts: &InferOptions,
    ) -> Result<JobStream, ClientError> {
        let plan = self.plan(opts)?;
        let (tx, events) = mpsc::unbounded_channel();
        let (job_id, outcome) = match plan {
            Plan::Single(opts) => {
                let job_id = self.create(model, input, &opts, Hold::No).await?;
                let (inner, id) = (self.inner.clone(), job_id.clone());
                let run = tokio::spawn(async move { inner.drive(&id, Some(&tx)).await });
                (job_id, run)
            }
            Plan::Unchecked(opts, policy) => {
                let job_id = self.create(model, input, &opts, Hold::No).await?;
                let (inner, id) = (self.inner.clone(), job_id.clone());
                let run = tokio::spawn(async move {
                    let outcome = inner.drive(&id, Some(&tx)).await?;
                    Ok(verify::unchecked(outcome, policy))
                });
                (job_id, run)
            }
            Plan::Replicate(opts, policy) => {
                let job_id = self
                    .create(model, input.clone(), &opts, Hold::Replica(vec![]))
                    .await?;
                let (client, id, job) = (self.clone(), job_id.clone(), (model.into(), input, opts));
                let run =
                    tokio::spawn(async move { client.replicate(id, job, policy, Some(&tx)).await });
                (job_id, run)
            }
        };
        Ok(JobStream {
            job_id,
            events,
            outcome,
        })
    }

    /// Drives an existing job (a resumed one) to its end. A held replica
    /// of a verified job is refunded once delivered: the comparison it
    /// waited for ended with the process that started it.
    pub async fn resume(&self, job_id: &str) -> Result<JobOutcome, ClientError> {
        let outcome = self.inner.drive(job_id, None).await?;
        let rec = self.inner.record(job_id).await?;
        if rec.state == JobState::Delivered && stored_request(&rec)?.hold {
            let message = "a held replica whose comparison did not survive a restart".to_string();
            self.refund_held(job_id, &message).await?;
            return Err(ClientError::Failed {
                job_id: job_id.into(),
                message,
            });
        }
        Ok(outcome)
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
        // The escrow goes back to the client (an escrow still being created
        // by the driver right now is left to the sweep).
        if self.inner.record(job_id).await?.state == JobState::Failed {
            self.inner.settle_failed(job_id).await?;
        }
        Ok(())
    }

    /// Stores a new job (`hold`: a replica of a verified job) and returns
    /// its id.
    async fn create(
        &self,
        model: &str,
        input: WireInput,
        opts: &InferOptions,
        hold: Hold,
    ) -> Result<String, ClientError> {
        let mut params = opts.backend_params();
        // The quote covers this many output tokens, and paid providers run
        // at most what was quoted: the bound always travels as `max_tokens`.
        let max_output_tokens = opts
            .max_tokens
            .or_else(|| {
                params
                    .iter()
                    .rev()
                    .find(|(k, _)| k == "max_tokens")
                    .and_then(|(_, v)| v.trim().parse().ok())
            })
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        params.retain(|(k, _)| k != "max_tokens");
        params.push(("max_tokens".into(), max_output_tokens.to_string()));
        let (max_budget, currency) = budget_in_minor_units(opts)?;
        let request = StoredRequest {
            model: model.to_string(),
            max_output_tokens,
            input,
            params,
            max_budget,
            currency,
            proof: opts.proof.clone(),
            hold: !matches!(hold, Hold::No),
            // A replica avoids the earlier replicas' providers and this
            // client's referees: a referee must be party to neither result
            // (a verifier that also referees is skipped as the referee).
            exclude: match &hold {
                Hold::Replica(peers) => peers
                    .iter()
                    .map(|p| p.to_string())
                    .chain(self.inner.verify.referees.iter().cloned())
                    .collect(),
                Hold::Audit(peers) => peers.iter().map(|p| p.to_string()).collect(),
                Hold::No => Vec::new(),
            },
            only: match &hold {
                Hold::Audit(_) => self.inner.verify.verifiers.clone(),
                _ => opts.only_provider.iter().cloned().collect(),
            },
            prefer: opts.prefer_provider.clone(),
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
    crash_at(state.as_str())
}

/// The wire job id of the record's current attempt: `<id>.<attempt>`.
fn wire_id(record: &JobRecord) -> String {
    format!("{}.{}", record.id, record.attempts)
}

/// Providers this job already gave up on, from its event log.
fn failed_providers(events: &[crate::store::JobEvent]) -> HashSet<PeerId> {
    provider_failures(events)
        .filter_map(|rest| rest.split(':').next()?.trim().parse().ok())
        .collect()
}

/// The `<peer>: <reason>` of each provider failure in a job's events.
fn provider_failures(events: &[crate::store::JobEvent]) -> impl Iterator<Item = &str> {
    events
        .iter()
        .filter_map(|e| e.detail.as_deref()?.strip_prefix(PROVIDER_FAILED))
}

mod audit;
mod budget;
mod dispute;
mod exchange;
mod lifecycle;
mod pay;
mod pipeline;
mod proof;
mod route;
mod shard;
mod steps;
mod verify;

use crate::config::VerifyPolicy;
use crate::payments::currency::Amount;
pub use audit::AuditNote;
use budget::{budget_in_minor_units, budget_serde};
pub use pipeline::{
    PipelineOptions, PipelineOutcome, StageReport, MAX_PIPELINE_TOKENS, MAX_STAGE_FAILOVERS,
};
pub use route::{chain as route_chain, Hop, Objective};
pub use shard::{split as split_batch, Shard, ShardedOutcome, MAX_BATCH};
pub use verify::{spot_check, Replica, Verdict, Verification};
use verify::{Hold, Plan};

use proof::add_proof;
use proof::ProofRefusal;
pub use proof::{check_pin, verify_proof};

const BUSY_PREFIX: &str = "busy: ";
/// In a `Busy` answer: the request was not taken, send it again later
/// (`p2p` in-flight bounds, `node.capacity`'s queue).
const RETRY_LATER: &str = "retry later";

/// A provider's `Error` reply, sorted by fault.
fn classify(peer: PeerId, e: WireError) -> StepError {
    match e.code {
        ErrorCode::Busy => StepError::Provider(format!("{BUSY_PREFIX}{}", e.message)),
        ErrorCode::InvalidRequest | ErrorCode::Cancelled => {
            StepError::Fatal(ClientError::Rejected {
                job_id: e.job_id.unwrap_or_default(),
                provider: peer.to_string(),
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
        JobBody::Committed { .. } => "Committed",
        JobBody::Cancel { .. } => "Cancel",
        JobBody::Error(_) => "Error",
        JobBody::Trace { .. } => "Trace",
        JobBody::TraceAnswer { .. } => "TraceAnswer",
        JobBody::Dispute { .. } => "Dispute",
        JobBody::Ruling { .. } => "Ruling",
        JobBody::Stake(_) => "Stake",
        JobBody::StakeState(_) => "StakeState",
        JobBody::Claim(_) => "Claim",
        JobBody::Deliver { .. } => "Deliver",
        JobBody::Audit { .. } => "Audit",
        JobBody::Audited { .. } => "Audited",
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
    output: &Encoded<WireOutput>,
    signed: &SignedResult,
) -> Result<serde_json::Value, ClientError> {
    let corrupt = |e: crate::p2p::protocol::CodecError| ClientError::Corrupt {
        job_id: signed.payload.job_id.clone(),
        reason: e.to_string(),
    };
    Ok(serde_json::json!({
        "provider": signed.payload.provider,
        "output_hash": signed.payload.output_hash,
        "output_cbor": hex::encode(output.bytes()),
        "signed_cbor": hex::encode(encode(signed).map_err(corrupt)?),
    }))
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
