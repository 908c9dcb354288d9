//! Network commands: `node start`, `infer --network`, `peers`, `jobs`.

use anyhow::{bail, Context, Result};
use infernet_host::config::{Config, Role};
use infernet_host::p2p::WireOutput;
use infernet_host::payments::display;
use infernet_host::sdk::{InferOptions, Infernet, JobOutcome, StreamEvent, Verdict, Verification};
use infernet_host::store::{JobRecord, PeerRecord, Store};
use infernet_host::verify::reputation::{self, Params, Score};
use std::io::Write;
use std::path::Path;

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `infernet node start`: runs until killed. Prints `peer <id>` and one
/// `listen <multiaddr>` line per address on stdout (scripts read these).
/// State is persisted before every step, so killing it is always safe.
/// `verifier`: `infernet verifier start`, the same node in role `verifier`.
/// `api`: serve the OpenAI-compatible API there (else `[api] listen`, if
/// set); the node then prints `api http://ADDR`.
pub fn node_start(config: &Path, verifier: bool, api: Option<&str>) -> Result<()> {
    let mut config = Config::load(config)?;
    if let Some(listen) = api {
        config.api.get_or_insert_with(Default::default).listen = Some(listen.to_string());
    }
    let api_listen = match config.api.as_ref().and_then(|a| a.listen.as_deref()) {
        Some(l) => {
            let addr: std::net::SocketAddr = l
                .parse()
                .with_context(|| format!("--api / [api] listen: `{l}` is not HOST:PORT"))?;
            let no_keys = config.api.as_ref().is_none_or(|a| a.keys.is_empty());
            infernet_host::config::check_exposure(addr, no_keys)
                .map_err(|m| anyhow::anyhow!("--api / [api] listen: {m}"))?;
            Some(addr)
        }
        None => None,
    };
    if verifier {
        // `verifier start`: the verifier role, and nothing else of a
        // provider's (a verifier takes no ordinary jobs).
        if config.backend.is_empty() {
            anyhow::bail!(
                "a verifier re-runs jobs: add the [[backend]] (and [[payment]]) it runs them with"
            );
        }
        if !config.node.roles.contains(&Role::Verifier) {
            config.node.roles = vec![Role::Verifier];
        }
    }
    runtime()?.block_on(async move {
        let node = std::sync::Arc::new(
            Infernet::new(config)
                .on_load(super::progress::node_loading(false))
                .start()
                .await
                .context("starting the node")?,
        );
        let api = match api_listen {
            Some(addr) => Some(
                infernet_host::api::serve(node.clone(), addr)
                    .await
                    .context("starting the API")?,
            ),
            None => None,
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "peer {}", node.peer_id())?;
        for a in node.dialable_addrs().await? {
            writeln!(out, "listen {a}")?;
        }
        let roles: Vec<String> = node
            .roles()
            .iter()
            .map(|r| format!("{r:?}").to_lowercase())
            .collect();
        writeln!(out, "roles {}", roles.join(","))?;
        if let Some(n) = node.node() {
            writeln!(out, "models {}", n.models().join(","))?;
        }
        if let Some(api) = &api {
            writeln!(out, "api {}", api.url())?;
        }
        out.flush()?;
        drop(out);
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Options of `infer --network`.
pub struct NetworkInfer<'a> {
    pub config: &'a Path,
    pub model: &'a str,
    pub prompt: &'a str,
    pub opts: InferOptions,
    pub json: bool,
}

/// `infernet infer --network`: one job on the network, tokens streamed.
pub fn infer(a: NetworkInfer<'_>) -> Result<()> {
    let config = Config::load(a.config)?;
    runtime()?.block_on(async move {
        // One job and out: unfinished jobs are resumed by `node start`.
        let node = Infernet::new(config)
            .resume_unfinished(false)
            .start()
            .await
            .context("starting the client node")?;
        let started = std::time::Instant::now();
        // No provider of the whole model, but spans of it that cover it: a pipeline.
        if node.client().pipeline_needed(a.model).await? {
            let result = super::pipeline::infer(&node, a.model, a.prompt, &a.opts, a.json).await;
            node.shutdown().await;
            return result;
        }
        let mut stream = node
            .infer_stream(a.model, a.prompt, a.opts)
            .await
            .context("submitting the job")?;
        while let Some(event) = stream.next().await {
            match event {
                StreamEvent::Assigned {
                    provider,
                    price,
                    attempt,
                } => eprintln!(
                    "[attempt {attempt}: provider {provider}, price {} {}]",
                    price.amount, price.currency
                ),
                StreamEvent::Token(t) if !a.json => {
                    print!("{t}");
                    let _ = std::io::stdout().flush();
                }
                StreamEvent::Token(_) => {}
                StreamEvent::Failover { from, reason } => {
                    eprintln!("\n[provider {from} failed: {reason}; failing over]")
                }
            }
        }
        let outcome = stream
            .finish()
            .await
            .context("running the job on the network")?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&outcome_json(&outcome))?);
        } else {
            println!();
            if let Some(v) = &outcome.verification {
                println!("{}", verification_line(v));
            }
            print_outcome(&outcome, started.elapsed());
        }
        node.shutdown().await;
        Ok(())
    })
}

pub(super) fn print_outcome(o: &JobOutcome, took: std::time::Duration) {
    let u = o.usage();
    let b = &o.signed.payload.backend;
    eprintln!(
        "[job {} served by {} in {:.2}s: {} in / {} out tokens, price {}, backend {} {} (sha256 {}…), signature verified]",
        o.job_id,
        o.provider,
        took.as_secs_f64(),
        u.input_tokens,
        u.output_tokens,
        display(o.price.amount, &o.price.currency),
        b.name,
        b.version,
        &b.sha256[..b.sha256.len().min(12)],
    );
}

/// `verification: <policy>: …`, what `infer --network` prints after the output.
pub(super) fn verification_line(v: &Verification) -> String {
    let policy = &v.policy;
    match &v.verdict {
        Verdict::Agreed => {
            let mut extra: std::collections::BTreeMap<&str, u64> = Default::default();
            for m in &v.cost {
                let e = extra.entry(m.currency.as_str()).or_default();
                *e = e.saturating_add(m.amount);
            }
            let cost = if extra.is_empty() {
                "no extra cost".to_string()
            } else {
                let sums: Vec<String> = extra.iter().map(|(c, a)| display(*a, c)).collect();
                format!("extra cost {}", sums.join(" + "))
            };
            let audit = match &v.audit {
                Some(a) if a.attested => format!("; verifier {} attested it", a.verifier),
                Some(a) => format!(
                    "; verifier {} did not attest it: {}",
                    a.verifier,
                    a.error.as_deref().unwrap_or("it found another result")
                ),
                None => String::new(),
            };
            format!(
                "verification: {policy}: agreed by {} providers ({cost}){audit}",
                v.replicas.len()
            )
        }
        Verdict::Cheated {
            providers,
            evidence,
        } => format!(
            "verification: {policy}: cheated: {} (refunded); evidence: {}",
            providers.join(", "),
            evidence.display()
        ),
        Verdict::NoFault { evidence } => format!(
            "verification: {policy}: the replicas differed by float noise, ruled honest; evidence: {}",
            evidence.display()
        ),
        Verdict::Unchecked => {
            format!("verification: {policy}: not drawn this time (one provider)")
        }
    }
}

fn outcome_json(o: &JobOutcome) -> serde_json::Value {
    serde_json::json!({
        "job_id": o.job_id,
        "provider": o.provider.to_string(),
        "attempts": o.attempts,
        "price": infernet_host::payments::money_json(o.price.amount, &o.price.currency),
        "output": match &o.output { WireOutput::Text(t) => serde_json::json!(t), other => serde_json::json!(format!("{other:?}")) },
        "signed_result": o.signed.payload.value(),
        "verification": serde_json::to_value(&o.verification).unwrap_or_default(),
    })
}

fn open_store(config: &Path) -> Result<Store> {
    let config = Config::load(config)?;
    let dir = &config.node.data_dir;
    if !dir.join(infernet_host::store::DB_FILE).exists() {
        bail!(
            "no node state in {}: start the node first (`infernet node start --config ...`)",
            dir.display()
        );
    }
    Store::open_in_dir(dir).with_context(|| format!("opening the store in {}", dir.display()))
}

/// `infernet peers`: REP and OK/KO are the service record (results
/// delivered or not); VERIFIED is the reputation selection reads (verified
/// outcomes only, `verify::reputation`), `!` when barred.
pub fn peers(config: &Path, json: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let store = open_store(config)?;
    let peers = store.peers().list()?;
    let me = infernet_host::p2p::load_or_create_identity(&cfg.node.data_dir)?
        .public()
        .to_peer_id()
        .to_string();
    let ids: Vec<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    let params = Params::from_config(&cfg.client.reputation);
    let scores = reputation::scores(&store, &me, &ids, &params, infernet_host::store::now_ms())?;
    if json {
        let rows: Vec<_> = peers.iter().zip(&scores).map(peer_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<54} {:>8} {:>6} {:>5} {:>9} {:<24} ADDRS",
        "PEER", "RTT(ms)", "REP", "OK/KO", "VERIFIED", "MODELS"
    );
    for (p, s) in peers.iter().zip(&scores) {
        println!(
            "{:<54} {:>8} {:>6.2} {:>5} {:>8.2}{} {:<24} {}",
            p.peer_id,
            p.latency_ms.map_or("-".into(), |l| l.to_string()),
            p.reputation,
            format!("{}/{}", p.successes, p.failures),
            s.lower,
            if s.barred { "!" } else { " " },
            p.models.join(","),
            p.addrs.join(" ")
        );
    }
    Ok(())
}

fn peer_json((p, s): (&PeerRecord, &Score)) -> serde_json::Value {
    serde_json::json!({
        "peer_id": p.peer_id, "addrs": p.addrs, "models": p.models,
        "last_seen_ms": p.last_seen_ms, "latency_ms": p.latency_ms,
        "reputation": p.reputation, "successes": p.successes, "failures": p.failures,
        "verified": {
            "score": s.lower, "mean": s.mean, "barred": s.barred,
            // Decayed masses; `bad` counts a cheat `cheat_weight` times.
            "first_hand": { "ok": s.first_hand.ok, "bad": s.first_hand.bad },
            "attested": { "ok": s.third_party.ok, "bad": s.third_party.bad },
        },
    })
}

/// `infernet jobs`.
pub fn jobs(config: &Path, json: bool, limit: usize) -> Result<()> {
    let store = open_store(config)?;
    let jobs = store.jobs().list(limit)?;
    if json {
        let rows = jobs
            .iter()
            .map(|j| job_json(&store, j))
            .collect::<Result<Vec<_>>>()?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<10} {:<14} {:>3} {:<54} ERROR",
        "JOB", "ROLE", "STATE", "MODEL", "TRY", "PROVIDER"
    );
    for j in &jobs {
        println!(
            "{:<20} {:<8} {:<10} {:<14} {:>3} {:<54} {}",
            j.id,
            j.role.as_str(),
            j.state.as_str(),
            j.model,
            j.attempts,
            j.provider_peer.as_deref().unwrap_or("-"),
            j.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn job_json(store: &Store, j: &JobRecord) -> Result<serde_json::Value> {
    let events: Vec<_> = store
        .jobs()
        .events(&j.id)?
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "from": e.from.map(|s| s.as_str()), "to": e.to.as_str(),
                "detail": e.detail, "at_ms": e.at_ms,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "id": j.id, "role": j.role.as_str(), "state": j.state.as_str(), "model": j.model,
        "client": j.client_peer, "provider": j.provider_peer, "quote_id": j.quote_id,
        "attempts": j.attempts, "error": j.error, "created_at_ms": j.created_at_ms,
        "updated_at_ms": j.updated_at_ms, "output_hash": j.result.as_ref().and_then(|r| r.get("output_hash")).cloned(),
        "events": events,
    }))
}

pub(super) fn abs_dir(p: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(p)?;
    std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

pub(super) fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}
