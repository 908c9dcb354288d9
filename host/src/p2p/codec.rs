//! The `/infernet/job/2` stream codec. A frame is an unsigned LEB128 varint
//! of the body's length, then the body: one CBOR [`JobMessage`]. One frame
//! per direction per stream; the writer then closes its side
//! (PROTOCOL.md §3). Reads are capped (1 MiB requests, 8 MiB responses by
//! default; a larger declared length is refused before any of the body is
//! read) and decoding is strict (one item, no trailing bytes, bounded
//! nesting). An inbound request that breaks a rule is read as
//! [`Frame::Invalid`] with the reason, which the event loop answers with an
//! `Error(InvalidRequest)` frame the sender can read. A bad response fails
//! the outbound request with an `InvalidData` error that says why.

use super::protocol::{
    decode, encode, CodecError, JobMessage, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;

/// An inbound request as read off a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A well-formed message.
    Message(Box<JobMessage>),
    /// Bytes that are not one (too large, not CBOR, wrong shape), and why.
    /// Never written: writing it is an error.
    Invalid(String),
}

/// Size-capped CBOR codec for [`JobMessage`]s.
#[derive(Debug, Clone, Copy)]
pub struct JobCodec {
    /// Largest accepted request, in bytes.
    pub max_request_bytes: usize,
    /// Largest accepted response, in bytes.
    pub max_response_bytes: usize,
}

impl Default for JobCodec {
    fn default() -> Self {
        JobCodec {
            max_request_bytes: MAX_REQUEST_BYTES,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The longest reason an invalid frame is logged or answered with: decode
/// errors quote what the peer sent (an unknown variant, say), which may be
/// as long as the frame.
pub const MAX_REASON_CHARS: usize = 256;

/// `reason` cut to [`MAX_REASON_CHARS`] characters.
fn clip(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &reason[..at], reason.len()),
        None => reason.to_string(),
    }
}

/// Longest varint accepted: 4 bytes hold lengths up to 256 MiB, far above
/// any cap; more is malformed.
const MAX_VARINT_BYTES: usize = 4;

/// `n` as an unsigned LEB128 varint.
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `body` behind its varint length: one frame.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = varint(body.len());
    out.extend_from_slice(body);
    out
}

async fn read_varint<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<usize> {
    let mut n = 0usize;
    for i in 0..MAX_VARINT_BYTES {
        let mut byte = [0u8; 1];
        if io.read(&mut byte).await? == 0 {
            return Err(invalid(if i == 0 {
                "empty stream: expected a varint length and a CBOR message".to_string()
            } else {
                "stream ended inside the varint length".to_string()
            }));
        }
        n |= ((byte[0] & 0x7f) as usize) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(invalid(format!(
        "malformed frame: length varint longer than {MAX_VARINT_BYTES} bytes \
         (frames are an unsigned varint length, then one CBOR message)"
    )))
}

/// Reads one frame's body, refusing a declared length over `max` before
/// reading any of it.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let len = read_varint(io).await?;
    if len > max {
        return Err(invalid(CodecError::TooLarge { size: len, max }));
    }
    if len == 0 {
        return Err(invalid("malformed frame: zero-length message"));
    }
    // Grown as bytes arrive: a declared length reserves nothing.
    let mut buf = Vec::new();
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(invalid(format!(
            "malformed frame: declared {len} bytes, the stream ended after {} \
             (frames are an unsigned varint length, then one CBOR message)",
            buf.len()
        )));
    }
    Ok(buf)
}

async fn read_message<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<JobMessage> {
    let body = read_frame(io, max).await?;
    decode(&body).map_err(invalid)
}

async fn write_message<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    msg: &JobMessage,
    max: usize,
) -> io::Result<()> {
    let body = encode(msg).map_err(invalid)?;
    if body.len() > max {
        return Err(invalid(CodecError::TooLarge {
            size: body.len(),
            max,
        }));
    }
    io.write_all(&frame(&body)).await
}

impl libp2p::request_response::Codec for JobCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = JobMessage;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_message(io, self.max_request_bytes).await {
            Ok(msg) => Ok(Frame::Message(Box::new(msg))),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Ok(Frame::Invalid(clip(&e.to_string())))
            }
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<JobMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, self.max_response_bytes)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => invalid(clip(&e.to_string())),
                _ => e,
            })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Frame::Message(msg) => write_message(io, &msg, self.max_request_bytes).await,
            Frame::Invalid(why) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to send an invalid frame: {why}"),
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: JobMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res, self.max_response_bytes).await?;
        io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::protocol::encode;
    use libp2p::request_response::Codec;

    #[test]
    fn an_invalid_frame_quoting_the_peer_is_clipped_before_it_is_logged() {
        use std::collections::BTreeMap;
        // {"version": 2, "body": {"xxx…10 KB": {}}}: serde's error quotes
        // the unknown variant in full.
        #[derive(serde::Serialize)]
        struct Msg {
            version: u16,
            body: BTreeMap<String, BTreeMap<String, u8>>,
        }
        let long = "x".repeat(10_000);
        let body = encode(&Msg {
            version: 2,
            body: BTreeMap::from([(long.clone(), BTreeMap::new())]),
        })
        .unwrap();
        let raw = crate::p2p::protocol::decode::<crate::p2p::JobMessage>(&body)
            .unwrap_err()
            .to_string();
        assert!(
            raw.contains(&long),
            "the decoder quotes the variant: {}",
            raw.len()
        );
        let mut io = futures::io::Cursor::new(frame(&body));
        let got = futures::executor::block_on(
            JobCodec::default().read_request(&StreamProtocol::new("/t"), &mut io),
        )
        .unwrap();
        let Frame::Invalid(reason) = got else {
            panic!("expected an invalid frame")
        };
        assert!(
            reason.chars().count() < MAX_REASON_CHARS + 40,
            "{} chars",
            reason.chars().count()
        );
    }
}
