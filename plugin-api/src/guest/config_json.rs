//! A model's `config.json`, parsed once, with typed getters whose errors
//! name the key (`config key `rope_scaling.factor` must be a number`):
//! what every backend otherwise writes again. `null` counts as absent, as
//! in `transformers`.

use crate::Error;
use serde_json::{Map, Value};

/// A parsed `config.json` object (or one of its nested objects).
#[derive(Debug, Clone)]
pub struct ConfigJson {
    root: Map<String, Value>,
    /// The dotted path of this object inside config.json (`""` at the top).
    path: String,
}

impl ConfigJson {
    /// Parses `config.json` text (`Weights::config()`); not JSON or not an
    /// object is `invalid-input`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match serde_json::from_str(text) {
            Ok(Value::Object(root)) => Ok(ConfigJson {
                root,
                path: String::new(),
            }),
            Ok(_) => Err(Error::invalid("config.json is not a JSON object")),
            Err(e) => Err(Error::invalid(format!(
                "config.json is not valid JSON: {e}"
            ))),
        }
    }

    /// The full dotted name of `key` here (for messages).
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn bad(&self, key: &str, what: &str) -> Error {
        Error::invalid(format!("config key `{}` {what}", self.key_path(key)))
    }

    /// The raw value of `key`; `None` when absent or `null`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.root.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present and not `null`.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The nested object under `key` (`rope_scaling`), if present.
    pub fn object(&self, key: &str) -> Result<Option<ConfigJson>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(ConfigJson {
                root: map.clone(),
                path: self.key_path(key),
            })),
            Some(_) => Err(self.bad(key, "must be an object")),
        }
    }

    /// `key` read by `read`, if present; `what` says what it must be.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => read(v).map(Some).ok_or_else(|| self.bad(key, what)),
        }
    }

    /// A non-negative integer, if present.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, Error> {
        self.typed(key, "must be a non-negative integer", |v| {
            v.as_u64().and_then(|n| usize::try_from(n).ok())
        })
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize, Error> {
        self.opt_usize(key)?
            .ok_or_else(|| self.bad(key, "is missing"))
    }

    /// A number, if present.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, Error> {
        self.typed(key, "must be a number", Value::as_f64)
    }

    /// A required number.
    pub fn f64(&self, key: &str) -> Result<f64, Error> {
        self.opt_f64(key)?
            .ok_or_else(|| self.bad(key, "is missing"))
    }

    /// A boolean, if present.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        self.typed(key, "must be a boolean", Value::as_bool)
    }

    /// A string, if present.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, Error> {
        self.typed(key, "must be a string", Value::as_str)
    }

    /// Token ids given as one integer, a list of integers, or absent
    /// (`eos_token_id`): empty when absent.
    pub fn token_ids(&self, key: &str) -> Result<Vec<u32>, Error> {
        let bad = || self.bad(key, "must be a token id, a list of ids or null");
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(e: Error) -> String {
        match e {
            Error::InvalidInput(m) => m,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn getters_read_values_and_name_the_key_when_wrong() {
        let c = ConfigJson::parse(
            r#"{"hidden_size": 64, "rms_norm_eps": 1e-5, "tie": true, "model_type": "llama",
                "eos_token_id": [1, 2], "bos_token_id": 0, "head_dim": null,
                "rope_scaling": {"factor": "big", "rope_type": "llama3"}}"#,
        )
        .unwrap();
        assert_eq!(c.usize("hidden_size").unwrap(), 64);
        assert_eq!(c.f64("rms_norm_eps").unwrap(), 1e-5);
        assert_eq!(c.opt_bool("tie").unwrap(), Some(true));
        assert_eq!(c.opt_str("model_type").unwrap(), Some("llama"));
        assert_eq!(c.token_ids("eos_token_id").unwrap(), [1, 2]);
        assert_eq!(c.token_ids("bos_token_id").unwrap(), [0]);
        assert_eq!(c.opt_usize("head_dim").unwrap(), None, "null is absent");
        assert!(!c.has("head_dim"));
        assert_eq!(
            msg(c.usize("vocab_size").unwrap_err()),
            "config key `vocab_size` is missing"
        );
        assert_eq!(
            msg(c.usize("rms_norm_eps").unwrap_err()),
            "config key `rms_norm_eps` must be a non-negative integer"
        );
        let rope = c.object("rope_scaling").unwrap().unwrap();
        assert_eq!(
            msg(rope.f64("factor").unwrap_err()),
            "config key `rope_scaling.factor` must be a number"
        );
        assert!(msg(c.object("hidden_size").unwrap_err()).contains("must be an object"));
        assert!(msg(c.token_ids("model_type").unwrap_err()).contains("token id"));
    }

    #[test]
    fn text_that_is_not_a_json_object_is_refused() {
        assert!(msg(ConfigJson::parse("[1]").unwrap_err()).contains("not a JSON object"));
        assert!(msg(ConfigJson::parse("{").unwrap_err()).contains("not valid JSON"));
    }
}
