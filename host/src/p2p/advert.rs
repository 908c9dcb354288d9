//! Provider adverts: what a provider gossips on `infernet/providers/2`, how a
//! receiver checks it, and the counters of what was dropped and why.

use super::protocol::{
    decode, Advert, Money, ProofAdvert, SignatureError, SignedAdvert, KNOWN_PROTOCOL_VERSIONS,
};
use libp2p::PeerId;
use std::sync::atomic::{AtomicU64, Ordering};

/// Default tolerated clock difference for advert timestamps (±5 minutes).
pub const DEFAULT_MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// What a provider wants to advertise; the network layer fills in its peer
/// id, listen addresses, protocol version and timestamp, and signs it afresh
/// at every republish.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvertSpec {
    /// Model ids served.
    pub models: Vec<String>,
    /// Reference price.
    pub quote: Money,
    /// Concurrent jobs it can take.
    pub capacity: u32,
    /// `infernet:plugin` WIT version implemented by the host.
    pub wit_version: String,
    /// Stake posted, if any.
    pub stake: Option<Money>,
    /// The arbiter's certificate for it, when an arbiter holds it.
    pub stake_cert: Option<Box<crate::p2p::verification::SignedStakeCert>>,
    /// Models proved on request, with their verifying-key ids.
    pub proofs: Vec<ProofAdvert>,
    /// Whether this node is a verifier (see [`Advert::verifier`]).
    pub verifier: bool,
    /// Models whose results carry no kernel trace ([`Advert::untraced`]).
    pub untraced: Vec<String>,
}

/// Why an advert was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertRejection {
    /// Not a decodable [`SignedAdvert`].
    #[error("malformed advert: {0}")]
    Malformed(String),
    /// The public key is not the advertised peer id's.
    #[error("public key does not match peer id: {0}")]
    KeyMismatch(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Timestamp too far from now.
    #[error("stale advert: timestamp {skew_ms} ms away from now")]
    Stale {
        /// |now - timestamp|.
        skew_ms: u64,
    },
    /// A protocol version this node does not speak.
    #[error("unknown protocol version {0}")]
    UnknownProtocol(u16),
}

/// Decodes and checks a gossiped advert: signature valid, key matches the
/// peer id, protocol version known, timestamp within `max_skew_ms` of `now_ms`.
pub fn verify_advert_bytes(
    data: &[u8],
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(SignedAdvert, PeerId), AdvertRejection> {
    let signed: SignedAdvert =
        decode(data).map_err(|e| AdvertRejection::Malformed(e.to_string()))?;
    let peer = verify_advert(&signed, now_ms, max_skew_ms)?;
    Ok((signed, peer))
}

/// [`verify_advert_bytes`] on a decoded advert.
pub fn verify_advert(
    signed: &SignedAdvert,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<PeerId, AdvertRejection> {
    let peer = signed.verify().map_err(|e| match e {
        SignatureError::BadSignature | SignatureError::Signing(_) => AdvertRejection::BadSignature,
        SignatureError::KeyMismatch { .. } => AdvertRejection::KeyMismatch(e.to_string()),
        SignatureError::BadPublicKey | SignatureError::BadSignerId(_) => {
            AdvertRejection::Malformed(e.to_string())
        }
    })?;
    let a: &Advert = &signed.payload;
    check_sizes(a).map_err(AdvertRejection::Malformed)?;
    if !KNOWN_PROTOCOL_VERSIONS.contains(&a.protocol_version) {
        return Err(AdvertRejection::UnknownProtocol(a.protocol_version));
    }
    let skew_ms = now_ms.abs_diff(a.timestamp_ms);
    if skew_ms > max_skew_ms {
        return Err(AdvertRejection::Stale { skew_ms });
    }
    Ok(peer)
}

/// Most addresses, models and proof entries one advert may list.
pub const MAX_ADVERT_ITEMS: usize = 32;
/// Longest string in an advert, in bytes.
pub const MAX_ADVERT_STRING: usize = 256;

/// What no advert may exceed, whatever the gossip size cap lets through.
fn check_sizes(a: &Advert) -> Result<(), String> {
    let lists = [
        ("addrs", a.addrs.len()),
        ("models", a.models.len()),
        ("proofs", a.proofs.len()),
        ("untraced", a.untraced.len()),
    ];
    for (what, n) in lists {
        if n > MAX_ADVERT_ITEMS {
            return Err(format!("{n} {what}, at most {MAX_ADVERT_ITEMS}"));
        }
    }
    let strings = a
        .addrs
        .iter()
        .chain(&a.models)
        .chain(&a.untraced)
        .chain([&a.wit_version, &a.quote.currency]);
    if let Some(s) = strings.into_iter().find(|s| s.len() > MAX_ADVERT_STRING) {
        return Err(format!(
            "a {}-byte string, at most {MAX_ADVERT_STRING}",
            s.len()
        ));
    }
    Ok(())
}

/// Counters kept by the network loop (lock-free; read with
/// [`NetworkMetrics::snapshot`]).
#[derive(Debug, Default)]
pub struct NetworkMetrics {
    adverts_accepted: AtomicU64,
    adverts_malformed: AtomicU64,
    adverts_bad_signature: AtomicU64,
    adverts_key_mismatch: AtomicU64,
    adverts_stale: AtomicU64,
    adverts_unknown_protocol: AtomicU64,
    job_requests_served: AtomicU64,
    job_requests_rejected: AtomicU64,
    job_inbound_failures: AtomicU64,
    gossip_rate_limited: AtomicU64,
    attestations_accepted: AtomicU64,
    attestations_invalid: AtomicU64,
    attestations_ignored: AtomicU64,
}

/// A point-in-time copy of [`NetworkMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Adverts that passed every check.
    pub adverts_accepted: u64,
    /// Dropped: not decodable.
    pub adverts_malformed: u64,
    /// Dropped: signature does not verify.
    pub adverts_bad_signature: u64,
    /// Dropped: key is not the advertised peer's.
    pub adverts_key_mismatch: u64,
    /// Dropped: timestamp outside the tolerated skew.
    pub adverts_stale: u64,
    /// Dropped: unknown protocol version.
    pub adverts_unknown_protocol: u64,
    /// Inbound job requests answered (by the handler or with an error).
    pub job_requests_served: u64,
    /// Inbound job requests refused before the handler (wrong version, no handler).
    pub job_requests_rejected: u64,
    /// Inbound job streams closed on a failure (malformed, oversized, timeout...).
    pub job_inbound_failures: u64,
    /// Gossip messages ignored unread: their source was over its rate.
    pub gossip_rate_limited: u64,
    /// Attestations that passed the gate (signature, author, bounds, time,
    /// first of their (attester, job)).
    pub attestations_accepted: u64,
    /// Attestations dropped as invalid: oversized, malformed, forged,
    /// another attester's, self-attestations.
    pub attestations_invalid: u64,
    /// Attestations ignored: stale, from the future, duplicates, over
    /// their attester's rate.
    pub attestations_ignored: u64,
}

impl MetricsSnapshot {
    /// Every dropped advert, whatever the reason.
    pub fn adverts_dropped(&self) -> u64 {
        self.adverts_malformed
            + self.adverts_bad_signature
            + self.adverts_key_mismatch
            + self.adverts_stale
            + self.adverts_unknown_protocol
    }
}

impl NetworkMetrics {
    /// Counts one advert outcome.
    pub fn count_advert(&self, outcome: Result<(), &AdvertRejection>) {
        let c = match outcome {
            Ok(()) => &self.adverts_accepted,
            Err(AdvertRejection::Malformed(_)) => &self.adverts_malformed,
            Err(AdvertRejection::BadSignature) => &self.adverts_bad_signature,
            Err(AdvertRejection::KeyMismatch(_)) => &self.adverts_key_mismatch,
            Err(AdvertRejection::Stale { .. }) => &self.adverts_stale,
            Err(AdvertRejection::UnknownProtocol(_)) => &self.adverts_unknown_protocol,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn job_served(&self) {
        self.job_requests_served.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn job_rejected(&self) {
        self.job_requests_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn job_inbound_failure(&self) {
        self.job_inbound_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn gossip_rate_limited(&self) {
        self.gossip_rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attestation outcome.
    pub fn count_attestation(
        &self,
        outcome: Result<(), &super::attestation::AttestationRejection>,
    ) {
        let c = match outcome {
            Ok(()) => &self.attestations_accepted,
            Err(e) if e.is_invalid() => &self.attestations_invalid,
            Err(_) => &self.attestations_ignored,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            adverts_accepted: l(&self.adverts_accepted),
            adverts_malformed: l(&self.adverts_malformed),
            adverts_bad_signature: l(&self.adverts_bad_signature),
            adverts_key_mismatch: l(&self.adverts_key_mismatch),
            adverts_stale: l(&self.adverts_stale),
            adverts_unknown_protocol: l(&self.adverts_unknown_protocol),
            job_requests_served: l(&self.job_requests_served),
            job_requests_rejected: l(&self.job_requests_rejected),
            job_inbound_failures: l(&self.job_inbound_failures),
            gossip_rate_limited: l(&self.gossip_rate_limited),
            attestations_accepted: l(&self.attestations_accepted),
            attestations_invalid: l(&self.attestations_invalid),
            attestations_ignored: l(&self.attestations_ignored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::protocol::{encode, now_ms, PROTOCOL_VERSION};
    use libp2p::identity::Keypair;

    fn signed(key: &Keypair, ts: u64, version: u16) -> SignedAdvert {
        let advert = Advert {
            peer_id: key.public().to_peer_id().to_string(),
            addrs: vec![],
            models: vec!["m".into()],
            quote: Money {
                amount: 1,
                currency: "USD".into(),
            },
            capacity: 1,
            wit_version: "0.2.0".into(),
            protocol_version: version,
            stake: None,
            stake_cert: None,
            timestamp_ms: ts,
            proofs: vec![],
            verifier: false,
            untraced: vec![],
        };
        SignedAdvert::sign(advert, key).unwrap()
    }

    #[test]
    fn checks_in_order() {
        let key = Keypair::generate_ed25519();
        let now = now_ms();
        let ok = signed(&key, now, PROTOCOL_VERSION);
        assert!(verify_advert_bytes(&encode(&ok).unwrap(), now, DEFAULT_MAX_SKEW_MS).is_ok());
        let stale = signed(&key, now - 6 * 60 * 1000, PROTOCOL_VERSION);
        assert!(matches!(
            verify_advert(&stale, now, DEFAULT_MAX_SKEW_MS),
            Err(AdvertRejection::Stale { .. })
        ));
        let future = signed(&key, now + 6 * 60 * 1000, PROTOCOL_VERSION);
        assert!(matches!(
            verify_advert(&future, now, DEFAULT_MAX_SKEW_MS),
            Err(AdvertRejection::Stale { .. })
        ));
        let v99 = signed(&key, now, 99);
        assert_eq!(
            verify_advert(&v99, now, DEFAULT_MAX_SKEW_MS),
            Err(AdvertRejection::UnknownProtocol(99))
        );
        let mut more = ok.payload.value().clone();
        more.models.push("other".into());
        let forged = SignedAdvert {
            payload: crate::p2p::protocol::Encoded::new(more).unwrap(),
            ..ok.clone()
        };
        assert_eq!(
            verify_advert(&forged, now, DEFAULT_MAX_SKEW_MS),
            Err(AdvertRejection::BadSignature)
        );
        assert!(matches!(
            verify_advert_bytes(b"\x01\x02", now, DEFAULT_MAX_SKEW_MS),
            Err(AdvertRejection::Malformed(_))
        ));
    }

    #[test]
    fn untraced_lists_are_bounded_like_models() {
        let key = Keypair::generate_ed25519();
        let now = now_ms();
        let with = |untraced: Vec<String>| {
            let mut a = signed(&key, now, PROTOCOL_VERSION).payload.value().clone();
            a.untraced = untraced;
            SignedAdvert::sign(a, &key).unwrap()
        };
        assert!(verify_advert(&with(vec!["m".into()]), now, DEFAULT_MAX_SKEW_MS).is_ok());
        let many = with(vec!["m".into(); MAX_ADVERT_ITEMS + 1]);
        assert!(matches!(
            verify_advert(&many, now, DEFAULT_MAX_SKEW_MS),
            Err(AdvertRejection::Malformed(m)) if m.contains("untraced")
        ));
        let long = with(vec!["x".repeat(MAX_ADVERT_STRING + 1)]);
        assert!(matches!(
            verify_advert(&long, now, DEFAULT_MAX_SKEW_MS),
            Err(AdvertRejection::Malformed(_))
        ));
    }
}
