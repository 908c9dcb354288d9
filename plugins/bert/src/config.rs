//! Parsing of a BERT-family `config.json`, with errors that name the key.
//!
//! Field meanings follow `candle_transformers::models::bert::Config`.

use infernet_plugin_api::{ConfigJson, Error};
use serde_json::Value;

/// The intermediate (feed-forward) activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// `gelu`: exact GELU (erf), as in transformers.
    GeluErf,
    /// `gelu_approximate`, `gelu_new`, `gelu_pytorch_tanh`: tanh approximation.
    Gelu,
    /// `relu`.
    Relu,
}

/// The parts of `config.json` the model needs.
#[derive(Debug, Clone)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: HiddenAct,
}

impl BertConfig {
    /// Parses and validates `config.json` text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let root = ConfigJson::parse(text)?;
        let hidden_act = match root.get("hidden_act").and_then(Value::as_str) {
            None => return Err(Error::invalid("config key `hidden_act` is missing or not a string")),
            Some("gelu") => HiddenAct::GeluErf,
            Some("gelu_approximate" | "gelu_new" | "gelu_pytorch_tanh") => HiddenAct::Gelu,
            Some("relu") => HiddenAct::Relu,
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "config key `hidden_act` is `{other}`; supported: gelu, gelu_approximate, gelu_new, relu"
                )))
            }
        };
        let position_type = root.get("position_embedding_type").and_then(Value::as_str);
        if position_type.is_some_and(|t| t != "absolute") {
            return Err(Error::unsupported(
                "config key `position_embedding_type` must be `absolute`",
            ));
        }
        let cfg = BertConfig {
            vocab_size: root.usize("vocab_size")?,
            hidden_size: root.usize("hidden_size")?,
            num_hidden_layers: root.usize("num_hidden_layers")?,
            num_attention_heads: root.usize("num_attention_heads")?,
            max_position_embeddings: root.usize("max_position_embeddings")?,
            layer_norm_eps: root.f64("layer_norm_eps")?,
            hidden_act,
        };
        for (key, value) in [
            ("vocab_size", cfg.vocab_size),
            ("hidden_size", cfg.hidden_size),
            ("num_hidden_layers", cfg.num_hidden_layers),
            ("num_attention_heads", cfg.num_attention_heads),
            ("max_position_embeddings", cfg.max_position_embeddings),
        ] {
            if value == 0 || u32::try_from(value).is_err() {
                return Err(Error::invalid(format!(
                    "config key `{key}` must be a positive u32"
                )));
            }
        }
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::invalid(
                "config key `hidden_size` must be a multiple of `num_attention_heads`",
            ));
        }
        if !(cfg.layer_norm_eps.is_finite() && cfg.layer_norm_eps > 0.0) {
            return Err(Error::invalid(
                "config key `layer_norm_eps` must be a positive number",
            ));
        }
        Ok(cfg)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// all-MiniLM-L6-v2's config.json, as shipped.
    const MINILM: &str = r#"{"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
        "gradient_checkpointing": false, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
        "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
        "position_embedding_type": "absolute", "transformers_version": "4.8.2",
        "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(MINILM).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn minilm_parses_with_exact_gelu() {
        let c = BertConfig::parse(MINILM).unwrap();
        assert_eq!(
            (c.hidden_size, c.head_dim(), c.num_hidden_layers),
            (384, 32, 6)
        );
        assert!(matches!(c.hidden_act, HiddenAct::GeluErf));
        let c = BertConfig::parse(&with("hidden_act", "\"gelu_new\"")).unwrap();
        assert!(matches!(c.hidden_act, HiddenAct::Gelu));
    }

    #[test]
    fn what_the_encoder_cannot_run_is_refused_by_key() {
        let err = |text: &str| format!("{:?}", BertConfig::parse(text).unwrap_err());
        assert!(err(&with("hidden_act", "\"swish\"")).contains("Unsupported"));
        assert!(err(&with("position_embedding_type", "\"relative_key\""))
            .contains("position_embedding_type"));
        assert!(err(&with("num_attention_heads", "5")).contains("hidden_size"));
        assert!(err(&with("layer_norm_eps", "0")).contains("layer_norm_eps"));
        assert!(err(&with("vocab_size", "0")).contains("vocab_size"));
    }
}
