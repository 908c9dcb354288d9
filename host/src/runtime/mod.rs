//! The wasmtime runtime: one [`Engine`] per node (component model, epoch
//! interruption driven by a ticker thread, fuel for pricing, pooling
//! allocator where the OS allows), component loading with hash, signature,
//! world and contract-version checks, and an on-disk compiled-artifact
//! cache. A plugin's stores carry [`PluginState`]: the core every world
//! needs, plus that world's capabilities. Nothing here knows a particular
//! world's interfaces (`worlds` does) or the node's config.

pub mod cache;
pub mod limits;
pub mod manifest;
pub mod state;
pub mod version;

pub use limits::Limits;
pub use manifest::{Manifest, Package, PluginKind};
pub use state::{begin_call, classify_trap, new_store, PluginState};

use semver::Version;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Epoch tick: the granularity of wall-time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Everything that can go wrong loading or calling a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is malformed.
    #[error("bad plugin manifest {path}: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The wasm does not hash to what the manifest says.
    #[error("plugin `{name}`: wasm sha256 is {actual} but the manifest says {expected}; rebuild and re-pack the plugin (`infernet plugin pack`)")]
    HashMismatch {
        /// Plugin name.
        name: String,
        /// Hash in the manifest.
        expected: String,
        /// Hash of the file.
        actual: String,
    },
    /// The publisher signature is missing, wrong or by another key.
    #[error("plugin `{name}`: signature check failed: {reason}")]
    Signature {
        /// Plugin name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// Not a WebAssembly component.
    #[error("plugin `{name}`: {reason}")]
    NotAComponent {
        /// Plugin name.
        name: String,
        /// What the bytes are instead, and what to do.
        reason: String,
    },
    /// The component targets a contract version this host cannot run.
    #[error("plugin `{name}` targets infernet:plugin@{plugin_version}, but this host implements infernet:plugin@{host_versions}; rebuild it against infernet-plugin-api {newest}")]
    IncompatibleWit {
        /// Plugin name.
        name: String,
        /// Version the component imports/exports.
        plugin_version: String,
        /// Versions the host implements, comma-separated.
        host_versions: String,
        /// The newest of them.
        newest: String,
    },
    /// The component implements another world than the one asked for.
    #[error("plugin `{name}` is not a {expected} plugin: {found}")]
    WrongWorld {
        /// Plugin name.
        name: String,
        /// The kind the config slot needs.
        expected: PluginKind,
        /// What the component is.
        found: String,
    },
    /// Compilation or linking failed.
    #[error("plugin `{name}` cannot be loaded: {reason}")]
    Link {
        /// Plugin name.
        name: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The plugin trapped (panic, unreachable, bad handle...).
    #[error("plugin `{name}` crashed: {reason}")]
    Trap {
        /// Plugin name.
        name: String,
        /// Trap message and the plugin's stderr.
        reason: String,
    },
    /// The call exceeded its wall-time limit.
    #[error("plugin `{name}` exceeded its wall-time limit of {limit_ms} ms and was stopped")]
    Timeout {
        /// Plugin name.
        name: String,
        /// The limit.
        limit_ms: u128,
    },
    /// The plugin tried to grow memory past its limit.
    #[error("plugin `{name}` tried to grow its linear memory to {requested} bytes, past its limit of {limit} bytes")]
    MemoryLimit {
        /// Plugin name.
        name: String,
        /// Requested size.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// The plugin used up its fuel.
    #[error("plugin `{name}` ran out of fuel ({fuel} units)")]
    OutOfFuel {
        /// Plugin name.
        name: String,
        /// The budget.
        fuel: u64,
    },
    /// The plugin ran and returned an error value.
    #[error("plugin `{name}` failed: {error}")]
    Guest {
        /// Plugin name.
        name: String,
        /// The plugin's error, rendered.
        error: String,
        /// Its kind (`invalid-input`, `unsupported`, `limit-exceeded`, `internal`).
        kind: &'static str,
    },
}

impl PluginError {
    /// Why a trapped call trapped, as the `reason` label of
    /// `infernet_plugin_traps_total`: `timeout`, `out_of_fuel`,
    /// `memory_limit`, `limit_exceeded` or `trap`.
    pub fn trap_reason(&self) -> &'static str {
        match self {
            PluginError::Timeout { .. } => "timeout",
            PluginError::OutOfFuel { .. } => "out_of_fuel",
            PluginError::MemoryLimit { .. } => "memory_limit",
            PluginError::Guest {
                kind: "limit-exceeded",
                ..
            } => "limit_exceeded",
            _ => "trap",
        }
    }
}

/// The node's wasmtime engine plus its compiled-artifact cache.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    cache: cache::CompileCache,
    pooling: bool,
    contracts: Vec<Version>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Runtime {
    /// Creates the engine (pooling allocator if the OS grants the address
    /// space, on-demand otherwise) and starts the epoch ticker. Every
    /// contract version this host implements is accepted.
    pub fn new(cache_dir: &Path) -> anyhow::Result<Runtime> {
        Self::with_contracts(cache_dir, &version::contracts())
    }

    /// [`Runtime::new`] accepting only components of `contracts` (each one
    /// this host implements): a node that wants no plugin built against
    /// an older contract, or a test playing an older host.
    pub fn with_contracts(cache_dir: &Path, contracts: &[Version]) -> anyhow::Result<Runtime> {
        let known = version::contracts();
        if let Some(v) = contracts.iter().find(|v| !known.contains(v)) {
            anyhow::bail!(
                "this host has no implementation of infernet:plugin@{v}; it implements {}",
                version::list(&known)
            );
        }
        anyhow::ensure!(
            !contracts.is_empty(),
            "a runtime needs at least one contract version"
        );
        let (engine, pooling) = match Engine::new(&base_config(true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::info!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                (Engine::new(&base_config(false))?, false)
            }
        };
        start_epoch_ticker(&engine);
        Ok(Runtime {
            engine,
            cache: cache::CompileCache::new(cache_dir),
            pooling,
            contracts: contracts.to_vec(),
            metrics: crate::metrics::Metrics::new(),
        })
    }

    /// This runtime recording plugin calls, traps and kernel time into
    /// `metrics` (the node's registry) instead of a registry of its own.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Runtime {
        self.metrics = metrics;
        self
    }

    /// The registry plugins loaded on this runtime record into.
    pub fn metrics(&self) -> &std::sync::Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The contract versions this runtime accepts, oldest first.
    pub fn contracts(&self) -> &[Version] {
        &self.contracts
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Compiles (or loads from cache) a component after checking that it is
    /// one, that it targets a compatible contract and that it implements `kind`.
    pub fn load(
        &self,
        package: &Package,
        kind: PluginKind,
    ) -> Result<LoadedComponent, PluginError> {
        let name = package.manifest.name.clone();
        check_component_header(&name, &package.wasm)?;
        let started = Instant::now();
        let (component, cached) = self
            .cache
            .load_or_compile(&self.engine, &package.manifest.sha256, &package.wasm)
            .map_err(|e| PluginError::NotAComponent {
                name: name.clone(),
                reason: format!("invalid component: {e:#}"),
            })?;
        let facts = version::inspect(&self.engine, &component);
        if facts.wit_versions.is_empty() {
            return Err(PluginError::WrongWorld {
                name,
                expected: kind,
                found: "it neither imports nor exports any infernet:plugin interface".into(),
            });
        }
        let contract = version::serving(&self.contracts, &facts.wit_versions).ok_or_else(|| {
            let plugin_version = version::list(&facts.wit_versions);
            PluginError::IncompatibleWit {
                name: name.clone(),
                plugin_version,
                host_versions: version::list(&self.contracts),
                newest: self
                    .contracts
                    .last()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            }
        })?;
        if facts.kind != Some(kind) {
            let found = match facts.kind {
                Some(k) => format!(
                    "it exports the {k} world (infernet:plugin/{})",
                    k.export_interface()
                ),
                None => format!(
                    "it exports none of the plugin worlds (exports: {:?})",
                    facts.exports
                ),
            };
            return Err(PluginError::WrongWorld {
                name,
                expected: kind,
                found,
            });
        }
        if package.manifest.kind != kind {
            return Err(PluginError::WrongWorld {
                name,
                expected: kind,
                found: format!("its manifest says kind = \"{}\"", package.manifest.kind),
            });
        }
        tracing::info!(
            plugin = %name,
            version = %package.manifest.version,
            wit = %facts.wit_versions[0],
            cached,
            load_ms = started.elapsed().as_millis() as u64,
            "component loaded"
        );
        Ok(LoadedComponent {
            name,
            manifest: package.manifest.clone(),
            component,
            facts,
            contract,
            from_cache: cached,
        })
    }

    /// Compiles raw bytes without manifest checks (for `plugin inspect`).
    pub fn inspect_bytes(
        &self,
        name: &str,
        wasm: &[u8],
    ) -> Result<version::ComponentFacts, PluginError> {
        check_component_header(name, wasm)?;
        let component =
            Component::new(&self.engine, wasm).map_err(|e| PluginError::NotAComponent {
                name: name.into(),
                reason: format!("invalid component: {e:#}"),
            })?;
        Ok(version::inspect(&self.engine, &component))
    }
}

/// A compiled, checked component ready for linking.
#[derive(Clone)]
pub struct LoadedComponent {
    /// Plugin name.
    pub name: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// The compiled component.
    pub component: Component,
    /// Imports, exports and versions.
    pub facts: version::ComponentFacts,
    /// The host contract version that serves it (e.g. 0.1.0 for a
    /// component built against 0.1.0 or any 0.1.x up to the host's).
    pub contract: Version,
    /// Whether it came from the compiled-artifact cache.
    pub from_cache: bool,
}

fn base_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(64)
            .total_core_instances(256)
            .total_memories(128)
            .total_tables(256)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(32)
            .max_memory_size(4 << 30)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        })
        .ok();
}

/// Rejects bytes that are not a component with an error that says what they are.
fn check_component_header(name: &str, wasm: &[u8]) -> Result<(), PluginError> {
    let fail = |reason: &str| PluginError::NotAComponent {
        name: name.into(),
        reason: reason.into(),
    };
    if wasm.len() < 8 || &wasm[0..4] != b"\0asm" {
        return Err(fail("the file is not WebAssembly (no `\\0asm` header); point the config at a .wasm built with `cargo build --target wasm32-wasip2`"));
    }
    match &wasm[4..8] {
        [1, 0, 0, 0] => Err(fail("this is a core wasm module, not a component; build with `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)")),
        [_, _, 1, 0] => Ok(()),
        other => Err(fail(&format!("unknown WebAssembly layer/version {other:?}"))),
    }
}

/// Number of epoch ticks in `d`, at least 1.
pub fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
