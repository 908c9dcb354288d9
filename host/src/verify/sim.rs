//! The cheating simulation behind `infernet bench --verify` and its short
//! version in the test suite: many jobs run on honest and cheating nodes
//! in-process (real plugins, real traces), compared as a `replicate(2)`
//! client compares them, every disagreement disputed before a referee
//! (bisection, one-op or replay ruling, evidence checked again offline);
//! `spot-check(p)` draws which jobs are checked. Counts what was caught,
//! what honest pairs cost (false slashes), and what a dispute costs.

use super::dispute::{self, LocalParty};
use super::evidence::JobSpec;
use super::result_body;
use crate::kernels::trace::Trace;
use crate::node::Node;
use crate::p2p::libp2p::identity::Keypair;
use crate::p2p::protocol::{hash_output, SignedResult, Usage, WireInput, WireOutput};
use crate::worlds::backend::JobOutput;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// The nodes a simulation runs on: two honest providers (the second runs
/// its jobs on a one-thread pool, as a machine with another core count
/// would), a referee, and cheating providers by name.
pub struct SimNodes<'a> {
    /// Honest provider A.
    pub honest: &'a Node,
    /// Honest provider B (one thread).
    pub second: &'a Node,
    /// The referee (serves the model with the honest plugin).
    pub referee: &'a Node,
    /// Cheating providers: mode name and node.
    pub cheats: Vec<(String, &'a Node)>,
}

/// What happened to one kind of provider paired with honest A.
#[derive(Debug, Clone, Default)]
pub struct ModeReport {
    /// Cheat mode (`honest` for the honest pair).
    pub mode: String,
    /// Jobs run.
    pub jobs: usize,
    /// Jobs whose results (output or trace root) differed from A's.
    pub diverged: usize,
    /// Disputes whose ruling named this provider (and only it).
    pub caught: usize,
    /// Disputes whose ruling named honest A (false slashes).
    pub false_slashes: usize,
    /// Summed dispute wall time, ms.
    pub dispute_ms: u128,
    /// Summed bisection round trips.
    pub round_trips: usize,
    /// Summed evidence bundle size (JSON), bytes.
    pub evidence_bytes: usize,
    /// Disputes judged by one op / by a replay.
    pub one_op: usize,
    /// Disputes judged by replaying the plugin.
    pub replays: usize,
    /// Per job, whether it was caught.
    pub caught_jobs: Vec<bool>,
}

/// `spot-check(p)`: how many jobs were checked and caught.
#[derive(Debug, Clone)]
pub struct SpotReport {
    /// The probability.
    pub p: f64,
    /// Jobs.
    pub jobs: usize,
    /// Jobs drawn for a check.
    pub checked: usize,
    /// Per cheat mode, jobs caught: drawn for a check and caught by it.
    pub caught: Vec<(String, usize)>,
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Per provider kind.
    pub modes: Vec<ModeReport>,
    /// Spot checks.
    pub spot: Vec<SpotReport>,
    /// Kernel calls per job (the honest trace), summed.
    pub calls: usize,
    /// Generated tokens, summed.
    pub tokens: usize,
    /// Honest job run time, summed, ms.
    pub run_ms: u128,
}

fn job(i: usize) -> JobSpec {
    let prompts = [
        "the quick brown fox",
        "a b c",
        "once upon a time",
        "hello there",
    ];
    let mut params = vec![("max_tokens".to_string(), "6".to_string())];
    if i % 2 == 1 {
        params.push(("temperature".into(), "0.8".into()));
        params.push(("seed".into(), i.to_string()));
    }
    JobSpec {
        model: "tiny".into(),
        input: WireInput::Text(format!("{} {i}", prompts[i % prompts.len()])),
        params,
    }
}

struct Ran {
    signed: SignedResult,
    trace: Trace,
    tokens: usize,
}

/// Runs `spec` on `node` and signs the result as `key`, claiming plugin
/// `claim` (a cheat names the honest plugin).
fn run(
    node: &Node,
    key: &Keypair,
    spec: &JobSpec,
    claim: &str,
    one_thread: bool,
) -> Result<Ran, String> {
    let req = spec.request("sim");
    let go = || node.run_traced(&req, None, None);
    let (r, trace) = if one_thread {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| e.to_string())?
            .install(go)
    } else {
        go()
    }
    .map_err(|e| e.to_string())?;
    let output = match r.output {
        JobOutput::Text(t) => WireOutput::Text(t),
        other => return Err(format!("expected text, got {other:?}")),
    };
    let usage = Usage {
        input_tokens: r.usage.input_tokens,
        output_tokens: r.usage.output_tokens,
    };
    let peer = key.public().to_peer_id().to_string();
    let mut body = result_body(node, &req, hash_output(&output), usage, trace.root(), peer)
        .ok_or("the node does not serve the model")?;
    body.backend.sha256 = claim.into();
    let signed = SignedResult::sign(body, key).map_err(|e| e.to_string())?;
    Ok(Ran {
        signed,
        trace,
        tokens: usage.output_tokens as usize,
    })
}

/// One dispute on `spec` between honest `honest` and `cheat` (which claims
/// the honest plugin), before `referee`: the evidence (checked offline
/// too), the dispute's wall time, and the honest trace's call count.
pub fn one_dispute(
    honest: &Node,
    cheat: &Node,
    referee: &Node,
    spec: &JobSpec,
) -> Result<(super::evidence::Evidence, std::time::Duration, usize), String> {
    let sha = honest
        .backend_sha256(&spec.model)
        .ok_or("the honest node does not serve the model")?;
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let a = run(honest, &ka, spec, &sha, false)?;
    let b = run(cheat, &kb, spec, &sha, false)?;
    let calls = a.trace.leaves.len();
    let req = spec.request("sim");
    let mut pa = LocalParty::new(a.signed, a.trace, honest, req.clone());
    let mut pb = LocalParty::new(b.signed, b.trace, cheat, req);
    let t = Instant::now();
    let evidence =
        dispute::run(spec, &mut pa, &mut pb, referee, "referee").map_err(|e| e.to_string())?;
    let took = t.elapsed();
    evidence.check(Some(referee)).map_err(|e| e.to_string())?;
    Ok((evidence, took, calls))
}

/// Runs `jobs` jobs on every pairing and `spot_ps` draws; `progress` is
/// told each finished job.
pub fn simulate(
    nodes: &SimNodes<'_>,
    jobs: usize,
    spot_ps: &[f64],
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<SimReport, String> {
    let honest_sha = nodes
        .honest
        .backend_sha256("tiny")
        .ok_or("the honest node does not serve `tiny`")?;
    let key_a = Keypair::generate_ed25519();
    let mut others: Vec<(String, &Node, Keypair, bool)> = vec![(
        "honest".into(),
        nodes.second,
        Keypair::generate_ed25519(),
        true,
    )];
    for (mode, node) in &nodes.cheats {
        others.push((mode.clone(), node, Keypair::generate_ed25519(), false));
    }
    let mut report = SimReport {
        modes: others
            .iter()
            .map(|(m, ..)| ModeReport {
                mode: m.clone(),
                ..ModeReport::default()
            })
            .collect(),
        ..SimReport::default()
    };
    for i in 0..jobs {
        let spec = job(i);
        let started = Instant::now();
        let a = run(nodes.honest, &key_a, &spec, &honest_sha, false)?;
        report.run_ms += started.elapsed().as_millis();
        report.calls += a.trace.leaves.len();
        report.tokens += a.tokens;
        for (k, (_, node, key, one_thread)) in others.iter().enumerate() {
            let b = run(node, key, &spec, &honest_sha, *one_thread)?;
            let m = &mut report.modes[k];
            m.jobs += 1;
            let agree = a.signed.payload.output_hash == b.signed.payload.output_hash
                && a.signed.payload.trace_root == b.signed.payload.trace_root;
            if agree {
                m.caught_jobs.push(false);
                continue;
            }
            m.diverged += 1;
            let req = spec.request("sim");
            let mut pa =
                LocalParty::new(a.signed.clone(), a.trace.clone(), nodes.honest, req.clone());
            let mut pb = LocalParty::new(b.signed.clone(), b.trace.clone(), node, req);
            let t = Instant::now();
            let evidence = dispute::run(&spec, &mut pa, &mut pb, nodes.referee, "referee")
                .map_err(|e| format!("job {i}: dispute: {e}"))?;
            m.dispute_ms += t.elapsed().as_millis();
            m.round_trips += evidence.steps.len() + 2;
            m.evidence_bytes += serde_json::to_vec(&evidence).map(|v| v.len()).unwrap_or(0);
            match evidence.ruling.method {
                super::evidence::Method::OneOp => m.one_op += 1,
                _ => m.replays += 1,
            }
            let checked = evidence
                .check(Some(nodes.referee))
                .map_err(|e| format!("job {i}: the evidence does not check: {e}"))?;
            let cheat = key.public().to_peer_id().to_string();
            let a_peer = key_a.public().to_peer_id().to_string();
            if checked.cheated.contains(&a_peer) {
                m.false_slashes += 1;
            }
            let caught = checked.cheated == [cheat];
            m.caught += usize::from(caught);
            m.caught_jobs.push(caught);
        }
        progress(i + 1);
    }
    // spot-check(p): a job is checked when its draw comes up, and then
    // caught exactly when its replicate(2) check above caught it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for &p in spot_ps {
        let drawn: Vec<bool> = (0..jobs).map(|_| rng.gen_bool(p)).collect();
        let caught = report
            .modes
            .iter()
            .filter(|m| m.mode != "honest")
            .map(|m| {
                let n = m
                    .caught_jobs
                    .iter()
                    .zip(&drawn)
                    .filter(|(c, d)| **c && **d)
                    .count();
                (m.mode.clone(), n)
            })
            .collect();
        report.spot.push(SpotReport {
            p,
            jobs,
            checked: drawn.iter().filter(|d| **d).count(),
            caught,
        });
    }
    Ok(report)
}
