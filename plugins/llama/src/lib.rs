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
//! A job with the parameter `layers` (`a..b`) runs only those decoder blocks,
//! as one stage of a pipeline, over a KV cache kept per `session` between
//! jobs: token ids in (block 0) or hidden states `[1, seq, hidden_size]`,
//! hidden states out, or the last position's logits `[1, vocab]` from the
//! last block. See [`stage`] for its parameters and rules.
//!
//! The modules are shared, by `#[path]`, with the test-only
//! `plugins/cheat-llama`; this crate's [`TAMPER`] keeps the forward pass honest.

mod backend;
mod config;
mod model;
mod stage;

/// The forward pass as it should be: no tampering (read by [`model`]).
const TAMPER: model::Tamper = model::Tamper::NONE;

infernet_plugin_api::export_backend!(backend::LlamaBackend);
