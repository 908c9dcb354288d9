//! The messages of `/infernet/verify/1`: questions about a delivered job's
//! kernel trace (its tree's nodes, one call, the values of tensors it
//! made), the client's ticket that lets a referee ask them, and the
//! dispute a client puts to a referee with the evidence it gets back.
//! Trace leaves and revealed values travel as CBOR byte strings whose
//! layout `docs/PROTOCOL.md` gives (the `kernels` module decodes them: the
//! wire layer does not know kernel types).

use super::cbor::bytes;
use super::protocol::{SignedResult, WireInput};
use super::signed::{Signed, SignedPayload};
use serde::{Deserialize, Serialize};

/// Protocol id of trace questions and disputes.
pub const VERIFY_PROTOCOL: &str = "/infernet/verify/1";

/// Digests one reveal may ask for.
pub const MAX_REVEAL_DIGESTS: usize = 4096;

/// A 32-byte digest on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hash32(#[serde(with = "bytes32")] pub [u8; 32]);

mod bytes32 {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        super::bytes::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        super::bytes::deserialize(d)?
            .try_into()
            .map_err(|_| serde::de::Error::custom("a digest is 32 bytes"))
    }
}

/// A question about one job's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceQuery {
    /// The top node of the trace tree.
    Top,
    /// The two children of node (`level`, `index`).
    Children {
        /// Level (leaves are 0).
        level: u32,
        /// Index on that level.
        index: u64,
    },
    /// The call at `index`.
    Leaf {
        /// Call index.
        index: u64,
    },
    /// The values of tensors with these digests made at or before call
    /// `until` (and the derived calls that made derived ones).
    Reveal {
        /// Wanted digests (at most [`MAX_REVEAL_DIGESTS`]).
        digests: Vec<Hash32>,
        /// Last call to look at.
        until: u64,
    },
}

/// An answer to a [`TraceQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceAnswer {
    /// Node hashes (one for `Top`, two for `Children`).
    Nodes(Vec<Hash32>),
    /// The call's leaf, CBOR (`None`: the trace ends before it).
    Leaf(#[serde(with = "opt_bytes")] Option<Vec<u8>>),
    /// Revealed values and derivations, CBOR of each.
    Values {
        /// Revealed tensors.
        values: Vec<ByteString>,
        /// Calls with derived digests.
        derivations: Vec<ByteString>,
    },
}

/// A byte string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteString(#[serde(with = "bytes")] pub Vec<u8>);

mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct B(#[serde(with = "super::bytes")] Vec<u8>);

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.clone().map(B).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<B>::deserialize(d)?.map(|b| b.0))
    }
}

/// A client's permission for a referee to question a provider about one
/// of the client's jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The provider's job id (the result's `job_id`).
    pub job_id: String,
    /// The client (the signer), peer id.
    pub client: String,
    /// The referee allowed to ask, peer id.
    pub referee: String,
    /// Not valid after this, ms since epoch.
    pub expires_ms: u64,
}

impl SignedPayload for Ticket {
    const DOMAIN: &'static str = "ticket/2";
    fn signer(&self) -> &str {
        &self.client
    }
}

/// A signed [`Ticket`].
pub type SignedTicket = Signed<Ticket>;

/// The job both results of a dispute claim to have run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Model id.
    pub model: String,
    /// Input, as the wire carries it.
    pub input: WireInput,
    /// Parameters.
    pub params: Vec<(String, String)>,
}

/// Client → referee: two results of one job that disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisputeRequest {
    /// The job.
    pub job: JobSpec,
    /// Both signed results.
    pub results: Vec<SignedResult>,
    /// A ticket per result, naming this referee.
    pub tickets: Vec<SignedTicket>,
}
