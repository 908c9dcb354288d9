//! Surge pricing through the network: a provider priced by `pricing-surge`
//! quotes more while it is busy (its queue depth and load reach the plugin),
//! the quote a client accepts is within its budget, and a budget below every
//! quote fails with the cheapest quote named.

use infernet_host::config::Config;
use infernet_host::p2p::{JobBody, JobMessage};
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{Amount, ClientError, InferOptions, Infernet};
use infernet_tests::net::{client_toml, echo_provider_toml};
use infernet_tests::pack_plugin;
use std::time::{Duration, Instant};

async fn quote(client: &Infernet, provider: infernet_host::p2p::PeerId) -> u64 {
    let reply = client
        .network()
        .send_job(
            provider,
            JobMessage::new(JobBody::QuoteRequest {
                job_id: format!("probe-{}", infernet_host::node::new_job_id()),
                model: "echo".into(),
                input_tokens: 4,
                max_output_tokens: 10,
                params: vec![],
                input: None,
            }),
        )
        .await
        .unwrap();
    match reply.body {
        JobBody::QuoteOffer {
            price, breakdown, ..
        } => {
            assert_eq!(breakdown.iter().map(|(_, v)| v).sum::<u64>(), price.amount);
            price.amount
        }
        other => panic!("expected a quote, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_surge_provider_quotes_more_and_budgets_hold() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let plugins = root.join("plugins");
    let surge = pack_plugin("pricing-surge", PluginKind::Pricing, &plugins);
    // An echo provider, re-priced with pricing-surge: +50% per queued job, capped at 2x.
    let path = echo_provider_toml(root, "p0", 10, &[]);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        &format!("plugin = {:?}\n[pricing.config]", plugins.join("pricing-flat")),
        &format!(
            "plugin = {surge:?}\n[pricing.config]\nsurge_per_queued_job_permille = 500\nmax_multiplier_permille = 2000"
        ),
    );
    assert!(text.contains("surge_per_queued_job_permille"), "{text}");
    std::fs::write(&path, text).unwrap();
    let provider = Infernet::new(Config::load(&path).unwrap())
        .start()
        .await
        .unwrap();
    let boot = vec![provider.dialable_addrs().await.unwrap()[0].to_string()];
    let client = Infernet::new(Config::load(&client_toml(root, "c", &boot, "")).unwrap())
        .start()
        .await
        .unwrap();
    let peer = provider.peer_id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .network()
        .providers_of("echo")
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "provider not discovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Idle: the flat price, 4*1 + 10*10 = 104 micro-USD.
    let idle = quote(&client, peer).await;
    assert_eq!(idle, 104);

    // Busy: one slow job running -> queue depth 1 -> 1.5x (rounded up).
    let slow = {
        let c = client.client().clone();
        tokio::spawn(async move {
            c.submit(
                "echo",
                infernet_host::p2p::WireInput::Text("a b c d e f".into()),
                &InferOptions {
                    params: vec![("delay_ms".into(), "300".into())],
                    ..Default::default()
                },
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = loop {
        let q = quote(&client, peer).await;
        if q > idle {
            break q;
        }
        assert!(
            Instant::now() < deadline,
            "the quote never rose while a job ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(busy, 156, "104 * 1.5 while one job runs");
    let out = slow.await.unwrap().unwrap();
    assert_eq!(
        out.output,
        infernet_host::p2p::WireOutput::Text("a b c d e f".into())
    );
    // Idle again: back to the flat price.
    assert_eq!(quote(&client, peer).await, idle);

    // A budget below every quote: a clear error naming the cheapest.
    let err = client
        .infer(
            "echo",
            "x",
            InferOptions {
                max_tokens: Some(10),
                max_budget: Some(Amount::parse("0.000005", "USD").unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::OverBudget { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cheapest seen: 0.0001") && text.contains(&peer.to_string()),
        "{text}"
    );
    client.shutdown().await;
    provider.shutdown().await;
}
