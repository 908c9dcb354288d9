//! `infernet infer --network` for a model no single provider serves: the
//! generation runs on a pipeline of providers of its layer spans
//! (`JobClient::generate_pipeline`), and the answer names every stage.

use anyhow::{Context, Result};
use infernet_host::p2p::WireInput;
use infernet_host::payments::display;
use infernet_host::sdk::{InferOptions, Infernet};

/// Runs `prompt` through a pipeline of `model` and prints the text and
/// each stage (or, with `json`, one JSON object).
pub async fn infer(
    node: &Infernet,
    model: &str,
    prompt: &str,
    opts: &InferOptions,
    json: bool,
) -> Result<()> {
    let popts = node.client().pipeline_options(opts)?;
    if !json {
        eprintln!("[no provider serves all of `{model}`: running it on a pipeline of layer spans]");
    }
    let out = node
        .generate_pipeline(model, WireInput::Text(prompt.into()), popts)
        .await
        .context("running the pipeline on the network")?;
    let (text, kept) = out.text.clone().unwrap_or_default();
    if json {
        let mut v = out.summary_json();
        v["output"] = text.into();
        v["prompt_tokens"] = out.prompt_tokens.into();
        v["completion_tokens"] = kept.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{text}");
    for (i, s) in out.stages.iter().enumerate() {
        let providers: Vec<String> = s.providers.iter().map(|p| p.to_string()).collect();
        let price: Vec<String> = s
            .price
            .iter()
            .map(|m| display(m.amount, &m.currency))
            .collect();
        eprintln!(
            "[stage {i} {}: provider {}{}, {} jobs, price {}]",
            s.span_id,
            providers.join(" then "),
            s.replica
                .map(|r| format!(", replica {r}"))
                .unwrap_or_default(),
            s.jobs.len(),
            price.join(" + ")
        );
    }
    let total: Vec<String> = out
        .price
        .iter()
        .map(|m| display(m.amount, &m.currency))
        .collect();
    eprintln!(
        "[pipeline of {} stages: {} prompt + {kept} generated tokens in {:.2}s, first token after {} ms, {} hidden-state bytes between stages, price {}]",
        out.stages.len(),
        out.prompt_tokens,
        out.total_ms as f64 / 1000.0,
        out.first_token_ms,
        out.hidden_bytes,
        total.join(" + ")
    );
    Ok(())
}
