//! Layer spans: a provider that serves layers `a..b` of an `n`-layer model
//! serves it under the span id `<model>@<a>..<b>/<n>`, one more model id
//! in its advert. A client finds a pipeline by reading those ids, and each
//! stage of it is an ordinary job for one span id: quoted, escrowed,
//! signed, verified and paid like any other.

use std::fmt;

/// Layers `start..end` (half-open) of a model with `total` layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerSpan {
    /// First layer run.
    pub start: u32,
    /// One past the last layer run.
    pub end: u32,
    /// The model's layer count.
    pub total: u32,
}

impl LayerSpan {
    /// Parses `"a..b"` (as written in `[[backend.models]] layers`) for a
    /// model of `total` layers.
    pub fn parse(text: &str, total: u32) -> Result<LayerSpan, String> {
        let (a, b) = text
            .split_once("..")
            .ok_or_else(|| format!("`{text}` is not a layer span; write it as `0..12`"))?;
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{text}` is not a layer span; write it as `0..12`"))
        };
        let span = LayerSpan {
            start: num(a)?,
            end: num(b)?,
            total,
        };
        span.check()?;
        Ok(span)
    }

    fn check(&self) -> Result<(), String> {
        if self.start >= self.end || self.end > self.total {
            return Err(format!(
                "layers {}..{} is not a span of a {}-layer model (need start < end <= {})",
                self.start, self.end, self.total, self.total
            ));
        }
        Ok(())
    }

    /// Whether this stage embeds tokens (its input is token ids).
    pub fn is_first(&self) -> bool {
        self.start == 0
    }

    /// Whether this stage applies the head (its output is logits).
    pub fn is_last(&self) -> bool {
        self.end == self.total
    }

    /// The backend parameter value, `"a..b"`.
    pub fn param(&self) -> String {
        format!("{}..{}", self.start, self.end)
    }

    /// The span id of `model`'s span.
    pub fn id(&self, model: &str) -> String {
        format!("{model}@{}..{}/{}", self.start, self.end, self.total)
    }
}

impl fmt::Display for LayerSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{} of {}", self.start, self.end, self.total)
    }
}

/// Splits a span id `<model>@<a>..<b>/<n>` into the model and its span;
/// `None` for any other model id.
pub fn parse_id(id: &str) -> Option<(&str, LayerSpan)> {
    let (model, rest) = id.rsplit_once('@')?;
    let (span, total) = rest.rsplit_once('/')?;
    let total = total.parse().ok()?;
    let span = LayerSpan::parse(span, total).ok()?;
    (!model.is_empty()).then_some((model, span))
}

/// A model's decoder layer count from its `config.json` text
/// (`num_hidden_layers`), or a GGUF file's metadata (`<arch>.block_count`).
pub fn layer_count(config_json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let obj = v.as_object()?;
    let n = obj.get("num_hidden_layers").or_else(|| {
        obj.iter()
            .find(|(k, _)| k.ends_with(".block_count"))
            .map(|(_, v)| v)
    })?;
    u32::try_from(n.as_u64()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_ids_round_trip_and_bad_spans_are_refused() {
        let s = LayerSpan::parse("2..4", 6).unwrap();
        assert_eq!(s.id("tiny"), "tiny@2..4/6");
        assert_eq!(parse_id("tiny@2..4/6"), Some(("tiny", s)));
        assert_eq!(parse_id("a@b@0..6/6").map(|(m, _)| m), Some("a@b"));
        for bad in [
            "tiny",
            "tiny@2..4",
            "tiny@4..2/6",
            "tiny@0..7/6",
            "@0..1/1",
            "t@x..1/2",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        assert!(LayerSpan::parse("3..3", 6)
            .unwrap_err()
            .contains("not a span"));
        assert!(LayerSpan::parse("0-3", 6).unwrap_err().contains("0..12"));
        assert!(s.param() == "2..4" && !s.is_first() && !s.is_last());
    }

    #[test]
    fn layer_counts_come_from_config_or_gguf_metadata() {
        assert_eq!(layer_count(r#"{"num_hidden_layers": 30}"#), Some(30));
        assert_eq!(layer_count(r#"{"llama.block_count": 4}"#), Some(4));
        assert_eq!(layer_count(r#"{"hidden_size": 4}"#), None);
        assert_eq!(layer_count("not json"), None);
    }
}
