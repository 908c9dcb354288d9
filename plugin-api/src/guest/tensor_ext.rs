//! Method-call forms of the host kernels on [`Tensor`], so model code reads
//! like candle: `x.linear(&w, None)?.silu()?`.

use crate::tensor::{self as k, BinaryOp, DType, QMatrix, ReduceOp, Tensor, UnaryOp};
use crate::Result;

fn dims(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}

impl Tensor {
    /// A tensor from f32 values and a shape given as `usize`s.
    pub fn new_f32(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_f32(data, &dims(shape))
    }
    /// A tensor from u32 values and a shape given as `usize`s.
    pub fn new_u32(data: &[u32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_u32(data, &dims(shape))
    }
    /// Dimensions as `usize`.
    pub fn dims(&self) -> Vec<usize> {
        self.shape().into_iter().map(|d| d as usize).collect()
    }
    /// Size of dimension `dim`.
    pub fn dim(&self, dim: usize) -> usize {
        self.dims().get(dim).copied().unwrap_or(0)
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.dims().iter().product()
    }

    /// Matrix product (batched, broadcasting).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        k::matmul(self, rhs)
    }
    /// `self @ w^T + bias`.
    pub fn linear(&self, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        k::linear(self, w, bias)
    }
    /// Scaled dot-product attention of queries `self` (`[b, heads, s, d]`)
    /// over `keys` and values `v` (`[b, kv_heads, t, d | dv]`), in one
    /// host call (contract 0.2.4): `softmax(self · kᵀ · scale, mask) · v`,
    /// grouped-query heads included, bit for bit the separate calls
    /// candle-transformers' decoders make. `mask` (u8, nonzero = cut)
    /// broadcasts to `[b, heads, s, t]`; `None` attends to every key.
    pub fn attention(
        &self,
        keys: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f64,
    ) -> Result<Tensor> {
        k::attention(self, keys, v, mask, scale)
    }
    /// `self @ w^T` with a quantized `w` (a GGUF weight; `self` f32).
    pub fn qlinear(&self, w: &QMatrix) -> Result<Tensor> {
        k::qlinear(self, w)
    }
    /// Broadcasting `self + rhs`.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        k::binary(BinaryOp::Add, self, rhs)
    }
    /// Broadcasting `self - rhs`.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        k::binary(BinaryOp::Sub, self, rhs)
    }
    /// Broadcasting `self * rhs`.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        k::binary(BinaryOp::Mul, self, rhs)
    }
    /// Broadcasting `self / rhs`.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        k::binary(BinaryOp::Div, self, rhs)
    }
    /// Broadcasting element-wise maximum.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        k::binary(BinaryOp::Maximum, self, rhs)
    }
    /// `self * mul + add`.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        k::affine(self, mul, add)
    }
    /// `self / scalar`.
    pub fn div_scalar(&self, scalar: f64) -> Result<Tensor> {
        k::affine(self, 1.0 / scalar, 0.0)
    }
    /// Any element-wise function.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        k::unary(op, self)
    }
    /// `x * sigmoid(x)`.
    pub fn silu(&self) -> Result<Tensor> {
        k::unary(UnaryOp::Silu, self)
    }
    /// GELU, tanh approximation.
    pub fn gelu(&self) -> Result<Tensor> {
        k::unary(UnaryOp::Gelu, self)
    }
    /// GELU, exact.
    pub fn gelu_erf(&self) -> Result<Tensor> {
        k::unary(UnaryOp::GeluErf, self)
    }
    /// `max(x, 0)`.
    pub fn relu(&self) -> Result<Tensor> {
        k::unary(UnaryOp::Relu, self)
    }
    /// Element-wise square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        k::unary(UnaryOp::Sqrt, self)
    }
    /// Element-wise cosine.
    pub fn cos(&self) -> Result<Tensor> {
        k::unary(UnaryOp::Cos, self)
    }
    /// Element-wise sine.
    pub fn sin(&self) -> Result<Tensor> {
        k::unary(UnaryOp::Sin, self)
    }
    /// Clamps into `[lo, hi]`.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        k::clamp(self, lo, hi)
    }
    /// Softmax over the last dimension.
    pub fn softmax_last_dim(&self) -> Result<Tensor> {
        k::softmax_last_dim(self)
    }
    /// RMS norm over the last dimension.
    pub fn rms_norm(&self, weight: &Tensor, eps: f32) -> Result<Tensor> {
        k::rms_norm(self, weight, eps)
    }
    /// Layer norm over the last dimension.
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        k::layer_norm(self, weight, bias, eps)
    }
    /// Rotary embedding (halves), `self` is `[b, h, t, d]`.
    pub fn rope(&self, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        k::rope(self, cos, sin)
    }
    /// Rotary embedding on interleaved pairs (`2i`, `2i+1`), as GGUF llama
    /// files need; `self` is `[b, h, t, d]`.
    pub fn rope_interleaved(&self, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        k::rope_interleaved(self, cos, sin)
    }
    /// `len` entries of `dim` from `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        k::narrow(self, dim as u32, start as u32, len as u32)
    }
    /// New shape, same data.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        k::reshape(self, &dims(shape))
    }
    /// Swaps two dimensions.
    pub fn transpose(&self, dim0: usize, dim1: usize) -> Result<Tensor> {
        k::transpose(self, dim0 as u32, dim1 as u32)
    }
    /// Transposes the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        let rank = self.shape().len();
        if rank < 2 {
            return Err(crate::Error::invalid(
                "t() needs a tensor of rank 2 or more",
            ));
        }
        self.transpose(rank - 2, rank - 1)
    }
    /// A contiguous copy (no-op when already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        k::contiguous(self)
    }
    /// Broadcasts to `shape`.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        k::broadcast_as(self, &dims(shape))
    }
    /// Sum over `dim`, keeping it.
    pub fn sum_keepdim(&self, dim: usize) -> Result<Tensor> {
        k::reduce(ReduceOp::Sum, self, dim as u32, true)
    }
    /// Mean over `dim`, keeping it.
    pub fn mean_keepdim(&self, dim: usize) -> Result<Tensor> {
        k::reduce(ReduceOp::Mean, self, dim as u32, true)
    }
    /// Index of the maximum over `dim` (u32), dropping it.
    pub fn argmax(&self, dim: usize) -> Result<Tensor> {
        k::reduce(ReduceOp::Argmax, self, dim as u32, false)
    }
    /// Converts the element type.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        k::to_dtype(self, dtype)
    }
    /// Where `mask != 0` put `value`.
    pub fn masked_fill(&self, mask: &Tensor, value: f32) -> Result<Tensor> {
        k::masked_fill(self, mask, value)
    }
    /// Rows of `self` (a `[vocab, hidden]` table) for `ids`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        k::embedding(ids, self)
    }
    /// Concatenates tensors along `dim`.
    pub fn cat(xs: &[&Tensor], dim: usize) -> Result<Tensor> {
        k::cat(xs, dim as u32)
    }
    /// The single value of a one-element tensor, as f32.
    pub fn to_scalar_f32(&self) -> Result<f32> {
        let v = self.to_f32()?;
        v.first()
            .copied()
            .ok_or_else(|| crate::Error::invalid("empty tensor has no scalar"))
    }
}
