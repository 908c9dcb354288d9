//! `infernet bench --verify`: the cheating simulation (`verify::sim`) on
//! the tiny llama checkpoint — detection under `replicate(2)` per cheat
//! mode, `spot-check(p)` catch rates against p with their binomial bounds,
//! false slashes among honest providers on different thread counts, and
//! what a dispute costs (round trips, time, evidence bytes); then the
//! reputation simulation (`jobs::reputation_sim`): how fast selection on
//! verified outcomes starves cheaters, and that lying identities change
//! nothing.

use anyhow::{Context, Result};
use infernet_host::config::Config;
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::node::Node;
use infernet_host::verify::sim::{simulate, SimNodes};
use std::path::Path;

/// The cheat plugins `scripts/build-plugins.sh` packs.
pub const MODES: [&str; 4] = ["perturb", "skip-layers", "replay", "early-stop"];

fn node(dir: &Path, name: &str, plugin: &Path, model: &Path) -> Result<Node> {
    let text = format!(
        "[node]\ndata_dir = {:?}\n[[backend]]\nplugin = {:?}\n[[backend.models]]\nid = \"tiny\"\npath = {:?}\n\n[backend.limits]\nwall_time_ms = 600000\nkernel_time_ms = 600000\n",
        dir.join(name),
        plugin,
        model
    );
    let config = Config::parse(&text, dir)?;
    Node::from_config(&config).with_context(|| format!("loading {}", plugin.display()))
}

pub fn run(plugins: &Path, dir: &Path, jobs: usize, big: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if let Some(model) = big {
        dispute_on(plugins, dir, model)?;
    }
    let model = dir.join("tiny-llama");
    if !model.join("model.safetensors").exists() {
        write_llama_fixture(&LlamaFixtureSpec::tiny(), &model)?;
    }
    let honest = node(dir, "honest", &plugins.join("llama"), &model)?;
    let second = node(dir, "second", &plugins.join("llama"), &model)?;
    let referee = node(dir, "referee", &plugins.join("llama"), &model)?;
    let mut cheat_nodes = Vec::new();
    for mode in MODES {
        let pkg = plugins.join(format!("cheat-{mode}"));
        anyhow::ensure!(
            pkg.exists(),
            "{} not found: run scripts/build-plugins.sh (it packs the cheating plugins)",
            pkg.display()
        );
        cheat_nodes.push((
            mode.to_string(),
            node(dir, &format!("cheat-{mode}"), &pkg, &model)?,
        ));
    }
    let nodes = SimNodes {
        honest: &honest,
        second: &second,
        referee: &referee,
        cheats: cheat_nodes.iter().map(|(m, n)| (m.clone(), n)).collect(),
    };
    let bar = indicatif::ProgressBar::new(jobs as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} jobs ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("simulating");
    let ps = [0.05, 0.1, 0.5];
    let r = simulate(&nodes, jobs, &ps, 7, |n| bar.set_position(n as u64))
        .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    println!(
        "\n## verification: {jobs} jobs per provider kind, tiny llama, greedy and seeded sampling"
    );
    println!(
        "honest trace: {:.0} kernel calls per job, {:.1} per generated token; {:.1} ms per job",
        r.calls as f64 / jobs as f64,
        r.calls as f64 / r.tokens.max(1) as f64,
        r.run_ms as f64 / jobs as f64
    );
    println!("\n| paired with honest A | jobs | diverged | caught | false slashes | one-op / replay | round trips | dispute ms | evidence KiB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in &r.modes {
        let d = m.diverged.max(1) as f64;
        println!(
            "| {} | {} | {} | {} ({:.1}%) | {} | {} / {} | {:.1} | {:.0} | {:.1} |",
            m.mode,
            m.jobs,
            m.diverged,
            m.caught,
            100.0 * m.caught as f64 / m.jobs.max(1) as f64,
            m.false_slashes,
            m.one_op,
            m.replays,
            m.round_trips as f64 / d,
            m.dispute_ms as f64 / d,
            m.evidence_bytes as f64 / d / 1024.0
        );
    }
    println!("\n| spot-check p | jobs checked | expected | 3σ band | caught per cheat mode |");
    println!("|---|---|---|---|---|");
    for s in &r.spot {
        let n = s.jobs as f64;
        let sigma = (n * s.p * (1.0 - s.p)).sqrt();
        let caught: Vec<String> = s.caught.iter().map(|(m, c)| format!("{m} {c}")).collect();
        println!(
            "| {} | {} | {:.0} | {:.0}..{:.0} | {} |",
            s.p,
            s.checked,
            n * s.p,
            (n * s.p - 3.0 * sigma).max(0.0),
            n * s.p + 3.0 * sigma,
            caught.join(", ")
        );
    }
    reputation(jobs.max(2000));
    Ok(())
}

/// The reputation simulation (`jobs::reputation_sim`), 20 seeds.
pub fn reputation(jobs: usize) {
    println!("\n## reputation: selection on verified outcomes, cheaters among the providers");
    println!("{}", infernet_host::jobs::reputation_sim::table(jobs, 20));
}

/// One dispute on a bigger checkpoint (the SmolLM-135M shape): the perturb
/// cheat against the honest plugin, 32 greedy tokens.
fn dispute_on(plugins: &Path, dir: &Path, model: &Path) -> Result<()> {
    use infernet_host::p2p::protocol::WireInput;
    use infernet_host::verify::evidence::JobSpec;
    let honest = node(dir, "big-honest", &plugins.join("llama"), model)?;
    let cheat = node(dir, "big-cheat", &plugins.join("cheat-perturb"), model)?;
    let referee = node(dir, "big-referee", &plugins.join("llama"), model)?;
    let spec = JobSpec {
        model: "tiny".into(),
        input: WireInput::Text("the quick brown fox jumps over the lazy dog".into()),
        params: vec![("max_tokens".into(), "32".into())],
    };
    eprintln!(
        "one dispute on {} (two generations, then the dispute)...",
        model.display()
    );
    let (evidence, took, calls) =
        infernet_host::verify::sim::one_dispute(&honest, &cheat, &referee, &spec)
            .map_err(anyhow::Error::msg)?;
    let bytes = serde_json::to_vec(&evidence)?.len();
    let d = evidence.divergence.as_ref();
    println!("\n## one dispute on {}: 32 greedy tokens", model.display());
    println!(
        "honest trace {calls} calls; first diverging call #{} ({:?}); {} round trips; dispute {:.0} ms; evidence {:.1} KiB; cheated: {:?}",
        d.map_or(0, |d| d.index),
        evidence.ruling.method,
        evidence.steps.len() + 2,
        took.as_secs_f64() * 1000.0,
        bytes as f64 / 1024.0,
        evidence.ruling.cheated
    );
    Ok(())
}
