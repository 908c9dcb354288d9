//! Unit tests of the fused `attention` kernel (contract 0.2.4): bit for bit
//! the separate calls a decoder makes, every operand a plugin could get
//! wrong refused by name, and its temporaries held to the tensor budget
//! before anything is allocated. Also `cat`'s contiguous result.

use super::*;
use candle_core::DType;

fn ctx(tensor_bytes: u64) -> KernelCtx {
    super::tests::budget(tensor_bytes, u64::MAX / 1_000_000, u64::MAX)
}

/// Deterministic values in about [-2, 2], distinct enough that a wrong head
/// or position shows.
fn values(k: &mut KernelCtx, shape: &[u32], seed: u32) -> Tensor {
    let n: u32 = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let x = i
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97));
            (x % 4001) as f32 / 1000.0 - 2.0
        })
        .collect();
    k.from_f32(data, shape).unwrap()
}

/// The attention as a plugin computed it before 0.2.4: one kernel per step.
fn unfused(
    k: &mut KernelCtx,
    q: &Tensor,
    keys: &Tensor,
    vals: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Tensor {
    let repeat = |k: &mut KernelCtx, x: &Tensor, n_rep: usize| -> Tensor {
        if n_rep == 1 {
            return x.clone();
        }
        let d = x.dims().to_vec();
        let copies = vec![x.clone(); n_rep];
        let cat = k.cat(&copies, 2).unwrap();
        let shape = [d[0], d[1] * n_rep, d[2], d[3]].map(|v| v as u32);
        k.reshape(&cat, &shape).unwrap()
    };
    let n_rep = q.dims()[1] / keys.dims()[1];
    let keys = repeat(k, keys, n_rep);
    let vals = repeat(k, vals, n_rep);
    let kt = k.transpose(&keys, 2, 3).unwrap();
    let att = k.matmul(q, &kt).unwrap();
    let att = k.affine(&att, scale, 0.0).unwrap();
    let att = match mask {
        Some(m) => {
            let m = k.broadcast_as(m, &att.dims().iter().map(|&d| d as u32).collect::<Vec<_>>());
            k.masked_fill(&att, &m.unwrap(), f32::NEG_INFINITY).unwrap()
        }
        None => att,
    };
    let att = k.softmax_last_dim(&att).unwrap();
    k.matmul(&att, &vals).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn attention_is_bit_identical_to_the_separate_calls() {
    let mut k = ctx(1 << 30);
    // (heads, kv heads, query positions, key positions, width): a prompt
    // with its causal mask, decode steps over a cache, grouped-query
    // attention (3 and 1 query heads per kv head), an odd width.
    for (case, (h, kvh, s, t, d)) in [
        (3, 1, 5, 5, 8),
        (9, 3, 1, 17, 64),
        (4, 4, 1, 1, 16),
        (6, 2, 7, 7, 33),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = case as u32 * 3;
        let q = values(&mut k, &[1, h, s, d], seed);
        let keys = values(&mut k, &[1, kvh, t, d], seed + 1);
        let vals = values(&mut k, &[1, kvh, t, d], seed + 2);
        let mask = (s > 1).then(|| k.causal_mask(s).unwrap());
        let scale = 1.0 / f64::from(d).sqrt();
        let fused = k.attention(&q, &keys, &vals, mask.as_ref(), scale).unwrap();
        let reference = unfused(&mut k, &q, &keys, &vals, mask.as_ref(), scale);
        assert_eq!(fused.dims(), &[1, h as usize, s as usize, d as usize]);
        assert!(fused.is_contiguous());
        assert_eq!(bits(&fused), bits(&reference), "case {case}");
        // and a wrong head mapping would show: head 0 differs from head 1's
        if kvh > 1 {
            let first = fused.narrow(1, 0, 1).unwrap();
            let other = fused.narrow(1, (h / kvh) as usize, 1).unwrap();
            assert_ne!(bits(&first), bits(&other));
        }
        // The kernel as a trace names it re-runs to the same bits.
        let op = call::Op::Attention {
            scale,
            mask: mask.is_some(),
        };
        let mut inputs = vec![q, keys, vals];
        inputs.extend(mask);
        let replayed = op.run(&mut k, &inputs).unwrap();
        assert_eq!(bits(&replayed), bits(&fused), "case {case} replayed");
    }
}

#[test]
fn attention_refuses_operands_that_do_not_fit_by_name() {
    let mut k = ctx(1 << 30);
    let q = values(&mut k, &[1, 4, 2, 8], 1);
    let kv = values(&mut k, &[1, 2, 3, 8], 2);
    let kv3 = values(&mut k, &[1, 3, 3, 8], 3);
    let narrow = values(&mut k, &[1, 2, 3, 4], 4);
    let flat = values(&mut k, &[4, 2, 8], 5);
    let f64s = k.to_dtype(&kv, DType::F64).unwrap();
    let ids = k.to_dtype(&kv, DType::U32).unwrap();
    let good_mask = k.causal_mask(3).unwrap().narrow(0, 0, 2).unwrap();
    let float_mask = k.zeros(&[2, 3], DType::F32).unwrap();
    let wide_mask = k.zeros(&[2, 5], DType::U8).unwrap();
    let cases: Vec<(&str, Result<Tensor, KernelError>)> = vec![
        ("rank 4", k.attention(&flat, &kv, &kv, None, 1.0)),
        ("not a multiple", k.attention(&q, &kv3, &kv3, None, 1.0)),
        ("do not fit", k.attention(&q, &narrow, &kv, None, 1.0)),
        ("do not fit", k.attention(&q, &kv, &kv3, None, 1.0)),
        ("one float dtype", k.attention(&q, &f64s, &f64s, None, 1.0)),
        ("one float dtype", k.attention(&q, &ids, &ids, None, 1.0)),
        (
            "u8, u32 or i64",
            k.attention(&q, &kv, &kv, Some(&float_mask), 1.0),
        ),
        (
            "does not broadcast",
            k.attention(&q, &kv, &kv, Some(&wide_mask), 1.0),
        ),
    ];
    for (want, r) in cases {
        match r {
            Err(KernelError::Invalid(m)) => {
                assert!(m.contains("attention") && m.contains(want), "{want}: {m}")
            }
            other => panic!("{want}: expected a refusal, got {other:?}"),
        }
    }
    let ok = k.attention(&q, &kv, &kv, Some(&good_mask), 1.0).unwrap();
    assert_eq!(ok.dims(), &[1, 4, 2, 8]);
}

#[test]
fn attention_is_refused_before_its_scores_exist() {
    // 8 heads x 4096 x 4096 f32 scores alone are 512 MiB; the operands
    // are 2 MiB each. A 64 MiB budget refuses the call up front.
    let mut k = ctx(64 << 20);
    let q = k.zeros(&[1, 8, 4096, 16], DType::F32).unwrap();
    let kv = k.zeros(&[1, 1, 4096, 16], DType::F32).unwrap();
    match k.attention(&q, &kv, &kv, None, 1.0) {
        Err(KernelError::Limit(m)) => {
            assert!(
                m.starts_with("attention:") && m.contains("tensor_mb"),
                "{m}"
            )
        }
        other => panic!("expected the budget to refuse it, got {other:?}"),
    }
    // and its work is charged: two products of 8 x 4096 x 4096 x 16
    let (_, cost) = cost::attention(&q, &kv, &kv, None).unwrap();
    assert!(cost.work >= 2 * 2 * 8 * 4096 * 4096 * 16, "{}", cost.work);
}

#[test]
fn cat_hands_back_a_contiguous_tensor_even_from_strided_inputs() {
    let mut k = ctx(1 << 30);
    let a = values(&mut k, &[2, 3, 4], 1).transpose(1, 2).unwrap();
    let b = values(&mut k, &[2, 3, 4], 2).transpose(1, 2).unwrap();
    assert!(!a.is_contiguous());
    let plain = Tensor::cat(&[&a, &b], 2).unwrap();
    assert!(!plain.is_contiguous(), "candle's own cat is strided here");
    let out = k.cat(&[a, b], 2).unwrap();
    assert!(out.is_contiguous());
    assert_eq!(bits(&out), bits(&plain));
}
