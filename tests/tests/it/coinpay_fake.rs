//! The local CoinPay server itself: its HMAC, exact amounts, state machine
//! and error codes (what the adapter tests rely on it to enforce).

use infernet_tests::coinpay_server::{
    hmac_sha256, raw_amount, rfc3339, valid_amount, CoinPayOptions, CoinPayServer, Webhook,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

#[test]
fn hmac_matches_rfc4231_case_2() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn amounts_are_read_verbatim() {
    assert_eq!(
        raw_amount(r#"{"metadata":{"amount":1},"amount":0.000000000000000001}"#).as_deref(),
        Some("0.000000000000000001")
    );
    assert!(valid_amount("1.5", 8).is_ok());
    assert!(valid_amount("0", 8).is_err());
    assert!(valid_amount("1.123456789", 8).is_err());
    assert!(valid_amount("1e5", 8).is_err());
}

/// Minimal client: `(status, json)` of one request.
fn call(server: &CoinPayServer, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let json = out.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[test]
fn state_machine_and_error_codes() {
    let hooks = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = CoinPayServer::start(CoinPayOptions {
        webhook_url: Some(format!("http://{}/hook", hooks.local_addr().unwrap())),
        auto_fund_after: Some(Duration::from_millis(200)),
        ..CoinPayOptions::default()
    });
    let create = r#"{"chain":"BTC","amount":0.5,"depositor_address":"a","beneficiary_address":"b","expires_in_hours":2}"#;
    let (st, e) = call(&server, "POST", "/api/escrow", create);
    assert_eq!(st, 201, "{e}");
    assert_eq!(e["status"], "created");
    let id = e["id"].as_str().unwrap().to_string();
    let rel = e["release_token"].as_str().unwrap().to_string();
    let ben = e["beneficiary_token"].as_str().unwrap().to_string();
    assert_eq!(server.escrow(&id).unwrap().amount, "0.5");
    // the webhook went out to the configured URL, signed
    let (mut conn, _) = hooks.accept().unwrap();
    let mut got = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap();
    got.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(got.starts_with("POST /hook "), "{got}");
    assert!(got.contains("x-coinpay-signature: t="), "{got}");
    drop(conn);

    // bad bodies
    for bad in [
        "not json",
        r#"{"chain":"DOGE","amount":1,"depositor_address":"a","beneficiary_address":"b"}"#,
        r#"{"chain":"BTC","amount":0,"depositor_address":"a","beneficiary_address":"b"}"#,
        r#"{"chain":"BTC","amount":0.123456789,"depositor_address":"a","beneficiary_address":"b"}"#,
        r#"{"chain":"BTC","amount":1}"#,
    ] {
        assert_eq!(call(&server, "POST", "/api/escrow", bad).0, 400, "{bad}");
    }
    assert_eq!(call(&server, "GET", "/api/escrow/esc_nope", "").0, 404);
    let release = |t: &str| format!(r#"{{"release_token":"{t}"}}"#);
    let path = |a: &str| format!("/api/escrow/{id}/{a}");
    assert_eq!(
        call(&server, "POST", &path("release"), &release("x")).0,
        403
    );
    // not funded yet
    assert_eq!(
        call(&server, "POST", &path("release"), &release(&rel)).0,
        409
    );
    std::thread::sleep(Duration::from_millis(300));
    let (st, e) = call(&server, "GET", &format!("/api/escrow/{id}"), "");
    assert_eq!((st, e["status"].as_str()), (200, Some("funded")));
    let dispute = format!(r#"{{"token":"{ben}","reason":"late"}}"#);
    assert_eq!(
        call(&server, "POST", &path("dispute"), &dispute).1["status"],
        "disputed"
    );
    assert_eq!(
        call(&server, "POST", &path("refund"), &release(&rel)).0,
        409
    );
    // the test hook funds created escrows only
    let (_, e2) = call(&server, "POST", "/api/escrow", create);
    let id2 = e2["id"].as_str().unwrap();
    let (st, e2) = call(&server, "POST", &format!("/__test/escrow/{id2}/fund"), "");
    assert_eq!((st, e2["status"].as_str()), (200, Some("funded")));
    assert_eq!(
        call(
            &server,
            "POST",
            &format!("/api/__test/escrow/{id2}/fund"),
            ""
        )
        .0,
        409
    );
    let c = server.counters();
    assert_eq!((c.creates, c.release_calls, c.releases), (2, 2, 0));
    let events: Vec<String> = server.deliveries().iter().map(Webhook::event).collect();
    assert_eq!(
        events,
        [
            "escrow.created",
            "escrow.funded",
            "escrow.disputed",
            "escrow.created",
            "escrow.funded"
        ]
    );
}

#[test]
fn api_key_is_enforced_when_set() {
    let server = CoinPayServer::start(CoinPayOptions {
        api_key: Some("k".into()),
        ..CoinPayOptions::default()
    });
    assert_eq!(call(&server, "GET", "/api/escrow/x", "").0, 401);
}

#[test]
fn timestamps_format() {
    assert_eq!(rfc3339(951_868_800), "2000-03-01T00:00:00.000Z");
}
