//! What a job costs this provider, measured by the provider itself, never
//! taken from the client: its input in tokens (the model's own tokenizer;
//! whitespace-separated words for a model without `tokenizer.json`) and its
//! expected run time (from the measured speed of this node's past runs of
//! the model). Quotes are priced on these, and `Run` is checked against
//! what was priced.

use super::*;
use crate::models::ModelEntry;

/// Assumed speed before a model has run here: 20 ms per token (input and
/// output), a small model on a CPU. Replaced by measurements after the
/// first run.
const DEFAULT_MS_PER_TOKEN: u64 = 20;

/// Tokens in `input` for `model`: the tokenizer's count of every text
/// (with special tokens, as a backend encodes it), the ids of a token
/// input, one per row of a tensor (every dim but the last: a pipeline
/// stage's `[1, seq, hidden]` states are `seq` positions, priced as that
/// many tokens), one per byte otherwise. At least 1: a job always reads
/// something.
pub(super) fn input_tokens(entry: Option<&ModelEntry>, input: &JobInput) -> u32 {
    let text = |t: &str| crate::models::count_tokens(entry, t);
    let n = match input {
        JobInput::Text(t) => text(t),
        JobInput::Texts(ts) => ts.iter().map(|t| text(t)).sum(),
        JobInput::Tokens(ids) => ids.len(),
        JobInput::Tensor(t) => match t.shape.split_last() {
            Some((_, rows)) if !rows.is_empty() => {
                rows.iter().map(|&d| d as usize).product::<usize>()
            }
            _ => t.data.len(),
        },
        JobInput::Bytes(b) => b.len(),
    };
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// Measured milliseconds per token of each model's runs (an exponential
/// moving average, weight 1/4 on the newest run).
#[derive(Default)]
pub(super) struct Speed {
    ms_per_token: Mutex<HashMap<String, u64>>,
}

impl Speed {
    /// Expected run time of a job of this size.
    pub(super) fn estimate_ms(&self, model: &str, input_tokens: u32, output_tokens: u32) -> u64 {
        let per = self
            .ms_per_token
            .lock()
            .ok()
            .and_then(|m| m.get(model).copied())
            .unwrap_or(DEFAULT_MS_PER_TOKEN);
        per.saturating_mul(u64::from(input_tokens) + u64::from(output_tokens))
    }

    /// Records a finished run.
    pub(super) fn record(&self, model: &str, elapsed_ms: u64, tokens: u64) {
        let sample = elapsed_ms / tokens.max(1);
        if let Ok(mut m) = self.ms_per_token.lock() {
            let avg = m.entry(model.to_string()).or_insert(sample);
            *avg = (*avg * 3 + sample) / 4;
        }
    }
}
