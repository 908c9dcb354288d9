//! Network commands: `node start`, `infer --network`, `peers`, `jobs`, and
//! the README's main job (`demo`: three providers and a client on loopback).

use anyhow::{bail, Context, Result};
use infernet_host::config::{Config, Role};
use infernet_host::p2p::WireOutput;
use infernet_host::payments::display;
use infernet_host::payments::ledger::{self, LEDGER};
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

fn print_outcome(o: &JobOutcome, took: std::time::Duration) {
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
fn verification_line(v: &Verification) -> String {
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
        "price": { "amount": o.price.amount, "currency": o.price.currency },
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

/// The README's main job: three providers (the llama plugin on a generated
/// checkpoint, each priced by pricing-flat at its own rate) and a client,
/// each its own node with its own data dir, on 127.0.0.1; the client finds
/// them through one bootstrap peer, takes quotes, and streams a job from
/// the best-ranked.
pub fn demo(plugins: &Path, dir: &Path, prompt: &str) -> Result<()> {
    let llama = plugins.join("llama");
    if !llama.join("infernet-plugin.toml").exists() {
        bail!(
            "no packed llama plugin in {}; build the plugins first (scripts/build-plugins.sh)",
            plugins.display()
        );
    }
    let model_dir = dir.join("tiny-llama");
    if !model_dir.join("model.safetensors").exists() {
        super::gen_tiny(&model_dir, "tiny", None, None)?;
    }
    let abs =
        |p: &Path| std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()));
    let (llama, model_dir, pricing) = (
        abs(&llama)?,
        abs(&model_dir)?,
        abs(&plugins.join("pricing-flat"))?,
    );
    let ledger = abs(&plugins.join("payment-ledger")).context(
        "no packed payment-ledger plugin; build the plugins first (scripts/build-plugins.sh)",
    )?;
    // Fresh node state each run; the model and compiled plugins are reused.
    let rates = [12u64, 10, 15];
    runtime()?.block_on(async move {
        let mut providers = Vec::new();
        let mut bootstrap: Option<String> = None;
        // A node serving tiny-llama at `rate`, paid through the ledger.
        let node_text = |name: &str, rate: u64, roles: &str, boot: &[String]| -> Result<String> {
            let node_dir = dir.join(name);
            let _ = std::fs::remove_file(node_dir.join(infernet_host::store::DB_FILE));
            Ok(format!(
                "# Written by `infernet demo`.\n[node]\ndata_dir = {node_dir:?}\n{roles}listen = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {boot}\nadvert_interval_secs = 1\n\n[[backend]]\nplugin = {llama:?}\n\n[[backend.models]]\nid = \"tiny-llama\"\npath = {model_dir:?}\n\n[pricing]\nplugin = {pricing:?}\n[pricing.config]\nper_input_token = 2\nper_output_token = {rate}\nminimum = 100\n\n# Paid through the local ledger; the provider cannot see the client's\n# ledger, so it takes the client's escrow statement.\n[[payment]]\nplugin = {ledger:?}\nconfirm = \"client\"\n",
                node_dir = abs_dir(&node_dir)?,
                boot = toml_list(boot),
            ))
        };
        for (i, rate) in rates.iter().enumerate() {
            let text = node_text(&format!("provider-{i}"), *rate, "", bootstrap.as_slice())?;
            // The dearest provider also serves as the client's referee.
            let text = match i {
                2 => format!("{text}\n# Rules on the client's disputes (it runs no replica of them).\n[verify]\nreferee = true\n"),
                _ => text,
            };
            let path = dir.join(format!("provider-{i}.toml"));
            std::fs::write(&path, text)?;
            let node = Infernet::new(Config::load(&path)?)
                .start()
                .await
                .with_context(|| format!("starting provider-{i}"))?;
            let addr = node.dialable_addrs().await?.into_iter().next().context("provider has no address")?;
            eprintln!("provider-{i}  {}  {addr}  pricing-flat: {rate}/output token", node.peer_id());
            bootstrap.get_or_insert(addr.to_string());
            providers.push(node);
        }
        // A verifier: re-runs the client's drawn spot checks, paid like a
        // replica, and attests what it finds.
        let path = dir.join("verifier.toml");
        std::fs::write(&path, node_text("verifier", 11, "roles = [\"verifier\"]\n", bootstrap.as_slice())?)?;
        let verifier = Infernet::new(Config::load(&path)?).start().await.context("starting the verifier")?;
        eprintln!("verifier    {}  (infernet verifier start): re-runs spot checks, attests", verifier.peer_id());
        let client_dir = dir.join("client");
        let _ = std::fs::remove_file(client_dir.join(infernet_host::store::DB_FILE));
        let text = format!(
            "# Written by `infernet demo`.\n[node]\ndata_dir = {:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {}\n\n[[payment]]\nplugin = {ledger:?}\n\n# Every job on two providers, compared call for call; provider-2 referees;\n# a drawn spot check is re-run by the verifier.\n[verify]\npolicy = \"replicate(2)\"\nreferees = [\"{}\"]\nverifiers = [\"{}\"]\n",
            abs_dir(&client_dir)?,
            toml_list(bootstrap.as_slice()),
            providers[2].peer_id(),
            verifier.peer_id()
        );
        let path = dir.join("client.toml");
        std::fs::write(&path, text)?;
        let client = Infernet::new(Config::load(&path)?).start().await.context("starting the client")?;
        eprintln!("client      {}  (bootstrap: provider-0 only)", client.peer_id());
        let wallet = client.payments().and_then(|p| p.adapter(LEDGER)).context("the client has no ledger")?;
        let me = wallet.account.clone();
        let funded = ledger::fund(wallet.plugin.kv(), &me, "USD", 1_000_000)?;
        eprintln!("client wallet funded on its local ledger: {}", display(funded, "USD"));
        let mut names: Vec<(String, String)> = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.peer_id().to_string(), format!("provider-{i}")))
            .collect();
        names.push((verifier.peer_id().to_string(), "verifier".into()));
        let name = |peer: &str| {
            names.iter().find(|(p, _)| p == peer).map_or(peer.to_string(), |(_, n)| n.clone())
        };
        // Wait until every provider (and the verifier) is known, so the
        // choice is among all three.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let n = client.network().providers_of("tiny-llama").await?.len();
            if n > providers.len() || std::time::Instant::now() > deadline {
                eprintln!("client discovered {n} providers of tiny-llama");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        eprintln!("prompt: {prompt:?}\n--- streamed over /infernet/job/2 (random weights: the words are noise) ---");
        let started = std::time::Instant::now();
        let opts = InferOptions { max_tokens: Some(24), max_budget: Some(1_000), ..Default::default() };
        let mut stream = client.infer_stream("tiny-llama", prompt, opts).await?;
        while let Some(event) = stream.next().await {
            match event {
                StreamEvent::Token(t) => {
                    print!("{t}");
                    let _ = std::io::stdout().flush();
                }
                StreamEvent::Assigned { provider, price, .. } => {
                    eprintln!("[assigned to {} at {}]", name(&provider.to_string()), display(price.amount, &price.currency))
                }
                StreamEvent::Failover { from, reason } => {
                    eprintln!("\n[{} failed: {reason}; failing over]", name(&from.to_string()))
                }
            }
        }
        let outcome = stream.finish().await.context("running the job on the network")?;
        println!();
        let quotes = client.store().quotes().for_job(&outcome.job_id)?;
        for q in &quotes {
            eprintln!("  quote {} from {}{}", display(q.price, &q.currency), name(&q.provider_peer), if q.accepted { "  <- accepted" } else { "" });
        }
        print_outcome(&outcome, started.elapsed());
        println!("served by {} ({})", name(&outcome.provider.to_string()), outcome.provider);
        let replicas: Vec<String> = match &outcome.verification {
            Some(v) => {
                for r in &v.replicas {
                    println!(
                        "replica: {} ran it, trace root {}",
                        name(&r.provider.to_string()),
                        r.trace_root.as_deref().unwrap_or("-")
                    );
                }
                println!("{}", verification_line(v));
                v.replicas.iter().map(|r| r.job_id.clone()).collect()
            }
            None => vec![outcome.job_id.clone()],
        };
        for job in &replicas {
            for e in client.store().escrows().by_job(job)? {
                println!(
                    "payment: {} held in escrow {} via {}, {} to {}",
                    display(e.amount, &e.currency),
                    e.escrow_id.as_deref().unwrap_or("-"),
                    e.adapter,
                    e.status,
                    name(e.provider_peer.as_deref().unwrap_or_default())
                );
            }
        }
        let left = ledger::balance(wallet.plugin.kv(), &me, "USD")?;
        println!("client wallet: {} -> {}", display(funded, "USD"), display(left, "USD"));
        // The receipt reaches the provider in the background.
        let server = providers.iter().find(|p| p.peer_id() == outcome.provider).context("serving provider")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let earned: Vec<_> = server.store().escrows().by_job(&outcome.job_id)?;
            let done = earned.iter().any(|e| e.status == "released");
            if done || std::time::Instant::now() > deadline {
                for e in earned {
                    println!("{} earned {} (escrow {}, {})", name(&outcome.provider.to_string()), display(e.amount, &e.currency), e.escrow_id.unwrap_or_default(), e.status);
                }
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        demo_spot_check(&client, &verifier, prompt, &name).await?;
        client.shutdown().await;
        verifier.shutdown().await;
        for p in providers {
            p.shutdown().await;
        }
        demo_cheat(plugins, dir, &llama, &model_dir, &ledger, prompt).await?;
        Ok(())
    })
}

/// The demo's spot check: drawn (p = 1), its second execution re-run by
/// the verifier, paid like a replica; the verifier's signed attestation of
/// the provider reaches the client by gossip.
async fn demo_spot_check(
    client: &Infernet,
    verifier: &Infernet,
    prompt: &str,
    name: &dyn Fn(&str) -> String,
) -> Result<()> {
    use infernet_host::sdk::VerifyPolicy;
    eprintln!("\n--- a spot check, re-run by the verifier ---");
    let opts = InferOptions {
        max_tokens: Some(24),
        max_budget: Some(1_000),
        verify: Some(VerifyPolicy::SpotCheck(1.0)),
        ..Default::default()
    };
    let out = client
        .infer("tiny-llama", prompt, opts)
        .await
        .context("running the spot-checked job")?;
    let v = out.verification.as_ref().context("no verification")?;
    for r in &v.replicas {
        println!(
            "replica: {} ran it for {}, trace root {}",
            name(&r.provider.to_string()),
            display(r.price.amount, &r.price.currency),
            r.trace_root.as_deref().unwrap_or("-")
        );
    }
    println!("{}", verification_line(v));
    let attester = verifier.peer_id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let rows = client.store().attestations().by(&attester, 0, 10)?;
        if let Some(a) = rows.first() {
            println!(
                "attestation: the verifier signed `{}` for {} (job {}), gossiped on infernet/attestations/1",
                a.outcome,
                name(&a.subject),
                a.job_id
            );
            break;
        }
        if std::time::Instant::now() > deadline {
            println!("attestation: none from the verifier reached the client yet");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The demo's second job: the same prompt on an honest node and on one
/// running a cheating build of the llama plugin (one extra op in one
/// layer) that claims the honest plugin's sha256, disputed before a
/// referee: bisection to the first diverging kernel call, the referee's
/// ruling, and the evidence checked again offline; then the liar's stake,
/// held by an arbiter node on its ledger, is slashed to the client and the
/// referee. In-process: a release node cannot be made to lie about its
/// plugin, so the liar is built here.
async fn demo_cheat(
    plugins: &Path,
    dir: &Path,
    llama: &Path,
    model: &Path,
    ledger_plugin: &Path,
    prompt: &str,
) -> Result<()> {
    use infernet_host::p2p::libp2p::identity::Keypair;
    use infernet_host::p2p::protocol::{hash_output, SignedResult, Usage, WireInput};
    use infernet_host::verify::dispute::{self, LocalParty};
    use infernet_host::verify::evidence::JobSpec;
    let cheat = plugins.join("cheat-perturb");
    if !cheat.join("infernet-plugin.toml").exists() {
        eprintln!(
            "\n(no {}: build the plugins with scripts/build-plugins.sh to see a cheat caught)",
            cheat.display()
        );
        return Ok(());
    }
    let node = |name: &str, plugin: &Path| -> Result<infernet_host::node::Node> {
        let d = abs_dir(&dir.join(name))?;
        let text = format!(
            "[node]\ndata_dir = {d:?}\n[[backend]]\nplugin = {plugin:?}\n[[backend.models]]\nid = \"tiny-llama\"\npath = {model:?}\n"
        );
        Ok(infernet_host::node::Node::from_config(&Config::parse(
            &text, dir,
        )?)?)
    };
    let (honest, liar, referee) = (
        node("honest", llama)?,
        node("liar", &abs_dir(&cheat)?)?,
        node("referee", llama)?,
    );
    let spec = JobSpec {
        model: "tiny-llama".into(),
        input: WireInput::Text(prompt.into()),
        params: vec![("max_tokens".into(), "24".into())],
    };
    let honest_sha = honest
        .backend_sha256("tiny-llama")
        .context("honest plugin")?;
    let sign = |n: &infernet_host::node::Node,
                key: &Keypair|
     -> Result<(SignedResult, infernet_host::kernels::trace::Trace, String)> {
        let req = spec.request("demo-2");
        let (r, trace) = n.run_traced(&req, None, None)?;
        let text = match r.output {
            infernet_host::worlds::backend::JobOutput::Text(t) => t,
            other => bail!("unexpected output {other:?}"),
        };
        let output = infernet_host::p2p::WireOutput::Text(text.clone());
        let usage = Usage {
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
        };
        let peer = key.public().to_peer_id().to_string();
        let mut body = infernet_host::verify::result_body(
            n,
            &req,
            hash_output(&output),
            usage,
            trace.root(),
            peer,
        )
        .context("result")?;
        body.backend.sha256 = honest_sha.clone();
        Ok((SignedResult::sign(body, key)?, trace, text))
    };
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (ra, ta, text_a) = sign(&honest, &ka)?;
    let (rb, tb, text_b) = sign(&liar, &kb)?;
    eprintln!("\n--- a cheating provider: provider-L runs a cheating build of llama and claims the honest plugin's sha256 ---");
    println!(
        "honest    {}: {text_a:?}\n          trace root {}",
        ka.public().to_peer_id(),
        ta.root().to_text()
    );
    println!(
        "provider-L {}: {text_b:?}\n          trace root {}",
        kb.public().to_peer_id(),
        tb.root().to_text()
    );
    let req = spec.request("demo-2");
    let started = std::time::Instant::now();
    let mut a = LocalParty::new(ra, ta, &honest, req.clone());
    let mut b = LocalParty::new(rb, tb, &liar, req);
    let evidence = dispute::run(&spec, &mut a, &mut b, &referee, "referee")?;
    let d = evidence.divergence.as_ref().context("no diverging call")?;
    let ops: Vec<String> = d
        .leaves
        .iter()
        .map(|l| l.as_ref().map_or("(none)".into(), |l| l.op.clone()))
        .collect();
    println!(
        "dispute: {} bisection steps to kernel call #{} (honest `{}`, provider-L `{}`), judged by {:?} in {:.0} ms",
        evidence.steps.len(),
        d.index,
        ops[0],
        ops[1],
        evidence.ruling.method,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let checked = evidence.check(Some(&referee))?;
    let path = dir.join("evidence.json");
    std::fs::write(&path, serde_json::to_string_pretty(&evidence)?)?;
    println!(
        "verdict: cheated: {} (evidence {}, checked offline; check it again with `infernet verify evidence {} --plugin {} --model {}`)",
        checked.cheated.join(", "),
        path.display(),
        path.display(),
        llama.display(),
        model.display()
    );
    demo_slash(
        dir,
        llama,
        model,
        ledger_plugin,
        &kb,
        &checked.cheated,
        &evidence,
    )
    .await
}

/// The liar had locked 0.50 USD with an arbiter (a referee node holding
/// stakes on its ledger): the ruling forfeits it, 80 % to the client and
/// 20 % to the referee, and the balances in the arbiter's books show it.
async fn demo_slash(
    dir: &Path,
    llama: &Path,
    model: &Path,
    ledger_plugin: &Path,
    liar: &infernet_host::p2p::libp2p::identity::Keypair,
    cheated: &[String],
    evidence: &infernet_host::verify::evidence::Evidence,
) -> Result<()> {
    use infernet_host::p2p::protocol::Money as WireMoney;
    use infernet_host::p2p::verification::StakeRequest;
    let arbiter_dir = abs_dir(&dir.join("arbiter"))?;
    let _ = std::fs::remove_file(arbiter_dir.join(infernet_host::store::DB_FILE));
    let text = format!(
        "[node]\ndata_dir = {arbiter_dir:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\n[[backend]]\nplugin = {llama:?}\n[[backend.models]]\nid = \"tiny-llama\"\npath = {model:?}\n\n[[payment]]\nplugin = {ledger_plugin:?}\n\n[verify]\nreferee = true\n"
    );
    let path = dir.join("arbiter.toml");
    std::fs::write(&path, text)?;
    let node = Infernet::new(Config::load(&path)?)
        .start()
        .await
        .context("starting the arbiter")?;
    let arbiter = node
        .provider()
        .and_then(|p| p.arbiter())
        .context("the arbiter node holds no stakes")?;
    let books = node
        .payments()
        .and_then(|p| p.adapter(LEDGER))
        .context("the arbiter has no ledger")?;
    let liar_id = liar.public().to_peer_id();
    let client = infernet_host::p2p::libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    ledger::fund(books.plugin.kv(), &liar_id.to_string(), "USD", 500_000)?;
    let held = arbiter.stake(
        liar_id,
        StakeRequest {
            adapter: LEDGER.into(),
            amount: WireMoney {
                amount: 500_000,
                currency: "USD".into(),
            },
            depositor: String::new(),
            withdraw: false,
        },
    )?;
    println!(
        "stake: provider-L had locked {} with the arbiter {} (escrow {}, {}; certificate valid until {})",
        display(held.amount.amount, "USD"),
        node.peer_id(),
        held.escrow_id,
        held.status,
        held.cert.as_ref().map_or(0, |c| c.payload.valid_until_ms)
    );
    let bundle = serde_json::to_vec(evidence)?;
    for s in arbiter.slash(cheated, &client, "demo-2", &bundle, None) {
        println!(
            "slashed: {} forfeits its stake: {} to the client, {} to the referee ({})",
            if s.provider == liar_id.to_string() {
                "provider-L"
            } else {
                &s.provider
            },
            display(s.to_client.amount, &s.to_client.currency),
            display(s.to_referee.amount, &s.to_referee.currency),
            s.status
        );
    }
    let balance = |who: &str| ledger::balance(books.plugin.kv(), who, "USD");
    println!(
        "arbiter's books: provider-L {}, client {}, referee {}",
        display(balance(&liar_id.to_string())?, "USD"),
        display(balance(&client)?, "USD"),
        display(balance(&books.account)?, "USD")
    );
    node.shutdown().await;
    Ok(())
}

fn abs_dir(p: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(p)?;
    std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}
