//! The embeddable node: one call starts everything a config asks for, and
//! the result answers `infer`.
//!
//! ```ignore
//! // Compiled as `host/examples/client.rs` (doctests are off: each would link the node again).
//! use infernet_host::config::Config;
//! use infernet_host::sdk::{Amount, InferOptions, Infernet};
//!
//! let config = Config::load("client.toml".as_ref())?;
//! let infernet = Infernet::new(config).start().await?;
//! let out = infernet
//!     .infer("tiny-llama", "hello", InferOptions { max_budget: Some(Amount::parse("0.005", "USD")?), ..Default::default() })
//!     .await?;
//! println!("{} (served by {})", out.text().unwrap_or_default(), out.provider);
//! ```
//!
//! [`Infernet::start`] opens the store, loads the backends and pricing
//! plugin (role `provider`), ends provider jobs an earlier process left
//! running, starts the swarm, advertises the models, records what it learns
//! about peers in the store, and resumes unfinished client jobs.

use crate::config::{BackendConfig, Config, Role};
use crate::jobs::{JobClient, ProviderHandler};
use crate::node::{Node, NodeError};
use crate::p2p::protocol::Money;
use crate::p2p::{
    self, AdvertSpec, Multiaddr, NetworkConfig, NetworkError, NetworkEvent, NetworkHandle, PeerId,
    SharedHandler, WireInput,
};
use crate::store::{
    now_ms, Earnings, EscrowRecord, JobRecord, NodeLock, NodeLockError, PeerRecord, Store,
    StoreError,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub use crate::config::VerifyPolicy;
pub use crate::jobs::client::{
    spot_check, Objective, PipelineOptions, PipelineOutcome, Replica, Shard, ShardedOutcome,
    StageReport, Verdict, Verification,
};
pub use crate::jobs::{ClientError, InferOptions, JobOutcome, JobStream, StreamEvent};
/// An exact amount of one currency: what budgets are given in.
pub use crate::payments::currency::Amount;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir could not be created.
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another node runs on this data dir.
    #[error(transparent)]
    Locked(#[from] NodeLockError),
    /// Backends or pricing plugin failed to load.
    #[error("loading plugins: {0}")]
    Node(#[from] NodeError),
    /// The store failed to open or recover.
    #[error("opening the job store: {0}")]
    Store(#[from] StoreError),
    /// The swarm failed to start.
    #[error("starting the network: {0}")]
    Network(#[from] NetworkError),
    /// The pricing plugin could not price the advert's reference job.
    #[error("pricing the advert: {0}")]
    Pricing(String),
    /// Provider recovery failed.
    #[error("recovering provider jobs: {0}")]
    Recover(String),
    /// A `[[payment]]` adapter failed to load.
    #[error("loading payment adapters: {0}")]
    Payments(String),
    /// A blocking worker panicked.
    #[error("worker task: {0}")]
    Worker(String),
    /// `[registry]` cannot be used (its anon key is not in the environment).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// A change to the network settings, applied before the swarm starts.
type NetworkTweak = Box<dyn FnOnce(&mut NetworkConfig) + Send>;

/// A node not started yet: [`Infernet::new`] then [`InfernetBuilder::start`].
pub struct InfernetBuilder {
    config: Config,
    tweak: Option<NetworkTweak>,
    resume: bool,
    on_load: Option<crate::node::OnLoadStep>,
}

impl InfernetBuilder {
    /// Adds a backend in code (as if it were a `[[backend]]` in the config).
    /// A node with backends takes the provider role unless `node.roles` says
    /// otherwise.
    pub fn backend(mut self, backend: BackendConfig) -> Self {
        self.config.backend.push(backend);
        self
    }

    /// Adjusts network settings the config does not cover (timeouts,
    /// intervals) before the swarm starts.
    pub fn network(mut self, tweak: impl FnOnce(&mut NetworkConfig) + Send + 'static) -> Self {
        self.tweak = Some(Box::new(tweak));
        self
    }

    /// Whether [`start`](Self::start) resumes the store's unfinished client
    /// jobs in the background (default: yes). One-shot tools that run a
    /// single job and exit turn it off and leave resuming to a long-running
    /// node.
    pub fn resume_unfinished(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Reports each step of loading the plugins, models and proof keys
    /// (a progress bar: `infernet node start`).
    pub fn on_load(mut self, on_step: crate::node::OnLoadStep) -> Self {
        self.on_load = Some(on_step);
        self
    }

    /// Starts the node. See the module docs for what happens.
    pub async fn start(self) -> Result<Infernet, StartError> {
        let config = self.config;
        let metrics = crate::metrics::Metrics::new();
        let roles = config.roles();
        let data_dir = config.node.data_dir.clone();
        crate::private::private_dir(&data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let lock = NodeLock::acquire(&data_dir)?;
        let store = {
            let dir = data_dir.clone();
            Arc::new(blocking(move || Store::open_in_dir(&dir).map_err(StartError::from)).await?)
        };
        let key = p2p::load_or_create_identity(&data_dir)?;
        // Checked before anything starts: a registry named in the config
        // but without its key is a config error, not a silent no-op.
        let registry = match &config.registry {
            Some(r) => Some(crate::registry::Registry::from_config(r)?),
            None => None,
        };

        // A verifier runs jobs like a provider (the spot checks it is paid
        // for), and referees.
        let verifier = roles.contains(&Role::Verifier);
        let (node, provider) = if roles.contains(&Role::Provider) || verifier {
            let (cfg, m, on_load) = (config.clone(), metrics.clone(), self.on_load);
            let node = Arc::new(
                blocking(move || Node::load(&cfg, m, on_load).map_err(StartError::from)).await?,
            );
            let payments =
                load_payments(&config, Some(node.runtime()), &metrics, &store, &key).await?;
            let handler =
                ProviderHandler::with_payments(node.clone(), key.clone(), store.clone(), payments);
            let h = handler.clone();
            blocking(move || h.recover().map_err(|e| StartError::Recover(e.to_string()))).await?;
            (Some(node), Some(handler))
        } else {
            (None, None)
        };

        let mut net_cfg = network_config(&config);
        if let Some(tweak) = self.tweak {
            tweak(&mut net_cfg);
        }
        let net = p2p::start(net_cfg, provider.clone().map(SharedHandler::new)).await?;

        if let (Some(node), Some(handler)) = (&node, &provider) {
            if verifier {
                handler.set_verifier();
            }
            if config.verify.referee || verifier {
                let referee = Arc::new(crate::jobs::referee::Referee::new(
                    node.clone(),
                    net.peer_id(),
                ));
                referee.set_network(net.clone());
                handler.set_referee(referee);
                if let Some(payments) = handler.payments() {
                    let arbiter = Arc::new(crate::jobs::arbiter::Arbiter::new(
                        store.clone(),
                        payments,
                        key.clone(),
                        config.verify.clone(),
                    ));
                    let a = arbiter.clone();
                    match blocking(move || Ok::<_, StartError>(a.resume())).await? {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(paid = n, "unfinished slashes paid"),
                        Err(e) => tracing::warn!(error = %e, "unfinished slashes not finished"),
                    }
                    arbiter.set_network(net.clone());
                    handler.set_arbiter(arbiter);
                }
            }
        }
        restore_addresses(&net, &store).await;
        let params = crate::verify::reputation::Params::from_config(&config.client.reputation);
        let arbiters = config.verify.referees.clone();
        let mut tasks = vec![tokio::spawn(record_peers(
            net.clone(),
            store.clone(),
            params,
            arbiters,
        ))];
        if let Some(node) = &node {
            let spec = advert_spec(node.clone(), store.clone(), None, verifier).await?;
            net.publish_advert(spec).await?;
            if let Some(stake) = config.stake.clone() {
                let (tx, mut rx) = tokio::sync::watch::channel(None);
                tasks.push(tokio::spawn(crate::jobs::stake::keep_stake(
                    net.clone(),
                    stake,
                    tx,
                )));
                let (net, node, store) = (net.clone(), node.clone(), store.clone());
                let handler = provider.clone();
                tasks.push(tokio::spawn(async move {
                    while rx.changed().await.is_ok() {
                        let cert = rx.borrow_and_update().clone();
                        if let Some(h) = &handler {
                            h.set_stake_cert(cert.clone());
                        }
                        match advert_spec(node.clone(), store.clone(), cert, verifier).await {
                            Ok(spec) => {
                                if let Err(e) = net.publish_advert(spec).await {
                                    tracing::warn!(error = %e, "cannot re-advertise the stake");
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot re-advertise the stake"),
                        }
                    }
                }));
            }
        }
        if let Some(registry) = &registry {
            let providing = node.is_some();
            let register = config
                .registry
                .as_ref()
                .and_then(|r| r.register)
                .unwrap_or(providing);
            if register {
                let models = node.as_ref().map(|n| n.models()).unwrap_or_default();
                tasks.push(tokio::spawn(registry.clone().heartbeat(
                    net.clone(),
                    key.clone(),
                    models,
                )));
            }
            // Static peers win; the registry is for a node that has none.
            if config.node.bootstrap.is_empty() {
                tasks.push(tokio::spawn(registry.clone().bootstrap(net.clone())));
            }
        }
        let payments = match provider.as_ref() {
            Some(p) => p.payments(),
            None => load_payments(&config, None, &metrics, &store, &key).await?,
        };
        let client = JobClient::with_verify(
            net.clone(),
            store.clone(),
            key,
            config.client.clone(),
            payments.clone(),
            Some((config.verify.clone(), data_dir.clone())),
            metrics.clone(),
        );
        if let Some(node) = node.clone() {
            // Expired pipeline sessions free their instances (and KV
            // caches) even when no later step arrives.
            let every = Duration::from_secs(config.node.session_ttl_secs.clamp(1, 60));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    node.sessions_held();
                }
            }));
        }
        let sweep_every = config.node.escrow_sweep_secs;
        if payments.is_some() && sweep_every > 0 {
            tasks.push(tokio::spawn(sweep_escrows(
                client.clone(),
                provider.clone(),
                Duration::from_secs(sweep_every),
            )));
        }
        if roles.contains(&Role::Client) && self.resume {
            // The list is taken here, before `start` returns: a job this
            // process creates afterwards is driven by its own caller, and a
            // resume racing it would refund a held replica mid-comparison.
            match client.unfinished().await {
                Ok(ids) => {
                    for id in ids {
                        tracing::info!(job = %id, "resuming unfinished job");
                        let c = client.clone();
                        tasks.push(tokio::spawn(async move {
                            if let Err(e) = c.resume(&id).await {
                                tracing::warn!(job = %id, error = %e, "resumed job failed");
                            }
                        }));
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list unfinished jobs"),
            }
        }
        tracing::info!(peer = %net.peer_id(), ?roles, "node started");
        Ok(Infernet {
            config,
            roles,
            net,
            store,
            client,
            provider,
            node,
            payments,
            registry,
            tasks,
            metrics,
            _lock: lock,
        })
    }
}

/// A running node: a client of the network, and a provider when its config
/// says so.
pub struct Infernet {
    config: Config,
    roles: Vec<Role>,
    net: NetworkHandle,
    store: Arc<Store>,
    client: JobClient,
    provider: Option<ProviderHandler>,
    node: Option<Arc<Node>>,
    payments: Option<Arc<crate::payments::Payments>>,
    registry: Option<crate::registry::Registry>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Held while the node lives: one node per data dir.
    _lock: NodeLock,
}

impl Infernet {
    /// A node built from `config`; call [`InfernetBuilder::start`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new(config: Config) -> InfernetBuilder {
        InfernetBuilder {
            config,
            tweak: None,
            resume: true,
            on_load: None,
        }
    }

    /// Generates text from `prompt` on the network; returns the text, usage,
    /// price and the provider's signed result.
    pub async fn infer(
        &self,
        model: &str,
        prompt: &str,
        opts: InferOptions,
    ) -> Result<JobOutcome, ClientError> {
        self.client
            .submit(model, WireInput::Text(prompt.into()), &opts)
            .await
    }

    /// [`Infernet::infer`], streaming tokens as they are generated.
    pub async fn infer_stream(
        &self,
        model: &str,
        prompt: &str,
        opts: InferOptions,
    ) -> Result<JobStream, ClientError> {
        self.client
            .submit_streaming(model, WireInput::Text(prompt.into()), &opts)
            .await
    }

    /// Any job input (embeddings, tensors, token ids).
    pub async fn submit(
        &self,
        model: &str,
        input: WireInput,
        opts: InferOptions,
    ) -> Result<JobOutcome, ClientError> {
        self.client.submit(model, input, &opts).await
    }

    /// A batch of texts split across up to `max_shards` providers of
    /// `model` at once, each shard a job of its own (its share of the
    /// budget, verified under `opts`' policy, failed over as any job),
    /// merged back in order.
    pub async fn submit_sharded(
        &self,
        model: &str,
        texts: Vec<String>,
        opts: InferOptions,
        max_shards: usize,
    ) -> Result<ShardedOutcome, ClientError> {
        self.client
            .submit_sharded(model, texts, &opts, max_shards)
            .await
    }

    /// Greedy generation of `model` after `prompt` (`text` or `tokens`)
    /// on a pipeline of providers that each serve a span of its layers,
    /// for a model no single provider serves (see
    /// [`JobClient::generate_pipeline`]).
    pub async fn generate_pipeline(
        &self,
        model: &str,
        prompt: WireInput,
        opts: PipelineOptions,
    ) -> Result<PipelineOutcome, ClientError> {
        self.client.generate_pipeline(model, prompt, &opts).await
    }

    /// The job driver (resume, cancel).
    pub fn client(&self) -> &JobClient {
        &self.client
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.net.peer_id()
    }

    /// Addresses other nodes can bootstrap from (`.../p2p/<peer id>`).
    pub async fn dialable_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.net.dialable_addrs().await
    }

    /// The network handle (providers, adverts, metrics).
    pub fn network(&self) -> &NetworkHandle {
        &self.net
    }

    /// The node's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The node's payment adapters (`[[payment]]`), if any.
    pub fn payments(&self) -> Option<&Arc<crate::payments::Payments>> {
        self.payments.as_ref()
    }

    /// The local backends, when this node is a provider.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// The provider handler, when this node is a provider.
    pub fn provider(&self) -> Option<&ProviderHandler> {
        self.provider.as_ref()
    }

    /// What the bootstrap registry did (`None` without `[registry]`):
    /// registrations, rows accepted, rows ignored by why.
    pub fn registry_stats(&self) -> Option<crate::registry::RegistryStats> {
        self.registry.as_ref().map(|r| r.stats())
    }

    /// The roles in effect.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// This node's metrics registry (`GET /metrics` renders it).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The config it was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Peers this node knows, as stored.
    pub fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.store.peers().list()
    }

    /// `peer`'s reputation in this node's view now: verified outcomes,
    /// first-hand and attested by others, weighed (`verify::reputation`).
    pub fn reputation(
        &self,
        peer: &PeerId,
    ) -> Result<crate::verify::reputation::Score, StoreError> {
        let params = crate::verify::reputation::Params::from_config(&self.config.client.reputation);
        let scores = crate::verify::reputation::scores(
            &self.store,
            &self.net.peer_id().to_string(),
            &[peer.to_string()],
            &params,
            now_ms(),
        )?;
        Ok(scores
            .into_iter()
            .next()
            .unwrap_or_else(|| crate::verify::reputation::Score::stranger(&params)))
    }

    /// The newest jobs, as stored.
    pub fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        self.store.jobs().list(limit)
    }

    /// This node's escrows (pay, earn, stake), newest first, at most
    /// `limit`: what `infernet escrow list` shows.
    pub fn escrows(&self, limit: usize) -> Result<Vec<EscrowRecord>, StoreError> {
        self.store.escrows().list(limit)
    }

    /// Money per provider and currency (released, held, returned): what
    /// `infernet escrow earnings` shows.
    pub fn earnings(&self) -> Result<Vec<Earnings>, StoreError> {
        self.store.escrows().earnings()
    }

    /// Stops the background tasks and the swarm (open connections close;
    /// providers see this node leave).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.net.shutdown().await;
    }
}

/// The network settings a config asks for.
pub fn network_config(config: &Config) -> NetworkConfig {
    let mut n = NetworkConfig::new(&config.node.data_dir);
    let parse = |v: &[String]| {
        v.iter()
            .filter_map(|a| a.parse().ok())
            .collect::<Vec<Multiaddr>>()
    };
    if !config.node.listen.is_empty() {
        n.listen = parse(&config.node.listen);
    }
    n.bootstrap = parse(&config.node.bootstrap);
    n.mdns = config.node.mdns;
    n.advert_interval = Duration::from_secs(config.node.advert_interval_secs);
    // A non-streamed run is one request: it must outlive the run timeout.
    let run = Duration::from_millis(config.client.run_timeout_ms);
    n.handler_timeout = n.handler_timeout.max(run);
    n.request_timeout = n.request_timeout.max(run + Duration::from_secs(5));
    n
}

/// What a provider advertises: its models, a reference quote from its
/// pricing plugin (16 tokens in, 64 out), and how many jobs it runs at once.
/// With an arbiter's certificate, the stake advertised is the one it
/// holds; without, what the node locked itself (`infernet stake post`).
async fn advert_spec(
    node: Arc<Node>,
    store: Arc<Store>,
    stake_cert: Option<crate::p2p::verification::SignedStakeCert>,
    verifier: bool,
) -> Result<AdvertSpec, StartError> {
    let stake_cert = stake_cert.map(Box::new);
    blocking(move || {
        let stake = match &stake_cert {
            Some(c) => Some(c.payload.amount.clone()),
            None => posted_stake(&store)?,
        };
        let models = node.models();
        let quote = match (node.pricing(), models.first()) {
            (Some(p), Some(model)) => {
                let q = p
                    .quote(&crate::worlds::pricing::QuoteRequest {
                        model: model.clone(),
                        input_tokens: 16,
                        max_output_tokens: 64,
                        estimated_ms: 0,
                        queue_depth: 0,
                        load_permille: 0,
                    })
                    .map_err(|e| StartError::Pricing(e.to_string()))?;
                Money {
                    amount: q.price.amount,
                    currency: q.price.currency,
                }
            }
            _ => Money {
                amount: 0,
                currency: crate::jobs::provider::FREE_CURRENCY.into(),
            },
        };
        let capacity = node.capacity();
        Ok(AdvertSpec {
            models,
            quote,
            capacity,
            wit_version: crate::runtime::version::host_wit_version().to_string(),
            stake,
            stake_cert,
            proofs: node.proof_adverts(),
            verifier,
            untraced: node.untraced_models(),
        })
    })
    .await
}

/// The stake this node holds (`infernet stake post`): the sum of its funded
/// stakes in the currency of the largest one.
fn posted_stake(store: &Store) -> Result<Option<Money>, StartError> {
    let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
    for e in store.escrows().open()? {
        if e.kind == crate::store::EscrowKind::Stake && e.status == "funded" {
            let s = sums.entry(e.currency).or_default();
            *s = s.saturating_add(e.amount);
        }
    }
    Ok(sums
        .into_iter()
        .max_by_key(|(_, amount)| *amount)
        .map(|(currency, amount)| Money { amount, currency }))
}

/// Gives the swarm the addresses the store remembers, so a restarted node
/// can reach the providers of its unfinished jobs without rediscovering them.
async fn restore_addresses(net: &NetworkHandle, store: &Arc<Store>) {
    let s = store.clone();
    let peers = match tokio::task::spawn_blocking(move || s.peers().list()).await {
        Ok(Ok(peers)) => peers,
        Ok(Err(e)) => return tracing::warn!(error = %e, "cannot read known peers"),
        Err(e) => return tracing::warn!(error = %e, "cannot read known peers"),
    };
    for p in peers {
        let Ok(peer) = p.peer_id.parse::<PeerId>() else {
            continue;
        };
        for a in p.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            if net.add_address(peer, a).await.is_err() {
                return;
            }
        }
    }
}

/// Attestations kept that are not this node's own; past it, the oldest go.
const MAX_KEPT_ATTESTATIONS: usize = 200_000;

/// Keeps the `peers` table current from what the network sees, and the
/// `attestations` table from the gossip that passed the gate (with the
/// stakes adverts claim, certified when an arbiter in `arbiters` vouches
/// for them), pruned as their weight decays away.
async fn record_peers(
    net: NetworkHandle,
    store: Arc<Store>,
    params: crate::verify::reputation::Params,
    arbiters: Vec<String>,
) {
    let mut events = net.subscribe();
    let me = net.peer_id().to_string();
    let mut received = 0u64;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(skipped = n, "peer recorder lagged");
                continue;
            }
            Err(_) => return,
        };
        let store = store.clone();
        if matches!(event, NetworkEvent::AttestationReceived(_)) {
            received += 1;
        }
        let prune = (received % 256 == 1).then(|| (me.clone(), params.horizon(now_ms())));
        let arbiters = arbiters.clone();
        let write = move || match event {
            NetworkEvent::PeerIdentified {
                peer, listen_addrs, ..
            } => {
                let addrs: Vec<String> = listen_addrs.iter().map(|a| a.to_string()).collect();
                store.peers().seen(&peer.to_string(), &addrs, None)
            }
            NetworkEvent::PeerLatency { peer, rtt } => store
                .peers()
                .record_latency(&peer.to_string(), rtt.as_millis() as i64),
            NetworkEvent::AdvertReceived(a) => {
                store.peers().seen(&a.peer_id, &a.addrs, Some(&a.models))?;
                // The reputation counts only stake a trusted arbiter
                // certified; a bare claim is recorded as such.
                let now = u64::try_from(now_ms()).unwrap_or(0);
                let stake = match crate::verify::reputation::certified_stake(&a, &arbiters, now) {
                    Some(m) => Some((m.amount, m.currency, true)),
                    None => a.stake.clone().map(|m| (m.amount, m.currency, false)),
                };
                let stake = stake.as_ref().map(|(n, c, ok)| (*n, c.as_str(), *ok));
                store.attestations().set_stake(&a.peer_id, stake)
            }
            NetworkEvent::AttestationReceived(signed) => {
                if let Err(e) = crate::verify::reputation::record(&store, &signed, now_ms()) {
                    tracing::warn!(error = %e, "cannot keep attestation");
                }
                match prune {
                    Some((me, horizon)) => store
                        .attestations()
                        .prune(&me, horizon, MAX_KEPT_ATTESTATIONS)
                        .map(|_| ()),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        };
        match tokio::task::spawn_blocking(write).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record peer"),
            Err(e) => tracing::warn!(error = %e, "peer recorder worker failed"),
            Ok(Ok(())) => {}
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StartError> + Send + 'static,
) -> Result<T, StartError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StartError::Worker(e.to_string()))?
}

/// Loads the `[[payment]]` adapters (on the node's runtime when there is
/// one, else on a runtime of their own recording into the node's metrics).
async fn load_payments(
    config: &Config,
    runtime: Option<&crate::runtime::Runtime>,
    metrics: &Arc<crate::metrics::Metrics>,
    store: &Arc<Store>,
    key: &p2p::libp2p::identity::Keypair,
) -> Result<Option<Arc<crate::payments::Payments>>, StartError> {
    if config.payment.is_empty() {
        return Ok(None);
    }
    let runtime = match runtime {
        Some(r) => r.clone(),
        None => crate::runtime::Runtime::new(&config.node.data_dir.join("cache").join("compiled"))
            .map_err(|e| StartError::Payments(format!("cannot start the wasm engine: {e:#}")))?
            .with_metrics(metrics.clone()),
    };
    let (cfg, store, peer) = (
        config.clone(),
        store.clone(),
        key.public().to_peer_id().to_string(),
    );
    let payments = blocking(move || {
        crate::payments::Payments::load(&cfg, &runtime, &store, &peer)
            .map_err(|e| StartError::Payments(e.to_string()))
    })
    .await?;
    Ok(payments.map(Arc::new))
}

/// Sweeps escrows at start, then `every`: the client's (refunds,
/// expiries) and, on a provider, its earn rows.
async fn sweep_escrows(client: JobClient, provider: Option<ProviderHandler>, every: Duration) {
    loop {
        match client.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(changed = n, "escrow sweep"),
            Err(e) => tracing::warn!(error = %e, "escrow sweep failed"),
        }
        if let Some(a) = provider.as_ref().and_then(|p| p.arbiter()) {
            match tokio::task::spawn_blocking(move || a.resume()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(paid = n, "slash sweep"),
                Ok(Err(e)) => tracing::warn!(error = %e, "slash sweep failed"),
                Err(e) => tracing::warn!(error = %e, "slash sweep panicked"),
            }
        }
        if let Some(p) = provider.clone() {
            match tokio::task::spawn_blocking(move || p.sweep_earnings()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(changed = n, "earnings sweep"),
                Ok(Err(e)) => tracing::warn!(error = %e, "earnings sweep failed"),
                Err(e) => tracing::warn!(error = %e, "earnings sweep panicked"),
            }
        }
        tokio::time::sleep(every).await;
    }
}
