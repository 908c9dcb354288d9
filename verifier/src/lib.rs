//! Infernet verification: zero-knowledge proofs of quantized MLP inference.
//!
//! * [`envelope`]: the [`Prover`] / [`ProofVerifier`] traits and the serde
//!   [`ProofEnvelope`] every proof system shares.
//! * [`quant`]: the quantized MLP and its exact integer forward pass (the
//!   witness computation), plus power-of-two quantisation of float models.
//! * [`commit`]: Poseidon commitments to models and inputs.
//! * [`circuit`]: the R1CS circuit proving `y = f(x; W)`.
//! * [`groth16`]: Groth16/BN254 keys, key cache, prover and verifier.
//! * [`baked`]: the same MLP with the weights as circuit constants (one key
//!   per model, no in-circuit hash), prover and verifier.
//! * [`bundle`]: keys from a publisher the client trusts: a signed
//!   statement of the verifying key, and the bundle providers load.
//! * [`ezkl`]: the same traits for ONNX models through the `ezkl` Python
//!   package (Halo2/KZG over BN254).
//!
//! Redundant execution, reputation and slashing (DESIGN.md §6) live here too,
//! later.

pub mod baked;
pub mod bundle;
pub mod circuit;
pub mod commit;
pub mod conv;
pub mod envelope;
pub mod error;
pub mod ezkl;
pub mod groth16;
mod model_dir;
pub mod quant;
#[doc(hidden)]
pub mod testing;

pub use bundle::{KeyBundle, KeyStatement, LoadedKeys};
pub use circuit::{InputMode, MlpCircuit, MlpShape, PublicValues, CIRCUIT_VERSION};
pub use envelope::{InputClaim, ProofEnvelope, ProofVerifier, ProvedOutput, Prover, Statement};
pub use error::{Result, VerifierError};
pub use ezkl::{EzklCache, EzklModel, EzklOptions, EzklProver, EzklRuntime, EzklVerifier};
pub use groth16::{Groth16Prover, Groth16Verifier, KeyCache, SYSTEM as GROTH16_SYSTEM};
pub use quant::{DigitsModel, QLayer, QuantizedMlp};
