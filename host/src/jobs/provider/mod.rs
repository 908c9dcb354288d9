//! The provider side of `/infernet/job/2`: quotes from the pricing plugin,
//! jobs recorded in the store before they run, results signed with the
//! node's identity key, and a per-job token buffer for streamed runs.
//!
//! A run goes `created -> quoted -> escrowed -> assigned -> running` (each
//! step persisted before the next is acted on; `escrowed` is the money seam
//! and holds nothing yet), then `delivered` with the signed result stored, or
//! `failed` with the error. A `Run` for a job id the store already knows is
//! never executed again: it gets the stored result or error.
//!
//! A `Run { proof: Some("groth16") }` for a model this node proves gets the
//! Groth16 proof of the output attached to the `Result`, its hash signed in
//! the result body; asked for a proof it cannot make, the provider refuses
//! (`InvalidRequest`) before running anything.

mod audit;
mod exchange;
mod execute;
mod meter;
mod pay;
mod stream;
pub mod traces;
mod verify;

use crate::kernels::trace::TraceRoot;
use crate::node::Node;
use crate::p2p::libp2p::identity::Keypair;
use crate::p2p::protocol::QuoteRef;
use crate::p2p::protocol::{
    decode, encode, hash_value, now_ms, CodecError, Encoded, ProofAttachment, SignatureError,
};
use crate::p2p::WireInput;
use crate::p2p::{
    ErrorCode, JobBody, JobHandler, JobMessage, Money, PeerId, SignedReceipt, SignedResult, Usage,
    WireOutput,
};
use crate::store::{JobRecord, JobRole, JobState, JobUpdate, NewJob, Store, StoreError};
use crate::worlds::backend::{JobInput, JobOutput, JobRequest};
use crate::worlds::backend::{ProgressEvent, ProgressSink};
use crate::worlds::pricing::QuoteRequest;
use execute::stored_outcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stream::TokenBuffer;
use tokio::sync::Notify;

/// Currency of the zero quote given when no pricing plugin is configured.
pub const FREE_CURRENCY: &str = "USD";
/// Validity of the zero quote.
const FREE_QUOTE_SECS: u64 = 60;
/// How long a `Poll` waits for new tokens before replying with none.
const POLL_WAIT: Duration = Duration::from_millis(500);

/// Why a provider refused or failed a request. Each maps to a protocol
/// [`ErrorCode`] ([`ProviderError::code`]); the message goes to the peer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No backend here serves the model.
    #[error("no backend serves model `{model}`; this provider serves: {}", .available.join(", "))]
    UnknownModel {
        /// Asked-for id.
        model: String,
        /// What this node serves.
        available: Vec<String>,
    },
    /// No job with this id here.
    #[error("no job {0} on this provider")]
    UnknownJob(String),
    /// The job id is already taken by a different request.
    #[error("job id {0} was already used for a different request")]
    IdReused(String),
    /// The job is still running (from an earlier `Run`).
    #[error("job {0} is already running on this provider")]
    InProgress(String),
    /// An earlier run of this job failed; it is not run again.
    #[error("job {job_id} failed earlier: {message}")]
    FailedEarlier {
        /// Job.
        job_id: String,
        /// The stored error.
        message: String,
    },
    /// The backend plugin failed (its message).
    #[error("{0}")]
    Backend(String),
    /// The pricing plugin failed.
    #[error("pricing plugin: {0}")]
    Pricing(String),
    /// A message a provider does not answer (or does not support yet).
    #[error("{0}")]
    Unsupported(String),
    /// A proof was asked for that this provider cannot make.
    #[error("{0}")]
    ProofUnavailable(String),
    /// Proving failed, or the backend's output is not the proved one.
    #[error("proof: {0}")]
    Proof(String),
    /// A receipt's signature did not verify.
    #[error("receipt: {0}")]
    BadReceipt(SignatureError),
    /// A signed payload a peer sent (other than a receipt) did not verify.
    #[error("{what}: {error}")]
    BadSignature {
        /// What was signed.
        what: &'static str,
        /// Why it did not verify.
        error: SignatureError,
    },
    /// Signing the result failed.
    #[error("cannot sign the result: {0}")]
    Sign(#[from] SignatureError),
    /// Every capacity slot is taken and the queue is full.
    #[error("{0}")]
    Busy(String),
    /// The output or proof could not be encoded.
    #[error("cannot encode the result: {0}")]
    Encode(#[from] CodecError),
    /// The store refused.
    #[error("job store: {0}")]
    Store(#[from] StoreError),
    /// A stored result could not be read back.
    #[error("stored result of job {0} is unreadable")]
    CorruptResult(String),
    /// A blocking worker panicked or was cancelled.
    #[error("worker task: {0}")]
    Worker(String),
    /// The job is paid and its escrow is missing or does not hold the price.
    #[error("payment required: {0}")]
    PaymentRequired(String),
}

impl ProviderError {
    /// The protocol code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProviderError::UnknownModel { .. } => ErrorCode::UnknownModel,
            ProviderError::UnknownJob(_) => ErrorCode::UnknownJob,
            ProviderError::IdReused(_)
            | ProviderError::Unsupported(_)
            | ProviderError::ProofUnavailable(_) => ErrorCode::InvalidRequest,
            ProviderError::InProgress(_) | ProviderError::Busy(_) => ErrorCode::Busy,
            ProviderError::BadReceipt(_) | ProviderError::BadSignature { .. } => {
                ErrorCode::BadSignature
            }
            ProviderError::PaymentRequired(_) => ErrorCode::PaymentRequired,
            ProviderError::FailedEarlier { .. }
            | ProviderError::Backend(_)
            | ProviderError::Pricing(_)
            | ProviderError::Proof(_)
            | ProviderError::Sign(_)
            | ProviderError::Encode(_)
            | ProviderError::Store(_)
            | ProviderError::CorruptResult(_)
            | ProviderError::Worker(_) => ErrorCode::Internal,
        }
    }
}

/// Answers `/infernet/job/2` for a provider node. Cheap to clone.
#[derive(Clone)]
pub struct ProviderHandler {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<Node>,
    key: Keypair,
    store: Arc<Store>,
    /// Token buffers of streamed runs, by job id.
    streams: Mutex<HashMap<String, Arc<TokenBuffer>>>,
    /// Jobs executing now (the pricing plugin's queue depth).
    running: AtomicU32,
    /// Test hook: corrupt every proof after signing its hash (a lying
    /// provider whose signature is fine but whose proof is not).
    #[cfg(feature = "test-hooks")]
    tamper_proofs: std::sync::atomic::AtomicBool,
    /// Test hook: name this plugin sha256 in results instead of the real
    /// one (a provider that runs a cheating plugin and claims the honest
    /// one's hash).
    #[cfg(feature = "test-hooks")]
    claimed_sha256: Mutex<Option<String>>,
    /// Payment adapters; `None`: this provider runs jobs unpaid.
    payments: Option<Arc<crate::payments::Payments>>,
    /// Recent quotes by quote id, until they expire.
    quotes: Mutex<HashMap<String, pay::QuotedTerms>>,
    /// What each accepted job (by wire id) may run as.
    accepted: Mutex<HashMap<String, pay::AcceptedTerms>>,
    /// Measured run speed per model, for quotes' time estimates.
    speed: meter::Speed,
    /// Kernel traces of delivered jobs, for disputes.
    traces: traces::TraceStore,
    /// The last trace questioned over `/infernet/verify/1`.
    trace_cache: verify::TraceCache,
    /// Set on a node that serves as a referee.
    referee: std::sync::OnceLock<Arc<crate::jobs::referee::Referee>>,
    /// Set on a referee that holds providers' stakes.
    arbiter: std::sync::OnceLock<Arc<crate::jobs::arbiter::Arbiter>>,
    /// This provider's stake certificate, while an arbiter holds its
    /// stake: paid jobs are then prepaid (released before the run).
    stake_cert: Mutex<Option<crate::p2p::verification::SignedStakeCert>>,
    /// Test hook: take prepaid jobs' money and deliver nothing.
    #[cfg(feature = "test-hooks")]
    withhold: std::sync::atomic::AtomicBool,
    /// Set on a verifier: it answers audits.
    verifier: std::sync::atomic::AtomicBool,
}

/// What a quote request asks to be priced.
struct QuoteSize {
    /// The client's count (used only without `input`).
    claimed_input_tokens: u32,
    /// The input, when the client sent it.
    input: Option<JobInput>,
    /// Output tokens asked for.
    max_output_tokens: u32,
}

/// What the store says about a `Run`.
enum Admission {
    /// A new job: run it.
    New,
    /// Seen before: this is its outcome (or why it has none yet).
    Seen(Box<Result<JobMessage, ProviderError>>),
}

impl ProviderHandler {
    /// A handler running jobs on `node`, signing with `key` (the node's
    /// libp2p identity) and recording jobs in `store`.
    pub fn new(node: Arc<Node>, key: Keypair, store: Arc<Store>) -> ProviderHandler {
        Self::with_payments(node, key, store, None)
    }

    /// A handler that is paid through `payments` (when `Some`): quotes
    /// carry its pay-to terms and no job runs before its escrow is confirmed.
    pub fn with_payments(
        node: Arc<Node>,
        key: Keypair,
        store: Arc<Store>,
        payments: Option<Arc<crate::payments::Payments>>,
    ) -> ProviderHandler {
        let traces = traces::TraceStore::new(node.data_dir(), traces::DEFAULT_KEEP);
        ProviderHandler {
            inner: Arc::new(Inner {
                traces,
                trace_cache: Mutex::new(None),
                referee: std::sync::OnceLock::new(),
                arbiter: std::sync::OnceLock::new(),
                stake_cert: Mutex::new(None),
                #[cfg(feature = "test-hooks")]
                withhold: std::sync::atomic::AtomicBool::new(false),
                verifier: std::sync::atomic::AtomicBool::new(false),
                node,
                key,
                store,
                streams: Mutex::new(HashMap::new()),
                running: AtomicU32::new(0),
                #[cfg(feature = "test-hooks")]
                tamper_proofs: std::sync::atomic::AtomicBool::new(false),
                #[cfg(feature = "test-hooks")]
                claimed_sha256: Mutex::new(None),
                payments,
                quotes: Mutex::new(HashMap::new()),
                speed: meter::Speed::default(),
                accepted: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The payment adapters it is paid through, if any.
    pub fn payments(&self) -> Option<Arc<crate::payments::Payments>> {
        self.inner.payments.clone()
    }

    /// Brings open `earn` escrow rows up to date (blocking: it may call
    /// payment adapters). Run at start and periodically by the SDK.
    /// Returns how many rows changed.
    pub fn sweep_earnings(&self) -> Result<usize, ProviderError> {
        if self.inner.payments.is_none() {
            return Ok(0);
        }
        self.inner.sweep_earnings()
    }

    /// The store jobs are recorded in.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The peer id results are signed as.
    pub fn peer_id(&self) -> PeerId {
        self.inner.key.public().to_peer_id()
    }

    /// Ends the provider jobs an earlier process left unfinished (it died
    /// mid-run): each goes `failed` with the reason, so a client polling for
    /// it learns to fail over, and it is never run a second time. Call once
    /// at start, before serving. Returns how many jobs were ended.
    pub fn recover(&self) -> Result<usize, ProviderError> {
        let jobs = self.inner.store.jobs();
        let mut ended = 0;
        for r in jobs.active()? {
            if r.role != JobRole::Provider || r.state >= JobState::Delivered {
                continue;
            }
            let message = format!(
                "provider restarted while the job was {}; it is not run again",
                r.state
            );
            let update = JobUpdate {
                error: Some(message.clone()),
                ..JobUpdate::default()
            };
            match jobs.transition_with(&r.id, r.state, JobState::Failed, &message, &update) {
                Ok(()) => ended += 1,
                Err(StoreError::StateConflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if ended > 0 {
            tracing::warn!(
                ended,
                "ended provider jobs left running by an earlier process"
            );
        }
        Ok(ended)
    }

    /// Test hook (feature `test-hooks`, never in a release build): from
    /// now on, every proof this provider attaches has a corrupted proof
    /// body (its hash is still signed), so clients must reject it.
    #[cfg(feature = "test-hooks")]
    pub fn tamper_proofs_for_tests(&self, on: bool) {
        self.inner.tamper_proofs.store(on, Ordering::Relaxed);
    }

    /// Test hook: sign results naming plugin `sha256` instead of the one
    /// that ran (a lying provider).
    #[cfg(feature = "test-hooks")]
    pub fn claim_backend_sha256_for_tests(&self, sha256: &str) {
        *self
            .inner
            .claimed_sha256
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(sha256.into());
    }

    /// sha256 of the plugin that serves `model` here.
    pub fn backend_sha256(&self, model: &str) -> Option<String> {
        self.inner.node.backend_sha256(model)
    }

    /// Jobs executing now.
    pub fn running(&self) -> u32 {
        self.inner.running.load(Ordering::Relaxed)
    }

    async fn answer(&self, from: PeerId, body: JobBody) -> Result<JobMessage, ProviderError> {
        self.authorize(from, &body).await?;
        match body {
            JobBody::QuoteRequest {
                job_id,
                model,
                input_tokens,
                max_output_tokens,
                input,
                ..
            } => {
                let size = QuoteSize {
                    claimed_input_tokens: input_tokens,
                    input: input.map(to_job_input),
                    max_output_tokens,
                };
                self.quote(from, job_id, model, size).await
            }
            JobBody::Run {
                job_id,
                model,
                input,
                params,
                stream,
                proof,
            } => {
                self.inner.check_model(&model)?;
                self.inner.withheld()?;
                if let Some(system) = &proof {
                    self.inner.check_proof(&model, system)?;
                }
                let job = JobRequest {
                    id: job_id,
                    model,
                    input: to_job_input(input),
                    params,
                };
                if stream {
                    self.start_stream(from, job, proof).await
                } else {
                    let inner = self.inner.clone();
                    blocking(move || match inner.admit(from, &job, proof.as_deref())? {
                        Admission::Seen(outcome) => *outcome,
                        Admission::New => inner.execute(from, job, None, proof),
                    })
                    .await
                }
            }
            JobBody::Poll { job_id, after_seq } => self.poll(job_id, after_seq).await,
            JobBody::Accept {
                job_id,
                quote_id,
                escrow,
            } => {
                let inner = self.inner.clone();
                blocking(move || inner.accept(from, job_id, &quote_id, escrow)).await
            }
            JobBody::Receipt(receipt) => {
                let reply = accept_receipt(&receipt)?;
                let inner = self.inner.clone();
                blocking(move || inner.on_receipt(&receipt.payload).map(|()| reply)).await
            }
            JobBody::Cancel { job_id, reason } => {
                let inner = self.inner.clone();
                blocking(move || inner.cancel(from, job_id, reason)).await
            }
            JobBody::Trace { job_id, query, .. } => {
                let inner = self.inner.clone();
                blocking(move || inner.trace_answer(job_id, query)).await
            }
            JobBody::Dispute { job_id, dispute } => self.referee(from, job_id, *dispute).await,
            JobBody::Stake(request) => self.stake(from, request).await,
            JobBody::Claim(claim) => self.claim(from, *claim).await,
            JobBody::Deliver { job_id, .. } => {
                let inner = self.inner.clone();
                blocking(move || inner.deliver(&job_id)).await
            }
            JobBody::Audit { job_id, result } => self.audit(from, job_id, *result).await,
            JobBody::QuoteOffer { .. }
            | JobBody::Progress { .. }
            | JobBody::Result { .. }
            | JobBody::Ack { .. }
            | JobBody::Committed { .. }
            | JobBody::TraceAnswer { .. }
            | JobBody::Ruling { .. }
            | JobBody::StakeState(_)
            | JobBody::Audited { .. }
            | JobBody::Error(_) => Err(ProviderError::Unsupported(
                "a provider answers requests only (quote request, accept, run, poll, receipt, cancel)".into(),
            )),
        }
    }

    /// Requests about an existing job are answered only to that job's
    /// client: one check for every message that names a job (`Run`,
    /// `Poll`, `Cancel`, `Receipt`, and whatever comes later), before any
    /// handler sees it. To anyone else the job does not exist.
    async fn authorize(&self, from: PeerId, body: &JobBody) -> Result<(), ProviderError> {
        let job_id = match body {
            JobBody::QuoteRequest { .. } | JobBody::Accept { .. } | JobBody::Dispute { .. } => {
                return Ok(())
            }
            JobBody::Trace {
                job_id,
                ticket: Some(ticket),
                ..
            } => {
                let inner = self.inner.clone();
                let (job_id, ticket) = (job_id.clone(), ticket.clone());
                return blocking(move || inner.check_ticket(from, &job_id, &ticket)).await;
            }
            JobBody::Receipt(r) => r.payload.job_id.clone(),
            JobBody::Claim(_) => return Ok(()),
            JobBody::Deliver { job_id, claim } => {
                let inner = self.inner.clone();
                let (job_id, claim) = (job_id.clone(), claim.clone());
                return blocking(move || inner.check_claim(from, &job_id, &claim)).await;
            }
            other => match other.job_id() {
                Some(id) => id.to_string(),
                None => return Ok(()),
            },
        };
        let inner = self.inner.clone();
        let from = from.to_string();
        blocking(move || match inner.store.jobs().get(&job_id)? {
            Some(r) if r.role == JobRole::Provider && r.client_peer.as_deref() != Some(&from) => {
                Err(ProviderError::UnknownJob(job_id))
            }
            _ => Ok(()),
        })
        .await
    }

    /// Prices a job on what this provider measures, not the client's
    /// word: the input counted with the model's tokenizer (or, without the
    /// input, the client's claim, which `Run` is then held to), at least
    /// one token in and out (no priced provider runs anything for nothing),
    /// and the time its measured speed predicts.
    async fn quote(
        &self,
        client: PeerId,
        job_id: String,
        model: String,
        size: QuoteSize,
    ) -> Result<JobMessage, ProviderError> {
        self.inner.check_model(&model)?;
        let inner = self.inner.clone();
        let running = inner.running.load(Ordering::Relaxed);
        let priced_model = model.clone();
        // Counting may parse the tokenizer and encode a long input: off the
        // async threads, with the pricing call.
        let (input_tokens, quote) = blocking(move || {
            let input_tokens = match &size.input {
                Some(input) => {
                    meter::input_tokens(inner.node.model(&priced_model).map(|m| &**m), input)
                }
                None => size.claimed_input_tokens.max(1),
            };
            let out = size.max_output_tokens.max(1);
            let request = QuoteRequest {
                model: priced_model.clone(),
                input_tokens,
                max_output_tokens: out,
                estimated_ms: inner.speed.estimate_ms(&priced_model, input_tokens, out),
                queue_depth: running,
                load_permille: load_permille(running),
            };
            let quote = match inner.node.pricing() {
                Some(p) => p
                    .quote(&request)
                    .map(Some)
                    .map_err(|e| ProviderError::Pricing(e.to_string()))?,
                None => None,
            };
            Ok((input_tokens, quote))
        })
        .await?;
        let max_output_tokens = size.max_output_tokens;
        let (price, breakdown, valid_secs) = match quote {
            Some(q) => (
                Money {
                    amount: q.price.amount,
                    currency: q.price.currency,
                },
                q.breakdown,
                u64::from(q.valid_for_secs),
            ),
            None => (
                Money {
                    amount: 0,
                    currency: FREE_CURRENCY.into(),
                },
                vec![],
                FREE_QUOTE_SECS,
            ),
        };
        let quote_id = format!("{job_id}-{}", crate::node::new_job_id());
        let valid_until_ms = now_ms().saturating_add(valid_secs.saturating_mul(1000));
        // Staked (a certificate valid past the quote): paid before the run.
        let prepay = price.amount > 0 && self.inner.staked(valid_until_ms);
        self.inner.remember_quote(
            &quote_id,
            pay::QuotedTerms {
                client,
                job_id: job_id.clone(),
                model,
                input_tokens,
                max_output_tokens,
                price: price.clone(),
                valid_until_ms,
                prepay,
            },
        );
        let pay_to = self
            .inner
            .payments
            .as_ref()
            .map(|p| p.pay_to())
            .unwrap_or_default()
            .into_iter()
            .map(|p| crate::p2p::protocol::PayTo { prepay, ..p })
            .collect();
        Ok(JobMessage::new(JobBody::QuoteOffer {
            quote_id,
            job_id,
            price,
            breakdown,
            valid_until_ms,
            pay_to,
        }))
    }
}

impl JobHandler for ProviderHandler {
    async fn handle(&self, from: PeerId, msg: JobMessage) -> JobMessage {
        let job_id = msg.job_id().map(str::to_owned);
        let span = match &job_id {
            Some(id) => tracing::info_span!("job", id = %id, role = "provider"),
            None => tracing::Span::none(),
        };
        match tracing::Instrument::instrument(self.answer(from, msg.body), span).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(peer = %from, job = ?job_id, error = %e, "job request refused");
                JobMessage::error(job_id, e.code(), e.to_string())
            }
        }
    }
}

fn accept_receipt(receipt: &SignedReceipt) -> Result<JobMessage, ProviderError> {
    receipt.verify().map_err(ProviderError::BadReceipt)?;
    tracing::info!(job = %receipt.payload.job_id, accepted = receipt.payload.accepted, "receipt");
    Ok(JobMessage::ack(receipt.payload.job_id.clone()))
}

/// Jobs running now over the cores this node has, in permille (capped at
/// 1000): the `load-permille` a pricing plugin sees.
fn load_permille(running: u32) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    (u64::from(running) * 1000 / cores).min(1000) as u32
}

/// Raw i64 little-endian logits (the `mlp` backend's bytes output).
pub fn decode_logits(bytes: &[u8]) -> Option<Vec<i64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                i64::from_le_bytes(a)
            })
            .collect(),
    )
}

pub use crate::verify::{job_input as to_job_input, wire_input};

/// The WIT `job-output` → wire output.
pub fn to_wire_output(output: JobOutput) -> WireOutput {
    match output {
        JobOutput::Text(t) => WireOutput::Text(t),
        JobOutput::Embeddings(e) => WireOutput::Embeddings(e),
        JobOutput::Logits(t) => WireOutput::Logits(crate::p2p::protocol::Tensor {
            shape: t.shape,
            data: t.data,
        }),
        JobOutput::Classes(c) => WireOutput::Classes(c),
        JobOutput::Bytes(b) => WireOutput::Bytes(b),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProviderError::Worker(e.to_string()))?
}
