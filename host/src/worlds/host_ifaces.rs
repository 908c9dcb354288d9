//! Host side of the small shared interfaces: `log`, `progress`, `config`.

use crate::runtime::{PluginState, ProgressEvent};
use crate::worlds::backend::bindings::infernet::plugin::{log, progress};
use crate::worlds::pricing::bindings::infernet::plugin::config;
use std::sync::atomic::Ordering;

/// Longest log line a plugin may write; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.plugin.as_str();
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

impl progress::Host for PluginState {
    fn emit_token(&mut self, text: String) -> wasmtime::Result<()> {
        self.emit(ProgressEvent::Token(text));
        Ok(())
    }

    fn report(&mut self, done: u64, total: u64) -> wasmtime::Result<()> {
        self.emit(ProgressEvent::Progress { done, total });
        Ok(())
    }

    fn cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.cancel.load(Ordering::Relaxed))
    }
}

impl config::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config.get(&key).cloned())
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.config.keys().cloned().collect())
    }

    fn secret(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .secrets
            .get(&name)
            .and_then(|var| std::env::var(var).ok()))
    }
}

impl crate::worlds::backend::bindings::infernet::plugin::types::Host for PluginState {}
