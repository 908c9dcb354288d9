//! The bootstrap registry's database (supabase/migrations, DESIGN §8) on a
//! real PostgreSQL with Supabase's roles and default grants: anon reads only
//! active rows, nobody writes but through `register_node`, which checks the
//! record's shape, rate, freshness and its Ed25519 signature (verified in
//! SQL against the key inside the peer id).

use ed25519_dalek::{Signer, SigningKey};
use infernet_tests::postgres::Cluster;
use postgres::{Client, NoTls, Transaction};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DOMAIN: &[u8] = b"infernet/registry-record/1";

/// The group order L, little-endian.
const L_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn peer_id_of(key: &SigningKey) -> String {
    let mut raw = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    raw.extend_from_slice(key.verifying_key().as_bytes());
    bs58::encode(raw).into_string()
}

fn signing_bytes(record: &str) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.push(0);
    m.extend_from_slice(record.as_bytes());
    m
}

struct Node {
    key: SigningKey,
    peer_id: String,
}

impl Node {
    fn new() -> Node {
        let key = SigningKey::from_bytes(&rand::random());
        let peer_id = peer_id_of(&key);
        assert!(
            peer_id.starts_with("12D3KooW") && peer_id.len() == 52,
            "{peer_id}"
        );
        Node { key, peer_id }
    }

    fn addr(&self, port: u16) -> String {
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", self.peer_id)
    }

    fn addr_quic(&self, port: u16) -> String {
        format!("/ip6/::1/udp/{port}/quic-v1/p2p/{}", self.peer_id)
    }

    fn record_with(&self, models: &str, timestamp: i64, ttl: i64) -> String {
        format!(
            r#"{{"v":1,"peer_id":"{p}","addrs":["{a1}","{a2}"],"models":[{models}],"contract":"0.2.0","protocol":"/infernet/job/1","timestamp":{timestamp},"ttl":{ttl}}}"#,
            p = self.peer_id,
            a1 = self.addr(4001),
            a2 = self.addr_quic(4001),
        )
    }

    fn record(&self, timestamp: i64) -> String {
        self.record_with(r#""tiny-llama","minilm""#, timestamp, 600)
    }

    fn sign(&self, record: &str) -> String {
        hex::encode(self.key.sign(&signing_bytes(record)).to_bytes())
    }
}

/// A connection (superuser) to a fresh migrated database.
fn db() -> Client {
    let cluster = Cluster::shared();
    let name = cluster.fresh_db();
    Client::connect(&cluster.url(&name), NoTls).expect("connecting to a fresh database")
}

/// Runs `f` in a transaction as `role` (with the JWT claims PostgREST sets),
/// committed when `f` succeeds.
fn as_role<T>(
    c: &mut Client,
    role: &str,
    f: impl FnOnce(&mut Transaction) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.batch_execute(&format!(
        "set local role {role}; select set_config('request.jwt.claims', '{{\"role\":\"{role}\"}}', true)"
    ))?;
    let out = f(&mut tx)?;
    tx.commit()?;
    Ok(out)
}

/// The SQLSTATE and message of a database error.
fn db_err(e: &postgres::Error) -> (String, String) {
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not an error from the database: {e:?}"));
    (d.code().code().to_string(), d.message().to_string())
}

/// `register_node` as anon: the returned JSON, or (SQLSTATE, message).
fn register(
    c: &mut Client,
    record: &str,
    signature: &str,
) -> Result<serde_json::Value, (String, String)> {
    as_role(c, "anon", |tx| {
        tx.query_one(
            "select public.register_node($1, $2)::text",
            &[&record, &signature],
        )
        .map(|r| r.get::<_, String>(0))
    })
    .map(|s| serde_json::from_str(&s).unwrap())
    .map_err(|e| db_err(&e))
}

fn expect_refused(
    c: &mut Client,
    what: &str,
    record: &str,
    signature: &str,
    code: &str,
    needle: &str,
) {
    match register(c, record, signature) {
        Ok(v) => panic!("{what}: accepted ({v})"),
        Err((got, msg)) => {
            assert_eq!(got, code, "{what}: SQLSTATE (message: {msg})");
            assert!(
                msg.contains(needle),
                "{what}: message {msg:?} lacks {needle:?}"
            );
        }
    }
}

fn count_rows(c: &mut Client) -> i64 {
    c.query_one("select count(*) from public.bootstrap_nodes", &[])
        .unwrap()
        .get(0)
}

fn verify_sql(c: &mut Client, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    c.query_one(
        "select registry_private.ed25519_verify($1, $2, $3)",
        &[&key, &msg, &sig],
    )
    .unwrap()
    .get(0)
}

#[test]
fn anon_reads_active_rows_only_and_prune_deletes_the_long_expired() {
    let mut c = db();
    let (a, b, e) = (Node::new(), Node::new(), Node::new());
    for n in [&a, &b, &e] {
        let r = n.record(now());
        register(&mut c, &r, &n.sign(&r)).unwrap();
    }
    let visible = |c: &mut Client, role: &str, from: &str| -> Vec<String> {
        as_role(c, role, |tx| {
            tx.query(
                &format!("select peer_id from public.{from} order by peer_id"),
                &[],
            )
        })
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut all = vec![a.peer_id.clone(), b.peer_id.clone(), e.peer_id.clone()];
    all.sort();
    for role in ["anon", "authenticated"] {
        assert_eq!(
            visible(&mut c, role, "active_bootstrap_nodes"),
            all,
            "{role}"
        );
        assert_eq!(visible(&mut c, role, "bootstrap_nodes"), all, "{role}");
    }
    // The view carries the signed record and its signature for clients to verify.
    let (rec, sig): (String, String) = as_role(&mut c, "anon", |tx| {
        tx.query_one(
            "select record, signature from public.active_bootstrap_nodes where peer_id = $1",
            &[&a.peer_id],
        )
        .map(|r| (r.get(0), r.get(1)))
    })
    .unwrap();
    assert_eq!(sig, a.sign(&rec));

    // b expired two hours ago (past the grace), e a minute ago (within it).
    c.execute(
        "update public.bootstrap_nodes set expires_at = now() - interval '2 hours' where peer_id = $1",
        &[&b.peer_id],
    )
    .unwrap();
    c.execute(
        "update public.bootstrap_nodes set expires_at = now() - interval '1 minute' where peer_id = $1",
        &[&e.peer_id],
    )
    .unwrap();
    for role in ["anon", "authenticated"] {
        assert_eq!(
            visible(&mut c, role, "active_bootstrap_nodes"),
            vec![a.peer_id.clone()],
            "{role}"
        );
        // RLS on the table itself, not only the view's where clause.
        assert_eq!(
            visible(&mut c, role, "bootstrap_nodes"),
            vec![a.peer_id.clone()],
            "{role}"
        );
        let expired: i64 = as_role(&mut c, role, |tx| {
            tx.query_one(
                "select count(*) from public.bootstrap_nodes where expires_at <= now()",
                &[],
            )
            .map(|r| r.get(0))
        })
        .unwrap();
        assert_eq!(expired, 0, "{role} sees expired rows");
    }
    assert_eq!(count_rows(&mut c), 3, "the superuser still sees every row");

    let pruned: i32 = c
        .query_one("select registry_private.prune_bootstrap_nodes()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        pruned, 1,
        "only the row expired for longer than the grace goes"
    );
    let left: Vec<String> = c
        .query(
            "select peer_id from public.bootstrap_nodes order by peer_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want = vec![a.peer_id.clone(), e.peer_id.clone()];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn anon_and_authenticated_cannot_write_the_table_or_the_view() {
    let mut c = db();
    let n = Node::new();
    let r = n.record(now());
    let sig = n.sign(&r);
    register(&mut c, &r, &sig).unwrap();
    let before: String = c
        .query_one(
            "select record || signature || expires_at::text from public.bootstrap_nodes",
            &[],
        )
        .unwrap()
        .get(0);

    let intruder = Node::new();
    let values = format!(
        "('{p}', array['/ip4/6.6.6.6/tcp/1/p2p/{p}'], array['evil'], '0.2.0', '/infernet/job/1', '{{}}', '{s}', 1, now(), now() + interval '1 day')",
        p = intruder.peer_id,
        s = "0".repeat(128)
    );
    let cols = "(peer_id, multiaddrs, models, contract_version, protocol_version, record, signature, record_timestamp, last_seen, expires_at)";
    let statements = [
        format!("insert into public.bootstrap_nodes {cols} values {values}"),
        format!(
            "update public.bootstrap_nodes set multiaddrs = array['/ip4/6.6.6.6/tcp/1/p2p/{}']",
            n.peer_id
        ),
        "update public.bootstrap_nodes set expires_at = now() + interval '10 years'".to_string(),
        "delete from public.bootstrap_nodes".to_string(),
        "truncate public.bootstrap_nodes".to_string(),
        format!(
            "insert into public.active_bootstrap_nodes (peer_id) values ('{}')",
            intruder.peer_id
        ),
        "update public.active_bootstrap_nodes set models = array['evil']".to_string(),
        "delete from public.active_bootstrap_nodes".to_string(),
        "select * from registry_private.settings".to_string(),
        "update registry_private.settings set min_interval_secs = 0".to_string(),
        "alter table public.bootstrap_nodes disable row level security".to_string(),
        "drop policy \"active rows are readable\" on public.bootstrap_nodes".to_string(),
    ];
    for role in ["anon", "authenticated"] {
        for sql in &statements {
            let res = as_role(&mut c, role, |tx| tx.batch_execute(sql));
            let e = res.expect_err(&format!("{role} may run: {sql}"));
            let (code, msg) = db_err(&e);
            assert!(
                code == "42501",
                "{role}: {sql}: expected permission denied (42501), got {code} {msg}"
            );
        }
    }
    assert_eq!(count_rows(&mut c), 1);
    let after: String = c
        .query_one(
            "select record || signature || expires_at::text from public.bootstrap_nodes",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(before, after, "the row changed");
}

#[test]
fn register_node_stores_the_record_rate_limits_and_refuses_replays() {
    let mut c = db();
    let n = Node::new();
    let t0 = now();
    let r0 = n.record(t0);
    let started = Instant::now();
    let out = register(&mut c, &r0, &n.sign(&r0)).unwrap();
    eprintln!(
        "register_node (with verification) took {:?}",
        started.elapsed()
    );
    assert_eq!(out["peer_id"], n.peer_id.as_str());
    assert_eq!(out["ttl"], 600);
    assert!(out["expires_at"].is_string(), "{out}");

    let row = c
        .query_one(
            "select multiaddrs, models, contract_version, protocol_version, record, signature, record_timestamp,
                    extract(epoch from expires_at)::bigint, extract(epoch from now() - last_seen)::float8
               from public.bootstrap_nodes where peer_id = $1",
            &[&n.peer_id],
        )
        .unwrap();
    let addrs: Vec<String> = row.get(0);
    assert_eq!(
        addrs,
        vec![
            n.addr(4001),
            format!("/ip6/::1/udp/4001/quic-v1/p2p/{}", n.peer_id)
        ]
    );
    assert_eq!(
        row.get::<_, Vec<String>>(1),
        vec!["tiny-llama".to_string(), "minilm".to_string()]
    );
    assert_eq!(row.get::<_, String>(2), "0.2.0");
    assert_eq!(row.get::<_, String>(3), "/infernet/job/1");
    assert_eq!(
        row.get::<_, String>(4),
        r0,
        "the record is stored byte for byte"
    );
    assert_eq!(row.get::<_, String>(5), n.sign(&r0));
    assert_eq!(row.get::<_, i64>(6), t0);
    let expires: i64 = row.get(7);
    assert!(
        (expires - (t0 + 600)).abs() <= 1,
        "expires_at {expires} vs {}",
        t0 + 600
    );
    assert!(row.get::<_, f64>(8) < 60.0);

    // Again within min_interval_secs (10): refused, even with a newer record.
    let r1 = n.record_with(r#""tiny-llama""#, t0 + 1, 600);
    expect_refused(
        &mut c,
        "within min_interval",
        &r1,
        &n.sign(&r1),
        "PT429",
        "retry later",
    );

    c.batch_execute("update registry_private.settings set min_interval_secs = 0")
        .unwrap();
    let out = register(&mut c, &r1, &n.sign(&r1)).unwrap();
    assert_eq!(out["peer_id"], n.peer_id.as_str());
    let (rec, models): (String, Vec<String>) = c
        .query_one(
            "select record, models from public.bootstrap_nodes where peer_id = $1",
            &[&n.peer_id],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(rec, r1);
    assert_eq!(models, vec!["tiny-llama".to_string()]);
    assert_eq!(count_rows(&mut c), 1);

    // The older record, validly signed, replayed: refused; so is the same timestamp.
    expect_refused(&mut c, "replay", &r0, &n.sign(&r0), "22023", "not newer");
    let same = n.record_with(r#""other""#, t0 + 1, 600);
    expect_refused(
        &mut c,
        "same timestamp",
        &same,
        &n.sign(&same),
        "22023",
        "not newer",
    );

    // Stale and future timestamps (beyond 300 s of the registry's clock).
    let m = Node::new();
    let stale = m.record(now() - 400);
    expect_refused(
        &mut c,
        "stale",
        &stale,
        &m.sign(&stale),
        "22023",
        "record.timestamp",
    );
    let future = m.record(now() + 400);
    expect_refused(
        &mut c,
        "future",
        &future,
        &m.sign(&future),
        "22023",
        "record.timestamp",
    );

    // A ttl above max_ttl_secs is clamped.
    let long = m.record_with("", now(), 1_000_000);
    let out = register(&mut c, &long, &m.sign(&long)).unwrap();
    assert_eq!(out["ttl"], 3600);
    let left: f64 = c
        .query_one(
            "select extract(epoch from expires_at - now())::float8 from public.bootstrap_nodes where peer_id = $1",
            &[&m.peer_id],
        )
        .unwrap()
        .get(0);
    assert!((3500.0..=3601.0).contains(&left), "{left}");
    assert_eq!(count_rows(&mut c), 2);
}

#[test]
fn register_node_refuses_a_full_table_to_newcomers() {
    let mut c = db();
    c.batch_execute("update registry_private.settings set max_rows = 1, min_interval_secs = 0")
        .unwrap();
    let (a, b) = (Node::new(), Node::new());
    let t = now();
    let ra = a.record(t);
    register(&mut c, &ra, &a.sign(&ra)).unwrap();
    let rb = b.record(t);
    expect_refused(&mut c, "full", &rb, &b.sign(&rb), "PT503", "full");
    // A registered peer may still refresh.
    let ra2 = a.record(t + 1);
    register(&mut c, &ra2, &a.sign(&ra2)).unwrap();
    assert_eq!(count_rows(&mut c), 1);
}

#[test]
fn register_node_refuses_bad_input_with_a_clear_message() {
    let mut c = db();
    let n = Node::new();
    let other = Node::new();
    let p = &n.peer_id;
    let t = now();
    let addr = n.addr(4001);
    // A record from its fields (raw JSON text for each).
    let rec = |v: &str, peer: &str, addrs: &str, models: &str, ts: &str, ttl: &str| {
        format!(
            r#"{{"v":{v},"peer_id":{peer},"addrs":{addrs},"models":{models},"contract":"0.2.0","protocol":"/infernet/job/1","timestamp":{ts},"ttl":{ttl}}}"#
        )
    };
    let qp = format!("\"{p}\"");
    let qa = format!("[\"{addr}\"]");
    let ts = t.to_string();
    let ok = rec("1", &qp, &qa, "[\"m\"]", &ts, "600");
    let signed = |r: &str| n.sign(r);

    let long_models = format!(
        "[{}]",
        (0..40)
            .map(|i| format!("\"{}{i:03}\"", "m".repeat(120)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "oversized",
            rec("1", &qp, &qa, &long_models, &ts, "600"),
            "4096",
        ),
        (
            "malformed JSON",
            format!("{{\"v\":1,\"peer_id\":{qp},"),
            "not valid JSON",
        ),
        ("not an object", "[1,2,3]".to_string(), "JSON object"),
        (
            "NUL escape",
            ok.replace("\"m\"", "\"m\\u0000\""),
            "not valid JSON",
        ),
        (
            "missing key",
            ok.replace(",\"ttl\":600", ""),
            "exactly the keys",
        ),
        (
            "extra key",
            ok.replace("\"v\":1,", "\"v\":1,\"admin\":true,"),
            "exactly the keys",
        ),
        (
            "duplicate key",
            ok.replace(
                "\"v\":1,",
                &format!("\"v\":1,\"peer_id\":\"{}\",", other.peer_id),
            ),
            "exactly the keys",
        ),
        ("v = 2", rec("2", &qp, &qa, "[]", &ts, "600"), "record.v"),
        (
            "v = 1.0",
            rec("1.0", &qp, &qa, "[]", &ts, "600"),
            "record.v",
        ),
        (
            "peer id not ed25519",
            rec(
                "1",
                "\"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N\"",
                &qa,
                "[]",
                &ts,
                "600",
            ),
            "record.peer_id",
        ),
        (
            "peer id bad prefix",
            rec(
                "1",
                &format!("\"{}\"", bs58::encode([0u8; 38]).into_string()),
                &qa,
                "[]",
                &ts,
                "600",
            ),
            "record.peer_id",
        ),
        (
            "peer id a number",
            rec("1", "12", &qa, "[]", &ts, "600"),
            "record.peer_id",
        ),
        (
            "addr of another peer",
            rec(
                "1",
                &qp,
                &format!("[\"{}\"]", other.addr(4001)),
                "[]",
                &ts,
                "600",
            ),
            "record.addrs",
        ),
        (
            "addr without its /p2p/",
            rec("1", &qp, "[\"/ip4/127.0.0.1/tcp/4001\"]", "[]", &ts, "600"),
            "record.addrs",
        ),
        (
            "addr not starting with /",
            rec(
                "1",
                &qp,
                &format!("[\"ip4/1.2.3.4/tcp/1/p2p/{p}\"]"),
                "[]",
                &ts,
                "600",
            ),
            "record.addrs",
        ),
        (
            "addr too long",
            rec(
                "1",
                &qp,
                &format!("[\"/dns4/{}/tcp/1/p2p/{p}\"]", "a".repeat(200)),
                "[]",
                &ts,
                "600",
            ),
            "record.addrs",
        ),
        (
            "addr with a space",
            rec(
                "1",
                &qp,
                &format!("[\"/dns4/a b/tcp/1/p2p/{p}\"]"),
                "[]",
                &ts,
                "600",
            ),
            "record.addrs",
        ),
        (
            "no addrs",
            rec("1", &qp, "[]", "[]", &ts, "600"),
            "record.addrs",
        ),
        (
            "17 addrs",
            rec(
                "1",
                &qp,
                &format!("[{}]", vec![format!("\"{addr}\""); 17].join(",")),
                "[]",
                &ts,
                "600",
            ),
            "record.addrs",
        ),
        (
            "addrs not an array",
            rec("1", &qp, &format!("\"{addr}\""), "[]", &ts, "600"),
            "record.addrs",
        ),
        (
            "65 models",
            rec(
                "1",
                &qp,
                &qa,
                &format!("[{}]", vec!["\"m\""; 65].join(",")),
                &ts,
                "600",
            ),
            "record.models",
        ),
        (
            "empty model",
            rec("1", &qp, &qa, "[\"\"]", &ts, "600"),
            "record.models",
        ),
        (
            "model not a string",
            rec("1", &qp, &qa, "[1]", &ts, "600"),
            "record.models",
        ),
        (
            "timestamp a string",
            rec("1", &qp, &qa, "[]", &format!("\"{t}\""), "600"),
            "record.timestamp",
        ),
        (
            "timestamp a float",
            rec("1", &qp, &qa, "[]", &format!("{t}.0"), "600"),
            "record.timestamp",
        ),
        (
            "timestamp negative",
            rec("1", &qp, &qa, "[]", "-1", "600"),
            "record.timestamp",
        ),
        (
            "ttl too short",
            rec("1", &qp, &qa, "[]", &ts, "10"),
            "record.ttl",
        ),
        (
            "ttl exponent",
            rec("1", &qp, &qa, "[]", &ts, "6e2"),
            "record.ttl",
        ),
        (
            "contract too long",
            ok.replace("\"0.2.0\"", &format!("\"{}\"", "9".repeat(65))),
            "record.contract",
        ),
        (
            "protocol empty",
            ok.replace("\"/infernet/job/1\"", "\"\""),
            "record.protocol",
        ),
    ];
    for (what, record, needle) in &cases {
        let sig = signed(record);
        expect_refused(&mut c, what, record, &sig, "22023", needle);
    }

    // The signature's text.
    let good = signed(&ok);
    for (what, sig) in [
        ("uppercase hex", good.to_uppercase()),
        ("127 hex chars", good[..127].to_string()),
        ("130 hex chars", format!("{good}00")),
        ("not hex", format!("{}zz", &good[..126])),
        ("empty", String::new()),
    ] {
        expect_refused(&mut c, what, &ok, &sig, "22023", "signature must be 128");
    }

    // Signatures that do not verify: 28000.
    let bad = "signature does not verify";
    let sig_bytes = hex::decode(&good).unwrap();
    let tampered_record = ok.replace("\"m\"", "\"n\"");
    expect_refused(
        &mut c,
        "message changed",
        &tampered_record,
        &good,
        "28000",
        bad,
    );
    for bit in [0usize, 100, 255, 256, 300, 511] {
        let mut s = sig_bytes.clone();
        s[bit / 8] ^= 1 << (bit % 8);
        expect_refused(
            &mut c,
            &format!("signature bit {bit} flipped"),
            &ok,
            &hex::encode(&s),
            "28000",
            bad,
        );
    }
    // Signed by another key than the one in the peer id.
    expect_refused(&mut c, "another key", &ok, &other.sign(&ok), "28000", bad);
    // Signed without the domain prefix.
    let bare = hex::encode(n.key.sign(ok.as_bytes()).to_bytes());
    expect_refused(&mut c, "no domain", &ok, &bare, "28000", bad);
    // s + L: the same point equation holds, but s must be < L.
    let mut s = sig_bytes.clone();
    add_l(&mut s[32..]);
    expect_refused(&mut c, "s >= L", &ok, &hex::encode(&s), "28000", bad);
    expect_refused(&mut c, "all zero", &ok, &"0".repeat(128), "28000", bad);

    assert_eq!(count_rows(&mut c), 0, "a refused call wrote a row");
    // And the untouched record is fine.
    register(&mut c, &ok, &good).unwrap();
    assert_eq!(count_rows(&mut c), 1);
}

/// s += L (little-endian, 32 bytes; s < L so no carry out).
fn add_l(s: &mut [u8]) {
    let mut carry = 0u16;
    for i in 0..32 {
        let v = s[i] as u16 + L_LE[i] as u16 + carry;
        s[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
}

#[test]
fn sql_ed25519_matches_rfc8032_and_dalek() {
    let mut c = db();
    // RFC 8032 §7.1 TEST 1, 2, 3: (secret, public, message, signature); dalek
    // reproduces each, so the vectors are checked as well as the SQL.
    let vectors = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];
    for (i, (sk, pk, msg, sig)) in vectors.iter().enumerate() {
        let key = SigningKey::from_bytes(&hex::decode(sk).unwrap().try_into().unwrap());
        let (pk, msg, sig) = (
            hex::decode(pk).unwrap(),
            hex::decode(msg).unwrap(),
            hex::decode(sig).unwrap(),
        );
        assert_eq!(
            key.verifying_key().as_bytes().as_slice(),
            pk,
            "TEST {}",
            i + 1
        );
        assert_eq!(key.sign(&msg).to_bytes().as_slice(), sig, "TEST {}", i + 1);
        assert!(
            verify_sql(&mut c, &pk, &msg, &sig),
            "TEST {} refused",
            i + 1
        );
        let mut m2 = msg.clone();
        m2.push(0);
        assert!(
            !verify_sql(&mut c, &pk, &m2, &sig),
            "TEST {} with a byte more accepted",
            i + 1
        );
    }

    // Random keys and messages signed by dalek, and tampered copies.
    let mut elapsed = Duration::ZERO;
    let mut calls = 0u32;
    for round in 0..12 {
        let key = SigningKey::from_bytes(&rand::random());
        let pk = key.verifying_key().to_bytes();
        let msg: Vec<u8> = (0..(round * 37) % 300).map(|_| rand::random()).collect();
        let sig = key.sign(&msg).to_bytes();
        let t = Instant::now();
        assert!(
            verify_sql(&mut c, &pk, &msg, &sig),
            "round {round}: a valid signature refused"
        );
        elapsed += t.elapsed();
        calls += 1;

        let mut m = msg.clone();
        if m.is_empty() {
            m.push(1);
        } else {
            let bit = rand::random::<usize>() % (m.len() * 8);
            m[bit / 8] ^= 1 << (bit % 8);
        }
        assert!(
            !verify_sql(&mut c, &pk, &m, &sig),
            "round {round}: message bit flipped, accepted"
        );
        let mut s = sig;
        let bit = rand::random::<usize>() % 512;
        s[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !verify_sql(&mut c, &pk, &msg, &s),
            "round {round}: signature bit {bit} flipped, accepted"
        );
        let other = SigningKey::from_bytes(&rand::random())
            .verifying_key()
            .to_bytes();
        assert!(
            !verify_sql(&mut c, &other, &msg, &sig),
            "round {round}: another key accepted"
        );
        let mut s = sig;
        add_l(&mut s[32..]);
        assert!(
            !verify_sql(&mut c, &pk, &msg, &s),
            "round {round}: s + L accepted"
        );
    }
    // A public key whose y is not canonical (>= p), one that is not on the
    // curve, and an R that is not canonical: refused, no error.
    let key = SigningKey::from_bytes(&rand::random());
    let sig = key.sign(b"x").to_bytes();
    let mut p_bytes = [0xffu8; 32];
    p_bytes[0] = 0xed;
    p_bytes[31] = 0x7f; // 2^255 - 19
    assert!(!verify_sql(&mut c, &p_bytes, b"x", &sig));
    let mut off_curve = None;
    for y in 2u8..50 {
        let mut k = [0u8; 32];
        k[0] = y;
        if ed25519_dalek::VerifyingKey::from_bytes(&k).is_err() {
            off_curve = Some(k);
            break;
        }
    }
    assert!(!verify_sql(
        &mut c,
        &off_curve.expect("an off-curve y below 50"),
        b"x",
        &sig
    ));
    let mut r_bad = sig;
    r_bad[..32].copy_from_slice(&p_bytes);
    assert!(!verify_sql(
        &mut c,
        key.verifying_key().as_bytes(),
        b"x",
        &r_bad
    ));
    assert!(!verify_sql(&mut c, &[0u8; 31], b"x", &sig), "a short key");
    assert!(
        !verify_sql(&mut c, key.verifying_key().as_bytes(), b"x", &sig[..63]),
        "a short signature"
    );

    // A figure, not a check (docs/BENCHMARKS.md, "Bootstrap registry"):
    // the SQL verification beside ed25519-dalek's in the same run.
    let per = elapsed / calls;
    let msg = [7u8; 200];
    let sig = key.sign(&msg);
    let t = Instant::now();
    for _ in 0..1000 {
        assert!(key.verifying_key().verify_strict(&msg, &sig).is_ok());
    }
    let native = t.elapsed() / 1000;
    eprintln!(
        "registry_private.ed25519_verify: {per:?} per valid signature ({calls} calls, round trip included); ed25519-dalek: {native:?}; ratio {:.0}x",
        per.as_secs_f64() / native.as_secs_f64().max(1e-9)
    );

    // The peer id's key, through base58.
    for _ in 0..5 {
        let n = Node::new();
        let got: Option<Vec<u8>> = c
            .query_one(
                "select registry_private.peer_id_public_key($1)",
                &[&n.peer_id],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            got.as_deref(),
            Some(n.key.verifying_key().as_bytes().as_slice())
        );
    }
    // Shaped like an ed25519 peer id, but not one: 0x21 where the key length 0x20 goes.
    let mut raw = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x21];
    raw.extend_from_slice(&[7u8; 32]);
    let wrong_prefix = bs58::encode(raw).into_string();
    assert!(
        wrong_prefix.starts_with("12D3KooW") && wrong_prefix.len() == 52,
        "{wrong_prefix}"
    );
    let got: Option<Vec<u8>> = c
        .query_one(
            "select registry_private.peer_id_public_key($1)",
            &[&wrong_prefix],
        )
        .unwrap()
        .get(0);
    assert_eq!(got, None, "{wrong_prefix}");
    let b58: Vec<u8> = c
        .query_one("select registry_private.base58_decode('1112')", &[])
        .unwrap()
        .get(0);
    assert_eq!(b58, vec![0, 0, 0, 1]);
    for bad in [
        "12D3KooW",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
        "12D3KooW0000000000000000000000000000000000000000000",
    ] {
        let got: Option<Vec<u8>> = c
            .query_one("select registry_private.peer_id_public_key($1)", &[&bad])
            .unwrap()
            .get(0);
        assert_eq!(got, None, "{bad}");
    }
}

#[test]
fn anon_cannot_reach_the_private_helpers() {
    let mut c = db();
    let calls = [
        "select registry_private.ed25519_verify('\\x00', '\\x00', '\\x00')",
        "select registry_private.ed25519_pow(2, 3)",
        "select registry_private.base58_decode('12')",
        "select registry_private.peer_id_public_key('12D3KooW')",
        "select registry_private.record_signing_bytes('{}')",
        "select registry_private.prune_bootstrap_nodes()",
    ];
    for role in ["anon", "authenticated"] {
        for sql in calls {
            let e = as_role(&mut c, role, |tx| tx.batch_execute(sql))
                .expect_err(&format!("{role}: {sql}"));
            assert_eq!(db_err(&e).0, "42501", "{role}: {sql}: {:?}", db_err(&e));
        }
    }
    // Not only the schema: no execute right on any helper either, and no
    // function but register_node (of ours) executable by the API roles.
    let granted: Vec<String> = c
        .query(
            "select r.rolname || ' ' || p.oid::regprocedure::text
               from pg_proc p join pg_namespace s on s.oid = p.pronamespace
               cross join pg_roles r
              where s.nspname in ('registry_private', 'public')
                and r.rolname in ('anon', 'authenticated')
                and has_function_privilege(r.oid, p.oid, 'execute')
              order by 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        granted,
        vec![
            "anon register_node(text,text)".to_string(),
            "authenticated register_node(text,text)".to_string()
        ]
    );
}

#[test]
fn the_schema_is_locked_down_as_declared() {
    let mut c = db();
    // register_node: security definer, empty search_path; every helper pins it too.
    let rows = c
        .query(
            "select p.proname, p.prosecdef, coalesce(array_to_string(p.proconfig, ','), '')
               from pg_proc p join pg_namespace s on s.oid = p.pronamespace
              where s.nspname = 'registry_private' or (s.nspname = 'public' and p.proname = 'register_node')",
            &[],
        )
        .unwrap();
    assert!(rows.len() >= 6, "{}", rows.len());
    for r in &rows {
        let (name, secdef, config): (String, bool, String) = (r.get(0), r.get(1), r.get(2));
        assert!(config.contains("search_path=\"\""), "{name}: {config}");
        if name == "register_node" {
            assert!(secdef, "register_node is not security definer");
        }
    }
    let (rls, view_opts): (bool, Vec<String>) = c
        .query_one(
            "select (select relrowsecurity from pg_class where oid = 'public.bootstrap_nodes'::regclass),
                    (select reloptions from pg_class where oid = 'public.active_bootstrap_nodes'::regclass)",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(rls, "RLS is off");
    assert!(
        view_opts.iter().any(|o| o == "security_invoker=true"),
        "{view_opts:?}"
    );
    // The API roles hold select only, on the table and the view.
    let privs: Vec<String> = c
        .query(
            "select grantee || ' ' || table_name || ' ' || privilege_type
               from information_schema.role_table_grants
              where grantee in ('anon', 'authenticated') and table_schema in ('public', 'registry_private')
              order by 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        privs,
        vec![
            "anon active_bootstrap_nodes SELECT",
            "anon bootstrap_nodes SELECT",
            "authenticated active_bootstrap_nodes SELECT",
            "authenticated bootstrap_nodes SELECT",
        ]
    );
}
