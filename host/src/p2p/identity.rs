//! The node's libp2p identity: an ed25519 keypair kept in the data dir as
//! `identity.key` (libp2p protobuf encoding), created on first start and
//! reused after, so the peer id survives restarts.

use super::NetworkError;
use libp2p::identity::Keypair;
use std::io::Write;
use std::path::Path;

/// File name of the identity key inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// Loads `data_dir/identity.key`, or creates it (mode 0600, written
/// atomically) when absent. A present but unreadable key is an error, never
/// silently replaced: replacing it would change the node's peer id.
pub fn load_or_create_identity(data_dir: &Path) -> Result<Keypair, NetworkError> {
    let path = data_dir.join(IDENTITY_FILE);
    let io_err = |e: std::io::Error| NetworkError::Identity(format!("{}: {e}", path.display()));
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            NetworkError::Identity(format!("{}: not a libp2p keypair: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io_err)?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| NetworkError::Identity(e.to_string()))?;
            let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
            {
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(&tmp).map_err(io_err)?;
                f.write_all(&bytes).map_err(io_err)?;
                f.sync_all().map_err(io_err)?;
            }
            std::fs::rename(&tmp, &path).map_err(io_err)?;
            tracing::info!(peer_id = %key.public().to_peer_id(), path = %path.display(), "created node identity");
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}
