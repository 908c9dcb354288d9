//! Signed envelopes: a payload carried as the exact CBOR bytes its signer
//! wrote, a signature over those bytes, and the signer's public key.
//!
//! A receiver checks the signature over the bytes it received and only
//! then decodes them; nothing is re-encoded, so a signer may use any CBOR
//! encoder (PROTOCOL.md §4 says why this and not deterministic CBOR).
//! Signing input: `"infernet:" DOMAIN "\0" payload-bytes`, with a distinct
//! DOMAIN per payload type so a signature for one kind never verifies as
//! another.

use super::cbor::{bytes, CodecError, Encoded};
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A payload that can be signed with a libp2p identity key.
pub trait SignedPayload: Serialize + DeserializeOwned {
    /// Domain separation tag (distinct per payload type).
    const DOMAIN: &'static str;
    /// The peer id (base58) the payload claims as its signer.
    fn signer(&self) -> &str;
}

/// `payload` signed by the key in `public_key` (protobuf-encoded libp2p
/// key). Read `signed.payload.field` through [`Encoded`]'s `Deref`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: DeserializeOwned"))]
pub struct Signed<T> {
    /// What is signed, as the signer encoded it.
    pub payload: Encoded<T>,
    /// Signature over [`signing_input`] of the payload bytes.
    #[serde(with = "bytes")]
    pub signature: Vec<u8>,
    /// Signer's public key, protobuf-encoded.
    #[serde(with = "bytes")]
    pub public_key: Vec<u8>,
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `public_key` is not a protobuf-encoded libp2p public key.
    #[error("malformed public key")]
    BadPublicKey,
    /// The claimed signer is not a peer id.
    #[error("claimed signer `{0}` is not a peer id")]
    BadSignerId(String),
    /// The key belongs to another peer than the payload claims.
    #[error("public key is {actual}'s, payload claims {claimed}")]
    KeyMismatch {
        /// Peer id in the payload.
        claimed: String,
        /// Peer id of the key.
        actual: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Signing failed (encoding or key type).
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// The exact bytes signed for payload bytes `payload` of type `T`.
pub fn signing_input<T: SignedPayload>(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("infernet:{}\0", T::DOMAIN).into_bytes();
    out.extend_from_slice(payload);
    out
}

impl<T: SignedPayload> Signed<T> {
    /// Encodes and signs `payload` with `key`. The payload's
    /// [`SignedPayload::signer`] should be `key`'s peer id, or
    /// [`Signed::verify`] will refuse it.
    pub fn sign(payload: T, key: &Keypair) -> Result<Signed<T>, SignatureError> {
        let payload = Encoded::new(payload)
            .map_err(|e: CodecError| SignatureError::Signing(e.to_string()))?;
        Signed::sign_encoded(payload, key)
    }

    /// Signs payload bytes as they are (another encoder's, in tests).
    pub fn sign_encoded(payload: Encoded<T>, key: &Keypair) -> Result<Signed<T>, SignatureError> {
        let signature = key
            .sign(&signing_input::<T>(payload.bytes()))
            .map_err(|e| SignatureError::Signing(e.to_string()))?;
        Ok(Signed {
            payload,
            signature,
            public_key: key.public().encode_protobuf(),
        })
    }

    /// Checks the key against the claimed signer and the signature against
    /// the payload bytes as received; returns the signer.
    pub fn verify(&self) -> Result<PeerId, SignatureError> {
        let key = PublicKey::try_decode_protobuf(&self.public_key)
            .map_err(|_| SignatureError::BadPublicKey)?;
        let claimed = self.payload.signer();
        let claimed_id: PeerId = claimed
            .parse()
            .map_err(|_| SignatureError::BadSignerId(claimed.to_string()))?;
        let actual = key.to_peer_id();
        if actual != claimed_id {
            return Err(SignatureError::KeyMismatch {
                claimed: claimed.to_string(),
                actual: actual.to_string(),
            });
        }
        if !key.verify(&signing_input::<T>(self.payload.bytes()), &self.signature) {
            return Err(SignatureError::BadSignature);
        }
        Ok(actual)
    }
}
