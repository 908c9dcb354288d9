//! clap commands: inference (local or on the network) and embedding, the
//! node itself, what it knows (peers, jobs), plugin packaging and signing,
//! test-checkpoint generation, the demo and the benchmarks.

mod audit;
mod bench;
mod bench_bridge;
mod bench_gguf;
mod bench_net;
mod bench_pipeline;
mod bench_shard;
mod bench_verify;
mod demo;
mod demo_cheat;
mod demo_pipeline;
mod local_json;
mod net;
mod pay;
mod pipeline;
mod plugin;
mod plugin_new;
mod progress;
mod registry;
mod verify;
mod zk;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use infernet_host::config::Config;
use infernet_host::node::Node;
use infernet_host::worlds::backend::JobOutput;
use infernet_host::worlds::backend::ProgressEvent;
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
    /// Generate text, streaming tokens to stdout: with a local backend, or
    /// with `--network` on a provider found on the network.
    Infer(InferArgs),
    /// Run a node (provider, client, verifier: roles from the config).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Run a verifier: re-runs the spot checks of clients that trust it
    /// (paid like jobs), audits providers' results against them, attests
    /// what it finds, and referees disputes.
    #[command(subcommand)]
    Verifier(VerifierCommand),
    /// Peers this node knows (from its store).
    Peers {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Jobs this node took part in, newest first (from its store).
    Jobs {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// JSON (with each job's transition log) instead of a table.
        #[arg(long)]
        json: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
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
    /// The README's main job: three providers and a client on loopback, one job across them.
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
        /// Where the client serves the OpenAI-compatible API and the
        /// dashboard (loopback; a free port when this one is taken).
        #[arg(long, default_value = demo::DEFAULT_API)]
        api: String,
        /// Exit after the scripted jobs instead of serving until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Benchmarks: plugin vs native candle-transformers, host-call overhead, instantiation.
    Bench(bench::BenchArgs),
    /// The local ledger's balances: fund an account, read balances.
    #[command(subcommand)]
    Wallet(pay::WalletCommand),
    /// Escrows this node holds, earns from or staked; earnings per provider.
    #[command(subcommand)]
    Escrow(pay::EscrowCommand),
    /// Provider stake: post, show, withdraw.
    #[command(subcommand)]
    Stake(pay::StakeCommand),
    /// Everything this node knows about one job: parties, quotes, escrows,
    /// the signed result and what it binds, transitions, dispute evidence.
    Audit {
        /// The job id (`infernet jobs` lists them).
        job: String,
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verification: check a dispute's evidence bundle offline.
    #[command(subcommand)]
    Verify(verify::VerifyCommand),
    /// Groth16 keys from a model publisher: `setup` (signed key bundle),
    /// `check`.
    #[command(subcommand)]
    Zk(zk::ZkCommand),
    /// The Supabase bootstrap registry: `list` its verified rows.
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// The active rows whose signed record verifies, and how many were
    /// ignored and why (`[registry]` in the config, anon key from its env var).
    List {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    /// Extra backend parameter `key=value` (repeatable).
    #[arg(long = "param", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// Run on a provider found on the network instead of a local backend.
    #[arg(long)]
    network: bool,
    /// Most to pay, in units of `--currency`, exactly (`0.01`; `--network`).
    #[arg(long)]
    max_budget: Option<String>,
    /// Only accept quotes in this currency (`--network`).
    #[arg(long)]
    currency: Option<String>,
    /// Require a zk proof of the result (`groth16` or `groth16-baked`), verified before it is
    /// accepted (`--network`; only providers that advertise it are used).
    #[arg(long)]
    proof: Option<String>,
    /// Verification policy (`--network`): `none`, `replicate(K)`,
    /// `spot-check(P)` or `proof(groth16)` / `proof(groth16-baked)`; default: the config's
    /// `[verify] policy`.
    #[arg(long, value_parser = parse_policy)]
    verify: Option<infernet_host::sdk::VerifyPolicy>,
    /// Print the outcome as JSON: locally the text, each streamed piece
    /// with its token ids, all ids and the usage (what to compare against
    /// a reference); with `--network` the job's outcome.
    #[arg(long)]
    json: bool,
    /// With `--json`, on a local backend: also the logits, from the
    /// backend's `emit_logits=true` (greedy, `[steps, vocab]`).
    #[arg(long, requires = "json")]
    logits: bool,
    /// The prompt.
    prompt: String,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Start the node and run until killed (state is persisted before every step).
    Start {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Serve the OpenAI-compatible API on HOST:PORT (overrides `[api] listen`).
        #[arg(long, value_name = "HOST:PORT")]
        api: Option<String>,
    },
}

#[derive(Subcommand)]
enum VerifierCommand {
    /// Start the verifier and run until killed: the config's backends and
    /// payment adapters, role `verifier` (which referees too).
    Start {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
    },
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
        /// Write a GGUF file instead (`q8_0`, `q4_0` or `q4_k_m`), tokenizer
        /// in its metadata; `tiny` is then 256 wide (k-quant rows).
        #[arg(long)]
        gguf: Option<String>,
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
        Command::Node(NodeCommand::Start { config, api }) => {
            net::node_start(&config, false, api.as_deref())
        }
        Command::Verifier(VerifierCommand::Start { config }) => {
            net::node_start(&config, true, None)
        }
        Command::Peers { config, json } => net::peers(&config, json),
        Command::Registry(RegistryCommand::List { config, json }) => registry::list(&config, json),
        Command::Jobs {
            config,
            json,
            limit,
        } => net::jobs(&config, json, limit),
        Command::Embed {
            config,
            model,
            texts,
        } => embed(&config, &model, &texts),
        Command::Model(ModelCommand::GenTiny {
            out,
            shape,
            seed,
            gguf,
        }) => gen_tiny(&out, &shape, seed, gguf.as_deref()),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Wallet(cmd) => pay::wallet(cmd),
        Command::Escrow(cmd) => pay::escrow(cmd),
        Command::Stake(cmd) => pay::stake(cmd),
        Command::Verify(cmd) => verify::run(cmd),
        Command::Zk(cmd) => zk::run(cmd),
        Command::Audit { job, config, json } => audit::audit(&config, &job, json),
        Command::Demo {
            plugins,
            dir,
            prompt,
            api,
            exit,
        } => demo::demo(demo::DemoOptions {
            plugins: &plugins,
            dir: &dir,
            prompt: &prompt,
            api: &api,
            exit,
        }),
        Command::Bench(args) => bench::run(args),
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

fn parse_policy(s: &str) -> Result<infernet_host::sdk::VerifyPolicy, String> {
    s.parse()
}

fn load_node(config: &Path, json: bool) -> Result<Node> {
    let config = Config::load(config)?;
    let metrics = infernet_host::metrics::Metrics::new();
    Node::load(&config, metrics, Some(progress::node_loading(json)))
        .context("starting the node from its config")
}

fn infer(a: InferArgs) -> Result<()> {
    if a.network {
        if a.logits {
            bail!("--logits applies to local runs only (a provider sends what its plugin returns)");
        }
        let max_budget = match (&a.max_budget, &a.currency) {
            (Some(b), Some(c)) => Some(
                infernet_host::sdk::Amount::parse(b, c)
                    .with_context(|| format!("--max-budget {b} --currency {c}"))?,
            ),
            (Some(b), None) => bail!(
                "--max-budget {b} needs --currency, the unit of the amount (e.g. --currency USDC_SOL)"
            ),
            (None, _) => None,
        };
        let opts = infernet_host::sdk::InferOptions {
            max_budget,
            currency: a.currency.clone(),
            max_tokens: Some(a.max_tokens),
            temperature: Some(a.temperature),
            seed: Some(a.seed),
            params: [
                vec![
                    ("top_k".into(), a.top_k.to_string()),
                    ("top_p".into(), a.top_p.to_string()),
                ],
                a.params.clone(),
            ]
            .concat(),
            proof: a.proof.clone(),
            verify: a.verify.clone(),
            ..Default::default()
        };
        return net::infer(net::NetworkInfer {
            config: &a.config,
            model: &a.model,
            prompt: &a.prompt,
            opts,
            json: a.json,
        });
    }
    if a.max_budget.is_some() || a.currency.is_some() || a.proof.is_some() || a.verify.is_some() {
        bail!("--max-budget, --currency, --proof and --verify apply to --network jobs only");
    }
    let node = load_node(&a.config, a.json)?;
    let mut params = vec![
        ("max_tokens", a.max_tokens.to_string()),
        ("temperature", a.temperature.to_string()),
        ("top_k", a.top_k.to_string()),
        ("top_p", a.top_p.to_string()),
        ("seed", a.seed.to_string()),
    ];
    params.extend(a.params.iter().map(|(k, v)| (k.as_str(), v.clone())));
    if a.json {
        return local_json::run(&node, &a.model, &a.prompt, &params, a.logits);
    }
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
    let node = load_node(config, false)?;
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

fn gen_tiny(out: &Path, shape: &str, seed: Option<u64>, gguf: Option<&str>) -> Result<()> {
    use infernet_host::models::fixture::{write_llama_fixture_with_progress, LlamaFixtureSpec};
    use infernet_host::models::fixture_gguf::{write_gguf_llama, GgufQuant, GgufTokenizer};
    let mut spec = match (shape, gguf) {
        ("tiny", None) => LlamaFixtureSpec::tiny(),
        ("tiny", Some(_)) => LlamaFixtureSpec::gguf_tiny(),
        ("smollm-135m", _) => LlamaFixtureSpec::smollm_135m_shape(),
        (other, _) => bail!("unknown --shape `{other}`: use `tiny` or `smollm-135m`"),
    };
    if let Some(s) = seed {
        spec.seed = s;
    }
    if let Some(format) = gguf {
        let quant = match format {
            "q8_0" => GgufQuant::Q8_0,
            "q4_0" => GgufQuant::Q4_0,
            "q4_k_m" => GgufQuant::Q4KM,
            other => bail!("unknown --gguf `{other}`: use `q8_0`, `q4_0` or `q4_k_m`"),
        };
        eprintln!("writing {format} GGUF (quantizing; the 135M shape takes a minute)...");
        let file = write_gguf_llama(
            &spec,
            out,
            quant,
            &GgufTokenizer::Metadata { reference: None },
        )
        .with_context(|| format!("writing GGUF to {}", out.display()))?;
        eprintln!("wrote {} (tokenizer in its metadata)", file.display());
        return Ok(());
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
