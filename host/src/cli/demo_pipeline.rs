//! The demo's pipeline: tiny-llama served by two providers that each hold
//! one of its two layers (`layers = "0..1"`, `"1..2"`), a paid generation
//! routed through both, and its text checked against the whole model run
//! on one node.

use anyhow::{Context, Result};
use infernet_host::config::Config;
use infernet_host::p2p::WireInput;
use infernet_host::payments::display;
use infernet_host::sdk::{Amount, Infernet, PipelineOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts a provider per `(name, config text)` (span providers of
/// tiny-llama), generates after `prompt` on the pipeline they form, and
/// prints each stage and whether the text is the whole model's.
pub(super) async fn demo_pipeline(
    dir: &Path,
    spans: Vec<(String, String)>,
    client: &Infernet,
    prompt: &str,
    whole_model: &str,
) -> Result<()> {
    println!("\n--- one model on two providers: a pipeline of layer spans ---");
    let mut nodes = Vec::new();
    for (name, text) in &spans {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        let node = Infernet::new(Config::load(&path)?)
            .start()
            .await
            .with_context(|| format!("starting {name}"))?;
        let models = node.node().map(|n| n.models()).unwrap_or_default();
        eprintln!("{name}  {}  serves {}", node.peer_id(), models.join(", "));
        nodes.push((name.clone(), node));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let ids: Vec<String> = nodes
        .iter()
        .flat_map(|(_, n)| n.node().map(|n| n.models()).unwrap_or_default())
        .collect();
    loop {
        let adverts = client.network().adverts().await?;
        if ids
            .iter()
            .all(|id| adverts.iter().any(|a| a.models.contains(id)))
        {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("(the client did not hear of both span providers within 15 s)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opts = PipelineOptions {
        max_tokens: 24,
        // Every stage step is a job, each at least the provider's minimum.
        max_budget: Some(Amount::parse("0.01", "USD")?),
        decode: true,
        ..PipelineOptions::default()
    };
    let out = client
        .generate_pipeline("tiny-llama", WireInput::Text(prompt.into()), opts)
        .await
        .context("running the pipeline")?;
    let (text, kept) = out.text.clone().unwrap_or_default();
    println!("{text}");
    let name = |peer: &str| {
        nodes
            .iter()
            .find(|(_, n)| n.peer_id().to_string() == peer)
            .map_or(peer.to_string(), |(name, _)| name.clone())
    };
    for s in &out.stages {
        let price: Vec<String> = s
            .price
            .iter()
            .map(|m| display(m.amount, &m.currency))
            .collect();
        println!(
            "stage {}: {} ran {} paid jobs (one per token, and the text), {}",
            s.span_id,
            name(&s.providers[0].to_string()),
            s.jobs.len(),
            price.join(" + ")
        );
    }
    println!(
        "pipeline: {} prompt + {kept} tokens, {} bytes of hidden states between the stages, first token after {} ms, {:.2} s in all",
        out.prompt_tokens,
        out.hidden_bytes,
        out.first_token_ms,
        out.total_ms as f64 / 1000.0
    );
    println!(
        "the same text as the whole model on one node: {}",
        if text == whole_model { "yes" } else { "NO" }
    );
    for (_, n) in nodes {
        n.shutdown().await;
    }
    Ok(())
}
