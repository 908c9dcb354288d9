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
