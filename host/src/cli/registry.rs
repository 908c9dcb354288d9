//! `infernet registry list`: what the bootstrap registry holds, as a client
//! sees it — the rows whose signed record verifies, and the others counted
//! by why they were ignored.

use anyhow::{Context, Result};
use infernet_host::config::Config;
use infernet_host::registry::{unix_now, Registry};
use std::path::Path;

/// Fetches and verifies the registry's active rows.
pub fn list(config: &Path, json: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let reg_cfg = cfg
        .registry
        .as_ref()
        .context("the config has no [registry] table (url, anon_key_env)")?;
    let registry = Registry::from_config(reg_cfg)?;
    let me = infernet_host::p2p::load_or_create_identity(&cfg.node.data_dir)?
        .public()
        .to_peer_id();
    let records = super::net::runtime()?
        .block_on(registry.fetch(&me))
        .with_context(|| format!("reading the registry at {}", reg_cfg.url))?;
    let stats = registry.stats();
    if json {
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "peer_id": r.peer_id, "addrs": r.addrs, "models": r.models,
                    "contract": r.contract, "protocol": r.protocol,
                    "timestamp": r.timestamp, "ttl": r.ttl,
                })
            })
            .collect();
        let out = serde_json::json!({ "verified": rows, "ignored": stats.rejected });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<54} {:>7} {:<24} ADDRS", "PEER", "AGE(s)", "MODELS");
    let now = unix_now();
    for r in &records {
        println!(
            "{:<54} {:>7} {:<24} {}",
            r.peer_id,
            now.saturating_sub(r.timestamp),
            r.models.join(","),
            r.addrs.join(" ")
        );
    }
    let ignored: u64 = stats.rejected.values().sum();
    eprintln!(
        "{} verified, {ignored} ignored{}",
        records.len(),
        if ignored == 0 {
            String::new()
        } else {
            let why: Vec<String> = stats
                .rejected
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            format!(" ({})", why.join(", "))
        }
    );
    Ok(())
}
