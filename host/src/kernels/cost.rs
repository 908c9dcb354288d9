//! What a kernel call will cost, worked out from shapes alone before candle
//! runs: the result it allocates (with broadcasting), the temporaries
//! candle allocates next to it, and an estimate of its work in FLOPs.
//! [`KernelCtx::admit`](super::KernelCtx::admit) checks a [`Cost`] against
//! the tensor budget and the per-kernel work cap. Element counts are
//! `u128`s that saturate, so no plugin-chosen shape can overflow them (and
//! candle's own `elem_count`, which can, is only reached after a check).

use super::KernelError;
use candle_core::{DType, Shape, Tensor};

/// FLOPs charged per element for arithmetic, comparisons and copies.
pub const SIMPLE: u128 = 1;
/// FLOPs charged per element for `exp`, `log`, `tanh`, `erf`, `sin`...
pub const TRANSCENDENTAL: u128 = 10;

/// The result, temporaries and work of one kernel call.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// Shape of the result.
    pub dims: Vec<usize>,
    /// Dtype of the result.
    pub dtype: DType,
    /// Bytes of temporaries alive while the kernel runs.
    pub scratch: u128,
    /// Estimated FLOPs (element reads and writes count as one).
    pub work: u128,
}

impl Cost {
    /// A result of `dims` and `dtype`, `per_elem` FLOPs for each of its elements.
    pub fn elementwise(dims: Vec<usize>, dtype: DType, per_elem: u128) -> Cost {
        let work = count(&dims).saturating_mul(per_elem);
        Cost {
            dims,
            dtype,
            scratch: 0,
            work,
        }
    }

    /// A view or a result that costs next to nothing to compute.
    pub fn view(dims: Vec<usize>, dtype: DType) -> Cost {
        Cost {
            dims,
            dtype,
            scratch: 0,
            work: 1,
        }
    }

    /// The same with `bytes` of temporaries.
    pub fn with_scratch(mut self, bytes: u128) -> Cost {
        self.scratch = self.scratch.saturating_add(bytes);
        self
    }

    /// The same with `flops` more work.
    pub fn with_work(mut self, flops: u128) -> Cost {
        self.work = self.work.saturating_add(flops);
        self
    }

    /// Elements of the result.
    pub fn elems(&self) -> u128 {
        count(&self.dims)
    }

    /// Bytes of the result.
    pub fn out_bytes(&self) -> u128 {
        bytes(self.elems(), self.dtype)
    }
}

/// Elements of a shape, saturating at `u128::MAX`.
pub fn count(dims: &[usize]) -> u128 {
    dims.iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX)
}

/// Bytes of `elems` values of `dtype`, saturating.
pub fn bytes(elems: u128, dtype: DType) -> u128 {
    elems.saturating_mul(dtype.size_in_bytes() as u128)
}

/// Bytes of `t` if materialised.
pub fn tensor_bytes(t: &Tensor) -> u128 {
    bytes(count(t.dims()), t.dtype())
}

/// Numpy-style broadcast of two shapes (candle's rules and message).
pub fn broadcast(a: &[usize], b: &[usize], op: &'static str) -> Result<Vec<usize>, KernelError> {
    let s = Shape::from(a.to_vec()).broadcast_shape_binary_op(&Shape::from(b.to_vec()), op)?;
    Ok(s.dims().to_vec())
}

/// `dim` as an index of `dims`, or an error naming both.
pub fn axis(dims: &[usize], dim: u32) -> Result<usize, KernelError> {
    let d = dim as usize;
    if d >= dims.len() {
        return Err(KernelError::Invalid(format!(
            "dimension {dim} out of range for shape {dims:?}"
        )));
    }
    Ok(d)
}

/// `x`'s last dimension, refusing a missing or empty one (candle's
/// row-wise kernels split rows by it and would panic on 0).
pub fn last_dim(x: &Tensor) -> Result<usize, KernelError> {
    match x.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => Err(KernelError::Invalid(format!(
            "needs a non-empty last dimension, got shape {:?}",
            x.dims()
        ))),
    }
}

/// A matmul: the broadcast batch, the result, the copies candle makes of
/// broadcast operands, and 2·batch·m·k·n FLOPs. The flag says whether the
/// operands need `broadcast_matmul` (their batch dimensions differ).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<(Cost, bool), KernelError> {
    let (ad, bd) = (a.dims(), b.dims());
    let (ar, br) = (ad.len(), bd.len());
    if ar < 2 || br < 2 {
        return Err(KernelError::Invalid(format!(
            "matmul needs rank >= 2, got {ad:?} x {bd:?}"
        )));
    }
    let (m, k, k2, n) = (ad[ar - 2], ad[ar - 1], bd[br - 2], bd[br - 1]);
    if k != k2 {
        return Err(KernelError::Invalid(format!(
            "inner dimensions differ: {ad:?} x {bd:?}"
        )));
    }
    let batch = broadcast(&ad[..ar - 2], &bd[..br - 2], "matmul")?;
    let with = |tail: [usize; 2]| [batch.as_slice(), &tail].concat();
    let (l_shape, r_shape) = (with([m, k]), with([k, n]));
    let broadcasting = ar != br || ad[..ar - 2] != bd[..br - 2];
    // What `Tensor::broadcast_matmul` copies: each operand whose shape
    // changes under the broadcast, except a rank-2 rhs against a contiguous
    // lhs (folded into one 2-D product).
    let (l_copy, r_copy) = (l_shape != ad, r_shape != bd);
    let copies = match (broadcasting, l_copy, r_copy) {
        (false, _, _) => 0,
        (true, false, true) if br == 2 && a.is_contiguous() => 0,
        (true, l, r) => {
            let elems = |copy: bool, s: &[usize]| if copy { count(s) } else { 0 };
            elems(l, &l_shape).saturating_add(elems(r, &r_shape))
        }
    };
    let flops = count(&batch)
        .saturating_mul(2)
        .saturating_mul(count(&[m, k, n]));
    let cost = Cost::elementwise(with([m, n]), a.dtype(), SIMPLE)
        .with_scratch(bytes(copies, a.dtype()))
        .with_work(flops.saturating_add(copies));
    Ok((cost, broadcasting))
}

/// `x · wᵀ` for `x` of dims `xd` and a weight `[out, in]` of dims `wd`:
/// the product's dims and FLOPs, or why they do not multiply.
fn projection(xd: &[usize], wd: &[usize]) -> Result<(Vec<usize>, u128), KernelError> {
    let [out, inp] = *wd else {
        return Err(KernelError::Invalid(format!(
            "weight must be 2-D [out, in], got {wd:?}"
        )));
    };
    let Some((&features, rows)) = xd.split_last() else {
        return Err(KernelError::Invalid("input is a scalar".into()));
    };
    if features != inp {
        return Err(KernelError::Invalid(format!(
            "input has {features} features but the weight {wd:?} takes {inp}"
        )));
    }
    let flops = count(rows)
        .saturating_mul(2)
        .saturating_mul(count(&[inp, out]));
    Ok(([rows, &[out]].concat(), flops))
}

/// `candle_nn::Linear`: `x · wᵀ` (`w` is `[out, in]`), plus the bias added
/// as a second full-size result.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Cost, KernelError> {
    let (product, flops) = projection(x.dims(), w.dims())?;
    let cost = match bias {
        None => Cost::elementwise(product, x.dtype(), SIMPLE),
        Some(b) => {
            let first = bytes(count(&product), x.dtype());
            let dims = broadcast(&product, b.dims(), "linear")?;
            Cost::elementwise(dims, x.dtype(), SIMPLE).with_scratch(first)
        }
    };
    Ok(cost.with_work(flops))
}

/// `x · wᵀ` with a quantized `w` of dims `wd` (`[out, in]`): the f32
/// result, a contiguous copy of a strided `x`, the 8-bit quantized copy of
/// `x` the block dot products read, and a dequantized `w` when `float`
/// (f32/f16/bf16 matrices, which `QMatMul` multiplies as tensors).
pub fn qlinear(x: &Tensor, wd: &[usize], float: bool) -> Result<Cost, KernelError> {
    let xd = x.dims();
    if xd.len() < 2 {
        return Err(KernelError::Invalid(format!(
            "input must have rank 2 or more, got {xd:?}"
        )));
    }
    let (product, flops) = projection(xd, wd)?;
    let n = count(xd);
    let copy = match x.is_contiguous() {
        true => 0,
        false => bytes(n, DType::F32),
    };
    let dequantized = match float {
        true => bytes(count(wd), DType::F32),
        false => 0,
    };
    Ok(Cost::elementwise(product, DType::F32, SIMPLE)
        .with_scratch(copy + n + dequantized)
        .with_work(flops))
}

/// RMS or layer norm of `x` with `params` (weight, and bias): fused when
/// `x` is contiguous; otherwise candle's step-by-step path keeps about
/// `steps` f32 copies of `x` alive.
pub fn norm(x: &Tensor, params: &[&Tensor], steps: u128) -> Result<Cost, KernelError> {
    last_dim(x)?;
    let mut dims = x.dims().to_vec();
    for p in params {
        dims = broadcast(&dims, p.dims(), "norm")?;
    }
    let cost = Cost::elementwise(dims, x.dtype(), 2 * TRANSCENDENTAL);
    if x.is_contiguous() {
        Ok(cost)
    } else {
        let f32s = bytes(count(x.dims()), DType::F32);
        Ok(cost.with_scratch(f32s.saturating_mul(steps)))
    }
}

/// A reduction of `x` along `dim`: reads all of `x`.
pub fn reduce(x: &Tensor, dim: u32, keepdim: bool, dtype: DType) -> Result<Cost, KernelError> {
    let d = axis(x.dims(), dim)?;
    let mut dims = x.dims().to_vec();
    if keepdim {
        dims[d] = 1;
    } else {
        dims.remove(d);
    }
    Ok(Cost::view(dims, dtype).with_work(count(x.dims())))
}

/// `x` with dimension `dim` resized to `len`.
pub fn resized(x: &Tensor, dim: u32, len: usize) -> Result<Vec<usize>, KernelError> {
    let d = axis(x.dims(), dim)?;
    let mut dims = x.dims().to_vec();
    dims[d] = len;
    Ok(dims)
}

/// Concatenation of `xs` along `dim`: the first's shape with `dim` summed.
pub fn cat(xs: &[Tensor], dim: u32) -> Result<Cost, KernelError> {
    let Some(first) = xs.first() else {
        return Err(KernelError::Invalid("cat of no tensors".into()));
    };
    let d = axis(first.dims(), dim)?;
    let len = xs
        .iter()
        .map(|t| t.dims().get(d).copied().unwrap_or(0))
        .fold(0usize, usize::saturating_add);
    let dims = resized(first, dim, len)?;
    let out = Cost::elementwise(dims, first.dtype(), SIMPLE);
    // Along an inner dim with a strided input candle's result is strided
    // too; the kernel then copies it once more to hand back a contiguous one.
    let strided = d != 0 && xs.iter().any(|t| !t.is_contiguous());
    Ok(match strided {
        true => {
            let copy = out.out_bytes();
            let elems = out.elems();
            out.with_scratch(copy).with_work(elems)
        }
        false => out,
    })
}

/// The shapes of one `attention` call, checked: `q` `[b, heads, s, d]`,
/// `k` `[b, kv_heads, t, d]`, `v` `[b, kv_heads, t, dv]`.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple of it).
    pub kv_heads: usize,
    /// Query positions.
    pub s: usize,
    /// Key positions.
    pub t: usize,
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
}

/// Checks `attention`'s operands (rank, matching dims, one float dtype, a
/// mask of an integer dtype that broadcasts to the scores) and works out
/// its cost: the result, and as temporaries the repeated keys and values
/// (grouped-query) and the scores, masked scores and probabilities.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<(AttentionDims, Cost), KernelError> {
    let bad = |m: String| Err(KernelError::Invalid(format!("attention: {m}")));
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    let ([b, heads, s, d], [kb, kv_heads, t, kd2], [vb, vh, vt, dv]) = (qd, kd, vd) else {
        return bad(format!(
            "q, k and v must be rank 4 ([b, heads, positions, width]), got {qd:?}, {kd:?}, {vd:?}"
        ));
    };
    let (b, heads, s, d, kv_heads, t, dv) = (*b, *heads, *s, *d, *kv_heads, *t, *dv);
    if *kb != b || *vb != b || *vh != kv_heads || *vt != t || *kd2 != d {
        return bad(format!(
            "q {qd:?}, k {kd:?} and v {vd:?} do not fit: batch, heads, positions and widths must agree"
        ));
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return bad(format!(
            "{heads} query heads are not a multiple of {kv_heads} key/value heads"
        ));
    }
    let dtype = q.dtype();
    if !dtype.is_float() || k.dtype() != dtype || v.dtype() != dtype {
        return bad(format!(
            "q, k and v must share one float dtype, got {:?}, {:?}, {:?}",
            q.dtype(),
            k.dtype(),
            v.dtype()
        ));
    }
    let scores = [b, heads, s, t];
    if let Some(m) = mask {
        if m.dtype().is_float() {
            return bad(format!(
                "the mask must be u8, u32 or i64 (nonzero = cut), got {:?}",
                m.dtype()
            ));
        }
        let md = m.dims();
        let fits = md.len() <= scores.len()
            && md
                .iter()
                .rev()
                .zip(scores.iter().rev())
                .all(|(&a, &b)| a == 1 || a == b);
        if !fits {
            return bad(format!(
                "a mask of shape {:?} does not broadcast to the scores {scores:?}",
                m.dims()
            ));
        }
    }
    let dims = AttentionDims {
        b,
        heads,
        kv_heads,
        s,
        t,
        d,
        dv,
    };
    let repeated = match heads / kv_heads {
        1 => 0,
        _ => count(&[b, heads, t]).saturating_mul(d as u128 + dv as u128),
    };
    let scores_elems = count(&scores);
    // Scores, scaled, masked (and its fill) and probabilities, all alive
    // together at worst.
    let temps = repeated.saturating_add(scores_elems.saturating_mul(4));
    let flops = count(&[b, heads, s, t])
        .saturating_mul(2)
        .saturating_mul(d as u128 + dv as u128);
    let cost = Cost::elementwise(vec![b, heads, s, dv], dtype, SIMPLE)
        .with_scratch(bytes(temps, dtype))
        .with_work(
            flops
                .saturating_add(repeated)
                .saturating_add(scores_elems.saturating_mul(TRANSCENDENTAL + 6 * SIMPLE)),
        );
    Ok((dims, cost))
}

/// Sampling one token from `n` logits: f32 copies, softmax, the
/// probabilities as a `Vec` and, for top-k/top-p, a sorted index.
pub fn sample(n: usize) -> Cost {
    let n = n as u128;
    let log2 = (128 - n.leading_zeros()) as u128;
    Cost::view(Vec::new(), DType::U32)
        .with_scratch(n.saturating_mul(24))
        .with_work(n.saturating_mul(TRANSCENDENTAL + log2))
}
