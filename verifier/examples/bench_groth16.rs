//! Groth16 benchmark for the bundled digits MLPs.
//!
//! ```text
//! cargo run --release -p infernet-verifier --example bench_groth16 [-- --proofs N] [--committed]
//! ```
//!
//! For each model: accuracies (float vs quantized), constraint count, setup
//! time, key sizes (and key-cache load time), prove time (N proofs, progress
//! bar), verify time, proof size, peak RSS.

use std::time::{Duration, Instant};

use ark_serialize::CanonicalSerialize;
use indicatif::{ProgressBar, ProgressStyle};
use infernet_verifier::circuit::constraint_count;
use infernet_verifier::groth16::{setup, KeyCache};
use infernet_verifier::quant::model_path;
use infernet_verifier::{
    DigitsModel, Groth16Prover, InputClaim, InputMode, MlpShape, ProofVerifier, Prover, Statement,
};

struct Row {
    name: String,
    float_acc: f64,
    quant_acc: f64,
    constraints: usize,
    setup: Duration,
    cache_load: Duration,
    prove: Vec<Duration>,
    verify: Vec<Duration>,
    proof_bytes: usize,
    pk_compressed: usize,
    pk_uncompressed: usize,
    vk_bytes: usize,
    peak_rss_mib: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mean_ms(v: &[Duration]) -> f64 {
    v.iter().map(|d| ms(*d)).sum::<f64>() / v.len().max(1) as f64
}

fn min_ms(v: &[Duration]) -> f64 {
    v.iter().map(|d| ms(*d)).fold(f64::INFINITY, f64::min)
}

/// Peak resident set size of this process so far (Linux), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let proofs: usize = args
        .iter()
        .position(|a| a == "--proofs")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let mode = if args.iter().any(|a| a == "--committed") {
        InputMode::Committed
    } else {
        InputMode::Public
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("Groth16/BN254 (ark-groth16 0.6), {mode:?} input, {proofs} proofs per model, {threads} threads");

    let cache_dir = tempfile::tempdir()?;
    let cache = KeyCache::new(cache_dir.path());
    let mut rows = Vec::new();
    for name in ["digits-64-32-10", "digits-64-128-10"] {
        let model = DigitsModel::load(model_path(name))?;
        let q = model.quantize()?;
        let float_acc = model.float_accuracy();
        let quant_acc = model.quantized_accuracy(&q)?;
        let shape = MlpShape::of(&q.mlp, mode)?;
        let constraints = constraint_count(&shape)?;
        println!("{name}: {constraints} constraints; running setup ...");

        let t = Instant::now();
        let (pk, vk) = setup(&shape, &mut rand::rngs::OsRng)?;
        let setup_time = t.elapsed();
        cache.store(&q.mlp, mode, &pk)?;
        let t = Instant::now();
        let cached = cache
            .load(&q.mlp, mode)?
            .ok_or("key cache miss after store")?;
        let cache_load = t.elapsed();
        assert_eq!(cached.vk, vk);

        let prover = Groth16Prover::new(q.mlp.clone(), mode, cached.pk)?;
        let verifier = prover.verifier()?;
        let bar = ProgressBar::new(proofs as u64);
        bar.set_style(ProgressStyle::with_template(
            "  proving {msg} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})",
        )?);
        bar.set_message(name);
        bar.enable_steady_tick(Duration::from_millis(100));
        let mut prove_t = Vec::new();
        let mut verify_t = Vec::new();
        let mut proof_bytes = 0;
        for i in 0..proofs {
            let x = q.input_from_pixels(&model.test.x[i % model.test.x.len()]);
            let t = Instant::now();
            let proved = prover.prove(&x)?;
            prove_t.push(t.elapsed());
            bar.inc(1);
            proof_bytes = proved.envelope.proof.len();
            let st = Statement {
                model_commitment: prover.model_commitment().to_string(),
                input: InputClaim::Plain(x),
                output: proved.output.clone(),
            };
            let t = Instant::now();
            verifier.verify(&proved.envelope, &st)?;
            verify_t.push(t.elapsed());
        }
        bar.finish_and_clear();
        rows.push(Row {
            name: name.to_string(),
            float_acc,
            quant_acc,
            constraints,
            setup: setup_time,
            cache_load,
            prove: prove_t,
            verify: verify_t,
            proof_bytes,
            pk_compressed: pk.compressed_size(),
            pk_uncompressed: pk.uncompressed_size(),
            vk_bytes: vk.compressed_size(),
            peak_rss_mib: peak_rss_mib(),
        });
    }

    println!();
    println!(
        "| model | float acc | quant acc | constraints | setup (s) | prove mean/min (ms) | verify mean (ms) | proof (B) | pk compressed / uncompressed (MiB) | vk (B) | key-cache load (ms) | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2}% | {:.2}% | {} | {:.2} | {:.0} / {:.0} | {:.2} | {} | {:.1} / {:.1} | {} | {:.0} | {:.0} |",
            r.name,
            r.float_acc * 100.0,
            r.quant_acc * 100.0,
            r.constraints,
            r.setup.as_secs_f64(),
            mean_ms(&r.prove),
            min_ms(&r.prove),
            mean_ms(&r.verify),
            r.proof_bytes,
            r.pk_compressed as f64 / (1 << 20) as f64,
            r.pk_uncompressed as f64 / (1 << 20) as f64,
            r.vk_bytes,
            ms(r.cache_load),
            r.peak_rss_mib,
        );
    }
    Ok(())
}
