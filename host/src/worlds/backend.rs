//! The `backend` world's facade: a loaded backend and its long-lived
//! instances, one per worker. A trap poisons only that instance: the next
//! call instantiates a fresh one from the same `InstancePre`. Jobs and
//! results are the newest contract's types; a component built against an
//! older contract gets them converted at the call.

use super::caps::{BackendCaps, BackendState, ConfigGrant, ProgressCtx};
use super::http_filter::HostFilter;
use super::{guest_error, instance_pre, latest, link_err, since_v0_1_0 as v0_1, Contract};
use crate::kernels::KernelCtx;
use crate::models::ModelGrants;
use crate::runtime::{
    begin_call, classify_trap, new_store, Limits, LoadedComponent, PluginError, Runtime,
};
use candle_core::Device;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wasmtime::Store;

pub use super::caps::{ProgressEvent, ProgressSink};
pub use latest::{
    BackendInfo, Error as WitError, F32Tensor, JobInput, JobOutput, JobRequest, JobResult, Usage,
};

/// The pre-linked component, per contract version.
#[derive(Clone)]
enum Pre {
    V0_1(v0_1::backend::BackendPre<BackendState>),
    V0_2(latest::backend::BackendPre<BackendState>),
}

/// The instantiated bindings, per contract version.
enum Bindings {
    V0_1(v0_1::backend::Backend),
    V0_2(latest::backend::Backend),
}

/// What a provider's config grants a backend.
#[derive(Clone, Default)]
pub struct BackendGrants {
    /// The models it may open.
    pub models: ModelGrants,
    /// Origins it may reach over `wasi:http` (contract 0.2.3; see
    /// [`AllowedHost`](super::http_filter::AllowedHost)); none by default.
    pub allowed_hosts: Vec<String>,
    /// Plain values and secret names it reads through `config` (0.2.3).
    pub config: ConfigGrant,
}

/// A loaded backend plugin: its compiled component pre-linked against the
/// host, plus what its config grants.
#[derive(Clone)]
pub struct BackendPlugin {
    name: String,
    pre: Pre,
    limits: Limits,
    device: Device,
    grants: BackendGrants,
    metrics: Arc<crate::metrics::Metrics>,
    /// The manifest it was loaded from.
    pub loaded: LoadedComponent,
}

impl BackendPlugin {
    /// Links a loaded backend component with the host's kernels (on
    /// `device`), log and progress, and what `grants` allows: models,
    /// outgoing HTTP origins, config.
    pub fn new(
        runtime: &Runtime,
        loaded: LoadedComponent,
        limits: Limits,
        device: Device,
        grants: BackendGrants,
    ) -> Result<Self, PluginError> {
        let name = loaded.name.clone();
        let pre = match Contract::of(&loaded)? {
            Contract::V0_1 => {
                let ip = instance_pre(runtime, &loaded, v0_1::add_backend)?;
                Pre::V0_1(v0_1::backend::BackendPre::new(ip).map_err(link_err(&name))?)
            }
            Contract::V0_2 => {
                let ip = instance_pre(runtime, &loaded, latest::add_backend)?;
                Pre::V0_2(latest::backend::BackendPre::new(ip).map_err(link_err(&name))?)
            }
        };
        Ok(BackendPlugin {
            name,
            pre,
            limits,
            device,
            grants,
            metrics: runtime.metrics().clone(),
            loaded,
        })
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Model ids this backend may open.
    pub fn model_ids(&self) -> Vec<String> {
        self.grants.models.ids()
    }

    /// Whether it may reach hosts over `wasi:http`: its results may be
    /// computed elsewhere (an engine bridge), so their kernel traces say
    /// nothing about how the output was made.
    pub fn reaches_network(&self) -> bool {
        !self.grants.allowed_hosts.is_empty()
    }

    /// A fresh instance (one per worker; reused across jobs).
    pub fn instantiate(&self) -> Result<BackendInstance, PluginError> {
        let caps = BackendCaps {
            kernels: KernelCtx::new(self.device.clone(), self.limits.kernels()),
            models: self.grants.models.clone(),
            progress: ProgressCtx::default(),
            config: self.grants.config.clone(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: HostFilter::new(&self.name, self.grants.allowed_hosts.clone())
                .with_max_wait(self.limits.wall_time),
        };
        let state = BackendState::new(&self.name, self.limits, caps);
        let engine = match &self.pre {
            Pre::V0_1(p) => p.engine(),
            Pre::V0_2(p) => p.engine(),
        };
        // Backends run unmetered: their time is bounded by epochs and kernel budgets.
        let mut store = new_store(engine, state, u64::MAX);
        let bindings = match &self.pre {
            Pre::V0_1(p) => p.instantiate(&mut store).map(Bindings::V0_1),
            Pre::V0_2(p) => p.instantiate(&mut store).map(Bindings::V0_2),
        }
        .map_err(|e| classify_trap(&store, e))?;
        Ok(BackendInstance {
            plugin: self.clone(),
            store,
            bindings,
            poisoned: false,
            trace: None,
            untraced: false,
            replay: None,
        })
    }
}

/// A live backend instance. Not shared between threads at once: a worker owns it.
pub struct BackendInstance {
    plugin: BackendPlugin,
    store: Store<BackendState>,
    bindings: Bindings,
    poisoned: bool,
    trace: Option<crate::kernels::trace::Trace>,
    untraced: bool,
    replay: Option<Replay>,
}

/// What a replay of a job keeps and where it stops.
#[derive(Debug, Default)]
pub struct Replay {
    /// Tensors whose values are wanted.
    pub capture: crate::kernels::trace::Capture,
    /// Stop after this many kernel calls.
    pub stop_after: Option<usize>,
}

impl BackendInstance {
    /// Calls `describe`.
    pub fn describe(&mut self) -> Result<BackendInfo, PluginError> {
        self.call(None, |b, store| match b {
            Bindings::V0_1(b) => b
                .infernet_plugin_backend_api()
                .call_describe(store)
                .map(|i| Ok(i.into())),
            Bindings::V0_2(b) => b.infernet_plugin_backend_api().call_describe(store).map(Ok),
        })
    }

    /// Runs one job, streaming progress into `sink`; a trap or timeout
    /// leaves this instance poisoned and the next call starts a fresh one.
    pub fn execute(
        &mut self,
        job: &JobRequest,
        sink: Option<ProgressSink>,
    ) -> Result<JobResult, PluginError> {
        self.execute_bounded(job, sink, None)
    }

    /// [`execute`](Self::execute), stopping the plugin if it emits more
    /// than `max_tokens` tokens (a paid job's output bound).
    pub fn execute_bounded(
        &mut self,
        job: &JobRequest,
        sink: Option<ProgressSink>,
        max_tokens: Option<u32>,
    ) -> Result<JobResult, PluginError> {
        let world = &mut self.store.data_mut().world;
        world.progress.max_tokens = max_tokens;
        world.progress.tokens = 0;
        match self.replay.take() {
            Some(r) => {
                world.kernels.start_trace_until(r.stop_after);
                world.kernels.start_capture(r.capture);
            }
            None if !self.untraced => world.kernels.start_trace(),
            None => {}
        }
        let (started, calls_before) = (std::time::Instant::now(), world.kernels.calls());
        let result = self.call(sink, |b, store| match b {
            Bindings::V0_1(b) => b
                .infernet_plugin_backend_api()
                .call_execute(store, &job.clone().into())
                .map(|r| r.map(Into::into).map_err(Into::into)),
            Bindings::V0_2(b) => b.infernet_plugin_backend_api().call_execute(store, job),
        });
        let kernels = &mut self.store.data_mut().world.kernels;
        tracing::debug!(
            plugin = %self.plugin.name,
            job = %job.id,
            kernel_calls = kernels.calls() - calls_before,
            kernel_ms = kernels.call_kernel_time().as_secs_f64() * 1e3,
            wall_ms = started.elapsed().as_secs_f64() * 1e3,
            "execute done"
        );
        let plugin = &self.plugin;
        plugin
            .metrics
            .kernel_time(&plugin.name, kernels.call_kernel_time());
        self.trace = kernels.take_trace();
        if let Some(capture) = kernels.take_capture() {
            self.replay = Some(Replay {
                capture,
                stop_after: None,
            });
        }
        result
    }

    /// Makes the next job a replay: traced up to `replay.stop_after` calls,
    /// keeping the wanted tensors' values; [`take_replay`](Self::take_replay)
    /// hands them back after it.
    pub fn set_replay(&mut self, replay: Replay) {
        self.replay = Some(replay);
    }

    /// What the last replay captured.
    pub fn take_replay(&mut self) -> Option<crate::kernels::trace::Capture> {
        self.replay.take().map(|r| r.capture)
    }

    /// Whether the next jobs are traced (they are unless a benchmark says
    /// otherwise, [`crate::node::Node::set_tracing`]).
    pub fn set_tracing(&mut self, on: bool) {
        self.untraced = !on;
    }

    /// The kernel trace of the last job this instance ran (every host
    /// kernel call it made, `kernels::trace`), taken once.
    pub fn take_trace(&mut self) -> Option<crate::kernels::trace::Trace> {
        self.trace.take()
    }

    /// The flag a caller sets to cancel the running job.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.store.data().world.progress.cancel.clone()
    }

    /// Tensor bytes currently held by the plugin (for tests and metrics).
    pub fn live_tensor_bytes(&self) -> u64 {
        self.store.data().world.kernels.live_bytes()
    }

    fn call<R>(
        &mut self,
        sink: Option<ProgressSink>,
        f: impl FnOnce(
            &Bindings,
            &mut Store<BackendState>,
        ) -> wasmtime::Result<Result<R, latest::Error>>,
    ) -> Result<R, PluginError> {
        if self.poisoned {
            *self = self.plugin.instantiate()?;
        }
        begin_call(&mut self.store);
        let world = &mut self.store.data_mut().world;
        world.kernels.begin_call();
        world.progress.sink = sink;
        let plugin = &self.plugin;
        plugin
            .metrics
            .plugin_call(&plugin.name, crate::metrics::world::BACKEND);
        let outcome = f(&self.bindings, &mut self.store);
        self.store.data_mut().world.progress.sink = None;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(guest_error(&self.plugin.name, e)),
            Err(trap) => {
                self.poisoned = true;
                let err = classify_trap(&self.store, trap);
                let (plugin, world) = (&self.plugin, crate::metrics::world::BACKEND);
                plugin
                    .metrics
                    .plugin_trap(&plugin.name, world, err.trap_reason());
                // The error itself goes to the caller, who reports it (once).
                tracing::warn!(plugin = %self.plugin.name, "plugin call trapped; instance will be recreated");
                Err(err)
            }
        }
    }
}
