//! The OpenAI-compatible API's overhead: the same job through the SDK
//! (`Infernet::infer`) and through `POST /v1/completions` on the same client
//! node, alternating, in one run; then the time to the first token, through
//! `infer_stream` and through the API's server-sent events. One echo
//! provider on loopback, so what differs is the HTTP layer (JSON parse,
//! options, response, one kept-alive HTTP/1.1 connection).
//!
//! ```sh
//! scripts/build-plugins.sh
//! cargo run --release -p infernet-host --example bench_api [-- JOBS]
//! ```

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use infernet_host::config::Config;
use infernet_host::sdk::{InferOptions, Infernet, StreamEvent};
use std::time::{Duration, Instant};

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn post(
    tx: &mut Sender,
    body: &serde_json::Value,
) -> Result<hyper::Response<hyper::body::Incoming>, Box<dyn std::error::Error>> {
    let req = hyper::Request::post("/v1/completions")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    tx.ready().await?;
    Ok(tx.send_request(req).await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: usize = std::env::args().nth(1).map_or(Ok(200), |a| a.parse())?;
    let root = tempfile::tempdir()?;
    let model = root.path().join("echo-model");
    infernet_host::models::fixture::write_weightless_model_dir(&model)?;
    let plugin = std::fs::canonicalize("target/plugins/echo")?;
    let provider_toml = format!(
        "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nadvert_interval_secs = 1\n\
         [[backend]]\nplugin = {plugin:?}\n[[backend.models]]\nid = \"echo\"\npath = {model:?}\n",
        root.path().join("provider"),
    );
    let provider = Infernet::new(Config::parse(&provider_toml, root.path())?)
        .start()
        .await?;
    let boot = provider.dialable_addrs().await?[0].to_string();
    let client_toml = format!(
        "[node]\ndata_dir = {:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{boot:?}]\n",
        root.path().join("client"),
    );
    let client = std::sync::Arc::new(
        Infernet::new(Config::parse(&client_toml, root.path())?)
            .start()
            .await?,
    );
    let server = infernet_host::api::serve(client.clone(), "127.0.0.1:0".parse()?).await?;
    let stream = tokio::net::TcpStream::connect(server.addr).await?;
    stream.set_nodelay(true)?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);

    let prompt = "one two three four five six seven eight";
    let opts = InferOptions {
        max_tokens: Some(8),
        ..Default::default()
    };
    let body = serde_json::json!({"model": "echo", "prompt": prompt, "max_tokens": 8});
    // Warm up both paths (discovery, connections, plugin instances).
    for _ in 0..10 {
        client.infer("echo", prompt, opts.clone()).await?;
        post(&mut tx, &body).await?.into_body().collect().await?;
    }
    let (mut sdk, mut api) = (Vec::new(), Vec::new());
    for _ in 0..jobs {
        let t = Instant::now();
        client.infer("echo", prompt, opts.clone()).await?;
        sdk.push(t.elapsed());
        let t = Instant::now();
        let resp = post(&mut tx, &body).await?;
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await?;
        api.push(t.elapsed());
    }
    let stream_body =
        serde_json::json!({"model": "echo", "prompt": prompt, "max_tokens": 8, "stream": true});
    let (mut sdk_first, mut api_first) = (Vec::new(), Vec::new());
    for _ in 0..jobs / 4 {
        let t = Instant::now();
        let mut s = client.infer_stream("echo", prompt, opts.clone()).await?;
        while let Some(e) = s.next().await {
            if matches!(e, StreamEvent::Token(_)) {
                sdk_first.push(t.elapsed());
                break;
            }
        }
        s.finish().await?;
        let t = Instant::now();
        let mut body = post(&mut tx, &stream_body).await?.into_body();
        let mut seen = false;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                if !seen
                    && String::from_utf8_lossy(data).contains("\"text\":\"")
                    && !String::from_utf8_lossy(data).contains("\"text\":\"\"")
                {
                    api_first.push(t.elapsed());
                    seen = true;
                }
            }
        }
    }
    let (s50, s99) = (pct(&mut sdk, 0.5), pct(&mut sdk, 0.99));
    let (a50, a99) = (pct(&mut api, 0.5), pct(&mut api, 0.99));
    println!("{jobs} jobs each, alternating; echo provider on loopback");
    println!(
        "sdk  infer            p50 {:7.2} ms  p99 {:7.2} ms",
        ms(s50),
        ms(s99)
    );
    println!(
        "api  /v1/completions  p50 {:7.2} ms  p99 {:7.2} ms",
        ms(a50),
        ms(a99)
    );
    println!(
        "api overhead         p50 {:+7.2} ms  ({:.3}x the SDK)",
        ms(a50) - ms(s50),
        a50.as_secs_f64() / s50.as_secs_f64()
    );
    let (f1, f2) = (pct(&mut sdk_first, 0.5), pct(&mut api_first, 0.5));
    println!(
        "first token p50: sdk infer_stream {:.2} ms, api SSE {:.2} ms ({} runs each)",
        ms(f1),
        ms(f2),
        sdk_first.len()
    );
    server.stop();
    Ok(())
}
