//! Every cross-crate integration test, in one binary.
//!
//! Each module is one area; they used to be one test binary each, and every
//! binary linked wasmtime, candle and libp2p again. One binary links them
//! once. Run one area with `cargo test -p infernet-tests --test it network_jobs::`.
//!
//! Tests share one process now: nothing here may change process-wide state
//! that another test reads (the working directory, a global `tracing`
//! subscriber other than the one `network_coinpay` installs to capture every
//! log line, environment variables other than fresh unique names).

// The plugin host: loading, limits, versions, the compiled cache, the SDK walkthrough.
mod contract_versions;
mod engine_bridge;
mod hostile_plugins;
mod runtime_cache;
mod sdk_newcomer;

// Models against native candle-transformers and the Groth16 witness.
mod bert_reference;
mod gguf_models;
mod llama_reference;
mod mlp_bit_identical;

// The node's store.
mod store_jobs;

// The network: swarms, the job protocol, the lifecycle, faults, proofs.
mod adversarial;
mod fuzz;
mod jobs_provider;
mod js_interop;
mod network_faults;
mod network_jobs;
mod network_pipeline;
mod network_proofs;
mod network_shards;
mod p2p_job_protocol;
mod p2p_network;
mod protocol_vectors;

// The verifier: traces, disputes, evidence; the client's verification
// policies; reputation from gossiped attestations.
mod reputation;
mod slashing;
mod verifier;
mod verifier_role;
mod verify_policies;

// Pricing and payments (and the local CoinPay server they run against).
mod coinpay_fake;
mod escrow_sweep;
mod network_coinpay;
mod network_payments;
mod network_pricing;
mod payment_adapters;
mod payment_ledger;
mod pricing_flat;
mod pricing_surge;
mod provider_payment_gate;

// The bootstrap registry (Supabase): the database, the REST client, discovery.
mod registry_db;
mod registry_network;
mod registry_rest;

// The `infernet` binary.
mod cli;

// The OpenAI-compatible HTTP API, through the official `openai` Python client;
// the dashboard, in a headless Chromium.
mod dashboard;
mod openai_api;
// Prometheus `/metrics`, checked on the networks of openai_api and network_payments.
mod metrics;

// The suite's own rules.
mod suite_rules;
