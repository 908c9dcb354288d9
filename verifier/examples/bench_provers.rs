//! Groth16 (ark-groth16, in-process) vs ezkl (Halo2/KZG through the Python
//! package) on the bundled digits models (two MLPs and a CNN), side by side,
//! in one run. Groth16 runs
//! in two modes: committed weights (one key per shape, weights private and
//! Poseidon-committed: `groth16`) and baked weights (weights as circuit
//! constants, one key per model: `baked`), beside ezkl's default (weights as
//! fixed columns, keys per model).
//!
//! ```text
//! cargo run --release -p infernet-verifier --example bench_provers [-- --proofs N] [--models a,b]
//! ```
//!
//! For each model and system: constraints (Groth16), setup time, prove time (N proofs, progress bar;
//! Groth16 and ezkl proofs alternate so both see the same machine load),
//! verify time, proof size, proving/verifying key sizes, peak memory; then the
//! ezkl / Groth16 prove-time ratios (each mode) and the held-out accuracy of the float
//! model, Groth16's int8 model and ezkl's fixed-point circuit.
//!
//! How memory is measured (Linux):
//! * Groth16 runs in this process. Before each phase the peak-RSS counter is
//!   reset (`echo 5 > /proc/self/clear_refs`) and `VmHWM` is read after it, so
//!   a phase's figure is the process's peak resident set during that phase,
//!   including what was already resident (the bench's own baseline is
//!   printed).
//! * ezkl runs in a Python subprocess per step; its figure is that process's
//!   `VmHWM` read by the driver at the end of the step (ezkl is a Rust
//!   extension running in-process), including the interpreter (about 20 MiB).
//!   Not `ru_maxrss`: Linux carries it across fork + exec, so the child would
//!   report this (large) process's size.
//!
//! ezkl times are given twice: the ezkl call alone (`ezkl.prove`, timed inside
//! the driver) and the whole subprocess (interpreter start, import, loading
//! pk/SRS from disk, witness generation, the self-check verify), which is what
//! `EzklProver::prove` costs.

use std::time::{Duration, Instant};

use ark_bn254::Bn254;
use ark_groth16::{prepare_verifying_key, Groth16};
use ark_serialize::CanonicalSerialize;
use ark_snark::SNARK;
use indicatif::{ProgressBar, ProgressStyle};
use infernet_verifier::baked::{self, BakedCircuit, BakedProver};
use infernet_verifier::circuit::constraint_count;
use infernet_verifier::commit::commit_model;
use infernet_verifier::ezkl::StepStats;
use infernet_verifier::groth16::{setup, KeyCache};
use infernet_verifier::quant::{argmax, model_path};
use infernet_verifier::{
    DigitsModel, EzklCache, EzklModel, EzklOptions, EzklProver, EzklRuntime, Groth16Prover,
    InputClaim, InputMode, MlpShape, ProofVerifier, Prover, Statement,
};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reset this process's peak RSS (Linux >= 4.0); false if not possible.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak RSS since the last reset, MiB.
fn peak_mib() -> f64 {
    status_kib("VmHWM:").map_or(f64::NAN, |k| k as f64 / 1024.0)
}

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

#[derive(Default)]
struct Groth16Row {
    constraints: usize,
    setup_s: f64,
    setup_peak: f64,
    prove_ms: Vec<f64>,
    prove_peak: f64,
    verify_ms: Vec<f64>,
    proof_b: usize,
    pk_b: usize,
    vk_b: usize,
}

#[derive(Default)]
struct EzklRow {
    float_acc: f64,
    groth16_acc: f64,
    ezkl_acc: f64,
    logrows: u32,
    setup_wall_s: f64,
    setup_srs_s: f64,
    setup_keys_s: f64,
    setup_settings_s: f64,
    setup_peak: f64,
    prove_call_ms: Vec<f64>,
    prove_wall_ms: Vec<f64>,
    witness_ms: Vec<f64>,
    prove_peak: f64,
    verify_call_ms: Vec<f64>,
    verify_wall_ms: Vec<f64>,
    verify_peak: f64,
    proof_b: usize,
    pk_b: u64,
    vk_b: u64,
    srs_b: u64,
}

fn bar(len: u64, msg: String) -> Result<ProgressBar, Box<dyn std::error::Error>> {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(
        "  proving {msg} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})",
    )?);
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(100));
    Ok(bar)
}

fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let proofs: usize = args
        .iter()
        .position(|a| a == "--proofs")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5)
        .max(1);
    let all = ["digits-64-32-10", "digits-64-128-10", "digits-cnn-4-8"];
    let models: Vec<String> = match args.iter().position(|a| a == "--models") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--models needs a comma-separated list")?
            .split(',')
            .map(str::to_string)
            .collect(),
        None => all.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = models.iter().find(|m| !all.contains(&m.as_str())) {
        return Err(format!("unknown model `{bad}`; the bundled ones are {all:?}").into());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = EzklRuntime::from_env();
    let ezkl_version = rt.check()?;
    let can_reset = reset_peak();
    println!(
        "Groth16/BN254 (ark-groth16 0.6, in-process) vs ezkl {ezkl_version} (Halo2/KZG BN254, \
         Python {}), public inputs, {proofs} proofs per model and system, {threads} cores, \
         RAYON_NUM_THREADS={}",
        rt.python().display(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
    );
    println!(
        "bench process baseline RSS {:.0} MiB; per-phase peak reset: {}",
        status_kib("VmRSS:").map_or(f64::NAN, |k| k as f64 / 1024.0),
        if can_reset {
            "yes"
        } else {
            "NO (Groth16 peaks are cumulative)"
        }
    );

    let work = tempfile::tempdir()?;
    let mode = InputMode::Public;
    let mut rows = Vec::new();
    for name in models.iter().map(String::as_str) {
        let model = DigitsModel::load(model_path(name))?;
        let q = model.quantize()?;
        let inputs: Vec<Vec<i8>> = (0..proofs)
            .map(|i| q.input_from_pixels(&model.test.x[i % model.test.x.len()]))
            .collect();

        // ---- Groth16 ----
        let mut g = Groth16Row::default();
        println!("{name}: Groth16 setup ...");
        let shape = MlpShape::of(&q.mlp, mode)?;
        g.constraints = constraint_count(&shape)?;
        reset_peak();
        let t = Instant::now();
        let (pk, vk) = setup(&shape, &mut rand::rngs::OsRng)?;
        g.setup_s = t.elapsed().as_secs_f64();
        g.setup_peak = peak_mib();
        g.pk_b = pk.compressed_size();
        g.vk_b = vk.compressed_size();
        let cache = KeyCache::new(work.path().join("groth16"));
        cache.store(&q.mlp, mode, &pk)?;
        drop(pk);
        let keys = cache
            .load(&q.mlp, mode)?
            .ok_or("groth16 key cache miss after store")?;
        let prover = Groth16Prover::new(q.mlp.clone(), mode, keys.pk)?;
        let verifier = prover.verifier()?;

        // ---- Groth16, baked weights ----
        let mut bk = Groth16Row::default();
        println!("{name}: Groth16 baked-weights setup ...");
        bk.constraints = baked::constraint_count(&q.mlp)?;
        reset_peak();
        let t = Instant::now();
        let (bpk, bvk) = baked::setup(&q.mlp, &mut rand::rngs::OsRng)?;
        bk.setup_s = t.elapsed().as_secs_f64();
        bk.setup_peak = peak_mib();
        bk.pk_b = bpk.compressed_size();
        bk.vk_b = bvk.compressed_size();
        let bprover = BakedProver::new(q.mlp.clone(), bpk)?;
        let bverifier = bprover.verifier()?;
        // The same, each unit's decomposition sized from the shape alone (as
        // the committed circuit does): what the weight-derived bounds save.
        let mut bw = Groth16Row::default();
        let wc = BakedCircuit::for_setup(&q.mlp)?.with_worst_case_bounds();
        bw.constraints = wc.num_constraints()?;
        reset_peak();
        let t = Instant::now();
        let (wpk, wvk) = Groth16::<Bn254>::circuit_specific_setup(wc, &mut rand::rngs::OsRng)?;
        bw.setup_s = t.elapsed().as_secs_f64();
        bw.setup_peak = peak_mib();
        bw.pk_b = wpk.compressed_size();
        bw.vk_b = wvk.compressed_size();
        let wpvk = prepare_verifying_key(&wvk);
        let commitment = commit_model(&q.mlp)?;

        // ---- ezkl setup ----
        let mut e = EzklRow::default();
        println!("{name}: ezkl setup (settings, calibration, compile, SRS, keys) ...");
        let em = EzklModel::digits(name)?;
        let ecache = EzklCache::new(work.path().join("ezkl"));
        let (eprover, stats) =
            EzklProver::from_cache(rt.clone(), &ecache, &em, &EzklOptions::default())?;
        let stats: StepStats = stats.ok_or("ezkl setup unexpectedly cached")?;
        let art = eprover.artifacts().clone();
        e.logrows = art.logrows;
        e.setup_wall_s = stats.wall.as_secs_f64();
        e.setup_srs_s = stats.secs("gen_srs");
        e.setup_keys_s = stats.secs("setup");
        e.setup_settings_s = stats.secs("gen_settings")
            + stats.secs("calibrate_settings")
            + stats.secs("compile_circuit");
        e.setup_peak = kib_to_mib(stats.peak_rss_kib);
        e.pk_b = file_size(&art.pk);
        e.vk_b = file_size(&art.vk);
        e.srs_b = file_size(&art.srs);
        let everifier = eprover.verifier()?;

        // ---- accuracy on the held-out split: float, Groth16's integer
        // model, ezkl's fixed-point circuit (witness generation, no proofs) ----
        e.float_acc = model.float_accuracy();
        e.groth16_acc = model.quantized_accuracy(&q)?;
        let all: Vec<Vec<i8>> = model
            .test
            .x
            .iter()
            .map(|px| q.input_from_pixels(px))
            .collect();
        let outs = eprover.outputs(&all)?;
        let hits = outs
            .iter()
            .zip(&model.test.y)
            .filter(|(o, y)| argmax(o) == usize::from(**y))
            .count();
        e.ezkl_acc = hits as f64 / model.test.y.len().max(1) as f64;

        // ---- proving, interleaved so both systems see the same machine load ----
        let pb = bar(4 * proofs as u64, format!("{name} groth16+baked+ezkl"))?;
        for x in &inputs {
            // Baked, shape-only bounds: the same steps as BakedProver::prove
            // (forward, prove, public inputs, self-check verify).
            reset_peak();
            let t = Instant::now();
            let output = q.mlp.forward(x)?;
            let c = BakedCircuit::new(&q.mlp, x)?.with_worst_case_bounds();
            let proof = Groth16::<Bn254>::prove(&wpk, c, &mut rand::rngs::OsRng)?;
            let public = infernet_verifier::PublicValues::new(
                &shape,
                commitment,
                &InputClaim::Plain(x.clone()),
                &output,
            )?
            .to_vec();
            if !Groth16::<Bn254>::verify_proof(&wpvk, &proof, &public)? {
                return Err("baked (shape-only bounds) proof does not verify".into());
            }
            bw.prove_ms.push(ms(t.elapsed()));
            bw.prove_peak = bw.prove_peak.max(peak_mib());
            bw.proof_b = proof.compressed_size();
            let t = Instant::now();
            Groth16::<Bn254>::verify_proof(&wpvk, &proof, &public)?;
            bw.verify_ms.push(ms(t.elapsed()));
            pb.inc(1);

            reset_peak();
            let t = Instant::now();
            let proved = bprover.prove(x)?;
            bk.prove_ms.push(ms(t.elapsed()));
            bk.prove_peak = bk.prove_peak.max(peak_mib());
            pb.inc(1);
            bk.proof_b = proved.envelope.proof.len();
            let st = Statement {
                model_commitment: bprover.model_commitment().to_string(),
                input: InputClaim::Plain(x.clone()),
                output: proved.output.clone(),
            };
            let t = Instant::now();
            bverifier.verify(&proved.envelope, &st)?;
            bk.verify_ms.push(ms(t.elapsed()));

            reset_peak();
            let t = Instant::now();
            let proved = prover.prove(x)?;
            g.prove_ms.push(ms(t.elapsed()));
            g.prove_peak = g.prove_peak.max(peak_mib());
            pb.inc(1);
            g.proof_b = proved.envelope.proof.len();
            let st = Statement {
                model_commitment: prover.model_commitment().to_string(),
                input: InputClaim::Plain(x.clone()),
                output: proved.output.clone(),
            };
            let t = Instant::now();
            verifier.verify(&proved.envelope, &st)?;
            g.verify_ms.push(ms(t.elapsed()));

            let (proved, s) = eprover.prove_timed(x)?;
            e.prove_call_ms.push(s.secs("prove") * 1e3);
            e.witness_ms.push(s.secs("gen_witness") * 1e3);
            e.prove_wall_ms.push(ms(s.wall));
            e.prove_peak = e.prove_peak.max(kib_to_mib(s.peak_rss_kib));
            pb.inc(1);
            e.proof_b = proved.envelope.proof.len();
            let st = Statement {
                model_commitment: eprover.model_commitment().to_string(),
                input: InputClaim::Plain(x.clone()),
                output: proved.output.clone(),
            };
            let s = everifier.verify_timed(&proved.envelope, &st)?;
            e.verify_call_ms.push(s.secs("verify") * 1e3);
            e.verify_wall_ms.push(ms(s.wall));
            e.verify_peak = e.verify_peak.max(kib_to_mib(s.peak_rss_kib));
        }
        pb.finish_and_clear();
        rows.push((name, g, bk, bw, e));
    }

    println!();
    println!("| model | system | constraints | setup (s) | prove mean / min (ms) | verify mean (ms) | proof (B) | pk (MiB) | vk (B) | peak RSS setup / prove (MiB) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, g, bk, bw, e) in &rows {
        for (label, r) in [
            ("Groth16, committed weights (key per shape)", g),
            ("Groth16, baked weights (key per model)", bk),
            ("Groth16, baked, shape-only requant bounds", bw),
        ] {
            println!(
                "| {name} | {label} | {} | {:.2} | {:.1} / {:.1} | {:.2} | {} | {:.1} | {} | {:.0} / {:.0} |",
                r.constraints,
                r.setup_s,
                mean(&r.prove_ms),
                min(&r.prove_ms),
                mean(&r.verify_ms),
                r.proof_b,
                mib(r.pk_b as u64),
                r.vk_b,
                r.setup_peak,
                r.prove_peak,
            );
        }
        println!(
            "| {name} | ezkl (2^{} rows) | - | {:.2} (SRS {:.2} + keys {:.2} + settings/calibrate/compile {:.2}) | {:.0} / {:.0} ezkl.prove; {:.0} / {:.0} whole call | {:.1} ezkl.verify; {:.0} whole call | {} | {:.1} | {} | {:.0} / {:.0} |",
            e.logrows,
            e.setup_wall_s,
            e.setup_srs_s,
            e.setup_keys_s,
            e.setup_settings_s,
            mean(&e.prove_call_ms),
            min(&e.prove_call_ms),
            mean(&e.prove_wall_ms),
            min(&e.prove_wall_ms),
            mean(&e.verify_call_ms),
            mean(&e.verify_wall_ms),
            e.proof_b,
            mib(e.pk_b),
            e.vk_b,
            e.setup_peak,
            e.prove_peak,
        );
    }
    println!();
    println!("| model | ezkl / Groth16 committed, prove time (ezkl.prove call) | (whole ezkl call) | ezkl / Groth16 baked, prove time (ezkl.prove call) | (whole ezkl call) | accuracy float / Groth16 int8 / ezkl circuit | ezkl witness gen (ms) | ezkl verify peak RSS (MiB) | ezkl SRS (MiB) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, g, bk, _, e) in &rows {
        println!(
            "| {name} | {:.2} | {:.2} | **{:.2}** | {:.2} | {:.2}% / {:.2}% / {:.2}% | {:.0} | {:.0} | {:.1} |",
            mean(&e.prove_call_ms) / mean(&g.prove_ms),
            mean(&e.prove_wall_ms) / mean(&g.prove_ms),
            mean(&e.prove_call_ms) / mean(&bk.prove_ms),
            mean(&e.prove_wall_ms) / mean(&bk.prove_ms),
            e.float_acc * 100.0,
            e.groth16_acc * 100.0,
            e.ezkl_acc * 100.0,
            mean(&e.witness_ms),
            e.verify_peak,
            mib(e.srs_b),
        );
    }
    Ok(())
}
