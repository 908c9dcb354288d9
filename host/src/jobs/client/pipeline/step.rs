//! One step of a pipeline's stage: the job, the checks on what it
//! returned, a replica's comparison, and the rebuild on another provider
//! when a stage fails.

use super::dispute::Liar;
use super::{
    session_id, ClientError, Hop, InferOptions, JobClient, JobOutcome, PipelineOptions, Stage,
    VerifyPolicy, MAX_STAGE_FAILOVERS,
};
use crate::p2p::protocol::{Tensor, WireInput, WireOutput};
use crate::payments::currency::Amount;
use libp2p::PeerId;
use std::collections::HashSet;

/// Rows of a stage input: token ids, or the positions of `[1, seq, hidden]`;
/// a text prompt's are what the first stage says it tokenized.
pub(super) fn rows(input: &WireInput, done: &JobOutcome) -> u32 {
    match input {
        WireInput::Tokens(t) => t.len() as u32,
        WireInput::Tensor(t) => t.shape.get(1).copied().unwrap_or(0),
        _ => done.usage().input_tokens,
    }
}

/// What a stage input may take of a job request: the request limit
/// (PROTOCOL §9) less room for the job's id, model and parameters.
const MAX_STAGE_INPUT: usize = crate::p2p::protocol::MAX_REQUEST_BYTES - 16 * 1024;

/// Refuses an input that could not travel in one job request: hidden
/// states are up to 5 CBOR bytes a value, so a long prompt's prefill past
/// the first stage can outgrow the 1 MiB request limit (about 360 tokens
/// at hidden size 576, 50 at 4096). Said before anything is paid.
pub(super) fn fits_in_a_request(input: &WireInput) -> Result<(), String> {
    let (values, width) = match input {
        WireInput::Tensor(t) => (t.data.len(), t.shape.last().copied().unwrap_or(1).max(1)),
        WireInput::Tokens(t) => (t.len(), 1),
        WireInput::Text(t) => return check_len(t.len(), 1, MAX_STAGE_INPUT),
        _ => return Ok(()),
    };
    check_len(
        values.saturating_mul(5),
        width as usize * 5,
        MAX_STAGE_INPUT,
    )
}

fn check_len(bytes: usize, row_bytes: usize, max: usize) -> Result<(), String> {
    if bytes <= max {
        return Ok(());
    }
    Err(format!(
        "its input is up to {} KiB, over the {} KiB one job request carries: a pipeline of this model takes prompts of at most {} tokens (prefill is one request per stage)",
        bytes.div_ceil(1024),
        max / 1024,
        max / row_bytes.max(1)
    ))
}

/// Rows of a token or tensor input (0 for text).
pub(super) fn known_rows(input: &WireInput) -> u32 {
    match input {
        WireInput::Tokens(t) => t.len() as u32,
        WireInput::Tensor(t) => t.shape.get(1).copied().unwrap_or(0),
        _ => 0,
    }
}

/// The inputs `sent` as one prefill: token ids or hidden states
/// concatenated along the positions.
pub(super) fn concat(sent: &[WireInput]) -> Option<WireInput> {
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

/// One generation's running totals.
pub(super) struct Run<'a> {
    pub(super) client: &'a JobClient,
    pub(super) opts: &'a PipelineOptions,
    /// Minor units paid so far (in the budget's currency).
    pub(super) spent: u128,
    pub(super) hidden_bytes: u64,
    /// The generation step under way (0: the prompt's prefill).
    pub(super) step: u32,
    /// Disagreements settled so far.
    pub(super) disputes: Vec<super::StageDispute>,
}

impl Run<'_> {
    /// Sends `input` through `stage` and, when replicated, its replica,
    /// and compares the two outputs. A disagreement is settled
    /// ([`Run::settle`]): the liar leaves the stage, and another provider
    /// of the span is rebuilt in its place as the replica, whose output is
    /// compared again.
    pub(super) async fn step(
        &mut self,
        stage: &mut Stage,
        input: WireInput,
        last: bool,
        head: bool,
    ) -> Result<WireOutput, ClientError> {
        let Some(mut replica) = stage.replica.take() else {
            return self.step_one(stage, input, last, head).await;
        };
        let out = self.step_one(stage, input.clone(), last, head).await;
        let theirs = self.step_one(&mut replica, input.clone(), last, head).await;
        let (mut out, mut theirs) = (out?, theirs?);
        while !outputs_agree(&out, &theirs) {
            if self
                .settle(stage, &mut replica, (&out, &theirs), head)
                .await?
                == Liar::Primary
            {
                std::mem::swap(stage, &mut *replica);
                std::mem::swap(&mut out, &mut theirs);
            }
            // `replica` lied: its stage moves to another provider of the
            // span (not the honest one), rebuilt up to this step.
            let cheat = replica.hop.provider;
            replica.sent.pop();
            replica.avoid = HashSet::from([stage.hop.provider]);
            stage.avoid = HashSet::from([cheat]);
            let error = ClientError::Failed {
                job_id: replica.report.jobs.last().cloned().unwrap_or_default(),
                message: format!("provider {cheat} was found lying"),
            };
            theirs = self
                .fail_over(&mut replica, &input, last, head, error)
                .await?;
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
        let error = match checked {
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
        self.fail_over(stage, &input, last, head, error).await
    }

    /// Moves `stage`, which failed this step with `error`, to another
    /// provider of its span, rebuilt from everything it was sent and this
    /// step's `input`; returns this step's output. Up to
    /// [`MAX_STAGE_FAILOVERS`] times a generation.
    async fn fail_over(
        &mut self,
        stage: &mut Stage,
        input: &WireInput,
        last: bool,
        head: bool,
        mut error: ClientError,
    ) -> Result<WireOutput, ClientError> {
        loop {
            stage.failovers += 1;
            if !fails_over(&error) || stage.failovers > MAX_STAGE_FAILOVERS {
                return Err(error);
            }
            tracing::warn!(stage = %stage.hop.span_id, provider = %stage.hop.provider, %error, "stage failed; rebuilding it on another provider");
            let hop = self.replacement(stage, &error).await?;
            stage.report.providers.push(hop.provider);
            stage.hop = hop;
            match self.rebuild(stage, input, last, head).await {
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
    pub(super) async fn decode(
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
    pub(super) fn step_options(&self, stage: &Stage, last: bool) -> InferOptions {
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

    /// Refuses a job once the whole budget is spent.
    pub(super) fn check_budget(&self, opts: &InferOptions) -> Result<(), ClientError> {
        if opts.max_budget.is_none_or(|r| r.minor != 0) {
            return Ok(());
        }
        Err(ClientError::OverBudget {
            budget: format!(
                "{} (all spent)",
                self.opts
                    .max_budget
                    .map(|b| b.to_string())
                    .unwrap_or_default()
            ),
            cheapest: None,
        })
    }

    /// Records what `stage` paid for `outcome`.
    pub(super) fn paid(&mut self, stage: &mut Stage, outcome: &JobOutcome) {
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
        fits_in_a_request(&input).map_err(|why| {
            ClientError::BadOptions(format!("stage {}: {why}", stage.hop.span_id))
        })?;
        let opts = self.step_options(stage, last);
        self.check_budget(&opts)?;
        let outcome = self.client.submit(&stage.hop.span_id, input, &opts).await?;
        self.paid(stage, &outcome);
        Ok(outcome)
    }
}

/// Keeps the last `n` rows of a `[1, seq, width]` tensor (the last
/// stage's `[1, vocab]` logits are one row already).
pub(super) fn keep_last_rows(t: &mut Tensor, n: u32) {
    if let [1, seq, width] = t.shape[..] {
        if n < seq {
            let from = ((seq - n) * width) as usize;
            t.data.drain(..from);
            t.shape = vec![1, n, width];
        }
    }
}

pub(super) fn argmax(v: &[f32]) -> Option<u32> {
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
pub(super) fn check_output(
    stage: &Stage,
    out: &WireOutput,
    rows: u32,
    head: bool,
) -> Result<(), ClientError> {
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
pub(super) fn fails_over(e: &ClientError) -> bool {
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
pub(super) fn outputs_agree(a: &WireOutput, b: &WireOutput) -> bool {
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

pub(super) fn corrupt(stage: &Stage, what: &str) -> ClientError {
    ClientError::Corrupt {
        job_id: stage.report.jobs.last().cloned().unwrap_or_default(),
        reason: format!("stage {}: {what}", stage.hop.span_id),
    }
}
