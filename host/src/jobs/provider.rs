//! The provider side of `/infernet/job/1`: quotes from the pricing plugin,
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

use crate::node::Node;
use crate::p2p::libp2p::identity::Keypair;
use crate::p2p::protocol::{
    decode, encode, hash_output, hash_proof, hash_value, now_ms, ProofAttachment, SignatureError,
};
use crate::p2p::{
    BackendRef, ErrorCode, JobBody, JobHandler, JobMessage, Money, PeerId, ResultBody,
    SignedReceipt, SignedResult, Usage, WireInput, WireOutput,
};
use crate::runtime::{ProgressEvent, ProgressSink};
use crate::store::{JobRecord, JobRole, JobState, JobUpdate, NewJob, Store, StoreError};
use crate::worlds::backend::{F32Tensor, JobInput, JobOutput, JobRequest};
use crate::worlds::pricing::QuoteRequest;
use infernet_verifier::Prover;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// Signing the result failed.
    #[error("cannot sign the result: {0}")]
    Sign(#[from] SignatureError),
    /// The store refused.
    #[error("job store: {0}")]
    Store(#[from] StoreError),
    /// A stored result could not be read back.
    #[error("stored result of job {0} is unreadable")]
    CorruptResult(String),
    /// A blocking worker panicked or was cancelled.
    #[error("worker task: {0}")]
    Worker(String),
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
            ProviderError::InProgress(_) => ErrorCode::Busy,
            ProviderError::BadReceipt(_) => ErrorCode::BadSignature,
            ProviderError::FailedEarlier { .. }
            | ProviderError::Backend(_)
            | ProviderError::Pricing(_)
            | ProviderError::Proof(_)
            | ProviderError::Sign(_)
            | ProviderError::Store(_)
            | ProviderError::CorruptResult(_)
            | ProviderError::Worker(_) => ErrorCode::Internal,
        }
    }
}

/// Answers `/infernet/job/1` for a provider node. Cheap to clone.
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
    tamper_proofs: AtomicBool,
}

/// Tokens of one streamed run, fed by the backend's progress sink.
#[derive(Default)]
struct TokenBuffer {
    state: Mutex<BufferState>,
    changed: Notify,
}

#[derive(Default)]
struct BufferState {
    chunks: Vec<String>,
    /// The job reached `delivered` or `failed`; the store has the outcome.
    done: bool,
}

impl TokenBuffer {
    fn update(&self, f: impl FnOnce(&mut BufferState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.changed.notify_waiters();
    }

    /// Chunks after `after_seq`, the last seq, and whether the run is over.
    fn after(&self, after_seq: u64) -> (Vec<String>, u64, bool) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let from = usize::try_from(after_seq)
            .unwrap_or(usize::MAX)
            .min(s.chunks.len());
        (s.chunks[from..].to_vec(), s.chunks.len() as u64, s.done)
    }
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
        ProviderHandler {
            inner: Arc::new(Inner {
                node,
                key,
                store,
                streams: Mutex::new(HashMap::new()),
                running: AtomicU32::new(0),
                tamper_proofs: AtomicBool::new(false),
            }),
        }
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

    /// Test hook: from now on, every proof this provider attaches has a
    /// corrupted proof body (its hash is still signed), so clients must
    /// reject it. Not for production use.
    #[doc(hidden)]
    pub fn tamper_proofs_for_tests(&self, on: bool) {
        self.inner.tamper_proofs.store(on, Ordering::Relaxed);
    }

    /// Jobs executing now.
    pub fn running(&self) -> u32 {
        self.inner.running.load(Ordering::Relaxed)
    }

    async fn answer(&self, from: PeerId, body: JobBody) -> Result<JobMessage, ProviderError> {
        match body {
            JobBody::QuoteRequest {
                job_id,
                model,
                input_tokens,
                max_output_tokens,
                ..
            } => self.quote(job_id, model, input_tokens, max_output_tokens).await,
            JobBody::Run {
                job_id,
                model,
                input,
                params,
                stream,
                proof,
            } => {
                self.inner.check_model(&model)?;
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
            // The escrow seam: nothing is held yet, the run needs no accept.
            JobBody::Accept { job_id, .. } => Ok(JobMessage::ack(job_id)),
            JobBody::Receipt(receipt) => accept_receipt(&receipt),
            JobBody::Cancel { job_id, reason } => {
                let inner = self.inner.clone();
                blocking(move || inner.cancel(from, job_id, reason)).await
            }
            JobBody::QuoteOffer { .. }
            | JobBody::Progress { .. }
            | JobBody::Result { .. }
            | JobBody::Ack { .. }
            | JobBody::Error(_) => Err(ProviderError::Unsupported(
                "a provider answers requests only (quote request, accept, run, poll, receipt, cancel)".into(),
            )),
        }
    }

    async fn quote(
        &self,
        job_id: String,
        model: String,
        input_tokens: u32,
        max_output_tokens: u32,
    ) -> Result<JobMessage, ProviderError> {
        self.inner.check_model(&model)?;
        let inner = self.inner.clone();
        let request = QuoteRequest {
            model,
            input_tokens,
            max_output_tokens,
            estimated_ms: 0,
            queue_depth: inner.running.load(Ordering::Relaxed),
            load_permille: 0,
        };
        let quote = blocking(move || match inner.node.pricing() {
            Some(p) => p
                .quote(&request)
                .map(Some)
                .map_err(|e| ProviderError::Pricing(e.to_string())),
            None => Ok(None),
        })
        .await?;
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
        Ok(JobMessage::new(JobBody::QuoteOffer {
            quote_id: format!("{job_id}-{}", crate::node::new_job_id()),
            job_id,
            price,
            breakdown,
            valid_until_ms: now_ms().saturating_add(valid_secs.saturating_mul(1000)),
        }))
    }

    /// Admits the job, replies `Ack` and runs it in the background, its
    /// tokens going to a buffer that `Poll` reads.
    async fn start_stream(
        &self,
        from: PeerId,
        job: JobRequest,
        proof: Option<String>,
    ) -> Result<JobMessage, ProviderError> {
        let inner = self.inner.clone();
        let (admission, job, proof) = blocking(move || {
            let admission = inner.admit(from, &job, proof.as_deref())?;
            Ok((admission, job, proof))
        })
        .await?;
        let job_id = job.id.clone();
        match admission {
            // Already known: `Poll` serves its stored outcome.
            Admission::Seen(outcome) => {
                if let Err(e @ ProviderError::IdReused(_)) = *outcome {
                    return Err(e);
                }
            }
            Admission::New => {
                let buffer = Arc::new(TokenBuffer::default());
                if let Ok(mut streams) = self.inner.streams.lock() {
                    streams.insert(job_id.clone(), buffer.clone());
                }
                let feed = buffer.clone();
                let sink: ProgressSink = Box::new(move |event| {
                    if let ProgressEvent::Token(t) = event {
                        feed.update(|s| s.chunks.push(t));
                    }
                });
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    let id = job.id.clone();
                    // The outcome is in the store; `Poll` reads it from there.
                    if let Err(e) =
                        blocking(move || inner.execute(from, job, Some(sink), proof)).await
                    {
                        tracing::warn!(job = %id, error = %e, "streamed job failed");
                    }
                    buffer.update(|s| s.done = true);
                });
            }
        }
        Ok(JobMessage::ack(job_id))
    }

    async fn poll(&self, job_id: String, after_seq: u64) -> Result<JobMessage, ProviderError> {
        let buffer = self
            .inner
            .streams
            .lock()
            .ok()
            .and_then(|s| s.get(&job_id).cloned());
        if let Some(buffer) = buffer {
            let (chunks, seq, done) = match buffer.after(after_seq) {
                (chunks, _, false) if chunks.is_empty() => {
                    // Wait a little for tokens rather than answer empty at once.
                    let _ = tokio::time::timeout(POLL_WAIT, buffer.changed.notified()).await;
                    buffer.after(after_seq)
                }
                now => now,
            };
            if !chunks.is_empty() || !done {
                return Ok(JobMessage::new(JobBody::Progress {
                    job_id,
                    seq,
                    chunks,
                    done,
                }));
            }
            // Everything streamed and the outcome is stored: serve it below.
            if let Ok(mut s) = self.inner.streams.lock() {
                s.remove(&job_id);
            }
        }
        let inner = self.inner.clone();
        blocking(move || match inner.store.jobs().get(&job_id)? {
            Some(record) if record.role == JobRole::Provider => stored_outcome(&record),
            _ => Err(ProviderError::UnknownJob(job_id)),
        })
        .await
    }
}

impl JobHandler for ProviderHandler {
    async fn handle(&self, from: PeerId, msg: JobMessage) -> JobMessage {
        let job_id = msg.job_id().map(str::to_owned);
        match self.answer(from, msg.body).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(peer = %from, job = ?job_id, error = %e, "job request refused");
                JobMessage::error(job_id, e.code(), e.to_string())
            }
        }
    }
}

impl Inner {
    /// Refuses a proof request this node cannot serve.
    fn check_proof(&self, model: &str, system: &str) -> Result<(), ProviderError> {
        match self.node.prover(model) {
            Some(p) if p.system == system => Ok(()),
            Some(p) => Err(ProviderError::ProofUnavailable(format!(
                "model `{model}` is proved in `{}` here, not `{system}`",
                p.system
            ))),
            None => Err(ProviderError::ProofUnavailable(format!(
                "this provider does not prove model `{model}` (asked for a `{system}` proof)"
            ))),
        }
    }

    /// Proves `job`'s output with the model's prover and checks that the
    /// backend's `output` is the proved one.
    fn prove(
        &self,
        job: &JobRequest,
        output: &WireOutput,
        system: &str,
    ) -> Result<ProofAttachment, ProviderError> {
        self.check_proof(&job.model, system)?;
        let proved_model = self
            .node
            .prover(&job.model)
            .ok_or_else(|| ProviderError::ProofUnavailable(job.model.clone()))?;
        let JobInput::Bytes(bytes) = &job.input else {
            return Err(ProviderError::Proof(
                "groth16 proofs need a bytes input (int8 values)".into(),
            ));
        };
        let x: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let prover = &proved_model.prover;
        let started = std::time::Instant::now();
        let proved = prover
            .prove(&x)
            .map_err(|e| ProviderError::Proof(e.to_string()))?;
        tracing::info!(job = %job.id, prove_ms = started.elapsed().as_millis() as u64, "groth16 proof");
        let matches = match output {
            WireOutput::Bytes(b) => decode_logits(b).as_deref() == Some(&proved.output[..]),
            WireOutput::Classes(c) => {
                c.len() == 1
                    && usize::try_from(c[0]).ok()
                        == Some(infernet_verifier::quant::argmax(&proved.output))
            }
            _ => false,
        };
        if !matches {
            return Err(ProviderError::Proof(
                "the backend's output is not the proved model's output".into(),
            ));
        }
        let mut envelope = proved.envelope;
        if self.tamper_proofs.load(Ordering::Relaxed) {
            if let Some(b) = envelope.proof.get_mut(40) {
                *b ^= 0x01;
            }
        }
        let vk = infernet_verifier::groth16::vk_bytes(prover.vk())
            .map_err(|e| ProviderError::Proof(e.to_string()))?;
        Ok(ProofAttachment {
            system: system.to_string(),
            envelope: serde_json::to_vec(&envelope)
                .map_err(|e| ProviderError::Proof(e.to_string()))?,
            vk,
            logits: proved.output,
        })
    }

    fn check_model(&self, model: &str) -> Result<(), ProviderError> {
        let available = self.node.models();
        if available.iter().any(|m| m == model) {
            Ok(())
        } else {
            Err(ProviderError::UnknownModel {
                model: model.into(),
                available,
            })
        }
    }

    /// A client's `Cancel`: a job not yet delivered ends `failed` and its
    /// result, if the backend still produces one, is discarded (a running
    /// plugin call is not interrupted). Unknown or finished jobs: `Ack`.
    fn cancel(
        &self,
        client: PeerId,
        job_id: String,
        reason: String,
    ) -> Result<JobMessage, ProviderError> {
        let jobs = self.store.jobs();
        if let Some(r) = jobs.get(&job_id)? {
            if r.role != JobRole::Provider || r.client_peer.as_deref() != Some(&client.to_string())
            {
                return Err(ProviderError::UnknownJob(job_id));
            }
            if r.state < JobState::Delivered && JobState::can_transition(r.state, JobState::Failed)
            {
                let message = format!("cancelled by the client: {reason}");
                let update = JobUpdate {
                    error: Some(message.clone()),
                    ..JobUpdate::default()
                };
                match jobs.transition_with(&job_id, r.state, JobState::Failed, &message, &update) {
                    Ok(()) | Err(StoreError::StateConflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(JobMessage::ack(job_id))
    }

    /// Inserts the provider-role row, or finds the earlier one.
    fn admit(
        &self,
        client: PeerId,
        job: &JobRequest,
        proof: Option<&str>,
    ) -> Result<Admission, ProviderError> {
        let request_hash = request_hash(job, proof);
        let new = NewJob {
            id: job.id.clone(),
            role: JobRole::Provider,
            model: job.model.clone(),
            request_hash: request_hash.clone(),
            request: Some(serde_json::json!({ "params": job.params })),
            client_peer: Some(client.to_string()),
            provider_peer: Some(self.key.public().to_peer_id().to_string()),
        };
        match self.store.jobs().insert(&new) {
            Ok(_) => Ok(Admission::New),
            Err(StoreError::DuplicateJob(id)) => {
                let record = self
                    .store
                    .jobs()
                    .get(&id)?
                    .ok_or_else(|| ProviderError::UnknownJob(id.clone()))?;
                if record.role != JobRole::Provider || record.request_hash != request_hash {
                    return Ok(Admission::Seen(Box::new(Err(ProviderError::IdReused(id)))));
                }
                Ok(Admission::Seen(Box::new(stored_outcome(&record))))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Walks an admitted job to `running`, runs it, and stores the outcome
    /// (`delivered` with the signed result, or `failed`).
    fn execute(
        &self,
        client: PeerId,
        job: JobRequest,
        sink: Option<ProgressSink>,
        proof: Option<String>,
    ) -> Result<JobMessage, ProviderError> {
        let jobs = self.store.jobs();
        let id = job.id.clone();
        let steps = [
            (
                JobState::Created,
                JobState::Quoted,
                "run requested".to_string(),
            ),
            (JobState::Quoted, JobState::Escrowed, "no escrow yet".into()),
            (
                JobState::Escrowed,
                JobState::Assigned,
                format!("client {client}"),
            ),
            (JobState::Assigned, JobState::Running, String::new()),
        ];
        let steps: Vec<(JobState, JobState, &str)> =
            steps.iter().map(|(f, t, d)| (*f, *t, d.as_str())).collect();
        let outcome = jobs
            .transition_path(&id, &steps)
            .map_err(ProviderError::from)
            .and_then(|()| {
                self.running.fetch_add(1, Ordering::Relaxed);
                let result = self.node.run(&job, sink);
                self.running.fetch_sub(1, Ordering::Relaxed);
                result.map_err(|e| ProviderError::Backend(e.to_string()))
            })
            .and_then(|result| {
                let output = to_wire_output(result.output);
                let usage = Usage {
                    input_tokens: result.usage.input_tokens,
                    output_tokens: result.usage.output_tokens,
                };
                let proof = match &proof {
                    Some(system) => Some(Box::new(self.prove(&job, &output, system)?)),
                    None => None,
                };
                let signed = self.sign(client, &job, &output, usage, proof.as_deref())?;
                let reply = JobMessage::new(JobBody::Result {
                    output,
                    signed,
                    proof,
                });
                let update = JobUpdate {
                    result: Some(stored_result(&reply)?),
                    ..JobUpdate::default()
                };
                jobs.transition_with(&id, JobState::Running, JobState::Delivered, "", &update)?;
                Ok(reply)
            });
        if let Err(e) = &outcome {
            self.mark_failed(&id, e);
        }
        outcome
    }

    fn mark_failed(&self, id: &str, error: &ProviderError) {
        let jobs = self.store.jobs();
        let state = match jobs.get(id) {
            Ok(Some(r)) => r.state,
            _ => return,
        };
        if !JobState::can_transition(state, JobState::Failed) {
            return;
        }
        let message = error.to_string();
        let update = JobUpdate {
            error: Some(message.clone()),
            ..JobUpdate::default()
        };
        if let Err(e) = jobs.transition_with(id, state, JobState::Failed, &message, &update) {
            tracing::error!(job = %id, error = %e, "cannot record job failure");
        }
    }

    fn sign(
        &self,
        client: PeerId,
        job: &JobRequest,
        output: &WireOutput,
        usage: Usage,
        proof: Option<&ProofAttachment>,
    ) -> Result<SignedResult, ProviderError> {
        let manifest = self
            .node
            .backends()
            .iter()
            .find(|b| b.plugin.model_ids().contains(&job.model))
            .map(|b| &b.plugin.loaded.manifest)
            .ok_or_else(|| ProviderError::UnknownModel {
                model: job.model.clone(),
                available: self.node.models(),
            })?;
        let body = ResultBody {
            job_id: job.id.clone(),
            model_id: job.model.clone(),
            output_hash: hash_output(output),
            usage,
            backend: BackendRef {
                name: manifest.name.clone(),
                version: manifest.version.to_string(),
                sha256: manifest.sha256.clone(),
            },
            provider: self.key.public().to_peer_id().to_string(),
            client: Some(client.to_string()),
            timestamp_ms: now_ms(),
            trace_root: None,
            proof_hash: proof.map(hash_proof),
        };
        Ok(SignedResult::sign(body, &self.key)?)
    }
}

/// What a known job's row says a repeated `Run` or a final `Poll` gets.
fn stored_outcome(record: &JobRecord) -> Result<JobMessage, ProviderError> {
    if let Some(stored) = &record.result {
        return load_result(&record.id, stored);
    }
    if record.state == JobState::Failed {
        return Err(ProviderError::FailedEarlier {
            job_id: record.id.clone(),
            message: record.error.clone().unwrap_or_default(),
        });
    }
    Err(ProviderError::InProgress(record.id.clone()))
}

/// The `Result` reply as stored in the job row: its output hash, and the
/// reply itself as hex CBOR (exact, unlike JSON floats).
fn stored_result(reply: &JobMessage) -> Result<serde_json::Value, ProviderError> {
    let (JobBody::Result { signed, .. }, Ok(cbor)) = (&reply.body, encode(reply)) else {
        return Err(ProviderError::CorruptResult(
            reply.job_id().unwrap_or_default().into(),
        ));
    };
    Ok(serde_json::json!({
        "output_hash": signed.payload.output_hash,
        "reply_cbor": hex::encode(cbor),
    }))
}

fn load_result(job_id: &str, stored: &serde_json::Value) -> Result<JobMessage, ProviderError> {
    stored
        .get("reply_cbor")
        .and_then(|v| v.as_str())
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| decode::<JobMessage>(&b).ok())
        .ok_or_else(|| ProviderError::CorruptResult(job_id.into()))
}

fn accept_receipt(receipt: &SignedReceipt) -> Result<JobMessage, ProviderError> {
    receipt.verify().map_err(ProviderError::BadReceipt)?;
    tracing::info!(job = %receipt.payload.job_id, accepted = receipt.payload.accepted, "receipt");
    Ok(JobMessage::ack(receipt.payload.job_id.clone()))
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

/// The idempotency key of a run: model, input and params (and the proof
/// system, when one is asked for).
fn request_hash(job: &JobRequest, proof: Option<&str>) -> String {
    let input = match &job.input {
        JobInput::Text(t) => WireInput::Text(t.clone()),
        JobInput::Texts(t) => WireInput::Texts(t.clone()),
        JobInput::Tokens(t) => WireInput::Tokens(t.clone()),
        JobInput::Tensor(t) => WireInput::Tensor(crate::p2p::protocol::Tensor {
            shape: t.shape.clone(),
            data: t.data.clone(),
        }),
        JobInput::Bytes(b) => WireInput::Bytes(b.clone()),
    };
    match proof {
        None => hash_value(&(&job.model, &input, &job.params)),
        Some(p) => hash_value(&(&job.model, &input, &job.params, p)),
    }
}

/// Wire input → the WIT `job-input`.
pub fn to_job_input(input: WireInput) -> JobInput {
    match input {
        WireInput::Text(t) => JobInput::Text(t),
        WireInput::Texts(t) => JobInput::Texts(t),
        WireInput::Tokens(t) => JobInput::Tokens(t),
        WireInput::Tensor(t) => JobInput::Tensor(F32Tensor {
            shape: t.shape,
            data: t.data,
        }),
        WireInput::Bytes(b) => JobInput::Bytes(b),
    }
}

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
