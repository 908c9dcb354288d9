//! Poseidon commitments to quantized models and inputs (native side), shared
//! with the circuit so both hash exactly the same field elements.
//!
//! # Poseidon configuration (fixed, documented, deterministic)
//!
//! BN254 scalar field, state width 9 (rate 8, capacity 1), S-box `x^5`,
//! 8 full rounds and 63 partial rounds (the Poseidon paper's 128-bit-security
//! round numbers for a 254-bit prime and t = 9, as used by circomlib).
//! Round constants and MDS matrix come from ark-crypto-primitives'
//! `find_poseidon_ark_and_mds(254, 8, 8, 63, 0)` (the reference Grain LFSR,
//! skipping no matrices). Squeeze one element.
//!
//! # What is hashed
//!
//! Model: `[tag("infernet/mlp-model/v1"), n_layers, dims.., shifts..,
//! convs.., packed weights.., packed biases..]`. `convs` is empty for an MLP
//! (so MLP commitments are those of before convolutions existed); for a
//! network with a convolution it is, per layer, `0` (dense) or `1` followed
//! by the seven integers of [`Conv2d::header`]. Weights are streamed layer by
//! layer, row-major (`[row][col]`), as bytes `w + 128` (0..=255) packed 31 per field
//! element little-endian (`sum_j byte_j * 256^j`); biases are streamed layer by
//! layer as `b + 2^31` (32-bit limbs) packed 7 per element. Packing is what
//! makes commitments cheap in-circuit (about 1.6 Poseidon constraints per
//! weight instead of ~51), and it is binding because the circuit range-checks
//! every limb (8 or 32 booleans).
//!
//! Input (committed-input mode): `[tag("infernet/mlp-input/v1"), len,
//! packed (x + 128) bytes..]`, 31 per element.

use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_crypto_primitives::sponge::{
    poseidon::{find_poseidon_ark_and_mds, PoseidonConfig, PoseidonSponge},
    CryptographicSponge, FieldBasedCryptographicSponge,
};
use ark_ff::{BigInteger, Field, PrimeField};

use crate::conv::Conv2d;
use crate::error::{Result, VerifierError};
use crate::quant::QuantizedMlp;

/// Poseidon rate (field elements absorbed per permutation).
pub const POSEIDON_RATE: usize = 8;
/// Poseidon full rounds.
pub const POSEIDON_FULL_ROUNDS: usize = 8;
/// Poseidon partial rounds.
pub const POSEIDON_PARTIAL_ROUNDS: usize = 63;
/// Poseidon S-box exponent.
pub const POSEIDON_ALPHA: u64 = 5;

/// Bits per packed weight limb (`w + 128`).
pub const WEIGHT_BITS: u32 = 8;
/// Weight limbs per field element (248 bits < 254).
pub const WEIGHTS_PER_ELEM: usize = 31;
/// Bits per packed bias limb (`b + 2^31`).
pub const BIAS_BITS: u32 = 32;
/// Bias limbs per field element (224 bits).
pub const BIASES_PER_ELEM: usize = 7;
/// Bits per packed input limb (`x + 128`).
pub const INPUT_BITS: u32 = 8;
/// Input limbs per field element.
pub const INPUTS_PER_ELEM: usize = 31;

/// Domain tag of model commitments.
pub const MODEL_DOMAIN: &[u8] = b"infernet/mlp-model/v1";
/// Domain tag of input commitments.
pub const INPUT_DOMAIN: &[u8] = b"infernet/mlp-input/v1";

/// The fixed Poseidon parameters (computed once).
pub fn poseidon_config() -> &'static PoseidonConfig<Fr> {
    static CFG: OnceLock<PoseidonConfig<Fr>> = OnceLock::new();
    CFG.get_or_init(|| {
        let (ark, mds) = find_poseidon_ark_and_mds::<Fr>(
            u64::from(Fr::MODULUS_BIT_SIZE),
            POSEIDON_RATE,
            POSEIDON_FULL_ROUNDS as u64,
            POSEIDON_PARTIAL_ROUNDS as u64,
            0,
        );
        PoseidonConfig::new(
            POSEIDON_FULL_ROUNDS,
            POSEIDON_PARTIAL_ROUNDS,
            POSEIDON_ALPHA,
            mds,
            ark,
            POSEIDON_RATE,
            1,
        )
    })
}

/// A domain tag as a field element (little-endian bytes).
pub fn domain_tag(tag: &[u8]) -> Fr {
    Fr::from_le_bytes_mod_order(tag)
}

/// Poseidon hash of a sequence of field elements (absorb all, squeeze one).
pub fn poseidon_hash(elems: &[Fr]) -> Fr {
    let mut sponge = PoseidonSponge::new(poseidon_config());
    sponge.absorb(&elems);
    sponge.squeeze_native_field_elements(1)[0]
}

/// Pack unsigned limbs of `bits` bits, `per_elem` per field element,
/// little-endian: `sum_j limb_j * 2^(bits*j)`.
pub fn pack_limbs(limbs: &[u64], bits: u32, per_elem: usize) -> Vec<Fr> {
    let base = Fr::from(2u64).pow([u64::from(bits)]);
    limbs
        .chunks(per_elem)
        .map(|chunk| {
            let mut acc = Fr::from(0u64);
            let mut scale = Fr::from(1u64);
            for &l in chunk {
                acc += scale * Fr::from(l);
                scale *= base;
            }
            acc
        })
        .collect()
}

/// Header absorbed before a model's packed weights (all circuit
/// constants). `convs` is empty for an MLP.
pub fn model_header(dims: &[usize], shifts: &[u32], convs: &[Option<Conv2d>]) -> Vec<Fr> {
    let mut h = vec![domain_tag(MODEL_DOMAIN), Fr::from(shifts.len() as u64)];
    h.extend(dims.iter().map(|d| Fr::from(*d as u64)));
    h.extend(shifts.iter().map(|s| Fr::from(u64::from(*s))));
    for conv in convs {
        match conv {
            None => h.push(Fr::from(0u64)),
            Some(c) => {
                h.push(Fr::from(1u64));
                h.extend(c.header().map(Fr::from));
            }
        }
    }
    h
}

/// Weight limbs `w + 128`, all layers, row-major.
pub fn weight_limbs(mlp: &QuantizedMlp) -> Vec<u64> {
    mlp.layers
        .iter()
        .flat_map(|l| l.weights.iter().flatten())
        .map(|w| (i64::from(*w) + 128) as u64)
        .collect()
}

/// Bias limbs `b + 2^31`, all layers.
pub fn bias_limbs(mlp: &QuantizedMlp) -> Vec<u64> {
    mlp.layers
        .iter()
        .flat_map(|l| l.bias.iter())
        .map(|b| (i64::from(*b) + (1i64 << 31)) as u64)
        .collect()
}

/// Input limbs `x + 128`.
pub fn input_limbs(x: &[i8]) -> Vec<u64> {
    x.iter().map(|v| (i64::from(*v) + 128) as u64).collect()
}

/// Poseidon commitment to a quantized model (dims, shifts, weights, biases).
pub fn commit_model(mlp: &QuantizedMlp) -> Result<Fr> {
    mlp.validate()?;
    let mut elems = model_header(&mlp.dims(), &mlp.shifts(), &mlp.convs());
    elems.extend(pack_limbs(
        &weight_limbs(mlp),
        WEIGHT_BITS,
        WEIGHTS_PER_ELEM,
    ));
    elems.extend(pack_limbs(&bias_limbs(mlp), BIAS_BITS, BIASES_PER_ELEM));
    Ok(poseidon_hash(&elems))
}

/// Poseidon commitment to an int8 input vector.
pub fn commit_input(x: &[i8]) -> Fr {
    let mut elems = vec![domain_tag(INPUT_DOMAIN), Fr::from(x.len() as u64)];
    elems.extend(pack_limbs(&input_limbs(x), INPUT_BITS, INPUTS_PER_ELEM));
    poseidon_hash(&elems)
}

/// A field element as 64 hex digits (canonical, big-endian).
pub fn fr_to_hex(f: &Fr) -> String {
    hex::encode(f.into_bigint().to_bytes_be())
}

/// Parse 64 hex digits (canonical, big-endian) into a field element.
pub fn fr_from_hex(s: &str) -> Result<Fr> {
    let bytes = hex::decode(s)
        .map_err(|e| VerifierError::InvalidInput(format!("bad hex field element: {e}")))?;
    if bytes.len() != 32 {
        return Err(VerifierError::InvalidInput(format!(
            "field element must be 32 bytes, got {}",
            bytes.len()
        )));
    }
    let f = Fr::from_be_bytes_mod_order(&bytes);
    if fr_to_hex(&f) != s.to_ascii_lowercase() {
        return Err(VerifierError::InvalidInput(
            "non-canonical field element".into(),
        ));
    }
    Ok(f)
}

/// Hex model commitment.
pub fn model_commitment_hex(mlp: &QuantizedMlp) -> Result<String> {
    Ok(fr_to_hex(&commit_model(mlp)?))
}
