//! The README's main job (`infernet demo`): three providers, a verifier
//! and a client on loopback, each its own node with its own data dir; a
//! paid, replicated job streamed across them and a spot check re-run by
//! the verifier. The client serves the OpenAI-compatible API and the
//! dashboard on loopback for as long as the demo runs. The cheat caught
//! and slashed is in `demo_cheat.rs`.

use super::demo_cheat::demo_cheat;
use super::net::{abs_dir, print_outcome, runtime, toml_list, verification_line};
use anyhow::{bail, Context, Result};
use infernet_host::config::Config;
use infernet_host::payments::display;
use infernet_host::payments::ledger::{self, LEDGER};
use infernet_host::sdk::{Amount, InferOptions, Infernet, StreamEvent};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Where the demo serves its API unless `--api` says otherwise.
pub const DEFAULT_API: &str = "127.0.0.1:8080";

/// A ChatML template, written beside the demo's model as its
/// `tokenizer_config.json` (a generated checkpoint ships none), so that
/// `/v1/chat/completions` has one to render.
const CHAT_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// How the demo ends.
pub struct DemoOptions<'a> {
    /// Packed plugins.
    pub plugins: &'a Path,
    /// Working directory.
    pub dir: &'a Path,
    /// The prompt of the scripted jobs.
    pub prompt: &'a str,
    /// Where the API and dashboard listen (loopback).
    pub api: &'a str,
    /// Exit after the scripted jobs instead of serving until Ctrl-C.
    pub exit: bool,
}

/// The README's main job: three providers (the llama plugin on a generated
/// checkpoint, each priced by pricing-flat at its own rate) and a client,
/// each its own node with its own data dir, on 127.0.0.1; the client finds
/// them through one bootstrap peer, takes quotes, and streams a job from
/// the best-ranked.
pub fn demo(o: DemoOptions<'_>) -> Result<()> {
    let (plugins, dir, prompt) = (o.plugins, o.dir, o.prompt);
    let api_addr: SocketAddr = o
        .api
        .parse()
        .with_context(|| format!("--api `{}` is not HOST:PORT", o.api))?;
    if !api_addr.ip().is_loopback() {
        bail!("--api {api_addr}: the demo's API has no keys, so it serves loopback only");
    }
    let llama = plugins.join("llama");
    if !llama.join("infernet-plugin.toml").exists() {
        bail!(
            "no packed llama plugin in {}; build the plugins first (scripts/build-plugins.sh)",
            plugins.display()
        );
    }
    let model_dir = dir.join("tiny-llama");
    if !model_dir.join("model.safetensors").exists() {
        super::gen_tiny(&model_dir, "tiny", None, None)?;
    }
    let tokenizer_config = model_dir.join("tokenizer_config.json");
    if !tokenizer_config.exists() {
        let text = serde_json::json!({ "chat_template": CHAT_TEMPLATE, "bos_token": null, "eos_token": null });
        std::fs::write(&tokenizer_config, serde_json::to_string_pretty(&text)?)
            .with_context(|| format!("writing {}", tokenizer_config.display()))?;
    }
    let abs =
        |p: &Path| std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()));
    let (llama, model_dir, pricing) = (
        abs(&llama)?,
        abs(&model_dir)?,
        abs(&plugins.join("pricing-flat"))?,
    );
    let ledger = abs(&plugins.join("payment-ledger")).context(
        "no packed payment-ledger plugin; build the plugins first (scripts/build-plugins.sh)",
    )?;
    // Fresh node state each run; the model and compiled plugins are reused.
    let rates = [12u64, 10, 15];
    runtime()?.block_on(async move {
        let mut providers = Vec::new();
        let mut bootstrap: Option<String> = None;
        // A node serving tiny-llama at `rate`, paid through the ledger.
        let node_text = |name: &str, rate: u64, roles: &str, boot: &[String]| -> Result<String> {
            let node_dir = dir.join(name);
            let _ = std::fs::remove_file(node_dir.join(infernet_host::store::DB_FILE));
            Ok(format!(
                "# Written by `infernet demo`.\n[node]\ndata_dir = {node_dir:?}\n{roles}listen = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {boot}\nadvert_interval_secs = 1\n\n[[backend]]\nplugin = {llama:?}\n\n[[backend.models]]\nid = \"tiny-llama\"\npath = {model_dir:?}\n\n[pricing]\nplugin = {pricing:?}\n[pricing.config]\nper_input_token = 2\nper_output_token = {rate}\nminimum = 100\n\n# Paid through the local ledger; the provider cannot see the client's\n# ledger, so it takes the client's escrow statement.\n[[payment]]\nplugin = {ledger:?}\nconfirm = \"client\"\n",
                node_dir = abs_dir(&node_dir)?,
                boot = toml_list(boot),
            ))
        };
        // One bar over the five nodes' start (compiling plugins, loading
        // the model): hidden when stderr is not a terminal.
        let bar = super::progress::bar(5, false);
        for (i, rate) in rates.iter().enumerate() {
            bar.set_message(format!("starting provider-{i}"));
            let text = node_text(&format!("provider-{i}"), *rate, "", bootstrap.as_slice())?;
            // The dearest provider also serves as the client's referee.
            let text = match i {
                2 => format!("{text}\n# Rules on the client's disputes (it runs no replica of them).\n[verify]\nreferee = true\n"),
                _ => text,
            };
            let path = dir.join(format!("provider-{i}.toml"));
            std::fs::write(&path, text)?;
            let node = Infernet::new(Config::load(&path)?)
                .start()
                .await
                .with_context(|| format!("starting provider-{i}"))?;
            let addr = node.dialable_addrs().await?.into_iter().next().context("provider has no address")?;
            bar.suspend(|| eprintln!("provider-{i}  {}  {addr}  pricing-flat: {rate}/output token", node.peer_id()));
            bar.inc(1);
            bootstrap.get_or_insert(addr.to_string());
            providers.push(node);
        }
        // A verifier: re-runs the client's drawn spot checks, paid like a
        // replica, and attests what it finds.
        bar.set_message("starting the verifier");
        let path = dir.join("verifier.toml");
        std::fs::write(&path, node_text("verifier", 11, "roles = [\"verifier\"]\n", bootstrap.as_slice())?)?;
        let verifier = Infernet::new(Config::load(&path)?).start().await.context("starting the verifier")?;
        bar.suspend(|| eprintln!("verifier    {}  (infernet verifier start): re-runs spot checks, attests", verifier.peer_id()));
        bar.inc(1);
        bar.set_message("starting the client");
        let client_dir = dir.join("client");
        let _ = std::fs::remove_file(client_dir.join(infernet_host::store::DB_FILE));
        let text = format!(
            "# Written by `infernet demo`.\n[node]\ndata_dir = {:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {}\n\n[[payment]]\nplugin = {ledger:?}\n\n# Every job on two providers, compared call for call; provider-2 referees;\n# a drawn spot check is re-run by the verifier.\n[verify]\npolicy = \"replicate(2)\"\nreferees = [\"{}\"]\nverifiers = [\"{}\"]\n\n# The OpenAI-compatible API and the dashboard (loopback, no keys).\n[api]\ncurrency = \"USD\"\nmax_budget = \"0.01\"\n[api.chat_templates]\n\"tiny-llama\" = {:?}\n",
            abs_dir(&client_dir)?,
            toml_list(bootstrap.as_slice()),
            providers[2].peer_id(),
            verifier.peer_id(),
            model_dir,
        );
        let path = dir.join("client.toml");
        std::fs::write(&path, text)?;
        let client = Arc::new(Infernet::new(Config::load(&path)?).start().await.context("starting the client")?);
        bar.finish_and_clear();
        eprintln!("client      {}  (bootstrap: provider-0 only)", client.peer_id());
        let api = serve_api(&client, api_addr).await?;
        let url = api.url();
        eprintln!("API         {url}/v1  (OpenAI-compatible; the client pays, replicate(2) verifies)");
        eprintln!("dashboard   {url}/");
        let wallet = client.payments().and_then(|p| p.adapter(LEDGER)).context("the client has no ledger")?;
        let me = wallet.account.clone();
        let funded = ledger::fund(wallet.plugin.kv(), &me, "USD", 1_000_000)?;
        eprintln!("client wallet funded on its local ledger: {}", display(funded, "USD"));
        let mut names: Vec<(String, String)> = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.peer_id().to_string(), format!("provider-{i}")))
            .collect();
        names.push((verifier.peer_id().to_string(), "verifier".into()));
        let name = |peer: &str| {
            names.iter().find(|(p, _)| p == peer).map_or(peer.to_string(), |(_, n)| n.clone())
        };
        // Wait until every provider (and the verifier) is known, so the
        // choice is among all three.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let n = client.network().providers_of("tiny-llama").await?.len();
            if n > providers.len() || std::time::Instant::now() > deadline {
                eprintln!("client discovered {n} providers of tiny-llama");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        eprintln!("prompt: {prompt:?}\n--- streamed over /infernet/job/2 (random weights: the words are noise) ---");
        let started = std::time::Instant::now();
        let opts = InferOptions { max_tokens: Some(24), max_budget: Some(Amount::parse("0.001", "USD")?), ..Default::default() };
        let mut stream = client.infer_stream("tiny-llama", prompt, opts).await?;
        while let Some(event) = stream.next().await {
            match event {
                StreamEvent::Token(t) => {
                    print!("{t}");
                    let _ = std::io::stdout().flush();
                }
                StreamEvent::Assigned { provider, price, .. } => {
                    eprintln!("[assigned to {} at {}]", name(&provider.to_string()), display(price.amount, &price.currency))
                }
                StreamEvent::Failover { from, reason } => {
                    eprintln!("\n[{} failed: {reason}; failing over]", name(&from.to_string()))
                }
            }
        }
        let outcome = stream.finish().await.context("running the job on the network")?;
        println!();
        let quotes = client.store().quotes().for_job(&outcome.job_id)?;
        for q in &quotes {
            eprintln!("  quote {} from {}{}", display(q.price, &q.currency), name(&q.provider_peer), if q.accepted { "  <- accepted" } else { "" });
        }
        print_outcome(&outcome, started.elapsed());
        println!("served by {} ({})", name(&outcome.provider.to_string()), outcome.provider);
        let replicas: Vec<String> = match &outcome.verification {
            Some(v) => {
                for r in &v.replicas {
                    println!(
                        "replica: {} ran it, trace root {}",
                        name(&r.provider.to_string()),
                        r.trace_root.as_deref().unwrap_or("-")
                    );
                }
                println!("{}", verification_line(v));
                v.replicas.iter().map(|r| r.job_id.clone()).collect()
            }
            None => vec![outcome.job_id.clone()],
        };
        for job in &replicas {
            for e in client.store().escrows().by_job(job)? {
                println!(
                    "payment: {} held in escrow {} via {}, {} to {}",
                    display(e.amount, &e.currency),
                    e.escrow_id.as_deref().unwrap_or("-"),
                    e.adapter,
                    e.status,
                    name(e.provider_peer.as_deref().unwrap_or_default())
                );
            }
        }
        let left = ledger::balance(wallet.plugin.kv(), &me, "USD")?;
        println!("client wallet: {} -> {}", display(funded, "USD"), display(left, "USD"));
        // The receipt reaches the provider in the background.
        let server = providers.iter().find(|p| p.peer_id() == outcome.provider).context("serving provider")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let earned: Vec<_> = server.store().escrows().by_job(&outcome.job_id)?;
            let done = earned.iter().any(|e| e.status == "released");
            if done || std::time::Instant::now() > deadline {
                for e in earned {
                    println!("{} earned {} (escrow {}, {})", name(&outcome.provider.to_string()), display(e.amount, &e.currency), e.escrow_id.unwrap_or_default(), e.status);
                }
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        demo_spot_check(&client, &verifier, prompt, &name).await?;
        demo_cheat(plugins, dir, &llama, &model_dir, &ledger, prompt).await?;
        // The same model split over two providers, one layer each.
        let path_line = format!("path = {model_dir:?}\n");
        let spans = ["0..1", "1..2"]
            .iter()
            .enumerate()
            .map(|(i, layers)| {
                let name = format!("span-{i}");
                let text = node_text(&name, 12, "", bootstrap.as_slice())?
                    .replace(&path_line, &format!("{path_line}layers = {layers:?}\n"));
                Ok((name, text))
            })
            .collect::<Result<Vec<_>>>()?;
        let whole = infernet_host::node::Node::from_config(&Config::parse(
            &node_text("whole", 12, "", &[])?,
            dir,
        )?)?
        .generate("tiny-llama", prompt, &[("max_tokens", "24".to_string())], None)?;
        let whole = match whole.output {
            infernet_host::worlds::backend::JobOutput::Text(t) => t,
            _ => String::new(),
        };
        super::demo_pipeline::demo_pipeline(dir, spans, &client, prompt, &whole).await?;
        if !o.exit {
            println!("\n--- the network keeps serving: API {url}/v1, dashboard {url}/ (Ctrl-C stops it) ---");
            println!("curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\\n  -d '{{\"model\": \"tiny-llama\", \"max_tokens\": 16, \"messages\": [{{\"role\": \"user\", \"content\": \"hello\"}}]}}'");
            let _ = std::io::stdout().flush();
            // Killing the process is safe: every node persists each step.
            std::future::pending::<()>().await;
        }
        api.stop();
        if let Ok(client) = Arc::try_unwrap(client) {
            client.shutdown().await;
        }
        verifier.shutdown().await;
        for p in providers {
            p.shutdown().await;
        }
        Ok(())
    })
}

/// Serves the client's API on `addr`; when that port is taken (another
/// demo, another server), on a free loopback port instead.
async fn serve_api(
    client: &Arc<Infernet>,
    addr: SocketAddr,
) -> Result<infernet_host::api::ApiServer> {
    match infernet_host::api::serve(client.clone(), addr).await {
        Ok(s) => Ok(s),
        Err(infernet_host::api::ApiStartError::Bind { source, .. }) if addr.port() != 0 => {
            eprintln!(
                "(port {} is taken: {source}; serving on a free port instead)",
                addr.port()
            );
            let any = SocketAddr::new(addr.ip(), 0);
            infernet_host::api::serve(client.clone(), any)
                .await
                .context("starting the API")
        }
        Err(e) => Err(e).context("starting the API"),
    }
}

/// The demo's spot check: drawn (p = 1), its second execution re-run by
/// the verifier, paid like a replica; the verifier's signed attestation of
/// the provider reaches the client by gossip.
async fn demo_spot_check(
    client: &Infernet,
    verifier: &Infernet,
    prompt: &str,
    name: &dyn Fn(&str) -> String,
) -> Result<()> {
    use infernet_host::sdk::VerifyPolicy;
    eprintln!("\n--- a spot check, re-run by the verifier ---");
    let opts = InferOptions {
        max_tokens: Some(24),
        max_budget: Some(Amount::parse("0.001", "USD")?),
        verify: Some(VerifyPolicy::SpotCheck(1.0)),
        ..Default::default()
    };
    let out = client
        .infer("tiny-llama", prompt, opts)
        .await
        .context("running the spot-checked job")?;
    let v = out.verification.as_ref().context("no verification")?;
    for r in &v.replicas {
        println!(
            "replica: {} ran it for {}, trace root {}",
            name(&r.provider.to_string()),
            display(r.price.amount, &r.price.currency),
            r.trace_root.as_deref().unwrap_or("-")
        );
    }
    println!("{}", verification_line(v));
    let attester = verifier.peer_id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let rows = client.store().attestations().by(&attester, 0, 10)?;
        if let Some(a) = rows.first() {
            println!(
                "attestation: the verifier signed `{}` for {} (job {}), gossiped on infernet/attestations/1",
                a.outcome,
                name(&a.subject),
                a.job_id
            );
            break;
        }
        if std::time::Instant::now() > deadline {
            println!("attestation: none from the verifier reached the client yet");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}
