//! `infernet audit <job>`: everything this node's store knows about one
//! job, for a person or (`--json`) a script: the parties, the quotes, the
//! escrows, the signed result with what it binds (weights, input,
//! parameters, accepted quote, trace root, proof), the state transitions
//! (with the verification verdict), and the evidence of a dispute when
//! there was one (re-checked here as far as it can be without the model).

use anyhow::{Context, Result};
use infernet_host::config::Config;
use infernet_host::p2p::protocol::SignedResult;
use infernet_host::store::Store;
use infernet_host::verify::evidence::{decode_result, Evidence};
use serde_json::{json, Value};
use std::path::Path;

pub fn audit(config: &Path, job_id: &str, json_out: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let dir = &cfg.node.data_dir;
    anyhow::ensure!(
        dir.join(infernet_host::store::DB_FILE).exists(),
        "no node state in {}: start the node first",
        dir.display()
    );
    let store = Store::open_in_dir(dir)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let job = store.jobs().get(job_id)?.with_context(|| {
        format!(
            "no job {job_id} in {} (`infernet jobs` lists them)",
            dir.display()
        )
    })?;
    let quotes: Vec<Value> = store
        .quotes()
        .for_job(job_id)?
        .iter()
        .map(|q| json!({"id": q.id, "provider": q.provider_peer, "price": q.price, "currency": q.currency, "accepted": q.accepted}))
        .collect();
    let escrows: Vec<Value> = store
        .escrows()
        .by_job(job_id)?
        .iter()
        .map(|e| json!({"kind": format!("{:?}", e.kind), "adapter": e.adapter, "escrow_id": e.escrow_id, "amount": e.amount, "currency": e.currency, "depositor": e.depositor, "beneficiary": e.beneficiary, "status": e.status}))
        .collect();
    let signed: Option<SignedResult> = job
        .result
        .as_ref()
        .and_then(|r| r.get("signed_cbor"))
        .and_then(|v| v.as_str())
        .and_then(|h| decode_result(h).ok());
    let result = signed.as_ref().map(|s| {
        let p = &s.payload;
        json!({
            "signature": match s.verify() { Ok(peer) => format!("valid, by {peer}"), Err(e) => format!("INVALID: {e}") },
            "provider": p.provider, "client": p.client, "model": p.model_id,
            "backend": {"name": p.backend.name, "version": p.backend.version, "sha256": p.backend.sha256},
            "output_hash": p.output_hash, "usage": {"input_tokens": p.usage.input_tokens, "output_tokens": p.usage.output_tokens},
            "trace_root": p.trace_root, "proof_hash": p.proof_hash,
            "binds": p.binds.as_ref().map(|b| json!({"weights_hash": b.weights_hash, "input_hash": b.input_hash, "params": b.params, "quote": b.quote.as_ref().map(|q| json!({"id": q.id, "amount": q.price.amount, "currency": q.price.currency}))})),
        })
    });
    let events: Vec<Value> = store
        .jobs()
        .events(job_id)?
        .into_iter()
        .map(|e| json!({"from": e.from.map(|s| s.as_str()), "to": e.to.as_str(), "detail": e.detail, "at_ms": e.at_ms}))
        .collect();
    let evidence = evidence_of(dir, job_id, &events);
    let report = json!({
        "job": {"id": job.id, "role": job.role.as_str(), "state": job.state.as_str(), "model": job.model,
                "client": job.client_peer, "provider": job.provider_peer, "quote_id": job.quote_id,
                "attempts": job.attempts, "error": job.error,
                "proof_vk_id": job.result.as_ref().and_then(|r| r.get("vk_id")).cloned()},
        "quotes": quotes, "escrows": escrows, "result": result, "events": events, "evidence": evidence,
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

/// The dispute evidence this job's transitions name (or the one saved
/// under its id), summarised and checked as far as it can be here.
fn evidence_of(dir: &Path, job_id: &str, events: &[Value]) -> Value {
    let named = events
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .find_map(|d| {
            let at = d.find("evidence ")? + "evidence ".len();
            let rest = &d[at..];
            Some(rest[..rest.find([')', ' ', ';']).unwrap_or(rest.len())].to_string())
        });
    let path = named
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.join("evidence").join(format!("{job_id}.json")));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Value::Null;
    };
    let Ok(e) = serde_json::from_str::<Evidence>(&text) else {
        return json!({"path": path, "check": "does not parse as an evidence bundle"});
    };
    let check = match e.check(None) {
        Ok(c) => format!("holds: cheated {:?}", c.cheated),
        Err(err) => format!("{err}"),
    };
    json!({
        "path": path, "referee": e.ruling.referee, "method": e.ruling.method,
        "cheated": e.ruling.cheated, "findings": e.ruling.findings,
        "call": e.divergence.as_ref().map(|d| d.index), "check": check,
    })
}

fn print_report(r: &Value) {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let j = &r["job"];
    println!(
        "job {} ({}, {}), model {}",
        s(&j["id"]),
        s(&j["role"]),
        s(&j["state"]),
        s(&j["model"])
    );
    println!(
        "  client   {}\n  provider {}\n  attempts {}",
        s(&j["client"]),
        s(&j["provider"]),
        s(&j["attempts"])
    );
    if !j["error"].is_null() {
        println!("  error    {}", s(&j["error"]));
    }
    println!("quotes:");
    for q in r["quotes"].as_array().into_iter().flatten() {
        println!(
            "  {} {} {} from {}{}",
            s(&q["id"]),
            s(&q["price"]),
            s(&q["currency"]),
            s(&q["provider"]),
            if q["accepted"] == true {
                "  <- accepted"
            } else {
                ""
            }
        );
    }
    println!("escrows:");
    for e in r["escrows"].as_array().into_iter().flatten() {
        println!(
            "  {} {} via {} ({}): {} {} {} -> {}",
            s(&e["kind"]),
            s(&e["escrow_id"]),
            s(&e["adapter"]),
            s(&e["status"]),
            s(&e["amount"]),
            s(&e["currency"]),
            s(&e["depositor"]),
            s(&e["beneficiary"])
        );
    }
    match &r["result"] {
        Value::Null => println!("result: none"),
        res => {
            println!("result: signature {}", s(&res["signature"]));
            println!(
                "  backend {} {} sha256 {}",
                s(&res["backend"]["name"]),
                s(&res["backend"]["version"]),
                s(&res["backend"]["sha256"])
            );
            println!(
                "  output {}  usage {}",
                s(&res["output_hash"]),
                s(&res["usage"])
            );
            println!("  trace root {}", s(&res["trace_root"]));
            if !res["proof_hash"].is_null() {
                println!(
                    "  proof {} (vk {})",
                    s(&res["proof_hash"]),
                    s(&r["job"]["proof_vk_id"])
                );
            }
            if let Some(b) = res["binds"].as_object() {
                println!(
                    "  weights {}  input {}",
                    s(&b["weights_hash"]),
                    s(&b["input_hash"])
                );
                println!("  params {}  quote {}", s(&b["params"]), s(&b["quote"]));
            }
        }
    }
    println!("transitions:");
    for e in r["events"].as_array().into_iter().flatten() {
        println!(
            "  {} -> {}  {}",
            s(&e["from"]),
            s(&e["to"]),
            s(&e["detail"])
        );
    }
    if let Some(e) = r["evidence"].as_object() {
        println!(
            "dispute evidence {}: referee {}, judged by {}, cheated {}",
            s(&e["path"]),
            s(&e["referee"]),
            s(&e["method"]),
            s(&e["cheated"])
        );
        println!("  checked here: {}", s(&e["check"]));
    }
}
