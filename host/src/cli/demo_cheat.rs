//! The demo's cheat: a cheating build of the llama plugin disputed before
//! a referee (bisection to the first diverging kernel call), and the
//! liar's stake, held by an arbiter, slashed to the client and the referee.

use super::net::abs_dir;
use anyhow::{bail, Context, Result};
use infernet_host::config::Config;
use infernet_host::payments::display;
use infernet_host::payments::ledger::{self, LEDGER};
use infernet_host::sdk::Infernet;
use std::path::Path;

/// The demo's second job: the same prompt on an honest node and on one
/// running a cheating build of the llama plugin (one extra op in one
/// layer) that claims the honest plugin's sha256, disputed before a
/// referee: bisection to the first diverging kernel call, the referee's
/// ruling, and the evidence checked again offline; then the liar's stake,
/// held by an arbiter node on its ledger, is slashed to the client and the
/// referee. In-process: a release node cannot be made to lie about its
/// plugin, so the liar is built here.
pub(super) async fn demo_cheat(
    plugins: &Path,
    dir: &Path,
    llama: &Path,
    model: &Path,
    ledger_plugin: &Path,
    prompt: &str,
) -> Result<()> {
    use infernet_host::p2p::libp2p::identity::Keypair;
    use infernet_host::p2p::protocol::{hash_output, SignedResult, Usage, WireInput};
    use infernet_host::verify::dispute::{self, LocalParty};
    use infernet_host::verify::evidence::JobSpec;
    let cheat = plugins.join("cheat-perturb");
    if !cheat.join("infernet-plugin.toml").exists() {
        eprintln!(
            "\n(no {}: build the plugins with scripts/build-plugins.sh to see a cheat caught)",
            cheat.display()
        );
        return Ok(());
    }
    let node = |name: &str, plugin: &Path| -> Result<infernet_host::node::Node> {
        let d = abs_dir(&dir.join(name))?;
        let text = format!(
            "[node]\ndata_dir = {d:?}\n[[backend]]\nplugin = {plugin:?}\n[[backend.models]]\nid = \"tiny-llama\"\npath = {model:?}\n"
        );
        Ok(infernet_host::node::Node::from_config(&Config::parse(
            &text, dir,
        )?)?)
    };
    let (honest, liar, referee) = (
        node("honest", llama)?,
        node("liar", &abs_dir(&cheat)?)?,
        node("referee", llama)?,
    );
    let spec = JobSpec {
        model: "tiny-llama".into(),
        input: WireInput::Text(prompt.into()),
        params: vec![("max_tokens".into(), "24".into())],
    };
    let honest_sha = honest
        .backend_sha256("tiny-llama")
        .context("honest plugin")?;
    let sign = |n: &infernet_host::node::Node,
                key: &Keypair|
     -> Result<(SignedResult, infernet_host::kernels::trace::Trace, String)> {
        let req = spec.request("demo-2");
        let (r, trace) = n.run_traced(&req, None, None)?;
        let text = match r.output {
            infernet_host::worlds::backend::JobOutput::Text(t) => t,
            other => bail!("unexpected output {other:?}"),
        };
        let output = infernet_host::p2p::WireOutput::Text(text.clone());
        let usage = Usage {
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
        };
        let peer = key.public().to_peer_id().to_string();
        let mut body = infernet_host::verify::result_body(
            n,
            &req,
            hash_output(&output),
            usage,
            trace.root(),
            peer,
        )
        .context("result")?;
        body.backend.sha256 = honest_sha.clone();
        Ok((SignedResult::sign(body, key)?, trace, text))
    };
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (ra, ta, text_a) = sign(&honest, &ka)?;
    let (rb, tb, text_b) = sign(&liar, &kb)?;
    eprintln!("\n--- a cheating provider: provider-L runs a cheating build of llama and claims the honest plugin's sha256 ---");
    println!(
        "honest    {}: {text_a:?}\n          trace root {}",
        ka.public().to_peer_id(),
        ta.root().to_text()
    );
    println!(
        "provider-L {}: {text_b:?}\n          trace root {}",
        kb.public().to_peer_id(),
        tb.root().to_text()
    );
    let req = spec.request("demo-2");
    let started = std::time::Instant::now();
    let mut a = LocalParty::new(ra, ta, &honest, req.clone());
    let mut b = LocalParty::new(rb, tb, &liar, req);
    let evidence = dispute::run(&spec, &mut a, &mut b, &referee, "referee")?;
    let d = evidence.divergence.as_ref().context("no diverging call")?;
    let ops: Vec<String> = d
        .leaves
        .iter()
        .map(|l| l.as_ref().map_or("(none)".into(), |l| l.op.clone()))
        .collect();
    println!(
        "dispute: {} bisection steps to kernel call #{} (honest `{}`, provider-L `{}`), judged by {:?} in {:.0} ms",
        evidence.steps.len(),
        d.index,
        ops[0],
        ops[1],
        evidence.ruling.method,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let checked = evidence.check(Some(&referee))?;
    let path = dir.join("evidence.json");
    std::fs::write(&path, serde_json::to_string_pretty(&evidence)?)?;
    println!(
        "verdict: cheated: {} (evidence {}, checked offline; check it again with `infernet verify evidence {} --plugin {} --model {}`)",
        checked.cheated.join(", "),
        path.display(),
        path.display(),
        llama.display(),
        model.display()
    );
    demo_slash(
        dir,
        llama,
        model,
        ledger_plugin,
        &kb,
        &checked.cheated,
        &evidence,
    )
    .await
}

/// The liar had locked 0.50 USD with an arbiter (a referee node holding
/// stakes on its ledger): the ruling forfeits it, 80 % to the client and
/// 20 % to the referee, and the balances in the arbiter's books show it.
async fn demo_slash(
    dir: &Path,
    llama: &Path,
    model: &Path,
    ledger_plugin: &Path,
    liar: &infernet_host::p2p::libp2p::identity::Keypair,
    cheated: &[String],
    evidence: &infernet_host::verify::evidence::Evidence,
) -> Result<()> {
    use infernet_host::p2p::protocol::Money as WireMoney;
    use infernet_host::p2p::verification::StakeRequest;
    let arbiter_dir = abs_dir(&dir.join("arbiter"))?;
    let _ = std::fs::remove_file(arbiter_dir.join(infernet_host::store::DB_FILE));
    let text = format!(
        "[node]\ndata_dir = {arbiter_dir:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\n[[backend]]\nplugin = {llama:?}\n[[backend.models]]\nid = \"tiny-llama\"\npath = {model:?}\n\n[[payment]]\nplugin = {ledger_plugin:?}\n\n[verify]\nreferee = true\n"
    );
    let path = dir.join("arbiter.toml");
    std::fs::write(&path, text)?;
    let node = Infernet::new(Config::load(&path)?)
        .start()
        .await
        .context("starting the arbiter")?;
    let arbiter = node
        .provider()
        .and_then(|p| p.arbiter())
        .context("the arbiter node holds no stakes")?;
    let books = node
        .payments()
        .and_then(|p| p.adapter(LEDGER))
        .context("the arbiter has no ledger")?;
    let liar_id = liar.public().to_peer_id();
    let client = infernet_host::p2p::libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    ledger::fund(books.plugin.kv(), &liar_id.to_string(), "USD", 500_000)?;
    let held = arbiter.stake(
        liar_id,
        StakeRequest {
            adapter: LEDGER.into(),
            amount: WireMoney {
                amount: 500_000,
                currency: "USD".into(),
            },
            depositor: String::new(),
            withdraw: false,
        },
    )?;
    println!(
        "stake: provider-L had locked {} with the arbiter {} (escrow {}, {}; certificate valid until {})",
        display(held.amount.amount, "USD"),
        node.peer_id(),
        held.escrow_id,
        held.status,
        held.cert.as_ref().map_or(0, |c| c.payload.valid_until_ms)
    );
    let bundle = serde_json::to_vec(evidence)?;
    for s in arbiter.slash(cheated, &client, "demo-2", &bundle, None) {
        println!(
            "slashed: {} forfeits its stake: {} to the client, {} to the referee ({})",
            if s.provider == liar_id.to_string() {
                "provider-L"
            } else {
                &s.provider
            },
            display(s.to_client.amount, &s.to_client.currency),
            display(s.to_referee.amount, &s.to_referee.currency),
            s.status
        );
    }
    let balance = |who: &str| ledger::balance(books.plugin.kv(), who, "USD");
    println!(
        "arbiter's books: provider-L {}, client {}, referee {}",
        display(balance(&liar_id.to_string())?, "USD"),
        display(balance(&client)?, "USD"),
        display(balance(&books.account)?, "USD")
    );
    node.shutdown().await;
    Ok(())
}
