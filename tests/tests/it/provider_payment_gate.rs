//! The paid provider's gate, spoken to in raw `/infernet/job/2` messages by
//! hostile peers: an echo provider as a real `infernet node start` process
//! paid through the local ledger (`confirm = "client"`, so it takes a
//! client's word for its escrow — the gate is what stands between that
//! word and free work). What must hold: a quote binds its client, job,
//! model and output tokens; one escrow pays one job; only the accepting
//! client may run the job or read its result; only the job's client is
//! heard on receipts.

use infernet_host::p2p::protocol::now_ms;
use infernet_host::p2p::{ErrorCode, JobBody, JobMessage, ReceiptBody, SignedReceipt, WireOutput};
use infernet_host::store::JobState;
use infernet_tests::net::{escrow_rows, job_rows};
use infernet_tests::raw_peer::{is_ack, paid_echo_provider as provider, refused, Peer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotes_bind_client_job_model_and_tokens_and_one_escrow_pays_one_job() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (provider, pdir) = provider(root);
    let alice = Peer::new(root, "alice", &provider).await;
    let mallory = Peer::new(root, "mallory", &provider).await;

    let (quote, price, pay_to) = alice.quote("job-a", "echo", 8).await;
    assert!(price.amount > 0, "the provider is paid: {price:?}");
    // Someone else's quote, or a quote for another job, buys nothing.
    refused(
        &mallory
            .accept("job-a.1", &quote, &price, &pay_to, "esc-m")
            .await,
        "another client or job",
    );
    refused(
        &alice
            .accept("job-b.1", &quote, &price, &pay_to, "esc-a")
            .await,
        "another client or job",
    );
    // Nothing accepted yet: nothing runs.
    refused(
        &alice.run("job-a.1", "echo", Some(8)).await,
        "no accepted quote",
    );
    is_ack(
        &alice
            .accept("job-a.1", &quote, &price, &pay_to, "esc-a")
            .await,
    );
    // Accepting again with the same escrow is idempotent.
    is_ack(
        &alice
            .accept("job-a.1", &quote, &price, &pay_to, "esc-a")
            .await,
    );

    // The same escrow cannot pay a second job.
    let (quote_b, price_b, _) = alice.quote("job-b", "echo", 8).await;
    refused(
        &alice
            .accept("job-b.1", &quote_b, &price_b, &pay_to, "esc-a")
            .await,
        "already pays job-a.1",
    );

    // Only the accepting client runs it, as quoted.
    refused(
        &mallory.run("job-a.1", "echo", Some(8)).await,
        "no accepted quote",
    );
    refused(
        &alice.run("job-a.1", "echo-2", Some(8)).await,
        "quoted for model `echo`",
    );
    refused(
        &alice.run("job-a.1", "echo", Some(9)).await,
        "max_tokens <= 8",
    );
    refused(&alice.run("job-a.1", "echo", None).await, "max_tokens <= 8");
    assert!(job_rows(&pdir).is_empty(), "nothing ran yet");

    let reply = alice.run("job-a.1", "echo", Some(8)).await;
    let JobBody::Result { output, .. } = &reply.body else {
        panic!("expected the result: {reply:?}")
    };
    assert_eq!(output, &WireOutput::Text("pay me".into()));
    // The stored result goes to its own client only.
    let stolen = mallory.run("job-a.1", "echo", Some(8)).await;
    assert!(
        matches!(&stolen.body, JobBody::Error(_)),
        "another peer read the result: {stolen:?}"
    );
    let again = alice.run("job-a.1", "echo", Some(8)).await;
    assert_eq!(
        again.body, reply.body,
        "the client's re-sent Run is answered"
    );
    let ran = job_rows(&pdir);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0].state, JobState::Delivered);
    let earn = escrow_rows(&pdir);
    assert_eq!(earn.len(), 1, "{earn:?}");
    assert_eq!(earn[0].client_peer.as_deref(), Some(alice.id().as_str()));
    drop(provider);
}

/// Receipts are the client's word about money, so only the job's own
/// client is heard: a receipt signed by another peer, or one claiming to be
/// the client but signed with another key, is refused and leaves the
/// provider's earn row as it was; the real client's receipt settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_from_anyone_but_the_jobs_client_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (provider, pdir) = provider(root);
    let honest = Peer::new(root, "honest", &provider).await;
    let forger = Peer::new(root, "forger", &provider).await;
    let job = "receipt-test.1";
    let (quote, price, pay_to) = honest.quote("receipt-test", "echo", 8).await;
    is_ack(
        &honest
            .accept(job, &quote, &price, &pay_to, "ledger-receipt-test.1")
            .await,
    );
    let result = honest.run(job, "echo", Some(8)).await;
    let JobBody::Result { signed, .. } = result.body else {
        panic!("expected a result: {result:?}")
    };
    let earn_status = || {
        escrow_rows(&pdir)
            .into_iter()
            .find(|e| e.id == job)
            .unwrap()
            .status
    };
    assert_eq!(earn_status(), "funded");

    let receipt = |client: &str| ReceiptBody {
        job_id: job.into(),
        output_hash: signed.payload.output_hash.clone(),
        client: client.into(),
        provider: provider.peer.clone(),
        accepted: true,
        timestamp_ms: now_ms(),
        escrow_status: Some("settled".into()),
    };
    // Another peer's own receipt for this job.
    let forged = SignedReceipt::sign(receipt(&forger.id()), &forger.key).unwrap();
    let reply = forger.send(JobBody::Receipt(forged)).await;
    assert!(matches!(reply.body, JobBody::Error(_)), "{reply:?}");
    assert_eq!(earn_status(), "funded");
    // The honest client's name, the forger's key: the provider's network
    // layer refuses it before the handler, with a readable BadSignature.
    let forged = SignedReceipt::sign(receipt(&honest.id()), &forger.key).unwrap();
    let reply = forger
        .net
        .send_job(forger.provider, JobMessage::new(JobBody::Receipt(forged)))
        .await
        .expect("the refusal is an answer");
    match &reply.body {
        JobBody::Error(e) => assert_eq!(e.code, ErrorCode::BadSignature, "{e:?}"),
        other => panic!("expected BadSignature, got {other:?}"),
    }
    assert_eq!(earn_status(), "funded");
    // The client's own receipt.
    let real = SignedReceipt::sign(receipt(&honest.id()), &honest.key).unwrap();
    is_ack(&honest.send(JobBody::Receipt(real)).await);
    assert_eq!(earn_status(), "settled");
    drop(provider);
}
