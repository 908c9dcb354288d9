//! ezkl (Halo2 + KZG over BN254) for ONNX models, behind the same
//! [`Prover`] / [`ProofVerifier`] traits as Groth16.
//!
//! ezkl is driven through its PyPI package (`ezkl==23.0.5`): every step runs
//! `python scripts/ezkl_prove.py <step> <result.json>` with a JSON request on
//! stdin. The interpreter is `$INFERNET_PYTHON`, else `<repo>/.venv/bin/python`
//! (`scripts/test.sh` creates that venv and installs ezkl and onnx).
//!
//! # Circuit and statement
//!
//! The ONNX model (written by `scripts/export_onnx.py` from the same float
//! weights as the Groth16 models) is compiled by ezkl with public inputs,
//! public outputs and *fixed* parameters: the weights are fixed columns, so
//! the verifying key (KZG commitments to those columns) binds them. ezkl
//! quantizes with its own fixed-point scales (found by `calibrate_settings`;
//! the input scale is pinned to the int8 input's exponent so an instance
//! equals `x_i8 * 2^(input_scale - input_exp)`). The output is ezkl's integer
//! logits at its output scale, which are *not* the Groth16 model's logits:
//! a statement is always about one system's circuit.
//!
//! * model commitment: `sha256("infernet/ezkl-model/v1" || input_exp (i32 LE)
//!   || sha256(onnx) || sha256(settings.json without its timestamp))`;
//! * `vk_id`: sha256 of ezkl's `vk.key` file. Halo2 keygen is deterministic,
//!   so a client holding the ONNX file, settings and SRS derives the same key
//!   itself ([`EzklVerifier::derive`]) rather than trusting a prover's;
//! * public inputs: every instance (inputs then outputs) as decimal field
//!   elements; the verifier recomputes them from the [`Statement`] and hands
//!   ezkl a proof file built from *its* values and the envelope's proof bytes.
//!
//! # SRS
//!
//! The KZG SRS is generated locally with `ezkl.gen_srs` (one per `logrows`,
//! cached in `<cache>/srs/`), never downloaded. Its toxic waste is known to the
//! machine that generated it (like the local Groth16 setup); production use
//! needs a ceremony SRS dropped into that directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ark_bn254::Fr;
use ark_ff::{BigInteger, PrimeField};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::envelope::{InputClaim, ProofEnvelope, ProofVerifier, ProvedOutput, Prover, Statement};
use crate::error::{Result, VerifierError};

/// Proof-system name in envelopes.
pub const SYSTEM: &str = "ezkl-halo2-kzg-bn254";
/// The ezkl package version this module is written against.
pub const EZKL_VERSION: &str = "23.0.5";
/// Environment variable naming the Python interpreter.
pub const PYTHON_ENV: &str = "INFERNET_PYTHON";
/// Domain tag of ezkl model commitments.
pub const MODEL_DOMAIN: &[u8] = b"infernet/ezkl-model/v1";
/// Upper bound on accepted proof bytes (the digits proofs are about 3 KiB).
pub const MAX_PROOF_BYTES: usize = 1 << 20;
/// What to do when ezkl is missing.
const INSTALL_HINT: &str = "run scripts/test.sh (it creates .venv and installs ezkl==23.0.5 and \
     onnx), or set INFERNET_PYTHON to an interpreter that has them";

/// Errors of the ezkl driver (wrapped in [`VerifierError::Ezkl`]).
#[derive(Debug, thiserror::Error)]
pub enum EzklError {
    /// The interpreter could not be started.
    #[error("cannot run Python interpreter {python}: {source}; {INSTALL_HINT}")]
    PythonMissing {
        /// The interpreter tried.
        python: PathBuf,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// The driver script is not where it should be.
    #[error("ezkl driver script {0} not found; it ships in the repository's scripts/ directory")]
    ScriptMissing(PathBuf),
    /// The interpreter runs but cannot import ezkl.
    #[error("Python {python} cannot import ezkl ({detail}); {INSTALL_HINT}")]
    NotInstalled {
        /// The interpreter.
        python: PathBuf,
        /// The import error.
        detail: String,
    },
    /// ezkl is importable but is another version.
    #[error("Python {python} has ezkl {found}, this crate needs {EZKL_VERSION}; run `{python} -m pip install ezkl=={EZKL_VERSION}`")]
    WrongVersion {
        /// The interpreter.
        python: PathBuf,
        /// The version found.
        found: String,
    },
    /// A step failed inside ezkl or the driver.
    #[error("ezkl {step} failed: {message}")]
    Step {
        /// `setup`, `prove`, `verify`, ...
        step: String,
        /// ezkl's message (and the tail of stderr when there is no result).
        message: String,
    },
    /// The driver's result did not have the expected shape.
    #[error("ezkl {step} returned an unexpected result: {message}")]
    Protocol {
        /// The step.
        step: String,
        /// What was wrong.
        message: String,
    },
    /// A cached artifact is missing or inconsistent.
    #[error("ezkl artifact {path}: {message}; delete the directory to rerun the setup")]
    Artifact {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn step_err(step: &str, message: impl Into<String>) -> VerifierError {
    EzklError::Step {
        step: step.into(),
        message: message.into(),
    }
    .into()
}

fn protocol_err(step: &str, message: impl Into<String>) -> VerifierError {
    EzklError::Protocol {
        step: step.into(),
        message: message.into(),
    }
    .into()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VerifierError + '_ {
    move |source| VerifierError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    Ok(Sha256::digest(bytes).into())
}

/// Resources and time one driver call used.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepStats {
    /// Wall time of the whole subprocess (interpreter start, import, file
    /// loading, the ezkl calls).
    pub wall: Duration,
    /// Seconds spent inside each ezkl call, as timed by the driver.
    pub timings: BTreeMap<String, f64>,
    /// Peak RSS of the driver process (`VmHWM`, KiB). ezkl runs
    /// in-process, so this is the step's peak memory including the Python
    /// interpreter (about 20 MiB).
    pub peak_rss_kib: u64,
}

impl StepStats {
    /// Seconds inside the named ezkl call (0 if it did not run).
    pub fn secs(&self, call: &str) -> f64 {
        self.timings.get(call).copied().unwrap_or(0.0)
    }
}

/// How to run the ezkl driver: interpreter and script.
#[derive(Clone, Debug)]
pub struct EzklRuntime {
    python: PathBuf,
    script: PathBuf,
}

static CALLS: AtomicU64 = AtomicU64::new(0);

impl EzklRuntime {
    /// An explicit interpreter and driver script.
    pub fn new(python: impl Into<PathBuf>, script: impl Into<PathBuf>) -> Self {
        Self {
            python: python.into(),
            script: script.into(),
        }
    }

    /// The repository root this crate was built from.
    pub fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// `$INFERNET_PYTHON` (else `<repo>/.venv/bin/python`) running
    /// `<repo>/scripts/ezkl_prove.py`.
    pub fn from_env() -> Self {
        let root = Self::repo_root();
        let python = std::env::var_os(PYTHON_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| root.join(".venv/bin/python"), PathBuf::from);
        Self::new(python, root.join("scripts/ezkl_prove.py"))
    }

    /// The interpreter.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Check that the interpreter runs and has ezkl [`EZKL_VERSION`];
    /// returns the version string.
    pub fn check(&self) -> Result<String> {
        let tmp = std::env::temp_dir();
        let (v, _) = self.call("version", &json!({}), &tmp)?;
        let found = v
            .get("ezkl")
            .and_then(Value::as_str)
            .ok_or_else(|| protocol_err("version", "no ezkl version"))?;
        if found != EZKL_VERSION {
            return Err(EzklError::WrongVersion {
                python: self.python.clone(),
                found: found.to_string(),
            }
            .into());
        }
        Ok(found.to_string())
    }

    /// Run one driver step. `scratch` holds the result file.
    pub fn call(&self, step: &str, request: &Value, scratch: &Path) -> Result<(Value, StepStats)> {
        if !self.script.is_file() {
            return Err(EzklError::ScriptMissing(self.script.clone()).into());
        }
        fs::create_dir_all(scratch).map_err(io_err(scratch))?;
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let result_path = scratch.join(format!("result-{}-{n}.json", std::process::id()));
        // A leftover from a crashed run with a recycled pid must not be read.
        let _ = fs::remove_file(&result_path);
        let start = Instant::now();
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .arg(step)
            .arg(&result_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| EzklError::PythonMissing {
                python: self.python.clone(),
                source,
            })?;
        let body = serde_json::to_vec(request)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A failed write shows up as a failed step below.
            let _ = stdin.write_all(&body);
        }
        let out = child
            .wait_with_output()
            .map_err(|source| EzklError::PythonMissing {
                python: self.python.clone(),
                source,
            })?;
        let wall = start.elapsed();
        let result = fs::read(&result_path);
        let _ = fs::remove_file(&result_path);
        let stderr_tail = || {
            let s = String::from_utf8_lossy(&out.stderr);
            let tail: String = s
                .chars()
                .rev()
                .take(1500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            tail.trim().to_string()
        };
        let value: Value = match result {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| protocol_err(step, format!("result is not JSON: {e}")))?,
            Err(_) => {
                return Err(step_err(
                    step,
                    format!(
                        "driver exited with {} and wrote no result; stderr: {}",
                        out.status,
                        stderr_tail()
                    ),
                ))
            }
        };
        if let Some(err) = value.get("error").and_then(Value::as_str) {
            if value.get("kind").and_then(Value::as_str) == Some("not_installed") {
                return Err(EzklError::NotInstalled {
                    python: self.python.clone(),
                    detail: err.to_string(),
                }
                .into());
            }
            return Err(step_err(step, err));
        }
        if !out.status.success() {
            return Err(step_err(
                step,
                format!(
                    "driver exited with {}; stderr: {}",
                    out.status,
                    stderr_tail()
                ),
            ));
        }
        let timings = value
            .get("timings")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f)))
                    .collect()
            })
            .unwrap_or_default();
        let peak_rss_kib = value
            .get("peak_rss_kib")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok((
            value,
            StepStats {
                wall,
                timings,
                peak_rss_kib,
            },
        ))
    }
}

/// Knobs of the ezkl setup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EzklOptions {
    /// Base of ezkl's range-check decomposition. ezkl's default (16384) needs
    /// a 2^14-row lookup table, i.e. `logrows >= 15` even for a tiny model;
    /// 256 lets the digits circuits fit in 2^12 / 2^13 rows.
    pub decomp_base: u32,
    /// Number of decomposition limbs (256^4 covers the ±2^31 accumulators).
    pub decomp_legs: u32,
}

impl Default for EzklOptions {
    fn default() -> Self {
        Self {
            decomp_base: 256,
            decomp_legs: 4,
        }
    }
}

/// A model as ezkl sees it: the ONNX file, the int8 input exponent and
/// calibration inputs (floats, `x_i8 * 2^-input_exp`).
#[derive(Clone, Debug)]
pub struct EzklModel {
    /// The ONNX file.
    pub onnx: PathBuf,
    /// Input exponent of the int8 input (`x = x_i8 * 2^-input_exp`); also
    /// ezkl's input scale.
    pub input_exp: i32,
    /// Float inputs for `calibrate_settings`.
    pub calibration: Vec<Vec<f64>>,
}

impl EzklModel {
    /// A bundled digits model: `verifier/models/<name>.onnx` (from
    /// `scripts/export_onnx.py`), the input exponent of its Groth16
    /// quantisation, and its first 20 held-out images for calibration.
    pub fn digits(name: &str) -> Result<Self> {
        let json = crate::quant::model_path(name);
        let model = crate::quant::DigitsModel::load(&json)?;
        let q = model.quantize()?;
        let onnx = json.with_extension("onnx");
        if !onnx.is_file() {
            return Err(EzklError::Artifact {
                path: onnx,
                message: "missing; run `.venv/bin/python scripts/export_onnx.py`".into(),
            }
            .into());
        }
        let calibration = model
            .test
            .x
            .iter()
            .take(20)
            .map(|px| {
                q.input_from_pixels(px)
                    .iter()
                    .map(|v| f64::from(*v) * 2f64.powi(-q.params.input_exp))
                    .collect()
            })
            .collect();
        Ok(Self {
            onnx,
            input_exp: q.params.input_exp,
            calibration,
        })
    }
}

/// What a setup left in its directory (`meta.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EzklArtifacts {
    /// The artifact directory.
    pub dir: PathBuf,
    /// Copy of the ONNX model.
    pub onnx: PathBuf,
    /// ezkl settings (scales, logrows, visibility).
    pub settings: PathBuf,
    /// Compiled circuit.
    pub compiled: PathBuf,
    /// Proving key.
    pub pk: PathBuf,
    /// Verifying key.
    pub vk: PathBuf,
    /// The KZG SRS.
    pub srs: PathBuf,
    /// Circuit size: 2^logrows rows.
    pub logrows: u32,
    /// Input exponent of the int8 input.
    pub input_exp: i32,
}

/// Facts read from ezkl's settings file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SettingsInfo {
    n_in: usize,
    n_out: usize,
    input_scale: i32,
    output_scale: i32,
    canonical: Vec<u8>,
}

fn read_settings(path: &Path) -> Result<SettingsInfo> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let mut v: Value = serde_json::from_slice(&bytes)?;
    let bad = |m: &str| -> VerifierError {
        EzklError::Artifact {
            path: path.to_path_buf(),
            message: m.to_string(),
        }
        .into()
    };
    let shapes = v
        .get("model_instance_shapes")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no model_instance_shapes"))?;
    let numel = |s: &Value| -> Option<usize> {
        s.as_array()?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .product()
    };
    if shapes.len() != 2 {
        return Err(bad("expected one input and one output tensor"));
    }
    let n_in = numel(&shapes[0]).ok_or_else(|| bad("bad input shape"))?;
    let n_out = numel(&shapes[1]).ok_or_else(|| bad("bad output shape"))?;
    let scale = |key: &str| -> Option<i32> {
        let a = v.get(key)?.as_array()?;
        if a.len() != 1 {
            return None;
        }
        i32::try_from(a[0].as_i64()?).ok()
    };
    let input_scale = scale("model_input_scales").ok_or_else(|| bad("bad model_input_scales"))?;
    let output_scale =
        scale("model_output_scales").ok_or_else(|| bad("bad model_output_scales"))?;
    let ra = v.get("run_args").ok_or_else(|| bad("no run_args"))?;
    for (key, want) in [
        ("input_visibility", "Public"),
        ("output_visibility", "Public"),
        ("param_visibility", "Fixed"),
    ] {
        if ra.get(key).and_then(Value::as_str) != Some(want) {
            return Err(bad(&format!("{key} must be {want}")));
        }
    }
    // Skipping the range checks on inputs/outputs would let a prover put
    // out-of-range values there.
    if ra
        .get("ignore_range_check_inputs_outputs")
        .and_then(Value::as_bool)
        != Some(false)
    {
        return Err(bad("ignore_range_check_inputs_outputs must be false"));
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("timestamp");
    }
    Ok(SettingsInfo {
        n_in,
        n_out,
        input_scale,
        output_scale,
        canonical: serde_json::to_vec(&v)?,
    })
}

/// The model commitment of an ONNX file + settings + input exponent (hex).
pub fn model_commitment(onnx: &Path, settings: &Path, input_exp: i32) -> Result<String> {
    let info = read_settings(settings)?;
    Ok(commitment_of(
        &sha256_file(onnx)?,
        &info.canonical,
        input_exp,
    ))
}

fn commitment_of(onnx_sha: &[u8; 32], canonical_settings: &[u8], input_exp: i32) -> String {
    let mut h = Sha256::new();
    h.update(MODEL_DOMAIN);
    h.update(input_exp.to_le_bytes());
    h.update(onnx_sha);
    h.update(Sha256::digest(canonical_settings));
    hex::encode(h.finalize())
}

/// ezkl artifacts cached on disk: `<dir>/srs/kzg<logrows>.srs` and one
/// directory per (ONNX sha256, input exponent, options).
#[derive(Clone, Debug)]
pub struct EzklCache {
    dir: PathBuf,
}

impl EzklCache {
    /// A cache rooted at `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where SRS files live.
    pub fn srs_dir(&self) -> PathBuf {
        self.dir.join("srs")
    }

    /// The artifact directory of a model.
    pub fn model_dir(&self, model: &EzklModel, opts: &EzklOptions) -> Result<PathBuf> {
        let sha = hex::encode(sha256_file(&model.onnx)?);
        Ok(self.dir.join(format!(
            "{}-e{}-b{}x{}",
            &sha[..16],
            model.input_exp,
            opts.decomp_base,
            opts.decomp_legs
        )))
    }

    /// Load cached artifacts, if complete.
    pub fn load(&self, model: &EzklModel, opts: &EzklOptions) -> Result<Option<EzklArtifacts>> {
        let meta = self.model_dir(model, opts)?.join("meta.json");
        let bytes = match fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&meta)(e)),
        };
        let art: EzklArtifacts = serde_json::from_slice(&bytes)?;
        for p in [
            &art.onnx,
            &art.settings,
            &art.compiled,
            &art.pk,
            &art.vk,
            &art.srs,
        ] {
            if !p.is_file() {
                return Ok(None);
            }
        }
        Ok(Some(art))
    }

    /// Load cached artifacts or run the ezkl setup (settings, calibration,
    /// compilation, SRS if missing, keys). Returns the stats of the setup when
    /// it ran.
    pub fn get_or_setup(
        &self,
        rt: &EzklRuntime,
        model: &EzklModel,
        opts: &EzklOptions,
    ) -> Result<(EzklArtifacts, Option<StepStats>)> {
        if let Some(a) = self.load(model, opts)? {
            return Ok((a, None));
        }
        rt.check()?;
        let dir = self.model_dir(model, opts)?;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let req = json!({
            "onnx": model.onnx,
            "dir": dir,
            "srs_dir": self.srs_dir(),
            "scale": model.input_exp,
            "decomp_base": opts.decomp_base,
            "decomp_legs": opts.decomp_legs,
            "calibration": model.calibration,
        });
        let (v, stats) = rt.call("setup", &req, &dir)?;
        let path = |k: &str| -> Result<PathBuf> {
            v.get(k)
                .and_then(Value::as_str)
                .map(PathBuf::from)
                .ok_or_else(|| protocol_err("setup", format!("no {k}")))
        };
        let logrows = v
            .get("logrows")
            .and_then(Value::as_u64)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or_else(|| protocol_err("setup", "no logrows"))?;
        let art = EzklArtifacts {
            dir: dir.clone(),
            onnx: path("onnx")?,
            settings: path("settings")?,
            compiled: path("compiled")?,
            pk: path("pk")?,
            vk: path("vk")?,
            srs: path("srs")?,
            logrows,
            input_exp: model.input_exp,
        };
        let info = read_settings(&art.settings)?;
        if info.input_scale < model.input_exp {
            return Err(step_err(
                "setup",
                format!(
                    "ezkl chose input scale {} below the input exponent {}",
                    info.input_scale, model.input_exp
                ),
            ));
        }
        let meta = dir.join("meta.json");
        let tmp = dir.join("meta.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&art)?).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &meta).map_err(io_err(&meta))?;
        Ok((art, Some(stats)))
    }
}

/// A field element as ezkl writes it: 64 hex digits, little-endian.
pub fn fr_to_ezkl_hex(f: &Fr) -> String {
    hex::encode(f.into_bigint().to_bytes_le())
}

/// Parse ezkl's little-endian hex (canonical only).
pub fn fr_from_ezkl_hex(s: &str) -> Result<Fr> {
    let bytes = hex::decode(s.trim_start_matches("0x"))
        .map_err(|e| VerifierError::MalformedProof(format!("bad field element hex: {e}")))?;
    if bytes.len() != 32 {
        return Err(VerifierError::MalformedProof(format!(
            "field element must be 32 bytes, got {}",
            bytes.len()
        )));
    }
    let f = Fr::from_le_bytes_mod_order(&bytes);
    if f.into_bigint().to_bytes_le() != bytes {
        return Err(VerifierError::MalformedProof(
            "non-canonical field element".into(),
        ));
    }
    Ok(f)
}

/// A field element as a signed integer (`p - v` is `-v`), if it fits in i64.
pub fn fr_to_i64(f: &Fr) -> Option<i64> {
    let small = |x: &Fr| -> Option<i64> {
        let b = x.into_bigint();
        let limbs = b.as_ref();
        if limbs[1..].iter().all(|l| *l == 0) {
            i64::try_from(limbs[0]).ok()
        } else {
            None
        }
    };
    small(f).or_else(|| small(&-*f).map(|v| -v))
}

/// The public instances of a statement: inputs `x * 2^(input_scale -
/// input_exp)`, then the outputs.
fn instances(x: &[i8], output: &[i64], info: &SettingsInfo, input_exp: i32) -> Result<Vec<Fr>> {
    if x.len() != info.n_in {
        return Err(VerifierError::InvalidInput(format!(
            "input has {} values, model expects {}",
            x.len(),
            info.n_in
        )));
    }
    if output.len() != info.n_out {
        return Err(VerifierError::PublicInputMismatch(format!(
            "{} outputs, model has {}",
            output.len(),
            info.n_out
        )));
    }
    let shift = u32::try_from(info.input_scale - input_exp)
        .ok()
        .filter(|s| *s < 32)
        .ok_or_else(|| VerifierError::InvalidModel("bad ezkl input scale".into()))?;
    let mul = 1i64 << shift;
    Ok(x.iter()
        .map(|v| Fr::from(i64::from(*v) * mul))
        .chain(output.iter().map(|v| Fr::from(*v)))
        .collect())
}

/// ezkl prover for one ONNX model.
pub struct EzklProver {
    rt: EzklRuntime,
    art: EzklArtifacts,
    info: SettingsInfo,
    commitment: String,
    vk_id: String,
}

impl EzklProver {
    /// A prover over existing artifacts.
    pub fn new(rt: EzklRuntime, art: EzklArtifacts) -> Result<Self> {
        let info = read_settings(&art.settings)?;
        let commitment = commitment_of(&sha256_file(&art.onnx)?, &info.canonical, art.input_exp);
        let vk_id = hex::encode(sha256_file(&art.vk)?);
        Ok(Self {
            rt,
            art,
            info,
            commitment,
            vk_id,
        })
    }

    /// A prover whose artifacts come from (or go into) `cache`; also returns
    /// the setup's stats when the setup ran.
    pub fn from_cache(
        rt: EzklRuntime,
        cache: &EzklCache,
        model: &EzklModel,
        opts: &EzklOptions,
    ) -> Result<(Self, Option<StepStats>)> {
        let (art, stats) = cache.get_or_setup(&rt, model, opts)?;
        Ok((Self::new(rt, art)?, stats))
    }

    /// The artifacts.
    pub fn artifacts(&self) -> &EzklArtifacts {
        &self.art
    }

    /// ezkl's output scale (logits are `round(logit * 2^output_scale)`).
    pub fn output_scale(&self) -> i32 {
        self.info.output_scale
    }

    /// A verifier for this prover's proofs (from the same artifact files).
    pub fn verifier(&self) -> Result<EzklVerifier> {
        EzklVerifier::from_artifacts(self.rt.clone(), &self.art)
    }

    /// Floats handed to ezkl for an int8 input (`x * 2^-input_exp`, exact).
    fn float_input(&self, input: &[i8]) -> Result<Vec<f64>> {
        if input.len() != self.info.n_in {
            return Err(VerifierError::InvalidInput(format!(
                "input has {} values, model expects {}",
                input.len(),
                self.info.n_in
            )));
        }
        let scale = 2f64.powi(-self.art.input_exp);
        Ok(input.iter().map(|v| f64::from(*v) * scale).collect())
    }

    /// ezkl's integer outputs for many inputs, without proving (witness
    /// generation only; one subprocess for all of them). For accuracy checks.
    pub fn outputs(&self, inputs: &[Vec<i8>]) -> Result<Vec<Vec<i64>>> {
        let floats = inputs
            .iter()
            .map(|x| self.float_input(x))
            .collect::<Result<Vec<_>>>()?;
        let req = json!({ "dir": self.art.dir, "inputs": floats });
        let (v, _) = self.rt.call("outputs", &req, &self.art.dir)?;
        let outs: Vec<Vec<i64>> = v
            .get("outputs")
            .cloned()
            .map(serde_json::from_value)
            .transpose()?
            .ok_or_else(|| protocol_err("outputs", "no outputs"))?;
        if outs.len() != inputs.len() || outs.iter().any(|o| o.len() != self.info.n_out) {
            return Err(protocol_err("outputs", "wrong number of outputs"));
        }
        Ok(outs)
    }

    /// Prove and report the driver's stats.
    pub fn prove_timed(&self, input: &[i8]) -> Result<(ProvedOutput, StepStats)> {
        let floats = self.float_input(input)?;
        let req = json!({
            "dir": self.art.dir,
            "srs": self.art.srs,
            "input": floats,
        });
        let (v, stats) = self.rt.call("prove", &req, &self.art.dir)?;
        let strs = |k: &str| -> Result<Vec<String>> {
            v.get(k)
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                .ok_or_else(|| protocol_err("prove", format!("no {k}")))
        };
        let inst = strs("instances")?
            .iter()
            .map(|s| fr_from_ezkl_hex(s))
            .collect::<Result<Vec<Fr>>>()
            .map_err(|e| protocol_err("prove", e.to_string()))?;
        if inst.len() != self.info.n_in + self.info.n_out {
            return Err(protocol_err("prove", format!("{} instances", inst.len())));
        }
        let output = inst[self.info.n_in..]
            .iter()
            .map(fr_to_i64)
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| protocol_err("prove", "output does not fit in i64"))?;
        // The proof must be about the input we sent.
        let expected = instances(input, &output, &self.info, self.art.input_exp)?;
        if expected != inst {
            return Err(protocol_err(
                "prove",
                "instances do not match the input sent",
            ));
        }
        let proof = v
            .get("proof")
            .and_then(Value::as_str)
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| protocol_err("prove", "no proof hex"))?;
        let envelope = ProofEnvelope {
            system: SYSTEM.to_string(),
            model_commitment: self.commitment.clone(),
            public_inputs: inst.iter().map(|f| f.to_string()).collect(),
            proof,
            vk_id: self.vk_id.clone(),
        };
        Ok((ProvedOutput { output, envelope }, stats))
    }
}

impl Prover for EzklProver {
    fn system(&self) -> &str {
        SYSTEM
    }
    fn model_commitment(&self) -> &str {
        &self.commitment
    }
    fn vk_id(&self) -> &str {
        &self.vk_id
    }
    fn prove(&self, input: &[i8]) -> Result<ProvedOutput> {
        Ok(self.prove_timed(input)?.0)
    }
}

/// ezkl verifier for one model (settings, verifying key, SRS).
#[derive(Clone, Debug)]
pub struct EzklVerifier {
    rt: EzklRuntime,
    settings: PathBuf,
    vk: PathBuf,
    srs: PathBuf,
    scratch: PathBuf,
    info: SettingsInfo,
    input_exp: i32,
    commitment: String,
    vk_id: String,
}

impl EzklVerifier {
    /// A verifier from the files of a setup. The model commitment and vk id
    /// are recomputed from the files, not read from `meta.json`.
    pub fn from_artifacts(rt: EzklRuntime, art: &EzklArtifacts) -> Result<Self> {
        Self::new(
            rt,
            &art.onnx,
            &art.settings,
            &art.vk,
            &art.srs,
            art.input_exp,
            &art.dir,
        )
    }

    /// A verifier from explicit files; `scratch` is a writable directory for
    /// the proof file handed to ezkl.
    pub fn new(
        rt: EzklRuntime,
        onnx: &Path,
        settings: &Path,
        vk: &Path,
        srs: &Path,
        input_exp: i32,
        scratch: &Path,
    ) -> Result<Self> {
        let info = read_settings(settings)?;
        let commitment = commitment_of(&sha256_file(onnx)?, &info.canonical, input_exp);
        let vk_id = hex::encode(sha256_file(vk)?);
        if !srs.is_file() {
            return Err(EzklError::Artifact {
                path: srs.to_path_buf(),
                message: "SRS missing".into(),
            }
            .into());
        }
        Ok(Self {
            rt,
            settings: settings.to_path_buf(),
            vk: vk.to_path_buf(),
            srs: srs.to_path_buf(),
            scratch: scratch.to_path_buf(),
            info,
            input_exp,
            commitment,
            vk_id,
        })
    }

    /// A verifier that derives its verifying key itself from the ONNX
    /// model, the settings and the SRS (compile + keygen in `dir`, about a
    /// second), instead of trusting a prover's `vk.key`. Halo2 keygen is
    /// deterministic, so an honest prover's proofs carry the same `vk_id`.
    pub fn derive(
        rt: EzklRuntime,
        onnx: &Path,
        settings: &Path,
        srs: &Path,
        input_exp: i32,
        dir: &Path,
    ) -> Result<Self> {
        rt.check()?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let req = json!({
            "onnx": onnx,
            "settings": settings,
            "srs": srs,
            "dir": dir,
        });
        let (v, _) = rt.call("vk", &req, dir)?;
        let vk = v
            .get("vk")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| protocol_err("vk", "no vk"))?;
        Self::new(rt, onnx, settings, &vk, srs, input_exp, dir)
    }

    /// The model commitment this verifier checks proofs for.
    pub fn model_commitment(&self) -> &str {
        &self.commitment
    }

    /// Verify and report the stats of the ezkl call. Envelopes that do not
    /// match the statement are rejected before ezkl runs.
    pub fn verify_timed(
        &self,
        envelope: &ProofEnvelope,
        statement: &Statement,
    ) -> Result<StepStats> {
        if envelope.system != SYSTEM {
            return Err(VerifierError::UnsupportedSystem {
                expected: SYSTEM.into(),
                found: envelope.system.clone(),
            });
        }
        // Keys are per model here: a foreign model shows up as a commitment
        // mismatch first, a foreign key for the right model as a vk mismatch.
        for found in [&envelope.model_commitment, &statement.model_commitment] {
            if !found.eq_ignore_ascii_case(&self.commitment) {
                return Err(VerifierError::ModelCommitmentMismatch {
                    expected: self.commitment.clone(),
                    found: found.clone(),
                });
            }
        }
        if !envelope.vk_id.eq_ignore_ascii_case(&self.vk_id) {
            return Err(VerifierError::VkMismatch {
                expected: self.vk_id.clone(),
                found: envelope.vk_id.clone(),
            });
        }
        let x = match &statement.input {
            InputClaim::Plain(x) => x,
            InputClaim::Commitment(_) => {
                return Err(VerifierError::InvalidInput(
                    "ezkl proofs have public inputs: the statement needs the plain input".into(),
                ))
            }
        };
        let public = instances(x, &statement.output, &self.info, self.input_exp)?;
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
            let what = if idx < self.info.n_in {
                format!("input[{idx}] differs")
            } else {
                format!("output[{}] differs", idx - self.info.n_in)
            };
            return Err(VerifierError::PublicInputMismatch(what));
        }
        if envelope.proof.is_empty() || envelope.proof.len() > MAX_PROOF_BYTES {
            return Err(VerifierError::MalformedProof(format!(
                "{} bytes",
                envelope.proof.len()
            )));
        }
        // ezkl checks the proof against the values recomputed from the
        // statement, never the envelope's strings.
        let req = json!({
            "settings": self.settings,
            "vk": self.vk,
            "srs": self.srs,
            "tmp_dir": self.scratch,
            "instances": public.iter().map(fr_to_ezkl_hex).collect::<Vec<_>>(),
            "proof": hex::encode(&envelope.proof),
        });
        let (v, stats) = self.rt.call("verify", &req, &self.scratch)?;
        let msg = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match v.get("kind").and_then(Value::as_str) {
            Some("ok") if v.get("ok").and_then(Value::as_bool) == Some(true) => Ok(stats),
            Some("malformed") => Err(VerifierError::MalformedProof(msg)),
            Some("rejected") => Err(VerifierError::ProofRejected),
            _ => Err(protocol_err("verify", format!("unexpected result {v}"))),
        }
    }
}

impl ProofVerifier for EzklVerifier {
    fn system(&self) -> &str {
        SYSTEM
    }
    fn vk_id(&self) -> &str {
        &self.vk_id
    }
    fn verify(&self, envelope: &ProofEnvelope, statement: &Statement) -> Result<()> {
        self.verify_timed(envelope, statement).map(|_| ())
    }
}
