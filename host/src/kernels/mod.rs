//! Tensor kernels for plugins, on candle-core, with their budgets.
//!
//! [`KernelCtx`] is one store's kernel capability: the compute device and
//! the accounting of what the plugin may still spend — live tensor bytes,
//! live handles (empty tensors, weights and samplers included), bytes
//! copied out to guest memory, host-kernel time per call, and work per
//! kernel. Every kernel ([`ops`]) works out its [`Cost`] from shapes
//! ([`cost`]: the result with broadcasting, candle's temporaries, FLOPs),
//! is refused by [`KernelCtx::admit`] before candle allocates or computes
//! anything, runs under the time budget, and hands back a plain candle
//! `Tensor`; the caller adopts it into the plugin's resource table with
//! [`KernelCtx::adopt`]. Nothing here knows WIT, wasmtime, jobs or the
//! network: the `tensor` interface is implemented on top of this in
//! `worlds`. The device is CPU unless the node is built with the `cuda`
//! feature and configured with `device = "cuda"`.

pub mod call;
pub mod cost;
pub mod ops;
pub mod trace;

pub use cost::Cost;
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
    /// Its trace digest (all zeros when made outside a traced job).
    pub digest: trace::Digest,
}

/// A model weight as the GGUF file stores it (quantized blocks), held for
/// a plugin (a table resource): shared with the model, so not charged to
/// the tensor budget, but one handle.
pub struct QMatrixRes {
    /// The matrix, `[out, in]`.
    pub q: std::sync::Arc<candle_core::quantized::QTensor>,
    /// Its trace digest ([`trace::qweight_digest`]; zeros outside a trace).
    pub digest: trace::Digest,
}

/// The GGUF name of a block format, lower case (`q4_k`, `q8_0`, `f32`).
pub fn qformat_name(d: candle_core::quantized::GgmlDType) -> &'static str {
    use candle_core::quantized::GgmlDType;
    match d {
        GgmlDType::F32 => "f32",
        GgmlDType::F16 => "f16",
        GgmlDType::BF16 => "bf16",
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q4_1 => "q4_1",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q5_1 => "q5_1",
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q8_1 => "q8_1",
        GgmlDType::Q2K => "q2_k",
        GgmlDType::Q3K => "q3_k",
        GgmlDType::Q4K => "q4_k",
        GgmlDType::Q5K => "q5_k",
        GgmlDType::Q6K => "q6_k",
        GgmlDType::Q8K => "q8_k",
    }
}

/// A seeded sampler (candle-transformers' `LogitsProcessor`), a table
/// resource, with what a trace needs to replay a draw: its spec and how
/// many tokens it has drawn.
pub struct SamplerRes {
    /// The sampler.
    pub processor: candle_transformers::generation::LogitsProcessor,
    /// How it was made.
    pub spec: SamplingSpec,
    /// Tokens drawn so far.
    pub draws: u64,
}

/// Why a kernel refused: the plugin gets these back as error values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// Bad shapes, dtypes or arguments (candle's message, prefixed with the kernel).
    #[error("{0}")]
    Invalid(String),
    /// A budget would be exceeded; the message names the limit's config key.
    #[error("{0}")]
    Limit(String),
}

impl From<candle_core::Error> for KernelError {
    fn from(e: candle_core::Error) -> Self {
        KernelError::Invalid(plain_message(&e))
    }
}

/// What a candle error says, without what only the host should see: the
/// backtrace candle captures when `RUST_BACKTRACE` is set (host frames and
/// library paths) and the file paths it attaches. One line, at most 1 KiB.
fn plain_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    let text = match e {
        E::WithBacktrace { inner, .. } | E::WithPath { inner, .. } => return plain_message(inner),
        E::Context { inner, context } => format!("{context}: {}", plain_message(inner)),
        other => other.to_string(),
    };
    let line = text.lines().next().unwrap_or_default();
    let mut end = line.len().min(1024);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// The throughput the default per-kernel work cap assumes: 1 GFLOP/s, i.e.
/// 1 MFLOP per millisecond of `kernel_time_ms`. That is one slow CPU core
/// doing element-wise work (candle's CPU gemm does 10 to 100 times more on
/// a multi-core node), so with the default any single kernel ends well
/// within the kernel-time budget on a CPU. A GPU node should raise
/// `kernel_work_mflop`.
pub const ASSUMED_FLOPS_PER_SEC: u64 = 1_000_000_000;

/// The budgets kernels enforce (from the plugin's limits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelLimits {
    /// Cap on live bytes of tensors the plugin created (`tensor_mb`).
    pub tensor_bytes: u64,
    /// Cap on bytes copied out to guest memory within one call (`copy_out_mb`).
    pub copy_out_bytes: u64,
    /// Cap on summed host-kernel time within one call (`kernel_time_ms`).
    pub kernel_time: Duration,
    /// Cap on the estimated FLOPs of one kernel call (`kernel_work_mflop`).
    pub kernel_work: u64,
    /// Cap on live tensor and sampler handles (`tensor_handles`).
    pub handles: u64,
    /// Cap on the bytes of distinct model weights one instance opens
    /// (`weights_mb`): what a provider lets one instance hold of a model.
    pub weight_bytes: u64,
}

impl KernelLimits {
    /// The default per-kernel work cap for a kernel-time budget: what
    /// [`ASSUMED_FLOPS_PER_SEC`] does in that time.
    pub fn work_for(kernel_time: Duration) -> u64 {
        let flops = kernel_time.as_millis() * (ASSUMED_FLOPS_PER_SEC / 1000) as u128;
        u64::try_from(flops).unwrap_or(u64::MAX)
    }
}

/// A [`KernelError::Limit`] saying which limit and its config key.
fn limit(what: String, key: &str) -> KernelError {
    KernelError::Limit(format!("{what} (`{key}` in the plugin's limits)"))
}

/// Per-store kernel accounting on one device.
#[derive(Debug, Clone)]
pub struct KernelCtx {
    device: Device,
    limits: KernelLimits,
    live_bytes: u64,
    handles: u64,
    copied: u64,
    kernel_time: Duration,
    calls: u64,
    trace: Option<trace::Trace>,
    /// Bytes the trace holds, charged to the tensor budget.
    trace_bytes: u64,
    /// Distinct weights opened, and their bytes (`weights_mb`).
    weights_opened: std::collections::HashSet<String>,
    weight_bytes: u64,
    capture: Option<trace::Capture>,
}

impl KernelCtx {
    /// Accounting on `device` under `limits`.
    pub fn new(device: Device, limits: KernelLimits) -> Self {
        KernelCtx {
            device,
            limits,
            live_bytes: 0,
            handles: 0,
            copied: 0,
            kernel_time: Duration::ZERO,
            calls: 0,
            trace: None,
            trace_bytes: 0,
            weights_opened: Default::default(),
            weight_bytes: 0,
            capture: None,
        }
    }

    /// Asks a traced job to keep the values of the tensors with these
    /// digests (a replay revealing a dispute's inputs and outputs), and of
    /// the first `leaves` calls' outputs when `Some`.
    pub fn start_capture(&mut self, capture: trace::Capture) {
        self.capture = Some(capture);
    }

    /// The values captured so far, ending the capture.
    pub fn take_capture(&mut self) -> Option<trace::Capture> {
        self.capture.take()
    }

    /// Starts a job's kernel trace: every call from now on is recorded
    /// until [`take_trace`](Self::take_trace).
    pub fn start_trace(&mut self) {
        self.trace = Some(trace::Trace::default());
    }

    /// [`start_trace`](Self::start_trace) for a replay that stops after
    /// `calls` calls (the one under dispute).
    pub fn start_trace_until(&mut self, calls: Option<usize>) {
        self.trace = Some(trace::Trace {
            leaves: Vec::new(),
            stop_after: calls,
        });
    }

    /// Ends the job's trace and hands it over.
    pub fn take_trace(&mut self) -> Option<trace::Trace> {
        self.trace_bytes = 0;
        self.trace.take()
    }

    /// Whether a trace is being recorded.
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Records one call in the trace, when one is being kept. The trace's
    /// memory is held to the plugin's tensor budget (counted on its own,
    /// beside its tensors), so a plugin making millions of cheap calls
    /// cannot grow the host's memory past what its limits allow.
    pub fn record(&mut self, leaf: impl FnOnce() -> trace::Leaf) -> Result<(), KernelError> {
        let Some(t) = &mut self.trace else {
            return Ok(());
        };
        let leaf = leaf();
        let bytes = leaf.held_bytes();
        if self.trace_bytes.saturating_add(bytes) > self.limits.tensor_bytes {
            return Err(limit(
                format!(
                    "this job's kernel trace ({} calls, {} bytes) would exceed this plugin's tensor budget of {} bytes",
                    t.leaves.len(),
                    self.trace_bytes,
                    self.limits.tensor_bytes
                ),
                "tensor_mb",
            ));
        }
        t.push(leaf)?;
        self.trace_bytes += bytes;
        Ok(())
    }

    /// [`adopt`](Self::adopt)s the result of kernel `op` on `inputs` (their
    /// digests) and records the call. While tracing, the output's digest
    /// is its content digest for calls that commit values and the call's
    /// own hash for the others ([`call::Op::commits_values`]).
    pub fn adopt_call(
        &mut self,
        tensor: Tensor,
        op: &call::Op,
        inputs: Vec<trace::Digest>,
    ) -> Result<TensorRes, KernelError> {
        let mut res = self.adopt(tensor, true)?;
        if self.tracing() {
            let mut leaf = trace::Leaf {
                op: op.name().into(),
                params: op.params(),
                inputs,
                dtype: trace::dtype_name(res.tensor.dtype()).into(),
                dims: res.tensor.dims().iter().map(|&d| d as u64).collect(),
                output: [0; 32],
            };
            let digest = match op.commits_values() {
                true => trace::tensor_digest(&res.tensor),
                false => Ok(leaf.derived_digest()),
            };
            leaf.output = match digest {
                Ok(d) => d,
                Err(e) => {
                    self.release(&res);
                    return Err(e);
                }
            };
            res.digest = leaf.output;
            if let Err(e) = self.record(|| leaf) {
                self.release(&res);
                return Err(e);
            }
            if let Some(c) = &mut self.capture {
                c.offer(&res.digest, &res.tensor)?;
                let index = self.trace.as_ref().map_or(0, |t| t.leaves.len());
                if c.at.is_some() && c.at == index.checked_sub(1) {
                    c.at_value = Some(trace::Revealed::of(&res.tensor)?);
                }
            }
        }
        Ok(res)
    }

    /// Adopts model weight `name` (uncharged) with its weight digest, and
    /// records it in the trace.
    pub fn adopt_weight(
        &mut self,
        tensor: Tensor,
        weights_hash: &str,
        name: &str,
    ) -> Result<TensorRes, KernelError> {
        self.charge_weight(name, tensor_bytes(&tensor))?;
        let mut res = self.adopt(tensor, false)?;
        res.digest = trace::weight_digest(weights_hash, name);
        let leaf = || trace::Leaf {
            op: "weight".into(),
            params: name.to_string(),
            inputs: vec![],
            dtype: trace::dtype_name(res.tensor.dtype()).into(),
            dims: res.tensor.dims().iter().map(|&d| d as u64).collect(),
            output: res.digest,
        };
        if let Err(e) = self.record(leaf) {
            self.release(&res);
            return Err(e);
        }
        Ok(res)
    }

    /// Adopts quantized model weight `name` as one more handle (uncharged)
    /// with its digest, and records it in the trace.
    pub fn adopt_qweight(
        &mut self,
        q: std::sync::Arc<candle_core::quantized::QTensor>,
        weights_hash: &str,
        name: &str,
    ) -> Result<QMatrixRes, KernelError> {
        self.charge_weight(name, q.storage_size_in_bytes() as u64)?;
        self.take_handle()?;
        let res = QMatrixRes {
            digest: trace::qweight_digest(weights_hash, name),
            q,
        };
        let leaf = || trace::Leaf {
            op: "qweight".into(),
            params: name.to_string(),
            inputs: vec![],
            dtype: qformat_name(res.q.dtype()).into(),
            dims: res.q.shape().dims().iter().map(|&d| d as u64).collect(),
            output: res.digest,
        };
        if let Err(e) = self.record(leaf) {
            self.release_handle();
            return Err(e);
        }
        Ok(res)
    }

    /// Counts weight `name` (`bytes`) against `weights_mb` the first time
    /// this instance opens it.
    fn charge_weight(&mut self, name: &str, bytes: u64) -> Result<(), KernelError> {
        if self.weights_opened.contains(name) {
            return Ok(());
        }
        let total = self.weight_bytes.saturating_add(bytes);
        if total > self.limits.weight_bytes {
            return Err(limit(
                format!(
                    "opening weight `{name}` would bring this instance's model weights to {} MiB, over its limit of {} MiB; serve a span of the model's layers instead (`layers` on the model)",
                    total.div_ceil(1 << 20),
                    self.limits.weight_bytes >> 20
                ),
                "weights_mb",
            ));
        }
        self.weight_bytes = total;
        self.weights_opened.insert(name.to_string());
        Ok(())
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Resets the per-call counters (copy-out bytes, kernel time) before a
    /// new plugin call; live tensors and handles stay charged.
    pub fn begin_call(&mut self) {
        self.kernel_time = Duration::ZERO;
        self.copied = 0;
    }

    /// Live bytes of plugin-created tensors.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Live tensor and sampler handles.
    pub fn live_handles(&self) -> u64 {
        self.handles
    }

    /// Host time spent in kernels during the current plugin call.
    pub fn call_kernel_time(&self) -> Duration {
        self.kernel_time
    }

    /// Kernel calls made by this store so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Refuses kernel `name` before it allocates or computes anything when
    /// its result and temporaries would pass the tensor budget, or its work
    /// the per-kernel cap.
    pub fn admit(&self, name: &str, cost: &Cost) -> Result<(), KernelError> {
        let need = cost.out_bytes().saturating_add(cost.scratch);
        let live = self.live_bytes as u128;
        if live.saturating_add(need) > self.limits.tensor_bytes as u128 {
            let temps = match cost.scratch {
                0 => String::new(),
                s => format!(" and {s} bytes of temporaries"),
            };
            return Err(limit(
                format!(
                    "{name}: a result of shape {:?} ({:?}, {} bytes){temps} would exceed this plugin's tensor budget of {} bytes ({live} bytes live)",
                    cost.dims,
                    cost.dtype,
                    cost.out_bytes(),
                    self.limits.tensor_bytes
                ),
                "tensor_mb",
            ));
        }
        if cost.work > self.limits.kernel_work as u128 {
            return Err(limit(
                format!(
                    "{name}: about {} MFLOP of work exceeds this plugin's limit of {} MFLOP per kernel call (by default 1 MFLOP per ms of `kernel_time_ms`)",
                    cost.work.div_ceil(1_000_000),
                    self.limits.kernel_work / 1_000_000
                ),
                "kernel_work_mflop",
            ));
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
            return Err(limit(
                format!(
                    "host kernel time limit of {} ms for this call is used up",
                    self.limits.kernel_time.as_millis()
                ),
                "kernel_time_ms",
            ));
        }
        let started = Instant::now();
        // candle panics on some inputs it does not support (`todo!()` for
        // integer kernels, integer overflow in checked builds): a plugin
        // must not be able to unwind through the host, so a panic is this
        // kernel's error, carrying candle's message and no backtrace.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                Err(KernelError::Invalid(format!(
                    "the tensor library cannot run this call ({message}); check the inputs' dtypes and values"
                )))
            });
        self.kernel_time += started.elapsed();
        self.calls += 1;
        result.map_err(|e| match e {
            KernelError::Invalid(m) => KernelError::Invalid(format!("{name}: {m}")),
            other => other,
        })
    }

    /// Counts one more live handle (a tensor, sampler, model or
    /// tokenizer), refusing past the handle cap.
    pub fn take_handle(&mut self) -> Result<(), KernelError> {
        if self.handles >= self.limits.handles {
            return Err(limit(
                format!(
                    "this plugin already holds {} live handles, its limit of tensor and sampler handles; drop the ones it no longer needs",
                    self.handles
                ),
                "tensor_handles",
            ));
        }
        self.handles += 1;
        Ok(())
    }

    /// Takes `tensor` into the plugin's keeping as one more handle,
    /// charging its bytes to the budget when `charge` (model weights are not
    /// charged, but count as handles).
    pub fn adopt(&mut self, tensor: Tensor, charge: bool) -> Result<TensorRes, KernelError> {
        let charged = if charge { tensor_bytes(&tensor) } else { 0 };
        if self.live_bytes.saturating_add(charged) > self.limits.tensor_bytes {
            return Err(limit(
                format!(
                    "tensor of {charged} bytes would exceed this plugin's limit of {} live tensor bytes",
                    self.limits.tensor_bytes
                ),
                "tensor_mb",
            ));
        }
        self.take_handle()?;
        self.live_bytes += charged;
        Ok(TensorRes {
            tensor,
            charged,
            digest: [0; 32],
        })
    }

    /// Gives back the budget and the handle of a dropped tensor.
    pub fn release(&mut self, res: &TensorRes) {
        self.live_bytes = self.live_bytes.saturating_sub(res.charged);
        self.handles = self.handles.saturating_sub(1);
    }

    /// A seeded sampler, counted as one more handle.
    pub fn sampler(&mut self, spec: SamplingSpec) -> Result<SamplerRes, KernelError> {
        self.take_handle()?;
        Ok(ops::sampler(spec))
    }

    /// Gives back the handle of a dropped sampler.
    pub fn release_sampler(&mut self) {
        self.release_handle();
    }

    /// Gives back a handle taken with [`KernelCtx::take_handle`].
    pub fn release_handle(&mut self) {
        self.handles = self.handles.saturating_sub(1);
    }

    /// Counts `bytes` about to be copied out to the guest against the
    /// per-call copy-out budget.
    pub fn charge_copy(&mut self, bytes: u64) -> Result<(), KernelError> {
        if self.copied.saturating_add(bytes) > self.limits.copy_out_bytes {
            return Err(limit(
                format!(
                    "copying {bytes} bytes out of host tensors would exceed this plugin's copy-out limit of {} bytes per call",
                    self.limits.copy_out_bytes
                ),
                "copy_out_mb",
            ));
        }
        self.copied += bytes;
        Ok(())
    }
}

/// Bytes a tensor occupies if materialised (saturating).
pub fn tensor_bytes(t: &Tensor) -> u64 {
    u64::try_from(cost::tensor_bytes(t)).unwrap_or(u64::MAX)
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
mod attention_tests;
#[cfg(test)]
mod tests;
