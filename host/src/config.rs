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
    /// How this node behaves as a client of the network.
    #[serde(default)]
    pub client: ClientConfig,
}

/// What a node does on the network. One binary, chosen in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves jobs with its backends and advertises them.
    Provider,
    /// Submits jobs to providers.
    Client,
    /// Audits jobs (the verifier issue fills this in).
    Verifier,
}

/// `[client]`: the job lifecycle driver's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// How long to look for providers of a model before giving up, ms.
    pub discovery_timeout_ms: u64,
    /// Bound on one quote request, ms.
    pub quote_timeout_ms: u64,
    /// Bound on accept, receipt and cancel exchanges, ms.
    pub step_timeout_ms: u64,
    /// Bound on the run itself (request to result), ms.
    pub run_timeout_ms: u64,
    /// Providers tried before a job fails.
    pub max_attempts: u32,
    /// Providers asked for a quote per attempt (the best-ranked ones).
    pub quote_fanout: u32,
    /// Selection weights: price, reputation, latency, load.
    pub weights: SelectionWeights,
    /// Currency this client pays in (must be one its adapter moves).
    /// Default: the quote's currency when the adapter moves it, else the
    /// first currency both sides' adapters share.
    pub pay_currency: Option<String>,
    /// Lifetime of a job's escrow, seconds: past it, the escrow refunds.
    pub escrow_secs: u64,
    /// How long to wait for an escrow to be funded, ms.
    pub funding_timeout_ms: u64,
    /// Where USD → currency rates come from (a provider checks escrow
    /// amounts with the same source): `fixed` (default) or `file`.
    pub rate_source: RateSourceKind,
    /// Fixed rate table, micro-USD per whole unit (e.g. `ETH = 3000000000`);
    /// unset codes keep the built-in round rates. Only with `rate_source = "fixed"`.
    pub rates: BTreeMap<String, u64>,
    /// With `rate_source = "file"`: a JSON object of micro-USD per whole
    /// unit, re-read when it changes (see `payments::rate_file`).
    pub rates_file: Option<PathBuf>,
    /// With `rate_source = "file"`: a file last written longer ago than
    /// this is refused (0 = no limit).
    pub rates_max_age_secs: u64,
}

/// `[client] rate_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateSourceKind {
    /// The built-in table with `[client.rates]` over it.
    #[default]
    Fixed,
    /// `[client] rates_file`.
    File,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            discovery_timeout_ms: 10_000,
            quote_timeout_ms: 5_000,
            step_timeout_ms: 5_000,
            run_timeout_ms: 120_000,
            max_attempts: 3,
            quote_fanout: 4,
            weights: SelectionWeights::default(),
            pay_currency: None,
            escrow_secs: 3600,
            funding_timeout_ms: 60_000,
            rate_source: RateSourceKind::Fixed,
            rates: BTreeMap::new(),
            rates_file: None,
            rates_max_age_secs: 3600,
        }
    }
}

/// `[client.weights]`: how much each factor counts when ranking providers.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectionWeights {
    /// Weight of the quoted price (relative to the cheapest quote).
    pub price: f64,
    /// Weight of (1 - reputation).
    pub reputation: f64,
    /// Weight of the ping round trip (relative to the fastest peer).
    pub latency: f64,
    /// Weight of this client's jobs in flight at the provider over its capacity.
    pub load: f64,
}

impl Default for SelectionWeights {
    fn default() -> Self {
        SelectionWeights {
            price: 1.0,
            reputation: 1.0,
            latency: 0.5,
            load: 1.0,
        }
    }
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
    /// What this node does: `provider`, `client`, `verifier` (any mix).
    /// Default: `provider` and `client` when backends are configured, else
    /// `client`.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`,
    /// `/ip4/0.0.0.0/udp/4001/quic-v1`. Default: TCP and QUIC on all
    /// interfaces, random ports.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Peers to dial at start, `/ip4/../tcp/../p2p/<peer id>`.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Find peers on the local network with mDNS.
    #[serde(default)]
    pub mdns: bool,
    /// How often a provider re-signs and gossips its advert, seconds.
    #[serde(default = "default_advert_interval")]
    pub advert_interval_secs: u64,
    /// How often open escrows are swept (refunds of failed jobs and earlier
    /// attempts, expiries, a provider's earn rows), seconds; the first
    /// sweep runs at start. 0 turns the background sweep off (an embedder
    /// then calls `JobClient::sweep` / `ProviderHandler::sweep_earnings`).
    #[serde(default = "default_escrow_sweep")]
    pub escrow_sweep_secs: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: default_data_dir(),
            device: default_device(),
            roles: Vec::new(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            advert_interval_secs: default_advert_interval(),
            escrow_sweep_secs: default_escrow_sweep(),
        }
    }
}

fn default_advert_interval() -> u64 {
    30
}

fn default_escrow_sweep() -> u64 {
    15
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
    /// Proof system this node proves the model's results in, on request:
    /// only `"groth16"` (quantized-MLP model dirs only; checked at start).
    #[serde(default)]
    pub proof: Option<String>,
}

/// The proof systems `[[backend.models]] proof` accepts.
pub const PROOF_SYSTEMS: &[&str] = &["groth16"];

/// The config key through which the host tells a payment plugin its
/// `[[payment]] account` (the account escrows must pay, on a provider).
pub const ACCOUNT_CONFIG_KEY: &str = "account";

/// `[[payment]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    /// Plugin package directory.
    pub plugin: PathBuf,
    /// Hex ed25519 public key the manifest must be signed by.
    pub publisher_key: Option<String>,
    /// This node's account (address) at the adapter: where a provider is
    /// paid and what a client pays from. Default: the node's peer id (right
    /// for the local ledger; CoinPay needs a chain address).
    #[serde(default)]
    pub account: Option<String>,
    /// How a provider confirms a client's escrow before running: `status`
    /// (ask this adapter; the default) or `client` (take the client's word:
    /// only for a local ledger that the provider cannot see).
    #[serde(default)]
    pub confirm: Option<String>,
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
        if let Some(p) = &mut self.client.rates_file {
            fix(p);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        crate::kernels::parse_device(&self.node.device).map_err(|m| invalid("node.device", m))?;
        for (key, list) in [
            ("listen", &self.node.listen),
            ("bootstrap", &self.node.bootstrap),
        ] {
            for (i, a) in list.iter().enumerate() {
                a.parse::<libp2p::Multiaddr>().map_err(|e| {
                    invalid(
                        format!("node.{key}[{i}]"),
                        format!(
                            "`{a}` is not a multiaddr ({e}); write e.g. `/ip4/127.0.0.1/tcp/4001`"
                        ),
                    )
                })?;
            }
        }
        for (i, a) in self.node.bootstrap.iter().enumerate() {
            if !a.contains("/p2p/") {
                return Err(invalid(
                    format!("node.bootstrap[{i}]"),
                    format!(
                        "`{a}` has no `/p2p/<peer id>`; bootstrap peers must name their peer id"
                    ),
                ));
            }
        }
        if self.node.advert_interval_secs == 0 {
            return Err(invalid(
                "node.advert_interval_secs",
                "must be greater than 0",
            ));
        }
        if self.node.roles.contains(&Role::Provider) && self.backend.is_empty() {
            return Err(invalid(
                "node.roles",
                "role `provider` needs at least one [[backend]] to serve",
            ));
        }
        let c = &self.client;
        for (name, v) in [
            ("discovery_timeout_ms", c.discovery_timeout_ms),
            ("quote_timeout_ms", c.quote_timeout_ms),
            ("step_timeout_ms", c.step_timeout_ms),
            ("run_timeout_ms", c.run_timeout_ms),
            ("max_attempts", u64::from(c.max_attempts)),
            ("quote_fanout", u64::from(c.quote_fanout)),
        ] {
            if v == 0 {
                return Err(invalid(format!("client.{name}"), "must be greater than 0"));
            }
        }
        let w = &c.weights;
        for (name, v) in [
            ("price", w.price),
            ("reputation", w.reputation),
            ("latency", w.latency),
            ("load", w.load),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(
                    format!("client.weights.{name}"),
                    "must be a finite number >= 0",
                ));
            }
        }
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
                if let Some(p) = &m.proof {
                    if !PROOF_SYSTEMS.contains(&p.as_str()) {
                        return Err(invalid(
                            format!("{mkey}.proof"),
                            format!(
                                "unknown proof system `{p}`; known: {}",
                                PROOF_SYSTEMS.join(", ")
                            ),
                        ));
                    }
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
        for code in self.client.rates.keys() {
            crate::payments::currency(code)
                .map_err(|e| invalid(format!("client.rates.{code}"), e.to_string()))?;
        }
        match (self.client.rate_source, &self.client.rates_file) {
            (RateSourceKind::File, None) => {
                return Err(invalid(
                    "client.rates_file",
                    "is required with rate_source = \"file\" (a JSON object of micro-USD per whole unit)",
                ))
            }
            (RateSourceKind::File, Some(_)) if !self.client.rates.is_empty() => {
                return Err(invalid(
                    "client.rates",
                    "applies to rate_source = \"fixed\"; with \"file\" the rates come from client.rates_file",
                ))
            }
            (RateSourceKind::Fixed, Some(_)) => {
                return Err(invalid(
                    "client.rates_file",
                    "is read only with rate_source = \"file\"; set that, or remove rates_file",
                ))
            }
            _ => {}
        }
        if let Some(c) = &self.client.pay_currency {
            crate::payments::currency(c)
                .map_err(|e| invalid("client.pay_currency", e.to_string()))?;
        }
        if self.client.escrow_secs == 0 {
            return Err(invalid("client.escrow_secs", "must be at least 1 second"));
        }
        for (i, p) in self.payment.iter().enumerate() {
            let key = format!("payment[{i}]");
            p.limits.validate(&format!("{key}.limits"))?;
            if let Some(c) = &p.confirm {
                if c != "status" && c != "client" {
                    return Err(invalid(
                        format!("{key}.confirm"),
                        format!("`{c}` is not `status` or `client`"),
                    ));
                }
            }
            if p.account.as_deref().is_some_and(|a| a.trim().is_empty()) {
                return Err(invalid(format!("{key}.account"), "is empty"));
            }
            if p.config.contains_key(ACCOUNT_CONFIG_KEY) {
                return Err(invalid(
                    format!("{key}.config.{ACCOUNT_CONFIG_KEY}"),
                    format!(
                        "is set by the host from `{key}.account`; set `account` on the [[payment]] table"
                    ),
                ));
            }
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

    /// The roles in effect: `node.roles`, or the default for this config.
    pub fn roles(&self) -> Vec<Role> {
        if !self.node.roles.is_empty() {
            return self.node.roles.clone();
        }
        if self.backend.is_empty() {
            vec![Role::Client]
        } else {
            vec![Role::Provider, Role::Client]
        }
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
    fn proof_system_is_checked() {
        let base = "[[backend]]\nplugin='p'\n[[backend.models]]\nid='m'\npath='m'\n";
        let err = Config::parse(&format!("{base}proof = 'plonk'\n"), Path::new(".")).unwrap_err();
        assert!(
            err.to_string().contains("backend[0].models[0].proof")
                && err.to_string().contains("groth16"),
            "{err}"
        );
        let c = Config::parse(&format!("{base}proof = 'groth16'\n"), Path::new(".")).unwrap();
        assert_eq!(c.backend[0].models[0].proof.as_deref(), Some("groth16"));
        let c = Config::parse(base, Path::new(".")).unwrap();
        assert_eq!(c.backend[0].models[0].proof, None);
    }

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

    #[test]
    fn network_keys_are_checked_and_named() {
        let parse = |t: &str| Config::parse(t, Path::new(".")).unwrap_err().to_string();
        let err = parse("[node]\nlisten = [\"tcp:4001\"]\n");
        assert!(err.contains("node.listen[0]"), "{err}");
        let err = parse("[node]\nbootstrap = [\"/ip4/127.0.0.1/tcp/4001\"]\n");
        assert!(
            err.contains("node.bootstrap[0]") && err.contains("/p2p/"),
            "{err}"
        );
        let err = parse("[node]\nroles = [\"provider\"]\n");
        assert!(err.contains("node.roles"), "{err}");
        let err = parse("[node]\nroles = [\"miner\"]\n");
        assert!(err.contains("miner"), "{err}");
        let err = parse("[client]\nmax_attempts = 0\n");
        assert!(err.contains("client.max_attempts"), "{err}");
        let err = parse("[client.weights]\nprice = -1.0\n");
        assert!(err.contains("client.weights.price"), "{err}");
    }

    #[test]
    fn roles_default_from_backends() {
        let c = Config::parse("", Path::new(".")).unwrap();
        assert_eq!(c.roles(), vec![Role::Client]);
        let c = Config::parse("[[backend]]\nplugin='p'\n", Path::new(".")).unwrap();
        assert_eq!(c.roles(), vec![Role::Provider, Role::Client]);
        let c = Config::parse(
            "[node]\nroles=['client']\n[[backend]]\nplugin='p'\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.roles(), vec![Role::Client]);
    }

    #[test]
    fn payment_keys_are_checked_and_named() {
        let parse = |t: &str| Config::parse(t, Path::new(".")).unwrap_err().to_string();
        let err = parse("[[payment]]\nplugin='p'\nconfirm='trust-me'\n");
        assert!(
            err.contains("payment[0].confirm") && err.contains("status"),
            "{err}"
        );
        let err = parse("[[payment]]\nplugin='p'\naccount=' '\n");
        assert!(err.contains("payment[0].account"), "{err}");
        let err = parse("[[payment]]\nplugin='p'\n[payment.config]\naccount='0xabc'\n");
        assert!(err.contains("payment[0].config.account"), "{err}");
        let err = parse("[[payment]]\nplugin='p'\nallowed_hosts=['https://x.io/api']\n");
        assert!(err.contains("payment[0].allowed_hosts[0]"), "{err}");
        let err = parse("[[payment]]\nplugin='p'\nsecret={a='B'}\n");
        assert!(err.contains("secret"), "{err}");
        let err = parse("[client]\npay_currency='DOGE'\n");
        assert!(
            err.contains("client.pay_currency") && err.contains("DOGE"),
            "{err}"
        );
        let err = parse("[client.rates]\nDOGE = 1\n");
        assert!(err.contains("client.rates.DOGE"), "{err}");
        let err = parse("[client]\nescrow_secs = 0\n");
        assert!(err.contains("client.escrow_secs"), "{err}");
        let c = Config::parse(
            "[[payment]]\nplugin='p'\nconfirm='client'\n[payment.secrets]\napi_key='ENV_KEY'\n[client.rates]\nETH = 2500000000\n",
            Path::new("/etc/inf"),
        )
        .unwrap();
        assert_eq!(c.payment[0].plugin, Path::new("/etc/inf/p"));
        assert_eq!(c.payment[0].secrets["api_key"], "ENV_KEY");
        assert_eq!(c.client.rates["ETH"], 2_500_000_000);
        assert_eq!(c.client.rate_source, RateSourceKind::Fixed);
    }

    #[test]
    fn rate_source_keys_are_checked_and_named() {
        let parse = |t: &str| Config::parse(t, Path::new(".")).unwrap_err().to_string();
        let err = parse("[client]\nrate_source = 'oracle'\n");
        assert!(
            err.contains("rate_source") && err.contains("oracle"),
            "{err}"
        );
        let err = parse("[client]\nrate_source = 'file'\n");
        assert!(
            err.contains("client.rates_file") && err.contains("required"),
            "{err}"
        );
        let err = parse("[client]\nrates_file = 'r.json'\n");
        assert!(
            err.contains("client.rates_file") && err.contains("rate_source"),
            "{err}"
        );
        let err = parse(
            "[client]\nrate_source = 'file'\nrates_file = 'r.json'\n[client.rates]\nETH = 1\n",
        );
        assert!(err.contains("`client.rates`:"), "{err}");
        let c = Config::parse(
            "[client]\nrate_source = 'file'\nrates_file = 'r.json'\nrates_max_age_secs = 600\n",
            Path::new("/etc/inf"),
        )
        .unwrap();
        assert_eq!(c.client.rate_source, RateSourceKind::File);
        assert_eq!(
            c.client.rates_file.as_deref(),
            Some(Path::new("/etc/inf/r.json"))
        );
        assert_eq!(c.client.rates_max_age_secs, 600);
    }
}
