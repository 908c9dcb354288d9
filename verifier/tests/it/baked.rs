//! Baked-weights mode (`infernet_verifier::baked`): the circuit's witness
//! equals the reference forward pass (also at the extremes its tight bounds
//! are sized for), false statements are unsatisfiable, and end to end
//! tampered outputs, inputs, corrupted proofs and another model's key are
//! rejected.

use std::sync::OnceLock;

use ark_bn254::Fr;
use infernet_verifier::baked::{
    check_witness, constraint_count, setup, BakedCircuit, BakedProver, BakedVerifier,
};
use infernet_verifier::commit::commit_model;
use infernet_verifier::groth16::Pk;
use infernet_verifier::quant::{model_path, QuantizedDigits};
use infernet_verifier::testing::random_cnn;
use infernet_verifier::{
    DigitsModel, Groth16Verifier, InputClaim, InputMode, MlpShape, ProofVerifier, Prover,
    PublicValues, QLayer, QuantizedMlp, Statement, VerifierError,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

const MODEL: &str = "digits-64-32-10";

fn load(name: &str) -> (DigitsModel, QuantizedDigits) {
    let m = DigitsModel::load(model_path(name)).unwrap();
    let q = m.quantize().unwrap();
    (m, q)
}

fn model() -> &'static (DigitsModel, QuantizedDigits) {
    static M: OnceLock<(DigitsModel, QuantizedDigits)> = OnceLock::new();
    M.get_or_init(|| load(MODEL))
}

fn assert_witness_matches(mlp: &QuantizedMlp, x: &[i8]) {
    assert_circuit_matches(mlp, x, BakedCircuit::new(mlp, x).unwrap());
}

fn assert_circuit_matches(mlp: &QuantizedMlp, x: &[i8], circuit: BakedCircuit) {
    let (ok, w) = check_witness(&circuit).unwrap();
    assert!(
        ok,
        "honest witness must satisfy the baked circuit (x = {x:?})"
    );
    let w = w.unwrap();
    let mut trace = mlp.forward_trace(x).unwrap();
    let logits = trace.pop().unwrap();
    assert_eq!(w.output, logits, "circuit output != forward");
    assert_eq!(w.hidden, trace, "circuit hidden activations != forward");
}

/// The inputs that maximise and minimise each first-layer accumulator: the
/// corners the circuit's bounds are computed for.
fn corner_inputs(mlp: &QuantizedMlp) -> Vec<Vec<i8>> {
    let n = mlp.input_len();
    let mut xs = vec![vec![-128i8; n], vec![127i8; n], vec![0i8; n]];
    let layer = &mlp.layers[0];
    for o in 0..layer.out_dim() {
        let (row, taps) = layer.taps(o);
        for (pos, neg) in [(127, -128), (-128, 127)] {
            let mut x = vec![0i8; n];
            for &(col, i) in &taps {
                x[i] = if layer.weights[row][col] >= 0 {
                    pos
                } else {
                    neg
                };
            }
            xs.push(x);
        }
    }
    xs
}

#[test]
fn baked_witness_equals_forward_on_digits() {
    for (name, n) in [
        ("digits-64-32-10", 16),
        ("digits-64-128-10", 4),
        ("digits-cnn-4-8", 4),
    ] {
        let (m, q) = load(name);
        for pixels in m.test.x.iter().take(n) {
            assert_witness_matches(&q.mlp, &q.input_from_pixels(pixels));
        }
        for x in corner_inputs(&q.mlp).iter().take(12) {
            assert_witness_matches(&q.mlp, x);
        }
    }
}

#[test]
fn baked_witness_equals_forward_on_random_models() {
    let mut rng = StdRng::seed_from_u64(11);
    for trial in 0..24 {
        let depth = 1 + trial % 4;
        let mut dims = vec![rng.gen_range(1..6)];
        for _ in 0..depth {
            dims.push(rng.gen_range(1..6));
        }
        let layers = (0..depth)
            .map(|l| {
                let weight = |rng: &mut StdRng| -> i8 {
                    match rng.gen_range(0..5) {
                        0 => -128,
                        1 => 127,
                        2 => 0,
                        _ => rng.gen(),
                    }
                };
                QLayer {
                    weights: (0..dims[l + 1])
                        .map(|_| (0..dims[l]).map(|_| weight(&mut rng)).collect())
                        .collect(),
                    bias: (0..dims[l + 1])
                        .map(|_| match rng.gen_range(0..6) {
                            0 => i32::MIN,
                            1 => i32::MAX,
                            2 => rng.gen(),
                            _ => rng.gen_range(-20000..20000),
                        })
                        .collect(),
                    shift: if l + 1 == depth {
                        0
                    } else {
                        rng.gen_range(0..=12)
                    },
                    conv: None,
                }
            })
            .collect();
        let mlp = QuantizedMlp::new(layers).unwrap();
        for x in corner_inputs(&mlp) {
            assert_witness_matches(&mlp, &x);
        }
        for _ in 0..6 {
            let x: Vec<i8> = (0..dims[0]).map(|_| rng.gen()).collect();
            assert_witness_matches(&mlp, &x);
        }
        // The shape-only sizing the benchmark compares against.
        let x = vec![-128i8; dims[0]];
        let c = BakedCircuit::new(&mlp, &x)
            .unwrap()
            .with_worst_case_bounds();
        assert_circuit_matches(&mlp, &x, c);
    }
}

/// Random CNNs: the baked circuit (bounds from the weights, through
/// every tap of every convolution) at the corners of the first layer and
/// at random inputs, and with the worst-case sizing.
#[test]
fn baked_witness_equals_forward_on_random_cnns() {
    let mut rng = StdRng::seed_from_u64(12);
    for seed in 0..16 {
        let cnn = random_cnn(seed);
        for x in corner_inputs(&cnn).iter().take(24) {
            assert_witness_matches(&cnn, x);
        }
        let x: Vec<i8> = (0..cnn.input_len()).map(|_| rng.gen()).collect();
        assert_witness_matches(&cnn, &x);
        let c = BakedCircuit::new(&cnn, &x)
            .unwrap()
            .with_worst_case_bounds();
        assert_circuit_matches(&cnn, &x, c);
    }
}

fn honest_public(mlp: &QuantizedMlp, x: &[i8]) -> PublicValues {
    PublicValues::new(
        &MlpShape::of(mlp, InputMode::Public).unwrap(),
        commit_model(mlp).unwrap(),
        &InputClaim::Plain(x.to_vec()),
        &mlp.forward(x).unwrap(),
    )
    .unwrap()
}

fn satisfied(mlp: &QuantizedMlp, x: &[i8], claimed: PublicValues) -> bool {
    let c = BakedCircuit::new(mlp, x)
        .unwrap()
        .with_claimed_public(claimed);
    check_witness(&c).unwrap().0
}

#[test]
fn baked_false_statements_are_unsatisfiable() {
    let (m, q) = model();
    let x = q.input_from_pixels(&m.test.x[3]);
    let honest = honest_public(&q.mlp, &x);
    assert!(satisfied(&q.mlp, &x, honest.clone()));
    // Another output.
    for o in [0usize, 4, 9] {
        let mut bad = honest.clone();
        bad.output[o] += Fr::from(1u64);
        assert!(!satisfied(&q.mlp, &x, bad), "output[{o}] + 1 accepted");
    }
    // Another input (the witness follows the claimed input, so only the
    // output gives it away).
    let mut bad = honest.clone();
    bad.input[20] += Fr::from(3u64);
    assert!(!satisfied(&q.mlp, &x, bad));
    // Another model's commitment.
    let mut bad = honest.clone();
    bad.model_commitment += Fr::from(1u64);
    assert!(!satisfied(&q.mlp, &x, bad));
}

#[test]
fn baked_is_smaller_than_committed() {
    for name in ["digits-64-32-10", "digits-64-128-10"] {
        let (_, q) = load(name);
        let baked = constraint_count(&q.mlp).unwrap();
        let committed = infernet_verifier::circuit::constraint_count(
            &MlpShape::of(&q.mlp, InputMode::Public).unwrap(),
        )
        .unwrap();
        let worst = BakedCircuit::for_setup(&q.mlp)
            .unwrap()
            .with_worst_case_bounds()
            .num_constraints()
            .unwrap();
        println!(
            "{name}: baked {baked} constraints (shape-only bounds: {worst}), committed {committed}"
        );
        assert!(baked < worst);
        assert!(baked * 10 < committed, "{name}: {baked} vs {committed}");
    }
}

fn keys() -> &'static Pk {
    static PK: OnceLock<Pk> = OnceLock::new();
    PK.get_or_init(|| {
        setup(&model().1.mlp, &mut StdRng::seed_from_u64(42))
            .unwrap()
            .0
    })
}

fn statement(p: &BakedProver, x: &[i8], output: &[i64]) -> Statement {
    Statement {
        model_commitment: p.model_commitment().to_string(),
        input: InputClaim::Plain(x.to_vec()),
        output: output.to_vec(),
    }
}

#[test]
fn baked_proofs_verify_and_tampering_is_rejected() {
    let (m, q) = model();
    let p = BakedProver::new(q.mlp.clone(), keys().clone()).unwrap();
    let v = p.verifier().unwrap();
    let x = q.input_from_pixels(&m.test.x[0]);
    let proved = p.prove_with_rng(&x, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(proved.output, q.mlp.forward(&x).unwrap());
    let env = &proved.envelope;
    assert_eq!(env.system, "groth16-bn254-baked");
    assert_eq!(env.proof.len(), 128);
    let st = statement(&p, &x, &proved.output);
    v.verify(env, &st).unwrap();

    // Tampered output: caught on the public inputs, and with those rewritten
    // by the pairing check.
    let mut bad = st.clone();
    bad.output[4] += 1;
    assert!(matches!(
        v.verify(env, &bad),
        Err(VerifierError::PublicInputMismatch(_))
    ));
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
    let mut env2 = env.clone();
    env2.public_inputs[1 + 10] = Fr::from(x[10].wrapping_add(1)).to_string();
    assert!(matches!(
        v.verify(env, &bad),
        Err(VerifierError::PublicInputMismatch(_))
    ));
    assert!(matches!(
        v.verify(&env2, &bad),
        Err(VerifierError::ProofRejected)
    ));

    // Corrupted proof bytes.
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

    // A proof of another input does not transfer.
    let x1 = q.input_from_pixels(&m.test.x[1]);
    let other = p
        .prove_with_rng(&x1, &mut StdRng::seed_from_u64(2))
        .unwrap();
    let mut env2 = env.clone();
    env2.proof = other.envelope.proof.clone();
    assert!(matches!(
        v.verify(&env2, &st),
        Err(VerifierError::ProofRejected)
    ));

    // A committed-weights verifier does not take baked envelopes.
    let shape = MlpShape::of(&q.mlp, InputMode::Public).unwrap();
    let gv = Groth16Verifier::new(shape, p.vk()).unwrap();
    assert!(matches!(
        gv.verify(env, &st),
        Err(VerifierError::UnsupportedSystem { .. })
    ));
}

#[test]
fn another_models_key_rejects_the_proof() {
    let (m, q) = model();
    let p = BakedProver::new(q.mlp.clone(), keys().clone()).unwrap();
    let x = q.input_from_pixels(&m.test.x[2]);
    let proved = p.prove_with_rng(&x, &mut StdRng::seed_from_u64(3)).unwrap();
    let st = statement(&p, &x, &proved.output);

    // Model B: the same shape, one weight changed; its own keys.
    let mut other = q.mlp.clone();
    other.layers[1].weights[3][0] = other.layers[1].weights[3][0].wrapping_add(3);
    let (pk_b, vk_b) = setup(&other, &mut StdRng::seed_from_u64(43)).unwrap();
    let shape = MlpShape::of(&q.mlp, InputMode::Public).unwrap();

    // The verifier pinned to B's key and commitment: A's statement is about
    // another model.
    let vb = BakedProver::new(other.clone(), pk_b.clone())
        .unwrap()
        .verifier()
        .unwrap();
    let mut env = proved.envelope.clone();
    env.vk_id = vb.vk_id().to_string();
    assert!(matches!(
        vb.verify(&env, &st),
        Err(VerifierError::ModelCommitmentMismatch { .. })
    ));
    // B's key wrongly pinned to A's commitment: the pairing check fails.
    let confused = BakedVerifier::new(shape, p.model_commitment(), &vk_b).unwrap();
    assert!(matches!(
        confused.verify(&env, &st),
        Err(VerifierError::ProofRejected)
    ));
    // Proving A's model with B's key fails the prover's self-check.
    let wrong = BakedProver::new(q.mlp.clone(), pk_b).unwrap();
    assert!(wrong.prove(&x).is_err());
}

/// Baked keys are cached per model beside (not instead of) the
/// committed-weights keys, and the cached key proves.
#[test]
fn baked_keys_are_cached_per_model() {
    let dir = tempfile::tempdir().unwrap();
    let cache = infernet_verifier::KeyCache::new(dir.path());
    let (m, q) = model();
    let mut rng = StdRng::seed_from_u64(21);
    let first = cache.get_or_setup_baked(&q.mlp, &mut rng).unwrap();
    assert!(first.generated);
    let again = cache.get_or_setup_baked(&q.mlp, &mut rng).unwrap();
    assert!(!again.generated, "the second call reads the cache");
    assert_eq!(again.vk_id, first.vk_id);
    assert!(cache.load(&q.mlp, InputMode::Public).unwrap().is_none());
    let p = BakedProver::new(q.mlp.clone(), again.pk).unwrap();
    let x = q.input_from_pixels(&m.test.x[0]);
    let proved = p.prove_with_rng(&x, &mut rng).unwrap();
    p.verifier()
        .unwrap()
        .verify(&proved.envelope, &statement(&p, &x, &proved.output))
        .unwrap();
}
