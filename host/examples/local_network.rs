//! A whole network in one process: two providers whose backend is
//! registered in code (no `[[backend]]` in their config), and a client that
//! finds them through one bootstrap address and streams a job.
//!
//! ```sh
//! scripts/build-plugins.sh
//! cargo run -p infernet-host --example local_network
//! ```

use infernet_host::config::{BackendConfig, Config, ModelConfig};
use infernet_host::sdk::{InferOptions, Infernet, StreamEvent};
use std::io::Write;
use std::path::Path;

fn echo_backend(root: &Path) -> std::io::Result<BackendConfig> {
    // The echo backend never opens its model; it still needs a model dir.
    let model = root.join("echo-model");
    infernet_host::models::fixture::write_weightless_model_dir(&model)?;
    Ok(BackendConfig {
        plugin: std::fs::canonicalize("target/plugins/echo")?,
        publisher_key: None,
        models: vec![ModelConfig {
            id: "echo".into(),
            path: model,
            ..Default::default()
        }],
        ..Default::default()
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = tempfile::tempdir()?;
    let node_toml = |name: &str, bootstrap: &[String]| {
        format!(
            "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {bootstrap:?}\nadvert_interval_secs = 1\n",
            root.path().join(name)
        )
    };
    let first = Infernet::new(Config::parse(&node_toml("provider-a", &[]), root.path())?)
        .backend(echo_backend(root.path())?)
        .start()
        .await?;
    let boot = vec![first.dialable_addrs().await?[0].to_string()];
    let second = Infernet::new(Config::parse(&node_toml("provider-b", &boot), root.path())?)
        .backend(echo_backend(root.path())?)
        .start()
        .await?;
    let client_toml = format!(
        "{}\n[client]\ndiscovery_timeout_ms = 10000\n",
        node_toml("client", &boot)
    )
    .replace("[node]\n", "[node]\nroles = [\"client\"]\n");
    let client = Infernet::new(Config::parse(&client_toml, root.path())?)
        .start()
        .await?;

    let opts = InferOptions {
        params: vec![("delay_ms".into(), "50".into())],
        ..Default::default()
    };
    let mut stream = client
        .infer_stream("echo", "tokens stream back one word at a time", opts)
        .await?;
    while let Some(event) = stream.next().await {
        match event {
            StreamEvent::Assigned {
                provider, price, ..
            } => {
                println!(
                    "assigned to {provider} at {} {}",
                    price.amount, price.currency
                )
            }
            StreamEvent::Token(t) => {
                print!("{t}");
                std::io::stdout().flush()?;
            }
            StreamEvent::Failover { from, reason } => {
                println!("\n{from} failed ({reason}), failing over")
            }
        }
    }
    let outcome = stream.finish().await?;
    println!(
        "\nserved by {} (a = {}, b = {}); signature checks: {:?}",
        outcome.provider,
        first.peer_id(),
        second.peer_id(),
        outcome
            .signed
            .verify_output(&infernet_host::p2p::protocol::Encoded::new(
                outcome.output.clone()
            )?)
            .is_ok()
    );
    for node in [client, first, second] {
        node.shutdown().await;
    }
    Ok(())
}
