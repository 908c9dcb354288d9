//! The referee's judgement of one traced kernel call: re-execute it on the
//! committed inputs and compare each party's revealed output with the
//! result.
//!
//! Exact ops (rearrangements, exact conversions, selections, max/min) must
//! match bit for bit on any machine. Arithmetic ops (matmul, norms,
//! softmax, element-wise math) may differ in their last bits between
//! honest machines (another summation order or SIMD path); they are
//! compared by their normalised max error, `max |a − r| / max |r|`, against
//! [`REL_TOLERANCE`] (1e-4). Honest f32 noise is around 1e-7 to 1e-6 of
//! the largest value (a dot product of K terms in another order: about
//! sqrt(K) ulps), also after the referee rebuilds inputs through a few
//! derived calls on its own machine; a change that moves a model's output
//! is orders of magnitude larger (`docs/ARCHITECTURE.md`, "Kernel traces").

use crate::kernels::call::Op;
use crate::kernels::trace::{token_digest, Digest, Leaf, Revealed};
use crate::kernels::{KernelCtx, KernelLimits, SamplingSpec};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The largest normalised max error an arithmetic op's output may show
/// against the referee's re-execution and still count as honest.
pub const REL_TOLERANCE: f64 = 1e-4;

/// Why the referee could not judge.
#[derive(Debug, thiserror::Error)]
pub enum RefereeError {
    /// The call cannot be re-executed as described.
    #[error("cannot re-execute traced call {op}: {reason}")]
    Call {
        /// Op.
        op: String,
        /// Why.
        reason: String,
    },
}

/// What the referee found about one party's output of the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "finding", rename_all = "kebab-case")]
pub enum Finding {
    /// Bit-identical to the re-execution.
    Identical,
    /// Differs only in the last bits of an arithmetic op.
    WithinTolerance {
        /// Normalised max error.
        error: f64,
    },
    /// Differs beyond what honest hardware does.
    Deviates {
        /// Normalised max error.
        error: f64,
    },
    /// Differs where the bits must match (a call with a derived digest, a
    /// sampled token, another shape or dtype, a NaN where the referee has
    /// a number), or is not the call the plugin makes there.
    Differs,
    /// The party did not reveal the values its leaf commits to.
    NotRevealed,
    /// The revealed values do not hash to the leaf's output digest.
    BadReveal,
}

impl Finding {
    /// Whether the party computed the call honestly.
    pub fn honest(&self) -> bool {
        matches!(self, Finding::Identical | Finding::WithinTolerance { .. })
    }

    /// Whether two findings say the same (errors may differ in their last
    /// digits between the referee's machine and a checker's).
    pub fn same_kind(&self, other: &Finding) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// Limits for re-executing one op: generous (the op was run by the parties
/// under their own budgets), but finite.
pub(super) fn referee_ctx(device: &Device) -> KernelCtx {
    let kernel_time = Duration::from_secs(60);
    KernelCtx::new(
        device.clone(),
        KernelLimits {
            tensor_bytes: 8 << 30,
            copy_out_bytes: 8 << 30,
            kernel_time,
            kernel_work: u64::MAX,
            handles: 1 << 20,
            weight_bytes: u64::MAX,
        },
    )
}

/// The referee's output of `leaf` on `inputs`: a tensor, or a sampled token.
#[derive(Debug)]
pub enum Reference {
    /// A kernel's output.
    Tensor(Tensor),
    /// A sampled token.
    Token(u32),
    /// A call judged by its output digest alone (from a replay: a sampled
    /// token, a weight, values the guest supplied).
    Exact(Digest),
}

impl Reference {
    /// Its digest, as a leaf's output would be.
    pub fn digest(&self) -> Result<Digest, RefereeError> {
        match self {
            Reference::Tensor(t) => {
                crate::kernels::trace::tensor_digest(t).map_err(|e| RefereeError::Call {
                    op: "digest".into(),
                    reason: e.to_string(),
                })
            }
            Reference::Token(t) => Ok(token_digest(*t)),
            Reference::Exact(d) => Ok(*d),
        }
    }
}

/// Re-executes `leaf` on `inputs` (in the leaf's input order).
pub fn reexecute(
    leaf: &Leaf,
    inputs: &[Tensor],
    device: &Device,
) -> Result<Reference, RefereeError> {
    let err = |reason: String| RefereeError::Call {
        op: leaf.op.clone(),
        reason,
    };
    let mut ctx = referee_ctx(device);
    if leaf.op == "sample" {
        let [logits] = inputs else {
            return Err(err("a sample takes one input".into()));
        };
        return sample(&leaf.params, logits, &mut ctx)
            .map(Reference::Token)
            .map_err(err);
    }
    if leaf.op == "weight" {
        return Err(err(
            "a weight is checked by its name and the weights hash".into()
        ));
    }
    let op = Op::parse(&leaf.op, &leaf.params).map_err(|e| err(e.to_string()))?;
    if !op.commits_values() {
        // Its honest output digest is the call's own hash.
        return Ok(Reference::Exact(leaf.derived_digest()));
    }
    op.run(&mut ctx, inputs)
        .map(Reference::Tensor)
        .map_err(|e| err(e.to_string()))
}

/// A sample leaf's draw again: the sampler is rebuilt from its spec and
/// advanced by its earlier draws (each draw consumes the same randomness,
/// one uniform variate, whatever the logits) before drawing on `logits`.
fn sample(params: &str, logits: &Tensor, ctx: &mut KernelCtx) -> Result<u32, String> {
    let field = |name: &str| -> Result<&str, String> {
        params
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| format!("sample parameters lack `{name}`"))
    };
    let num = |name: &str| -> Result<f64, String> {
        field(name)?
            .parse::<f64>()
            .map_err(|e| format!("`{name}`: {e}"))
    };
    let int = |name: &str| -> Result<u64, String> {
        field(name)?
            .parse::<u64>()
            .map_err(|e| format!("`{name}`: {e}"))
    };
    let spec = SamplingSpec {
        temperature: num("temperature")?,
        top_k: u32::try_from(int("top_k")?).map_err(|e| e.to_string())?,
        top_p: num("top_p")?,
        seed: int("seed")?,
    };
    if spec.trace_params() + &format!(" draw={}", int("draw")?) != params {
        return Err(format!(
            "sample parameters `{params}` are not in canonical form"
        ));
    }
    let draws = int("draw")?;
    if draws > 1 << 20 {
        return Err(format!(
            "{draws} earlier draws is past what a referee replays"
        ));
    }
    let mut sampler = ctx.sampler(spec).map_err(|e| e.to_string())?;
    for _ in 0..draws {
        ctx.sample(&mut sampler, logits, [0; 32])
            .map_err(|e| e.to_string())?;
    }
    ctx.sample(&mut sampler, logits, [0; 32])
        .map_err(|e| e.to_string())
}

/// Judges one party's revealed output of `leaf` against the referee's.
pub fn judge(leaf: &Leaf, reference: &Reference, revealed: Option<&Revealed>) -> Finding {
    let Ok(want) = reference.digest() else {
        return Finding::Differs;
    };
    if leaf.output == want {
        return Finding::Identical;
    }
    let (Reference::Tensor(r), Ok(op)) = (reference, Op::parse(&leaf.op, &leaf.params)) else {
        // A token, or a call that is not an arithmetic op: exact only.
        return Finding::Differs;
    };
    let Some(revealed) = revealed else {
        return Finding::NotRevealed;
    };
    if revealed.digest() != leaf.output {
        return Finding::BadReveal;
    }
    let same_shape = revealed
        .dims
        .iter()
        .map(|&d| d as usize)
        .eq(r.dims().iter().copied())
        && revealed.dtype == crate::kernels::trace::dtype_name(r.dtype());
    if op.is_exact() || !same_shape {
        return Finding::Differs;
    }
    match normalised_error(r, revealed) {
        Some(e) if e <= REL_TOLERANCE => Finding::WithinTolerance { error: e },
        Some(e) => Finding::Deviates { error: e },
        None => Finding::Differs,
    }
}

/// `max |a − r| / max |r|` over all values (as f64); `None` when the
/// values cannot be read or one side has a NaN or infinity the other
/// does not have at the same place.
pub fn normalised_error(reference: &Tensor, revealed: &Revealed) -> Option<f64> {
    let a = revealed.to_tensor(reference.device()).ok()?;
    let flat = |t: &Tensor| -> Option<Vec<f64>> {
        t.to_dtype(DType::F64)
            .ok()?
            .flatten_all()
            .ok()?
            .to_vec1::<f64>()
            .ok()
    };
    let (a, r) = (flat(&a)?, flat(reference)?);
    let mut scale = 0f64;
    let mut diff = 0f64;
    for (x, y) in a.iter().zip(&r) {
        if x.is_finite() != y.is_finite() || (x.is_nan() != y.is_nan()) {
            return None;
        }
        if !y.is_finite() {
            if x != y && !(x.is_nan() && y.is_nan()) {
                return None;
            }
            continue;
        }
        scale = scale.max(y.abs());
        diff = diff.max((x - y).abs());
    }
    Some(if scale == 0.0 {
        if diff == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        diff / scale
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::trace::tensor_digest;

    fn leaf(op: &Op, inputs: &[Tensor], out: &Tensor) -> Leaf {
        Leaf {
            op: op.name().into(),
            params: op.params(),
            inputs: inputs.iter().map(|t| tensor_digest(t).unwrap()).collect(),
            dtype: "f32".into(),
            dims: out.dims().iter().map(|&d| d as u64).collect(),
            output: tensor_digest(out).unwrap(),
        }
    }

    #[test]
    fn honest_noise_passes_and_a_perturbation_does_not() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 64., &dev)
            .unwrap()
            .reshape((8, 8))
            .unwrap();
        let b = (a.clone() * 0.25).unwrap();
        let honest = a.matmul(&b).unwrap();
        let op = Op::Matmul;
        let reference = reexecute(
            &leaf(&op, &[a.clone(), b.clone()], &honest),
            &[a.clone(), b.clone()],
            &dev,
        )
        .unwrap();
        // The same bits: identical.
        let l = leaf(&op, &[a.clone(), b.clone()], &honest);
        assert_eq!(judge(&l, &reference, None), Finding::Identical);
        // Another summation order's last bits: within tolerance.
        let noisy = (honest.clone() * (1.0 + 1e-7)).unwrap();
        let l = leaf(&op, &[a.clone(), b.clone()], &noisy);
        let f = judge(&l, &reference, Some(&Revealed::of(&noisy).unwrap()));
        assert!(matches!(f, Finding::WithinTolerance { .. }), "{f:?}");
        // A 1% change in one value: deviates.
        let mut v = honest.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[5] *= 1.01;
        let cheat = Tensor::from_vec(v, (8, 8), &dev).unwrap();
        let l = leaf(&op, &[a.clone(), b.clone()], &cheat);
        let f = judge(&l, &reference, Some(&Revealed::of(&cheat).unwrap()));
        assert!(matches!(f, Finding::Deviates { .. }), "{f:?}");
        assert!(!f.honest());
        // Values that do not hash to the leaf, or none at all.
        assert_eq!(
            judge(&l, &reference, Some(&Revealed::of(&noisy).unwrap())),
            Finding::BadReveal
        );
        assert_eq!(judge(&l, &reference, None), Finding::NotRevealed);
    }

    #[test]
    fn exact_ops_must_match_bit_for_bit() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let op = Op::Transpose { d0: 0, d1: 1 };
        let out = x.t().unwrap().contiguous().unwrap();
        let noisy = (out.clone() * (1.0 + 1e-7)).unwrap();
        let l = leaf(&op, std::slice::from_ref(&x), &noisy);
        let r = reexecute(&l, &[x], &dev).unwrap();
        let f = judge(&l, &r, Some(&Revealed::of(&noisy).unwrap()));
        assert_eq!(f, Finding::Differs);
    }

    #[test]
    fn a_sampled_draw_replays() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[0.1f32, 2.0, 0.3, 1.5, 0.0], &dev).unwrap();
        let spec = SamplingSpec {
            temperature: 0.8,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
        };
        let mut ctx = referee_ctx(&dev);
        let mut s = ctx.sampler(spec).unwrap();
        let draws: Vec<u32> = (0..6)
            .map(|_| ctx.sample(&mut s, &logits, [0; 32]).unwrap())
            .collect();
        for (i, tok) in draws.iter().enumerate() {
            let l = Leaf {
                op: "sample".into(),
                params: format!("{} draw={i}", spec.trace_params()),
                inputs: vec![tensor_digest(&logits).unwrap()],
                dtype: "token".into(),
                dims: vec![],
                output: token_digest(*tok),
            };
            let r = reexecute(&l, std::slice::from_ref(&logits), &dev).unwrap();
            assert_eq!(judge(&l, &r, None), Finding::Identical, "draw {i}");
        }
    }
}
