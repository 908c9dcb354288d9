//! The registry end to end: nodes that register and heartbeat through the
//! REST client, a client with no bootstrap address that finds providers in
//! the registry and pays for a job, rows forged in the database that the
//! client ignores and counts, and a registry that is down or erroring while
//! the node keeps working on its static peers.
//!
//! Real parts: a PostgreSQL cluster with the migrations
//! (`infernet_tests::postgres`), the local PostgREST responder running each
//! request as `anon` on it (`infernet_tests::postgrest`), real nodes.

use infernet_host::config::Config;
use infernet_host::p2p::libp2p::identity::Keypair;
use infernet_host::p2p::protocol::WireOutput;
use infernet_host::registry::record::{Record, SignedRecord, DOMAIN, RECORD_VERSION};
use infernet_host::registry::{unix_now, Registry, RegistryError};
use infernet_host::sdk::{InferOptions, Infernet};
use infernet_host::store::JobState;
use infernet_tests::net::{
    cli, echo_provider_toml, funded_client, wait_for, wait_for_providers, with_ledger, NodeProc,
};
use infernet_tests::postgres::Cluster;
use infernet_tests::postgrest::Responder;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

/// A fresh environment variable name holding `responder`'s anon key (tests
/// share the process: never reuse a name).
fn anon_key_env(responder: &Responder) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "INFERNET_TEST_ANON_KEY_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    std::env::set_var(&name, responder.anon_key());
    name
}

fn registry_toml(url: &str, env: &str, extra: &str) -> String {
    format!("\n[registry]\nurl = {url:?}\nanon_key_env = {env:?}\nheartbeat_secs = 5\nttl_secs = 60\n{extra}\n")
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

/// The registry's database, as its owner (superuser). The `postgres`
/// crate runs its own runtime: every use leaves the test's async context.
struct Db {
    url: String,
}

impl Db {
    fn run<T>(&self, f: impl FnOnce(&mut postgres::Client) -> T) -> T {
        tokio::task::block_in_place(|| {
            let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
            f(&mut c)
        })
    }
}

/// A database with the migrations, its rate limit lowered so heartbeats
/// every 5 s pass, and a responder on it.
fn registry_db() -> (Db, Responder) {
    tokio::task::block_in_place(|| {
        let cluster = Cluster::shared();
        let db = Db {
            url: cluster.url(&cluster.fresh_db()),
        };
        db.run(|c| {
            c.batch_execute("update registry_private.settings set min_interval_secs = 1")
                .unwrap()
        });
        let responder = Responder::start(&db.url, JWT_SECRET);
        (db, responder)
    })
}

fn registry_for(responder: &Responder) -> Registry {
    let cfg = Config::parse(
        &format!(
            "[node]\n{}",
            registry_toml(&responder.url(), &anon_key_env(responder), "")
        ),
        Path::new("."),
    )
    .unwrap();
    Registry::from_config(cfg.registry.as_ref().unwrap()).unwrap()
}

fn record(key: &Keypair, addr: &str, models: &[&str], timestamp: u64) -> Record {
    let peer = key.public().to_peer_id();
    Record {
        v: RECORD_VERSION,
        peer_id: peer.to_string(),
        addrs: vec![format!("{addr}/p2p/{peer}")],
        models: models.iter().map(|m| m.to_string()).collect(),
        contract: "0.2.0".into(),
        protocol: infernet_host::p2p::protocol::JOB_PROTOCOL.into(),
        timestamp,
        ttl: 600,
    }
}

/// Writes a row as the database's owner would (bypassing `register_node`):
/// what an attacker with the service key, or a compromised database, can do.
fn insert_row(db: &Db, r: &Record, signed: &SignedRecord) {
    db.run(|c| c.execute(
        "insert into public.bootstrap_nodes (peer_id, multiaddrs, models, contract_version, protocol_version, record, signature, record_timestamp, last_seen, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, now(), now() + interval '10 minutes') \
         on conflict (peer_id) do update set multiaddrs = excluded.multiaddrs, models = excluded.models, record = excluded.record, signature = excluded.signature, record_timestamp = excluded.record_timestamp, expires_at = excluded.expires_at",
        &[&r.peer_id, &r.addrs, &r.models, &r.contract, &r.protocol, &signed.record, &signed.signature, &(r.timestamp as i64)],
    ))
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_with_no_bootstrap_address_finds_providers_in_the_registry_and_pays() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (db, responder) = registry_db();
    let env = anon_key_env(&responder);
    let reg = registry_toml(&responder.url(), &env, "");
    // Two providers with no static peer at all: they register, and find
    // each other through the registry too.
    let mut providers = Vec::new();
    for (i, rate) in [5u64, 7].iter().enumerate() {
        let config = echo_provider_toml(root, &format!("p{i}"), *rate, &[]);
        with_ledger(&config, root, "confirm = \"client\"");
        append(&config, &reg);
        providers.push(NodeProc::start_with_env(
            &config,
            &[(env.as_str(), &responder.anon_key())],
        ));
    }
    let mut peers: Vec<String> = providers.iter().map(|p| p.peer.clone()).collect();
    peers.sort();
    let registered = |db: &Db| -> Vec<(String, std::time::SystemTime)> {
        db.run(|c| {
            c.query(
                "select peer_id, last_seen from public.bootstrap_nodes order by peer_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        })
    };
    let first = tokio::task::block_in_place(|| {
        wait_for("both providers registered", Duration::from_secs(30), || {
            let rows = registered(&db);
            (rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>() == peers).then_some(rows)
        })
    });

    // The client: no bootstrap address, only the registry.
    let config = funded_client(root, &[], &reg);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("bootstrap = []"), "{text}");
    let client = Infernet::new(Config::load(&config).unwrap())
        .start()
        .await
        .unwrap();
    wait_for_providers(&client, "echo", 2).await;
    let out = client
        .infer(
            "echo",
            "found through the registry",
            InferOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        out.output,
        WireOutput::Text("found through the registry".into())
    );
    let job = client.store().jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Settled, "{job:?}");
    assert!(out.price.amount > 0);
    assert!(peers.contains(&out.provider.to_string()));
    let stats = client.registry_stats().expect("the client has a registry");
    assert!(stats.accepted >= 2, "{stats:?}");
    assert!(stats.rejected.is_empty(), "{stats:?}");
    assert_eq!(
        stats.registered, 0,
        "a client only does not register: {stats:?}"
    );
    assert!(
        registered(&db)
            .iter()
            .all(|r| r.0 != client.peer_id().to_string()),
        "the client is not in the registry"
    );

    // The CLI shows the same verified rows.
    let listed: serde_json::Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        cli(&config, &["registry", "list", "--json"])
    }))
    .unwrap();
    let mut shown: Vec<String> = listed["verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["peer_id"].as_str().unwrap().to_string())
        .collect();
    shown.sort();
    assert_eq!(shown, peers, "{listed}");

    // The providers heartbeat: each row's last_seen moves on.
    tokio::task::block_in_place(|| {
        wait_for(
            "a heartbeat of each provider",
            Duration::from_secs(20),
            || {
                let now = registered(&db);
                now.iter().zip(&first).all(|(a, b)| a.1 > b.1).then_some(())
            },
        )
    });
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_forged_in_the_database_are_ignored_and_counted() {
    let (db, responder) = registry_db();
    let registry = registry_for(&responder);
    let now = unix_now();
    let me = Keypair::generate_ed25519();

    // One honest node, registered through the RPC.
    let honest = Keypair::generate_ed25519();
    let good = record(&honest, "/ip4/127.0.0.1/tcp/4101", &["echo"], now);
    let addrs: Vec<_> = good.addrs.iter().map(|a| a.parse().unwrap()).collect();
    registry
        .register(&honest, &addrs, &good.models)
        .await
        .unwrap();

    // Rows edited or planted behind the RPC's back.
    let forge = |what: &str| -> (Record, SignedRecord) {
        let key = Keypair::generate_ed25519();
        let r = record(&key, "/ip4/127.0.0.1/tcp/4102", &["echo"], now);
        let s = r.sign(&key).unwrap();
        match what {
            "stale" => {
                let old = record(&key, "/ip4/127.0.0.1/tcp/4102", &["echo"], now - 7200);
                let s = old.sign(&key).unwrap();
                (old, s)
            }
            "foreign-key" => {
                // Signed by another key than the one in the peer id.
                let other = Keypair::generate_ed25519();
                let text = s.record.clone();
                let sig = other.sign(&[DOMAIN, text.as_bytes()].concat()).unwrap();
                (
                    r,
                    SignedRecord {
                        record: text,
                        signature: hex::encode(sig),
                    },
                )
            }
            _ => (r, s),
        }
    };
    // Address swapped in the column.
    let (mut r1, s1) = forge("ok");
    r1.addrs = vec![format!("/ip4/6.6.6.6/tcp/1/p2p/{}", r1.peer_id)];
    insert_row(&db, &r1, &s1);
    // Models changed in the column.
    let (mut r2, s2) = forge("ok");
    r2.models = vec!["every-model".into()];
    insert_row(&db, &r2, &s2);
    // Address swapped inside the record itself.
    let (r3, mut s3) = forge("ok");
    s3.record = s3.record.replace("127.0.0.1", "6.6.6.6");
    let mut r3e = r3.clone();
    r3e.addrs = vec![r3.addrs[0].replace("127.0.0.1", "6.6.6.6")];
    insert_row(&db, &r3e, &s3);
    // A stale record replayed with a fresh expiry.
    let (r4, s4) = forge("stale");
    insert_row(&db, &r4, &s4);
    // A record signed by a key that is not its peer id's.
    let (r5, s5) = forge("foreign-key");
    insert_row(&db, &r5, &s5);
    // Not a record at all.
    let (r6, mut s6) = forge("ok");
    s6.record = "{\"v\":1}".into();
    insert_row(&db, &r6, &s6);

    let found = registry.fetch(&me.public().to_peer_id()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].peer_id, good.peer_id);
    assert_eq!(found[0].addrs, good.addrs);
    let stats = registry.stats();
    assert_eq!(stats.accepted, 1, "{stats:?}");
    assert_eq!(stats.rejected.get("edited"), Some(&2), "{stats:?}");
    assert_eq!(stats.rejected.get("bad_signature"), Some(&2), "{stats:?}");
    assert_eq!(stats.rejected.get("stale"), Some(&1), "{stats:?}");
    assert_eq!(stats.rejected.get("malformed"), Some(&1), "{stats:?}");

    // Now edit the honest row's address: it is dropped too.
    db.run(|c| {
        c.execute(
            "update public.bootstrap_nodes set multiaddrs = array['/ip4/6.6.6.6/tcp/1/p2p/' || peer_id] where peer_id = $1",
            &[&good.peer_id],
        )
        .unwrap()
    });
    let found = registry.fetch(&me.public().to_peer_id()).await.unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(registry.stats().rejected.get("edited"), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpc_refuses_bad_records_through_rest_with_postgrest_errors() {
    let (_db, responder) = registry_db();
    let key = Keypair::generate_ed25519();
    let now = unix_now();
    let r = record(&key, "/ip4/127.0.0.1/tcp/4201", &["echo"], now);
    let good = r.sign(&key).unwrap();
    let rest = registry_rest(&responder);
    let refused = |e: RegistryError| match e {
        RegistryError::Refused {
            status,
            code,
            message,
        } => (status, code, message),
        other => panic!("expected a refusal, got {other}"),
    };

    // Oversized.
    let mut big = good.clone();
    big.record = format!("{}{}", big.record, " ".repeat(5000));
    let (status, _, message) = refused(rest.register(&big).await.unwrap_err());
    assert_eq!(status, 400, "{message}");
    // Malformed.
    let mut bad = good.clone();
    bad.record = "{not json".into();
    let (status, _, message) = refused(rest.register(&bad).await.unwrap_err());
    assert_eq!(status, 400, "{message}");
    // A wrong signature (one bit flipped).
    let mut flipped = good.clone();
    let mut sig = hex::decode(&flipped.signature).unwrap();
    sig[5] ^= 1;
    flipped.signature = hex::encode(sig);
    let (status, _, message) = refused(rest.register(&flipped).await.unwrap_err());
    assert!(status == 400 || status == 403, "{status} {message}");
    assert!(message.contains("signature"), "{message}");
    // A peer id that does not match the key that signed.
    let other = Keypair::generate_ed25519();
    let sig = other
        .sign(&[DOMAIN, good.record.as_bytes()].concat())
        .unwrap();
    let wrong_key = SignedRecord {
        record: good.record.clone(),
        signature: hex::encode(sig),
    };
    let (_, _, message) = refused(rest.register(&wrong_key).await.unwrap_err());
    assert!(message.contains("signature"), "{message}");

    // The good one passes; the same peer again at once is rate-limited.
    rest.register(&good).await.unwrap();
    let again = record(&key, "/ip4/127.0.0.1/tcp/4201", &["echo"], now + 1)
        .sign(&key)
        .unwrap();
    let (status, code, message) = refused(rest.register(&again).await.unwrap_err());
    assert_eq!((status, code.as_str()), (429, "PT429"), "{message}");
}

fn registry_rest(responder: &Responder) -> infernet_host::registry::rest::Rest {
    infernet_host::registry::rest::Rest::new(
        &responder.url(),
        infernet_host::registry::rest::AnonKey::new(responder.anon_key()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_down_or_erroring_registry_leaves_the_node_working_on_static_peers() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (_db, responder) = registry_db();

    // No anon key in the environment: the node refuses to start, naming the variable.
    let missing = format!("INFERNET_TEST_UNSET_{}", std::process::id());
    let provider_cfg = echo_provider_toml(root, "p0", 5, &[]);
    with_ledger(&provider_cfg, root, "confirm = \"client\"");
    let provider = NodeProc::start(&provider_cfg);
    let unset = funded_client(
        root,
        std::slice::from_ref(&provider.addr),
        &registry_toml(&responder.url(), &missing, ""),
    );
    let err = match Infernet::new(Config::load(&unset).unwrap()).start().await {
        Ok(_) => panic!("a node whose anon key is not set started"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&missing), "{err}");

    // Unreachable: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = anon_key_env(&responder);
    let cfg = Config::parse(
        &format!("[node]\n{}", registry_toml(&closed_url, &env, "")),
        Path::new("."),
    )
    .unwrap();
    let down = Registry::from_config(cfg.registry.as_ref().unwrap()).unwrap();
    let me = Keypair::generate_ed25519().public().to_peer_id();
    assert!(matches!(
        down.fetch(&me).await,
        Err(RegistryError::Unreachable(_))
    ));
    assert_eq!(down.stats().failures, 1);

    // Garbage: a server that answers 200 with something that is not JSON.
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_url = format!("http://{}", garbage.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in garbage.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!",
            );
        }
    });
    let cfg = Config::parse(
        &format!("[node]\n{}", registry_toml(&garbage_url, &env, "")),
        Path::new("."),
    )
    .unwrap();
    let junk = Registry::from_config(cfg.registry.as_ref().unwrap()).unwrap();
    assert!(matches!(
        junk.fetch(&me).await,
        Err(RegistryError::BadAnswer(_))
    ));

    // Erroring: the registry answers 503 while the client registers; the
    // client still runs a paid job through its static peer, and registers
    // once the registry is back.
    responder.set_failing(Some(503));
    std::fs::create_dir_all(root.join("second")).unwrap();
    let config = funded_client(
        &root.join("second"),
        std::slice::from_ref(&provider.addr),
        &registry_toml(&responder.url(), &env, "register = true"),
    );
    let client = Infernet::new(Config::load(&config).unwrap())
        .start()
        .await
        .unwrap();
    wait_for_providers(&client, "echo", 1).await;
    let out = client
        .infer("echo", "static peers still work", InferOptions::default())
        .await
        .unwrap();
    assert_eq!(
        out.output,
        WireOutput::Text("static peers still work".into())
    );
    let stats = client.registry_stats().unwrap();
    assert!(stats.failures >= 1 && stats.registered == 0, "{stats:?}");
    assert!(
        stats.last_error.as_deref().unwrap_or("").contains("503"),
        "{stats:?}"
    );
    responder.set_failing(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.registry_stats().unwrap().registered == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never registered after the registry came back: {:?}",
            client.registry_stats()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client.shutdown().await;
}
