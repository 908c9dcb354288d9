//! The kernels themselves, in host terms (candle tensors and dtypes, the
//! enums below). Each one prechecks the size of what it allocates against
//! the tensor budget and runs under the kernel-time budget; shapes and
//! dtypes are validated by candle, whose errors come back as
//! [`KernelError::Invalid`]. Kernels mirror candle-nn exactly (`linear` is
//! `candle_nn::Linear`, `rms_norm` is `candle_nn::RmsNorm`, ...), so a
//! plugin that orders its ops like candle-transformers gets bit-identical
//! results.

use super::{tensor_bytes, KernelCtx, KernelError};
use candle_core::{DType, Shape, Tensor};
use candle_nn::Module;
use std::time::Instant;

/// Element-wise functions of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Exp,
    Log,
    Sqrt,
    Sqr,
    Cos,
    Sin,
    Neg,
    Recip,
    Abs,
    Tanh,
    Silu,
    Gelu,
    GeluErf,
    Relu,
    Round,
    Floor,
}

/// Broadcasting element-wise functions of two tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

/// Reductions along one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Argmax,
}

/// How a sampler picks a token (temperature 0 = argmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingSpec {
    /// Softmax temperature; `<= 0` means greedy.
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: u32,
    /// Keep the smallest set with probability mass `top_p` (1 = off).
    pub top_p: f64,
    /// RNG seed.
    pub seed: u64,
}

fn shape_of(dims: &[u32]) -> Shape {
    Shape::from(dims.iter().map(|&d| d as usize).collect::<Vec<_>>())
}

/// Elements of `shape`, or an error when the product overflows.
fn elems(shape: &[u32]) -> Result<usize, KernelError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| KernelError::Invalid(format!("shape {shape:?} overflows")))
}

fn check_len(data_len: usize, shape: &[u32]) -> Result<usize, KernelError> {
    let n = elems(shape)?;
    if n != data_len {
        return Err(KernelError::Invalid(format!(
            "data has {data_len} elements but shape {shape:?} needs {n}"
        )));
    }
    Ok(n)
}

fn invalid(m: String) -> KernelError {
    KernelError::Invalid(m)
}

impl KernelCtx {
    /// Prechecks `n` elements of `dtype`, then builds the tensor under the time budget.
    fn create(
        &mut self,
        n: usize,
        dtype: DType,
        make: impl FnOnce(&Self) -> candle_core::Result<Tensor>,
    ) -> Result<Tensor, KernelError> {
        self.precheck(n, dtype)?;
        self.timed("create", |k| Ok(make(k)?))
    }

    /// An f32 tensor from values.
    pub fn from_f32(&mut self, data: Vec<f32>, shape: &[u32]) -> Result<Tensor, KernelError> {
        let n = check_len(data.len(), shape)?;
        self.create(n, DType::F32, |k| {
            Tensor::from_vec(data, shape_of(shape), k.device())
        })
    }

    /// A u32 tensor from values.
    pub fn from_u32(&mut self, data: Vec<u32>, shape: &[u32]) -> Result<Tensor, KernelError> {
        let n = check_len(data.len(), shape)?;
        self.create(n, DType::U32, |k| {
            Tensor::from_vec(data, shape_of(shape), k.device())
        })
    }

    /// A tensor of `dtype` from little-endian bytes.
    pub fn from_bytes(
        &mut self,
        data: &[u8],
        dtype: DType,
        shape: &[u32],
    ) -> Result<Tensor, KernelError> {
        if !data.len().is_multiple_of(dtype.size_in_bytes()) {
            return Err(invalid(format!(
                "{} bytes is not a whole number of {dtype:?} values",
                data.len()
            )));
        }
        let n = check_len(data.len() / dtype.size_in_bytes(), shape)?;
        self.create(n, dtype, |k| {
            Tensor::from_raw_buffer(data, dtype, shape_of(shape).dims(), k.device())
        })
    }

    /// `0..end` as u32.
    pub fn arange(&mut self, end: u32) -> Result<Tensor, KernelError> {
        self.create(end as usize, DType::U32, |k| {
            Tensor::arange(0u32, end, k.device())
        })
    }

    /// Zeros of `shape` and `dtype`.
    pub fn zeros(&mut self, shape: &[u32], dtype: DType) -> Result<Tensor, KernelError> {
        let n = elems(shape)?;
        self.create(n, dtype, |k| {
            Tensor::zeros(shape_of(shape), dtype, k.device())
        })
    }

    /// The values as f32, counted against the copy-out budget.
    pub fn to_f32(&mut self, t: &Tensor) -> Result<Vec<f32>, KernelError> {
        self.charge_copy(t.elem_count() as u64 * 4)?;
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| invalid(format!("to-f32: {e}")))
    }

    /// The values as u32, counted against the copy-out budget.
    pub fn to_u32(&mut self, t: &Tensor) -> Result<Vec<u32>, KernelError> {
        self.charge_copy(t.elem_count() as u64 * 4)?;
        t.to_dtype(DType::U32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(|e| invalid(format!("to-u32: {e}")))
    }

    /// The values as little-endian bytes of their own dtype (exact for
    /// f64/i64), counted against the copy-out budget.
    pub fn to_bytes(&mut self, t: &Tensor) -> Result<Vec<u8>, KernelError> {
        self.charge_copy(tensor_bytes(t))?;
        raw_bytes(t).map_err(|e| invalid(format!("to-bytes: {e}")))
    }

    /// A seeded sampler.
    pub fn sampler(&self, spec: SamplingSpec) -> super::SamplerRes {
        super::SamplerRes(
            candle_transformers::generation::LogitsProcessor::from_sampling(
                spec.seed,
                sampling(&spec),
            ),
        )
    }

    /// One token from 1-D `logits`.
    pub fn sample(
        &mut self,
        sampler: &mut super::SamplerRes,
        logits: &Tensor,
    ) -> Result<u32, KernelError> {
        if logits.rank() != 1 {
            return Err(invalid(format!(
                "sample: logits must be 1-D, got shape {:?}",
                logits.dims()
            )));
        }
        let started = Instant::now();
        let out = sampler
            .0
            .sample(logits)
            .map_err(|e| invalid(format!("sample: {e}")));
        self.add_time(started.elapsed());
        out
    }

    /// Matrix product, batched, broadcasting batch dims.
    pub fn matmul(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor, KernelError> {
        self.timed("matmul", |k| {
            let (ad, bd) = (a.dims(), b.dims());
            if ad.len() < 2 || bd.len() < 2 {
                return Err(invalid(format!(
                    "matmul needs rank >= 2, got {ad:?} x {bd:?}"
                )));
            }
            let batch: usize = if ad.len() >= bd.len() {
                ad[..ad.len() - 2].iter().product()
            } else {
                bd[..bd.len() - 2].iter().product()
            };
            k.precheck(
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

    /// `x · wᵀ (+ bias)`, as `candle_nn::Linear`.
    pub fn linear(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor, KernelError> {
        self.timed("linear", |k| {
            let rows: usize = x.dims().iter().rev().skip(1).product();
            k.precheck(
                rows.saturating_mul(w.dims().first().copied().unwrap_or(0)),
                x.dtype(),
            )?;
            Ok(candle_nn::Linear::new(w.clone(), bias.cloned()).forward(x)?)
        })
    }

    /// A broadcasting binary op.
    pub fn binary(&mut self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, KernelError> {
        self.timed("binary", |k| {
            let out = a.shape().broadcast_shape_binary_op(b.shape(), "binary")?;
            k.precheck(out.elem_count(), a.dtype())?;
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

    /// An element-wise function.
    pub fn unary(&mut self, op: UnaryOp, x: &Tensor) -> Result<Tensor, KernelError> {
        self.timed("unary", |_| Ok(unary(op, x)?))
    }

    /// `x * mul + add`.
    pub fn affine(&mut self, x: &Tensor, mul: f64, add: f64) -> Result<Tensor, KernelError> {
        self.timed("affine", |_| Ok(x.affine(mul, add)?))
    }

    /// `x` clamped to `[lo, hi]`.
    pub fn clamp(&mut self, x: &Tensor, lo: f64, hi: f64) -> Result<Tensor, KernelError> {
        self.timed("clamp", |_| Ok(x.clamp(lo, hi)?))
    }

    /// Softmax over the last dimension.
    pub fn softmax_last_dim(&mut self, x: &Tensor) -> Result<Tensor, KernelError> {
        self.timed("softmax-last-dim", |_| {
            Ok(candle_nn::ops::softmax_last_dim(x)?)
        })
    }

    /// RMS norm, as `candle_nn::RmsNorm`.
    pub fn rms_norm(&mut self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor, KernelError> {
        self.timed("rms-norm", |_| {
            Ok(candle_nn::RmsNorm::new(w.clone(), eps as f64).forward(x)?)
        })
    }

    /// Layer norm, as `candle_nn::LayerNorm`.
    pub fn layer_norm(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        eps: f32,
    ) -> Result<Tensor, KernelError> {
        self.timed("layer-norm", |_| {
            Ok(candle_nn::LayerNorm::new(w.clone(), b.clone(), eps as f64).forward(x)?)
        })
    }

    /// Rotary embedding, non-interleaved (`candle_nn::rotary_emb::rope`).
    pub fn rope(&mut self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, KernelError> {
        self.timed("rope", |_| Ok(candle_nn::rotary_emb::rope(x, cos, sin)?))
    }

    /// Rotary embedding, interleaved (`candle_nn::rotary_emb::rope_i`).
    pub fn rope_interleaved(
        &mut self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor, KernelError> {
        self.timed("rope-interleaved", |_| {
            Ok(candle_nn::rotary_emb::rope_i(x, cos, sin)?)
        })
    }

    /// Rows of `table` by `ids`, as `candle_nn::Embedding`.
    pub fn embedding(&mut self, ids: &Tensor, table: &Tensor) -> Result<Tensor, KernelError> {
        self.timed("embedding", |k| {
            let (_, hidden) = table.dims2()?;
            k.precheck(ids.elem_count().saturating_mul(hidden), table.dtype())?;
            Ok(candle_nn::Embedding::new(table.clone(), hidden).forward(ids)?)
        })
    }

    /// Slices of `x` along `dim` by `ids`.
    pub fn index_select(
        &mut self,
        x: &Tensor,
        ids: &Tensor,
        dim: u32,
    ) -> Result<Tensor, KernelError> {
        self.timed("index-select", |k| {
            let per: usize =
                x.elem_count() / x.dims().get(dim as usize).copied().unwrap_or(1).max(1);
            k.precheck(per.saturating_mul(ids.elem_count()), x.dtype())?;
            Ok(x.index_select(ids, dim as usize)?)
        })
    }

    /// `len` entries of `x` along `dim` from `start` (a view).
    pub fn narrow(
        &mut self,
        x: &Tensor,
        dim: u32,
        start: u32,
        len: u32,
    ) -> Result<Tensor, KernelError> {
        self.timed("narrow", |_| {
            Ok(x.narrow(dim as usize, start as usize, len as usize)?)
        })
    }

    /// Concatenation along `dim`.
    pub fn cat(&mut self, xs: &[Tensor], dim: u32) -> Result<Tensor, KernelError> {
        self.timed("cat", |k| {
            let Some(first) = xs.first() else {
                return Err(invalid("cat of no tensors".into()));
            };
            k.precheck(xs.iter().map(|t| t.elem_count()).sum(), first.dtype())?;
            Ok(Tensor::cat(xs, dim as usize)?)
        })
    }

    /// The same values in another shape.
    pub fn reshape(&mut self, x: &Tensor, shape: &[u32]) -> Result<Tensor, KernelError> {
        self.timed("reshape", |_| Ok(x.reshape(shape_of(shape))?))
    }

    /// `dim0` and `dim1` swapped (a view).
    pub fn transpose(&mut self, x: &Tensor, d0: u32, d1: u32) -> Result<Tensor, KernelError> {
        self.timed("transpose", |_| Ok(x.transpose(d0 as usize, d1 as usize)?))
    }

    /// A contiguous copy.
    pub fn contiguous(&mut self, x: &Tensor) -> Result<Tensor, KernelError> {
        self.timed("contiguous", |k| {
            k.precheck(x.elem_count(), x.dtype())?;
            Ok(x.contiguous()?)
        })
    }

    /// `x` broadcast to `shape`.
    pub fn broadcast_as(&mut self, x: &Tensor, shape: &[u32]) -> Result<Tensor, KernelError> {
        self.timed("broadcast-as", |k| {
            let shape = shape_of(shape);
            k.precheck(shape.elem_count(), x.dtype())?;
            Ok(x.broadcast_as(shape)?)
        })
    }

    /// A reduction along `dim`.
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: &Tensor,
        dim: u32,
        keepdim: bool,
    ) -> Result<Tensor, KernelError> {
        self.timed("reduce", |_| {
            let d = dim as usize;
            Ok(match (op, keepdim) {
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
            })
        })
    }

    /// `x` converted to `dtype`.
    pub fn to_dtype(&mut self, x: &Tensor, dtype: DType) -> Result<Tensor, KernelError> {
        self.timed("to-dtype", |k| {
            k.precheck(x.elem_count(), dtype)?;
            Ok(x.to_dtype(dtype)?)
        })
    }

    /// `on_true` where `mask` is non-zero, `x` elsewhere.
    pub fn masked_fill(
        &mut self,
        x: &Tensor,
        mask: &Tensor,
        on_true: f32,
    ) -> Result<Tensor, KernelError> {
        self.timed("masked-fill", |_| {
            let mask = mask.broadcast_as(x.shape())?;
            let fill = Tensor::new(on_true, x.device())?
                .to_dtype(x.dtype())?
                .broadcast_as(x.shape())?;
            Ok(mask.where_cond(&fill, x)?)
        })
    }

    /// The `n × n` u8 mask that is 1 above the diagonal.
    pub fn causal_mask(&mut self, n: u32) -> Result<Tensor, KernelError> {
        let n = n as usize;
        self.precheck(n.saturating_mul(n), DType::U8)?;
        self.timed("causal-mask", |k| {
            let mask: Vec<u8> = (0..n)
                .flat_map(|i| (0..n).map(move |j| u8::from(j > i)))
                .collect();
            Ok(Tensor::from_slice(&mask, (n, n), k.device())?)
        })
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

fn sampling(c: &SamplingSpec) -> candle_transformers::generation::Sampling {
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
