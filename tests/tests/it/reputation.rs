//! Reputation from verified outcomes over real swarms: attestations travel
//! on their own gossip topic, the gate at the receiver refuses forged,
//! oversized, relayed, self-, stale-, future-dated and duplicate ones, and
//! one that passes is stored and weighed by its attester's standing in the
//! receiver's own view — a verifier whose work the receiver checked moves
//! its score of a provider, a swarm of fresh identities does not.

use infernet_host::config::Config;
use infernet_host::p2p::attestation::{Attestation, AttestationRejection, Outcome};
use infernet_host::p2p::libp2p::identity::Keypair;
use infernet_host::p2p::protocol::{now_ms, Encoded};
use infernet_host::p2p::{
    load_or_create_identity, start, NetworkConfig, NetworkEvent, NetworkHandle, PeerId,
    SignedAttestation,
};
use infernet_host::sdk::Infernet;
use infernet_host::store::Store;
use infernet_host::verify::reputation::{self, Params, Score};
use infernet_tests::net::client_toml;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it returns true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn id(k: &Keypair) -> String {
    k.public().to_peer_id().to_string()
}

fn signed(k: &Keypair, subject: &str, job: &str, outcome: Outcome, at: u64) -> SignedAttestation {
    let evidence = (outcome == Outcome::Cheated).then(|| reputation::evidence_hash(job.as_bytes()));
    reputation::sign(k, subject, job, outcome, evidence, at).unwrap()
}

/// Publishes fresh valid probes from `from` (key `key`) until `arrived`
/// says one got through: the gossip mesh is up.
async fn until_through<F, Fut>(from: &NetworkHandle, key: &Keypair, mut arrived: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let probe = PeerId::random().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        let a = signed(
            key,
            &probe,
            &format!("probe-{i}"),
            Outcome::Verified,
            now_ms(),
        );
        from.publish_attestation(a).await.unwrap();
        if eventually(Duration::from_millis(500), &mut arrived).await {
            return;
        }
        assert!(Instant::now() < deadline, "no attestation got through");
    }
}

async fn node(dir: &Path) -> NetworkHandle {
    start(NetworkConfig::loopback(dir), None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attestation_gate_refuses_forged_oversized_relayed_and_badly_timed_ones() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let attester = node(da.path()).await;
    let receiver = node(db.path()).await;
    let mut events = receiver.subscribe();
    receiver
        .dial(attester.dialable_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();
    let key = load_or_create_identity(da.path()).unwrap();
    until_through(&attester, &key, || async {
        receiver.metrics().attestations_accepted >= 1
    })
    .await;
    let before = receiver.metrics();
    assert_eq!(before.attestations_invalid, 0);

    let subject = PeerId::random().to_string();
    let now = now_ms();
    let good = signed(&key, &subject, "job-1", Outcome::Cheated, now);
    // Signed, then flipped to `verified`.
    let mut flipped: Attestation = good.payload.value().clone();
    flipped.outcome = Outcome::Verified;
    flipped.evidence = None;
    let forged = SignedAttestation {
        payload: Encoded::new(flipped).unwrap(),
        ..good.clone()
    };
    // A valid attestation by someone else, relayed under the attester's name.
    let other = Keypair::generate_ed25519();
    let relayed = signed(&other, &subject, "job-2", Outcome::Verified, now);
    // About the attester itself.
    let own = signed(&key, &id(&key), "job-3", Outcome::Verified, now);
    // Too big (a 4 KiB job id).
    let big = signed(&key, &subject, &"x".repeat(4096), Outcome::Verified, now);
    // Ten minutes ahead; an hour old.
    let ahead = signed(&key, &subject, "job-4", Outcome::Verified, now + 600_000);
    let stale = signed(&key, &subject, "job-5", Outcome::Verified, now - 3_600_000);
    // The good one twice (the second a fresh gossip message with the same
    // (attester, job)), the ignored ones, then the invalid ones (each costs
    // the attester gossip score: four put it at the graylist threshold).
    for a in [
        good.clone(),
        good.clone(),
        ahead,
        stale,
        forged,
        relayed,
        own,
        big,
    ] {
        attester.publish_attestation(a).await.unwrap();
    }

    let ok = eventually(Duration::from_secs(10), || async {
        let m = receiver.metrics();
        m.attestations_invalid - before.attestations_invalid >= 4
            && m.attestations_ignored - before.attestations_ignored >= 3
            && m.attestations_accepted - before.attestations_accepted >= 1
    })
    .await;
    let m = receiver.metrics();
    assert!(ok, "every attestation judged: {m:?}");
    assert_eq!(
        m.attestations_invalid - before.attestations_invalid,
        4,
        "{m:?}"
    );
    assert_eq!(
        m.attestations_ignored - before.attestations_ignored,
        3,
        "{m:?}"
    );

    // What the receiver announced: only the good one passed; each
    // refusal with its reason.
    let (mut passed, mut reasons) = (Vec::new(), Vec::new());
    while let Ok(ev) = events.try_recv() {
        match ev {
            NetworkEvent::AttestationReceived(a) if a.payload.subject == subject => {
                passed.push(a.payload.job_id.clone())
            }
            NetworkEvent::AttestationRejected { reason, .. } => reasons.push(reason),
            _ => {}
        }
    }
    assert_eq!(passed, vec!["job-1".to_string()]);
    let has = |f: fn(&AttestationRejection) -> bool| reasons.iter().any(f);
    assert!(
        has(|r| matches!(r, AttestationRejection::BadSignature)),
        "{reasons:?}"
    );
    assert!(
        has(|r| matches!(r, AttestationRejection::NotTheAuthor { .. })),
        "{reasons:?}"
    );
    assert!(
        has(|r| matches!(r, AttestationRejection::SelfAttestation(_))),
        "{reasons:?}"
    );
    assert!(
        has(|r| matches!(r, AttestationRejection::Oversized { .. })),
        "{reasons:?}"
    );
    assert!(
        has(|r| matches!(r, AttestationRejection::Future { .. })),
        "{reasons:?}"
    );
    assert!(
        has(|r| matches!(r, AttestationRejection::Stale { .. })),
        "{reasons:?}"
    );
    assert!(
        has(|r| matches!(r, AttestationRejection::Duplicate { .. })),
        "{reasons:?}"
    );
    attester.shutdown().await;
    receiver.shutdown().await;
}

/// A client-only node started in-process.
async fn client(root: &Path, name: &str, boot: &[String]) -> (Infernet, Keypair) {
    let config = client_toml(root, name, boot, "");
    let node = Infernet::new(Config::load(&config).unwrap())
        .start()
        .await
        .unwrap();
    let key = load_or_create_identity(&root.join(name)).unwrap();
    (node, key)
}

/// The rows `store` keeps about `subject`, by `attester`.
fn rows(store: &Store, subject: &str, attester: &str) -> usize {
    store
        .attestations()
        .about(subject, 0, 10_000)
        .unwrap()
        .iter()
        .filter(|r| r.attester == attester)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gossiped_attestation_moves_a_score_by_its_attesters_standing_and_sybils_by_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (observer, observer_key) = client(root, "observer", &[]).await;
    let boot = vec![observer.dialable_addrs().await.unwrap()[0].to_string()];
    let (verifier, verifier_key) = client(root, "verifier", &boot).await;
    let (sybil, sybil_key) = client(root, "sybil", &boot).await;
    let store = observer.store().clone();
    let subject = PeerId::random();
    let s = subject.to_string();
    let (vid, sid) = (id(&verifier_key), id(&sybil_key));
    // Both publishers reach the observer's gate (the mesh is up).
    for (node, key) in [(&verifier, &verifier_key), (&sybil, &sybil_key)] {
        let from = id(key);
        until_through(node.network(), key, || {
            let (st, from) = (store.clone(), from.clone());
            async move {
                st.attestations()
                    .by(&from, 0, 10)
                    .is_ok_and(|r| !r.is_empty())
            }
        })
        .await;
    }

    // The observer checked the verifier's work itself, 20 times (the
    // verifier is also a provider): first-hand standing.
    let now = now_ms();
    for i in 0..20 {
        let a = signed(
            &observer_key,
            &vid,
            &format!("v{i}"),
            Outcome::Verified,
            now - i,
        );
        reputation::record(&store, &a, now as i64).unwrap();
    }
    let stranger = Score::stranger(&Params::default());
    let before = observer.reputation(&subject).unwrap();
    assert_eq!(before, stranger);

    // 1. A fresh identity says the subject cheated, 30 times: stored
    //    (valid, signed by its author), weighed 0. (Paced: a forwarder's
    //    gossip past 20 messages a second is ignored unread.)
    for i in 0..30 {
        let a = signed(&sybil_key, &s, &format!("s{i}"), Outcome::Cheated, now_ms());
        sybil.network().publish_attestation(a).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            rows(&store, &s, &sid) == 30
        })
        .await,
        "the sybil's attestations arrive: {}",
        rows(&store, &s, &sid)
    );
    assert_eq!(
        observer.reputation(&subject).unwrap(),
        before,
        "moved by nothing"
    );

    // 2. A forged and a future-dated one from the verifier: refused, not
    //    stored.
    let good = signed(&verifier_key, &s, "c1", Outcome::Cheated, now_ms());
    let mut flipped: Attestation = good.payload.value().clone();
    flipped.job_id = "c0".into();
    let forged = SignedAttestation {
        payload: Encoded::new(flipped).unwrap(),
        ..good.clone()
    };
    let ahead = signed(
        &verifier_key,
        &s,
        "c2",
        Outcome::Cheated,
        now_ms() + 600_000,
    );
    let invalid_before = observer.network().metrics().attestations_invalid;
    verifier
        .network()
        .publish_attestation(forged)
        .await
        .unwrap();
    verifier.network().publish_attestation(ahead).await.unwrap();

    // 3. The verifier's valid word: the subject cheated.
    verifier.network().publish_attestation(good).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            rows(&store, &s, &vid) >= 1
        })
        .await,
        "the verifier's attestation arrives"
    );
    let after = observer.reputation(&subject).unwrap();
    let p = Params::default();
    // Weight 0.5 · 20 / (20 + 10) = 1/3 of a first-hand observation; one
    // cheat (20) is capped at 4 observations for one attester.
    assert!(
        (after.third_party.bad - p.per_attester_cap).abs() < 1e-9,
        "{after:?}"
    );
    assert_eq!(after.third_party.ok, 0.0);
    assert!(after.lower < before.lower && after.mean < 0.2, "{after:?}");
    assert!(after.barred, "a trusted verifier's ruling bars a stranger");
    assert_eq!(
        rows(&store, &s, &vid),
        1,
        "forged and future-dated: not stored"
    );
    assert!(observer.network().metrics().attestations_invalid > invalid_before);

    // The stored rows are the signed attestations, checkable again.
    for r in store.attestations().about(&s, 0, 100).unwrap() {
        let a = reputation::signed_of(&r).unwrap();
        assert_eq!(a.payload.attester, r.attester);
    }
    for n in [sybil, verifier, observer] {
        n.shutdown().await;
    }
}

#[test]
fn bad_reputation_settings_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map_err(|e| e.to_string())
    };
    for (text, key) in [
        ("half_life_days = 0.0", "client.reputation.half_life_days"),
        ("half_life_days = nan", "client.reputation.half_life_days"),
        ("cheat_weight = 0.5", "client.reputation.cheat_weight"),
        ("stake_weight = 0.9", "client.reputation.stake_weight"),
        ("stake_weight = -0.1", "client.reputation.stake_weight"),
        ("half_life = 7.0", "half_life"),
    ] {
        let err = load(&format!("[client.reputation]\n{text}\n")).expect_err(text);
        assert!(err.contains(key), "{text}: {err}");
    }
    let ok = load("[client.reputation]\nhalf_life_days = 14.0\nstake_weight = 0.0\n").unwrap();
    let p = Params::from_config(&ok.client.reputation);
    assert_eq!(p.half_life_ms, 14.0 * reputation::DAY_MS);
    assert_eq!(p.cheat_weight, 20.0, "the default");
    assert_eq!(p.stake_weight, 0.0);
}
