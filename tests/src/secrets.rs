//! Helpers for the "secrets never leak" tests: secrets handed to plugins
//! through fresh environment variables, a `tracing` writer that keeps every
//! log line, and a byte search over every file a node wrote.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sets `value` in a fresh environment variable (unique in this process)
/// and returns its name, for a `[payment.secrets]` grant.
pub fn secret_env(value: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "INFERNET_TEST_SECRET_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    std::env::set_var(&name, value);
    name
}

/// A `tracing` writer that keeps everything written to it.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// A subscriber at `level` writing into this capture (no colours).
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// A multi-thread tokio runtime (4 workers) whose every thread, its
    /// blocking pool included, logs into this capture at `level`. In-process
    /// nodes started on it log here and nowhere else: other tests sharing
    /// the test binary neither see these lines nor add theirs.
    pub fn runtime(&self, level: tracing::Level) -> tokio::runtime::Runtime {
        let dispatch = tracing::Dispatch::new(self.subscriber(level));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .on_thread_start(move || {
                // Kept for the thread's whole life (runtime threads end with it).
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .expect("building a tokio runtime")
    }

    /// Runs `fut` to completion on [`runtime`](Self::runtime), the calling
    /// thread logging here too.
    pub fn block_on<F: std::future::Future>(&self, level: tracing::Level, fut: F) -> F::Output {
        let runtime = self.runtime(level);
        let _here = tracing::subscriber::set_default(self.subscriber(level));
        runtime.block_on(fut)
    }

    /// Everything captured so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
