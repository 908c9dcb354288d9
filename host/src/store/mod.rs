//! Durable node state in one SQLite file (`node.db` in the data dir):
//! schema migrations, the job state machine ([`JobState`]) and repositories
//! for jobs and their append-only event log, peers, quotes, escrows and
//! verifier attestations. The file is
//! opened in WAL mode with foreign keys on and a busy timeout, so several
//! connections (threads or processes) can share it. Every job transition is
//! one `IMMEDIATE` transaction that updates the row only if it is still in
//! the expected state and appends the event: of two racing transitions,
//! exactly one wins and the other gets [`StoreError::StateConflict`].
//! rusqlite is blocking: async callers use `tokio::task::spawn_blocking`.

mod attestations;
mod custody;
mod escrows;
mod jobs;
mod kv;
mod migrations;
mod node_lock;
mod peers;
mod quotes;
mod rows;
mod state;

pub use attestations::{AdvertisedStake, AttestationRecord, AttestationsRepo};
pub use custody::{CustodyRepo, SlashRecord, StakeHeld};
pub use escrows::{EarnInsert, Earnings, EscrowKind, EscrowRecord, EscrowsRepo};
pub use jobs::{JobEvent, JobRecord, JobUpdate, JobsRepo, NewJob};
pub use kv::{KvError, KvLock, PluginKv};
pub use migrations::{latest_version, Migration, MIGRATIONS};
pub use node_lock::{NodeLock, NodeLockError, NODE_LOCK_FILE};
pub use peers::{PeerRecord, PeersRepo};
pub use quotes::{QuoteRecord, QuotesRepo};
pub use state::{JobRole, JobState, UnknownState};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The database file name inside the data dir.
pub const DB_FILE: &str = "node.db";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (I/O, constraint, busy past the timeout...).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data dir could not be created.
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file was written by a newer build.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade infernet")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version known here.
        supported: i64,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Version.
        version: i64,
        /// Name.
        name: &'static str,
        /// Cause.
        source: rusqlite::Error,
    },
    /// The state machine forbids this step.
    #[error("illegal job transition {from} -> {to} for job {job_id}")]
    IllegalTransition {
        /// Job.
        job_id: String,
        /// Asked-for source state.
        from: JobState,
        /// Asked-for target state.
        to: JobState,
    },
    /// The job was not in the expected state (someone else moved it first).
    #[error("job {job_id} is {actual}, not {expected}")]
    StateConflict {
        /// Job.
        job_id: String,
        /// State the caller expected.
        expected: JobState,
        /// State found.
        actual: JobState,
    },
    /// No such job.
    #[error("no job {0}")]
    JobNotFound(String),
    /// No such quote.
    #[error("no quote {0}")]
    QuoteNotFound(String),
    /// A job with this id already exists (a duplicate submission).
    #[error("job {0} already exists")]
    DuplicateJob(String),
    /// A row holds a value this build cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A JSON column could not be (de)serialized.
    #[error("json column: {0}")]
    Json(#[from] serde_json::Error),
}

/// A handle on the database. Cheap to share behind an `Arc`; calls are
/// serialized on one connection. Open several `Store`s on one file for
/// parallel readers (WAL).
pub struct Store {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) `data_dir/node.db` and migrates it.
    pub fn open_in_dir(data_dir: &Path) -> Result<Store, StoreError> {
        crate::private::private_dir(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        Store::open(&data_dir.join(DB_FILE))
    }

    /// Opens (creating if needed) the database file at `path` and migrates
    /// it. The file and its WAL/SHM siblings are 0600: they hold escrow
    /// records and adapters' key-value state.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let private = |source| StoreError::DataDir {
            path: path.to_path_buf(),
            source,
        };
        // Created 0600 before SQLite opens it: SQLite gives the WAL and SHM
        // files the database file's mode.
        crate::private::create_private(path).map_err(private)?;
        let conn = Connection::open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_os_string();
            name.push(suffix);
            let file = PathBuf::from(name);
            if file.exists() {
                crate::private::restrict(&file).map_err(private)?;
            }
        }
        Store::init(conn, Some(path.to_path_buf()))
    }

    /// A private in-memory database (tests, ephemeral clients).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Store, StoreError> {
        conn.busy_timeout(Duration::from_secs(10))?;
        if path.is_some() {
            // `journal_mode` returns the resulting mode as a row.
            let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The schema version now in the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self.conn();
        current_version(&conn)
    }

    /// `PRAGMA journal_mode` (`wal` for a file).
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        Ok(self
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?)
    }

    /// Whether foreign keys are enforced on this connection.
    pub fn foreign_keys(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get::<_, i64>(0))?
            == 1)
    }

    /// Every applied migration: `(version, name, applied_at_ms)`.
    pub fn applied_migrations(&self) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT version, name, applied_at_ms FROM schema_migrations ORDER BY version",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Jobs and their event log.
    pub fn jobs(&self) -> JobsRepo<'_> {
        JobsRepo { store: self }
    }

    /// Known peers.
    pub fn peers(&self) -> PeersRepo<'_> {
        PeersRepo { store: self }
    }

    /// Quotes received or issued.
    pub fn quotes(&self) -> QuotesRepo<'_> {
        QuotesRepo { store: self }
    }

    /// Verified outcomes (this node's and gossiped ones) and advertised
    /// stakes.
    pub fn attestations(&self) -> AttestationsRepo<'_> {
        AttestationsRepo { store: self }
    }

    /// Stakes this node holds for providers, as an arbiter, and the
    /// slashes of them.
    pub fn custody(&self) -> CustodyRepo<'_> {
        CustodyRepo { store: self }
    }

    /// Escrows this node paid into, earns from, or staked.
    pub fn escrows(&self) -> EscrowsRepo<'_> {
        EscrowsRepo { store: self }
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one `IMMEDIATE` transaction (write lock taken up front, so
    /// concurrent writers queue on the busy timeout instead of deadlocking).
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version       INTEGER PRIMARY KEY NOT NULL,
             name          TEXT NOT NULL,
             applied_at_ms INTEGER NOT NULL
         );",
    )?;
    let found = current_version(conn)?;
    let supported = latest_version();
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let wrap = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        // Another process may have migrated while we waited for the lock.
        let already: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [m.version],
                |r| r.get(0),
            )
            .optional()
            .map_err(wrap)?;
        if already.is_some() {
            continue;
        }
        tx.execute_batch(m.sql).map_err(wrap)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.name, now_ms()],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        tracing::info!(version = m.version, name = m.name, "database migrated");
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
