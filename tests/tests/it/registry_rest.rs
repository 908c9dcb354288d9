//! The local Supabase REST API (tests/src/postgrest.rs) in front of the
//! registry's real database: the gateway's key check, PostgREST's JWT
//! check, the role each request runs as, reads of the view, the function
//! call, and that the database's refusals come back with PostgREST's
//! statuses and bodies (anon cannot write the table through REST either).

use ed25519_dalek::{Signer, SigningKey};
use infernet_tests::postgres::Cluster;
use infernet_tests::postgrest::{
    b64url, b64url_decode, header, hmac_sha256, jwt, jwt_claims, request, status_of, try_request,
    Responder, DEV_JWT_SECRET, MAX_BODY,
};
use postgres::{Client, NoTls};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the host's registry client reads (host/src/registry/rest.rs).
const VIEW_QUERY: &str = "/rest/v1/active_bootstrap_nodes?select=peer_id,multiaddrs,models,contract_version,protocol_version,record,signature,last_seen,expires_at&order=last_seen.desc&limit=200";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A responder over a fresh migrated database, and a superuser connection to it.
fn setup() -> (Responder, Client) {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    let url = cluster.url(&db);
    let client = Client::connect(&url, NoTls).expect("connecting to the fresh database");
    (Responder::start(&url, DEV_JWT_SECRET), client)
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A syntactically valid peer id (the table's check: `12D3KooW` + 44 base58).
fn fake_peer(n: u8) -> String {
    let c = (b'A' + n) as char;
    format!("12D3KooW{}", c.to_string().repeat(44))
}

/// Inserts a row as the superuser (no signature check: the table's own
/// constraints only), expiring `expires_in` seconds from now, seen
/// `seen_ago` seconds ago.
fn insert_row(c: &mut Client, peer: &str, expires_in: i64, seen_ago: i64) {
    c.execute(
        "insert into public.bootstrap_nodes (peer_id, multiaddrs, models, contract_version, protocol_version, \
                record, signature, record_timestamp, last_seen, expires_at) \
         values ($1, array['/ip4/10.0.0.1/tcp/4001/p2p/' || $1], array['tiny-llama'], '0.2.0', '/infernet/job/1', \
                 '{\"peer_id\":\"' || $1 || '\"}', repeat('ab', 64), $2, \
                 now() - make_interval(secs => $3::float8), now() + make_interval(secs => $4::float8))",
        &[&peer, &now(), &(seen_ago as f64), &(expires_in as f64)],
    )
    .expect("inserting a row as the superuser");
}

fn count_rows(c: &mut Client) -> i64 {
    c.query_one("select count(*) from public.bootstrap_nodes", &[])
        .unwrap()
        .get(0)
}

fn error_code(body: &str) -> String {
    parse(body)["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn hmac_sha256_matches_rfc4231_cases_1_and_2() {
    assert_eq!(
        hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // case 6: a key longer than the block is hashed first
    assert_eq!(
        hex::encode(hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn jwts_are_the_tokens_supabase_issues() {
    // The jwt.io example and Supabase's local demo anon key, byte for byte.
    assert_eq!(
        jwt_claims("your-256-bit-secret", r#"{"sub":"1234567890","name":"John Doe","iat":1516239022}"#),
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    );
    assert_eq!(
        jwt_claims(DEV_JWT_SECRET, r#"{"iss":"supabase-demo","role":"anon","exp":1983812996}"#),
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0"
    );
    let key = jwt("s3cret", "service_role");
    let parts: Vec<&str> = key.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(!key.contains('='), "base64url without padding: {key}");
    let claims = parse(&String::from_utf8(b64url_decode(parts[1]).unwrap()).unwrap());
    assert_eq!(claims["role"], "service_role");
    assert_eq!(claims["iss"], "supabase");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    // base64url round trips at every length, and refuses padding and '+'.
    for n in 0..70u8 {
        let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
        assert_eq!(b64url_decode(&b64url(&data)).unwrap(), data);
    }
    assert!(b64url_decode("YQ==").is_none());
    assert!(b64url_decode("+/8").is_none());
    assert!(b64url_decode("YR").is_none(), "non-zero trailing bits");
}

#[test]
fn the_gateway_refuses_a_missing_or_unknown_api_key() {
    let (rest, _db) = setup();
    let url = format!("{}{VIEW_QUERY}", rest.url());
    let anon = rest.anon_key();
    let bearer = format!("Bearer {anon}");

    let (status, _, body) = request("GET", &url, &[("Authorization", &bearer)], None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        parse(&body),
        json!({"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."})
    );

    // Another project's anon key (another secret), and a service key of ours
    // with one byte changed: not this project's keys.
    let foreign = jwt("another-projects-secret-at-least-32-characters", "anon");
    let mut tampered = rest.service_key();
    tampered.pop();
    tampered.push('x');
    for key in [foreign.as_str(), tampered.as_str(), "anon"] {
        let (status, _, body) = request(
            "GET",
            &url,
            &[("apikey", key), ("Authorization", &bearer)],
            None,
        );
        assert_eq!(status, 401, "{key}: {body}");
        assert_eq!(parse(&body)["message"], "Invalid API key", "{body}");
    }

    // The key as a URL parameter is accepted (Kong's key-auth), and hidden
    // from PostgREST: it is not taken for a filter.
    let (status, _, body) = request(
        "GET",
        &format!("{url}&apikey={anon}"),
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!((status, body.as_str()), (200, "[]"));
    let seen: Vec<u16> = rest.requests().iter().map(|r| r.status).collect();
    assert_eq!(seen, vec![401, 401, 401, 401, 200]);
    assert!(
        rest.requests()[4].target.contains("apikey="),
        "the log keeps what was sent"
    );
}

#[test]
fn postgrest_refuses_forged_and_expired_tokens() {
    let (rest, _db) = setup();
    let url = format!("{}{VIEW_QUERY}", rest.url());
    let anon = rest.anon_key();
    let call = |token: &str| {
        request(
            "GET",
            &url,
            &[
                ("apikey", &anon),
                ("Authorization", &format!("Bearer {token}")),
            ],
            None,
        )
    };

    // A service_role token signed with a guessed secret.
    let forged = jwt(
        "not-the-projects-secret-but-just-as-long-as-it",
        "service_role",
    );
    let (status, headers, body) = call(&forged);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        parse(&body),
        json!({"code": "PGRST301", "details": null, "hint": null, "message": "JWSError JWSInvalidSignature"})
    );
    assert!(header(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));

    // alg "none" with no signature, and a token that is not three parts.
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(br#"{"role":"service_role"}"#)
    );
    assert_eq!(error_code(&call(&none).2), "PGRST301");
    let (status, _, body) = call("abc.def");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "PGRST301"),
        "{body}"
    );

    // Correctly signed, but expired.
    let expired = jwt_claims(
        DEV_JWT_SECRET,
        &format!(
            r#"{{"role":"anon","iat":{},"exp":{}}}"#,
            now() - 7200,
            now() - 3600
        ),
    );
    let (status, _, body) = call(&expired);
    assert_eq!(status, 401, "{body}");
    assert_eq!(parse(&body)["code"], "PGRST303");
    assert_eq!(parse(&body)["message"], "JWT expired");

    // A valid token for a role the API may not become (the superuser).
    let (status, _, body) = call(&jwt(DEV_JWT_SECRET, "postgres"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "42501");
    assert_eq!(
        parse(&body)["message"],
        "permission denied to set role \"postgres\""
    );
}

#[test]
fn the_view_is_empty_then_lists_the_active_rows_newest_first() {
    let (rest, mut db) = setup();
    let (status, headers, body) = rest.call("GET", VIEW_QUERY, None);
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(header(&headers, "content-range"), Some("*/*"));

    insert_row(&mut db, &fake_peer(0), 600, 30); // older heartbeat
    insert_row(&mut db, &fake_peer(1), 600, 5); // newest
    insert_row(&mut db, &fake_peer(2), -10, 1); // expired: never listed
    let (status, headers, body) = rest.call("GET", VIEW_QUERY, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-range"), Some("0-1/*"));
    let rows = parse(&body);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{body}");
    assert_eq!(rows[0]["peer_id"], fake_peer(1));
    assert_eq!(rows[1]["peer_id"], fake_peer(0));
    let cols: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(cols.len(), 9, "exactly the selected columns: {cols:?}");
    assert_eq!(
        rows[0]["multiaddrs"],
        json!([format!("/ip4/10.0.0.1/tcp/4001/p2p/{}", fake_peer(1))])
    );
    assert_eq!(rows[0]["models"], json!(["tiny-llama"]));
    assert_eq!(rows[0]["signature"], "ab".repeat(64));
    assert!(rows[0]["last_seen"].is_string() && rows[0]["expires_at"].is_string());

    // The table itself, through RLS: the expired row is hidden from anon too.
    let (status, _, body) = rest.call(
        "GET",
        "/rest/v1/bootstrap_nodes?select=peer_id&order=peer_id",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body),
        json!([{"peer_id": fake_peer(0)}, {"peer_id": fake_peer(1)}])
    );
    // service_role bypasses RLS on the table; the view still means "active".
    let (_, _, body) = rest.call_as(
        &rest.service_key(),
        "GET",
        "/rest/v1/bootstrap_nodes?select=peer_id",
        None,
    );
    assert_eq!(parse(&body).as_array().unwrap().len(), 3, "{body}");
    let (_, _, body) = rest.call_as(
        &rest.service_key(),
        "GET",
        "/rest/v1/active_bootstrap_nodes?select=peer_id",
        None,
    );
    assert_eq!(parse(&body).as_array().unwrap().len(), 2, "{body}");

    // limit/offset and the range they answer.
    let (_, headers, body) = rest.call(
        "GET",
        "/rest/v1/active_bootstrap_nodes?select=peer_id&order=last_seen.desc&limit=1&offset=1",
        None,
    );
    assert_eq!(parse(&body), json!([{"peer_id": fake_peer(0)}]));
    assert_eq!(header(&headers, "content-range"), Some("1-1/*"));
}

#[test]
fn filters_are_values_typed_by_their_column_never_sql() {
    let (rest, mut db) = setup();
    insert_row(&mut db, &fake_peer(0), 600, 30);
    insert_row(&mut db, &fake_peer(1), 900, 5);
    let get = |q: &str| {
        let (status, _, body) = rest.call(
            "GET",
            &format!("/rest/v1/active_bootstrap_nodes?select=peer_id&order=peer_id{q}"),
            None,
        );
        (status, body)
    };
    let one = |n: u8| json!([{"peer_id": fake_peer(n)}]).to_string();
    assert_eq!(get(&format!("&peer_id=eq.{}", fake_peer(1))), (200, one(1)));
    assert_eq!(
        get(&format!("&peer_id=neq.{}", fake_peer(1))),
        (200, one(0))
    );
    // text[] and timestamptz parse the same text PostgREST would pass on.
    let addr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{}", fake_peer(0));
    assert_eq!(
        get(&format!(
            "&multiaddrs=eq.%7B{}%7D",
            addr.replace('/', "%2F")
        )),
        (200, one(0))
    );
    let (_, body) = get("&expires_at=gt.now");
    assert_eq!(parse(&body).as_array().unwrap().len(), 2);
    let cutoff: String = db
        .query_one("select (now() + interval '700 seconds')::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        get(&format!(
            "&expires_at=gt.{}",
            cutoff.replace('+', "%2B").replace(' ', "%20")
        )),
        (200, one(1))
    );
    assert_eq!(
        get(&format!("&peer_id=not.eq.{}", fake_peer(1))),
        (200, one(0))
    );
    assert_eq!(get("&last_seen=is.null"), (200, "[]".into()));
    // Quotes are data.
    assert_eq!(get("&peer_id=eq.x'%20or%20'1'='1"), (200, "[]".into()));
    // A value the column's type refuses is the database's 400.
    let (status, body) = get("&expires_at=gt.yesterday-ish");
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "22007");
    // What the responder does not model is refused, never ignored.
    for q in [
        "&peer_id=in.(a,b)",
        "&or=(peer_id.eq.a,peer_id.eq.b)",
        "&select=peer_id,models(*)",
        "&order=peer_id.sideways",
    ] {
        let (status, body) = get(q);
        assert_eq!(
            (status, error_code(&body).as_str()),
            (400, "PGRST100"),
            "{q}: {body}"
        );
    }
}

#[test]
fn unknown_relations_columns_and_functions_are_postgrests_errors() {
    let (rest, _db) = setup();
    let (status, _, body) = rest.call("GET", "/rest/v1/bootstrap_nodez?select=*", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        parse(&body),
        json!({"code": "PGRST205", "details": null, "hint": null,
               "message": "Could not find the table 'public.bootstrap_nodez' in the schema cache"})
    );
    // The private schema is not exposed.
    let (status, _, body) = rest.call_as(&rest.service_key(), "GET", "/rest/v1/settings", None);
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "PGRST205"),
        "{body}"
    );

    let (status, _, body) = rest.call(
        "GET",
        "/rest/v1/active_bootstrap_nodes?select=peer_id,secret_column",
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "42703");

    let (status, _, body) = rest.call("POST", "/rest/v1/rpc/delete_everything", Some("{}"));
    assert_eq!(status, 404, "{body}");
    assert_eq!(parse(&body)["code"], "PGRST202");
    assert_eq!(
        parse(&body)["message"],
        "Could not find the function public.delete_everything() in the schema cache"
    );
    // register_node exists, but not with these arguments.
    let (status, _, body) = rest.call(
        "POST",
        "/rest/v1/rpc/register_node",
        Some(r#"{"record":"{}"}"#),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        parse(&body)["message"],
        "Could not find the function public.register_node(record) in the schema cache"
    );
    let (status, _, body) = rest.call(
        "POST",
        "/rest/v1/rpc/register_node",
        Some(r#"{"record":"{}","signature":"","ttl":5}"#),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "PGRST202"),
        "{body}"
    );
    // Private helpers are not callable through the API.
    let (status, _, body) = rest.call_as(
        &rest.service_key(),
        "POST",
        "/rest/v1/rpc/prune_bootstrap_nodes",
        Some("{}"),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "PGRST202"),
        "{body}"
    );
}

#[test]
fn anon_cannot_write_the_table_through_rest() {
    let (rest, mut db) = setup();
    let peer = fake_peer(3);
    let row = json!({
        "peer_id": peer, "multiaddrs": [format!("/ip4/6.6.6.6/tcp/1/p2p/{peer}")], "models": [],
        "contract_version": "0.2.0", "protocol_version": "/infernet/job/1", "record": "{}",
        "signature": "00".repeat(64), "record_timestamp": now(),
        "expires_at": "2999-01-01T00:00:00Z"
    })
    .to_string();
    let (status, headers, body) = rest.call("POST", "/rest/v1/bootstrap_nodes", Some(&row));
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "42501");
    assert!(
        parse(&body)["message"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{body}"
    );
    assert!(header(&headers, "www-authenticate").is_some());
    assert_eq!(count_rows(&mut db), 0);
    // The view is not writable either.
    let mut view_row = parse(&row);
    view_row.as_object_mut().unwrap().remove("record_timestamp");
    let (status, _, body) = rest.call(
        "POST",
        "/rest/v1/active_bootstrap_nodes",
        Some(&view_row.to_string()),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "42501"),
        "{body}"
    );

    insert_row(&mut db, &peer, 600, 0);
    let (status, _, body) = rest.call(
        "DELETE",
        &format!("/rest/v1/bootstrap_nodes?peer_id=eq.{peer}"),
        None,
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "42501"),
        "{body}"
    );
    let (status, _, body) = rest.call(
        "PATCH",
        &format!("/rest/v1/bootstrap_nodes?peer_id=eq.{peer}"),
        Some(r#"{"expires_at":"2999-01-01T00:00:00Z"}"#),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "42501"),
        "{body}"
    );
    // Without a filter, Supabase's safeupdate refuses first.
    let (status, _, body) = rest.call("DELETE", "/rest/v1/bootstrap_nodes", None);
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "21000"),
        "{body}"
    );
    assert_eq!(count_rows(&mut db), 1);
    // A column the table lacks.
    let (status, _, body) = rest.call(
        "POST",
        "/rest/v1/bootstrap_nodes",
        Some(r#"{"owner":"me"}"#),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "PGRST204"),
        "{body}"
    );

    // The service key does write (it bypasses RLS and keeps its grants):
    // the table is protected by the key being secret, as documented.
    let (status, _, body) = rest.call_as(
        &rest.service_key(),
        "DELETE",
        &format!("/rest/v1/bootstrap_nodes?peer_id=eq.{peer}"),
        None,
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(count_rows(&mut db), 0);
}

#[test]
fn register_node_refusals_carry_the_databases_status_and_message() {
    let (rest, mut db) = setup();
    let call = |body: &Value| {
        rest.call(
            "POST",
            "/rest/v1/rpc/register_node",
            Some(&body.to_string()),
        )
    };

    let (status, _, body) = call(&json!({"record": "garbage", "signature": "00".repeat(64)}));
    assert_eq!(status, 400, "{body}");
    let err = parse(&body);
    assert_eq!(err["code"], "22023");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("record is not valid JSON"),
        "{body}"
    );
    assert_eq!(
        err.as_object().unwrap().len(),
        4,
        "code, details, hint, message: {body}"
    );

    let (status, _, body) = call(&json!({"record": "{}", "signature": "not hex"}));
    assert_eq!(status, 400);
    assert_eq!(
        parse(&body)["message"],
        "signature must be 128 lowercase hex characters (64 bytes)"
    );
    // A JSON null is SQL NULL.
    let (status, _, body) = call(&json!({"record": null, "signature": null}));
    assert_eq!(
        (status, parse(&body)["message"].as_str()),
        (400, Some("record and signature are required"))
    );
    assert_eq!(count_rows(&mut db), 0);

    // Bodies PostgREST refuses before the database.
    let url = format!("{}/rest/v1/rpc/register_node", rest.url());
    let anon = rest.anon_key();
    let bearer = format!("Bearer {anon}");
    let auth = [
        ("apikey", anon.as_str()),
        ("Authorization", bearer.as_str()),
    ];
    let with = |ct: &str, body: &str| {
        let mut h = auth.to_vec();
        h.push(("Content-Type", ct));
        request("POST", &url, &h, Some(body))
    };
    let (status, _, body) = with("application/json", "{not json");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "PGRST102"),
        "{body}"
    );
    let (status, _, body) = with("application/json", "[1,2]");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "PGRST102"),
        "{body}"
    );
    let (status, _, body) = with("text/xml", "<record/>");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (415, "PGRST107"),
        "{body}"
    );
    let huge = format!(r#"{{"record":"{}","signature":""}}"#, "a".repeat(MAX_BODY));
    let (status, _, _) = with("application/json", &huge);
    assert_eq!(status, 413);
}

/// A record signed like a node signs it (host/src/registry/record.rs).
fn signed_record() -> (String, String, String) {
    let key = SigningKey::from_bytes(&rand::random());
    let mut raw = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    raw.extend_from_slice(key.verifying_key().as_bytes());
    let peer = bs58::encode(raw).into_string();
    let record = format!(
        r#"{{"v":1,"peer_id":"{peer}","addrs":["/ip4/127.0.0.1/tcp/4001/p2p/{peer}"],"models":["minilm"],"contract":"0.2.0","protocol":"/infernet/job/1","timestamp":{},"ttl":600}}"#,
        now()
    );
    let mut msg = b"infernet/registry-record/1\0".to_vec();
    msg.extend_from_slice(record.as_bytes());
    (peer, record.clone(), hex::encode(key.sign(&msg).to_bytes()))
}

#[test]
fn register_node_through_rest_lists_the_node_and_rate_limits_with_429() {
    let (rest, _db) = setup();
    let (peer, record, signature) = signed_record();
    let body = json!({"record": record, "signature": signature}).to_string();
    let (status, _, answer) = rest.call("POST", "/rest/v1/rpc/register_node", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let answer = parse(&answer);
    assert_eq!(answer["peer_id"], peer.as_str());
    assert_eq!(answer["ttl"], 600);

    let (_, _, rows) = rest.call("GET", VIEW_QUERY, None);
    let rows = parse(&rows);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["record"], record.as_str(), "stored byte for byte");
    assert_eq!(rows[0]["signature"], signature.as_str());

    // Again at once: the database's PT429 is HTTP 429.
    let (status, _, err) = rest.call("POST", "/rest/v1/rpc/register_node", Some(&body));
    assert_eq!(status, 429, "{err}");
    assert_eq!(error_code(&err), "PT429");
    assert_eq!(
        parse(&err)["hint"],
        "register at most once per min_interval_secs"
    );

    // A signature by another key is 28000: 403.
    let (_, record2, _) = signed_record();
    let (_, _, other_sig) = signed_record();
    let body = json!({"record": record2, "signature": other_sig}).to_string();
    let (status, _, err) = rest.call("POST", "/rest/v1/rpc/register_node", Some(&body));
    assert_eq!((status, error_code(&err).as_str()), (403, "28000"), "{err}");
}

#[test]
fn each_request_runs_as_postgrest_runs_it() {
    let (rest, mut db) = setup();
    db.batch_execute(
        "create function public.whoami() returns json language sql stable as $$
           select json_build_object(
             'user', current_user,
             'read_only', current_setting('transaction_read_only'),
             'timeout', current_setting('statement_timeout'),
             'search_path', current_setting('search_path'),
             'claims', current_setting('request.jwt.claims', true)::json,
             'method', current_setting('request.method', true),
             'path', current_setting('request.path', true),
             'headers', current_setting('request.headers', true)::json)
         $$;
         create function public.bump(n integer) returns integer language sql volatile as $$ select n + 1 $$;",
    )
    .unwrap();
    let (status, _, body) = rest.call("POST", "/rest/v1/rpc/whoami", Some("{}"));
    assert_eq!(status, 200, "{body}");
    let me = parse(&body);
    assert_eq!(me["user"], "anon");
    assert_eq!(me["read_only"], "on", "a stable function runs read-only");
    assert_eq!(me["timeout"], "3s", "anon's own statement_timeout");
    assert_eq!(me["search_path"], "\"public\", \"extensions\"");
    assert_eq!(me["claims"]["role"], "anon");
    assert_eq!(me["claims"]["iss"], "supabase");
    assert_eq!(me["method"], "POST");
    assert_eq!(me["path"], "/rpc/whoami");
    let headers = me["headers"].as_object().unwrap();
    assert!(
        headers.get("apikey").is_none(),
        "the gateway hides the key: {headers:?}"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-consumer-username"], "anon");
    assert!(headers["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));

    // No Authorization header: anon, with only the role claim.
    let url = format!("{}/rest/v1/rpc/whoami", rest.url());
    rest.set_client_ip(Some("203.0.113.7".parse().unwrap()));
    let (status, _, body) = request(
        "GET",
        &url,
        &[
            ("apikey", &rest.service_key()),
            ("X-Forwarded-For", "10.1.1.1"),
        ],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let me = parse(&body);
    assert_eq!(me["user"], "anon");
    assert_eq!(me["claims"], json!({"role": "anon"}));
    assert_eq!(me["headers"]["x-forwarded-for"], "10.1.1.1, 203.0.113.7");
    assert_eq!(me["headers"]["x-real-ip"], "203.0.113.7");
    assert_eq!(me["headers"]["x-consumer-username"], "service_role");

    // The service key as the bearer token: service_role.
    let (_, _, body) = rest.call_as(&rest.service_key(), "GET", "/rest/v1/rpc/whoami", None);
    assert_eq!(parse(&body)["user"], "service_role");

    // Volatile functions write; through GET they run read-only and fail 405.
    let (status, _, body) = rest.call("POST", "/rest/v1/rpc/bump", Some(r#"{"n": 41}"#));
    assert_eq!((status, body.as_str()), (200, "42"));
    let (status, _, body) = rest.call("GET", "/rest/v1/rpc/bump?n=41", None);
    assert_eq!(
        (status, body.as_str()),
        (200, "42"),
        "bump writes nothing, so read-only is fine"
    );
    db.batch_execute(
        "create table public.counter (n integer); grant all on public.counter to anon;
         create function public.count_up() returns void language sql volatile as $$ insert into public.counter values (1) $$;",
    )
    .unwrap();
    let (status, _, body) = rest.call("POST", "/rest/v1/rpc/count_up", Some("{}"));
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = rest.call("GET", "/rest/v1/rpc/count_up", None);
    assert_eq!(
        (status, error_code(&body).as_str()),
        (405, "25006"),
        "{body}"
    );
    let n: i64 = db
        .query_one("select count(*) from public.counter", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the failed call was rolled back");
}

#[test]
fn the_test_knobs_fail_drop_and_recover() {
    let (rest, _db) = setup();
    rest.set_failing(Some(503));
    let (status, _, body) = rest.call("GET", VIEW_QUERY, None);
    assert_eq!(status, 503);
    assert!(parse(&body)["message"].is_string());
    rest.set_failing(None);
    rest.set_dropping(true);
    let url = format!("{}{VIEW_QUERY}", rest.url());
    assert!(try_request("GET", &url, &[("apikey", &rest.anon_key())], None).is_err());
    rest.set_dropping(false);
    assert_eq!(rest.call("GET", VIEW_QUERY, None).0, 200);
    let seen: Vec<u16> = rest.requests().iter().map(|r| r.status).collect();
    assert_eq!(seen, vec![503, 0, 200]);
    // Only /rest/v1 is routed.
    let (status, _, body) = rest.call("GET", "/auth/v1/settings", None);
    assert_eq!(
        (status, parse(&body)["message"].as_str()),
        (404, Some("no Route matched with those values"))
    );
}

#[test]
fn sqlstates_map_to_postgrests_statuses() {
    for (code, anon, status) in [
        ("PT429", true, 429),
        ("PT503", true, 503),
        ("42501", true, 401),
        ("42501", false, 403),
        ("23505", true, 409),
        ("23503", true, 409),
        ("42883", true, 404),
        ("42P01", true, 404),
        ("P0001", true, 400),
        ("P0002", true, 500),
        ("22023", true, 400),
        ("28000", true, 403),
        ("08006", true, 503),
        ("53300", true, 503),
        ("25006", true, 405),
        ("57014", true, 500),
        ("40001", true, 500),
        ("XX000", true, 500),
        ("23514", true, 400),
        ("PTabc", true, 400),
    ] {
        assert_eq!(status_of(code, anon), status, "{code} anon={anon}");
    }
}
