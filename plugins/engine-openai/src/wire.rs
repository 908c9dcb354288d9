//! The OpenAI HTTP API as this bridge speaks it: the request body of
//! `/completions` or `/chat/completions`, the pieces of a streamed answer,
//! and engine errors mapped onto the contract's error cases. Pure functions,
//! tested on the host target.

use serde_json::{json, Map, Value};

/// Which endpoint jobs go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST {base}/completions`: the prompt as given (the default).
    Completions,
    /// `POST {base}/chat/completions`: the prompt as one user message,
    /// rendered by the engine's chat template.
    Chat,
}

impl Endpoint {
    /// Parses the config value `endpoint`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        match s {
            "completions" => Ok(Endpoint::Completions),
            "chat" => Ok(Endpoint::Chat),
            other => Err(format!(
                "config `endpoint` is `{other}`; use `completions` or `chat`"
            )),
        }
    }

    /// The path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/completions",
            Endpoint::Chat => "/chat/completions",
        }
    }
}

/// Sampling settings forwarded to the engine (the job parameters the
/// network's clients send).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// Output tokens at most: the paid bound.
    pub max_tokens: u32,
    /// Temperature; 0 is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Seed of the engine's sampler.
    pub seed: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

/// The JSON body of a streamed request for `model`.
pub fn request_body(endpoint: Endpoint, model: &str, prompt: &str, s: &Sampling) -> String {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    match endpoint {
        Endpoint::Completions => body.insert("prompt".into(), json!(prompt)),
        Endpoint::Chat => body.insert(
            "messages".into(),
            json!([{ "role": "user", "content": prompt }]),
        ),
    };
    body.insert("max_tokens".into(), json!(s.max_tokens));
    if let Some(t) = s.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = s.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(seed) = s.seed {
        body.insert("seed".into(), json!(seed));
    }
    if !s.stop.is_empty() {
        body.insert("stop".into(), json!(s.stop));
    }
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({ "include_usage": true }));
    Value::Object(body).to_string()
}

/// Token counts an engine reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineUsage {
    /// `prompt_tokens`.
    pub prompt: u32,
    /// `completion_tokens`.
    pub completion: u32,
}

/// What one streamed chunk (or a whole non-streamed answer) carries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Piece {
    /// Generated text (`choices[0].text`, or `.delta.content` for chat;
    /// `.message.content` in a whole answer).
    pub text: String,
    /// `choices[0].finish_reason`, when given.
    pub finish: Option<String>,
    /// `usage`, when given.
    pub usage: Option<EngineUsage>,
    /// Whether the chunk stands for one generated token: it has a choice
    /// that is not only the role announcement or only the finish (engines
    /// send one chunk per token, with empty text while a character is
    /// incomplete). What output is counted by when the engine reports no usage.
    pub token: bool,
}

/// Why an engine's answer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The engine itself reported an error (an `error` object).
    Reported(String),
    /// The answer is not what the OpenAI API sends.
    Garbage(String),
}

/// Parses one streamed chunk or a whole answer.
pub fn parse_piece(data: &str) -> Result<Piece, EngineError> {
    let v: Value = serde_json::from_str(data)
        .map_err(|e| EngineError::Garbage(format!("not JSON ({e}): {}", snippet(data))))?;
    if let Some(err) = v.get("error") {
        return Err(EngineError::Reported(error_message(err)));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| EngineError::Garbage(format!("not a JSON object: {}", snippet(data))))?;
    let usage = match obj.get("usage") {
        None | Some(Value::Null) => None,
        Some(u) => Some(EngineUsage {
            prompt: count(u, "prompt_tokens")?,
            completion: count(u, "completion_tokens")?,
        }),
    };
    let choices = match obj.get("choices") {
        Some(Value::Array(c)) => c,
        None if usage.is_some() => {
            return Ok(Piece {
                usage,
                ..Piece::default()
            })
        }
        _ => {
            return Err(EngineError::Garbage(format!(
                "no `choices` array: {}",
                snippet(data)
            )))
        }
    };
    let Some(first) = choices.first() else {
        return Ok(Piece {
            usage,
            ..Piece::default()
        });
    };
    let text = ["/text", "/delta/content", "/message/content"]
        .iter()
        .find_map(|p| first.pointer(p))
        .unwrap_or(&Value::Null);
    let text = match text {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        _ => {
            return Err(EngineError::Garbage(format!(
                "choice text is not a string: {}",
                snippet(data)
            )))
        }
    };
    let finish = first
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    let role_only = first.pointer("/delta/role").is_some();
    let token = !text.is_empty() || (finish.is_none() && !role_only);
    Ok(Piece {
        text,
        finish,
        usage,
        token,
    })
}

fn count(usage: &Value, key: &str) -> Result<u32, EngineError> {
    match usage.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                EngineError::Garbage(format!("usage `{key}` is not a token count: {v}"))
            }),
    }
}

/// The message of an OpenAI-shaped error object (or its text).
pub fn error_message(err: &Value) -> String {
    let m = match err {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| other.to_string()),
    };
    snippet(&m)
}

/// How an HTTP error status from the engine maps onto the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The job's input or parameters were refused (400, 413, 422).
    InvalidInput,
    /// The engine does not serve this (404: unknown model or endpoint).
    Unsupported,
    /// The engine is overloaded or rate-limits (429, 503).
    LimitExceeded,
    /// Anything else: the provider's side failed.
    Internal,
}

/// The class of HTTP `status`.
pub fn classify(status: u16) -> Class {
    match status {
        400 | 413 | 422 => Class::InvalidInput,
        404 => Class::Unsupported,
        429 | 503 => Class::LimitExceeded,
        _ => Class::Internal,
    }
}

/// The error text of a non-2xx answer: the engine's own message when the
/// body is OpenAI-shaped, else the start of the body.
pub fn error_body_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => match v.get("error") {
            Some(e) => error_message(e),
            None => snippet(&text),
        },
        Err(_) => snippet(&text),
    }
}

/// At most 200 characters of `s`, for error messages.
pub fn snippet(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_an_openai_streaming_request() {
        let s = Sampling {
            max_tokens: 7,
            temperature: Some(0.0),
            seed: Some(3),
            stop: vec!["\n".into()],
            ..Sampling::default()
        };
        let v: Value =
            serde_json::from_str(&request_body(Endpoint::Completions, "m", "hi", &s)).unwrap();
        assert_eq!(v["model"], "m");
        assert_eq!(v["prompt"], "hi");
        assert_eq!(v["max_tokens"], 7);
        assert_eq!(v["seed"], 3);
        assert_eq!(v["stop"], json!(["\n"]));
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(v.get("top_p").is_none());
        let v: Value = serde_json::from_str(&request_body(Endpoint::Chat, "m", "hi", &s)).unwrap();
        assert_eq!(v["messages"], json!([{"role": "user", "content": "hi"}]));
        assert!(v.get("prompt").is_none());
        assert_eq!(Endpoint::parse("chat").unwrap().path(), "/chat/completions");
        assert!(Endpoint::parse("responses")
            .unwrap_err()
            .contains("`responses`"));
    }

    #[test]
    fn chunks_of_both_endpoints_and_whole_answers_parse() {
        let p =
            parse_piece(r#"{"id":"x","choices":[{"index":0,"text":"He","finish_reason":null}]}"#)
                .unwrap();
        assert_eq!(
            (p.text.as_str(), p.finish, p.usage, p.token),
            ("He", None, None, true)
        );
        let p =
            parse_piece(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#).unwrap();
        assert_eq!((p.text.as_str(), p.token), ("", false));
        let p = parse_piece(r#"{"choices":[{"text":"","finish_reason":null}]}"#).unwrap();
        assert!(p.token, "an incomplete character is still a token");
        let p = parse_piece(r#"{"choices":[{"text":"","finish_reason":"stop"}]}"#).unwrap();
        assert!(!p.token);
        let p =
            parse_piece(r#"{"choices":[{"delta":{"content":"llo"},"finish_reason":"length"}]}"#)
                .unwrap();
        assert_eq!(
            (p.text.as_str(), p.finish.as_deref()),
            ("llo", Some("length"))
        );
        let p = parse_piece(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!(
            p.usage,
            Some(EngineUsage {
                prompt: 5,
                completion: 2
            })
        );
        let p = parse_piece(r#"{"choices":[{"message":{"role":"assistant","content":"all"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#).unwrap();
        assert_eq!(p.text, "all");
    }

    #[test]
    fn errors_and_garbage_are_told_apart() {
        assert_eq!(
            parse_piece(r#"{"error":{"message":"model exploded","type":"server_error"}}"#),
            Err(EngineError::Reported("model exploded".into()))
        );
        for bad in [
            "<html>",
            "[1,2]",
            r#"{"object":"x"}"#,
            r#"{"choices":[{"text":5}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":-1}}"#,
        ] {
            assert!(
                matches!(parse_piece(bad), Err(EngineError::Garbage(_))),
                "{bad}"
            );
        }
        assert_eq!(classify(404), Class::Unsupported);
        assert_eq!(classify(400), Class::InvalidInput);
        assert_eq!(classify(429), Class::LimitExceeded);
        assert_eq!(classify(500), Class::Internal);
        assert_eq!(
            error_body_message(br#"{"error":{"message":"no such model"}}"#),
            "no such model"
        );
        assert_eq!(error_body_message(b"Bad Gateway"), "Bad Gateway");
        assert_eq!(snippet(&"x".repeat(300)).chars().count(), 201);
    }
}
