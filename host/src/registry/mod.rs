//! The Supabase bootstrap registry (DESIGN §8): how a node with no
//! configured peer finds a first one, and how providers make themselves
//! findable.
//!
//! A row is only a pointer; the truth is the signed record in it
//! ([`record`]). A client fetches the active rows ([`rest`]), keeps those
//! whose record verifies under the key inside its peer id, is fresh, and
//! agrees with the row's columns, counts every other one by why
//! ([`RegistryStats`]), and dials what is left. Providers register and
//! heartbeat through the `register_node` function (the database verifies the
//! signature too, so nobody holding the public anon key can overwrite
//! another node's row), backing off when the registry is down; the node
//! keeps working on static peers and the DHT whatever the registry does.

pub mod record;
pub mod rest;

use crate::config::RegistryConfig;
use crate::p2p::NetworkHandle;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use record::{Record, Rejection, SignError, SignedRecord, RECORD_VERSION};
use rest::{AnonKey, Rest};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The config or environment cannot work (no anon key, bad URL).
    #[error("registry: {0}")]
    Config(String),
    /// Nothing answered, or not in time.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// It answered something that is not what the API returns.
    #[error("registry answered garbage: {0}")]
    BadAnswer(String),
    /// It answered with an error (PostgREST's code and message).
    #[error("registry refused (HTTP {status}{}): {message}", if .code.is_empty() { String::new() } else { format!(", {}", .code) })]
    Refused {
        /// HTTP status.
        status: u16,
        /// PostgREST / SQLSTATE code, when given.
        code: String,
        /// Its message.
        message: String,
    },
    /// The record could not be made.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// What the registry did for this node since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Fetches answered.
    pub fetches: u64,
    /// Rows whose record verified (each fetch counts again).
    pub accepted: u64,
    /// Rows ignored, by [`Rejection::kind`].
    pub rejected: BTreeMap<String, u64>,
    /// Registrations the registry took.
    pub registered: u64,
    /// Calls that failed (fetch or register).
    pub failures: u64,
    /// The last failure, for `infernet` status output.
    pub last_error: Option<String>,
}

/// A node's registry: the REST endpoint, the config, the counters.
#[derive(Debug, Clone)]
pub struct Registry {
    rest: Rest,
    config: RegistryConfig,
    stats: Arc<Mutex<RegistryStats>>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Registry {
    /// The registry `config` names, its anon key read from the environment
    /// variable it names.
    pub fn from_config(config: &RegistryConfig) -> Result<Registry, RegistryError> {
        let key = std::env::var(&config.anon_key_env).map_err(|_| {
            RegistryError::Config(format!(
                "environment variable `{}` (registry.anon_key_env) is not set: export the project's anon key in it (Supabase dashboard → Project Settings → API)",
                config.anon_key_env
            ))
        })?;
        if key.trim().is_empty() {
            return Err(RegistryError::Config(format!(
                "environment variable `{}` is empty",
                config.anon_key_env
            )));
        }
        Ok(Registry {
            rest: Rest::new(&config.url, AnonKey::new(key.trim().to_string()))?,
            config: config.clone(),
            stats: Default::default(),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> RegistryStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn note<T>(&self, r: &Result<T, RegistryError>) {
        if let (Err(e), Ok(mut s)) = (r, self.stats.lock()) {
            s.failures += 1;
            s.last_error = Some(e.to_string());
        }
    }

    /// The verified records of the active rows, except `own`'s, newest
    /// heartbeat first; every other row is counted by why it was ignored.
    pub async fn fetch(&self, own: &PeerId) -> Result<Vec<Record>, RegistryError> {
        let rows = self.rest.active_rows().await;
        self.note(&rows);
        let now = unix_now();
        let mut good = Vec::new();
        let mut stats = RegistryStats::default();
        let own = own.to_string();
        for row in rows? {
            let checked = match row {
                Ok(row) => check_row(&row, now).inspect_err(|why| {
                    tracing::debug!(peer = %clip(&row.peer_id), reason = %why, "ignoring registry row");
                }),
                Err(e) => Err(Rejection::Malformed(e)),
            };
            match checked {
                Ok(r) if r.peer_id == own => {}
                Ok(r) => {
                    stats.accepted += 1;
                    good.push(r);
                }
                Err(why) => *stats.rejected.entry(why.kind().to_string()).or_default() += 1,
            }
        }
        let ignored: u64 = stats.rejected.values().sum();
        if ignored > 0 {
            // One line per fetch: a registry full of junk cannot flood the log.
            tracing::warn!(url = %self.config.url, ignored, why = ?stats.rejected, "ignored registry rows that do not verify");
        }
        if let Ok(mut s) = self.stats.lock() {
            s.fetches += 1;
            s.accepted += stats.accepted;
            for (k, n) in stats.rejected {
                *s.rejected.entry(k).or_default() += n;
            }
        }
        Ok(good)
    }

    /// Signs a fresh record of this node and registers it.
    pub async fn register(
        &self,
        key: &Keypair,
        addrs: &[Multiaddr],
        models: &[String],
    ) -> Result<SignedRecord, RegistryError> {
        let signed = self.record(key, addrs, models)?.sign(key)?;
        let r = self.rest.register(&signed).await;
        self.note(&r);
        r?;
        if let Ok(mut s) = self.stats.lock() {
            s.registered += 1;
        }
        Ok(signed)
    }

    /// This node's record now: its dialable addresses (at most
    /// [`record::MAX_ADDRS`], each ending in its peer id), its models.
    pub fn record(
        &self,
        key: &Keypair,
        addrs: &[Multiaddr],
        models: &[String],
    ) -> Result<Record, RegistryError> {
        let peer = key.public().to_peer_id();
        let suffix = format!("/p2p/{peer}");
        let mut out: Vec<String> = Vec::new();
        for a in addrs {
            let mut s = a.to_string();
            if !s.ends_with(&suffix) {
                s.push_str(&suffix);
            }
            if !out.contains(&s) && s.len() <= record::MAX_ADDR_CHARS {
                out.push(s);
            }
        }
        out.truncate(record::MAX_ADDRS);
        if out.is_empty() {
            return Err(RegistryError::Config(
                "no dialable address to register yet (is the node listening?)".into(),
            ));
        }
        Ok(Record {
            v: RECORD_VERSION,
            peer_id: peer.to_string(),
            addrs: out,
            models: models.iter().take(record::MAX_MODELS).cloned().collect(),
            contract: crate::runtime::version::host_wit_version().to_string(),
            protocol: crate::p2p::protocol::JOB_PROTOCOL.to_string(),
            timestamp: unix_now(),
            ttl: self.config.ttl_secs,
        })
    }

    /// Registers now and every `heartbeat_secs`, backing off (1 s doubling
    /// to the heartbeat, with jitter) while the registry fails. Runs until
    /// aborted.
    pub async fn heartbeat(self, net: NetworkHandle, key: Keypair, models: Vec<String>) {
        let every = Duration::from_secs(self.config.heartbeat_secs);
        let mut backoff = Backoff::new(every);
        loop {
            let addrs = net.dialable_addrs().await.unwrap_or_default();
            let wait = match self.register(&key, &addrs, &models).await {
                Ok(_) => {
                    tracing::debug!(url = %self.config.url, "registered with the registry");
                    backoff.reset();
                    every
                }
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(url = %self.config.url, error = %e, retry_in_ms = wait.as_millis() as u64, "registry registration failed");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Dials peers from the registry while this node has no connection (at
    /// start, and again whenever it loses every peer): at most `max_dial`
    /// verified records, each at its addresses until one connects. Fetch
    /// failures back off like [`Registry::heartbeat`]. Runs until aborted.
    pub async fn bootstrap(self, net: NetworkHandle) {
        let every = Duration::from_secs(self.config.heartbeat_secs);
        let mut backoff = Backoff::new(every);
        let own = net.peer_id();
        loop {
            let connected = net.connected_peers().await.map(|p| p.len()).unwrap_or(0);
            if connected > 0 {
                tokio::time::sleep(every.min(Duration::from_secs(10))).await;
                continue;
            }
            let wait = match self.fetch(&own).await {
                Ok(records) => {
                    let dialed = dial_records(&net, &records, self.config.max_dial).await;
                    tracing::info!(
                        rows = records.len(),
                        connected = dialed,
                        "bootstrapped from the registry"
                    );
                    if dialed > 0 {
                        backoff.reset();
                        every.min(Duration::from_secs(10))
                    } else {
                        backoff.next()
                    }
                }
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(url = %self.config.url, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read the registry");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A row's record, if it verifies and the row's columns say what it says.
pub fn check_row(row: &rest::Row, now: u64) -> Result<Record, Rejection> {
    let signed = SignedRecord {
        record: row.record.clone(),
        signature: row.signature.clone(),
    };
    let r = signed.verify(now)?;
    let theirs = crate::p2p::protocol::JOB_PROTOCOL;
    for (column, same) in [
        ("peer_id", row.peer_id == r.peer_id),
        ("multiaddrs", row.multiaddrs == r.addrs),
        ("models", row.models == r.models),
        ("contract_version", row.contract_version == r.contract),
        ("protocol_version", row.protocol_version == r.protocol),
    ] {
        if !same {
            return Err(Rejection::Edited(column));
        }
    }
    if r.protocol != theirs {
        return Err(Rejection::Incompatible(r.protocol, theirs.to_string()));
    }
    Ok(r)
}

/// Dials each record's addresses until one connects; returns how many
/// peers connected.
async fn dial_records(net: &NetworkHandle, records: &[Record], max: usize) -> usize {
    let mut connected = 0;
    for r in records.iter().take(max) {
        for a in r.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            match tokio::time::timeout(Duration::from_secs(10), net.dial(a.clone())).await {
                Ok(Ok(_)) => {
                    connected += 1;
                    break;
                }
                Ok(Err(e)) => tracing::debug!(addr = %a, error = %e, "registry peer not reachable"),
                Err(_) => tracing::debug!(addr = %a, "registry peer dial timed out"),
            }
        }
    }
    connected
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Exponential backoff from 1 s to `cap`, with up to 25 % jitter.
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(cap: Duration) -> Backoff {
        Backoff {
            next: Duration::from_secs(1),
            cap,
        }
    }
    fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }
    fn next(&mut self) -> Duration {
        let base = self.next.min(self.cap);
        self.next = (self.next * 2).min(self.cap);
        let jitter = rand::random::<f64>() * 0.25;
        base.mul_f64(1.0 + jitter)
    }
}

#[cfg(test)]
mod tests;
