//! The composed libp2p behaviour of a node.

use super::codec::JobCodec;
use super::protocol::JOB_PROTOCOL;
use super::{NetworkConfig, NetworkError};
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    connection_limits, gossipsub, identify, kad, mdns, ping, request_response, StreamProtocol,
};

/// Kademlia protocol name: a DHT of Infernet nodes only, not the IPFS one.
pub const KAD_PROTOCOL: &str = "/infernet/kad/1";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/infernet/id/1";

/// Everything a node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection limits (total, per peer, pending): denied before any
    /// other behaviour sees the connection.
    pub limits: connection_limits::Behaviour,
    /// Exchange listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// Liveness and round-trip time.
    pub ping: ping::Behaviour,
    /// DHT: provider records per model id.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Provider adverts and verifier attestations.
    pub gossipsub: gossipsub::Behaviour,
    /// `/infernet/job/2`.
    pub job: request_response::Behaviour<JobCodec>,
    pub verify: request_response::Behaviour<JobCodec>,
    /// LAN discovery, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    /// Builds the behaviour for `key` from `cfg`.
    pub fn new(key: &Keypair, cfg: &NetworkConfig) -> Result<Behaviour, NetworkError> {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("infernet/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );
        let ping = ping::Behaviour::new(ping::Config::new());

        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_cfg.set_query_timeout(cfg.providers_timeout);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        if cfg.kad_server {
            // Without this a node with no confirmed external address (any
            // loopback or LAN setup) stays a DHT client and answers nothing.
            kad.set_mode(Some(kad::Mode::Server));
        }

        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(cfg.gossip_heartbeat)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(64 * 1024)
            .build()
            .map_err(|e| NetworkError::Transport(format!("gossipsub config: {e}")))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_cfg,
        )
        .map_err(|e| NetworkError::Transport(format!("gossipsub: {e}")))?;
        // Peer scoring: a peer whose adverts fail validation (rejected:
        // bad signature, wrong key, malformed) loses score and, past the
        // graylist threshold, is ignored entirely.
        // The same on the attestation topic: forged, oversized or relayed
        // attestations cost their forwarder score.
        let mut score = gossipsub::PeerScoreParams::default();
        for topic in [
            super::protocol::ADVERT_TOPIC,
            super::attestation::ATTESTATION_TOPIC,
        ] {
            score.topics.insert(
                gossipsub::IdentTopic::new(topic).hash(),
                gossipsub::TopicScoreParams {
                    invalid_message_deliveries_weight: -10.0,
                    invalid_message_deliveries_decay: 0.9,
                    ..gossipsub::TopicScoreParams::default()
                },
            );
        }
        gossipsub
            .with_peer_score(score, gossipsub::PeerScoreThresholds::default())
            .map_err(|e| NetworkError::Transport(format!("gossipsub scoring: {e}")))?;

        let b = &cfg.bounds;
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(b.max_connections))
                .with_max_established_per_peer(Some(b.max_connections_per_peer))
                .with_max_pending_incoming(Some(b.max_pending_incoming)),
        );

        let job = request_response::Behaviour::with_codec(
            JobCodec {
                max_request_bytes: cfg.max_request_bytes,
                max_response_bytes: cfg.max_response_bytes,
            },
            [(
                StreamProtocol::new(JOB_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(cfg.request_timeout)
                .with_max_concurrent_streams(cfg.bounds.max_streams_per_connection),
        );
        let verify = request_response::Behaviour::with_codec(
            JobCodec {
                max_request_bytes: cfg.max_request_bytes,
                max_response_bytes: cfg.max_response_bytes,
            },
            [(
                StreamProtocol::new(super::verification::VERIFY_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(cfg.request_timeout)
                .with_max_concurrent_streams(cfg.bounds.max_streams_per_connection),
        );

        let mdns = if cfg.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| NetworkError::Transport(format!("mdns: {e}")))?,
            )
        } else {
            None
        };

        Ok(Behaviour {
            limits,
            identify,
            ping,
            kad,
            gossipsub,
            job,
            verify,
            mdns: Toggle::from(mdns),
        })
    }
}
