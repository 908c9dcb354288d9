//! Tensor kernels for plugins: candle-core tensors held in each store's
//! `ResourceTable`, exposed as the `infernet:plugin/tensor` host functions.
//!
//! Every kernel call is timed against the plugin's kernel-time budget and
//! every tensor it creates is counted against the live-tensor-bytes cap;
//! copies into guest memory are counted against the copy-out cap. Kernels
//! know nothing of jobs or networking. The device is CPU unless the node
//! is built with the `cuda` feature and configured with `device = "cuda"`.

mod host_impl;

use crate::runtime::Limits;
use candle_core::{DType, Device, Tensor};
use std::time::Duration;

/// A tensor owned by the host on behalf of a plugin.
#[derive(Debug)]
pub struct TensorRes {
    /// The tensor.
    pub tensor: Tensor,
    /// Bytes charged to the plugin's tensor budget (0 for model weights,
    /// which the host owns and shares).
    pub charged: u64,
}

/// A seeded sampler (candle-transformers' `LogitsProcessor`).
pub struct SamplerRes(pub candle_transformers::generation::LogitsProcessor);

/// Per-store kernel accounting.
#[derive(Debug, Clone)]
pub struct KernelCtx {
    device: Device,
    live_bytes: u64,
    tensor_limit: u64,
    copy_limit: u64,
    copied: u64,
    kernel_time: Duration,
    kernel_time_limit: Duration,
    calls: u64,
}

impl KernelCtx {
    /// Accounting on `device`, with default limits until the first call.
    pub fn new(device: Device) -> Self {
        let d = Limits::default();
        KernelCtx {
            device,
            live_bytes: 0,
            tensor_limit: d.tensor_bytes,
            copy_limit: d.copy_out_bytes,
            copied: 0,
            kernel_time: Duration::ZERO,
            kernel_time_limit: d.kernel_time,
            calls: 0,
        }
    }

    /// Same device, zeroed counters.
    pub fn fresh(&self) -> Self {
        KernelCtx::new(self.device.clone())
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Resets per-call counters and applies `limits`.
    pub fn begin_call(&mut self, limits: &Limits) {
        self.tensor_limit = limits.tensor_bytes;
        self.copy_limit = limits.copy_out_bytes;
        self.kernel_time_limit = limits.kernel_time;
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

/// WIT dtype ↔ candle dtype.
pub(crate) fn dtype_from_wit(
    d: crate::worlds::backend::bindings::infernet::plugin::tensor::Dtype,
) -> DType {
    use crate::worlds::backend::bindings::infernet::plugin::tensor::Dtype as W;
    match d {
        W::F32 => DType::F32,
        W::F16 => DType::F16,
        W::Bf16 => DType::BF16,
        W::F64 => DType::F64,
        W::U8 => DType::U8,
        W::U32 => DType::U32,
        W::I64 => DType::I64,
    }
}

/// candle dtype → WIT dtype (`None` for dtypes the contract does not name).
pub(crate) fn dtype_to_wit(
    d: DType,
) -> Option<crate::worlds::backend::bindings::infernet::plugin::tensor::Dtype> {
    use crate::worlds::backend::bindings::infernet::plugin::tensor::Dtype as W;
    Some(match d {
        DType::F32 => W::F32,
        DType::F16 => W::F16,
        DType::BF16 => W::Bf16,
        DType::F64 => W::F64,
        DType::U8 => W::U8,
        DType::U32 => W::U32,
        DType::I64 => W::I64,
        _ => return None,
    })
}
