//! Pipeline stages on a provider: a job for a span id
//! (`<model>@a..b/n`, [`crate::models::span`]) runs the model's backend
//! with `layers = "a..b"` set by the host, and a stage job that names a
//! `session` runs on the plugin instance that holds that session's KV
//! cache. Held instances are keyed by owner (the client's peer id), span
//! and session, expire after `node.session_ttl_secs` unused, and at most
//! `node.sessions` are held (the least recently used goes first). A step
//! whose session was dropped fails in the plugin ("unknown session") and
//! the client rebuilds the stage from the session's inputs.

use super::{BackendInstance, NodeError};
use crate::models::span::LayerSpan;
use crate::worlds::backend::JobRequest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest session id accepted.
pub const MAX_SESSION_ID: usize = 64;

/// Backend parameters the host sets for a stage; a client may not.
const HOST_PARAMS: &[&str] = &["layers"];

/// Instances held for sessions, by `owner/span/session`.
pub(super) struct Sessions {
    held: Mutex<HashMap<String, (BackendInstance, Instant)>>,
    ttl: Duration,
    max: usize,
}

impl Sessions {
    /// At most `max` sessions, each held `ttl` after its last step.
    pub(super) fn new(max: u32, ttl: Duration) -> Sessions {
        Sessions {
            held: Mutex::default(),
            ttl,
            max: max as usize,
        }
    }

    /// Takes the instance held for `key`, if it has not expired.
    pub(super) fn take(&self, key: &str) -> Option<BackendInstance> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (_, used)| used.elapsed() < self.ttl);
        held.remove(key).map(|(i, _)| i)
    }

    /// Holds `instance` for `key`, dropping expired sessions and, at the
    /// limit, the least recently used.
    pub(super) fn put(&self, key: String, instance: BackendInstance) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (_, used)| used.elapsed() < self.ttl);
        if self.max == 0 {
            return;
        }
        while held.len() >= self.max {
            let Some(oldest) = held
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            tracing::info!(session = %oldest, "session dropped: too many held");
            held.remove(&oldest);
        }
        held.insert(key, (instance, Instant::now()));
    }

    /// Sessions held now; expired ones are dropped first.
    pub(super) fn len(&self) -> usize {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (_, used)| used.elapsed() < self.ttl);
        held.len()
    }
}

/// How a job runs on this node: the job the plugin sees, and the session
/// key its instance is held under.
pub(super) struct StagePlan {
    pub(super) job: JobRequest,
    pub(super) session: Option<String>,
    /// The step asked to end its session.
    pub(super) end: bool,
}

/// A stage job rewritten for the plugin: the span id's model, the host's
/// `layers`, and the session key under `owner`. A job for a whole model
/// that sets a host parameter is refused.
pub(super) fn plan(
    job: &JobRequest,
    span: Option<&(String, LayerSpan)>,
    owner: &str,
) -> Result<StagePlan, NodeError> {
    let set = |k: &str| job.params.iter().any(|(key, _)| key == k);
    let Some((model, span)) = span else {
        if let Some(k) = HOST_PARAMS.iter().find(|k| set(k)) {
            return Err(NodeError::Stage(format!(
                "parameter `{k}` is set by a provider for a layer span; ask for a span id (`{}@a..b/n`) instead",
                job.model
            )));
        }
        return Ok(StagePlan {
            job: job.clone(),
            session: None,
            end: false,
        });
    };
    let param = |k: &str| {
        job.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let session = match param("session") {
        None => None,
        Some(s) if s.is_empty() || s.len() > MAX_SESSION_ID => {
            return Err(NodeError::Stage(format!(
                "parameter `session` must be 1 to {MAX_SESSION_ID} characters"
            )))
        }
        // One client's session of one span: a node serving two stages of
        // one pipeline keeps them apart even under one session id.
        Some(s) => Some(format!("{owner}/{}/{s}", job.model)),
    };
    let end = param("session_end") == Some("true");
    let mut params: Vec<(String, String)> = job
        .params
        .iter()
        .filter(|(k, _)| !HOST_PARAMS.contains(&k.as_str()))
        .cloned()
        .collect();
    params.push(("layers".into(), span.param()));
    Ok(StagePlan {
        job: JobRequest {
            id: job.id.clone(),
            model: model.clone(),
            input: job.input.clone(),
            params,
        },
        session,
        end,
    })
}
