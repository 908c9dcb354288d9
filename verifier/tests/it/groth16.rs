//! End-to-end Groth16 soundness: valid proofs verify; tampered outputs,
//! weights, inputs and corrupted proofs are each rejected.

use std::sync::OnceLock;

use ark_bn254::Fr;

use infernet_verifier::commit::{commit_input, fr_to_hex};
use infernet_verifier::groth16::{setup, KeyCache, Pk};
use infernet_verifier::quant::{model_path, QuantizedDigits};
use infernet_verifier::{
    DigitsModel, Groth16Prover, Groth16Verifier, InputClaim, InputMode, MlpShape, ProofEnvelope,
    ProofVerifier, Prover, Statement, VerifierError,
};
use rand::{rngs::StdRng, SeedableRng};

const MODEL: &str = "digits-64-32-10";

fn model() -> &'static (DigitsModel, QuantizedDigits) {
    static M: OnceLock<(DigitsModel, QuantizedDigits)> = OnceLock::new();
    M.get_or_init(|| {
        let m = DigitsModel::load(model_path(MODEL)).unwrap();
        let q = m.quantize().unwrap();
        (m, q)
    })
}

fn keys(mode: InputMode) -> Pk {
    static PUBLIC: OnceLock<Pk> = OnceLock::new();
    static COMMITTED: OnceLock<Pk> = OnceLock::new();
    let cell = match mode {
        InputMode::Public => &PUBLIC,
        InputMode::Committed => &COMMITTED,
    };
    cell.get_or_init(|| {
        let shape = MlpShape::of(&model().1.mlp, mode).unwrap();
        setup(&shape, &mut StdRng::seed_from_u64(42)).unwrap().0
    })
    .clone()
}

fn prover(mode: InputMode) -> Groth16Prover {
    Groth16Prover::new(model().1.mlp.clone(), mode, keys(mode)).unwrap()
}

fn input(i: usize) -> Vec<i8> {
    let (m, q) = model();
    q.input_from_pixels(&m.test.x[i])
}

fn statement(p: &Groth16Prover, x: &[i8], output: &[i64]) -> Statement {
    Statement {
        model_commitment: p.model_commitment().to_string(),
        input: InputClaim::Plain(x.to_vec()),
        output: output.to_vec(),
    }
}

#[test]
fn valid_proof_verifies_and_tampering_is_rejected() {
    let p = prover(InputMode::Public);
    let v = p.verifier().unwrap();
    let x = input(0);
    let proved = p.prove_with_rng(&x, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(proved.output, p.mlp().forward(&x).unwrap());
    let env = &proved.envelope;
    assert_eq!(env.system, "groth16-bn254");
    assert_eq!(env.proof.len(), 128);
    let st = statement(&p, &x, &proved.output);

    // Valid, also after a JSON round trip.
    v.verify(env, &st).unwrap();
    let json = serde_json::to_string(env).unwrap();
    let back: ProofEnvelope = serde_json::from_str(&json).unwrap();
    v.verify(&back, &st).unwrap();

    // Tampered output: the client checks the output it received.
    let mut bad = st.clone();
    bad.output[4] += 1;
    assert!(matches!(
        v.verify(env, &bad),
        Err(VerifierError::PublicInputMismatch(_))
    ));
    // ... and with the envelope's public inputs rewritten to match, the
    // pairing check fails.
    let mut env2 = env.clone();
    env2.public_inputs[1 + 64 + 4] = Fr::from(bad.output[4]).to_string();
    assert!(matches!(
        v.verify(&env2, &bad),
        Err(VerifierError::ProofRejected)
    ));

    // Tampered input.
    let mut bad = st.clone();
    if let InputClaim::Plain(xs) = &mut bad.input {
        xs[10] = xs[10].wrapping_add(1);
    }
    assert!(matches!(
        v.verify(env, &bad),
        Err(VerifierError::PublicInputMismatch(_))
    ));
    let mut env2 = env.clone();
    env2.public_inputs[1 + 10] = Fr::from(x[10].wrapping_add(1)).to_string();
    assert!(matches!(
        v.verify(&env2, &bad),
        Err(VerifierError::ProofRejected)
    ));

    // Corrupted proof: every single-byte flip is rejected one way or another.
    for i in [0usize, 17, 31, 32, 50, 95, 96, 127] {
        let mut env2 = env.clone();
        env2.proof[i] ^= 0x04;
        let r = v.verify(&env2, &st);
        assert!(
            matches!(
                r,
                Err(VerifierError::MalformedProof(_)) | Err(VerifierError::ProofRejected)
            ),
            "flip at {i}: {r:?}"
        );
    }
    let mut env2 = env.clone();
    env2.proof.truncate(100);
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::MalformedProof(_))
    ));
    let mut env2 = env.clone();
    env2.proof.push(0);
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::MalformedProof(_))
    ));
    env2.proof = vec![];
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::MalformedProof(_))
    ));

    // A valid proof of a different statement does not transfer.
    let x1 = input(1);
    let other = p
        .prove_with_rng(&x1, &mut StdRng::seed_from_u64(2))
        .unwrap();
    let mut env2 = env.clone();
    env2.proof = other.envelope.proof.clone();
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::ProofRejected)
    ));
    v.verify(&other.envelope, &statement(&p, &x1, &other.output))
        .unwrap();

    // Wrong system / vk id.
    let mut env2 = env.clone();
    env2.system = "ezkl".into();
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
}

#[test]
fn tampered_weights_are_rejected() {
    let p = prover(InputMode::Public);
    let v = p.verifier().unwrap();
    let x = input(2);
    // A provider that runs a modified model under the same (shape-specific)
    // keys: its proof is valid for *its* commitment, which is not the one the
    // client expects.
    let mut bad = model().1.mlp.clone();
    bad.layers[1].weights[3][0] = bad.layers[1].weights[3][0].wrapping_add(3);
    let bad_prover = Groth16Prover::new(bad, InputMode::Public, keys(InputMode::Public)).unwrap();
    assert_ne!(bad_prover.model_commitment(), p.model_commitment());
    let proved = bad_prover
        .prove_with_rng(&x, &mut StdRng::seed_from_u64(3))
        .unwrap();
    let st = statement(&p, &x, &proved.output);
    assert!(matches!(
        v.verify(&proved.envelope, &st),
        Err(VerifierError::ModelCommitmentMismatch { .. })
    ));
    // Rewriting the envelope to claim the expected commitment breaks the proof.
    let mut env = proved.envelope.clone();
    env.model_commitment = p.model_commitment().to_string();
    env.public_inputs[0] = infernet_verifier::commit::fr_from_hex(p.model_commitment())
        .unwrap()
        .to_string();
    assert!(matches!(
        v.verify(&env, &st),
        Err(VerifierError::ProofRejected)
    ));
    // The statement with the bad model's own commitment verifies (sanity).
    let mut st_bad = st.clone();
    st_bad.model_commitment = bad_prover.model_commitment().to_string();
    v.verify(&proved.envelope, &st_bad).unwrap();
}

#[test]
fn committed_input_mode() {
    let p = prover(InputMode::Committed);
    let v = p.verifier().unwrap();
    let x = input(5);
    let proved = p.prove_with_rng(&x, &mut StdRng::seed_from_u64(4)).unwrap();
    let env = &proved.envelope;
    assert_eq!(env.public_inputs.len(), 1 + 1 + 10);
    // The client that knows x, and a third party that only knows its commitment.
    v.verify(env, &statement(&p, &x, &proved.output)).unwrap();
    let c = fr_to_hex(&commit_input(&x));
    let st_c = Statement {
        model_commitment: p.model_commitment().to_string(),
        input: InputClaim::Commitment(c),
        output: proved.output.clone(),
    };
    v.verify(env, &st_c).unwrap();
    // Tampered input / output.
    let mut other = x.clone();
    other[0] = other[0].wrapping_add(1);
    assert!(matches!(
        v.verify(env, &statement(&p, &other, &proved.output)),
        Err(VerifierError::PublicInputMismatch(_))
    ));
    let mut env2 = env.clone();
    env2.public_inputs[1] = commit_input(&other).to_string();
    assert!(matches!(
        v.verify(&env2, &statement(&p, &other, &proved.output)),
        Err(VerifierError::ProofRejected)
    ));
    let mut out = proved.output.clone();
    out[0] -= 1;
    assert!(v.verify(env, &statement(&p, &x, &out)).is_err());
    // A public-input verifier's key does not fit this shape.
    let shape_pub = MlpShape::of(p.mlp(), InputMode::Public).unwrap();
    assert!(Groth16Verifier::new(shape_pub, p.vk()).is_err());
}

#[test]
fn key_cache_generates_once_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyCache::new(dir.path().join("keys"));
    // A tiny model keeps this test fast.
    let tiny = infernet_verifier::QuantizedMlp::new(vec![
        infernet_verifier::QLayer {
            weights: vec![vec![1, -2, 3]; 2],
            bias: vec![5, -5],
            shift: 2,
            conv: None,
        },
        infernet_verifier::QLayer {
            weights: vec![vec![7, 8]],
            bias: vec![0],
            shift: 0,
            conv: None,
        },
    ])
    .unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let first = cache
        .get_or_setup(&tiny, InputMode::Public, &mut rng)
        .unwrap();
    assert!(first.generated);
    let again = cache
        .get_or_setup(&tiny, InputMode::Public, &mut rng)
        .unwrap();
    assert!(!again.generated);
    assert_eq!(first.vk_id, again.vk_id);
    assert_eq!(first.vk, again.vk);
    let p = Groth16Prover::from_cache(&cache, tiny.clone(), InputMode::Public).unwrap();
    assert_eq!(p.vk_id(), first.vk_id);
    let x = [3i8, -100, 127];
    let proved = p.prove(&x).unwrap();
    // The client side: vk from the cache by commitment, verifier from bytes.
    let vk = cache
        .load_vk(p.model_commitment(), InputMode::Public)
        .unwrap()
        .unwrap();
    let bytes = infernet_verifier::groth16::vk_bytes(&vk).unwrap();
    let v = Groth16Verifier::from_vk_bytes(MlpShape::of(&tiny, InputMode::Public).unwrap(), &bytes)
        .unwrap();
    assert_eq!(v.vk_id(), first.vk_id);
    v.verify(&proved.envelope, &statement(&p, &x, &proved.output))
        .unwrap();
    // Committed mode is a different cache entry.
    let c = cache
        .get_or_setup(&tiny, InputMode::Committed, &mut rng)
        .unwrap();
    assert!(c.generated);
    assert_ne!(c.vk_id, first.vk_id);
    // Garbage commitments never reach the file system.
    assert!(cache
        .load_vk("../../etc/passwd", InputMode::Public)
        .is_err());
}

/// The digits CNN end to end: its key is per shape *including* the
/// convolutions (an MLP key of the same widths cannot prove it), a proof
/// verifies, a changed logit or a proof for a stride-changed twin is refused.
#[test]
fn cnn_proof_verifies_and_tampering_is_rejected() {
    let m = DigitsModel::load(model_path("digits-cnn-4-8")).unwrap();
    let q = m.quantize().unwrap();
    let shape = MlpShape::of(&q.mlp, InputMode::Public).unwrap();
    assert_eq!(shape.dims, [64, 256, 128, 10]);
    let (pk, _) = setup(&shape, &mut StdRng::seed_from_u64(43)).unwrap();
    let p = Groth16Prover::new(q.mlp.clone(), InputMode::Public, pk.clone()).unwrap();
    let v = p.verifier().unwrap();
    let x = q.input_from_pixels(&m.test.x[1]);
    let proved = p.prove_with_rng(&x, &mut StdRng::seed_from_u64(2)).unwrap();
    assert_eq!(proved.output, q.mlp.forward(&x).unwrap());
    assert_eq!(proved.envelope.proof.len(), 128);
    let st = statement(&p, &x, &proved.output);
    v.verify(&proved.envelope, &st).unwrap();

    let mut bad = st.clone();
    bad.output[3] += 1;
    let mut env = proved.envelope.clone();
    env.public_inputs[1 + 64 + 3] = Fr::from(bad.output[3]).to_string();
    assert!(matches!(
        v.verify(&env, &bad),
        Err(VerifierError::ProofRejected)
    ));

    // The same widths as dense layers: another circuit, so the CNN's key
    // does not fit it.
    let mut dense = q.mlp.clone();
    for l in &mut dense.layers {
        if let Some(c) = l.conv.take() {
            l.weights = vec![vec![0; c.in_len()]; c.out_len()];
            l.bias = vec![0; c.out_len()];
        }
    }
    let dense_shape = MlpShape::of(&dense, InputMode::Public).unwrap();
    assert_eq!(dense_shape.dims, shape.dims);
    assert!(Groth16Prover::new(dense, InputMode::Public, pk)
        .and_then(|p| p.prove_with_rng(&x, &mut StdRng::seed_from_u64(3)))
        .is_err());
}
