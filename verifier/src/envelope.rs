//! Prover abstraction: the proof envelope and the `Prover` / `ProofVerifier`
//! traits shared by every proof system (Groth16 and ezkl).
//!
//! A prover turns an input into an output plus a [`ProofEnvelope`]. A verifier
//! never trusts the envelope's public inputs: it recomputes them from the
//! [`Statement`] it wants to check (the model it expects, the input it sent or
//! its commitment, the output it received), rejects any difference, and only
//! then runs the cryptographic check.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A proof plus the public data needed to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofEnvelope {
    /// Proof system, e.g. [`crate::groth16::SYSTEM`] (`"groth16-bn254"`).
    pub system: String,
    /// Hex commitment to the model (for Groth16: a Poseidon hash of the
    /// quantized weights, 32 bytes big-endian).
    pub model_commitment: String,
    /// Public inputs in circuit order, as canonical decimal field elements.
    pub public_inputs: Vec<String>,
    /// Serialized proof (for Groth16: ark-serialize compressed).
    pub proof: Vec<u8>,
    /// Hex sha256 of the serialized (compressed) verifying key.
    pub vk_id: String,
}

/// How the verifier learns the input of the statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputClaim {
    /// The verifier knows the (quantized) input itself. In committed-input
    /// mode it hashes it to the commitment on its own.
    Plain(Vec<i8>),
    /// Only the input's commitment is known (hex), committed-input mode only.
    Commitment(String),
}

/// What a verifier wants to be convinced of: "the model with this commitment
/// maps this input to this output".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// Expected model commitment (hex), e.g. from the provider's advert.
    pub model_commitment: String,
    /// The input, or its commitment.
    pub input: InputClaim,
    /// The claimed output (raw integer logits of the quantized model).
    pub output: Vec<i64>,
}

/// Result of proving: the output and its proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvedOutput {
    /// Model output (raw integer logits).
    pub output: Vec<i64>,
    /// The proof that `output = f(input; committed weights)`.
    pub envelope: ProofEnvelope,
}

/// Something that runs a committed model on an input and proves the result.
pub trait Prover: Send + Sync {
    /// Proof system name written into envelopes.
    fn system(&self) -> &str;
    /// Hex commitment of the model this prover proves for.
    fn model_commitment(&self) -> &str;
    /// Hex id of the verifying key matching this prover's proving key.
    fn vk_id(&self) -> &str;
    /// Run the model on `input` and prove the output.
    fn prove(&self, input: &[i8]) -> Result<ProvedOutput>;
}

/// Something that checks envelopes against statements.
pub trait ProofVerifier: Send + Sync {
    /// Proof system this verifier accepts.
    fn system(&self) -> &str;
    /// Hex id of the verifying key this verifier holds.
    fn vk_id(&self) -> &str;
    /// Accept (`Ok(())`) only if `envelope` proves `statement`.
    fn verify(&self, envelope: &ProofEnvelope, statement: &Statement) -> Result<()>;
}
