//! A dispute between two signed results of one job: bisect the two kernel
//! traces down to the first diverging call, one level per round trip
//! (each answer checked against the node above it, so every answer is a
//! Merkle proof step), collect the values the referee needs, let the
//! referee rule, and write it all down as [`Evidence`] that
//! [`Evidence::check`] verifies offline.
//!
//! The parties are behind the [`Party`] trait: [`LocalParty`] answers from
//! a provider's kept trace and node (in-process, and what a provider runs
//! to answer `/infernet/verify/1`).

use super::evidence::{
    check_results, encode_result, rule, same_call, unanswered, Children, Divergence, Evidence,
    EvidenceError, JobSpec, Method, Ruling, Step, WeightRef, EVIDENCE_VERSION,
};
use super::referee::Finding;
use crate::kernels::trace::{
    seal, weight_digest, Capture, Cursor, Digest, Leaf, Revealed, Trace, Tree,
};
use crate::node::Node;
use crate::p2p::protocol::SignedResult;
use crate::worlds::backend::JobRequest;

/// One side of a dispute. `None` answers mean "did not answer".
pub trait Party {
    /// The signed result it stands by.
    fn result(&self) -> &SignedResult;
    /// The top node of its trace tree.
    fn top(&mut self) -> Option<Digest>;
    /// The two children of node (`level`, `index`).
    fn children(&mut self, level: u32, index: u64) -> Option<(Digest, Digest)>;
    /// Its call at `index` (`Some(None)`: its trace ends before it).
    fn leaf(&mut self, index: u64) -> Option<Option<Leaf>>;
    /// The values of tensors it made with these digests, at or before
    /// call `until`: content-digested values, and the exact-op calls that
    /// made derived ones (with what those calls take, recursively).
    fn reveal(&mut self, digests: &[Digest], until: u64) -> Reveal;
}

/// What a party reveals.
#[derive(Debug, Default)]
pub struct Reveal {
    /// Values, by content.
    pub values: Vec<Revealed>,
    /// Exact-op calls, each certified by its derived digest.
    pub derivations: Vec<Leaf>,
}

/// A provider's side of its own trace: the tree's nodes, its calls, and
/// values revealed by replaying the job on its node. What [`LocalParty`]
/// answers with, and what a provider answers `/infernet/verify/1` with.
pub struct TraceOwner<'a> {
    trace: &'a Trace,
    tree: &'a Tree,
    node: &'a Node,
    job: &'a JobRequest,
}

impl<'a> TraceOwner<'a> {
    /// `trace` (with its `tree`) of `job` run on `node`.
    pub fn new(trace: &'a Trace, tree: &'a Tree, node: &'a Node, job: &'a JobRequest) -> Self {
        TraceOwner {
            trace,
            tree,
            node,
            job,
        }
    }

    /// The top node.
    pub fn top(&self) -> Digest {
        self.tree.node(crate::kernels::trace::DEPTH, 0)
    }

    /// The children of node (`level`, `index`); `None` at the leaves.
    pub fn children(&self, level: u32, index: u64) -> Option<(Digest, Digest)> {
        let below = level.checked_sub(1)?;
        if level > crate::kernels::trace::DEPTH {
            return None;
        }
        Some((
            self.tree.node(below, index.checked_mul(2)?),
            self.tree.node(below, index.checked_mul(2)?.checked_add(1)?),
        ))
    }

    /// The call at `index`, `None` past the end.
    pub fn leaf(&self, index: u64) -> Option<Leaf> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.trace.leaves.get(i).cloned())
    }

    /// Values of the tensors with `digests` made at or before call
    /// `until`: derived ones as the calls that made them (and what those
    /// take, recursively), content ones by replaying the job to `until`.
    pub fn reveal(&self, digests: &[Digest], until: u64) -> Reveal {
        let until = usize::try_from(until).unwrap_or(usize::MAX);
        let made: std::collections::HashMap<Digest, &Leaf> = self
            .trace
            .leaves
            .iter()
            .take(until.saturating_add(1))
            .map(|l| (l.output, l))
            .collect();
        let mut out = Reveal::default();
        let mut content = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<Digest> = digests.to_vec();
        while let Some(d) = todo.pop() {
            if !seen.insert(d) {
                continue;
            }
            match made.get(&d) {
                Some(l) if l.op == "weight" => {}
                Some(l) if l.derived_digest() == d => {
                    out.derivations.push((*l).clone());
                    todo.extend(l.inputs.iter().copied());
                }
                Some(_) => {
                    content.insert(d);
                }
                None => {}
            }
        }
        if content.is_empty() {
            return out;
        }
        let capture = Capture {
            wanted: content,
            ..Capture::default()
        };
        match self
            .node
            .replay(self.job, capture, Some(until.saturating_add(1)))
        {
            Ok(r) => out.values = r.capture.found.into_values().collect(),
            Err(e) => tracing::warn!(error = %e, "replay for a dispute failed"),
        }
        out
    }
}

/// A provider answering from its own trace, revealing values by replaying
/// the job on its node (in-process).
pub struct LocalParty<'a> {
    result: SignedResult,
    trace: Trace,
    tree: Tree,
    node: &'a Node,
    job: JobRequest,
}

impl<'a> LocalParty<'a> {
    /// The party that produced `result` with `trace` by running `job` on `node`.
    pub fn new(result: SignedResult, trace: Trace, node: &'a Node, job: JobRequest) -> Self {
        let tree = trace.tree();
        LocalParty {
            result,
            trace,
            tree,
            node,
            job,
        }
    }

    fn owner(&self) -> TraceOwner<'_> {
        TraceOwner::new(&self.trace, &self.tree, self.node, &self.job)
    }
}

impl Party for LocalParty<'_> {
    fn result(&self) -> &SignedResult {
        &self.result
    }

    fn top(&mut self) -> Option<Digest> {
        Some(self.owner().top())
    }

    fn children(&mut self, level: u32, index: u64) -> Option<(Digest, Digest)> {
        self.owner().children(level, index)
    }

    fn leaf(&mut self, index: u64) -> Option<Option<Leaf>> {
        Some(self.owner().leaf(index))
    }

    fn reveal(&mut self, digests: &[Digest], until: u64) -> Reveal {
        self.owner().reveal(digests, until)
    }
}

/// Runs the dispute between `a` and `b` over `job` with `referee` (a node
/// serving the job's model with the results' plugin, party to neither
/// result, identified as `referee_id`) ruling. Errors when the results are
/// not a dispute (see [`Evidence::check`]); otherwise the evidence, whose
/// ruling names who cheated.
pub fn run(
    job: &JobSpec,
    a: &mut dyn Party,
    b: &mut dyn Party,
    referee: &Node,
    referee_id: &str,
) -> Result<Evidence, EvidenceError> {
    let checked = check_results(job, a.result(), b.result())?;
    let parties: [&mut dyn Party; 2] = [a, b];
    let [a, b] = parties;
    let results = [encode_result(a.result()), encode_result(b.result())];
    let tops = [a.top(), b.top()];
    let mut faulty = [0, 1]
        .map(|i| tops[i].is_none_or(|t| seal(checked.roots[i].len, &t) != checked.roots[i].root));
    let mut parents = tops.map(|t| t.unwrap_or([0; 32]));
    let mut steps = Vec::new();
    let mut at = Cursor::TOP;
    while at.level > 0 && !faulty.iter().any(|f| *f) {
        let kids = [
            a.children(at.level, at.index),
            b.children(at.level, at.index),
        ];
        let step = Step {
            level: at.level,
            index: at.index,
            a: kids[0].map(|(left, right)| Children { left, right }),
            b: kids[1].map(|(left, right)| Children { left, right }),
        };
        steps.push(step);
        for i in 0..2 {
            faulty[i] = !kids[i].is_some_and(|k| at.children_match(&parents[i], k));
        }
        if faulty.iter().any(|f| *f) {
            break;
        }
        let (ka, kb) = (kids[0].unwrap_or_default(), kids[1].unwrap_or_default());
        let Some(next) = at.step(ka, kb) else {
            return Err(EvidenceError::Invalid(
                "the traces agree below a node where they differ".into(),
            ));
        };
        parents = if next.index % 2 == 0 {
            [ka.0, kb.0]
        } else {
            [ka.1, kb.1]
        };
        at = next;
    }
    let ruling = |method, reference, findings: [Finding; 2]| Ruling {
        referee: referee_id.to_string(),
        method,
        reference,
        cheated: (0..2)
            .filter(|&i| !findings[i].honest())
            .map(|i| checked.parties[i].clone())
            .collect(),
        findings,
    };
    let evidence = |divergence, ruling| Evidence {
        version: EVIDENCE_VERSION,
        job: job.clone(),
        results: results.clone(),
        tops: parents_or(tops),
        steps: steps.clone(),
        divergence,
        ruling,
    };
    if faulty.iter().any(|f| *f) {
        return Ok(evidence(
            None,
            ruling(Method::Unanswered, None, unanswered(faulty)),
        ));
    }
    let index = at.index;
    let leaves = [a.leaf(index).flatten(), b.leaf(index).flatten()];
    let committed = |i: usize, leaf: &Option<Leaf>| match leaf {
        Some(l) => l.hash() == parents[i],
        None => parents[i] == [0; 32],
    };
    let bad = [0, 1].map(|i| !committed(i, &leaves[i]));
    if bad.iter().any(|b| *b) {
        // The leaf is the last step of the transcript: record the steps
        // only, the ruling says who did not show its committed call.
        return Ok(evidence(
            None,
            ruling(Method::Unanswered, None, unanswered(bad)),
        ));
    }
    // The weights among the inputs, by name (from the referee's copy).
    let model = referee.model_by_weights(&checked.weights_hash);
    let is_weight = |d: &Digest| {
        model.and_then(|m| {
            m.names()
                .iter()
                .find(|n| weight_digest(&checked.weights_hash, n) == *d)
                .cloned()
        })
    };
    let mut wanted: Vec<Digest> = Vec::new();
    let mut weights = Vec::new();
    if let [Some(la), Some(lb)] = &leaves {
        if same_call(la, lb) {
            for d in &la.inputs {
                match is_weight(d) {
                    Some(name) => weights.push(WeightRef { name }),
                    None => wanted.push(*d),
                }
            }
        }
    }
    // Both parties made these inputs the same way (the calls before the
    // divergence are equal): ask A, then B for what A did not show.
    let mut inputs: Vec<Revealed> = Vec::new();
    let mut derivations: Vec<Leaf> = Vec::new();
    if !wanted.is_empty() {
        for p in [&mut *a, &mut *b] {
            let got = p.reveal(&wanted, index.saturating_sub(1));
            for v in got.values {
                if !inputs.iter().any(|r| r.digest() == v.digest()) {
                    inputs.push(v);
                }
            }
            for l in got.derivations {
                if l.derived_digest() == l.output
                    && !derivations.iter().any(|k| k.output == l.output)
                {
                    derivations.push(l);
                }
            }
            if resolvable(&wanted, &inputs, &derivations, &is_weight) {
                break;
            }
        }
    }
    for d in derivations.iter().flat_map(|l| l.inputs.iter()) {
        if let Some(name) = is_weight(d) {
            if !weights.iter().any(|w| w.name == name) {
                weights.push(WeightRef { name });
            }
        }
    }
    let outputs: [Option<Revealed>; 2] = [0, 1].map(|i| {
        let leaf = leaves[i].as_ref()?;
        if leaf.op == "sample" || leaf.op == "weight" {
            return None;
        }
        let p: &mut dyn Party = if i == 0 { &mut *a } else { &mut *b };
        p.reveal(&[leaf.output], index)
            .values
            .into_iter()
            .find(|r| r.digest() == leaf.output)
    });
    let divergence = Divergence {
        index,
        leaves,
        inputs,
        derivations,
        weights,
        outputs,
    };
    let (method, reference, findings) = rule(&divergence, &checked, job, Some(referee))?;
    Ok(evidence(
        Some(divergence),
        ruling(method, reference, findings),
    ))
}

/// Whether every wanted digest can be rebuilt from what was revealed.
fn resolvable(
    wanted: &[Digest],
    values: &[Revealed],
    derivations: &[Leaf],
    is_weight: &dyn Fn(&Digest) -> Option<String>,
) -> bool {
    let have: std::collections::HashSet<Digest> = values.iter().map(Revealed::digest).collect();
    let mut todo: Vec<Digest> = wanted.to_vec();
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d) || have.contains(&d) || is_weight(&d).is_some() {
            continue;
        }
        match derivations.iter().find(|l| l.output == d) {
            Some(l) => todo.extend(l.inputs.iter().copied()),
            None => return false,
        }
    }
    true
}

fn parents_or(tops: [Option<Digest>; 2]) -> Vec<Digest> {
    tops.iter().map(|t| t.unwrap_or([0; 32])).collect()
}
