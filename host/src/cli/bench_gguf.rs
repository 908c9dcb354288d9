//! `infernet bench --gguf`: the llama plugin on GGUF files beside candle's
//! own `quantized_llama` and, when a Python with `llama_cpp` is given,
//! llama.cpp (llama-cpp-python) on the same file, 2 threads each: tokens/s
//! of greedy decode steps (the prompt's forward pass left out, as
//! `scripts/bench_llama_cpp.py` must for llama.cpp) and the memory each
//! holds after loading (the plugin's includes the node and the mapped
//! file's pages it read).

use anyhow::{Context, Result};
use candle_core::Device;
use infernet_host::models::fixture::LlamaFixtureSpec;
use infernet_host::models::fixture_gguf::{write_gguf_llama, GgufQuant, GgufTokenizer};
use infernet_host::models::reference::NativeQuantizedLlama;
use infernet_host::worlds::backend::{JobInput, JobRequest};
use std::path::Path;
use std::time::Instant;

/// Resident memory of this process, MB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What llama.cpp measured on one file.
#[derive(serde::Deserialize)]
struct LlamaCpp {
    tok_s: f64,
    tokens: Vec<u32>,
    rss_mb: f64,
}

fn llama_cpp(
    python: &Path,
    file: &Path,
    prompt: &[u32],
    n: usize,
    rounds: usize,
) -> Result<LlamaCpp> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_llama_cpp.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .arg(file)
        .arg("2")
        .arg(n.to_string())
        .arg(rounds.to_string())
        .args(prompt.iter().map(u32::to_string));
    let out = cmd
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "llama.cpp bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim().lines().last().unwrap_or_default())
        .context("llama.cpp bench output")
}

/// One GGUF file per format, each side timed `rounds` times (median).
pub fn run(
    plugins: &Path,
    dir: &Path,
    quick: bool,
    n: usize,
    rounds: usize,
    python: Option<&Path>,
) -> Result<()> {
    let (shape, spec) = match quick {
        true => ("tiny", LlamaFixtureSpec::gguf_tiny()),
        false => ("smollm-135m-shape", LlamaFixtureSpec::smollm_135m_shape()),
    };
    for (fmt, quant) in [("q8_0", GgufQuant::Q8_0), ("q4_k_m", GgufQuant::Q4KM)] {
        let name = format!("{shape}-{fmt}");
        let model = dir.join(&name);
        let file = model.join("model.gguf");
        let reference = dir.join(format!("{name}-tokenizer.json"));
        if !file.exists() || !reference.exists() {
            eprintln!("generating {name} GGUF in {} (once)...", model.display());
            write_gguf_llama(
                &spec,
                &model,
                quant,
                &GgufTokenizer::Metadata {
                    reference: Some(reference.clone()),
                },
            )?;
        }
        let before = rss_mb();
        let native = NativeQuantizedLlama::load_gguf(&file, &reference, &Device::Cpu)?;
        let native_mb = rss_mb() - before;
        let prompt = native.encode("the quick brown fox jumps over the lazy dog")?;
        let before = rss_mb();
        let node = super::bench::node_with(dir, &plugins.join("llama"), &[(&name, &file)])?;
        let job = JobRequest {
            id: "bench".into(),
            model: name.clone(),
            input: JobInput::Tokens(prompt.clone()),
            params: vec![("max_tokens".into(), n.to_string())],
        };
        // Warm-up: the plugin loads its weight handles on the first job.
        node.set_tracing(false);
        node.run(&job, None)?;
        let plugin_mb = rss_mb() - before;
        let (native_tokens, _) = native.generate_greedy(&prompt, n)?;
        // Decode steps only (what llama.cpp is timed on): a run of n + 1
        // tokens less a run of 1 (the prompt's forward pass) is n steps.
        let timed = |f: &mut dyn FnMut(usize) -> Result<()>, tokens: usize| -> Result<f64> {
            let t = Instant::now();
            f(tokens)?;
            Ok(t.elapsed().as_secs_f64())
        };
        let mut candle_run = |k: usize| -> Result<()> {
            native.generate_greedy(&prompt, k)?;
            Ok(())
        };
        let mut plugin_run = |k: usize| -> Result<()> {
            let job = JobRequest {
                params: vec![("max_tokens".into(), k.to_string())],
                ..job.clone()
            };
            let r = node.run(&job, None)?;
            anyhow::ensure!(r.usage.output_tokens as usize == k, "plugin stopped early");
            Ok(())
        };
        let (mut nat, mut plug) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (long, short) = (timed(&mut candle_run, n + 1)?, timed(&mut candle_run, 1)?);
            nat.push(n as f64 / (long - short));
            let (long, short) = (timed(&mut plugin_run, n + 1)?, timed(&mut plugin_run, 1)?);
            plug.push(n as f64 / (long - short));
        }
        node.set_tracing(true);
        // Each round times both sides back to back, so its ratio cancels
        // what the box was doing then; the median of those ratios is the
        // figure (a ratio of medians mixes rounds).
        let mut ratios: Vec<f64> = plug.iter().zip(&nat).map(|(p, n)| p / n).collect();
        ratios.sort_by(f64::total_cmp);
        let spread = ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        let ratio = super::bench::median(ratios);
        let (nat, plug) = (super::bench::median(nat), super::bench::median(plug));
        let bytes = std::fs::metadata(&file)?.len() as f64 / 1e6;
        println!(
            "\n## gguf: {name} ({bytes:.0} MB file), prompt {} tokens, {n} greedy decode steps timed, 2 threads, median of {rounds}",
            prompt.len()
        );
        println!("candle quantized_llama:     {nat:8.2} tok/s  (+{native_mb:.0} MB after load)");
        println!("llama plugin (wasm):        {plug:8.2} tok/s  (+{plugin_mb:.0} MB after load)");
        println!(
            "plugin / candle:            {ratio:8.3}  (median of per-round ratios: {spread}; target >= 0.95)"
        );
        match python {
            Some(py) => {
                let cpp = llama_cpp(py, &file, &prompt, n, rounds)?;
                let agree = cpp
                    .tokens
                    .iter()
                    .zip(&native_tokens)
                    .take_while(|(a, b)| a == b)
                    .count();
                println!(
                    "llama.cpp (llama-cpp-python): {:6.2} tok/s  (+{:.0} MB after load; its first {agree} of {n} greedy tokens are candle's)",
                    cpp.tok_s, cpp.rss_mb,
                );
                println!("plugin / llama.cpp:         {:8.3}", plug / cpp.tok_s);
            }
            None => println!(
                "llama.cpp: skipped (pass --llama-cpp-python PYTHON, a Python with llama_cpp)"
            ),
        }
    }
    Ok(())
}
