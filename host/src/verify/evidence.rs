//! The evidence bundle of a dispute, and its offline check.
//!
//! A bundle holds the job, both signed results (the exact bytes each
//! provider signed), the bisection transcript (both parties' child hashes
//! at every level down to the first diverging call, which is a Merkle
//! proof of that call in both traces and shows every earlier call equal),
//! the diverging leaves, the values revealed for the call's inputs and
//! outputs, and the referee's ruling. [`Evidence::check`] redoes all of it
//! — signatures, commitments, the re-execution — and says who cheated, or
//! why the bundle does not prove what it claims. A call that only a replay
//! of the plugin can judge (the two parties made different calls) needs
//! the plugin and the weights: `infernet verify evidence FILE --plugin DIR
//! --model DIR`.

use super::referee::{self, Finding, Reference};
use crate::kernels::trace::{
    self, digest, weight_digest, Capture, Cursor, Digest, Leaf, Revealed, TraceRoot,
};
use crate::node::Node;
use crate::p2p::protocol::{decode, encode, hash_value, SignedResult};
use crate::worlds::backend::JobRequest;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The bundle format this build writes and checks.
pub const EVIDENCE_VERSION: u32 = 1;

/// Why a bundle does not prove what it claims (or cannot be checked here).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// Malformed, or a commitment does not hold.
    #[error("invalid evidence: {0}")]
    Invalid(String),
    /// The bundle is sound but its ruling is not what the evidence shows.
    #[error("the bundle's ruling is wrong: it names {claimed:?} as cheating, the evidence shows {found:?}")]
    WrongRuling {
        /// Who the bundle says cheated.
        claimed: Vec<String>,
        /// Who the evidence shows cheated.
        found: Vec<String>,
    },
    /// Checking needs something this check was not given.
    #[error("cannot check this bundle here: {0}")]
    Needs(String),
}

fn invalid(m: impl Into<String>) -> EvidenceError {
    EvidenceError::Invalid(m.into())
}

pub use crate::p2p::verification::JobSpec;

impl JobSpec {
    /// The job as a backend runs it (under `id`).
    pub fn request(&self, id: &str) -> JobRequest {
        JobRequest {
            id: id.into(),
            model: self.model.clone(),
            input: super::job_input(self.input.clone()),
            params: self.params.clone(),
        }
    }
}

/// One bisection step: the node both parties were asked about and the two
/// children each answered (`None`: it did not answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Level of the node asked about.
    pub level: u32,
    /// Its index.
    pub index: u64,
    /// Party A's children.
    pub a: Option<Children>,
    /// Party B's children.
    pub b: Option<Children>,
}

/// Two child hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Children {
    /// Left.
    #[serde(with = "digest")]
    pub left: Digest,
    /// Right.
    #[serde(with = "digest")]
    pub right: Digest,
}

/// A model weight an input digest stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightRef {
    /// Tensor name in the model.
    pub name: String,
}

/// The first diverging call and what was revealed about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// Its index in both traces.
    pub index: u64,
    /// Each party's leaf there (`None`: its trace ends before it).
    pub leaves: [Option<Leaf>; 2],
    /// Input values, each checked against its content digest.
    pub inputs: Vec<Revealed>,
    /// Calls with derived digests that made inputs (or their inputs) whose digest is
    /// the call's own hash (`Leaf::derived_digest`): re-run to get them.
    #[serde(default)]
    pub derivations: Vec<Leaf>,
    /// Inputs that are model weights, by name.
    pub weights: Vec<WeightRef>,
    /// Each party's revealed output of its leaf.
    pub outputs: [Option<Revealed>; 2],
}

/// How the referee judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Both parties made the same call: the referee re-executed that op
    /// on the committed inputs.
    OneOp,
    /// They made different calls: the referee replayed the plugin up to it.
    Replay,
    /// A party's answers did not match its signed root (or it gave none).
    Unanswered,
}

/// The referee's ruling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ruling {
    /// Referee's peer id (party to neither result).
    pub referee: String,
    /// How it judged.
    pub method: Method,
    /// Its output digest of the call (when it re-executed).
    #[serde(default, with = "opt_digest", skip_serializing_if = "Option::is_none")]
    pub reference: Option<Digest>,
    /// What it found of each party's output.
    pub findings: [Finding; 2],
    /// Peer ids of the parties that cheated (empty: honest divergence).
    pub cheated: Vec<String>,
}

/// A dispute's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// [`EVIDENCE_VERSION`].
    pub version: u32,
    /// The job.
    pub job: JobSpec,
    /// Both signed results, as the CBOR bytes each provider sent (hex).
    pub results: [String; 2],
    /// Each party's top node (the root is it sealed with the call count).
    #[serde(with = "digest::list")]
    pub tops: Vec<Digest>,
    /// The bisection, top down.
    pub steps: Vec<Step>,
    /// The first diverging call (absent when a party stopped answering).
    pub divergence: Option<Divergence>,
    /// The ruling.
    pub ruling: Ruling,
}

mod opt_digest {
    use super::Digest;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct D(#[serde(with = "super::digest")] Digest);

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        d.map(D).serialize(s)
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<Option<Digest>, De::Error> {
        Ok(Option::<D>::deserialize(d)?.map(|d| d.0))
    }
}

/// What a checked bundle shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Conclusion {
    /// The two providers (peer ids), A then B.
    pub parties: [String; 2],
    /// Who cheated.
    pub cheated: Vec<String>,
    /// How it was judged.
    pub method: Method,
    /// The diverging call's index and op, when there was one.
    pub call: Option<(u64, String)>,
    /// Each party's finding.
    pub findings: [Finding; 2],
}

/// A signed result from the hex of its CBOR.
pub fn decode_result(hex_cbor: &str) -> Result<SignedResult, EvidenceError> {
    let bytes = hex::decode(hex_cbor).map_err(|e| invalid(format!("result is not hex: {e}")))?;
    decode(&bytes).map_err(|e| invalid(format!("result does not decode: {e}")))
}

/// The hex of a signed result's CBOR, for a bundle.
pub fn encode_result(r: &SignedResult) -> String {
    hex::encode(encode(r).unwrap_or_default())
}

/// What both results must agree on, checked.
pub(super) struct Checked {
    pub parties: [String; 2],
    pub roots: [TraceRoot; 2],
    pub weights_hash: String,
    pub backend_sha256: String,
}

/// Checks two results are a dispute about `job`: both signatures, one
/// execution (model, weights, plugin, input, parameters) that is `job`'s,
/// different outputs, trace roots present.
pub(super) fn check_results(
    job: &JobSpec,
    a: &SignedResult,
    b: &SignedResult,
) -> Result<Checked, EvidenceError> {
    let pa = a.verify().map_err(|e| invalid(format!("result A: {e}")))?;
    let pb = b.verify().map_err(|e| invalid(format!("result B: {e}")))?;
    if pa == pb {
        return Err(invalid("both results are from the same provider"));
    }
    let (ea, eb) = (a.payload.execution(), b.payload.execution());
    let (Some(ea), Some(eb)) = (ea, eb) else {
        return Err(invalid(
            "a result does not bind its weights, input and parameters",
        ));
    };
    if ea != eb {
        return Err(invalid(format!(
            "the results are of different executions: {ea:?} vs {eb:?}"
        )));
    }
    let mut params = job.params.clone();
    params.sort();
    if ea.model_id != job.model || ea.input_hash != hash_value(&job.input) || ea.params != params {
        return Err(invalid(
            "the job in the bundle is not the one the results name",
        ));
    }
    if a.payload.output_hash == b.payload.output_hash
        && a.payload.trace_root == b.payload.trace_root
    {
        return Err(invalid(
            "the two results have the same output and the same trace: there is no dispute",
        ));
    }
    let root = |r: &SignedResult, who: &str| {
        r.payload
            .trace_root
            .as_deref()
            .and_then(TraceRoot::parse)
            .ok_or_else(|| invalid(format!("result {who} has no trace root")))
    };
    Ok(Checked {
        parties: [pa.to_string(), pb.to_string()],
        roots: [root(a, "A")?, root(b, "B")?],
        weights_hash: ea.weights_hash,
        backend_sha256: ea.backend_sha256,
    })
}

/// The findings of a dispute some party did not see through: not
/// answering (or answering against its own root) is losing.
pub(super) fn unanswered(bad: [bool; 2]) -> [Finding; 2] {
    bad.map(|b| match b {
        true => Finding::NotRevealed,
        false => Finding::Identical,
    })
}

/// Whether a leaf describes the same call as another (all but its output).
pub fn same_call(a: &Leaf, b: &Leaf) -> bool {
    a.op == b.op
        && a.params == b.params
        && a.inputs == b.inputs
        && a.dtype == b.dtype
        && a.dims == b.dims
}

/// The referee's computation of a divergence: re-execute the op (one-op)
/// or take the replay's call (replay). Shared by the live dispute and the
/// offline check, so both rule the same way.
pub(super) fn rule(
    d: &Divergence,
    checked: &Checked,
    job: &JobSpec,
    replayer: Option<&Node>,
) -> Result<(Method, Option<Digest>, [Finding; 2]), EvidenceError> {
    let device = replayer.map(|n| n.device()).unwrap_or(Device::Cpu);
    let index = usize::try_from(d.index).map_err(|_| invalid("divergence index out of range"))?;
    let (reference, call, method) = match &d.leaves {
        // A quantized weight is not a tensor a referee can rebuild from the
        // bundle: calls on one are judged by replaying the job.
        [Some(a), Some(b)]
            if same_call(a, b) && !matches!(a.op.as_str(), "qlinear" | "qweight") =>
        {
            let inputs = inputs_of(a, d, checked, replayer, &device)?;
            let r = referee::reexecute(a, &inputs, &device).map_err(|e| invalid(e.to_string()))?;
            (r, a.clone(), Method::OneOp)
        }
        _ => {
            let node = replayer.ok_or_else(|| {
                EvidenceError::Needs(format!(
                    "judging call {index} (different calls, or a quantized weight) needs a replay of plugin {} on weights {} (pass --plugin and --model)",
                    checked.backend_sha256, checked.weights_hash
                ))
            })?;
            replay_call(node, job, index, checked)?
        }
    };
    let digest = reference.digest().map_err(|e| invalid(e.to_string()))?;
    let findings = [0, 1].map(|i| match &d.leaves[i] {
        Some(leaf) if same_call(leaf, &call) => {
            referee::judge(leaf, &reference, d.outputs[i].as_ref())
        }
        _ => Finding::Differs,
    });
    Ok((method, Some(digest), findings))
}

/// Most tensors one input resolution may rebuild (a KV cache concatenated
/// once per generated token is one per step).
const MAX_RESOLVED: usize = 1 << 16;

/// The tensors `leaf` takes: revealed values (checked against their
/// content digests), model weights (by name, checked against the weights
/// hash), or the outputs of exact-op calls re-run on their own inputs
/// (each call certified by its derived digest).
fn inputs_of(
    leaf: &Leaf,
    d: &Divergence,
    checked: &Checked,
    node: Option<&Node>,
    device: &Device,
) -> Result<Vec<Tensor>, EvidenceError> {
    let mut known: std::collections::HashMap<Digest, Tensor> = std::collections::HashMap::new();
    leaf.inputs
        .iter()
        .map(|want| resolve(*want, d, checked, node, device, &mut known))
        .collect()
}

fn resolve(
    want: Digest,
    d: &Divergence,
    checked: &Checked,
    node: Option<&Node>,
    device: &Device,
    known: &mut std::collections::HashMap<Digest, Tensor>,
) -> Result<Tensor, EvidenceError> {
    // Depth-first with an explicit stack: a long derivation chain cannot
    // overflow this thread's stack.
    let mut stack = vec![want];
    while let Some(&top) = stack.last() {
        if known.contains_key(&top) {
            stack.pop();
            continue;
        }
        if known.len() >= MAX_RESOLVED || stack.len() > MAX_RESOLVED {
            return Err(invalid(
                "input derivations go deeper than a referee follows",
            ));
        }
        if let Some(r) = d.inputs.iter().find(|r| r.digest() == top) {
            known.insert(
                top,
                r.to_tensor(device).map_err(|e| invalid(e.to_string()))?,
            );
            continue;
        }
        if let Some(w) = d
            .weights
            .iter()
            .find(|w| weight_digest(&checked.weights_hash, &w.name) == top)
        {
            let model = node
                .and_then(|n| n.model_by_weights(&checked.weights_hash))
                .ok_or_else(|| {
                    EvidenceError::Needs(format!(
                        "weight `{}` of weights {}: pass --model with those weights",
                        w.name, checked.weights_hash
                    ))
                })?;
            known.insert(top, model.tensor(&w.name).map_err(invalid)?);
            continue;
        }
        let call = d
            .derivations
            .iter()
            .find(|l| l.output == top && l.derived_digest() == top)
            .ok_or_else(|| invalid(format!("input {} was not revealed", hex::encode(top))))?;
        let op = crate::kernels::call::Op::parse(&call.op, &call.params)
            .map_err(|e| invalid(e.to_string()))?;
        if op.commits_values() {
            return Err(invalid(format!(
                "a derivation of {} is a `{}`, whose values are committed by content",
                hex::encode(top),
                call.op
            )));
        }
        let missing: Vec<Digest> = call
            .inputs
            .iter()
            .filter(|i| !known.contains_key(*i))
            .copied()
            .collect();
        if !missing.is_empty() {
            if missing.iter().any(|m| stack.contains(m)) {
                return Err(invalid("input derivations form a cycle"));
            }
            stack.extend(missing);
            continue;
        }
        let inputs: Vec<Tensor> = call.inputs.iter().map(|i| known[i].clone()).collect();
        let out = op
            .run(&mut super::referee::referee_ctx(device), &inputs)
            .map_err(|e| invalid(format!("re-running derivation `{}`: {e}", call.op)))?;
        known.insert(top, out);
    }
    known
        .get(&want)
        .cloned()
        .ok_or_else(|| invalid("input resolution ended without the input"))
}

/// Replays the job on `node` up to call `index` and returns that call and
/// its output.
fn replay_call(
    node: &Node,
    job: &JobSpec,
    index: usize,
    checked: &Checked,
) -> Result<(Reference, Leaf, Method), EvidenceError> {
    let served = node.backend_sha256(&job.model).ok_or_else(|| {
        EvidenceError::Needs(format!("the replaying node does not serve `{}`", job.model))
    })?;
    if served != checked.backend_sha256 {
        return Err(EvidenceError::Needs(format!(
            "the results name plugin {}, the replaying node has {served}",
            checked.backend_sha256
        )));
    }
    let have = node.model(&job.model).map(|m| m.weights_hash().to_string());
    if have.as_deref() != Some(checked.weights_hash.as_str()) {
        return Err(EvidenceError::Needs(format!(
            "the results name weights {}, the replaying node has {}",
            checked.weights_hash,
            have.unwrap_or_else(|| "none".into())
        )));
    }
    let capture = Capture {
        at: Some(index),
        ..Capture::default()
    };
    let replayed = node
        .replay(&job.request("replay"), capture, Some(index + 1))
        .map_err(|e| invalid(format!("replay failed: {e}")))?;
    let leaf = replayed.trace.leaves.get(index).cloned().ok_or_else(|| {
        invalid(format!(
            "the plugin makes only {} calls on this job: no call {index} to judge",
            replayed.trace.leaves.len()
        ))
    })?;
    let exact = crate::kernels::call::Op::parse(&leaf.op, &leaf.params)
        .map(|op| !op.commits_values())
        .unwrap_or(true);
    let reference = match replayed.capture.at_value {
        Some(v) if !exact => Reference::Tensor(
            v.to_tensor(&node.device())
                .map_err(|e| invalid(e.to_string()))?,
        ),
        // An exact op, a sampled token, a weight, the guest's own values:
        // by digest alone.
        _ => Reference::Exact(leaf.output),
    };
    Ok((reference, leaf, Method::Replay))
}

impl Evidence {
    /// Each result's signer and job id, as the bundle carries them (a
    /// result that does not decode is left out).
    pub fn parties(&self) -> Vec<(String, String)> {
        self.results
            .iter()
            .filter_map(|r| decode_result(r).ok())
            .map(|r| (r.payload.provider.clone(), r.payload.job_id.clone()))
            .collect()
    }

    /// Checks the bundle and says who cheated. `replayer` is a node serving
    /// the job's model with the results' plugin and weights: needed for
    /// weights inputs and for calls only a replay can judge.
    pub fn check(&self, replayer: Option<&Node>) -> Result<Conclusion, EvidenceError> {
        if self.version != EVIDENCE_VERSION {
            return Err(invalid(format!(
                "bundle version {} (this build checks {EVIDENCE_VERSION})",
                self.version
            )));
        }
        let a = decode_result(&self.results[0])?;
        let b = decode_result(&self.results[1])?;
        let checked = check_results(&self.job, &a, &b)?;
        let [ta, tb] = self.tops[..] else {
            return Err(invalid("a bundle carries both parties' top nodes"));
        };
        let sealed = |root: &TraceRoot, top: &Digest| trace::seal(root.len, top) == root.root;
        let answered = [
            sealed(&checked.roots[0], &ta),
            sealed(&checked.roots[1], &tb),
        ];
        // Walk the transcript: every answer must hash to the node above it
        // and the walk must follow the first difference.
        let mut at = Cursor::TOP;
        let mut parents = [ta, tb];
        let mut faulty = [!answered[0], !answered[1]];
        for step in &self.steps {
            if faulty[0] || faulty[1] {
                return Err(invalid(
                    "the transcript goes on after a party failed to answer",
                ));
            }
            if (step.level, step.index) != (at.level, at.index) {
                return Err(invalid(format!(
                    "step at level {} index {} is not where the bisection stands (level {} index {})",
                    step.level, step.index, at.level, at.index
                )));
            }
            for (i, kids) in [step.a, step.b].iter().enumerate() {
                faulty[i] =
                    !kids.is_some_and(|k| at.children_match(&parents[i], (k.left, k.right)));
            }
            if faulty[0] || faulty[1] {
                continue;
            }
            let (ka, kb) = (step.a.unwrap_or(ZERO), step.b.unwrap_or(ZERO));
            let next = at
                .step((ka.left, ka.right), (kb.left, kb.right))
                .ok_or_else(|| invalid("the transcript descends where both trees agree"))?;
            parents = if next.index % 2 == 0 {
                [ka.left, kb.left]
            } else {
                [ka.right, kb.right]
            };
            at = next;
        }
        let (method, reference, findings) = if faulty[0] || faulty[1] {
            (Method::Unanswered, None, unanswered(faulty))
        } else {
            if at.level != 0 {
                return Err(invalid(format!(
                    "the transcript stops at level {} before reaching a call",
                    at.level
                )));
            }
            let d = self
                .divergence
                .as_ref()
                .ok_or_else(|| invalid("the bundle has no diverging call"))?;
            if d.index != at.index {
                return Err(invalid(format!(
                    "the diverging call is {} but the bisection ends at {}",
                    d.index, at.index
                )));
            }
            for i in 0..2 {
                let expected = match &d.leaves[i] {
                    Some(l) if d.index < checked.roots[i].len => l.hash(),
                    None if d.index >= checked.roots[i].len => [0; 32],
                    _ => {
                        return Err(invalid(format!(
                            "party {i}'s leaf disagrees with its call count"
                        )))
                    }
                };
                if expected != parents[i] {
                    return Err(invalid(format!(
                        "party {}'s leaf {} is not the one its trace commits to",
                        ["A", "B"][i],
                        d.index
                    )));
                }
            }
            rule(d, &checked, &self.job, replayer)?
        };
        if reference.is_some() && reference != self.ruling.reference {
            return Err(invalid(
                "the ruling's reference output is not the re-execution's",
            ));
        }
        let cheated: Vec<String> = (0..2)
            .filter(|&i| !findings[i].honest())
            .map(|i| checked.parties[i].clone())
            .collect();
        let same = (0..2).all(|i| findings[i].same_kind(&self.ruling.findings[i]));
        if cheated != self.ruling.cheated || method != self.ruling.method || !same {
            return Err(EvidenceError::WrongRuling {
                claimed: self.ruling.cheated.clone(),
                found: cheated,
            });
        }
        Ok(Conclusion {
            parties: checked.parties,
            cheated,
            method,
            call: self.divergence.as_ref().map(|d| {
                let op = d.leaves.iter().flatten().next().map(|l| l.op.clone());
                (d.index, op.unwrap_or_default())
            }),
            findings,
        })
    }
}

const ZERO: Children = Children {
    left: [0; 32],
    right: [0; 32],
};
