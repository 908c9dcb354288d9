//! Real libp2p swarms on 127.0.0.1: discovery through one bootstrap peer on
//! a 6-node network, advert checks (forged, stale, unknown version, stolen
//! key), and identity persistence across restarts.

use infernet_host::p2p::protocol::{now_ms, Encoded, PROTOCOL_VERSION};
use infernet_host::p2p::{
    load_or_create_identity, start, Advert, AdvertSpec, JobBody, JobHandler, JobMessage, Money,
    NetworkConfig, NetworkError, NetworkHandle, PeerId, SharedHandler, SignedAdvert, IDENTITY_FILE,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Answers every request with an `Ack` naming the responder.
struct AckHandler;

impl JobHandler for AckHandler {
    async fn handle(&self, _from: PeerId, msg: JobMessage) -> JobMessage {
        JobMessage::ack(msg.job_id().unwrap_or("none"))
    }
}

async fn node(dir: &Path, provider: bool) -> NetworkHandle {
    let handler = provider.then(|| SharedHandler::new(AckHandler));
    start(NetworkConfig::loopback(dir), handler)
        .await
        .expect("node starts")
}

fn spec(models: &[&str]) -> AdvertSpec {
    AdvertSpec {
        models: models.iter().map(|m| m.to_string()).collect(),
        quote: Money {
            amount: 1_000,
            currency: "USD".into(),
        },
        capacity: 4,
        wit_version: "0.1.0".into(),
        stake: None,
        stake_cert: None,
        proofs: vec![],
        verifier: false,
        untraced: vec![],
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_finds_every_provider_through_one_bootstrap_peer() {
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let bootstrap = node(dirs[0].path(), false).await;
    let boot_addr = bootstrap.dialable_addrs().await.unwrap()[0].clone();

    // Four providers of `tiny`, one of which also serves `other`.
    let mut providers = Vec::new();
    for (i, d) in dirs[1..5].iter().enumerate() {
        let p = node(d.path(), true).await;
        assert_eq!(
            p.dial(boot_addr.clone()).await.unwrap(),
            bootstrap.peer_id()
        );
        let models: &[&str] = if i == 3 {
            &["tiny", "other"]
        } else {
            &["tiny"]
        };
        p.publish_advert(spec(models)).await.unwrap();
        providers.push(p);
    }
    let expected: BTreeSet<PeerId> = providers.iter().map(|p| p.peer_id()).collect();

    // The client knows only the bootstrap node.
    let client = node(dirs[5].path(), false).await;
    let t0 = Instant::now();
    client.dial(boot_addr.clone()).await.unwrap();
    // The bootstrap node's address is all the client was given; everything
    // else it learns from the DHT and gossip.
    assert!(client
        .connected_peers()
        .await
        .unwrap()
        .contains(&bootstrap.peer_id()));

    let mut found = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let list = client.providers_of("tiny").await.unwrap();
        found = list
            .iter()
            .filter(|i| i.via_dht)
            .map(|i| i.peer_id)
            .collect();
        if found == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = found == expected;
    let dht_time = t0.elapsed();
    assert!(ok, "DHT found {found:?}, expected {expected:?}");

    let ok = eventually(Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            let adverts = client.adverts().await.unwrap();
            let peers: BTreeSet<String> = adverts.iter().map(|a| a.peer_id.clone()).collect();
            peers.len() == 4
        }
    })
    .await;
    let gossip_time = t0.elapsed();
    assert!(ok, "gossip adverts from all 4 providers");
    eprintln!("6-node discovery: all 4 providers via DHT after {dht_time:?}, via gossip after {gossip_time:?}");

    let list = client.providers_of("tiny").await.unwrap();
    assert_eq!(list.len(), 4);
    for info in &list {
        let advert = info.advert.as_ref().expect("advert known");
        assert!(advert.models.contains(&"tiny".to_string()));
        assert!(
            !info.addrs.is_empty(),
            "addresses known for {}",
            info.peer_id
        );
    }
    let other = client.providers_of("other").await.unwrap();
    assert_eq!(
        other.iter().map(|i| i.peer_id).collect::<Vec<_>>(),
        vec![providers[3].peer_id()]
    );
    assert!(client
        .providers_of("unknown-model")
        .await
        .unwrap()
        .is_empty());

    // A provider found only through discovery is reachable for a job.
    let target = list[0].peer_id;
    let reply = client
        .send_job(target, JobMessage::ack("ping-job"))
        .await
        .unwrap();
    assert_eq!(
        reply.body,
        JobBody::Ack {
            job_id: "ping-job".into()
        }
    );
    // A client-only node refuses jobs.
    let reply = providers[0]
        .send_job(client.peer_id(), JobMessage::ack("x"))
        .await
        .unwrap();
    assert!(
        matches!(reply.body, JobBody::Error(ref e) if e.code == infernet_host::p2p::ErrorCode::NotAProvider)
    );

    for n in providers.iter().chain([&client, &bootstrap]) {
        n.shutdown().await;
    }
}

fn advert_of(key_peer: PeerId, ts: u64, version: u16, models: &[&str]) -> Advert {
    Advert {
        peer_id: key_peer.to_string(),
        addrs: vec![],
        models: models.iter().map(|m| m.to_string()).collect(),
        quote: Money {
            amount: 1,
            currency: "USD".into(),
        },
        capacity: 1,
        wit_version: "0.1.0".into(),
        protocol_version: version,
        stake: None,
        stake_cert: None,
        timestamp_ms: ts,
        proofs: vec![],
        verifier: false,
        untraced: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_unknown_version_adverts_are_dropped_and_counted() {
    let (da, dv) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let attacker = node(da.path(), true).await;
    let victim = node(dv.path(), false).await;
    victim
        .dial(attacker.dialable_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();

    // A legitimate advert gets through first: the gossip mesh is up.
    attacker.publish_advert(spec(&["honest"])).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            victim.metrics().adverts_accepted >= 1
        })
        .await,
        "honest advert accepted"
    );
    let before = victim.metrics();
    assert_eq!(before.adverts_dropped(), 0);

    let key = load_or_create_identity(da.path()).unwrap();
    let me = attacker.peer_id();
    let now = now_ms();
    // Forged: signed, then the models changed.
    let honest =
        SignedAdvert::sign(advert_of(me, now, PROTOCOL_VERSION, &["honest"]), &key).unwrap();
    let forged = SignedAdvert {
        payload: Encoded::new(advert_of(me, now, PROTOCOL_VERSION, &["forged-model"])).unwrap(),
        ..honest
    };
    // Stale: validly signed, ten minutes old.
    let stale = SignedAdvert::sign(
        advert_of(me, now - 10 * 60 * 1000, PROTOCOL_VERSION, &["stale-model"]),
        &key,
    )
    .unwrap();
    // Unknown protocol version, validly signed.
    let future = SignedAdvert::sign(advert_of(me, now, 99, &["future-model"]), &key).unwrap();
    // Claims another peer's id with the attacker's key.
    let stranger = PeerId::random();
    let stolen = SignedAdvert::sign(
        advert_of(stranger, now, PROTOCOL_VERSION, &["stolen-model"]),
        &key,
    )
    .unwrap();
    for a in [forged, stale, future, stolen] {
        attacker.publish_signed_advert(a).await.unwrap();
    }

    let ok = eventually(Duration::from_secs(10), || async {
        let m = victim.metrics();
        m.adverts_bad_signature >= 1
            && m.adverts_stale >= 1
            && m.adverts_unknown_protocol >= 1
            && m.adverts_key_mismatch >= 1
    })
    .await;
    let m = victim.metrics();
    assert!(ok, "every bad advert counted: {m:?}");
    eprintln!("advert metrics at the victim: {m:?}");
    assert_eq!(m.adverts_malformed, 0);

    // None of them made it into what the victim believes.
    for model in [
        "forged-model",
        "stale-model",
        "future-model",
        "stolen-model",
    ] {
        assert!(
            victim.providers_of(model).await.unwrap().is_empty(),
            "{model} must not be listed"
        );
    }
    let adverts = victim.adverts().await.unwrap();
    assert_eq!(adverts.len(), 1);
    assert_eq!(adverts[0].models, vec!["honest".to_string()]);
    // The honest provider is still listed.
    assert_eq!(victim.providers_of("honest").await.unwrap().len(), 1);

    attacker.shutdown().await;
    victim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_persists_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = node(dir.path(), false).await;
    let id = first.peer_id();
    // A node alone still answers discovery queries (with nobody).
    assert!(first.providers_of("anything").await.unwrap().is_empty());
    first.shutdown().await;
    assert!(dir.path().join(IDENTITY_FILE).is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "identity key must not be group/world readable"
        );
    }

    let second = node(dir.path(), false).await;
    assert_eq!(second.peer_id(), id, "same peer id after restart");
    second.shutdown().await;
    assert!(matches!(
        second.listen_addrs().await,
        Err(NetworkError::Closed)
    ));

    let other = tempfile::tempdir().unwrap();
    let third = node(other.path(), false).await;
    assert_ne!(third.peer_id(), id);
    third.shutdown().await;

    // A damaged key is an error, never silently replaced.
    std::fs::write(dir.path().join(IDENTITY_FILE), b"not a key").unwrap();
    match start(NetworkConfig::loopback(dir.path()), None).await {
        Err(NetworkError::Identity(msg)) => assert!(msg.contains(IDENTITY_FILE), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a corrupt identity must not start"),
    }
}
