//! `infernet:plugin/tensor` host functions, implemented on candle-core.
//!
//! Each kernel: looks up its inputs in the store's table (a bad handle traps),
//! checks the size of what it is about to allocate against the tensor budget,
//! runs the candle op under the kernel-time budget, and pushes the result.
//! Shapes and dtypes are validated by candle; its errors come back to the
//! plugin as `invalid-input` values, never as traps.

use super::{dtype_from_wit, dtype_to_wit, tensor_bytes, SamplerRes, TensorRes};
use crate::runtime::PluginState;
use crate::worlds::backend::bindings::infernet::plugin::tensor::{
    self as wit, BinaryOp, Dtype, ReduceOp, Sampling, UnaryOp,
};
use crate::worlds::backend::WitError;
use candle_core::{DType, Shape, Tensor};
use candle_nn::Module;
use std::time::Instant;
use wasmtime::component::Resource;

type Handle = Resource<TensorRes>;
type Out<T> = wasmtime::Result<Result<T, WitError>>;

/// A kernel's failure: a trap (bad handle) or an error value for the plugin.
enum Fail {
    Trap(wasmtime::Error),
    Wit(WitError),
}

impl From<candle_core::Error> for Fail {
    fn from(e: candle_core::Error) -> Self {
        Fail::Wit(WitError::InvalidInput(e.to_string()))
    }
}
impl From<wasmtime::component::ResourceTableError> for Fail {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        Fail::Trap(e.into())
    }
}
impl From<WitError> for Fail {
    fn from(e: WitError) -> Self {
        Fail::Wit(e)
    }
}

fn shape_of(dims: &[u32]) -> Shape {
    Shape::from(dims.iter().map(|&d| d as usize).collect::<Vec<_>>())
}

fn limit(msg: String) -> Fail {
    Fail::Wit(WitError::LimitExceeded(msg))
}

impl PluginState {
    fn t(&self, h: &Handle) -> Result<&Tensor, Fail> {
        Ok(&self.table.get(h)?.tensor)
    }

    /// Refuses an allocation of `elems` elements of `dtype` that would pass the budget.
    fn precheck(&self, elems: usize, dtype: DType) -> Result<(), Fail> {
        let bytes = (elems as u128) * dtype.size_in_bytes() as u128;
        let live = self.kernels.live_bytes as u128;
        if live + bytes > self.kernels.tensor_limit as u128 {
            return Err(limit(format!(
                "allocating {bytes} tensor bytes would exceed this plugin's limit of {} bytes ({live} live)",
                self.kernels.tensor_limit
            )));
        }
        Ok(())
    }

    /// Runs one kernel under the kernel-time budget and pushes its result.
    fn kernel(&mut self, name: &str, f: impl FnOnce(&Self) -> Result<Tensor, Fail>) -> Out<Handle> {
        if self.kernels.kernel_time >= self.kernels.kernel_time_limit {
            return Ok(Err(WitError::LimitExceeded(format!(
                "host kernel time limit of {} ms for this call is used up",
                self.kernels.kernel_time_limit.as_millis()
            ))));
        }
        let started = Instant::now();
        let result = f(self);
        self.kernels.kernel_time += started.elapsed();
        self.kernels.calls += 1;
        match result {
            Ok(t) => self.push(t, true),
            Err(Fail::Trap(e)) => Err(e),
            Err(Fail::Wit(WitError::InvalidInput(m))) => {
                Ok(Err(WitError::InvalidInput(format!("{name}: {m}"))))
            }
            Err(Fail::Wit(e)) => Ok(Err(e)),
        }
    }

    /// Adds a tensor to the table, charging it to the budget when `charge`.
    pub(crate) fn push(&mut self, tensor: Tensor, charge: bool) -> Out<Handle> {
        let charged = if charge { tensor_bytes(&tensor) } else { 0 };
        if self.kernels.live_bytes + charged > self.kernels.tensor_limit {
            return Ok(Err(WitError::LimitExceeded(format!(
                "tensor of {charged} bytes would exceed this plugin's limit of {} live tensor bytes",
                self.kernels.tensor_limit
            ))));
        }
        self.kernels.live_bytes += charged;
        Ok(Ok(self.table.push(TensorRes { tensor, charged })?))
    }

    /// Copies `bytes` out to the guest if the copy budget allows.
    fn charge_copy(&mut self, bytes: u64) -> Result<(), WitError> {
        if self.kernels.copied + bytes > self.kernels.copy_limit {
            return Err(WitError::LimitExceeded(format!(
                "copying {bytes} bytes out of host tensors would exceed this plugin's copy-out limit of {} bytes per call",
                self.kernels.copy_limit
            )));
        }
        self.kernels.copied += bytes;
        Ok(())
    }

    fn new_tensor(
        &mut self,
        elems: usize,
        dtype: DType,
        make: impl FnOnce(&Self) -> candle_core::Result<Tensor>,
    ) -> Out<Handle> {
        if let Err(Fail::Wit(e)) = self.precheck(elems, dtype) {
            return Ok(Err(e));
        }
        self.kernel("create", |s| Ok(make(s)?))
    }
}

fn check_len(data_len: usize, shape: &[u32]) -> Result<usize, WitError> {
    let elems = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
    match elems {
        Some(n) if n == data_len => Ok(n),
        Some(n) => Err(WitError::InvalidInput(format!(
            "data has {data_len} elements but shape {shape:?} needs {n}"
        ))),
        None => Err(WitError::InvalidInput(format!("shape {shape:?} overflows"))),
    }
}

impl wit::HostTensor for PluginState {
    fn from_f32(&mut self, data: Vec<f32>, shape: Vec<u32>) -> Out<Handle> {
        if let Err(e) = check_len(data.len(), &shape) {
            return Ok(Err(e));
        }
        let n = data.len();
        self.new_tensor(n, DType::F32, |s| {
            Tensor::from_vec(data, shape_of(&shape), s.kernels.device())
        })
    }

    fn from_u32(&mut self, data: Vec<u32>, shape: Vec<u32>) -> Out<Handle> {
        if let Err(e) = check_len(data.len(), &shape) {
            return Ok(Err(e));
        }
        let n = data.len();
        self.new_tensor(n, DType::U32, |s| {
            Tensor::from_vec(data, shape_of(&shape), s.kernels.device())
        })
    }

    fn from_bytes(&mut self, data: Vec<u8>, dtype: Dtype, shape: Vec<u32>) -> Out<Handle> {
        let dt = dtype_from_wit(dtype);
        if !data.len().is_multiple_of(dt.size_in_bytes()) {
            return Ok(Err(WitError::InvalidInput(format!(
                "{} bytes is not a whole number of {dt:?} values",
                data.len()
            ))));
        }
        let n = data.len() / dt.size_in_bytes();
        if let Err(e) = check_len(n, &shape) {
            return Ok(Err(e));
        }
        self.new_tensor(n, dt, |s| {
            Tensor::from_raw_buffer(&data, dt, shape_of(&shape).dims(), s.kernels.device())
        })
    }

    fn arange(&mut self, end: u32) -> Out<Handle> {
        self.new_tensor(end as usize, DType::U32, |s| {
            Tensor::arange(0u32, end, s.kernels.device())
        })
    }

    fn zeros(&mut self, shape: Vec<u32>, dtype: Dtype) -> Out<Handle> {
        let dt = dtype_from_wit(dtype);
        let Some(n) = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
        else {
            return Ok(Err(WitError::InvalidInput(format!(
                "shape {shape:?} overflows"
            ))));
        };
        self.new_tensor(n, dt, |s| {
            Tensor::zeros(shape_of(&shape), dt, s.kernels.device())
        })
    }

    fn shape(&mut self, h: Handle) -> wasmtime::Result<Vec<u32>> {
        Ok(self
            .table
            .get(&h)?
            .tensor
            .dims()
            .iter()
            .map(|&d| d as u32)
            .collect())
    }

    fn dtype(&mut self, h: Handle) -> wasmtime::Result<Dtype> {
        let dt = self.table.get(&h)?.tensor.dtype();
        Ok(dtype_to_wit(dt).unwrap_or(Dtype::F32))
    }

    fn to_f32(&mut self, h: Handle) -> Out<Vec<f32>> {
        let t = self.table.get(&h)?.tensor.clone();
        if let Err(e) = self.charge_copy(t.elem_count() as u64 * 4) {
            return Ok(Err(e));
        }
        Ok(t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| WitError::InvalidInput(format!("to-f32: {e}"))))
    }

    fn to_u32(&mut self, h: Handle) -> Out<Vec<u32>> {
        let t = self.table.get(&h)?.tensor.clone();
        if let Err(e) = self.charge_copy(t.elem_count() as u64 * 4) {
            return Ok(Err(e));
        }
        Ok(t.to_dtype(DType::U32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(|e| WitError::InvalidInput(format!("to-u32: {e}"))))
    }

    fn to_bytes(&mut self, h: Handle) -> Out<Vec<u8>> {
        let t = self.table.get(&h)?.tensor.clone();
        if let Err(e) = self.charge_copy(tensor_bytes(&t)) {
            return Ok(Err(e));
        }
        Ok(raw_bytes(&t).map_err(|e| WitError::InvalidInput(format!("to-bytes: {e}"))))
    }

    fn drop(&mut self, h: Handle) -> wasmtime::Result<()> {
        let res = self.table.delete(h)?;
        self.kernels.live_bytes = self.kernels.live_bytes.saturating_sub(res.charged);
        Ok(())
    }
}

/// The tensor's values as little-endian bytes of its own dtype.
fn raw_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    fn le<T: Copy, const N: usize>(v: Vec<T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => le(flat.to_vec1::<f32>()?, f32::to_le_bytes),
        DType::F64 => le(flat.to_vec1::<f64>()?, f64::to_le_bytes),
        DType::U32 => le(flat.to_vec1::<u32>()?, u32::to_le_bytes),
        DType::I64 => le(flat.to_vec1::<i64>()?, i64::to_le_bytes),
        DType::U8 => flat.to_vec1::<u8>()?,
        DType::F16 => le(flat.to_vec1::<half::f16>()?, half::f16::to_le_bytes),
        DType::BF16 => le(flat.to_vec1::<half::bf16>()?, half::bf16::to_le_bytes),
        other => candle_core::bail!("dtype {other:?} has no byte export"),
    })
}

fn sampling(c: &Sampling) -> candle_transformers::generation::Sampling {
    use candle_transformers::generation::Sampling as S;
    let (t, k, p) = (c.temperature, c.top_k as usize, c.top_p);
    if t <= 0.0 {
        S::ArgMax
    } else if k == 0 && p >= 1.0 {
        S::All { temperature: t }
    } else if p >= 1.0 {
        S::TopK { k, temperature: t }
    } else if k == 0 {
        S::TopP { p, temperature: t }
    } else {
        S::TopKThenTopP {
            k,
            p,
            temperature: t,
        }
    }
}

impl wit::HostSampler for PluginState {
    fn new(&mut self, config: Sampling) -> wasmtime::Result<Resource<SamplerRes>> {
        let lp = candle_transformers::generation::LogitsProcessor::from_sampling(
            config.seed,
            sampling(&config),
        );
        Ok(self.table.push(SamplerRes(lp))?)
    }

    fn sample(&mut self, s: Resource<SamplerRes>, logits: Handle) -> Out<u32> {
        let logits = self.table.get(&logits)?.tensor.clone();
        if logits.rank() != 1 {
            return Ok(Err(WitError::InvalidInput(format!(
                "sample: logits must be 1-D, got shape {:?}",
                logits.dims()
            ))));
        }
        let started = Instant::now();
        let sampler = self.table.get_mut(&s)?;
        let out = sampler
            .0
            .sample(&logits)
            .map_err(|e| WitError::InvalidInput(format!("sample: {e}")));
        self.kernels.kernel_time += started.elapsed();
        Ok(out)
    }

    fn drop(&mut self, s: Resource<SamplerRes>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

fn unary(op: UnaryOp, x: &Tensor) -> candle_core::Result<Tensor> {
    match op {
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.log(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Sqr => x.sqr(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Neg => x.neg(),
        UnaryOp::Recip => x.recip(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Silu => candle_nn::ops::silu(x),
        UnaryOp::Gelu => x.gelu(),
        UnaryOp::GeluErf => x.gelu_erf(),
        UnaryOp::Relu => x.relu(),
        UnaryOp::Round => x.round(),
        UnaryOp::Floor => x.floor(),
    }
}

impl wit::Host for PluginState {
    fn matmul(&mut self, a: Handle, b: Handle) -> Out<Handle> {
        self.kernel("matmul", |s| {
            let (a, b) = (s.t(&a)?, s.t(&b)?);
            let (ad, bd) = (a.dims(), b.dims());
            if ad.len() < 2 || bd.len() < 2 {
                return Err(Fail::Wit(WitError::InvalidInput(format!(
                    "matmul needs rank >= 2, got {ad:?} x {bd:?}"
                ))));
            }
            let batch: usize = if ad.len() >= bd.len() {
                ad[..ad.len() - 2].iter().product()
            } else {
                bd[..bd.len() - 2].iter().product()
            };
            s.precheck(
                batch
                    .saturating_mul(ad[ad.len() - 2])
                    .saturating_mul(bd[bd.len() - 1]),
                a.dtype(),
            )?;
            if ad.len() == bd.len() && ad[..ad.len() - 2] == bd[..bd.len() - 2] {
                Ok(a.matmul(b)?)
            } else {
                Ok(a.broadcast_matmul(b)?)
            }
        })
    }

    fn linear(&mut self, x: Handle, w: Handle, bias: Option<Handle>) -> Out<Handle> {
        self.kernel("linear", |s| {
            let (x, w) = (s.t(&x)?, s.t(&w)?);
            let bias = match &bias {
                Some(b) => Some(s.t(b)?.clone()),
                None => None,
            };
            let rows: usize = x.dims().iter().rev().skip(1).product();
            s.precheck(
                rows.saturating_mul(w.dims().first().copied().unwrap_or(0)),
                x.dtype(),
            )?;
            Ok(candle_nn::Linear::new(w.clone(), bias).forward(x)?)
        })
    }

    fn binary(&mut self, op: BinaryOp, a: Handle, b: Handle) -> Out<Handle> {
        self.kernel("binary", |s| {
            let (a, b) = (s.t(&a)?, s.t(&b)?);
            let out = a.shape().broadcast_shape_binary_op(b.shape(), "binary")?;
            s.precheck(out.elem_count(), a.dtype())?;
            Ok(match op {
                BinaryOp::Add => a.broadcast_add(b)?,
                BinaryOp::Sub => a.broadcast_sub(b)?,
                BinaryOp::Mul => a.broadcast_mul(b)?,
                BinaryOp::Div => a.broadcast_div(b)?,
                BinaryOp::Maximum => a.broadcast_maximum(b)?,
                BinaryOp::Minimum => a.broadcast_minimum(b)?,
            })
        })
    }

    fn unary(&mut self, op: UnaryOp, x: Handle) -> Out<Handle> {
        self.kernel("unary", |s| Ok(unary(op, s.t(&x)?)?))
    }

    fn affine(&mut self, x: Handle, mul: f64, add: f64) -> Out<Handle> {
        self.kernel("affine", |s| Ok(s.t(&x)?.affine(mul, add)?))
    }

    fn clamp(&mut self, x: Handle, lo: f64, hi: f64) -> Out<Handle> {
        self.kernel("clamp", |s| Ok(s.t(&x)?.clamp(lo, hi)?))
    }

    fn softmax_last_dim(&mut self, x: Handle) -> Out<Handle> {
        self.kernel("softmax-last-dim", |s| {
            Ok(candle_nn::ops::softmax_last_dim(s.t(&x)?)?)
        })
    }

    fn rms_norm(&mut self, x: Handle, w: Handle, eps: f32) -> Out<Handle> {
        self.kernel("rms-norm", |s| {
            let norm = candle_nn::RmsNorm::new(s.t(&w)?.clone(), eps as f64);
            Ok(norm.forward(s.t(&x)?)?)
        })
    }

    fn layer_norm(&mut self, x: Handle, w: Handle, b: Handle, eps: f32) -> Out<Handle> {
        self.kernel("layer-norm", |s| {
            let norm = candle_nn::LayerNorm::new(s.t(&w)?.clone(), s.t(&b)?.clone(), eps as f64);
            Ok(norm.forward(s.t(&x)?)?)
        })
    }

    fn rope(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        self.kernel("rope", |s| {
            Ok(candle_nn::rotary_emb::rope(
                s.t(&x)?,
                s.t(&cos)?,
                s.t(&sin)?,
            )?)
        })
    }

    fn rope_interleaved(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        self.kernel("rope-interleaved", |s| {
            Ok(candle_nn::rotary_emb::rope_i(
                s.t(&x)?,
                s.t(&cos)?,
                s.t(&sin)?,
            )?)
        })
    }

    fn embedding(&mut self, ids: Handle, table: Handle) -> Out<Handle> {
        self.kernel("embedding", |s| {
            let (ids, table) = (s.t(&ids)?, s.t(&table)?);
            let (_, hidden) = table.dims2()?;
            s.precheck(ids.elem_count().saturating_mul(hidden), table.dtype())?;
            Ok(candle_nn::Embedding::new(table.clone(), hidden).forward(ids)?)
        })
    }

    fn index_select(&mut self, x: Handle, ids: Handle, dim: u32) -> Out<Handle> {
        self.kernel("index-select", |s| {
            let (x, ids) = (s.t(&x)?, s.t(&ids)?);
            let per: usize =
                x.elem_count() / x.dims().get(dim as usize).copied().unwrap_or(1).max(1);
            s.precheck(per.saturating_mul(ids.elem_count()), x.dtype())?;
            Ok(x.index_select(ids, dim as usize)?)
        })
    }

    fn narrow(&mut self, x: Handle, dim: u32, start: u32, len: u32) -> Out<Handle> {
        self.kernel("narrow", |s| {
            Ok(s.t(&x)?
                .narrow(dim as usize, start as usize, len as usize)?)
        })
    }

    fn cat(&mut self, xs: Vec<Handle>, dim: u32) -> Out<Handle> {
        self.kernel("cat", |s| {
            let ts = xs
                .iter()
                .map(|h| s.t(h).cloned())
                .collect::<Result<Vec<_>, _>>()?;
            if ts.is_empty() {
                return Err(Fail::Wit(WitError::InvalidInput(
                    "cat of no tensors".into(),
                )));
            }
            s.precheck(ts.iter().map(|t| t.elem_count()).sum(), ts[0].dtype())?;
            Ok(Tensor::cat(&ts, dim as usize)?)
        })
    }

    fn reshape(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        self.kernel("reshape", |s| Ok(s.t(&x)?.reshape(shape_of(&shape))?))
    }

    fn transpose(&mut self, x: Handle, d0: u32, d1: u32) -> Out<Handle> {
        self.kernel("transpose", |s| {
            Ok(s.t(&x)?.transpose(d0 as usize, d1 as usize)?)
        })
    }

    fn contiguous(&mut self, x: Handle) -> Out<Handle> {
        self.kernel("contiguous", |s| {
            let x = s.t(&x)?;
            s.precheck(x.elem_count(), x.dtype())?;
            Ok(x.contiguous()?)
        })
    }

    fn broadcast_as(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        self.kernel("broadcast-as", |s| {
            let shape = shape_of(&shape);
            s.precheck(shape.elem_count(), s.t(&x)?.dtype())?;
            Ok(s.t(&x)?.broadcast_as(shape)?)
        })
    }

    fn reduce(&mut self, op: ReduceOp, x: Handle, dim: u32, keepdim: bool) -> Out<Handle> {
        self.kernel("reduce", |s| {
            let x = s.t(&x)?;
            let d = dim as usize;
            let t = match (op, keepdim) {
                (ReduceOp::Sum, true) => x.sum_keepdim(d)?,
                (ReduceOp::Sum, false) => x.sum(d)?,
                (ReduceOp::Mean, true) => x.mean_keepdim(d)?,
                (ReduceOp::Mean, false) => x.mean(d)?,
                (ReduceOp::Max, true) => x.max_keepdim(d)?,
                (ReduceOp::Max, false) => x.max(d)?,
                (ReduceOp::Min, true) => x.min_keepdim(d)?,
                (ReduceOp::Min, false) => x.min(d)?,
                (ReduceOp::Argmax, true) => x.argmax_keepdim(d)?,
                (ReduceOp::Argmax, false) => x.argmax(d)?,
            };
            Ok(t)
        })
    }

    fn to_dtype(&mut self, x: Handle, dtype: Dtype) -> Out<Handle> {
        self.kernel("to-dtype", |s| {
            let x = s.t(&x)?;
            let dt = dtype_from_wit(dtype);
            s.precheck(x.elem_count(), dt)?;
            Ok(x.to_dtype(dt)?)
        })
    }

    fn masked_fill(&mut self, x: Handle, mask: Handle, on_true: f32) -> Out<Handle> {
        self.kernel("masked-fill", |s| {
            let (x, mask) = (s.t(&x)?, s.t(&mask)?);
            let mask = mask.broadcast_as(x.shape())?;
            let fill = Tensor::new(on_true, x.device())?
                .to_dtype(x.dtype())?
                .broadcast_as(x.shape())?;
            Ok(mask.where_cond(&fill, x)?)
        })
    }

    fn causal_mask(&mut self, n: u32) -> Out<Handle> {
        let n = n as usize;
        if let Err(Fail::Wit(e)) = self.precheck(n.saturating_mul(n), DType::U8) {
            return Ok(Err(e));
        }
        self.kernel("causal-mask", |s| {
            let mask: Vec<u8> = (0..n)
                .flat_map(|i| (0..n).map(move |j| u8::from(j > i)))
                .collect();
            Ok(Tensor::from_slice(&mask, (n, n), s.kernels.device())?)
        })
    }
}
