//! The event loop that owns the swarm, and the handle that talks to it.

use super::advert::{
    verify_advert_bytes, AdvertRejection, AdvertSpec, MetricsSnapshot, NetworkMetrics,
};
use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::codec::Frame;
use super::identity::load_or_create_identity;
use super::protocol::{
    encode, now_ms, Advert, ErrorCode, JobBody, JobMessage, SignedAdvert, ADVERT_TOPIC,
    KNOWN_PROTOCOL_VERSIONS, PROTOCOL_VERSION,
};
use super::{JobHandler, NetworkConfig, NetworkError};
use futures::future::BoxFuture;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    gossipsub, identify, kad, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol,
    Swarm,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// A type-erased [`JobHandler`], shareable with the event loop.
#[derive(Clone)]
pub struct SharedHandler(
    Arc<dyn Fn(PeerId, JobMessage) -> BoxFuture<'static, JobMessage> + Send + Sync>,
);

impl SharedHandler {
    /// Wraps a handler.
    pub fn new<H: JobHandler>(handler: H) -> SharedHandler {
        let h = Arc::new(handler);
        SharedHandler(Arc::new(move |from, msg| {
            let h = h.clone();
            Box::pin(async move { h.handle(from, msg).await })
        }))
    }
}

/// Something the network saw.
#[derive(Debug, Clone)]
pub enum NetworkEvent {
    /// A new listen address.
    Listening(Multiaddr),
    /// First connection to a peer.
    PeerConnected(PeerId),
    /// Last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer told us its addresses and protocols.
    PeerIdentified {
        /// Peer.
        peer: PeerId,
        /// Its listen addresses.
        listen_addrs: Vec<Multiaddr>,
        /// Its agent string.
        agent: String,
    },
    /// A ping round trip.
    PeerLatency {
        /// Peer.
        peer: PeerId,
        /// Round-trip time.
        rtt: Duration,
    },
    /// A valid advert arrived.
    AdvertReceived(Advert),
    /// An advert was dropped.
    AdvertRejected {
        /// The gossip peer that forwarded it.
        from: PeerId,
        /// Why.
        reason: AdvertRejection,
    },
    /// An inbound job stream was closed on a failure (malformed, oversized,
    /// timeout...).
    InboundJobFailure {
        /// Peer.
        peer: PeerId,
        /// Why, as logged.
        reason: String,
    },
}

/// A provider of a model as known to this node.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInfo {
    /// Provider.
    pub peer_id: PeerId,
    /// Known addresses.
    pub addrs: Vec<Multiaddr>,
    /// Its latest valid advert, if one was received.
    pub advert: Option<Advert>,
    /// Last ping round trip.
    pub latency: Option<Duration>,
    /// Found through a DHT provider record.
    pub via_dht: bool,
    /// Found through a gossiped advert.
    pub via_gossip: bool,
}

type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

enum Command {
    Dial {
        addr: Multiaddr,
        reply: Reply<PeerId>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    PublishAdvert {
        spec: AdvertSpec,
        reply: Reply<()>,
    },
    PublishSigned {
        advert: Box<SignedAdvert>,
        reply: Reply<()>,
    },
    ProvidersOf {
        model: String,
        reply: Reply<Vec<ProviderInfo>>,
    },
    SendJob {
        peer: PeerId,
        msg: Box<JobMessage>,
        reply: Reply<JobMessage>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Adverts {
        reply: oneshot::Sender<Vec<Advert>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cloneable handle on a running node's network. The loop stops when
/// [`NetworkHandle::shutdown`] is called or every handle is dropped.
#[derive(Clone)]
pub struct NetworkHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<NetworkEvent>,
    metrics: Arc<NetworkMetrics>,
}

/// The DHT key of a model's provider records.
pub fn model_key(model: &str) -> kad::RecordKey {
    kad::RecordKey::new(&format!("infernet/model/{model}"))
}

/// Starts a node: loads or creates the identity, builds the swarm, listens
/// on `config.listen` (returning once each listener has an address), dials
/// `config.bootstrap`, and spawns the event loop on the current tokio
/// runtime. `handler` answers inbound job requests; without one they get
/// `Error(NotAProvider)`.
pub async fn start(
    config: NetworkConfig,
    handler: Option<SharedHandler>,
) -> Result<NetworkHandle, NetworkError> {
    let key = load_or_create_identity(&config.data_dir)?;
    let peer_id = key.public().to_peer_id();
    let mut swarm = build_swarm(&key, &config)?;
    let topic = gossipsub::IdentTopic::new(ADVERT_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NetworkError::Transport(format!("subscribe {ADVERT_TOPIC}: {e}")))?;

    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetworkError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        listeners.insert(id);
    }

    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (events, _) = broadcast::channel(1024);
    let (resp_tx, resp_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(NetworkMetrics::default());
    let mut el = EventLoop {
        swarm,
        key,
        config: config.clone(),
        topic,
        handler,
        commands: cmd_rx,
        responses: resp_rx,
        response_tx: resp_tx,
        events: events.clone(),
        metrics: metrics.clone(),
        listen_addrs: Vec::new(),
        pending_dials: HashMap::new(),
        pending_requests: HashMap::new(),
        pending_providers: HashMap::new(),
        adverts: HashMap::new(),
        addr_book: HashMap::new(),
        latency: HashMap::new(),
        my_advert: None,
        provided: HashSet::new(),
        provide_dirty: false,
        last_provide: Instant::now(),
    };

    // Wait until every listener has an address, so `listen_addrs` is useful
    // as soon as `start` returns.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !listeners.is_empty() {
        let ev = tokio::time::timeout_at(deadline, el.swarm.select_next_some())
            .await
            .map_err(|_| NetworkError::Transport("no listen address after 10 s".into()))?;
        match &ev {
            SwarmEvent::NewListenAddr { listener_id, .. } => {
                listeners.remove(listener_id);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                return Err(NetworkError::Listen {
                    addr: format!("{listener_id:?}"),
                    reason: match reason {
                        Ok(()) => "closed".into(),
                        Err(e) => e.to_string(),
                    },
                });
            }
            _ => {}
        }
        el.on_swarm_event(ev);
    }

    for addr in config.bootstrap.clone() {
        if let Some(peer) = peer_of(&addr) {
            el.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, strip_p2p(&addr));
            el.addr_book.entry(peer).or_default().push(strip_p2p(&addr));
        }
        if let Err(e) = el.swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    if !config.bootstrap.is_empty() {
        let _ = el.swarm.behaviour_mut().kad.bootstrap();
    }

    tracing::info!(%peer_id, addrs = ?el.listen_addrs, "network started");
    tokio::spawn(el.run());
    Ok(NetworkHandle {
        peer_id,
        commands: cmd_tx,
        events,
        metrics,
    })
}

fn build_swarm(key: &Keypair, config: &NetworkConfig) -> Result<Swarm<Behaviour>, NetworkError> {
    let behaviour = Behaviour::new(key, config)?;
    let idle = config.idle_connection_timeout;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(move |_| behaviour)
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

impl NetworkHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Counters (adverts accepted/dropped by reason, job streams).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// A new receiver of [`NetworkEvent`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NetworkEvent> {
        self.events.subscribe()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetworkError::Closed)?;
        rx.await.map_err(|_| NetworkError::Closed)?
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetworkError::Closed)?;
        rx.await.map_err(|_| NetworkError::Closed)
    }

    /// Dials `addr` and returns the peer once connected (immediately when
    /// `addr` names a peer that is already connected).
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetworkError> {
        self.call(|reply| Command::Dial { addr, reply }).await
    }

    /// Remembers an address of `peer` (DHT routing and job dials).
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetworkError> {
        self.commands
            .send(Command::AddAddress { peer, addr })
            .await
            .map_err(|_| NetworkError::Closed)
    }

    /// Becomes a provider of `spec.models`: signs and gossips an advert now
    /// and every `advert_interval` (re-signed each time), and puts a DHT
    /// provider record per model. A later call replaces the advert (models
    /// dropped from it stop being provided). Succeeds even when no peer is
    /// subscribed yet; the advert goes out at the next interval.
    pub async fn publish_advert(&self, spec: AdvertSpec) -> Result<(), NetworkError> {
        self.call(|reply| Command::PublishAdvert { spec, reply })
            .await
    }

    /// Gossips an already-signed advert as-is (relaying; tests use it to
    /// inject forged ones). Not checked locally.
    pub async fn publish_signed_advert(&self, advert: SignedAdvert) -> Result<(), NetworkError> {
        self.call(|reply| Command::PublishSigned {
            advert: Box::new(advert),
            reply,
        })
        .await
    }

    /// Every other peer known to provide `model`: a DHT `get_providers`
    /// query (bounded by `providers_timeout`) merged with valid gossiped
    /// adverts. Sorted by peer id; never includes this node.
    pub async fn providers_of(&self, model: &str) -> Result<Vec<ProviderInfo>, NetworkError> {
        let model = model.to_string();
        self.call(|reply| Command::ProvidersOf { model, reply })
            .await
    }

    /// Sends `msg` to `peer` on `/infernet/job/1` and waits for the reply
    /// (bounded by `request_timeout`), dialing first if needed. A `Result`
    /// reply is checked: signed by `peer`, over this output; else
    /// [`NetworkError::BadSignature`].
    pub async fn send_job(
        &self,
        peer: PeerId,
        msg: JobMessage,
    ) -> Result<JobMessage, NetworkError> {
        self.call(|reply| Command::SendJob {
            peer,
            msg: Box::new(msg),
            reply,
        })
        .await
    }

    /// Current listen addresses.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// Listen addresses with `/p2p/<peer id>` appended, ready to dial.
    pub async fn dialable_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        let me = self.peer_id;
        Ok(self
            .listen_addrs()
            .await?
            .into_iter()
            .map(|a| a.with(Protocol::P2p(me)))
            .collect())
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetworkError> {
        self.ask(|reply| Command::ConnectedPeers { reply }).await
    }

    /// The latest valid advert of every peer heard from.
    pub async fn adverts(&self) -> Result<Vec<Advert>, NetworkError> {
        self.ask(|reply| Command::Adverts { reply }).await
    }

    /// Stops the loop and closes every connection; returns once done.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }
}

struct ProvidersQuery {
    model: String,
    found: HashSet<PeerId>,
    reply: Reply<Vec<ProviderInfo>>,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    key: Keypair,
    config: NetworkConfig,
    topic: gossipsub::IdentTopic,
    handler: Option<SharedHandler>,
    commands: mpsc::Receiver<Command>,
    responses: mpsc::UnboundedReceiver<(ResponseChannel<JobMessage>, JobMessage)>,
    response_tx: mpsc::UnboundedSender<(ResponseChannel<JobMessage>, JobMessage)>,
    events: broadcast::Sender<NetworkEvent>,
    metrics: Arc<NetworkMetrics>,
    listen_addrs: Vec<Multiaddr>,
    pending_dials: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    pending_requests: HashMap<OutboundRequestId, (PeerId, Reply<JobMessage>)>,
    pending_providers: HashMap<kad::QueryId, ProvidersQuery>,
    adverts: HashMap<PeerId, Advert>,
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    latency: HashMap<PeerId, Duration>,
    my_advert: Option<AdvertSpec>,
    provided: HashSet<String>,
    provide_dirty: bool,
    last_provide: Instant,
}

impl EventLoop {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.advert_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown_reply = loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    None => break None,
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                },
                Some((channel, resp)) = self.responses.recv() => {
                    if self.swarm.behaviour_mut().job.send_response(channel, resp).is_err() {
                        tracing::debug!("job response dropped: stream already closed or timed out");
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
        };
        let peer_id = *self.swarm.local_peer_id();
        drop(self);
        tracing::info!(%peer_id, "network stopped");
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn emit(&self, ev: NetworkEvent) {
        let _ = self.events.send(ev);
    }

    fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        let addr = strip_p2p(&addr);
        let list = self.addr_book.entry(peer).or_default();
        if !list.contains(&addr) {
            list.push(addr);
            if list.len() > 16 {
                list.remove(0);
            }
        }
    }

    // -- commands ------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => {
                if let Some(peer) = peer_of(&addr) {
                    if self.swarm.is_connected(&peer) {
                        let _ = reply.send(Ok(peer));
                        return;
                    }
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, strip_p2p(&addr));
                    self.remember(peer, addr.clone());
                }
                let opts = DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetworkError::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::AddAddress { peer, addr } => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, strip_p2p(&addr));
                self.remember(peer, addr);
            }
            Command::PublishAdvert { spec, reply } => {
                let wanted: HashSet<String> = spec.models.iter().cloned().collect();
                for gone in self
                    .provided
                    .difference(&wanted)
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .stop_providing(&model_key(&gone));
                    self.provided.remove(&gone);
                }
                self.my_advert = Some(spec);
                self.provide_all();
                let _ = reply.send(self.publish_own_advert());
            }
            Command::PublishSigned { advert, reply } => {
                let r = encode(&*advert)
                    .map_err(|e| NetworkError::Publish(e.to_string()))
                    .and_then(|b| self.publish(b));
                let _ = reply.send(r);
            }
            Command::ProvidersOf { model, reply } => {
                let qid = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(model_key(&model));
                self.pending_providers.insert(
                    qid,
                    ProvidersQuery {
                        model,
                        found: HashSet::new(),
                        reply,
                    },
                );
            }
            Command::SendJob { peer, msg, reply } => {
                if peer == *self.swarm.local_peer_id() {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer: peer.to_string(),
                        reason: "cannot send a job to this node itself".into(),
                    }));
                    return;
                }
                if !self.swarm.is_connected(&peer) {
                    if let Some(addrs) = self.addr_book.get(&peer).filter(|a| !a.is_empty()) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(addrs.clone())
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        if let Err(e) = self.swarm.dial(opts) {
                            tracing::debug!(%peer, error = %e, "dial before job request");
                        }
                    }
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .job
                    .send_request(&peer, Frame::Message(msg));
                self.pending_requests.insert(id, (peer, reply));
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Adverts { reply } => {
                let mut v: Vec<Advert> = self.adverts.values().cloned().collect();
                v.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(v);
            }
            Command::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn on_tick(&mut self) {
        if self.my_advert.is_none() {
            return;
        }
        if let Err(e) = self.publish_own_advert() {
            tracing::debug!(error = %e, "advert republish");
        }
        if self.provide_dirty && self.last_provide.elapsed() >= self.config.advert_interval {
            self.provide_all();
        }
    }

    fn provide_all(&mut self) {
        let Some(spec) = &self.my_advert else { return };
        for model in spec.models.clone() {
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .kad
                .start_providing(model_key(&model))
            {
                tracing::warn!(%model, error = %e, "cannot store provider record");
            }
            self.provided.insert(model);
        }
        self.provide_dirty = false;
        self.last_provide = Instant::now();
    }

    fn publish_own_advert(&mut self) -> Result<(), NetworkError> {
        let Some(spec) = &self.my_advert else {
            return Ok(());
        };
        let mut addrs: Vec<String> = self
            .swarm
            .external_addresses()
            .map(|a| a.to_string())
            .collect();
        addrs.extend(self.listen_addrs.iter().map(|a| a.to_string()));
        addrs.dedup();
        let advert = Advert {
            peer_id: self.swarm.local_peer_id().to_string(),
            addrs,
            models: spec.models.clone(),
            quote: spec.quote.clone(),
            capacity: spec.capacity,
            wit_version: spec.wit_version.clone(),
            protocol_version: PROTOCOL_VERSION,
            stake: spec.stake.clone(),
            timestamp_ms: now_ms(),
            proofs: spec.proofs.clone(),
        };
        let signed = SignedAdvert::sign(advert, &self.key)
            .map_err(|e| NetworkError::Publish(e.to_string()))?;
        let bytes = encode(&signed).map_err(|e| NetworkError::Publish(e.to_string()))?;
        self.publish(bytes)
    }

    fn publish(&mut self, bytes: Vec<u8>) -> Result<(), NetworkError> {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::debug!("advert not sent: no peer subscribed yet");
                Ok(())
            }
            Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(e) => Err(NetworkError::Publish(e.to_string())),
        }
    }

    fn finish_providers(&mut self, q: ProvidersQuery) {
        let me = *self.swarm.local_peer_id();
        let mut peers: HashSet<PeerId> = q.found.clone();
        // A gossip-only entry counts while its advert is fresh (a dead
        // provider's last advert would otherwise be listed forever).
        let fresh_after = now_ms().saturating_sub(self.config.advert_max_skew.as_millis() as u64);
        let gossip: HashSet<PeerId> = self
            .adverts
            .iter()
            .filter(|(_, a)| a.models.contains(&q.model) && a.timestamp_ms >= fresh_after)
            .map(|(p, _)| *p)
            .collect();
        peers.extend(gossip.iter().copied());
        peers.remove(&me);
        let mut out: Vec<ProviderInfo> = peers
            .into_iter()
            .map(|p| ProviderInfo {
                peer_id: p,
                addrs: self.addr_book.get(&p).cloned().unwrap_or_default(),
                advert: self.adverts.get(&p).cloned(),
                latency: self.latency.get(&p).copied(),
                via_dht: q.found.contains(&p),
                via_gossip: gossip.contains(&p),
            })
            .collect();
        out.sort_by_key(|i| i.peer_id.to_bytes());
        let _ = q.reply.send(Ok(out));
    }

    // -- swarm events ----------------------------------------------------------

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                self.emit(NetworkEvent::Listening(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                if endpoint.is_dialer() {
                    self.remember(peer_id, endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    tracing::debug!(%peer_id, "connected");
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, cause = ?cause, "disconnected");
                self.emit(NetworkEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some((addr, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetworkError::Dial {
                        addr: addr.to_string(),
                        reason: error.to_string(),
                    }));
                } else {
                    tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let kad_proto = StreamProtocol::new(KAD_PROTOCOL);
                let speaks_kad = info.protocols.contains(&kad_proto);
                for addr in &info.listen_addrs {
                    if speaks_kad {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                    self.remember(peer_id, addr.clone());
                }
                self.emit(NetworkEvent::PeerIdentified {
                    peer: peer_id,
                    listen_addrs: info.listen_addrs,
                    agent: info.agent_version,
                });
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.latency.insert(peer, rtt);
                self.emit(NetworkEvent::PeerLatency { peer, rtt });
            }
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Kad(ev) => self.on_kad_event(ev),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip_message(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Job(ev) => self.on_job_event(ev),
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.remember(peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            BehaviourEvent::Mdns(_) => {}
        }
    }

    fn on_kad_event(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer,
                addresses,
                ..
            } => {
                for a in addresses.iter() {
                    self.remember(peer, a.clone());
                }
                if is_new_peer {
                    self.provide_dirty = true;
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(res),
                step,
                ..
            } => {
                let Some(q) = self.pending_providers.get_mut(&id) else {
                    return;
                };
                let done = match res {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                        q.found.extend(providers);
                        step.last
                    }
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
                    Err(e) => {
                        tracing::debug!(model = %q.model, error = %e, "provider query ended");
                        true
                    }
                };
                if done {
                    if let Some(q) = self.pending_providers.remove(&id) {
                        self.finish_providers(q);
                    }
                }
            }
            kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(Err(e)),
                ..
            } => {
                tracing::debug!(error = %e, "provider record publication incomplete");
            }
            _ => {}
        }
    }

    fn on_gossip_message(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        if message.topic != self.topic.hash() {
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    &id,
                    &source,
                    gossipsub::MessageAcceptance::Ignore,
                );
            return;
        }
        let max_skew = self.config.advert_max_skew.as_millis() as u64;
        let verdict = verify_advert_bytes(&message.data, now_ms(), max_skew);
        let acceptance = match &verdict {
            Ok(_) => gossipsub::MessageAcceptance::Accept,
            Err(AdvertRejection::Stale { .. } | AdvertRejection::UnknownProtocol(_)) => {
                gossipsub::MessageAcceptance::Ignore
            }
            Err(_) => gossipsub::MessageAcceptance::Reject,
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        self.metrics.count_advert(verdict.as_ref().map(|_| ()));
        match verdict {
            Ok((signed, peer)) => {
                let advert = signed.payload;
                let newer = self
                    .adverts
                    .get(&peer)
                    .is_none_or(|old| old.timestamp_ms <= advert.timestamp_ms);
                if !newer {
                    return;
                }
                for a in &advert.addrs {
                    if let Ok(addr) = a.parse::<Multiaddr>() {
                        self.remember(peer, addr);
                    }
                }
                self.adverts.insert(peer, advert.clone());
                self.emit(NetworkEvent::AdvertReceived(advert));
            }
            Err(reason) => {
                tracing::warn!(from = %source, %reason, "advert dropped");
                self.emit(NetworkEvent::AdvertRejected {
                    from: source,
                    reason,
                });
            }
        }
    }

    /// Logs, counts and announces a job stream closed on `reason`.
    fn inbound_failure(&mut self, peer: PeerId, reason: String) {
        tracing::warn!(%peer, %reason, "job stream closed");
        self.metrics.job_inbound_failure();
        self.emit(NetworkEvent::InboundJobFailure { peer, reason });
    }

    fn on_job_event(&mut self, ev: request_response::Event<Frame, JobMessage>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: Frame::Invalid(reason),
                        channel,
                        ..
                    },
                ..
            } => {
                // Dropping the channel closes the stream unanswered.
                drop(channel);
                self.inbound_failure(peer, reason);
            }
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: Frame::Message(request),
                        channel,
                        ..
                    },
                ..
            } => {
                let request = *request;
                if let JobBody::Receipt(receipt) = &request.body {
                    let check = match receipt.verify() {
                        Ok(signer) if signer == peer => Ok(()),
                        Ok(signer) => Err(format!("receipt signed by {signer}, not by the sender")),
                        Err(e) => Err(format!("unsigned or badly signed receipt: {e}")),
                    };
                    if let Err(reason) = check {
                        drop(channel);
                        self.inbound_failure(peer, reason);
                        return;
                    }
                }
                if !KNOWN_PROTOCOL_VERSIONS.contains(&request.version) {
                    tracing::warn!(%peer, version = request.version, "job request with unsupported version");
                    self.metrics.job_rejected();
                    let reply = JobMessage::error(
                        request.job_id().map(String::from),
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol version {} not supported; this node speaks {PROTOCOL_VERSION}",
                            request.version
                        ),
                    );
                    let _ = self.swarm.behaviour_mut().job.send_response(channel, reply);
                    return;
                }
                let Some(handler) = self.handler.clone() else {
                    self.metrics.job_rejected();
                    let reply = JobMessage::error(
                        request.job_id().map(String::from),
                        ErrorCode::NotAProvider,
                        "this node does not serve jobs",
                    );
                    let _ = self.swarm.behaviour_mut().job.send_response(channel, reply);
                    return;
                };
                let tx = self.response_tx.clone();
                let limit = self.config.handler_timeout;
                let metrics = self.metrics.clone();
                tokio::spawn(async move {
                    let job_id = request.job_id().map(String::from);
                    let reply = match tokio::time::timeout(limit, (handler.0)(peer, request)).await
                    {
                        Ok(reply) => reply,
                        Err(_) => {
                            tracing::warn!(%peer, job = ?job_id, "job handler timed out");
                            JobMessage::error(
                                job_id,
                                ErrorCode::Timeout,
                                format!("handler exceeded {limit:?}"),
                            )
                        }
                    };
                    metrics.job_served();
                    let _ = tx.send((channel, reply));
                });
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, reply)) = self.pending_requests.remove(&request_id) else {
                    return;
                };
                let checked = match &response.body {
                    JobBody::Result { output, signed, .. } => match signed.verify_output(output) {
                        Ok(signer) if signer == peer => Ok(response),
                        Ok(signer) => Err(NetworkError::BadSignature {
                            peer: peer.to_string(),
                            reason: format!("result signed by {signer}, not by the provider"),
                        }),
                        Err(e) => Err(NetworkError::BadSignature {
                            peer: peer.to_string(),
                            reason: e.to_string(),
                        }),
                    },
                    _ => Ok(response),
                };
                if let Err(e) = &checked {
                    tracing::warn!(%peer, error = %e, "job result rejected");
                }
                let _ = reply.send(checked);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer: peer.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            // Omissions are ours (invalid frames), already counted.
            Event::InboundFailure {
                error: request_response::InboundFailure::ResponseOmission,
                ..
            } => {}
            Event::InboundFailure { peer, error, .. } => {
                self.inbound_failure(peer, error.to_string())
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
