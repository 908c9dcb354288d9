//! Typed errors for the verifier crate.
//!
//! Every fallible public function returns [`VerifierError`]; nothing in this
//! crate panics on untrusted input (proof bytes, envelopes, model files).

use std::path::PathBuf;

/// Errors produced while quantizing, proving, verifying or caching keys.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// A model file or model definition is malformed or inconsistent.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// An input vector does not fit the model.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The envelope names a proof system this verifier does not handle.
    #[error("unsupported proof system {found:?} (expected {expected:?})")]
    UnsupportedSystem {
        /// The system this verifier handles.
        expected: String,
        /// The system named in the envelope.
        found: String,
    },
    /// The envelope or statement commits to a different model.
    #[error("model commitment mismatch: expected {expected}, got {found}")]
    ModelCommitmentMismatch {
        /// Commitment the verifier expects.
        expected: String,
        /// Commitment found in the envelope.
        found: String,
    },
    /// The envelope was produced under a different verifying key.
    #[error("verifying key mismatch: expected {expected}, got {found}")]
    VkMismatch {
        /// vk id of this verifier.
        expected: String,
        /// vk id found in the envelope.
        found: String,
    },
    /// The public inputs in the envelope differ from the statement being checked
    /// (tampered output, input or commitment).
    #[error("public inputs do not match the statement: {0}")]
    PublicInputMismatch(String),
    /// The proof bytes could not be decoded.
    #[error("malformed proof: {0}")]
    MalformedProof(String),
    /// The proof decoded but does not verify (Groth16: the pairing check;
    /// ezkl: Halo2's constraint or opening checks).
    #[error("proof rejected: it does not verify under the verifying key")]
    ProofRejected,
    /// A key bundle whose signature, publisher or contents do not check.
    #[error("untrusted key: {0}")]
    Untrusted(String),
    /// Constraint synthesis, setup or proving failed.
    #[error("synthesis error: {0}")]
    Synthesis(String),
    /// Key (de)serialization failed.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// Filesystem error in the key cache or when loading a model.
    #[error("io error at {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The ezkl driver (Python package) failed or is not installed.
    #[error(transparent)]
    Ezkl(#[from] crate::ezkl::EzklError),
    /// JSON error while reading a model file or an envelope.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<ark_relations::gr1cs::SynthesisError> for VerifierError {
    fn from(e: ark_relations::gr1cs::SynthesisError) -> Self {
        VerifierError::Synthesis(e.to_string())
    }
}

impl From<ark_serialize::SerializationError> for VerifierError {
    fn from(e: ark_serialize::SerializationError) -> Self {
        VerifierError::Serialization(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = VerifierError> = std::result::Result<T, E>;
