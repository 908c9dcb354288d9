//! Outgoing HTTP for plugins (`wasi:http/outgoing-handler`): the
//! `allowed_hosts` origins a provider grants ([`AllowedHost`]) and the
//! hooks every request passes ([`HostFilter`]). Payment adapters and
//! (contract 0.2.3) backends share it. A request to any other origin is
//! refused before a byte is sent and logged; the timeouts of one that goes
//! out are capped, so a plugin cannot sit in a host call past its wall time
//! (wasmtime's epoch deadline only interrupts guest code).

use std::future::Future;
use std::time::Duration;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

/// The scheme of an allowed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedScheme {
    /// TLS (the default of an entry without a scheme).
    Https,
    /// Plain HTTP: only when the entry says `http://`.
    Http,
}

impl AllowedScheme {
    /// The port a URI without one reaches.
    pub fn default_port(self) -> u16 {
        match self {
            AllowedScheme::Https => 443,
            AllowedScheme::Http => 80,
        }
    }
}

/// One `allowed_hosts` entry: a scheme, a host and a port, all matched
/// exactly. `api.example.com` is `https://api.example.com:443`;
/// `api.example.com:8443` is https on 8443; `http://127.0.0.1:8080` is
/// plain HTTP on 8080 and `http://example.com` plain HTTP on 80. No path,
/// query, user info or wildcard; IPv6 literals in brackets (`[::1]:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Scheme.
    pub scheme: AllowedScheme,
    /// Host, lower-case, IPv6 without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl AllowedHost {
    /// Parses an entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<AllowedHost, String> {
        let lower = entry.trim().to_ascii_lowercase();
        let (scheme, rest) = if let Some(r) = lower.strip_prefix("https://") {
            (AllowedScheme::Https, r)
        } else if let Some(r) = lower.strip_prefix("http://") {
            (AllowedScheme::Http, r)
        } else if lower.contains("://") {
            return Err("only `http://` and `https://` origins can be allowed".into());
        } else {
            (AllowedScheme::Https, lower.as_str())
        };
        if rest.is_empty() {
            return Err("names no host".into());
        }
        if rest.contains(['/', '?', '#', '@', '*']) || rest.contains(char::is_whitespace) {
            return Err(
                "must be a host with an optional scheme and port, nothing else \
                 (`api.example.com`, `api.example.com:8443`, `http://127.0.0.1:8080`)"
                    .into(),
            );
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (host, after) = r
                .split_once(']')
                .ok_or("has an unclosed `[` (IPv6 literals are written `[::1]:8080`)")?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or("has text after `]`")?)),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['[', ']']) {
            return Err("names no host".into());
        }
        let port = match port {
            None => scheme.default_port(),
            Some(text) => match text.parse::<u16>() {
                // digits only, as written in a URI: no sign, no leading zero
                Ok(p)
                    if p > 0
                        && text.bytes().all(|b| b.is_ascii_digit())
                        && !text.starts_with('0') =>
                {
                    p
                }
                _ => return Err(format!("has port `{text}`, not a number from 1 to 65535")),
            },
        };
        Ok(AllowedHost {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// Whether a request over `scheme` to `host` on `port` is this origin.
    pub fn matches(&self, scheme: AllowedScheme, host: &str, port: u16) -> bool {
        self.scheme == scheme && self.port == port && self.host.eq_ignore_ascii_case(host)
    }
}

/// The `wasi:http` hooks of a plugin store: requests go out only to the
/// allowed origins.
pub struct HostFilter {
    plugin: String,
    allowed: Vec<AllowedHost>,
    max_wait: Duration,
}

/// The longest any one wait of a request may last (connect, first byte,
/// between two body chunks) unless [`HostFilter::with_max_wait`] says
/// otherwise; wasi:http's own default is 600 s.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);

impl HostFilter {
    /// A filter for `plugin` allowing exactly the origins in `allowed`
    /// (see [`AllowedHost`]). An entry that does not parse allows nothing
    /// (config validation refuses it first; logged here too).
    pub fn new(plugin: &str, allowed: Vec<String>) -> Self {
        let allowed = allowed
            .iter()
            .filter_map(|entry| match AllowedHost::parse(entry) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(plugin, entry = %entry, "allowed_hosts entry ignored: {e}");
                    None
                }
            })
            .collect();
        HostFilter {
            plugin: plugin.to_owned(),
            allowed,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }

    /// Caps each wait of a request (connect, first byte, between body
    /// chunks) at `max`, whatever the plugin asked: the plugin's wall time,
    /// so a silent server cannot hold it in a host call past its deadline.
    pub fn with_max_wait(mut self, max: Duration) -> Self {
        self.max_wait = max.max(Duration::from_millis(1));
        self
    }

    /// `options` with every timeout at most the cap (an unset one is the cap).
    pub fn capped(
        &self,
        options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> wasmtime_wasi_http::RequestOptions {
        let cap = |t: Option<Duration>| Some(t.map_or(self.max_wait, |t| t.min(self.max_wait)));
        let o = options.unwrap_or_default();
        wasmtime_wasi_http::RequestOptions {
            connect_timeout: cap(o.connect_timeout),
            first_byte_timeout: cap(o.first_byte_timeout),
            between_bytes_timeout: cap(o.between_bytes_timeout),
        }
    }

    /// Whether a request with URI scheme `scheme` to `host` (and `port`, if
    /// the URI names one; else the scheme's default) may go out. Schemes
    /// other than `http` and `https` never may.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => AllowedScheme::Https,
            "http" => AllowedScheme::Http,
            _ => return false,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.unwrap_or(scheme.default_port());
        self.allowed.iter().any(|a| a.matches(scheme, host, port))
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HostFilter {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let scheme = request.uri().scheme_str().unwrap_or("").to_string();
        let host = request.uri().host().unwrap_or("").to_string();
        let port = request.uri().port_u16();
        if !self.allows(&scheme, &host, port) {
            tracing::warn!(
                plugin = %self.plugin,
                scheme = %scheme,
                host = %host,
                port = ?port,
                "outgoing HTTP refused: origin not in this plugin's allowed_hosts"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        tracing::debug!(plugin = %self.plugin, host = %host, method = %request.method(), "outgoing HTTP");
        let _ = fut;
        let options = Some(self.capped(options));
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
