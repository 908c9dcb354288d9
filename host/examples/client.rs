//! The client SDK against a running network: start a client node from a
//! config (its `[node] bootstrap` names a provider), run one job, print the
//! text, usage, price and who signed the result.
//!
//! ```sh
//! cargo run -p infernet-host --example client -- client.toml tiny-llama "hello"
//! ```

use infernet_host::config::Config;
use infernet_host::sdk::{Amount, InferOptions, Infernet};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(config), Some(model), Some(prompt)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: client <config.toml> <model> <prompt>");
        std::process::exit(2);
    };
    let infernet = Infernet::new(Config::load(config.as_ref())?)
        .start()
        .await?;
    let out = infernet
        .infer(
            &model,
            &prompt,
            InferOptions {
                max_budget: Some(Amount::parse("0.01", "USD")?),
                max_tokens: Some(32),
                ..Default::default()
            },
        )
        .await?;
    let usage = out.usage();
    println!("{}", out.text().unwrap_or("<non-text output>"));
    println!(
        "provider {} | {} in / {} out tokens | price {} {} | signed result verifies: {}",
        out.provider,
        usage.input_tokens,
        usage.output_tokens,
        out.price.amount,
        out.price.currency,
        out.signed
            .verify_output(&infernet_host::p2p::protocol::Encoded::new(
                out.output.clone()
            )?)
            .is_ok()
    );
    infernet.shutdown().await;
    Ok(())
}
