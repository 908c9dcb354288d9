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
//! session, and a step on which the two signed results (output hash and
//! trace root) differ stops the generation, naming the stage, the step
//! and both providers: a lying stage is caught by replicating that stage.

use super::route::{Hop, Objective};
use super::{ClientError, InferOptions, JobClient, JobOutcome};
use crate::config::VerifyPolicy;
use crate::p2p::protocol::{Money, Tensor, WireInput, WireOutput};
use crate::payments::currency::Amount;
use libp2p::PeerId;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

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
    /// Run every stage on a second provider of its span too and compare
    /// each step's signed results.
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
    /// budget, currency and `max_tokens`, decoded to text; `replicate(k)`
    /// replicates every stage. Refused: sampling (a pipeline decodes
    /// greedily), a proof, and a spot check.
    pub fn for_job(opts: &InferOptions) -> Result<PipelineOptions, ClientError> {
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
            None | Some(VerifyPolicy::None) => false,
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

/// Rows of a stage input: token ids, or the positions of `[1, seq, hidden]`;
/// a text prompt's are what the first stage says it tokenized.
fn rows(input: &WireInput, done: &JobOutcome) -> u32 {
    match input {
        WireInput::Tokens(t) => t.len() as u32,
        WireInput::Tensor(t) => t.shape.get(1).copied().unwrap_or(0),
        _ => done.usage().input_tokens,
    }
}

/// Rows of a token or tensor input (0 for text).
fn known_rows(input: &WireInput) -> u32 {
    match input {
        WireInput::Tokens(t) => t.len() as u32,
        WireInput::Tensor(t) => t.shape.get(1).copied().unwrap_or(0),
        _ => 0,
    }
}

/// The inputs `sent` as one prefill: token ids or hidden states
/// concatenated along the positions.
fn concat(sent: &[WireInput]) -> Option<WireInput> {
    if let [one] = sent {
        return Some(one.clone());
    }
    match sent.first()? {
        WireInput::Tokens(_) => Some(WireInput::Tokens(
            sent.iter()
                .flat_map(|i| match i {
                    WireInput::Tokens(t) => t.clone(),
                    _ => Vec::new(),
                })
                .collect(),
        )),
        WireInput::Tensor(first) => {
            let width = *first.shape.get(2)?;
            let data: Vec<f32> = sent
                .iter()
                .flat_map(|i| match i {
                    WireInput::Tensor(t) => t.data.clone(),
                    _ => Vec::new(),
                })
                .collect();
            let seq = sent.iter().map(known_rows).sum::<u32>();
            Some(WireInput::Tensor(Tensor {
                shape: vec![1, seq, width],
                data,
            }))
        }
        _ => None,
    }
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
        };
        let (mut tokens, mut logits) = (Vec::new(), Vec::new());
        let mut first_token_ms = 0;
        let mut input = prompt;
        for step in 0..opts.max_tokens {
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

/// One generation's running totals.
struct Run<'a> {
    client: &'a JobClient,
    opts: &'a PipelineOptions,
    /// Minor units paid so far (in the budget's currency).
    spent: u128,
    hidden_bytes: u64,
}

impl Run<'_> {
    /// Sends `input` through `stage` and, when replicated, its replica,
    /// and compares the two outputs.
    async fn step(
        &mut self,
        stage: &mut Stage,
        input: WireInput,
        last: bool,
        head: bool,
    ) -> Result<WireOutput, ClientError> {
        let Some(mut replica) = stage.replica.take() else {
            return self.step_one(stage, input, last, head).await;
        };
        let step = stage.report.jobs.len();
        let out = self.step_one(stage, input.clone(), last, head).await;
        let theirs = self.step_one(&mut replica, input, last, head).await;
        let (out, theirs) = (out?, theirs?);
        if !outputs_agree(&out, &theirs) {
            return Err(ClientError::Verification(format!(
                "stage {} disagrees with its replica at step {step}: provider {} and provider {} returned different outputs; the generation is stopped",
                stage.hop.span_id, stage.hop.provider, replica.hop.provider
            )));
        }
        stage.replica = Some(replica);
        Ok(out)
    }

    /// One step of `stage`; when it fails, the stage moves to another
    /// provider of its span, rebuilt from everything it was sent.
    async fn step_one(
        &mut self,
        stage: &mut Stage,
        input: WireInput,
        last: bool,
        head: bool,
    ) -> Result<WireOutput, ClientError> {
        let first = self.submit(stage, input.clone(), last).await;
        let checked = first.and_then(|o| {
            let n = rows(&input, &o);
            check_output(stage, &o.output, n, head)?;
            Ok((o, n))
        });
        let mut error = match checked {
            Ok((o, n)) => {
                if stage.sent.is_empty() {
                    stage.prompt_rows = n;
                }
                stage.rows += n;
                stage.sent.push(input);
                return Ok(o.output);
            }
            Err(e) => e,
        };
        loop {
            stage.failovers += 1;
            if !fails_over(&error) || stage.failovers > MAX_STAGE_FAILOVERS {
                return Err(error);
            }
            tracing::warn!(stage = %stage.hop.span_id, provider = %stage.hop.provider, %error, "stage failed; rebuilding it on another provider");
            let hop = self.replacement(stage, &error).await?;
            stage.report.providers.push(hop.provider);
            stage.hop = hop;
            match self.rebuild(stage, &input, last, head).await {
                Ok(output) => return Ok(output),
                Err(e) => error = e,
            }
        }
    }

    /// Rebuilds `stage`'s session on its (new) provider from everything
    /// it was sent, and this step's `input`: one prefill of token ids or
    /// hidden states, or (a text prompt, then tokens) one job each.
    /// Returns this step's output.
    async fn rebuild(
        &mut self,
        stage: &mut Stage,
        input: &WireInput,
        last: bool,
        head: bool,
    ) -> Result<WireOutput, ClientError> {
        stage.session = session_id();
        stage.rows = 0;
        let mut all = stage.sent.clone();
        all.push(input.clone());
        let parts = match concat(&all) {
            Some(one) => vec![one],
            None => all.clone(),
        };
        let mut output = None;
        for (i, part) in parts.iter().enumerate() {
            let o = self
                .submit(stage, part.clone(), last && i + 1 == parts.len())
                .await?;
            let n = rows(part, &o);
            check_output(stage, &o.output, n, head)?;
            stage.rows += n;
            output = Some(o.output);
        }
        let mut output = output.ok_or_else(|| corrupt(stage, "nothing to rebuild"))?;
        if let (WireOutput::Logits(t), true) = (&mut output, parts.len() == 1 && all.len() > 1) {
            // Only this step's rows go on to the next stage.
            keep_last_rows(t, known_rows(input));
        }
        stage.sent = all;
        Ok(output)
    }

    /// The best other provider of `stage`'s span.
    async fn replacement(&self, stage: &Stage, error: &ClientError) -> Result<Hop, ClientError> {
        let id = &stage.hop.span_id;
        let model = crate::models::span::parse_id(id).map_or("", |(m, _)| m);
        let mut avoid: HashSet<PeerId> = stage.report.providers.iter().copied().collect();
        avoid.extend(stage.avoid.iter().copied());
        let offers = self.client.offers(model, &avoid).await?;
        offers
            .get(id)
            .and_then(|o| self.client.best_hop(id, o, self.opts.objective))
            .ok_or_else(|| ClientError::Failed {
                job_id: stage.report.jobs.last().cloned().unwrap_or_default(),
                message: format!(
                    "stage {id} failed ({error}) and no other provider serves that span"
                ),
            })
    }

    /// The text of `tokens`, decoded by the first stage's provider (up to
    /// the model's end of text), and how many tokens it kept.
    async fn decode(
        &mut self,
        stage: &mut Stage,
        tokens: &[u32],
    ) -> Result<(String, u32), ClientError> {
        let mut opts = self.step_options(stage, false);
        opts.params = vec![("decode".into(), "true".into())];
        // Its text is output: bounded (and priced) as that many tokens.
        opts.max_tokens = Some(tokens.len() as u32);
        let outcome = self
            .client
            .submit(
                &stage.hop.span_id,
                WireInput::Tokens(tokens.to_vec()),
                &opts,
            )
            .await?;
        self.paid(stage, &outcome);
        let kept = outcome.usage().input_tokens.min(tokens.len() as u32);
        match outcome.output {
            WireOutput::Text(t) => Ok((t, kept)),
            _ => Err(corrupt(stage, "`decode` returned no text")),
        }
    }

    /// The options of one job of `stage` on its provider, within what is
    /// left of the budget.
    fn step_options(&self, stage: &Stage, last: bool) -> InferOptions {
        let remaining = self.opts.max_budget.map(|b| Amount {
            minor: b.minor.saturating_sub(self.spent),
            currency: b.currency,
        });
        InferOptions {
            max_budget: remaining,
            currency: self.opts.currency.clone(),
            max_tokens: Some(1),
            params: vec![
                ("session".into(), stage.session.clone()),
                ("pos".into(), stage.rows.to_string()),
                ("session_end".into(), last.to_string()),
            ],
            verify: Some(VerifyPolicy::None),
            only_provider: Some(stage.hop.provider.to_string()),
            ..InferOptions::default()
        }
    }

    /// Records what `stage` paid for `outcome`.
    fn paid(&mut self, stage: &mut Stage, outcome: &JobOutcome) {
        stage.report.jobs.push(outcome.job_id.clone());
        if self.opts.max_budget.is_some() {
            self.spent += u128::from(outcome.price.amount);
        }
        stage.paid.push(outcome.price.clone());
    }

    /// One step job for `stage`'s session on its provider.
    async fn submit(
        &mut self,
        stage: &mut Stage,
        input: WireInput,
        last: bool,
    ) -> Result<JobOutcome, ClientError> {
        let opts = self.step_options(stage, last);
        if opts.max_budget.is_some_and(|r| r.minor == 0) {
            return Err(ClientError::OverBudget {
                budget: format!(
                    "{} (all spent)",
                    self.opts
                        .max_budget
                        .map(|b| b.to_string())
                        .unwrap_or_default()
                ),
                cheapest: None,
            });
        }
        let outcome = self.client.submit(&stage.hop.span_id, input, &opts).await?;
        self.paid(stage, &outcome);
        Ok(outcome)
    }
}

/// Keeps the last `n` rows of a `[1, seq, width]` tensor (the last
/// stage's `[1, vocab]` logits are one row already).
fn keep_last_rows(t: &mut Tensor, n: u32) {
    if let [1, seq, width] = t.shape[..] {
        if n < seq {
            let from = ((seq - n) * width) as usize;
            t.data.drain(..from);
            t.shape = vec![1, n, width];
        }
    }
}

fn argmax(v: &[f32]) -> Option<u32> {
    // The first of equal maxima, as candle's argmax on the CPU picks.
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in v.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// A stage's output has the shape its step calls for: the last stage's
/// logits `[1, vocab]`, another's hidden states `[1, rows, width]` (one
/// row per input row), values matching the shape. A stage answering
/// otherwise fails the step (and is replaced), rather than the next stage
/// refusing what it was handed.
fn check_output(stage: &Stage, out: &WireOutput, rows: u32, head: bool) -> Result<(), ClientError> {
    let WireOutput::Logits(t) = out else {
        return Err(corrupt(stage, "a stage returned no tensor"));
    };
    let values: u64 = t.shape.iter().map(|&d| u64::from(d)).product();
    let ok = match (head, &t.shape[..]) {
        (true, [1, vocab]) => *vocab > 0,
        (false, [1, n, width]) => *n == rows && *width > 0,
        _ => false,
    };
    if !ok || values != t.data.len() as u64 {
        return Err(corrupt(
            stage,
            &format!(
                "returned a tensor of shape {:?} ({} values) for {rows} rows; expected {}",
                t.shape,
                t.data.len(),
                if head {
                    "[1, vocab]"
                } else {
                    "[1, rows, width]"
                }
            ),
        ));
    }
    Ok(())
}

/// Whether a failed step is the provider's failure, which another
/// provider of the span may not repeat (not the budget, the options, this
/// node's own store or network, or a verdict).
fn fails_over(e: &ClientError) -> bool {
    !matches!(
        e,
        ClientError::OverBudget { .. }
            | ClientError::BadOptions(_)
            | ClientError::Store(_)
            | ClientError::Network(_)
            | ClientError::Verification(_)
    )
}

/// Two replicas' outputs agree: the same shape and every value within
/// 1e-5 of the larger's magnitude (a rebuilt cache's last bits differ from
/// an incremental one's; a changed computation moves values far more).
fn outputs_agree(a: &WireOutput, b: &WireOutput) -> bool {
    let (WireOutput::Logits(x), WireOutput::Logits(y)) = (a, b) else {
        return false;
    };
    if x.shape != y.shape || x.data.len() != y.data.len() {
        return false;
    }
    let scale = x
        .data
        .iter()
        .chain(&y.data)
        .fold(1f32, |m, v| m.max(v.abs()));
    x.data
        .iter()
        .zip(&y.data)
        .all(|(p, q)| (p - q).abs() <= 1e-5 * scale)
}

fn corrupt(stage: &Stage, what: &str) -> ClientError {
    ClientError::Corrupt {
        job_id: stage.report.jobs.last().cloned().unwrap_or_default(),
        reason: format!("stage {}: {what}", stage.hop.span_id),
    }
}
