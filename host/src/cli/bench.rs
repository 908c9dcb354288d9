//! `infernet bench`: plugin vs native speed, host-call overhead, instantiation.

use anyhow::Result;

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Result<()> {
    anyhow::bail!("bench: not built yet")
}
