//! Plugin packages: a `.wasm` component plus `infernet-plugin.toml`.
//!
//! The manifest names the plugin, its version and kind, the WIT version it
//! targets and the sha256 of the wasm. A publisher may sign it with ed25519;
//! the host always checks the hash, and checks the signature against the
//! publisher key the provider pinned in config.

use super::PluginError;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File name of the manifest inside a package directory.
pub const MANIFEST_FILE: &str = "infernet-plugin.toml";

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Executes models.
    Backend,
    /// Prices jobs.
    Pricing,
    /// Moves money.
    Payment,
}

impl PluginKind {
    /// The exported interface that identifies this kind.
    pub fn export_interface(self) -> &'static str {
        match self {
            PluginKind::Backend => "backend-api",
            PluginKind::Pricing => "pricing-api",
            PluginKind::Payment => "payment-api",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Backend => "backend",
            PluginKind::Pricing => "pricing",
            PluginKind::Payment => "payment",
        })
    }
}

/// `infernet-plugin.toml`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin name.
    pub name: String,
    /// Plugin version (semver).
    pub version: semver::Version,
    /// World implemented.
    pub kind: PluginKind,
    /// `infernet:plugin` WIT version targeted.
    pub wit: semver::Version,
    /// Wasm file name, relative to the manifest.
    pub wasm: String,
    /// Hex sha256 of the wasm file.
    pub sha256: String,
    /// Publisher signature, when signed.
    pub signature: Option<ManifestSignature>,
}

/// An ed25519 signature over [`Manifest::signing_message`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    /// Hex public key of the publisher.
    pub publisher: String,
    /// Hex signature.
    pub signature: String,
}

/// A manifest together with the bytes of its wasm, hash-checked.
#[derive(Debug, Clone)]
pub struct Package {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The component bytes.
    pub wasm: Vec<u8>,
    /// Where the wasm was read from.
    pub wasm_path: PathBuf,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Manifest {
    /// The exact bytes a publisher signs: every field but the signature.
    pub fn signing_message(&self) -> Vec<u8> {
        format!(
            "infernet-plugin-manifest-v1\nname={}\nversion={}\nkind={}\nwit={}\nwasm={}\nsha256={}\n",
            self.name, self.version, self.kind, self.wit, self.wasm, self.sha256
        )
        .into_bytes()
    }

    /// Signs the manifest in place.
    pub fn sign(&mut self, key: &SigningKey) {
        let sig = key.sign(&self.signing_message());
        self.signature = Some(ManifestSignature {
            publisher: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(sig.to_bytes()),
        });
    }

    /// Checks the signature; with `pinned`, also that it is by that publisher.
    pub fn verify_signature(&self, pinned: Option<&str>) -> Result<(), PluginError> {
        let fail = |reason: String| PluginError::Signature {
            name: self.name.clone(),
            reason,
        };
        let Some(sig) = &self.signature else {
            return match pinned {
                Some(_) => Err(fail(
                    "the config pins a publisher key but the manifest is unsigned".into(),
                )),
                None => Ok(()),
            };
        };
        if let Some(pinned) = pinned {
            if !pinned.eq_ignore_ascii_case(&sig.publisher) {
                return Err(fail(format!(
                    "signed by publisher {} but the config pins {}",
                    sig.publisher, pinned
                )));
            }
        }
        let key = parse_public_key(&sig.publisher).map_err(fail)?;
        let bytes: [u8; 64] = hex::decode(&sig.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| fail("signature is not 64 hex-encoded bytes".into()))?;
        key.verify(&self.signing_message(), &Signature::from_bytes(&bytes))
            .map_err(|_| fail("signature does not match the manifest contents".into()))
    }

    /// Reads a manifest from a package directory or a manifest path.
    pub fn read(path: &Path) -> Result<(Manifest, PathBuf), PluginError> {
        let file = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_owned()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| PluginError::Io {
            path: file.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| PluginError::Manifest {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        Ok((manifest, file))
    }

    /// Writes the manifest as TOML.
    pub fn write(&self, file: &Path) -> Result<(), PluginError> {
        let text = toml::to_string_pretty(self).map_err(|e| PluginError::Manifest {
            path: file.to_owned(),
            reason: e.to_string(),
        })?;
        std::fs::write(file, text).map_err(|source| PluginError::Io {
            path: file.to_owned(),
            source,
        })
    }
}

impl Package {
    /// Reads a package and checks the wasm against the manifest hash and,
    /// when `pinned_publisher` is set, the publisher signature.
    pub fn open(path: &Path, pinned_publisher: Option<&str>) -> Result<Package, PluginError> {
        let (manifest, file) = Manifest::read(path)?;
        let dir = file.parent().unwrap_or(Path::new("."));
        if manifest.wasm.contains("..") || Path::new(&manifest.wasm).is_absolute() {
            return Err(PluginError::Manifest {
                path: file.clone(),
                reason: format!(
                    "`wasm = \"{}\"` must be a file name inside the package",
                    manifest.wasm
                ),
            });
        }
        let wasm_path = dir.join(&manifest.wasm);
        let wasm = std::fs::read(&wasm_path).map_err(|source| PluginError::Io {
            path: wasm_path.clone(),
            source,
        })?;
        let actual = sha256_hex(&wasm);
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(PluginError::HashMismatch {
                name: manifest.name.clone(),
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        manifest.verify_signature(pinned_publisher)?;
        Ok(Package {
            manifest,
            wasm,
            wasm_path,
        })
    }
}

/// Parses a hex ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("`{hex_key}` is not a 32-byte hex public key"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("invalid public key: {e}"))
}

/// Parses a hex ed25519 secret key (as written by `infernet plugin keygen`).
pub fn parse_secret_key(hex_key: &str) -> Result<SigningKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "secret key file must hold 64 hex characters".to_string())?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A fresh random signing key.
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "p".into(),
            version: "1.2.3".parse().unwrap(),
            kind: PluginKind::Backend,
            wit: "0.1.0".parse().unwrap(),
            wasm: "p.wasm".into(),
            sha256: sha256_hex(b"wasm"),
            signature: None,
        }
    }

    #[test]
    fn signature_roundtrip_and_tamper() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut m = manifest();
        m.sign(&key);
        let pk = hex::encode(key.verifying_key().to_bytes());
        m.verify_signature(Some(&pk)).unwrap();
        let mut tampered = m.clone();
        tampered.version = "1.2.4".parse().unwrap();
        assert!(tampered.verify_signature(Some(&pk)).is_err());
        let other = hex::encode(
            SigningKey::from_bytes(&[8u8; 32])
                .verifying_key()
                .to_bytes(),
        );
        let err = m.verify_signature(Some(&other)).unwrap_err();
        assert!(err.to_string().contains("pins"), "{err}");
        assert!(manifest().verify_signature(Some(&pk)).is_err());
    }
}
