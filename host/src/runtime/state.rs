//! The data every plugin `Store` carries, whatever its world: the resource
//! table, an empty WASI context (no files, env, args or sockets; stderr
//! captured for crash reports), the limits and the memory limiter. A world
//! adds its own capabilities as `W` (its kernels and models, its config
//! grants, its kv namespace...), so a pricing store never holds a kernel
//! context and a backend store never holds an HTTP client.
//!
//! Also here, because they only need this core: creating a store with its
//! budgets armed ([`new_store`]) and turning a failed call into the most
//! specific [`PluginError`] ([`classify_trap`]).

use super::limits::{Limits, MemoryLimiter};
use super::{ticks, PluginError};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Store data of one plugin instance: the core every world needs, plus the
/// world's own capabilities `W`.
pub struct PluginState<W> {
    /// Plugin name, for logs and errors.
    pub plugin: String,
    /// Host resources (tensors, weights, tokenizers, samplers, WASI streams) by handle.
    pub table: ResourceTable,
    wasi: WasiCtx,
    /// Captured stderr (panic messages), reported when a call traps.
    pub stderr: MemoryOutputPipe,
    /// Effective limits.
    pub limits: Limits,
    /// Linear-memory limiter.
    pub memory: MemoryLimiter,
    /// What this world's config granted.
    pub world: W,
}

impl<W> PluginState<W> {
    /// Fresh state for one store of plugin `plugin`.
    pub fn new(plugin: &str, limits: Limits, world: W) -> Self {
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
            world,
        }
    }

    /// What the plugin wrote to stderr (e.g. a panic message), lossily decoded.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl<W: Send> WasiView for PluginState<W> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store for `state` with its memory limiter, `fuel` and wall-time deadline armed.
pub fn new_store<W: 'static>(
    engine: &Engine,
    state: PluginState<W>,
    fuel: u64,
) -> Store<PluginState<W>> {
    let wall_time = state.limits.wall_time;
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    // Fuel is only unavailable when the engine was built without it; ours always has it.
    let _ = store.set_fuel(fuel);
    store.set_epoch_deadline(ticks(wall_time));
    store.epoch_deadline_trap();
    store
}

/// Re-arms the per-call budgets of a long-lived store before its next call.
pub fn begin_call<W>(store: &mut Store<PluginState<W>>) {
    let wall_time = store.data().limits.wall_time;
    store.set_epoch_deadline(ticks(wall_time));
    store.data_mut().memory.refused = None;
}

/// Turns a failed call into the most specific [`PluginError`]: timeout,
/// memory limit, fuel, or a trap with the plugin's stderr attached.
pub fn classify_trap<W>(store: &Store<PluginState<W>>, err: wasmtime::Error) -> PluginError {
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
