//! `plugin_kv`: one private key-value namespace per plugin in the node's
//! database, backing the WIT `kv` interface of payment plugins. A plugin
//! sees only its own namespace (the host picks it, the plugin cannot name
//! another). Keys and values are bounded so a plugin cannot fill the disk
//! with one call.

use super::{now_ms, Store, StoreError};
use rusqlite::{params, OptionalExtension};
use std::sync::Arc;

/// Longest key a plugin may use, bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a plugin may store, bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one namespace may hold.
pub const MAX_KEYS: i64 = 1_000_000;
/// Most keys one `list_keys` call returns.
pub const MAX_LIST: usize = 10_000;

/// Why a kv call was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Key or value over its bound, or the namespace is full.
    #[error("{0}")]
    Limit(String),
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for KvError {
    fn from(e: rusqlite::Error) -> Self {
        KvError::Store(StoreError::Sqlite(e))
    }
}

/// A handle on one namespace of `plugin_kv`. Cheap to clone.
#[derive(Clone)]
pub struct PluginKv {
    store: Arc<Store>,
    namespace: String,
}

impl Store {
    /// The private key-value namespace `namespace` (a plugin's name).
    pub fn plugin_kv(self: &Arc<Self>, namespace: &str) -> PluginKv {
        PluginKv {
            store: self.clone(),
            namespace: namespace.to_owned(),
        }
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::Limit(format!(
            "kv key of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

/// Exclusive use of one namespace across every process on this database
/// (the node, and `infernet wallet|stake|escrow` run beside it), held until
/// dropped. See [`PluginKv::exclusive`].
#[must_use = "the namespace is exclusive only while this is alive"]
pub struct KvLock {
    _file: Option<std::fs::File>,
}

impl PluginKv {
    /// The namespace name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Takes the namespace for a sequence of reads and writes that must not
    /// interleave with another process's (a payment plugin's balance moves,
    /// a host-side credit): an OS file lock next to the database,
    /// `<db>.kv-<namespace>.lock`, waited for. In memory there is one
    /// process: nothing to lock (callers still serialize in-process).
    pub fn exclusive(&self) -> Result<KvLock, KvError> {
        let Some(db) = self.store.path() else {
            return Ok(KvLock { _file: None });
        };
        let safe: String = self
            .namespace
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".kv-{safe}.lock"));
        let path = db.with_file_name(name);
        let lock_err = |e: std::io::Error| {
            KvError::Store(StoreError::Corrupt(format!(
                "cannot lock {}: {e}",
                path.display()
            )))
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        file.lock().map_err(lock_err)?;
        Ok(KvLock { _file: Some(file) })
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        Ok(self
            .store
            .conn()
            .query_row(
                "SELECT value FROM plugin_kv WHERE namespace = ?1 AND key = ?2",
                params![self.namespace, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores `value` under `key`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::Limit(format!(
                "kv value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            )));
        }
        let ns = self.namespace.clone();
        self.store.write(|tx| {
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM plugin_kv WHERE namespace = ?1 AND key = ?2",
                    params![ns, key],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                let count: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM plugin_kv WHERE namespace = ?1",
                    [&ns],
                    |r| r.get(0),
                )?;
                if count >= MAX_KEYS {
                    return Ok(Err(KvError::Limit(format!(
                        "kv namespace `{ns}` is full ({MAX_KEYS} keys)"
                    ))));
                }
            }
            tx.execute(
                "INSERT INTO plugin_kv (namespace, key, value, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                 updated_at_ms = excluded.updated_at_ms",
                params![ns, key, value, now_ms()],
            )?;
            Ok(Ok(()))
        })?
    }

    /// Removes `key` (missing is fine).
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        self.store.conn().execute(
            "DELETE FROM plugin_kv WHERE namespace = ?1 AND key = ?2",
            params![self.namespace, key],
        )?;
        Ok(())
    }

    /// Keys starting with `prefix`, sorted (at most [`MAX_LIST`]).
    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        check_key(prefix)?;
        let conn = self.store.conn();
        let mut stmt = conn.prepare(
            "SELECT key FROM plugin_kv WHERE namespace = ?1 AND substr(key, 1, ?2) = ?3
             ORDER BY key LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                self.namespace,
                prefix.chars().count() as i64,
                prefix,
                MAX_LIST as i64
            ],
            |r| r.get::<_, String>(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Reads, changes and writes `key` in one transaction (host tools such
    /// as `infernet wallet fund` use it while the node may be running).
    pub fn update<E: From<KvError>>(
        &self,
        key: &str,
        f: impl FnOnce(Option<Vec<u8>>) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        check_key(key)?;
        let ns = self.namespace.clone();
        self
            .store
            .write(|tx| {
                let old: Option<Vec<u8>> = tx
                    .query_row(
                        "SELECT value FROM plugin_kv WHERE namespace = ?1 AND key = ?2",
                        params![ns, key],
                        |r| r.get(0),
                    )
                    .optional()?;
                let new = match f(old) {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                };
                tx.execute(
                    "INSERT INTO plugin_kv (namespace, key, value, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                     updated_at_ms = excluded.updated_at_ms",
                    params![ns, key, new, now_ms()],
                )?;
                Ok(Ok(new))
            })
            .map_err(KvError::from)?
    }
}
