//! The `payment` world: escrow operations of a payment adapter plugin.
//!
//! Each call gets a fresh store (state lives in the plugin's `kv`
//! namespace, never in the instance), bounded by the plugin's wall time and
//! fuel. Capabilities come from the provider's config, never the plugin:
//! - `wasi:http/outgoing-handler` reaches only the hosts in `allowed_hosts`
//!   ([`HostFilter`]); any other host gets `HTTP-request-denied`, logged;
//! - `config.secret(name)` resolves through the env-var name the config maps
//!   `name` to; the value is handed to the guest and nowhere else (not
//!   logged, not stored, not in errors);
//! - `kv` is the plugin's own namespace of the node's SQLite.
//!
//! Calls block (HTTP included) and run one at a time per plugin (kv has
//! no transactions): async callers use `spawn_blocking`.

use super::backend::guest_error;
use super::{classify_trap, instance_pre, link_err, new_store};
use crate::kernels::KernelCtx;
use crate::models::ModelGrants;
use crate::runtime::{Limits, LoadedComponent, PluginError, PluginState, Runtime};
use crate::store::{KvError, PluginKv};
use std::collections::BTreeMap;
use std::future::Future;
use wasmtime::component::HasSelf;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

/// Generated host bindings of the `payment` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "payment",
        path: "../wit",
        with: {
            "infernet:plugin/types": crate::worlds::backend::bindings::infernet::plugin::types,
            "infernet:plugin/log": crate::worlds::backend::bindings::infernet::plugin::log,
            "infernet:plugin/config": crate::worlds::pricing::bindings::infernet::plugin::config,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
        require_store_data_send: true,
        imports: { default: trappable },
    });
}

pub use crate::worlds::backend::bindings::infernet::plugin::types::Money;
pub use bindings::exports::infernet::plugin::payment_api::{
    CurrencyInfo, Escrow, EscrowRequest, EscrowStatus,
};
use bindings::infernet::plugin::kv;

/// What a payment plugin is granted by config.
pub struct PaymentGrants {
    /// Hosts it may reach over HTTP(S): `api.example.com` or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// Plain config values it reads through `config.get`.
    pub config: BTreeMap<String, String>,
    /// Secret name → environment variable holding the value.
    pub secrets: BTreeMap<String, String>,
    /// Its key-value namespace.
    pub kv: PluginKv,
}

/// The `wasi:http` hooks of a plugin store: requests go out only to the
/// allowed hosts.
pub struct HostFilter {
    plugin: String,
    allowed: Vec<String>,
}

impl HostFilter {
    /// A filter for `plugin` allowing exactly `allowed` (case-insensitive;
    /// an entry without a port allows any port of that host).
    pub fn new(plugin: &str, allowed: Vec<String>) -> Self {
        HostFilter {
            plugin: plugin.to_owned(),
            allowed: allowed
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request to `host` (and `port`, if the URI names one) may go out.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.allowed.iter().any(|a| {
            let a = a.as_str();
            a == host || port.is_some_and(|p| a == format!("{host}:{p}"))
        })
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
        let host = request.uri().host().unwrap_or("").to_string();
        let port = request.uri().port_u16();
        if !self.allows(&host, port) {
            tracing::warn!(
                plugin = %self.plugin,
                host = %host,
                "outgoing HTTP refused: host not in this plugin's allowed_hosts"
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

fn kv_err(e: KvError) -> bindings::infernet::plugin::types::Error {
    use bindings::infernet::plugin::types::Error;
    match e {
        KvError::Limit(m) => Error::LimitExceeded(m),
        KvError::Store(e) => Error::Internal(format!("kv: {e}")),
    }
}

impl kv::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::Error>> {
        Ok(self.kv_handle().and_then(|kv| kv.get(&key).map_err(kv_err)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), kv::Error>> {
        Ok(self
            .kv_handle()
            .and_then(|kv| kv.set(&key, &value).map_err(kv_err)))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), kv::Error>> {
        Ok(self
            .kv_handle()
            .and_then(|kv| kv.delete(&key).map_err(kv_err)))
    }

    fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, kv::Error>> {
        Ok(self
            .kv_handle()
            .and_then(|kv| kv.list_keys(&prefix).map_err(kv_err)))
    }
}

impl PluginState {
    fn kv_handle(&self) -> Result<&PluginKv, kv::Error> {
        self.kv
            .as_ref()
            .ok_or_else(|| kv::Error::Unsupported("this plugin was granted no kv namespace".into()))
    }
}

/// A loaded payment adapter with its grants.
#[derive(Clone)]
pub struct PaymentPlugin {
    name: String,
    pre: bindings::PaymentPre<PluginState>,
    limits: Limits,
    allowed_hosts: Vec<String>,
    config: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
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
        let instance_pre = instance_pre(runtime, loaded, |linker| {
            use crate::worlds::backend::bindings::infernet::plugin::{log, types};
            use crate::worlds::pricing::bindings::infernet::plugin::config;
            types::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
            log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
            config::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
            kv::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
        })?;
        let pre = bindings::PaymentPre::new(instance_pre).map_err(link_err(&name))?;
        Ok(PaymentPlugin {
            name,
            pre,
            limits,
            allowed_hosts: grants.allowed_hosts,
            config: grants.config,
            secrets: grants.secrets,
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
        f: impl FnOnce(
            &bindings::exports::infernet::plugin::payment_api::Guest,
            &mut wasmtime::Store<PluginState>,
        ) -> wasmtime::Result<Result<T, kv::Error>>,
    ) -> Result<T, PluginError> {
        // A poisoned lock only means an earlier call panicked on the host
        // side; the kv state is whatever that call committed.
        let _one_at_a_time = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let _one_process_at_a_time = self.kv.exclusive().map_err(|e| PluginError::Guest {
            name: self.name.clone(),
            error: e.to_string(),
            kind: "internal",
        })?;
        let mut state = PluginState::new(
            &self.name,
            self.limits,
            KernelCtx::new(candle_core::Device::Cpu),
            ModelGrants::default(),
        );
        state.config = self.config.clone();
        state.secrets = self.secrets.clone();
        state.kv = Some(self.kv.clone());
        state.http = HostFilter::new(&self.name, self.allowed_hosts.clone());
        let mut store = new_store(self.pre.engine(), state, self.limits.fuel);
        let result = self.pre.instantiate(&mut store).and_then(|p| {
            let api = p.infernet_plugin_payment_api();
            f(api, &mut store)
        });
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(guest_error(&self.name, e)),
            Err(trap) => Err(classify_trap(&store, trap)),
        }
    }

    /// Currencies the adapter moves.
    pub fn currencies(&self) -> Result<Vec<CurrencyInfo>, PluginError> {
        self.call(|api, store| api.call_currencies(store).map(Ok))
    }

    /// Creates an escrow (idempotent per `request.job_id` in our adapters).
    pub fn create_escrow(&self, request: &EscrowRequest) -> Result<Escrow, PluginError> {
        self.call(|api, store| api.call_create_escrow(store, request))
    }

    /// The escrow's current state.
    pub fn status(&self, id: &str) -> Result<Escrow, PluginError> {
        self.call(|api, store| api.call_status(store, id))
    }

    /// Releases the escrow to its beneficiary.
    pub fn release(&self, id: &str) -> Result<Escrow, PluginError> {
        self.call(|api, store| api.call_release(store, id))
    }

    /// Refunds the escrow to its depositor.
    pub fn refund(&self, id: &str) -> Result<Escrow, PluginError> {
        self.call(|api, store| api.call_refund(store, id))
    }

    /// Opens a dispute.
    pub fn dispute(&self, id: &str, reason: &str) -> Result<Escrow, PluginError> {
        self.call(|api, store| api.call_dispute(store, id, reason))
    }

    /// Hands a webhook (raw headers and body) to the adapter to verify and apply.
    pub fn handle_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Escrow, PluginError> {
        self.call(|api, store| api.call_handle_webhook(store, headers, body))
    }

    /// The plugin's kv namespace (host tools such as `infernet wallet` use it).
    pub fn kv(&self) -> &PluginKv {
        &self.kv
    }
}

/// The WIT name of an escrow status.
pub fn status_name(s: EscrowStatus) -> &'static str {
    match s {
        EscrowStatus::Pending => "pending",
        EscrowStatus::Funded => "funded",
        EscrowStatus::Released => "released",
        EscrowStatus::Settled => "settled",
        EscrowStatus::Refunded => "refunded",
        EscrowStatus::Disputed => "disputed",
        EscrowStatus::Expired => "expired",
    }
}
