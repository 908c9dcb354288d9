//! The verifier's integration tests, in one binary (one link of arkworks).

mod baked;
mod bundle;
mod circuit;
mod conv;
mod ezkl;
mod groth16;
mod quant;
