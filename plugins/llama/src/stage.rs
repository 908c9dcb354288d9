//! Pipeline stages: a job with the parameter `layers` runs only those decoder
//! blocks of the model (one stage of a pipeline), over a KV cache that this
//! instance keeps per session between jobs (the host keeps one instance
//! alive per session). This module parses the stage parameters and keeps
//! the sessions; the backend ([`crate::backend`]) checks the input and runs
//! [`crate::model::Llama::forward_span`].
//!
//! Parameters (a job without `layers` runs the whole model as before):
//! - `layers`: `a..b`, blocks `a` (inclusive) to `b` (exclusive), with
//!   `0 <= a < b <= num_hidden_layers`;
//! - `session`: required, 1 to 64 characters of `A-Z a-z 0-9 . _ : -`;
//! - `pos`: required, u32, the position of the input's first row;
//! - `session_end`: `true` drops the session after this step (default
//!   `false`);
//! - `decode`: `true` turns the job into the pipeline's detokenizer: the
//!   first stage (it holds the tokenizer) returns the text of its `tokens`
//!   input; no session is read or kept.
//!
//! A session is created by a step at `pos` 0 and must then be fed its
//! positions in order, with the same model and `layers`. At most
//! [`MAX_SESSIONS`] are kept (the least recently used is dropped); a step
//! that fails drops its session, since its cache may be half updated.

use crate::model::Span;
use infernet_plugin_api::{Error, JobRequest, KvCache};
use std::collections::HashMap;

/// Sessions kept at once; the least recently used goes first.
pub const MAX_SESSIONS: usize = 8;

/// The longest session id.
const MAX_SESSION_ID: usize = 64;

/// A stage job's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageParams {
    pub span: Span,
    pub session: String,
    /// The position of the input's first row.
    pub pos: usize,
    /// Drop the session after this step.
    pub session_end: bool,
}

impl StageParams {
    /// The stage parameters, or `None` for a job without `layers` (the
    /// whole model). Every malformed value is `invalid-input` naming its key.
    pub fn from_job(job: &JobRequest) -> Result<Option<Self>, Error> {
        let Some(layers) = job.param_str("layers") else {
            return Ok(None);
        };
        let span = parse_layers(layers)?;
        let session = match job.param_str("session") {
            Some(raw) => parse_session(raw)?,
            None => {
                return Err(Error::invalid(
                    "parameter `session` is required with `layers`",
                ))
            }
        };
        let pos: u32 = job.param("pos")?.ok_or_else(|| {
            Error::invalid(
                "parameter `pos` is required with `layers`: the position of the input's first row",
            )
        })?;
        Ok(Some(StageParams {
            span,
            session,
            pos: pos as usize,
            session_end: job.param_or("session_end", false)?,
        }))
    }
}

/// `a..b` with `a < b` (the model's size is checked when it is loaded).
pub fn parse_layers(raw: &str) -> Result<Span, Error> {
    let malformed = || {
        Error::invalid(format!(
            "parameter `layers` has malformed value `{raw}`: expected `a..b`, \
             decoder blocks a (inclusive) to b (exclusive)"
        ))
    };
    let number = |s: &str| -> Result<usize, Error> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse().map_err(|_| malformed())
    };
    let (a, b) = raw.trim().split_once("..").ok_or_else(malformed)?;
    let span = Span {
        start: number(a)?,
        end: number(b)?,
    };
    if span.start >= span.end {
        return Err(Error::invalid(format!(
            "parameter `layers` is {span}: no blocks; it must be a..b with a < b"
        )));
    }
    Ok(span)
}

/// A session id: 1 to 64 characters of `A-Z a-z 0-9 . _ : -`.
fn parse_session(raw: &str) -> Result<String, Error> {
    let id = raw.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > MAX_SESSION_ID || !id.chars().all(allowed) {
        return Err(Error::invalid(format!(
            "parameter `session` must be 1 to {MAX_SESSION_ID} characters of \
             A-Z, a-z, 0-9, `.`, `_`, `:` and `-`"
        )));
    }
    Ok(id.to_string())
}

/// One session's state in this stage.
pub struct Session {
    /// The model and blocks it runs.
    pub model: String,
    pub span: Span,
    /// Keys and values of its blocks (layer `i` is block `span.start + i`).
    pub cache: KvCache,
    /// The position its next input must start at.
    pub next_pos: usize,
    /// When it was last kept, for eviction.
    last_used: u64,
}

/// The sessions of this instance, by id.
#[derive(Default)]
pub struct Sessions {
    open: HashMap<String, Session>,
    clock: u64,
}

impl Sessions {
    /// Takes the job's session out to run a step on it: the known one, if
    /// the job continues it (same model and blocks, `pos` at its next
    /// position), or a new one for a job at position 0. Give it back with
    /// [`Sessions::keep`] after a step that succeeded; a known session the
    /// job does not continue is dropped.
    pub fn take(&mut self, p: &StageParams, model: &str) -> Result<Session, Error> {
        let id = &p.session;
        let Some(session) = self.open.remove(id) else {
            if p.pos != 0 {
                return Err(Error::invalid(format!(
                    "unknown session `{id}` at position {}: this stage has no cache for it; \
                     rebuild it by sending the session's inputs from position 0",
                    p.pos
                )));
            }
            return Ok(Session {
                model: model.to_string(),
                span: p.span,
                cache: KvCache::new(p.span.end - p.span.start, 2),
                next_pos: 0,
                last_used: 0,
            });
        };
        if session.model != model || session.span != p.span {
            return Err(Error::invalid(format!(
                "session `{id}` runs model `{}` layers {}; this job asks for model `{model}` \
                 layers {} (the session is dropped)",
                session.model, session.span, p.span
            )));
        }
        if session.next_pos != p.pos {
            return Err(Error::invalid(format!(
                "session `{id}` is at position {}; this job's `pos` is {} (the session is \
                 dropped: rebuild it by sending its inputs from position 0)",
                session.next_pos, p.pos
            )));
        }
        Ok(session)
    }

    /// Keeps `session` as `id`, the most recently used; past
    /// [`MAX_SESSIONS`], drops the least recently used other one and
    /// returns its id.
    pub fn keep(&mut self, id: String, mut session: Session) -> Option<String> {
        self.clock += 1;
        session.last_used = self.clock;
        self.open.insert(id, session);
        if self.open.len() <= MAX_SESSIONS {
            return None;
        }
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(id, _)| id.clone())?;
        self.open.remove(&oldest);
        Some(oldest)
    }

    /// Drops session `id` if it is kept.
    pub fn remove(&mut self, id: &str) {
        self.open.remove(id.trim());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infernet_plugin_api::JobInput;

    fn job(params: &[(&str, &str)]) -> JobRequest {
        JobRequest {
            id: "j".into(),
            model: "m".into(),
            input: JobInput::Tokens(vec![1]),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn invalid(params: &[(&str, &str)]) -> String {
        match StageParams::from_job(&job(params)) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    const OK: [(&str, &str); 3] = [("layers", "2..5"), ("session", "s-1.a:b_c"), ("pos", "7")];

    #[test]
    fn parameters_parse() {
        assert_eq!(StageParams::from_job(&job(&[])).unwrap(), None);
        let p = StageParams::from_job(&job(&OK)).unwrap().unwrap();
        assert_eq!(p.span, Span { start: 2, end: 5 });
        assert_eq!(
            (p.session.as_str(), p.pos, p.session_end),
            ("s-1.a:b_c", 7, false)
        );
        let mut end = OK.to_vec();
        end.push(("session_end", "true"));
        assert!(
            StageParams::from_job(&job(&end))
                .unwrap()
                .unwrap()
                .session_end
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for bad in [
            "", "3", "3..", "..3", "a..b", "+1..3", "1...3", "1..=3", "-1..3",
        ] {
            assert!(
                invalid(&[("layers", bad), OK[1], OK[2]]).contains("`layers`"),
                "{bad}"
            );
        }
        assert!(invalid(&[("layers", "3..3"), OK[1], OK[2]]).contains("`layers` is 3..3"));
        assert!(invalid(&[OK[0], OK[2]]).contains("`session` is required"));
        let long = "x".repeat(65);
        for bad in ["", "a b", "é", "a/b", long.as_str()] {
            assert!(
                invalid(&[OK[0], ("session", bad), OK[2]]).contains("`session`"),
                "{bad}"
            );
        }
        assert!(invalid(&[OK[0], OK[1]]).contains("`pos` is required"));
        assert!(invalid(&[OK[0], OK[1], ("pos", "-1")]).contains("`pos`"));
        assert!(invalid(&[OK[0], OK[1], ("pos", "4294967296")]).contains("`pos`"));
        let mut end = OK.to_vec();
        end.push(("session_end", "yes"));
        assert!(invalid(&end).contains("`session_end`"));
    }

    fn params(session: &str, pos: usize) -> StageParams {
        StageParams {
            span: Span { start: 0, end: 2 },
            session: session.into(),
            pos,
            session_end: false,
        }
    }

    #[test]
    fn sessions_continue_in_order() {
        let mut sessions = Sessions::default();
        let m = |r: Result<Session, Error>| match r {
            Err(Error::InvalidInput(m)) => m,
            _ => panic!("expected invalid-input"),
        };
        assert!(
            m(sessions.take(&params("a", 3), "m")).starts_with("unknown session `a` at position 3")
        );
        let mut s = sessions.take(&params("a", 0), "m").unwrap();
        s.next_pos = 4;
        sessions.keep("a".into(), s);
        assert!(m(sessions.take(&params("a", 5), "m")).contains("is at position 4"));
        // That failure dropped it.
        assert!(m(sessions.take(&params("a", 4), "m")).starts_with("unknown session"));
        let mut s = sessions.take(&params("a", 0), "m").unwrap();
        s.next_pos = 4;
        sessions.keep("a".into(), s);
        assert!(m(sessions.take(&params("a", 4), "other")).contains("model `other`"));
    }

    #[test]
    fn the_least_recently_used_session_goes_first() {
        let mut sessions = Sessions::default();
        for i in 0..=MAX_SESSIONS {
            let id = format!("s{i}");
            let s = sessions.take(&params(&id, 0), "m").unwrap();
            let dropped = sessions.keep(id, s);
            assert_eq!(dropped.as_deref(), (i == MAX_SESSIONS).then_some("s1"));
            if i == MAX_SESSIONS - 1 {
                // s0 used again before the ninth comes: s1 is the oldest.
                let s = sessions.take(&params("s0", 0), "m").unwrap();
                sessions.keep("s0".into(), s);
            }
        }
        assert_eq!(sessions.open.len(), MAX_SESSIONS);
        assert!(sessions.open.contains_key("s0"));
        assert!(!sessions.open.contains_key("s1"));
    }
}
