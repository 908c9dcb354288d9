//! R1CS circuit for quantized MLP and CNN inference: proves `y = f(x; W)`
//! for a [`QuantizedMlp`] of any depth (dense and convolution layers), with
//! a public Poseidon commitment to `W`.
//!
//! # Public inputs (in this order)
//!
//! 1. the model commitment ([`crate::commit::commit_model`]);
//! 2. [`InputMode::Public`]: the `dims[0]` input values; [`InputMode::Committed`]:
//!    one element, [`crate::commit::commit_input`] of the input;
//! 3. the `dims[last]` output logits.
//!
//! Signed integers are encoded as field elements `v mod p`.
//!
//! # Constraints
//!
//! * Every weight is a linear combination of 8 boolean witnesses
//!   (`w + 128`, 8 constraints); every bias of 32 (`b + 2^31`). These limbs are
//!   packed into field elements for free (linear combinations) and hashed with
//!   the Poseidon gadget; the digest must equal public input 1. The range
//!   checks are what make the packing, hence the commitment, binding.
//! * Matmul: one multiplication constraint per weight x activation product
//!   (per tap of a convolution: its weights are shared, its products not);
//!   the accumulator (plus bias) is a free linear combination.
//! * Hidden layers: `z = acc + round + 2^A` is decomposed into `A + 1` bits
//!   (`A` is the smallest exponent with `2^A > fan_in * 2^14 + 2^31 + 2^shift`, a
//!   bound on `|acc + round|` for any int8 weights/inputs and int32 bias); the
//!   low `shift` bits are the remainder `r` (so `0 <= r < 2^shift`), the rest is
//!   `q + 2^(A - shift)` with `q = (acc + round) >> shift`. Its top bit is the
//!   sign of `q`; bits `[shift, shift+7)` give `q mod 128`; the OR of the bits in
//!   between says `q >= 128`. ReLU + clamp to `[0, 127]` costs 4 more
//!   constraints, and the result is in `[0, 127]` by construction, so the next
//!   layer needs no range check on it. The last bit of the decomposition is
//!   the leftover linear combination, so the decomposition itself needs no
//!   equality constraint.
//! * Output: one constraint per logit binds the accumulator to the public
//!   output.
//! * Inputs: public inputs are encoded by the verifier from int8 values, so
//!   they need no range check; committed inputs are 8 boolean witnesses each,
//!   packed 31 per element and hashed to the public input commitment.

use ark_bn254::Fr;
use ark_crypto_primitives::sponge::{
    constraints::CryptographicSpongeVar, poseidon::constraints::PoseidonSpongeVar,
};
use ark_ff::{Field, One, Zero};
use ark_r1cs_std::{
    eq::EqGadget,
    fields::fp::{AllocatedFp, FpVar},
};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, ConstraintSystemRef, LinearCombination,
    SynthesisError, SynthesisMode, Variable,
};
use serde::{Deserialize, Serialize};
use std::{cell::RefCell, rc::Rc};

use crate::commit::{
    commit_input, commit_model, domain_tag, model_header, poseidon_config, BIASES_PER_ELEM,
    BIAS_BITS, INPUTS_PER_ELEM, INPUT_BITS, INPUT_DOMAIN, WEIGHTS_PER_ELEM, WEIGHT_BITS,
};
use crate::conv::{check_layer, layer_dims, layer_taps, Conv2d};
use crate::envelope::InputClaim;
use crate::error::{Result, VerifierError};
use crate::quant::{QuantizedMlp, MAX_SHIFT, MAX_WIDTH};

/// Version of the circuit layout; part of every key-cache entry.
pub const CIRCUIT_VERSION: &str = "mlp-r1cs-v1";

/// Whether the model input is a public input or only committed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    /// Every input value is a public input.
    Public,
    /// Only a Poseidon commitment to the input is public.
    Committed,
}

impl InputMode {
    /// Short name used in cache file names.
    pub fn as_str(&self) -> &'static str {
        match self {
            InputMode::Public => "public",
            InputMode::Committed => "committed",
        }
    }
}

/// Everything the circuit's *structure* depends on (keys are per shape).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MlpShape {
    /// Layer widths, input first.
    pub dims: Vec<usize>,
    /// Per-layer shifts (last is 0).
    pub shifts: Vec<u32>,
    /// Input visibility.
    pub input_mode: InputMode,
    /// Per-layer convolution geometry (`None`: dense); empty for an MLP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub convs: Vec<Option<Conv2d>>,
}

impl MlpShape {
    /// The shape of a model.
    pub fn of(mlp: &QuantizedMlp, input_mode: InputMode) -> Result<Self> {
        mlp.validate()?;
        Ok(Self {
            dims: mlp.dims(),
            shifts: mlp.shifts(),
            input_mode,
            convs: mlp.convs(),
        })
    }

    /// Check consistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(VerifierError::InvalidModel(format!("shape: {m}")));
        if self.dims.len() < 2 || self.shifts.len() + 1 != self.dims.len() {
            return bad("need at least one layer and one shift per layer");
        }
        if self.dims.iter().any(|d| *d == 0 || *d > MAX_WIDTH) {
            return bad("layer width out of range");
        }
        if self.shifts.iter().any(|s| *s > MAX_SHIFT) || self.shifts.last() != Some(&0) {
            return bad("shift out of range or last shift not 0");
        }
        if !self.convs.is_empty() && self.convs.len() != self.shifts.len() {
            return bad("one conv entry per layer, or none");
        }
        for l in 0..self.num_layers() {
            let (rows, cols) = self.weight_shape(l);
            check_layer(self.conv(l).as_ref(), rows, cols)
                .map_err(|m| VerifierError::InvalidModel(format!("shape: layer {l}: {m}")))?;
            if layer_dims(self.conv(l).as_ref(), rows, cols) != (self.dims[l], self.dims[l + 1]) {
                return bad("a convolution's input or output length differs from dims");
            }
        }
        Ok(())
    }

    /// Layer `l`'s convolution, if it is one.
    pub fn conv(&self, l: usize) -> Option<Conv2d> {
        self.convs.get(l).copied().flatten()
    }

    /// Layer `l`'s weight matrix `(rows, columns)`.
    pub fn weight_shape(&self, l: usize) -> (usize, usize) {
        match self.conv(l) {
            Some(c) => (c.out_channels, c.fan_in()),
            None => (self.dims[l + 1], self.dims[l]),
        }
    }

    /// Layer `l`'s output `o`: its weight row and `(column, input)` taps.
    pub fn taps(&self, l: usize, o: usize) -> (usize, Vec<(usize, usize)>) {
        layer_taps(self.conv(l).as_ref(), self.weight_shape(l).1, o)
    }

    /// Number of public inputs (excluding the constant 1).
    pub fn num_public_inputs(&self) -> usize {
        let input = match self.input_mode {
            InputMode::Public => self.dims[0],
            InputMode::Committed => 1,
        };
        1 + input + self.dims[self.dims.len() - 1]
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.shifts.len()
    }
}

/// `A` for a hidden layer: the smallest exponent with
/// `2^A > in * 2^14 + 2^31 + 2^shift` (so `|acc + round| < 2^A`).
pub fn requant_bound_exp(in_dim: usize, shift: u32) -> u32 {
    let bound = (in_dim as u128) * (1 << 14) + (1u128 << 31) + (1u128 << shift);
    128 - bound.leading_zeros()
}

/// The public inputs of one statement, in circuit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicValues {
    /// Model commitment.
    pub model_commitment: Fr,
    /// Input values (public mode) or `[input commitment]` (committed mode).
    pub input: Vec<Fr>,
    /// Output logits.
    pub output: Vec<Fr>,
}

impl PublicValues {
    /// Build from a model commitment, an input claim and an output, checking
    /// them against the shape.
    pub fn new(
        shape: &MlpShape,
        model_commitment: Fr,
        input: &InputClaim,
        output: &[i64],
    ) -> Result<Self> {
        let n_in = shape.dims[0];
        let n_out = shape.dims[shape.dims.len() - 1];
        if output.len() != n_out {
            return Err(VerifierError::InvalidInput(format!(
                "output has {} values, model has {n_out}",
                output.len()
            )));
        }
        let input = match (shape.input_mode, input) {
            (_, InputClaim::Plain(x)) if x.len() != n_in => {
                return Err(VerifierError::InvalidInput(format!(
                    "input has {} values, model expects {n_in}",
                    x.len()
                )))
            }
            (InputMode::Public, InputClaim::Plain(x)) => x.iter().map(|v| Fr::from(*v)).collect(),
            (InputMode::Public, InputClaim::Commitment(_)) => {
                return Err(VerifierError::InvalidInput(
                    "public-input circuit needs the plain input, not a commitment".into(),
                ))
            }
            (InputMode::Committed, InputClaim::Plain(x)) => vec![commit_input(x)],
            (InputMode::Committed, InputClaim::Commitment(c)) => {
                vec![crate::commit::fr_from_hex(c)?]
            }
        };
        Ok(Self {
            model_commitment,
            input,
            output: output.iter().map(|v| Fr::from(*v)).collect(),
        })
    }

    /// All public inputs in circuit order.
    pub fn to_vec(&self) -> Vec<Fr> {
        let mut v = vec![self.model_commitment];
        v.extend(&self.input);
        v.extend(&self.output);
        v
    }
}

#[derive(Clone, Debug)]
struct Witness {
    mlp: QuantizedMlp,
    input: Vec<i8>,
    model_commitment: Fr,
}

/// The MLP inference circuit. Build with [`MlpCircuit::for_setup`] (no
/// witness, for key generation) or [`MlpCircuit::new`] (for proving).
#[derive(Clone, Debug)]
pub struct MlpCircuit {
    shape: MlpShape,
    witness: Option<Witness>,
    claimed: Option<PublicValues>,
}

/// Result of synthesizing with a witness: the circuit's own computed values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthesizedWitness {
    /// Output logits as computed by the circuit's witness generation.
    pub output: Vec<i64>,
    /// Hidden activations per hidden layer, as computed in-circuit.
    pub hidden: Vec<Vec<i64>>,
}

pub(crate) type Lc = LinearCombination<Fr>;

pub(crate) fn lc_var(v: Variable) -> Lc {
    LinearCombination(vec![(Fr::one(), v)])
}

pub(crate) fn lc_const(c: Fr) -> Lc {
    LinearCombination(vec![(c, Variable::One)])
}

pub(crate) fn pow2(k: u32) -> Fr {
    Fr::from(2u64).pow([u64::from(k)])
}

pub(crate) fn fr_i128(v: i128) -> Fr {
    Fr::from(v)
}

pub(crate) fn missing<T>(v: Option<T>) -> impl FnOnce() -> std::result::Result<T, SynthesisError> {
    move || v.ok_or(SynthesisError::AssignmentMissing)
}

/// Low-level helpers over a constraint system.
#[derive(Clone)]
struct Builder {
    cs: ConstraintSystemRef<Fr>,
    /// When set (soundness tests only, see [`MlpCircuit::synthesize_classified`]):
    /// `(class, first witness index)` marks, in allocation order.
    classes: Option<Rc<RefCell<ClassMarks>>>,
}

type ClassMarks = Vec<(&'static str, usize)>;

/// Runs of private witness indices and what they are, see
/// [`MlpCircuit::synthesize_classified`].
pub type WitnessClasses = Vec<(&'static str, std::ops::Range<usize>)>;

impl Builder {
    /// The witnesses allocated from here on (until the next mark) are of
    /// `class`. No effect on the constraints; a no-op unless classes are kept.
    fn class(&self, class: &'static str) {
        if let Some(marks) = &self.classes {
            marks
                .borrow_mut()
                .push((class, self.cs.num_witness_variables()));
        }
    }

    fn witness(&self, v: Option<Fr>) -> std::result::Result<Variable, SynthesisError> {
        self.cs.new_witness_variable(missing(v))
    }

    fn enforce(&self, a: Lc, b: Lc, c: Lc) -> std::result::Result<(), SynthesisError> {
        self.cs.enforce_r1cs_constraint(|| a, || b, || c)
    }

    /// `x * (1 - x) = 0`.
    fn enforce_bool(&self, x: &Lc) -> std::result::Result<(), SynthesisError> {
        let mut one_minus = lc_const(Fr::one());
        for (c, v) in &x.0 {
            one_minus.0.push((-*c, *v));
        }
        self.enforce(x.clone(), one_minus, Lc::zero())
    }

    /// `n` boolean witnesses holding `value` (little-endian).
    fn bits(
        &self,
        value: Option<u128>,
        n: u32,
    ) -> std::result::Result<Vec<Variable>, SynthesisError> {
        (0..n)
            .map(|k| {
                let b = self.witness(value.map(|v| Fr::from(((v >> k) & 1) as u64)))?;
                self.enforce_bool(&lc_var(b))?;
                Ok(b)
            })
            .collect()
    }

    /// A field variable standing for a linear combination (no constraint).
    fn fp_from_lc(
        &self,
        lc: Lc,
        value: Option<Fr>,
    ) -> std::result::Result<FpVar<Fr>, SynthesisError> {
        let v = self.cs.new_lc(|| lc)?;
        Ok(FpVar::Var(AllocatedFp::new(value, v, self.cs.clone())))
    }

    /// Pack limbs (each a little-endian bit list of `bits` bits) `per_elem`
    /// per field element, as free linear combinations.
    fn pack(
        &self,
        limbs: &[(Vec<Variable>, Option<u64>)],
        bits: u32,
        per_elem: usize,
    ) -> std::result::Result<Vec<FpVar<Fr>>, SynthesisError> {
        let two = Fr::from(2u64);
        limbs
            .chunks(per_elem)
            .map(|chunk| {
                let mut lc = Lc::zero();
                let mut val = Some(Fr::zero());
                let mut scale = Fr::one();
                let limb_scale = pow2(bits);
                let mut limb_base = Fr::one();
                for (limb_bits, limb_val) in chunk {
                    for b in limb_bits {
                        lc.0.push((scale, *b));
                        scale *= two;
                    }
                    val = val
                        .zip(*limb_val)
                        .map(|(acc, l)| acc + limb_base * Fr::from(l));
                    limb_base *= limb_scale;
                }
                self.fp_from_lc(lc, val)
            })
            .collect()
    }

    fn poseidon(&self, elems: &[FpVar<Fr>]) -> std::result::Result<FpVar<Fr>, SynthesisError> {
        let mut sponge = PoseidonSpongeVar::new(self.cs.clone(), poseidon_config());
        sponge.absorb(&elems.to_vec())?;
        let mut out = sponge.squeeze_field_elements(1)?;
        out.pop().ok_or(SynthesisError::Unsatisfiable)
    }
}

/// An int8 value as (bits of `v + 2^(bits-1)`, linear combination for `v`).
fn signed_limb(
    b: &Builder,
    value: Option<i64>,
    bits: u32,
) -> std::result::Result<(Vec<Variable>, Option<u64>, Lc), SynthesisError> {
    let offset = 1i64 << (bits - 1);
    let limb = value.map(|v| (v + offset) as u64);
    let vars = b.bits(limb.map(u128::from), bits)?;
    let mut lc = lc_const(-Fr::from(offset));
    for (k, v) in vars.iter().enumerate() {
        lc.0.push((pow2(k as u32), *v));
    }
    Ok((vars, limb, lc))
}

impl MlpCircuit {
    /// A witness-less circuit for key generation.
    pub fn for_setup(shape: MlpShape) -> Result<Self> {
        shape.validate()?;
        Ok(Self {
            shape,
            witness: None,
            claimed: None,
        })
    }

    /// A circuit with witness (model and input) for proving. Public inputs are
    /// the honest ones unless overridden with [`Self::with_claimed_public`].
    pub fn new(mlp: &QuantizedMlp, input: &[i8], input_mode: InputMode) -> Result<Self> {
        let shape = MlpShape::of(mlp, input_mode)?;
        if input.len() != shape.dims[0] {
            return Err(VerifierError::InvalidInput(format!(
                "input has {} values, model expects {}",
                input.len(),
                shape.dims[0]
            )));
        }
        let model_commitment = commit_model(mlp)?;
        Ok(Self {
            shape,
            witness: Some(Witness {
                mlp: mlp.clone(),
                input: input.to_vec(),
                model_commitment,
            }),
            claimed: None,
        })
    }

    /// Replace the public inputs by `claimed` (an honest prover never does
    /// this; soundness tests use it to show false statements are unsatisfiable).
    pub fn with_claimed_public(mut self, claimed: PublicValues) -> Self {
        self.claimed = Some(claimed);
        self
    }

    /// The circuit's shape.
    pub fn shape(&self) -> &MlpShape {
        &self.shape
    }

    /// Generate constraints and (when there is a witness) the assignment;
    /// returns the circuit's own computed output and hidden activations.
    pub fn synthesize(
        &self,
        cs: &ConstraintSystemRef<Fr>,
    ) -> std::result::Result<Option<SynthesizedWitness>, SynthesisError> {
        let b = Builder {
            cs: cs.clone(),
            classes: None,
        };
        self.synthesize_with(b)
    }

    /// [`Self::synthesize`], also naming what every private witness variable
    /// is: `(class, witness indices)` runs covering `0..num_witness_variables`
    /// in order (a class can have several runs). For soundness tests that
    /// tamper with the witness; the constraints are exactly those of
    /// [`Self::synthesize`]. Classes: `input_bits`, `input_poseidon`,
    /// `weight_bits`, `bias_bits`, `model_poseidon` (the Poseidon gadget's
    /// internal witnesses), `product`, `requant_bits`, `relu_big`,
    /// `relu_inv`, `relu_m`, `relu_y`.
    #[doc(hidden)]
    pub fn synthesize_classified(
        &self,
        cs: &ConstraintSystemRef<Fr>,
    ) -> std::result::Result<(Option<SynthesizedWitness>, WitnessClasses), SynthesisError> {
        let marks = Rc::new(RefCell::new(Vec::new()));
        let b = Builder {
            cs: cs.clone(),
            classes: Some(marks.clone()),
        };
        let w = self.synthesize_with(b)?;
        let marks = marks.take();
        let ends = marks
            .iter()
            .skip(1)
            .map(|m| m.1)
            .chain([cs.num_witness_variables()]);
        let mut runs = WitnessClasses::new();
        for ((class, start), end) in marks.iter().zip(ends) {
            match runs.last_mut() {
                Some((c, r)) if c == class && r.end == *start => r.end = end,
                _ if *start < end => runs.push((class, *start..end)),
                _ => {}
            }
        }
        Ok((w, runs))
    }

    fn synthesize_with(
        &self,
        b: Builder,
    ) -> std::result::Result<Option<SynthesizedWitness>, SynthesisError> {
        let cs = &b.cs;
        let shape = &self.shape;
        let wit = self.witness.as_ref();
        let claimed = self.claimed.as_ref();
        let n_layers = shape.num_layers();
        let n_in = shape.dims[0];
        let n_out = shape.dims[n_layers];

        // 1. Model commitment (public).
        let commit_val = claimed
            .map(|c| c.model_commitment)
            .or(wit.map(|w| w.model_commitment));
        let commit_var = cs.new_input_variable(missing(commit_val))?;

        // 2. Input.
        // Activation values used for witness generation (i128 avoids any
        // overflow even with garbage claimed values).
        let mut a_val: Vec<Option<i128>> = Vec::with_capacity(n_in);
        let mut a_lc: Vec<Lc> = Vec::with_capacity(n_in);
        match shape.input_mode {
            InputMode::Public => {
                for i in 0..n_in {
                    let v_fr = match claimed {
                        Some(c) => c.input.get(i).copied(),
                        None => wit.map(|w| Fr::from(w.input[i])),
                    };
                    let var = cs.new_input_variable(missing(v_fr))?;
                    // The witness value the computation continues with: the
                    // public value, read back as a small signed integer.
                    let v = match claimed {
                        Some(c) => c.input.get(i).map(fr_to_small),
                        None => wit.map(|w| i128::from(w.input[i])),
                    };
                    a_val.push(v);
                    a_lc.push(lc_var(var));
                }
            }
            InputMode::Committed => {
                let c_val = match claimed {
                    Some(c) => c.input.first().copied(),
                    None => wit.map(|w| commit_input(&w.input)),
                };
                let c_var = cs.new_input_variable(missing(c_val))?;
                let mut limbs = Vec::with_capacity(n_in);
                for i in 0..n_in {
                    let v = wit.map(|w| i64::from(w.input[i]));
                    b.class("input_bits");
                    let (vars, limb, lc) = signed_limb(&b, v, INPUT_BITS)?;
                    limbs.push((vars, limb));
                    a_val.push(v.map(i128::from));
                    a_lc.push(lc);
                }
                let mut elems = vec![
                    FpVar::Constant(domain_tag(INPUT_DOMAIN)),
                    FpVar::Constant(Fr::from(n_in as u64)),
                ];
                elems.extend(b.pack(&limbs, INPUT_BITS, INPUTS_PER_ELEM)?);
                b.class("input_poseidon");
                let digest = b.poseidon(&elems)?;
                digest.enforce_equal(&FpVar::Var(AllocatedFp::new(c_val, c_var, cs.clone())))?;
            }
        }

        // 3. Weights and biases: range-checked limbs, packed and hashed.
        let mut w_lc: Vec<Vec<Vec<Lc>>> = Vec::with_capacity(n_layers);
        let mut w_val: Vec<Vec<Vec<Option<i128>>>> = Vec::with_capacity(n_layers);
        let mut w_limbs = Vec::new();
        for l in 0..n_layers {
            let (rows, cols) = shape.weight_shape(l);
            let mut rows_lc = Vec::with_capacity(rows);
            let mut rows_val = Vec::with_capacity(rows);
            for o in 0..rows {
                let mut row_lc = Vec::with_capacity(cols);
                let mut row_val = Vec::with_capacity(cols);
                for i in 0..cols {
                    let v = wit.map(|w| i64::from(w.mlp.layers[l].weights[o][i]));
                    b.class("weight_bits");
                    let (vars, limb, lc) = signed_limb(&b, v, WEIGHT_BITS)?;
                    w_limbs.push((vars, limb));
                    row_lc.push(lc);
                    row_val.push(v.map(i128::from));
                }
                rows_lc.push(row_lc);
                rows_val.push(row_val);
            }
            w_lc.push(rows_lc);
            w_val.push(rows_val);
        }
        let mut b_lc: Vec<Vec<Lc>> = Vec::with_capacity(n_layers);
        let mut b_val: Vec<Vec<Option<i128>>> = Vec::with_capacity(n_layers);
        let mut b_limbs = Vec::new();
        for l in 0..n_layers {
            let rows = shape.weight_shape(l).0;
            let mut lcs = Vec::with_capacity(rows);
            let mut vals = Vec::with_capacity(rows);
            for o in 0..rows {
                let v = wit.map(|w| i64::from(w.mlp.layers[l].bias[o]));
                b.class("bias_bits");
                let (vars, limb, lc) = signed_limb(&b, v, BIAS_BITS)?;
                b_limbs.push((vars, limb));
                lcs.push(lc);
                vals.push(v.map(i128::from));
            }
            b_lc.push(lcs);
            b_val.push(vals);
        }
        let mut elems: Vec<FpVar<Fr>> = model_header(&shape.dims, &shape.shifts, &shape.convs)
            .into_iter()
            .map(FpVar::Constant)
            .collect();
        elems.extend(b.pack(&w_limbs, WEIGHT_BITS, WEIGHTS_PER_ELEM)?);
        elems.extend(b.pack(&b_limbs, BIAS_BITS, BIASES_PER_ELEM)?);
        drop(w_limbs);
        drop(b_limbs);
        b.class("model_poseidon");
        let digest = b.poseidon(&elems)?;
        digest.enforce_equal(&FpVar::Var(AllocatedFp::new(
            commit_val,
            commit_var,
            cs.clone(),
        )))?;

        // 4. Layers.
        let mut hidden = Vec::new();
        let mut output = Vec::with_capacity(n_out);
        for l in 0..n_layers {
            let last = l + 1 == n_layers;
            let d_out = shape.dims[l + 1];
            let fan_in = shape.weight_shape(l).1;
            let shift = shape.shifts[l];
            let mut next_lc = Vec::with_capacity(d_out);
            let mut next_val = Vec::with_capacity(d_out);
            for o in 0..d_out {
                let (row, taps) = shape.taps(l, o);
                let mut acc_lc = b_lc[l][row].clone();
                let mut acc_val = b_val[l][row];
                for (col, i) in taps {
                    let p_val = w_val[l][row][col].zip(a_val[i]).map(|(w, a)| w * a);
                    b.class("product");
                    let p = b.witness(p_val.map(fr_i128))?;
                    b.enforce(w_lc[l][row][col].clone(), a_lc[i].clone(), lc_var(p))?;
                    acc_lc.0.push((Fr::one(), p));
                    acc_val = acc_val.zip(p_val).map(|(x, y)| x + y);
                }
                if last {
                    let y_fr = match claimed {
                        Some(c) => c.output.get(o).copied(),
                        None => acc_val.map(fr_i128),
                    };
                    let y = cs.new_input_variable(missing(y_fr))?;
                    b.enforce(acc_lc, lc_const(Fr::one()), lc_var(y))?;
                    output.push(acc_val);
                } else {
                    let (y_lc, y_val) = requant_relu(&b, acc_lc, acc_val, fan_in, shift)?;
                    next_lc.push(y_lc);
                    next_val.push(y_val);
                }
            }
            if !last {
                hidden.push(next_val.clone());
                a_lc = next_lc;
                a_val = next_val;
            }
        }

        if wit.is_none() {
            return Ok(None);
        }
        let to_i64 = |v: &Option<i128>| v.and_then(|x| i64::try_from(x).ok());
        let output: Option<Vec<i64>> = output.iter().map(to_i64).collect();
        let hidden: Option<Vec<Vec<i64>>> = hidden
            .iter()
            .map(|h| h.iter().map(to_i64).collect())
            .collect();
        Ok(output
            .zip(hidden)
            .map(|(output, hidden)| SynthesizedWitness { output, hidden }))
    }
}

/// A field element read back as a small signed integer (`v` or `v - p`);
/// values that are neither are returned as a huge sentinel.
pub(crate) fn fr_to_small(f: &Fr) -> i128 {
    use ark_ff::PrimeField;
    let pos = f.into_bigint();
    let neg = (-*f).into_bigint();
    let small = |b: &<Fr as PrimeField>::BigInt| -> Option<i128> {
        if b.0[2] == 0 && b.0[3] == 0 && b.0[1] < (1 << 62) {
            Some((i128::from(b.0[1]) << 64) | i128::from(b.0[0]))
        } else {
            None
        }
    };
    small(&pos)
        .or_else(|| small(&neg).map(|v| -v))
        .unwrap_or(1i128 << 120)
}

/// Requantise + ReLU + clamp of one hidden accumulator (see module docs).
fn requant_relu(
    b: &Builder,
    acc_lc: Lc,
    acc_val: Option<i128>,
    in_dim: usize,
    shift: u32,
) -> std::result::Result<(Lc, Option<i128>), SynthesisError> {
    let a = requant_bound_exp(in_dim, shift);
    let n = a + 1;
    let round: i128 = if shift == 0 { 0 } else { 1 << (shift - 1) };
    let offset = round + (1i128 << a);
    // z = acc + round + 2^A, honest values lie in [0, 2^n).
    let z_val = acc_val.map(|v| v + offset);
    let z_bits_val = z_val.map(|z| (z.rem_euclid(1i128 << n)) as u128);
    // Bits 0..n-1 are witnesses; bit n-1 (the sign of q) is the leftover.
    b.class("requant_bits");
    let low_bits = b.bits(z_bits_val, n - 1)?;
    let mut top = acc_lc;
    top.0.push((fr_i128(offset), Variable::One));
    for (k, v) in low_bits.iter().enumerate() {
        top.0.push((-pow2(k as u32), *v));
    }
    let inv_top = pow2(n - 1)
        .inverse()
        .ok_or(SynthesisError::DivisionByZero)?;
    for t in top.0.iter_mut() {
        t.0 *= inv_top;
    }
    b.enforce_bool(&top)?;
    let sign_lc = top;
    let bit_val = |k: u32| z_bits_val.map(|z| ((z >> k) & 1) as i128);
    let sign_val = bit_val(a);

    // q's low 7 bits (fewer if q's range is smaller) and the rest.
    let q_bits = a - shift; // q + 2^(A-shift) has q_bits bits below the sign
    let low_n = q_bits.min(7);
    let mut low_lc = Lc::zero();
    let mut low_val = Some(0i128);
    for k in 0..low_n {
        low_lc.0.push((pow2(k), low_bits[(shift + k) as usize]));
        low_val = low_val
            .zip(bit_val(shift + k))
            .map(|(acc, bit)| acc + (bit << k));
    }
    let big_idx: Vec<u32> = (shift + low_n..a).collect();

    // big = [q >= 128] (given q >= 0) = OR of the bits above the low 7.
    let (big_lc, big_val) = match big_idx.len() {
        0 => (Lc::zero(), Some(0i128)),
        1 => (lc_var(low_bits[big_idx[0] as usize]), bit_val(big_idx[0])),
        _ => {
            let mut t_lc = Lc::zero();
            let mut t_val = Some(0i128);
            for &k in &big_idx {
                t_lc.0.push((Fr::one(), low_bits[k as usize]));
                t_val = t_val.zip(bit_val(k)).map(|(acc, bit)| acc + bit);
            }
            let big_val = t_val.map(|t| i128::from(t != 0));
            b.class("relu_big");
            let big = b.witness(big_val.map(fr_i128))?;
            b.class("relu_inv");
            let inv = b.witness(t_val.map(|t| fr_i128(t).inverse().unwrap_or_else(Fr::zero)))?;
            // t * inv = big; t * (1 - big) = 0  =>  big = [t != 0].
            b.enforce(t_lc.clone(), lc_var(inv), lc_var(big))?;
            let mut one_minus_big = lc_const(Fr::one());
            one_minus_big.0.push((-Fr::one(), big));
            b.enforce(t_lc, one_minus_big, Lc::zero())?;
            (lc_var(big), big_val)
        }
    };

    // m = big * (127 - low); y = sign * (low + m).
    let (sum_lc, sum_val) = if big_idx.is_empty() {
        (low_lc, low_val)
    } else {
        let m_val = big_val.zip(low_val).map(|(bg, lo)| bg * (127 - lo));
        b.class("relu_m");
        let m = b.witness(m_val.map(fr_i128))?;
        let mut c127_minus_low = lc_const(Fr::from(127u64));
        for (c, v) in &low_lc.0 {
            c127_minus_low.0.push((-*c, *v));
        }
        b.enforce(big_lc, c127_minus_low, lc_var(m))?;
        let mut s = low_lc;
        s.0.push((Fr::one(), m));
        (s, low_val.zip(m_val).map(|(lo, m)| lo + m))
    };
    let y_val = sign_val.zip(sum_val).map(|(s, v)| s * v);
    b.class("relu_y");
    let y = b.witness(y_val.map(fr_i128))?;
    b.enforce(sign_lc, sum_lc, lc_var(y))?;
    Ok((lc_var(y), y_val))
}

impl ConstraintSynthesizer<Fr> for MlpCircuit {
    fn generate_constraints(
        self,
        cs: ConstraintSystemRef<Fr>,
    ) -> std::result::Result<(), SynthesisError> {
        self.synthesize(&cs).map(|_| ())
    }
}

/// Number of R1CS constraints of the circuit for `shape`.
pub fn constraint_count(shape: &MlpShape) -> Result<usize> {
    let circuit = MlpCircuit::for_setup(shape.clone())?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_mode(SynthesisMode::Setup);
    circuit.synthesize(&cs)?;
    Ok(cs.num_constraints())
}

/// Synthesize `circuit` with its witness in a fresh constraint system and
/// report whether every constraint holds, plus the circuit's computed values.
pub fn check_witness(circuit: &MlpCircuit) -> Result<(bool, Option<SynthesizedWitness>)> {
    let cs = ConstraintSystem::<Fr>::new_ref();
    let w = circuit.synthesize(&cs)?;
    let ok = cs.is_satisfied()?;
    Ok((ok, w))
}
