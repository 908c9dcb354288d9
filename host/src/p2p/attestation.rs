//! Verifier attestations: what a node that verified a provider's result
//! (a replica that agreed, a spot check that matched, a referee's ruling,
//! a proof) gossips on `infernet/attestations/1`, signed by itself, and the
//! gate every received one passes before anything stores it: size, the
//! attester's rate, signature, attester = gossip author, field bounds,
//! freshness, and one attestation per (attester, job).
//!
//! What an attestation is *worth* is not decided here: the reputation
//! (`verify::reputation`) weighs it by the attester's standing in the
//! receiving node's own view. This module only keeps forged, oversized,
//! replayed, future-dated and flooding ones out.

use super::cbor::{decode, CodecError};
use super::protocol::limits::MAX_ID_BYTES;
use super::signed::{SignatureError, Signed, SignedPayload};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The gossipsub topic attestations travel on (its own topic: advert
/// traffic and its scoring stay separate).
pub const ATTESTATION_TOPIC: &str = "infernet/attestations/1";
/// Largest accepted attestation message, checked before decoding. A valid
/// one is about 400 bytes (two peer ids, a job id, a hash, a key and a
/// signature).
pub const MAX_ATTESTATION_BYTES: usize = 1024;
/// How old an attestation may be when it arrives (they are published as
/// the outcome is known, so older ones are replays).
pub const ATTESTATION_MAX_AGE_MS: u64 = 10 * 60 * 1000;
/// How far ahead of this node's clock a timestamp may be (clock skew).
pub const ATTESTATION_MAX_AHEAD_MS: u64 = 60 * 1000;
/// Attestations accepted from one attester per minute; more are ignored
/// unread (before the signature is checked).
pub const ATTESTATIONS_PER_MINUTE: u32 = 60;
/// (attester, job) pairs remembered for deduplication (the store's primary
/// key deduplicates too; this keeps replays from being forwarded).
pub const MAX_REMEMBERED: usize = 16_384;
/// Attesters whose rate is tracked at once.
pub const MAX_TRACKED_ATTESTERS: usize = 4_096;

/// What the attester saw of the subject's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Checked and right: a replica that agreed with another provider's,
    /// a spot check that matched, a ruling in its favour, a proof that
    /// verified.
    Verified,
    /// Proven wrong: a referee's ruling (the evidence bundle's hash is in
    /// [`Attestation::evidence`]) or a proof that did not verify.
    Cheated,
}

impl Outcome {
    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Cheated => "cheated",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Outcome, String> {
        match s {
            "verified" => Ok(Outcome::Verified),
            "cheated" => Ok(Outcome::Cheated),
            other => Err(format!("unknown outcome `{other}`")),
        }
    }
}

/// One verified outcome, as its attester signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The provider whose result was checked (peer id, base58).
    pub subject: String,
    /// The attester's id of the checked job (one attestation per attester
    /// and job).
    pub job_id: String,
    /// What the check found.
    pub outcome: Outcome,
    /// For [`Outcome::Cheated`]: sha256 (hex) of the evidence (the dispute's
    /// evidence bundle as saved, or the rejected signed result). Absent
    /// for [`Outcome::Verified`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Who checked it and signs this (peer id, base58).
    pub attester: String,
    /// When, ms since the epoch.
    pub timestamp_ms: u64,
}

impl SignedPayload for Attestation {
    const DOMAIN: &'static str = "attestation/1";
    fn signer(&self) -> &str {
        &self.attester
    }
}

/// An attester-signed attestation.
pub type SignedAttestation = Signed<Attestation>;

/// Why an attestation was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationRejection {
    /// Larger than [`MAX_ATTESTATION_BYTES`] (not decoded).
    #[error("oversized attestation: {bytes} bytes, at most {MAX_ATTESTATION_BYTES}")]
    Oversized {
        /// Its size.
        bytes: usize,
    },
    /// Not a decodable [`SignedAttestation`], or a field out of bounds.
    #[error("malformed attestation: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The public key is not the attester's.
    #[error("public key does not match the attester: {0}")]
    KeyMismatch(String),
    /// Published by another peer than the attester it names: an
    /// attestation is only ever gossiped by its own attester.
    #[error("attester {attester} is not the gossip author {author}")]
    NotTheAuthor {
        /// The attester it names.
        attester: String,
        /// Who published it.
        author: String,
    },
    /// A provider attesting to itself is a self-report.
    #[error("self-attestation by {0}")]
    SelfAttestation(String),
    /// Timestamp ahead of this node's clock by more than the skew.
    #[error("attestation from the future: {ahead_ms} ms ahead")]
    Future {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// Older than [`ATTESTATION_MAX_AGE_MS`].
    #[error("stale attestation: {age_ms} ms old")]
    Stale {
        /// Its age.
        age_ms: u64,
    },
    /// The attester already attested to this job.
    #[error("duplicate attestation of job {job_id} by {attester}")]
    Duplicate {
        /// Attester.
        attester: String,
        /// Job.
        job_id: String,
    },
    /// The attester is over [`ATTESTATIONS_PER_MINUTE`].
    #[error("attester {0} over its rate")]
    RateLimited(String),
}

impl AttestationRejection {
    /// Whether the message is invalid in itself (gossipsub `Reject`: the
    /// peer that forwarded it loses score) rather than merely unwanted
    /// here (`Ignore`: stale, duplicate, over the rate, clock skew).
    pub fn is_invalid(&self) -> bool {
        !matches!(
            self,
            AttestationRejection::Future { .. }
                | AttestationRejection::Stale { .. }
                | AttestationRejection::Duplicate { .. }
                | AttestationRejection::RateLimited(_)
        )
    }
}

/// Checks one signed attestation on its own (no state): signature, key ↔
/// attester, field bounds, no self-attestation, timestamp within
/// [`ATTESTATION_MAX_AHEAD_MS`] ahead and [`ATTESTATION_MAX_AGE_MS`] behind
/// `now_ms`. Returns the attester.
pub fn verify_attestation(
    signed: &SignedAttestation,
    now_ms: u64,
) -> Result<PeerId, AttestationRejection> {
    let attester = signed.verify().map_err(|e| match e {
        SignatureError::BadSignature | SignatureError::Signing(_) => {
            AttestationRejection::BadSignature
        }
        SignatureError::KeyMismatch { .. } => AttestationRejection::KeyMismatch(e.to_string()),
        SignatureError::BadPublicKey | SignatureError::BadSignerId(_) => {
            AttestationRejection::Malformed(e.to_string())
        }
    })?;
    let a: &Attestation = &signed.payload;
    check_fields(a).map_err(AttestationRejection::Malformed)?;
    if a.subject == a.attester {
        return Err(AttestationRejection::SelfAttestation(a.attester.clone()));
    }
    if a.timestamp_ms > now_ms.saturating_add(ATTESTATION_MAX_AHEAD_MS) {
        return Err(AttestationRejection::Future {
            ahead_ms: a.timestamp_ms - now_ms,
        });
    }
    let age_ms = now_ms.saturating_sub(a.timestamp_ms);
    if age_ms > ATTESTATION_MAX_AGE_MS {
        return Err(AttestationRejection::Stale { age_ms });
    }
    Ok(attester)
}

/// The bounds on an attestation's fields.
fn check_fields(a: &Attestation) -> Result<(), String> {
    a.subject
        .parse::<PeerId>()
        .map_err(|_| "the subject is not a peer id".to_string())?;
    if a.job_id.is_empty()
        || a.job_id.len() > MAX_ID_BYTES
        || !a.job_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "job id must be 1 to {MAX_ID_BYTES} printable ASCII characters"
        ));
    }
    match (a.outcome, &a.evidence) {
        (Outcome::Verified, None) => Ok(()),
        (Outcome::Verified, Some(_)) => Err("a `verified` outcome carries no evidence".into()),
        (Outcome::Cheated, Some(h))
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(())
        }
        (Outcome::Cheated, _) => {
            Err("a `cheated` outcome needs its evidence's sha256 (64 hex digits)".into())
        }
    }
}

/// The stateful gate of the attestation topic: per-attester rate and
/// deduplication, both bounded, around [`verify_attestation`].
#[derive(Debug, Default)]
pub struct AttestationGate {
    /// (attester, job id) → timestamp, for the freshness window.
    seen: HashMap<(String, String), u64>,
    /// Attester → (minute window start, count).
    rate: HashMap<PeerId, (u64, u32)>,
}

impl AttestationGate {
    /// A gate with nothing seen yet.
    pub fn new() -> AttestationGate {
        AttestationGate::default()
    }

    /// Checks gossip message `data` published by `author` (gossipsub's
    /// signed `source`; `None` is refused) at `now_ms`, in this order:
    /// size, the author's rate, decoding, signature, attester = author,
    /// fields, time, duplicate. Only a message that passes is remembered.
    pub fn check(
        &mut self,
        data: &[u8],
        author: Option<PeerId>,
        now_ms: u64,
    ) -> Result<SignedAttestation, AttestationRejection> {
        if data.len() > MAX_ATTESTATION_BYTES {
            return Err(AttestationRejection::Oversized { bytes: data.len() });
        }
        let Some(author) = author else {
            return Err(AttestationRejection::Malformed(
                "unsigned gossip message (no author)".into(),
            ));
        };
        if !self.allow(author, now_ms) {
            return Err(AttestationRejection::RateLimited(author.to_string()));
        }
        let signed: SignedAttestation =
            decode(data).map_err(|e: CodecError| AttestationRejection::Malformed(e.to_string()))?;
        let attester = verify_attestation(&signed, now_ms)?;
        if attester != author {
            return Err(AttestationRejection::NotTheAuthor {
                attester: attester.to_string(),
                author: author.to_string(),
            });
        }
        let key = (
            signed.payload.attester.clone(),
            signed.payload.job_id.clone(),
        );
        if self.seen.contains_key(&key) {
            return Err(AttestationRejection::Duplicate {
                attester: key.0,
                job_id: key.1,
            });
        }
        self.remember(key, signed.payload.timestamp_ms, now_ms);
        Ok(signed)
    }

    /// Counts one message of `author` in its current minute.
    fn allow(&mut self, author: PeerId, now_ms: u64) -> bool {
        const MINUTE: u64 = 60_000;
        if self.rate.len() >= MAX_TRACKED_ATTESTERS && !self.rate.contains_key(&author) {
            self.rate
                .retain(|_, (start, _)| now_ms.saturating_sub(*start) < MINUTE);
            if self.rate.len() >= MAX_TRACKED_ATTESTERS {
                // Every tracked attester is active this minute: a newcomer
                // waits (an identity flood cannot evict the active ones).
                return false;
            }
        }
        let entry = self.rate.entry(author).or_insert((now_ms, 0));
        if now_ms.saturating_sub(entry.0) >= MINUTE {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
        entry.1 <= ATTESTATIONS_PER_MINUTE
    }

    /// Remembers `key` for dedup; past the bound, forgets what left the
    /// freshness window (it would be refused as stale anyway), then the
    /// oldest half.
    fn remember(&mut self, key: (String, String), timestamp_ms: u64, now_ms: u64) {
        if self.seen.len() >= MAX_REMEMBERED {
            let horizon = now_ms.saturating_sub(ATTESTATION_MAX_AGE_MS);
            self.seen.retain(|_, ts| *ts >= horizon);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            let mut ts: Vec<u64> = self.seen.values().copied().collect();
            ts.sort_unstable();
            let median = ts[ts.len() / 2];
            self.seen.retain(|_, t| *t > median);
        }
        self.seen.insert(key, timestamp_ms);
    }

    /// (attester, job) pairs remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::cbor::{encode, Encoded};
    use libp2p::identity::Keypair;

    const NOW: u64 = 1_800_000_000_000;

    fn att(key: &Keypair, subject: &PeerId, job: &str, outcome: Outcome, ts: u64) -> Attestation {
        Attestation {
            subject: subject.to_string(),
            job_id: job.into(),
            outcome,
            evidence: (outcome == Outcome::Cheated).then(|| "ab".repeat(32)),
            attester: key.public().to_peer_id().to_string(),
            timestamp_ms: ts,
        }
    }

    fn bytes(key: &Keypair, a: Attestation) -> Vec<u8> {
        encode(&SignedAttestation::sign(a, key).unwrap()).unwrap()
    }

    #[test]
    fn a_valid_attestation_passes_once() {
        let (k, subject) = (Keypair::generate_ed25519(), PeerId::random());
        let me = k.public().to_peer_id();
        let mut gate = AttestationGate::new();
        let data = bytes(&k, att(&k, &subject, "j1", Outcome::Verified, NOW));
        assert!(data.len() < 400, "{} bytes", data.len());
        let signed = gate.check(&data, Some(me), NOW).unwrap();
        assert_eq!(signed.payload.subject, subject.to_string());
        // The same (attester, job) again, even re-signed with a new time.
        let again = bytes(&k, att(&k, &subject, "j1", Outcome::Cheated, NOW + 1));
        assert!(matches!(
            gate.check(&again, Some(me), NOW + 1),
            Err(AttestationRejection::Duplicate { .. })
        ));
        let cheat = bytes(&k, att(&k, &subject, "j2", Outcome::Cheated, NOW));
        assert!(gate.check(&cheat, Some(me), NOW).is_ok());
    }

    #[test]
    fn forged_relayed_self_and_badly_timed_attestations_are_refused() {
        let (k, subject) = (Keypair::generate_ed25519(), PeerId::random());
        let me = k.public().to_peer_id();
        let mut gate = AttestationGate::new();
        let check = |gate: &mut AttestationGate, data: &[u8], author| {
            gate.check(data, Some(author), NOW).unwrap_err()
        };
        // Signed, then the outcome flipped.
        let honest =
            SignedAttestation::sign(att(&k, &subject, "j1", Outcome::Verified, NOW), &k).unwrap();
        let forged = SignedAttestation {
            payload: Encoded::new(att(&k, &subject, "j1", Outcome::Cheated, NOW)).unwrap(),
            ..honest.clone()
        };
        assert_eq!(
            check(&mut gate, &encode(&forged).unwrap(), me),
            AttestationRejection::BadSignature
        );
        // Claims another attester with this key.
        let mut stolen = att(&k, &subject, "j1", Outcome::Verified, NOW);
        stolen.attester = PeerId::random().to_string();
        let e = check(&mut gate, &bytes(&k, stolen), me);
        assert!(matches!(e, AttestationRejection::KeyMismatch(_)), "{e}");
        // Valid, but gossiped by someone else.
        let e = check(&mut gate, &encode(&honest).unwrap(), PeerId::random());
        assert!(
            matches!(e, AttestationRejection::NotTheAuthor { .. }),
            "{e}"
        );
        // About itself.
        let own = att(&k, &me, "j1", Outcome::Verified, NOW);
        let e = check(&mut gate, &bytes(&k, own), me);
        assert!(matches!(e, AttestationRejection::SelfAttestation(_)), "{e}");
        // From the future; stale.
        let ahead = att(&k, &subject, "j3", Outcome::Verified, NOW + 5 * 60_000);
        let e = check(&mut gate, &bytes(&k, ahead), me);
        assert!(matches!(e, AttestationRejection::Future { .. }) && !e.is_invalid());
        let old = att(&k, &subject, "j4", Outcome::Verified, NOW - 11 * 60_000);
        let e = check(&mut gate, &bytes(&k, old), me);
        assert!(matches!(e, AttestationRejection::Stale { .. }), "{e}");
        // Within the skew: fine.
        let skewed = att(&k, &subject, "j5", Outcome::Verified, NOW + 30_000);
        assert!(gate.check(&bytes(&k, skewed), Some(me), NOW).is_ok());
        // Cheated without evidence; verified with some; a bad job id.
        let mut bare = att(&k, &subject, "j6", Outcome::Cheated, NOW);
        bare.evidence = None;
        let e = check(&mut gate, &bytes(&k, bare), me);
        assert!(matches!(e, AttestationRejection::Malformed(_)) && e.is_invalid());
        let mut extra = att(&k, &subject, "j7", Outcome::Verified, NOW);
        extra.evidence = Some("00".repeat(32));
        let e = check(&mut gate, &bytes(&k, extra), me);
        assert!(matches!(e, AttestationRejection::Malformed(_)), "{e}");
        let e = check(
            &mut gate,
            &bytes(&k, att(&k, &subject, "a b", Outcome::Verified, NOW)),
            me,
        );
        assert!(matches!(e, AttestationRejection::Malformed(_)), "{e}");
        // Not CBOR; unsigned gossip.
        let e = check(&mut gate, b"\x01\x02\x03", me);
        assert!(matches!(e, AttestationRejection::Malformed(_)), "{e}");
        let data = bytes(&k, att(&k, &subject, "j8", Outcome::Verified, NOW));
        assert!(matches!(
            gate.check(&data, None, NOW),
            Err(AttestationRejection::Malformed(_))
        ));
    }

    #[test]
    fn oversized_attestations_are_refused_before_decoding() {
        let (k, subject) = (Keypair::generate_ed25519(), PeerId::random());
        let mut a = att(&k, &subject, "j", Outcome::Verified, NOW);
        a.job_id = "x".repeat(2000);
        let data = bytes(&k, a);
        let e = AttestationGate::new()
            .check(&data, Some(k.public().to_peer_id()), NOW)
            .unwrap_err();
        assert!(matches!(e, AttestationRejection::Oversized { .. }), "{e}");
        assert!(e.is_invalid());
    }

    #[test]
    fn one_attester_is_held_to_its_rate_and_memory_is_bounded() {
        let (k, subject) = (Keypair::generate_ed25519(), PeerId::random());
        let me = k.public().to_peer_id();
        let mut gate = AttestationGate::new();
        let n = ATTESTATIONS_PER_MINUTE as usize;
        for i in 0..n + 5 {
            let data = bytes(
                &k,
                att(&k, &subject, &format!("j{i}"), Outcome::Verified, NOW),
            );
            let r = gate.check(&data, Some(me), NOW + i as u64);
            if i < n {
                assert!(r.is_ok(), "{i}: {r:?}");
            } else {
                assert!(
                    matches!(r, Err(AttestationRejection::RateLimited(_))),
                    "{i}"
                );
            }
        }
        // A minute later it may attest again.
        let data = bytes(
            &k,
            att(&k, &subject, "late", Outcome::Verified, NOW + 61_000),
        );
        assert!(gate.check(&data, Some(me), NOW + 61_000).is_ok());
        // Dedup memory never passes its bound.
        for i in 0..MAX_REMEMBERED + 10 {
            gate.remember(("a".into(), format!("{i}")), NOW + i as u64, NOW + i as u64);
        }
        assert!(gate.remembered() <= MAX_REMEMBERED);
    }
}
