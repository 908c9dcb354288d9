//! Proofs in the job flow: what the provider advertised, storing the
//! attachment with the result, and checking it before the job settles.

use super::*;

impl Inner {
    /// The provider's advertised proof entry for `model` in `system`, from
    /// its latest advert.
    pub(super) async fn advertised_proof(
        &self,
        provider: PeerId,
        model: &str,
        system: &str,
    ) -> Option<ProofAdvert> {
        let peer = provider.to_string();
        let adverts = self.net.adverts().await.ok()?;
        adverts
            .iter()
            .filter(|a| a.peer_id == peer)
            .find_map(|a| a.proof_for(model, system).cloned())
    }

    /// Checks the stored proof of a delivered job (on a blocking worker):
    /// `Ok(Ok(vk id))` when it verifies, `Ok(Err(refusal))` when it does
    /// not, or is under a key this client's pin for the model refuses.
    pub(super) async fn check_proof(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        outcome: &JobOutcome,
    ) -> Result<Result<String, ProofRefusal>, ClientError> {
        let system = req.proof.clone().unwrap_or_default();
        let expect: Option<ProofAdvert> = rec
            .result
            .as_ref()
            .and_then(|r| r.get("proof"))
            .and_then(|p| p.get("expected"))
            .and_then(|e| serde_json::from_value(e.clone()).ok());
        let Some(expect) = expect else {
            return Ok(Err(ProofRefusal::Invalid(format!(
                "provider's advert lists no `{system}` verifying key for model `{}`",
                req.model
            ))));
        };
        if let Some(pin) = self.cfg.proof_pins.get(&req.model) {
            if let Err(why) = check_pin(&req.model, &expect, pin) {
                return Ok(Err(ProofRefusal::Untrusted(why)));
            }
        }
        let Some(proof) = outcome.proof.clone() else {
            return Ok(Err(ProofRefusal::Invalid(format!(
                "no `{system}` proof attached to the result"
            ))));
        };
        let (input, output, signed) = (
            req.input.clone(),
            outcome.output.clone(),
            outcome.signed.clone(),
        );
        tokio::task::spawn_blocking(move || {
            verify_proof(&system, &expect, &input, &output, &signed, &proof)
                .map_err(ProofRefusal::Invalid)
        })
        .await
        .map_err(|e| ClientError::Worker(e.to_string()))
    }
}

/// Why a delivered proof is not accepted.
#[derive(Debug)]
pub(super) enum ProofRefusal {
    /// It does not prove the result (the provider's fault: a cheat).
    Invalid(String),
    /// It may be sound, but under a key this client does not trust for
    /// the model (`[client.proof_pins]`): refused, no cheat attested.
    Untrusted(String),
}

impl ProofRefusal {
    /// The reason, as said to the user.
    pub(super) fn reason(&self) -> &str {
        match self {
            ProofRefusal::Invalid(r) | ProofRefusal::Untrusted(r) => r,
        }
    }
}

/// Whether `advert`'s verifying key for `model` is one `pin` accepts: the
/// pinned key id, or a key statement signed by the pinned publisher.
/// Errors name both the advertised and the pinned key.
pub fn check_pin(
    model: &str,
    advert: &ProofAdvert,
    pin: &crate::config::ProofPin,
) -> Result<(), String> {
    if let Some(vk) = &pin.vk_id {
        if !vk.eq_ignore_ascii_case(&advert.vk_id) {
            return Err(format!(
                "model `{model}`: the proof is under verifying key {}, but client.proof_pins.{model}.vk_id pins {vk}",
                advert.vk_id
            ));
        }
    }
    if let Some(publisher) = &pin.publisher {
        let (Some(by), Some(signature)) = (&advert.publisher, &advert.key_signature) else {
            return Err(format!(
                "model `{model}`: verifying key {} comes from the provider's own setup (no publisher signed it), but client.proof_pins.{model}.publisher pins publisher {publisher}",
                advert.vk_id
            ));
        };
        if !by.eq_ignore_ascii_case(publisher) {
            return Err(format!(
                "model `{model}`: verifying key {} is published by {by}, but client.proof_pins.{model}.publisher pins publisher {publisher}",
                advert.vk_id
            ));
        }
        let statement = infernet_verifier::KeyStatement {
            system: crate::config::envelope_system(&advert.system)
                .ok_or_else(|| {
                    format!("model `{model}`: unknown proof system `{}`", advert.system)
                })?
                .into(),
            model_commitment: advert.model_commitment.to_ascii_lowercase(),
            dims: advert.dims.clone(),
            shifts: advert.shifts.clone(),
            vk_id: advert.vk_id.clone(),
        };
        statement.verify(by, signature).map_err(|e| {
            format!(
                "model `{model}`: verifying key {} is not vouched for by the pinned publisher {publisher}: {e}",
                advert.vk_id
            )
        })?;
    }
    Ok(())
}

/// Adds the proof (CBOR hex) and the advert entry it must match to the
/// stored result.
pub(super) fn add_proof(
    stored: &mut serde_json::Value,
    proof: Option<&Encoded<ProofAttachment>>,
    expect: Option<&ProofAdvert>,
) -> Result<(), crate::p2p::protocol::CodecError> {
    if proof.is_none() && expect.is_none() {
        return Ok(());
    }
    let attachment = proof.map(|p| hex::encode(p.bytes()));
    stored["proof"] = serde_json::json!({
        "attachment_cbor": attachment,
        "expected": expect,
    });
    Ok(())
}

/// Checks a result's proof against what the provider advertised: the
/// signed result covers the proof's hash, the verifying key is the
/// advertised one, and the Groth16 proof shows that the advertised model
/// commitment maps `input` to `output` (raw logits, or the class that is
/// their argmax). Returns the verifying key's id, or why the proof is
/// rejected.
pub fn verify_proof(
    system: &str,
    expect: &ProofAdvert,
    input: &WireInput,
    output: &WireOutput,
    signed: &SignedResult,
    proof: &Encoded<ProofAttachment>,
) -> Result<String, String> {
    use infernet_verifier::baked::BakedVerifier;
    use infernet_verifier::{
        Groth16Verifier, InputClaim, InputMode, MlpShape, ProofEnvelope, ProofVerifier, Statement,
    };
    if crate::config::envelope_system(system).is_none()
        || expect.system != system
        || proof.system != system
    {
        return Err(format!(
            "proof system `{}` (advertised `{}`), asked for `{system}`",
            proof.system, expect.system
        ));
    }
    if signed.payload.proof_hash.as_deref() != Some(proof.hash().as_str()) {
        return Err("the signed result does not cover this proof (proof_hash differs)".into());
    }
    let shape = MlpShape {
        dims: expect.dims.iter().map(|&d| d as usize).collect(),
        shifts: expect.shifts.clone(),
        input_mode: InputMode::Public,
        // Verifying needs only the public-input layout; a CNN's geometry is
        // bound by the model commitment and the verifying key.
        convs: Vec::new(),
    };
    let verifier: Box<dyn ProofVerifier> = match system {
        "groth16-baked" => Box::new(
            BakedVerifier::from_vk_bytes(shape, &expect.model_commitment, &proof.vk)
                .map_err(|e| format!("verifying key: {e}"))?,
        ),
        _ => Box::new(
            Groth16Verifier::from_vk_bytes(shape, &proof.vk)
                .map_err(|e| format!("verifying key: {e}"))?,
        ),
    };
    if verifier.vk_id() != expect.vk_id {
        return Err(format!(
            "verifying key {} is not the advertised {}",
            verifier.vk_id(),
            expect.vk_id
        ));
    }
    let envelope: ProofEnvelope =
        serde_json::from_slice(&proof.envelope).map_err(|e| format!("envelope: {e}"))?;
    if envelope.model_commitment != expect.model_commitment {
        return Err(format!(
            "model commitment {} is not the advertised {}",
            envelope.model_commitment, expect.model_commitment
        ));
    }
    let WireInput::Bytes(x) = input else {
        return Err(format!("{system} proofs are about bytes (int8) inputs"));
    };
    let matches = match output {
        WireOutput::Bytes(b) => {
            crate::jobs::provider::decode_logits(b).as_deref() == Some(&proof.logits[..])
        }
        WireOutput::Classes(c) => {
            !proof.logits.is_empty()
                && c.len() == 1
                && usize::try_from(c[0]).ok()
                    == Some(infernet_verifier::quant::argmax(&proof.logits))
        }
        _ => false,
    };
    if !matches {
        return Err("the returned output is not the proved output".into());
    }
    let statement = Statement {
        model_commitment: expect.model_commitment.clone(),
        input: InputClaim::Plain(x.iter().map(|&b| b as i8).collect()),
        output: proof.logits.clone(),
    };
    verifier
        .verify(&envelope, &statement)
        .map_err(|e| format!("{system} verification failed: {e}"))?;
    Ok(verifier.vk_id().to_string())
}
