//! Files and directories only this node's user may read: the data dir
//! (0700), keys and the database (0600), and the node-local secret that
//! keys for data at rest derive from. One place writes them, so no secret
//! is ever created world-readable, even for a moment.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// The node-local secret's file in the data dir: 32 random bytes (0600)
/// from which keys for data at rest are derived ([`derive_key`]).
pub const NODE_SECRET_FILE: &str = "secret.key";

/// The node-local secret of `data_dir`, created on first use.
pub fn node_secret(data_dir: &Path) -> std::io::Result<[u8; 32]> {
    let path = data_dir.join(NODE_SECRET_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is not 32 bytes: restore it from a backup (data encrypted under it is unreadable without it)",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            private_dir(data_dir)?;
            let key: [u8; 32] = rand::random();
            write_private(&path, &key)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// A key for one purpose (`label`) derived from a secret.
pub fn derive_key(secret: &[u8; 32], label: &str) -> [u8; 32] {
    hmac_sha256(secret, label.as_bytes(), b"")
}

/// HMAC-SHA256 (RFC 2104) of `label ‖ 0 ‖ msg` under a 32-byte key.
pub fn hmac_sha256(key: &[u8; 32], label: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(label)
        .chain_update([0u8])
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Creates `dir` (and parents) and makes it 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (a temp file beside it, synced, then
/// renamed) with mode 0600 from creation.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    {
        let mut f = private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Creates `path` empty with mode 0600 if it does not exist; an existing
/// file is left as it is (a database SQLite then opens).
pub fn create_private(path: &Path) -> std::io::Result<()> {
    open_private(path, false).map(drop)
}

/// Opens (creating, truncating) `path` for writing with mode 0600.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    open_private(path, true)
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts.open(path)?;
    // An existing file keeps its old mode through `open`: tighten it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Makes an existing file 0600 (a database SQLite created).
pub fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
