//! The data every plugin `Store` carries: its resource table, WASI context
//! (empty: no files, env, args or sockets), limits and the capabilities its
//! config granted.

use super::limits::{Limits, MemoryLimiter};
use crate::kernels::KernelCtx;
use crate::models::ModelGrants;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Partial output streamed by a backend during `execute`.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// A piece of generated output.
    Token(String),
    /// `done` of `total` steps.
    Progress {
        /// Steps done.
        done: u64,
        /// Steps in all.
        total: u64,
    },
}

/// Receives [`ProgressEvent`]s while a job runs.
pub type ProgressSink = Box<dyn FnMut(ProgressEvent) + Send>;

/// Store data of one plugin instance.
pub struct PluginState {
    /// Plugin name, for logs and errors.
    pub plugin: String,
    /// Host resources (tensors, weights, tokenizers, samplers) by handle.
    pub table: ResourceTable,
    wasi: WasiCtx,
    /// Captured stderr (panic messages), logged when a call fails.
    pub stderr: MemoryOutputPipe,
    /// Effective limits.
    pub limits: Limits,
    /// Linear-memory limiter.
    pub memory: MemoryLimiter,
    /// Kernel accounting and device.
    pub kernels: KernelCtx,
    /// Models this plugin may open.
    pub models: ModelGrants,
    /// Plain config values readable through the `config` interface.
    pub config: BTreeMap<String, String>,
    /// Secret name → environment variable name.
    pub secrets: BTreeMap<String, String>,
    /// Where `progress` events go during the current call.
    pub progress: Option<ProgressSink>,
    /// Set by the caller to ask the plugin to stop early.
    pub cancel: Arc<AtomicBool>,
    /// The plugin's `kv` namespace (payment plugins only).
    pub kv: Option<crate::store::PluginKv>,
    /// Outgoing HTTP: the hosts this plugin may reach (payment plugins only;
    /// empty means none).
    pub http: crate::worlds::payment::HostFilter,
    http_ctx: wasmtime_wasi_http::WasiHttpCtx,
}

impl PluginState {
    /// Fresh state for one store.
    pub fn new(plugin: &str, limits: Limits, kernels: KernelCtx, models: ModelGrants) -> Self {
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .build();
        PluginState {
            plugin: plugin.to_owned(),
            table: ResourceTable::new(),
            wasi,
            stderr,
            memory: MemoryLimiter {
                max_bytes: limits.memory_bytes,
                refused: None,
            },
            limits,
            kernels,
            models,
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            progress: None,
            cancel: Arc::new(AtomicBool::new(false)),
            kv: None,
            http: crate::worlds::payment::HostFilter::new(plugin, Vec::new()),
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
        }
    }

    /// Resets per-call accounting before a new call.
    pub fn begin_call(&mut self) {
        self.kernels.begin_call(&self.limits);
        self.memory.refused = None;
    }

    /// Sends a progress event to the current sink, if any.
    pub fn emit(&mut self, event: ProgressEvent) {
        if let Some(sink) = self.progress.as_mut() {
            sink(event);
        }
    }

    /// What the plugin wrote to stderr (e.g. a panic message), lossily decoded.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for PluginState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}
