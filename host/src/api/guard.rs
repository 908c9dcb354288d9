//! What a keyless API accepts. Without `[[api.keys]]` the API listens on
//! loopback only, yet a web page the user opens can still reach it: by a
//! cross-site request (a form POST with a `text/plain` body needs no CORS
//! preflight, and the handlers read JSON whatever the content type says)
//! or by DNS rebinding (a name of the attacker's resolved to 127.0.0.1).
//! Either would spend the node's money. So a keyless request must be
//! addressed to a loopback name (`Host`), and when a browser says where it
//! comes from (`Origin`, `Sec-Fetch-Site`), that must be this same origin.
//! A keyed API needs neither: a browser never adds a bearer key by itself.

use super::error::ApiError;
use axum::http::{header, HeaderMap};

/// Refuses a keyless request that a foreign web page could have sent.
pub(super) fn check_keyless(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST.as_str()).unwrap_or_default();
    if !host_name(host).is_some_and(is_loopback_name) {
        return Err(ApiError::forbidden(
            "non_loopback_host",
            format!(
                "without [[api.keys]] this API answers requests addressed to a loopback host only \
                 (localhost, 127.0.0.1, [::1]), not `{}`; add a key to serve other names",
                clip(host)
            ),
        ));
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let same = origin
            .strip_prefix("http://")
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
        if !same {
            return Err(ApiError::forbidden(
                "cross_origin",
                format!(
                    "without [[api.keys]] this API refuses requests from other web origins \
                     (`{}`); configure a key to call it from a page",
                    clip(origin)
                ),
            ));
        }
    }
    if text("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return Err(ApiError::forbidden(
            "cross_origin",
            "without [[api.keys]] this API refuses cross-site requests; configure a key",
        ));
    }
    Ok(())
}

/// The host name of a `Host` value (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> Option<&str> {
    match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(name, _)| name),
        None => Some(host.rsplit_once(':').map_or(host, |(h, _)| h)),
    }
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A header value as it may appear in an error: at most 80 characters.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::check_keyless;
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn keyless_answers_loopback_names_only() {
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "127.1.2.3",
        ] {
            assert!(check_keyless(&headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1",
            "[::2]:80",
            "localhost.evil.com",
            "[::1",
            "",
        ] {
            let e = check_keyless(&headers(&[("host", bad)])).unwrap_err();
            assert_eq!(e.status, 403, "{bad}");
        }
        assert!(check_keyless(&HeaderMap::new()).is_err());
    }

    #[test]
    fn keyless_refuses_other_origins() {
        let host = ("host", "127.0.0.1:8080");
        let ok = [
            vec![host, ("origin", "http://127.0.0.1:8080")],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![host, ("sec-fetch-site", "none")],
        ];
        for h in ok {
            assert!(check_keyless(&headers(&h)).is_ok(), "{h:?}");
        }
        let bad = [
            vec![host, ("origin", "https://evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://127.0.0.1:9999")],
            vec![host, ("origin", "http://localhost:8080")],
            vec![host, ("sec-fetch-site", "cross-site")],
        ];
        for h in bad {
            let e = check_keyless(&headers(&h)).unwrap_err();
            assert_eq!(e.code, Some("cross_origin"), "{h:?}");
        }
    }
}
