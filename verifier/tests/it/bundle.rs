//! Keys from a party the client trusts. First the attack: whoever knows a
//! Groth16 setup's randomness proves any output, and the proof verifies
//! under that setup's key — but not under the publisher's. Then the signed
//! key bundle: it loads when intact and is refused when any part of it is
//! swapped or the publisher is not the pinned one.

use ark_bn254::{Bn254, Fr, G1Projective, G2Projective};
use ark_ec::{CurveGroup, PrimeGroup};
use ark_ff::{Field, UniformRand};
use ark_groth16::{prepare_verifying_key, Groth16, Proof};
use ed25519_dalek::SigningKey;
use infernet_verifier::circuit::PublicValues;
use infernet_verifier::commit::{commit_model, fr_to_hex};
use infernet_verifier::groth16::{proof_bytes, setup, vk_id, Pk, SYSTEM};
use infernet_verifier::quant::{model_path, QuantizedDigits};
use infernet_verifier::{
    DigitsModel, Groth16Verifier, InputClaim, InputMode, KeyBundle, MlpCircuit, MlpShape,
    ProofEnvelope, ProofVerifier, Statement, VerifierError,
};
use rand::{rngs::StdRng, SeedableRng};

fn digits() -> QuantizedDigits {
    DigitsModel::load(model_path("digits-64-32-10"))
        .unwrap()
        .quantize()
        .unwrap()
}

/// A false proof by the holder of the trapdoor (α, β, γ, δ): with
/// `A = a·G1`, `B = b·G2` and `C = (ab·G1 − αβ·G1 − γ·acc) / δ` the
/// verification equation `e(A,B) = e(α,β)·e(acc,γ)·e(C,δ)` holds for any
/// public inputs (`acc` their combination in the key).
fn forge(pk: &Pk, trapdoor: [Fr; 4], public: &[Fr], rng: &mut StdRng) -> Proof<Bn254> {
    let [alpha, beta, gamma, delta] = trapdoor;
    let (g1, g2) = (G1Projective::generator(), G2Projective::generator());
    let acc = Groth16::<Bn254>::prepare_inputs(&prepare_verifying_key(&pk.vk), public).unwrap();
    let (a, b) = (Fr::rand(rng), Fr::rand(rng));
    let c = (g1 * (a * b - alpha * beta) - acc * gamma) * delta.inverse().unwrap();
    Proof {
        a: (g1 * a).into_affine(),
        b: (g2 * b).into_affine(),
        c: c.into_affine(),
    }
}

#[test]
fn a_trapdoor_holder_proves_a_false_output_under_its_own_key_only() {
    let q = digits();
    let shape = MlpShape::of(&q.mlp, InputMode::Public).unwrap();
    let commitment = commit_model(&q.mlp).unwrap();
    let rng = &mut StdRng::seed_from_u64(7);
    // The provider runs the setup itself and keeps the randomness.
    let trapdoor = [Fr::rand(rng), Fr::rand(rng), Fr::rand(rng), Fr::rand(rng)];
    let [alpha, beta, gamma, delta] = trapdoor;
    let evil = Groth16::<Bn254>::generate_parameters_with_qap(
        MlpCircuit::for_setup(shape.clone()).unwrap(),
        alpha,
        beta,
        gamma,
        delta,
        G1Projective::generator(),
        G2Projective::generator(),
        rng,
    )
    .unwrap();
    let x: Vec<i8> = (0..64).map(|i| (i % 7) as i8).collect();
    let mut lie = q.mlp.forward(&x).unwrap();
    lie[0] += 1_000; // not what the model computes
    let claim = InputClaim::Plain(x);
    let public = PublicValues::new(&shape, commitment, &claim, &lie)
        .unwrap()
        .to_vec();
    let proof = forge(&evil, trapdoor, &public, rng);
    let statement = Statement {
        model_commitment: fr_to_hex(&commitment),
        input: claim,
        output: lie,
    };
    let envelope = |vk: String| ProofEnvelope {
        system: SYSTEM.into(),
        model_commitment: fr_to_hex(&commitment),
        public_inputs: public.iter().map(|f| f.to_string()).collect(),
        proof: proof_bytes(&proof).unwrap(),
        vk_id: vk,
    };
    // The attack: the false output verifies under the provider's key.
    let own = Groth16Verifier::new(shape.clone(), &evil.vk).unwrap();
    own.verify(&envelope(vk_id(&evil.vk).unwrap()), &statement)
        .expect("a trapdoor proves anything under its own key");
    // Under the publisher's key it does not, whatever id it claims.
    let (publisher_pk, _) = setup(&shape, &mut StdRng::seed_from_u64(42)).unwrap();
    let honest = Groth16Verifier::new(shape, &publisher_pk.vk).unwrap();
    let e = honest
        .verify(&envelope(vk_id(&evil.vk).unwrap()), &statement)
        .unwrap_err();
    assert!(matches!(e, VerifierError::VkMismatch { .. }), "{e}");
    let e = honest
        .verify(&envelope(vk_id(&publisher_pk.vk).unwrap()), &statement)
        .unwrap_err();
    assert!(matches!(e, VerifierError::ProofRejected), "{e}");
}

#[test]
fn a_key_bundle_loads_intact_and_is_refused_when_anything_is_swapped() {
    let q = digits();
    let shape = MlpShape::of(&q.mlp, InputMode::Public).unwrap();
    let commitment = fr_to_hex(&commit_model(&q.mlp).unwrap());
    let (pk, _) = setup(&shape, &mut StdRng::seed_from_u64(42)).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[9; 32]);
    let dir = tempfile::tempdir().unwrap();
    let (path, bundle) = KeyBundle::write(
        dir.path(),
        infernet_verifier::GROTH16_SYSTEM,
        &commitment,
        &shape,
        &pk,
        &key,
    )
    .unwrap();
    assert_eq!(bundle.statement.vk_id, vk_id(&pk.vk).unwrap());
    assert_eq!(bundle.statement.model_commitment, commitment);
    let loaded = KeyBundle::load(&path, Some(&bundle.publisher)).unwrap();
    assert!(loaded.pk.vk == pk.vk);

    let refused = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut v);
        let p = dir.path().join("edited.keys.json");
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = KeyBundle::load(&p, None)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(needle), "`{needle}` not in: {e}");
    };
    // The statement names another key, or another model.
    refused(
        &|v| v["statement"]["vk_id"] = "00".repeat(32).into(),
        "not publisher",
    );
    refused(
        &|v| v["statement"]["model_commitment"] = "11".repeat(32).into(),
        "not publisher",
    );
    // Signed by someone else under the publisher's name, or re-signed by
    // someone else in full (refused only against a pin).
    let (_, sig) = bundle.statement.sign(&other).unwrap();
    refused(&|v| v["signature"] = sig.clone().into(), "not publisher");
    let (by, sig) = bundle.statement.sign(&other).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["publisher"] = by.clone().into();
    v["signature"] = sig.into();
    let resigned = dir.path().join("resigned.keys.json");
    std::fs::write(&resigned, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = KeyBundle::load(&resigned, Some(&bundle.publisher))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&by) && e.contains(&bundle.publisher), "{e}");
    // A verifying key that is not the stated one, a proving key file that
    // is not the stated one, a proving key outside the bundle's directory.
    let (pk2, _) = setup(&shape, &mut StdRng::seed_from_u64(43)).unwrap();
    let mut vk2 = Vec::new();
    ark_serialize::CanonicalSerialize::serialize_compressed(&pk2.vk, &mut vk2).unwrap();
    refused(
        &|v| v["vk"] = hex::encode(&vk2).into(),
        "not the one the statement names",
    );
    let pk_path = dir.path().join(&bundle.pk_file);
    let mut bytes = std::fs::read(&pk_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join("flipped.pk"), &bytes).unwrap();
    refused(&|v| v["pk_file"] = "flipped.pk".into(), "sha256 differs");
    refused(
        &|v| v["pk_file"] = "../x.pk".into(),
        "file name beside the bundle",
    );
}
