//! Every kernel call as a value: [`Op`] names a kernel and its non-tensor
//! parameters, [`Op::run`] applies it to input tensors. The `tensor`
//! interface runs plugin calls through it and a referee re-executes one
//! traced call through it, so "the op a provider committed to" and "the op
//! the referee recomputed" are the same code. In a trace a call is written
//! as its [`Op::name`] and [`Op::params`] (JSON of the value: f32/f64
//! parameters round-trip exactly).

use super::trace::dtype_name;
use super::{BinaryOp, KernelCtx, KernelError, ReduceOp, UnaryOp};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// One kernel call's kind and parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)]
pub enum Op {
    /// Values from the guest (not re-executable: their digest is the check).
    FromData {
        dtype: String,
        shape: Vec<u32>,
    },
    Arange {
        end: u32,
    },
    Zeros {
        dtype: String,
        shape: Vec<u32>,
    },
    CausalMask {
        n: u32,
    },
    Matmul,
    Linear {
        bias: bool,
    },
    /// `x · wᵀ` with a quantized weight (its second input is a `qweight`).
    Qlinear,
    Binary {
        f: BinaryOp,
    },
    Unary {
        f: UnaryOp,
    },
    Affine {
        mul: f64,
        add: f64,
    },
    Clamp {
        lo: f64,
        hi: f64,
    },
    SoftmaxLastDim,
    RmsNorm {
        eps: f32,
    },
    LayerNorm {
        eps: f32,
    },
    Rope,
    RopeInterleaved,
    Embedding,
    IndexSelect {
        dim: u32,
    },
    Narrow {
        dim: u32,
        start: u32,
        len: u32,
    },
    Cat {
        dim: u32,
    },
    Reshape {
        shape: Vec<u32>,
    },
    Transpose {
        d0: u32,
        d1: u32,
    },
    Contiguous,
    BroadcastAs {
        shape: Vec<u32>,
    },
    Reduce {
        f: ReduceOp,
        dim: u32,
        keepdim: bool,
    },
    ToDtype {
        dtype: String,
    },
    MaskedFill {
        value: f32,
    },
    /// Scaled dot-product attention (q, k, v, then the mask if `mask`).
    Attention {
        scale: f64,
        mask: bool,
    },
}

/// A dtype by the name traces use.
pub fn parse_dtype(name: &str) -> Result<DType, KernelError> {
    Ok(match name {
        "u8" => DType::U8,
        "u32" => DType::U32,
        "i64" => DType::I64,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        "f64" => DType::F64,
        other => return Err(KernelError::Invalid(format!("unknown dtype `{other}`"))),
    })
}

impl Op {
    /// The kernel's name in a trace.
    pub fn name(&self) -> &'static str {
        match self {
            Op::FromData { .. } => "from-data",
            Op::Arange { .. } => "arange",
            Op::Zeros { .. } => "zeros",
            Op::CausalMask { .. } => "causal-mask",
            Op::Matmul => "matmul",
            Op::Linear { .. } => "linear",
            Op::Qlinear => "qlinear",
            Op::Binary { .. } => "binary",
            Op::Unary { .. } => "unary",
            Op::Affine { .. } => "affine",
            Op::Clamp { .. } => "clamp",
            Op::SoftmaxLastDim => "softmax-last-dim",
            Op::RmsNorm { .. } => "rms-norm",
            Op::LayerNorm { .. } => "layer-norm",
            Op::Rope => "rope",
            Op::RopeInterleaved => "rope-interleaved",
            Op::Embedding => "embedding",
            Op::IndexSelect { .. } => "index-select",
            Op::Narrow { .. } => "narrow",
            Op::Cat { .. } => "cat",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Contiguous => "contiguous",
            Op::BroadcastAs { .. } => "broadcast-as",
            Op::Reduce { .. } => "reduce",
            Op::ToDtype { .. } => "to-dtype",
            Op::MaskedFill { .. } => "masked-fill",
            Op::Attention { .. } => "attention",
        }
    }

    /// The call as a trace's `params` (JSON of the value).
    pub fn params(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a traced call back: `params` must decode to an op named `name`.
    pub fn parse(name: &str, params: &str) -> Result<Op, KernelError> {
        let op: Op = serde_json::from_str(params)
            .map_err(|e| KernelError::Invalid(format!("traced call `{name}`: {e}")))?;
        if op.name() != name {
            return Err(KernelError::Invalid(format!(
                "traced call names `{name}` but its parameters are those of `{}`",
                op.name()
            )));
        }
        // One call, one spelling: a leaf's hash covers these bytes.
        if op.params() != params {
            return Err(KernelError::Invalid(format!(
                "traced call `{name}`: parameters `{params}` are not in canonical form `{}`",
                op.params()
            )));
        }
        Ok(op)
    }

    /// How many tensor inputs the call takes (`None`: any number, `cat`).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::FromData { .. } | Op::Arange { .. } | Op::Zeros { .. } | Op::CausalMask { .. } => 0,
            Op::Matmul
            | Op::Qlinear
            | Op::Binary { .. }
            | Op::RmsNorm { .. }
            | Op::Embedding
            | Op::IndexSelect { .. }
            | Op::MaskedFill { .. } => 2,
            Op::Rope | Op::RopeInterleaved | Op::LayerNorm { .. } => 3,
            Op::Linear { bias } => 2 + usize::from(*bias),
            Op::Attention { mask, .. } => 3 + usize::from(*mask),
            Op::Cat { .. } => return None,
            _ => 1,
        })
    }

    /// Whether the output is a bit-exact function of the inputs on any
    /// machine: rearrangements, selections, exact conversions, max/min,
    /// and element-wise IEEE operations that are correctly rounded (add,
    /// subtract, multiply, divide, square, square root, reciprocal, a
    /// multiply-then-add, clamping, rounding, sign). Not exact: anything
    /// that sums (matmul, norms, softmax, reductions), whose last bits
    /// depend on summation order and SIMD path, and transcendental
    /// functions (exp, log, sin, cos, tanh, SiLU, GELU), whose last bits
    /// depend on the maths library.
    pub fn is_exact(&self) -> bool {
        use super::UnaryOp as U;
        match self {
            Op::Arange { .. }
            | Op::Zeros { .. }
            | Op::CausalMask { .. }
            | Op::Embedding
            | Op::IndexSelect { .. }
            | Op::Narrow { .. }
            | Op::Cat { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Contiguous
            | Op::BroadcastAs { .. }
            | Op::MaskedFill { .. }
            | Op::Binary { .. }
            | Op::Affine { .. }
            | Op::Clamp { .. }
            | Op::ToDtype { .. } => true,
            Op::Unary { f } => matches!(
                f,
                U::Neg | U::Abs | U::Sqr | U::Sqrt | U::Recip | U::Relu | U::Round | U::Floor
            ),
            Op::Reduce { f, .. } => matches!(f, ReduceOp::Max | ReduceOp::Min | ReduceOp::Argmax),
            _ => false,
        }
    }

    /// Whether a trace commits to this call's output values (a content
    /// digest) rather than to the call alone (a derived digest). Values
    /// are committed where the model's work is — every matmul and linear
    /// layer — and where the guest supplies them; between two such points
    /// the calls are cheap to redo, so a referee rebuilds their outputs
    /// from the committed ones. Hashing fewer values is what keeps tracing
    /// within a few percent of an untraced run.
    pub fn commits_values(&self) -> bool {
        matches!(
            self,
            Op::Matmul
                | Op::Linear { .. }
                | Op::Qlinear
                | Op::Attention { .. }
                | Op::FromData { .. }
        )
    }

    /// Runs the call on `inputs` under `ctx`'s budgets.
    pub fn run(&self, ctx: &mut KernelCtx, inputs: &[Tensor]) -> Result<Tensor, KernelError> {
        if let Some(n) = self.arity() {
            if inputs.len() != n {
                return Err(KernelError::Invalid(format!(
                    "{} takes {n} tensor inputs, got {}",
                    self.name(),
                    inputs.len()
                )));
            }
        }
        let arg = |i: usize| &inputs[i];
        match self {
            Op::FromData { .. } => Err(KernelError::Invalid(
                "from-data is the guest's own values: checked by its digest, not re-executed"
                    .into(),
            )),
            Op::Arange { end } => ctx.arange(*end),
            Op::Zeros { dtype, shape } => ctx.zeros(shape, parse_dtype(dtype)?),
            Op::CausalMask { n } => ctx.causal_mask(*n),
            Op::Matmul => ctx.matmul(arg(0), arg(1)),
            Op::Linear { bias } => ctx.linear(arg(0), arg(1), bias.then(|| arg(2))),
            Op::Qlinear => Err(KernelError::Invalid(
                "qlinear takes a quantized weight, not a tensor: a referee judges it by replaying the job"
                    .into(),
            )),
            Op::Binary { f } => ctx.binary(*f, arg(0), arg(1)),
            Op::Unary { f } => ctx.unary(*f, arg(0)),
            Op::Affine { mul, add } => ctx.affine(arg(0), *mul, *add),
            Op::Clamp { lo, hi } => ctx.clamp(arg(0), *lo, *hi),
            Op::SoftmaxLastDim => ctx.softmax_last_dim(arg(0)),
            Op::RmsNorm { eps } => ctx.rms_norm(arg(0), arg(1), *eps),
            Op::LayerNorm { eps } => ctx.layer_norm(arg(0), arg(1), arg(2), *eps),
            Op::Rope => ctx.rope(arg(0), arg(1), arg(2)),
            Op::RopeInterleaved => ctx.rope_interleaved(arg(0), arg(1), arg(2)),
            Op::Embedding => ctx.embedding(arg(0), arg(1)),
            Op::IndexSelect { dim } => ctx.index_select(arg(0), arg(1), *dim),
            Op::Narrow { dim, start, len } => ctx.narrow(arg(0), *dim, *start, *len),
            Op::Cat { dim } => {
                if inputs.is_empty() {
                    return Err(KernelError::Invalid("cat of no tensors".into()));
                }
                ctx.cat(inputs, *dim)
            }
            Op::Reshape { shape } => ctx.reshape(arg(0), shape),
            Op::Transpose { d0, d1 } => ctx.transpose(arg(0), *d0, *d1),
            Op::Contiguous => ctx.contiguous(arg(0)),
            Op::BroadcastAs { shape } => ctx.broadcast_as(arg(0), shape),
            Op::Reduce { f, dim, keepdim } => ctx.reduce(*f, arg(0), *dim, *keepdim),
            Op::ToDtype { dtype } => ctx.to_dtype(arg(0), parse_dtype(dtype)?),
            Op::MaskedFill { value } => ctx.masked_fill(arg(0), arg(1), *value),
            Op::Attention { scale, mask } => {
                ctx.attention(arg(0), arg(1), arg(2), mask.then(|| arg(3)), *scale)
            }
        }
    }
}

/// [`Op::FromData`] for values of `dtype` and `shape`.
pub fn from_data(dtype: DType, shape: &[u32]) -> Op {
    Op::FromData {
        dtype: dtype_name(dtype).into(),
        shape: shape.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_exactly_and_names_are_checked() {
        let ops = [
            Op::Affine {
                mul: 0.1 + 0.2,
                add: -1e-300,
            },
            Op::RmsNorm { eps: 1e-5 },
            Op::Reduce {
                f: ReduceOp::Argmax,
                dim: 1,
                keepdim: true,
            },
            Op::Binary { f: BinaryOp::Div },
            Op::Linear { bias: true },
            Op::Attention {
                scale: 1.0 / 8f64.sqrt(),
                mask: true,
            },
        ];
        for op in ops {
            assert_eq!(Op::parse(op.name(), &op.params()).unwrap(), op);
        }
        let e = Op::parse("matmul", &Op::Rope.params()).unwrap_err();
        assert!(
            e.to_string().contains("parameters are those of `rope`"),
            "{e}"
        );
        assert!(Op::parse("matmul", r#"{"op":"matmul","extra":1}"#).is_err());
    }
}
