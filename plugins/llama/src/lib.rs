//! Text generation for llama-family Hugging Face checkpoints.
//!
//! The model runs entirely through host tensor kernels (see [`model`]); this
//! crate keeps weight handles and rotary tables per model id between jobs.
//!
//! Job parameters: `max_tokens` (default 32), `temperature` (default 0 =
//! greedy), `top_k` (default 0 = off), `top_p` (default 1.0), `seed`
//! (default 0), and `emit_logits` (default false): when true, decoding is
//! greedy and the output is the `[steps, vocab]` last-position logits of
//! every forward step instead of text.
//!
//! The modules are shared, by `#[path]`, with the test-only
//! `plugins/cheat-llama`; this crate's [`TAMPER`] keeps the forward pass honest.

mod backend;
mod config;
mod model;

/// The forward pass as it should be: no tampering (read by [`model`]).
const TAMPER: model::Tamper = model::Tamper::NONE;

infernet_plugin_api::export_backend!(backend::LlamaBackend);
