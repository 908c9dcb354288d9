//! One module per plugin world: host bindings generated from `wit/` plus a
//! typed facade the rest of the node calls (`BackendPlugin::execute`,
//! `PricingPlugin::quote`). Conversions between WIT types and host types
//! happen here, at the edge.

pub mod backend;
pub mod host_ifaces;
pub mod payment;
pub mod pricing;

pub use backend::{BackendInstance, BackendPlugin};
pub use payment::PaymentPlugin;
pub use pricing::PricingPlugin;

use crate::runtime::{LoadedComponent, PluginError, PluginState, Runtime};
use wasmtime::component::{InstancePre, Linker};
use wasmtime::{Engine, Store};

/// A `PluginError::Link` for plugin `name`.
pub(crate) fn link_err(name: &str) -> impl Fn(wasmtime::Error) -> PluginError + '_ {
    move |e| PluginError::Link {
        name: name.to_owned(),
        reason: format!("{e:#}"),
    }
}

/// Links `loaded` against WASI (an empty context) plus the world's own
/// imports, added by `add_world`, and pre-instantiates it.
pub(crate) fn instance_pre(
    runtime: &Runtime,
    loaded: &LoadedComponent,
    add_world: impl FnOnce(&mut Linker<PluginState>) -> wasmtime::Result<()>,
) -> Result<InstancePre<PluginState>, PluginError> {
    let mut linker: Linker<PluginState> = Linker::new(runtime.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err(&loaded.name))?;
    add_world(&mut linker).map_err(link_err(&loaded.name))?;
    linker
        .instantiate_pre(&loaded.component)
        .map_err(link_err(&loaded.name))
}

/// A store for `state` with its memory limiter, `fuel` and wall-time deadline armed.
pub(crate) fn new_store(engine: &Engine, state: PluginState, fuel: u64) -> Store<PluginState> {
    let wall_time = state.limits.wall_time;
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    // Fuel is only unavailable when the engine was built without it; ours always has it.
    let _ = store.set_fuel(fuel);
    store.set_epoch_deadline(crate::runtime::ticks(wall_time));
    store.epoch_deadline_trap();
    store
}

/// Turns a failed call into the most specific [`PluginError`]: timeout,
/// memory limit, fuel, or a trap with the plugin's stderr attached.
pub(crate) fn classify_trap(store: &Store<PluginState>, err: wasmtime::Error) -> PluginError {
    let state = store.data();
    let name = state.plugin.clone();
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::Interrupt => {
                return PluginError::Timeout {
                    name,
                    limit_ms: state.limits.wall_time.as_millis(),
                }
            }
            wasmtime::Trap::OutOfFuel => {
                return PluginError::OutOfFuel {
                    name,
                    fuel: state.limits.fuel,
                }
            }
            _ => {}
        }
    }
    if let Some(requested) = state.memory.refused {
        return PluginError::MemoryLimit {
            name,
            requested,
            limit: state.memory.max_bytes,
        };
    }
    let stderr = state.stderr_text();
    let reason = if stderr.is_empty() {
        format!("{err:#}")
    } else {
        format!("{err:#}; plugin stderr: {stderr}")
    };
    PluginError::Trap { name, reason }
}
