//! `infernet verify evidence FILE`: checks a dispute's evidence bundle
//! offline and prints who cheated; exits non-zero when the bundle does not
//! prove what it claims (or cannot be checked without the plugin and
//! weights it names: `--plugin DIR --model DIR`).

use anyhow::{Context, Result};
use infernet_host::config::Config;
use infernet_host::node::Node;
use infernet_host::verify::evidence::Evidence;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum VerifyCommand {
    /// Check an evidence bundle (JSON) and print its verdict.
    Evidence {
        /// The bundle.
        file: PathBuf,
        /// The packed backend plugin the results name (for weights inputs
        /// and calls only a replay can judge).
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// The model directory with the weights the results name.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print the conclusion as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: VerifyCommand) -> Result<()> {
    let VerifyCommand::Evidence {
        file,
        plugin,
        model,
        json,
    } = cmd;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let evidence: Evidence = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an evidence bundle", file.display()))?;
    let scratch = tempdir()?;
    let node = match (&plugin, &model) {
        (Some(p), Some(m)) => Some(replayer(&scratch, p, m, &evidence.job.model)?),
        (None, None) => None,
        _ => anyhow::bail!("pass both --plugin and --model, or neither"),
    };
    let conclusion = evidence.check(node.as_ref());
    let _ = std::fs::remove_dir_all(&scratch);
    let c =
        conclusion.with_context(|| format!("{} does not prove what it claims", file.display()))?;
    if json {
        let v = serde_json::json!({
            "parties": c.parties,
            "cheated": c.cheated,
            "method": c.method,
            "call": c.call.as_ref().map(|(i, op)| serde_json::json!({"index": i, "op": op})),
            "findings": c.findings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("evidence: {} (checked)", file.display());
    for (i, p) in c.parties.iter().enumerate() {
        println!("  provider {}: {p}: {:?}", ["A", "B"][i], c.findings[i]);
    }
    if let Some((index, op)) = &c.call {
        println!(
            "  first diverging kernel call: #{index} `{op}` (judged by {:?})",
            c.method
        );
    }
    match c.cheated.as_slice() {
        [] => println!("verdict: nobody cheated (the outputs differ within honest float noise)"),
        cheats => println!("verdict: cheated: {}", cheats.join(", ")),
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "infernet-verify-{}-{}",
        std::process::id(),
        infernet_host::node::new_job_id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A node serving `model_id` from `model` with `plugin`, to replay with
/// (a pipeline stage's span id: that span of the model).
fn replayer(scratch: &Path, plugin: &Path, model: &Path, model_id: &str) -> Result<Node> {
    let (id, layers) = match infernet_host::models::span::parse_id(model_id) {
        Some((id, span)) => (id, format!("layers = {:?}\n", span.param())),
        None => (model_id, String::new()),
    };
    let text = format!(
        "[node]\ndata_dir = {:?}\n[[backend]]\nplugin = {:?}\n[[backend.models]]\nid = {id:?}\npath = {:?}\n{layers}",
        scratch.join("node"),
        plugin,
        model
    );
    let config = Config::parse(&text, scratch)?;
    Node::from_config(&config).context("cannot load the plugin and model to replay with")
}
