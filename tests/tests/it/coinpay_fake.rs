//! The local CoinPay server itself: its HMAC, amounts as the service's
//! JavaScript prints them, the service's state machine and error codes,
//! and webhooks only for business escrows (what the adapter tests rely on
//! it to enforce, as the real service does).

use infernet_tests::coinpay_server::{
    hmac_sha256, js_number, pg_timestamp, raw_amount, rfc3339, stored_amount, CoinPayOptions,
    CoinPayServer, Webhook, TEST_BUSINESS_ID,
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

/// Known outputs of JavaScript's `String(x)`.
#[test]
fn numbers_print_as_javascript_prints_them() {
    for (x, js) in [
        (3.3e-7, "3.3e-7"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (1e-18, "1e-18"),
        (1.5, "1.5"),
        (2.0, "2"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123456789.0, "123456789"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (0.0, "0"),
        (-2.5e-7, "-2.5e-7"),
    ] {
        assert_eq!(js_number(x), js, "{x:e}");
    }
}

#[test]
fn amounts_are_stored_as_the_service_stores_them() {
    let stored = |raw: &str| stored_amount(raw).map(|(_, s)| s);
    // doubles: up to 15 significant digits come back as written
    assert_eq!(stored("0.00000033").unwrap(), "3.3e-7");
    assert_eq!(stored("0.000000000000000001").unwrap(), "1e-18");
    assert_eq!(stored("1.5").unwrap(), "1.5");
    assert_eq!(stored("0.123456789").unwrap(), "0.123456789");
    assert_eq!(stored("123456.789012345").unwrap(), "123456.789012345");
    // more digits than a double holds: the service changes the amount
    assert_eq!(
        stored("18.446744073709551615").unwrap(),
        "18.446744073709553"
    );
    assert_eq!(
        stored("0.123456789012345678").unwrap(),
        "0.12345678901234568"
    );
    // the column keeps 18 decimals (half away from zero) and 12 integer digits
    assert_eq!(stored("4e-19").unwrap(), "0");
    assert_eq!(stored("5e-19").unwrap(), "1e-18");
    assert_eq!(stored("999999999999.5").unwrap(), "999999999999.5");
    assert!(stored("1000000000000").is_err());
    assert!(stored("1e400").is_err());
    assert_eq!(
        raw_amount(r#"{"metadata":{"amount":1},"amount":0.000000000000000001}"#).as_deref(),
        Some("0.000000000000000001")
    );
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

/// The raw answer body of one request (amounts as written on the wire).
fn raw_call(server: &CoinPayServer, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

const DEPOSITOR: &str = "0xdepositor000000000000000000000000000001";
const BENEFICIARY: &str = "0xbeneficiary0000000000000000000000000002";

fn create_body(chain: &str, amount: &str, business: Option<&str>) -> String {
    let business = business
        .map(|b| format!(r#","business_id":"{b}""#))
        .unwrap_or_default();
    format!(
        r#"{{"chain":"{chain}","amount":{amount},"depositor_address":"{DEPOSITOR}","beneficiary_address":"{BENEFICIARY}","expires_in_hours":2{business}}}"#
    )
}

#[test]
fn creation_is_checked_like_the_service_schema() {
    let server = CoinPayServer::start(CoinPayOptions::default());
    let addrs =
        format!(r#""depositor_address":"{DEPOSITOR}","beneficiary_address":"{BENEFICIARY}""#);
    for (bad, status, says) in [
        ("not json".to_string(), 500, "Internal server error"),
        (
            format!(r#"{{"chain":"LTC","amount":1,{addrs}}}"#),
            400,
            "Invalid enum value",
        ),
        (
            format!(r#"{{"chain":"BTC","amount":"0.5",{addrs}}}"#),
            400,
            "Expected number, received string",
        ),
        (
            format!(r#"{{"chain":"BTC","amount":0,{addrs}}}"#),
            400,
            "greater than zero",
        ),
        (
            format!(r#"{{"chain":"BTC","amount":-1,{addrs}}}"#),
            400,
            "greater than zero",
        ),
        (
            format!(r#"{{"chain":"BTC","amount":1e-400,{addrs}}}"#),
            400,
            "greater than zero",
        ),
        (
            format!(r#"{{"chain":"BTC",{addrs}}}"#),
            400,
            "Required",
        ),
        (
            r#"{"chain":"BTC","amount":1,"depositor_address":"short","beneficiary_address":"0xbeneficiary000000"}"#.to_string(),
            400,
            "Invalid depositor address",
        ),
        (
            format!(
                r#"{{"chain":"BTC","amount":1,"depositor_address":"{DEPOSITOR}","beneficiary_address":"{DEPOSITOR}"}}"#
            ),
            400,
            "must be different",
        ),
        (
            format!(r#"{{"chain":"BTC","amount":1,{addrs},"business_id":"biz_1"}}"#),
            400,
            "Invalid uuid",
        ),
        (
            format!(
                r#"{{"chain":"BTC","amount":1,{addrs},"business_id":"00000000-0000-4000-8000-000000000000"}}"#
            ),
            400,
            "foreign key",
        ),
        (
            format!(r#"{{"chain":"BTC","amount":1,{addrs},"expires_in_hours":721}}"#),
            400,
            "less than or equal to 720",
        ),
        (
            format!(r#"{{"chain":"BTC","amount":1,{addrs},"expires_in_hours":0}}"#),
            400,
            "greater than 0",
        ),
        (
            format!(r#"{{"chain":"USDC_POL","amount":1000000000000,{addrs}}}"#),
            400,
            "numeric field overflow",
        ),
    ] {
        let (st, e) = call(&server, "POST", "/api/escrow", &bad);
        assert_eq!(st, status, "{bad}: {e}");
        let msg = e["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{bad}: {msg}");
    }
    assert!(server.escrow_ids().is_empty());
    // What the service does not check: decimals per chain, fractional hours.
    let (st, e) = call(
        &server,
        "POST",
        "/api/escrow",
        &format!(r#"{{"chain":"BTC","amount":0.123456789,{addrs},"expires_in_hours":1.5}}"#),
    );
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().unwrap();
    assert_eq!(server.escrow(id).unwrap().amount, "0.123456789");
}

#[test]
fn amounts_come_back_as_javascript_numbers() {
    let server = CoinPayServer::start(CoinPayOptions::default());
    let (st, e) = call(
        &server,
        "POST",
        "/api/escrow",
        &create_body("BTC", "0.00000033", None),
    );
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(server.escrow(&id).unwrap().amount, "3.3e-7");
    let body = raw_call(&server, "GET", &format!("/api/escrow/{id}"));
    assert!(body.contains(r#""amount":3.3e-7,"#), "{body}");
    assert!(body.contains(r#""deposited_amount":null"#), "{body}");
    assert!(!body.contains("release_token"), "{body}");
    // digits a double cannot hold are lost, as on the service
    let (_, e) = call(
        &server,
        "POST",
        "/api/escrow",
        &create_body("POL", "18.446744073709551615", None),
    );
    let id = e["id"].as_str().unwrap();
    assert_eq!(server.escrow(id).unwrap().amount, "18.446744073709553");
}

#[test]
fn state_machine_and_error_codes() {
    let hooks = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = CoinPayServer::start(CoinPayOptions {
        webhook_url: Some(format!("http://{}/hook", hooks.local_addr().unwrap())),
        auto_fund_after: Some(Duration::from_millis(200)),
        ..CoinPayOptions::default()
    });
    let create = create_body("BTC", "0.5", Some(TEST_BUSINESS_ID));
    let (st, e) = call(&server, "POST", "/api/escrow", &create);
    assert_eq!(st, 201, "{e}");
    assert_eq!(e["status"], "created");
    assert_eq!(e["business_id"], TEST_BUSINESS_ID);
    let id = e["id"].as_str().unwrap().to_string();
    let rel = e["release_token"].as_str().unwrap().to_string();
    let ben = e["beneficiary_token"].as_str().unwrap().to_string();
    assert_eq!(server.escrow(&id).unwrap().amount, "0.5");
    // the webhook went out to the business's URL, signed
    let (mut conn, _) = hooks.accept().unwrap();
    let mut got = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap();
    got.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(got.starts_with("POST /hook "), "{got}");
    assert!(got.contains("x-coinpay-signature: t="), "{got}");
    drop(conn);

    assert_eq!(call(&server, "GET", "/api/escrow/esc_nope", "").0, 404);
    let release = |t: &str| format!(r#"{{"release_token":"{t}"}}"#);
    let dispute = |t: &str, reason: &str| format!(r#"{{"token":"{t}","reason":"{reason}"}}"#);
    let path = |a: &str| format!("/api/escrow/{id}/{a}");
    let post = |a: &str, body: &str| call(&server, "POST", &path(a), body);
    assert_eq!(post("release", &release("x")).0, 403);
    assert_eq!(post("release", &release(&ben)).0, 403, "the beneficiary");
    assert_eq!(post("release", "{}").0, 400);
    assert_eq!(post("release", "not json").0, 500);
    // not funded yet: no release, no refund, no dispute (all 400)
    for (action, body) in [
        ("release", release(&rel)),
        ("refund", release(&rel)),
        ("dispute", dispute(&ben, "the output was garbage")),
    ] {
        let (st, e) = post(action, &body);
        assert_eq!(st, 400, "{action}: {e}");
        assert!(
            e["error"].as_str().unwrap().contains("status: created"),
            "{action}: {e}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let (st, e) = call(&server, "GET", &format!("/api/escrow/{id}"), "");
    assert_eq!((st, e["status"].as_str()), (200, Some("funded")));
    assert_eq!(e["deposited_amount"], 0.5);
    // a dispute needs a reason of at least 10 characters (trimmed)
    assert_eq!(post("dispute", &dispute(&ben, "")).0, 400);
    let (st, e) = post("dispute", &dispute(&ben, "   late   "));
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("at least 10"), "{e}");
    assert_eq!(
        post("dispute", &dispute("x", "the output was garbage")).0,
        403
    );
    let (st, e) = post("dispute", &dispute(&ben, "the output was garbage"));
    assert_eq!((st, e["status"].as_str()), (200, Some("disputed")), "{e}");
    assert_eq!(e["dispute_reason"], "the output was garbage");
    // disputed: no refund, no second dispute; the depositor may release
    assert_eq!(post("refund", &release(&rel)).0, 400);
    assert_eq!(post("dispute", &dispute(&rel, "and again, louder")).0, 400);
    let (st, e) = post("release", &release(&rel));
    assert_eq!((st, e["status"].as_str()), (200, Some("settled")), "{e}");
    assert_eq!(post("release", &release(&rel)).0, 400, "released once");

    // the test hook funds created escrows only
    let (_, e2) = call(&server, "POST", "/api/escrow", &create);
    let id2 = e2["id"].as_str().unwrap();
    let rel2 = e2["release_token"].as_str().unwrap();
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
        400
    );
    let refund2 = format!("/api/escrow/{id2}/refund");
    let (st, e2) = call(&server, "POST", &refund2, &release(rel2));
    assert_eq!((st, e2["status"].as_str()), (200, Some("refunded")), "{e2}");
    assert_eq!(call(&server, "POST", &refund2, &release(rel2)).0, 400);

    let c = server.counters();
    assert_eq!((c.creates, c.releases, c.refunds), (2, 1, 1), "{c:?}");
    let events: Vec<String> = server.deliveries().iter().map(Webhook::event).collect();
    assert_eq!(
        events,
        [
            "escrow.created",
            "escrow.funded",
            "escrow.disputed",
            "escrow.released",
            "escrow.settled",
            "escrow.created",
            "escrow.funded",
            "escrow.refunded",
        ]
    );
    // deliveries name the escrow and the business, amounts as numbers
    let hook = &server.deliveries()[1];
    let v: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(v["data"]["escrow_id"], id.as_str());
    assert_eq!(v["business_id"], TEST_BUSINESS_ID);
    assert_eq!(v["data"]["amount"], 0.5);
    assert!(hook.headers.iter().all(|(k, _)| k != "x-coinpay-event"));
}

/// Only unfunded escrows expire; a funded one is held past `expires_at`.
#[test]
fn only_unfunded_escrows_expire() {
    let server = CoinPayServer::start(CoinPayOptions {
        hour: Duration::from_millis(300),
        ..CoinPayOptions::default()
    });
    let body = create_body("SOL", "1", Some(TEST_BUSINESS_ID))
        .replace(r#""expires_in_hours":2"#, r#""expires_in_hours":1"#);
    let (_, a) = call(&server, "POST", "/api/escrow", &body);
    let (_, b) = call(&server, "POST", "/api/escrow", &body);
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    assert!(server.fund(b));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.escrow(a).unwrap().status, "expired");
    assert_eq!(server.escrow(b).unwrap().status, "funded");
    assert!(!server.fund(a), "an expired escrow takes no deposit");
    let events: Vec<String> = server.deliveries().iter().map(Webhook::event).collect();
    assert_eq!(
        events,
        [
            "escrow.created",
            "escrow.created",
            "escrow.funded",
            "escrow.expired"
        ]
    );
}

/// The service sends escrow webhooks only for escrows made with a
/// `business_id`: an anonymous escrow's life leaves the outbox empty.
#[test]
fn anonymous_escrows_send_no_webhooks() {
    let server = CoinPayServer::start(CoinPayOptions::default());
    let (st, e) = call(
        &server,
        "POST",
        "/api/escrow",
        &create_body("ETH", "0.5", None),
    );
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().unwrap();
    let rel = e["release_token"].as_str().unwrap();
    assert!(server.fund(id));
    let (st, _) = call(
        &server,
        "POST",
        &format!("/api/escrow/{id}/release"),
        &format!(r#"{{"release_token":"{rel}"}}"#),
    );
    assert_eq!(st, 200);
    assert_eq!(server.escrow(id).unwrap().status, "settled");
    assert!(server.deliveries().is_empty());
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
    assert_eq!(pg_timestamp(951_868_800), "2000-03-01T00:00:00.000+00:00");
}
