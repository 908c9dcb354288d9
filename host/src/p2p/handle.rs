//! The handle callers hold on a running network: commands go in over a
//! channel to the event loop ([`super::event_loop`]), replies come back on
//! oneshots, events go out on a broadcast.

use super::advert::{AdvertRejection, AdvertSpec, MetricsSnapshot, NetworkMetrics};
use super::attestation::{AttestationRejection, SignedAttestation};
use super::protocol::{Advert, JobMessage, SignedAdvert};
use super::{JobHandler, NetworkError};
use futures::future::BoxFuture;
use libp2p::multiaddr::Protocol;
use libp2p::{kad, Multiaddr, PeerId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// A type-erased [`JobHandler`], shareable with the event loop.
#[derive(Clone)]
pub struct SharedHandler(
    pub(super) Arc<dyn Fn(PeerId, JobMessage) -> BoxFuture<'static, JobMessage> + Send + Sync>,
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
    /// An attestation passed the gate (`p2p::attestation`): signed by its
    /// attester, who published it, fresh, the first of its (attester, job).
    /// What it is worth is the reputation's business.
    AttestationReceived(Box<SignedAttestation>),
    /// An attestation was dropped.
    AttestationRejected {
        /// The gossip peer that forwarded it.
        from: PeerId,
        /// Why.
        reason: AttestationRejection,
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

pub(super) type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

/// What a handle asks of the event loop.
pub(super) enum Command {
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
    PublishAttestation {
        attestation: Box<SignedAttestation>,
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
        /// On `/infernet/verify/1` rather than the job protocol.
        verify: bool,
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
    pub(super) peer_id: PeerId,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) events: broadcast::Sender<NetworkEvent>,
    pub(super) metrics: Arc<NetworkMetrics>,
}

/// The DHT key of a model's provider records.
pub fn model_key(model: &str) -> kad::RecordKey {
    kad::RecordKey::new(&model_multihash(model))
}

/// The multihash a model's DHT key is made of: sha2-256 (code 0x12, 32
/// bytes) of `infernet/model/<id>`, so CID-based Kademlia clients can ask
/// for it as CIDv1 raw (PROTOCOL.md §6).
pub fn model_multihash(model: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = vec![0x12, 0x20];
    out.extend_from_slice(&Sha256::digest(format!("infernet/model/{model}")));
    out
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

    /// Gossips `attestation` on `infernet/attestations/1` as it is (its
    /// attester should be this node: receivers refuse one published by
    /// anyone else; tests use that to inject bad ones). Succeeds when no
    /// peer is subscribed (nothing is sent then).
    pub async fn publish_attestation(
        &self,
        attestation: SignedAttestation,
    ) -> Result<(), NetworkError> {
        self.call(|reply| Command::PublishAttestation {
            attestation: Box::new(attestation),
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

    /// Sends `msg` to `peer` on `/infernet/job/2` and waits for the reply
    /// (bounded by `request_timeout`), dialing first if needed. A `Result`
    /// reply is checked: signed by `peer`, over this output; else
    /// [`NetworkError::BadSignature`].
    pub async fn send_job(
        &self,
        peer: PeerId,
        msg: JobMessage,
    ) -> Result<JobMessage, NetworkError> {
        self.send(peer, msg, false).await
    }

    /// Sends a `/infernet/verify/1` message (a trace question, a dispute)
    /// to `peer` and waits for the answer.
    pub async fn verify_request(
        &self,
        peer: PeerId,
        msg: JobMessage,
    ) -> Result<JobMessage, NetworkError> {
        self.send(peer, msg, true).await
    }

    async fn send(
        &self,
        peer: PeerId,
        msg: JobMessage,
        verify: bool,
    ) -> Result<JobMessage, NetworkError> {
        self.call(|reply| Command::SendJob {
            peer,
            msg: Box::new(msg),
            reply,
            verify,
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
