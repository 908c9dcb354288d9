//! The OpenAI-compatible API (`host/src/api`) against a real local
//! network, driven by the official `openai` Python client: one provider
//! (llama on the tiny fixture with a chat template, bert on the real
//! all-MiniLM-L6-v2, the hostile plugin as a provider that fails), a
//! client node serving the API with a hashed key, and one Python process
//! (`tests/python/openai_api_check.py`) checking chat, completions,
//! streaming rule by rule, seeds, stops, embeddings, every error, spending
//! limits and a client leaving mid-stream (echo, slowed down). Here:
//! the usage it saw equals the provider's signed usage, the job it left is
//! cancelled, its embeddings match native candle BERT, the CLI refuses an
//! open API, and `node start` serves `[api] listen`.

use infernet_host::models::reference::{cosine, NativeBert};
use infernet_host::p2p::protocol::{decode, SignedResult};
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::Infernet;
use infernet_host::store::JobState;
use infernet_tests::net::start_node as start;
use infernet_tests::net::{
    client_toml, infernet_bin, llama_node_toml, wait_for_providers, NodeProc,
};
use infernet_tests::postgrest::request;
use infernet_tests::{minilm_dir, pack_plugin, python, repo_root};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "sk-infernet-test-key";
/// A key whose spending limit fits one job (the price floor, 100 µUSD).
const LIMITED: &str = "sk-infernet-limited-key";
/// A `read_only` key: may look, may not run jobs.
const WATCH: &str = "sk-infernet-watch-key";

/// A llama-style template, as `tokenizer_config.json` carries it.
const TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content.strip() }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

fn provider_toml(root: &Path) -> std::path::PathBuf {
    let plugins = root.join("plugins");
    for (name, kind) in [
        ("llama", PluginKind::Backend),
        ("bert", PluginKind::Backend),
        ("hostile", PluginKind::Backend),
        ("echo", PluginKind::Backend),
        ("pricing-flat", PluginKind::Pricing),
    ] {
        pack_plugin(name, kind, &plugins);
    }
    let broken = infernet_tests::net::empty_model_dir(&root.join("broken-model"));
    let echo = infernet_tests::net::empty_model_dir(&root.join("echo-model"));
    let extra = format!(
        "[[backend]]\nplugin = {bert:?}\n[[backend.models]]\nid = \"minilm\"\npath = {minilm:?}\n\n\
         [[backend]]\nplugin = {hostile:?}\n[[backend.models]]\nid = \"broken\"\npath = {broken:?}\n\n\
         [[backend]]\nplugin = {echo_plugin:?}\n[[backend.models]]\nid = \"echo\"\npath = {echo:?}\n\n\
         [pricing]\nplugin = {pricing:?}\n[pricing.config]\nper_input_token = 1\nper_output_token = 2\nminimum = 100\n",
        bert = plugins.join("bert"),
        minilm = minilm_dir(),
        hostile = plugins.join("hostile"),
        echo_plugin = plugins.join("echo"),
        pricing = plugins.join("pricing-flat"),
    );
    let path = llama_node_toml(root, "provider", &plugins.join("llama"), &[], &extra);
    let tok =
        serde_json::json!({"chat_template": TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"});
    std::fs::write(
        root.join("tiny-llama/tokenizer_config.json"),
        tok.to_string(),
    )
    .unwrap();
    path
}

/// A `read_only` key reads the dashboard, `/metrics` and `/v1/models`,
/// and every endpoint that runs a job refuses it (403) before any job exists.
async fn read_only_key_looks_but_runs_nothing(client: &Infernet, url: &str) {
    let before = client.jobs(500).unwrap().len();
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let auth = format!("Bearer {WATCH}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        for path in ["/v1/models", "/metrics", "/dashboard/api/jobs"] {
            let (status, _, body) = request("GET", &format!("{url}{path}"), &headers, None);
            assert_eq!(status, 200, "{path}: {body}");
        }
        for (path, body) in [
            ("/v1/completions", r#"{"model": "echo", "prompt": "x"}"#),
            (
                "/v1/chat/completions",
                r#"{"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}]}"#,
            ),
            ("/v1/embeddings", r#"{"model": "minilm", "input": "x"}"#),
        ] {
            let (status, _, answer) =
                request("POST", &format!("{url}{path}"), &headers, Some(body));
            assert_eq!(status, 403, "{path}: {answer}");
            assert!(
                answer.contains("read_only_key") && answer.contains("`watch`"),
                "{answer}"
            );
        }
    })
    .await
    .unwrap();
    assert_eq!(
        client.jobs(500).unwrap().len(),
        before,
        "no job was started"
    );
}

/// The usage a provider signed for the client job `id`.
fn signed_usage(client: &Infernet, id: &str) -> (u32, u32) {
    let job = client
        .jobs(500)
        .unwrap()
        .into_iter()
        .find(|j| j.id == id)
        .unwrap_or_else(|| panic!("no client job {id}"));
    let result = job
        .result
        .unwrap_or_else(|| panic!("job {id} has no result"));
    let cbor = hex::decode(result["signed_cbor"].as_str().unwrap()).unwrap();
    let signed: SignedResult = decode(&cbor).unwrap();
    let u = signed.payload.usage;
    (u.input_tokens, u.output_tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_python_client_against_a_local_network() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let provider = start(&provider_toml(root)).await;
    let boot = vec![provider.dialable_addrs().await.unwrap()[0].to_string()];
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let api = format!(
        "[client]\ndiscovery_timeout_ms = 1500\n\n[api]\nlisten = \"127.0.0.1:0\"\ncurrency = \"USD\"\n\
         [[api.keys]]\nname = \"test\"\nsha256 = \"{full}\"\n\
         [[api.keys]]\nname = \"limited\"\nsha256 = \"{limited}\"\nmax_spend = \"0.0001\"\n\
         [[api.keys]]\nname = \"watch\"\nsha256 = \"{watch}\"\nread_only = true\n\
         [api.chat_templates]\n\"tiny-llama\" = {dir:?}\n",
        full = hash(KEY),
        limited = hash(LIMITED),
        watch = hash(WATCH),
        dir = root.join("tiny-llama"),
    );
    let client = std::sync::Arc::new(start(&client_toml(root, "client", &boot, &api)).await);
    for model in ["tiny-llama", "minilm", "broken"] {
        wait_for_providers(&client, model, 1).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client
        .network()
        .adverts()
        .await
        .unwrap()
        .iter()
        .any(|a| a.models.iter().any(|m| m == "tiny-llama"))
    {
        assert!(
            Instant::now() < deadline,
            "no advert of tiny-llama reached the client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = infernet_host::api::serve(client.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = server.url();
    let sentences = [
        "A man is playing a guitar.",
        "The stock market fell sharply today.",
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(repo_root().join("tests/python/openai_api_check.py"))
            .arg(&url)
            .arg(KEY)
            .arg(LIMITED)
            .args(sentences)
            .output()
            .expect("running the openai check (scripts/test.sh installs `openai` into .venv)")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_api_check.py failed:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad report ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    read_only_key_looks_but_runs_nothing(&client, &server.url()).await;

    // Usage as the client saw it = the provider's signed usage.
    let usages = report["usages"].as_array().unwrap();
    assert!(usages.len() >= 4, "{report}");
    for u in usages {
        let id = u["id"].as_str().unwrap();
        let job = id.split_once('-').map(|(_, j)| j).unwrap_or(id);
        let (input, output) = signed_usage(&client, job);
        assert_eq!(u["prompt_tokens"].as_u64(), Some(u64::from(input)), "{u}");
        assert_eq!(
            u["completion_tokens"].as_u64(),
            Some(u64::from(output)),
            "{u}"
        );
    }

    // The client that left mid-stream: its job was cancelled, not run out.
    let gone = report["cancelled_job"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = client.jobs(500).unwrap().into_iter().find(|j| j.id == gone);
        let job = job.unwrap_or_else(|| panic!("no client job {gone}"));
        if job.state == JobState::Failed {
            assert!(
                job.error.as_deref().unwrap_or("").contains("cancelled"),
                "{job:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {gone} not cancelled: {:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Embeddings through the API = native candle BERT.
    let native = NativeBert::load(&minilm_dir(), &candle_core::Device::Cpu).unwrap();
    let got = report["embeddings"].as_array().unwrap();
    assert_eq!(got.len(), sentences.len());
    for (s, v) in sentences.iter().zip(got) {
        let v: Vec<f32> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&v, &native.embed(s).unwrap());
        assert!(c >= 0.99999, "{s:?}: cosine to native {c}");
    }
    super::metrics::after_openai_jobs(&server.url(), KEY, &client, &provider, &report).await;
    // The engine bridge sells this API, as an engine, on the network.
    super::engine_bridge::sells_an_engine_on_the_network(root, &client, &boot, &server.url(), KEY)
        .await;
    server.stop();

    // The limited key's spending, as kept for the next start.
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("client/api-spend.json")).unwrap())
            .unwrap();
    assert_eq!(kept["limited"], report["limited_spent"], "{kept}");
    assert!(
        kept.get("test").is_none(),
        "a key without a limit is not recorded: {kept}"
    );

    // The CLI refuses an API open to the network without keys, before
    // starting anything.
    let open = client_toml(root, "open", &boot, "");
    let refused = std::process::Command::new(infernet_bin())
        .args(["node", "start", "--config"])
        .arg(&open)
        .args(["--api", "0.0.0.0:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("loopback") && err.contains("api.keys"),
        "{err}"
    );
    // `[api] listen` on `node start`: the API is up once the node has
    // printed its addresses.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let served = client_toml(
        root,
        "served",
        &boot,
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let _node = NodeProc::start(&served);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains(r#""status":"ok""#),
        "{answer}"
    );
    eprintln!("openai_api: {:.1}s", started.elapsed().as_secs_f64());
    super::dashboard::check(&client, provider, KEY).await;
}
