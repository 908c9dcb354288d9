//! The small shared interfaces of 0.2.0: `log` (lines cut at 4 KiB),
//! `progress` (streamed tokens capped per call), `config`, `kv`, and the
//! type-only `types`.

use super::infernet::plugin::{config, kv, log, progress, types};
use super::Error;
use crate::store::KvError;
use crate::worlds::caps::{ConfigView, KvView, LogView, ProgressEvent, ProgressView};
use std::sync::atomic::Ordering;

/// Longest log line a plugin may write; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;

impl types::Host for LogView<'_> {}

impl log::Host for LogView<'_> {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let message = crate::runtime::limits::cut(message, MAX_LOG_LINE);
        let plugin = self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
        Ok(())
    }
}

impl ProgressView<'_> {
    fn emit(&mut self, event: ProgressEvent) {
        if let Some(sink) = self.ctx.sink.as_mut() {
            sink(event);
        }
    }

    /// Charges one streamed token of `bytes` to the call's budget and the
    /// job's token count, then sends its events.
    fn stream_token<const N: usize>(
        &mut self,
        bytes: usize,
        events: [ProgressEvent; N],
    ) -> wasmtime::Result<()> {
        self.stream.charge(bytes)?;
        self.ctx.count_token().map_err(wasmtime::Error::msg)?;
        for event in events {
            self.emit(event);
        }
        Ok(())
    }
}

impl progress::Host for ProgressView<'_> {
    /// Streams one token; past the call's `stream_tokens` / `stream_mb`
    /// the call traps with a [`LimitTrap`](crate::runtime::limits::LimitTrap)
    /// (this function has no error value), reported as `limit-exceeded`.
    fn emit_token(&mut self, text: String) -> wasmtime::Result<()> {
        self.stream_token(text.len(), [ProgressEvent::Token(text)])
    }

    /// As `emit_token`; each id counts 4 bytes against `stream_mb`.
    fn emit_token_ids(&mut self, ids: Vec<u32>, text: String) -> wasmtime::Result<()> {
        let bytes = text.len().saturating_add(ids.len().saturating_mul(4));
        self.stream_token(
            bytes,
            [ProgressEvent::TokenIds(ids), ProgressEvent::Token(text)],
        )
    }

    fn report(&mut self, done: u64, total: u64) -> wasmtime::Result<()> {
        self.emit(ProgressEvent::Progress { done, total });
        Ok(())
    }

    fn cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.ctx.cancel.load(Ordering::Relaxed))
    }
}

impl config::Host for ConfigView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.grant.values.get(&key).cloned())
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.grant.values.keys().cloned().collect())
    }

    fn secret(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(match self.grant.secrets.get(&name) {
            Some(var) => std::env::var(var).ok(),
            None => self.grant.generated.get(&name).cloned(),
        })
    }
}

fn kv_err(e: KvError) -> Error {
    match e {
        KvError::Limit(m) => Error::LimitExceeded(m),
        KvError::Store(e) => Error::Internal(format!("kv: {e}")),
    }
}

impl kv::Host for KvView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(self.kv.get(&key).map_err(kv_err))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.kv.set(&key, &value).map_err(kv_err))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.kv.delete(&key).map_err(kv_err))
    }

    fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, Error>> {
        Ok(self.kv.list_keys(&prefix).map_err(kv_err))
    }
}
