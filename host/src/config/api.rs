//! `[api]`: the node's OpenAI-compatible HTTP API (`host/src/api`).
//!
//! ```toml
//! [api]
//! listen = "127.0.0.1:8080"
//! max_budget = "0.01"            # per request, in `currency` units (optional)
//! currency = "USDC_SOL"          # optional
//! verify = "spot-check(0.1)"     # optional; default: [verify] policy
//!
//! [[api.keys]]                   # none: loopback only, no Authorization needed
//! name = "alice"
//! sha256 = "<hex sha256 of the bearer token>"
//! max_spend = "5"                # optional, in `currency`, across restarts
//! # read_only = true             # may look (dashboard, /metrics), not run jobs
//!
//! [api.chat_templates]           # model id -> tokenizer_config.json or its dir
//! "tiny-llama" = "/models/tiny-llama"
//! ```
//!
//! Keys are kept as sha256 hashes only (`printf %s TOKEN | sha256sum`). A
//! node with no keys refuses a non-loopback `listen`: an open API spends the
//! node's money.

use super::{invalid, ConfigError, VerifyPolicy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[api]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on, `host:port` (`infernet node start --api` overrides it).
    pub listen: Option<String>,
    /// Accepted bearer tokens, by their sha256.
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
    /// Default most a request pays, as a decimal in `currency` (e.g. `"0.01"`);
    /// a request's `infernet.max_budget` overrides it.
    pub max_budget: Option<String>,
    /// Default currency of quotes and budgets.
    pub currency: Option<String>,
    /// Default verification policy (else `[verify] policy`).
    pub verify: Option<VerifyPolicy>,
    /// Where a model's chat template is read from: a `tokenizer_config.json`
    /// or the directory holding it. A model the node serves itself falls
    /// back to its own `[[backend.models]]` directory.
    #[serde(default)]
    pub chat_templates: BTreeMap<String, PathBuf>,
}

/// `[[api.keys]]`: one bearer token, stored hashed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A label for logs.
    pub name: String,
    /// Hex sha256 of the token (64 lowercase or uppercase hex digits).
    pub sha256: String,
    /// Most this key may spend in all, a decimal in `api.currency` (kept
    /// across restarts in `<data_dir>/api-spend.json`); none: no limit.
    pub max_spend: Option<String>,
    /// A key that may look (the dashboard, `/metrics`, `/v1/models`) but
    /// not run jobs: a monitoring key spends nothing.
    #[serde(default)]
    pub read_only: bool,
}

impl ApiKeyConfig {
    /// The key's limit in minor units of `currency`, when it has one.
    pub fn limit(&self, currency: Option<&str>) -> Result<Option<u64>, String> {
        let Some(text) = &self.max_spend else {
            return Ok(None);
        };
        let code = currency.ok_or("needs api.currency (the unit of the amount)")?;
        infernet_plugin_api::money::Amount::parse(text, code)
            .and_then(|a| a.to_u64())
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl ApiConfig {
    /// The socket address to listen on, if one is set and valid.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|s| s.parse().ok())
    }

    /// Checks every key, naming the one that is wrong.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(listen) = &self.listen {
            let addr: SocketAddr = listen
                .parse()
                .map_err(|e| invalid("api.listen", format!("`{listen}` is not host:port ({e})")))?;
            check_exposure(addr, self.keys.is_empty()).map_err(|m| invalid("api.listen", m))?;
        }
        for (i, k) in self.keys.iter().enumerate() {
            if k.name.trim().is_empty() {
                return Err(invalid(format!("api.keys[{i}].name"), "must not be empty"));
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    format!("api.keys[{i}].sha256"),
                    "must be the 64 hex digits of the token's sha256 (printf %s TOKEN | sha256sum)",
                ));
            }
            k.limit(self.currency.as_deref())
                .map_err(|m| invalid(format!("api.keys[{i}].max_spend"), m))?;
            if k.read_only && k.max_spend.is_some() {
                return Err(invalid(
                    format!("api.keys[{i}].max_spend"),
                    "a read_only key runs no jobs: drop max_spend or read_only",
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        if let Some(dup) = self.keys.iter().find(|k| !names.insert(k.name.as_str())) {
            return Err(invalid(
                "api.keys",
                format!(
                    "two keys are named `{}` (spending is kept by name)",
                    dup.name
                ),
            ));
        }
        match (&self.max_budget, &self.currency) {
            (Some(_), None) => {
                return Err(invalid(
                    "api.max_budget",
                    "needs api.currency (the unit of the amount)",
                ))
            }
            (Some(b), Some(c)) => {
                infernet_plugin_api::money::Amount::parse(b, c)
                    .and_then(|a| a.to_u64())
                    .map_err(|e| invalid("api.max_budget", e.to_string()))?;
            }
            (None, Some(c)) => {
                infernet_plugin_api::money::currency(c)
                    .map_err(|e| invalid("api.currency", e.to_string()))?;
            }
            (None, None) => {}
        }
        for (model, path) in &self.chat_templates {
            if path.as_os_str().is_empty() {
                return Err(invalid(
                    format!("api.chat_templates.{model}"),
                    "must be a path",
                ));
            }
        }
        Ok(())
    }
}

/// Refuses a non-loopback address when no API key is configured.
pub fn check_exposure(addr: SocketAddr, no_keys: bool) -> Result<(), String> {
    if no_keys && !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address and no [[api.keys]] are configured: anyone \
             reaching it could spend this node's money; add a key or listen on 127.0.0.1"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(), ConfigError> {
        let cfg: ApiConfig = toml::from_str(text).unwrap();
        cfg.validate()
    }

    #[test]
    fn open_listen_needs_keys_and_errors_name_the_key() {
        assert!(parse("listen = \"127.0.0.1:8080\"").is_ok());
        let e = parse("listen = \"0.0.0.0:8080\"").unwrap_err().to_string();
        assert!(e.contains("api.listen") && e.contains("loopback"), "{e}");
        let key = format!("[[keys]]\nname = \"a\"\nsha256 = \"{}\"\n", "ab".repeat(32));
        assert!(parse(&format!("listen = \"0.0.0.0:8080\"\n{key}")).is_ok());
        let e = parse("[[keys]]\nname = \"a\"\nsha256 = \"xyz\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.keys[0].sha256"), "{e}");
        let e = parse("max_budget = \"0.01\"").unwrap_err().to_string();
        assert!(e.contains("api.max_budget"), "{e}");
        let e = parse("max_budget = \"1.2.3\"\ncurrency = \"USD\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.max_budget"), "{e}");
        assert!(parse("max_budget = \"0.01\"\ncurrency = \"USD\"").is_ok());
        let limited = format!(
            "[[keys]]\nname = \"a\"\nsha256 = \"{}\"\nmax_spend = \"1\"\n",
            "ab".repeat(32)
        );
        let e = parse(&limited).unwrap_err().to_string();
        assert!(e.contains("api.keys[0].max_spend"), "{e}");
        assert!(parse(&format!("currency = \"USD\"\n{limited}")).is_ok());
        let e = parse(&format!("currency = \"USD\"\n{limited}{limited}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("named `a`"), "{e}");
        let watcher = limited.replace("max_spend = \"1\"", "read_only = true");
        assert!(parse(&watcher).is_ok());
        let e = parse(&format!("currency = \"USD\"\n{limited}read_only = true\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api.keys[0].max_spend") && e.contains("read_only"),
            "{e}"
        );
    }
}
