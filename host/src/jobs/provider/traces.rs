//! The provider's kept kernel traces: one file per job under
//! `<data_dir>/traces`, CBOR, named by the sha256 of the job's wire id, so
//! a dispute about a delivered result can be answered after the fact
//! (bisection needs the tree, the referee one leaf and its inputs). Bounded:
//! the oldest files go once more than `keep` are held.

use crate::kernels::trace::{Trace, TraceRoot};
use std::path::{Path, PathBuf};

/// Traces kept by default (a 64-token SmolLM-135M generation is about
/// 40,000 calls, a few MB).
pub const DEFAULT_KEEP: usize = 256;

/// Kept traces.
#[derive(Debug)]
pub struct TraceStore {
    dir: PathBuf,
    keep: usize,
}

impl TraceStore {
    /// Traces under `data_dir/traces`, at most `keep` of them.
    pub fn new(data_dir: &Path, keep: usize) -> Self {
        TraceStore {
            dir: data_dir.join("traces"),
            keep,
        }
    }

    fn path(&self, job_id: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.cbor",
            crate::p2p::protocol::sha256_hex(job_id.as_bytes())
        ))
    }

    /// Keeps `trace` for `job_id` and returns its root. A trace that cannot
    /// be written is logged, not fatal: the result still carries the root,
    /// and a dispute this node cannot answer is lost by it.
    pub fn keep(&self, job_id: &str, trace: &Trace) -> TraceRoot {
        let root = trace.root();
        if self.keep == 0 {
            return root;
        }
        let written = std::fs::create_dir_all(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::p2p::protocol::encode(trace).map_err(|e| e.to_string()))
            .and_then(|bytes| {
                let tmp = self.path(job_id).with_extension("tmp");
                std::fs::write(&tmp, bytes)
                    .and_then(|()| std::fs::rename(&tmp, self.path(job_id)))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(job = %job_id, error = %e, "cannot keep the job's kernel trace");
        }
        self.prune();
        root
    }

    /// The kept trace of `job_id`, if any.
    pub fn get(&self, job_id: &str) -> Option<Trace> {
        let bytes = std::fs::read(self.path(job_id)).ok()?;
        crate::p2p::protocol::decode(&bytes).ok()
    }

    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= self.keep {
            return;
        }
        files.sort();
        for (_, p) in &files[..files.len() - self.keep] {
            let _ = std::fs::remove_file(p);
        }
    }
}
