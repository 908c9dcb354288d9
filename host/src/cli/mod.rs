//! clap commands: single-node inference and embedding, plugin packaging
//! and signing, test-checkpoint generation, the demo and the benchmark.

mod bench;
mod plugin;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use infernet_host::config::Config;
use infernet_host::node::Node;
use infernet_host::runtime::ProgressEvent;
use infernet_host::worlds::backend::JobOutput;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Infernet: decentralized GPU inference node.
#[derive(Parser)]
#[command(name = "infernet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text with a local backend, streaming tokens to stdout.
    Infer(InferArgs),
    /// Print sentence embeddings (one JSON array per line).
    Embed {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Model id from the config.
        #[arg(long)]
        model: String,
        /// Texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Model files helpers.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Plugin packages: pack, sign, verify, inspect.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// The README's main job: a generated checkpoint served by the llama plugin, streamed.
    Demo {
        /// Directory holding the packed plugins (`llama/`, `pricing-flat/`, ...).
        #[arg(long, default_value = "target/plugins")]
        plugins: PathBuf,
        /// Working directory for the demo's model, config and node data.
        #[arg(long, default_value = ".infernet/demo")]
        dir: PathBuf,
        /// Prompt.
        #[arg(default_value = "the quick brown fox")]
        prompt: String,
    },
    /// Benchmarks: plugin vs native candle-transformers, host-call overhead, instantiation.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct InferArgs {
    /// Node config file.
    #[arg(long)]
    config: PathBuf,
    /// Model id from the config.
    #[arg(long)]
    model: String,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_tokens: u32,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Top-p (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The prompt.
    prompt: String,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write a deterministic random-weight llama checkpoint (safetensors + config.json + tokenizer.json).
    GenTiny {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// `tiny` (seconds) or `smollm-135m` (SmolLM-135M's shape, ~540 MB).
        #[arg(long, default_value = "tiny")]
        shape: String,
        /// Seed.
        #[arg(long)]
        seed: Option<u64>,
    },
}

pub fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INFERNET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Infer(args) => infer(args),
        Command::Embed {
            config,
            model,
            texts,
        } => embed(&config, &model, &texts),
        Command::Model(ModelCommand::GenTiny { out, shape, seed }) => gen_tiny(&out, &shape, seed),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Demo {
            plugins,
            dir,
            prompt,
        } => demo(&plugins, &dir, &prompt),
        Command::Bench(args) => bench::run(args),
    }
}

fn load_node(config: &Path) -> Result<Node> {
    let config = Config::load(config)?;
    Node::from_config(&config).context("starting the node from its config")
}

fn infer(a: InferArgs) -> Result<()> {
    let node = load_node(&a.config)?;
    let params = vec![
        ("max_tokens", a.max_tokens.to_string()),
        ("temperature", a.temperature.to_string()),
        ("top_k", a.top_k.to_string()),
        ("top_p", a.top_p.to_string()),
        ("seed", a.seed.to_string()),
    ];
    stream_generation(&node, &a.model, &a.prompt, &params)
}

fn stream_generation(
    node: &Node,
    model: &str,
    prompt: &str,
    params: &[(&str, String)],
) -> Result<()> {
    let started = std::time::Instant::now();
    let sink = Box::new(|e: ProgressEvent| {
        if let ProgressEvent::Token(t) = e {
            print!("{t}");
            let _ = std::io::stdout().flush();
        }
    });
    let result = node.generate(model, prompt, params, Some(sink))?;
    let secs = started.elapsed().as_secs_f64();
    println!();
    eprintln!(
        "[{} prompt tokens, {} generated in {:.2}s: {:.1} tok/s]",
        result.usage.input_tokens,
        result.usage.output_tokens,
        secs,
        result.usage.output_tokens as f64 / secs
    );
    Ok(())
}

fn embed(config: &Path, model: &str, texts: &[String]) -> Result<()> {
    let node = load_node(config)?;
    let result = node.embed(model, texts)?;
    match result.output {
        JobOutput::Embeddings(vectors) => {
            for v in vectors {
                println!("{}", serde_json::to_string(&v)?);
            }
            Ok(())
        }
        _ => bail!("backend for `{model}` did not return embeddings; is it an embedding model?"),
    }
}

fn gen_tiny(out: &Path, shape: &str, seed: Option<u64>) -> Result<()> {
    use infernet_host::models::fixture::{write_llama_fixture_with_progress, LlamaFixtureSpec};
    let mut spec = match shape {
        "tiny" => LlamaFixtureSpec::tiny(),
        "smollm-135m" => LlamaFixtureSpec::smollm_135m_shape(),
        other => bail!("unknown --shape `{other}`: use `tiny` or `smollm-135m`"),
    };
    if let Some(s) = seed {
        spec.seed = s;
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("writing checkpoint {bar:30} {pos}/{len} tensors")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    write_llama_fixture_with_progress(&spec, out, &mut progress)
        .with_context(|| format!("writing checkpoint to {}", out.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} (model.safetensors, config.json, tokenizer.json)",
        out.display()
    );
    Ok(())
}

fn demo(plugins: &Path, dir: &Path, prompt: &str) -> Result<()> {
    let llama = plugins.join("llama");
    if !llama.join("infernet-plugin.toml").exists() {
        bail!(
            "no packed llama plugin in {}; build the plugins first (scripts/build-plugins.sh)",
            plugins.display()
        );
    }
    let model_dir = dir.join("tiny-llama");
    if !model_dir.join("model.safetensors").exists() {
        gen_tiny(&model_dir, "tiny", None)?;
    }
    let abs =
        |p: &Path| std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()));
    let config_path = dir.join("node.toml");
    let config = format!(
        "# Written by `infernet demo`.\n[node]\ndata_dir = \"node\"\n\n[[backend]]\nplugin = {:?}\n\n[[backend.models]]\nid = \"tiny-llama\"\npath = {:?}\n\n[pricing]\nplugin = {:?}\n[pricing.config]\nper_input_token = 2\nper_output_token = 10\nminimum = 100\n",
        abs(&llama)?,
        abs(&model_dir)?,
        abs(&plugins.join("pricing-flat"))?,
    );
    std::fs::write(&config_path, config)?;
    let node = load_node(&config_path)?;
    let quote = node
        .pricing()
        .map(|p| {
            p.quote(&infernet_host::worlds::pricing::QuoteRequest {
                model: "tiny-llama".into(),
                input_tokens: prompt.split_whitespace().count() as u32 + 1,
                max_output_tokens: 24,
                estimated_ms: 500,
                queue_depth: 0,
                load_permille: 0,
            })
        })
        .transpose()?;
    eprintln!("config: {}", config_path.display());
    if let Some(q) = quote {
        eprintln!(
            "quote from pricing-flat: {} micro-{} (max 24 tokens)",
            q.price.amount, q.price.currency
        );
    }
    eprintln!("prompt: {prompt:?}\n--- streamed from the llama plugin (random weights: the words are noise) ---");
    stream_generation(&node, "tiny-llama", prompt, &[("max_tokens", "24".into())])
}
