//! Batch sharding over a real network (issue #18, point 5): a batch of
//! texts to embed split across three providers of all-MiniLM-L6-v2, each
//! shard a paid job of its own, merged in input order; one provider dies
//! while it runs its shard, which completes on another provider.

use infernet_host::models::reference::{cosine, NativeBert};
use infernet_host::p2p::WireOutput;
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::{Amount, ClientError, InferOptions};
use infernet_tests::net::{
    cli, client_toml, ledger_balance, start_node, wait_for_providers, with_ledger, NodeProc, FUNDED,
};
use infernet_tests::{minilm_dir, pack_plugin};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// `<root>/<name>.toml`: a provider of `minilm` (the bert plugin on the
/// real weights), priced per input token, paid through the ledger.
fn bert_provider(root: &Path, name: &str, boot: &[String]) -> PathBuf {
    let plugins = root.join("plugins");
    if !plugins.join("bert/infernet-plugin.toml").exists() {
        pack_plugin("bert", PluginKind::Backend, &plugins);
        pack_plugin("pricing-flat", PluginKind::Pricing, &plugins);
    }
    let boot: Vec<String> = boot.iter().map(|b| format!("{b:?}")).collect();
    let text = format!(
        "[node]\ndata_dir = {data:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{boot}]\nadvert_interval_secs = 1\n\n\
         [[backend]]\nplugin = {bert:?}\n[[backend.models]]\nid = \"minilm\"\npath = {model:?}\n\n\
         [pricing]\nplugin = {pricing:?}\n[pricing.config]\nper_input_token = 3\nminimum = 20\n",
        data = root.join(name),
        boot = boot.join(", "),
        bert = plugins.join("bert"),
        model = minilm_dir(),
        pricing = plugins.join("pricing-flat"),
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    with_ledger(&path, root, "confirm = \"client\"")
}

const TEXTS: [&str; 7] = [
    "A man is playing a guitar.",
    "The stock market fell sharply today.",
    "Three dogs run across a snowy field.",
    "She ordered a coffee and a croissant.",
    "The committee postponed its vote until Friday.",
    "Rain is expected over the weekend.",
    "He fixed the bicycle's flat tyre.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_is_sharded_across_providers_paid_per_shard_and_merged_in_order() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let p0 = start_node(&bert_provider(root, "p0", &[])).await;
    let boot = vec![p0.dialable_addrs().await.unwrap()[0].to_string()];
    let p1 = start_node(&bert_provider(root, "p1", &boot)).await;
    // The third dies as soon as it starts running a job.
    let mut p2 = NodeProc::start_with_env(
        &bert_provider(root, "p2", &boot),
        &[("INFERNET_CRASH_AFTER", "provider-running")],
    );
    let config = with_ledger(&client_toml(root, "client", &boot, ""), root, "");
    cli(&config, &["wallet", "fund", "1"]);
    let client = start_node(&config).await;
    wait_for_providers(&client, "minilm", 3).await;

    let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    let opts = InferOptions {
        max_budget: Some(Amount::parse("0.01", "USD").unwrap()),
        ..Default::default()
    };
    let out = client
        .submit_sharded("minilm", texts.clone(), opts.clone(), 3)
        .await
        .unwrap();

    // Three shards of 3, 2 and 2 texts, in order, on three providers.
    let items: Vec<_> = out.shards.iter().map(|s| s.items.clone()).collect();
    assert_eq!(items, [0..3, 3..5, 5..7]);
    // The shard that asked the dying provider first completed elsewhere.
    let served: Vec<String> = out
        .shards
        .iter()
        .map(|s| s.outcome.provider.to_string())
        .collect();
    assert!(!served.contains(&p2.peer), "{served:?}");
    let moved: Vec<_> = out
        .shards
        .iter()
        .filter(|s| s.outcome.attempts > 1)
        .collect();
    assert_eq!(moved.len(), 1, "exactly one shard moved: {served:?}");
    assert!(
        p2.child.try_wait().unwrap().is_some(),
        "the third provider ran a shard and died"
    );
    let live: HashSet<String> = [p0.peer_id().to_string(), p1.peer_id().to_string()].into();
    assert_eq!(served.iter().cloned().collect::<HashSet<_>>(), live);

    // Merged in order: each vector is its own text's (native candle BERT).
    let WireOutput::Embeddings(vectors) = &out.output else {
        panic!("not embeddings: {:?}", out.output)
    };
    assert_eq!(vectors.len(), TEXTS.len());
    let native = NativeBert::load(&minilm_dir(), &candle_core::Device::Cpu).unwrap();
    for (i, text) in TEXTS.iter().enumerate() {
        let reference = native.embed(text).unwrap();
        let c = cosine(&vectors[i], &reference);
        assert!(
            c >= 0.99999,
            "text {i}: cosine to its own native embedding {c}"
        );
        let other = cosine(&vectors[(i + 1) % TEXTS.len()], &reference);
        assert!(
            other < 0.9,
            "text {i} is distinguishable from its neighbour ({other})"
        );
    }

    // Paid per shard: the total is the shards' prices, each within its
    // share of the budget, and the client's ledger paid exactly that.
    let total: u64 = out.shards.iter().map(|s| s.outcome.price.amount).sum();
    assert_eq!(out.price.len(), 1);
    assert_eq!(
        (out.price[0].amount, out.price[0].currency.as_str()),
        (total, "USD")
    );
    for s in &out.shards {
        let share = 10_000 * s.items.len() as u64 / TEXTS.len() as u64;
        assert!(
            s.outcome.price.amount <= share,
            "{} > {share}",
            s.outcome.price.amount
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ledger_balance(&client) != FUNDED - total {
        assert!(
            std::time::Instant::now() < deadline,
            "client paid {} for shards costing {total}",
            FUNDED - ledger_balance(&client)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A budget too small for any shard fails clearly, naming the budget;
    // so does an empty batch.
    let tiny = InferOptions {
        max_budget: Some(Amount::parse("0.00003", "USD").unwrap()),
        ..Default::default()
    };
    let e = client
        .submit_sharded("minilm", texts, tiny, 2)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::OverBudget { .. }), "{e}");
    let e = client
        .submit_sharded("minilm", vec![], opts, 2)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1 to"), "{e}");
    p2.kill();
}
