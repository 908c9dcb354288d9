//! The verifier role (`infernet verifier start`) over real nodes. A client
//! with `[verify] verifiers` sends a drawn spot check's second execution
//! to a verifier (paid from the verification price like any replica),
//! never its ordinary jobs; the verifier audits the provider's result
//! against its own run and gossips a signed attestation; with no verifier
//! left, the check falls back to another provider. A cheat the verifier
//! re-ran goes to the client's referee. Each audit edge is refused: a
//! stranger's audit, an unpaid one, the verifier's own result, a forged
//! result, a result of another job, a node that is no verifier.

use infernet_host::config::{Config, Role};
use infernet_host::p2p::protocol::{
    now_ms, Encoded, ErrorCode, JobBody, JobMessage, ReceiptBody, SignedReceipt, SignedResult,
};
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{InferOptions, Infernet, Verdict, VerifyPolicy};
use infernet_host::store::Store;
use infernet_host::verify::evidence::{decode_result, Evidence};
use infernet_tests::net::{
    echo_provider_toml, funded_client, ledger_balance, llama_node_toml, paid_providers, pay_escrow,
    wait_for_providers, with_ledger, NodeProc, FUNDED,
};
use infernet_tests::raw_peer::Peer;
use infernet_tests::{pack_cheat, pack_plugin};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn spot_check() -> InferOptions {
    InferOptions {
        verify: Some(VerifyPolicy::SpotCheck(1.0)),
        max_tokens: Some(6),
        ..Default::default()
    }
}

/// Waits (20 s at most) until `store` holds an attestation signed by
/// `attester` about `subject`; its outcome.
async fn attested(store: &Store, attester: &str, subject: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = store.attestations().by(attester, 0, 100).unwrap();
        if let Some(a) = rows.iter().find(|a| a.subject == subject) {
            return a.outcome.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no attestation by {attester} of {subject}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verifier_reruns_drawn_spot_checks_for_its_price_attests_and_takes_no_ordinary_job() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = paid_providers(root, &[10, 12]);
    let boot = vec![providers[0].addr.clone()];
    // The verifier is the cheapest node: only the client's rules keep its
    // ordinary jobs away from it.
    let vcfg = echo_provider_toml(root, "verifier", 3, &boot);
    with_ledger(&vcfg, root, "confirm = \"client\"");
    let mut verifier = NodeProc::start_verifier(&vcfg);
    let extra = format!(
        "[verify]\nverifiers = [\"{}\"]\n[client]\ndiscovery_timeout_ms = 1500\n",
        verifier.peer
    );
    let config = funded_client(root, &boot, &extra);
    let client = Infernet::new(Config::load(&config).unwrap())
        .start()
        .await
        .unwrap();
    wait_for_providers(&client, "echo", 3).await;
    let store = client.store().clone();

    // 1. Ordinary jobs never go to the verifier.
    let mut paid = 0;
    for _ in 0..3 {
        let out = client
            .infer("echo", "plain job", InferOptions::default())
            .await
            .unwrap();
        assert_ne!(out.provider.to_string(), verifier.peer);
        paid += out.price.amount;
    }

    // 2. A drawn spot check runs its second execution on the verifier,
    //    paid like a replica; the verifier audits and attests.
    let out = client
        .infer("echo", "checked job", spot_check())
        .await
        .unwrap();
    let v = out.verification.clone().unwrap();
    assert!(v.checked, "{v:?}");
    assert_eq!(v.verdict, Verdict::Agreed, "{v:?}");
    let (first, check) = (&v.replicas[0], &v.replicas[1]);
    assert_ne!(first.provider.to_string(), verifier.peer);
    assert_eq!(check.provider.to_string(), verifier.peer, "{v:?}");
    assert_eq!(v.cost, vec![check.price.clone()], "the verifier's price");
    let note = v.audit.clone().expect("the verifier audited");
    assert_eq!(note.verifier, verifier.peer);
    assert_eq!(note.agreed, Some(true), "{note:?}");
    assert!(note.attested && note.error.is_none(), "{note:?}");
    for r in &v.replicas {
        let (status, amount) = pay_escrow(&store, &r.job_id);
        assert_eq!(status, "settled", "{r:?}");
        assert_eq!(amount, r.price.amount);
        paid += amount;
    }
    assert_eq!(ledger_balance(&client), FUNDED - paid);
    // The verifier's signed attestation reaches the client by gossip.
    let outcome = attested(&store, &verifier.peer, &first.provider.to_string()).await;
    assert_eq!(outcome, "verified");

    // 2b. The verifier audits only paid work: a bare client that took a
    //     run from it without releasing the escrow gets nothing; once it
    //     says released, the audit goes on to check the result (here the
    //     verifier's own, refused as such).
    let raw = Peer::to(root, "raw", &verifier.addr, verifier.peer.parse().unwrap()).await;
    let (quote, price, pay_to) = raw.quote("raw-1", "echo", 8).await;
    raw.accept("raw-1.1", &quote, &price, &pay_to, "ledger-raw-1")
        .await;
    let own = match raw.run("raw-1.1", "echo", Some(8)).await.body {
        JobBody::Result { signed, .. } => signed,
        other => panic!("{other:?}"),
    };
    let ask_raw = |result: SignedResult| {
        let net = raw.net.clone();
        let to = raw.provider;
        async move {
            net.verify_request(to, JobMessage::new(audit("raw-1.1", &result)))
                .await
                .unwrap()
                .body
        }
    };
    refused(
        ask_raw(own.clone()).await,
        ErrorCode::PaymentRequired,
        "not paid",
    );
    let receipt = SignedReceipt::sign(
        ReceiptBody {
            job_id: "raw-1.1".into(),
            output_hash: own.payload.output_hash.clone(),
            client: raw.id(),
            provider: verifier.peer.clone(),
            accepted: true,
            timestamp_ms: now_ms(),
            escrow_status: Some("released".into()),
        },
        &raw.key,
    )
    .unwrap();
    raw.send(JobBody::Receipt(receipt)).await;
    refused(
        ask_raw(own).await,
        ErrorCode::InvalidRequest,
        "this verifier's own",
    );

    // 3. With the verifier gone, a check falls back to another provider.
    verifier.kill();
    let out = client
        .infer("echo", "checked again", spot_check())
        .await
        .unwrap();
    let v = out.verification.unwrap();
    assert_eq!(v.verdict, Verdict::Agreed, "{v:?}");
    let peers: Vec<String> = v.replicas.iter().map(|r| r.provider.to_string()).collect();
    assert!(!peers.contains(&verifier.peer), "{peers:?}");
    assert_ne!(peers[0], peers[1]);
    assert!(v.audit.is_none(), "{v:?}");
    client.shutdown().await;
}

async fn start(config: PathBuf, roles: Option<Vec<Role>>) -> Infernet {
    let mut c = Config::load(&config).unwrap();
    if let Some(roles) = roles {
        c.node.roles = roles;
    }
    Infernet::new(c).start().await.unwrap()
}

/// Sends `body` to `peer` over `/infernet/verify/1` from `from`.
async fn ask(from: &Infernet, peer: &Infernet, body: JobBody) -> JobBody {
    from.network()
        .verify_request(peer.peer_id(), JobMessage::new(body))
        .await
        .unwrap()
        .body
}

fn refused(reply: JobBody, code: ErrorCode, says: &str) {
    match reply {
        JobBody::Error(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert!(e.message.contains(says), "{e:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn audit(job_id: &str, result: &SignedResult) -> JobBody {
    JobBody::Audit {
        job_id: job_id.to_string(),
        result: Box::new(result.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cheat_the_verifier_reran_goes_to_the_referee_and_every_audit_edge_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let honest = pack_plugin("llama", PluginKind::Backend, &root.join("plugins"));
    let cheat = pack_cheat("perturb", root);
    let node = |name: &str, plugin: &Path, boot: &[String], extra: &str| {
        llama_node_toml(root, name, plugin, boot, extra)
    };
    let liar = start(node("liar", &cheat, &[], ""), None).await;
    let boot = vec![liar.dialable_addrs().await.unwrap()[0].to_string()];
    let verifier = start(
        node("verifier", &honest, &boot, ""),
        Some(vec![Role::Verifier]),
    )
    .await;
    let honest_sha = verifier
        .provider()
        .unwrap()
        .backend_sha256("tiny-llama")
        .unwrap();
    liar.provider()
        .unwrap()
        .claim_backend_sha256_for_tests(&honest_sha);
    let referee = start(
        node("referee", &honest, &boot, "\n[verify]\nreferee = true\n"),
        None,
    )
    .await;
    let extra = format!(
        "[verify]\nreferees = [\"{}\"]\nverifiers = [\"{}\"]\n",
        referee.peer_id(),
        verifier.peer_id()
    );
    let client = start(
        infernet_tests::net::client_toml(root, "client", &boot, &extra),
        None,
    )
    .await;
    wait_for_providers(&client, "tiny-llama", 3).await;

    // The liar runs the job, the verifier the check; they disagree, and
    // the referee (not the verifier, a party) rules.
    let out = client
        .infer("tiny-llama", "hello world", spot_check())
        .await
        .unwrap();
    let v = out.verification.clone().unwrap();
    let Verdict::Cheated {
        providers,
        evidence,
    } = &v.verdict
    else {
        panic!("expected the cheat caught: {v:?}")
    };
    assert_eq!(providers, &vec![liar.peer_id().to_string()]);
    assert_eq!(
        out.provider,
        verifier.peer_id(),
        "the verifier's run is returned"
    );
    let evidence: Evidence = serde_json::from_slice(&std::fs::read(evidence).unwrap()).unwrap();
    assert_eq!(evidence.ruling.referee, referee.peer_id().to_string());
    let audit_note = v.audit.clone().expect("a verifier re-ran the check");
    assert_eq!(audit_note.agreed, None, "{audit_note:?}");
    assert!(!audit_note.attested);

    // The two signed results, as the evidence carries them.
    let results: Vec<SignedResult> = evidence
        .results
        .iter()
        .map(|r| decode_result(r).unwrap())
        .collect();
    let lie = results
        .iter()
        .find(|r| r.payload.provider == liar.peer_id().to_string())
        .unwrap()
        .clone();
    let mine = out.signed.clone();
    let job = mine.payload.job_id.clone();

    // The client's own audit of the lie: the verifier's run contradicts
    // it, so it answers `agreed: false` and attests nothing.
    match ask(&client, &verifier, audit(&job, &lie)).await {
        JobBody::Audited {
            agreed,
            attestation,
            ..
        } => assert!(!agreed && attestation.is_none()),
        other => panic!("{other:?}"),
    }
    // The verifier's own result is no audit.
    refused(
        ask(&client, &verifier, audit(&job, &mine)).await,
        ErrorCode::InvalidRequest,
        "this verifier's own",
    );
    // A forged result (the lie with the verifier's output hash).
    let mut body = lie.payload.value().clone();
    body.output_hash = mine.payload.output_hash.clone();
    body.trace_root = mine.payload.trace_root.clone();
    let forged = SignedResult {
        payload: Encoded::new(body).unwrap(),
        ..lie.clone()
    };
    refused(
        ask(&client, &verifier, audit(&job, &forged)).await,
        ErrorCode::BadSignature,
        "",
    );
    // Another node cannot audit the client's job: to it, it does not exist.
    refused(
        ask(&referee, &verifier, audit(&job, &lie)).await,
        ErrorCode::UnknownJob,
        &job,
    );
    // A node that is no verifier answers no audit.
    refused(
        ask(&client, &referee, audit(&job, &lie)).await,
        ErrorCode::InvalidRequest,
        "not a verifier",
    );
    // And an ordinary job never went to the verifier.
    let plain = client
        .infer(
            "tiny-llama",
            "hello",
            InferOptions {
                max_tokens: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(plain.provider, verifier.peer_id());
    // Another provider's result for this client, but of another job: the
    // verifier's run does not vouch for it.
    refused(
        ask(&client, &verifier, audit(&job, &plain.signed)).await,
        ErrorCode::InvalidRequest,
        "not of the job",
    );
    for n in [client, referee, verifier, liar] {
        n.shutdown().await;
    }
}
