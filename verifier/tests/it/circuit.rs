//! The circuit's witness computation against `QuantizedMlp::forward`, and
//! circuit-level soundness: false statements leave constraints unsatisfied,
//! and so does a change to any single private witness variable.

use ark_bn254::Fr;
use ark_ff::{One, Zero};
use ark_relations::gr1cs::{ConstraintSystem, ConstraintSystemRef};
use infernet_verifier::circuit::{check_witness, constraint_count, WitnessClasses};
use infernet_verifier::commit::commit_model;
use infernet_verifier::quant::{model_path, QuantizedDigits};
use infernet_verifier::testing::random_cnn;
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
    for (name, n) in [
        ("digits-64-32-10", 24),
        ("digits-64-128-10", 6),
        ("digits-cnn-4-8", 6),
    ] {
        let (m, q) = load(name);
        for pixels in m.test.x.iter().take(n) {
            assert_witness_matches(&q.mlp, &q.input_from_pixels(pixels), InputMode::Public);
        }
        let x = q.input_from_pixels(&m.test.x[0]);
        assert_witness_matches(&q.mlp, &x, InputMode::Committed);
    }
}

/// Random CNNs (one or two convolutions of every stride and padding, then
/// dense layers; extreme weights, biases and shifts): the circuit's witness
/// equals the forward pass in both input modes.
#[test]
fn witness_equals_forward_on_random_cnns() {
    let mut rng = StdRng::seed_from_u64(8);
    for seed in 0..16 {
        let cnn = random_cnn(seed);
        let n = cnn.input_len();
        for _ in 0..3 {
            let x: Vec<i8> = (0..n).map(|_| rng.gen()).collect();
            assert_witness_matches(&cnn, &x, InputMode::Public);
        }
        assert_witness_matches(&cnn, &vec![-128; n], InputMode::Public);
        assert_witness_matches(&cnn, &vec![127; n], InputMode::Committed);
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
                    conv: None,
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
    for name in ["digits-64-32-10", "digits-64-128-10", "digits-cnn-4-8"] {
        let (_, q) = load(name);
        for mode in [InputMode::Public, InputMode::Committed] {
            let shape = MlpShape::of(&q.mlp, mode).unwrap();
            let n = constraint_count(&shape).unwrap();
            println!("{name} ({mode:?} input): {n} constraints");
            assert!(n > 0);
        }
    }
}

/// The first unsatisfied constraint as `(predicate, index)`, by arkworks'
/// own check, evaluating every linear combination afresh from the current
/// assignment (the constraint system must have been inlined and its LC
/// cache dropped, as [`Tamperable::new`] does). Slow: a full pass.
fn first_unsatisfied(cs: &ConstraintSystemRef<Fr>) -> Option<(String, usize)> {
    let cs = cs.borrow().unwrap();
    cs.predicate_constraint_systems
        .iter()
        .find_map(|(label, p)| Some((label.to_string(), p.which_constraint_is_unsatisfied(&cs)?)))
}

/// A synthesized circuit whose private witness can be edited, and its R1CS
/// matrices (exactly what the Groth16 keys encode) to check constraint by
/// constraint: a changed witness variable can only break the constraints
/// that use it, so only those are evaluated.
struct Tamperable {
    cs: ConstraintSystemRef<Fr>,
    /// Witness classes (see `MlpCircuit::synthesize_classified`).
    runs: WitnessClasses,
    /// A, B, C, one row per constraint.
    abc: Vec<Vec<Vec<(Fr, usize)>>>,
    /// The full assignment: the instance (the constant 1 first), then the
    /// witness.
    z: Vec<Fr>,
    n_inst: usize,
    /// For every witness variable, the constraints that use it.
    uses: Vec<Vec<usize>>,
}

impl Tamperable {
    /// Synthesize `circuit` with its witness (checked satisfied), then
    /// inline its linear combinations and drop their cached values, so that
    /// arkworks' own check ([`first_unsatisfied`]) sees a changed witness.
    fn new(circuit: &MlpCircuit) -> Self {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let (_, runs) = circuit.synthesize_classified(&cs).unwrap();
        assert!(cs.is_satisfied().unwrap(), "honest witness must satisfy");
        cs.inline_all_lcs();
        cs.borrow_mut()
            .unwrap()
            .assignments
            .lc_assignment
            .truncate(1);
        let mut matrices = cs.to_matrices().unwrap();
        assert_eq!(matrices.len(), 1, "only the R1CS predicate");
        let abc = matrices.pop_first().unwrap().1;
        assert_eq!(abc.len(), 3);
        let (n_inst, n_wit) = (cs.num_instance_variables(), cs.num_witness_variables());
        let z = {
            let cs = cs.borrow().unwrap();
            let a = &cs.assignments;
            [&a.instance_assignment[..], &a.witness_assignment[..]].concat()
        };
        assert_eq!(z.len(), n_inst + n_wit);
        let mut uses = vec![Vec::new(); n_wit];
        for m in &abc {
            for (row, terms) in m.iter().enumerate() {
                for &(_, col) in terms {
                    if col >= n_inst && uses[col - n_inst].last() != Some(&row) {
                        uses[col - n_inst].push(row);
                    }
                }
            }
        }
        let t = Self {
            cs,
            runs,
            abc,
            z,
            n_inst,
            uses,
        };
        assert!((0..t.abc[0].len()).all(|r| t.holds(r)), "honest R1CS");
        t
    }

    fn holds(&self, row: usize) -> bool {
        let dot = |m: &Vec<Vec<(Fr, usize)>>| -> Fr {
            m[row].iter().map(|(c, col)| *c * self.z[*col]).sum()
        };
        dot(&self.abc[0]) * dot(&self.abc[1]) == dot(&self.abc[2])
    }

    fn witness(&self, i: usize) -> Fr {
        self.z[self.n_inst + i]
    }

    /// With witness `i` set to `v`: the first constraint that fails, if
    /// any. `full`: also run arkworks' own check and require it to agree.
    fn broken_by(&mut self, i: usize, v: Fr, full: bool) -> Option<usize> {
        let honest = self.witness(i);
        self.z[self.n_inst + i] = v;
        let broken = self.uses[i].iter().copied().find(|r| !self.holds(*r));
        self.z[self.n_inst + i] = honest;
        if full {
            let set = |v| self.cs.borrow_mut().unwrap().assignments.witness_assignment[i] = v;
            set(v);
            let ark = first_unsatisfied(&self.cs);
            set(honest);
            assert_eq!(ark.is_some(), broken.is_some(), "arkworks' check disagrees");
        }
        broken
    }
}

/// Soundness against a malicious prover's *private* witness: for every
/// class of witness variable the circuit allocates, changing one variable
/// (first, middle, last and random ones; to `v + 1`, `v - 1`, `0`, `p - 1`)
/// leaves a constraint unsatisfied. A class that is under-constrained (a
/// range-check bit, a requantisation bit, a ReLU selector, a product, a
/// Poseidon state that could change alone) fails here, although public-value
/// tampering (`false_statements_are_unsatisfiable`) cannot see it.
///
/// The one free witness is the ReLU's inverse hint `inv` where `t = 0` (`q`
/// below 128, honest `inv = 0`): there `big = t * inv = 0` whatever `inv`
/// is, so `big`, `y` and the statement are unchanged (the usual is-zero
/// gadget); where `t != 0` it is bound (`t * inv = big = 1`).
#[test]
fn tampering_any_private_witness_variable_is_unsatisfiable() {
    let (m, q) = load("digits-64-32-10");
    let x = q.input_from_pixels(&m.test.x[3]);
    let mut rng = StdRng::seed_from_u64(14);
    for mode in [InputMode::Public, InputMode::Committed] {
        let t = std::time::Instant::now();
        let mut c = Tamperable::new(&MlpCircuit::new(&q.mlp, &x, mode).unwrap());
        let n = c.uses.len();

        // The runs name every witness variable exactly once, in order.
        let mut next = 0;
        for (_, r) in &c.runs {
            assert_eq!(r.start, next, "{mode:?}: unclassified witnesses");
            next = r.end;
        }
        assert_eq!(next, n, "{mode:?}: unclassified witnesses at the end");
        let mut classes: Vec<&str> = c.runs.iter().map(|(c, _)| *c).collect();
        classes.sort_unstable();
        classes.dedup();
        let mut expected = vec![
            "bias_bits",
            "model_poseidon",
            "product",
            "relu_big",
            "relu_inv",
            "relu_m",
            "relu_y",
            "requant_bits",
            "weight_bits",
        ];
        if mode == InputMode::Committed {
            expected.extend(["input_bits", "input_poseidon"]);
            expected.sort_unstable();
        }
        assert_eq!(classes, expected, "{mode:?}: witness classes");

        let mut report = Vec::new();
        for class in &classes {
            let vars: Vec<usize> = c
                .runs
                .iter()
                .filter(|(c, _)| c == class)
                .flat_map(|(_, r)| r.clone())
                .collect();
            let mut picks = vec![0, vars.len() / 2, vars.len() - 1];
            picks.extend((0..5).map(|_| rng.gen_range(0..vars.len())));
            if *class == "relu_inv" {
                // Both kinds of neuron: q >= 128 (inv bound) and not (free).
                let honest_zero = |k: &usize| c.witness(vars[*k]) == Fr::zero();
                let all: Vec<usize> = (0..vars.len()).collect();
                picks.extend(all.iter().find(|k| honest_zero(k)));
                picks.extend(all.iter().find(|k| !honest_zero(k)));
            }
            picks.sort_unstable();
            picks.dedup();
            let (mut tampers, mut free) = (0, 0);
            for k in picks {
                let i = vars[k];
                let honest = c.witness(i);
                let mut bad = vec![
                    honest + Fr::one(),
                    honest - Fr::one(),
                    Fr::zero(),
                    -Fr::one(),
                ];
                bad.sort_unstable();
                bad.dedup();
                for v in bad.into_iter().filter(|v| *v != honest) {
                    // arkworks' own check must agree (slow: once on a bit
                    // seen only through linear combinations, once on a
                    // tamper that satisfies).
                    let full = mode == InputMode::Public
                        && ((*class == "weight_bits" && tampers == 0)
                            || (*class == "relu_inv" && honest == Fr::zero() && free == 0));
                    let broken = c.broken_by(i, v, full);
                    tampers += 1;
                    if *class == "relu_inv" && honest == Fr::zero() {
                        assert_eq!(broken, None, "{mode:?}: inv is free where t = 0");
                        free += 1;
                        continue;
                    }
                    assert!(
                        broken.is_some(),
                        "{mode:?}: {class} witness #{i} (the {k}th of {}) changed from {honest} \
                         to {v} still satisfies every constraint",
                        vars.len()
                    );
                }
            }
            report.push(format!(
                "{class}: {tampers} tampers ({free} free) of {}",
                vars.len()
            ));
        }
        assert_eq!(first_unsatisfied(&c.cs), None, "witness restored");
        println!(
            "{mode:?} input, {n} witnesses, {} ms: {}",
            t.elapsed().as_millis(),
            report.join("; ")
        );
    }
}
