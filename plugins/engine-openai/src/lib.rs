//! `engine-openai`: a backend that forwards each job to an
//! OpenAI-compatible inference engine the provider already runs (vLLM,
//! llama.cpp's `llama-server`, Ollama's `/v1`, another Infernet node's API)
//! and streams the answer back token by token.
//!
//! It needs contract 0.2.3: `config` for its settings and `wasi:http` for
//! the engine, which the node lets it reach only when the provider lists
//! the engine's origin in `[[backend]] allowed_hosts`.
//!
//! ```toml
//! [[backend]]
//! plugin = "plugins/engine-openai"
//! allowed_hosts = ["http://127.0.0.1:8000"]
//! [backend.config]
//! base_url = "http://127.0.0.1:8000/v1"   # required
//! endpoint = "completions"                # or "chat" (the engine's chat template)
//! engine_model = "smollm2:135m"           # the engine's name for every model;
//! "model.tiny" = "smollm2:135m"           # or per model id (default: the id)
//! timeout_ms = 30000                      # each wait: connect, first byte, between chunks
//! max_response_mb = 16
//! [backend.secrets]
//! api_key = "ENGINE_API_KEY"              # env var with the engine's bearer key, if any
//! [[backend.models]]
//! id = "tiny"
//! path = "models/tiny"                    # the files the engine serves (token counts, weights hash)
//! ```
//!
//! No kernel runs here, so a bridged job has no kernel trace: verification
//! by replication and reputation still applies, trace disputes and proofs
//! do not (docs/ARCHITECTURE.md, "Bridged engines").

mod sse;
mod wire;

use infernet_plugin_api::*;
use sse::{SseError, SseParser};
use wire::{Class, Endpoint, EngineError, Piece, Sampling};

/// Largest single SSE event accepted from an engine.
const MAX_EVENT: usize = 1 << 20;
/// Most of an error body read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// The provider's settings, read per job (config is fixed for the node's life).
struct Settings {
    base_url: String,
    endpoint: Endpoint,
    timeout_ms: u64,
    max_response_bytes: usize,
    api_key: Option<String>,
}

impl Settings {
    fn read() -> Result<Settings> {
        let base = config::get("base_url").ok_or_else(|| {
            Error::unsupported(
                "engine-openai needs `base_url` in [backend.config], e.g. \"http://127.0.0.1:8000/v1\"",
            )
        })?;
        let base = base.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::unsupported(format!(
                "config `base_url` is `{base}`; it must start with http:// or https://"
            )));
        }
        let endpoint = match config::get("endpoint") {
            None => Endpoint::Completions,
            Some(e) => Endpoint::parse(e.trim()).map_err(Error::unsupported)?,
        };
        let timeout_ms: u64 = config::parse("timeout_ms")?.unwrap_or(30_000);
        let max_mb: usize = config::parse("max_response_mb")?.unwrap_or(16);
        if timeout_ms == 0 || max_mb == 0 || max_mb > 1024 {
            return Err(Error::unsupported(
                "config `timeout_ms` must be > 0 and `max_response_mb` from 1 to 1024",
            ));
        }
        Ok(Settings {
            base_url: base,
            endpoint,
            timeout_ms,
            max_response_bytes: max_mb << 20,
            api_key: config::secret("api_key"),
        })
    }

    /// The engine's name for model `id`.
    fn engine_model(id: &str) -> String {
        config::get(&format!("model.{id}"))
            .or_else(|| config::get("engine_model"))
            .unwrap_or_else(|| id.to_string())
    }
}

/// The job's sampling parameters, checked.
fn sampling(job: &JobRequest) -> Result<Sampling> {
    let max_tokens: u32 = job.param_or("max_tokens", 256)?;
    if max_tokens == 0 {
        return Err(Error::invalid("max_tokens must be at least 1"));
    }
    let temperature: Option<f64> = job.param("temperature")?;
    if temperature.is_some_and(|t| !t.is_finite() || t < 0.0) {
        return Err(Error::invalid("temperature must be finite and >= 0"));
    }
    let top_p: Option<f64> = job.param("top_p")?;
    if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
        return Err(Error::invalid("top_p must be in (0, 1]"));
    }
    let stop = match job.param_str("stop") {
        None => Vec::new(),
        // A JSON list of strings, or one plain string.
        Some(raw) => match serde_json::from_str::<Vec<String>>(raw) {
            Ok(list) => list,
            Err(_) => vec![raw.to_string()],
        },
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(Error::invalid(
            "stop: at most 4 non-empty sequences of at most 256 bytes",
        ));
    }
    Ok(Sampling {
        max_tokens,
        temperature,
        top_p,
        seed: job.param("seed")?,
        stop,
    })
}

/// What has come back so far.
struct Answer {
    text: String,
    emitted: u32,
    tokens: u32,
    max_tokens: u32,
    finish: Option<String>,
    usage: Option<wire::EngineUsage>,
}

impl Answer {
    /// Streams a piece's text; past the paid bound the engine overran
    /// `max_tokens`, and the rest is dropped (`Ok(false)`: stop reading).
    fn add(&mut self, piece: Piece) -> bool {
        if piece.usage.is_some() {
            self.usage = piece.usage;
        }
        if piece.finish.is_some() {
            self.finish = piece.finish;
        }
        if piece.token {
            self.tokens += 1;
        }
        if piece.text.is_empty() {
            return true;
        }
        if self.emitted >= self.max_tokens {
            log::warn("the engine sent more pieces than max_tokens; the rest is dropped");
            self.finish = Some("length".into());
            return false;
        }
        progress::emit_token(&piece.text);
        self.emitted += 1;
        self.text.push_str(&piece.text);
        true
    }
}

fn engine_error(base: &str, e: EngineError) -> Error {
    match e {
        EngineError::Reported(m) => Error::internal(format!("the engine at {base} failed: {m}")),
        EngineError::Garbage(m) => Error::internal(format!(
            "the engine at {base} answered something that is not the OpenAI API: {m}"
        )),
    }
}

fn http_error(base: &str, e: http::HttpError) -> Error {
    match e {
        http::HttpError::Transport(m) => Error::internal(format!(
            "the engine at {base} did not answer: {m} (is it running, and is `base_url` right?)"
        )),
        other => other.into(),
    }
}

/// The prompt's length in tokens by the granted model's tokenizer.
fn prompt_tokens(model: &str, prompt: &str) -> Option<u32> {
    let tokenizer = models::open(model).ok()?.tokenizer().ok()?;
    let ids = tokenizer.encode(prompt, true).ok()?;
    u32::try_from(ids.len()).ok()
}

struct EngineOpenAi;

impl Backend for EngineOpenAi {
    fn new() -> Self {
        EngineOpenAi
    }

    fn describe(&self) -> BackendInfo {
        // A misconfigured bridge stops the node at start, naming the key.
        if let Err(e) = Settings::read() {
            panic!("{e}");
        }
        BackendInfo::new(
            "engine-openai",
            env!("CARGO_PKG_VERSION"),
            &["text-generation"],
            &["any"],
        )
    }

    fn execute(&mut self, job: JobRequest) -> Result<JobResult> {
        let cfg = Settings::read()?;
        let (id, base) = (job.id.clone(), cfg.base_url.clone());
        forward(job, cfg).map_err(|e| {
            // The operator's log gets the engine's address; the client,
            // who may be anyone on the network, gets "the engine".
            let e = redact(e, &base);
            log::warn(&format!("job {id} failed at the engine {base}: {e:?}"));
            e
        })
    }
}

/// `e` without the engine's URL, host or address: "the engine at
/// http://10.0.0.5:8000/v1 failed" becomes "the engine failed".
fn redact(e: Error, base: &str) -> Error {
    let host = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(base);
    let hostname = host
        .rsplit_once(':')
        .map_or(host, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let clean = |m: String| {
        let m = m
            .replace(&format!(" at {base}"), "")
            .replace(base, "its URL")
            .replace(host, "its host");
        if hostname.is_empty() {
            m
        } else {
            m.replace(hostname, "its host")
        }
    };
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(clean(m)),
        Error::Unsupported(m) => Error::Unsupported(clean(m)),
        Error::LimitExceeded(m) => Error::LimitExceeded(clean(m)),
        Error::Internal(m) => Error::Internal(clean(m)),
    }
}

/// Sends `job` to the engine and streams its answer back.
fn forward(job: JobRequest, cfg: Settings) -> Result<JobResult> {
    let prompt = job.input.text()?;
    let sampling = sampling(&job)?;
    let model = Settings::engine_model(&job.model);
    let body = wire::request_body(cfg.endpoint, &model, &prompt, &sampling);
    let url = format!("{}{}", cfg.base_url, cfg.endpoint.path());
    let auth = cfg.api_key.as_ref().map(|k| format!("Bearer {k}"));
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "text/event-stream"),
    ];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let opts = http::Options {
        max_response_bytes: cfg.max_response_bytes,
        connect_timeout_ms: Some(cfg.timeout_ms),
        first_byte_timeout_ms: Some(cfg.timeout_ms),
        between_bytes_timeout_ms: Some(cfg.timeout_ms),
    };
    let base = cfg.base_url.as_str();
    log::debug(&format!("job {} → {url} (model `{model}`)", job.id));
    let mut res = http::request_streaming(
        &opts,
        http::Method::Post,
        &url,
        &headers,
        Some(body.as_bytes()),
    )
    .map_err(|e| http_error(base, e))?;
    if !res.is_success() {
        let body = res.rest(MAX_ERROR_BODY).unwrap_or_default();
        let msg = format!(
            "the engine at {base} answered HTTP {}: {}",
            res.status,
            wire::error_body_message(&body)
        );
        return Err(match wire::classify(res.status) {
            Class::InvalidInput => Error::invalid(msg),
            Class::Unsupported => Error::unsupported(msg),
            Class::LimitExceeded => Error::limit(msg),
            Class::Internal => Error::internal(msg),
        });
    }
    let mut answer = Answer {
        text: String::new(),
        emitted: 0,
        tokens: 0,
        max_tokens: sampling.max_tokens,
        finish: None,
        usage: None,
    };
    let streamed = res
        .header("content-type")
        .is_some_and(|c| c.trim_start().starts_with("text/event-stream"));
    if streamed {
        let mut parser = SseParser::new(MAX_EVENT);
        let sse = |e: SseError| match e {
            SseError::TooLarge(n) => {
                Error::limit(format!("the engine at {base} sent an event over {n} bytes"))
            }
            SseError::NotUtf8 => Error::internal(format!(
                "the engine at {base} sent an event that is not UTF-8"
            )),
        };
        let mut done = false;
        'read: while let Some(chunk) = res.next_chunk().map_err(|e| http_error(base, e))? {
            for data in parser.push(&chunk).map_err(sse)? {
                if data.trim() == "[DONE]" {
                    done = true;
                    break 'read;
                }
                let piece = wire::parse_piece(&data).map_err(|e| engine_error(base, e))?;
                if !answer.add(piece) || progress::cancelled() {
                    done = true;
                    break 'read;
                }
            }
        }
        if !done {
            if let Some(data) = parser.finish().map_err(sse)? {
                if data.trim() != "[DONE]" {
                    let piece = wire::parse_piece(&data).map_err(|e| engine_error(base, e))?;
                    answer.add(piece);
                }
            }
            if answer.finish.is_none() {
                return Err(Error::internal(format!(
                    "the engine at {base} closed the stream before finishing ({} pieces in)",
                    answer.emitted
                )));
            }
        }
    } else {
        // An engine that ignores `stream`: one whole answer.
        let whole = res
            .rest(cfg.max_response_bytes)
            .map_err(|e| http_error(base, e))?;
        let text = String::from_utf8_lossy(&whole);
        let piece = wire::parse_piece(&text).map_err(|e| engine_error(base, e))?;
        answer.add(piece);
    }
    // The engine's own counts. An engine that reports none (llama-cpp-
    // python ignores `include_usage`): output by the chunks it streamed
    // (one per token), the prompt by the model's tokenizer when its
    // files have one.
    let (input, output) = match answer.usage {
        Some(u) => (u.prompt, u.completion),
        None => (
            prompt_tokens(&job.model, &prompt).unwrap_or(0),
            answer.tokens,
        ),
    };
    let output = output.min(sampling.max_tokens);
    log::debug(&format!(
        "job {}: {} pieces, finish {:?}, usage {:?}",
        job.id, answer.emitted, answer.finish, answer.usage
    ));
    Ok(JobResult::text(answer.text, input, output))
}

export_backend!(EngineOpenAi);
