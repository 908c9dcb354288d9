//! One node per data directory: a running node holds an exclusive OS lock
//! on `<data_dir>/node.lock` (released when the process exits, however it
//! exits) and writes its pid there. A second node on the same directory
//! would share the identity key, the listen port and the job store; it is
//! refused with the directory and the holder's pid. Read-only tools
//! (`infernet jobs`, `escrow list`) do not take the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data dir.
pub const NODE_LOCK_FILE: &str = "node.lock";

/// Why the data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum NodeLockError {
    /// Another process holds it.
    #[error(
        "data dir {dir} is in use by another infernet node (pid {holder}, lock file {lock}); \
         stop that node or give this one another node.data_dir"
    )]
    InUse {
        /// The data dir.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid as it wrote it (`unknown` if unreadable).
        holder: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot lock data dir {dir}: {source}")]
    Io {
        /// The data dir.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
}

impl NodeLock {
    /// Takes the lock on `dir` (which must exist) or says who holds it.
    pub fn acquire(dir: &Path) -> Result<NodeLock, NodeLockError> {
        let lock = dir.join(NODE_LOCK_FILE);
        let io = |source| NodeLockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.take(32).read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(NodeLockError::InUse {
                    dir: dir.to_path_buf(),
                    lock,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(NodeLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_dir_and_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeLock::acquire(dir.path()).unwrap();
        let err = NodeLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        NodeLock::acquire(dir.path()).unwrap();
    }
}
