//! Groth16 keys from a party the client trusts. A Groth16 key is only as
//! honest as its setup: whoever knows the setup's randomness (α, β, γ, δ)
//! can make a proof of any output that verifies under that key. So the
//! setup is run by a model publisher (`infernet zk setup`), who signs a
//! [`KeyStatement`] — proof system, model commitment, circuit shape and
//! verifying-key id — with its ed25519 key (the plugin-signing key
//! format), and ships a [`KeyBundle`]: the statement, its signature, the
//! verifying key and the proving key's file and sha256. Providers prove
//! with the bundle's proving key and advertise the publisher and the
//! signature; clients pin the publisher (or the verifying-key id) per
//! model and refuse proofs under any other key.

use std::fs;
use std::path::{Path, PathBuf};

use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::circuit::MlpShape;
use crate::error::{Result, VerifierError};
use crate::groth16::{vk_bytes, vk_from_bytes, vk_id, Pk, SYSTEM};

/// The systems whose keys a bundle holds: committed weights (one key per
/// shape) and baked weights (one key per model).
pub const SYSTEMS: [&str; 2] = [SYSTEM, crate::baked::SYSTEM];

/// Domain of a publisher's signature over a [`KeyStatement`].
pub const KEY_DOMAIN: &[u8] = b"infernet/zk-keys/1\0";
/// File name suffix of a bundle (`<stem>.keys.json`, proving key `<stem>.pk`).
pub const BUNDLE_SUFFIX: &str = ".keys.json";

/// What a publisher vouches for: proofs under `vk_id` for this model and
/// shape come from a setup whose randomness it destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStatement {
    /// Proof system ([`SYSTEM`]).
    pub system: String,
    /// Hex Poseidon commitment to the model's weights.
    pub model_commitment: String,
    /// Layer widths, input first.
    pub dims: Vec<u32>,
    /// Requantisation shift per layer.
    pub shifts: Vec<u32>,
    /// Hex sha256 of the compressed verifying key.
    pub vk_id: String,
}

impl KeyStatement {
    /// The bytes a publisher signs: the domain, then the statement as JSON
    /// (fields in declaration order).
    pub fn signing_bytes(&self) -> Result<Vec<u8>> {
        let mut out = KEY_DOMAIN.to_vec();
        out.extend(serde_json::to_vec(self)?);
        Ok(out)
    }

    /// Signs: `(publisher, signature)`, both hex.
    pub fn sign(&self, key: &SigningKey) -> Result<(String, String)> {
        let sig = key.sign(&self.signing_bytes()?);
        Ok((
            hex::encode(key.verifying_key().to_bytes()),
            hex::encode(sig.to_bytes()),
        ))
    }

    /// Checks `signature` by `publisher` (both hex) over this statement.
    pub fn verify(&self, publisher: &str, signature: &str) -> Result<()> {
        let bad = |m: String| VerifierError::Untrusted(m);
        let key: [u8; 32] = hex::decode(publisher)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(format!("publisher key `{publisher}` is not 32 hex bytes")))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|e| bad(format!("publisher key `{publisher}`: {e}")))?;
        let sig: [u8; 64] = hex::decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the key signature is not 64 hex bytes".into()))?;
        key.verify(&self.signing_bytes()?, &Signature::from_bytes(&sig))
            .map_err(|_| {
                bad(format!(
                    "the signature over verifying key {} is not publisher {publisher}'s",
                    self.vk_id
                ))
            })
    }
}

/// A publisher's key bundle (`<stem>.keys.json` beside `<stem>.pk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBundle {
    /// What the publisher signed.
    pub statement: KeyStatement,
    /// Hex ed25519 public key of the publisher.
    pub publisher: String,
    /// Hex signature over [`KeyStatement::signing_bytes`].
    pub signature: String,
    /// Hex compressed verifying key (its sha256 is `statement.vk_id`).
    pub vk: String,
    /// The proving key's file name, beside the bundle.
    pub pk_file: String,
    /// Hex sha256 of that file.
    pub pk_sha256: String,
}

/// A bundle opened and checked, with its proving key.
pub struct LoadedKeys {
    /// The bundle as read.
    pub bundle: KeyBundle,
    /// Its proving key (its verifying key is the bundle's).
    pub pk: Pk,
}

impl KeyBundle {
    /// Signs `pk`'s keys (of `system`: [`SYSTEM`], committed weights, or
    /// [`crate::baked::SYSTEM`]) for the model with `commitment` and
    /// `shape` and writes `<dir>/<stem>.pk` and `<dir>/<stem>.keys.json`,
    /// `stem` being the first 16 hex digits of the commitment (plus
    /// `-baked` for baked keys); returns the bundle's path.
    pub fn write(
        dir: &Path,
        system: &str,
        commitment: &str,
        shape: &MlpShape,
        pk: &Pk,
        key: &SigningKey,
    ) -> Result<(PathBuf, KeyBundle)> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| VerifierError::Io { path: p, source }
        };
        if !SYSTEMS.contains(&system) {
            return Err(VerifierError::InvalidInput(format!(
                "proof system `{system}`; bundles hold {SYSTEMS:?} keys"
            )));
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut stem: String = commitment.chars().take(16).collect();
        if system == crate::baked::SYSTEM {
            stem.push_str("-baked");
        }
        let mut pk_bytes = Vec::with_capacity(pk.uncompressed_size());
        pk.serialize_uncompressed(&mut pk_bytes)?;
        let pk_file = format!("{stem}.pk");
        let pk_path = dir.join(&pk_file);
        fs::write(&pk_path, &pk_bytes).map_err(io(&pk_path))?;
        let statement = KeyStatement {
            system: system.into(),
            model_commitment: commitment.to_ascii_lowercase(),
            dims: shape.dims.iter().map(|&d| d as u32).collect(),
            shifts: shape.shifts.clone(),
            vk_id: vk_id(&pk.vk)?,
        };
        let (publisher, signature) = statement.sign(key)?;
        let bundle = KeyBundle {
            statement,
            publisher,
            signature,
            vk: hex::encode(vk_bytes(&pk.vk)?),
            pk_file,
            pk_sha256: hex::encode(Sha256::digest(&pk_bytes)),
        };
        let path = dir.join(format!("{stem}{BUNDLE_SUFFIX}"));
        fs::write(&path, serde_json::to_vec_pretty(&bundle)?).map_err(io(&path))?;
        Ok((path, bundle))
    }

    /// Reads and checks a bundle and its proving key: the signature, the
    /// verifying key against its id, the proving key file against its
    /// sha256 and against the verifying key. With `pinned`, the publisher
    /// must be that key.
    pub fn load(path: &Path, pinned: Option<&str>) -> Result<LoadedKeys> {
        let bad = |m: String| VerifierError::Untrusted(format!("{}: {m}", path.display()));
        let text = fs::read(path).map_err(|source| VerifierError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bundle: KeyBundle =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not a key bundle: {e}")))?;
        bundle
            .statement
            .verify(&bundle.publisher, &bundle.signature)
            .map_err(|e| bad(e.to_string()))?;
        if let Some(p) = pinned.filter(|p| !p.eq_ignore_ascii_case(&bundle.publisher)) {
            return Err(bad(format!(
                "signed by publisher {} but the config pins {p}",
                bundle.publisher
            )));
        }
        if !SYSTEMS.contains(&bundle.statement.system.as_str()) {
            return Err(bad(format!(
                "proof system `{}`; bundles hold {SYSTEMS:?} keys",
                bundle.statement.system
            )));
        }
        let vk_raw = hex::decode(&bundle.vk).map_err(|e| bad(format!("vk: {e}")))?;
        let vk = vk_from_bytes(&vk_raw)?;
        if vk_id(&vk)? != bundle.statement.vk_id {
            return Err(bad(
                "the verifying key is not the one the statement names".into()
            ));
        }
        let name = Path::new(&bundle.pk_file);
        if name.components().count() != 1 || name.file_name().is_none() {
            return Err(bad(format!(
                "pk_file `{}` must be a file name beside the bundle",
                bundle.pk_file
            )));
        }
        let pk_path = path.parent().unwrap_or(Path::new(".")).join(name);
        let pk_bytes = fs::read(&pk_path).map_err(|source| VerifierError::Io {
            path: pk_path.clone(),
            source,
        })?;
        if hex::encode(Sha256::digest(&pk_bytes)) != bundle.pk_sha256 {
            return Err(bad(format!(
                "{} is not the proving key the bundle names (sha256 differs)",
                pk_path.display()
            )));
        }
        let pk = Pk::deserialize_uncompressed_unchecked(&pk_bytes[..])?;
        if pk.vk != vk {
            return Err(bad(
                "the proving key does not match the verifying key".into()
            ));
        }
        Ok(LoadedKeys { bundle, pk })
    }
}
