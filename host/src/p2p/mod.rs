//! The network layer: a rust-libp2p swarm on tokio (TCP and WebSocket with
//! Noise + Yamux, QUIC, identify, ping, Kademlia, gossipsub,
//! request-response and optional mDNS) owned by one event-loop task. Callers talk to it through a cloneable
//! [`NetworkHandle`] (commands in over an mpsc channel, replies on oneshots)
//! and watch it through a broadcast of [`NetworkEvent`]s. Providers announce
//! themselves with signed adverts on gossipsub topic `infernet/providers/2`
//! and a Kademlia provider record per model id; verifiers gossip signed
//! attestations of checked results on `infernet/attestations/1`
//! ([`attestation`]); clients find them with
//! [`NetworkHandle::providers_of`] and exchange [`JobMessage`]s on
//! `/infernet/job/2`, whose inbound side is answered by a [`JobHandler`]
//! spawned per request so the loop never blocks. Wire types are in
//! [`protocol`], CBOR and exact-bytes values in [`cbor`], signed envelopes
//! in [`signed`], framing in [`codec`]; `docs/PROTOCOL.md` specifies them; the identity key persists as `identity.key` in the
//! data dir. This module never calls `worlds`: the job layer plugs a handler
//! in and drives the lifecycle.

pub mod advert;
pub mod attestation;
pub mod behaviour;
pub mod cbor;
pub mod codec;
mod event_loop;
mod handle;
pub mod identity;
pub mod protocol;
pub mod signed;
pub mod verification;

pub use advert::{AdvertRejection, AdvertSpec, MetricsSnapshot, NetworkMetrics};
pub use attestation::{
    Attestation, AttestationRejection, Outcome as AttestedOutcome, SignedAttestation,
    ATTESTATION_TOPIC,
};
pub use event_loop::start;
pub use handle::{
    model_key, model_multihash, NetworkEvent, NetworkHandle, ProviderInfo, SharedHandler,
};
pub use identity::{load_or_create_identity, IDENTITY_FILE};
pub use protocol::{
    Advert, BackendRef, ErrorCode, JobBody, JobMessage, Money, ReceiptBody, ResultBody, Signed,
    SignedAdvert, SignedReceipt, SignedResult, Usage, WireError, WireInput, WireOutput,
};

/// The libp2p crate this module is built on (peer ids, multiaddrs, keys).
pub use libp2p;
pub use libp2p::{Multiaddr, PeerId};

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Answers inbound `/infernet/job/2` requests on a provider. Called on its
/// own task per request, bounded by [`NetworkConfig::handler_timeout`] (a
/// timeout replies `Error(Timeout)`). Requests with an unknown `version` never
/// reach it.
pub trait JobHandler: Send + Sync + 'static {
    /// The reply to `msg` from peer `from`.
    fn handle(&self, from: PeerId, msg: JobMessage) -> impl Future<Output = JobMessage> + Send;
}

/// Network settings. [`NetworkConfig::new`] gives production defaults;
/// [`NetworkConfig::loopback`] a TCP-only 127.0.0.1 node for tests.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Where `identity.key` lives.
    pub data_dir: PathBuf,
    /// Addresses to listen on (port 0 picks one).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start, `/ip4/../tcp/../p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Answer DHT queries even without a confirmed external address.
    pub kad_server: bool,
    /// How often a provider re-signs and republishes its advert.
    pub advert_interval: Duration,
    /// Tolerated clock difference on received adverts.
    pub advert_max_skew: Duration,
    /// Bound on one job request/response exchange, both directions.
    pub request_timeout: Duration,
    /// Bound on the [`JobHandler`] for one request (keep below `request_timeout`).
    pub handler_timeout: Duration,
    /// Bound on a DHT query ([`NetworkHandle::providers_of`]).
    pub providers_timeout: Duration,
    /// Largest accepted job request.
    pub max_request_bytes: usize,
    /// Largest accepted job response.
    pub max_response_bytes: usize,
    /// Close connections idle this long.
    pub idle_connection_timeout: Duration,
    /// Gossipsub heartbeat.
    pub gossip_heartbeat: Duration,
    /// Bounds that keep one peer, or a flood of cheap identities, from
    /// exhausting the node (PROTOCOL.md §9).
    pub bounds: PeerBounds,
}

/// What any peer, or all of them together, may hold of this node.
#[derive(Debug, Clone)]
pub struct PeerBounds {
    /// Established connections, all peers.
    pub max_connections: u32,
    /// Established connections per peer.
    pub max_connections_per_peer: u32,
    /// Incoming connections still handshaking.
    pub max_pending_incoming: u32,
    /// Concurrent job streams on one connection (request-response).
    pub max_streams_per_connection: usize,
    /// Job requests being handled at once, all peers; past it: `Busy`.
    pub max_inflight_requests: usize,
    /// Job requests being handled at once for one peer; past it: `Busy`.
    pub max_inflight_per_peer: usize,
    /// Peers remembered (addresses, adverts, latency); the stalest are
    /// forgotten first.
    pub max_known_peers: usize,
    /// Gossip messages accepted from one propagation source per second;
    /// more are ignored unread.
    pub max_gossip_per_peer_per_sec: u32,
}

impl Default for PeerBounds {
    fn default() -> Self {
        PeerBounds {
            max_connections: 512,
            max_connections_per_peer: 4,
            max_pending_incoming: 64,
            max_streams_per_connection: 16,
            max_inflight_requests: 64,
            max_inflight_per_peer: 8,
            max_known_peers: 1024,
            max_gossip_per_peer_per_sec: 20,
        }
    }
}

impl NetworkConfig {
    /// Defaults: listen on all interfaces (TCP and QUIC, random ports), no
    /// bootstrap, mDNS off.
    pub fn new(data_dir: impl Into<PathBuf>) -> NetworkConfig {
        NetworkConfig {
            data_dir: data_dir.into(),
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: vec![],
            mdns: false,
            kad_server: true,
            advert_interval: Duration::from_secs(30),
            advert_max_skew: Duration::from_millis(advert::DEFAULT_MAX_SKEW_MS),
            request_timeout: Duration::from_secs(120),
            handler_timeout: Duration::from_secs(110),
            providers_timeout: Duration::from_secs(10),
            max_request_bytes: protocol::MAX_REQUEST_BYTES,
            max_response_bytes: protocol::MAX_RESPONSE_BYTES,
            idle_connection_timeout: Duration::from_secs(120),
            gossip_heartbeat: Duration::from_secs(1),
            bounds: PeerBounds::default(),
        }
    }

    /// A loopback-only TCP node with short intervals, for tests and local
    /// networks.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> NetworkConfig {
        NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            advert_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(25),
            providers_timeout: Duration::from_secs(5),
            gossip_heartbeat: Duration::from_millis(200),
            ..NetworkConfig::new(data_dir)
        }
    }
}

/// What went wrong in the network layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The identity key could not be read or written.
    #[error("identity key: {0}")]
    Identity(String),
    /// Transport or behaviour setup failed.
    #[error("transport: {0}")]
    Transport(String),
    /// Could not listen on an address.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A dial failed.
    #[error("dial {addr}: {reason}")]
    Dial {
        /// Address or peer.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A job request failed (timeout, connection closed, unsupported, I/O).
    #[error("job request to {peer}: {reason}")]
    Request {
        /// Peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A response carried a result whose signature or output hash is wrong.
    #[error("bad signed result from {peer}: {reason}")]
    BadSignature {
        /// Peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The advert could not be signed or published.
    #[error("publish: {0}")]
    Publish(String),
    /// The event loop has stopped.
    #[error("the network has shut down")]
    Closed,
}
