//! `POST /v1/completions` and `POST /v1/chat/completions`: the request
//! checked, the prompt rendered (chat), the job run on the network, and
//! the answer in OpenAI's shape. `stop` strings are applied here (the
//! backend knows only `max_tokens` and EOS), so `usage` stays what the
//! provider signed and was paid for. `finish_reason` is `stop` when a stop
//! string or the model's end ended the text, `length` when the provider
//! produced `max_tokens` tokens.

use super::error::ApiError;
use super::request::{parse, ChatRequest, CompletionRequest, Job, Sampling};
use super::{now_secs, stream, template, ApiState};
use crate::payments::{display, money_json};
use crate::sdk::{JobOutcome, Verdict};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Which endpoint: they differ only in the shape of their answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

impl Kind {
    /// The whole answer: one choice of `text` ending for `finish`, with
    /// `usage` and the `infernet` field.
    pub(super) fn answer(
        self,
        job_id: &str,
        model: &str,
        text: &str,
        finish: &str,
        usage: serde_json::Value,
        infernet: serde_json::Value,
    ) -> serde_json::Value {
        let choice = match self {
            Kind::Chat => serde_json::json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish,
            }),
            Kind::Completion => serde_json::json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish,
            }),
        };
        serde_json::json!({
            "id": self.id(job_id),
            "object": if self == Kind::Chat { "chat.completion" } else { "text_completion" },
            "created": now_secs(),
            "model": model,
            "system_fingerprint": null,
            "choices": [choice],
            "usage": usage,
            "infernet": infernet,
        })
    }

    /// The response id for a job.
    pub(super) fn id(self, job_id: &str) -> String {
        match self {
            Kind::Chat => format!("chatcmpl-{job_id}"),
            Kind::Completion => format!("cmpl-{job_id}"),
        }
    }
}

pub(super) async fn chat(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let run = async {
        let key = s.authorize_jobs(&headers)?;
        let req: ChatRequest = parse(&body)?;
        let job = parse::<Sampling>(&body)?.job(&s.cfg, &headers)?;
        let prompt = match template::render(s.node.config(), &req.model, &req.messages) {
            Ok(p) => p,
            // No template for a model nobody advertises: the model is the problem.
            Err(e)
                if e.code == Some("chat_template_missing") && !s.advertised(&req.model).await =>
            {
                return Err(ApiError::model_not_found(
                    &req.model,
                    "no provider advertises it (GET /v1/models lists those that do)",
                ))
            }
            Err(e) => return Err(e),
        };
        generate(&s, key, Kind::Chat, req.model, prompt, job).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn completions(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let key = s.authorize_jobs(&headers)?;
        let req: CompletionRequest = parse(&body)?;
        let job = parse::<Sampling>(&body)?.job(&s.cfg, &headers)?;
        let mut prompts = req.prompt.into_vec();
        if prompts.len() != 1 {
            return Err(ApiError::bad_field(
                "prompt",
                "send one prompt per request (a string, or a list of one)",
            ));
        }
        let prompt = prompts.remove(0);
        generate(&s, key, Kind::Completion, req.model, prompt, job).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn generate(
    s: &ApiState,
    key: Option<usize>,
    kind: Kind,
    model: String,
    prompt: String,
    mut job: Job,
) -> Result<Response, ApiError> {
    let reserved = s.spend.reserve(key, &mut job.opts)?;
    let pipeline = s
        .node
        .client()
        .pipeline_needed(&model)
        .await
        .map_err(|e| ApiError::from_client(&model, e))?;
    if pipeline {
        return super::pipeline::answer(s, reserved, kind, model, prompt, job).await;
    }
    if job.stream {
        return stream::run(s, reserved, kind, model, prompt, job).await;
    }
    let outcome = s
        .node
        .infer(&model, &prompt, job.opts.clone())
        .await
        .map_err(|e| ApiError::from_client(&model, e))?;
    if let Some(r) = reserved {
        r.settle(outcome.price.amount, &outcome.price.currency);
    }
    let text = outcome
        .text()
        .ok_or_else(|| ApiError::upstream("the provider returned no text"))?;
    let (text, stopped) = cut(text, &job.stop);
    let finish = finish_reason(stopped, &outcome, job.max_tokens);
    let body = kind.answer(
        &outcome.job_id,
        &model,
        text,
        finish,
        usage(&outcome),
        meta(&outcome),
    );
    Ok((headers(&outcome), Json(body)).into_response())
}

/// `text` up to the first stop string, and whether one was found.
pub(super) fn cut<'a>(text: &'a str, stop: &[String]) -> (&'a str, bool) {
    match stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(i) => (&text[..i], true),
        None => (text, false),
    }
}

/// `stop` or `length`, truthfully.
pub(super) fn finish_reason(stopped: bool, o: &JobOutcome, max_tokens: u32) -> &'static str {
    if !stopped && o.usage().output_tokens >= max_tokens {
        "length"
    } else {
        "stop"
    }
}

/// OpenAI's usage object, from the provider's signed usage.
pub(super) fn usage(o: &JobOutcome) -> serde_json::Value {
    let u = o.usage();
    serde_json::json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

/// One word for how the result was checked.
fn verdict(o: &JobOutcome) -> String {
    match &o.verification {
        None if o.proof.is_some() => "proof-verified".into(),
        None => "none".into(),
        Some(v) => match &v.verdict {
            Verdict::Agreed => "agreed".into(),
            Verdict::Cheated { .. } => "cheated".into(),
            Verdict::NoFault { .. } => "no-fault".into(),
            Verdict::Unchecked => "unchecked".into(),
        },
    }
}

/// The `infernet` field: who served, what it cost, how it was checked.
pub(super) fn meta(o: &JobOutcome) -> serde_json::Value {
    let b = &o.signed.payload.backend;
    serde_json::json!({
        "job_id": o.job_id,
        "provider": o.provider.to_string(),
        "attempts": o.attempts,
        "price": money_json(o.price.amount, &o.price.currency),
        "backend": {"name": b.name, "version": b.version, "sha256": b.sha256},
        "verification": {
            "verdict": verdict(o),
            "detail": serde_json::to_value(&o.verification).unwrap_or_default(),
        },
    })
}

/// `x-infernet-*` headers for a finished job.
pub(super) fn headers(o: &JobOutcome) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    };
    set("x-infernet-job-id", o.job_id.clone());
    set("x-infernet-provider", o.provider.to_string());
    set(
        "x-infernet-price",
        display(o.price.amount, &o.price.currency),
    );
    set("x-infernet-verification", verdict(o));
    h
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cut_at_the_earliest_stop() {
        let stops = vec!["c".to_string(), "b".to_string()];
        assert_eq!(cut("aabbcc", &stops), ("aa", true));
        assert_eq!(cut("aa", &stops), ("aa", false));
        assert_eq!(cut("aa", &[]), ("aa", false));
    }
}
