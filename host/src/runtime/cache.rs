//! On-disk cache of compiled components, keyed by the component's sha256,
//! the wasmtime version and the engine's compatibility hash, so a node
//! restart skips Cranelift and an engine upgrade never loads stale code.
//!
//! A cached artifact is native code that wasmtime loads without checks, so
//! each file is authenticated: it starts with an HMAC-SHA256, over its own
//! name (which pins the component's sha256 and the engine) and the rest of
//! the file, under a node-local key (`mac.key` in the cache dir, 32 random bytes,
//! mode 0600, made on first use). A file written by anyone without the key
//! (a tampered or planted artifact) is discarded and the component is
//! compiled again from its signed wasm.

use crate::private::hmac_sha256;
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
        let key = self.key();
        let cached = match (&key, std::fs::read(&path)) {
            (Ok(key), Ok(bytes)) => match authenticated(key, &label(&path), &bytes) {
                Some(artifact) => Some(artifact.to_vec()),
                None => {
                    tracing::warn!(path = %path.display(), "discarding a compiled artifact that fails its MAC (tampered, or not written by this node)");
                    let _ = std::fs::remove_file(&path);
                    None
                }
            },
            _ => None,
        };
        if let Some(bytes) = cached {
            // Read into memory rather than mmap: a file changed under a live
            // mapping would crash the node (SIGBUS) instead of failing cleanly.
            // SAFETY: the bytes carry this node's MAC, so they are what
            // `Component::serialize` of this same engine configuration (the
            // name pins wasmtime version and engine hash) wrote here.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        let stored = key.and_then(|key| self.store(&key, &path, &component));
        if let Err(e) = stored {
            tracing::warn!(path = %path.display(), error = %e, "could not write compiled artifact (continuing)");
        }
        Ok((component, false))
    }

    fn store(&self, key: &[u8; 32], path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        let mut out = hmac_sha256(key, &label(path), &bytes).to_vec();
        out.extend_from_slice(&bytes);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, out)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The node-local MAC key, created (0600) on first use.
    fn key(&self) -> anyhow::Result<[u8; 32]> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(MAC_KEY_FILE);
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(key);
            }
        }
        let key: [u8; 32] = rand::random();
        crate::private::write_private(&path, &key)?;
        Ok(key)
    }
}

/// The cache's MAC key file.
pub const MAC_KEY_FILE: &str = "mac.key";

/// What binds an artifact to its place: the file name (component sha256,
/// wasmtime version, engine hash). A valid artifact of another component
/// copied over this one's name fails.
fn label(path: &Path) -> Vec<u8> {
    path.file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .unwrap_or_default()
}

/// The artifact inside `file` if its leading MAC (over `label` and the
/// artifact) is right.
fn authenticated<'a>(key: &[u8; 32], label: &[u8], file: &'a [u8]) -> Option<&'a [u8]> {
    if file.len() < 32 {
        return None;
    }
    let (mac, artifact) = file.split_at(32);
    let expected = hmac_sha256(key, label, artifact);
    // Constant time: no early exit on the first differing byte.
    let diff = mac
        .iter()
        .zip(expected.iter())
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    (diff == 0).then_some(artifact)
}

/// The wasmtime version compiled in.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}

#[cfg(test)]
mod tests {
    use super::*;

    const HMAC_A_CWASM: &str = "5e6e860bb3680b7fec63255e11d8dd5a482cee2b8e24f3ee3d183a0c82fa8ec7";

    #[test]
    fn hmac_matches_pythons_and_another_name_key_or_byte_fails() {
        // HMAC-SHA256(key = 32 x 0x0b, "a.cwasm\0Hi There"), as Python's
        // `hmac` module computes it.
        let key = [0x0bu8; 32];
        let mac = hmac_sha256(&key, b"a.cwasm", b"Hi There");
        assert_eq!(hex::encode(mac), HMAC_A_CWASM);
        let mut file = mac.to_vec();
        file.extend_from_slice(b"Hi There");
        assert_eq!(
            authenticated(&key, b"a.cwasm", &file),
            Some(&b"Hi There"[..])
        );
        // Another name (another component's place), key or byte: refused.
        assert_eq!(authenticated(&key, b"b.cwasm", &file), None);
        assert_eq!(authenticated(&[0u8; 32], b"a.cwasm", &file), None);
        file[35] ^= 1;
        assert_eq!(authenticated(&key, b"a.cwasm", &file), None);
    }
}
