//! Everything that needs the guest bindings: the WIT types, the traits and
//! export macros, the host interfaces (kernels, models, log, progress,
//! config, kv, http). Built with the `guest` feature (the default).

#[doc(hidden)]
pub mod bindings;
mod config_json;
pub mod decoder;
mod exports;
mod http_ext;
mod model_cache;
mod rates;
mod tensor_ext;
mod text_stream;
mod types_ext;

pub use config_json::ConfigJson;
pub use decoder::{KvCache, Linear};
#[doc(hidden)]
pub use exports::with_instance as __with_instance;
pub use exports::{Backend, Payment, Pricing};
pub use model_cache::{Loaded, ModelCache};
pub use rates::{Charge, RateCard};
pub use text_stream::TextStream;
pub use types_ext::Context;

/// Shared WIT types.
pub use bindings::backend::infernet::plugin::types::{
    BackendInfo, Error, F32Tensor, JobInput, JobOutput, JobRequest, JobResult, Money, Quote,
    QuoteRequest, Usage,
};
/// Escrow types of the payment world.
pub use bindings::payment::exports::infernet::plugin::payment_api::{
    CurrencyInfo, Escrow, EscrowRequest, EscrowStatus,
};
pub use tensor::{BinaryOp, DType, QMatrix, ReduceOp, Sampler, Sampling, Tensor, UnaryOp};

/// A `Result` whose error is the WIT [`Error`] variant.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Host tensor kernels. Free functions here mirror the WIT; [`Tensor`] has method forms.
pub mod tensor {
    pub use crate::guest::bindings::backend::infernet::plugin::tensor::{
        affine, attention, binary, broadcast_as, cat, causal_mask, clamp, contiguous, embedding,
        index_select, layer_norm, linear, masked_fill, matmul, narrow, qlinear, reduce, reshape,
        rms_norm, rope, rope_interleaved, softmax_last_dim, to_dtype, transpose, unary, BinaryOp,
        Dtype as DType, Qmatrix as QMatrix, ReduceOp, Sampler, Sampling, Tensor, UnaryOp,
    };
}

/// Model weights, config.json and tokenizers, opened by model id.
pub mod models {
    pub use crate::guest::bindings::backend::infernet::plugin::models::{open, Tokenizer, Weights};
}

/// Logging into the node's log, attributed to this plugin.
pub mod log {
    pub use crate::guest::bindings::backend::infernet::plugin::log::{log, Level};

    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Streaming output and progress to the job's submitter (backends only).
pub mod progress {
    pub use crate::guest::bindings::backend::infernet::plugin::progress::{
        cancelled, emit_token, emit_token_ids, report,
    };
}

/// The plugin's read-only config table and secrets (pricing and payment plugins; backends from contract 0.2.3).
pub mod config {
    pub use crate::guest::bindings::backend::infernet::plugin::config::{get, keys, secret};

    /// Parses a config value, with an error naming the key when it is malformed.
    pub fn parse<T: core::str::FromStr>(key: &str) -> crate::Result<Option<T>> {
        match get(key) {
            None => Ok(None),
            Some(raw) => raw.trim().parse::<T>().map(Some).map_err(|_| {
                crate::Error::InvalidInput(format!(
                    "config key `{key}` has malformed value `{raw}`"
                ))
            }),
        }
    }
}

/// The plugin's private key-value store in the node's database (payment plugins).
pub mod kv {
    pub use crate::guest::bindings::payment::infernet::plugin::kv::{delete, get, list_keys, set};
}

/// Outgoing HTTP for payment plugins and (contract 0.2.3) backends
/// (wasi:http, filtered by the host's allowed hosts).
///
/// [`http::request`], [`http::get_json`] and [`http::post_json`] are a blocking
/// client; the raw `wasi:http` bindings stay here as `types` and `outgoing_handler`.
pub mod http {
    pub use crate::guest::bindings::backend::wasi::http::*;
    pub use crate::guest::http_ext::*;
}
