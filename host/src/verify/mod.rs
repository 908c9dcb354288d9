//! Verification of network jobs: the referee's judgement of one traced
//! kernel call ([`referee`]), disputes that bisect two providers' traces
//! down to the first diverging call ([`dispute`]), and the evidence bundle
//! anyone can check offline ([`evidence`]). Traces themselves are kept by
//! the kernels (`kernels::trace`); a job's policy (`none`, `replicate(k)`,
//! `spot-check(p)`, `proof`) is [`policy`] (in `config`, which parses it);
//! [`reputation`] turns verified outcomes (this node's and other verifiers'
//! signed attestations) into the score selection reads;
//! [`sim`] is the cheating simulation behind `infernet bench --verify`.

pub mod dispute;
pub mod evidence;
pub mod referee;
pub mod reputation;
pub mod sim;

/// A job's verification policy (parsed with the config, so it lives there).
pub use crate::config::policy;

use crate::kernels::trace::TraceRoot;
use crate::node::Node;
use crate::p2p::protocol::{
    hash_value, now_ms, BackendRef, ResultBinds, ResultBody, Tensor, Usage, WireInput,
};
use crate::worlds::backend::{F32Tensor, JobInput, JobRequest};

/// The body of a result of `job` run on `node` by `provider`: the output
/// hash and usage, the plugin, the weights, input and parameters, and the
/// trace root. The provider adds the client, the accepted quote and a
/// proof hash before signing. `None` when `node` does not serve the model.
pub fn result_body(
    node: &Node,
    job: &JobRequest,
    output_hash: String,
    usage: Usage,
    trace: TraceRoot,
    provider: String,
) -> Option<ResultBody> {
    let manifest = &node.backend_of(&job.model)?.plugin.loaded.manifest;
    Some(ResultBody {
        job_id: job.id.clone(),
        model_id: job.model.clone(),
        output_hash,
        usage,
        backend: BackendRef {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            sha256: manifest.sha256.clone(),
        },
        provider,
        client: None,
        timestamp_ms: now_ms(),
        trace_root: Some(trace.to_text()),
        proof_hash: None,
        binds: Some(ResultBinds {
            weights_hash: node.model(&job.model)?.weights_hash().to_string(),
            input_hash: hash_value(&wire_input(&job.input)),
            params: job.params.clone(),
            quote: None,
        }),
    })
}

/// Wire input → the WIT `job-input`.
pub fn job_input(input: WireInput) -> JobInput {
    match input {
        WireInput::Text(t) => JobInput::Text(t),
        WireInput::Texts(t) => JobInput::Texts(t),
        WireInput::Tokens(t) => JobInput::Tokens(t),
        WireInput::Tensor(t) => JobInput::Tensor(F32Tensor {
            shape: t.shape,
            data: t.data,
        }),
        WireInput::Bytes(b) => JobInput::Bytes(b),
    }
}

/// A job's input as the wire carries it (what a result's `input_hash` is
/// the hash of).
pub fn wire_input(input: &JobInput) -> WireInput {
    match input {
        JobInput::Text(t) => WireInput::Text(t.clone()),
        JobInput::Texts(t) => WireInput::Texts(t.clone()),
        JobInput::Tokens(t) => WireInput::Tokens(t.clone()),
        JobInput::Tensor(t) => WireInput::Tensor(Tensor {
            shape: t.shape.clone(),
            data: t.data.clone(),
        }),
        JobInput::Bytes(b) => WireInput::Bytes(b.clone()),
    }
}
