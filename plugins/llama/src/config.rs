//! Parsing of a llama-family `config.json`, with errors that name the key.
//!
//! Three architectures share the forward pass, told apart by `model_type`:
//! * `llama` (also assumed when `model_type` is absent): field meanings and
//!   defaults follow `candle_transformers::models::llama::LlamaConfig`;
//!   Llama 3.x `rope_scaling` and tied embeddings included;
//! * `qwen2`: llama plus biases on the q/k/v projections
//!   (`candle_transformers::models::qwen2`, Hugging Face `Qwen2ForCausalLM`);
//! * `mistral`: llama plus sliding-window attention
//!   (`candle_transformers::models::mistral`); see [`LlamaConfig::sliding_window`].
//!
//! Any other `model_type` is refused before any other key is read, with the
//! type named.
//!
//! A GGUF file's metadata (what the host hands over in place of
//! `config.json` when none ships beside the file) is read by
//! [`LlamaConfig::from_gguf`]: `general.architecture` `llama`, with the keys
//! `candle_transformers::models::quantized_llama` reads.

use infernet_plugin_api::{ConfigJson, Error};
use serde_json::Value;

/// The llama3 rope frequency scaling (`rope_scaling` with `rope_type: llama3`).
#[derive(Debug, Clone)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// The architectures this plugin runs, by `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    /// Biases on q/k/v (none on o_proj).
    Qwen2,
    /// Sliding-window attention.
    Mistral,
}

impl Arch {
    /// The `model_type` values accepted, in the order errors list them.
    pub const MODEL_TYPES: [&'static str; 3] = ["llama", "qwen2", "mistral"];

    /// What `describe()` declares: the `model_type`s, and the GGUF
    /// `general.architecture` read (`gguf:` in front, as the host spells
    /// GGUF architectures).
    pub const DECLARED: [&'static str; 4] = ["llama", "qwen2", "mistral", "gguf:llama"];

    /// The `model_type` naming this architecture.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Mistral => "mistral",
        }
    }

    /// The architecture of `config.json`'s `model_type` (absent = `llama`,
    /// as older llama checkpoints omit it).
    fn from_config(root: &ConfigJson) -> Result<Self, Error> {
        match root.get("model_type") {
            None => Ok(Arch::Llama),
            Some(Value::String(t)) => match t.as_str() {
                "llama" => Ok(Arch::Llama),
                "qwen2" => Ok(Arch::Qwen2),
                "mistral" => Ok(Arch::Mistral),
                other => Err(Error::unsupported(format!(
                    "model_type {other:?} is not supported; this plugin runs {}",
                    Self::MODEL_TYPES.join(", ")
                ))),
            },
            Some(_) => Err(Error::invalid("config key `model_type` must be a string")),
        }
    }
}

/// How the checkpoint names and lays out its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face safetensors (`model.layers.0.self_attn.q_proj.weight`),
    /// rotary embedding on halves.
    Hf,
    /// llama.cpp's GGUF (`blk.0.attn_q.weight`): projections quantized, q/k
    /// rows permuted for the interleaved-pairs rotary embedding.
    Gguf,
}

/// The parts of `config.json` the model needs.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub arch: Arch,
    pub layout: Layout,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub eos_token_ids: Vec<u32>,
    pub rope_scaling: Option<Llama3Rope>,
    /// Size of one attention head: `head_dim` when given (Mistral-Nemo has
    /// one that is not `hidden_size / num_attention_heads`), else that quotient.
    pub head_dim: usize,
    /// Mistral's `sliding_window`, with candle-transformers 0.11.1's
    /// semantics (the reference the tests hold the plugin to), which are NOT
    /// Hugging Face's:
    /// * a query at position `i` sees keys `j` with `i - window <= j <= i`,
    ///   that is `window + 1` keys (HF's `sliding_window_overlay`,
    ///   transformers >= 4.53, keeps `i - j < window`: `window` keys);
    /// * the window is applied only when several tokens go through at once
    ///   (the prompt); a single-token decode step attends to the whole KV
    ///   cache, which is neither truncated nor rotated (HF applies the
    ///   window at every step).
    ///
    /// Both differences only show once a sequence outgrows the window (4096
    /// for Mistral-7B-v0.1; later Mistral releases set no window).
    /// `None` for llama and qwen2 (a qwen2 `sliding_window` is inert unless
    /// `use_sliding_window` is true, which is refused).
    pub sliding_window: Option<usize>,
}

impl LlamaConfig {
    /// Parses and validates `config.json` text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let root = ConfigJson::parse(text)?;
        let arch = Arch::from_config(&root)?;
        let num_attention_heads = root.usize("num_attention_heads")?;
        let hidden_size = root.usize("hidden_size")?;
        let cfg = LlamaConfig {
            arch,
            layout: Layout::Hf,
            hidden_size,
            intermediate_size: root.usize("intermediate_size")?,
            num_hidden_layers: root.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: root
                .opt_usize("num_key_value_heads")?
                .unwrap_or(num_attention_heads),
            vocab_size: root.usize("vocab_size")?,
            rms_norm_eps: root.f64("rms_norm_eps")?,
            rope_theta: root.opt_f64("rope_theta")?.unwrap_or(10_000.0) as f32,
            max_position_embeddings: root.usize("max_position_embeddings")?,
            tie_word_embeddings: root.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            eos_token_ids: root.token_ids("eos_token_id")?,
            rope_scaling: rope_scaling(&root)?,
            head_dim: match root.opt_usize("head_dim")? {
                Some(d) => d,
                None if num_attention_heads > 0
                    && hidden_size.is_multiple_of(num_attention_heads) =>
                {
                    hidden_size / num_attention_heads
                }
                None if num_attention_heads > 0 => {
                    return Err(Error::invalid(
                        "config key `hidden_size` must be a multiple of `num_attention_heads`",
                    ))
                }
                None => 0,
            },
            sliding_window: match arch {
                Arch::Mistral => root.opt_usize("sliding_window")?,
                Arch::Llama | Arch::Qwen2 => None,
            },
        };
        unsupported_features(&root, arch)?;
        // bos_token_id is not used by the model (the tokenizer adds it), but
        // a malformed value is still reported.
        root.token_ids("bos_token_id")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a GGUF file's metadata (as JSON): `names` are its tensors and
    /// `vocab_size` the rows of `token_embd.weight`. Only the `llama`
    /// architecture (which covers Mistral and SmolLM files) is read; the
    /// features `quantized_llama` does not run either (mixture of experts,
    /// llama3 `rope_freqs`, a partial rotary dimension) are refused by name.
    pub fn from_gguf(text: &str, names: &[String], vocab_size: usize) -> Result<Self, Error> {
        let root = ConfigJson::parse(text)?;
        match root.get("general.architecture").and_then(Value::as_str) {
            Some("llama") => {}
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "GGUF architecture {other:?} is not supported; this plugin runs GGUF \"llama\" files (and safetensors {})",
                    Arch::MODEL_TYPES.join(", ")
                )))
            }
            None => {
                return Err(Error::invalid(
                    "GGUF metadata has no string `general.architecture`",
                ))
            }
        }
        let key = |k: &str| format!("llama.{k}");
        let heads = root.usize(&key("attention.head_count"))?;
        let hidden_size = root.usize(&key("embedding_length"))?;
        if root.opt_usize(&key("expert_count"))?.unwrap_or(0) > 1 {
            return Err(Error::unsupported(
                "GGUF key `llama.expert_count`: mixture-of-experts models are not supported",
            ));
        }
        if names.iter().any(|n| n == "rope_freqs.weight") {
            return Err(Error::unsupported(
                "GGUF tensor `rope_freqs.weight` (Llama 3.x rope scaling in GGUF) is not supported",
            ));
        }
        let head_dim = match heads {
            0 => 0,
            h => hidden_size / h,
        };
        if let Some(rope_dim) = root.opt_usize(&key("rope.dimension_count"))? {
            if rope_dim != head_dim {
                return Err(Error::unsupported(format!(
                    "GGUF key `llama.rope.dimension_count` is {rope_dim}, not the head size {head_dim}: partial rotary embeddings are not supported"
                )));
            }
        }
        let cfg = LlamaConfig {
            arch: Arch::Llama,
            layout: Layout::Gguf,
            hidden_size,
            intermediate_size: root.usize(&key("feed_forward_length"))?,
            num_hidden_layers: root.usize(&key("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: root
                .opt_usize(&key("attention.head_count_kv"))?
                .unwrap_or(heads),
            vocab_size,
            rms_norm_eps: root.f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: root.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
            max_position_embeddings: root.usize(&key("context_length"))?,
            tie_word_embeddings: !names.iter().any(|n| n == "output.weight"),
            eos_token_ids: root.token_ids("tokenizer.ggml.eos_token_id")?,
            rope_scaling: None,
            head_dim,
            sliding_window: None,
        };
        if heads > 0 && !hidden_size.is_multiple_of(heads) {
            return Err(Error::invalid(
                "GGUF key `llama.embedding_length` must be a multiple of `llama.attention.head_count`",
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn validate(&self) -> Result<(), Error> {
        for (key, value) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("head_dim", self.head_dim),
            ("sliding_window", self.sliding_window.unwrap_or(1)),
        ] {
            if value == 0 {
                return Err(Error::invalid(format!(
                    "config key `{key}` must be positive"
                )));
            }
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::invalid(
                "the head size (`head_dim`, or `hidden_size / num_attention_heads`) must be a positive even number",
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(Error::invalid(
                "config key `num_attention_heads` must be a multiple of `num_key_value_heads`",
            ));
        }
        if u32::try_from(self.max_position_embeddings).is_err()
            || u32::try_from(self.vocab_size).is_err()
        {
            return Err(Error::invalid(
                "config keys `max_position_embeddings` and `vocab_size` must fit in u32",
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(Error::invalid(
                "config key `rms_norm_eps` must be a positive number",
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::invalid(
                "config key `rope_theta` must be a positive number",
            ));
        }
        Ok(())
    }
}

/// Refuses config switches that would change the forward pass in ways this
/// plugin does not implement, naming the key (better than wrong logits).
fn unsupported_features(root: &ConfigJson, arch: Arch) -> Result<(), Error> {
    if let Some(act) = root.get("hidden_act") {
        if act.as_str() != Some("silu") {
            return Err(Error::unsupported(format!(
                "config key `hidden_act` is {act}; only \"silu\" is supported"
            )));
        }
    }
    let flags: &[&str] = match arch {
        Arch::Llama => &["attention_bias", "mlp_bias"],
        // HF Qwen2 windows layers >= `max_window_layers` when this is true;
        // candle-transformers windows every layer whatever it says.
        Arch::Qwen2 => &["use_sliding_window"],
        Arch::Mistral => &[],
    };
    for key in flags {
        if root.opt_bool(key)?.unwrap_or(false) {
            return Err(Error::unsupported(format!(
                "config key `{key}` is true; not supported for model_type {:?}",
                arch.model_type()
            )));
        }
    }
    Ok(())
}

/// `rope_scaling`: absent, null, `default` or `llama3`.
fn rope_scaling(root: &ConfigJson) -> Result<Option<Llama3Rope>, Error> {
    let Some(scaling) = root.object("rope_scaling")? else {
        return Ok(None);
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => Ok(Some(Llama3Rope {
            factor: scaling.f64("factor")? as f32,
            low_freq_factor: scaling.f64("low_freq_factor")? as f32,
            high_freq_factor: scaling.f64("high_freq_factor")? as f32,
            original_max_position_embeddings: scaling.usize("original_max_position_embeddings")?,
        })),
        other => Err(Error::unsupported(format!(
            "config key `rope_scaling.rope_type` is `{other}`; only `default` and `llama3` are supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "eos_token_id": [2, 3]}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn invalid(text: &str) -> String {
        match LlamaConfig::parse(text) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_candle_transformers() {
        let c = LlamaConfig::parse(BASE).unwrap();
        assert_eq!((c.num_key_value_heads, c.head_dim()), (2, 16));
        assert_eq!(c.rope_theta, 10_000.0);
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.eos_token_ids, [2, 3]);
        let c = LlamaConfig::parse(&with("eos_token_id", "7")).unwrap();
        assert_eq!(c.eos_token_ids, [7], "a single id or a list");
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(invalid("[]").contains("not a JSON object"));
        assert!(invalid("{").contains("not valid JSON"));
        assert!(invalid(&with("hidden_size", "\"64\"")).contains("hidden_size"));
        assert!(invalid(&with("vocab_size", "-1")).contains("vocab_size"));
        assert!(invalid(&with("eos_token_id", "[\"x\"]")).contains("eos_token_id"));
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        v.as_object_mut().unwrap().remove("num_hidden_layers");
        assert!(invalid(&v.to_string()).contains("num_hidden_layers"));
    }

    fn unsupported(text: &str) -> String {
        match LlamaConfig::parse(text) {
            Err(Error::Unsupported(m)) => m,
            other => panic!("expected unsupported, got {other:?}"),
        }
    }

    #[test]
    fn model_type_picks_the_architecture() {
        assert_eq!(LlamaConfig::parse(BASE).unwrap().arch, Arch::Llama);
        let c = LlamaConfig::parse(&with("model_type", "\"qwen2\"")).unwrap();
        assert_eq!((c.arch, c.sliding_window), (Arch::Qwen2, None));
        let qwen = with("model_type", "\"qwen2\"");
        let c = LlamaConfig::parse(&with_in(&qwen, "sliding_window", "4")).unwrap();
        assert_eq!(c.sliding_window, None, "inert without use_sliding_window");
        let mistral = with("model_type", "\"mistral\"");
        let c = LlamaConfig::parse(&with_in(&mistral, "sliding_window", "6")).unwrap();
        assert_eq!((c.arch, c.sliding_window), (Arch::Mistral, Some(6)));
        let c = LlamaConfig::parse(&with_in(&mistral, "sliding_window", "null")).unwrap();
        assert_eq!(c.sliding_window, None);
        let c = LlamaConfig::parse(&with("head_dim", "32")).unwrap();
        assert_eq!(c.head_dim(), 32, "an explicit head_dim wins");
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        // A GPT-2 config has none of the llama keys: the model_type is what
        // the error is about.
        let m = unsupported(r#"{"model_type": "gpt2", "n_embd": 64, "n_layer": 2}"#);
        assert_eq!(
            m,
            "model_type \"gpt2\" is not supported; this plugin runs llama, qwen2, mistral"
        );
        assert!(invalid(&with("model_type", "3")).contains("model_type"));
        assert!(unsupported(&with("hidden_act", "\"gelu\"")).contains("hidden_act"));
        assert!(unsupported(&with("attention_bias", "true")).contains("attention_bias"));
        let qwen = with("model_type", "\"qwen2\"");
        assert!(unsupported(&with_in(&qwen, "use_sliding_window", "true"))
            .contains("use_sliding_window"));
        assert!(invalid(&with_in(
            &with("model_type", "\"mistral\""),
            "sliding_window",
            "0"
        ))
        .contains("sliding_window"));
    }

    fn with_in(base: &str, key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(base).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn shapes_that_cannot_run_are_refused() {
        assert!(invalid(&with("num_key_value_heads", "3")).contains("num_key_value_heads"));
        assert!(invalid(&with("num_attention_heads", "5")).contains("num_attention_heads"));
        assert!(invalid(&with("vocab_size", "0")).contains("must be positive"));
        assert!(invalid(&with("rms_norm_eps", "0")).contains("rms_norm_eps"));
        assert!(invalid(&with("rope_theta", "-1")).contains("rope_theta"));
    }
}
