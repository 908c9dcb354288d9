//! sentence-transformers semantics: what the files a sentence-transformers
//! model ships say about turning token states into one embedding.
//!
//! `modules.json` lists the pipeline. Supported: a `Transformer` (its
//! `sentence_bert_config.json` gives `max_seq_length`, which decides
//! truncation instead of tokenizer.json's, and `do_lower_case`), then a
//! `Pooling` (its `config.json` gives the modes, concatenated in
//! sentence-transformers' order: cls, max, mean, mean-sqrt-len), then an
//! optional `Normalize`. Any other module is refused at load by name. A
//! model without `modules.json` is embedded as before: mean pooling,
//! normalised, truncated as tokenizer.json says.

use infernet_plugin_api::Error;
use serde_json::Value;

const TRANSFORMER: &str = "sentence_transformers.models.Transformer";
const POOLING: &str = "sentence_transformers.models.Pooling";
const NORMALIZE: &str = "sentence_transformers.models.Normalize";

/// Which poolings are on (each adds `hidden_size` values, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
}

/// How one text becomes one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Semantics {
    /// Truncate to this many tokens, special tokens included (`None`: as
    /// tokenizer.json says).
    pub max_seq_length: Option<usize>,
    /// Lower-case the text before tokenizing.
    pub lower_case: bool,
    pub pooling: Pooling,
    /// L2-normalise the pooled vector.
    pub normalize: bool,
}

impl Semantics {
    /// What a model without sentence-transformers files gets.
    pub fn plain() -> Self {
        Semantics {
            max_seq_length: None,
            lower_case: false,
            pooling: Pooling {
                cls: false,
                max: false,
                mean: true,
                mean_sqrt_len: false,
            },
            normalize: true,
        }
    }

    /// Reads the semantics from the model's files (`file(path)` is the
    /// text of a file shipped with the model, if it has one), checking
    /// the pooling's dimension against `hidden_size`.
    pub fn read(file: impl Fn(&str) -> Option<String>, hidden_size: usize) -> Result<Self, Error> {
        let Some(modules) = file("modules.json") else {
            return Ok(Semantics::plain());
        };
        let modules: Vec<Value> = serde_json::from_str(&modules)
            .map_err(|e| Error::invalid(format!("modules.json is not a JSON list: {e}")))?;
        let mut semantics = Semantics::plain();
        let mut seen_pooling = false;
        semantics.normalize = false;
        for (i, module) in modules.iter().enumerate() {
            let kind = module.get("type").and_then(Value::as_str).ok_or_else(|| {
                Error::invalid(format!("modules.json entry {i} has no string `type`"))
            })?;
            let path = module.get("path").and_then(Value::as_str).unwrap_or("");
            let order_err = || {
                Error::unsupported(format!(
                    "modules.json: `{kind}` at position {i}; supported pipelines are Transformer, Pooling, then optionally Normalize"
                ))
            };
            match (kind, i) {
                (TRANSFORMER, 0) => {
                    let name = join(path, "sentence_bert_config.json");
                    if let Some(text) = file(&name) {
                        let (max, lower) = transformer_config(&name, &text)?;
                        semantics.max_seq_length = max;
                        semantics.lower_case = lower;
                    }
                }
                (POOLING, 1) => {
                    let name = join(path, "config.json");
                    let text = file(&name).ok_or_else(|| {
                        Error::invalid(format!("modules.json names a Pooling module whose `{name}` the model does not ship"))
                    })?;
                    semantics.pooling = pooling_config(&name, &text, hidden_size)?;
                    seen_pooling = true;
                }
                (NORMALIZE, 2) => semantics.normalize = true,
                (TRANSFORMER | POOLING | NORMALIZE, _) => return Err(order_err()),
                (other, _) => {
                    return Err(Error::unsupported(format!(
                        "modules.json: module `{other}` (position {i}) is not supported; this backend runs Transformer, Pooling and Normalize"
                    )))
                }
            }
        }
        if !seen_pooling {
            return Err(Error::unsupported(
                "modules.json has no Pooling module after the Transformer: token embeddings are not a sentence embedding",
            ));
        }
        Ok(semantics)
    }
}

fn join(dir: &str, file: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

fn object(name: &str, text: &str) -> Result<serde_json::Map<String, Value>, Error> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid(format!("{name} is not a JSON object"))),
        Err(e) => Err(Error::invalid(format!("{name} is not valid JSON: {e}"))),
    }
}

/// `max_seq_length` (a positive integer or null) and `do_lower_case`.
fn transformer_config(name: &str, text: &str) -> Result<(Option<usize>, bool), Error> {
    let cfg = object(name, text)?;
    let max = match cfg.get("max_seq_length") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 2 => Some(n as usize),
            _ => {
                return Err(Error::invalid(format!(
                    "{name}: `max_seq_length` must be an integer of at least 2, not {v}"
                )))
            }
        },
    };
    let lower = match cfg.get("do_lower_case") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Error::invalid(format!(
                "{name}: `do_lower_case` must be true or false, not {v}"
            )))
        }
    };
    Ok((max, lower))
}

fn pooling_config(name: &str, text: &str, hidden_size: usize) -> Result<Pooling, Error> {
    let cfg = object(name, text)?;
    let flag = |key: &str| -> Result<bool, Error> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(Error::invalid(format!(
                "{name}: `{key}` must be true or false, not {v}"
            ))),
        }
    };
    for unsupported in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
        if flag(unsupported)? {
            return Err(Error::unsupported(format!(
                "{name}: `{unsupported}` is not supported; this backend pools by cls, max, mean and mean_sqrt_len"
            )));
        }
    }
    if let Some(dim) = cfg.get("word_embedding_dimension") {
        if dim.as_u64() != Some(hidden_size as u64) {
            return Err(Error::invalid(format!(
                "{name}: `word_embedding_dimension` is {dim}, but the model's hidden_size is {hidden_size}"
            )));
        }
    }
    let pooling = Pooling {
        cls: flag("pooling_mode_cls_token")?,
        max: flag("pooling_mode_max_tokens")?,
        mean: flag("pooling_mode_mean_tokens")?,
        mean_sqrt_len: flag("pooling_mode_mean_sqrt_len_tokens")?,
    };
    if !(pooling.cls || pooling.max || pooling.mean || pooling.mean_sqrt_len) {
        return Err(Error::invalid(format!("{name}: no pooling mode is on")));
    }
    Ok(pooling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const MODULES: &str = r#"[
      {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
      {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
      {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;
    const POOL: &str = r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
      "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
      "pooling_mode_mean_sqrt_len_tokens": false}"#;

    fn read(files: &[(&str, &str)]) -> Result<Semantics, Error> {
        let map: BTreeMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Semantics::read(|p| map.get(p).cloned(), 384)
    }

    fn msg(r: Result<Semantics, Error>) -> String {
        format!("{:?}", r.expect_err("must be refused"))
    }

    #[test]
    fn all_minilm_l6_v2_files_say_256_tokens_mean_pooling_normalised() {
        let s = read(&[
            ("modules.json", MODULES),
            (
                "sentence_bert_config.json",
                r#"{"max_seq_length": 256, "do_lower_case": false}"#,
            ),
            ("1_Pooling/config.json", POOL),
        ])
        .unwrap();
        assert_eq!(s.max_seq_length, Some(256));
        assert!(s.normalize && !s.lower_case);
        assert_eq!(s.pooling, Semantics::plain().pooling);
    }

    #[test]
    fn without_modules_json_nothing_changes_and_without_normalize_there_is_none() {
        assert_eq!(read(&[]).unwrap(), Semantics::plain());
        let two: Vec<Value> = serde_json::from_str::<Vec<Value>>(MODULES).unwrap()[..2].to_vec();
        let two = serde_json::to_string(&two).unwrap();
        let cls = POOL
            .replace(
                "\"pooling_mode_cls_token\": false",
                "\"pooling_mode_cls_token\": true",
            )
            .replace(
                "\"pooling_mode_max_tokens\": false",
                "\"pooling_mode_max_tokens\": true",
            );
        let s = read(&[("modules.json", &two), ("1_Pooling/config.json", &cls)]).unwrap();
        assert!(!s.normalize);
        assert_eq!(s.max_seq_length, None);
        assert!(s.pooling.cls && s.pooling.max && s.pooling.mean && !s.pooling.mean_sqrt_len);
    }

    #[test]
    fn what_it_cannot_run_is_refused_by_name() {
        let dense = MODULES.replace(
            "sentence_transformers.models.Normalize",
            "sentence_transformers.models.Dense",
        );
        let m = msg(read(&[
            ("modules.json", &dense),
            ("1_Pooling/config.json", POOL),
        ]));
        assert!(m.contains("sentence_transformers.models.Dense"), "{m}");
        let m = msg(read(&[("modules.json", MODULES)]));
        assert!(m.contains("1_Pooling/config.json"), "{m}");
        let weighted = POOL.replace('}', ", \"pooling_mode_weightedmean_tokens\": true}");
        let m = msg(read(&[
            ("modules.json", MODULES),
            ("1_Pooling/config.json", &weighted),
        ]));
        assert!(m.contains("pooling_mode_weightedmean_tokens"), "{m}");
        let wrong_dim = POOL.replace("384", "768");
        let m = msg(read(&[
            ("modules.json", MODULES),
            ("1_Pooling/config.json", &wrong_dim),
        ]));
        assert!(m.contains("768") && m.contains("384"), "{m}");
        let m = msg(read(&[
            ("modules.json", MODULES),
            ("1_Pooling/config.json", POOL),
            ("sentence_bert_config.json", r#"{"max_seq_length": "long"}"#),
        ]));
        assert!(m.contains("max_seq_length"), "{m}");
        let m = msg(read(&[("modules.json", "{}")]));
        assert!(m.contains("modules.json"), "{m}");
    }
}
