//! The one task that owns the swarm: how it starts ([`start`]), and how it
//! answers commands from [`NetworkHandle`]s, swarm and behaviour events,
//! and its advert/provider-record timer (swarm events: [`events`];
//! gossiped adverts and attestations are checked there).

mod events;

use super::advert::{AdvertSpec, NetworkMetrics};
use super::attestation::{AttestationGate, ATTESTATION_TOPIC};
use super::behaviour::Behaviour;
use super::codec::Frame;
use super::handle::{
    model_key, Command, NetworkEvent, NetworkHandle, ProviderInfo, Reply, SharedHandler,
};
use super::identity::load_or_create_identity;
use super::protocol::{
    encode, now_ms, Advert, JobMessage, SignedAdvert, ADVERT_TOPIC, PROTOCOL_VERSION,
};
use super::{NetworkConfig, NetworkError};
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{gossipsub, kad, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

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
    let attestation_topic = gossipsub::IdentTopic::new(ATTESTATION_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&attestation_topic)
        .map_err(|e| NetworkError::Transport(format!("subscribe {ATTESTATION_TOPIC}: {e}")))?;

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
    // Every sender holds an in-flight permit, so this never fills past
    // `max_inflight_requests`.
    let (resp_tx, resp_rx) = mpsc::channel(config.bounds.max_inflight_requests.max(1));
    let metrics = Arc::new(NetworkMetrics::default());
    let mut el = EventLoop {
        swarm,
        key,
        config: config.clone(),
        topic,
        attestation_topic,
        attestations: AttestationGate::new(),
        handler,
        commands: cmd_rx,
        responses: resp_rx,
        response_tx: resp_tx,
        events: events.clone(),
        metrics: metrics.clone(),
        listen_addrs: Vec::new(),
        pending_dials: HashMap::new(),
        pending_requests: HashMap::new(),
        outbound_queue: HashMap::new(),
        pending_providers: HashMap::new(),
        adverts: HashMap::new(),
        addr_book: HashMap::new(),
        latency: HashMap::new(),
        inflight: Arc::new(tokio::sync::Semaphore::new(
            config.bounds.max_inflight_requests,
        )),
        inflight_per_peer: Arc::new(std::sync::Mutex::new(HashMap::new())),
        gossip_rate: HashMap::new(),
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
        .with_other_transport(|key| websocket(key))
        .map_err(|e| NetworkError::Transport(format!("websocket: {e}")))?
        .with_behaviour(move |_| behaviour)
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// WebSocket over TCP (`/tcp/<port>/ws` listen addresses), Noise and Yamux
/// on top: the transport a browser client can dial. No DNS: addresses are
/// IPs, as for plain TCP.
fn websocket(
    key: &Keypair,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    use libp2p::core::upgrade::Version;
    use libp2p::Transport;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    Ok(libp2p_websocket::Config::new(tcp)
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// One of our job requests waiting its turn, where its answer goes, and
/// whether it goes on `/infernet/verify/1`.
type Outbound = (Box<JobMessage>, Reply<JobMessage>, bool);

/// An outbound request, by the behaviour that sent it (each numbers its
/// own requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RequestKey {
    pub verify: bool,
    pub id: OutboundRequestId,
}

/// One in-flight job request: releases its global and per-peer slots
/// when the handler task ends, however it ends.
struct InflightPermit {
    _global: tokio::sync::OwnedSemaphorePermit,
    peer: PeerId,
    per_peer: Arc<std::sync::Mutex<HashMap<PeerId, usize>>>,
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        if let Ok(mut per) = self.per_peer.lock() {
            if let Some(n) = per.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per.remove(&self.peer);
                }
            }
        }
    }
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
    /// `infernet/attestations/1`, and its gate (rate, dedup).
    attestation_topic: gossipsub::IdentTopic,
    attestations: AttestationGate,
    handler: Option<SharedHandler>,
    commands: mpsc::Receiver<Command>,
    responses: mpsc::Receiver<(ResponseChannel<JobMessage>, JobMessage)>,
    response_tx: mpsc::Sender<(ResponseChannel<JobMessage>, JobMessage)>,
    events: broadcast::Sender<NetworkEvent>,
    metrics: Arc<NetworkMetrics>,
    listen_addrs: Vec<Multiaddr>,
    pending_dials: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    pending_requests: HashMap<RequestKey, (PeerId, Reply<JobMessage>)>,
    /// Our own job requests waiting their turn: at most
    /// `max_inflight_per_peer` go to one peer at once, the bound a provider
    /// with default settings serves one peer with.
    outbound_queue: HashMap<PeerId, std::collections::VecDeque<Outbound>>,
    pending_providers: HashMap<kad::QueryId, ProvidersQuery>,
    adverts: HashMap<PeerId, Advert>,
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    latency: HashMap<PeerId, Duration>,
    /// Job requests being handled (all peers).
    inflight: Arc<tokio::sync::Semaphore>,
    /// Job requests being handled, per peer (entries removed at zero).
    inflight_per_peer: Arc<std::sync::Mutex<HashMap<PeerId, usize>>>,
    /// Gossip messages per propagation source in the current second.
    gossip_rate: HashMap<PeerId, (Instant, u32)>,
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

    /// A permit to handle one more job request from `peer`, or `None` when
    /// it (or everyone together) is at the in-flight bound.
    fn admit_request(&self, peer: PeerId) -> Option<InflightPermit> {
        let global = self.inflight.clone().try_acquire_owned().ok()?;
        let mut per = self.inflight_per_peer.lock().ok()?;
        let n = per.entry(peer).or_insert(0);
        if *n >= self.config.bounds.max_inflight_per_peer {
            return None;
        }
        *n += 1;
        Some(InflightPermit {
            _global: global,
            peer,
            per_peer: self.inflight_per_peer.clone(),
        })
    }

    /// Sends queued requests to `peer` while it has fewer than
    /// `max_inflight_per_peer` of ours in flight.
    pub(super) fn send_queued(&mut self, peer: PeerId) {
        let b = &self.config.bounds;
        let limit = b
            .max_inflight_per_peer
            .min(b.max_streams_per_connection)
            .max(1);
        loop {
            let inflight = self
                .pending_requests
                .values()
                .filter(|(p, _)| *p == peer)
                .count();
            if inflight >= limit {
                return;
            }
            let Some(queue) = self.outbound_queue.get_mut(&peer) else {
                return;
            };
            let Some((msg, reply, verify)) = queue.pop_front() else {
                self.outbound_queue.remove(&peer);
                return;
            };
            if reply.is_closed() {
                continue;
            }
            let behaviour = self.swarm.behaviour_mut();
            let rr = if verify {
                &mut behaviour.verify
            } else {
                &mut behaviour.job
            };
            let id = rr.send_request(&peer, Frame::Message(msg));
            self.pending_requests
                .insert(RequestKey { verify, id }, (peer, reply));
        }
    }

    /// Whether one more gossip message from `source` fits its rate.
    fn gossip_allowed(&mut self, source: PeerId) -> bool {
        let now = Instant::now();
        if self.gossip_rate.len() >= self.config.bounds.max_known_peers {
            self.gossip_rate
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let entry = self.gossip_rate.entry(source).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.config.bounds.max_gossip_per_peer_per_sec
    }

    /// Makes room for `peer` in the peer maps: past `max_known_peers`,
    /// forgets the peer with the oldest advert that is not connected (or,
    /// with no advert, any unconnected peer).
    fn bound_known_peers(&mut self, peer: &PeerId) {
        let max = self.config.bounds.max_known_peers;
        while self.addr_book.len() >= max || self.adverts.len() >= max {
            if self.addr_book.contains_key(peer) && self.adverts.len() < max {
                return;
            }
            let victim = self
                .adverts
                .iter()
                .filter(|(p, _)| *p != peer && !self.swarm.is_connected(p))
                .min_by_key(|(_, a)| a.timestamp_ms)
                .map(|(p, _)| *p)
                .or_else(|| {
                    self.addr_book
                        .keys()
                        .find(|p| *p != peer && !self.swarm.is_connected(p))
                        .copied()
                });
            let Some(victim) = victim else { return };
            self.adverts.remove(&victim);
            self.addr_book.remove(&victim);
            self.latency.remove(&victim);
        }
    }

    fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        self.bound_known_peers(&peer);
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
            Command::PublishAttestation { attestation, reply } => {
                let topic = self.attestation_topic.clone();
                let r = encode(&*attestation)
                    .map_err(|e| NetworkError::Publish(e.to_string()))
                    .and_then(|b| self.publish_on(topic, b));
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
            Command::SendJob {
                peer,
                msg,
                reply,
                verify,
            } => {
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
                self.outbound_queue
                    .entry(peer)
                    .or_default()
                    .push_back((msg, reply, verify));
                self.send_queued(peer);
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
            stake_cert: spec.stake_cert.clone(),
            timestamp_ms: now_ms(),
            proofs: spec.proofs.clone(),
            verifier: spec.verifier,
            untraced: spec.untraced.clone(),
        };
        let signed = SignedAdvert::sign(advert, &self.key)
            .map_err(|e| NetworkError::Publish(e.to_string()))?;
        let bytes = encode(&signed).map_err(|e| NetworkError::Publish(e.to_string()))?;
        self.publish(bytes)
    }

    fn publish(&mut self, bytes: Vec<u8>) -> Result<(), NetworkError> {
        self.publish_on(self.topic.clone(), bytes)
    }

    fn publish_on(
        &mut self,
        topic: gossipsub::IdentTopic,
        bytes: Vec<u8>,
    ) -> Result<(), NetworkError> {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), bytes)
        {
            Ok(_) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::debug!(%topic, "not sent: no peer subscribed yet");
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
}
