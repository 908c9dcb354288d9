//! Network test helpers: provider and client configs on 127.0.0.1, and the
//! `infernet` binary run as a child process (to be killed for real).

use super::{pack_plugin, repo_root};
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::Infernet;
use infernet_host::store::{EscrowRecord, JobRecord, Store, DB_FILE};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// A model directory with a `config.json` and no tensors, for backends
/// that never open their model (echo, hostile).
pub fn empty_model_dir(dir: &Path) -> PathBuf {
    infernet_host::models::fixture::write_weightless_model_dir(dir).unwrap();
    dir.to_path_buf()
}

fn toml_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", q.join(", "))
}

/// Writes `<root>/<name>.toml`: a provider serving model `echo` with the
/// echo plugin, priced by pricing-flat at `rate` per output token, on a
/// random loopback port, bootstrapping from `bootstrap`.
pub fn echo_provider_toml(root: &Path, name: &str, rate: u64, bootstrap: &[String]) -> PathBuf {
    let plugins = root.join("plugins");
    let echo = plugins.join("echo");
    if !echo.join("infernet-plugin.toml").exists() {
        pack_plugin("echo", PluginKind::Backend, &plugins);
        pack_plugin("pricing-flat", PluginKind::Pricing, &plugins);
    }
    let model = empty_model_dir(&root.join("echo-model"));
    let text = format!(
        "[node]\ndata_dir = {data:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {boot}\nadvert_interval_secs = 1\n\n\
         [[backend]]\nplugin = {echo:?}\n[[backend.models]]\nid = \"echo\"\npath = {model:?}\n\n\
         [pricing]\nplugin = {pricing:?}\n[pricing.config]\nper_input_token = 1\nper_output_token = {rate}\nminimum = 10\n",
        data = root.join(name),
        boot = toml_list(bootstrap),
        pricing = plugins.join("pricing-flat"),
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `<root>/<name>.toml`: an unpaid provider of `tiny-llama` (the
/// tiny fixture, written to `<root>/tiny-llama` once) with `plugin`,
/// bootstrapping from `bootstrap`, with `extra` TOML appended.
pub fn llama_node_toml(
    root: &Path,
    name: &str,
    plugin: &Path,
    bootstrap: &[String],
    extra: &str,
) -> PathBuf {
    use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
    let model = root.join("tiny-llama");
    if !model.join("model.safetensors").exists() {
        write_llama_fixture(&LlamaFixtureSpec::tiny(), &model).unwrap();
    }
    let text = format!(
        "[node]\ndata_dir = {data:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {boot}\nadvert_interval_secs = 1\n\n\
         [[backend]]\nplugin = {plugin:?}\n[[backend.models]]\nid = \"tiny-llama\"\npath = {model:?}\n{extra}\n",
        data = root.join(name),
        boot = toml_list(bootstrap),
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `<root>/<name>.toml`: a client-only node bootstrapping from
/// `bootstrap`, with `extra` TOML appended (e.g. a `[client]` table).
pub fn client_toml(root: &Path, name: &str, bootstrap: &[String], extra: &str) -> PathBuf {
    let text = format!(
        "[node]\ndata_dir = {data:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = {boot}\n\n{extra}\n",
        data = root.join(name),
        boot = toml_list(bootstrap),
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

static BIN: Once = Once::new();

/// The variables cargo sets for the package under test (not the user's
/// `CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_INCREMENTAL`, ...).
fn is_package_var(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "CARGO_CRATE_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || matches!(
            name,
            "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "CARGO_RUSTC_CURRENT_DIR"
        )
}

/// The `infernet` binary of this workspace (built once if missing or stale).
pub fn infernet_bin() -> PathBuf {
    BIN.call_once(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            // The crash tests need the fault-injection hooks, compiled only
            // under this feature (the same feature set `cargo test` builds
            // the host with, so nothing is rebuilt).
            .args([
                "build",
                "-p",
                "infernet-host",
                "--features",
                "test-hooks",
                "--bin",
                "infernet",
            ])
            .current_dir(repo_root())
            // Build scripts (ring's) rerun when the package variables cargo
            // sets for this test change: inheriting them would rebuild the
            // TLS stack on every switch between `cargo test` and this build.
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| !is_package_var(k)))
            .status()
            .expect("running cargo build for the infernet binary");
        assert!(status.success(), "building the infernet binary failed");
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("debug/infernet")
}

/// `infernet node start` as a child process; killed on drop.
pub struct NodeProc {
    /// The process.
    pub child: Child,
    /// Its peer id, as it printed it.
    pub peer: String,
    /// Its first dialable address (`.../p2p/<peer>`).
    pub addr: String,
}

impl NodeProc {
    /// Starts a node and waits for its `peer` / `listen` lines.
    pub fn start(config: &Path) -> NodeProc {
        Self::start_with_env(config, &[])
    }

    /// [`NodeProc::start`] with extra environment variables (e.g.
    /// `INFERNET_CRASH_AFTER`).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> NodeProc {
        Self::spawn(&["node", "start"], config, env)
    }

    /// `infernet verifier start` as a child process.
    pub fn start_verifier(config: &Path) -> NodeProc {
        Self::spawn(&["verifier", "start"], config, &[])
    }

    fn spawn(command: &[&str], config: &Path, env: &[(&str, &str)]) -> NodeProc {
        let mut child = Command::new(infernet_bin())
            .args(command)
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .env("INFERNET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning infernet {command:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Drain to the end: a closed pipe would kill the node at its
            // next line of output.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut peer, mut addr) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while peer.is_none() || addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("peer ") {
                        peer = Some(p.trim().to_string());
                    } else if let Some(a) = line.strip_prefix("listen ") {
                        addr.get_or_insert(a.trim().to_string());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("node {} printed no peer/listen lines", config.display());
                }
            }
        }
        NodeProc {
            child,
            peer: peer.unwrap_or_default(),
            addr: addr.unwrap_or_default(),
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`
/// naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Packs the `payment-ledger` plugin under `<root>/plugins` (once) and
/// appends a `[[payment]]` table using it to the config at `config_path`,
/// with `extra` lines inside that table (e.g. `confirm = "client"`).
/// Call it before the node starts. Returns `config_path`.
pub fn with_ledger(config_path: &Path, root: &Path, extra: &str) -> PathBuf {
    let plugins = root.join("plugins");
    let ledger = plugins.join("payment-ledger");
    if !ledger
        .join(infernet_host::runtime::manifest::MANIFEST_FILE)
        .exists()
    {
        pack_plugin("payment-ledger", PluginKind::Payment, &plugins);
    }
    let mut text = std::fs::read_to_string(config_path).unwrap();
    text.push_str(&format!("\n[[payment]]\nplugin = {ledger:?}\n{extra}\n"));
    std::fs::write(config_path, text).unwrap();
    config_path.to_path_buf()
}

/// The job rows in the store under `dir` (none before it exists).
pub fn job_rows(dir: &Path) -> Vec<JobRecord> {
    if !dir.join(DB_FILE).exists() {
        return vec![];
    }
    Store::open_in_dir(dir)
        .and_then(|s| s.jobs().list(1000))
        .unwrap_or_default()
}

/// The escrow rows in the store under `dir` (none before it exists).
pub fn escrow_rows(dir: &Path) -> Vec<EscrowRecord> {
    if !dir.join(DB_FILE).exists() {
        return vec![];
    }
    Store::open_in_dir(dir)
        .and_then(|s| s.escrows().list(1000))
        .unwrap_or_default()
}

/// Waits (20 s at most) until `client` knows `n` providers of `model`.
pub async fn wait_for_providers(client: &Infernet, model: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = client.network().providers_of(model).await.unwrap().len();
        if found >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client found {found} of {n} providers of {model}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `infernet verify evidence FILE --plugin PLUGIN --model MODEL`: the
/// offline check of a dispute's evidence bundle, as a user runs it.
pub fn verify_evidence_cli(file: &Path, plugin: &Path, model: &Path) -> std::process::Output {
    Command::new(infernet_bin())
        .args(["verify", "evidence"])
        .arg(file)
        .arg("--plugin")
        .arg(plugin)
        .arg("--model")
        .arg(model)
        .output()
        .expect("running infernet verify evidence")
}

/// An in-process node for `config`, gossiping every 200 ms (attestations
/// and adverts spread within a test's patience).
pub async fn start_node(config: &Path) -> Infernet {
    Infernet::new(infernet_host::config::Config::load(config).unwrap())
        .network(|n| n.gossip_heartbeat = Duration::from_millis(200))
        .start()
        .await
        .unwrap()
}

/// `infernet <args> --config <config>` (logging warnings only).
fn run_cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(infernet_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("INFERNET_LOG", "warn")
        .output()
        .unwrap()
}

/// `infernet <args> --config <config>`, asserting success; its stdout.
pub fn cli(config: &Path, args: &[&str]) -> String {
    let out = run_cli(config, args);
    assert!(
        out.status.success(),
        "infernet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `infernet <args> --config <config>`, asserting failure; its stderr.
pub fn cli_fails(config: &Path, args: &[&str]) -> String {
    let out = run_cli(config, args);
    assert!(
        !out.status.success(),
        "infernet {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// What `wallet fund ... 1` credits, in micro-USD.
pub const FUNDED: u64 = 1_000_000;

/// Echo providers `p0..` (`infernet node start`), one per rate, paid
/// through the ledger.
pub fn paid_providers(root: &Path, rates: &[u64]) -> Vec<NodeProc> {
    let mut all: Vec<NodeProc> = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        let boot: Vec<String> = all.first().map(|p| p.addr.clone()).into_iter().collect();
        let config = echo_provider_toml(root, &format!("p{i}"), *rate, &boot);
        with_ledger(&config, root, "confirm = \"client\"");
        all.push(NodeProc::start(&config));
    }
    all
}

/// `<root>/client.toml`, paying through its own ledger funded with 1 USD
/// ([`FUNDED`]).
pub fn funded_client(root: &Path, boot: &[String], extra: &str) -> PathBuf {
    let config = with_ledger(&client_toml(root, "client", boot, extra), root, "");
    cli(&config, &["wallet", "fund", "1"]);
    config
}

/// The client's balance in its own ledger.
pub fn ledger_balance(client: &Infernet) -> u64 {
    use infernet_host::payments::ledger::{self, LEDGER};
    let me = client.peer_id().to_string();
    ledger::balance(&client.store().plugin_kv(LEDGER), &me, "USD").unwrap()
}

/// The one pay escrow of client job `id`: its status and amount.
pub fn pay_escrow(store: &Store, id: &str) -> (String, u64) {
    use infernet_host::store::EscrowKind;
    let rows = store.escrows().by_job(id).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].kind, EscrowKind::Pay);
    (rows[0].status.clone(), rows[0].amount)
}
