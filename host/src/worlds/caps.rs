//! What each world's store holds beyond the runtime core, and the views the
//! WIT host traits are implemented on (the `wasmtime-wasi-nn` pattern): a
//! small state struct per capability, a view type that borrows it together
//! with the resource table, and a [`HasData`] marker naming the view for
//! `add_to_linker`. A world links only the capabilities its WIT imports, so
//! a pricing store has no kernels and a backend store no HTTP client.

use crate::kernels::KernelCtx;
use crate::models::ModelGrants;
use crate::runtime::limits::StreamBudget;
use crate::runtime::PluginState;
use crate::store::PluginKv;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wasmtime::component::{HasData, ResourceTable};

/// Partial output streamed by a backend during `execute`.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// The generated token ids the next [`ProgressEvent::Token`] was
    /// decoded from (`emit-token-ids`, 0.2.1); sinks that want only text
    /// ignore it.
    TokenIds(Vec<u32>),
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

/// The `progress` capability: where events go during the current call, and
/// the caller's cancel flag.
#[derive(Default)]
pub struct ProgressCtx {
    /// The current call's sink, if any.
    pub sink: Option<ProgressSink>,
    /// Set by the caller to ask the plugin to stop early.
    pub cancel: Arc<AtomicBool>,
    /// The most tokens the current call may emit (the job's paid output),
    /// enforced by the host whatever the plugin read from its parameters.
    pub max_tokens: Option<u32>,
    /// Tokens emitted in the current call.
    pub tokens: u32,
}

impl ProgressCtx {
    /// Counts one emitted token; past [`ProgressCtx::max_tokens`] the
    /// call is stopped (the error traps the plugin).
    pub fn count_token(&mut self) -> Result<(), String> {
        self.tokens = self.tokens.saturating_add(1);
        match self.max_tokens {
            Some(max) if self.tokens > max => Err(format!(
                "the job is paid for {max} output tokens and the backend emitted more; it was stopped"
            )),
            _ => Ok(()),
        }
    }
}

/// The `config` capability: plain values and secret names a provider granted.
#[derive(Debug, Clone, Default)]
pub struct ConfigGrant {
    /// Plain values readable through `config.get`.
    pub values: BTreeMap<String, String>,
    /// Secret name → the environment variable holding its value.
    pub secrets: BTreeMap<String, String>,
    /// Secrets the host made itself (name → value), for names the config
    /// does not set: e.g. a payment adapter's key for tokens at rest.
    pub generated: BTreeMap<String, String>,
}

/// A backend store's capabilities: kernels, models, progress; and
/// (contract 0.2.3) its config and outgoing HTTP to the allowed hosts only
/// (a backend granted none reaches nothing).
pub struct BackendCaps {
    /// Kernel accounting and device.
    pub kernels: KernelCtx,
    /// Models this plugin may open.
    pub models: ModelGrants,
    /// Streaming and cancellation.
    pub progress: ProgressCtx,
    /// Its config and secrets.
    pub config: ConfigGrant,
    /// `wasi:http` state.
    pub http: wasmtime_wasi_http::WasiHttpCtx,
    /// The allowed-hosts filter every request passes.
    pub hooks: super::http_filter::HostFilter,
}

/// A pricing store's capabilities: its config table (and `log`).
pub struct PricingCaps {
    /// Its config.
    pub config: ConfigGrant,
}

/// A payment store's capabilities: config and secrets, its kv namespace,
/// outgoing HTTP to the allowed hosts only.
pub struct PaymentCaps {
    /// Its config and secrets.
    pub config: ConfigGrant,
    /// Its own namespace of the node's kv table.
    pub kv: PluginKv,
    /// `wasi:http` state.
    pub http: wasmtime_wasi_http::WasiHttpCtx,
    /// The allowed-hosts filter every request passes.
    pub hooks: super::http_filter::HostFilter,
}

/// Store data of each world.
pub type BackendState = PluginState<BackendCaps>;
/// Store data of a pricing plugin.
pub type PricingState = PluginState<PricingCaps>;
/// Store data of a payment adapter.
pub type PaymentState = PluginState<PaymentCaps>;

impl wasmtime_wasi_http::WasiHttpView for BackendState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.world.http,
            table: &mut self.table,
            hooks: &mut self.world.hooks,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for PaymentState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.world.http,
            table: &mut self.table,
            hooks: &mut self.world.hooks,
        }
    }
}

/// `tensor`: the resource table and the kernel budget.
pub struct KernelView<'a> {
    /// Tensor and sampler handles.
    pub table: &'a mut ResourceTable,
    /// Accounting and device.
    pub ctx: &'a mut KernelCtx,
}

/// `models`: the table, the grants, and the kernel context weights are adopted into.
pub struct ModelView<'a> {
    /// Weight, tokenizer and tensor handles.
    pub table: &'a mut ResourceTable,
    /// Tensors taken from a model are adopted here (uncharged).
    pub kernels: &'a mut KernelCtx,
    /// What this plugin may open.
    pub grants: &'a ModelGrants,
    /// For errors and logs.
    pub plugin: &'a str,
}

/// `log` (and the type-only `types` interface).
pub struct LogView<'a> {
    /// Whose lines these are.
    pub plugin: &'a str,
}

/// `progress`.
pub struct ProgressView<'a> {
    /// Sink and cancel flag.
    pub ctx: &'a mut ProgressCtx,
    /// What this call has streamed, against its caps.
    pub stream: &'a mut StreamBudget,
}

/// `config`.
pub struct ConfigView<'a> {
    /// The grant.
    pub grant: &'a ConfigGrant,
}

/// `kv`.
pub struct KvView<'a> {
    /// The namespace.
    pub kv: &'a PluginKv,
}

/// [`HasData`] markers, one per view.
pub struct Kernels;
/// Marker for [`ModelView`].
pub struct Models;
/// Marker for [`LogView`].
pub struct Log;
/// Marker for [`ProgressView`].
pub struct Progress;
/// Marker for [`ConfigView`].
pub struct Config;
/// Marker for [`KvView`].
pub struct Kv;

impl HasData for Kernels {
    type Data<'a> = KernelView<'a>;
}
impl HasData for Models {
    type Data<'a> = ModelView<'a>;
}
impl HasData for Log {
    type Data<'a> = LogView<'a>;
}
impl HasData for Progress {
    type Data<'a> = ProgressView<'a>;
}
impl HasData for Config {
    type Data<'a> = ConfigView<'a>;
}
impl HasData for Kv {
    type Data<'a> = KvView<'a>;
}

/// The view getters `add_to_linker` takes, per store type.
pub mod view {
    use super::*;

    /// Any store's `log`.
    pub fn log<W>(s: &mut PluginState<W>) -> LogView<'_> {
        LogView { plugin: &s.plugin }
    }

    /// A backend's `tensor`.
    pub fn kernels(s: &mut BackendState) -> KernelView<'_> {
        KernelView {
            table: &mut s.table,
            ctx: &mut s.world.kernels,
        }
    }

    /// A backend's `models`.
    pub fn models(s: &mut BackendState) -> ModelView<'_> {
        ModelView {
            table: &mut s.table,
            kernels: &mut s.world.kernels,
            grants: &s.world.models,
            plugin: &s.plugin,
        }
    }

    /// A backend's `progress`.
    pub fn progress(s: &mut BackendState) -> ProgressView<'_> {
        ProgressView {
            ctx: &mut s.world.progress,
            stream: &mut s.stream,
        }
    }

    /// A backend's `config` (contract 0.2.3).
    pub fn backend_config(s: &mut BackendState) -> ConfigView<'_> {
        ConfigView {
            grant: &s.world.config,
        }
    }

    /// A pricing plugin's `config`.
    pub fn pricing_config(s: &mut PricingState) -> ConfigView<'_> {
        ConfigView {
            grant: &s.world.config,
        }
    }

    /// A payment adapter's `config`.
    pub fn payment_config(s: &mut PaymentState) -> ConfigView<'_> {
        ConfigView {
            grant: &s.world.config,
        }
    }

    /// A payment adapter's `kv`.
    pub fn kv(s: &mut PaymentState) -> KvView<'_> {
        KvView { kv: &s.world.kv }
    }
}
