//! Attacks on the host's kernel and streaming budgets: kernels whose output
//! is larger than their inputs suggest, one kernel with too much work, live
//! handles that cost no bytes, and unbounded streamed tokens. Each attack
//! returns `Ok` when the host let it through, so a test that expects a
//! `limit-exceeded` error fails loudly when a check is missing.

use infernet_plugin_api::*;

/// `[1, m, k] × [batch, k, n]`: the output is `batch · m · n`, although
/// neither operand has the batch on the side with `m`.
pub fn matmul_batch(job: &JobRequest) -> Result<JobResult> {
    let m: usize = job.param_or("m", 2048)?;
    let k: usize = job.param_or("k", 1)?;
    let n: usize = job.param_or("n", 2048)?;
    let batch: usize = job.param_or("batch", 64)?;
    let a = Tensor::zeros(&dims(&[1, m, k]), DType::F32)?;
    let b = Tensor::zeros(&dims(&[batch, k, n]), DType::F32)?;
    let c = a.matmul(&b)?;
    Ok(JobResult::text(format!("{:?}", c.dims()), 0, 0))
}

/// Holds 48 MiB of tensors (x: 16 MiB, a 32 MiB filler, small operands),
/// then runs param `kernel` on x, whose output is 16 MiB more.
pub fn alloc_first(job: &JobRequest) -> Result<JobResult> {
    let kernel = job.param_str("kernel").unwrap_or("unary").to_string();
    let (t, d) = (1024usize, 1024usize);
    let x = Tensor::zeros(&dims(&[1, 4, t, d]), DType::F32)?;
    let out = if kernel == "reshape" {
        // The transposed view is charged like a copy (16 MiB); reshaping
        // it copies for real.
        let xt = x.transpose(2, 3)?;
        let _filler = Tensor::zeros(&dims(&[8, t, d]), DType::F32)?;
        xt.reshape(&[4, t, d])?
    } else {
        let _filler = Tensor::zeros(&dims(&[8, t, d]), DType::F32)?;
        let w = Tensor::zeros(&dims(&[d]), DType::F32)?;
        let half = Tensor::zeros(&dims(&[t, d / 2]), DType::F32)?;
        let mask = Tensor::zeros(&dims(&[t, d]), DType::U8)?;
        match kernel.as_str() {
            "unary" => x.unary(UnaryOp::Exp)?,
            "affine" => x.affine(2.0, 1.0)?,
            "clamp" => x.clamp(-1.0, 1.0)?,
            "softmax" => x.softmax_last_dim()?,
            "rms-norm" => x.rms_norm(&w, 1e-5)?,
            "layer-norm" => x.layer_norm(&w, &w, 1e-5)?,
            "rope" => x.rope(&half, &half)?,
            "rope-interleaved" => tensor::rope_interleaved(&x, &half, &half)?,
            "masked-fill" => x.masked_fill(&mask, 0.0)?,
            "attention" => x.attention(&x, &x, Some(&mask), 1.0)?,
            other => return Err(Error::invalid(format!("unknown kernel `{other}`"))),
        }
    };
    Ok(JobResult::text(format!("{kernel}: {:?}", out.dims()), 0, 0))
}

/// One `[n, n] × [n, n]` matmul: 2·n³ FLOP in a single host call.
pub fn big_kernel(job: &JobRequest) -> Result<JobResult> {
    let n: usize = job.param_or("n", 2048)?;
    let a = Tensor::zeros(&dims(&[n, n]), DType::F32)?;
    let c = a.matmul(&a)?;
    Ok(JobResult::text(format!("{:?}", c.dims()), 0, 0))
}

/// Up to `n` live handles that cost no tensor bytes: empty tensors
/// (`what=tensors`), samplers (`what=samplers`), model weights
/// (`what=weights`), opened models (`what=models`) or tokenizers
/// (`what=tokenizers`), the last three of model param `target`.
pub fn handles(job: &JobRequest) -> Result<JobResult> {
    let n: u32 = job.param_or("n", 200_000)?;
    let what = job.param_str("what").unwrap_or("tensors").to_string();
    let mut tensors = Vec::new();
    let mut samplers = Vec::new();
    let mut opened = Vec::new();
    let mut tokenizers = Vec::new();
    let mut quantized = Vec::new();
    let target = job.param_str("target").unwrap_or(&job.model).to_string();
    let weights = match what.as_str() {
        "weights" | "tokenizers" | "qweights" => Some(models::open(&target)?),
        _ => None,
    };
    let first = weights.as_ref().and_then(|w| w.names().into_iter().next());
    for _ in 0..n {
        match (what.as_str(), &weights, &first) {
            ("tensors", _, _) => tensors.push(Tensor::zeros(&[0], DType::F32)?),
            ("samplers", _, _) => samplers.push(Sampler::new(Sampling {
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                seed: 0,
            })),
            ("weights", Some(w), Some(name)) => tensors.push(w.get(name)?),
            ("models", _, _) => opened.push(models::open(&target)?),
            ("tokenizers", Some(w), _) => tokenizers.push(w.tokenizer()?),
            ("qweights", Some(w), _) => quantized.push(w.get_quantized("blk.0.attn_q.weight")?),
            _ => return Err(Error::invalid(format!("cannot hold `{what}` handles"))),
        }
    }
    let held = tensors.len() + samplers.len() + opened.len() + tokenizers.len() + quantized.len();
    Ok(JobResult::text(format!("held {held} {what}"), 0, 0))
}

/// Quantized weights used wrongly, on GGUF model param `target`: `step`
/// `vector` asks for a 1-D tensor as a matrix, `missing` for a name the
/// file lacks, `int-input` multiplies a u32 tensor, `wide-input` one with
/// the wrong number of features. Each must come back as an error value.
pub fn qmatrix(job: &JobRequest) -> Result<JobResult> {
    let target = job.param_str("target").unwrap_or(&job.model).to_string();
    let w = models::open(&target)?;
    match job.param_str("step").unwrap_or("vector") {
        "vector" => drop(w.get_quantized("blk.0.attn_norm.weight")?),
        "missing" => drop(w.get_quantized("blk.99.attn_q.weight")?),
        "int-input" => {
            let q = w.get_quantized("blk.0.attn_q.weight")?;
            drop(Tensor::new_u32(&[1; 256], &[1, 256])?.qlinear(&q)?);
        }
        "wide-input" => {
            let q = w.get_quantized("blk.0.attn_q.weight")?;
            drop(Tensor::new_f32(&[1.0; 300], &[1, 300])?.qlinear(&q)?);
        }
        other => return Err(Error::invalid(format!("unknown step `{other}`"))),
    }
    Err(Error::internal(
        "the host accepted a misused quantized weight",
    ))
}

/// The largest weight of model param `target` multiplied by its own
/// transpose: host work on tensors that cost the plugin no bytes.
pub fn weight_work(job: &JobRequest) -> Result<JobResult> {
    let w = models::open(job.param_str("target").unwrap_or(&job.model))?;
    let mut largest: Option<(usize, Tensor)> = None;
    for name in w.names() {
        let t = w.get(&name)?;
        let size = t.elem_count();
        if t.dims().len() == 2 && largest.as_ref().is_none_or(|(s, _)| size > *s) {
            largest = Some((size, t));
        }
    }
    let Some((_, t)) = largest else {
        return Err(Error::invalid("the model has no 2-D weight".to_string()));
    };
    let c = t.matmul(&t.t()?)?;
    Ok(JobResult::text(format!("{:?}", c.dims()), 0, 0))
}

/// `n` tokens of `size` bytes each through `progress.emit-token`.
pub fn tokens(job: &JobRequest) -> Result<JobResult> {
    let n: u32 = job.param_or("n", 200_000)?;
    let size: usize = job.param_or("size", 1)?;
    let token = "x".repeat(size);
    for _ in 0..n {
        progress::emit_token(&token);
    }
    Ok(JobResult::text(format!("emitted {n}"), 0, n))
}

/// One streamed token carrying `n` token ids (default 1 Mi): each id is
/// charged 4 bytes of `stream_mb`.
pub fn token_ids(job: &JobRequest) -> Result<JobResult> {
    let n: usize = job.param_or("n", 1 << 20)?;
    progress::emit_token_ids(&vec![7; n], "x");
    Ok(JobResult::text(format!("emitted {n} ids"), 0, 1))
}

fn dims(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}

/// `n` words of output returned at once, none streamed, claiming zero
/// output tokens: a backend that ignores `max_tokens` and under-reports.
pub fn quiet_output(job: &JobRequest) -> Result<JobResult> {
    let n: usize = job.param_or("n", 1000)?;
    Ok(JobResult::text(
        "word ".repeat(n).trim_end().to_string(),
        0,
        0,
    ))
}
