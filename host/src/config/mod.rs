//! The node's TOML config, parsed and validated in one place.
//!
//! Every value is checked at load with an error that names the offending key
//! (`backend[0].limits.memory_mb: must be > 0`), so a provider learns what to
//! fix without reading code. Unknown keys are errors too: a typo never
//! silently falls back to a default.

mod api;
pub mod policy;
mod validate;

pub use api::*;

pub use policy::VerifyPolicy;

use crate::runtime::limits::MIB;
use crate::runtime::Limits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::worlds::payment::ACCOUNT_CONFIG_KEY;

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
    /// How this node checks results, and whether it referees disputes.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// The stake this provider keeps with an arbiter (none by default).
    pub stake: Option<StakeConfig>,
    /// The Supabase bootstrap registry (none by default).
    pub registry: Option<RegistryConfig>,
    /// The OpenAI-compatible HTTP API (off by default).
    pub api: Option<ApiConfig>,
}

/// `[registry]`: a Supabase project whose `bootstrap_nodes` table lists
/// nodes by signed, self-certifying records (DESIGN §8, `supabase/`). A
/// node with no static bootstrap peers dials peers from it; providers and
/// verifiers register there and heartbeat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The project URL, e.g. `https://abcd.supabase.co` (REST under `/rest/v1`).
    pub url: String,
    /// The environment variable holding the project's anon key (the key is
    /// public, but it is still never written to config or logs).
    pub anon_key_env: String,
    /// Register this node: default yes for providers and verifiers, no for
    /// a client only (its addresses help nobody find a model).
    pub register: Option<bool>,
    /// How often the record is re-signed and registered, seconds.
    #[serde(default = "default_registry_heartbeat")]
    pub heartbeat_secs: u64,
    /// How long a record stays valid after its timestamp, seconds (the
    /// database clamps it to its own maximum).
    #[serde(default = "default_registry_ttl")]
    pub ttl_secs: u64,
    /// At most this many registry peers are dialed when bootstrapping.
    #[serde(default = "default_registry_dial")]
    pub max_dial: usize,
}

fn default_registry_heartbeat() -> u64 {
    60
}

fn default_registry_ttl() -> u64 {
    300
}

fn default_registry_dial() -> usize {
    8
}

/// `[stake]`: a provider's stake, held by an arbiter (a referee node with
/// a payment adapter) that slashes it when a referee proves the provider
/// cheated. The node asks for it at start, advertises the arbiter's
/// certificate, and renews it before it expires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StakeConfig {
    /// The arbiter's peer id (reachable through the node's peers).
    pub arbiter: String,
    /// The arbiter's adapter to hold it through.
    #[serde(default = "default_stake_adapter")]
    pub adapter: String,
    /// Amount, exact decimal in whole units (`"0.5"`).
    pub amount: String,
    /// Currency code.
    #[serde(default = "default_stake_currency")]
    pub currency: String,
    /// Where the deposit comes from and a withdrawal returns to (a chain
    /// address; unused with the ledger).
    #[serde(default)]
    pub depositor: String,
    /// Ask for it back: no longer advertised; the arbiter refunds it once
    /// its last certificate expired (and the grace after it).
    #[serde(default)]
    pub withdraw: bool,
}

fn default_stake_adapter() -> String {
    "payment-ledger".into()
}

fn default_stake_currency() -> String {
    "USD".into()
}

/// `[verify]`: the default verification policy of this node's jobs, the
/// referees its disputes go to, and whether it referees others'.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Policy of a job whose options name none: `none` (default),
    /// `replicate(K)`, `spot-check(P)` or `proof(groth16)` or `proof(groth16-baked)`.
    #[serde(deserialize_with = "verify_policy")]
    pub policy: VerifyPolicy,
    /// Peer ids of the referees a disagreement between replicas is taken
    /// to, in order of preference (one that ran a replica is skipped).
    pub referees: Vec<String>,
    /// Peer ids of the verifiers (`infernet verifier start`) this client's
    /// drawn spot checks are re-run on, instead of on another provider;
    /// empty: another provider re-runs them.
    pub verifiers: Vec<String>,
    /// Whether this node serves as a referee for other nodes' disputes
    /// (and, with a `[[payment]]` adapter, as an arbiter holding
    /// providers' stake, which its rulings slash).
    pub referee: bool,
    /// An arbiter's stake certificates are valid this long, seconds.
    pub cert_secs: u64,
    /// After a certificate expired, the arbiter keeps the stake this much
    /// longer before a withdrawal is refunded, seconds: disputes about jobs
    /// run under it can still be ruled.
    pub unbond_grace_secs: u64,
    /// The wronged client's share of a forfeited stake, per mille; the
    /// referee keeps the rest.
    pub slash_client_permille: u32,
    /// How long an arbiter's stake escrows live at the adapter, seconds
    /// (at most 30 days: CoinPay's limit). No certificate outlives its
    /// escrow's expiry less `unbond_grace_secs`.
    pub stake_escrow_secs: u64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            policy: VerifyPolicy::default(),
            referees: Vec::new(),
            verifiers: Vec::new(),
            referee: false,
            cert_secs: 86_400,
            unbond_grace_secs: 3_600,
            slash_client_permille: 800,
            stake_escrow_secs: 30 * 24 * 3600,
        }
    }
}

/// What a node does on the network. One binary, chosen in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves jobs with its backends and advertises them.
    Provider,
    /// Submits jobs to providers.
    Client,
    /// Re-runs jobs for the spot checks of clients that trust it, compares
    /// them with the audited provider's result and attests what it found;
    /// referees disputes (`infernet verifier start`). Needs backends.
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
    /// How verified outcomes become the reputation selection reads.
    pub reputation: ReputationConfig,
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
    /// `[client.proof_pins]`: per model id, whose Groth16 keys this client
    /// accepts proofs under (a publisher's key, or one verifying key).
    /// A model with no pin trusts the key each provider advertises.
    pub proof_pins: BTreeMap<String, ProofPin>,
}

/// `[client.proof_pins.<model>]`: the keys a model's proofs must be under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofPin {
    /// Hex ed25519 public key of the model publisher whose signed key
    /// bundle (`infernet zk setup`) the prover's verifying key must be in.
    pub publisher: Option<String>,
    /// Hex sha256 of the one verifying key accepted.
    pub vk_id: Option<String>,
}

/// `[verify] policy`, with the key named when it does not parse.
fn verify_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<VerifyPolicy, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(|e| serde::de::Error::custom(format!("verify.policy: {e}")))
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
            reputation: ReputationConfig::default(),
            pay_currency: None,
            escrow_secs: 3600,
            funding_timeout_ms: 60_000,
            rate_source: RateSourceKind::Fixed,
            rates: BTreeMap::new(),
            rates_file: None,
            rates_max_age_secs: 3600,
            proof_pins: BTreeMap::new(),
        }
    }
}

/// `[client.reputation]`: how verified outcomes (this node's own and other
/// verifiers' gossiped attestations) become a provider's reputation
/// (`verify::reputation`, which says why these defaults).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationConfig {
    /// An observation's weight halves every this many days.
    pub half_life_days: f64,
    /// What one proven cheat weighs, in verified successes.
    pub cheat_weight: f64,
    /// The most an arbiter-certified stake adds to an attester's weight
    /// (0 to 0.5; 0: stake counts for nothing).
    pub stake_weight: f64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig {
            half_life_days: 7.0,
            cheat_weight: 20.0,
            stake_weight: 0.25,
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
    /// Jobs this provider runs at once (advertised; more wait for a slot,
    /// within the network's in-flight bounds). Default: the CPU count, at
    /// most [`MAX_CAPACITY`].
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Pipeline sessions a provider of layer spans holds at once, each on
    /// an instance of its own with the session's KV cache (the least
    /// recently used goes first). Default: 8, within what `capacity`
    /// leaves of [`MAX_CAPACITY`].
    #[serde(default)]
    pub sessions: Option<u32>,
    /// How long a pipeline session is held without a step, seconds.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
}

fn default_session_ttl() -> u64 {
    300
}

/// The most jobs a node runs at once: the wasm instance pool holds 64
/// component instances, and 16 stay free for pricing and payment calls.
pub const MAX_CAPACITY: u32 = 48;

impl NodeConfig {
    /// [`NodeConfig::capacity`] or its default.
    pub fn capacity(&self) -> u32 {
        self.capacity.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() as u32)
                .min(MAX_CAPACITY)
        })
    }

    /// [`NodeConfig::sessions`] or its default.
    pub fn sessions(&self) -> u32 {
        self.sessions
            .unwrap_or_else(|| 8.min(MAX_CAPACITY - self.capacity()))
    }
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
            capacity: None,
            sessions: None,
            session_ttl_secs: default_session_ttl(),
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

/// `[[backend]]` (build one in code with `..Default::default()`: fields
/// are added as the contract grows).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Plugin package: a directory holding `infernet-plugin.toml` and the `.wasm`.
    pub plugin: PathBuf,
    /// Hex ed25519 public key the manifest must be signed by.
    pub publisher_key: Option<String>,
    /// Models this backend may open.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Origins the backend may reach over `wasi:http` (contract 0.2.3; an
    /// engine bridge's engine), matched as `[[payment]] allowed_hosts` is.
    /// None by default: a backend reaches nothing.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Secrets by name → environment variable holding the value (0.2.3).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Plain settings the plugin may read through `config` (0.2.3).
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Limits (defaults apply to missing keys).
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[[backend.models]]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The id clients ask for.
    pub id: String,
    /// Directory with `config.json`, `tokenizer.json` and `*.safetensors`;
    /// or a directory holding one `*.gguf` file (with `tokenizer.json`
    /// optionally), or a `.gguf` file.
    pub path: PathBuf,
    /// Proof system this node proves the model's results in, on request:
    /// `"groth16"` (committed weights, a key per shape) or `"groth16-baked"`
    /// (weights as circuit constants, a key per model; much faster proofs).
    /// Quantized MLP/CNN model dirs only; checked at start.
    #[serde(default)]
    pub proof: Option<String>,
    /// The model publisher's key bundle (`<stem>.keys.json` from `infernet
    /// zk setup`, its `.pk` beside it) to prove with. Without it the node
    /// runs the setup itself, and only clients that trust this provider's
    /// setup accept its proofs.
    #[serde(default)]
    pub proof_keys: Option<PathBuf>,
    /// Serve only these decoder layers, `"a..b"` (half-open), as one stage
    /// of a pipeline: advertised as the span id `<id>@a..b/<layers>`
    /// ([`crate::models::span`]), and only what the span needs is opened.
    #[serde(default)]
    pub layers: Option<String>,
}

/// The proof systems `[[backend.models]] proof` accepts.
pub const PROOF_SYSTEMS: &[&str] = &["groth16", "groth16-baked"];

/// The system name a proof system's envelopes and key statements carry.
pub fn envelope_system(proof: &str) -> Option<&'static str> {
    match proof {
        "groth16" => Some(infernet_verifier::GROTH16_SYSTEM),
        "groth16-baked" => Some(infernet_verifier::baked::SYSTEM),
        _ => None,
    }
}

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
    /// Origins the adapter may reach; nothing else is reachable. Scheme and
    /// port match exactly: `api.example.com` is https on 443 only,
    /// `api.example.com:8443` https on 8443, `http://127.0.0.1:8080` plain
    /// HTTP on 8080 (`http://` only when written).
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
    /// Cap on the work of one host kernel call, MFLOP (default: 1 MFLOP per
    /// ms of `kernel_time_ms`, so one kernel fits its budget on a slow CPU).
    pub kernel_work_mflop: Option<u64>,
    /// Cap on live tensor and sampler handles of one instance, empty ones included.
    pub tensor_handles: Option<u64>,
    /// Cap on tokens streamed through `progress.emit-token` per call.
    pub stream_tokens: Option<u64>,
    /// Cap on bytes streamed through `progress.emit-token` per call, MiB.
    pub stream_mb: Option<u64>,
    /// Fuel per call (pricing plugins).
    pub fuel: Option<u64>,
    /// Cap on the model weights one backend instance opens, MiB (default:
    /// unlimited). A model over it can still be served in layer spans.
    pub weights_mb: Option<u64>,
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
                if let Some(k) = &mut m.proof_keys {
                    fix(k);
                }
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
    /// The effective limits: defaults overridden by whatever is set here.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            memory_bytes: self
                .memory_mb
                .map(|m| (m * MIB) as usize)
                .unwrap_or(d.memory_bytes),
            wall_time: self
                .wall_time_ms
                .map(Duration::from_millis)
                .unwrap_or(d.wall_time),
            kernel_time: self
                .kernel_time_ms
                .map(Duration::from_millis)
                .unwrap_or(d.kernel_time),
            tensor_bytes: self
                .tensor_mb
                .map(|m| m.saturating_mul(MIB))
                .unwrap_or(d.tensor_bytes),
            copy_out_bytes: self
                .copy_out_mb
                .map(|m| m.saturating_mul(MIB))
                .unwrap_or(d.copy_out_bytes),
            kernel_work: self
                .kernel_work_mflop
                .map(|m| m.saturating_mul(1_000_000))
                .or(d.kernel_work),
            tensor_handles: self.tensor_handles.unwrap_or(d.tensor_handles),
            stream_tokens: self.stream_tokens.unwrap_or(d.stream_tokens),
            stream_bytes: self
                .stream_mb
                .map(|m| m.saturating_mul(MIB))
                .unwrap_or(d.stream_bytes),
            fuel: self.fuel.unwrap_or(d.fuel),
            weight_bytes: self
                .weights_mb
                .map(|m| m.saturating_mul(MIB))
                .unwrap_or(d.weight_bytes),
        }
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
mod tests;

impl StakeConfig {
    /// `amount` in minor units of `currency`, or why it is not one.
    pub fn minor_amount(&self) -> Result<u64, String> {
        infernet_plugin_api::money::Amount::parse(&self.amount, &self.currency)
            .map_err(|e| {
                format!(
                    "`{}` is not an amount of {}: {e}",
                    self.amount, self.currency
                )
            })?
            .to_u64()
            .map_err(|e| format!("`{}` {}: {e}", self.amount, self.currency))
    }
}
