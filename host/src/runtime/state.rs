//! The data every plugin `Store` carries, whatever its world: the resource
//! table, an empty WASI context (no files, env, args or sockets; stderr
//! captured for crash reports), the limits, the memory limiter and the
//! per-call count of streamed tokens (which only a backend's `progress`
//! spends, reset here with the other per-call budgets). A world
//! adds its own capabilities as `W` (its kernels and models, its config
//! grants, its kv namespace...), so a pricing store never holds a kernel
//! context and a backend store never holds an HTTP client.
//!
//! Also here, because they only need this core: creating a store with its
//! budgets armed ([`new_store`]) and turning a failed call into the most
//! specific [`PluginError`] ([`classify_trap`]).

use super::limits::{LimitTrap, Limits, MemoryLimiter, StreamBudget};
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
    /// Tokens streamed in the current call (`progress`; backends only).
    pub stream: StreamBudget,
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
            stream: StreamBudget::new(&limits),
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
    let handles = store.data().limits.component_handles();
    store.set_max_component_handles(handles);
    // Fuel is only unavailable when the engine was built without it; ours always has it.
    let _ = store.set_fuel(fuel);
    store.set_epoch_deadline(ticks(wall_time));
    store.epoch_deadline_trap();
    store
}

/// Re-arms the per-call budgets of a long-lived store before its next call
/// (wall time, the memory-refusal flag, streamed tokens).
pub fn begin_call<W>(store: &mut Store<PluginState<W>>) {
    let wall_time = store.data().limits.wall_time;
    store.set_epoch_deadline(ticks(wall_time));
    store.data_mut().memory.refused = None;
    store.data_mut().stream.reset();
}

/// Turns a failed call into the most specific [`PluginError`]: timeout,
/// fuel, a host limit raised as a trap ([`LimitTrap`], reported as a
/// `limit-exceeded` error), memory limit, or a trap with the plugin's
/// stderr attached.
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
    if let Some(limit) = err.downcast_ref::<LimitTrap>() {
        // The WIT function had no error value to return: the plugin hears
        // of the limit as a trap, the caller as what it is.
        return PluginError::Guest {
            name,
            error: format!("limit-exceeded: {limit}"),
            kind: "limit-exceeded",
        };
    }
    if let Some(requested) = state.memory.refused {
        return PluginError::MemoryLimit {
            name,
            requested,
            limit: state.memory.max_bytes,
        };
    }
    PluginError::Trap {
        name,
        reason: trap_reason(&err, &state.stderr_text()),
    }
}

/// One line saying why a call trapped: the guest's panic message (what it
/// wrote to stderr, without Rust's "run with `RUST_BACKTRACE=1`" hint),
/// then the trap itself, without the wasm backtrace of function indices.
fn trap_reason(err: &wasmtime::Error, stderr: &str) -> String {
    let cause = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    };
    let panic: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    // The guest may have written up to the 64 KiB pipe: a report stays
    // one readable line, ending with the panic message.
    let panic = super::limits::tail(&panic.join(" "), MAX_PANIC_TEXT);
    if panic.is_empty() {
        cause
    } else {
        format!("{panic} ({cause})")
    }
}

/// Most bytes of a guest's stderr a crash report carries.
pub const MAX_PANIC_TEXT: usize = 2048;
