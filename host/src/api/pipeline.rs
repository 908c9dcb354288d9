//! A text request for a model no single provider serves: the generation
//! runs on a pipeline of providers of its layer spans
//! (`JobClient::generate_pipeline`), and the answer has OpenAI's shape
//! with the stages under `infernet.pipeline`. It does not stream: a
//! request with `stream: true` is refused, naming the field.

use super::error::ApiError;
use super::request::Job;
use super::spend::Reservation;
use super::text::{cut, Kind};
use super::ApiState;
use crate::p2p::WireInput;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Runs `prompt` on a pipeline of `model` and answers as `kind`.
pub(super) async fn answer(
    s: &ApiState,
    reserved: Option<Reservation>,
    kind: Kind,
    model: String,
    prompt: String,
    job: Job,
) -> Result<Response, ApiError> {
    if job.stream {
        return Err(ApiError::bad_field(
            "stream",
            format!("`{model}` is served by a pipeline of providers, which answers without streaming: set `stream` to false"),
        ));
    }
    let opts = s
        .node
        .client()
        .pipeline_options(&job.opts)
        .map_err(|e| ApiError::from_client(&model, e))?;
    let out = s
        .node
        .generate_pipeline(&model, WireInput::Text(prompt), opts)
        .await
        .map_err(|e| ApiError::from_client(&model, e))?;
    if let (Some(r), Some(p)) = (reserved, out.price.first()) {
        r.settle(p.amount, &p.currency);
    }
    let (text, kept) = out.text.clone().unwrap_or_default();
    let (text, stopped) = cut(&text, &job.stop);
    let finish = if !stopped && kept >= job.max_tokens {
        "length"
    } else {
        "stop"
    };
    let first_job = out
        .stages
        .first()
        .and_then(|s| s.jobs.first())
        .cloned()
        .unwrap_or_default();
    let usage = serde_json::json!({
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": kept,
        "total_tokens": out.prompt_tokens.saturating_add(kept),
    });
    let pipeline = serde_json::json!({"pipeline": out.summary_json()});
    let body = kind.answer(&first_job, &model, text, finish, usage, pipeline);
    Ok(Json(body).into_response())
}
