//! The self-certifying registry record: what a node signs with its libp2p
//! key and a client checks before dialing anything a registry row says.
//!
//! The record is JSON text, stored and signed as the exact bytes the node
//! wrote (nobody re-serialises it), and signed over
//! `infernet/registry-record/1\0 || record`. The key is the one inside the
//! peer id (an ed25519 peer id embeds its public key), so a row proves its
//! own author: the database checks the signature on registration
//! (`supabase/migrations`), and a client checks it again, because whoever
//! administers the database can edit a row after that.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Signed bytes are `DOMAIN || record`.
pub const DOMAIN: &[u8] = b"infernet/registry-record/1\0";
/// The record format version.
pub const RECORD_VERSION: u32 = 1;
/// The largest record the database stores (and a client reads).
pub const MAX_RECORD_BYTES: usize = 4096;
/// At most this many addresses per record.
pub const MAX_ADDRS: usize = 16;
/// Longest address.
pub const MAX_ADDR_CHARS: usize = 256;
/// At most this many models per record.
pub const MAX_MODELS: usize = 64;
/// Longest model id.
pub const MAX_MODEL_CHARS: usize = 128;
/// Longest contract or protocol version string.
pub const MAX_VERSION_CHARS: usize = 64;
/// A record is valid at most this long after its timestamp, whatever its
/// `ttl` says.
pub const MAX_TTL_SECS: u64 = 86_400;
/// A timestamp this far in the future (clock skew) is still accepted.
pub const MAX_SKEW_SECS: u64 = 300;

/// What a node says about itself, in the order it is serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// [`RECORD_VERSION`].
    pub v: u32,
    /// The node's peer id (base58, embeds its ed25519 key).
    pub peer_id: String,
    /// Where to dial it, each ending in `/p2p/<peer_id>`.
    pub addrs: Vec<String>,
    /// Models it serves (empty for a node that only routes).
    pub models: Vec<String>,
    /// Plugin contract (WIT) version of the host.
    pub contract: String,
    /// Job protocol it speaks, e.g. `/infernet/job/2`.
    pub protocol: String,
    /// When it was signed, unix seconds.
    pub timestamp: u64,
    /// Seconds it stays valid after `timestamp`.
    pub ttl: u64,
}

/// A record as sent to `register_node`: the exact text and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// The record's JSON text.
    pub record: String,
    /// ed25519 signature of [`DOMAIN`] `||` record, lowercase hex.
    pub signature: String,
}

/// Why a row was not used. Every one is counted
/// ([`super::RegistryStats::rejected`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Over a size bound, not JSON of the record's shape, bad hex, an
    /// address that is not a multiaddr of this peer.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The peer id does not embed an ed25519 key to check against.
    #[error("peer id `{0}` does not embed its public key")]
    KeyNotInPeerId(String),
    /// The signature is not the peer id's key's over the record.
    #[error("signature does not verify under the peer id's key")]
    BadSignature,
    /// A column says something the signed record does not (an address
    /// swapped or models changed in the database).
    #[error("row edited: column `{0}` disagrees with the signed record")]
    Edited(&'static str),
    /// Expired (`timestamp + ttl` passed: e.g. an old record replayed), or
    /// signed too far in the future.
    #[error("stale: signed at {timestamp}, valid {ttl} s, now {now}")]
    Stale {
        /// Record timestamp.
        timestamp: u64,
        /// Record ttl.
        ttl: u64,
        /// Client clock.
        now: u64,
    },
    /// A valid record of a node speaking another protocol version.
    #[error("speaks {0}, this node {1}")]
    Incompatible(String, String),
}

impl Rejection {
    /// A short stable name, the key of the rejection counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::KeyNotInPeerId(_) => "key_not_in_peer_id",
            Rejection::BadSignature => "bad_signature",
            Rejection::Edited(_) => "edited",
            Rejection::Stale { .. } => "stale",
            Rejection::Incompatible(..) => "incompatible",
        }
    }
}

/// Why a record could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Over a bound the database enforces.
    #[error("registry record {0}")]
    TooLarge(String),
    /// The key cannot sign.
    #[error("cannot sign the registry record: {0}")]
    Key(String),
}

impl Record {
    /// Checks the bounds the database checks, so a node learns locally
    /// rather than from a refused registration.
    pub fn check_shape(&self) -> Result<(), String> {
        if self.v != RECORD_VERSION {
            return Err(format!("version {} (expected {RECORD_VERSION})", self.v));
        }
        if self.addrs.is_empty() || self.addrs.len() > MAX_ADDRS {
            return Err(format!(
                "has {} addresses (1..={MAX_ADDRS})",
                self.addrs.len()
            ));
        }
        let suffix = format!("/p2p/{}", self.peer_id);
        for a in &self.addrs {
            if a.len() > MAX_ADDR_CHARS || !a.starts_with('/') || !a.ends_with(&suffix) {
                return Err(format!(
                    "address `{a}` must be a multiaddr of at most {MAX_ADDR_CHARS} characters ending in `{suffix}`"
                ));
            }
            a.parse::<Multiaddr>()
                .map_err(|e| format!("address `{a}` is not a multiaddr: {e}"))?;
        }
        if self.models.len() > MAX_MODELS {
            return Err(format!(
                "has {} models (at most {MAX_MODELS})",
                self.models.len()
            ));
        }
        if let Some(m) = self
            .models
            .iter()
            .find(|m| m.is_empty() || m.chars().count() > MAX_MODEL_CHARS)
        {
            return Err(format!(
                "model id `{m}` must be 1..={MAX_MODEL_CHARS} characters"
            ));
        }
        for (name, v) in [("contract", &self.contract), ("protocol", &self.protocol)] {
            if v.is_empty() || v.chars().count() > MAX_VERSION_CHARS {
                return Err(format!(
                    "{name} `{v}` must be 1..={MAX_VERSION_CHARS} characters"
                ));
            }
        }
        Ok(())
    }

    /// The record's text, signed by `key` (which must be the peer id's).
    pub fn sign(&self, key: &Keypair) -> Result<SignedRecord, SignError> {
        if key.public().to_peer_id().to_string() != self.peer_id {
            return Err(SignError::Key(
                "the key is not the record's peer id's".into(),
            ));
        }
        self.check_shape().map_err(SignError::TooLarge)?;
        let record = serde_json::to_string(self).map_err(|e| SignError::Key(e.to_string()))?;
        if record.len() > MAX_RECORD_BYTES {
            return Err(SignError::TooLarge(format!(
                "is {} bytes (at most {MAX_RECORD_BYTES}): advertise fewer addresses or models",
                record.len()
            )));
        }
        let sig = key
            .sign(&signed_bytes(&record))
            .map_err(|e| SignError::Key(e.to_string()))?;
        Ok(SignedRecord {
            record,
            signature: hex::encode(sig),
        })
    }
}

fn signed_bytes(record: &str) -> Vec<u8> {
    [DOMAIN, record.as_bytes()].concat()
}

/// The public key inside an identity-multihash peer id (ed25519 ids are).
pub fn key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    (mh.code() == 0)
        .then(|| PublicKey::try_decode_protobuf(mh.digest()).ok())
        .flatten()
}

impl SignedRecord {
    /// The record, if the text is a record of the right shape whose
    /// signature verifies under the key its peer id embeds, and which is
    /// fresh at `now` (unix seconds). Nothing else about a row is trusted.
    pub fn verify(&self, now: u64) -> Result<Record, Rejection> {
        if self.record.len() > MAX_RECORD_BYTES {
            return Err(Rejection::Malformed(format!(
                "record of {} bytes (at most {MAX_RECORD_BYTES})",
                self.record.len()
            )));
        }
        let sig = hex::decode(&self.signature)
            .ok()
            .filter(|s| s.len() == 64)
            .ok_or_else(|| Rejection::Malformed("signature is not 64 bytes of hex".into()))?;
        let record: Record = serde_json::from_str(&self.record)
            .map_err(|e| Rejection::Malformed(format!("record: {e}")))?;
        let peer: PeerId = record
            .peer_id
            .parse()
            .map_err(|e| Rejection::Malformed(format!("peer id `{}`: {e}", record.peer_id)))?;
        let key = key_of(&peer).ok_or_else(|| Rejection::KeyNotInPeerId(record.peer_id.clone()))?;
        if !key.verify(&signed_bytes(&self.record), &sig) {
            return Err(Rejection::BadSignature);
        }
        record.check_shape().map_err(Rejection::Malformed)?;
        let ttl = record.ttl.min(MAX_TTL_SECS);
        if now > record.timestamp.saturating_add(ttl)
            || record.timestamp > now.saturating_add(MAX_SKEW_SECS)
        {
            return Err(Rejection::Stale {
                timestamp: record.timestamp,
                ttl: record.ttl,
                now,
            });
        }
        Ok(record)
    }
}
