//! One module per plugin world: host bindings generated from `wit/` plus a
//! typed facade the rest of the node calls (`BackendPlugin::execute`,
//! `PricingPlugin::quote`). Conversions between WIT types and host types
//! happen here, at the edge.

pub mod backend;
pub mod host_ifaces;
pub mod pricing;

pub use backend::{BackendInstance, BackendPlugin};
pub use pricing::PricingPlugin;

use crate::runtime::{PluginError, PluginState};
use wasmtime::Store;

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
