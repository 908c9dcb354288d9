//! The `payment` world's facade: escrow operations of a payment adapter.
//!
//! Each call gets a fresh store (state lives in the plugin's `kv`
//! namespace, never in the instance), bounded by the plugin's wall time and
//! fuel. Capabilities come from the provider's config, never the plugin:
//! - `wasi:http/outgoing-handler` reaches only the origins in `allowed_hosts`
//!   ([`HostFilter`], [`AllowedHost`], shared with backends): scheme, host and port must match an
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
pub use super::http_filter::{AllowedHost, AllowedScheme, HostFilter};
use super::{guest_error, instance_pre, latest, link_err, since_v0_1_0 as v0_1, Contract};
use crate::runtime::{classify_trap, new_store, Limits, LoadedComponent, PluginError, Runtime};
use crate::store::PluginKv;
use std::collections::BTreeMap;
use wasmtime::Store;

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
    metrics: std::sync::Arc<crate::metrics::Metrics>,
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
            metrics: runtime.metrics().clone(),
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
            hooks: HostFilter::new(&self.name, self.allowed_hosts.clone())
                .with_max_wait(self.limits.wall_time),
        };
        let state = PaymentState::new(&self.name, self.limits, caps);
        let world = crate::metrics::world::PAYMENT;
        self.metrics.plugin_call(&self.name, world);
        let trapped = |e: PluginError| {
            self.metrics.plugin_trap(&self.name, world, e.trap_reason());
            e
        };
        let result = match &self.pre {
            Pre::V0_1(pre) => {
                let mut store = new_store(pre.engine(), state, self.limits.fuel);
                let r = pre
                    .instantiate(&mut store)
                    .and_then(|p| f(Api::V0_1(p.infernet_plugin_payment_api()), &mut store));
                r.map_err(|trap| trapped(classify_trap(&store, trap)))
            }
            Pre::V0_2(pre) => {
                let mut store = new_store(pre.engine(), state, self.limits.fuel);
                let r = pre
                    .instantiate(&mut store)
                    .and_then(|p| f(Api::V0_2(p.infernet_plugin_payment_api()), &mut store));
                r.map_err(|trap| trapped(classify_trap(&store, trap)))
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
