//! Groth16 over BN254 for the MLP circuit: key generation, an on-disk key
//! cache, and the [`Prover`] / [`ProofVerifier`] implementations.
//!
//! Keys are generated once per (model commitment, circuit version, input
//! mode) and cached as `<commitment>-<version>-<mode>.{pk,vk}` in a directory:
//! the verifying key canonical-compressed (its sha256 is the `vk_id`), the
//! proving key canonical-uncompressed (fast to load; it is only ever read by
//! the node that wrote it, and a corrupt proving key can only yield proofs
//! that fail verification).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ark_bn254::{Bn254, Fr};
use ark_groth16::{
    prepare_verifying_key, Groth16, PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey,
};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_snark::SNARK;
use ark_std::rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::circuit::{InputMode, MlpCircuit, MlpShape, PublicValues, CIRCUIT_VERSION};
use crate::commit::{commit_model, fr_from_hex, fr_to_hex};
use crate::envelope::{InputClaim, ProofEnvelope, ProofVerifier, ProvedOutput, Prover, Statement};
use crate::error::{Result, VerifierError};
use crate::quant::QuantizedMlp;

/// Proof-system name in envelopes.
pub const SYSTEM: &str = "groth16-bn254";
/// Upper bound on accepted proof bytes (a compressed proof is 128 bytes).
pub const MAX_PROOF_BYTES: usize = 1024;

/// Groth16 proving key over BN254.
pub type Pk = ProvingKey<Bn254>;
/// Groth16 verifying key over BN254.
pub type Vk = VerifyingKey<Bn254>;

/// Generate a proving/verifying key pair for a circuit shape.
pub fn setup<R: RngCore + CryptoRng>(shape: &MlpShape, rng: &mut R) -> Result<(Pk, Vk)> {
    let circuit = MlpCircuit::for_setup(shape.clone())?;
    Ok(Groth16::<Bn254>::circuit_specific_setup(circuit, rng)?)
}

/// Canonical compressed bytes of a verifying key.
pub fn vk_bytes(vk: &Vk) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(vk.compressed_size());
    vk.serialize_compressed(&mut out)?;
    Ok(out)
}

/// Hex sha256 of the compressed verifying key.
pub fn vk_id(vk: &Vk) -> Result<String> {
    Ok(hex::encode(Sha256::digest(vk_bytes(vk)?)))
}

/// Decode a verifying key (compressed, fully validated).
pub fn vk_from_bytes(bytes: &[u8]) -> Result<Vk> {
    let mut r = bytes;
    let vk = Vk::deserialize_compressed(&mut r)?;
    if !r.is_empty() {
        return Err(VerifierError::Serialization(
            "trailing bytes after verifying key".into(),
        ));
    }
    Ok(vk)
}

/// Canonical compressed bytes of a proof.
pub fn proof_bytes(proof: &Proof<Bn254>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(proof.compressed_size());
    proof.serialize_compressed(&mut out)?;
    Ok(out)
}

/// Decode an untrusted proof (compressed, points validated).
pub fn proof_from_bytes(bytes: &[u8]) -> Result<Proof<Bn254>> {
    if bytes.len() > MAX_PROOF_BYTES {
        return Err(VerifierError::MalformedProof(format!(
            "{} bytes",
            bytes.len()
        )));
    }
    let mut r = bytes;
    let proof = Proof::<Bn254>::deserialize_compressed(&mut r)
        .map_err(|e| VerifierError::MalformedProof(e.to_string()))?;
    if !r.is_empty() {
        return Err(VerifierError::MalformedProof("trailing bytes".into()));
    }
    Ok(proof)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VerifierError + '_ {
    move |source| VerifierError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically (temp file + rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// A verifying key file, if it exists.
fn read_vk(path: &Path) -> Result<Option<Vk>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(vk_from_bytes(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Keys loaded from or written to a [`KeyCache`].
#[derive(Clone, Debug)]
pub struct CachedKeys {
    /// Proving key.
    pub pk: Pk,
    /// Verifying key.
    pub vk: Vk,
    /// Hex sha256 of the compressed verifying key.
    pub vk_id: String,
    /// True when this call ran the setup (cache miss).
    pub generated: bool,
}

/// Proving/verifying keys cached on disk, keyed by model commitment, circuit
/// version and input mode.
#[derive(Clone, Debug)]
pub struct KeyCache {
    dir: PathBuf,
}

impl KeyCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File stem for a model: `<commitment>-<circuit version>-<mode>`.
    pub fn stem(commitment_hex: &str, mode: InputMode) -> String {
        format!(
            "{}-{CIRCUIT_VERSION}-{}",
            commitment_hex.to_ascii_lowercase(),
            mode.as_str()
        )
    }

    /// File stem of a model's baked-weights keys ([`crate::baked`]).
    pub fn baked_stem(commitment_hex: &str) -> String {
        format!(
            "{}-{}-public",
            commitment_hex.to_ascii_lowercase(),
            crate::baked::BAKED_CIRCUIT_VERSION
        )
    }

    /// Paths of the proving and verifying key files.
    pub fn paths(&self, commitment_hex: &str, mode: InputMode) -> (PathBuf, PathBuf) {
        self.stem_paths(&Self::stem(commitment_hex, mode))
    }

    fn stem_paths(&self, stem: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{stem}.pk")),
            self.dir.join(format!("{stem}.vk")),
        )
    }

    /// Load the verifying key only, if cached.
    pub fn load_vk(&self, commitment_hex: &str, mode: InputMode) -> Result<Option<Vk>> {
        // Validate the commitment (also keeps odd strings out of file names).
        fr_from_hex(commitment_hex)?;
        read_vk(&self.paths(commitment_hex, mode).1)
    }

    /// Load both keys, if cached and consistent.
    pub fn load(&self, mlp: &QuantizedMlp, mode: InputMode) -> Result<Option<CachedKeys>> {
        let commitment = fr_to_hex(&commit_model(mlp)?);
        self.load_stem(&Self::stem(&commitment, mode))
    }

    fn load_stem(&self, stem: &str) -> Result<Option<CachedKeys>> {
        let (pk_path, vk_path) = self.stem_paths(stem);
        let Some(vk) = read_vk(&vk_path)? else {
            return Ok(None);
        };
        let bytes = match fs::read(&pk_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&pk_path)(e)),
        };
        let pk = Pk::deserialize_uncompressed_unchecked(&bytes[..])?;
        if pk.vk != vk {
            return Err(VerifierError::Serialization(format!(
                "cached proving key {} does not match its verifying key",
                pk_path.display()
            )));
        }
        let vk_id = vk_id(&vk)?;
        Ok(Some(CachedKeys {
            pk,
            vk,
            vk_id,
            generated: false,
        }))
    }

    /// Store keys for a model.
    pub fn store(&self, mlp: &QuantizedMlp, mode: InputMode, pk: &Pk) -> Result<()> {
        let commitment = fr_to_hex(&commit_model(mlp)?);
        self.store_stem(&Self::stem(&commitment, mode), pk)
    }

    fn store_stem(&self, stem: &str, pk: &Pk) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let (pk_path, vk_path) = self.stem_paths(stem);
        let mut pk_bytes = Vec::with_capacity(pk.uncompressed_size());
        pk.serialize_uncompressed(&mut pk_bytes)?;
        // pk first: a vk file implies a complete pk next to it.
        write_atomic(&pk_path, &pk_bytes)?;
        write_atomic(&vk_path, &vk_bytes(&pk.vk)?)
    }

    /// Load keys for a model, or generate (and store) them.
    pub fn get_or_setup<R: RngCore + CryptoRng>(
        &self,
        mlp: &QuantizedMlp,
        mode: InputMode,
        rng: &mut R,
    ) -> Result<CachedKeys> {
        if let Some(k) = self.load(mlp, mode)? {
            return Ok(k);
        }
        let (pk, vk) = setup(&MlpShape::of(mlp, mode)?, rng)?;
        self.store(mlp, mode, &pk)?;
        let vk_id = vk_id(&vk)?;
        Ok(CachedKeys {
            pk,
            vk,
            vk_id,
            generated: true,
        })
    }

    /// [`Self::get_or_setup`] for the model's baked-weights keys (one pair
    /// per model, [`crate::baked::setup`]).
    pub fn get_or_setup_baked<R: RngCore + CryptoRng>(
        &self,
        mlp: &QuantizedMlp,
        rng: &mut R,
    ) -> Result<CachedKeys> {
        let stem = Self::baked_stem(&fr_to_hex(&commit_model(mlp)?));
        if let Some(k) = self.load_stem(&stem)? {
            return Ok(k);
        }
        let (pk, vk) = crate::baked::setup(mlp, rng)?;
        self.store_stem(&stem, &pk)?;
        Ok(CachedKeys {
            vk_id: vk_id(&vk)?,
            pk,
            vk,
            generated: true,
        })
    }
}

/// Groth16 prover for one quantized model.
pub struct Groth16Prover {
    mlp: QuantizedMlp,
    shape: MlpShape,
    pk: Pk,
    pvk: PreparedVerifyingKey<Bn254>,
    commitment: Fr,
    commitment_hex: String,
    vk_id: String,
}

impl Groth16Prover {
    /// A prover from a model and its proving key.
    pub fn new(mlp: QuantizedMlp, mode: InputMode, pk: Pk) -> Result<Self> {
        let shape = MlpShape::of(&mlp, mode)?;
        if pk.vk.gamma_abc_g1.len() != shape.num_public_inputs() + 1 {
            return Err(VerifierError::InvalidModel(
                "proving key does not match the model shape".into(),
            ));
        }
        let commitment = commit_model(&mlp)?;
        let vk_id = vk_id(&pk.vk)?;
        let pvk = prepare_verifying_key(&pk.vk);
        Ok(Self {
            mlp,
            shape,
            pk,
            pvk,
            commitment,
            commitment_hex: fr_to_hex(&commitment),
            vk_id,
        })
    }

    /// A prover whose keys come from (or go into) `cache`.
    pub fn from_cache(cache: &KeyCache, mlp: QuantizedMlp, mode: InputMode) -> Result<Self> {
        let keys = cache.get_or_setup(&mlp, mode, &mut rand::rngs::OsRng)?;
        Self::new(mlp, mode, keys.pk)
    }

    /// The circuit shape.
    pub fn shape(&self) -> &MlpShape {
        &self.shape
    }

    /// The verifying key.
    pub fn vk(&self) -> &Vk {
        &self.pk.vk
    }

    /// The model.
    pub fn mlp(&self) -> &QuantizedMlp {
        &self.mlp
    }

    /// A verifier for this prover's proofs.
    pub fn verifier(&self) -> Result<Groth16Verifier> {
        Groth16Verifier::new(self.shape.clone(), &self.pk.vk)
    }

    /// Prove with an explicit RNG (the proof's zero-knowledge randomness).
    pub fn prove_with_rng<R: RngCore + CryptoRng>(
        &self,
        input: &[i8],
        rng: &mut R,
    ) -> Result<ProvedOutput> {
        let output = self.mlp.forward(input)?;
        let circuit = MlpCircuit::new(&self.mlp, input, self.shape.input_mode)?;
        let proof = Groth16::<Bn254>::prove(&self.pk, circuit, rng)?;
        let public = PublicValues::new(
            &self.shape,
            self.commitment,
            &InputClaim::Plain(input.to_vec()),
            &output,
        )?;
        let inputs = public.to_vec();
        // Self-check (about a millisecond): never hand out a proof that fails.
        if !Groth16::<Bn254>::verify_proof(&self.pvk, &proof, &inputs)? {
            return Err(VerifierError::Synthesis(
                "prover self-check failed: circuit witness disagrees with forward()".into(),
            ));
        }
        let envelope = ProofEnvelope {
            system: SYSTEM.to_string(),
            model_commitment: self.commitment_hex.clone(),
            public_inputs: inputs.iter().map(|f| f.to_string()).collect(),
            proof: proof_bytes(&proof)?,
            vk_id: self.vk_id.clone(),
        };
        Ok(ProvedOutput { output, envelope })
    }
}

impl Prover for Groth16Prover {
    fn system(&self) -> &str {
        SYSTEM
    }
    fn model_commitment(&self) -> &str {
        &self.commitment_hex
    }
    fn vk_id(&self) -> &str {
        &self.vk_id
    }
    fn prove(&self, input: &[i8]) -> Result<ProvedOutput> {
        self.prove_with_rng(input, &mut rand::rngs::OsRng)
    }
}

/// Groth16 verifier for one circuit shape and verifying key.
#[derive(Clone)]
pub struct Groth16Verifier {
    shape: MlpShape,
    pvk: PreparedVerifyingKey<Bn254>,
    vk_id: String,
}

impl Groth16Verifier {
    /// A verifier from a shape and a verifying key.
    pub fn new(shape: MlpShape, vk: &Vk) -> Result<Self> {
        shape.validate()?;
        if vk.gamma_abc_g1.len() != shape.num_public_inputs() + 1 {
            return Err(VerifierError::InvalidModel(format!(
                "verifying key has {} public inputs, shape needs {}",
                vk.gamma_abc_g1.len().saturating_sub(1),
                shape.num_public_inputs()
            )));
        }
        Ok(Self {
            shape,
            pvk: prepare_verifying_key(vk),
            vk_id: vk_id(vk)?,
        })
    }

    /// A verifier from a shape and compressed verifying-key bytes.
    pub fn from_vk_bytes(shape: MlpShape, bytes: &[u8]) -> Result<Self> {
        Self::new(shape, &vk_from_bytes(bytes)?)
    }

    /// The circuit shape.
    pub fn shape(&self) -> &MlpShape {
        &self.shape
    }
}

fn describe_mismatch(shape: &MlpShape, idx: usize) -> String {
    let n_in = shape.num_public_inputs() - 1 - shape.dims[shape.dims.len() - 1];
    if idx == 0 {
        "model commitment differs".into()
    } else if idx <= n_in {
        match shape.input_mode {
            InputMode::Public => format!("input[{}] differs", idx - 1),
            InputMode::Committed => "input commitment differs".into(),
        }
    } else {
        format!("output[{}] differs", idx - 1 - n_in)
    }
}

impl ProofVerifier for Groth16Verifier {
    fn system(&self) -> &str {
        SYSTEM
    }

    fn vk_id(&self) -> &str {
        &self.vk_id
    }

    fn verify(&self, envelope: &ProofEnvelope, statement: &Statement) -> Result<()> {
        if envelope.system != SYSTEM {
            return Err(VerifierError::UnsupportedSystem {
                expected: SYSTEM.into(),
                found: envelope.system.clone(),
            });
        }
        if !envelope.vk_id.eq_ignore_ascii_case(&self.vk_id) {
            return Err(VerifierError::VkMismatch {
                expected: self.vk_id.clone(),
                found: envelope.vk_id.clone(),
            });
        }
        if !envelope
            .model_commitment
            .eq_ignore_ascii_case(&statement.model_commitment)
        {
            return Err(VerifierError::ModelCommitmentMismatch {
                expected: statement.model_commitment.clone(),
                found: envelope.model_commitment.clone(),
            });
        }
        let commitment = fr_from_hex(&statement.model_commitment.to_ascii_lowercase())?;
        let public =
            PublicValues::new(&self.shape, commitment, &statement.input, &statement.output)?
                .to_vec();
        if envelope.public_inputs.len() != public.len() {
            return Err(VerifierError::PublicInputMismatch(format!(
                "{} public inputs, expected {}",
                envelope.public_inputs.len(),
                public.len()
            )));
        }
        if let Some(idx) = public
            .iter()
            .zip(&envelope.public_inputs)
            .position(|(f, s)| f.to_string() != *s)
        {
            return Err(VerifierError::PublicInputMismatch(describe_mismatch(
                &self.shape,
                idx,
            )));
        }
        let proof = proof_from_bytes(&envelope.proof)?;
        // Verify against the values recomputed from the statement, never the
        // envelope's strings.
        if Groth16::<Bn254>::verify_proof(&self.pvk, &proof, &public)? {
            Ok(())
        } else {
            Err(VerifierError::ProofRejected)
        }
    }
}
