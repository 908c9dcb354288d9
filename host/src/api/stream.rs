//! Server-sent events as OpenAI sends them. The response starts once a
//! provider took the job (anything failing before that is an ordinary
//! error response with its status); then every chunk carries the same
//! `id`, a chat's first delta carries `role: "assistant"`, exactly one
//! chunk carries a `finish_reason`, a usage chunk with empty `choices`
//! follows when `stream_options.include_usage` asked for it, and
//! `data: [DONE]` ends the stream. A failure after the start is an event
//! carrying `error`, then `[DONE]`.
//!
//! Text is reconciled against what was already sent: after a failover the
//! next provider's tokens are checked against the text sent so far (with
//! deterministic decoding they repeat it) and only what is new is sent; the
//! signed result's text is checked the same way at the end. Divergent text
//! is an error event, never silently spliced. A client that goes away
//! before the end has its job cancelled (the provider is told).

use super::error::ApiError;
use super::request::Job;
use super::spend::Reservation;
use super::text::{finish_reason, headers, meta, usage, Kind};
use super::{now_secs, ApiState};
use crate::payments::display;
use crate::sdk::{Infernet, JobOutcome, JobStream, StreamEvent};
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Cuts streamed text at stop strings, holding back a tail that could be
/// the start of one.
#[derive(Debug, Default)]
pub(super) struct StopCutter {
    stops: Vec<String>,
    buf: String,
    sent: usize,
    stopped: bool,
}

impl StopCutter {
    pub(super) fn new(stops: Vec<String>) -> Self {
        StopCutter {
            stops,
            ..Default::default()
        }
    }

    /// Adds text; returns what may be sent now.
    pub(super) fn push(&mut self, t: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.buf.push_str(t);
        let (text, stopped) = super::text::cut(&self.buf, &self.stops);
        if stopped {
            self.stopped = true;
            let out = self.buf[self.sent.min(text.len())..text.len()].to_string();
            self.sent = text.len();
            return out;
        }
        let bytes = self.buf.as_bytes();
        let hold = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).map(move |k| &s.as_bytes()[..k]))
            .filter(|p| bytes.ends_with(p))
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        let end = (self.buf.len() - hold).max(self.sent);
        // `end` starts a stop string's prefix, so it is a char boundary;
        // checked anyway rather than trusted.
        if !self.buf.is_char_boundary(end) {
            return String::new();
        }
        let out = self.buf[self.sent..end].to_string();
        self.sent = end;
        out
    }

    /// The held tail, once no more text comes.
    pub(super) fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let out = self.buf[self.sent..].to_string();
        self.sent = self.buf.len();
        out
    }
}

/// Where the text comes from: a live job, or one already finished.
enum Source {
    Live(JobStream),
    Done(Box<JobOutcome>),
}

/// Starts the job and answers with the event stream.
pub(super) async fn run(
    s: &ApiState,
    reserved: Option<Reservation>,
    kind: Kind,
    model: String,
    prompt: String,
    job: Job,
) -> Result<Response, ApiError> {
    let mut js = s
        .node
        .infer_stream(&model, &prompt, job.opts.clone())
        .await
        .map_err(|e| ApiError::from_client(&model, e))?;
    let mut early = Vec::new();
    let assigned = loop {
        match js.next().await {
            Some(StreamEvent::Assigned {
                provider, price, ..
            }) => break Some((provider, price)),
            Some(e) => early.push(e),
            None => break None,
        }
    };
    let job_id = js.job_id.clone();
    let mut hdrs = axum::http::HeaderMap::new();
    let (source, provider, price) = match assigned {
        Some((p, m)) => (Source::Live(js), p, m),
        None => {
            let o = js
                .finish()
                .await
                .map_err(|e| ApiError::from_client(&model, e))?;
            hdrs = headers(&o);
            let (p, m) = (o.provider, o.price.clone());
            (Source::Done(Box::new(o)), p, m)
        }
    };
    for (k, v) in [
        ("x-infernet-job-id", job_id.clone()),
        ("x-infernet-provider", provider.to_string()),
        ("x-infernet-price", display(price.amount, &price.currency)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hdrs.insert(HeaderName::from_static(k), v);
        }
    }
    let (tx, rx) = mpsc::channel::<Event>(64);
    let writer = Writer {
        tx,
        kind,
        id: kind.id(&job_id),
        model: model.clone(),
        created: now_secs(),
    };
    tokio::spawn(drive(
        writer,
        source,
        early,
        job,
        model,
        reserved,
        s.node.clone(),
        job_id,
    ));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok((hdrs, Sse::new(events)).into_response())
}

/// Sends chunks; `false` once the client has gone.
struct Writer {
    tx: mpsc::Sender<Event>,
    kind: Kind,
    id: String,
    model: String,
    created: u64,
}

impl Writer {
    async fn send(&self, v: serde_json::Value) -> bool {
        self.tx
            .send(Event::default().data(v.to_string()))
            .await
            .is_ok()
    }

    /// A chunk with one choice: `delta` (chat) or `text` (completions).
    async fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> bool {
        let (object, choice) = match self.kind {
            Kind::Chat => (
                "chat.completion.chunk",
                serde_json::json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}),
            ),
            Kind::Completion => (
                "text_completion",
                serde_json::json!({
                    "index": 0,
                    "text": delta.get("content").and_then(|c| c.as_str()).unwrap_or(""),
                    "logprobs": null,
                    "finish_reason": finish,
                }),
            ),
        };
        self.send(serde_json::json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.model, "system_fingerprint": null, "choices": [choice],
        }))
        .await
    }

    async fn text(&self, t: String) -> bool {
        t.is_empty() || self.chunk(serde_json::json!({"content": t}), None).await
    }

    async fn done(&self) {
        let _ = self.tx.send(Event::default().data("[DONE]")).await;
    }

    async fn error(&self, e: ApiError) {
        self.send(e.body()).await;
        self.done().await;
    }
}

/// Text received so far against text sent so far.
struct Reconcile {
    /// Raw text fed to the cutter (what the client has, before stops).
    fed: String,
    /// This attempt's text.
    attempt: String,
}

impl Reconcile {
    /// The part of `target` not yet fed; `Err` when it contradicts it.
    fn advance(&mut self, target: &str) -> Result<String, ApiError> {
        if self.fed.starts_with(target) {
            return Ok(String::new());
        }
        match target.strip_prefix(self.fed.as_str()) {
            Some(new) => {
                let new = new.to_string();
                self.fed = target.to_string();
                Ok(new)
            }
            None => Err(ApiError::upstream(
                "the provider's text diverged from the text already streamed (after a failover, \
                 or in its signed result); the stream is void",
            )),
        }
    }
}

/// The client went away mid-generation: the job is cancelled (its provider
/// told, nothing delivered is paid for), not run to its end for nobody.
async fn gone(node: &Infernet, job_id: &str) {
    match node.client().cancel(job_id).await {
        Ok(()) => tracing::info!(job = %job_id, "stream: client gone, job cancelled"),
        Err(e) => tracing::warn!(job = %job_id, error = %e, "stream: client gone, cannot cancel"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    w: Writer,
    source: Source,
    early: Vec<StreamEvent>,
    job: Job,
    model: String,
    reserved: Option<Reservation>,
    node: Arc<Infernet>,
    job_id: String,
) {
    if w.kind == Kind::Chat
        && !w
            .chunk(
                serde_json::json!({"role": "assistant", "content": ""}),
                None,
            )
            .await
    {
        return gone(&node, &job_id).await;
    }
    let mut cutter = StopCutter::new(job.stop.clone());
    let mut rec = Reconcile {
        fed: String::new(),
        attempt: String::new(),
    };
    let outcome = match source {
        Source::Done(o) => Ok(*o),
        Source::Live(mut js) => {
            let mut events = early.into_iter();
            loop {
                let event = match events.next() {
                    Some(e) => Some(e),
                    None => js.next().await,
                };
                match event {
                    None => break,
                    Some(StreamEvent::Token(t)) => {
                        rec.attempt.push_str(&t);
                        let target = rec.attempt.clone();
                        match rec.advance(&target) {
                            Ok(new) => {
                                if !w.text(cutter.push(&new)).await {
                                    return gone(&node, &job_id).await;
                                }
                            }
                            Err(e) => return w.error(e).await,
                        }
                    }
                    Some(StreamEvent::Failover { from, reason }) => {
                        tracing::info!(%from, %reason, "stream: provider failed, failing over");
                        rec.attempt.clear();
                    }
                    Some(StreamEvent::Assigned { .. }) => {}
                }
            }
            js.finish().await
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return w.error(ApiError::from_client(&model, e)).await,
    };
    if let Some(r) = reserved {
        r.settle(outcome.price.amount, &outcome.price.currency);
    }
    let Some(text) = outcome.text() else {
        return w
            .error(ApiError::upstream("the provider returned no text"))
            .await;
    };
    match rec.advance(text) {
        Ok(new) => {
            if !w.text(cutter.push(&new)).await {
                return;
            }
        }
        Err(e) => return w.error(e).await,
    }
    if !w.text(cutter.finish()).await {
        return;
    }
    let finish = finish_reason(cutter.stopped, &outcome, job.max_tokens);
    if !w.finish_chunk(finish, &outcome).await {
        return;
    }
    if job.include_usage {
        let ok = w
            .send(serde_json::json!({
                "id": w.id, "object": if w.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                "created": w.created, "model": w.model, "system_fingerprint": null,
                "choices": [], "usage": usage(&outcome), "infernet": meta(&outcome),
            }))
            .await;
        if !ok {
            return;
        }
    }
    w.done().await;
}

impl Writer {
    /// The `finish_reason` chunk, with the `infernet` field.
    async fn finish_chunk(&self, finish: &str, o: &JobOutcome) -> bool {
        let (object, choice) = match self.kind {
            Kind::Chat => (
                "chat.completion.chunk",
                serde_json::json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}),
            ),
            Kind::Completion => (
                "text_completion",
                serde_json::json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish}),
            ),
        };
        self.send(serde_json::json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.model, "system_fingerprint": null, "choices": [choice],
            "infernet": meta(o),
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::StopCutter;

    #[test]
    fn a_stop_split_across_tokens_is_never_sent() {
        let mut c = StopCutter::new(vec!["END".into()]);
        let mut out = String::new();
        for t in ["hello E", "N", "Dtail"] {
            out.push_str(&c.push(t));
        }
        out.push_str(&c.finish());
        assert_eq!(out, "hello ");
        let mut c = StopCutter::new(vec!["END".into()]);
        let mut out = String::new();
        for t in ["hello E", "x"] {
            out.push_str(&c.push(t));
        }
        out.push_str(&c.finish());
        assert_eq!(out, "hello Ex");
    }
}
