//! The `payment` world's facade: escrow operations of a payment adapter.
//!
//! Each call gets a fresh store (state lives in the plugin's `kv`
//! namespace, never in the instance), bounded by the plugin's wall time and
//! fuel. Capabilities come from the provider's config, never the plugin:
//! - `wasi:http/outgoing-handler` reaches only the origins in `allowed_hosts`
//!   ([`HostFilter`], [`AllowedHost`]): scheme, host and port must match an
//!   entry exactly (a bare `host` is `https` on port 443 only); anything
//!   else gets `HTTP-request-denied`, logged;
//! - `config.secret(name)` resolves through the env-var name the config maps
//!   `name` to; the value is handed to the guest and nowhere else (not
//!   logged, not stored, not in errors);
//! - `kv` is the plugin's own namespace of the node's SQLite;
//! - a 0.1.0 adapter also gets config key `account` (the node's account at
//!   the service): its `status` vouches for a foreign escrow's beneficiary
//!   itself, because its escrow record cannot carry one. From 0.2.0 the
//!   record carries the beneficiary and the host checks it.
//!
//! Calls block (HTTP included) and run one at a time per plugin (kv has
//! no transactions): async callers use `spawn_blocking`.

use super::caps::{ConfigGrant, PaymentCaps, PaymentState};
use super::{guest_error, instance_pre, latest, link_err, since_v0_1_0 as v0_1, Contract};
use crate::runtime::{classify_trap, new_store, Limits, LoadedComponent, PluginError, Runtime};
use crate::store::PluginKv;
use std::collections::BTreeMap;
use std::future::Future;
use wasmtime::Store;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

pub use infernet_plugin_api::escrow::EscrowState;
pub use latest::{CurrencyInfo, EscrowRequest, Money};

/// Config key under which a 0.1.0 adapter is granted the node's account.
pub const ACCOUNT_CONFIG_KEY: &str = "account";

/// An escrow as an adapter reports it, whatever its contract version.
#[derive(Debug, Clone, PartialEq)]
pub struct Escrow {
    /// Adapter-side id.
    pub id: String,
    /// Current state.
    pub status: EscrowState,
    /// Amount held.
    pub amount: Money,
    /// Where the depositor sends funds, when the adapter has one.
    pub deposit_address: Option<String>,
    /// Expiry, unix seconds (0: none reported).
    pub expires_at: u64,
    /// Who is paid on release, as the service records it. `None` from a
    /// 0.1.0 adapter (its record has no beneficiary; its `status` answers
    /// for a foreign escrow only when it pays the granted `account`).
    pub beneficiary: Option<String>,
}

/// What a payment plugin is granted by config.
pub struct PaymentGrants {
    /// The node's account at the service (granted to 0.1.0 adapters as
    /// config key `account`; see the module doc).
    pub account: String,
    /// Origins it may reach ([`AllowedHost`]): `api.example.com` (https,
    /// port 443), `host:port` (https), `http://host[:port]` (plain HTTP).
    pub allowed_hosts: Vec<String>,
    /// Plain config values it reads through `config.get`.
    pub config: BTreeMap<String, String>,
    /// Secret name → environment variable holding the value.
    pub secrets: BTreeMap<String, String>,
    /// Secrets the host generated (name → value) for names `secrets` lacks.
    pub generated: BTreeMap<String, String>,
    /// Its key-value namespace.
    pub kv: PluginKv,
}

/// The scheme of an allowed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedScheme {
    /// TLS (the default of an entry without a scheme).
    Https,
    /// Plain HTTP: only when the entry says `http://`.
    Http,
}

impl AllowedScheme {
    /// The port a URI without one reaches.
    pub fn default_port(self) -> u16 {
        match self {
            AllowedScheme::Https => 443,
            AllowedScheme::Http => 80,
        }
    }
}

/// One `allowed_hosts` entry: a scheme, a host and a port, all matched
/// exactly. `api.example.com` is `https://api.example.com:443`;
/// `api.example.com:8443` is https on 8443; `http://127.0.0.1:8080` is
/// plain HTTP on 8080 and `http://example.com` plain HTTP on 80. No path,
/// query, user info or wildcard; IPv6 literals in brackets (`[::1]:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Scheme.
    pub scheme: AllowedScheme,
    /// Host, lower-case, IPv6 without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl AllowedHost {
    /// Parses an entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<AllowedHost, String> {
        let lower = entry.trim().to_ascii_lowercase();
        let (scheme, rest) = if let Some(r) = lower.strip_prefix("https://") {
            (AllowedScheme::Https, r)
        } else if let Some(r) = lower.strip_prefix("http://") {
            (AllowedScheme::Http, r)
        } else if lower.contains("://") {
            return Err("only `http://` and `https://` origins can be allowed".into());
        } else {
            (AllowedScheme::Https, lower.as_str())
        };
        if rest.is_empty() {
            return Err("names no host".into());
        }
        if rest.contains(['/', '?', '#', '@', '*']) || rest.contains(char::is_whitespace) {
            return Err(
                "must be a host with an optional scheme and port, nothing else \
                 (`api.example.com`, `api.example.com:8443`, `http://127.0.0.1:8080`)"
                    .into(),
            );
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (host, after) = r
                .split_once(']')
                .ok_or("has an unclosed `[` (IPv6 literals are written `[::1]:8080`)")?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or("has text after `]`")?)),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['[', ']']) {
            return Err("names no host".into());
        }
        let port = match port {
            None => scheme.default_port(),
            Some(text) => match text.parse::<u16>() {
                // digits only, as written in a URI: no sign, no leading zero
                Ok(p)
                    if p > 0
                        && text.bytes().all(|b| b.is_ascii_digit())
                        && !text.starts_with('0') =>
                {
                    p
                }
                _ => return Err(format!("has port `{text}`, not a number from 1 to 65535")),
            },
        };
        Ok(AllowedHost {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// Whether a request over `scheme` to `host` on `port` is this origin.
    pub fn matches(&self, scheme: AllowedScheme, host: &str, port: u16) -> bool {
        self.scheme == scheme && self.port == port && self.host.eq_ignore_ascii_case(host)
    }
}

/// The `wasi:http` hooks of a plugin store: requests go out only to the
/// allowed origins.
pub struct HostFilter {
    plugin: String,
    allowed: Vec<AllowedHost>,
}

impl HostFilter {
    /// A filter for `plugin` allowing exactly the origins in `allowed`
    /// (see [`AllowedHost`]). An entry that does not parse allows nothing
    /// (config validation refuses it first; logged here too).
    pub fn new(plugin: &str, allowed: Vec<String>) -> Self {
        let allowed = allowed
            .iter()
            .filter_map(|entry| match AllowedHost::parse(entry) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(plugin, entry = %entry, "allowed_hosts entry ignored: {e}");
                    None
                }
            })
            .collect();
        HostFilter {
            plugin: plugin.to_owned(),
            allowed,
        }
    }

    /// Whether a request with URI scheme `scheme` to `host` (and `port`, if
    /// the URI names one; else the scheme's default) may go out. Schemes
    /// other than `http` and `https` never may.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => AllowedScheme::Https,
            "http" => AllowedScheme::Http,
            _ => return false,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.unwrap_or(scheme.default_port());
        self.allowed.iter().any(|a| a.matches(scheme, host, port))
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HostFilter {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let scheme = request.uri().scheme_str().unwrap_or("").to_string();
        let host = request.uri().host().unwrap_or("").to_string();
        let port = request.uri().port_u16();
        if !self.allows(&scheme, &host, port) {
            tracing::warn!(
                plugin = %self.plugin,
                scheme = %scheme,
                host = %host,
                port = ?port,
                "outgoing HTTP refused: origin not in this plugin's allowed_hosts"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        tracing::debug!(plugin = %self.plugin, host = %host, method = %request.method(), "outgoing HTTP");
        let _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// The pre-linked component, per contract version.
#[derive(Clone)]
enum Pre {
    V0_1(v0_1::payment::PaymentPre<PaymentState>),
    V0_2(latest::payment::PaymentPre<PaymentState>),
}

/// The `payment-api` export of an instance, per contract version.
enum Api<'a> {
    V0_1(&'a v0_1::payment::exports::infernet::plugin::payment_api::Guest),
    V0_2(&'a latest::payment::exports::infernet::plugin::payment_api::Guest),
}

/// A loaded payment adapter with its grants.
#[derive(Clone)]
pub struct PaymentPlugin {
    name: String,
    pre: Pre,
    limits: Limits,
    allowed_hosts: Vec<String>,
    config: ConfigGrant,
    kv: PluginKv,
    /// Calls run one at a time: kv has no transactions, so two concurrent
    /// read-modify-write calls (two escrows debiting one balance) could
    /// lose an update. In-process by this lock, across processes (the CLI
    /// beside a running node) by [`PluginKv::exclusive`].
    serial: std::sync::Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for PaymentPlugin {
    // Secrets are env-var names only, but keep Debug minimal anyway.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentPlugin")
            .field("name", &self.name)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl PaymentPlugin {
    /// Links a loaded payment component with the capabilities in `grants`.
    pub fn new(
        runtime: &Runtime,
        loaded: &LoadedComponent,
        limits: Limits,
        grants: PaymentGrants,
    ) -> Result<Self, PluginError> {
        let name = loaded.name.clone();
        let mut values = grants.config;
        let pre = match Contract::of(loaded)? {
            Contract::V0_1 => {
                values.insert(ACCOUNT_CONFIG_KEY.to_string(), grants.account);
                let ip = instance_pre(runtime, loaded, v0_1::add_payment)?;
                Pre::V0_1(v0_1::payment::PaymentPre::new(ip).map_err(link_err(&name))?)
            }
            Contract::V0_2 => {
                let ip = instance_pre(runtime, loaded, latest::add_payment)?;
                Pre::V0_2(latest::payment::PaymentPre::new(ip).map_err(link_err(&name))?)
            }
        };
        Ok(PaymentPlugin {
            name,
            pre,
            limits,
            allowed_hosts: grants.allowed_hosts,
            config: ConfigGrant {
                values,
                secrets: grants.secrets,
                generated: grants.generated,
            },
            kv: grants.kv,
            serial: Default::default(),
        })
    }

    /// The plugin's name (its kv namespace too).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs one export call in a fresh store with the grants armed.
    fn call<T>(
        &self,
        f: impl FnOnce(Api<'_>, &mut Store<PaymentState>) -> wasmtime::Result<Result<T, latest::Error>>,
    ) -> Result<T, PluginError> {
        // A poisoned lock only means an earlier call panicked on the host
        // side; the kv state is whatever that call committed.
        let _one_at_a_time = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let _one_process_at_a_time = self.kv.exclusive().map_err(|e| PluginError::Guest {
            name: self.name.clone(),
            error: e.to_string(),
            kind: "internal",
        })?;
        let caps = PaymentCaps {
            config: self.config.clone(),
            kv: self.kv.clone(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            hooks: HostFilter::new(&self.name, self.allowed_hosts.clone()),
        };
        let state = PaymentState::new(&self.name, self.limits, caps);
        let result = match &self.pre {
            Pre::V0_1(pre) => {
                let mut store = new_store(pre.engine(), state, self.limits.fuel);
                let r = pre
                    .instantiate(&mut store)
                    .and_then(|p| f(Api::V0_1(p.infernet_plugin_payment_api()), &mut store));
                r.map_err(|trap| classify_trap(&store, trap))
            }
            Pre::V0_2(pre) => {
                let mut store = new_store(pre.engine(), state, self.limits.fuel);
                let r = pre
                    .instantiate(&mut store)
                    .and_then(|p| f(Api::V0_2(p.infernet_plugin_payment_api()), &mut store));
                r.map_err(|trap| classify_trap(&store, trap))
            }
        };
        result?.map_err(|e| guest_error(&self.name, e))
    }

    /// Runs an export that answers an escrow record.
    fn escrow_call(
        &self,
        v0_1: impl FnOnce(
            &v0_1::payment::exports::infernet::plugin::payment_api::Guest,
            &mut Store<PaymentState>,
        ) -> wasmtime::Result<
            Result<v0_1::payment::exports::infernet::plugin::payment_api::Escrow, v0_1::Error>,
        >,
        v0_2: impl FnOnce(
            &latest::payment::exports::infernet::plugin::payment_api::Guest,
            &mut Store<PaymentState>,
        ) -> wasmtime::Result<Result<latest::Escrow, latest::Error>>,
    ) -> Result<Escrow, PluginError> {
        self.call(|api, store| match api {
            Api::V0_1(a) => v0_1(a, store).map(|r| r.map(Escrow::from).map_err(Into::into)),
            Api::V0_2(a) => v0_2(a, store).map(|r| r.map(Escrow::from)),
        })
    }

    /// Currencies the adapter moves.
    pub fn currencies(&self) -> Result<Vec<CurrencyInfo>, PluginError> {
        self.call(|api, store| match api {
            Api::V0_1(a) => a
                .call_currencies(store)
                .map(|v| Ok(v.into_iter().map(Into::into).collect())),
            Api::V0_2(a) => a.call_currencies(store).map(Ok),
        })
    }

    /// Creates an escrow (idempotent per `request.job_id` in our adapters).
    pub fn create_escrow(&self, request: &EscrowRequest) -> Result<Escrow, PluginError> {
        self.escrow_call(
            |a, s| a.call_create_escrow(s, &request.clone().into()),
            |a, s| a.call_create_escrow(s, request),
        )
    }

    /// The escrow's current state.
    pub fn status(&self, id: &str) -> Result<Escrow, PluginError> {
        self.escrow_call(|a, s| a.call_status(s, id), |a, s| a.call_status(s, id))
    }

    /// Releases the escrow to its beneficiary.
    pub fn release(&self, id: &str) -> Result<Escrow, PluginError> {
        self.escrow_call(|a, s| a.call_release(s, id), |a, s| a.call_release(s, id))
    }

    /// Refunds the escrow to its depositor.
    pub fn refund(&self, id: &str) -> Result<Escrow, PluginError> {
        self.escrow_call(|a, s| a.call_refund(s, id), |a, s| a.call_refund(s, id))
    }

    /// Opens a dispute.
    pub fn dispute(&self, id: &str, reason: &str) -> Result<Escrow, PluginError> {
        self.escrow_call(
            |a, s| a.call_dispute(s, id, reason),
            |a, s| a.call_dispute(s, id, reason),
        )
    }

    /// Hands a webhook (raw headers and body) to the adapter to verify and apply.
    pub fn handle_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Escrow, PluginError> {
        self.escrow_call(
            |a, s| a.call_handle_webhook(s, headers, body),
            |a, s| a.call_handle_webhook(s, headers, body),
        )
    }

    /// The plugin's kv namespace (host tools such as `infernet wallet` use it).
    pub fn kv(&self) -> &PluginKv {
        &self.kv
    }
}

impl From<latest::Escrow> for Escrow {
    fn from(e: latest::Escrow) -> Self {
        Escrow {
            id: e.id,
            status: e.status.into(),
            amount: e.amount,
            deposit_address: e.deposit_address,
            expires_at: e.expires_at,
            beneficiary: Some(e.beneficiary),
        }
    }
}
