//! Per-plugin resource limits: defaults in code (config overrides them:
//! `config::LimitsConfig::limits`), and the linear-memory limiter.

use crate::kernels::KernelLimits;
use std::time::Duration;

/// Effective limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// Wall-clock cap of one call (guest and host time together).
    pub wall_time: Duration,
    /// Cap on summed host-kernel time within one call.
    pub kernel_time: Duration,
    /// Cap on live bytes of tensors the plugin created.
    pub tensor_bytes: u64,
    /// Cap on bytes copied from host tensors into guest memory within one call.
    pub copy_out_bytes: u64,
    /// Fuel per call (pricing plugins; others run unmetered).
    pub fuel: u64,
}

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 512 * MIB as usize,
            wall_time: Duration::from_secs(300),
            kernel_time: Duration::from_secs(300),
            tensor_bytes: 8192 * MIB,
            copy_out_bytes: 256 * MIB,
            fuel: 50_000_000,
        }
    }
}

impl Limits {
    /// The part of these limits host kernels enforce.
    pub fn kernels(&self) -> KernelLimits {
        KernelLimits {
            tensor_bytes: self.tensor_bytes,
            copy_out_bytes: self.copy_out_bytes,
            kernel_time: self.kernel_time,
        }
    }
}

/// Enforces the linear-memory cap and remembers when it bit, so a trap that
/// follows a refused `memory.grow` is reported as what it is.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// Cap in bytes.
    pub max_bytes: usize,
    /// Size the plugin asked for when it was refused.
    pub refused: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
