//! The node's libp2p identity: an ed25519 keypair kept in the data dir as
//! `identity.key` (libp2p protobuf encoding), created on first start and
//! reused after, so the peer id survives restarts.

use super::NetworkError;
use libp2p::identity::Keypair;
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
            crate::private::private_dir(data_dir).map_err(io_err)?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| NetworkError::Identity(e.to_string()))?;
            crate::private::write_private(&path, &bytes).map_err(io_err)?;
            tracing::info!(peer_id = %key.public().to_peer_id(), path = %path.display(), "created node identity");
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}
