//! `infernet zk ...`: a model publisher's Groth16 setup, signed so that
//! clients can pin the publisher instead of trusting each provider's setup.

use anyhow::{Context, Result};
use clap::Subcommand;
use infernet_verifier::commit::{commit_model, fr_to_hex};
use infernet_verifier::{groth16, InputMode, KeyBundle, MlpShape, QuantizedMlp};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ZkCommand {
    /// Run the Groth16 setup for a quantized-MLP model and sign the keys:
    /// writes `<out>/<stem>.pk` and `<out>/<stem>.keys.json` (give the
    /// bundle to providers as `proof_keys`, the publisher key to clients).
    /// The setup's randomness lives only in this process.
    Setup {
        /// The model directory (config.json `model_type` `"quantized-mlp"` or `"quantized-cnn"`).
        #[arg(long)]
        model: PathBuf,
        /// The publisher's secret key file (`infernet plugin keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Keys for the baked-weights circuit (weights as constants: one key
        /// per model, proofs many times faster; providers configure
        /// `proof = "groth16-baked"`) instead of committed weights (one key
        /// per shape, `proof = "groth16"`).
        #[arg(long)]
        baked: bool,
    },
    /// Check a key bundle (signature, verifying key, proving key file) and
    /// print what it vouches for; with --publisher, that it is by that key.
    Check {
        /// The bundle (`<stem>.keys.json`).
        bundle: PathBuf,
        /// Hex public key the bundle must be signed by.
        #[arg(long)]
        publisher: Option<String>,
    },
}

pub fn run(cmd: ZkCommand) -> Result<()> {
    match cmd {
        ZkCommand::Setup {
            model,
            key,
            out,
            baked,
        } => {
            let key = super::plugin::read_key(&key)?;
            let mlp = QuantizedMlp::from_model_dir(&model).with_context(|| {
                format!(
                    "{} is not a quantized-mlp or quantized-cnn model dir (config.json `model_type`)",
                    model.display()
                )
            })?;
            let shape = MlpShape::of(&mlp, InputMode::Public)?;
            let commitment = fr_to_hex(&commit_model(&mlp)?);
            let started = std::time::Instant::now();
            let (system, kind) = match baked {
                true => (infernet_verifier::baked::SYSTEM, "baked-weights"),
                false => (infernet_verifier::GROTH16_SYSTEM, "committed-weights"),
            };
            let what = format!("Groth16 {kind} setup for dims {:?}", shape.dims);
            let bar = super::progress::spinner(what.clone(), false);
            if bar.is_hidden() {
                eprintln!("running the {what}…");
            }
            let (pk, _vk) = match baked {
                true => infernet_verifier::baked::setup(&mlp, &mut rand::rngs::OsRng)?,
                false => groth16::setup(&shape, &mut rand::rngs::OsRng)?,
            };
            bar.set_message("writing the signed key bundle");
            let (path, bundle) = KeyBundle::write(&out, system, &commitment, &shape, &pk, &key)?;
            bar.finish_and_clear();
            println!("bundle {}", path.display());
            println!("model_commitment {}", bundle.statement.model_commitment);
            println!("vk_id {}", bundle.statement.vk_id);
            println!("publisher {}", bundle.publisher);
            eprintln!(
                "setup done in {:.1} s; providers: `proof_keys = {:?}`; clients: `[client.proof_pins.<model>] publisher = \"{}\"`",
                started.elapsed().as_secs_f64(),
                path.display(),
                bundle.publisher
            );
            Ok(())
        }
        ZkCommand::Check { bundle, publisher } => {
            let loaded = KeyBundle::load(&bundle, publisher.as_deref())?;
            let s = &loaded.bundle.statement;
            println!(
                "ok: {} keys for model commitment {} (dims {:?}), vk_id {}, signed by publisher {}",
                s.system, s.model_commitment, s.dims, s.vk_id, loaded.bundle.publisher
            );
            Ok(())
        }
    }
}
