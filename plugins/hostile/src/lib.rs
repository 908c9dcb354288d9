//! A deliberately misbehaving backend for the host's security tests.
//! The job parameter `attack` picks the misbehaviour; `attack=none` echoes
//! the input so tests can check the host still serves after an attack.
//! The attacks on kernel and streaming budgets are in [`budgets`].

mod budgets;

use infernet_plugin_api::*;

struct Hostile;

impl Backend for Hostile {
    fn new() -> Self {
        Hostile
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo::new(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            &["text-generation"],
            &["any"],
        )
    }

    fn execute(&mut self, job: JobRequest) -> Result<JobResult> {
        let attack = job.param_str("attack").unwrap_or("none").to_string();
        match attack.as_str() {
            "none" => {
                let text = job.input.text()?;
                progress::emit_token(&text);
                Ok(JobResult::text(text, 1, 1))
            }
            // A panic inside `execute` becomes a trap.
            "trap" => panic!("hostile plugin panics on purpose"),
            // 60 KiB of stderr, then a panic: the crash report stays short.
            "loud-trap" => {
                for i in 0..1000 {
                    eprintln!("noise line {i:04} {}", "#".repeat(48));
                }
                panic!("hostile plugin panics after a flood of stderr")
            }
            // Kernels called wrongly: shapes that do not multiply, and a
            // float-only op on an integer tensor (which once panicked the
            // node inside candle).
            "bad-kernel" => {
                let a = Tensor::zeros(&[3], DType::F32)?;
                let b = Tensor::zeros(&[3], DType::U32)?;
                a.add(&b).context("hostile bad-kernel")?;
                unreachable!("the host must refuse f32 + u32")
            }
            "int-unary" => {
                let ids = Tensor::new_u32(&[1, 2, 3], &[3])?;
                ids.unary(UnaryOp::Exp)?;
                unreachable!("the host must refuse exp on u32")
            }
            // Spins forever without calling the host: only epochs can stop it.
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            // Grows linear memory until the allocator fails.
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = vec![0u8; 16 << 20];
                    block[0] = 1;
                    hoard.push(std::hint::black_box(block));
                }
            }
            // Keeps allocating host tensors (64 MiB each) and never frees them.
            "tensors" => {
                let mut held = Vec::new();
                loop {
                    held.push(Tensor::zeros(&[4096, 4096], DType::F32)?);
                }
            }
            // Copies a 64 MiB tensor out into guest memory, repeatedly.
            "copy" => {
                let big = Tensor::zeros(&[4096, 4096], DType::F32)?;
                let mut total = 0u64;
                loop {
                    total += big.to_f32()?.len() as u64;
                    if total > (1u64 << 34) {
                        return Ok(JobResult::text(total.to_string(), 0, 0));
                    }
                }
            }
            // Asks for a model its config did not grant.
            "model" => {
                let name = job
                    .param_str("target")
                    .unwrap_or("forbidden-model")
                    .to_string();
                let weights = models::open(&name)?;
                Ok(JobResult::text(weights.config(), 0, 0))
            }
            // Burns host kernel time in a loop of matmuls.
            "kernels" => {
                let a = Tensor::zeros(&[256, 256], DType::F32)?;
                loop {
                    let _ = a.matmul(&a)?;
                }
            }
            // Budget attacks, see `budgets`.
            "matmul-batch" => budgets::matmul_batch(&job),
            "alloc-first" => budgets::alloc_first(&job),
            "big-kernel" => budgets::big_kernel(&job),
            "handles" => budgets::handles(&job),
            "weight-work" => budgets::weight_work(&job),
            "tokens" => budgets::tokens(&job),
            "token-ids" => budgets::token_ids(&job),
            "qmatrix" => budgets::qmatrix(&job),
            "quiet-output" => budgets::quiet_output(&job),
            // Not an attack: `n` trivial host calls, for the overhead benchmark.
            "calls" => {
                let n: u32 = job.param_or("n", 0)?;
                let one = Tensor::new_f32(&[1.0], &[1])?;
                let kernel = job.param_str("kernel") == Some("affine");
                for _ in 0..n {
                    if kernel {
                        drop(std::hint::black_box(one.affine(1.0, 0.0)?));
                    } else {
                        std::hint::black_box(one.shape());
                    }
                }
                Ok(JobResult::text(n.to_string(), 0, 0))
            }
            other => Err(Error::invalid(format!("unknown attack `{other}`"))),
        }
    }
}

export_backend!(Hostile);
