//! Validation, one function per section: each checks its own keys and names
//! the offending one (`backend[0].limits.memory_mb: must be > 0`).

use super::{
    invalid, BackendConfig, ClientConfig, Config, ConfigError, LimitsConfig, NodeConfig,
    PaymentConfig, PluginConfig, RateSourceKind, RegistryConfig, Role, VerifyConfig,
    ACCOUNT_CONFIG_KEY, PROOF_SYSTEMS,
};
use infernet_plugin_api::money;
use std::collections::HashSet;

impl Config {
    /// Checks every section, then what spans sections.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.node.validate()?;
        for role in [Role::Provider, Role::Verifier] {
            if self.node.roles.contains(&role) && self.backend.is_empty() {
                let name = format!("{role:?}").to_lowercase();
                return Err(invalid(
                    "node.roles",
                    format!("role `{name}` needs at least one [[backend]] to run jobs on"),
                ));
            }
        }
        self.client.validate()?;
        self.verify.validate()?;
        if let Some(stake) = &self.stake {
            stake.validate()?;
        }
        if let Some(registry) = &self.registry {
            registry.validate()?;
        }
        if let Some(api) = &self.api {
            api.validate()?;
        }
        let mut model_ids = HashSet::new();
        for (i, b) in self.backend.iter().enumerate() {
            b.validate(&format!("backend[{i}]"), &mut model_ids)?;
        }
        if let Some(p) = &self.pricing {
            p.validate("pricing")?;
        }
        for (i, p) in self.payment.iter().enumerate() {
            p.validate(&format!("payment[{i}]"))?;
        }
        Ok(())
    }
}

impl NodeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        crate::kernels::parse_device(&self.device).map_err(|m| invalid("node.device", m))?;
        for (key, list) in [("listen", &self.listen), ("bootstrap", &self.bootstrap)] {
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
        for (i, a) in self.bootstrap.iter().enumerate() {
            if !a.contains("/p2p/") {
                return Err(invalid(
                    format!("node.bootstrap[{i}]"),
                    format!(
                        "`{a}` has no `/p2p/<peer id>`; bootstrap peers must name their peer id"
                    ),
                ));
            }
        }
        if self.advert_interval_secs == 0 {
            return Err(invalid(
                "node.advert_interval_secs",
                "must be greater than 0",
            ));
        }
        if let Some(c) = self.capacity {
            if c == 0 || c > super::MAX_CAPACITY {
                return Err(invalid(
                    "node.capacity",
                    format!("must be 1 to {} (jobs run at once)", super::MAX_CAPACITY),
                ));
            }
        }
        if let Some(n) = self.sessions {
            let room = super::MAX_CAPACITY - self.capacity();
            if n > room {
                return Err(invalid(
                    "node.sessions",
                    format!("must be at most {room}: held sessions and `capacity` ({}) share {} plugin instances", self.capacity(), super::MAX_CAPACITY),
                ));
            }
        }
        if self.session_ttl_secs == 0 {
            return Err(invalid("node.session_ttl_secs", "must be greater than 0"));
        }
        Ok(())
    }
}

impl ClientConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (model, pin) in &self.proof_pins {
            let key = format!("client.proof_pins.{model}");
            if pin.publisher.is_none() && pin.vk_id.is_none() {
                return Err(invalid(
                    key,
                    "pin a `publisher` (hex ed25519 key) or a `vk_id`",
                ));
            }
            if let Some(p) = &pin.publisher {
                validate_key_hex(p).map_err(|m| invalid(format!("{key}.publisher"), m))?;
            }
            if let Some(v) = &pin.vk_id {
                if !(v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())) {
                    return Err(invalid(
                        format!("{key}.vk_id"),
                        "must be the 64-character hex sha256 of the verifying key",
                    ));
                }
            }
        }
        for (name, v) in [
            ("discovery_timeout_ms", self.discovery_timeout_ms),
            ("quote_timeout_ms", self.quote_timeout_ms),
            ("step_timeout_ms", self.step_timeout_ms),
            ("run_timeout_ms", self.run_timeout_ms),
            ("max_attempts", u64::from(self.max_attempts)),
            ("quote_fanout", u64::from(self.quote_fanout)),
        ] {
            if v == 0 {
                return Err(invalid(format!("client.{name}"), "must be greater than 0"));
            }
        }
        let w = &self.weights;
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
        let r = &self.reputation;
        for (name, v, lo, hi) in [
            ("half_life_days", r.half_life_days, 1e-3, 3650.0),
            ("cheat_weight", r.cheat_weight, 1.0, 1000.0),
            ("stake_weight", r.stake_weight, 0.0, 0.5),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(
                    format!("client.reputation.{name}"),
                    format!("must be a number from {lo} to {hi}"),
                ));
            }
        }
        for code in self.rates.keys() {
            money::currency(code)
                .map_err(|e| invalid(format!("client.rates.{code}"), e.to_string()))?;
        }
        match (self.rate_source, &self.rates_file) {
            (RateSourceKind::File, None) => {
                return Err(invalid(
                    "client.rates_file",
                    "is required with rate_source = \"file\" (a JSON object of micro-USD per whole unit)",
                ))
            }
            (RateSourceKind::File, Some(_)) if !self.rates.is_empty() => {
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
        if let Some(c) = &self.pay_currency {
            money::currency(c).map_err(|e| invalid("client.pay_currency", e.to_string()))?;
        }
        if self.escrow_secs == 0 {
            return Err(invalid("client.escrow_secs", "must be at least 1 second"));
        }
        Ok(())
    }
}

impl VerifyConfig {
    /// `policy` is checked as it parses (serde names the key); here the
    /// referees, which must be peer ids, once each.
    fn validate(&self) -> Result<(), ConfigError> {
        for (list, what, peers) in [
            ("referees", "referee", &self.referees),
            ("verifiers", "verifier", &self.verifiers),
        ] {
            let mut seen = HashSet::new();
            for (i, r) in peers.iter().enumerate() {
                let key = format!("verify.{list}[{i}]");
                r.parse::<libp2p::PeerId>().map_err(|e| {
                    invalid(
                        key.clone(),
                        format!("`{r}` is not a peer id ({e}); write the {what}'s id as `infernet node start` prints it (`12D3KooW…`)"),
                    )
                })?;
                if !seen.insert(r.as_str()) {
                    return Err(invalid(key, format!("{what} `{r}` is listed twice")));
                }
            }
        }
        if self.cert_secs == 0 {
            return Err(invalid("verify.cert_secs", "must be at least 1 second"));
        }
        if self.stake_escrow_secs == 0 || self.stake_escrow_secs > 30 * 24 * 3600 {
            return Err(invalid(
                "verify.stake_escrow_secs",
                format!(
                    "{} is not 1 to 2592000 seconds (30 days, CoinPay's longest escrow)",
                    self.stake_escrow_secs
                ),
            ));
        }
        if self.stake_escrow_secs <= self.unbond_grace_secs {
            return Err(invalid(
                "verify.stake_escrow_secs",
                "must be longer than verify.unbond_grace_secs, or no certificate could be issued",
            ));
        }
        if self.slash_client_permille > 1000 {
            return Err(invalid(
                "verify.slash_client_permille",
                format!(
                    "{} is more than 1000 (all of it)",
                    self.slash_client_permille
                ),
            ));
        }
        Ok(())
    }
}

impl super::StakeConfig {
    /// The arbiter is a peer id; the amount a positive decimal of a known
    /// currency.
    fn validate(&self) -> Result<(), ConfigError> {
        self.arbiter.parse::<libp2p::PeerId>().map_err(|e| {
            invalid(
                "stake.arbiter",
                format!("`{}` is not a peer id ({e}); write the arbiter's id as `infernet node start` prints it", self.arbiter),
            )
        })?;
        self.minor_amount()
            .map_err(|m| invalid("stake.amount", m))
            .and_then(|a| match a {
                0 => Err(invalid("stake.amount", "must be more than zero")),
                _ => Ok(()),
            })
    }
}

impl BackendConfig {
    /// `model_ids` collects ids across backends: one id is served once.
    fn validate(&self, key: &str, model_ids: &mut HashSet<String>) -> Result<(), ConfigError> {
        if let Some(k) = &self.publisher_key {
            validate_key_hex(k).map_err(|m| invalid(format!("{key}.publisher_key"), m))?;
        }
        self.limits.validate(&format!("{key}.limits"))?;
        validate_allowed_hosts(key, &self.allowed_hosts)?;
        for (j, m) in self.models.iter().enumerate() {
            let mkey = format!("{key}.models[{j}]");
            if m.id.trim().is_empty() {
                return Err(invalid(format!("{mkey}.id"), "must not be empty"));
            }
            if m.id.contains('@') {
                return Err(invalid(
                    format!("{mkey}.id"),
                    "must not contain `@` (it separates a model from its layer span)",
                ));
            }
            if let Some(l) = &m.layers {
                // The layer count is known once the model is open; here, the form.
                crate::models::span::LayerSpan::parse(l, u32::MAX)
                    .map_err(|e| invalid(format!("{mkey}.layers"), e))?;
                if m.proof.is_some() {
                    return Err(invalid(
                        format!("{mkey}.layers"),
                        "a layer span is not proved; drop `proof` or `layers`",
                    ));
                }
            }
            if m.proof_keys.is_some() && m.proof.is_none() {
                return Err(invalid(
                    format!("{mkey}.proof_keys"),
                    "a key bundle is for proofs: set `proof = \"groth16\"` too",
                ));
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
            let served = format!("{}@{}", m.id, m.layers.as_deref().unwrap_or("all"));
            if !model_ids.insert(served) {
                return Err(invalid(
                    format!("{mkey}.id"),
                    format!("model id `{}` is configured twice", m.id),
                ));
            }
        }
        Ok(())
    }
}

impl PluginConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(k) = &self.publisher_key {
            validate_key_hex(k).map_err(|m| invalid(format!("{key}.publisher_key"), m))?;
        }
        self.limits.validate(&format!("{key}.limits"))
    }
}

impl PaymentConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(k) = &self.publisher_key {
            validate_key_hex(k).map_err(|m| invalid(format!("{key}.publisher_key"), m))?;
        }
        self.limits.validate(&format!("{key}.limits"))?;
        if let Some(c) = &self.confirm {
            if c != "status" && c != "client" {
                return Err(invalid(
                    format!("{key}.confirm"),
                    format!("`{c}` is not `status` or `client`"),
                ));
            }
        }
        if self.account.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err(invalid(format!("{key}.account"), "is empty"));
        }
        if self.config.contains_key(ACCOUNT_CONFIG_KEY) {
            return Err(invalid(
                format!("{key}.config.{ACCOUNT_CONFIG_KEY}"),
                format!(
                    "is set by the host from `{key}.account`; set `account` on the [[payment]] table"
                ),
            ));
        }
        validate_allowed_hosts(key, &self.allowed_hosts)
    }
}

/// `{key}.allowed_hosts`: each entry an origin [`AllowedHost`](crate::worlds::http_filter::AllowedHost) parses.
fn validate_allowed_hosts(key: &str, hosts: &[String]) -> Result<(), ConfigError> {
    for (j, h) in hosts.iter().enumerate() {
        if let Err(e) = crate::worlds::http_filter::AllowedHost::parse(h) {
            return Err(invalid(
                format!("{key}.allowed_hosts[{j}]"),
                format!(
                    "`{h}` {e} (write `api.example.com` for https on 443, \
                     `host:port` for https on that port, `http://host:port` for plain HTTP)"
                ),
            ));
        }
    }
    Ok(())
}

impl LimitsConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let fields = [
            ("memory_mb", self.memory_mb),
            ("wall_time_ms", self.wall_time_ms),
            ("kernel_time_ms", self.kernel_time_ms),
            ("tensor_mb", self.tensor_mb),
            ("weights_mb", self.weights_mb),
            ("copy_out_mb", self.copy_out_mb),
            ("kernel_work_mflop", self.kernel_work_mflop),
            ("tensor_handles", self.tensor_handles),
            ("stream_tokens", self.stream_tokens),
            ("stream_mb", self.stream_mb),
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

impl RegistryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let uri: http::Uri = self.url.parse().map_err(|e| {
            invalid(
                "registry.url",
                format!(
                    "`{}` is not a URL ({e}); write e.g. `https://abcd.supabase.co`",
                    self.url
                ),
            )
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(invalid(
                "registry.url",
                format!(
                    "`{}` must be an http(s) URL with a host, e.g. `https://abcd.supabase.co`",
                    self.url
                ),
            ));
        }
        if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
            return Err(invalid(
                "registry.url",
                format!(
                    "`{}`: give the project URL only; `/rest/v1/...` is added by the node",
                    self.url
                ),
            ));
        }
        let env_ok = !self.anon_key_env.is_empty()
            && self
                .anon_key_env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !env_ok {
            return Err(invalid(
                "registry.anon_key_env",
                "the name of an environment variable (letters, digits, `_`), e.g. `SUPABASE_ANON_KEY`; the key itself never goes in the config",
            ));
        }
        if !(5..=86_400).contains(&self.heartbeat_secs) {
            return Err(invalid("registry.heartbeat_secs", "must be 5..=86400"));
        }
        if !(30..=86_400).contains(&self.ttl_secs) || self.ttl_secs <= self.heartbeat_secs {
            return Err(invalid(
                "registry.ttl_secs",
                "must be 30..=86400 and longer than heartbeat_secs (a record must outlive the next heartbeat)",
            ));
        }
        if !(1..=64).contains(&self.max_dial) {
            return Err(invalid("registry.max_dial", "must be 1..=64"));
        }
        Ok(())
    }
}
