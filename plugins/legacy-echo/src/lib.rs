//! A backend built against the frozen contract `infernet:plugin@0.1.0`
//! (`wit/since_v0.1.0/`) with raw wit-bindgen bindings and no SDK: what a
//! third party's plugin from before 0.2 looks like. The tests run it on
//! the current host to show 0.1.0 plugins keep working. Built by
//! `plugins/legacy-echo-020` against the frozen 0.2.0 instead, it shows
//! 0.2.0 plugins load on a newer 0.2.x host.
//!
//! It touches every interface a 0.1.0 backend imports: it opens its model,
//! tokenizes the prompt with the model's tokenizer, sums the token ids with
//! host kernels (`from-u32`, `to-dtype`, `reduce`, `to-f32`), reads one
//! weight's shape, decodes the ids back, logs, and streams each word.
//! Output: `<decoded text> | tokens=<n> sum=<sum of ids> embed=<rows>x<cols>`.

#[cfg(not(feature = "contract-0-2-0"))]
wit_bindgen::generate!({
    world: "backend",
    path: "../../wit/since_v0.1.0",
    generate_all,
});

// `plugins/legacy-echo-020` builds this file against the frozen 0.2.0.
#[cfg(feature = "contract-0-2-0")]
wit_bindgen::generate!({
    world: "backend",
    path: "../../wit/since_v0.2.0",
    generate_all,
});

/// The name it reports: one per contract it is built for.
const NAME: &str = if cfg!(feature = "contract-0-2-0") {
    "legacy-echo-020"
} else {
    "legacy-echo"
};

use exports::infernet::plugin::backend_api::Guest;
use infernet::plugin::tensor::{self, Dtype, ReduceOp, Tensor};
use infernet::plugin::types::{
    BackendInfo, Error, JobInput, JobOutput, JobRequest, JobResult, Usage,
};
use infernet::plugin::{log, models, progress};

struct LegacyEcho;

impl Guest for LegacyEcho {
    fn describe() -> BackendInfo {
        BackendInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            tasks: vec!["text-generation".into()],
            architectures: vec!["llama".into()],
        }
    }

    fn execute(job: JobRequest) -> Result<JobResult, Error> {
        let JobInput::Text(text) = job.input else {
            return Err(Error::InvalidInput("legacy-echo takes text input".into()));
        };
        let weights = models::open(&job.model)?;
        let tokenizer = weights.tokenizer()?;
        let ids = tokenizer.encode(&text, false)?;
        if ids.is_empty() {
            return Err(Error::InvalidInput("the prompt has no tokens".into()));
        }
        let t = Tensor::from_u32(&ids, &[ids.len() as u32])?;
        let f = tensor::to_dtype(&t, Dtype::F32)?;
        let sum = tensor::reduce(ReduceOp::Sum, &f, 0, false)?.to_f32()?;
        let embed = weights.get("model.embed_tokens.weight")?.shape();
        let decoded = tokenizer.decode(&ids, true)?;
        log::log(log::Level::Info, &format!("{NAME}: {} tokens", ids.len()));
        for word in decoded.split_inclusive(' ') {
            progress::emit_token(word);
        }
        let n = ids.len() as u32;
        Ok(JobResult {
            output: JobOutput::Text(format!(
                "{decoded} | tokens={n} sum={} embed={}x{}",
                sum.first().copied().unwrap_or(f32::NAN),
                embed.first().copied().unwrap_or(0),
                embed.get(1).copied().unwrap_or(0),
            )),
            usage: Usage {
                input_tokens: n,
                output_tokens: n,
            },
        })
    }
}

export!(LegacyEcho);
