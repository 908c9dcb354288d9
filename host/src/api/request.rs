//! Request bodies: parsed with the failing field named
//! (`messages[0].role: unknown variant ...`), checked against OpenAI's ranges,
//! and turned into the SDK's [`InferOptions`]. Fields OpenAI defines that
//! change nothing here (`user`, penalties, ...) are accepted and ignored;
//! `n > 1` is refused.

use super::error::ApiError;
use crate::config::{ApiConfig, VerifyPolicy};
use crate::payments::currency::Amount;
use crate::sdk::InferOptions;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Output tokens a request gets when it names no bound.
pub const DEFAULT_MAX_TOKENS: u32 = crate::jobs::client::DEFAULT_MAX_OUTPUT_TOKENS;

/// Parses `body` as `T`; a failure names the field (OpenAI's `param`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return ApiError::bad_request("invalid_json", format!("malformed JSON body: {msg}"));
        }
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next());
        if let Some(field) = missing.filter(|_| path == "." || path.is_empty()) {
            ApiError::bad_field(field, format!("`{field}` is required"))
        } else if path == "." || path.is_empty() {
            ApiError::bad_request("invalid_json", format!("malformed request body: {msg}"))
        } else {
            ApiError::bad_field(path.clone(), format!("invalid `{path}`: {inner}"))
        }
    })
}

/// A string or a list of strings (`stop`, `prompt`, `input`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a usage chunk (empty `choices`) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// The request's `infernet` object: network options an OpenAI client sends
/// as extra body fields (`extra_body={"infernet": {...}}` in Python).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetOptions {
    /// Most this request pays, a decimal in `currency` units (`"0.01"`).
    pub max_budget: Option<String>,
    /// Currency of the budget and of accepted quotes.
    pub currency: Option<String>,
    /// Verification policy: `none`, `replicate(K)`, `spot-check(P)`.
    pub verify: Option<String>,
    /// Backend parameters passed through as they are (e.g. `top_k`).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// `/v1/embeddings` only: split the inputs across up to this many
    /// providers at once (1 to [`MAX_SHARDS`]), merged back in order.
    pub shards: Option<u32>,
}

/// Most shards one embeddings request may ask for.
pub const MAX_SHARDS: u32 = 32;

/// Sampling fields shared by both text endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// Bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Chat's newer name for `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// 0 (greedy, the default here) to 2.
    pub temperature: Option<f64>,
    /// Nucleus sampling, (0, 1].
    pub top_p: Option<f64>,
    /// Sampling seed: the same seed, prompt and provider code give the same text.
    pub seed: Option<u64>,
    /// Up to 4 strings that end the text (applied by this node).
    pub stop: Option<OneOrMany>,
    /// Choices wanted: only 1.
    pub n: Option<u32>,
    /// Server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `include_usage`.
    pub stream_options: Option<StreamOptions>,
    /// Network options.
    pub infernet: Option<NetOptions>,
}

/// A job's settings, checked.
#[derive(Debug, Clone)]
pub struct Job {
    /// For the SDK.
    pub opts: InferOptions,
    /// The token bound asked of the provider.
    pub max_tokens: u32,
    /// Stop strings (non-empty ones).
    pub stop: Vec<String>,
    /// Stream the answer.
    pub stream: bool,
    /// Send the usage chunk.
    pub include_usage: bool,
}

impl Sampling {
    /// Checks ranges and merges the config's defaults.
    pub fn job(self, cfg: &ApiConfig, headers: &HeaderMap) -> Result<Job, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::bad_field(
                    "n",
                    format!("n = {n}: this node returns one choice per request; send n = 1 (or several requests)"),
                ));
            }
        }
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            let field = if self.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::bad_field(
                field,
                format!("`{field}` must be at least 1"),
            ));
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
                return Err(ApiError::bad_field(
                    "temperature",
                    "`temperature` must be between 0 and 2",
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(p.is_finite() && p > 0.0 && p <= 1.0) {
                return Err(ApiError::bad_field("top_p", "`top_p` must be in (0, 1]"));
            }
        }
        let stop: Vec<String> = self
            .stop
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        if stop.len() > 4 {
            return Err(ApiError::bad_field("stop", "at most 4 stop sequences"));
        }
        if self.infernet.as_ref().is_some_and(|n| n.shards.is_some()) {
            return Err(ApiError::bad_field(
                "infernet.shards",
                "only /v1/embeddings splits a request across providers",
            ));
        }
        let mut opts = network(self.infernet, cfg, headers)?;
        if let Some(p) = self.top_p {
            opts.params.retain(|(k, _)| k != "top_p");
            opts.params.push(("top_p".into(), p.to_string()));
        }
        opts.max_tokens = Some(max_tokens);
        opts.temperature = self.temperature;
        opts.seed = self.seed;
        Ok(Job {
            opts,
            max_tokens,
            stop,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// The SDK options an `infernet` object asks for; what it leaves out is
/// taken from `x-infernet-max-budget`, `x-infernet-currency` and
/// `x-infernet-verify` headers, then from `[api]`.
pub fn network(
    net: Option<NetOptions>,
    cfg: &ApiConfig,
    headers: &HeaderMap,
) -> Result<InferOptions, ApiError> {
    let mut net = net.unwrap_or_default();
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|v| Some(v.trim().to_string()))
                .map_err(|_| ApiError::bad_field(name, format!("header `{name}` is not text"))),
        }
    };
    if net.max_budget.is_none() {
        net.max_budget = header("x-infernet-max-budget")?;
    }
    if net.currency.is_none() {
        net.currency = header("x-infernet-currency")?;
    }
    if net.verify.is_none() {
        net.verify = header("x-infernet-verify")?;
    }
    let currency = net.currency.clone().or_else(|| cfg.currency.clone());
    if let Some(c) = &currency {
        crate::payments::currency::currency(c)
            .map_err(|e| ApiError::bad_field("infernet.currency", e.to_string()))?;
    }
    let max_budget = match (&net.max_budget, &cfg.max_budget) {
        (Some(b), _) => Some(budget(b, currency.as_deref(), "infernet.max_budget")?),
        (None, Some(b)) => Some(budget(b, currency.as_deref(), "api.max_budget")?),
        (None, None) => None,
    };
    let verify = match &net.verify {
        Some(v) => Some(
            v.parse::<VerifyPolicy>()
                .map_err(|e| ApiError::bad_field("infernet.verify", e))?,
        ),
        None => cfg.verify.clone(),
    };
    Ok(InferOptions {
        max_budget,
        currency,
        params: net.params.into_iter().collect(),
        verify,
        ..Default::default()
    })
}

/// A decimal budget in `currency`, exactly.
fn budget(text: &str, currency: Option<&str>, field: &str) -> Result<Amount, ApiError> {
    let Some(code) = currency else {
        return Err(ApiError::bad_field(
            field,
            "a budget needs `infernet.currency` (the unit of the amount)",
        ));
    };
    Amount::parse(text, code)
        .and_then(|a| a.to_u64().map(|_| a))
        .map_err(|e| ApiError::bad_field(field, e.to_string()))
}

/// `POST /v1/completions` (its [`Sampling`] is read from the same body).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model id.
    pub model: String,
    /// The prompt (a list of one string is accepted).
    pub prompt: OneOrMany,
}

/// One chat message. `content` is a string or a list of `{"type": "text"}` parts.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, `developer`.
    pub role: String,
    /// The text, or parts.
    #[serde(default)]
    pub content: Option<serde_json::Value>,
}

/// `POST /v1/chat/completions` (its [`Sampling`] is read from the same body).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model id.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// Model id.
    pub model: String,
    /// Text(s) to embed.
    pub input: OneOrMany,
    /// `float` (default) or `base64` (little-endian f32s).
    pub encoding_format: Option<String>,
    /// Network options.
    pub infernet: Option<NetOptions>,
}
