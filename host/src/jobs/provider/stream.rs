//! Streamed runs: tokens from the backend's progress sink buffered per
//! job, served to the client's `Poll`s.

use super::*;

/// Tokens of one streamed run, fed by the backend's progress sink.
#[derive(Default)]
pub(super) struct TokenBuffer {
    state: Mutex<BufferState>,
    changed: Notify,
}

#[derive(Default)]
pub(super) struct BufferState {
    chunks: Vec<String>,
    /// The job reached `delivered` or `failed`; the store has the outcome.
    done: bool,
}

impl TokenBuffer {
    pub(super) fn update(&self, f: impl FnOnce(&mut BufferState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.changed.notify_waiters();
    }

    /// Chunks after `after_seq`, the last seq, and whether the run is over.
    pub(super) fn after(&self, after_seq: u64) -> (Vec<String>, u64, bool) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let from = usize::try_from(after_seq)
            .unwrap_or(usize::MAX)
            .min(s.chunks.len());
        (s.chunks[from..].to_vec(), s.chunks.len() as u64, s.done)
    }
}

impl ProviderHandler {
    /// Admits the job, replies `Ack` and runs it in the background, its
    /// tokens going to a buffer that `Poll` reads.
    pub(super) async fn start_stream(
        &self,
        from: PeerId,
        job: JobRequest,
        proof: Option<String>,
    ) -> Result<JobMessage, ProviderError> {
        let inner = self.inner.clone();
        let (admission, job, proof) = blocking(move || {
            let admission = inner.admit(from, &job, proof.as_deref())?;
            Ok((admission, job, proof))
        })
        .await?;
        let job_id = job.id.clone();
        match admission {
            // Already known: `Poll` serves its stored outcome.
            Admission::Seen(outcome) => {
                if let Err(e @ ProviderError::IdReused(_)) = *outcome {
                    return Err(e);
                }
            }
            Admission::New => {
                let buffer = Arc::new(TokenBuffer::default());
                if let Ok(mut streams) = self.inner.streams.lock() {
                    streams.insert(job_id.clone(), buffer.clone());
                }
                let feed = buffer.clone();
                let sink: ProgressSink = Box::new(move |event| {
                    if let ProgressEvent::Token(t) = event {
                        feed.update(|s| s.chunks.push(t));
                    }
                });
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    let id = job.id.clone();
                    // The outcome is in the store; `Poll` reads it from there.
                    if let Err(e) =
                        blocking(move || inner.execute(from, job, Some(sink), proof)).await
                    {
                        tracing::warn!(job = %id, error = %e, "streamed job failed");
                    }
                    buffer.update(|s| s.done = true);
                });
            }
        }
        Ok(JobMessage::ack(job_id))
    }

    pub(super) async fn poll(
        &self,
        job_id: String,
        after_seq: u64,
    ) -> Result<JobMessage, ProviderError> {
        let buffer = self
            .inner
            .streams
            .lock()
            .ok()
            .and_then(|s| s.get(&job_id).cloned());
        if let Some(buffer) = buffer {
            let (chunks, seq, done) = match buffer.after(after_seq) {
                (chunks, _, false) if chunks.is_empty() => {
                    // Wait a little for tokens rather than answer empty at once.
                    let _ = tokio::time::timeout(POLL_WAIT, buffer.changed.notified()).await;
                    buffer.after(after_seq)
                }
                now => now,
            };
            if !chunks.is_empty() || !done {
                return Ok(JobMessage::new(JobBody::Progress {
                    job_id,
                    seq,
                    chunks,
                    done,
                }));
            }
            // Everything streamed and the outcome is stored: serve it below.
            if let Ok(mut s) = self.inner.streams.lock() {
                s.remove(&job_id);
            }
        }
        let inner = self.inner.clone();
        blocking(move || match inner.store.jobs().get(&job_id)? {
            Some(record) if record.role == JobRole::Provider => stored_outcome(&record),
            _ => Err(ProviderError::UnknownJob(job_id)),
        })
        .await
    }
}
