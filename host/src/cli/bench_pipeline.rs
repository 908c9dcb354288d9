//! `infernet bench --pipeline`: one model served by a pipeline of 1, 2 and
//! 3 stages on loopback. The SmolLM-135M shape (30 layers, generated
//! weights) is served by six provider processes: one holding layers
//! `0..30`, two holding `0..15` and `15..30`, three holding `0..10`,
//! `10..20` and `20..30` (each chain under its own model id, so the client
//! routes each chain on purpose). An in-process client generates greedy
//! tokens through each chain and reports time to first token, decode
//! tokens/s, the hidden-state bytes per token between stages and stage
//! jobs per token, against the same model run whole on one in-process node
//! (no network) measured in the same run.

use super::bench_shard::spawn;
use anyhow::{bail, Context, Result};
use infernet_host::config::Config;
use infernet_host::models::fixture::{write_llama_fixture_with_progress, LlamaFixtureSpec};
use infernet_host::p2p::WireInput;
use infernet_host::sdk::{Infernet, PipelineOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// The chains: model id and its spans.
const CHAINS: [(&str, &[&str]); 3] = [
    ("smol1", &["0..30"]),
    ("smol2", &["0..15", "15..30"]),
    ("smol3", &["0..10", "10..20", "20..30"]),
];
const PROMPT: [u32; 8] = [1, 504, 3120, 77, 9001, 42, 613, 28];

/// Runs the benchmark: `tokens` greedy tokens, median of `rounds`, each
/// provider process on `threads` compute threads (default: the cores).
pub fn run(
    dir: &Path,
    plugins: &Path,
    tokens: usize,
    rounds: usize,
    threads: Option<usize>,
) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.unwrap_or(cores).max(1);
    let llama = std::fs::canonicalize(plugins.join("llama"))
        .with_context(|| format!("no packed llama plugin in {}", plugins.display()))?;
    std::fs::create_dir_all(dir)?;
    let model = dir.join("smollm-135m-shape");
    let spec = LlamaFixtureSpec::smollm_135m_shape();
    if !model.join("model.safetensors").exists() {
        let bar = super::progress::bar(0, false);
        bar.set_message("tensors of the SmolLM-135M-shape checkpoint written");
        write_llama_fixture_with_progress(&spec, &model, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
    }
    let tokens = u32::try_from(tokens.max(2)).context("--tokens is too large")?;

    // The whole model on one node, no network: the reference.
    let node = super::bench::node_with(dir, &llama, &[("smol", &model)])?;
    let params = [
        ("max_tokens", tokens.to_string()),
        ("emit_logits", "true".to_string()),
    ];
    let job = |id: usize| infernet_host::worlds::backend::JobRequest {
        id: format!("bench-{id}"),
        model: "smol".into(),
        input: infernet_host::worlds::backend::JobInput::Tokens(PROMPT.to_vec()),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    node.run(&job(0), None)?;
    let mut local = Vec::new();
    for r in 0..rounds {
        let t = Instant::now();
        node.run(&job(r + 1), None)?;
        local.push(t.elapsed().as_secs_f64());
    }
    let local_rate = f64::from(tokens) / super::bench::median(local);
    drop(node);

    let mut procs = Vec::new();
    let mut boot: Vec<String> = Vec::new();
    for (id, spans) in CHAINS {
        for span in spans {
            let name = format!("{id}-{}", span.replace("..", "-"));
            let config = dir.join(format!("{name}.toml"));
            let first: Vec<String> = boot.iter().take(1).map(|b| format!("{b:?}")).collect();
            std::fs::write(
                &config,
                format!(
                    "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{}]\nadvert_interval_secs = 1\n[[backend]]\nplugin = {llama:?}\n[[backend.models]]\nid = {id:?}\npath = {model:?}\nlayers = {span:?}\n",
                    dir.join(&name),
                    first.join(", "),
                ),
            )?;
            let (p, addr) = spawn(&config, threads)?;
            procs.push(p);
            boot.push(addr);
        }
    }
    let client_toml = super::bench_shard::client_toml(dir, &boot[0]);
    super::net::runtime()?.block_on(async move {
        let client = Infernet::new(Config::parse(&client_toml, dir)?).start().await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        for (id, spans) in CHAINS {
            for span in spans {
                let (a, b) = span.split_once("..").unwrap_or_default();
                let span_id = format!("{id}@{a}..{b}/30");
                while client.network().providers_of(&span_id).await?.is_empty() {
                    if Instant::now() > deadline {
                        bail!("the client did not find a provider of {span_id} within 60 s");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        println!(
            "\n## pipeline: SmolLM-135M shape (30 layers, hidden {}), {tokens} greedy tokens after an {}-token prompt, loopback, {cores} cores, {threads} compute threads per provider, median of {rounds}",
            spec.hidden_size,
            PROMPT.len()
        );
        println!("one node, whole model, no network: {local_rate:.1} tok/s");
        println!(
            "{:<7} {:>9} {:>10} {:>12} {:>15} {:>11}  ms/token per stage",
            "stages", "TTFT ms", "decode t/s", "vs 1 stage", "bytes/token", "jobs/token"
        );
        let mut one = None;
        for (id, spans) in CHAINS {
            let opts = PipelineOptions {
                max_tokens: tokens,
                ..Default::default()
            };
            // Warm-up: every stage opens its weights.
            client.generate_pipeline(id, WireInput::Tokens(PROMPT.to_vec()), opts.clone()).await?;
            let (mut ttft, mut rate, mut bytes, mut jobs) = (Vec::new(), Vec::new(), 0, 0);
            let mut per_stage = Vec::new();
            for _ in 0..rounds {
                let out = client.generate_pipeline(id, WireInput::Tokens(PROMPT.to_vec()), opts.clone()).await?;
                if out.stages.len() != spans.len() {
                    bail!("{id}: routed {} stages, expected {}", out.stages.len(), spans.len());
                }
                let decode_ms = out.total_ms.saturating_sub(out.first_token_ms).max(1);
                ttft.push(out.first_token_ms as f64);
                rate.push(f64::from(tokens - 1) * 1000.0 / decode_ms as f64);
                bytes = out.hidden_bytes;
                jobs = out.stages.iter().map(|s| s.jobs.len()).sum::<usize>();
                per_stage = out
                    .stages
                    .iter()
                    .map(|s| format!("{:.1}", s.wait_ms as f64 / f64::from(tokens)))
                    .collect::<Vec<_>>();
            }
            let (ttft, rate) = (super::bench::median(ttft), super::bench::median(rate));
            let base = *one.get_or_insert(rate);
            // Per decoded token: every hop carries one row of hidden states.
            let rows = (PROMPT.len() as u64) + u64::from(tokens) - 1;
            println!(
                "{:<7} {ttft:>9.0} {rate:>10.1} {:>12.2} {:>15} {:>11.1}  {}",
                spans.len(),
                rate / base,
                bytes / rows,
                jobs as f64 / f64::from(tokens),
                per_stage.join(" + ")
            );
        }
        client.shutdown().await;
        drop(procs);
        Ok(())
    })
}
