//! CoinPay webhook signatures: `X-CoinPay-Signature: t=<unix>,v1=<hex>`,
//! `v1 = hex(HMAC-SHA256(webhook_secret, "<t>.<raw body>"))`, deliveries
//! older or newer than five minutes refused.

use hmac::{Hmac, KeyInit, Mac};
use infernet_plugin_api::Error;
use sha2::Sha256;

/// Largest accepted distance between the signature's `t` and now, seconds.
pub const TOLERANCE_SECS: u64 = 300;

/// Checks `header` (the `X-CoinPay-Signature` value) over `body` at time `now`.
/// Errors say what is wrong without echoing the signature or the secret.
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64) -> Result<(), Error> {
    let mut t: Option<&str> = None;
    let mut sigs: Vec<&str> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(Error::invalid("malformed X-CoinPay-Signature header"));
        };
        match k.trim() {
            "t" => t = Some(v.trim()),
            "v1" => sigs.push(v.trim()),
            _ => {}
        }
    }
    let t = t.ok_or_else(|| Error::invalid("X-CoinPay-Signature header has no timestamp `t`"))?;
    if sigs.is_empty() {
        return Err(Error::invalid(
            "X-CoinPay-Signature header has no `v1` signature",
        ));
    }
    let ts: u64 = t
        .parse()
        .map_err(|_| Error::invalid("X-CoinPay-Signature timestamp is not a number"))?;
    if ts.abs_diff(now) > TOLERANCE_SECS {
        return Err(Error::invalid(format!(
            "webhook signature timestamp is {} s away from now (more than {TOLERANCE_SECS} s): replayed or clock skew",
            ts.abs_diff(now)
        )));
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    for sig in sigs {
        let Ok(bytes) = hex::decode(sig) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if mac.clone().verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(Error::invalid("webhook signature does not match"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: u64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_fresh_signature_over_the_exact_body_verifies() {
        let body = br#"{"type":"escrow.funded","data":{"escrow_id":"esc_1"}}"#;
        let sig = sign("whsec_1", 1_000, body);
        assert!(verify("whsec_1", &format!("t=1000,v1={sig}"), body, 1_000).is_ok());
        // several v1 values (a rotated secret): any one may match
        let header = format!("t=1000, v1=00ff, v1={sig}");
        assert!(verify("whsec_1", &header, body, 1_200).is_ok());
    }

    #[test]
    fn tampering_replays_and_malformed_headers_are_refused() {
        let body = br#"{"type":"escrow.funded"}"#;
        let sig = sign("whsec_1", 1_000, body);
        let header = format!("t=1000,v1={sig}");
        let refused = |secret: &str, header: &str, body: &[u8], now: u64| match verify(
            secret, header, body, now,
        ) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            refused("whsec_1", &header, br#"{"type":"escrow.released"}"#, 1_000)
                .contains("does not match")
        );
        assert!(refused("whsec_2", &header, body, 1_000).contains("does not match"));
        assert!(
            refused("whsec_1", &header, body, 1_000 + TOLERANCE_SECS + 1).contains("away from now")
        );
        assert!(
            refused("whsec_1", &format!("t=1001,v1={sig}"), body, 1_000).contains("does not match")
        );
        assert!(refused("whsec_1", &format!("v1={sig}"), body, 1_000).contains("no timestamp"));
        assert!(refused("whsec_1", "t=1000", body, 1_000).contains("no `v1`"));
        assert!(refused("whsec_1", "garbage", body, 1_000).contains("malformed"));
        // no error echoes the signature or the secret
        let m = refused("whsec_secret", &header, body, 1_000);
        assert!(!m.contains(&sig) && !m.contains("whsec_secret"), "{m}");
    }
}
