//! Groth16 proofs in the job flow, through the SDK on a loopback network:
//! a provider serving the quantized digits MLP with the `mlp` plugin and
//! `proof = "groth16"`, and a client that asks for proofs. Covers: a proved
//! job (right logits and class, a proof that verifies, the `verified` state),
//! the same streamed, tampered proofs and results rejected (streamed too),
//! no prover for a model, config errors, and keys generated once then read
//! from the data dir's cache.
//! The digits CNN is proved over the network the same way.

use infernet_host::config::Config;
use infernet_host::config::ProofPin;
use infernet_host::jobs::client::{check_pin, verify_proof};
use infernet_host::node::{Node, NodeError, ZK_DIR};
use infernet_host::p2p::protocol::{Encoded, ProofAdvert, Signed};
use infernet_host::p2p::{ErrorCode, JobBody, JobMessage, WireInput, WireOutput};
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{ClientError, InferOptions, Infernet, StreamEvent};
use infernet_host::store::JobState;
use infernet_tests::net::client_toml;
use infernet_tests::pack_plugin;
use infernet_verifier::commit::model_commitment_hex;
use infernet_verifier::quant::{model_path, DigitsModel, QuantizedDigits};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

async fn start(config: &Path) -> Infernet {
    Infernet::new(Config::load(config).unwrap())
        .network(|n| n.gossip_heartbeat = Duration::from_millis(200))
        .start()
        .await
        .unwrap()
}

fn digits() -> (DigitsModel, QuantizedDigits) {
    let m = DigitsModel::load(model_path("digits-64-32-10")).unwrap();
    let q = m.quantize().unwrap();
    (m, q)
}

/// A provider serving `digits` (with `proof = "groth16"`) and
/// `digits-plain` (same model, no proof) through the `mlp` plugin.
fn mlp_provider_toml(root: &Path, q: &QuantizedDigits, proof: &str) -> PathBuf {
    mlp_node_toml(root, "provider", q, proof, &[])
}

/// [`mlp_provider_toml`] as `<root>/<name>.toml`, bootstrapping from `boot`.
fn mlp_node_toml(
    root: &Path,
    name: &str,
    q: &QuantizedDigits,
    proof: &str,
    boot: &[String],
) -> PathBuf {
    let model = q.mlp.write_model_dir(root.join("digits-model")).unwrap();
    if !root.join("plugins/mlp").exists() {
        pack_plugin("mlp", PluginKind::Backend, &root.join("plugins"));
    }
    let text = format!(
        "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {boot:?}\nadvert_interval_secs = 1\n\n\
         [[backend]]\nplugin = {:?}\n\
         [[backend.models]]\nid = \"digits\"\npath = {model:?}\n{proof}\n\
         [[backend.models]]\nid = \"digits-plain\"\npath = {model:?}\n",
        root.join(name),
        root.join("plugins/mlp"),
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn input_bytes(x: &[i8]) -> WireInput {
    WireInput::Bytes(x.iter().map(|&v| v as u8).collect())
}

fn logits(output: &WireOutput) -> Vec<i64> {
    let WireOutput::Bytes(b) = output else {
        panic!("bytes output expected, got {output:?}")
    };
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn groth16() -> InferOptions {
    InferOptions {
        proof: Some("groth16".into()),
        ..Default::default()
    }
}

/// Waits until `client` holds `advert` as `digits`' entry for `system`.
async fn wait_for_proof_advert(client: &Infernet, system: &str, advert: &ProofAdvert) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client
        .network()
        .adverts()
        .await
        .unwrap()
        .iter()
        .any(|a| a.proof_for("digits", system) == Some(advert))
    {
        assert!(Instant::now() < deadline, "no advert with a {system} key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client config pinning `publisher` for `digits`.
fn pinned(publisher: &str) -> String {
    format!(
        "[client]\ndiscovery_timeout_ms = 1500\n[client.proof_pins.digits]\npublisher = {publisher:?}\n"
    )
}

/// A model publisher: a fresh key, and `infernet zk setup` (with `extra`
/// arguments) for `model_dir` into `<root>/keys`. `(publisher, bundle,
/// vk_id)`.
fn publish(root: &Path, model_dir: &Path, extra: &[&str]) -> (String, String, String) {
    let key = root.join("publisher.key");
    if !key.exists() {
        infernet(&["plugin", "keygen", "--out", key.to_str().unwrap()]);
    }
    let publisher = std::fs::read_to_string(root.join("publisher.key.pub"))
        .unwrap()
        .trim()
        .to_string();
    let keys = root.join("keys");
    let mut args = vec![
        "zk",
        "setup",
        "--model",
        model_dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        keys.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = infernet(&args);
    let line = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .unwrap_or_else(|| panic!("no `{k}` in {out}"))
            .to_string()
    };
    assert_eq!(line("publisher"), publisher);
    (publisher, line("bundle"), line("vk_id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proved_jobs_verify_bad_proofs_fail_and_keys_are_cached() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (model, q) = digits();
    let provider_cfg = mlp_provider_toml(root, &q, "proof = \"groth16\"");

    // First start: the keys are generated and written under <data>/zk.
    let t = Instant::now();
    let p = start(&provider_cfg).await;
    let first_start_ms = t.elapsed().as_millis();
    let proved = p
        .node()
        .unwrap()
        .prover("digits")
        .expect("digits is proved");
    assert!(proved.keys_generated, "first start must run the setup");
    assert!(p.node().unwrap().prover("digits-plain").is_none());
    let advert = proved.advert.clone();
    assert_eq!(advert.system, "groth16");
    assert_eq!(advert.dims, vec![64, 32, 10]);
    let setup_ms = proved.setup_ms;
    let zk = root.join("provider").join(ZK_DIR);
    let key_files: Vec<PathBuf> = std::fs::read_dir(&zk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(key_files.len(), 2, "a .pk and a .vk: {key_files:?}");
    let mtimes: Vec<_> = key_files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();

    let boot = vec![p.dialable_addrs().await.unwrap()[0].to_string()];
    let client = start(&client_toml(
        root,
        "client",
        &boot,
        "[client]\ndiscovery_timeout_ms = 1500\n",
    ))
    .await;
    // Wait until the client holds the provider's advert with its proof entry.
    wait_for_proof_advert(&client, "groth16", &advert).await;

    // A proved job: the logits of the exact integer model, a proof that
    // verifies, and `verified` between `delivered` and `settled`.
    let x = q.input_from_pixels(&model.test.x[0]);
    let expected = q.mlp.forward(&x).unwrap();
    // Warm-up without a proof (plugin instance, connection), then timings.
    let t = Instant::now();
    let plain = client
        .submit("digits", input_bytes(&x), InferOptions::default())
        .await
        .unwrap();
    let plain_ms = t.elapsed().as_millis();
    assert!(plain.proof.is_none());
    assert_eq!(plain.signed.payload.proof_hash, None);
    let t = Instant::now();
    let out = client
        .submit("digits", input_bytes(&x), groth16())
        .await
        .unwrap();
    let proved_ms = t.elapsed().as_millis();
    assert_eq!(logits(&out.output), expected);
    let proof = out.proof.clone().expect("a proof is attached");
    assert_eq!(
        out.signed.payload.proof_hash.as_deref(),
        Some(proof.hash().as_str())
    );
    assert_eq!(proof.logits, expected);
    let vk_id = verify_proof(
        "groth16",
        &advert,
        &input_bytes(&x),
        &out.output,
        &out.signed,
        &proof,
    )
    .unwrap();
    assert_eq!(vk_id, advert.vk_id);
    let events = client.store().jobs().events(&out.job_id).unwrap();
    let states: Vec<JobState> = events.iter().map(|e| e.to).collect();
    let v = states
        .iter()
        .position(|s| *s == JobState::Verified)
        .expect("a verified event");
    assert_eq!(states[v - 1], JobState::Delivered);
    assert_eq!(states[v + 1], JobState::Settled);
    let stored = client
        .store()
        .jobs()
        .get(&out.job_id)
        .unwrap()
        .unwrap()
        .result
        .unwrap();
    assert_eq!(stored["proof"]["verified_vk_id"], advert.vk_id.as_str());

    // A class output is proved too (the class is the proved logits' argmax).
    let x1 = q.input_from_pixels(&model.test.x[1]);
    let class = client
        .submit(
            "digits",
            input_bytes(&x1),
            InferOptions {
                params: vec![("output".into(), "class".into())],
                ..groth16()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        class.output,
        WireOutput::Classes(vec![q.mlp.predict(&x1).unwrap() as u32])
    );
    assert!(class.proof.is_some());

    // A streamed proved job (the provider's streaming path: `Ack`, then
    // polls): `Assigned` first, then whatever the backend streams (the mlp
    // backend streams nothing), and an outcome whose proof verified, like
    // the non-streamed job's.
    let mut stream = client
        .client()
        .submit_streaming("digits", input_bytes(&x), &groth16())
        .await
        .unwrap();
    let mut streamed_events = Vec::new();
    while let Some(e) = stream.next().await {
        streamed_events.push(e);
    }
    let streamed = stream.finish().await.unwrap();
    assert!(
        matches!(
            streamed_events.first(),
            Some(StreamEvent::Assigned { provider, attempt: 1, .. }) if *provider == p.peer_id()
        ),
        "{streamed_events:?}"
    );
    assert!(
        streamed_events[1..]
            .iter()
            .all(|e| matches!(e, StreamEvent::Token(_))),
        "{streamed_events:?}"
    );
    assert_ne!(streamed.job_id, out.job_id);
    assert_eq!(logits(&streamed.output), expected);
    let streamed_proof = streamed.proof.clone().expect("a streamed job's proof");
    assert_eq!(
        streamed.signed.payload.proof_hash.as_deref(),
        Some(streamed_proof.hash().as_str())
    );
    assert_eq!(streamed_proof.logits, expected);
    verify_proof(
        "groth16",
        &advert,
        &input_bytes(&x),
        &streamed.output,
        &streamed.signed,
        &streamed_proof,
    )
    .unwrap();
    let states: Vec<JobState> = client
        .store()
        .jobs()
        .events(&streamed.job_id)
        .unwrap()
        .iter()
        .map(|e| e.to)
        .collect();
    let v = states
        .iter()
        .position(|s| *s == JobState::Verified)
        .expect("a verified event on the streamed job");
    assert_eq!(states[v - 1], JobState::Delivered);
    assert_eq!(states[v + 1], JobState::Settled);
    let stored = client
        .store()
        .jobs()
        .get(&streamed.job_id)
        .unwrap()
        .unwrap()
        .result
        .unwrap();
    assert_eq!(stored["proof"]["verified_vk_id"], advert.vk_id.as_str());

    // The client's check refuses every kind of lie about this result.
    let reject = |expect: &_, input: &WireInput, output: &WireOutput, signed: &_, proof: &_| {
        verify_proof("groth16", expect, input, output, signed, proof).unwrap_err()
    };
    let mut wrong_out = expected.clone();
    wrong_out[3] += 1;
    let wrong_output = WireOutput::Bytes(wrong_out.iter().flat_map(|v| v.to_le_bytes()).collect());
    let e = reject(
        &advert,
        &input_bytes(&x),
        &wrong_output,
        &out.signed,
        &proof,
    );
    assert!(e.contains("not the proved output"), "{e}");
    let mut lie = proof.value().clone();
    lie.logits = wrong_out.clone();
    let lying = Encoded::new(lie).unwrap();
    let e = reject(
        &advert,
        &input_bytes(&x),
        &wrong_output,
        &out.signed,
        &lying,
    );
    assert!(e.contains("proof_hash"), "{e}");
    let mut claims = out.signed.payload.value().clone();
    claims.proof_hash = Some(lying.hash());
    let resigned = Signed {
        payload: Encoded::new(claims).unwrap(),
        ..out.signed.clone()
    };
    let e = reject(&advert, &input_bytes(&x), &wrong_output, &resigned, &lying);
    assert!(e.contains("groth16 verification failed"), "{e}");
    let e = reject(&advert, &input_bytes(&x1), &out.output, &out.signed, &proof);
    assert!(e.contains("groth16 verification failed"), "{e}");
    let mut other_key = advert.clone();
    other_key.vk_id = "00".repeat(32);
    let e = reject(
        &other_key,
        &input_bytes(&x),
        &out.output,
        &out.signed,
        &proof,
    );
    assert!(e.contains("not the advertised"), "{e}");
    let mut other_model = advert.clone();
    other_model.model_commitment = "01".repeat(32);
    let e = reject(
        &other_model,
        &input_bytes(&x),
        &out.output,
        &out.signed,
        &proof,
    );
    assert!(e.contains("model commitment"), "{e}");

    // No provider proves `digits-plain`: a clear error, the job fails.
    let err = client
        .submit("digits-plain", input_bytes(&x), groth16())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NoProvers { ref system, .. } if system == "groth16"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("no provider proves model `digits-plain`"),
        "{err}"
    );

    // Asked directly for a proof it cannot make, the provider refuses the
    // request itself (InvalidRequest) and runs nothing.
    let reply = client
        .network()
        .send_job(
            p.peer_id(),
            JobMessage::new(JobBody::Run {
                job_id: "direct.1".into(),
                model: "digits-plain".into(),
                input: input_bytes(&x),
                params: vec![],
                stream: false,
                proof: Some("groth16".into()),
            }),
        )
        .await
        .unwrap();
    let JobBody::Error(e) = reply.body else {
        panic!("expected an error, got {:?}", reply.body)
    };
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(
        e.message.contains("does not prove model `digits-plain`"),
        "{}",
        e.message
    );
    assert!(p.store().jobs().get("direct.1").unwrap().is_none());

    // A lying provider: its result is signed, its proof is corrupt. The job
    // fails with "proof rejected" and is not retried; reputation drops.
    let rep_before = client
        .store()
        .peers()
        .get(&p.peer_id().to_string())
        .unwrap()
        .map(|r| r.reputation)
        .unwrap();
    p.provider().unwrap().tamper_proofs_for_tests(true);
    let err = client
        .submit("digits", input_bytes(&x1), groth16())
        .await
        .unwrap_err();
    let ClientError::ProofRejected { job_id, reason, .. } = &err else {
        panic!("expected a proof rejection, got {err}")
    };
    assert!(err.to_string().contains("proof rejected"), "{err}");
    assert!(reason.contains("groth16 verification failed"), "{reason}");
    let rec = client.store().jobs().get(job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.attempts, 1, "a rejected proof is not retried elsewhere");
    assert!(rec.error.unwrap().contains("proof rejected"));
    let events = client.store().jobs().events(job_id).unwrap();
    assert!(events
        .iter()
        .all(|e| e.to != JobState::Verified && e.to != JobState::Settled));
    let rep_after = client
        .store()
        .peers()
        .get(&p.peer_id().to_string())
        .unwrap()
        .map(|r| r.reputation)
        .unwrap();
    assert!(rep_after < rep_before, "{rep_after} !< {rep_before}");

    // The same lie on a streamed job is refused the same way.
    let mut stream = client
        .client()
        .submit_streaming("digits", input_bytes(&x), &groth16())
        .await
        .unwrap();
    let streamed_id = stream.job_id.clone();
    let mut streamed_events = Vec::new();
    while let Some(e) = stream.next().await {
        streamed_events.push(e);
    }
    assert!(
        matches!(streamed_events.first(), Some(StreamEvent::Assigned { .. })),
        "{streamed_events:?}"
    );
    assert!(
        !streamed_events
            .iter()
            .any(|e| matches!(e, StreamEvent::Failover { .. })),
        "a rejected proof is not retried elsewhere: {streamed_events:?}"
    );
    let err = stream.finish().await.unwrap_err();
    let ClientError::ProofRejected { job_id, reason, .. } = &err else {
        panic!("expected a proof rejection on the streamed job, got {err}")
    };
    assert_eq!(*job_id, streamed_id);
    assert!(reason.contains("groth16 verification failed"), "{reason}");
    let rec = client.store().jobs().get(job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.attempts, 1);
    assert!(rec.error.unwrap().contains("proof rejected"));
    assert!(client
        .store()
        .jobs()
        .events(job_id)
        .unwrap()
        .iter()
        .all(|e| e.to != JobState::Verified && e.to != JobState::Settled));
    p.provider().unwrap().tamper_proofs_for_tests(false);

    client.shutdown().await;
    p.shutdown().await;

    // Second start on the same data dir: keys read from the cache, not
    // generated again (files untouched), same verifying key.
    let t = Instant::now();
    let again = Node::from_config(&Config::load(&provider_cfg).unwrap()).unwrap();
    let second_start_ms = t.elapsed().as_millis();
    let cached = again.prover("digits").unwrap();
    assert!(
        !cached.keys_generated,
        "second start must reuse cached keys"
    );
    assert_eq!(cached.advert, advert);
    for (f, m) in key_files.iter().zip(&mtimes) {
        assert_eq!(std::fs::metadata(f).unwrap().modified().unwrap(), *m);
    }
    eprintln!(
        "groth16 keys: setup {setup_ms} ms (node start {first_start_ms} ms), cached load {} ms (node start {second_start_ms} ms); \
         job without proof {plain_ms} ms, with proof {proved_ms} ms (prove + verify on this machine)",
        cached.setup_ms
    );
}

#[test]
fn proof_on_a_model_that_is_not_a_quantized_mlp_names_the_key() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (_, q) = digits();
    let cfg = mlp_provider_toml(root, &q, "proof = \"groth16\"");
    // Point `digits` at a dir whose config.json is not a quantized MLP.
    let other = root.join("not-mlp");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type":"llama"}"#).unwrap();
    std::fs::copy(
        root.join("digits-model/model.safetensors"),
        other.join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        &format!("path = {:?}", root.join("digits-model")),
        &format!("path = {other:?}"),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let err = match Node::from_config(&Config::load(&cfg).unwrap()) {
        Err(e) => e,
        Ok(_) => panic!("a proof on a non-MLP model must be refused"),
    };
    assert!(matches!(err, NodeError::Proof { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("backend[0].models[0].proof"), "{msg}");
    assert!(msg.contains("quantized-mlp"), "{msg}");

    let bad = mlp_provider_toml(root, &q, "proof = \"plonk\"");
    let err = Config::load(&bad).unwrap_err().to_string();
    assert!(err.contains("backend[0].models[0].proof"), "{err}");
}

/// A paid proved job: the escrow is released only after the proof checks
/// (its release is logged after `verified`), and a rejected proof refunds
/// the escrow in full: the client pays for verified results only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paid_proved_jobs_release_after_verification_and_refund_a_rejected_proof() {
    use infernet_host::payments::ledger::{self, LEDGER};
    use infernet_tests::net::with_ledger;
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (model, q) = digits();
    let provider_cfg = mlp_provider_toml(root, &q, "proof = \"groth16\"");
    pack_plugin("pricing-flat", PluginKind::Pricing, &root.join("plugins"));
    let mut text = std::fs::read_to_string(&provider_cfg).unwrap();
    text.push_str(&format!(
        "\n[pricing]\nplugin = {:?}\n[pricing.config]\nper_input_token = 1\nper_output_token = 1\nminimum = 5000\n",
        root.join("plugins/pricing-flat")
    ));
    std::fs::write(&provider_cfg, text).unwrap();
    with_ledger(&provider_cfg, root, "confirm = \"client\"");
    let p = start(&provider_cfg).await;
    let boot = vec![p.dialable_addrs().await.unwrap()[0].to_string()];
    let client_cfg = with_ledger(
        &client_toml(
            root,
            "client",
            &boot,
            "[client]\ndiscovery_timeout_ms = 1500\n",
        ),
        root,
        "",
    );
    let client = start(&client_cfg).await;
    let me = client.peer_id().to_string();
    let provider = p.peer_id().to_string();
    let kv = client.store().plugin_kv(LEDGER);
    const FUNDED: u64 = 1_000_000;
    ledger::fund(&kv, &me, "USD", FUNDED).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client
        .network()
        .adverts()
        .await
        .unwrap()
        .iter()
        .any(|a| a.proof_for("digits", "groth16").is_some())
    {
        assert!(Instant::now() < deadline, "no advert with a groth16 key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let x = q.input_from_pixels(&model.test.x[0]);

    // Verified, then released: the price moves once, after the check.
    let out = client
        .submit("digits", input_bytes(&x), groth16())
        .await
        .unwrap();
    let price = out.price.amount;
    assert!(price >= 5000, "{:?}", out.price);
    let store = client.store().clone();
    let rec = store.jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Settled);
    let events = store.jobs().events(&out.job_id).unwrap();
    let order: Vec<JobState> = events.iter().map(|e| e.to).collect();
    let verified = order.iter().position(|s| *s == JobState::Verified);
    let settled = order.iter().position(|s| *s == JobState::Settled);
    assert!(
        verified.is_some() && verified < settled,
        "verified before settled: {order:?}"
    );
    let settled_detail = events[settled.unwrap()].detail.clone().unwrap_or_default();
    assert!(
        settled_detail.contains("proof checked") && settled_detail.contains("released"),
        "{settled_detail}"
    );
    let held = store.escrows().by_job(&out.job_id).unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0].status.as_str(), held[0].amount),
        ("settled", price)
    );
    assert_eq!(ledger::balance(&kv, &me, "USD").unwrap(), FUNDED - price);
    assert_eq!(ledger::balance(&kv, &provider, "USD").unwrap(), price);

    // A rejected proof: failed, refunded, nothing paid.
    p.provider().unwrap().tamper_proofs_for_tests(true);
    let err = client
        .submit("digits", input_bytes(&x), groth16())
        .await
        .unwrap_err();
    let ClientError::ProofRejected { job_id, .. } = &err else {
        panic!("expected a proof rejection, got {err}")
    };
    let rec = store.jobs().get(job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Refunded, "{rec:?}");
    let held = store.escrows().by_job(job_id).unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].status, "refunded", "{held:?}");
    assert!(held[0].amount >= 5000);
    assert!(store.escrows().open().unwrap().is_empty());
    assert_eq!(ledger::balance(&kv, &me, "USD").unwrap(), FUNDED - price);
    assert_eq!(ledger::balance(&kv, &provider, "USD").unwrap(), price);

    client.shutdown().await;
    p.shutdown().await;
}

/// `infernet <args>`, asserting success; its stdout.
fn infernet(args: &[&str]) -> String {
    let out = std::process::Command::new(infernet_tests::net::infernet_bin())
        .args(args)
        .env("INFERNET_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "infernet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `client` holds `n` adverts proving `digits`; them.
async fn provers(client: &Infernet, n: usize) -> Vec<ProofAdvert> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<ProofAdvert> = client
            .network()
            .adverts()
            .await
            .unwrap()
            .iter()
            .filter_map(|a| a.proof_for("digits", "groth16").cloned())
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "{} of {n} provers", found.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_pins_the_publisher_takes_proofs_only_under_its_keys() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (model, q) = digits();
    // The publisher: a key, and the setup for the model, signed.
    let model_dir = q.mlp.write_model_dir(root.join("digits-model")).unwrap();
    let (publisher, bundle, vk_id) = publish(root, &model_dir, &[]);
    let checked = infernet(&["zk", "check", &bundle, "--publisher", &publisher]);
    assert!(checked.contains(&vk_id), "{checked}");

    // A provider proving with the publisher's keys, one with its own setup.
    let vouched = start(&mlp_node_toml(
        root,
        "vouched",
        &q,
        &format!("proof = \"groth16\"\nproof_keys = {bundle:?}"),
        &[],
    ))
    .await;
    let boot = vec![vouched.dialable_addrs().await.unwrap()[0].to_string()];
    let own = start(&mlp_node_toml(
        root,
        "own",
        &q,
        "proof = \"groth16\"",
        &boot,
    ))
    .await;
    let own_vk = own
        .node()
        .unwrap()
        .prover("digits")
        .unwrap()
        .advert
        .vk_id
        .clone();
    assert_ne!(own_vk, vk_id);
    let client = start(&client_toml(root, "client", &boot, &pinned(&publisher))).await;
    let adverts = provers(&client, 2).await;
    let theirs = adverts.iter().find(|a| a.vk_id == own_vk).unwrap();
    let vouched_advert = adverts.iter().find(|a| a.vk_id == vk_id).unwrap();
    assert_eq!(
        vouched_advert.publisher.as_deref(),
        Some(publisher.as_str())
    );

    // Every proved job goes to the provider under the publisher's key.
    let x = q.input_from_pixels(&model.test.x[1]);
    for _ in 0..3 {
        let out = client
            .submit("digits", input_bytes(&x), groth16())
            .await
            .unwrap();
        assert_eq!(out.provider, vouched.peer_id());
        assert_eq!(logits(&out.output), q.mlp.forward(&x).unwrap());
        let rec = client.store().jobs().get(&out.job_id).unwrap().unwrap();
        assert_eq!(rec.state, JobState::Settled);
    }
    // The pin, checked on an advert: names both keys.
    let pin = ProofPin {
        publisher: Some(publisher.clone()),
        vk_id: None,
    };
    check_pin("digits", vouched_advert, &pin).unwrap();
    let e = check_pin("digits", theirs, &pin).unwrap_err();
    assert!(e.contains(&own_vk) && e.contains(&publisher), "{e}");
    let mut forged = theirs.clone();
    forged.publisher = Some(publisher.clone());
    forged.key_signature = vouched_advert.key_signature.clone();
    let e = check_pin("digits", &forged, &pin).unwrap_err();
    assert!(e.contains("not vouched for"), "{e}");
    let by_vk = ProofPin {
        publisher: None,
        vk_id: Some(vk_id.clone()),
    };
    check_pin("digits", vouched_advert, &by_vk).unwrap();
    let e = check_pin("digits", theirs, &by_vk).unwrap_err();
    assert!(e.contains(&own_vk) && e.contains(&vk_id), "{e}");

    // A pinned client that finds only the self-setup provider refuses it,
    // naming its key and the pinned publisher.
    vouched.shutdown().await;
    client.shutdown().await;
    let own_addr = vec![own.dialable_addrs().await.unwrap()[0].to_string()];
    let late = start(&client_toml(root, "late", &own_addr, &pinned(&publisher))).await;
    provers(&late, 1).await;
    let e = late
        .submit("digits", input_bytes(&x), groth16())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::UntrustedProvers { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&own_vk) && msg.contains(&publisher), "{msg}");
    late.shutdown().await;
    own.shutdown().await;
}

/// The digits CNN sold with proofs: the provider sets up its
/// convolution-shaped key, the client verifies the proof against the
/// advert (widths only: the geometry is bound by the commitment and the
/// key) and gets the exact integer model's logits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cnn_is_proved_over_the_network() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let m = DigitsModel::load(model_path("digits-cnn-4-8")).unwrap();
    let q = m.quantize().unwrap();
    let p = start(&mlp_provider_toml(root, &q, "proof = \"groth16\"")).await;
    let advert = p.node().unwrap().prover("digits").unwrap().advert.clone();
    assert_eq!(advert.dims, vec![64, 256, 128, 10]);
    assert_eq!(
        advert.model_commitment,
        model_commitment_hex(&q.mlp).unwrap()
    );
    let boot = vec![p.dialable_addrs().await.unwrap()[0].to_string()];
    let client = start(&client_toml(
        root,
        "client",
        &boot,
        "[client]\ndiscovery_timeout_ms = 1500\n",
    ))
    .await;
    wait_for_proof_advert(&client, "groth16", &advert).await;
    for i in [0, 7] {
        let x = q.input_from_pixels(&m.test.x[i]);
        let out = client
            .submit("digits", input_bytes(&x), groth16())
            .await
            .unwrap();
        let expected = q.mlp.forward(&x).unwrap();
        assert_eq!(logits(&out.output), expected);
        let proof = out.proof.clone().expect("a proof is attached");
        let vk_id = verify_proof(
            "groth16",
            &advert,
            &input_bytes(&x),
            &out.output,
            &out.signed,
            &proof,
        )
        .unwrap();
        assert_eq!(vk_id, advert.vk_id);
        assert_eq!(
            client
                .store()
                .jobs()
                .get(&out.job_id)
                .unwrap()
                .unwrap()
                .state,
            JobState::Settled
        );
    }
    client.shutdown().await;
    p.shutdown().await;
}

/// Baked-weights proofs in the job flow (`proof = "groth16-baked"`): a
/// publisher signs the model's baked key (`infernet zk setup --baked`), a
/// provider proves with it, a client that pins the publisher gets verified
/// results; a tampered proof is refused; a baked bundle is refused for a
/// committed-weights model at start, and a committed-weights proof is not
/// offered for a baked one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baked_weight_proofs_are_published_proved_and_verified() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (model, q) = digits();
    let model_dir = q.mlp.write_model_dir(root.join("digits-model")).unwrap();
    let (publisher, bundle, vk_id) = publish(root, &model_dir, &["--baked"]);
    assert!(bundle.ends_with("-baked.keys.json"), "{bundle}");

    // A baked bundle for a committed-weights model: refused at start.
    let wrong = mlp_node_toml(
        root,
        "wrong",
        &q,
        &format!("proof = \"groth16\"\nproof_keys = {bundle:?}"),
        &[],
    );
    let e = Node::from_config(&Config::load(&wrong).unwrap())
        .err()
        .expect("a baked bundle for a committed-weights model")
        .to_string();
    assert!(
        e.contains("`groth16-bn254-baked` keys") && e.contains("proof = \"groth16\""),
        "{e}"
    );

    let p = start(&mlp_node_toml(
        root,
        "provider",
        &q,
        &format!("proof = \"groth16-baked\"\nproof_keys = {bundle:?}"),
        &[],
    ))
    .await;
    let advert = p.node().unwrap().prover("digits").unwrap().advert.clone();
    assert_eq!(advert.system, "groth16-baked");
    assert_eq!(advert.vk_id, vk_id);
    assert_eq!(advert.publisher.as_deref(), Some(publisher.as_str()));
    let boot = vec![p.dialable_addrs().await.unwrap()[0].to_string()];
    let client = start(&client_toml(root, "client", &boot, &pinned(&publisher))).await;
    let baked = || InferOptions {
        proof: Some("groth16-baked".into()),
        ..Default::default()
    };
    wait_for_proof_advert(&client, "groth16-baked", &advert).await;
    check_pin(
        "digits",
        &advert,
        &ProofPin {
            publisher: Some(publisher.clone()),
            vk_id: None,
        },
    )
    .unwrap();

    let x = q.input_from_pixels(&model.test.x[4]);
    let out = client
        .submit("digits", input_bytes(&x), baked())
        .await
        .unwrap();
    assert_eq!(logits(&out.output), q.mlp.forward(&x).unwrap());
    let proof = out.proof.clone().expect("a proof is attached");
    let envelope: serde_json::Value = serde_json::from_slice(&proof.envelope).unwrap();
    assert_eq!(envelope["system"], infernet_verifier::baked::SYSTEM);
    let checked = verify_proof(
        "groth16-baked",
        &advert,
        &input_bytes(&x),
        &out.output,
        &out.signed,
        &proof,
    )
    .unwrap();
    assert_eq!(checked, vk_id);
    // The committed-weights verifier does not take a baked proof.
    let mut as_committed = advert.clone();
    as_committed.system = "groth16".into();
    let mut relabelled = proof.value().clone();
    relabelled.system = "groth16".into();
    let e = verify_proof(
        "groth16",
        &as_committed,
        &input_bytes(&x),
        &out.output,
        &out.signed,
        &Encoded::new(relabelled).unwrap(),
    )
    .unwrap_err();
    assert!(!e.is_empty());
    let rec = client.store().jobs().get(&out.job_id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Settled);

    // No committed-weights proof for this model here.
    let e = client
        .submit("digits", input_bytes(&x), groth16())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("groth16"), "{e}");

    // A tampered baked proof is refused and the job fails.
    p.provider().unwrap().tamper_proofs_for_tests(true);
    let err = client
        .submit("digits", input_bytes(&x), baked())
        .await
        .unwrap_err();
    let ClientError::ProofRejected { reason, .. } = &err else {
        panic!("expected a proof rejection, got {err}")
    };
    assert!(
        reason.contains("groth16-baked verification failed"),
        "{reason}"
    );
    client.shutdown().await;
    p.shutdown().await;
}
