//! The `/infernet/job/1` stream codec: one CBOR-encoded [`JobMessage`] per
//! direction per stream, each side closing its write half after the message.
//! Reads are capped (1 MiB requests, 8 MiB responses by default) and decoding
//! is strict (one item, no trailing bytes, bounded nesting). An inbound
//! request that breaks a rule is read as [`Frame::Invalid`] with the reason
//! (request-response would otherwise swallow the error with a debug log), so
//! the event loop can log and count it with the peer's id and close that
//! stream unanswered. A bad response fails the outbound request with an
//! `InvalidData` error that says why.

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

fn invalid(e: CodecError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<JobMessage> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(invalid(CodecError::TooLarge {
            size: buf.len(),
            max,
        }));
    }
    if buf.is_empty() {
        return Err(invalid(CodecError::Decode("empty message".into())));
    }
    decode(&buf).map_err(invalid)
}

async fn write_capped<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    msg: &JobMessage,
    max: usize,
) -> io::Result<()> {
    let bytes = encode(msg).map_err(invalid)?;
    if bytes.len() > max {
        return Err(invalid(CodecError::TooLarge {
            size: bytes.len(),
            max,
        }));
    }
    io.write_all(&bytes).await
}

impl libp2p::request_response::Codec for JobCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = JobMessage;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_capped(io, self.max_request_bytes).await {
            Ok(msg) => Ok(Frame::Message(Box::new(msg))),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Frame::Invalid(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<JobMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, self.max_response_bytes).await
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
            Frame::Message(msg) => write_capped(io, &msg, self.max_request_bytes).await,
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
        write_capped(io, &res, self.max_response_bytes).await?;
        io.flush().await
    }
}
