//! `infernet:plugin/tensor@0.2.4` on the host kernels: handles are looked
//! up in the store's table (a bad handle traps), each call becomes a
//! kernel [`Op`] (WIT enums become kernel enums) run on the inputs and
//! recorded in the job's trace, kernel errors become error values, and
//! results are adopted into the table against the tensor budget and the
//! handle cap (samplers count as handles too; their constructor, with no
//! error value, traps at the cap).

use super::infernet::plugin::tensor::{self as wit, BinaryOp, Dtype, ReduceOp, Sampling, UnaryOp};
use super::Out;
use crate::kernels::call::{self, Op};
use crate::kernels::{self, KernelError, QMatrixRes, SamplerRes, SamplingSpec, TensorRes};
use crate::runtime::limits::LimitTrap;
use crate::worlds::caps::KernelView;
use candle_core::{DType, Tensor};
use wasmtime::component::Resource;

type Handle = Resource<TensorRes>;

impl KernelView<'_> {
    fn get(&self, h: &Handle) -> wasmtime::Result<Tensor> {
        Ok(self.table.get(h)?.tensor.clone())
    }

    /// Adopts the result of `op` on inputs with `digests` into the table,
    /// charged to the budget, and records the call.
    fn put(
        &mut self,
        op: &Op,
        digests: Vec<kernels::trace::Digest>,
        result: Result<Tensor, KernelError>,
    ) -> Out<Handle> {
        let adopted = result.and_then(|t| self.ctx.adopt_call(t, op, digests));
        match adopted {
            Ok(res) => Ok(Ok(self.table.push(res)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// Runs `op` on the tensors behind `args`.
    fn apply(&mut self, op: Op, args: &[&Handle]) -> Out<Handle> {
        let mut tensors = Vec::with_capacity(args.len());
        let mut digests = Vec::with_capacity(args.len());
        for h in args {
            let res = self.table.get(*h)?;
            tensors.push(res.tensor.clone());
            digests.push(res.digest);
        }
        let r = op.run(self.ctx, &tensors);
        self.put(&op, digests, r)
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
        self.put(&call::from_data(DType::F32, &shape), vec![], r)
    }

    fn from_u32(&mut self, data: Vec<u32>, shape: Vec<u32>) -> Out<Handle> {
        let r = self.ctx.from_u32(data, &shape);
        self.put(&call::from_data(DType::U32, &shape), vec![], r)
    }

    fn from_bytes(&mut self, data: Vec<u8>, dt: Dtype, shape: Vec<u32>) -> Out<Handle> {
        let r = self.ctx.from_bytes(&data, dtype(dt), &shape);
        self.put(&call::from_data(dtype(dt), &shape), vec![], r)
    }

    fn arange(&mut self, end: u32) -> Out<Handle> {
        self.apply(Op::Arange { end }, &[])
    }

    fn zeros(&mut self, shape: Vec<u32>, dt: Dtype) -> Out<Handle> {
        let dtype = kernels::trace::dtype_name(dtype(dt)).into();
        self.apply(Op::Zeros { dtype, shape }, &[])
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

impl wit::HostQmatrix for KernelView<'_> {
    fn shape(&mut self, q: Resource<QMatrixRes>) -> wasmtime::Result<Vec<u32>> {
        let dims = self.table.get(&q)?.q.shape().dims().to_vec();
        Ok(dims.iter().map(|&d| d as u32).collect())
    }

    fn format(&mut self, q: Resource<QMatrixRes>) -> wasmtime::Result<String> {
        let q = &self.table.get(&q)?.q;
        Ok(kernels::qformat_name(q.dtype()).into())
    }

    fn drop(&mut self, q: Resource<QMatrixRes>) -> wasmtime::Result<()> {
        self.table.delete(q)?;
        self.ctx.release_handle();
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
        let res = self.table.get(&logits)?;
        let (logits, digest) = (res.tensor.clone(), res.digest);
        let sampler = self.table.get_mut(&s)?;
        Ok(self
            .ctx
            .sample(sampler, &logits, digest)
            .map_err(Into::into))
    }

    fn drop(&mut self, s: Resource<SamplerRes>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        self.ctx.release_sampler();
        Ok(())
    }
}

impl wit::Host for KernelView<'_> {
    fn matmul(&mut self, a: Handle, b: Handle) -> Out<Handle> {
        self.apply(Op::Matmul, &[&a, &b])
    }

    fn linear(&mut self, x: Handle, w: Handle, bias: Option<Handle>) -> Out<Handle> {
        let op = Op::Linear {
            bias: bias.is_some(),
        };
        match &bias {
            Some(b) => self.apply(op, &[&x, &w, b]),
            None => self.apply(op, &[&x, &w]),
        }
    }

    fn qlinear(&mut self, x: Handle, w: Resource<QMatrixRes>) -> Out<Handle> {
        let res = self.table.get(&x)?;
        let (x, x_digest) = (res.tensor.clone(), res.digest);
        let res = self.table.get(&w)?;
        let (w, w_digest) = (res.q.clone(), res.digest);
        let r = self.ctx.qlinear(&x, &w);
        self.put(&Op::Qlinear, vec![x_digest, w_digest], r)
    }

    fn attention(
        &mut self,
        q: Handle,
        k: Handle,
        v: Handle,
        mask: Option<Handle>,
        scale: f64,
    ) -> Out<Handle> {
        let op = Op::Attention {
            scale,
            mask: mask.is_some(),
        };
        match &mask {
            Some(m) => self.apply(op, &[&q, &k, &v, m]),
            None => self.apply(op, &[&q, &k, &v]),
        }
    }

    fn binary(&mut self, op: BinaryOp, a: Handle, b: Handle) -> Out<Handle> {
        self.apply(Op::Binary { f: binary(op) }, &[&a, &b])
    }

    fn unary(&mut self, op: UnaryOp, x: Handle) -> Out<Handle> {
        self.apply(Op::Unary { f: unary(op) }, &[&x])
    }

    fn affine(&mut self, x: Handle, mul: f64, add: f64) -> Out<Handle> {
        self.apply(Op::Affine { mul, add }, &[&x])
    }

    fn clamp(&mut self, x: Handle, lo: f64, hi: f64) -> Out<Handle> {
        self.apply(Op::Clamp { lo, hi }, &[&x])
    }

    fn softmax_last_dim(&mut self, x: Handle) -> Out<Handle> {
        self.apply(Op::SoftmaxLastDim, &[&x])
    }

    fn rms_norm(&mut self, x: Handle, w: Handle, eps: f32) -> Out<Handle> {
        self.apply(Op::RmsNorm { eps }, &[&x, &w])
    }

    fn layer_norm(&mut self, x: Handle, w: Handle, b: Handle, eps: f32) -> Out<Handle> {
        self.apply(Op::LayerNorm { eps }, &[&x, &w, &b])
    }

    fn rope(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        self.apply(Op::Rope, &[&x, &cos, &sin])
    }

    fn rope_interleaved(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        self.apply(Op::RopeInterleaved, &[&x, &cos, &sin])
    }

    fn embedding(&mut self, ids: Handle, table: Handle) -> Out<Handle> {
        self.apply(Op::Embedding, &[&ids, &table])
    }

    fn index_select(&mut self, x: Handle, ids: Handle, dim: u32) -> Out<Handle> {
        self.apply(Op::IndexSelect { dim }, &[&x, &ids])
    }

    fn narrow(&mut self, x: Handle, dim: u32, start: u32, len: u32) -> Out<Handle> {
        self.apply(Op::Narrow { dim, start, len }, &[&x])
    }

    fn cat(&mut self, xs: Vec<Handle>, dim: u32) -> Out<Handle> {
        let args: Vec<&Handle> = xs.iter().collect();
        self.apply(Op::Cat { dim }, &args)
    }

    fn reshape(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        self.apply(Op::Reshape { shape }, &[&x])
    }

    fn transpose(&mut self, x: Handle, d0: u32, d1: u32) -> Out<Handle> {
        self.apply(Op::Transpose { d0, d1 }, &[&x])
    }

    fn contiguous(&mut self, x: Handle) -> Out<Handle> {
        self.apply(Op::Contiguous, &[&x])
    }

    fn broadcast_as(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        self.apply(Op::BroadcastAs { shape }, &[&x])
    }

    fn reduce(&mut self, op: ReduceOp, x: Handle, dim: u32, keepdim: bool) -> Out<Handle> {
        let f = reduce(op);
        self.apply(Op::Reduce { f, dim, keepdim }, &[&x])
    }

    fn to_dtype(&mut self, x: Handle, dt: Dtype) -> Out<Handle> {
        let dtype = kernels::trace::dtype_name(dtype(dt)).into();
        self.apply(Op::ToDtype { dtype }, &[&x])
    }

    fn masked_fill(&mut self, x: Handle, mask: Handle, on_true: f32) -> Out<Handle> {
        self.apply(Op::MaskedFill { value: on_true }, &[&x, &mask])
    }

    fn causal_mask(&mut self, n: u32) -> Out<Handle> {
        self.apply(Op::CausalMask { n }, &[])
    }
}
