//! `infernet bench --network`: job round-trip latency on loopback beside a
//! bare libp2p request-response echo measured in the same run.
//!
//! - bare echo: two minimal swarms (TCP + Noise + Yamux, request-response
//!   with the job codec, nothing else) bouncing a `Run` message;
//! - run step: one `Run` request to an echo-backend provider and its signed
//!   `Result` (provider store writes, plugin call, signing included);
//! - full job: `Infernet::infer` through the whole lifecycle (quote,
//!   accept, run, result, receipt; every transition persisted on both
//!   sides), sequentially and 16 at a time.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use infernet_host::config::Config;
use infernet_host::p2p::codec::{Frame, JobCodec};
use infernet_host::p2p::protocol::JOB_PROTOCOL;
use infernet_host::p2p::{JobBody, JobMessage, WireInput};
use infernet_host::sdk::{InferOptions, Infernet};
use libp2p::multiaddr::Protocol;
use libp2p::request_response as rr;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, StreamProtocol, Swarm};
use std::path::Path;
use std::time::{Duration, Instant};

const WARMUP: usize = 20;

fn run_msg(id: String) -> JobMessage {
    JobMessage::new(JobBody::Run {
        job_id: id,
        model: "echo".into(),
        input: WireInput::Text("hello there".into()),
        params: vec![],
        stream: false,
        proof: None,
    })
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn stats(mut v: Vec<Duration>, wall: Duration) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        per_sec: v.len() as f64 / wall.as_secs_f64(),
    }
}

fn bare_swarm() -> Result<Swarm<rr::Behaviour<JobCodec>>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| {
            rr::Behaviour::with_codec(
                JobCodec::default(),
                [(StreamProtocol::new(JOB_PROTOCOL), rr::ProtocolSupport::Full)],
                rr::Config::default(),
            )
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

async fn bare_echo(n: usize) -> Result<Stats> {
    let mut server = bare_swarm()?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_peer = *server.local_peer_id();
    let echo = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(rr::Event::Message {
                message:
                    rr::Message::Request {
                        request: Frame::Message(m),
                        channel,
                        ..
                    },
                ..
            }) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().send_response(channel, *m);
            }
        }
    });
    let mut client = bare_swarm()?;
    client.dial(addr.with(Protocol::P2p(server_peer)))?;
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    let mut wall_start = started;
    for i in 0..WARMUP + n {
        if i == WARMUP {
            wall_start = Instant::now();
        }
        let t = Instant::now();
        client.behaviour_mut().send_request(
            &server_peer,
            Frame::Message(Box::new(run_msg(format!("echo-{i}")))),
        );
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(rr::Event::Message {
                    message: rr::Message::Response { .. },
                    ..
                }) => break,
                SwarmEvent::Behaviour(rr::Event::OutboundFailure { error, .. }) => {
                    bail!("echo failed: {error}")
                }
                _ => {}
            }
        }
        if i >= WARMUP {
            times.push(t.elapsed());
        }
    }
    let wall = wall_start.elapsed();
    echo.abort();
    Ok(stats(times, wall))
}

pub fn run(plugins: &Path, dir: &Path, n: usize) -> Result<()> {
    let echo = plugins.join("echo");
    if !echo.join("infernet-plugin.toml").exists() {
        bail!(
            "no packed echo plugin in {}; run scripts/build-plugins.sh",
            plugins.display()
        );
    }
    let model = dir.join("echo-model");
    infernet_host::models::fixture::write_weightless_model_dir(&model)?;
    let abs =
        |p: &Path| std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()));
    let (echo, model, pricing) = (
        abs(&echo)?,
        abs(&model)?,
        abs(&plugins.join("pricing-flat"))?,
    );
    for sub in ["provider", "client"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    let provider_toml = format!(
        "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n[[backend]]\nplugin = {echo:?}\n[[backend.models]]\nid = \"echo\"\npath = {model:?}\n[pricing]\nplugin = {pricing:?}\n[pricing.config]\nper_output_token = 1\n",
        dir.join("provider")
    );
    super::net::runtime()?.block_on(async move {
        let echo_stats = bare_echo(n).await?;
        let provider = Infernet::new(Config::parse(&provider_toml, dir)?).start().await?;
        let boot = provider.dialable_addrs().await?[0].to_string();
        let client_toml = format!(
            "[node]\ndata_dir = {:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{boot:?}]\n",
            dir.join("client")
        );
        let client = Infernet::new(Config::parse(&client_toml, dir)?).start().await?;
        let peer = provider.peer_id();
        // Run step: one request carrying a job, straight to the provider.
        let mut run_times = Vec::with_capacity(n);
        let mut wall_start = Instant::now();
        for i in 0..WARMUP + n {
            if i == WARMUP {
                wall_start = Instant::now();
            }
            let t = Instant::now();
            let reply = client.network().send_job(peer, run_msg(format!("bench-run-{i}"))).await?;
            if !matches!(reply.body, JobBody::Result { .. }) {
                bail!("run step got {:?}", reply.body);
            }
            if i >= WARMUP {
                run_times.push(t.elapsed());
            }
        }
        let run_stats = stats(run_times, wall_start.elapsed());
        // Full lifecycle, one at a time.
        let mut job_times = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            if i == WARMUP {
                wall_start = Instant::now();
            }
            let t = Instant::now();
            client.infer("echo", "hello there", InferOptions::default()).await?;
            if i >= WARMUP {
                job_times.push(t.elapsed());
            }
        }
        let job_stats = stats(job_times, wall_start.elapsed());
        // Full lifecycle, 16 in flight.
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter(0..n)
            .map(|_| {
                let t = Instant::now();
                let c = &client;
                async move { c.infer("echo", "hello there", InferOptions::default()).await.map(|_| t.elapsed()) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let concurrent = stats(results.into_iter().collect::<Result<Vec<_>, _>>()?, started.elapsed());

        client.shutdown().await;
        provider.shutdown().await;
        // The same job, paid: the client escrows each quote on its ledger,
        // the provider records it, the client releases after delivery.
        let ledger = plugins.join("payment-ledger");
        let paid = if ledger.join("infernet-plugin.toml").exists() {
            let ledger = abs(&ledger)?;
            let payment = format!("[[payment]]\nplugin = {ledger:?}\nconfirm = \"client\"\n");
            let provider_toml = format!(
                "{}{payment}",
                provider_toml.replace(&format!("{:?}", dir.join("provider")), &format!("{:?}", dir.join("provider-paid")))
            );
            let provider = Infernet::new(Config::parse(&provider_toml, dir)?).start().await?;
            let boot = provider.dialable_addrs().await?[0].to_string();
            let client_toml = format!(
                "[node]\ndata_dir = {:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{boot:?}]\n{payment}",
                dir.join("client-paid")
            );
            let client = Infernet::new(Config::parse(&client_toml, dir)?).start().await?;
            let wallet = client
                .payments()
                .and_then(|p| p.adapter(infernet_host::payments::ledger::LEDGER))
                .context("paid client has no ledger")?;
            // 1,000 USD per run: far more than the jobs cost, and a data dir
            // reused by later runs never overflows its balance.
            infernet_host::payments::ledger::fund(wallet.plugin.kv(), &wallet.account, "USD", 1_000_000_000)?;
            let mut times = Vec::with_capacity(n);
            for i in 0..WARMUP + n {
                if i == WARMUP {
                    wall_start = Instant::now();
                }
                let t = Instant::now();
                client.infer("echo", "hello there", InferOptions::default()).await?;
                if i >= WARMUP {
                    times.push(t.elapsed());
                }
            }
            let s = stats(times, wall_start.elapsed());
            client.shutdown().await;
            provider.shutdown().await;
            Some(s)
        } else {
            eprintln!("no packed payment-ledger in {}: the paid row is skipped", plugins.display());
            None
        };
        let ratio = |s: &Stats| s.p50.as_secs_f64() / echo_stats.p50.as_secs_f64();
        println!("network round trips on 127.0.0.1, n = {n} each (after {WARMUP} warm-up):");
        println!("{:<38} {:>10} {:>10} {:>10} {:>12}", "", "p50", "p99", "per s", "p50 / echo");
        let mut rows = vec![
            ("bare request-response echo", &echo_stats),
            ("run step (Run -> signed Result)", &run_stats),
            ("full job, sequential", &job_stats),
            ("full job, 16 concurrent", &concurrent),
        ];
        if let Some(p) = &paid {
            rows.push(("full job, paid (ledger escrow)", p));
        }
        for (name, s) in rows {
            println!(
                "{name:<38} {:>8.3}ms {:>8.3}ms {:>10.0} {:>11.2}x",
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3,
                s.per_sec,
                ratio(s)
            );
        }
        Ok(())
    })
}
