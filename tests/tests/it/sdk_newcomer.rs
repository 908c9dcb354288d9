//! The plugin-api README walkthrough, done for real: a fresh crate in a
//! temp dir, depending on `plugin-api` by path, with the README's code,
//! built for wasm32-wasip2, packed, loaded by the host, and run.

use infernet_host::config::Config;
use infernet_host::node::Node;
use infernet_host::runtime::PluginKind;
use infernet_host::worlds::backend::JobOutput;
use infernet_tests::*;
use std::process::Command;

/// The first ```rust block of plugin-api/README.md.
fn readme_code() -> String {
    let readme = std::fs::read_to_string(repo_root().join("plugin-api/README.md")).unwrap();
    let start = readme.find("```rust\n").expect("README has a rust block") + "```rust\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_string()
}

#[test]
fn readme_walkthrough_builds_and_runs_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["new", "--lib", "--vcs", "none", "shout"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "cargo new failed");
    let krate = dir.path().join("shout");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    let manifest = manifest.replace(
        "[dependencies]",
        &format!(
            "[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\ninfernet-plugin-api = {{ path = {:?} }}\n\n[workspace]\n",
            repo_root().join("plugin-api")
        ),
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(krate.join("src/lib.rs"), readme_code()).unwrap();
    // A shared target dir keeps rebuilds of wit-bindgen cheap across runs.
    let target = repo_root().join("target/sdk-newcomer");
    let out = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the README plugin failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/shout.wasm")).unwrap();

    let pkg = pack_bytes(
        &wasm,
        "shout",
        PluginKind::Backend,
        &dir.path().join("dist/shout"),
    );
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let mut st = 2u64.to_le_bytes().to_vec();
    st.extend_from_slice(b"{}");
    std::fs::write(model.join("model.safetensors"), st).unwrap();
    let cfg = write_backend_config(dir.path(), &pkg, &[("shout", &model)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    assert_eq!(node.backends()[0].info.name, "shout");
    let result = node
        .generate("shout", "hello plugin world", &[], None)
        .unwrap();
    match result.output {
        JobOutput::Text(t) => assert_eq!(t, "HELLO PLUGIN WORLD (16 letters)"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(result.usage.input_tokens, 3);
}
