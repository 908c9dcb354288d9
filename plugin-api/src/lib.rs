//! # infernet-plugin-api
//!
//! The guest SDK for Infernet plugins. A plugin is a WebAssembly component
//! (`wasm32-wasip2`) that implements one of three worlds of the
//! `infernet:plugin` WIT contract:
//!
//! * [`Backend`] — runs models through host tensor kernels ([`Tensor`]), export with [`export_backend!`];
//! * [`Pricing`] — turns a job into a [`Quote`], export with [`export_pricing!`]
//!   ([`RateCard`] prices tokens and time from config);
//! * [`Payment`] — escrow operations, export with [`export_payment!`].
//!
//! ```ignore
//! use infernet_plugin_api::*;
//!
//! struct Echo;
//! impl Backend for Echo {
//!     fn new() -> Self { Echo }
//!     fn describe(&self) -> BackendInfo { BackendInfo::new("echo", "0.1.0", &["text-generation"], &[]) }
//!     fn execute(&mut self, job: JobRequest) -> Result<JobResult, Error> {
//!         let text = job.input.text()?;
//!         progress::emit_token(&text);
//!         Ok(JobResult::text(text, 0, 0))
//!     }
//! }
//! export_backend!(Echo);
//! ```
//!
//! Kernel calls return [`Result`]; use `?` everywhere. Tensors live on the
//! host: a [`Tensor`] is a handle, and dropping it frees the host memory.
//!
//! [`money`] (currencies, exact amounts, conversion) and [`escrow`] (the
//! escrow lifecycle's names) are plain Rust, shared with the host: with
//! `default-features = false` the crate is only those two modules.

pub mod escrow;
pub mod money;

#[cfg(feature = "guest")]
mod guest;
#[cfg(feature = "guest")]
pub use guest::*;
