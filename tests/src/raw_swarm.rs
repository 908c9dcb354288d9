//! A raw job-protocol peer: a swarm whose request-response codec writes
//! and reads bytes exactly as given (no framing, no CBOR), for tests that
//! send what no honest node would (malformed frames, floods of streams).

use infernet_host::p2p::libp2p::futures::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt,
};
use infernet_host::p2p::libp2p::request_response::{self, ProtocolSupport};
use infernet_host::p2p::libp2p::swarm::SwarmEvent;
use infernet_host::p2p::libp2p::{noise, tcp, yamux, StreamProtocol, Swarm, SwarmBuilder};
use infernet_host::p2p::protocol::JOB_PROTOCOL;
use infernet_host::p2p::PeerId;
use std::io;
use std::time::Duration;

/// Everything until the other side closes (16 MiB at most).
async fn read_all<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    io.take(16 << 20).read_to_end(&mut v).await?;
    Ok(v)
}

/// Bytes in, bytes out.
#[derive(Clone, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_all(io).await
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_all(io).await
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await
    }
}

/// A swarm speaking [`RawCodec`] on the job protocol.
pub type RawSwarm = Swarm<request_response::Behaviour<RawCodec>>;

/// A raw swarm with a 3 s request timeout and at most `streams` concurrent
/// streams per connection.
pub fn raw_swarm_with(streams: usize) -> RawSwarm {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(StreamProtocol::new(JOB_PROTOCOL), ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(3))
                    .with_max_concurrent_streams(streams),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// A raw swarm with request-response's default stream limit.
pub fn raw_swarm() -> RawSwarm {
    raw_swarm_with(100)
}

/// Sends `bytes` and drives the raw swarm until the exchange ends:
/// `Ok(response bytes)` or `Err(failure text)`.
pub async fn raw_request(
    swarm: &mut RawSwarm,
    peer: PeerId,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let id = swarm.behaviour_mut().send_request(&peer, bytes);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .expect("raw exchange timed out");
        match ev {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) if request_id == id => return Ok(response),
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) if request_id == id => return Err(error.to_string()),
            _ => {}
        }
    }
}
