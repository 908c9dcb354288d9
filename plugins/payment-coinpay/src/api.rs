//! Calls to CoinPay's escrow REST API over the SDK's blocking HTTP client.

use infernet_plugin_api::{config, http, Error};
use serde_json::Value;

/// Production API root.
pub const DEFAULT_BASE_URL: &str = "https://coinpayportal.com/api";

/// The API root from config `base_url` (no trailing slash).
pub fn base_url() -> String {
    config::get("base_url")
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
}

/// Strings that must never show up in an error or a log line.
#[derive(Default)]
pub struct Redact(pub Vec<String>);

impl Redact {
    fn apply(&self, mut s: String) -> String {
        for secret in &self.0 {
            if secret.len() >= 4 && s.contains(secret.as_str()) {
                s = s.replace(secret.as_str(), "[redacted]");
            }
        }
        s
    }
}

/// Sends `method path` (relative to the API root) with an optional JSON
/// body; returns the JSON escrow object of a 2xx answer, or an error naming
/// the call, the status and the server's message (never a token).
pub fn call(
    method: http::Method,
    path: &str,
    body: Option<String>,
    redact: &Redact,
) -> Result<Value, Error> {
    call_raw(method, path, body, redact).map(|(json, _)| json)
}

/// [`call`], also returning the raw answer body (for exact amounts).
pub fn call_raw(
    method: http::Method,
    path: &str,
    body: Option<String>,
    redact: &Redact,
) -> Result<(Value, Vec<u8>), Error> {
    let url = format!("{}{path}", base_url());
    let api_key = config::secret("api_key").filter(|k| !k.is_empty());
    let auth = api_key.as_ref().map(|k| format!("Bearer {k}"));
    let mut headers: Vec<(&str, &str)> = vec![("accept", "application/json")];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    let verb = match &method {
        http::Method::Get => "GET",
        http::Method::Post => "POST",
        _ => "request",
    };
    let what = format!("CoinPay {verb} {path}");
    let res =
        http::request(method, &url, &headers, body.as_deref().map(str::as_bytes)).map_err(|e| {
            match e {
                http::HttpError::Denied { host } => Error::unsupported(format!(
                    "capability denied: host `{host}` (base_url `{}`) is not in this adapter's \
                     allowed_hosts with that scheme and port (a bare host allows https on 443 \
                     only, `host:port` https on that port, `http://host:port` plain HTTP): \
                     add the origin to the payment plugin's allowed_hosts, or fix `base_url`",
                    base_url()
                )),
                other => {
                    let mut err: Error = other.into();
                    let msg = match &mut err {
                        Error::InvalidInput(m)
                        | Error::Unsupported(m)
                        | Error::LimitExceeded(m)
                        | Error::Internal(m) => m,
                    };
                    *msg = redact.apply(format!("{what}: {msg}"));
                    err
                }
            }
        })?;
    let json: Option<Value> = serde_json::from_slice(&res.body).ok();
    if !res.is_success() {
        let server_msg = json
            .as_ref()
            .and_then(|j| {
                j.get("error")
                    .or_else(|| j.get("message"))
                    .and_then(|m| match m {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(o) => {
                            o.get("message").and_then(Value::as_str).map(String::from)
                        }
                        _ => None,
                    })
            })
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&res.body);
                text.chars().take(200).collect()
            });
        let hint = match res.status {
            401 => " (check the `api_key` secret)",
            _ => "",
        };
        let message = redact.apply(format!(
            "{what} answered HTTP {}: {server_msg}{hint}",
            res.status
        ));
        return Err(if (400..500).contains(&res.status) {
            Error::InvalidInput(message)
        } else {
            Error::Internal(message)
        });
    }
    let json = json.ok_or_else(|| Error::internal(format!("{what}: the answer is not JSON")))?;
    Ok((unwrap_envelope(json), res.body))
}

/// The `amount` of the escrow object in a raw answer body, exactly as
/// written (a JSON number's text, or a string's content), looking inside
/// the same envelopes as [`unwrap_envelope`]. No float touches it.
pub fn raw_amount(body: &[u8]) -> Option<String> {
    use serde_json::value::RawValue;
    type Fields = std::collections::BTreeMap<String, Box<RawValue>>;
    let top: Fields = serde_json::from_slice(body).ok()?;
    let mut obj = top;
    for key in ["data", "escrow"] {
        if let Some(inner) = obj.get(key) {
            if inner.get().trim_start().starts_with('{') {
                obj = serde_json::from_str(inner.get()).ok()?;
                break;
            }
        }
    }
    let raw = obj.get("amount")?.get().trim();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else {
        Some(raw.to_string())
    }
}

/// CoinPay answers either the object itself or `{"success":…, "data": {…}}`
/// / `{"escrow": {…}}`; returns the escrow object.
pub fn unwrap_envelope(json: Value) -> Value {
    for key in ["data", "escrow"] {
        if let Some(inner) = json.get(key) {
            if inner.is_object() {
                return inner.clone();
            }
        }
    }
    json
}

/// A string field of `v`.
pub fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `expires_at` as unix seconds: a number, a numeric string or RFC 3339.
pub fn expires_at(v: &Value) -> Option<u64> {
    match v.get("expires_at")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s
            .parse::<u64>()
            .ok()
            .or_else(|| crate::clock::parse_rfc3339(s)),
        _ => None,
    }
}
