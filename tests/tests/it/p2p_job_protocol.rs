//! `/infernet/job/2` between real swarms on 127.0.0.1: signed results,
//! version checks, and hostile bytes (malformed, oversized) that must close
//! only their own stream while the node keeps serving.

use infernet_host::p2p::codec::{frame, varint};
use infernet_host::p2p::libp2p::futures::StreamExt;
use infernet_host::p2p::libp2p::identity::Keypair;
use infernet_host::p2p::libp2p::swarm::SwarmEvent;
use infernet_host::p2p::protocol::{decode, encode, now_ms, Encoded};
use infernet_host::p2p::{
    load_or_create_identity, start, BackendRef, ErrorCode, JobBody, JobHandler, JobMessage,
    NetworkConfig, NetworkError, NetworkEvent, NetworkHandle, PeerId, ResultBody, SharedHandler,
    SignedResult, Usage, WireInput, WireOutput,
};
use infernet_tests::raw_swarm::{raw_request, raw_swarm};
use std::path::Path;
use std::time::{Duration, Instant};

/// Echoes a `Run`'s text back as a result signed with `key`.
struct EchoHandler {
    key: Keypair,
}

impl JobHandler for EchoHandler {
    async fn handle(&self, from: PeerId, msg: JobMessage) -> JobMessage {
        match msg.body {
            JobBody::Run {
                job_id,
                model,
                input: WireInput::Text(text),
                ..
            } => {
                let output = Encoded::new(WireOutput::Text(text.to_uppercase())).unwrap();
                let body = ResultBody {
                    job_id,
                    model_id: model,
                    output_hash: output.hash(),
                    usage: Usage {
                        input_tokens: text.len() as u32,
                        output_tokens: text.len() as u32,
                    },
                    backend: BackendRef {
                        name: "echo".into(),
                        version: "1.0.0".into(),
                        sha256: "00".repeat(32),
                    },
                    provider: self.key.public().to_peer_id().to_string(),
                    client: Some(from.to_string()),
                    timestamp_ms: now_ms(),
                    trace_root: None,
                    proof_hash: None,
                    binds: None,
                };
                let signed = SignedResult::sign(body, &self.key).expect("sign");
                JobMessage::new(JobBody::Result {
                    output,
                    signed,
                    proof: None,
                })
            }
            JobBody::Run { job_id, .. } => {
                JobMessage::error(Some(job_id), ErrorCode::InvalidRequest, "text only")
            }
            JobBody::Cancel { job_id, .. } => {
                // Slow path: outlives the handler timeout in the timeout test.
                tokio::time::sleep(Duration::from_secs(5)).await;
                JobMessage::ack(job_id)
            }
            _ => JobMessage::ack(msg.job_id().unwrap_or("none")),
        }
    }
}

/// Signs with a key that is not the provider's.
struct ImpostorHandler;

impl JobHandler for ImpostorHandler {
    async fn handle(&self, _from: PeerId, _msg: JobMessage) -> JobMessage {
        let key = Keypair::generate_ed25519();
        let output = Encoded::new(WireOutput::Text("trust me".into())).unwrap();
        let body = ResultBody {
            job_id: "j".into(),
            model_id: "m".into(),
            output_hash: output.hash(),
            usage: Usage::default(),
            backend: BackendRef {
                name: "x".into(),
                version: "0.0.0".into(),
                sha256: String::new(),
            },
            provider: key.public().to_peer_id().to_string(),
            client: None,
            timestamp_ms: now_ms(),
            trace_root: None,
            proof_hash: None,
            binds: None,
        };
        JobMessage::new(JobBody::Result {
            output,
            signed: SignedResult::sign(body, &key).unwrap(),
            proof: None,
        })
    }
}

fn run(job_id: &str, text: &str) -> JobMessage {
    JobMessage::new(JobBody::Run {
        job_id: job_id.into(),
        model: "tiny".into(),
        input: WireInput::Text(text.into()),
        params: vec![("max_tokens".into(), "8".into())],
        stream: false,
        proof: None,
    })
}

async fn provider(dir: &Path, config: impl FnOnce(&mut NetworkConfig)) -> NetworkHandle {
    let key = load_or_create_identity(dir).unwrap();
    let mut cfg = NetworkConfig::loopback(dir);
    config(&mut cfg);
    start(cfg, Some(SharedHandler::new(EchoHandler { key })))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_results_round_trip_and_forgeries_are_refused() {
    let (dp, dc, di) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let p = provider(dp.path(), |_| {}).await;
    let client = start(NetworkConfig::loopback(dc.path()), None)
        .await
        .unwrap();
    client
        .dial(p.dialable_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();

    let t0 = Instant::now();
    let reply = client
        .send_job(p.peer_id(), run("j1", "hello"))
        .await
        .unwrap();
    let first = t0.elapsed();
    let JobBody::Result { output, signed, .. } = reply.body else {
        panic!("expected a result: {reply:?}")
    };
    assert_eq!(output, WireOutput::Text("HELLO".into()));
    assert_eq!(signed.verify_output(&output).unwrap(), p.peer_id());
    assert_eq!(
        signed.payload.client.as_deref(),
        Some(client.peer_id().to_string().as_str())
    );

    let t0 = Instant::now();
    for i in 0..50 {
        let r = client
            .send_job(p.peer_id(), run(&format!("j{i}"), "x"))
            .await
            .unwrap();
        assert!(matches!(r.body, JobBody::Result { .. }));
    }
    eprintln!(
        "job round trip on loopback: first {first:?}, then {:?} mean over 50",
        t0.elapsed() / 50
    );

    // Unknown version: answered with an error, handler not called.
    let mut v99 = run("v", "x");
    v99.version = 99;
    let r = client.send_job(p.peer_id(), v99).await.unwrap();
    assert!(
        matches!(r.body, JobBody::Error(ref e) if e.code == ErrorCode::UnsupportedVersion),
        "{r:?}"
    );
    assert_eq!(p.metrics().job_requests_rejected, 1);

    // A result signed by someone else is refused before the caller sees it.
    let impostor = start(
        NetworkConfig::loopback(di.path()),
        Some(SharedHandler::new(ImpostorHandler)),
    )
    .await
    .unwrap();
    client
        .dial(impostor.dialable_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();
    match client.send_job(impostor.peer_id(), run("j", "x")).await {
        Err(NetworkError::BadSignature { reason, .. }) => {
            assert!(reason.contains("signed by"), "{reason}")
        }
        other => panic!("expected BadSignature, got {other:?}"),
    }

    for n in [&p, &client, &impostor] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_times_out_with_an_error_reply() {
    let (dp, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = provider(dp.path(), |c| {
        c.handler_timeout = Duration::from_millis(300)
    })
    .await;
    let client = start(NetworkConfig::loopback(dc.path()), None)
        .await
        .unwrap();
    client
        .dial(p.dialable_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();
    let cancel = JobMessage::new(JobBody::Cancel {
        job_id: "slow".into(),
        reason: "test".into(),
    });
    let r = client.send_job(p.peer_id(), cancel).await.unwrap();
    assert!(
        matches!(r.body, JobBody::Error(ref e) if e.code == ErrorCode::Timeout),
        "{r:?}"
    );
    // And the next request is served normally.
    let r = client
        .send_job(p.peer_id(), run("after", "ok"))
        .await
        .unwrap();
    assert!(matches!(r.body, JobBody::Result { .. }));
    p.shutdown().await;
    client.shutdown().await;
}

async fn next_inbound_failure(
    events: &mut tokio::sync::broadcast::Receiver<NetworkEvent>,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("no inbound failure event")
        {
            Ok(NetworkEvent::InboundJobFailure { reason, .. }) => return reason,
            Ok(_) => {}
            Err(e) => panic!("event stream: {e}"),
        }
    }
}

/// The answer to a raw request: one varint-framed `JobMessage`.
fn framed_reply(bytes: &[u8]) -> JobMessage {
    let mut len = 0usize;
    let mut i = 0;
    loop {
        let b = bytes[i];
        len |= ((b & 0x7f) as usize) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(bytes.len(), i + len, "one frame, nothing after it");
    decode(&bytes[i..]).expect("the answer is one CBOR JobMessage")
}

/// The `Error` a raw request was answered with: its code and message.
fn error_reply(r: Result<Vec<u8>, String>) -> (ErrorCode, String) {
    let bytes = r.expect("a malformed frame gets an answer");
    match framed_reply(&bytes).body {
        JobBody::Error(e) => (e.code, e.message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_get_a_readable_error_and_close_only_their_stream() {
    let dp = tempfile::tempdir().unwrap();
    let p = provider(dp.path(), |_| {}).await;
    let mut events = p.subscribe();
    let addr = p.dialable_addrs().await.unwrap()[0].clone();

    let mut raw = raw_swarm();
    raw.dial(addr).unwrap();
    let provider_id = p.peer_id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, raw.select_next_some())
            .await
            .expect("raw peer connects");
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = ev {
            assert_eq!(peer_id, provider_id);
            break;
        }
    }

    // 1. A well-framed body that is not CBOR.
    let t0 = Instant::now();
    let r = raw_request(
        &mut raw,
        provider_id,
        frame(&[0xff, 0x13, 0x37, 0x00, 0xde]),
    )
    .await;
    let (code, message) = error_reply(r);
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("malformed"), "{message}");
    let reason = next_inbound_failure(&mut events).await;
    assert!(reason.contains("malformed"), "logged reason: {reason}");

    // 2. Valid CBOR, wrong shape.
    let body = encode(&("not", "a", "job message")).unwrap();
    let (code, message) = error_reply(raw_request(&mut raw, provider_id, frame(&body)).await);
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("malformed"), "{message}");
    next_inbound_failure(&mut events).await;

    // 3. A frame declaring more than the 1 MiB request cap: refused from
    // its length, before the body is read (the raw writer sends the
    // length and the body's first bytes, then waits for the answer).
    let big = run("big", &"a".repeat(2 * 1024 * 1024));
    let big_body = encode(&big).unwrap();
    let mut oversized = varint(big_body.len());
    oversized.extend_from_slice(&big_body[..64]);
    let (code, message) = error_reply(raw_request(&mut raw, provider_id, oversized).await);
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("exceeds"), "{message}");
    let reason = next_inbound_failure(&mut events).await;
    assert!(reason.contains("exceeds"), "logged reason: {reason}");

    // 4. A message without the length prefix (protocol 1's framing): its
    // first bytes read as a length the stream never delivers, and the
    // answer says what a frame is.
    let unframed = encode(&run("v1", "hello")).unwrap();
    let (code, message) = error_reply(raw_request(&mut raw, provider_id, unframed).await);
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("varint length"), "{message}");
    next_inbound_failure(&mut events).await;

    // 5. The same connection still carries a valid request.
    let reply = raw_request(
        &mut raw,
        provider_id,
        frame(&encode(&run("ok", "still here")).unwrap()),
    )
    .await
    .unwrap();
    let reply = framed_reply(&reply);
    let JobBody::Result { output, signed, .. } = reply.body else {
        panic!("expected a result: {reply:?}")
    };
    assert_eq!(output, WireOutput::Text("STILL HERE".into()));
    assert_eq!(signed.verify_output(&output).unwrap(), provider_id);
    assert!(
        raw.is_connected(&provider_id),
        "the connection survived the bad streams"
    );
    eprintln!("hostile job streams handled in {:?}", t0.elapsed());

    let m = p.metrics();
    assert_eq!(m.job_inbound_failures, 4, "{m:?}");
    assert_eq!(m.job_requests_served, 1, "{m:?}");

    // A well-behaved client still gets served too.
    let dc = tempfile::tempdir().unwrap();
    let client = start(NetworkConfig::loopback(dc.path()), None)
        .await
        .unwrap();
    client
        .dial(p.dialable_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();
    let r = client.send_job(provider_id, run("c", "hi")).await.unwrap();
    assert!(matches!(r.body, JobBody::Result { .. }));
    // And the client's own writer refuses to send an oversized request.
    match client.send_job(provider_id, big).await {
        Err(NetworkError::Request { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("oversized send must fail locally: {other:?}"),
    }
    p.shutdown().await;
    client.shutdown().await;
}
