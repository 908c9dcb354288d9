//! `infernet bench`: the numbers behind docs/BENCHMARKS.md, each beside a
//! reference measured in the same run.
//!
//! - llama plugin vs native candle-transformers llama (tokens/s) on a
//!   generated checkpoint shaped like SmolLM-135M;
//! - bert plugin vs native candle-transformers BertModel (sentences/s) on
//!   all-MiniLM-L6-v2;
//! - per-call overhead of a trivial host call and a trivial kernel (ns);
//! - instantiation from `InstancePre` (µs) and compile vs cached load (ms);
//! - with `--network`, job round trips on loopback ([`super::bench_net`]);
//! - with `--gguf`, GGUF files against candle's quantized llama and
//!   llama.cpp ([`super::bench_gguf`]);
//! - with `--bridge URL`, the engine bridge against calling that engine
//!   directly ([`super::bench_bridge`]).

use anyhow::{Context, Result};
use candle_core::Device;
use infernet_host::config::Config;
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::models::reference::{NativeBert, NativeLlama};
use infernet_host::node::Node;
use infernet_host::runtime::{Package, PluginKind, Runtime};
use infernet_host::worlds::backend::{JobInput, JobRequest};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Directory holding the packed plugins.
    #[arg(long, default_value = "target/plugins")]
    plugins: PathBuf,
    /// Working directory (generated checkpoints are kept here between runs).
    #[arg(long, default_value = ".infernet/bench")]
    dir: PathBuf,
    /// all-MiniLM-L6-v2 directory (default: $INFERNET_MINILM_DIR).
    #[arg(long, env = "INFERNET_MINILM_DIR")]
    minilm: Option<PathBuf>,
    /// Tokens generated per llama run.
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Timed rounds per side (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Use the tiny checkpoint instead of the SmolLM-135M shape (quick smoke run).
    #[arg(long)]
    quick: bool,
    /// Run only the network benchmark (job round trips vs a bare echo).
    #[arg(long)]
    network: bool,
    /// Requests per network measurement.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Run only the verification simulation (cheaters caught, honest
    /// providers never slashed, what disputes cost).
    #[arg(long)]
    verify: bool,
    /// Jobs per provider kind in the verification simulation.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Run only the GGUF benchmark (q8_0 and q4_k_m files: plugin vs
    /// candle's quantized_llama, and llama.cpp with --llama-cpp-python).
    #[arg(long)]
    gguf: bool,
    /// A Python interpreter with `llama_cpp` (llama-cpp-python) installed.
    #[arg(long)]
    llama_cpp_python: Option<PathBuf>,
    /// Run only the engine-bridge benchmark against this OpenAI-compatible
    /// base URL (`http://host:port/v1`): direct requests vs the same through
    /// `plugins/engine-openai` (`--requests` each, `--tokens` per request).
    #[arg(long)]
    bridge: Option<String>,
    /// The engine's model name, with `--bridge`.
    #[arg(long, default_value = "default")]
    engine_model: String,
    /// Run only the batch-sharding benchmark (needs `--minilm`): one batch
    /// of `--texts` texts as 1, 2 and 3 shards on three provider processes.
    #[arg(long)]
    shards: bool,
    /// Texts per batch, with `--shards`.
    #[arg(long, default_value_t = 96)]
    texts: usize,
    /// Run only the pipeline benchmark: the SmolLM-135M shape served by
    /// chains of 1, 2 and 3 layer-span provider processes (`--tokens`
    /// greedy tokens each).
    #[arg(long)]
    pipeline: bool,
    /// Compute threads per provider process, with `--pipeline` (default:
    /// the core count).
    #[arg(long)]
    threads: Option<usize>,
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub(super) fn node_with(dir: &Path, plugin: &Path, models: &[(&str, &Path)]) -> Result<Node> {
    let mut text = format!(
        "[node]\ndata_dir = {:?}\n[[backend]]\nplugin = {:?}\n",
        dir.join("node"),
        plugin
    );
    for (id, p) in models {
        text.push_str(&format!("[[backend.models]]\nid = {id:?}\npath = {p:?}\n"));
    }
    let config = Config::parse(&text, dir)?;
    Ok(Node::from_config(&config)?)
}

pub fn run(a: BenchArgs) -> Result<()> {
    std::fs::create_dir_all(&a.dir)?;
    let plugins = std::fs::canonicalize(&a.plugins).with_context(|| {
        format!(
            "{} not found: run scripts/build-plugins.sh first",
            a.plugins.display()
        )
    })?;
    let dir = std::fs::canonicalize(&a.dir)?;
    println!(
        "# infernet bench ({} CPU threads, candle CPU backend)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if a.network {
        return super::bench_net::run(&plugins, &dir.join("network"), a.requests);
    }
    if let Some(base) = &a.bridge {
        let tokens = u32::try_from(a.tokens).context("--tokens is too large")?;
        return super::bench_bridge::run(
            &plugins,
            &dir.join("bridge"),
            base,
            &a.engine_model,
            tokens,
            a.requests,
        );
    }
    if a.pipeline {
        return super::bench_pipeline::run(
            &dir.join("pipeline"),
            &plugins,
            a.tokens,
            a.rounds,
            a.threads,
        );
    }
    if a.shards {
        let minilm = a.minilm.as_deref().context(
            "--shards embeds with all-MiniLM-L6-v2: pass --minilm DIR or set INFERNET_MINILM_DIR",
        )?;
        return super::bench_shard::run(&dir.join("shards"), &plugins, minilm, a.texts, a.rounds);
    }
    if a.gguf {
        return super::bench_gguf::run(
            &plugins,
            &dir,
            a.quick,
            a.tokens,
            a.rounds,
            a.llama_cpp_python.as_deref(),
        );
    }
    if a.verify {
        // One dispute on the 135M shape when its checkpoint is there (the
        // llama benchmark generates it).
        let big = dir.join("smollm-135m-shape");
        let big = big.join("model.safetensors").exists().then_some(big);
        return super::bench_verify::run(&plugins, &dir.join("verify"), a.jobs, big.as_deref());
    }
    bench_llama(&a, &plugins, &dir)?;
    match &a.minilm {
        Some(m) => bench_bert(&a, &plugins, &dir, m)?,
        None => println!("\n## bert: skipped (pass --minilm DIR or set INFERNET_MINILM_DIR; scripts/bench.sh does)"),
    }
    bench_overhead(&plugins, &dir)?;
    Ok(())
}

fn bench_llama(a: &BenchArgs, plugins: &Path, dir: &Path) -> Result<()> {
    let (name, spec) = if a.quick {
        ("tiny-llama", LlamaFixtureSpec::tiny())
    } else {
        ("smollm-135m-shape", LlamaFixtureSpec::smollm_135m_shape())
    };
    let model = dir.join(name);
    if !model.join("model.safetensors").exists() {
        eprintln!(
            "generating {name} checkpoint in {} (once)...",
            model.display()
        );
        write_llama_fixture(&spec, &model)?;
    }
    let node = node_with(dir, &plugins.join("llama"), &[(name, &model)])?;
    let native = NativeLlama::load(&model, &Device::Cpu)?;
    let prompt = native.encode("the quick brown fox jumps over the lazy dog")?;
    let n = a.tokens;
    let job = JobRequest {
        id: "bench".into(),
        model: name.into(),
        input: JobInput::Tokens(prompt.clone()),
        params: vec![("max_tokens".into(), n.to_string())],
    };
    // warm-up both (weights loaded, caches hot)
    native.generate_greedy(&prompt, 2)?;
    node.run(
        &JobRequest {
            params: vec![("max_tokens".into(), "2".into())],
            ..job.clone()
        },
        None,
    )?;
    let (mut nat, mut plug, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let mut leaves = 0;
    for _ in 0..a.rounds {
        let t = Instant::now();
        native.generate_greedy(&prompt, n)?;
        nat.push(n as f64 / t.elapsed().as_secs_f64());
        // Interleaved, so drift on the box hits both the same.
        for traced in [true, false] {
            node.set_tracing(traced);
            let t = Instant::now();
            let (r, trace) = node.run_traced(&job, None, None)?;
            let rate = n as f64 / t.elapsed().as_secs_f64();
            anyhow::ensure!(
                r.usage.output_tokens as usize == n,
                "plugin stopped early ({} tokens)",
                r.usage.output_tokens
            );
            if traced {
                leaves = trace.leaves.len();
                plug.push(rate);
            } else {
                bare.push(rate);
            }
        }
    }
    node.set_tracing(true);
    let (nat, plug, bare) = (median(nat), median(plug), median(bare));
    println!(
        "\n## llama: {name}, prompt {} tokens + {n} generated, greedy, median of {}",
        prompt.len(),
        a.rounds
    );
    println!("native candle-transformers: {nat:8.2} tok/s");
    println!(
        "llama plugin (wasm):        {plug:8.2} tok/s  (kernel trace on: {leaves} calls committed)"
    );
    println!("  untraced, for reference:  {bare:8.2} tok/s");
    println!(
        "plugin / native:            {:8.3}  (target >= 0.90)",
        plug / nat
    );
    println!(
        "trace overhead:             {:8.2} %  (target <= 3)",
        (1.0 - plug / bare) * 100.0
    );
    Ok(())
}

fn bench_bert(a: &BenchArgs, plugins: &Path, dir: &Path, minilm: &Path) -> Result<()> {
    let node = node_with(dir, &plugins.join("bert"), &[("minilm", minilm)])?;
    let native = NativeBert::load(minilm, &Device::Cpu)?;
    let sentences: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "Sentence number {i} about decentralized inference on a network of GPU providers."
            )
        })
        .collect();
    native.embed(&sentences[0])?;
    node.embed("minilm", &sentences[..1])?;
    let (mut nat, mut plug, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let t = Instant::now();
        for s in &sentences {
            native.embed(s)?;
        }
        nat.push(sentences.len() as f64 / t.elapsed().as_secs_f64());
        for traced in [true, false] {
            node.set_tracing(traced);
            let t = Instant::now();
            node.embed("minilm", &sentences)?;
            let rate = sentences.len() as f64 / t.elapsed().as_secs_f64();
            if traced {
                plug.push(rate)
            } else {
                bare.push(rate)
            }
        }
    }
    node.set_tracing(true);
    let (nat, plug, bare) = (median(nat), median(plug), median(bare));
    println!(
        "\n## bert: all-MiniLM-L6-v2, {} sentences one at a time, median of {}",
        sentences.len(),
        a.rounds
    );
    println!("native candle-transformers: {nat:8.1} sentences/s");
    println!("bert plugin (wasm):         {plug:8.1} sentences/s  (kernel trace on)");
    println!("  untraced, for reference:  {bare:8.1} sentences/s");
    println!(
        "plugin / native:            {:8.3}  (target >= 0.90)",
        plug / nat
    );
    println!(
        "trace overhead:             {:8.2} %",
        (1.0 - plug / bare) * 100.0
    );
    Ok(())
}

fn bench_overhead(plugins: &Path, dir: &Path) -> Result<()> {
    let empty = dir.join("empty-model");
    std::fs::create_dir_all(&empty)?;
    std::fs::write(empty.join("config.json"), "{}")?;
    let mut st = 2u64.to_le_bytes().to_vec();
    st.extend_from_slice(b"{}");
    std::fs::write(empty.join("model.safetensors"), st)?;
    let node = node_with(dir, &plugins.join("hostile"), &[("probe", &empty)])?;
    let calls = |n: u32, kernel: &str| -> Result<Duration> {
        let job = JobRequest {
            id: "calls".into(),
            model: "probe".into(),
            input: JobInput::Text(String::new()),
            params: vec![
                ("attack".into(), "calls".into()),
                ("n".into(), n.to_string()),
                ("kernel".into(), kernel.into()),
            ],
        };
        let t = Instant::now();
        node.run(&job, None)?;
        Ok(t.elapsed())
    };
    const N: u32 = 200_000;
    calls(1000, "affine")?;
    println!("\n## host-call overhead ({N} calls inside one job, minus an empty job)");
    for (label, kernel) in [
        ("resource method (tensor.shape)", "shape"),
        ("trivial kernel (affine on 1 element)", "affine"),
    ] {
        let base = (0..5)
            .map(|_| calls(0, kernel).map(|d| d.as_secs_f64()))
            .collect::<Result<Vec<_>>>()?;
        let full = (0..3)
            .map(|_| calls(N, kernel).map(|d| d.as_secs_f64()))
            .collect::<Result<Vec<_>>>()?;
        let ns = (median(full) - median(base)) / N as f64 * 1e9;
        println!("{label:40} {ns:8.0} ns/call");
    }

    let slot = &node.backends()[0];
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        drop(slot.plugin.instantiate()?);
    }
    println!("\n## instantiation");
    println!(
        "backend instance from InstancePre:        {:8.0} µs",
        t.elapsed().as_secs_f64() / n as f64 * 1e6
    );

    let package = Package::open(&plugins.join("llama"), None)?;
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::new(cache.path())?;
    let t = Instant::now();
    let cold = runtime.load(&package, PluginKind::Backend)?;
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    let runtime2 = Runtime::new(cache.path())?;
    let t = Instant::now();
    let warm = runtime2.load(&package, PluginKind::Backend)?;
    let warm_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        !cold.from_cache && warm.from_cache,
        "compile cache did not hit"
    );
    println!("llama component: compile {cold_ms:.1} ms, cached load {warm_ms:.1} ms ({:.0}x); pooling allocator: {}", cold_ms / warm_ms, runtime.pooling());
    Ok(())
}
