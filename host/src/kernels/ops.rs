//! The kernels themselves, in host terms (candle tensors and dtypes, the
//! enums below). Each one works out its [`Cost`] from shapes, is admitted
//! on it (tensor budget, per-kernel work) before candle allocates anything,
//! and runs under the kernel-time budget; shapes and
//! dtypes are validated by candle, whose errors come back as
//! [`KernelError::Invalid`]. Kernels mirror candle-nn exactly (`linear` is
//! `candle_nn::Linear`, `rms_norm` is `candle_nn::RmsNorm`, ...), so a
//! plugin that orders its ops like candle-transformers gets bit-identical
//! results.

use super::cost::{self, Cost, SIMPLE, TRANSCENDENTAL};
use super::{tensor_bytes, KernelCtx, KernelError};
use candle_core::{DType, Shape, Tensor};
use candle_nn::Module;

/// Element-wise functions of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    Shape::from(dims_of(dims))
}

fn dims_of(dims: &[u32]) -> Vec<usize> {
    dims.iter().map(|&d| d as usize).collect()
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

/// A seeded sampler.
pub(super) fn sampler(spec: SamplingSpec) -> super::SamplerRes {
    super::SamplerRes {
        processor: candle_transformers::generation::LogitsProcessor::from_sampling(
            spec.seed,
            sampling(&spec),
        ),
        spec,
        draws: 0,
    }
}

impl SamplingSpec {
    /// The spec as a trace writes it.
    pub fn trace_params(&self) -> String {
        format!(
            "temperature={:?} top_k={} top_p={:?} seed={}",
            self.temperature, self.top_k, self.top_p, self.seed
        )
    }
}

impl KernelCtx {
    /// Kernel `name`: under the time budget, admitted on `cost` (refused
    /// before anything is allocated), then `run`.
    fn kernel<T>(
        &mut self,
        name: &'static str,
        cost: impl FnOnce() -> Result<Cost, KernelError>,
        run: impl FnOnce(&Self) -> candle_core::Result<T>,
    ) -> Result<T, KernelError> {
        self.timed(name, |k| {
            k.admit(name, &cost()?)?;
            Ok(run(k)?)
        })
    }

    /// `n` new elements of `dtype` built by `make`.
    fn create(
        &mut self,
        n: usize,
        dtype: DType,
        make: impl FnOnce(&Self) -> candle_core::Result<Tensor>,
    ) -> Result<Tensor, KernelError> {
        let cost = || Ok(Cost::elementwise(vec![n], dtype, SIMPLE));
        self.kernel("create", cost, make)
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
        self.charge_copy(tensor_bytes_as(t, DType::F32))?;
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| invalid(format!("to-f32: {e}")))
    }

    /// The values as u32, counted against the copy-out budget.
    pub fn to_u32(&mut self, t: &Tensor) -> Result<Vec<u32>, KernelError> {
        self.charge_copy(tensor_bytes_as(t, DType::U32))?;
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

    /// One token from 1-D `logits` (whose trace digest is `digest`),
    /// recorded in the trace with the sampler's spec and draw number.
    pub fn sample(
        &mut self,
        sampler: &mut super::SamplerRes,
        logits: &Tensor,
        digest: super::trace::Digest,
    ) -> Result<u32, KernelError> {
        let n = match logits.dims() {
            [n] if *n > 0 => *n,
            dims => {
                return Err(invalid(format!(
                    "sample: logits must be 1-D and non-empty, got shape {dims:?}"
                )))
            }
        };
        let token = self.kernel(
            "sample",
            || Ok(cost::sample(n)),
            |_| sampler.processor.sample(logits),
        )?;
        let draw = sampler.draws;
        sampler.draws += 1;
        self.record(|| super::trace::Leaf {
            op: "sample".into(),
            params: format!("{} draw={draw}", sampler.spec.trace_params()),
            inputs: vec![digest],
            dtype: "token".into(),
            dims: vec![],
            output: super::trace::token_digest(token),
        })?;
        Ok(token)
    }

    /// Matrix product, batched, broadcasting batch dims.
    pub fn matmul(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor, KernelError> {
        let (cost, broadcasting) = cost::matmul(a, b).map_err(|e| match e {
            KernelError::Invalid(m) => invalid(format!("matmul: {m}")),
            other => other,
        })?;
        self.kernel(
            "matmul",
            || Ok(cost),
            |_| {
                if broadcasting {
                    a.broadcast_matmul(b)
                } else {
                    a.matmul(b)
                }
            },
        )
    }

    /// `x · wᵀ (+ bias)`, as `candle_nn::Linear`.
    pub fn linear(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor, KernelError> {
        self.kernel(
            "linear",
            || cost::linear(x, w, bias),
            |_| candle_nn::Linear::new(w.clone(), bias.cloned()).forward(x),
        )
    }

    /// `x · wᵀ` with a quantized `w`, as `candle_core::quantized::QMatMul`
    /// (f32 input, rank 2 or more; a strided input is made contiguous).
    pub fn qlinear(
        &mut self,
        x: &Tensor,
        w: &std::sync::Arc<candle_core::quantized::QTensor>,
    ) -> Result<Tensor, KernelError> {
        if x.dtype() != DType::F32 {
            return Err(invalid(format!(
                "qlinear: the input must be f32, got {:?}",
                x.dtype()
            )));
        }
        self.kernel(
            "qlinear",
            || {
                use candle_core::quantized::GgmlDType as G;
                let float = matches!(w.dtype(), G::F32 | G::F16 | G::BF16);
                cost::qlinear(x, w.shape().dims(), float)
            },
            |_| {
                let x = x.contiguous()?;
                candle_core::quantized::QMatMul::from_arc(w.clone())?.forward(&x)
            },
        )
    }

    /// A broadcasting binary op.
    pub fn binary(&mut self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, KernelError> {
        let cost = || {
            let dims = cost::broadcast(a.dims(), b.dims(), "binary")?;
            Ok(Cost::elementwise(dims, a.dtype(), SIMPLE))
        };
        if op == BinaryOp::Div && !b.dtype().is_float() && has_zero(b)? {
            return Err(KernelError::Invalid(format!(
                "binary: integer division by zero ({:?} divisor holds a 0)",
                b.dtype()
            )));
        }
        self.kernel("binary", cost, |_| match op {
            BinaryOp::Add => a.broadcast_add(b),
            BinaryOp::Sub => a.broadcast_sub(b),
            BinaryOp::Mul => a.broadcast_mul(b),
            BinaryOp::Div => a.broadcast_div(b),
            BinaryOp::Maximum => a.broadcast_maximum(b),
            BinaryOp::Minimum => a.broadcast_minimum(b),
        })
    }

    /// An element-wise function.
    pub fn unary(&mut self, op: UnaryOp, x: &Tensor) -> Result<Tensor, KernelError> {
        let per_elem = match op {
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Cos
            | UnaryOp::Sin
            | UnaryOp::Tanh
            | UnaryOp::Silu
            | UnaryOp::Gelu
            | UnaryOp::GeluErf => TRANSCENDENTAL,
            _ => SIMPLE,
        };
        if !x.dtype().is_float() {
            // candle has no integer version of most of these (it panics)
            // and returns zeros for others (gelu, silu).
            return Err(KernelError::Invalid(format!(
                "unary: `{}` takes a float tensor (f32, f16, bf16 or f64), not {:?}; convert it with `to-dtype` first",
                op.name(),
                x.dtype()
            )));
        }
        let cost = || Ok(same_as(x, per_elem));
        self.kernel("unary", cost, |_| unary(op, x))
    }

    /// `x * mul + add`.
    pub fn affine(&mut self, x: &Tensor, mul: f64, add: f64) -> Result<Tensor, KernelError> {
        let cost = || Ok(same_as(x, 2 * SIMPLE));
        self.kernel("affine", cost, |_| x.affine(mul, add))
    }

    /// `x` clamped to `[lo, hi]` (candle takes the maximum, then the minimum).
    pub fn clamp(&mut self, x: &Tensor, lo: f64, hi: f64) -> Result<Tensor, KernelError> {
        let cost = || {
            let one = same_as(x, 2 * SIMPLE);
            let first = one.out_bytes();
            Ok(one.with_scratch(first))
        };
        self.kernel("clamp", cost, |_| x.clamp(lo, hi))
    }

    /// Softmax over the last dimension.
    pub fn softmax_last_dim(&mut self, x: &Tensor) -> Result<Tensor, KernelError> {
        let cost = || {
            cost::last_dim(x)?;
            Ok(same_as(x, TRANSCENDENTAL + 3 * SIMPLE))
        };
        self.kernel("softmax-last-dim", cost, |_| {
            candle_nn::ops::softmax_last_dim(x)
        })
    }

    /// RMS norm, as `candle_nn::RmsNorm`.
    pub fn rms_norm(&mut self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor, KernelError> {
        let cost = || cost::norm(x, &[w], 3);
        self.kernel("rms-norm", cost, |_| {
            candle_nn::RmsNorm::new(w.clone(), eps as f64).forward(x)
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
        let cost = || cost::norm(x, &[w, b], 4);
        self.kernel("layer-norm", cost, |_| {
            candle_nn::LayerNorm::new(w.clone(), b.clone(), eps as f64).forward(x)
        })
    }

    /// Rotary embedding, non-interleaved (`candle_nn::rotary_emb::rope`).
    pub fn rope(&mut self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, KernelError> {
        let cost = || rope_cost(x);
        self.kernel("rope", cost, |_| candle_nn::rotary_emb::rope(x, cos, sin))
    }

    /// Rotary embedding, interleaved (`candle_nn::rotary_emb::rope_i`).
    pub fn rope_interleaved(
        &mut self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor, KernelError> {
        let cost = || rope_cost(x);
        self.kernel("rope-interleaved", cost, |_| {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        })
    }

    /// Rows of `table` by `ids`, as `candle_nn::Embedding`.
    pub fn embedding(&mut self, ids: &Tensor, table: &Tensor) -> Result<Tensor, KernelError> {
        let cost = || {
            let (_, hidden) = table.dims2()?;
            let dims = [ids.dims(), &[hidden]].concat();
            Ok(Cost::elementwise(dims, table.dtype(), SIMPLE))
        };
        self.kernel("embedding", cost, |_| {
            let hidden = table.dims2()?.1;
            candle_nn::Embedding::new(table.clone(), hidden).forward(ids)
        })
    }

    /// Slices of `x` along `dim` by `ids`.
    pub fn index_select(
        &mut self,
        x: &Tensor,
        ids: &Tensor,
        dim: u32,
    ) -> Result<Tensor, KernelError> {
        let cost = || {
            let dims = cost::resized(x, dim, ids.elem_count())?;
            Ok(Cost::elementwise(dims, x.dtype(), SIMPLE))
        };
        self.kernel("index-select", cost, |_| x.index_select(ids, dim as usize))
    }

    /// `len` entries of `x` along `dim` from `start` (a view).
    pub fn narrow(
        &mut self,
        x: &Tensor,
        dim: u32,
        start: u32,
        len: u32,
    ) -> Result<Tensor, KernelError> {
        let cost = || Ok(Cost::view(cost::resized(x, dim, len as usize)?, x.dtype()));
        self.kernel("narrow", cost, |_| {
            x.narrow(dim as usize, start as usize, len as usize)
        })
    }

    /// Concatenation along `dim`.
    pub fn cat(&mut self, xs: &[Tensor], dim: u32) -> Result<Tensor, KernelError> {
        self.kernel(
            "cat",
            || cost::cat(xs, dim),
            |_| {
                let out = Tensor::cat(xs, dim as usize)?;
                // Contract 0.2.4: always contiguous (candle's cat along an
                // inner dim of a strided input is strided).
                match out.is_contiguous() {
                    true => Ok(out),
                    false => out.contiguous(),
                }
            },
        )
    }

    /// Scaled dot-product attention in one call, bit for bit the calls a
    /// candle-transformers decoder makes: `repeat_kv` (cat + reshape) for
    /// grouped-query heads, `q · kᵀ`, `affine(scale, 0)`, the mask filled
    /// with `-inf`, softmax over the keys, `· v`.
    pub fn attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f64,
    ) -> Result<Tensor, KernelError> {
        let (dims, cost) = cost::attention(q, k, v, mask)?;
        self.kernel(
            "attention",
            || Ok(cost),
            |_| {
                let n_rep = dims.heads / dims.kv_heads;
                let k = candle_transformers::utils::repeat_kv(k.clone(), n_rep)?;
                let v = candle_transformers::utils::repeat_kv(v.clone(), n_rep)?;
                let att = q.matmul(&k.t()?)?.affine(scale, 0.0)?;
                let att = match mask {
                    Some(m) => fill_where(&att, m, f32::NEG_INFINITY)?,
                    None => att,
                };
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                att.matmul(&v)
            },
        )
    }

    /// The same values in another shape (a copy when `x` is not contiguous).
    pub fn reshape(&mut self, x: &Tensor, shape: &[u32]) -> Result<Tensor, KernelError> {
        let cost = || {
            let dims = dims_of(shape);
            let (from, to) = (cost::count(x.dims()), cost::count(&dims));
            if from != to {
                return Err(invalid(format!(
                    "cannot reshape {:?} ({from} elements) to {shape:?} ({to} elements)",
                    x.dims()
                )));
            }
            let per_elem = if x.is_contiguous() { 0 } else { SIMPLE };
            Ok(Cost::elementwise(dims, x.dtype(), per_elem).with_work(1))
        };
        self.kernel("reshape", cost, |_| x.reshape(shape_of(shape)))
    }

    /// `dim0` and `dim1` swapped (a view).
    pub fn transpose(&mut self, x: &Tensor, d0: u32, d1: u32) -> Result<Tensor, KernelError> {
        let cost = || {
            let (a, b) = (cost::axis(x.dims(), d0)?, cost::axis(x.dims(), d1)?);
            let mut dims = x.dims().to_vec();
            dims.swap(a, b);
            Ok(Cost::view(dims, x.dtype()))
        };
        self.kernel("transpose", cost, |_| x.transpose(d0 as usize, d1 as usize))
    }

    /// A contiguous copy.
    pub fn contiguous(&mut self, x: &Tensor) -> Result<Tensor, KernelError> {
        let cost = || Ok(same_as(x, SIMPLE));
        self.kernel("contiguous", cost, |_| x.contiguous())
    }

    /// `x` broadcast to `shape` (a view, charged at its full size).
    pub fn broadcast_as(&mut self, x: &Tensor, shape: &[u32]) -> Result<Tensor, KernelError> {
        let cost = || Ok(Cost::view(dims_of(shape), x.dtype()));
        self.kernel("broadcast-as", cost, |_| x.broadcast_as(shape_of(shape)))
    }

    /// A reduction along `dim`.
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: &Tensor,
        dim: u32,
        keepdim: bool,
    ) -> Result<Tensor, KernelError> {
        let cost = || {
            let dtype = match op {
                ReduceOp::Argmax => DType::U32,
                _ => x.dtype(),
            };
            cost::reduce(x, dim, keepdim, dtype)
        };
        self.kernel("reduce", cost, |_| {
            let d = dim as usize;
            match (op, keepdim) {
                (ReduceOp::Sum, true) => x.sum_keepdim(d),
                (ReduceOp::Sum, false) => x.sum(d),
                (ReduceOp::Mean, true) => x.mean_keepdim(d),
                (ReduceOp::Mean, false) => x.mean(d),
                (ReduceOp::Max, true) => x.max_keepdim(d),
                (ReduceOp::Max, false) => x.max(d),
                (ReduceOp::Min, true) => x.min_keepdim(d),
                (ReduceOp::Min, false) => x.min(d),
                (ReduceOp::Argmax, true) => x.argmax_keepdim(d),
                (ReduceOp::Argmax, false) => x.argmax(d),
            }
        })
    }

    /// `x` converted to `dtype`.
    pub fn to_dtype(&mut self, x: &Tensor, dtype: DType) -> Result<Tensor, KernelError> {
        let cost = || Ok(Cost::elementwise(x.dims().to_vec(), dtype, SIMPLE));
        self.kernel("to-dtype", cost, |_| x.to_dtype(dtype))
    }

    /// `on_true` where `mask` is non-zero, `x` elsewhere.
    pub fn masked_fill(
        &mut self,
        x: &Tensor,
        mask: &Tensor,
        on_true: f32,
    ) -> Result<Tensor, KernelError> {
        let cost = || Ok(same_as(x, 2 * SIMPLE));
        self.kernel("masked-fill", cost, |_| fill_where(x, mask, on_true))
    }

    /// The `n × n` u8 mask that is 1 above the diagonal (built in a `Vec`
    /// of the same size first).
    pub fn causal_mask(&mut self, n: u32) -> Result<Tensor, KernelError> {
        let n = n as usize;
        let cost = || {
            let mask = Cost::elementwise(vec![n, n], DType::U8, SIMPLE);
            let vec = mask.out_bytes();
            Ok(mask.with_scratch(vec))
        };
        self.kernel("causal-mask", cost, |k| {
            let mask: Vec<u8> = (0..n)
                .flat_map(|i| (0..n).map(move |j| u8::from(j > i)))
                .collect();
            Tensor::from_slice(&mask, (n, n), k.device())
        })
    }
}

/// A result of `x`'s shape and dtype, `per_elem` FLOPs per element.
fn same_as(x: &Tensor, per_elem: u128) -> Cost {
    Cost::elementwise(x.dims().to_vec(), x.dtype(), per_elem)
}

/// Rotary embeddings: one result of `x`'s shape (candle checks `cos`/`sin`).
fn rope_cost(x: &Tensor) -> Result<Cost, KernelError> {
    cost::last_dim(x)?;
    Ok(same_as(x, 4 * SIMPLE))
}

/// Bytes of `t`'s values as `dtype` (saturating).
fn tensor_bytes_as(t: &Tensor, dtype: DType) -> u64 {
    let b = cost::bytes(cost::count(t.dims()), dtype);
    u64::try_from(b).unwrap_or(u64::MAX)
}

/// The tensor's values as little-endian bytes of its own dtype.
pub(crate) fn raw_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
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

impl UnaryOp {
    /// The op's name in the contract (`exp`, `gelu-erf`, ...).
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Exp => "exp",
            Log => "log",
            Sqrt => "sqrt",
            Sqr => "sqr",
            Cos => "cos",
            Sin => "sin",
            Neg => "neg",
            Recip => "recip",
            Abs => "abs",
            Tanh => "tanh",
            Silu => "silu",
            Gelu => "gelu",
            GeluErf => "gelu-erf",
            Relu => "relu",
            Round => "round",
            Floor => "floor",
        }
    }
}

/// Whether an (integer) tensor holds a zero anywhere. It is a divisor the
/// plugin already holds, so this reads no more than the division would.
fn has_zero(t: &Tensor) -> Result<bool, KernelError> {
    if t.elem_count() == 0 {
        return Ok(false);
    }
    // A u8 mask (no larger than the divisor), then its largest element.
    let any = t
        .eq(0f64)
        .and_then(|m| m.flatten_all())
        .and_then(|m| m.max(0))
        .and_then(|m| m.to_scalar::<u8>())
        .map_err(|e| KernelError::Invalid(format!("binary: {e}")))?;
    Ok(any > 0)
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

/// `x` with `value` where `mask` (broadcast to `x`) is nonzero.
fn fill_where(x: &Tensor, mask: &Tensor, value: f32) -> candle_core::Result<Tensor> {
    let mask = mask.broadcast_as(x.shape())?;
    let fill = Tensor::new(value, x.device())?
        .to_dtype(x.dtype())?
        .broadcast_as(x.shape())?;
    mask.where_cond(&fill, x)
}
