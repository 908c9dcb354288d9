//! The node's TOML config, parsed and validated in one place.
//!
//! Every value is checked at load with an error that names the offending key
//! (`backend[0].limits.memory_mb: must be > 0`), so a provider learns what to
//! fix without reading code. Unknown keys are errors too: a typo never
//! silently falls back to a default.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown / mistyped key.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// What the parser said, including the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config value `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `backend[0].models[1].path`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node-wide settings.
    #[serde(default)]
    pub node: NodeConfig,
    /// Execution backends, each a plugin with the models it may open.
    #[serde(default)]
    pub backend: Vec<BackendConfig>,
    /// The pricing policy plugin.
    pub pricing: Option<PluginConfig>,
    /// Payment adapters.
    #[serde(default)]
    pub payment: Vec<PaymentConfig>,
}

/// `[node]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its state (compiled plugin cache, database, keys).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Compute device for host kernels: `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: default_data_dir(),
            device: default_device(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".infernet/node")
}
fn default_device() -> String {
    "cpu".into()
}

/// A plugin reference with its provider-side settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Plugin package: a directory holding `infernet-plugin.toml` and the `.wasm`,
    /// or the manifest file itself.
    pub plugin: PathBuf,
    /// Hex ed25519 public key; when set, the manifest must carry a valid signature by it.
    pub publisher_key: Option<String>,
    /// Limits for this plugin (defaults apply to missing keys).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Key/values the plugin may read through the `config` interface.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

/// `[[backend]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Plugin package: a directory holding `infernet-plugin.toml` and the `.wasm`.
    pub plugin: PathBuf,
    /// Hex ed25519 public key the manifest must be signed by.
    pub publisher_key: Option<String>,
    /// Models this backend may open (its only capability).
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Limits (defaults apply to missing keys).
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[[backend.models]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The id clients ask for.
    pub id: String,
    /// Directory with `config.json`, `tokenizer.json` and `*.safetensors`.
    pub path: PathBuf,
}

/// `[[payment]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    /// Plugin package directory.
    pub plugin: PathBuf,
    /// Hex ed25519 public key the manifest must be signed by.
    pub publisher_key: Option<String>,
    /// Hosts the adapter may reach over HTTP(S); nothing else is reachable.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Secrets by name → environment variable holding the value.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Plain settings the plugin may read.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Per-plugin limits; every field optional, defaults in [`crate::runtime::Limits`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Linear memory cap in MiB.
    pub memory_mb: Option<u64>,
    /// Wall-clock cap of one call (guest and host time together), milliseconds.
    pub wall_time_ms: Option<u64>,
    /// Cap on the summed wall time of host kernel calls within one call, milliseconds.
    pub kernel_time_ms: Option<u64>,
    /// Cap on live tensor bytes the plugin created, MiB.
    pub tensor_mb: Option<u64>,
    /// Cap on bytes copied from host tensors into guest memory per call, MiB.
    pub copy_out_mb: Option<u64>,
    /// Fuel per call (pricing plugins).
    pub fuel: Option<u64>,
}

impl Config {
    /// Reads and validates a config file; relative paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses config text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.node.data_dir);
        for b in &mut self.backend {
            fix(&mut b.plugin);
            for m in &mut b.models {
                fix(&mut m.path);
            }
        }
        if let Some(p) = &mut self.pricing {
            fix(&mut p.plugin);
        }
        for p in &mut self.payment {
            fix(&mut p.plugin);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        crate::kernels::parse_device(&self.node.device).map_err(|m| invalid("node.device", m))?;
        let mut seen = std::collections::HashSet::new();
        for (i, b) in self.backend.iter().enumerate() {
            let key = format!("backend[{i}]");
            if let Some(k) = &b.publisher_key {
                validate_key_hex(k).map_err(|m| invalid(format!("{key}.publisher_key"), m))?;
            }
            b.limits.validate(&format!("{key}.limits"))?;
            for (j, m) in b.models.iter().enumerate() {
                let mkey = format!("{key}.models[{j}]");
                if m.id.trim().is_empty() {
                    return Err(invalid(format!("{mkey}.id"), "must not be empty"));
                }
                if !seen.insert(m.id.clone()) {
                    return Err(invalid(
                        format!("{mkey}.id"),
                        format!("model id `{}` is configured twice", m.id),
                    ));
                }
            }
        }
        if let Some(p) = &self.pricing {
            if let Some(k) = &p.publisher_key {
                validate_key_hex(k).map_err(|m| invalid("pricing.publisher_key", m))?;
            }
            p.limits.validate("pricing.limits")?;
        }
        for (i, p) in self.payment.iter().enumerate() {
            let key = format!("payment[{i}]");
            p.limits.validate(&format!("{key}.limits"))?;
            for (j, h) in p.allowed_hosts.iter().enumerate() {
                if h.is_empty() || h.contains('/') || h.contains(' ') {
                    return Err(invalid(
                        format!("{key}.allowed_hosts[{j}]"),
                        format!(
                            "`{h}` is not a host name (write `api.example.com`, no scheme or path)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every configured model id with its backend index.
    pub fn models(&self) -> impl Iterator<Item = (usize, &ModelConfig)> {
        self.backend
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.models.iter().map(move |m| (i, m)))
    }
}

impl LimitsConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let fields = [
            ("memory_mb", self.memory_mb),
            ("wall_time_ms", self.wall_time_ms),
            ("kernel_time_ms", self.kernel_time_ms),
            ("tensor_mb", self.tensor_mb),
            ("copy_out_mb", self.copy_out_mb),
            ("fuel", self.fuel),
        ];
        for (name, value) in fields {
            if value == Some(0) {
                return Err(invalid(format!("{key}.{name}"), "must be greater than 0"));
            }
        }
        if let Some(mb) = self.memory_mb {
            if mb > 4096 {
                return Err(invalid(
                    format!("{key}.memory_mb"),
                    "at most 4096 (wasm32 address space)",
                ));
            }
        }
        Ok(())
    }
}

fn validate_key_hex(k: &str) -> Result<(), String> {
    match hex::decode(k) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => Err(
            "must be a 64-character hex ed25519 public key (see `infernet plugin keygen`)".into(),
        ),
    }
}

/// Renders config table values as the strings plugins read.
pub fn flatten_table(table: &BTreeMap<String, toml::Value>) -> BTreeMap<String, String> {
    table
        .iter()
        .map(|(k, v)| {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_bad_key() {
        let err = Config::parse(
            "[[backend]]\nplugin = \"x\"\n[backend.limits]\nmemory_mb = 0\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("backend[0].limits.memory_mb"),
            "{err}"
        );
        let err = Config::parse("[node]\ndevise = \"cpu\"\n", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("devise"), "{err}");
        let err = Config::parse("[node]\ndevice = \"tpu\"\n", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("node.device"), "{err}");
    }

    #[test]
    fn duplicate_model_ids_are_refused() {
        let text = "[[backend]]\nplugin='a'\n[[backend.models]]\nid='m'\npath='p'\n[[backend]]\nplugin='b'\n[[backend.models]]\nid='m'\npath='q'\n";
        let err = Config::parse(text, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("backend[1].models[0].id"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let c = Config::parse(
            "[[backend]]\nplugin='p'\n[[backend.models]]\nid='m'\npath='m'\n",
            Path::new("/etc/inf"),
        )
        .unwrap();
        assert_eq!(c.backend[0].plugin, Path::new("/etc/inf/p"));
        assert_eq!(c.backend[0].models[0].path, Path::new("/etc/inf/m"));
    }
}
