//! The `jobs` table and its append-only `job_events` log.

use super::rows::{json_opt, parsed, parsed_opt, query, query_one, FromRow};
use super::{now_ms, JobRole, JobState, Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Job id (unique across roles on this node).
    pub id: String,
    /// Our side of it.
    pub role: JobRole,
    /// Model id.
    pub model: String,
    /// Current state.
    pub state: JobState,
    /// The client's peer id (provider role), if known.
    pub client_peer: Option<String>,
    /// The provider's peer id once chosen.
    pub provider_peer: Option<String>,
    /// The accepted quote.
    pub quote_id: Option<String>,
    /// sha256 (hex) of the canonical request: the idempotency key.
    pub request_hash: String,
    /// The request itself, so a restarted node can resume.
    pub request: Option<serde_json::Value>,
    /// The delivered result (output + signed result), once there is one.
    pub result: Option<serde_json::Value>,
    /// Last error message.
    pub error: Option<String>,
    /// How many providers have been tried.
    pub attempts: i64,
    /// Creation time, ms since epoch.
    pub created_at_ms: i64,
    /// Last change, ms since epoch.
    pub updated_at_ms: i64,
}

/// What to insert; the job starts `created`.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Job id.
    pub id: String,
    /// Our side.
    pub role: JobRole,
    /// Model id.
    pub model: String,
    /// sha256 (hex) of the canonical request.
    pub request_hash: String,
    /// The request, for resuming.
    pub request: Option<serde_json::Value>,
    /// Client peer (provider role).
    pub client_peer: Option<String>,
    /// Provider peer, if already chosen.
    pub provider_peer: Option<String>,
}

/// Columns set together with a transition (`None` leaves a column alone).
#[derive(Debug, Clone, Default)]
pub struct JobUpdate {
    /// New provider.
    pub provider_peer: Option<String>,
    /// Accepted quote.
    pub quote_id: Option<String>,
    /// Result JSON.
    pub result: Option<serde_json::Value>,
    /// Error message.
    pub error: Option<String>,
    /// Count one more provider attempt.
    pub bump_attempts: bool,
}

/// One row of the transition log.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// Global, increasing sequence number.
    pub seq: i64,
    /// Job.
    pub job_id: String,
    /// Previous state (`None` for creation).
    pub from: Option<JobState>,
    /// New state.
    pub to: JobState,
    /// Free-form detail (reason, provider, ...).
    pub detail: Option<String>,
    /// When, ms since epoch.
    pub at_ms: i64,
}

/// Jobs repository; see [`Store::jobs`].
pub struct JobsRepo<'a> {
    pub(super) store: &'a Store,
}

impl FromRow for JobRecord {
    const COLUMNS: &'static str =
        "id, role, model, state, client_peer, provider_peer, quote_id, request_hash, \
         request, result, error, attempts, created_at_ms, updated_at_ms";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        Ok(JobRecord {
            id: r.get(0)?,
            role: parsed(r, 1, "job role")?,
            model: r.get(2)?,
            state: parsed(r, 3, "job state")?,
            client_peer: r.get(4)?,
            provider_peer: r.get(5)?,
            quote_id: r.get(6)?,
            request_hash: r.get(7)?,
            request: json_opt(r, 8)?,
            result: json_opt(r, 9)?,
            error: r.get(10)?,
            attempts: r.get(11)?,
            created_at_ms: r.get(12)?,
            updated_at_ms: r.get(13)?,
        })
    }
}

impl FromRow for JobEvent {
    const COLUMNS: &'static str = "seq, job_id, from_state, to_state, detail, at_ms";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        Ok(JobEvent {
            seq: r.get(0)?,
            job_id: r.get(1)?,
            from: parsed_opt(r, 2, "job state")?,
            to: parsed(r, 3, "job state")?,
            detail: r.get(4)?,
            at_ms: r.get(5)?,
        })
    }
}

impl JobsRepo<'_> {
    /// Inserts a job in state `created` and logs its creation event.
    /// A second insert of the same id is [`StoreError::DuplicateJob`].
    pub fn insert(&self, job: &NewJob) -> Result<JobRecord, StoreError> {
        let now = now_ms();
        self.store.write(|tx| {
            let request = job.request.as_ref().map(serde_json::to_string).transpose()?;
            let inserted = tx.execute(
                "INSERT INTO jobs (id, role, model, state, client_peer, provider_peer, request_hash, request,
                                   created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, 'created', ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT(id) DO NOTHING",
                params![
                    job.id,
                    job.role.as_str(),
                    job.model,
                    job.client_peer,
                    job.provider_peer,
                    job.request_hash,
                    request,
                    now
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::DuplicateJob(job.id.clone()));
            }
            tx.execute(
                "INSERT INTO job_events (job_id, from_state, to_state, detail, at_ms) VALUES (?1, NULL, 'created', NULL, ?2)",
                params![job.id, now],
            )?;
            Ok(())
        })?;
        self.get(&job.id)?
            .ok_or_else(|| StoreError::JobNotFound(job.id.clone()))
    }

    /// The job, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        query_one(&self.store.conn(), "jobs WHERE id = ?1", [id])
    }

    /// Moves `job_id` from `from` to `to`, logging `detail`. Atomic: the row
    /// changes only if it is still in `from`, and the event row is written in
    /// the same transaction.
    pub fn transition(
        &self,
        job_id: &str,
        from: JobState,
        to: JobState,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.transition_with(job_id, from, to, detail, &JobUpdate::default())
    }

    /// [`JobsRepo::transition`] that also sets columns (provider, quote,
    /// result, error) in the same transaction.
    pub fn transition_with(
        &self,
        job_id: &str,
        from: JobState,
        to: JobState,
        detail: &str,
        update: &JobUpdate,
    ) -> Result<(), StoreError> {
        self.transition_path(job_id, &[(from, to, detail)], update)
    }

    /// Several transitions in one transaction, each checked and logged as
    /// if done alone (`steps` are `(from, to, detail)`), `update` set with
    /// the last: all happen or none. For steps with nothing to wait for
    /// between them.
    pub fn transition_path(
        &self,
        job_id: &str,
        steps: &[(JobState, JobState, &str)],
        update: &JobUpdate,
    ) -> Result<(), StoreError> {
        let none = JobUpdate::default();
        self.store.write(|tx| {
            steps
                .iter()
                .enumerate()
                .try_for_each(|(i, (from, to, detail))| {
                    let update = if i + 1 == steps.len() { update } else { &none };
                    apply_transition(tx, job_id, *from, *to, detail, update)
                })
        })
    }

    /// Re-points a job that is in `state` at another provider and quote
    /// without changing state (a failed accept, or a fresh quote after
    /// failover), counting one more attempt and logging `detail` as a
    /// `state -> state` event. Fails with [`StoreError::StateConflict`] when
    /// the job has moved on.
    pub fn reassign(
        &self,
        job_id: &str,
        state: JobState,
        provider_peer: &str,
        quote_id: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.store.write(|tx| {
            let changed = tx.execute(
                "UPDATE jobs SET provider_peer = ?3, quote_id = ?4, attempts = attempts + 1, updated_at_ms = ?5
                  WHERE id = ?1 AND state = ?2",
                params![job_id, state.as_str(), provider_peer, quote_id, now],
            )?;
            if changed == 0 {
                return Err(not_in_state(tx, job_id, state)?);
            }
            tx.execute(
                "INSERT INTO job_events (job_id, from_state, to_state, detail, at_ms) VALUES (?1, ?2, ?2, ?3, ?4)",
                params![job_id, state.as_str(), detail, now],
            )?;
            Ok(())
        })
    }

    /// Newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        query(
            &self.store.conn(),
            "jobs ORDER BY created_at_ms DESC, id LIMIT ?1",
            params![limit as i64],
        )
    }

    /// How many jobs each (role, state) has, as the database names them
    /// (`client`, `settled`): the `infernet_jobs` gauge.
    pub fn counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let conn = self.store.conn();
        let mut stmt =
            conn.prepare("SELECT role, state, COUNT(*) FROM jobs GROUP BY role, state")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Jobs in any of `states`, oldest first.
    pub fn in_states(&self, states: &[JobState]) -> Result<Vec<JobRecord>, StoreError> {
        let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        if names.is_empty() {
            return Ok(vec![]);
        }
        query(
            &self.store.conn(),
            &format!(
                "jobs WHERE state IN ({}) ORDER BY created_at_ms, id",
                names.join(",")
            ),
            [],
        )
    }

    /// Jobs a restarted node must resume ([`JobState::is_active`]).
    pub fn active(&self) -> Result<Vec<JobRecord>, StoreError> {
        let states: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        self.in_states(&states)
    }

    /// Jobs with this request hash (duplicate detection).
    pub fn by_request_hash(&self, hash: &str) -> Result<Vec<JobRecord>, StoreError> {
        query(
            &self.store.conn(),
            "jobs WHERE request_hash = ?1 ORDER BY created_at_ms, id",
            [hash],
        )
    }

    /// The transition log of one job, oldest first.
    pub fn events(&self, job_id: &str) -> Result<Vec<JobEvent>, StoreError> {
        query(
            &self.store.conn(),
            "job_events WHERE job_id = ?1 ORDER BY seq",
            [job_id],
        )
    }
}

/// One checked transition inside `tx`: the row changes only if it is still
/// in `from`, and the event row is written alongside.
fn apply_transition(
    tx: &rusqlite::Transaction<'_>,
    job_id: &str,
    from: JobState,
    to: JobState,
    detail: &str,
    update: &JobUpdate,
) -> Result<(), StoreError> {
    if !JobState::can_transition(from, to) {
        return Err(StoreError::IllegalTransition {
            job_id: job_id.into(),
            from,
            to,
        });
    }
    let now = now_ms();
    let result = update
        .result
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    let changed = tx.execute(
        "UPDATE jobs SET state = ?3, updated_at_ms = ?4,
                provider_peer = COALESCE(?5, provider_peer),
                quote_id = COALESCE(?6, quote_id),
                result = COALESCE(?7, result),
                error = COALESCE(?8, error),
                attempts = attempts + ?9
          WHERE id = ?1 AND state = ?2",
        params![
            job_id,
            from.as_str(),
            to.as_str(),
            now,
            update.provider_peer,
            update.quote_id,
            result,
            update.error,
            update.bump_attempts as i64
        ],
    )?;
    if changed == 0 {
        return Err(not_in_state(tx, job_id, from)?);
    }
    tx.execute(
        "INSERT INTO job_events (job_id, from_state, to_state, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![job_id, from.as_str(), to.as_str(), if detail.is_empty() { None } else { Some(detail) }, now],
    )?;
    Ok(())
}

/// Why an update guarded by `state = expected` changed nothing.
fn not_in_state(
    tx: &rusqlite::Transaction<'_>,
    job_id: &str,
    expected: JobState,
) -> Result<StoreError, StoreError> {
    let actual: Option<String> = tx
        .query_row("SELECT state FROM jobs WHERE id = ?1", [job_id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match actual {
        None => StoreError::JobNotFound(job_id.into()),
        Some(s) => StoreError::StateConflict {
            job_id: job_id.into(),
            expected,
            actual: s
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("job state `{s}`")))?,
        },
    })
}
