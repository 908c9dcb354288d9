//! The circuit's witness computation against `QuantizedMlp::forward`, and
//! circuit-level soundness: false statements leave constraints unsatisfied.

use ark_bn254::Fr;
use infernet_verifier::circuit::{check_witness, constraint_count};
use infernet_verifier::commit::commit_model;
use infernet_verifier::quant::{model_path, QuantizedDigits};
use infernet_verifier::{
    DigitsModel, InputClaim, InputMode, MlpCircuit, MlpShape, PublicValues, QLayer, QuantizedMlp,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn load(name: &str) -> (DigitsModel, QuantizedDigits) {
    let m = DigitsModel::load(model_path(name)).unwrap();
    let q = m.quantize().unwrap();
    (m, q)
}

/// Synthesize with witness; assert satisfied and that the circuit's own values
/// equal the reference forward pass (hidden layers and logits).
fn assert_witness_matches(mlp: &QuantizedMlp, x: &[i8], mode: InputMode) {
    let circuit = MlpCircuit::new(mlp, x, mode).unwrap();
    let (ok, w) = check_witness(&circuit).unwrap();
    assert!(ok, "honest witness must satisfy the circuit");
    let w = w.unwrap();
    let mut trace = mlp.forward_trace(x).unwrap();
    let logits = trace.pop().unwrap();
    assert_eq!(w.output, logits, "circuit output != forward");
    assert_eq!(w.hidden, trace, "circuit hidden activations != forward");
}

#[test]
fn witness_equals_forward_on_digits() {
    for (name, n) in [("digits-64-32-10", 24), ("digits-64-128-10", 6)] {
        let (m, q) = load(name);
        for pixels in m.test.x.iter().take(n) {
            assert_witness_matches(&q.mlp, &q.input_from_pixels(pixels), InputMode::Public);
        }
        let x = q.input_from_pixels(&m.test.x[0]);
        assert_witness_matches(&q.mlp, &x, InputMode::Committed);
    }
}

/// A random model with extreme weights/biases/shifts and random int8 inputs:
/// exercises negative accumulators, both clamps and deep stacks.
#[test]
fn witness_equals_forward_on_random_models() {
    let mut rng = StdRng::seed_from_u64(7);
    for trial in 0..12 {
        let depth = 1 + trial % 4;
        let mut dims = vec![rng.gen_range(1..6)];
        for _ in 0..depth {
            dims.push(rng.gen_range(1..6));
        }
        let layers = (0..depth)
            .map(|l| {
                let extreme = |rng: &mut StdRng| -> i8 {
                    match rng.gen_range(0..4) {
                        0 => -128,
                        1 => 127,
                        _ => rng.gen(),
                    }
                };
                QLayer {
                    weights: (0..dims[l + 1])
                        .map(|_| (0..dims[l]).map(|_| extreme(&mut rng)).collect())
                        .collect(),
                    bias: (0..dims[l + 1])
                        .map(|_| match rng.gen_range(0..5) {
                            0 => i32::MIN,
                            1 => i32::MAX,
                            2 => rng.gen(),
                            _ => rng.gen_range(-5000..5000),
                        })
                        .collect(),
                    shift: if l + 1 == depth {
                        0
                    } else {
                        rng.gen_range(0..=16)
                    },
                }
            })
            .collect();
        let mlp = QuantizedMlp::new(layers).unwrap();
        for _ in 0..4 {
            let x: Vec<i8> = (0..dims[0]).map(|_| rng.gen()).collect();
            assert_witness_matches(&mlp, &x, InputMode::Public);
        }
        let x: Vec<i8> = (0..dims[0]).map(|_| rng.gen()).collect();
        assert_witness_matches(&mlp, &x, InputMode::Committed);
        let extremes = vec![-128i8; dims[0]];
        assert_witness_matches(&mlp, &extremes, InputMode::Public);
    }
}

fn honest_public(mlp: &QuantizedMlp, x: &[i8], mode: InputMode) -> PublicValues {
    let shape = MlpShape::of(mlp, mode).unwrap();
    PublicValues::new(
        &shape,
        commit_model(mlp).unwrap(),
        &InputClaim::Plain(x.to_vec()),
        &mlp.forward(x).unwrap(),
    )
    .unwrap()
}

fn satisfied(circuit: &MlpCircuit) -> bool {
    check_witness(circuit).unwrap().0
}

#[test]
fn false_statements_are_unsatisfiable() {
    let (m, q) = load("digits-64-32-10");
    let x = q.input_from_pixels(&m.test.x[3]);
    for mode in [InputMode::Public, InputMode::Committed] {
        let honest = honest_public(&q.mlp, &x, mode);
        let circuit = MlpCircuit::new(&q.mlp, &x, mode).unwrap();
        assert!(satisfied(
            &circuit.clone().with_claimed_public(honest.clone())
        ));

        // Tampered output.
        let mut p = honest.clone();
        p.output[2] += Fr::from(1u64);
        assert!(
            !satisfied(&circuit.clone().with_claimed_public(p)),
            "{mode:?}: output"
        );

        // Tampered weights, claiming the original commitment.
        let mut bad = q.mlp.clone();
        bad.layers[0].weights[5][7] = bad.layers[0].weights[5][7].wrapping_add(1);
        let bad_circuit = MlpCircuit::new(&bad, &x, mode).unwrap();
        let mut p = honest_public(&bad, &x, mode);
        p.model_commitment = honest.model_commitment;
        assert!(
            !satisfied(&bad_circuit.with_claimed_public(p)),
            "{mode:?}: weights"
        );

        // Tampered bias, claiming the original commitment and output.
        let mut bad = q.mlp.clone();
        bad.layers[1].bias[0] += 1;
        let bad_circuit = MlpCircuit::new(&bad, &x, mode).unwrap();
        assert!(
            !satisfied(&bad_circuit.with_claimed_public(honest.clone())),
            "{mode:?}: bias"
        );

        // Tampered input: the claim names another input with the honest output.
        let mut other = x.clone();
        other[20] = other[20].wrapping_add(9);
        let p = PublicValues::new(
            &MlpShape::of(&q.mlp, mode).unwrap(),
            honest.model_commitment,
            &InputClaim::Plain(other),
            &q.mlp.forward(&x).unwrap(),
        )
        .unwrap();
        assert!(
            !satisfied(&circuit.clone().with_claimed_public(p)),
            "{mode:?}: input"
        );
    }
}

#[test]
fn constraint_counts() {
    for name in ["digits-64-32-10", "digits-64-128-10"] {
        let (_, q) = load(name);
        for mode in [InputMode::Public, InputMode::Committed] {
            let shape = MlpShape::of(&q.mlp, mode).unwrap();
            let n = constraint_count(&shape).unwrap();
            println!("{name} ({mode:?} input): {n} constraints");
            assert!(n > 0);
        }
    }
}
