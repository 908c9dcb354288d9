//! Tensor kernels for plugins, on candle-core, with their budgets.
//!
//! [`KernelCtx`] is one store's kernel capability: the compute device and
//! the accounting of what the plugin may still spend — live tensor bytes,
//! bytes copied out to guest memory, host-kernel time per call. Every
//! kernel ([`ops`]) checks the size of what it is about to allocate before
//! candle allocates it, runs under the time budget, and hands back a plain
//! candle `Tensor`; the caller adopts it into the plugin's resource table
//! with [`KernelCtx::adopt`]. Nothing here knows WIT, wasmtime, jobs or the
//! network: the `tensor` interface is implemented on top of this in
//! `worlds`. The device is CPU unless the node is built with the `cuda`
//! feature and configured with `device = "cuda"`.

pub mod ops;

pub use ops::{BinaryOp, ReduceOp, SamplingSpec, UnaryOp};

use candle_core::{Device, Tensor};
use std::time::{Duration, Instant};

/// A tensor owned by the host on behalf of a plugin (a table resource).
#[derive(Debug)]
pub struct TensorRes {
    /// The tensor.
    pub tensor: Tensor,
    /// Bytes charged to the plugin's tensor budget (0 for model weights,
    /// which the host owns and shares).
    pub charged: u64,
}

/// A seeded sampler (candle-transformers' `LogitsProcessor`), a table resource.
pub struct SamplerRes(pub candle_transformers::generation::LogitsProcessor);

/// Why a kernel refused: the plugin gets these back as error values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// Bad shapes, dtypes or arguments (candle's message, prefixed with the kernel).
    #[error("{0}")]
    Invalid(String),
    /// A budget would be exceeded.
    #[error("{0}")]
    Limit(String),
}

impl From<candle_core::Error> for KernelError {
    fn from(e: candle_core::Error) -> Self {
        KernelError::Invalid(e.to_string())
    }
}

/// The budgets kernels enforce (from the plugin's limits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelLimits {
    /// Cap on live bytes of tensors the plugin created.
    pub tensor_bytes: u64,
    /// Cap on bytes copied out to guest memory within one call.
    pub copy_out_bytes: u64,
    /// Cap on summed host-kernel time within one call.
    pub kernel_time: Duration,
}

/// Per-store kernel accounting on one device.
#[derive(Debug, Clone)]
pub struct KernelCtx {
    device: Device,
    limits: KernelLimits,
    live_bytes: u64,
    copied: u64,
    kernel_time: Duration,
    calls: u64,
}

impl KernelCtx {
    /// Accounting on `device` under `limits`.
    pub fn new(device: Device, limits: KernelLimits) -> Self {
        KernelCtx {
            device,
            limits,
            live_bytes: 0,
            copied: 0,
            kernel_time: Duration::ZERO,
            calls: 0,
        }
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Resets the per-call counters (copy-out bytes, kernel time) before a
    /// new plugin call; live tensors stay charged.
    pub fn begin_call(&mut self) {
        self.kernel_time = Duration::ZERO;
        self.copied = 0;
    }

    /// Live bytes of plugin-created tensors.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Kernel calls made by this store so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Refuses an allocation of `elems` elements of `dtype` that would pass
    /// the tensor budget.
    pub fn precheck(&self, elems: usize, dtype: candle_core::DType) -> Result<(), KernelError> {
        let bytes = (elems as u128) * dtype.size_in_bytes() as u128;
        let live = self.live_bytes as u128;
        if live + bytes > self.limits.tensor_bytes as u128 {
            return Err(KernelError::Limit(format!(
                "allocating {bytes} tensor bytes would exceed this plugin's limit of {} bytes ({live} live)",
                self.limits.tensor_bytes
            )));
        }
        Ok(())
    }

    /// Runs kernel `name` under the kernel-time budget; an `Invalid` error
    /// is prefixed with the kernel's name.
    pub fn timed<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&Self) -> Result<T, KernelError>,
    ) -> Result<T, KernelError> {
        if self.kernel_time >= self.limits.kernel_time {
            return Err(KernelError::Limit(format!(
                "host kernel time limit of {} ms for this call is used up",
                self.limits.kernel_time.as_millis()
            )));
        }
        let started = Instant::now();
        let result = f(self);
        self.kernel_time += started.elapsed();
        self.calls += 1;
        result.map_err(|e| match e {
            KernelError::Invalid(m) => KernelError::Invalid(format!("{name}: {m}")),
            other => other,
        })
    }

    /// Takes `tensor` into the plugin's keeping, charging its bytes to the
    /// budget when `charge` (model weights are not charged).
    pub fn adopt(&mut self, tensor: Tensor, charge: bool) -> Result<TensorRes, KernelError> {
        let charged = if charge { tensor_bytes(&tensor) } else { 0 };
        if self.live_bytes + charged > self.limits.tensor_bytes {
            return Err(KernelError::Limit(format!(
                "tensor of {charged} bytes would exceed this plugin's limit of {} live tensor bytes",
                self.limits.tensor_bytes
            )));
        }
        self.live_bytes += charged;
        Ok(TensorRes { tensor, charged })
    }

    /// Gives back the budget of a dropped tensor.
    pub fn release(&mut self, res: &TensorRes) {
        self.live_bytes = self.live_bytes.saturating_sub(res.charged);
    }

    /// Counts `bytes` about to be copied out to the guest against the
    /// per-call copy-out budget.
    pub fn charge_copy(&mut self, bytes: u64) -> Result<(), KernelError> {
        if self.copied + bytes > self.limits.copy_out_bytes {
            return Err(KernelError::Limit(format!(
                "copying {bytes} bytes out of host tensors would exceed this plugin's copy-out limit of {} bytes per call",
                self.limits.copy_out_bytes
            )));
        }
        self.copied += bytes;
        Ok(())
    }

    /// Adds time spent outside [`timed`](Self::timed) (sampling) to the budget.
    pub fn add_time(&mut self, d: Duration) {
        self.kernel_time += d;
    }
}

/// Bytes a tensor occupies if materialised.
pub fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

/// Parses a device string from config: `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(spec: &str) -> Result<DeviceSpec, String> {
    match spec.trim() {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        s if s.starts_with("cuda:") => s[5..]
            .parse::<usize>()
            .map(DeviceSpec::Cuda)
            .map_err(|_| format!("`{s}`: expected `cuda:<ordinal>`")),
        other => Err(format!(
            "unknown device `{other}`: expected `cpu`, `cuda` or `cuda:N`"
        )),
    }
}

/// A device named in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

impl DeviceSpec {
    /// Opens the device; CUDA needs a build with `--features cuda`.
    pub fn open(self) -> Result<Device, String> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if cfg!(feature = "cuda") {
                    Device::new_cuda(n).map_err(|e| format!("cannot open cuda:{n}: {e}"))
                } else {
                    Err("this binary was built without CUDA; rebuild with `--features cuda` or set `device = \"cpu\"`".into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(tensor_bytes: u64, copy_out_bytes: u64) -> KernelCtx {
        KernelCtx::new(
            Device::Cpu,
            KernelLimits {
                tensor_bytes,
                copy_out_bytes,
                kernel_time: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn adopted_tensors_are_charged_until_released() {
        let mut k = ctx(1024, 1024);
        let t = k.zeros(&[16, 4], candle_core::DType::F32).unwrap();
        let res = k.adopt(t, true).unwrap();
        assert_eq!((res.charged, k.live_bytes()), (256, 256));
        let weights = Tensor::zeros((64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let shared = k.adopt(weights, false).unwrap();
        assert_eq!(
            (shared.charged, k.live_bytes()),
            (0, 256),
            "weights are not charged"
        );
        let big = Tensor::zeros((16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(k.adopt(big, true), Err(KernelError::Limit(_))));
        k.release(&res);
        assert_eq!(k.live_bytes(), 0);
    }

    #[test]
    fn outputs_past_the_budget_are_refused_before_they_exist() {
        let mut k = ctx(16 * 1024, 1 << 20);
        let a = k.zeros(&[64, 32], candle_core::DType::F32).unwrap();
        let b = k.zeros(&[32, 64], candle_core::DType::F32).unwrap();
        // 64 x 64 f32 = 16 KiB, the whole budget: refused by the precheck.
        let one = k.zeros(&[1], candle_core::DType::F32).unwrap();
        let _held = k.adopt(one, true).unwrap();
        let err = k.matmul(&a, &b).unwrap_err();
        assert!(
            matches!(&err, KernelError::Limit(m) if m.contains("16384")),
            "{err}"
        );
        let err = k
            .zeros(&[1 << 20, 1 << 20], candle_core::DType::F32)
            .unwrap_err();
        assert!(matches!(err, KernelError::Limit(_)), "{err}");
        let err = k.zeros(&[u32::MAX, u32::MAX, u32::MAX], candle_core::DType::U8);
        assert!(matches!(err, Err(KernelError::Invalid(m)) if m.contains("overflows")));
    }

    #[test]
    fn bad_shapes_are_invalid_input_named_by_kernel() {
        let mut k = ctx(1 << 20, 1 << 20);
        let a = k.zeros(&[2, 3], candle_core::DType::F32).unwrap();
        let err = k.matmul(&a, &a).unwrap_err().to_string();
        assert!(err.starts_with("matmul:"), "{err}");
        let v = k.zeros(&[3], candle_core::DType::F32).unwrap();
        let err = k.matmul(&v, &a).unwrap_err().to_string();
        assert!(err.contains("rank >= 2"), "{err}");
        let err = k.from_f32(vec![1.0; 5], &[2, 3]).unwrap_err().to_string();
        assert!(
            err.contains("5 elements") && err.contains("needs 6"),
            "{err}"
        );
        assert!(k
            .cat(&[], 0)
            .unwrap_err()
            .to_string()
            .contains("no tensors"));
    }

    #[test]
    fn copy_out_is_bounded_per_call() {
        let mut k = ctx(1 << 20, 64);
        let t = k.from_f32(vec![1.0; 16], &[16]).unwrap();
        assert_eq!(k.to_f32(&t).unwrap().len(), 16);
        assert!(
            matches!(k.to_f32(&t), Err(KernelError::Limit(_))),
            "64 bytes per call"
        );
        k.begin_call();
        assert!(k.to_bytes(&t).is_ok(), "a new call has a new copy budget");
    }

    #[test]
    fn kernel_time_is_bounded_per_call() {
        let mut k = KernelCtx::new(
            Device::Cpu,
            KernelLimits {
                tensor_bytes: 1 << 20,
                copy_out_bytes: 1 << 20,
                kernel_time: Duration::ZERO,
            },
        );
        let err = k.arange(4).unwrap_err();
        assert!(
            matches!(&err, KernelError::Limit(m) if m.contains("used up")),
            "{err}"
        );
    }
}
