//! On-disk cache of compiled components, keyed by the component's sha256,
//! the wasmtime version and the engine's compatibility hash, so a node
//! restart skips Cranelift and an engine upgrade never loads stale code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The compiled-artifact cache directory.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// Where the artifact for `sha256` lives.
    pub fn path_for(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!(
            "{sha256}-wasmtime{}-{:016x}.cwasm",
            wasmtime_version(),
            h.finish()
        ))
    }

    /// Loads a cached artifact, or compiles `wasm` and stores it. Returns the
    /// component and whether it came from the cache.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.path_for(engine, sha256);
        if let Ok(bytes) = std::fs::read(&path) {
            // Read into memory rather than mmap: a file changed under a live
            // mapping would crash the node (SIGBUS) instead of failing cleanly.
            // SAFETY: the file was written by `Component::serialize` of this
            // same engine configuration (the name pins wasmtime version and
            // engine hash) into the node's private data dir.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "could not write compiled artifact (continuing)");
        }
        Ok((component, false))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component.serialize()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// The wasmtime version compiled in.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
