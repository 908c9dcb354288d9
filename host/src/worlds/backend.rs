//! The `backend` world: bindings, linker, and a long-lived instance per
//! worker. A trap poisons only that instance: the next call instantiates
//! a fresh one from the same `InstancePre`.

use super::{classify_trap, instance_pre, link_err, new_store};
use crate::kernels::KernelCtx;
use crate::models::ModelGrants;
use crate::runtime::{Limits, LoadedComponent, PluginError, PluginState, ProgressSink, Runtime};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use wasmtime::component::HasSelf;
use wasmtime::Store;

/// Generated host bindings of the `backend` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "backend",
        path: "../wit",
        with: {
            "infernet:plugin/tensor.tensor": crate::kernels::TensorRes,
            "infernet:plugin/tensor.sampler": crate::kernels::SamplerRes,
            "infernet:plugin/models.weights": crate::models::WeightsRes,
            "infernet:plugin/models.tokenizer": crate::models::TokenizerRes,
        },
        imports: { default: trappable },
    });
}

pub use bindings::infernet::plugin::types::{
    BackendInfo, Error as WitError, F32Tensor, JobInput, JobOutput, JobRequest, JobResult, Usage,
};

/// A loaded backend plugin: its compiled component pre-linked against the
/// host, plus what its config grants.
#[derive(Clone)]
pub struct BackendPlugin {
    name: String,
    pre: bindings::BackendPre<PluginState>,
    limits: Limits,
    kernels: KernelCtx,
    models: ModelGrants,
    /// The manifest it was loaded from.
    pub loaded: LoadedComponent,
}

impl BackendPlugin {
    /// Links a loaded backend component with the host's kernels, models, log and progress.
    pub fn new(
        runtime: &Runtime,
        loaded: LoadedComponent,
        limits: Limits,
        kernels: KernelCtx,
        models: ModelGrants,
    ) -> Result<Self, PluginError> {
        let name = loaded.name.clone();
        let instance_pre = instance_pre(runtime, &loaded, |linker| {
            bindings::Backend::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        })?;
        let pre = bindings::BackendPre::new(instance_pre).map_err(link_err(&name))?;
        Ok(BackendPlugin {
            name,
            pre,
            limits,
            kernels,
            models,
            loaded,
        })
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Model ids this backend may open.
    pub fn model_ids(&self) -> Vec<String> {
        self.models.ids()
    }

    /// A fresh instance (one per worker; reused across jobs).
    pub fn instantiate(&self) -> Result<BackendInstance, PluginError> {
        let state = PluginState::new(
            &self.name,
            self.limits,
            self.kernels.fresh(),
            self.models.clone(),
        );
        // Backends run unmetered: their time is bounded by epochs and kernel budgets.
        let mut store = new_store(self.pre.engine(), state, u64::MAX);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify_trap(&store, e))?;
        Ok(BackendInstance {
            plugin: self.clone(),
            store,
            bindings,
            poisoned: false,
        })
    }
}

/// A live backend instance. Not shared between threads at once: a worker owns it.
pub struct BackendInstance {
    plugin: BackendPlugin,
    store: Store<PluginState>,
    bindings: bindings::Backend,
    poisoned: bool,
}

impl BackendInstance {
    /// Calls `describe`.
    pub fn describe(&mut self) -> Result<BackendInfo, PluginError> {
        self.call(None, |b, store| {
            b.infernet_plugin_backend_api().call_describe(store).map(Ok)
        })
    }

    /// Runs one job, streaming progress into `sink`; a trap or timeout
    /// leaves this instance poisoned and the next call starts a fresh one.
    pub fn execute(
        &mut self,
        job: &JobRequest,
        sink: Option<ProgressSink>,
    ) -> Result<JobResult, PluginError> {
        self.call(sink, |b, store| {
            b.infernet_plugin_backend_api().call_execute(store, job)
        })
    }

    /// The flag a caller sets to cancel the running job.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.store.data().cancel.clone()
    }

    /// Tensor bytes currently held by the plugin (for tests and metrics).
    pub fn live_tensor_bytes(&self) -> u64 {
        self.store.data().kernels.live_bytes()
    }

    fn call<R>(
        &mut self,
        sink: Option<ProgressSink>,
        f: impl FnOnce(
            &bindings::Backend,
            &mut Store<PluginState>,
        ) -> wasmtime::Result<Result<R, WitError>>,
    ) -> Result<R, PluginError> {
        if self.poisoned {
            *self = self.plugin.instantiate()?;
        }
        let limits = self.plugin.limits;
        self.store
            .set_epoch_deadline(crate::runtime::ticks(limits.wall_time));
        self.store.data_mut().begin_call();
        self.store.data_mut().progress = sink;
        let outcome = f(&self.bindings, &mut self.store);
        self.store.data_mut().progress = None;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(guest_error(&self.plugin.name, e)),
            Err(trap) => {
                self.poisoned = true;
                let err = classify_trap(&self.store, trap);
                tracing::warn!(plugin = %self.plugin.name, error = %err, "plugin call failed; instance will be recreated");
                Err(err)
            }
        }
    }
}

/// Renders a WIT error returned by a plugin.
pub(crate) fn guest_error(name: &str, e: WitError) -> PluginError {
    let (kind, error) = match e {
        WitError::InvalidInput(m) => ("invalid-input", m),
        WitError::Unsupported(m) => ("unsupported", m),
        WitError::LimitExceeded(m) => ("limit-exceeded", m),
        WitError::Internal(m) => ("internal", m),
    };
    PluginError::Guest {
        name: name.into(),
        error: format!("{kind}: {error}"),
        kind,
    }
}
