//! Batch sharding: one job with many inputs (texts to embed or classify)
//! split across several providers of the whole model and merged in order,
//! the original design's "aggregation by sharding". Each shard is a job of
//! its own, quoted, escrowed, verified and paid as any job, asking a
//! different provider first ([`InferOptions::prefer_provider`]); a shard
//! whose provider fails moves on to another provider, as every job does.

use super::{ClientError, InferOptions, JobClient, JobOutcome};
use crate::p2p::protocol::{Money, WireInput, WireOutput};
use crate::payments::currency::Amount;
use std::collections::HashSet;
use std::ops::Range;

/// Most texts one sharded job may carry.
pub const MAX_BATCH: usize = 100_000;

/// A sharded job's merged output and its shards.
#[derive(Debug, Clone)]
pub struct ShardedOutcome {
    /// One entry per input text, in input order.
    pub output: WireOutput,
    /// Each shard: the inputs it covered and its job's outcome.
    pub shards: Vec<Shard>,
    /// What the whole batch cost, one sum per currency.
    pub price: Vec<Money>,
}

/// One shard of a batch.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The inputs it covered (indices into the batch).
    pub items: Range<usize>,
    /// Its job, as any job's outcome.
    pub outcome: JobOutcome,
}

/// `n` items in `k` contiguous ranges whose lengths differ by at most one.
pub fn split(n: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, n.max(1));
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// Each shard's part of `budget`: proportional to its items, rounded down,
/// so the parts never add up to more than the budget.
fn shares(budget: &Amount, ranges: &[Range<usize>], n: usize) -> Vec<Amount> {
    ranges
        .iter()
        .map(|r| Amount {
            minor: budget.minor * r.len() as u128 / n.max(1) as u128,
            currency: budget.currency,
        })
        .collect()
}

impl JobClient {
    /// Runs `texts` as up to `max_shards` jobs on different providers of
    /// `model` at once (no more shards than providers found or texts) and
    /// merges their outputs in order. Under a budget each shard may spend
    /// its share, proportional to its texts. Every shard runs under
    /// `opts`' verification policy. Fails, naming the shard, when a shard
    /// fails on every provider it tried or returns the wrong number of
    /// entries; shards already paid for stay paid.
    pub async fn submit_sharded(
        &self,
        model: &str,
        texts: Vec<String>,
        opts: &InferOptions,
        max_shards: usize,
    ) -> Result<ShardedOutcome, ClientError> {
        let n = texts.len();
        if n == 0 || n > MAX_BATCH {
            return Err(ClientError::BadOptions(format!(
                "a sharded batch takes 1 to {MAX_BATCH} texts, got {n}"
            )));
        }
        if max_shards == 0 {
            return Err(ClientError::BadOptions(
                "a sharded batch needs at least one shard".into(),
            ));
        }
        let providers = self
            .inner
            .discover(model, opts.proof.as_deref(), &HashSet::new(), &[])
            .await?;
        let ranges = split(n, max_shards.min(providers.len()));
        let budgets = opts.max_budget.map(|b| shares(&b, &ranges, n));
        tracing::info!(model, texts = n, shards = ranges.len(), "sharded batch");
        let jobs = ranges.iter().enumerate().map(|(i, r)| {
            let mut o = opts.clone();
            o.prefer_provider = Some(providers[i].peer_id.to_string());
            if let Some(b) = &budgets {
                o.max_budget = Some(b[i]);
            }
            let input = WireInput::Texts(texts[r.clone()].to_vec());
            async move { self.submit(model, input, &o).await }
        });
        let results = futures::future::join_all(jobs).await;
        let mut shards = Vec::with_capacity(ranges.len());
        for (i, (items, result)) in ranges.into_iter().zip(results).enumerate() {
            let outcome = result.map_err(|e| shard_error(i, &items, e))?;
            shards.push(Shard { items, outcome });
        }
        let output = merge(&shards)?;
        let price = super::pipeline::sum_prices(shards.iter().map(|s| &s.outcome.price));
        Ok(ShardedOutcome {
            output,
            shards,
            price,
        })
    }
}

/// A shard's failure, naming it, with the job's own error kept.
fn shard_error(i: usize, items: &Range<usize>, e: ClientError) -> ClientError {
    match e {
        ClientError::Failed { job_id, message } => ClientError::Failed {
            job_id,
            message: format!("shard {i} (texts {items:?}): {message}"),
        },
        other => {
            tracing::warn!(shard = i, ?items, error = %other, "shard failed");
            other
        }
    }
}

/// The shards' outputs, concatenated in input order: every shard must
/// return one embedding (or class) per text, all of one kind.
fn merge(shards: &[Shard]) -> Result<WireOutput, ClientError> {
    let bad = |s: &Shard, what: String| ClientError::Corrupt {
        job_id: s.outcome.job_id.clone(),
        reason: format!("shard of texts {:?}: {what}", s.items),
    };
    let mut embeddings = Vec::new();
    let mut classes = Vec::new();
    for s in shards {
        let got = match &s.outcome.output {
            WireOutput::Embeddings(v) => {
                embeddings.extend(v.iter().cloned());
                v.len()
            }
            WireOutput::Classes(v) => {
                classes.extend(v.iter().copied());
                v.len()
            }
            _ => {
                return Err(bad(
                    s,
                    "the output is not embeddings or classes; only those shard".into(),
                ))
            }
        };
        if got != s.items.len() {
            return Err(bad(s, format!("{got} outputs for {} texts", s.items.len())));
        }
    }
    match (embeddings.is_empty(), classes.is_empty()) {
        (false, true) => Ok(WireOutput::Embeddings(embeddings)),
        (true, false) => Ok(WireOutput::Classes(classes)),
        _ => Err(bad(
            &shards[0],
            "shards returned different kinds of output".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_item_once_in_balanced_contiguous_ranges() {
        for n in [1usize, 2, 7, 9, 10, 100] {
            for k in 1..=12 {
                let r = split(n, k);
                assert_eq!(r.len(), k.min(n), "n {n} k {k}");
                assert_eq!(r[0].start, 0);
                assert_eq!(r.last().unwrap().end, n);
                for w in r.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (lo, hi) = (
                    r.iter().map(|x| x.len()).min().unwrap(),
                    r.iter().map(|x| x.len()).max().unwrap(),
                );
                assert!(hi - lo <= 1 && lo >= 1, "n {n} k {k}: {r:?}");
            }
        }
    }

    #[test]
    fn budget_shares_never_exceed_the_budget() {
        let budget = Amount::parse("0.01", "USD").unwrap();
        let ranges = split(7, 3);
        let parts = shares(&budget, &ranges, 7);
        let total: u128 = parts.iter().map(|a| a.minor).sum();
        assert!(total <= budget.minor, "{total} > {}", budget.minor);
        assert_eq!(parts[0].minor, budget.minor * 3 / 7);
        assert!(parts.iter().all(|a| a.currency == "USD"));
    }
}
