//! Pipelines: one model served by a chain of providers, each holding a
//! span of its layers ([`crate::models::span`]), the way Petals serves a
//! model too large for one machine.
//!
//! Generation runs as a session across the chain ([`route`](super::route)
//! picks it): the prompt goes through every stage as one prefill, then one
//! step per token. Each stage keeps its own KV cache for the session, on
//! the plugin instance its provider holds for it (`node/stages.rs`). Every
//! stage step is a job of its own, for the span id: quoted, escrowed,
//! signed with the trace root of that span's calls, and paid, all within
//! the pipeline's budget. Hidden states cross between stages as exact
//! f32 tensors.
//!
//! A stage that fails (its provider dies, or dropped the session) is
//! replaced by another provider of the same span: the new stage rebuilds
//! the cache from everything the session sent that stage so far, in one
//! prefill, and generation goes on. With [`PipelineOptions::replicate`]
//! each stage also runs on a second provider of its span with its own
//! session, and a step on which their outputs differ is settled
//! (`dispute.rs`: a referee rules on self-contained re-runs of the
//! session): the liar leaves the stage, another provider is rebuilt as
//! the replica, and generation goes on. A lying stage is caught by
//! replicating that stage.

use super::route::{Hop, Objective};
use super::{ClientError, InferOptions, JobClient, JobOutcome};
use crate::config::VerifyPolicy;
use crate::p2p::protocol::{Money, WireInput, WireOutput};
use crate::payments::currency::Amount;
pub use dispute::StageDispute;
use libp2p::PeerId;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;
use step::{argmax, corrupt, Run};

mod dispute;
mod step;
#[cfg(test)]
mod tests;

/// Most tokens one pipeline generates.
pub const MAX_PIPELINE_TOKENS: u32 = 4096;
/// Most times one stage is replaced within a generation.
pub const MAX_STAGE_FAILOVERS: u32 = 3;

/// How a pipeline runs.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// How the chain is chosen.
    pub objective: Objective,
    /// Tokens to generate (greedy), at most [`MAX_PIPELINE_TOKENS`].
    pub max_tokens: u32,
    /// Generation stops after any of these tokens (the model's end of
    /// text), as a single node's does.
    pub stop_tokens: Vec<u32>,
    /// Most the whole generation pays, every stage and step together.
    pub max_budget: Option<Amount>,
    /// Only accept quotes in this currency.
    pub currency: Option<String>,
    /// Run every stage on a second provider of its span too, compare each
    /// step's outputs and settle a disagreement (a referee from `[verify]
    /// referees` rules on self-contained re-runs of the session).
    pub replicate: bool,
    /// Keep the last stage's logits of every step in the outcome.
    pub keep_logits: bool,
    /// Have the first stage decode the generated tokens into text (up to
    /// the model's end of text), one more job ([`PipelineOutcome::text`]).
    pub decode: bool,
}

impl PipelineOptions {
    /// The pipeline an ordinary job's options ask for, when no single
    /// provider serves its model (`infer --network`, the HTTP API): its
    /// budget, currency and `max_tokens`, decoded to text; `replicate(2)`
    /// replicates every stage. Refused: sampling (a pipeline decodes
    /// greedily), a proof, and another policy asked for by the job. A
    /// node's default policy (`configured`, the job naming none) other
    /// than `replicate(2)` is not applied to a pipeline, and a warning
    /// says so.
    pub fn for_job(
        opts: &InferOptions,
        configured: &VerifyPolicy,
    ) -> Result<PipelineOptions, ClientError> {
        if opts.temperature.is_some_and(|t| t > 0.0) {
            return Err(ClientError::BadOptions(
                "this model is served by a pipeline of providers, which decodes greedily: set temperature to 0".into(),
            ));
        }
        if let Some(p) = &opts.proof {
            return Err(ClientError::BadOptions(format!(
                "this model is served by a pipeline of providers, and no stage proves its layers in `{p}`"
            )));
        }
        let replicate = match &opts.verify {
            None => match configured {
                VerifyPolicy::Replicate(2) => true,
                VerifyPolicy::None => false,
                other => {
                    tracing::warn!(policy = %other, "a pipeline verifies with replicate(2) per stage or not at all: this one runs unverified");
                    false
                }
            },
            Some(VerifyPolicy::None) => false,
            Some(VerifyPolicy::Replicate(k)) if *k <= 2 => *k == 2,
            Some(other) => {
                return Err(ClientError::BadOptions(format!(
                    "this model is served by a pipeline of providers, which verifies with `replicate(2)` per stage, not `{other}`"
                )))
            }
        };
        Ok(PipelineOptions {
            max_tokens: opts
                .max_tokens
                .unwrap_or(super::DEFAULT_MAX_OUTPUT_TOKENS)
                .min(MAX_PIPELINE_TOKENS),
            max_budget: opts.max_budget,
            currency: opts.currency.clone(),
            replicate,
            decode: true,
            ..PipelineOptions::default()
        })
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// The final logits of each generated token (when asked for).
    pub logits: Vec<Vec<f32>>,
    /// Each stage, in chain order.
    pub stages: Vec<StageReport>,
    /// What the generation cost, one sum per currency.
    pub price: Vec<Money>,
    /// From the start to the first token, ms.
    pub first_token_ms: u64,
    /// The whole generation, ms.
    pub total_ms: u64,
    /// Hidden-state bytes sent between stages (f32 payloads).
    pub hidden_bytes: u64,
    /// The prompt's length in tokens (the first stage's prefill rows).
    pub prompt_tokens: u32,
    /// The text of the generated tokens up to the model's end of text,
    /// and how many tokens that is, when [`PipelineOptions::decode`].
    pub text: Option<(String, u32)>,
    /// Replicated stages' disagreements, each settled by dropping the
    /// provider found lying (see [`StageDispute`]).
    pub disputes: Vec<StageDispute>,
}

impl PipelineOutcome {
    /// What the CLI's `--json` and the HTTP API's `infernet.pipeline` say
    /// of a generation: each stage (span, providers in order, its replica,
    /// its jobs, its price), the total price, and the timings.
    pub fn summary_json(&self) -> serde_json::Value {
        let prices = |p: &[Money]| -> Vec<serde_json::Value> {
            p.iter()
                .map(|m| crate::payments::money_json(m.amount, &m.currency))
                .collect()
        };
        serde_json::json!({
            "stages": self.stages.iter().map(|s| serde_json::json!({
                "span": s.span_id,
                "providers": s.providers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "replica": s.replica.map(|p| p.to_string()),
                "jobs": s.jobs,
                "price": prices(&s.price),
                "wait_ms": s.wait_ms,
            })).collect::<Vec<_>>(),
            "price": prices(&self.price),
            "first_token_ms": self.first_token_ms,
            "total_ms": self.total_ms,
            "hidden_bytes": self.hidden_bytes,
            "disputes": self.disputes.iter().map(|d| serde_json::json!({
                "span": d.span_id,
                "step": d.step,
                "cheat": d.cheat.to_string(),
                "referee": d.ruling.as_ref().map(|(r, _)| r.to_string()),
                "evidence": d.ruling.as_ref().map(|(_, e)| e.display().to_string()),
            })).collect::<Vec<_>>(),
        })
    }
}

/// One stage of a finished generation.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The span id.
    pub span_id: String,
    /// Its providers in the order they served (more than one after a
    /// failover).
    pub providers: Vec<PeerId>,
    /// The replica's provider, when replicated.
    pub replica: Option<PeerId>,
    /// Its step jobs' ids, in order (replays included).
    pub jobs: Vec<String>,
    /// What it was paid, one sum per currency (its replica's included).
    pub price: Vec<Money>,
    /// How long this client waited on its steps (each a whole job:
    /// quote, escrow, run, receipt), ms.
    pub wait_ms: u64,
}

/// One stage while generating: its hop, session and what it was sent.
struct Stage {
    hop: Hop,
    session: String,
    /// Rows its session has processed (the next `pos`).
    rows: u32,
    /// Rows of its first input (the prompt's tokens, for the first stage).
    prompt_rows: u32,
    /// Every input the session was sent, for a rebuild.
    sent: Vec<WireInput>,
    failovers: u32,
    /// Providers it must not move to (a replica's primary).
    avoid: HashSet<PeerId>,
    report: StageReport,
    paid: Vec<Money>,
    replica: Option<Box<Stage>>,
}

/// Sums prices per currency.
pub(super) fn sum_prices<'a>(prices: impl IntoIterator<Item = &'a Money>) -> Vec<Money> {
    let mut sum: BTreeMap<String, u64> = BTreeMap::new();
    for p in prices {
        let s = sum.entry(p.currency.clone()).or_default();
        *s = s.saturating_add(p.amount);
    }
    sum.into_iter()
        .map(|(currency, amount)| Money { amount, currency })
        .collect()
}

fn session_id() -> String {
    format!("pipe-{}", crate::node::new_job_id())
}

impl Stage {
    fn new(hop: Hop) -> Stage {
        Stage {
            session: session_id(),
            rows: 0,
            prompt_rows: 0,
            sent: Vec::new(),
            failovers: 0,
            avoid: HashSet::new(),
            report: StageReport {
                span_id: hop.span_id.clone(),
                providers: vec![hop.provider],
                replica: None,
                jobs: Vec::new(),
                price: Vec::new(),
                wait_ms: 0,
            },
            paid: Vec::new(),
            replica: None,
            hop,
        }
    }
}

impl JobClient {
    /// [`PipelineOptions::for_job`] under this client's `[verify] policy`.
    pub fn pipeline_options(&self, opts: &InferOptions) -> Result<PipelineOptions, ClientError> {
        PipelineOptions::for_job(opts, &self.inner.verify.policy)
    }

    /// Generates `max_tokens` tokens (greedy) after `prompt` on a chain of
    /// providers of `model`'s layer spans. See the module docs.
    pub async fn generate_pipeline(
        &self,
        model: &str,
        prompt: WireInput,
        opts: &PipelineOptions,
    ) -> Result<PipelineOutcome, ClientError> {
        let empty = match &prompt {
            WireInput::Tokens(t) => t.is_empty(),
            WireInput::Text(t) => t.is_empty(),
            _ => {
                return Err(ClientError::BadOptions(
                    "a pipeline's prompt is `text` or `tokens`".into(),
                ))
            }
        };
        if empty {
            return Err(ClientError::BadOptions("the prompt is empty".into()));
        }
        if opts.max_tokens == 0 || opts.max_tokens > MAX_PIPELINE_TOKENS {
            return Err(ClientError::BadOptions(format!(
                "a pipeline generates 1 to {MAX_PIPELINE_TOKENS} tokens, asked {}",
                opts.max_tokens
            )));
        }
        let started = Instant::now();
        let chain = self.route(model, opts.objective, &HashSet::new()).await?;
        let mut stages: Vec<Stage> = chain.into_iter().map(Stage::new).collect();
        if opts.replicate {
            self.add_replicas(model, opts.objective, &mut stages)
                .await?;
        }
        tracing::info!(model, stages = stages.len(), spans = ?stages.iter().map(|s| s.hop.span_id.as_str()).collect::<Vec<_>>(), "pipeline");
        let mut run = Run {
            client: self,
            opts,
            spent: 0,
            hidden_bytes: 0,
            step: 0,
            disputes: Vec::new(),
        };
        let (mut tokens, mut logits) = (Vec::new(), Vec::new());
        let mut first_token_ms = 0;
        let mut input = prompt;
        for step in 0..opts.max_tokens {
            run.step = step;
            let last_step = step + 1 == opts.max_tokens;
            let n = stages.len();
            let mut next = None;
            for (i, stage) in stages.iter_mut().enumerate() {
                let waited = Instant::now();
                let output = run.step(stage, input, last_step, i + 1 == n).await?;
                stage.report.wait_ms += waited.elapsed().as_millis() as u64;
                let WireOutput::Logits(t) = output else {
                    return Err(corrupt(stage, "a stage returned no tensor"));
                };
                if i + 1 < n {
                    run.hidden_bytes += 4 * t.data.len() as u64;
                    input = WireInput::Tensor(t);
                    continue;
                }
                let token = argmax(&t.data).ok_or_else(|| corrupt(stage, "empty logits"))?;
                if opts.keep_logits {
                    logits.push(t.data);
                }
                next = Some(token);
                input = WireInput::Tokens(vec![token]);
            }
            let Some(next) = next else {
                return Err(ClientError::NoPipeline {
                    model: model.into(),
                    spans: Vec::new(),
                });
            };
            tokens.push(next);
            if step == 0 {
                first_token_ms = started.elapsed().as_millis() as u64;
            }
            if opts.stop_tokens.contains(&next) {
                break;
            }
        }
        let prompt_tokens = stages.first().map_or(0, |s| s.prompt_rows);
        let text = match opts.decode {
            false => None,
            true => Some(run.decode(&mut stages[0], &tokens).await?),
        };
        let mut reports = Vec::new();
        let mut all = Vec::new();
        for s in stages {
            let mut report = s.report;
            let mut paid = s.paid;
            if let Some(r) = s.replica {
                report.replica = Some(r.hop.provider);
                report.jobs.extend(r.report.jobs);
                paid.extend(r.paid);
            }
            report.price = sum_prices(&paid);
            all.extend(paid);
            reports.push(report);
        }
        Ok(PipelineOutcome {
            tokens,
            logits,
            stages: reports,
            price: sum_prices(&all),
            first_token_ms,
            total_ms: started.elapsed().as_millis() as u64,
            hidden_bytes: run.hidden_bytes,
            prompt_tokens,
            text,
            disputes: run.disputes,
        })
    }

    /// A second provider for every stage's span, other than the first's.
    async fn add_replicas(
        &self,
        model: &str,
        objective: Objective,
        stages: &mut [Stage],
    ) -> Result<(), ClientError> {
        for s in stages.iter_mut() {
            let avoid = HashSet::from([s.hop.provider]);
            let offers = self.offers(model, &avoid).await?;
            let hop = offers
                .get(&s.hop.span_id)
                .and_then(|o| self.best_hop(&s.hop.span_id, o, objective))
                .ok_or_else(|| {
                    ClientError::Verification(format!(
                        "replicating stage {}: no second provider serves it",
                        s.hop.span_id
                    ))
                })?;
            let mut replica = Stage::new(hop);
            replica.avoid = avoid;
            s.replica = Some(Box::new(replica));
        }
        Ok(())
    }
}
