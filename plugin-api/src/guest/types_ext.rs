//! Conveniences on the WIT types: constructors, parameter parsing, input accessors.

use crate::escrow::EscrowState;
use crate::{
    BackendInfo, Error, EscrowStatus, JobInput, JobOutput, JobRequest, JobResult, Money, Usage,
};
use core::str::FromStr;

impl Error {
    /// An `invalid-input` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }
    /// An `unsupported` error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported(message.into())
    }
    /// An `internal` error.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
    /// A `limit-exceeded` error.
    pub fn limit(message: impl Into<String>) -> Self {
        Error::LimitExceeded(message.into())
    }

    /// The same kind of error with `context` in front of its message:
    /// `layer 3 attention: kernel matmul: shape mismatch ...`.
    pub fn context(self, context: impl core::fmt::Display) -> Self {
        let add = |m: String| format!("{context}: {m}");
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(add(m)),
            Error::Unsupported(m) => Error::Unsupported(add(m)),
            Error::LimitExceeded(m) => Error::LimitExceeded(add(m)),
            Error::Internal(m) => Error::Internal(add(m)),
        }
    }
}

/// Context on a failed call, as `anyhow`'s: `x.matmul(&w).context("layer 3 attention")?`.
pub trait Context<T> {
    /// Puts `context` in front of the error's message (its kind is kept).
    fn context(self, context: impl core::fmt::Display) -> Result<T, Error>;
    /// As [`Context::context`], built only when there is an error.
    fn with_context<C: core::fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, Error> {
    fn context(self, context: impl core::fmt::Display) -> Result<T, Error> {
        self.map_err(|e| e.context(context))
    }

    fn with_context<C: core::fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T, Error> {
        self.map_err(|e| e.context(context()))
    }
}

impl BackendInfo {
    /// Builds the info record from string slices.
    pub fn new(name: &str, version: &str, tasks: &[&str], architectures: &[&str]) -> Self {
        BackendInfo {
            name: name.into(),
            version: version.into(),
            tasks: tasks.iter().map(|s| s.to_string()).collect(),
            architectures: architectures.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl JobRequest {
    /// The raw value of parameter `key`.
    pub fn param_str(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parameter `key` parsed as `T`; `Ok(None)` when absent, an
    /// `invalid-input` error naming the key when malformed.
    pub fn param<T: FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.param_str(key) {
            None => Ok(None),
            Some(raw) => raw.trim().parse::<T>().map(Some).map_err(|_| {
                Error::invalid(format!("parameter `{key}` has malformed value `{raw}`"))
            }),
        }
    }

    /// Parameter `key` parsed as `T`, or `default` when absent.
    pub fn param_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, Error> {
        Ok(self.param(key)?.unwrap_or(default))
    }
}

impl JobInput {
    /// The input as one text (`text`, or a one-element `texts`).
    pub fn text(&self) -> Result<String, Error> {
        match self {
            JobInput::Text(t) => Ok(t.clone()),
            JobInput::Texts(ts) if ts.len() == 1 => Ok(ts[0].clone()),
            _ => Err(Error::invalid("this backend expects a single text input")),
        }
    }

    /// The input as a list of texts (`texts`, or `text` as a list of one).
    pub fn texts(&self) -> Result<Vec<String>, Error> {
        match self {
            JobInput::Text(t) => Ok(vec![t.clone()]),
            JobInput::Texts(ts) => Ok(ts.clone()),
            _ => Err(Error::invalid("this backend expects text input")),
        }
    }
}

impl JobResult {
    /// A text result.
    pub fn text(text: String, input_tokens: u32, output_tokens: u32) -> Self {
        JobResult {
            output: JobOutput::Text(text),
            usage: Usage {
                input_tokens,
                output_tokens,
            },
        }
    }

    /// An embeddings result.
    pub fn embeddings(vectors: Vec<Vec<f32>>, input_tokens: u32) -> Self {
        JobResult {
            output: JobOutput::Embeddings(vectors),
            usage: Usage {
                input_tokens,
                output_tokens: 0,
            },
        }
    }
}

impl Money {
    /// `amount` minor units of `currency`.
    pub fn new(amount: u64, currency: &str) -> Self {
        Money {
            amount,
            currency: currency.into(),
        }
    }
}

impl From<EscrowStatus> for EscrowState {
    fn from(s: EscrowStatus) -> Self {
        match s {
            EscrowStatus::Pending => EscrowState::Pending,
            EscrowStatus::Funded => EscrowState::Funded,
            EscrowStatus::Released => EscrowState::Released,
            EscrowStatus::Settled => EscrowState::Settled,
            EscrowStatus::Refunded => EscrowState::Refunded,
            EscrowStatus::Disputed => EscrowState::Disputed,
            EscrowStatus::Expired => EscrowState::Expired,
        }
    }
}

impl From<EscrowState> for EscrowStatus {
    fn from(s: EscrowState) -> Self {
        match s {
            EscrowState::Pending => EscrowStatus::Pending,
            EscrowState::Funded => EscrowStatus::Funded,
            EscrowState::Released => EscrowStatus::Released,
            EscrowState::Settled => EscrowStatus::Settled,
            EscrowState::Refunded => EscrowStatus::Refunded,
            EscrowState::Disputed => EscrowStatus::Disputed,
            EscrowState::Expired => EscrowStatus::Expired,
        }
    }
}

impl EscrowStatus {
    /// The WIT name (`funded`, ...).
    pub fn name(self) -> &'static str {
        EscrowState::from(self).name()
    }
}
