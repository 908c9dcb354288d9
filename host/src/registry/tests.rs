//! The record's checks, one per way a row can lie.

use super::record::*;
use super::rest::{AnonKey, Row};
use super::*;

fn record_of(key: &Keypair, now: u64) -> Record {
    let peer = key.public().to_peer_id();
    Record {
        v: RECORD_VERSION,
        peer_id: peer.to_string(),
        addrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")],
        models: vec!["tiny-llama".into()],
        contract: "0.2.0".into(),
        protocol: crate::p2p::protocol::JOB_PROTOCOL.into(),
        timestamp: now,
        ttl: 300,
    }
}

fn row_of(r: &Record, s: &SignedRecord) -> Row {
    Row {
        peer_id: r.peer_id.clone(),
        multiaddrs: r.addrs.clone(),
        models: r.models.clone(),
        contract_version: r.contract.clone(),
        protocol_version: r.protocol.clone(),
        record: s.record.clone(),
        signature: s.signature.clone(),
    }
}

#[test]
fn a_signed_record_verifies_and_its_row_is_accepted() {
    let key = Keypair::generate_ed25519();
    let now = unix_now();
    let r = record_of(&key, now);
    let s = r.sign(&key).unwrap();
    assert_eq!(s.signature.len(), 128);
    assert_eq!(s.verify(now).unwrap(), r);
    assert_eq!(check_row(&row_of(&r, &s), now + 10).unwrap(), r);
}

#[test]
fn a_row_that_lies_is_rejected_by_kind() {
    let key = Keypair::generate_ed25519();
    let now = unix_now();
    let r = record_of(&key, now);
    let s = r.sign(&key).unwrap();

    // An address swapped in the column only.
    let mut row = row_of(&r, &s);
    row.multiaddrs = vec![format!("/ip4/6.6.6.6/tcp/1/p2p/{}", r.peer_id)];
    assert_eq!(check_row(&row, now), Err(Rejection::Edited("multiaddrs")));
    // Models changed in the column only.
    let mut row = row_of(&r, &s);
    row.models.push("gpt-5".into());
    assert_eq!(check_row(&row, now), Err(Rejection::Edited("models")));
    // The record itself edited: the signature no longer holds.
    let mut row = row_of(&r, &s);
    row.record = row.record.replace("127.0.0.1", "6.6.6.6");
    assert_eq!(check_row(&row, now), Err(Rejection::BadSignature));
    // A stale record replayed.
    let old = record_of(&key, now - 3600);
    let s_old = old.sign(&key).unwrap();
    assert!(matches!(
        check_row(&row_of(&old, &s_old), now),
        Err(Rejection::Stale { .. })
    ));
    // Signed for the future beyond the skew.
    let future = record_of(&key, now + 3600);
    let s_future = future.sign(&key).unwrap();
    assert!(matches!(s_future.verify(now), Err(Rejection::Stale { .. })));
}

#[test]
fn a_record_signed_by_another_key_than_its_peer_ids_is_refused() {
    let victim = Keypair::generate_ed25519();
    let attacker = Keypair::generate_ed25519();
    let now = unix_now();
    let r = record_of(&victim, now);
    // The attacker cannot use `sign` (it checks the key); sign the bytes directly.
    let text = serde_json::to_string(&r).unwrap();
    let sig = attacker.sign(&[DOMAIN, text.as_bytes()].concat()).unwrap();
    let forged = SignedRecord {
        record: text,
        signature: hex::encode(sig),
    };
    assert_eq!(forged.verify(now), Err(Rejection::BadSignature));
    assert!(
        r.sign(&attacker).is_err(),
        "sign refuses a key that is not the peer id's"
    );
}

#[test]
fn malformed_rows_are_refused_before_any_crypto() {
    let key = Keypair::generate_ed25519();
    let now = unix_now();
    let r = record_of(&key, now);
    let s = r.sign(&key).unwrap();
    let bad = |record: String, signature: String| SignedRecord { record, signature }.verify(now);
    assert!(matches!(
        bad("x".repeat(MAX_RECORD_BYTES + 1), s.signature.clone()),
        Err(Rejection::Malformed(_))
    ));
    assert!(matches!(
        bad(s.record.clone(), "zz".repeat(64)),
        Err(Rejection::Malformed(_))
    ));
    assert!(matches!(
        bad(s.record.clone(), s.signature[..126].into()),
        Err(Rejection::Malformed(_))
    ));
    assert!(matches!(
        bad("{\"v\":1}".into(), s.signature.clone()),
        Err(Rejection::Malformed(_))
    ));
    let extra = s.record.replacen("{", "{\"admin\":true,", 1);
    assert!(matches!(
        bad(extra, s.signature.clone()),
        Err(Rejection::Malformed(_))
    ));
    // An address of another peer is refused at signing.
    let mut other = r.clone();
    other.addrs = vec!["/ip4/127.0.0.1/tcp/1".into()];
    assert!(other.sign(&key).is_err());
    // Too many addresses.
    let mut many = r.clone();
    many.addrs = (0..17)
        .map(|i| format!("/ip4/127.0.0.1/tcp/{i}/p2p/{}", r.peer_id))
        .collect();
    assert!(many.sign(&key).is_err());
}

#[test]
fn a_peer_id_without_an_embedded_key_is_refused() {
    // A sha256 peer id (what an RSA key gets) embeds no key to check with.
    let peer = PeerId::random();
    assert!(record::key_of(&peer).is_none());
    let key = Keypair::generate_ed25519();
    assert!(record::key_of(&key.public().to_peer_id()).is_some());
}

#[test]
fn the_anon_key_never_shows_in_debug_output() {
    let key = AnonKey::new("eyJ-secret-looking-key".into());
    let rest = rest::Rest::new("http://127.0.0.1:9", key).unwrap();
    let shown = format!("{rest:?}");
    assert!(!shown.contains("secret-looking"), "{shown}");
    assert!(shown.contains("redacted"));
}

#[test]
fn backoff_doubles_to_its_cap() {
    let mut b = Backoff::new(Duration::from_secs(8));
    let waits: Vec<u64> = (0..6).map(|_| b.next().as_millis() as u64).collect();
    for (w, base) in waits.iter().zip([1000, 2000, 4000, 8000, 8000, 8000]) {
        assert!(*w >= base && *w <= base * 5 / 4, "{waits:?}");
    }
    b.reset();
    assert!(b.next() < Duration::from_millis(1300));
}
