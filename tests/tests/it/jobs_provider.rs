//! The provider job handler behind a real swarm on 127.0.0.1: a node with the
//! real llama plugin and a generated tiny checkpoint, priced by the real
//! pricing-flat plugin, answering a second node's quote and run requests
//! with results signed by its identity, byte-identical to a local run, never
//! executing one job id twice, and streaming tokens through `Poll`.

use infernet_host::config::Config;
use infernet_host::jobs::ProviderHandler;
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::node::Node;
use infernet_host::p2p::{
    load_or_create_identity, start, ErrorCode, JobBody, JobMessage, NetworkConfig, NetworkHandle,
    PeerId, SharedHandler, WireInput, WireOutput,
};
use infernet_host::runtime::PluginKind;
use infernet_host::store::{JobState, Store};
use infernet_host::worlds::backend::{JobInput, JobOutput, JobRequest};
use infernet_tests::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROMPT: &str = "hello world";
const MAX_TOKENS: &str = "8";

fn provider_node(dir: &Path) -> Arc<Node> {
    let model = dir.join("tiny-llama");
    write_llama_fixture(&LlamaFixtureSpec::tiny(), &model).unwrap();
    let llama = pack_plugin("llama", PluginKind::Backend, dir);
    let pricing = pack_plugin("pricing-flat", PluginKind::Pricing, dir);
    let cfg = write_backend_config(dir, &llama, &[("tiny", &model)], "");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[pricing]\nplugin = {pricing:?}\n[pricing.config]\nper_input_token = \"3\"\nper_output_token = \"7\"\nminimum = \"50\"\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    Arc::new(Node::from_config(&Config::load(&cfg).unwrap()).unwrap())
}

fn params() -> Vec<(String, String)> {
    vec![("max_tokens".into(), MAX_TOKENS.into())]
}

fn quote(job_id: &str, model: &str) -> JobMessage {
    JobMessage::new(JobBody::QuoteRequest {
        job_id: job_id.into(),
        model: model.into(),
        input_tokens: 2,
        max_output_tokens: 8,
        params: params(),
        input: None,
    })
}

fn run(job_id: &str, model: &str, prompt: &str, stream: bool) -> JobMessage {
    JobMessage::new(JobBody::Run {
        job_id: job_id.into(),
        model: model.into(),
        input: WireInput::Text(prompt.into()),
        params: params(),
        stream,
        proof: None,
    })
}

fn error_of(reply: &JobMessage) -> (ErrorCode, String) {
    match &reply.body {
        JobBody::Error(e) => (e.code, e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn send(client: &NetworkHandle, provider: PeerId, msg: JobMessage) -> JobMessage {
    client.send_job(provider, msg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_quotes_runs_signs_and_never_runs_a_job_twice() {
    let (dp, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = provider_node(dp.path());

    // The same job run locally: the reference output.
    let local = node
        .run(
            &JobRequest {
                id: "local".into(),
                model: "tiny".into(),
                input: JobInput::Text(PROMPT.into()),
                params: params(),
            },
            None,
        )
        .unwrap();
    let JobOutput::Text(expected) = local.output else {
        panic!("expected text")
    };
    assert!(!expected.is_empty());

    let key = load_or_create_identity(&dp.path().join("p2p")).unwrap();
    let store = Arc::new(Store::open_in_dir(&dp.path().join("data")).unwrap());
    let handler = ProviderHandler::new(node.clone(), key, store.clone());
    let p = start(
        NetworkConfig::loopback(dp.path().join("p2p")),
        Some(SharedHandler::new(handler.clone())),
    )
    .await
    .unwrap();
    assert_eq!(handler.peer_id(), p.peer_id());
    let client = start(NetworkConfig::loopback(dc.path()), None)
        .await
        .unwrap();
    client
        .dial(p.dialable_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();

    // Quote from the pricing plugin: 2*3 + 8*7 = 62.
    let reply = send(&client, p.peer_id(), quote("job-1", "tiny")).await;
    let JobBody::QuoteOffer {
        job_id,
        price,
        valid_until_ms,
        ..
    } = reply.body
    else {
        panic!("expected a quote: {reply:?}")
    };
    assert_eq!(job_id, "job-1");
    assert_eq!((price.amount, price.currency.as_str()), (62, "USD"));
    assert!(valid_until_ms > infernet_host::p2p::protocol::now_ms());

    // Run: a result signed by the provider, equal to the local run.
    let reply = send(&client, p.peer_id(), run("job-1", "tiny", PROMPT, false)).await;
    let JobBody::Result { output, signed, .. } = reply.body.clone() else {
        panic!("expected a result: {reply:?}")
    };
    assert_eq!(output, WireOutput::Text(expected.clone()));
    assert_eq!(signed.verify_output(&output).unwrap(), p.peer_id());
    let body = &signed.payload;
    assert_eq!(
        (body.job_id.as_str(), body.model_id.as_str()),
        ("job-1", "tiny")
    );
    assert_eq!(body.client, Some(client.peer_id().to_string()));
    assert_eq!(body.usage.output_tokens, local.usage.output_tokens);
    let manifest = &node.backends()[0].plugin.loaded.manifest;
    assert_eq!(body.backend.name, "llama");
    assert_eq!(body.backend.version, manifest.version.to_string());
    assert_eq!(body.backend.sha256, manifest.sha256);

    let record = store.jobs().get("job-1").unwrap().unwrap();
    assert_eq!(record.state, JobState::Delivered);
    assert_eq!(record.client_peer, Some(client.peer_id().to_string()));
    let path: Vec<JobState> = store
        .jobs()
        .events("job-1")
        .unwrap()
        .iter()
        .map(|e| e.to)
        .collect();
    use JobState::*;
    assert_eq!(
        path,
        [Created, Quoted, Escrowed, Assigned, Running, Delivered]
    );

    // The same job id again: the stored result, not a second execution.
    let again = send(&client, p.peer_id(), run("job-1", "tiny", PROMPT, false)).await;
    assert_eq!(again, reply, "a repeated run must return the stored result");
    assert_eq!(store.jobs().events("job-1").unwrap().len(), path.len());
    // The same id for a different request is refused.
    let (code, message) =
        error_of(&send(&client, p.peer_id(), run("job-1", "tiny", "other", false)).await);
    assert_eq!(code, ErrorCode::InvalidRequest, "{message}");
    assert!(message.contains("job-1"), "{message}");

    // Unknown model: a clear error naming what is served, and no job row.
    for msg in [
        quote("job-x", "gpt-9"),
        run("job-x", "gpt-9", PROMPT, false),
    ] {
        let (code, message) = error_of(&send(&client, p.peer_id(), msg).await);
        assert_eq!(code, ErrorCode::UnknownModel);
        assert!(
            message.contains("gpt-9") && message.contains("tiny"),
            "{message}"
        );
    }
    assert!(store.jobs().get("job-x").unwrap().is_none());

    // A backend failure: the plugin's message, and the job marked failed.
    let bad = JobMessage::new(JobBody::Run {
        job_id: "job-bad".into(),
        model: "tiny".into(),
        input: WireInput::Text(PROMPT.into()),
        params: vec![("max_tokens".into(), "lots".into())],
        stream: false,
        proof: None,
    });
    let (code, message) = error_of(&send(&client, p.peer_id(), bad.clone()).await);
    assert_eq!(code, ErrorCode::Internal);
    assert!(message.contains("max_tokens"), "{message}");
    let record = store.jobs().get("job-bad").unwrap().unwrap();
    assert_eq!(record.state, JobState::Failed);
    let (_, again) = error_of(&send(&client, p.peer_id(), bad).await);
    assert!(
        again.contains("failed earlier") && again.contains("max_tokens"),
        "{again}"
    );

    // Streaming: Ack, then tokens through Poll that add up to the text,
    // then the same signed result.
    let ack = send(&client, p.peer_id(), run("job-2", "tiny", PROMPT, true)).await;
    assert_eq!(ack, JobMessage::ack("job-2"));
    let (mut streamed, mut seq) = (String::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        assert!(Instant::now() < deadline, "stream did not finish");
        let poll = JobMessage::new(JobBody::Poll {
            job_id: "job-2".into(),
            after_seq: seq,
        });
        let reply = send(&client, p.peer_id(), poll).await;
        match reply.body {
            JobBody::Progress {
                seq: last, chunks, ..
            } => {
                assert_eq!(last, seq + chunks.len() as u64);
                streamed.extend(chunks);
                seq = last;
            }
            JobBody::Result { output, signed, .. } => break (output, signed),
            other => panic!("unexpected poll reply {other:?}"),
        }
    };
    assert_eq!(result.0, WireOutput::Text(expected.clone()));
    assert_eq!(
        streamed, expected,
        "streamed tokens must add up to the text"
    );
    assert_eq!(result.1.verify_output(&result.0).unwrap(), p.peer_id());
    assert_eq!(
        store.jobs().get("job-2").unwrap().unwrap().state,
        JobState::Delivered
    );
    // Polling an unknown job is a clear error.
    let poll = JobMessage::new(JobBody::Poll {
        job_id: "nope".into(),
        after_seq: 0,
    });
    assert_eq!(
        error_of(&send(&client, p.peer_id(), poll).await).0,
        ErrorCode::UnknownJob
    );

    p.shutdown().await;
    client.shutdown().await;
}
