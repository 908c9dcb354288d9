//! The verifier's core on real plugins: a job's kernel trace reproduces
//! call for call across nodes; a cheating backend's trace is bisected down
//! to its first diverging call and a referee (party to neither result)
//! rules; the evidence checks offline, and tampered evidence does not. A
//! provider whose host lies about one op's values is caught by
//! re-executing that one op, and honest float noise is never a fault.

use infernet_host::config::Config;
use infernet_host::kernels::trace::{tensor_digest, Digest, Leaf, Revealed, Trace};
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::node::Node;
use infernet_host::p2p::libp2p::identity::Keypair;
use infernet_host::p2p::protocol::{hash_output, SignedResult, Usage, WireInput, WireOutput};
use infernet_host::runtime::PluginKind;
use infernet_host::verify::dispute::{self, LocalParty, Party, Reveal};
use infernet_host::verify::evidence::{Evidence, EvidenceError, JobSpec, Method};
use infernet_host::verify::referee::Finding;
use infernet_host::verify::result_body;
use infernet_host::worlds::backend::JobOutput;
use infernet_tests::*;
use std::path::{Path, PathBuf};

fn node(dir: &Path, name: &str, plugin: &Path, model: &Path) -> Node {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let cfg = write_backend_config(&d, plugin, &[("tiny", model)], "");
    Node::from_config(&Config::load(&cfg).unwrap()).unwrap()
}

fn spec(prompt: &str, params: &[(&str, &str)]) -> JobSpec {
    JobSpec {
        model: "tiny".into(),
        input: WireInput::Text(prompt.into()),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn wire(out: JobOutput) -> WireOutput {
    match out {
        JobOutput::Text(t) => WireOutput::Text(t),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Runs `job` on `node` and signs its result as provider `key` would;
/// `claim` replaces the plugin sha256 the result names (a liar's claim).
fn run(
    node: &Node,
    key: &Keypair,
    job: &JobSpec,
    claim: Option<&str>,
) -> (SignedResult, Trace, WireOutput) {
    let req = job.request("job-1");
    let (r, trace) = node.run_traced(&req, None, None).unwrap();
    let output = wire(r.output);
    let usage = Usage {
        input_tokens: r.usage.input_tokens,
        output_tokens: r.usage.output_tokens,
    };
    let peer = key.public().to_peer_id().to_string();
    let mut body =
        result_body(node, &req, hash_output(&output), usage, trace.root(), peer).unwrap();
    if let Some(sha) = claim {
        body.backend.sha256 = sha.into();
    }
    (SignedResult::sign(body, key).unwrap(), trace, output)
}

struct World {
    _dir: tempfile::TempDir,
    model: PathBuf,
    llama: PathBuf,
    honest: Node,
    referee: Node,
}

fn world() -> World {
    world_on(|dir| {
        let model = dir.join("tiny-llama");
        write_llama_fixture(&LlamaFixtureSpec::tiny(), &model).unwrap();
        model
    })
}

/// A world serving the GGUF llama file `write` makes in the directory.
fn world_on(write: impl FnOnce(&Path) -> PathBuf) -> World {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path());
    let llama = pack_plugin("llama", PluginKind::Backend, dir.path());
    let honest = node(dir.path(), "honest", &llama, &model);
    let referee = node(dir.path(), "referee", &llama, &model);
    World {
        model,
        llama,
        honest,
        referee,
        _dir: dir,
    }
}

const GREEDY: &[(&str, &str)] = &[("max_tokens", "8")];

#[test]
fn traces_reproduce_across_nodes_and_bind_input_and_sampling() {
    let w = world();
    let other = node(w._dir.path(), "other", &w.llama, &w.model);
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    for params in [
        GREEDY,
        &[("max_tokens", "8"), ("temperature", "0.9"), ("seed", "7")][..],
    ] {
        let job = spec("the quick brown fox", params);
        let (ra, ta, oa) = run(&w.honest, &ka, &job, None);
        let (rb, tb, ob) = run(&other, &kb, &job, None);
        assert!(
            ta.leaves.len() > 100,
            "a generation makes many kernel calls: {}",
            ta.leaves.len()
        );
        assert_eq!(oa, ob, "{params:?}");
        assert_eq!(
            ta.root(),
            tb.root(),
            "{params:?}: two honest nodes commit to the same trace"
        );
        assert_eq!(ra.payload.execution(), rb.payload.execution());
        assert_eq!(ra.payload.trace_root, Some(ta.root().to_text()));
        // The same node again (a fresh instance): the same trace.
        let (_, again, _) = run(&w.honest, &ka, &job, None);
        assert_eq!(again.root(), ta.root());
    }
    // Another prompt, another seed: other traces.
    let base = run(&w.honest, &ka, &spec("the quick brown fox", GREEDY), None)
        .1
        .root();
    let prompt = run(&w.honest, &ka, &spec("the quick brown cat", GREEDY), None)
        .1
        .root();
    assert_ne!(base, prompt);
    let s7 = run(
        &w.honest,
        &ka,
        &spec(
            "a",
            &[("max_tokens", "8"), ("temperature", "0.9"), ("seed", "7")],
        ),
        None,
    );
    let s8 = run(
        &w.honest,
        &ka,
        &spec(
            "a",
            &[("max_tokens", "8"), ("temperature", "0.9"), ("seed", "8")],
        ),
        None,
    );
    assert_ne!(s7.1.root(), s8.1.root());
    assert_ne!(
        s7.0.payload.execution(),
        s8.0.payload.execution(),
        "the seed is bound"
    );
}

/// Disputes honest `w.honest` against a cheating node running `mode`
/// (which claims the honest plugin's sha256) and checks the evidence.
fn dispute_with_cheat(w: &World, mode: &str, job: &JobSpec) -> (Evidence, String) {
    let cheat_pkg = pack_cheat(mode, w._dir.path());
    let cheat = node(
        w._dir.path(),
        &format!("cheat-{mode}"),
        &cheat_pkg,
        &w.model,
    );
    let honest_sha = w.honest.backend_sha256("tiny").unwrap();
    assert_ne!(cheat.backend_sha256("tiny").unwrap(), honest_sha);
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (ra, ta, _) = run(&w.honest, &ka, job, None);
    let (rb, tb, _) = run(&cheat, &kb, job, Some(&honest_sha));
    assert_ne!(ta.root(), tb.root(), "{mode}: the cheat's trace differs");
    let req = job.request("job-1");
    let mut a = LocalParty::new(ra, ta, &w.honest, req.clone());
    let mut b = LocalParty::new(rb, tb, &cheat, req);
    let evidence = dispute::run(job, &mut a, &mut b, &w.referee, "referee").unwrap();
    let cheater = kb.public().to_peer_id().to_string();
    assert_eq!(
        evidence.ruling.cheated,
        vec![cheater.clone()],
        "{mode}: {:?}",
        evidence.ruling
    );
    assert!(
        evidence.ruling.findings[0].honest(),
        "{mode}: {:?}",
        evidence.ruling.findings
    );
    // Within the tree's depth: one round trip per level.
    assert!(evidence.steps.len() <= infernet_host::kernels::trace::DEPTH as usize);
    // The bundle checks offline, through JSON, and says the same.
    let json = serde_json::to_string(&evidence).unwrap();
    let back: Evidence = serde_json::from_str(&json).unwrap();
    let c = back.check(Some(&w.referee)).unwrap();
    assert_eq!(c.cheated, vec![cheater.clone()]);
    (evidence, cheater)
}

#[test]
fn a_perturbed_layer_is_bisected_and_ruled_and_tampered_evidence_fails() {
    let w = world();
    let job = spec("the quick brown fox", GREEDY);
    let (evidence, cheater) = dispute_with_cheat(&w, "perturb", &job);
    let d = evidence.divergence.as_ref().unwrap();
    // The cheat made an extra `affine` where the plugin adds the residual:
    // different calls, judged by replaying the plugin up to there.
    assert_eq!(evidence.ruling.method, Method::Replay);
    let ops: Vec<&str> = d.leaves.iter().flatten().map(|l| l.op.as_str()).collect();
    assert_eq!(ops, ["binary", "affine"], "{ops:?}");
    // Without the plugin and weights, that cannot be checked (and says so).
    assert!(matches!(evidence.check(None), Err(EvidenceError::Needs(_))));

    // Tampered bundles.
    let mut wrong = evidence.clone();
    wrong.ruling.cheated = vec![];
    assert!(matches!(
        wrong.check(Some(&w.referee)),
        Err(EvidenceError::WrongRuling { .. })
    ));
    let mut framed = evidence.clone();
    framed.ruling.cheated = vec![framed.ruling.cheated[0].clone(), "12D3KooWframed".into()];
    assert!(framed.check(Some(&w.referee)).is_err());
    let mut step = evidence.clone();
    let mid = step.steps.len() / 2;
    step.steps[mid].a.as_mut().unwrap().left[0] ^= 1;
    step.steps[mid].a.as_mut().unwrap().right[0] ^= 1;
    assert!(
        matches!(step.check(Some(&w.referee)), Err(EvidenceError::Invalid(_))),
        "a forged step"
    );
    let mut swapped = evidence.clone();
    let dv = swapped.divergence.as_mut().unwrap();
    dv.leaves[1] = dv.leaves[0].clone();
    assert!(
        matches!(
            swapped.check(Some(&w.referee)),
            Err(EvidenceError::Invalid(_))
        ),
        "a leaf the trace does not commit to"
    );
    let mut forged = evidence.clone();
    let mut bytes = hex::decode(&forged.results[1]).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    forged.results[1] = hex::encode(bytes);
    assert!(
        forged.check(Some(&w.referee)).is_err(),
        "a result whose signature breaks"
    );
    let mut other_job = evidence.clone();
    other_job.job.input = WireInput::Text("something else".into());
    assert!(other_job.check(Some(&w.referee)).is_err());

    // The CLI says the same, and refuses the tampered bundle.
    let file = w._dir.path().join("evidence.json");
    std::fs::write(&file, serde_json::to_string_pretty(&evidence).unwrap()).unwrap();
    let out = infernet_tests::net::verify_evidence_cli(&file, &w.llama, &w.model);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("cheated: {cheater}")), "{stdout}");
    let bad = w._dir.path().join("wrong.json");
    std::fs::write(&bad, serde_json::to_string(&wrong).unwrap()).unwrap();
    let out = infernet_tests::net::verify_evidence_cli(&bad, &w.llama, &w.model);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ruling is wrong"));
}

#[test]
fn skipped_layers_and_an_early_stop_are_caught() {
    let w = world();
    let job = spec("the quick brown fox", GREEDY);
    let (skip, _) = dispute_with_cheat(&w, "skip-layers", &job);
    assert_eq!(skip.ruling.method, Method::Replay);
    let (early, _) = dispute_with_cheat(&w, "early-stop", &job);
    // The cheat's trace ends where the honest one goes on.
    let d = early.divergence.as_ref().unwrap();
    assert!(d.leaves[1].is_none(), "{:?}", d.leaves[1]);
    assert_eq!(early.ruling.findings[1], Finding::Differs);
}

/// A provider whose host lies about one arithmetic op's values: its trace
/// is honest but for leaf `at`, whose output digest is that of `values`.
struct LyingHost<'a> {
    inner: LocalParty<'a>,
    trace: Trace,
    tree: infernet_host::kernels::trace::Tree,
    at: usize,
    values: Revealed,
}

impl Party for LyingHost<'_> {
    fn result(&self) -> &SignedResult {
        self.inner.result()
    }
    fn top(&mut self) -> Option<Digest> {
        Some(self.tree.node(infernet_host::kernels::trace::DEPTH, 0))
    }
    fn children(&mut self, level: u32, index: u64) -> Option<(Digest, Digest)> {
        Some((
            self.tree.node(level - 1, index * 2),
            self.tree.node(level - 1, index * 2 + 1),
        ))
    }
    fn leaf(&mut self, index: u64) -> Option<Option<Leaf>> {
        Some(self.trace.leaves.get(index as usize).cloned())
    }
    fn reveal(&mut self, digests: &[Digest], until: u64) -> Reveal {
        let mut r = self.inner.reveal(digests, until);
        if digests.contains(&self.values.digest()) {
            r.values.push(self.values.clone());
        }
        r
    }
}

/// The honest trace with leaf `at`'s output scaled by `factor` (as a host
/// that lies about that op would commit to), signed as `key`: `at` is the
/// first call to one of `ops`.
fn lie<'a>(
    w: &'a World,
    key: &Keypair,
    job: &JobSpec,
    factor: f64,
    ops: &[&str],
) -> (LyingHost<'a>, usize) {
    let req = job.request("job-1");
    let (r, mut trace) = w.honest.run_traced(&req, None, None).unwrap();
    let at = trace
        .leaves
        .iter()
        .position(|l| ops.contains(&l.op.as_str()))
        .unwrap();
    let leaf = &trace.leaves[at];
    let capture = infernet_host::kernels::trace::Capture {
        wanted: [leaf.output].into(),
        ..Default::default()
    };
    let replayed = w.honest.replay(&req, capture, Some(at + 1)).unwrap();
    let honest_values = replayed.capture.found[&leaf.output]
        .to_tensor(&candle_core::Device::Cpu)
        .unwrap();
    let lied = (honest_values * factor).unwrap();
    let values = Revealed::of(&lied).unwrap();
    trace.leaves[at].output = tensor_digest(&lied).unwrap();
    let output = wire(r.output);
    let peer = key.public().to_peer_id().to_string();
    let usage = Usage {
        input_tokens: r.usage.input_tokens,
        output_tokens: r.usage.output_tokens,
    };
    let body = result_body(
        &w.honest,
        &req,
        hash_output(&output),
        usage,
        trace.root(),
        peer,
    )
    .unwrap();
    let signed = SignedResult::sign(body, key).unwrap();
    let tree = trace.tree();
    let inner = LocalParty::new(signed, trace.clone(), &w.honest, req);
    (
        LyingHost {
            inner,
            trace,
            tree,
            at,
            values,
        },
        at,
    )
}

/// Disputes against a host that lied about the first call to one of `ops`
/// (its output scaled by 1.01, a cheat, and by 1 + 1e-6, float noise),
/// each checked to be judged by re-running that one op with the right
/// ruling; returns each dispute's evidence and who it says cheated.
fn one_op_disputes(w: &World, ops: &[&str]) -> Vec<(Evidence, Vec<String>)> {
    let job = spec("the quick brown fox", GREEDY);
    let ka = Keypair::generate_ed25519();
    let (ra, ta, _) = run(&w.honest, &ka, &job, None);
    let req = job.request("job-1");
    let mut out = Vec::new();
    for (factor, cheats) in [(1.01, true), (1.0 + 1e-6, false)] {
        let kb = Keypair::generate_ed25519();
        let (mut liar, at) = lie(w, &kb, &job, factor, ops);
        assert!(liar.at == at);
        let mut a = LocalParty::new(ra.clone(), ta.clone(), &w.honest, req.clone());
        let evidence = dispute::run(&job, &mut a, &mut liar, &w.referee, "referee").unwrap();
        assert_eq!(
            evidence.ruling.method,
            Method::OneOp,
            "same call, other values"
        );
        assert_eq!(evidence.divergence.as_ref().unwrap().index, at as u64);
        let expected: Vec<String> = match cheats {
            true => vec![kb.public().to_peer_id().to_string()],
            false => vec![],
        };
        assert_eq!(
            evidence.ruling.cheated, expected,
            "factor {factor}: {:?}",
            evidence.ruling.findings
        );
        assert_eq!(evidence.check(Some(&w.referee)).unwrap().cheated, expected);
        out.push((evidence, expected));
    }
    out
}

#[test]
fn a_lying_host_is_caught_by_one_op_and_float_noise_is_not_a_fault() {
    let w = world();
    // The first matmul-like call on an intermediate value.
    for (evidence, _) in one_op_disputes(&w, &["linear", "matmul"]) {
        assert_eq!(evidence.ruling.findings[0], Finding::Identical);
        // A revealed value that is not what the leaf commits to.
        let mut bad = evidence.clone();
        if let Some(v) = bad.divergence.as_mut().unwrap().outputs[1].as_mut() {
            v.bytes[0] ^= 1;
        }
        assert!(bad.check(Some(&w.referee)).is_err());
    }
}

/// A host that lies about one fused `attention` call (contract 0.2.4) is
/// caught by re-running that call alone; a 1e-6 change is float noise.
#[test]
fn a_lie_at_an_attention_call_is_caught_by_one_op() {
    let w = world();
    assert_eq!(one_op_disputes(&w, &["attention"]).len(), 2);
}

/// The short version of `infernet bench --verify`: every cheat mode caught
/// in every job under replicate(2), honest providers on different thread
/// counts never disputed, every piece of evidence checked again offline.
#[test]
fn simulation_catches_every_cheat_and_slashes_no_honest_provider() {
    use infernet_host::verify::sim::{simulate, SimNodes};
    let w = world();
    let second = node(w._dir.path(), "second", &w.llama, &w.model);
    let modes = ["perturb", "skip-layers", "replay", "early-stop"];
    let cheats: Vec<(String, Node)> = modes
        .iter()
        .map(|m| {
            let pkg = pack_cheat(m, w._dir.path());
            (
                m.to_string(),
                node(w._dir.path(), &format!("sim-{m}"), &pkg, &w.model),
            )
        })
        .collect();
    let nodes = SimNodes {
        honest: &w.honest,
        second: &second,
        referee: &w.referee,
        cheats: cheats.iter().map(|(m, n)| (m.clone(), n)).collect(),
    };
    let jobs = 6;
    let r = simulate(&nodes, jobs, &[0.5], 1, |_| {}).unwrap();
    for m in &r.modes {
        assert_eq!(m.jobs, jobs, "{m:?}");
        assert_eq!(m.false_slashes, 0, "{m:?}");
        if m.mode == "honest" {
            assert_eq!(m.diverged, 0, "honest providers agree call for call: {m:?}");
        } else {
            assert_eq!(m.caught, jobs, "{} caught in every job: {m:?}", m.mode);
        }
    }
    let spot = &r.spot[0];
    for (mode, caught) in &spot.caught {
        assert_eq!(*caught, spot.checked, "{mode}: every checked job is caught");
    }
}

/// A GGUF (q4_k/q6_k) world: a host lying about a quantized matmul's values
/// is caught, judged by replaying the plugin on the referee's copy of the
/// file (a quantized weight is not a tensor a bundle carries), and float
/// noise still is not a fault; a perturbed layer is caught as on
/// safetensors.
#[test]
fn on_a_gguf_model_a_lie_about_a_quantized_matmul_and_a_perturbed_layer_are_caught() {
    use infernet_host::models::fixture_gguf::{write_gguf_llama, GgufQuant, GgufTokenizer};
    let w = world_on(|dir| {
        let d = dir.join("tiny-gguf");
        write_gguf_llama(
            &LlamaFixtureSpec::gguf_tiny(),
            &d,
            GgufQuant::Q4KM,
            &GgufTokenizer::Beside,
        )
        .unwrap()
    });
    let job = spec("the quick brown fox", &[("max_tokens", "4")]);
    let ka = Keypair::generate_ed25519();
    let (ra, ta, _) = run(&w.honest, &ka, &job, None);
    assert!(
        ta.leaves.iter().any(|l| l.op == "qweight"),
        "quantized weights are traced"
    );
    let req = job.request("job-1");
    for (factor, cheats) in [(1.01, true), (1.0 + 1e-6, false)] {
        let kb = Keypair::generate_ed25519();
        let (mut liar, at) = lie(&w, &kb, &job, factor, &["qlinear"]);
        let mut a = LocalParty::new(ra.clone(), ta.clone(), &w.honest, req.clone());
        let evidence = dispute::run(&job, &mut a, &mut liar, &w.referee, "referee").unwrap();
        assert_eq!(evidence.ruling.method, Method::Replay);
        assert_eq!(evidence.divergence.as_ref().unwrap().index, at as u64);
        let expected: Vec<String> = match cheats {
            true => vec![kb.public().to_peer_id().to_string()],
            false => vec![],
        };
        assert_eq!(evidence.ruling.cheated, expected, "factor {factor}");
        assert_eq!(evidence.check(Some(&w.referee)).unwrap().cheated, expected);
        assert!(matches!(evidence.check(None), Err(EvidenceError::Needs(_))));
    }
    let (evidence, _) = dispute_with_cheat(&w, "perturb", &job);
    assert_eq!(evidence.ruling.method, Method::Replay);
}
