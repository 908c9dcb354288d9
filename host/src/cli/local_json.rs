//! `infernet infer --json` on a local backend: what a plugin author
//! compares against a reference. The generated text, each streamed piece
//! with the token ids the plugin says it came from (`emit-token-ids`), all
//! of those ids, the usage, and with `--logits` the logits the backend
//! returns for `emit_logits=true` (`[steps, vocab]`, greedy).

use anyhow::{bail, Result};
use infernet_host::node::Node;
use infernet_host::worlds::backend::{JobOutput, ProgressEvent};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// One streamed piece: its text and the ids it was decoded from (`None`
/// when the plugin used plain `emit-token`).
#[derive(Default)]
struct Pieces {
    pieces: Vec<(Option<Vec<u32>>, String)>,
    pending: Option<Vec<u32>>,
}

/// Runs the job and prints one JSON object.
pub fn run(
    node: &Node,
    model: &str,
    prompt: &str,
    params: &[(&str, String)],
    logits: bool,
) -> Result<()> {
    let mut params = params.to_vec();
    if logits {
        if params.iter().any(|(k, _)| *k == "emit_logits") {
            bail!("--logits sets the parameter emit_logits itself; drop --param emit_logits");
        }
        params.push(("emit_logits", "true".to_string()));
    }
    let seen = Arc::new(Mutex::new(Pieces::default()));
    let sink = {
        let seen = seen.clone();
        Box::new(move |e: ProgressEvent| {
            let Ok(mut seen) = seen.lock() else { return };
            match e {
                ProgressEvent::TokenIds(ids) => seen.pending = Some(ids),
                ProgressEvent::Token(text) => {
                    let ids = seen.pending.take();
                    seen.pieces.push((ids, text));
                }
                ProgressEvent::Progress { .. } => {}
            }
        })
    };
    let result = node.generate(model, prompt, &params, Some(sink))?;
    let seen = std::mem::take(
        &mut *seen
            .lock()
            .map_err(|_| anyhow::anyhow!("stream poisoned"))?,
    );
    let streamed: String = seen.pieces.iter().map(|(_, t)| t.as_str()).collect();
    // Every id, when every piece said which ids it came from.
    let token_ids: Option<Vec<u32>> = seen
        .pieces
        .iter()
        .map(|(ids, _)| ids.clone())
        .collect::<Option<Vec<_>>>()
        .map(|all| all.concat());
    let mut out = json!({
        "model": model,
        "usage": {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
        },
        "tokens": seen.pieces.iter().map(|(ids, text)| json!({"ids": ids, "text": text})).collect::<Vec<_>>(),
        "token_ids": token_ids,
    });
    match result.output {
        JobOutput::Text(text) => out["text"] = json!(text),
        JobOutput::Logits(t) if logits => {
            out["text"] = json!(streamed);
            out["logits"] = json!({"shape": t.shape, "data": t.data});
        }
        JobOutput::Logits(_) => bail!("the backend returned logits where text was asked for"),
        _ if logits => bail!("the backend did not return logits for emit_logits=true; does it support that parameter?"),
        _ => bail!("the backend for `{model}` did not return text; is it a generation model?"),
    }
    println!("{out}");
    Ok(())
}
