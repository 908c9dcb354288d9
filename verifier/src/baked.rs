//! Baked-weights mode: the same integer MLP (`crate::quant`), proved with
//! Groth16/BN254, but with the weights and biases as *circuit constants*, so
//! the keys are per model (what ezkl's default proves: its verifying key
//! commits to the weights as fixed columns). Beside it, the committed-weights
//! mode ([`crate::circuit`], [`crate::groth16`]) keeps one key pair per
//! *shape*, the weights private and Poseidon-committed.
//!
//! In the host's job flow as `proof = "groth16-baked"` (keys from the
//! node's cache, [`crate::KeyCache::get_or_setup_baked`], or a publisher's
//! bundle from `infernet zk setup --baked`); [`BakedProver`] and
//! [`BakedVerifier`] implement the same [`Prover`] / [`ProofVerifier`]
//! traits as the committed mode.
//!
//! # Public inputs (same order as the committed mode's public-input circuit)
//!
//! 1. the model commitment ([`crate::commit::commit_model`], computed outside
//!    the circuit); the circuit constrains it to the constant commitment of
//!    the baked model, so a verifying key of another model rejects the
//!    statement even if a client were handed the wrong key;
//! 2. the `dims[0]` input values (int8, encoded by the verifier, so they need
//!    no range check);
//! 3. the `dims[last]` output logits.
//!
//! **What binds the key to the model**: the key itself. The verifying key is
//! generated from the circuit with these weights, so it is model-specific; the
//! client pins it by its id (sha256 of the compressed key, [`vk_id`]) through
//! the model's publisher (`crate::bundle`'s signed statements name a vk id per
//! model) and checks the envelope's `vk_id` against it. The public commitment
//! (1.) is belt and braces: it names the model in the statement and ties the
//! key to it in-circuit for one constraint.
//!
//! # Constraints
//!
//! * The matmul is free: `acc[o] = sum_taps W[row][col] * a[i] + b[row]`
//!   (dense or convolution, [`crate::conv`]) is a linear combination of the
//!   activations with constant coefficients (zero weights are dropped).
//! * Output layer: one constraint per logit binds the accumulator to the
//!   public output.
//! * Hidden layers: requantisation + ReLU + clamp as in the committed circuit
//!   (`z = acc + round + 2^A` decomposed into `A + 1` bits, the top bit is the
//!   sign of `q`, bits `[shift, shift+7)` are `q mod 128`, an OR of the bits
//!   above says `q >= 128`), but `A` comes from the *actual* weights: the
//!   bounds of every accumulator over all valid inputs (int8 inputs, hidden
//!   activations in `[0, 127]`, or tighter when the previous layer's bound is)
//!   instead of the worst case over any int8 weights and int32 bias. So
//!   `A = shift + k` with the smallest `k` such that `q` lies in
//!   `[-2^k, 2^k)`; the `q >= 128` test is dropped when `q` can never reach
//!   128; and a unit whose `q` can never be positive is the constant 0 (no
//!   constraints). The bounds only size the decomposition: an accumulator
//!   outside them would have no decomposition, so no proof (a completeness
//!   bound, never a soundness assumption); tests check the extremes.

use ark_bn254::{Bn254, Fr};
use ark_ff::{Field, One, Zero};
use ark_groth16::{prepare_verifying_key, Groth16, PreparedVerifyingKey};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, ConstraintSystemRef, SynthesisError, SynthesisMode,
    Variable,
};
use ark_snark::SNARK;
use ark_std::rand::{CryptoRng, RngCore};

use crate::circuit::{
    fr_i128, fr_to_small, lc_const, lc_var, missing, pow2, requant_bound_exp, InputMode, Lc,
    MlpShape, PublicValues,
};
use crate::commit::{commit_model, fr_from_hex, fr_to_hex};
use crate::envelope::{InputClaim, ProofEnvelope, ProofVerifier, ProvedOutput, Prover, Statement};
use crate::error::{Result, VerifierError};
use crate::groth16::{proof_bytes, proof_from_bytes, vk_from_bytes, vk_id, Pk, Vk};
use crate::quant::QuantizedMlp;

/// Proof-system name in baked-mode envelopes (a committed-mode verifier
/// rejects them, and the reverse).
pub const SYSTEM: &str = "groth16-bn254-baked";
/// Version of the baked circuit layout.
pub const BAKED_CIRCUIT_VERSION: &str = "mlp-baked-r1cs-v1";

type SynthResult<T> = std::result::Result<T, SynthesisError>;

/// How a hidden unit is requantised, from the bounds of its accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitPlan {
    /// `q <= 0` for every valid input: the unit is the constant 0.
    Zero,
    /// Decompose `acc + round + 2^A` into `A + 1` bits; `big`: whether
    /// `q >= 128` is possible (else the clamp at 127 is dropped).
    Decompose {
        /// The exponent `A` (`shift + k`).
        a: u32,
        /// Whether `q` can reach 128.
        big: bool,
    },
}

/// Per-layer, per-unit requantisation plans of a model (hidden layers only),
/// from interval bounds over all int8 inputs.
pub fn unit_plans(mlp: &QuantizedMlp) -> Vec<Vec<UnitPlan>> {
    let mut bounds: Vec<(i128, i128)> = vec![(-128, 127); mlp.input_len()];
    let mut plans = Vec::new();
    let n = mlp.layers.len();
    for layer in &mlp.layers[..n.saturating_sub(1)] {
        let s = layer.shift;
        let round: i128 = if s == 0 { 0 } else { 1 << (s - 1) };
        let mut next = Vec::with_capacity(layer.out_dim());
        let mut plan = Vec::with_capacity(layer.out_dim());
        for o in 0..layer.out_dim() {
            let (row, taps) = layer.taps(o);
            let bias = layer.bias[row];
            let (mut lo, mut hi) = (i128::from(bias) + round, i128::from(bias) + round);
            for (col, i) in taps {
                let (w, (al, ah)) = (layer.weights[row][col], bounds[i]);
                let (x, y) = (i128::from(w) * al, i128::from(w) * ah);
                lo += x.min(y);
                hi += x.max(y);
            }
            let (q_lo, q_hi) = (lo >> s, hi >> s);
            if q_hi <= 0 {
                plan.push(UnitPlan::Zero);
                next.push((0, 0));
                continue;
            }
            // Smallest k with -2^k <= q_lo and q_hi < 2^k.
            let need = (-q_lo).max(q_hi + 1);
            let k = 128 - (need - 1).leading_zeros();
            plan.push(UnitPlan::Decompose {
                a: s + k,
                big: q_hi >= 128,
            });
            next.push((0, q_hi.min(127)));
        }
        plans.push(plan);
        bounds = next;
    }
    plans
}

/// The baked-weights MLP circuit for one model.
#[derive(Clone, Debug)]
pub struct BakedCircuit {
    mlp: QuantizedMlp,
    commitment: Fr,
    plans: Vec<Vec<UnitPlan>>,
    input: Option<Vec<i8>>,
    claimed: Option<PublicValues>,
}

/// What synthesis with a witness computed: output logits and hidden layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BakedWitness {
    /// Output logits.
    pub output: Vec<i64>,
    /// Hidden activations per hidden layer.
    pub hidden: Vec<Vec<i64>>,
}

impl BakedCircuit {
    /// A witness-less circuit for key generation (the weights are needed:
    /// they are the circuit).
    pub fn for_setup(mlp: &QuantizedMlp) -> Result<Self> {
        mlp.validate()?;
        Ok(Self {
            mlp: mlp.clone(),
            commitment: commit_model(mlp)?,
            plans: unit_plans(mlp),
            input: None,
            claimed: None,
        })
    }

    /// A circuit with its witness (the input) for proving.
    pub fn new(mlp: &QuantizedMlp, input: &[i8]) -> Result<Self> {
        let mut c = Self::for_setup(mlp)?;
        if input.len() != mlp.input_len() {
            return Err(VerifierError::InvalidInput(format!(
                "input has {} values, model expects {}",
                input.len(),
                mlp.input_len()
            )));
        }
        c.input = Some(input.to_vec());
        Ok(c)
    }

    /// Size every hidden unit's decomposition from the shape alone, as the
    /// committed-weights circuit does (`A` from [`requant_bound_exp`], the
    /// `q >= 128` test always on), instead of from the weights. For measuring
    /// what the tight bounds save (`bench_provers`); keys made from it only
    /// prove circuits made the same way.
    pub fn with_worst_case_bounds(mut self) -> Self {
        for (l, plan) in self.plans.iter_mut().enumerate() {
            let layer = &self.mlp.layers[l];
            let a = requant_bound_exp(layer.fan_in(), layer.shift);
            plan.fill(UnitPlan::Decompose { a, big: true });
        }
        self
    }

    /// Replace the public inputs by `claimed` (soundness tests only).
    pub fn with_claimed_public(mut self, claimed: PublicValues) -> Self {
        self.claimed = Some(claimed);
        self
    }

    /// The public-input shape of the statement (input mode is always public).
    pub fn shape(&self) -> Result<MlpShape> {
        MlpShape::of(&self.mlp, InputMode::Public)
    }

    /// Generate constraints and, with a witness, the assignment.
    pub fn synthesize(&self, cs: &ConstraintSystemRef<Fr>) -> SynthResult<Option<BakedWitness>> {
        let mlp = &self.mlp;
        let claimed = self.claimed.as_ref();
        let input = self.input.as_ref();
        let n_layers = mlp.layers.len();
        let witness = |v: Option<Fr>| cs.new_witness_variable(missing(v));
        let enforce = |a: Lc, b: Lc, c: Lc| cs.enforce_r1cs_constraint(|| a, || b, || c);

        // 1. Model commitment: public, equal to the baked model's.
        let c_val = claimed
            .map(|c| c.model_commitment)
            .or(Some(self.commitment));
        let c_var = cs.new_input_variable(missing(c_val))?;
        enforce(
            lc_var(c_var),
            lc_const(Fr::one()),
            lc_const(self.commitment),
        )?;

        // 2. Input.
        let mut a_lc: Vec<Lc> = Vec::with_capacity(mlp.input_len());
        let mut a_val: Vec<Option<i128>> = Vec::with_capacity(mlp.input_len());
        for i in 0..mlp.input_len() {
            let v_fr = match claimed {
                Some(c) => c.input.get(i).copied(),
                None => input.map(|x| Fr::from(x[i])),
            };
            let var = cs.new_input_variable(missing(v_fr))?;
            a_lc.push(lc_var(var));
            a_val.push(match claimed {
                Some(c) => c.input.get(i).map(fr_to_small),
                None => input.map(|x| i128::from(x[i])),
            });
        }

        // 3. Layers.
        let mut hidden = Vec::new();
        let mut output = Vec::new();
        for (l, layer) in mlp.layers.iter().enumerate() {
            let last = l + 1 == n_layers;
            let mut next_lc = Vec::with_capacity(layer.out_dim());
            let mut next_val = Vec::with_capacity(layer.out_dim());
            for o in 0..layer.out_dim() {
                let (row, taps) = layer.taps(o);
                let bias = layer.bias[row];
                let mut acc_lc = lc_const(Fr::from(bias));
                let mut acc_val = Some(i128::from(bias));
                for (col, i) in taps {
                    let w = layer.weights[row][col];
                    if w == 0 {
                        continue;
                    }
                    let wf = Fr::from(w);
                    for (c, var) in &a_lc[i].0 {
                        acc_lc.0.push((wf * c, *var));
                    }
                    acc_val = acc_val
                        .zip(a_val[i])
                        .map(|(acc, x)| acc + i128::from(w) * x);
                }
                if last {
                    let y_fr = match claimed {
                        Some(c) => c.output.get(o).copied(),
                        None => acc_val.map(fr_i128),
                    };
                    let y = cs.new_input_variable(missing(y_fr))?;
                    enforce(acc_lc, lc_const(Fr::one()), lc_var(y))?;
                    output.push(acc_val);
                    continue;
                }
                match self.plans[l][o] {
                    UnitPlan::Zero => {
                        next_lc.push(Lc::zero());
                        next_val.push(Some(0));
                    }
                    UnitPlan::Decompose { a, big } => {
                        let (y_lc, y_val) =
                            requant_relu(&witness, &enforce, acc_lc, acc_val, a, layer.shift, big)?;
                        next_lc.push(y_lc);
                        next_val.push(y_val);
                    }
                }
            }
            if !last {
                hidden.push(next_val.clone());
                a_lc = next_lc;
                a_val = next_val;
            }
        }

        if input.is_none() {
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
            .map(|(output, hidden)| BakedWitness { output, hidden }))
    }
}

/// `x * (1 - x) = 0`.
fn enforce_bool(enforce: &impl Fn(Lc, Lc, Lc) -> SynthResult<()>, x: &Lc) -> SynthResult<()> {
    let mut one_minus = lc_const(Fr::one());
    for (c, v) in &x.0 {
        one_minus.0.push((-*c, *v));
    }
    enforce(x.clone(), one_minus, Lc::zero())
}

/// Requantise + ReLU + clamp one hidden accumulator, `|acc + round| < 2^a`
/// for every valid input (see the module docs and `crate::circuit`).
fn requant_relu(
    witness: &impl Fn(Option<Fr>) -> SynthResult<Variable>,
    enforce: &impl Fn(Lc, Lc, Lc) -> SynthResult<()>,
    acc_lc: Lc,
    acc_val: Option<i128>,
    a: u32,
    shift: u32,
    need_big: bool,
) -> SynthResult<(Lc, Option<i128>)> {
    let n = a + 1;
    let round: i128 = if shift == 0 { 0 } else { 1 << (shift - 1) };
    let offset = round + (1i128 << a);
    let z_val = acc_val.map(|v| v + offset);
    let z_bits_val = z_val.map(|z| (z.rem_euclid(1i128 << n)) as u128);
    let bit_val = |k: u32| z_bits_val.map(|z| ((z >> k) & 1) as i128);
    // Bits 0..a are boolean witnesses; bit a (the sign of q) is the leftover.
    let mut low_bits = Vec::with_capacity(a as usize);
    for k in 0..a {
        let v = witness(bit_val(k).map(fr_i128))?;
        enforce_bool(enforce, &lc_var(v))?;
        low_bits.push(v);
    }
    let mut top = acc_lc;
    top.0.push((fr_i128(offset), Variable::One));
    for (k, v) in low_bits.iter().enumerate() {
        top.0.push((-pow2(k as u32), *v));
    }
    let inv_top = pow2(a).inverse().ok_or(SynthesisError::DivisionByZero)?;
    for t in top.0.iter_mut() {
        t.0 *= inv_top;
    }
    enforce_bool(enforce, &top)?;
    let sign_lc = top;
    let sign_val = bit_val(a);

    let q_bits = a - shift;
    let low_n = q_bits.min(7);
    let mut low_lc = Lc::zero();
    let mut low_val = Some(0i128);
    for k in 0..low_n {
        low_lc.0.push((pow2(k), low_bits[(shift + k) as usize]));
        low_val = low_val
            .zip(bit_val(shift + k))
            .map(|(acc, bit)| acc + (bit << k));
    }
    let big_idx: Vec<u32> = if need_big {
        (shift + low_n..a).collect()
    } else {
        Vec::new()
    };

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
            let big = witness(big_val.map(fr_i128))?;
            let inv = witness(t_val.map(|t| fr_i128(t).inverse().unwrap_or_else(Fr::zero)))?;
            enforce(t_lc.clone(), lc_var(inv), lc_var(big))?;
            let mut one_minus_big = lc_const(Fr::one());
            one_minus_big.0.push((-Fr::one(), big));
            enforce(t_lc, one_minus_big, Lc::zero())?;
            (lc_var(big), big_val)
        }
    };

    let (sum_lc, sum_val) = if big_idx.is_empty() {
        (low_lc, low_val)
    } else {
        let m_val = big_val.zip(low_val).map(|(bg, lo)| bg * (127 - lo));
        let m = witness(m_val.map(fr_i128))?;
        let mut c127_minus_low = lc_const(Fr::from(127u64));
        for (c, v) in &low_lc.0 {
            c127_minus_low.0.push((-*c, *v));
        }
        enforce(big_lc, c127_minus_low, lc_var(m))?;
        let mut s = low_lc;
        s.0.push((Fr::one(), m));
        (s, low_val.zip(m_val).map(|(lo, m)| lo + m))
    };
    let y_val = sign_val.zip(sum_val).map(|(s, v)| s * v);
    let y = witness(y_val.map(fr_i128))?;
    enforce(sign_lc, sum_lc, lc_var(y))?;
    Ok((lc_var(y), y_val))
}

impl ConstraintSynthesizer<Fr> for BakedCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> SynthResult<()> {
        self.synthesize(&cs).map(|_| ())
    }
}

/// Number of R1CS constraints of the baked circuit of `mlp`.
pub fn constraint_count(mlp: &QuantizedMlp) -> Result<usize> {
    BakedCircuit::for_setup(mlp)?.num_constraints()
}

impl BakedCircuit {
    /// Number of R1CS constraints of this circuit.
    pub fn num_constraints(&self) -> Result<usize> {
        let cs = ConstraintSystem::<Fr>::new_ref();
        cs.set_mode(SynthesisMode::Setup);
        self.synthesize(&cs)?;
        Ok(cs.num_constraints())
    }
}

/// Synthesize with the witness; whether every constraint holds, plus the
/// circuit's computed values.
pub fn check_witness(circuit: &BakedCircuit) -> Result<(bool, Option<BakedWitness>)> {
    let cs = ConstraintSystem::<Fr>::new_ref();
    let w = circuit.synthesize(&cs)?;
    Ok((cs.is_satisfied()?, w))
}

/// Generate the proving/verifying keys of one model (local toxic waste: for
/// tests and benchmarks; production needs an MPC setup per model).
pub fn setup<R: RngCore + CryptoRng>(mlp: &QuantizedMlp, rng: &mut R) -> Result<(Pk, Vk)> {
    Ok(Groth16::<Bn254>::circuit_specific_setup(
        BakedCircuit::for_setup(mlp)?,
        rng,
    )?)
}

/// Groth16 prover for one model, weights baked into its key.
pub struct BakedProver {
    mlp: QuantizedMlp,
    shape: MlpShape,
    pk: Pk,
    pvk: PreparedVerifyingKey<Bn254>,
    commitment: Fr,
    commitment_hex: String,
    vk_id: String,
}

impl BakedProver {
    /// A prover from a model and *its* proving key ([`setup`]). A key of
    /// another model with the same shape is not detected here: its proofs
    /// fail the self-check.
    pub fn new(mlp: QuantizedMlp, pk: Pk) -> Result<Self> {
        let shape = MlpShape::of(&mlp, InputMode::Public)?;
        if pk.vk.gamma_abc_g1.len() != shape.num_public_inputs() + 1 {
            return Err(VerifierError::InvalidModel(
                "proving key does not match the model shape".into(),
            ));
        }
        let commitment = commit_model(&mlp)?;
        Ok(Self {
            vk_id: vk_id(&pk.vk)?,
            pvk: prepare_verifying_key(&pk.vk),
            commitment_hex: fr_to_hex(&commitment),
            commitment,
            shape,
            mlp,
            pk,
        })
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
    pub fn verifier(&self) -> Result<BakedVerifier> {
        BakedVerifier::new(self.shape.clone(), &self.commitment_hex, &self.pk.vk)
    }

    /// Prove with an explicit RNG.
    pub fn prove_with_rng<R: RngCore + CryptoRng>(
        &self,
        input: &[i8],
        rng: &mut R,
    ) -> Result<ProvedOutput> {
        let output = self.mlp.forward(input)?;
        let circuit = BakedCircuit::new(&self.mlp, input)?;
        let proof = Groth16::<Bn254>::prove(&self.pk, circuit, rng)?;
        let inputs = PublicValues::new(
            &self.shape,
            self.commitment,
            &InputClaim::Plain(input.to_vec()),
            &output,
        )?
        .to_vec();
        if !Groth16::<Bn254>::verify_proof(&self.pvk, &proof, &inputs)? {
            return Err(VerifierError::Synthesis(
                "prover self-check failed: wrong key for this model, or circuit \
                 witness disagrees with forward()"
                    .into(),
            ));
        }
        Ok(ProvedOutput {
            output,
            envelope: ProofEnvelope {
                system: SYSTEM.to_string(),
                model_commitment: self.commitment_hex.clone(),
                public_inputs: inputs.iter().map(|f| f.to_string()).collect(),
                proof: proof_bytes(&proof)?,
                vk_id: self.vk_id.clone(),
            },
        })
    }
}

impl Prover for BakedProver {
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

/// Verifier for one model's baked key: it accepts statements about that
/// model (by commitment) only.
#[derive(Clone)]
pub struct BakedVerifier {
    shape: MlpShape,
    commitment: Fr,
    commitment_hex: String,
    pvk: PreparedVerifyingKey<Bn254>,
    vk_id: String,
}

impl BakedVerifier {
    /// A verifier from the model's shape (public input mode), its commitment
    /// (hex) and the verifying key pinned for that model.
    pub fn new(shape: MlpShape, model_commitment: &str, vk: &Vk) -> Result<Self> {
        shape.validate()?;
        if shape.input_mode != InputMode::Public {
            return Err(VerifierError::InvalidModel(
                "baked mode has public inputs only".into(),
            ));
        }
        if vk.gamma_abc_g1.len() != shape.num_public_inputs() + 1 {
            return Err(VerifierError::InvalidModel(format!(
                "verifying key has {} public inputs, shape needs {}",
                vk.gamma_abc_g1.len().saturating_sub(1),
                shape.num_public_inputs()
            )));
        }
        let commitment_hex = model_commitment.to_ascii_lowercase();
        Ok(Self {
            commitment: fr_from_hex(&commitment_hex)?,
            commitment_hex,
            shape,
            pvk: prepare_verifying_key(vk),
            vk_id: vk_id(vk)?,
        })
    }

    /// From compressed verifying-key bytes.
    pub fn from_vk_bytes(shape: MlpShape, model_commitment: &str, bytes: &[u8]) -> Result<Self> {
        Self::new(shape, model_commitment, &vk_from_bytes(bytes)?)
    }

    /// The model commitment this verifier's key is pinned to.
    pub fn model_commitment(&self) -> &str {
        &self.commitment_hex
    }
}

impl ProofVerifier for BakedVerifier {
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
        for found in [&statement.model_commitment, &envelope.model_commitment] {
            if !found.eq_ignore_ascii_case(&self.commitment_hex) {
                return Err(VerifierError::ModelCommitmentMismatch {
                    expected: self.commitment_hex.clone(),
                    found: found.clone(),
                });
            }
        }
        let public = PublicValues::new(
            &self.shape,
            self.commitment,
            &statement.input,
            &statement.output,
        )?
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
            return Err(VerifierError::PublicInputMismatch(format!(
                "public input {idx} differs"
            )));
        }
        let proof = proof_from_bytes(&envelope.proof)?;
        if Groth16::<Bn254>::verify_proof(&self.pvk, &proof, &public)? {
            Ok(())
        } else {
            Err(VerifierError::ProofRejected)
        }
    }
}
