//! Unit tests of the kernel budgets: what is charged, what is refused and
//! when (before candle allocates), with the shapes a hostile plugin would
//! pick.

use super::*;
use candle_core::DType;

fn ctx(tensor_bytes: u64, copy_out_bytes: u64) -> KernelCtx {
    KernelCtx::new(
        Device::Cpu,
        KernelLimits {
            tensor_bytes,
            copy_out_bytes,
            kernel_time: Duration::from_secs(60),
            kernel_work: u64::MAX,
            handles: u64::MAX,
            weight_bytes: u64::MAX,
        },
    )
}

#[test]
fn adopted_tensors_are_charged_until_released() {
    let mut k = ctx(1024, 1024);
    let t = k.zeros(&[16, 4], candle_core::DType::F32).unwrap();
    let res = k.adopt(t, true).unwrap();
    assert_eq!((res.charged, k.live_bytes()), (256, 256));
    let weights = Tensor::zeros((64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let shared = k.adopt(weights, false).unwrap();
    assert_eq!(
        (shared.charged, k.live_bytes()),
        (0, 256),
        "weights are not charged"
    );
    let big = Tensor::zeros((16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(k.adopt(big, true), Err(KernelError::Limit(_))));
    k.release(&res);
    assert_eq!(k.live_bytes(), 0);
}

#[test]
fn outputs_past_the_budget_are_refused_before_they_exist() {
    let mut k = ctx(16 * 1024, 1 << 20);
    let a = k.zeros(&[64, 32], candle_core::DType::F32).unwrap();
    let b = k.zeros(&[32, 64], candle_core::DType::F32).unwrap();
    // 64 x 64 f32 = 16 KiB, the whole budget: refused by the precheck.
    let one = k.zeros(&[1], candle_core::DType::F32).unwrap();
    let _held = k.adopt(one, true).unwrap();
    let err = k.matmul(&a, &b).unwrap_err();
    assert!(
        matches!(&err, KernelError::Limit(m) if m.contains("16384")),
        "{err}"
    );
    let err = k
        .zeros(&[1 << 20, 1 << 20], candle_core::DType::F32)
        .unwrap_err();
    assert!(matches!(err, KernelError::Limit(_)), "{err}");
    let err = k.zeros(&[u32::MAX, u32::MAX, u32::MAX], candle_core::DType::U8);
    assert!(matches!(err, Err(KernelError::Invalid(m)) if m.contains("overflows")));
}

#[test]
fn bad_shapes_are_invalid_input_named_by_kernel() {
    let mut k = ctx(1 << 20, 1 << 20);
    let a = k.zeros(&[2, 3], candle_core::DType::F32).unwrap();
    let err = k.matmul(&a, &a).unwrap_err().to_string();
    assert!(err.starts_with("matmul:"), "{err}");
    let v = k.zeros(&[3], candle_core::DType::F32).unwrap();
    let err = k.matmul(&v, &a).unwrap_err().to_string();
    assert!(err.contains("rank >= 2"), "{err}");
    let err = k.from_f32(vec![1.0; 5], &[2, 3]).unwrap_err().to_string();
    assert!(
        err.contains("5 elements") && err.contains("needs 6"),
        "{err}"
    );
    assert!(k
        .cat(&[], 0)
        .unwrap_err()
        .to_string()
        .contains("no tensors"));
}

#[test]
fn copy_out_is_bounded_per_call() {
    let mut k = ctx(1 << 20, 64);
    let t = k.from_f32(vec![1.0; 16], &[16]).unwrap();
    assert_eq!(k.to_f32(&t).unwrap().len(), 16);
    assert!(
        matches!(k.to_f32(&t), Err(KernelError::Limit(_))),
        "64 bytes per call"
    );
    k.begin_call();
    assert!(k.to_bytes(&t).is_ok(), "a new call has a new copy budget");
}

#[test]
fn kernel_time_is_bounded_per_call() {
    let mut k = KernelCtx::new(
        Device::Cpu,
        KernelLimits {
            tensor_bytes: 1 << 20,
            copy_out_bytes: 1 << 20,
            kernel_time: Duration::ZERO,
            kernel_work: u64::MAX,
            handles: u64::MAX,
            weight_bytes: u64::MAX,
        },
    );
    let err = k.arange(4).unwrap_err();
    assert!(
        matches!(&err, KernelError::Limit(m) if m.contains("used up")),
        "{err}"
    );
}

/// A context with `tensor_bytes` of budget, `mflop` per kernel and `handles` live handles.
pub(super) fn budget(tensor_bytes: u64, mflop: u64, handles: u64) -> KernelCtx {
    KernelCtx::new(
        Device::Cpu,
        KernelLimits {
            tensor_bytes,
            copy_out_bytes: 1 << 30,
            kernel_time: Duration::from_secs(60),
            kernel_work: mflop * 1_000_000,
            handles,
            weight_bytes: u64::MAX,
        },
    )
}

fn limit_msg<T: std::fmt::Debug>(r: Result<T, KernelError>) -> String {
    match r {
        Err(KernelError::Limit(m)) => m,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn matmul_is_charged_for_the_broadcast_batch_of_either_side() {
    // [1, 64, 1] x [256, 1, 64]: 16 KiB if the batch came from the left
    // only; the product is [256, 64, 64], 4 MiB.
    let mut k = budget(1 << 20, u64::MAX / 1_000_000, u64::MAX);
    let a = k.zeros(&[1, 64, 1], DType::F32).unwrap();
    let b = k.zeros(&[256, 1, 64], DType::F32).unwrap();
    let msg = limit_msg(k.matmul(&a, &b));
    assert!(
        msg.contains("[256, 64, 64]") && msg.contains("4194304") && msg.contains("tensor_mb"),
        "{msg}"
    );
    // and the left side copied to the full batch counts as a temporary
    let (cost, broadcasting) = cost::matmul(&a, &b).unwrap();
    assert!(broadcasting);
    assert_eq!(cost.scratch, 256 * 64 * 4, "lhs broadcast to [256, 64, 1]");
    // same shapes, fitting: runs
    let small = k.zeros(&[4, 64, 1], DType::F32).unwrap();
    let c = k.matmul(&small, &b.narrow(0, 0, 4).unwrap()).unwrap();
    assert_eq!(c.dims(), &[4, 64, 64]);
}

#[test]
fn every_kernel_refuses_its_result_before_allocating_it() {
    // 1 MiB budget, 896 KiB held: each kernel's 256 KiB result (plus any
    // temporaries) would pass it.
    let mut k = budget(1 << 20, u64::MAX / 1_000_000, u64::MAX);
    let held = k.zeros(&[160 * 1024], DType::F32).unwrap();
    let _held = k.adopt(held, true).unwrap();
    let x = k.zeros(&[1, 4, 128, 128], DType::F32).unwrap();
    let _x = k.adopt(x.clone(), true).unwrap();
    let w = k.zeros(&[128], DType::F32).unwrap();
    let half = k.zeros(&[128, 64], DType::F32).unwrap();
    let mask = k.zeros(&[128, 128], DType::U8).unwrap();
    let xt = x.transpose(2, 3).unwrap();
    let runs: Vec<(&str, Result<Tensor, KernelError>)> = vec![
        ("unary", k.unary(UnaryOp::Exp, &x)),
        ("affine", k.affine(&x, 2.0, 1.0)),
        ("clamp", k.clamp(&x, -1.0, 1.0)),
        ("softmax-last-dim", k.softmax_last_dim(&x)),
        ("rms-norm", k.rms_norm(&x, &w, 1e-5)),
        ("layer-norm", k.layer_norm(&x, &w, &w, 1e-5)),
        ("rope", k.rope(&x, &half, &half)),
        ("rope-interleaved", k.rope_interleaved(&x, &half, &half)),
        ("masked-fill", k.masked_fill(&x, &mask, 0.0)),
        ("reshape", k.reshape(&xt, &[4, 128, 128])),
        ("contiguous", k.contiguous(&xt)),
        ("to-dtype", k.to_dtype(&x, DType::F32)),
        ("binary", k.binary(BinaryOp::Add, &x, &w)),
    ];
    for (name, r) in runs {
        let msg = limit_msg(r);
        assert!(
            msg.starts_with(&format!("{name}: a result of shape")) && msg.contains("tensor_mb"),
            "{msg}"
        );
    }
}

#[test]
fn one_kernel_is_refused_when_its_work_passes_the_cap() {
    let mut k = budget(1 << 30, 100, u64::MAX);
    // 2 * 512^3 = 268 MFLOP against 100
    let a = k.zeros(&[512, 512], DType::F32).unwrap();
    let msg = limit_msg(k.matmul(&a, &a));
    assert!(
        msg.contains("269 MFLOP") && msg.contains("100 MFLOP") && msg.contains("kernel_work_mflop"),
        "{msg}"
    );
    // 2 * 256^3 = 34 MFLOP runs
    let b = k.zeros(&[256, 256], DType::F32).unwrap();
    assert!(k.matmul(&b, &b).is_ok());
    // linear counts its product the same way
    let msg = limit_msg(k.linear(&a, &a, None));
    assert!(msg.starts_with("linear:"), "{msg}");
    // the default follows the kernel-time budget: 1 MFLOP per ms
    assert_eq!(
        KernelLimits::work_for(Duration::from_millis(300)),
        300_000_000
    );
    assert_eq!(KernelLimits::work_for(Duration::MAX), u64::MAX);
}

#[test]
fn reads_of_uncharged_weights_count_as_work() {
    // A model weight is shared and costs the plugin no bytes...
    let mut k = budget(1 << 20, 1, u64::MAX);
    let weight = Tensor::zeros((1024, 1024), DType::F32, &Device::Cpu).unwrap();
    let res = k.adopt(weight.clone(), false).unwrap();
    assert_eq!((res.charged, k.live_bytes()), (0, 0));
    // ...but reading all of it is work: 1M elements against 1 MFLOP.
    let err = limit_msg(k.reduce(ReduceOp::Sum, &weight, 0, false));
    assert!(
        err.starts_with("reduce:") && err.contains("kernel_work_mflop"),
        "{err}"
    );
    let err = limit_msg(k.linear(&weight.narrow(0, 0, 2).unwrap(), &weight, None));
    assert!(err.contains("kernel_work_mflop"), "{err}");
}

#[test]
fn handles_are_capped_whatever_their_size() {
    let mut k = budget(1 << 20, 1000, 3);
    let empty = k.zeros(&[0], DType::F32).unwrap();
    let weight = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
    let a = k.adopt(empty.clone(), true).unwrap();
    let _b = k.adopt(weight, false).unwrap();
    let _s = k
        .sampler(SamplingSpec {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 1,
        })
        .unwrap();
    assert_eq!((k.live_handles(), k.live_bytes()), (3, 0));
    let msg = limit_msg(k.adopt(empty.clone(), true));
    assert!(
        msg.contains("3 live handles") && msg.contains("tensor_handles"),
        "{msg}"
    );
    let spec = SamplingSpec {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 1,
    };
    assert!(k.sampler(spec).is_err(), "samplers count too");
    k.release(&a);
    assert!(
        k.adopt(empty.clone(), true).is_ok(),
        "a dropped handle frees a slot"
    );
    k.release_sampler();
    assert!(k.sampler(spec).is_ok());
}

#[test]
fn shapes_that_overflow_are_refused_without_panicking() {
    let mut k = budget(1 << 20, 1000, u64::MAX);
    let one = k.zeros(&[1, 1, 1], DType::F32).unwrap();
    // u32::MAX^3 elements overflows usize: a limit, never a panic or a wrap
    let msg = limit_msg(k.broadcast_as(&one, &[u32::MAX, u32::MAX, u32::MAX]));
    assert!(msg.starts_with("broadcast-as:"), "{msg}");
    let err = k
        .reshape(&one, &[u32::MAX, u32::MAX, u32::MAX])
        .unwrap_err();
    assert!(
        matches!(&err, KernelError::Invalid(m) if m.contains("cannot reshape")),
        "{err}"
    );
    // empty rows, which candle's row-wise kernels would panic on
    let empty = k.zeros(&[3, 0], DType::F32).unwrap();
    for r in [
        k.reduce(ReduceOp::Max, &empty, 1, false),
        k.reduce(ReduceOp::Argmax, &empty, 1, true),
        k.softmax_last_dim(&empty),
        k.rms_norm(&empty, &empty, 1e-5),
    ] {
        assert!(matches!(r, Err(KernelError::Invalid(_))), "{r:?}");
    }
    assert!(k.reduce(ReduceOp::Sum, &empty, 1, false).is_ok());
    // sampling at a temperature takes a softmax over the logits
    let mut s = k
        .sampler(SamplingSpec {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 1,
        })
        .unwrap();
    let none = k.zeros(&[0], DType::F32).unwrap();
    assert!(matches!(
        k.sample(&mut s, &none, [0; 32]),
        Err(KernelError::Invalid(_))
    ));
}

/// Every unary op, on every integer dtype a plugin can make: candle has no
/// integer kernel for most of them (`todo!()` on CPU, which panicked the
/// node) and returns zeros for others (gelu, silu). Each is refused with
/// the op's name, or, where it is defined on integers, computed.
#[test]
fn integer_tensors_in_float_only_kernels_are_refused_not_a_panic() {
    use UnaryOp::*;
    let mut k = ctx(1 << 20, 1 << 20);
    let ops = [
        Exp, Log, Sqrt, Sqr, Cos, Sin, Neg, Recip, Abs, Tanh, Silu, Gelu, GeluErf, Relu, Round,
        Floor,
    ];
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let x = k.zeros(&[4], dtype).unwrap();
        for op in ops {
            let name = serde_json::to_value(op).unwrap();
            match k.unary(op, &x) {
                Err(KernelError::Invalid(m)) => assert!(
                    m.contains(name.as_str().unwrap()) && m.contains("float"),
                    "{op:?} on {dtype:?}: {m}"
                ),
                other => panic!("{op:?} on {dtype:?}: {other:?}"),
            }
        }
    }
    // Integer division by zero panics in candle's CPU kernel.
    let a = k.from_u32(vec![7, 8], &[2]).unwrap();
    let b = k.from_u32(vec![1, 0], &[2]).unwrap();
    let err = k.binary(BinaryOp::Div, &a, &b).unwrap_err();
    assert!(
        matches!(&err, KernelError::Invalid(m) if m.contains("division by zero")),
        "{err}"
    );
    let ok = k.from_u32(vec![2, 4], &[2]).unwrap();
    let q = k.binary(BinaryOp::Div, &a, &ok).unwrap();
    assert_eq!(q.to_vec1::<u32>().unwrap(), vec![3, 2]);
}

/// Whatever else candle panics on (here u32 overflow, which debug builds
/// check) comes back as the kernel's error, not as a panic through the
/// plugin call.
#[test]
fn a_panic_inside_a_kernel_is_an_error_naming_it() {
    let mut k = ctx(1 << 20, 1 << 20);
    let a = k.from_u32(vec![u32::MAX], &[1]).unwrap();
    match k.binary(BinaryOp::Add, &a, &a) {
        // Release builds wrap, as the CPU does.
        Ok(t) => assert_eq!(t.to_vec1::<u32>().unwrap(), vec![u32::MAX - 1]),
        Err(KernelError::Invalid(m)) => assert!(m.starts_with("binary:"), "{m}"),
        Err(other) => panic!("{other}"),
    }
}

/// A quantized `[out, in]` weight of small values.
fn qweight(
    out: usize,
    inp: usize,
    format: candle_core::quantized::GgmlDType,
) -> std::sync::Arc<candle_core::quantized::QTensor> {
    let w = Tensor::arange(0f32, (out * inp) as f32, &Device::Cpu)
        .and_then(|t| t.affine(1e-3, -0.5))
        .and_then(|t| t.reshape((out, inp)))
        .unwrap();
    std::sync::Arc::new(candle_core::quantized::QTensor::quantize(&w, format).unwrap())
}

#[test]
fn qlinear_multiplies_as_qmatmul_and_refuses_what_it_cannot_take() {
    use candle_core::quantized::GgmlDType;
    let mut k = ctx(1 << 24, 1 << 20);
    let w = qweight(8, 64, GgmlDType::Q8_0);
    let x = Tensor::ones((2, 3, 64), DType::F32, &Device::Cpu).unwrap();
    let y = k.qlinear(&x, &w).unwrap();
    assert_eq!(y.dims(), [2, 3, 8]);
    // Against the dequantized weight: close (the input is quantized to 8
    // bits per block too), not equal to nothing.
    let dense = x
        .matmul(
            &w.dequantize(&Device::Cpu)
                .unwrap()
                .t()
                .unwrap()
                .broadcast_left(2)
                .unwrap(),
        )
        .unwrap();
    let diff = (y - &dense)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 0.05, "{diff}");
    // A strided input is made contiguous, not refused.
    let xt = Tensor::ones((64, 3), DType::F32, &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    assert_eq!(k.qlinear(&xt, &w).unwrap().dims(), [3, 8]);

    let msg = |r: Result<Tensor, KernelError>| match r {
        Err(KernelError::Invalid(m)) => m,
        other => panic!("expected invalid, got {other:?}"),
    };
    let m = msg(k.qlinear(
        &Tensor::ones((3, 63), DType::F32, &Device::Cpu).unwrap(),
        &w,
    ));
    assert!(
        m.starts_with("qlinear:") && m.contains("63 features"),
        "{m}"
    );
    let m = msg(k.qlinear(&Tensor::ones(64, DType::F32, &Device::Cpu).unwrap(), &w));
    assert!(m.contains("rank 2"), "{m}");
    let m = msg(k.qlinear(
        &Tensor::ones((1, 64), DType::U32, &Device::Cpu).unwrap(),
        &w,
    ));
    assert!(m.contains("must be f32"), "{m}");
    let m = msg(k.qlinear(
        &Tensor::ones((1, 64), DType::F16, &Device::Cpu).unwrap(),
        &w,
    ));
    assert!(m.contains("must be f32"), "{m}");
}

#[test]
fn qlinear_is_held_to_the_tensor_budget_and_the_work_cap() {
    use candle_core::quantized::GgmlDType;
    let w = qweight(256, 256, GgmlDType::Q4K);
    let x = Tensor::ones((64, 256), DType::F32, &Device::Cpu).unwrap();
    // 64 x 256 f32 out is 64 KiB: refused under a 32 KiB budget.
    let m = limit_msg(budget(32 << 10, u64::MAX / 1_000_000, 100).qlinear(&x, &w));
    assert!(m.contains("qlinear") && m.contains("tensor_mb"), "{m}");
    // 2 * 64 * 256 * 256 FLOPs = 8.4 MFLOP: refused under 1 MFLOP.
    let m = limit_msg(budget(1 << 30, 1, 100).qlinear(&x, &w));
    assert!(
        m.contains("qlinear") && m.contains("kernel_work_mflop"),
        "{m}"
    );
    // A plain f32 matrix is multiplied dequantized: its copy is charged.
    let wf = qweight(256, 256, GgmlDType::F32);
    let m = limit_msg(budget(256 << 10, u64::MAX / 1_000_000, 100).qlinear(&x, &wf));
    assert!(m.contains("temporaries"), "{m}");
    assert!(budget(256 << 10, u64::MAX / 1_000_000, 100)
        .qlinear(&x, &w)
        .is_ok());
}

#[test]
fn weights_are_held_to_weights_mb_each_counted_once() {
    let mut k = budget(1 << 30, u64::MAX / 1_000_000, 100);
    k.limits.weight_bytes = 3 << 10;
    // 1 KiB each: two fit, the same one again is free, a third is refused.
    let w = || Tensor::zeros((256,), DType::F32, &Device::Cpu).unwrap();
    k.adopt_weight(w(), "h", "a").unwrap();
    k.adopt_weight(w(), "h", "b").unwrap();
    k.adopt_weight(w(), "h", "a").unwrap();
    let big = Tensor::zeros((512,), DType::F32, &Device::Cpu).unwrap();
    let m = limit_msg(k.adopt_weight(big, "h", "c"));
    assert!(
        m.contains("weights_mb") && m.contains("`c`") && m.contains("span"),
        "{m}"
    );
    // Quantized weights count their stored bytes.
    let q = qweight(32, 32, candle_core::quantized::GgmlDType::F32);
    let m = limit_msg(k.adopt_qweight(q, "h", "q").map(|_| ()));
    assert!(m.contains("weights_mb") && m.contains("`q`"), "{m}");
}
