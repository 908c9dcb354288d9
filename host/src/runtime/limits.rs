//! Per-plugin resource limits: defaults in code (config overrides them:
//! `config::LimitsConfig::limits`), the linear-memory limiter, the
//! per-call budget of streamed tokens, the trap a limit raises where the
//! WIT has no error to return, and the cut applied to plugin text the host
//! passes on (log lines, crash reports).

use crate::kernels::KernelLimits;
use std::time::Duration;

/// `text` cut to at most `max` bytes on a character boundary, with `…`
/// appended when anything was cut: plugin-written text the host logs or
/// reports is bounded.
pub fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The last `max` bytes of `text` (from a character boundary), with `…`
/// in front when anything was cut: where the end says the most (a panic
/// message after whatever the guest printed before it).
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

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
    /// Cap on the estimated FLOPs of one host kernel call; `None` derives it
    /// from `kernel_time` ([`KernelLimits::work_for`]).
    pub kernel_work: Option<u64>,
    /// Cap on live tensor and sampler handles of one instance (empty tensors
    /// and model weights included).
    pub tensor_handles: u64,
    /// Cap on tokens streamed through `progress.emit-token` within one call.
    pub stream_tokens: u64,
    /// Cap on bytes streamed through `progress.emit-token` within one call.
    pub stream_bytes: u64,
    /// Fuel per call (pricing plugins; others run unmetered).
    pub fuel: u64,
    /// Cap on the model weights one instance opens, bytes.
    pub weight_bytes: u64,
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
            kernel_work: None,
            // A llama-style model holds a few hundred weight and cache
            // handles; 50k leaves room, and leaves wasmtime's own cap on all
            // component handles of a store (100k) to borrows and the rest.
            tensor_handles: 50_000,
            // Far beyond one generation (a token is a few bytes), within
            // what a provider buffers for `Poll` without noticing.
            stream_tokens: 100_000,
            stream_bytes: 8 * MIB,
            fuel: 50_000_000,
            weight_bytes: u64::MAX,
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
            kernel_work: self
                .kernel_work
                .unwrap_or_else(|| KernelLimits::work_for(self.kernel_time)),
            handles: self.tensor_handles,
            weight_bytes: self.weight_bytes,
        }
    }

    /// The store-wide cap on component-model handles wasmtime enforces
    /// (its default, 100k, counts every handle of every kind): raised past
    /// `tensor_handles` so that the host's own, named limit is hit first.
    pub fn component_handles(&self) -> usize {
        const WASMTIME_DEFAULT: u64 = 100_000;
        const OTHER_HANDLES: u64 = 16_384;
        let wanted = self.tensor_handles.saturating_add(OTHER_HANDLES);
        usize::try_from(wanted.max(WASMTIME_DEFAULT)).unwrap_or(usize::MAX)
    }
}

/// A host limit hit in a WIT function that has no error value to return
/// (`progress.emit-token`, the `sampler` constructor): the call traps with
/// this, and [`classify_trap`](super::classify_trap) reports it as a
/// `limit-exceeded` error with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitTrap(pub String);

/// What one call has streamed through `progress.emit-token`, against the
/// per-call caps (`stream_tokens`, `stream_mb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBudget {
    max_tokens: u64,
    max_bytes: u64,
    tokens: u64,
    bytes: u64,
}

impl StreamBudget {
    /// Nothing streamed yet, under `limits`.
    pub fn new(limits: &Limits) -> Self {
        StreamBudget {
            max_tokens: limits.stream_tokens,
            max_bytes: limits.stream_bytes,
            tokens: 0,
            bytes: 0,
        }
    }

    /// Starts a new call's count.
    pub fn reset(&mut self) {
        self.tokens = 0;
        self.bytes = 0;
    }

    /// Counts one token of `len` bytes, refusing it when it would pass a cap.
    pub fn charge(&mut self, len: usize) -> Result<(), LimitTrap> {
        let bytes = self.bytes.saturating_add(len as u64);
        if self.tokens >= self.max_tokens {
            return Err(LimitTrap(format!(
                "progress.emit-token: more than {} tokens in one call (`stream_tokens` in the plugin's limits)",
                self.max_tokens
            )));
        }
        if bytes > self.max_bytes {
            return Err(LimitTrap(format!(
                "progress.emit-token: {bytes} bytes in one call would exceed the limit of {} bytes (`stream_mb` in the plugin's limits)",
                self.max_bytes
            )));
        }
        self.tokens += 1;
        self.bytes = bytes;
        Ok(())
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
