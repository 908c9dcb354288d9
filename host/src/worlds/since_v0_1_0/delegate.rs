//! The 0.1.0 imports, each delegating to the 0.2.0 implementation on the
//! same view: arguments converted up, results and errors converted down.
//! Resources (tensors, samplers, weights, tokenizers) are the same host
//! types in both versions, so handles pass through unchanged.

use super::infernet::plugin::{config, kv, log, models, progress, tensor, types};
use super::Error;
use crate::kernels::{SamplerRes, TensorRes};
use crate::models::{TokenizerRes, WeightsRes};
use crate::worlds::caps::{ConfigView, KernelView, KvView, LogView, ModelView, ProgressView};
use crate::worlds::latest::infernet::plugin as v2;
use wasmtime::component::Resource;

type Out<T> = wasmtime::Result<Result<T, Error>>;
type Handle = Resource<TensorRes>;

/// A 0.2.0 result as a 0.1.0 one.
fn down<T>(r: wasmtime::Result<Result<T, crate::worlds::latest::Error>>) -> Out<T> {
    r.map(|r| r.map_err(Into::into))
}

use tensor::{BinaryOp as BinaryOp1, Dtype as Dtype1, ReduceOp as ReduceOp1, UnaryOp as UnaryOp1};
use v2::tensor::{
    BinaryOp as BinaryOp2, Dtype as Dtype2, ReduceOp as ReduceOp2, UnaryOp as UnaryOp2,
};

same_enum!(Dtype1 <=> Dtype2 { F32, F16, Bf16, F64, U8, U32, I64 });
same_enum!(BinaryOp1 <=> BinaryOp2 { Add, Sub, Mul, Div, Maximum, Minimum });
same_enum!(ReduceOp1 <=> ReduceOp2 { Sum, Mean, Max, Min, Argmax });
same_enum!(UnaryOp1 <=> UnaryOp2 {
    Exp, Log, Sqrt, Sqr, Cos, Sin, Neg, Recip, Abs, Tanh, Silu, Gelu, GeluErf, Relu, Round, Floor,
});

impl types::Host for LogView<'_> {}

impl log::Host for LogView<'_> {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        v2::log::Host::log(self, level.into(), message)
    }
}

impl progress::Host for ProgressView<'_> {
    fn emit_token(&mut self, text: String) -> wasmtime::Result<()> {
        v2::progress::Host::emit_token(self, text)
    }

    fn report(&mut self, done: u64, total: u64) -> wasmtime::Result<()> {
        v2::progress::Host::report(self, done, total)
    }

    fn cancelled(&mut self) -> wasmtime::Result<bool> {
        v2::progress::Host::cancelled(self)
    }
}

impl config::Host for ConfigView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        v2::config::Host::get(self, key)
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        v2::config::Host::keys(self)
    }

    fn secret(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        v2::config::Host::secret(self, name)
    }
}

impl kv::Host for KvView<'_> {
    fn get(&mut self, key: String) -> Out<Option<Vec<u8>>> {
        down(v2::kv::Host::get(self, key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Out<()> {
        down(v2::kv::Host::set(self, key, value))
    }

    fn delete(&mut self, key: String) -> Out<()> {
        down(v2::kv::Host::delete(self, key))
    }

    fn list_keys(&mut self, prefix: String) -> Out<Vec<String>> {
        down(v2::kv::Host::list_keys(self, prefix))
    }
}

impl models::Host for ModelView<'_> {
    fn open(&mut self, model_id: String) -> Out<Resource<WeightsRes>> {
        down(v2::models::Host::open(self, model_id))
    }
}

impl models::HostWeights for ModelView<'_> {
    fn id(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<String> {
        v2::models::HostWeights::id(self, w)
    }

    fn config(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<String> {
        v2::models::HostWeights::config(self, w)
    }

    fn names(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<Vec<String>> {
        v2::models::HostWeights::names(self, w)
    }

    fn get(&mut self, w: Resource<WeightsRes>, name: String) -> Out<Handle> {
        down(v2::models::HostWeights::get(self, w, name))
    }

    fn tokenizer(&mut self, w: Resource<WeightsRes>) -> Out<Resource<TokenizerRes>> {
        down(v2::models::HostWeights::tokenizer(self, w))
    }

    fn drop(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<()> {
        v2::models::HostWeights::drop(self, w)
    }
}

impl models::HostTokenizer for ModelView<'_> {
    fn encode(&mut self, t: Resource<TokenizerRes>, text: String, special: bool) -> Out<Vec<u32>> {
        down(v2::models::HostTokenizer::encode(self, t, text, special))
    }

    fn decode(&mut self, t: Resource<TokenizerRes>, ids: Vec<u32>, skip: bool) -> Out<String> {
        down(v2::models::HostTokenizer::decode(self, t, ids, skip))
    }

    fn token_to_id(
        &mut self,
        t: Resource<TokenizerRes>,
        token: String,
    ) -> wasmtime::Result<Option<u32>> {
        v2::models::HostTokenizer::token_to_id(self, t, token)
    }

    fn vocab_size(&mut self, t: Resource<TokenizerRes>) -> wasmtime::Result<u32> {
        v2::models::HostTokenizer::vocab_size(self, t)
    }

    fn drop(&mut self, t: Resource<TokenizerRes>) -> wasmtime::Result<()> {
        v2::models::HostTokenizer::drop(self, t)
    }
}

impl tensor::HostTensor for KernelView<'_> {
    fn from_f32(&mut self, data: Vec<f32>, shape: Vec<u32>) -> Out<Handle> {
        down(v2::tensor::HostTensor::from_f32(self, data, shape))
    }

    fn from_u32(&mut self, data: Vec<u32>, shape: Vec<u32>) -> Out<Handle> {
        down(v2::tensor::HostTensor::from_u32(self, data, shape))
    }

    fn from_bytes(&mut self, data: Vec<u8>, dtype: Dtype1, shape: Vec<u32>) -> Out<Handle> {
        down(v2::tensor::HostTensor::from_bytes(
            self,
            data,
            dtype.into(),
            shape,
        ))
    }

    fn arange(&mut self, end: u32) -> Out<Handle> {
        down(v2::tensor::HostTensor::arange(self, end))
    }

    fn zeros(&mut self, shape: Vec<u32>, dtype: Dtype1) -> Out<Handle> {
        down(v2::tensor::HostTensor::zeros(self, shape, dtype.into()))
    }

    fn shape(&mut self, h: Handle) -> wasmtime::Result<Vec<u32>> {
        v2::tensor::HostTensor::shape(self, h)
    }

    fn dtype(&mut self, h: Handle) -> wasmtime::Result<Dtype1> {
        v2::tensor::HostTensor::dtype(self, h).map(Into::into)
    }

    fn to_f32(&mut self, h: Handle) -> Out<Vec<f32>> {
        down(v2::tensor::HostTensor::to_f32(self, h))
    }

    fn to_u32(&mut self, h: Handle) -> Out<Vec<u32>> {
        down(v2::tensor::HostTensor::to_u32(self, h))
    }

    fn to_bytes(&mut self, h: Handle) -> Out<Vec<u8>> {
        down(v2::tensor::HostTensor::to_bytes(self, h))
    }

    fn drop(&mut self, h: Handle) -> wasmtime::Result<()> {
        v2::tensor::HostTensor::drop(self, h)
    }
}

impl tensor::HostSampler for KernelView<'_> {
    fn new(&mut self, c: tensor::Sampling) -> wasmtime::Result<Resource<SamplerRes>> {
        let c = v2::tensor::Sampling {
            temperature: c.temperature,
            top_k: c.top_k,
            top_p: c.top_p,
            seed: c.seed,
        };
        v2::tensor::HostSampler::new(self, c)
    }

    fn sample(&mut self, s: Resource<SamplerRes>, logits: Handle) -> Out<u32> {
        down(v2::tensor::HostSampler::sample(self, s, logits))
    }

    fn drop(&mut self, s: Resource<SamplerRes>) -> wasmtime::Result<()> {
        v2::tensor::HostSampler::drop(self, s)
    }
}

impl tensor::Host for KernelView<'_> {
    fn matmul(&mut self, a: Handle, b: Handle) -> Out<Handle> {
        down(v2::tensor::Host::matmul(self, a, b))
    }

    fn linear(&mut self, x: Handle, w: Handle, bias: Option<Handle>) -> Out<Handle> {
        down(v2::tensor::Host::linear(self, x, w, bias))
    }

    fn binary(&mut self, op: BinaryOp1, a: Handle, b: Handle) -> Out<Handle> {
        down(v2::tensor::Host::binary(self, op.into(), a, b))
    }

    fn unary(&mut self, op: UnaryOp1, x: Handle) -> Out<Handle> {
        down(v2::tensor::Host::unary(self, op.into(), x))
    }

    fn affine(&mut self, x: Handle, mul: f64, add: f64) -> Out<Handle> {
        down(v2::tensor::Host::affine(self, x, mul, add))
    }

    fn clamp(&mut self, x: Handle, lo: f64, hi: f64) -> Out<Handle> {
        down(v2::tensor::Host::clamp(self, x, lo, hi))
    }

    fn softmax_last_dim(&mut self, x: Handle) -> Out<Handle> {
        down(v2::tensor::Host::softmax_last_dim(self, x))
    }

    fn rms_norm(&mut self, x: Handle, w: Handle, eps: f32) -> Out<Handle> {
        down(v2::tensor::Host::rms_norm(self, x, w, eps))
    }

    fn layer_norm(&mut self, x: Handle, w: Handle, b: Handle, eps: f32) -> Out<Handle> {
        down(v2::tensor::Host::layer_norm(self, x, w, b, eps))
    }

    fn rope(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        down(v2::tensor::Host::rope(self, x, cos, sin))
    }

    fn rope_interleaved(&mut self, x: Handle, cos: Handle, sin: Handle) -> Out<Handle> {
        down(v2::tensor::Host::rope_interleaved(self, x, cos, sin))
    }

    fn embedding(&mut self, ids: Handle, table: Handle) -> Out<Handle> {
        down(v2::tensor::Host::embedding(self, ids, table))
    }

    fn index_select(&mut self, x: Handle, ids: Handle, dim: u32) -> Out<Handle> {
        down(v2::tensor::Host::index_select(self, x, ids, dim))
    }

    fn narrow(&mut self, x: Handle, dim: u32, start: u32, len: u32) -> Out<Handle> {
        down(v2::tensor::Host::narrow(self, x, dim, start, len))
    }

    fn cat(&mut self, xs: Vec<Handle>, dim: u32) -> Out<Handle> {
        down(v2::tensor::Host::cat(self, xs, dim))
    }

    fn reshape(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        down(v2::tensor::Host::reshape(self, x, shape))
    }

    fn transpose(&mut self, x: Handle, d0: u32, d1: u32) -> Out<Handle> {
        down(v2::tensor::Host::transpose(self, x, d0, d1))
    }

    fn contiguous(&mut self, x: Handle) -> Out<Handle> {
        down(v2::tensor::Host::contiguous(self, x))
    }

    fn broadcast_as(&mut self, x: Handle, shape: Vec<u32>) -> Out<Handle> {
        down(v2::tensor::Host::broadcast_as(self, x, shape))
    }

    fn reduce(&mut self, op: ReduceOp1, x: Handle, dim: u32, keepdim: bool) -> Out<Handle> {
        down(v2::tensor::Host::reduce(self, op.into(), x, dim, keepdim))
    }

    fn to_dtype(&mut self, x: Handle, dtype: Dtype1) -> Out<Handle> {
        down(v2::tensor::Host::to_dtype(self, x, dtype.into()))
    }

    fn masked_fill(&mut self, x: Handle, mask: Handle, on_true: f32) -> Out<Handle> {
        down(v2::tensor::Host::masked_fill(self, x, mask, on_true))
    }

    fn causal_mask(&mut self, n: u32) -> Out<Handle> {
        down(v2::tensor::Host::causal_mask(self, n))
    }
}
