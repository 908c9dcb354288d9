//! `infernet:plugin/tensor@0.2.0` on the host kernels: handles are looked
//! up in the store's table (a bad handle traps), WIT enums become kernel
//! enums, kernel errors become error values, and results are adopted into
//! the table against the tensor budget and the handle cap (samplers count
//! as handles too; their constructor, with no error value, traps at the cap).

use super::infernet::plugin::tensor::{self as wit, BinaryOp, Dtype, ReduceOp, Sampling, UnaryOp};
use super::Out;
use crate::kernels::{self, KernelError, SamplerRes, SamplingSpec, TensorRes};
use crate::runtime::limits::LimitTrap;
use crate::worlds::caps::KernelView;
use candle_core::{DType, Tensor};
use wasmtime::component::Resource;

type Handle = Resource<TensorRes>;

impl KernelView<'_> {
    fn get(&self, h: &Handle) -> wasmtime::Result<Tensor> {
        Ok(self.table.get(h)?.tensor.clone())
    }

    /// Adopts a kernel's result into the table, charged to the budget.
    fn put(&mut self, result: Result<Tensor, KernelError>) -> Out<Handle> {
        let adopted = result.and_then(|t| self.ctx.adopt(t, true));
        match adopted {
            Ok(res) => Ok(Ok(self.table.push(res)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }
}

/// WIT dtype → candle dtype.
pub(crate) fn dtype(d: Dtype) -> DType {
    match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I64 => DType::I64,
    }
}

/// candle dtype → WIT dtype (`f32` for dtypes the contract does not name;
/// no kernel produces one).
fn wit_dtype(d: DType) -> Dtype {
    match d {
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::Bf16,
        DType::F64 => Dtype::F64,
        DType::U8 => Dtype::U8,
        DType::U32 => Dtype::U32,
        DType::I64 => Dtype::I64,
        _ => Dtype::F32,
    }
}

fn unary(op: UnaryOp) -> kernels::UnaryOp {
    use kernels::UnaryOp as K;
    match op {
        UnaryOp::Exp => K::Exp,
        UnaryOp::Log => K::Log,
        UnaryOp::Sqrt => K::Sqrt,
        UnaryOp::Sqr => K::Sqr,
        UnaryOp::Cos => K::Cos,
        UnaryOp::Sin => K::Sin,
        UnaryOp::Neg => K::Neg,
        UnaryOp::Recip => K::Recip,
        UnaryOp::Abs => K::Abs,
        UnaryOp::Tanh => K::Tanh,
        UnaryOp::Silu => K::Silu,
        UnaryOp::Gelu => K::Gelu,
        UnaryOp::GeluErf => K::GeluErf,
        UnaryOp::Relu => K::Relu,
        UnaryOp::Round => K::Round,
        UnaryOp::Floor => K::Floor,
    }
}

fn binary(op: BinaryOp) -> kernels::BinaryOp {
    use kernels::BinaryOp as K;
    match op {
        BinaryOp::Add => K::Add,
        BinaryOp::Sub => K::Sub,
        BinaryOp::Mul => K::Mul,
        BinaryOp::Div => K::Div,
        BinaryOp::Maximum => K::Maximum,
        BinaryOp::Minimum => K::Minimum,
    }
}

fn reduce(op: ReduceOp) -> kernels::ReduceOp {
    use kernels::ReduceOp as K;
    match op {
        ReduceOp::Sum => K::Sum,
        ReduceOp::Mean => K::Mean,
        ReduceOp::Max => K::Max,
        ReduceOp::Min => K::Min,
        ReduceOp::Argmax => K::Argmax,
    }
}

impl wit::HostTensor for KernelView<'_> {
    fn from_f32(&mut self, data: Vec<f32>, shape: Vec<u32>) -> Out<Handle> {
        let r = self.ctx.from_f32(data, &shape);
        self.put(r)
    }

    fn from_u32(&mut self, data: Vec<u32>, shape: Vec<u32>) -> Out<Handle> {
        let r = self.ctx.from_u32(data, &shape);
        self.put(r)
    }

    fn from_bytes(&mut self, data: Vec<u8>, dt: Dtype, shape: Vec<u32>) -> Out<Handle> {
        let r = self.ctx.from_bytes(&data, dtype(dt), &shape);
        self.put(r)
    }

    fn arange(&mut self, end: u32) -> Out<Handle> {
        let r = self.ctx.arange(end);
        self.put(r)
    }

    fn zeros(&mut self, shape: Vec<u32>, dt: Dtype) -> Out<Handle> {
        let r = self.ctx.zeros(&shape, dtype(dt));
        self.put(r)
    }

    fn shape(&mut self, h: Handle) -> wasmtime::Result<Vec<u32>> {
        Ok(self.get(&h)?.dims().iter().map(|&d| d as u32).collect())
    }

    fn dtype(&mut self, h: Handle) -> wasmtime::Result<Dtype> {
        Ok(wit_dtype(self.get(&h)?.dtype()))
    }

    fn to_f32(&mut self, h: Handle) -> Out<Vec<f32>> {
        let t = self.get(&h)?;
        Ok(self.ctx.to_f32(&t).map_err(Into::into))
    }

    fn to_u32(&mut self, h: Handle) -> Out<Vec<u32>> {
        let t = self.get(&h)?;
        Ok(self.ctx.to_u32(&t).map_err(Into::into))
    }

    fn to_bytes(&mut self, h: Handle) -> Out<Vec<u8>> {
        let t = self.get(&h)?;
        Ok(self.ctx.to_bytes(&t).map_err(Into::into))
    }

    fn drop(&mut self, h: Handle) -> wasmtime::Result<()> {
        let res = self.table.delete(h)?;
        self.ctx.release(&res);
        Ok(())
    }
}

impl wit::HostSampler for KernelView<'_> {
    /// A sampler is a handle like a tensor: past `tensor_handles` the
    /// constructor, which has no error value, traps with a [`LimitTrap`].
    fn new(&mut self, c: Sampling) -> wasmtime::Result<Resource<SamplerRes>> {
        let spec = SamplingSpec {
            temperature: c.temperature,
            top_k: c.top_k,
            top_p: c.top_p,
            seed: c.seed,
        };
        let sampler = self
            .ctx
            .sampler(spec)
            .map_err(|e| LimitTrap(e.to_string()))?;
        Ok(self.table.push(sampler)?)
    }

    fn sample(&mut self, s: Resource<SamplerRes>, logits: Handle) -> Out<u32> {
        let logits = self.get(&logits)?;
        let sampler = self.table.get_mut(&s)?;
        Ok(self.ctx.sample(sampler, &logits).map_err(Into::into))
    }

    fn drop(&mut self, s: Resource<SamplerRes>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        self.ctx.release_sampler();
        Ok(())
    }
}

impl wit::Host for KernelView<'_> {
    fn matmul(&mut self, a: Handle, b: Handle) -> Out<Handle> {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        let r = self.ctx.matmul(&a, &b);
        self.put(r)
    }

    fn linear(&mut self, x: Handle, w: Handle, bias: Option<Handle>) -> Out<Handle> {
        let (x, w) = (self.get(&x)?, self.get(&w)?);
        let bias = bias.map(|b| self.get(&b)).transpose()?;
        let r = self.ctx.linear(&x, &w, bias.as_ref());
        self.put(r)
    }

    fn binary(&mut self, op: BinaryOp, a: Handle, b: Handle) -> Out<Handle> {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        let r = self.ctx.binary(binary(op), &a, &b);
        self.put(r)
    }

    fn unary(&mut self, op: UnaryOp, x: Handle) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.unary(unary(op), &x);
        self.put(r)
    }

    fn affine(&mut self, x: Handle, mul: f64, add: f64) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.affine(&x, mul, add);
        self.put(r)
    }

    fn clamp(&mut self, x: Handle, lo: f64, hi: f64) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.clamp(&x, lo, hi);
        self.put(r)
    }

    fn softmax_last_dim(&mut self, x: Handle) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.softmax_last_dim(&x);
        self.put(r)
    }

    fn rms_norm(&mut self, x: Handle, w: Handle, eps: f32) -> Out<Handle> {
        let (x, w) = (self.get(&x)?, self.get(&w)?);
        let r = self.ctx.rms_norm(&x, &w, eps);
        self.put(r)
    }

    fn layer_norm(&mut self, x: Handle, w: Handle, b: Handle, eps: f32) -> Out<Handle> {
        let (x, w, b) = (self.get(&x)?, self.get(&w)?, self.get(&b)?);
        let r = self.ctx.layer_norm(&x, &w, &b, eps);
        self.put(r)
    }

    fn rope(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        let (x, cos, sin) = (self.get(&x)?, self.get(&cos)?, self.get(&sin)?);
        let r = self.ctx.rope(&x, &cos, &sin);
        self.put(r)
    }

    fn rope_interleaved(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        let (x, cos, sin) = (self.get(&x)?, self.get(&cos)?, self.get(&sin)?);
        let r = self.ctx.rope_interleaved(&x, &cos, &sin);
        self.put(r)
    }

    fn embedding(&mut self, ids: Handle, table: Handle) -> Out<Handle> {
        let (ids, table) = (self.get(&ids)?, self.get(&table)?);
        let r = self.ctx.embedding(&ids, &table);
        self.put(r)
    }

    fn index_select(&mut self, x: Handle, ids: Handle, dim: u32) -> Out<Handle> {
        let (x, ids) = (self.get(&x)?, self.get(&ids)?);
        let r = self.ctx.index_select(&x, &ids, dim);
        self.put(r)
    }

    fn narrow(&mut self, x: Handle, dim: u32, start: u32, len: u32) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.narrow(&x, dim, start, len);
        self.put(r)
    }

    fn cat(&mut self, xs: Vec<Handle>, dim: u32) -> Out<Handle> {
        let ts = xs
            .iter()
            .map(|h| self.get(h))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let r = self.ctx.cat(&ts, dim);
        self.put(r)
    }

    fn reshape(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.reshape(&x, &shape);
        self.put(r)
    }

    fn transpose(&mut self, x: Handle, d0: u32, d1: u32) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.transpose(&x, d0, d1);
        self.put(r)
    }

    fn contiguous(&mut self, x: Handle) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.contiguous(&x);
        self.put(r)
    }

    fn broadcast_as(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.broadcast_as(&x, &shape);
        self.put(r)
    }

    fn reduce(&mut self, op: ReduceOp, x: Handle, dim: u32, keepdim: bool) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.reduce(reduce(op), &x, dim, keepdim);
        self.put(r)
    }

    fn to_dtype(&mut self, x: Handle, dt: Dtype) -> Out<Handle> {
        let x = self.get(&x)?;
        let r = self.ctx.to_dtype(&x, dtype(dt));
        self.put(r)
    }

    fn masked_fill(&mut self, x: Handle, mask: Handle, on_true: f32) -> Out<Handle> {
        let (x, mask) = (self.get(&x)?, self.get(&mask)?);
        let r = self.ctx.masked_fill(&x, &mask, on_true);
        self.put(r)
    }

    fn causal_mask(&mut self, n: u32) -> Out<Handle> {
        let r = self.ctx.causal_mask(n);
        self.put(r)
    }
}
