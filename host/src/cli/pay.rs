//! `infernet wallet`, `escrow` and `stake`: the money side of a node, read
//! from its store and moved through its configured payment adapters.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use infernet_host::config::Config;
use infernet_host::payments::ledger::{self, LEDGER};
use infernet_host::payments::{display, Amount, Payments};
use infernet_host::runtime::Runtime;
use infernet_host::store::{EscrowKind, EscrowRecord, Store};
use infernet_host::worlds::payment::{EscrowRequest, Money};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Subcommand)]
pub enum WalletCommand {
    /// Credit an account of the local ledger (local networks and tests).
    Fund {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Amount in whole units, exact decimal (`2.5`).
        amount: String,
        /// Currency code.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Account to credit (default: this node's account at the ledger).
        #[arg(long)]
        account: Option<String>,
    },
    /// Balances of the local ledger.
    Balance {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Only this account (default: all).
        #[arg(long)]
        account: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum EscrowCommand {
    /// Escrows this node paid into, earns from or staked, newest first.
    List {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One escrow (host id = the job's wire id, or the adapter's id).
    Show {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Escrow id.
        id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hand a payment provider's webhook to its adapter: the adapter
    /// verifies the signature and applies the event; the escrow's row is
    /// updated. Pipe the raw body in on stdin (for a relay in front of the node).
    Webhook {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Adapter name, e.g. `payment-coinpay`.
        #[arg(long)]
        adapter: String,
        /// A request header `Name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Money per provider: released, held and refunded, by currency.
    Earnings {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum StakeCommand {
    /// Lock stake with the network's arbiter (an escrow the verifier can slash).
    Post {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Amount in whole units, exact decimal.
        amount: String,
        /// Currency code.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Payment adapter (default: the first configured).
        #[arg(long)]
        adapter: Option<String>,
        /// The arbiter's account: slashed stake goes there.
        #[arg(long, default_value = "infernet-arbiter")]
        arbiter: String,
        /// Lock period in days.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// This node's stakes, refreshed from the adapter.
    Show {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw a stake (refund to this node).
    Withdraw {
        /// Node config file.
        #[arg(long)]
        config: PathBuf,
        /// Stake id (default: every open stake).
        id: Option<String>,
    },
}

/// A node's store and payment adapters, opened for one command.
struct Opened {
    store: Arc<Store>,
    payments: Payments,
}

fn open(config_path: &Path) -> Result<Opened> {
    let config = Config::load(config_path)?;
    let dir = config.node.data_dir.clone();
    let store = Arc::new(
        Store::open_in_dir(&dir)
            .with_context(|| format!("opening the store in {}", dir.display()))?,
    );
    let key = infernet_host::p2p::load_or_create_identity(&dir)?;
    let runtime = Runtime::new(&dir.join("cache").join("compiled"))
        .map_err(|e| anyhow::anyhow!("cannot start the wasm engine: {e:#}"))?;
    let payments = Payments::load(&config, &runtime, &store, &key.public().to_peer_id().to_string())?
        .with_context(|| {
            format!(
                "{} has no [[payment]] adapter; add one (e.g. plugin = \"target/plugins/payment-ledger\")",
                config_path.display()
            )
        })?;
    Ok(Opened { store, payments })
}

fn parse_amount(text: &str, currency: &str) -> Result<u64> {
    let a = Amount::parse(text, currency)
        .with_context(|| format!("`{text}` is not an amount of {currency}"))?;
    Ok(a.to_u64()?)
}

pub fn wallet(cmd: WalletCommand) -> Result<()> {
    match cmd {
        WalletCommand::Fund {
            config,
            amount,
            currency,
            account,
        } => {
            let m = open(&config)?;
            let ledger = m
                .payments
                .adapter(LEDGER)
                .context("`wallet fund` credits the local ledger: configure [[payment]] plugin = \".../payment-ledger\"")?;
            if !ledger.currencies.contains(&currency) {
                bail!(
                    "the ledger does not move {currency}; it moves {}",
                    ledger.currencies.join(", ")
                );
            }
            let minor = parse_amount(&amount, &currency)?;
            let account = account.unwrap_or_else(|| ledger.account.clone());
            let new = ledger::fund(ledger.plugin.kv(), &account, &currency, minor)?;
            println!(
                "funded {account}: +{} -> {}",
                display(minor, &currency),
                display(new, &currency)
            );
            Ok(())
        }
        WalletCommand::Balance {
            config,
            account,
            json,
        } => {
            let m = open(&config)?;
            let ledger = m
                .payments
                .adapter(LEDGER)
                .context("`wallet balance` reads the local ledger: configure [[payment]] plugin = \".../payment-ledger\"")?;
            let rows = ledger::balances(ledger.plugin.kv(), account.as_deref())?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(a, c, n)| serde_json::json!({"account": a, "currency": c, "minor": n.to_string(), "amount": display(*n, c)}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<54} {:>28}", "ACCOUNT", "BALANCE");
                for (a, c, n) in &rows {
                    println!("{a:<54} {:>28}", display(*n, c));
                }
            }
            Ok(())
        }
    }
}

fn escrow_json(e: &EscrowRecord) -> serde_json::Value {
    serde_json::json!({
        "id": e.id, "kind": e.kind.as_str(), "job_id": e.job_id, "adapter": e.adapter,
        "escrow_id": e.escrow_id, "amount_minor": e.amount.to_string(), "currency": e.currency,
        "amount": display(e.amount, &e.currency), "depositor": e.depositor,
        "beneficiary": e.beneficiary, "client_peer": e.client_peer,
        "provider_peer": e.provider_peer, "status": e.status, "confirmed_by": e.confirmed_by,
        "expires_at_ms": e.expires_at_ms, "created_at_ms": e.created_at_ms,
        "updated_at_ms": e.updated_at_ms,
    })
}

fn open_store(config: &Path) -> Result<Store> {
    let config = Config::load(config)?;
    let dir = &config.node.data_dir;
    Store::open_in_dir(dir).with_context(|| format!("opening the store in {}", dir.display()))
}

pub fn escrow(cmd: EscrowCommand) -> Result<()> {
    match cmd {
        EscrowCommand::List {
            config,
            json,
            limit,
        } => {
            let rows = open_store(&config)?.escrows().list(limit)?;
            if json {
                let v: Vec<_> = rows.iter().map(escrow_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<26} {:<5} {:<9} {:>22} {:<16} {:<20} COUNTERPARTY",
                "ID", "KIND", "STATUS", "AMOUNT", "ADAPTER", "ESCROW"
            );
            for e in &rows {
                let other = match e.kind {
                    EscrowKind::Pay => e.provider_peer.clone(),
                    EscrowKind::Earn => e.client_peer.clone(),
                    EscrowKind::Stake => Some(e.beneficiary.clone()),
                };
                println!(
                    "{:<26} {:<5} {:<9} {:>22} {:<16} {:<20} {}",
                    e.id,
                    e.kind.as_str(),
                    e.status,
                    display(e.amount, &e.currency),
                    e.adapter,
                    e.escrow_id.as_deref().unwrap_or("-"),
                    other.unwrap_or_default()
                );
            }
            Ok(())
        }
        EscrowCommand::Show { config, id, json } => {
            let store = open_store(&config)?;
            let e = store.escrows().find(&id)?.with_context(|| {
                format!("no escrow {id} in this node's store (see `infernet escrow list`)")
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&escrow_json(&e))?);
            } else {
                for (k, v) in escrow_json(&e).as_object().into_iter().flatten() {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{k:<14} {v}");
                }
            }
            Ok(())
        }
        EscrowCommand::Webhook {
            config,
            adapter,
            headers,
        } => {
            let headers = headers
                .iter()
                .map(|h| match h.split_once(':') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        Ok((k.trim().to_string(), v.trim().to_string()))
                    }
                    _ => bail!("`{h}` is not a header; write `Name: value`"),
                })
                .collect::<Result<Vec<_>>>()?;
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .context("reading the webhook body from stdin")?;
            let m = open(&config)?;
            let a = m
                .payments
                .adapter(&adapter)
                .with_context(|| format!("no [[payment]] adapter named `{adapter}`"))?;
            let escrow = a
                .plugin
                .handle_webhook(&headers, &body)
                .context("webhook refused")?;
            let status = escrow.status.name();
            match m.store.escrows().find(&escrow.id)? {
                Some(row) if !row.is_final() => {
                    m.store.escrows().update(&row.id, None, status)?;
                    println!("escrow {} ({}): {}", escrow.id, row.id, status);
                }
                Some(row) => println!("escrow {} ({}): already {}", escrow.id, row.id, row.status),
                None => println!(
                    "escrow {}: {} (not one of this node's escrows)",
                    escrow.id, status
                ),
            }
            Ok(())
        }
        EscrowCommand::Earnings { config, json } => {
            let table = open_store(&config)?.escrows().earnings()?;
            let fmt = |n: u128, c: &str| {
                u64::try_from(n).map_or(format!("{n} minor {c}"), |n| display(n, c))
            };
            if json {
                let v: Vec<_> = table
                    .iter()
                    .map(|t| {
                        let c = &t.currency;
                        serde_json::json!({"provider": t.provider, "currency": c,
                        "released": fmt(t.released, c), "released_minor": t.released.to_string(),
                        "held": fmt(t.held, c), "held_minor": t.held.to_string(),
                        "refunded": fmt(t.returned, c), "refunded_minor": t.returned.to_string(),
                        "escrows": t.escrows})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<54} {:>20} {:>20} {:>20} {:>7}",
                    "PROVIDER", "RELEASED", "HELD", "REFUNDED", "ESCROWS"
                );
                for t in &table {
                    let c = &t.currency;
                    println!(
                        "{:<54} {:>20} {:>20} {:>20} {:>7}",
                        t.provider,
                        fmt(t.released, c),
                        fmt(t.held, c),
                        fmt(t.returned, c),
                        t.escrows
                    );
                }
            }
            Ok(())
        }
    }
}

pub fn stake(cmd: StakeCommand) -> Result<()> {
    match cmd {
        StakeCommand::Post {
            config,
            amount,
            currency,
            adapter,
            arbiter,
            days,
        } => {
            let m = open(&config)?;
            let a = match &adapter {
                Some(name) => m
                    .payments
                    .adapter(name)
                    .with_context(|| format!("no [[payment]] adapter named `{name}`"))?,
                None => &m.payments.adapters()[0],
            };
            let minor = parse_amount(&amount, &currency)?;
            let now = infernet_host::store::now_ms();
            let id = format!("stake-{}", infernet_host::node::new_job_id());
            let secs = days.saturating_mul(86_400).max(1);
            let intent = EscrowRecord {
                id: id.clone(),
                kind: EscrowKind::Stake,
                job_id: None,
                adapter: a.plugin.name().to_string(),
                escrow_id: None,
                amount: minor,
                currency: currency.clone(),
                depositor: a.account.clone(),
                beneficiary: arbiter.clone(),
                client_peer: None,
                provider_peer: None,
                status: "creating".into(),
                confirmed_by: None,
                expires_at_ms: now.saturating_add(i64::try_from(secs * 1000).unwrap_or(i64::MAX)),
                created_at_ms: now,
                updated_at_ms: now,
            };
            m.store.escrows().insert_or_get(&intent)?;
            let request = EscrowRequest {
                job_id: id.clone(),
                amount: Money {
                    amount: minor,
                    currency: currency.clone(),
                },
                depositor: a.account.clone(),
                beneficiary: arbiter.clone(),
                arbiter: Some(arbiter.clone()),
                expires_in_secs: secs,
                metadata: vec![("kind".into(), "stake".into())],
            };
            let escrow = match a.plugin.create_escrow(&request) {
                Ok(e) => e,
                Err(e) => {
                    m.store.escrows().update(&id, None, "abandoned")?;
                    bail!("cannot post the stake through {}: {e}", a.plugin.name());
                }
            };
            m.store
                .escrows()
                .update(&id, Some(&escrow.id), escrow.status.name())?;
            println!(
                "stake {id}: {} locked with {arbiter} via {} (escrow {}, {}, {days} days)",
                display(minor, &currency),
                a.plugin.name(),
                escrow.id,
                escrow.status.name()
            );
            Ok(())
        }
        StakeCommand::Show { config, json } => {
            let m = open(&config)?;
            let stakes: Vec<EscrowRecord> = m
                .store
                .escrows()
                .list(usize::MAX >> 1)?
                .into_iter()
                .filter(|e| e.kind == EscrowKind::Stake)
                .collect();
            let mut out = Vec::new();
            for mut s in stakes {
                if let (Some(a), Some(eid), false) = (
                    m.payments.adapter(&s.adapter),
                    s.escrow_id.clone(),
                    s.is_final(),
                ) {
                    if let Ok(e) = a.plugin.status(&eid) {
                        s.status = e.status.name().to_string();
                        m.store.escrows().update(&s.id, None, &s.status)?;
                    }
                }
                out.push(s);
            }
            if json {
                let v: Vec<_> = out.iter().map(escrow_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<26} {:<9} {:>22} {:<16} ARBITER",
                    "STAKE", "STATUS", "AMOUNT", "ADAPTER"
                );
                for s in &out {
                    println!(
                        "{:<26} {:<9} {:>22} {:<16} {}",
                        s.id,
                        s.status,
                        display(s.amount, &s.currency),
                        s.adapter,
                        s.beneficiary
                    );
                }
            }
            Ok(())
        }
        StakeCommand::Withdraw { config, id } => {
            let m = open(&config)?;
            let stakes: Vec<EscrowRecord> = m
                .store
                .escrows()
                .open()?
                .into_iter()
                .filter(|e| e.kind == EscrowKind::Stake && id.as_ref().is_none_or(|i| *i == e.id))
                .collect();
            if stakes.is_empty() {
                bail!(
                    "no open stake{} (see `infernet stake show`)",
                    id.map(|i| format!(" {i}")).unwrap_or_default()
                );
            }
            for s in stakes {
                let a = m.payments.adapter(&s.adapter).with_context(|| {
                    format!(
                        "adapter `{}` of stake {} is not configured",
                        s.adapter, s.id
                    )
                })?;
                let eid = s
                    .escrow_id
                    .clone()
                    .with_context(|| format!("stake {} was never created", s.id))?;
                let e = a
                    .plugin
                    .refund(&eid)
                    .with_context(|| format!("withdrawing stake {}", s.id))?;
                m.store.escrows().update(&s.id, None, e.status.name())?;
                println!(
                    "stake {}: {} {}",
                    s.id,
                    display(s.amount, &s.currency),
                    e.status.name()
                );
            }
            Ok(())
        }
    }
}
