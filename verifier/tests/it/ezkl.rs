//! End-to-end ezkl soundness through the Python package: valid proofs of both
//! digits models verify; tampered outputs, weights, inputs and corrupted
//! proofs are each rejected.
//!
//! These tests need `ezkl==23.0.5` and `onnx` in `.venv` (or
//! `$INFERNET_PYTHON`); `scripts/test.sh` installs them. Without them the tests
//! fail, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_ff::Field;

use infernet_verifier::ezkl::{fr_from_ezkl_hex, fr_to_ezkl_hex, fr_to_i64, EzklError};
use infernet_verifier::quant::{model_path, QuantizedDigits};
use infernet_verifier::{
    DigitsModel, EzklCache, EzklModel, EzklOptions, EzklProver, EzklRuntime, EzklVerifier,
    InputClaim, ProofEnvelope, ProofVerifier, Prover, Statement, VerifierError,
};

const SMALL: &str = "digits-64-32-10";
const LARGE: &str = "digits-64-128-10";
const CNN: &str = "digits-cnn-4-8";
const MODELS: [&str; 3] = [SMALL, LARGE, CNN];

fn slot(name: &str) -> usize {
    MODELS.iter().position(|m| *m == name).unwrap()
}

/// The runtime, checked: a missing ezkl fails every test with the hint.
fn rt() -> EzklRuntime {
    let rt = EzklRuntime::from_env();
    if let Err(e) = rt.check() {
        panic!("these tests need the ezkl Python package: {e}");
    }
    rt
}

/// One cache (and so one SRS per logrows) for the whole test binary, emptied
/// when the binary starts (every run sets up from scratch) and left in the
/// target directory afterwards (a static `TempDir` would never be dropped, and
/// the keys are tens of MiB).
fn cache() -> &'static EzklCache {
    static CACHE: OnceLock<EzklCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ezkl-tests");
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot empty {}: {e}", dir.display()),
        }
        EzklCache::new(dir)
    })
}

fn digits(name: &str) -> &'static (DigitsModel, QuantizedDigits) {
    static M: [OnceLock<(DigitsModel, QuantizedDigits)>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    M[slot(name)].get_or_init(|| {
        let m = DigitsModel::load(model_path(name)).unwrap();
        let q = m.quantize().unwrap();
        (m, q)
    })
}

fn prover(name: &str) -> &'static EzklProver {
    static P: [OnceLock<EzklProver>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    P[slot(name)].get_or_init(|| {
        let model = EzklModel::digits(name).unwrap();
        let (p, stats) =
            EzklProver::from_cache(rt(), cache(), &model, &EzklOptions::default()).unwrap();
        assert!(stats.is_some(), "fresh cache: the setup must run");
        p
    })
}

fn input(name: &str, i: usize) -> Vec<i8> {
    let (m, q) = digits(name);
    q.input_from_pixels(&m.test.x[i])
}

fn statement(p: &EzklProver, x: &[i8], output: &[i64]) -> Statement {
    Statement {
        model_commitment: p.model_commitment().to_string(),
        input: InputClaim::Plain(x.to_vec()),
        output: output.to_vec(),
    }
}

/// ezkl's integer logits, rescaled, are close to the float model's logits,
/// and the predicted class agrees.
fn check_output_matches_float(name: &str, p: &EzklProver, i: usize, output: &[i64]) {
    let (m, _) = digits(name);
    let float = m.float_mlp().forward(&m.float_input(&m.test.x[i]));
    let scale = 2f64.powi(p.output_scale());
    for (o, f) in output.iter().zip(&float) {
        let got = *o as f64 / scale;
        assert!(
            (got - f).abs() < 0.5,
            "ezkl logit {got} vs float {f} (all: {output:?} / {float:?})"
        );
    }
    assert_eq!(
        infernet_verifier::quant::argmax(output),
        infernet_verifier::quant::argmax(&float)
    );
}

fn is_rejected(r: &Result<(), VerifierError>) -> bool {
    matches!(
        r,
        Err(VerifierError::MalformedProof(_)) | Err(VerifierError::ProofRejected)
    )
}

#[test]
fn onnx_files_are_current_and_deterministic() {
    let out = tempfile::tempdir().unwrap();
    let script = EzklRuntime::repo_root().join("scripts/export_onnx.py");
    let status = Command::new(rt().python())
        .arg(&script)
        .arg("--out-dir")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "{script:?} failed");
    for name in MODELS {
        let fresh = std::fs::read(out.path().join(format!("{name}.onnx"))).unwrap();
        let committed = std::fs::read(model_path(name).with_extension("onnx")).unwrap();
        assert!(
            fresh == committed,
            "{name}.onnx is stale: rerun scripts/export_onnx.py"
        );
    }
}

#[test]
fn small_model_valid_proof_verifies_and_tampering_is_rejected() {
    let p = prover(SMALL);
    let v = p.verifier().unwrap();
    assert_eq!(v.model_commitment(), p.model_commitment());
    let x = input(SMALL, 0);
    let proved = p.prove(&x).unwrap();
    check_output_matches_float(SMALL, p, 0, &proved.output);
    let env = &proved.envelope;
    assert_eq!(env.system, "ezkl-halo2-kzg-bn254");
    assert_eq!(env.public_inputs.len(), 64 + 10);
    let st = statement(p, &x, &proved.output);

    // Valid, also after a JSON round trip.
    v.verify(env, &st).unwrap();
    let json = serde_json::to_string(env).unwrap();
    let back: ProofEnvelope = serde_json::from_str(&json).unwrap();
    v.verify(&back, &st).unwrap();

    // Tampered output: the client checks the output it received ...
    let mut bad = st.clone();
    bad.output[4] += 1;
    assert!(matches!(
        v.verify(env, &bad),
        Err(VerifierError::PublicInputMismatch(_))
    ));
    // ... and with the envelope rewritten to match, ezkl rejects the proof.
    let mut env2 = env.clone();
    env2.public_inputs[64 + 4] = Fr::from(bad.output[4]).to_string();
    assert!(matches!(
        v.verify(&env2, &bad),
        Err(VerifierError::ProofRejected)
    ));

    // Tampered input.
    let mut bad = st.clone();
    let mut x_bad = x.clone();
    x_bad[10] = x_bad[10].wrapping_add(1);
    bad.input = InputClaim::Plain(x_bad.clone());
    assert!(matches!(
        v.verify(env, &bad),
        Err(VerifierError::PublicInputMismatch(_))
    ));
    let mut env2 = env.clone();
    env2.public_inputs[10] = Fr::from(i64::from(x_bad[10])).to_string();
    assert!(matches!(
        v.verify(&env2, &bad),
        Err(VerifierError::ProofRejected)
    ));

    // Corrupted proof bytes, truncated, extended, empty.
    let n = env.proof.len();
    for i in [0usize, 100, n / 2, n - 1] {
        let mut env2 = env.clone();
        env2.proof[i] ^= 0x04;
        let r = v.verify(&env2, &st);
        assert!(is_rejected(&r), "flip at {i}: {r:?}");
    }
    let mut env2 = env.clone();
    env2.proof.truncate(n - 32);
    let r = v.verify(&env2, &st);
    assert!(is_rejected(&r), "truncated: {r:?}");
    env2.proof = vec![];
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::MalformedProof(_))
    ));

    // A valid proof of a different statement does not transfer.
    let x1 = input(SMALL, 1);
    let other = p.prove(&x1).unwrap();
    check_output_matches_float(SMALL, p, 1, &other.output);
    let mut env2 = env.clone();
    env2.proof = other.envelope.proof.clone();
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::ProofRejected)
    ));
    v.verify(&other.envelope, &statement(p, &x1, &other.output))
        .unwrap();

    // Wrong system / vk id / commitment-only input.
    let mut env2 = env.clone();
    env2.system = "groth16-bn254".into();
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::UnsupportedSystem { .. })
    ));
    let mut env2 = env.clone();
    env2.vk_id = "00".repeat(32);
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::VkMismatch { .. })
    ));
    let mut st2 = st.clone();
    st2.input = InputClaim::Commitment("00".repeat(32));
    assert!(matches!(
        v.verify(env, &st2),
        Err(VerifierError::InvalidInput(_))
    ));
}

/// Write `<name>` with one row of weights changed to `dir/<name>.json` and export it.
fn tampered_onnx(dir: &Path, name: &str) -> PathBuf {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_path(name)).unwrap()).unwrap();
    // Shift row 3 of the last layer: logit 3 changes for any input with an
    // active hidden unit.
    let row = doc["layers"][1]["weights"][3].as_array_mut().unwrap();
    for w in row.iter_mut() {
        *w = serde_json::json!(w.as_f64().unwrap() + 0.5);
    }
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_vec(&doc).unwrap()).unwrap();
    let script = EzklRuntime::repo_root().join("scripts/export_onnx.py");
    let status = Command::new(rt().python())
        .arg(&script)
        .arg(&json)
        .status()
        .unwrap();
    assert!(status.success());
    json.with_extension("onnx")
}

#[test]
fn small_model_tampered_weights_are_rejected() {
    let p = prover(SMALL);
    let v = p.verifier().unwrap();
    let x = input(SMALL, 2);
    let honest = p.prove(&x).unwrap();

    // A provider that runs a modified model: its proof is valid for *its*
    // circuit, whose commitment and verifying key are not the expected ones.
    let tmp = tempfile::tempdir().unwrap();
    let mut model = EzklModel::digits(SMALL).unwrap();
    model.onnx = tampered_onnx(tmp.path(), SMALL);
    let (bad_p, _) =
        EzklProver::from_cache(rt(), cache(), &model, &EzklOptions::default()).unwrap();
    assert_ne!(bad_p.model_commitment(), p.model_commitment());
    assert_ne!(bad_p.vk_id(), p.vk_id());
    let proved = bad_p.prove(&x).unwrap();
    assert_ne!(proved.output, honest.output, "the change must matter");

    // The client expects the honest model.
    let st = statement(p, &x, &proved.output);
    assert!(matches!(
        v.verify(&proved.envelope, &st),
        Err(VerifierError::ModelCommitmentMismatch { .. })
    ));
    let mut env = proved.envelope.clone();
    env.model_commitment = p.model_commitment().to_string();
    assert!(matches!(
        v.verify(&env, &st),
        Err(VerifierError::VkMismatch { .. })
    ));
    // Claiming the honest commitment and vk id: the proof does not verify
    // under the honest verifying key.
    env.vk_id = p.vk_id().to_string();
    assert!(matches!(
        v.verify(&env, &st),
        Err(VerifierError::ProofRejected)
    ));
    // A verifier for a different model refuses statements about this one.
    let bad_v = bad_p.verifier().unwrap();
    let st_honest = statement(p, &x, &honest.output);
    assert!(matches!(
        bad_v.verify(&honest.envelope, &st_honest),
        Err(VerifierError::ModelCommitmentMismatch { .. })
    ));
    // Sanity: the bad model's own verifier accepts its own proof.
    bad_v
        .verify(&proved.envelope, &statement(&bad_p, &x, &proved.output))
        .unwrap();
}

#[test]
fn large_model_proves_and_verifies() {
    let p = prover(LARGE);
    let v = p.verifier().unwrap();
    let x = input(LARGE, 3);
    let proved = p.prove(&x).unwrap();
    check_output_matches_float(LARGE, p, 3, &proved.output);
    // Witness-only outputs are the proved outputs.
    let outs = p.outputs(&[input(LARGE, 5), x.clone()]).unwrap();
    assert_eq!(outs[1], proved.output);
    check_output_matches_float(LARGE, p, 5, &outs[0]);
    let st = statement(p, &x, &proved.output);
    v.verify(&proved.envelope, &st).unwrap();
    // Tampered output, envelope rewritten to match.
    let mut bad = st.clone();
    bad.output[0] -= 1;
    let mut env = proved.envelope.clone();
    env.public_inputs[64] = Fr::from(bad.output[0]).to_string();
    assert!(matches!(
        v.verify(&env, &bad),
        Err(VerifierError::ProofRejected)
    ));
    // The small model's verifier does not take the large model's proofs.
    let small_v = prover(SMALL).verifier().unwrap();
    assert!(small_v.verify(&proved.envelope, &st).is_err());
}

/// The CNN, from its ONNX export (Conv, Relu, Flatten, Gemm): ezkl proves
/// it, its logits track the float model's, and a changed logit is refused.
#[test]
fn cnn_proves_and_verifies() {
    let p = prover(CNN);
    let v = p.verifier().unwrap();
    let x = input(CNN, 2);
    let proved = p.prove(&x).unwrap();
    check_output_matches_float(CNN, p, 2, &proved.output);
    let st = statement(p, &x, &proved.output);
    v.verify(&proved.envelope, &st).unwrap();
    let mut bad = st.clone();
    bad.output[4] += 1;
    let mut env = proved.envelope.clone();
    env.public_inputs[64 + 4] = Fr::from(bad.output[4]).to_string();
    assert!(matches!(
        v.verify(&env, &bad),
        Err(VerifierError::ProofRejected)
    ));
    // Another model's verifier does not take it.
    assert!(prover(SMALL)
        .verifier()
        .unwrap()
        .verify(&proved.envelope, &st)
        .is_err());
}

#[test]
fn cache_reloads_without_setup_and_verifier_rebuilds_from_files() {
    let p = prover(SMALL);
    let model = EzklModel::digits(SMALL).unwrap();
    let (again, stats) =
        EzklProver::from_cache(rt(), cache(), &model, &EzklOptions::default()).unwrap();
    assert!(stats.is_none(), "second setup must hit the cache");
    assert_eq!(again.vk_id(), p.vk_id());
    assert_eq!(again.model_commitment(), p.model_commitment());
    // A verifier from explicit files, with its own scratch dir.
    let art = p.artifacts();
    let scratch = tempfile::tempdir().unwrap();
    let v = EzklVerifier::new(
        rt(),
        &art.onnx,
        &art.settings,
        &art.vk,
        &art.srs,
        art.input_exp,
        scratch.path(),
    )
    .unwrap();
    assert_eq!(v.vk_id(), p.vk_id());
    // A client that derives the verifying key itself (from the ONNX model,
    // settings and SRS, not the prover's vk.key) gets the same key and
    // accepts the prover's proof.
    let own = tempfile::tempdir().unwrap();
    let derived = EzklVerifier::derive(
        rt(),
        &art.onnx,
        &art.settings,
        &art.srs,
        art.input_exp,
        own.path(),
    )
    .unwrap();
    assert_eq!(derived.vk_id(), p.vk_id());
    let x = input(SMALL, 4);
    let proved = p.prove(&x).unwrap();
    derived
        .verify(&proved.envelope, &statement(p, &x, &proved.output))
        .unwrap();
    // Another input exponent is another statement: another commitment.
    let v2 = EzklVerifier::new(
        rt(),
        &art.onnx,
        &art.settings,
        &art.vk,
        &art.srs,
        art.input_exp + 1,
        scratch.path(),
    )
    .unwrap();
    assert_ne!(v2.model_commitment(), p.model_commitment());
}

#[test]
fn missing_python_or_ezkl_is_a_clear_error() {
    let script = EzklRuntime::repo_root().join("scripts/ezkl_prove.py");
    let e = EzklRuntime::new("/nonexistent/python3", &script)
        .check()
        .unwrap_err();
    assert!(
        matches!(e, VerifierError::Ezkl(EzklError::PythonMissing { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("scripts/test.sh"), "{e}");

    // An interpreter without site-packages cannot import ezkl.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("python-no-site");
    let real = rt().python().to_path_buf();
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", real.display()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let e = EzklRuntime::new(&wrapper, &script).check().unwrap_err();
    assert!(
        matches!(e, VerifierError::Ezkl(EzklError::NotInstalled { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("ezkl==23.0.5"), "{e}");
}

#[test]
fn field_element_encoding() {
    for v in [0i64, 1, -1, 1_249_378, -2_368_079, i64::MAX, i64::MIN + 1] {
        let f = Fr::from(v);
        let h = fr_to_ezkl_hex(&f);
        assert_eq!(h.len(), 64);
        assert_eq!(fr_from_ezkl_hex(&h).unwrap(), f);
        assert_eq!(fr_to_i64(&f), Some(v));
    }
    // ezkl's encoding of -1338998 (from a real proof): little-endian p - v.
    let h = "8b91ebef93f5e1439170b97948e833285d588181b64550b829a031e1724e6430";
    assert_eq!(fr_to_i64(&fr_from_ezkl_hex(h).unwrap()), Some(-1_338_998));
    assert!(fr_from_ezkl_hex("00").is_err());
    assert!(fr_from_ezkl_hex(&"ff".repeat(32)).is_err(), "non-canonical");
    // 2^100 fits in neither i64 nor its negation.
    assert_eq!(fr_to_i64(&Fr::from(2u64).pow([100u64])), None);
}
