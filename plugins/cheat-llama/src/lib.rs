//! A CHEATING llama backend, for the verifier's tests only: never ship it.
//!
//! It runs the honest llama plugin's own code (`plugins/llama/src`, included
//! by `#[path]`, not copied) with one deliberate deviation, chosen at compile
//! time by exactly one cargo feature, and it describes itself exactly as the
//! honest plugin does (`scripts/build-plugins.sh` also packs it under the name
//! `llama`), so only verification can tell them apart:
//!
//! - `perturb`: block `num_hidden_layers / 2` scales its MLP output (after
//!   `down_proj`) by `1 + 1e-3`: one extra `affine` kernel call per forward
//!   step, before that block's residual `add`; everything else is honest.
//! - `skip-layers`: runs only blocks `0..num_hidden_layers / 2`.
//! - `replay`: answers every job with the output for the fixed prompt
//!   `"hello"` (another job's output, as a provider replaying a cache would);
//!   its usage is that of the output returned.
//! - `early-stop`: generates at most `max(1, max_tokens / 2)` tokens, and
//!   reports the usage of what it generated.
//! - `session-lie`: a pipeline stage honest at `pos` 0 (a session's first
//!   step, or a self-contained run of a whole session) that scales its
//!   input hidden states by `1 + 1e-3` at any later position: a lie only
//!   a session step shows.

#[path = "../../llama/src/backend.rs"]
mod backend;
#[path = "../../llama/src/config.rs"]
mod config;
#[path = "../../llama/src/model.rs"]
mod model;
#[path = "../../llama/src/stage.rs"]
mod stage;

use backend::LlamaBackend;
#[cfg(any(feature = "replay", feature = "session-lie"))]
use infernet_plugin_api::JobInput;
use infernet_plugin_api::{export_backend, Backend, BackendInfo, Error, JobRequest, JobResult};
use model::Tamper;

#[cfg(not(any(
    feature = "perturb",
    feature = "skip-layers",
    feature = "replay",
    feature = "early-stop",
    feature = "session-lie"
)))]
compile_error!("enable one cheat: --features perturb|skip-layers|replay|early-stop|session-lie");

#[cfg(any(
    all(feature = "perturb", feature = "skip-layers"),
    all(feature = "perturb", feature = "replay"),
    all(feature = "perturb", feature = "early-stop"),
    all(feature = "skip-layers", feature = "replay"),
    all(feature = "skip-layers", feature = "early-stop"),
    all(feature = "replay", feature = "early-stop"),
    all(feature = "session-lie", feature = "perturb"),
    all(feature = "session-lie", feature = "skip-layers"),
    all(feature = "session-lie", feature = "replay"),
    all(feature = "session-lie", feature = "early-stop"),
))]
compile_error!("enable exactly one cheat (pass --no-default-features with --features)");

/// The forward pass `model` runs (read by it as `crate::TAMPER`).
const TAMPER: Tamper = if cfg!(feature = "perturb") {
    // CHEAT (perturb): one extra `affine` in block `num_hidden_layers / 2`.
    Tamper {
        perturb_middle_block: true,
        ..Tamper::NONE
    }
} else if cfg!(feature = "skip-layers") {
    // CHEAT (skip-layers): the second half of the blocks never runs.
    Tamper {
        skip_second_half: true,
        ..Tamper::NONE
    }
} else {
    Tamper::NONE
};

/// The honest backend, fed a doctored job.
struct CheatBackend(LlamaBackend);

impl Backend for CheatBackend {
    fn new() -> Self {
        CheatBackend(LlamaBackend::new())
    }

    /// The honest plugin's name, version, tasks and architectures: a lie.
    fn describe(&self) -> BackendInfo {
        self.0.describe()
    }

    #[allow(unused_mut)] // only `replay`, `early-stop` and `session-lie` doctor the job
    fn execute(&mut self, mut job: JobRequest) -> Result<JobResult, Error> {
        // CHEAT (replay): the output for a fixed prompt, whatever was asked.
        #[cfg(feature = "replay")]
        {
            job.input = JobInput::Text("hello".into());
        }
        // CHEAT (early-stop): half the tokens asked for (llama's default is 32).
        #[cfg(feature = "early-stop")]
        {
            let asked: usize = job.param_or("max_tokens", 32)?;
            let short = if asked == 0 { 0 } else { (asked / 2).max(1) };
            job.params.retain(|(k, _)| k != "max_tokens");
            job.params.push(("max_tokens".into(), short.to_string()));
        }
        // CHEAT (session-lie): hidden states scaled past a session's first step.
        #[cfg(feature = "session-lie")]
        {
            let pos: u32 = job.param_or("pos", 0)?;
            if let (true, JobInput::Tensor(t)) = (pos > 0, &mut job.input) {
                for v in t.data.iter_mut() {
                    *v *= 1.0 + 1e-3;
                }
            }
        }
        self.0.execute(job)
    }
}

export_backend!(CheatBackend);
