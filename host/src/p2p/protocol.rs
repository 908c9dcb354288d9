//! Wire messages of `/infernet/job/2` and the signed payloads that a third
//! party must be able to check later (adverts, results, receipts).
//! `docs/PROTOCOL.md` is the specification; this file is its Rust form.
//!
//! Every job-protocol frame is a [`JobMessage`]: a `version` plus a
//! [`JobBody`], encoded as CBOR behind a varint length (see
//! [`super::codec`]).
//! The exchange, each step one request/response on its own stream:
//!
//! ```text
//! client                                  provider
//!   QuoteRequest            ───────────▶    QuoteOffer | Error
//!   Accept (quote, escrow)  ───────────▶    Ack | Error
//!   Run { stream: false }   ───────────▶    Result(output, SignedResult) | Error
//!   Run { stream: true }    ───────────▶    Ack            (job started)
//!   Poll { after_seq }      ───────────▶    Progress { chunks, done } | Result | Error
//!   Receipt(SignedReceipt)  ───────────▶    Ack
//!   Cancel                  ───────────▶    Ack | Error
//! ```
//!
//! Signatures use the node's libp2p identity key over
//! `"infernet:" DOMAIN "\0"` followed by the payload's exact bytes
//! ([`super::signed`]); [`Signed::verify`] checks the key against the peer id
//! the payload claims.

use super::cbor::{bytes, floats};
pub use super::cbor::{decode, encode, hash_value, sha256_hex, CodecError, Encoded};
pub use super::signed::{signing_input, SignatureError, Signed, SignedPayload};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `version` this build writes into every message and advert.
pub const PROTOCOL_VERSION: u16 = 2;
/// Versions this build understands.
pub const KNOWN_PROTOCOL_VERSIONS: &[u16] = &[2];
/// Stream protocol of the job exchange.
pub const JOB_PROTOCOL: &str = "/infernet/job/2";
/// Gossipsub topic of provider adverts.
pub const ADVERT_TOPIC: &str = "infernet/providers/2";
/// Default cap on an encoded request (1 MiB).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Default cap on an encoded response (8 MiB).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// An amount in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (e.g. micro-dollars, satoshis).
    pub amount: u64,
    /// Currency code, e.g. `USD`, `BTC`, `USDC-POLYGON`.
    pub currency: String,
}

/// One way to pay a provider: an adapter, its account there, and the
/// currencies it takes through that adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayTo {
    /// Payment adapter name, e.g. `payment-ledger`, `payment-coinpay`.
    pub adapter: String,
    /// The provider's account (address) at that adapter.
    pub beneficiary: String,
    /// Currency codes it accepts there.
    pub currencies: Vec<String>,
    /// Pay before the run: the provider answers `Accept` with a signed
    /// [`JobBody::Committed`], and runs only once the escrow is released.
    /// Asked by a provider whose stake an arbiter holds (its advert's
    /// certificate): the stake is the collateral that it delivers
    /// (PROTOCOL §13, fair exchange).
    #[serde(default, skip_serializing_if = "is_false")]
    pub prepay: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// The escrow a client holds for a job, as it tells the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowRef {
    /// Adapter name.
    pub adapter: String,
    /// The adapter's escrow id.
    pub escrow_id: String,
    /// Amount held.
    pub amount: Money,
    /// Who paid.
    pub depositor: String,
    /// Who is paid on release.
    pub beneficiary: String,
    /// Expiry, ms since epoch.
    pub expires_at_ms: u64,
}

/// Consumption, for billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens (items) read.
    pub input_tokens: u32,
    /// Tokens (items) produced.
    pub output_tokens: u32,
}

/// A dense f32 tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<u32>,
    /// Row-major values (read from any CBOR float width).
    #[serde(deserialize_with = "floats::deserialize")]
    pub data: Vec<f32>,
}

/// A job's input (mirrors the WIT `job-input`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireInput {
    /// A prompt.
    Text(String),
    /// A batch of texts.
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
    /// A numeric tensor.
    Tensor(Tensor),
    /// Opaque bytes.
    Bytes(#[serde(with = "bytes")] Vec<u8>),
}

/// A job's output (mirrors the WIT `job-output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireOutput {
    /// Generated text.
    Text(String),
    /// One vector per input text.
    Embeddings(#[serde(deserialize_with = "floats::nested::deserialize")] Vec<Vec<f32>>),
    /// Raw scores.
    Logits(Tensor),
    /// Class index per input.
    Classes(Vec<u32>),
    /// Opaque bytes.
    Bytes(#[serde(with = "bytes")] Vec<u8>),
}

/// Which backend plugin produced a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRef {
    /// Plugin name.
    pub name: String,
    /// Plugin version (semver).
    pub version: String,
    /// sha256 (hex) of the plugin's wasm.
    pub sha256: String,
}

/// One frame of `/infernet/job/2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    /// Protocol version of the sender ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// What it says.
    pub body: JobBody,
}

impl JobMessage {
    /// A message at this build's [`PROTOCOL_VERSION`].
    pub fn new(body: JobBody) -> JobMessage {
        JobMessage {
            version: PROTOCOL_VERSION,
            body,
        }
    }

    /// An error reply.
    pub fn error(
        job_id: Option<String>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> JobMessage {
        let mut message: String = message.into();
        if message.len() > limits::MAX_TEXT_BYTES {
            // Cut on a character boundary, within the bound receivers check.
            let mut at = limits::MAX_TEXT_BYTES - 3;
            while !message.is_char_boundary(at) {
                at -= 1;
            }
            message.truncate(at);
            message.push('…');
        }
        JobMessage::new(JobBody::Error(WireError {
            job_id,
            code,
            message,
        }))
    }

    /// An acknowledgement.
    pub fn ack(job_id: impl Into<String>) -> JobMessage {
        JobMessage::new(JobBody::Ack {
            job_id: job_id.into(),
        })
    }

    /// Checks what no request may carry, whatever the handler: ids, names
    /// and texts within [`limits`], job ids of printable ASCII, at most
    /// [`limits::MAX_PARAMS`] parameters and no key twice (a gate reading
    /// the last `max_tokens` and a plugin reading the first would disagree).
    pub fn validate(&self) -> Result<(), String> {
        use limits::*;
        let bounded = |what: &str, v: &str, max: usize| {
            if v.len() > max {
                Err(format!("{what} is {} bytes, at most {max}", v.len()))
            } else {
                Ok(())
            }
        };
        let id = |what: &str, v: &str| {
            bounded(what, v, MAX_ID_BYTES)?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{what} must be 1 to {MAX_ID_BYTES} printable ASCII characters"
                ));
            }
            Ok(())
        };
        let params = |params: &[(String, String)]| {
            if params.len() > MAX_PARAMS {
                return Err(format!("{} parameters, at most {MAX_PARAMS}", params.len()));
            }
            for (i, (k, v)) in params.iter().enumerate() {
                bounded("a parameter key", k, MAX_PARAM_KEY_BYTES)?;
                bounded(&format!("parameter `{k}`"), v, MAX_PARAM_VALUE_BYTES)?;
                if params[..i].iter().any(|(other, _)| other == k) {
                    return Err(format!("duplicate parameter `{k}`: give each key once"));
                }
            }
            Ok(())
        };
        if let Some(job) = self.job_id() {
            id("job_id", job)?;
        }
        match &self.body {
            JobBody::QuoteRequest {
                model, params: p, ..
            } => {
                bounded("model", model, MAX_NAME_BYTES)?;
                params(p)
            }
            JobBody::Run {
                model,
                params: p,
                proof,
                ..
            } => {
                bounded("model", model, MAX_NAME_BYTES)?;
                bounded("proof", proof.as_deref().unwrap_or(""), MAX_NAME_BYTES)?;
                params(p)
            }
            JobBody::Accept {
                quote_id, escrow, ..
            } => {
                id("quote_id", quote_id)?;
                if let Some(e) = escrow {
                    bounded("escrow.adapter", &e.adapter, MAX_NAME_BYTES)?;
                    id("escrow.escrow_id", &e.escrow_id)?;
                    bounded("escrow.amount.currency", &e.amount.currency, MAX_NAME_BYTES)?;
                    bounded("escrow.depositor", &e.depositor, MAX_TEXT_BYTES)?;
                    bounded("escrow.beneficiary", &e.beneficiary, MAX_TEXT_BYTES)?;
                }
                Ok(())
            }
            JobBody::Cancel { reason, .. } => bounded("reason", reason, MAX_TEXT_BYTES),
            JobBody::Error(e) => bounded("message", &e.message, MAX_TEXT_BYTES),
            JobBody::Trace { query, ticket, .. } => {
                use super::verification::{TraceQuery, MAX_REVEAL_DIGESTS};
                if let TraceQuery::Reveal { digests, .. } = query {
                    if digests.len() > MAX_REVEAL_DIGESTS {
                        return Err(format!(
                            "{} digests in one reveal, at most {MAX_REVEAL_DIGESTS}",
                            digests.len()
                        ));
                    }
                }
                if let Some(t) = ticket {
                    id("ticket.job_id", &t.payload.job_id)?;
                    bounded("ticket.client", &t.payload.client, MAX_NAME_BYTES)?;
                    bounded("ticket.referee", &t.payload.referee, MAX_NAME_BYTES)?;
                }
                Ok(())
            }
            JobBody::Dispute { dispute, .. } => {
                if dispute.results.len() != 2 || dispute.tickets.len() != 2 {
                    return Err("a dispute carries exactly two results and two tickets".into());
                }
                bounded("job.model", &dispute.job.model, MAX_NAME_BYTES)?;
                if let Some(p) = &dispute.payout {
                    bounded("payout.adapter", &p.adapter, MAX_NAME_BYTES)?;
                    bounded("payout.account", &p.account, MAX_NAME_BYTES)?;
                }
                params(&dispute.job.params)
            }
            JobBody::Claim(c) | JobBody::Deliver { claim: c, .. } => {
                let c = &c.payload;
                for (what, v) in [
                    ("claim.client", &c.client),
                    ("claim.provider", &c.provider),
                    ("claim.arbiter", &c.arbiter),
                    ("claim.escrow.adapter", &c.escrow.adapter),
                    ("claim.escrow.amount.currency", &c.escrow.amount.currency),
                ] {
                    bounded(what, v, MAX_NAME_BYTES)?;
                }
                id("claim.job_id", &c.job_id)?;
                id("claim.escrow.escrow_id", &c.escrow.escrow_id)?;
                bounded(
                    "claim.escrow.depositor",
                    &c.escrow.depositor,
                    MAX_TEXT_BYTES,
                )?;
                bounded(
                    "claim.escrow.beneficiary",
                    &c.escrow.beneficiary,
                    MAX_TEXT_BYTES,
                )
            }
            JobBody::Stake(s) => {
                bounded("adapter", &s.adapter, MAX_NAME_BYTES)?;
                bounded("amount.currency", &s.amount.currency, MAX_NAME_BYTES)?;
                bounded("depositor", &s.depositor, MAX_NAME_BYTES)
            }
            _ => Ok(()),
        }
    }

    /// The job this message is about, when it names one.
    pub fn job_id(&self) -> Option<&str> {
        self.body.job_id()
    }
}

impl JobBody {
    /// The job this body is about, when it names one.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            JobBody::QuoteRequest { job_id, .. }
            | JobBody::QuoteOffer { job_id, .. }
            | JobBody::Accept { job_id, .. }
            | JobBody::Run { job_id, .. }
            | JobBody::Poll { job_id, .. }
            | JobBody::Progress { job_id, .. }
            | JobBody::Ack { job_id }
            | JobBody::Committed { job_id, .. }
            | JobBody::Cancel { job_id, .. } => Some(job_id),
            JobBody::Result { signed, .. } => Some(&signed.payload.job_id),
            JobBody::Receipt(r) => Some(&r.payload.job_id),
            JobBody::Error(e) => e.job_id.as_deref(),
            JobBody::Trace { job_id, .. }
            | JobBody::TraceAnswer { job_id, .. }
            | JobBody::Dispute { job_id, .. }
            | JobBody::Ruling { job_id, .. } => Some(job_id),
            JobBody::Claim(c) => Some(&c.payload.job_id),
            JobBody::Deliver { job_id, .. }
            | JobBody::Audit { job_id, .. }
            | JobBody::Audited { job_id, .. } => Some(job_id),
            JobBody::Stake(_) | JobBody::StakeState(_) => None,
        }
    }

    /// Whether the body belongs on `/infernet/verify/1` (else on the job
    /// protocol); a body on the other protocol is refused.
    pub fn is_verification(&self) -> bool {
        matches!(
            self,
            JobBody::Trace { .. }
                | JobBody::TraceAnswer { .. }
                | JobBody::Dispute { .. }
                | JobBody::Ruling { .. }
                | JobBody::Stake(_)
                | JobBody::StakeState(_)
                | JobBody::Claim(_)
                | JobBody::Deliver { .. }
                | JobBody::Audit { .. }
                | JobBody::Audited { .. }
        )
    }
}

/// Bounds on what a peer may put in a job message, checked by
/// [`JobMessage::validate`] before anything is stored, logged or run.
pub mod limits {
    /// A job, quote or escrow id, in bytes.
    pub const MAX_ID_BYTES: usize = 128;
    /// A model id or currency code, in bytes.
    pub const MAX_NAME_BYTES: usize = 128;
    /// Parameters per request.
    pub const MAX_PARAMS: usize = 32;
    /// A parameter key, in bytes.
    pub const MAX_PARAM_KEY_BYTES: usize = 64;
    /// A parameter value, in bytes.
    pub const MAX_PARAM_VALUE_BYTES: usize = 1024;
    /// A free-text field (cancel reason, error message), in bytes.
    pub const MAX_TEXT_BYTES: usize = 1024;
}

/// The content of a [`JobMessage`].
// A `Result` (with its signed, bound result) is the largest body; a message
// is built and moved a few times per job, so its size costs nothing worth
// a box in every match on it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobBody {
    /// Client → provider: price this job.
    QuoteRequest {
        /// Client-chosen job id.
        job_id: String,
        /// Model id.
        model: String,
        /// Input size in tokens (client's estimate; a provider that gets
        /// `input` counts it itself).
        input_tokens: u32,
        /// Upper bound on output tokens.
        max_output_tokens: u32,
        /// Generation parameters.
        params: Vec<(String, String)>,
        /// The input itself, so the provider prices what it will run rather
        /// than the client's count. Optional: without it the quote holds for
        /// at most `input_tokens`, checked at `Run`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<WireInput>,
    },
    /// Provider → client: an offer.
    QuoteOffer {
        /// Job.
        job_id: String,
        /// Offer id, echoed in [`JobBody::Accept`].
        quote_id: String,
        /// Total price.
        price: Money,
        /// Named parts of the price.
        breakdown: Vec<(String, u64)>,
        /// Offer expiry, ms since epoch.
        valid_until_ms: u64,
        /// How this provider can be paid (one entry per payment adapter);
        /// empty: it runs jobs unpaid.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pay_to: Vec<PayTo>,
    },
    /// Client → provider: accept an offer, naming the escrow that holds
    /// the price (when the provider is paid).
    Accept {
        /// Job (wire id).
        job_id: String,
        /// The accepted offer.
        quote_id: String,
        /// The escrow holding the price.
        escrow: Option<EscrowRef>,
    },
    /// Client → provider: execute.
    Run {
        /// Job.
        job_id: String,
        /// Model id.
        model: String,
        /// Input.
        input: WireInput,
        /// Generation parameters.
        params: Vec<(String, String)>,
        /// Reply `Ack` now and stream through `Poll`, instead of replying with
        /// the final `Result`.
        stream: bool,
        /// Proof system the result must be proved in (`"groth16"`), if any.
        /// Absent on the wire when `None`, so older peers decode the frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
    },
    /// Client → provider: partial output after chunk `after_seq`.
    Poll {
        /// Job.
        job_id: String,
        /// Last chunk already received (0 for none).
        after_seq: u64,
    },
    /// Provider → client: new chunks (tokens) of a streamed run.
    Progress {
        /// Job.
        job_id: String,
        /// Sequence number of the last chunk in `chunks`.
        seq: u64,
        /// New chunks, in order.
        chunks: Vec<String>,
        /// No more chunks; the next `Poll` returns the `Result`.
        done: bool,
    },
    /// Provider → client: the final output and its signed description.
    Result {
        /// The output, as a byte string of its CBOR: `signed.output_hash`
        /// is the sha256 of exactly these bytes.
        output: Encoded<WireOutput>,
        /// Provider-signed result.
        signed: SignedResult,
        /// The proof asked for with `Run { proof }`, as a byte string of its
        /// CBOR; `signed.proof_hash` is the sha256 of these bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<Box<Encoded<ProofAttachment>>>,
    },
    /// Client → provider: proof of delivery.
    Receipt(SignedReceipt),
    /// Provider → client, answering `Accept` of a prepaid offer: its
    /// signed commitment to deliver this job once the escrow is released
    /// (what the client's claim rests on if it does not).
    Committed {
        /// Job (wire id).
        job_id: String,
        /// The signed commitment.
        commitment: Box<super::verification::SignedCommitment>,
    },
    /// Either way: understood.
    Ack {
        /// Job.
        job_id: String,
    },
    /// Client → provider: stop.
    Cancel {
        /// Job.
        job_id: String,
        /// Why.
        reason: String,
    },
    /// Either way: refused.
    Error(WireError),
    /// `/infernet/verify/1`, verifier → provider: a question about a
    /// delivered job's trace, from its client or a referee with the
    /// client's ticket.
    Trace {
        /// The provider's job id.
        job_id: String,
        /// The question.
        query: super::verification::TraceQuery,
        /// The client's permission, when the asker is not the client.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Box<super::verification::SignedTicket>>,
    },
    /// `/infernet/verify/1`, provider → verifier: the answer.
    TraceAnswer {
        /// Job.
        job_id: String,
        /// The answer.
        answer: super::verification::TraceAnswer,
    },
    /// `/infernet/verify/1`, client → referee: rule on two results.
    Dispute {
        /// The client's job id.
        job_id: String,
        /// The results, the job, the tickets.
        dispute: Box<super::verification::DisputeRequest>,
    },
    /// `/infernet/verify/1`, referee → client: the evidence (JSON).
    Ruling {
        /// Job.
        job_id: String,
        /// The evidence bundle, JSON.
        #[serde(with = "bytes")]
        evidence: Vec<u8>,
        /// What the ruling did to the cheaters' stakes held by this
        /// referee (empty: none cheated, or it holds none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        slashes: Vec<super::verification::SlashReport>,
    },
    /// `/infernet/verify/1`, provider → arbiter: hold, report on or
    /// release this provider's stake.
    Stake(super::verification::StakeRequest),
    /// `/infernet/verify/1`, arbiter → provider: the stake as held.
    StakeState(Box<super::verification::StakeState>),
    /// `/infernet/verify/1`, client → arbiter: a prepaid job was not
    /// delivered. Answered with the `Result` (the arbiter obtained it from
    /// the provider) or a `Ruling` whose `slashes` say what the provider
    /// forfeited.
    Claim(Box<super::verification::SignedClaim>),
    /// `/infernet/verify/1`, arbiter → provider: deliver the claimed job's
    /// result (answered with the `Result`).
    Deliver {
        /// The provider's job id.
        job_id: String,
        /// The client's claim.
        claim: Box<super::verification::SignedClaim>,
    },
    /// `/infernet/verify/1`, client → verifier: the verifier re-ran job
    /// `job_id` (a spot check's replica, paid like any job); compare it
    /// with another provider's result of the same job.
    Audit {
        /// The verifier's job id (its replica).
        job_id: String,
        /// The audited provider's signed result.
        result: Box<SignedResult>,
    },
    /// `/infernet/verify/1`, verifier → client: what the comparison found,
    /// with the attestation it signed and gossiped when they agreed (a
    /// disagreement is the referee's to rule on and attest).
    Audited {
        /// The verifier's job id.
        job_id: String,
        /// Same output and same trace.
        agreed: bool,
        /// The verifier's `verified` attestation of the audited provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attestation: Option<Box<super::attestation::SignedAttestation>>,
    },
}

/// A refusal with a machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Job, if the error is about one.
    pub job_id: Option<String>,
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Failure kinds on the job protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The message's `version` is not spoken here.
    UnsupportedVersion,
    /// This node does not serve jobs.
    NotAProvider,
    /// No backend for the model.
    UnknownModel,
    /// No such job here.
    UnknownJob,
    /// The request is well-formed CBOR but makes no sense.
    InvalidRequest,
    /// The quote expired or is unknown.
    QuoteExpired,
    /// At capacity; try another provider.
    Busy,
    /// The job was cancelled.
    Cancelled,
    /// A step took too long.
    Timeout,
    /// A signature did not verify.
    BadSignature,
    /// The backend failed.
    /// The provider is paid and the accept or run lacks a confirmed escrow.
    PaymentRequired,
    Internal,
}

// ---------------------------------------------------------------------------
// Signed payloads

/// The signed description of a delivered result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultBody {
    /// Job.
    pub job_id: String,
    /// Model id.
    pub model_id: String,
    /// [`hash_output`] of the output.
    pub output_hash: String,
    /// Consumption.
    pub usage: Usage,
    /// The backend plugin that ran it.
    pub backend: BackendRef,
    /// Provider peer id (the signer).
    pub provider: String,
    /// Client peer id, when known.
    pub client: Option<String>,
    /// When it was signed, ms since epoch.
    pub timestamp_ms: u64,
    /// Root of the job's kernel trace, `<calls>:<hex root>` (see
    /// `kernels::trace`): what disputes bisect.
    pub trace_root: Option<String>,
    /// [`hash_proof`] of the attached proof, when one was asked for (so the
    /// signature covers it). Not encoded when `None`: results without proofs
    /// sign the same bytes as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_hash: Option<String>,
    /// What else decided the output (weights, input, parameters) and the
    /// terms it was run on: two results with equal [`ResultBody::execution`]
    /// must have equal outputs. Not encoded when `None` (results signed
    /// before it existed verify unchanged); a client that verifies
    /// requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binds: Option<ResultBinds>,
}

/// The inputs and terms a signed result binds besides its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultBinds {
    /// The model's weights hash (`ModelEntry::weights_hash`: config,
    /// tokenizer and safetensors files).
    pub weights_hash: String,
    /// [`hash_value`] of the job's [`WireInput`].
    pub input_hash: String,
    /// The job's parameters as run (sampler, seed, max tokens, …).
    pub params: Vec<(String, String)>,
    /// The accepted quote (none for a free job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<QuoteRef>,
}

/// An accepted quote, as a result names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRef {
    /// Quote id.
    pub id: String,
    /// Its price.
    pub price: Money,
}

/// What must agree for two results to be comparable: one model's weights
/// run by one plugin on one input with one set of parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Execution {
    /// Model id.
    pub model_id: String,
    /// Weights hash.
    pub weights_hash: String,
    /// Backend plugin sha256.
    pub backend_sha256: String,
    /// Input hash.
    pub input_hash: String,
    /// Parameters, sorted by key.
    pub params: Vec<(String, String)>,
}

impl ResultBody {
    /// Whether `other` signed the same output and the same kernel trace:
    /// what makes two executions of one job agree.
    pub fn agrees_with(&self, other: &ResultBody) -> bool {
        self.output_hash == other.output_hash && self.trace_root == other.trace_root
    }

    /// The execution this result claims (`None` without [`ResultBinds`]).
    pub fn execution(&self) -> Option<Execution> {
        let b = self.binds.as_ref()?;
        let mut params = b.params.clone();
        params.sort();
        Some(Execution {
            model_id: self.model_id.clone(),
            weights_hash: b.weights_hash.clone(),
            backend_sha256: self.backend.sha256.clone(),
            input_hash: b.input_hash.clone(),
            params,
        })
    }
}

/// A zk proof attached to a [`JobBody::Result`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofAttachment {
    /// Proof system as requested (`"groth16"`).
    pub system: String,
    /// The proof envelope (`infernet_verifier::ProofEnvelope`) as JSON.
    #[serde(with = "bytes")]
    pub envelope: Vec<u8>,
    /// The verifying key (compressed); its sha256 must be the advertised
    /// `vk_id`.
    #[serde(with = "bytes")]
    pub vk: Vec<u8>,
    /// The proved raw integer logits (the output the statement is about;
    /// a class output must be their argmax).
    pub logits: Vec<i64>,
}

/// What a provider advertises about one model it proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofAdvert {
    /// Model id.
    pub model: String,
    /// Proof system (`"groth16"`).
    pub system: String,
    /// Hex sha256 of the compressed verifying key.
    pub vk_id: String,
    /// Hex commitment to the model's weights (Poseidon).
    pub model_commitment: String,
    /// Layer widths, input first (the circuit shape).
    pub dims: Vec<u32>,
    /// Requantisation shift per layer (the circuit shape).
    pub shifts: Vec<u32>,
    /// Hex ed25519 key of the model publisher whose key bundle the
    /// verifying key comes from; absent: the provider ran its own setup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// The publisher's hex signature over the key statement (system,
    /// model commitment, dims, shifts, vk id; `infernet_verifier::bundle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_signature: Option<String>,
}

impl SignedPayload for ResultBody {
    const DOMAIN: &'static str = "result/2";
    fn signer(&self) -> &str {
        &self.provider
    }
}

/// A provider-signed result.
pub type SignedResult = Signed<ResultBody>;

impl SignedResult {
    /// [`Signed::verify`] plus: the output bytes as received hash to
    /// `output_hash`.
    pub fn verify_output(&self, output: &Encoded<WireOutput>) -> Result<PeerId, SignatureError> {
        let signer = self.verify()?;
        if output.hash() != self.payload.output_hash {
            return Err(SignatureError::BadSignature);
        }
        Ok(signer)
    }
}

/// The client's acknowledgement of a delivered result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// Job.
    pub job_id: String,
    /// The output hash the client received.
    pub output_hash: String,
    /// Client peer id (the signer).
    pub client: String,
    /// Provider peer id.
    pub provider: String,
    /// Whether the client accepts the result.
    pub accepted: bool,
    /// When, ms since epoch.
    pub timestamp_ms: u64,
    /// The escrow's status as the client's adapter reported it on release
    /// (`released` or `settled`), for a provider that cannot see that
    /// adapter itself (`confirm = "client"`). Not encoded when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow_status: Option<String>,
}

impl SignedPayload for ReceiptBody {
    const DOMAIN: &'static str = "receipt/2";
    fn signer(&self) -> &str {
        &self.client
    }
}

/// A client-signed receipt.
pub type SignedReceipt = Signed<ReceiptBody>;

/// A provider advert, gossiped on [`ADVERT_TOPIC`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advert {
    /// Provider peer id (the signer).
    pub peer_id: String,
    /// Where to reach it.
    pub addrs: Vec<String>,
    /// Model ids it serves.
    pub models: Vec<String>,
    /// Reference price (per job of typical size) from the pricing plugin.
    pub quote: Money,
    /// Jobs it can take concurrently right now.
    pub capacity: u32,
    /// `infernet:plugin` WIT version its host implements.
    pub wit_version: String,
    /// Job protocol version ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// Stake posted, if any: with `stake_cert`, held by an arbiter that
    /// can slash it; without, only the provider's word.
    pub stake: Option<Money>,
    /// The arbiter's signed certificate for `stake`. Absent from older
    /// adverts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stake_cert: Option<Box<super::verification::SignedStakeCert>>,
    /// When it was signed, ms since epoch.
    pub timestamp_ms: u64,
    /// Models it proves results for, with the verifying key's id. Absent
    /// from older adverts (decodes as empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs: Vec<ProofAdvert>,
    /// A verifier (`infernet verifier start`): it re-runs jobs for the
    /// spot checks of clients that trust it, and clients do not send it
    /// ordinary work. Absent from other adverts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verifier: bool,
    /// Models (of `models`) whose results carry no kernel trace of how
    /// they were computed: a backend that forwards jobs to an engine over
    /// HTTP. Replication still compares their outputs; a dispute cannot
    /// bisect them. Absent from other adverts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untraced: Vec<String>,
}

impl Advert {
    /// The proof entry for `model` in `system`, if advertised.
    pub fn proof_for(&self, model: &str, system: &str) -> Option<&ProofAdvert> {
        self.proofs
            .iter()
            .find(|p| p.model == model && p.system == system)
    }
}

impl SignedPayload for Advert {
    const DOMAIN: &'static str = "advert/2";
    fn signer(&self) -> &str {
        &self.peer_id
    }
}

/// A provider-signed advert.
pub type SignedAdvert = Signed<Advert>;

// ---------------------------------------------------------------------------
// Hashes and time

/// sha256 (hex) of this node's encoding of `output`: the `output_hash` of a
/// result this node signs (a received result is checked against the bytes
/// it carried, [`Encoded::hash`]).
pub fn hash_output(output: &WireOutput) -> String {
    hash_value(output)
}

/// sha256 (hex) of this node's encoding of a proof attachment.
pub fn hash_proof(proof: &ProofAttachment) -> String {
    hash_value(proof)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    fn advert(key: &Keypair) -> Advert {
        Advert {
            peer_id: key.public().to_peer_id().to_string(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            models: vec!["m".into()],
            quote: Money {
                amount: 5,
                currency: "USD".into(),
            },
            capacity: 2,
            wit_version: "0.2.0".into(),
            protocol_version: PROTOCOL_VERSION,
            stake: None,
            stake_cert: None,
            timestamp_ms: now_ms(),
            proofs: vec![],
            verifier: false,
            untraced: vec![],
        }
    }

    /// The same advert with one field changed, keeping the old signature.
    fn forge(signed: &SignedAdvert, change: impl FnOnce(&mut Advert)) -> SignedAdvert {
        let mut a = signed.payload.value().clone();
        change(&mut a);
        Signed {
            payload: Encoded::new(a).unwrap(),
            ..signed.clone()
        }
    }

    #[test]
    fn proof_fields_are_optional_and_signed() {
        let key = Keypair::generate_ed25519();
        // An advert without proofs has no `proofs` key and decodes with none.
        let plain = encode(&advert(&key)).unwrap();
        assert!(!plain.windows(6).any(|w| w == b"proofs"));
        let back: Advert = decode(&plain).unwrap();
        assert!(back.proofs.is_empty());
        let mut a = advert(&key);
        a.proofs.push(ProofAdvert {
            model: "m".into(),
            system: "groth16".into(),
            vk_id: "aa".into(),
            model_commitment: "bb".into(),
            dims: vec![2, 1],
            shifts: vec![0],
            publisher: None,
            key_signature: None,
        });
        let signed = SignedAdvert::sign(a, &key).unwrap();
        let back: SignedAdvert = decode(&encode(&signed).unwrap()).unwrap();
        assert_eq!(back.payload.proof_for("m", "groth16").unwrap().vk_id, "aa");
        assert!(back.payload.proof_for("m", "ezkl").is_none());
        let forged = forge(&back, |a| a.proofs[0].vk_id = "cc".into());
        assert_eq!(forged.verify(), Err(SignatureError::BadSignature));
        // A Run without `proof` has no such key on the wire.
        let run = JobMessage::new(JobBody::Run {
            job_id: "j".into(),
            model: "m".into(),
            input: WireInput::Text("x".into()),
            params: vec![],
            stream: false,
            proof: None,
        });
        let bytes = encode(&run).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"proof"));
        assert_eq!(decode::<JobMessage>(&bytes).unwrap(), run);
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = Keypair::generate_ed25519();
        let signed = SignedAdvert::sign(advert(&key), &key).unwrap();
        assert_eq!(signed.verify().unwrap(), key.public().to_peer_id());
        let bytes = encode(&signed).unwrap();
        let back: SignedAdvert = decode(&bytes).unwrap();
        assert_eq!(back, signed);

        let forged = forge(&signed, |a| a.quote.amount = 1);
        assert_eq!(forged.verify(), Err(SignatureError::BadSignature));

        let other = Keypair::generate_ed25519();
        let mut stolen = signed.clone();
        stolen.public_key = other.public().encode_protobuf();
        assert!(matches!(
            stolen.verify(),
            Err(SignatureError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn a_signature_is_over_the_bytes_received_not_a_re_encoding() {
        // The same advert encoded by another encoder: fields in reverse
        // order. It signs and verifies as those bytes.
        let key = Keypair::generate_ed25519();
        let a = advert(&key);
        let theirs = reversed_map(&encode(&a).unwrap());
        assert_ne!(theirs, encode(&a).unwrap());
        let payload = Encoded::<Advert>::from_bytes(theirs.clone()).unwrap();
        assert_eq!(payload.value(), &a);
        let signed = SignedAdvert::sign_encoded(payload, &key).unwrap();
        let back: SignedAdvert = decode(&encode(&signed).unwrap()).unwrap();
        assert_eq!(back.payload.bytes(), &theirs[..]);
        assert_eq!(back.verify().unwrap(), key.public().to_peer_id());
        // A signature is domain-separated: an advert's signature over the
        // same bytes does not verify as a result or a receipt.
        assert_ne!(
            signing_input::<Advert>(&theirs),
            signing_input::<ResultBody>(&theirs)
        );
    }

    /// A top-level CBOR map (≤ 23 entries) with its entries in reverse order.
    fn reversed_map(bytes: &[u8]) -> Vec<u8> {
        let n = (bytes[0] - 0xa0) as usize;
        let mut entries = Vec::new();
        let mut rest = &bytes[1..];
        for _ in 0..n {
            let k = item_len(rest);
            let v = item_len(&rest[k..]);
            entries.push(rest[..k + v].to_vec());
            rest = &rest[k + v..];
        }
        let mut out = vec![bytes[0]];
        for e in entries.into_iter().rev() {
            out.extend(e);
        }
        out
    }

    /// Length of the first CBOR item (enough of CBOR for `advert`).
    fn item_len(b: &[u8]) -> usize {
        let (major, info) = (b[0] >> 5, b[0] & 0x1f);
        let (arg, head) = match info {
            0..=23 => (info as usize, 1),
            24 => (b[1] as usize, 2),
            25 => (u16::from_be_bytes([b[1], b[2]]) as usize, 3),
            26 => (u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize, 5),
            27 => (u64::from_be_bytes(b[1..9].try_into().unwrap()) as usize, 9),
            _ => panic!("indefinite item"),
        };
        match major {
            0 | 1 | 7 => head,
            2 | 3 => head + arg,
            4 => {
                let mut n = head;
                for _ in 0..arg {
                    n += item_len(&b[n..]);
                }
                n
            }
            5 => {
                let mut n = head;
                for _ in 0..2 * arg {
                    n += item_len(&b[n..]);
                }
                n
            }
            _ => panic!("unexpected major type {major}"),
        }
    }

    #[test]
    fn result_output_hash_is_over_the_carried_bytes() {
        let key = Keypair::generate_ed25519();
        let output = Encoded::new(WireOutput::Text("hi".into())).unwrap();
        let body = ResultBody {
            job_id: "j".into(),
            model_id: "m".into(),
            output_hash: output.hash(),
            usage: Usage {
                input_tokens: 1,
                output_tokens: 1,
            },
            backend: BackendRef {
                name: "b".into(),
                version: "1.0.0".into(),
                sha256: "00".into(),
            },
            provider: key.public().to_peer_id().to_string(),
            client: None,
            timestamp_ms: now_ms(),
            trace_root: None,
            proof_hash: None,
            binds: None,
        };
        assert_eq!(output.hash(), hash_output(output.value()));
        let signed = SignedResult::sign(body, &key).unwrap();
        assert!(signed.verify_output(&output).is_ok());
        let other = Encoded::new(WireOutput::Text("ho".into())).unwrap();
        assert!(signed.verify_output(&other).is_err());
    }
}
