//! `infernet bench --shards`: batch-sharding throughput on loopback. Three
//! provider processes (`infernet node start`) serve all-MiniLM-L6-v2, each
//! held to one compute thread (`RAYON_NUM_THREADS=1`, standing for one
//! provider machine); an in-process client embeds one batch of texts as 1,
//! 2 and 3 shards and reports texts/s against `k ×` the one-shard figure.
//! On a box with fewer cores than providers the providers share cores, so
//! the figure past the core count says what sharding costs, not what it
//! gains; the header prints the core count.

use anyhow::{bail, Context, Result};
use infernet_host::config::Config;
use infernet_host::sdk::{InferOptions, Infernet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A provider process, killed on drop.
pub(super) struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `infernet node start --config <config>` with `threads` compute
/// threads and returns it with its first `listen` address.
pub(super) fn spawn(config: &Path, threads: usize) -> Result<(Provider, String)> {
    let threads = threads.to_string();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["node", "start", "--config"])
        .arg(config)
        .env("RAYON_NUM_THREADS", &threads)
        .env("CANDLE_NUM_THREADS", &threads)
        .env("INFERNET_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting a provider process")?;
    let stdout = child.stdout.take().context("provider stdout")?;
    let provider = Provider(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(line) => {
                if let Some(a) = line?.strip_prefix("listen ") {
                    break a.trim().to_string();
                }
            }
            None => bail!("provider {} exited before listening", config.display()),
        }
    };
    // Keep draining: a closed pipe would stop the node at its next line.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((provider, addr))
}

/// A client node's config under `dir`, bootstrapping from `boot`.
pub(super) fn client_toml(dir: &Path, boot: &str) -> String {
    format!(
        "[node]\ndata_dir = {:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{boot:?}]\n",
        dir.join("client"),
    )
}

/// `n` distinct sentences of about a dozen tokens.
fn batch(n: usize) -> Vec<String> {
    const SUBJECTS: [&str; 6] = [
        "The river",
        "A tired engineer",
        "Our committee",
        "The old bridge",
        "A small bakery",
        "The night train",
    ];
    const VERBS: [&str; 4] = ["watched", "rebuilt", "ignored", "described"];
    (0..n)
        .map(|i| {
            format!(
                "{} {} the {} harbour lights on day {i} of the festival.",
                SUBJECTS[i % SUBJECTS.len()],
                VERBS[i % VERBS.len()],
                ["northern", "quiet", "flooded"][i % 3]
            )
        })
        .collect()
}

/// Times `rounds` batches of `texts` at 1, 2 and 3 shards.
pub fn run(dir: &Path, plugins: &Path, minilm: &Path, texts: usize, rounds: usize) -> Result<()> {
    let bert = std::fs::canonicalize(plugins.join("bert"))
        .with_context(|| format!("no packed bert plugin in {}", plugins.display()))?;
    let minilm = std::fs::canonicalize(minilm)?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut procs = Vec::new();
    let mut boot: Vec<String> = Vec::new();
    for i in 0..3 {
        let config = dir.join(format!("p{i}.toml"));
        let first: Vec<String> = boot.iter().take(1).map(|b| format!("{b:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "[node]\ndata_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [{}]\nadvert_interval_secs = 1\n[[backend]]\nplugin = {bert:?}\n[[backend.models]]\nid = \"minilm\"\npath = {minilm:?}\n",
                dir.join(format!("p{i}")),
                first.join(", "),
            ),
        )?;
        let (p, addr) = spawn(&config, 1)?;
        procs.push(p);
        boot.push(addr);
    }
    let texts = batch(texts);
    let client_toml = client_toml(dir, &boot[0]);
    super::net::runtime()?.block_on(async move {
        let client = Infernet::new(Config::parse(&client_toml, dir)?).start().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.network().providers_of("minilm").await?.len() < 3 {
            if Instant::now() > deadline {
                bail!("the client did not find 3 providers of minilm within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "\n## batch sharding: {} texts embedded by all-MiniLM-L6-v2, 3 provider processes of 1 thread each, {cores} cores, median of {rounds}",
            texts.len()
        );
        println!("{:<8} {:>10} {:>10} {:>14} {:>8}", "shards", "seconds", "texts/s", "vs k x 1 shard", "target");
        let mut one = None;
        for k in 1..=3usize {
            // Warm-up: each provider's plugin instance and model loaded.
            client.submit_sharded("minilm", texts.clone(), InferOptions::default(), k).await?;
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let t = Instant::now();
                let out = client
                    .submit_sharded("minilm", texts.clone(), InferOptions::default(), k)
                    .await?;
                times.push(t.elapsed().as_secs_f64());
                if out.shards.len() != k {
                    bail!("asked for {k} shards, ran {}", out.shards.len());
                }
            }
            let secs = super::bench::median(times);
            let rate = texts.len() as f64 / secs;
            let base = *one.get_or_insert(rate);
            println!(
                "{k:<8} {secs:>10.3} {rate:>10.1} {:>14.2} {:>8}",
                rate / (base * k as f64),
                if k == 1 { "-" } else { ">= 0.90" }
            );
        }
        client.shutdown().await;
        drop(procs);
        Ok(())
    })
}
