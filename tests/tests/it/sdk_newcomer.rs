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

/// Builds the plugin crate at `krate` for wasm32-wasip2 as its author
/// would, and returns the path of `name`'s component. A shared target dir
/// keeps rebuilds of wit-bindgen cheap across runs.
fn build_component(krate: &std::path::Path, name: &str) -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = repo_root().join("target/sdk-newcomer");
    let out = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building {} failed:\n{}",
        krate.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ))
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
    let wasm = std::fs::read(build_component(&krate, "shout")).unwrap();

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

/// `infernet plugin new` for each kind: the crate it writes builds for
/// wasm32-wasip2 as it comes, packs with `infernet plugin pack`, and loads:
/// the backend runs a job on a generated llama checkpoint (its echo of the
/// prompt's tokens, with their ids), the pricing plugin quotes from its
/// config table, and the payment skeleton answers (no currency yet).
#[test]
fn plugin_new_templates_build_pack_and_load() {
    use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
    use infernet_host::models::{ModelEntry, TokenizerRes};
    use infernet_host::runtime::manifest::Package;
    use infernet_host::runtime::{Limits, Runtime};
    use infernet_host::store::Store;
    use infernet_host::worlds::backend::ProgressEvent;
    use infernet_host::worlds::payment::{PaymentGrants, PaymentPlugin};
    use infernet_host::worlds::pricing::QuoteRequest;
    use infernet_host::worlds::PricingPlugin;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    // `infernet <args>` (paths as they are), with its output.
    let cli = |args: &[&std::ffi::OsStr]| {
        Command::new(infernet_tests::net::infernet_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let cli_ok = |args: &[&std::ffi::OsStr]| {
        let out = cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "infernet {args:?}: {err}");
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let make = |name: &'static str, kind: &'static str| -> std::path::PathBuf {
        let new = [os("plugin"), os("new"), os(name), os("--kind"), os(kind)];
        cli_ok(&[&new[..], &[os("--dir"), dir.path().as_os_str()]].concat());
        let wasm = build_component(&dir.path().join(name), name);
        let pkg = dir.path().join("dist").join(name);
        cli_ok(&[
            os("plugin"),
            os("pack"),
            wasm.as_os_str(),
            os("--out"),
            pkg.as_os_str(),
        ]);
        pkg
    };
    // Names that cannot be a crate (or that walk out of --dir) are refused,
    // as is a crate that exists.
    let refusal = |name: &'static str| {
        let out = cli(&[
            os("plugin"),
            os("new"),
            os(name),
            os("--dir"),
            dir.path().as_os_str(),
        ]);
        assert!(!out.status.success(), "{name:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for bad in ["My_Plugin", "1st", "a-", "../x", "a b"] {
        assert!(refusal(bad).contains("lower-case"), "{bad:?}");
    }

    // Backend: a job on a generated checkpoint.
    let backend = make("my-backend", "backend");
    assert!(refusal("my-backend").contains("already exists"));
    let model = dir.path().join("tiny");
    write_llama_fixture(&LlamaFixtureSpec::tiny(), &model).unwrap();
    let cfg = write_backend_config(dir.path(), &backend, &[("tiny", &model)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    assert_eq!(node.backends()[0].info.name, "my-backend");
    let ids = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let ids = ids.clone();
        Box::new(move |e: ProgressEvent| {
            if let ProgressEvent::TokenIds(i) = e {
                ids.lock().unwrap().extend(i);
            }
        })
    };
    let prompt = "the quick brown fox";
    let result = node
        .generate("tiny", prompt, &[("max_tokens", "3".into())], Some(sink))
        .unwrap();
    let entry = ModelEntry::open("tiny", &model, &candle_core::Device::Cpu).unwrap();
    let tok = TokenizerRes::of(entry).unwrap();
    let prompt_ids = tok.encode(prompt.into(), true).unwrap();
    assert_eq!(*ids.lock().unwrap(), prompt_ids[..3]);
    match result.output {
        JobOutput::Text(t) => assert_eq!(t, tok.decode(&prompt_ids[..3], true).unwrap()),
        other => panic!("unexpected {other:?}"),
    }

    // Pricing: quotes from its config table.
    let pricing = make("my-pricing", "pricing");
    let rt = Runtime::new(&dir.path().join("cache")).unwrap();
    let loaded = rt
        .load(&Package::open(&pricing, None).unwrap(), PluginKind::Pricing)
        .unwrap();
    let config = BTreeMap::from([("per_output_token".to_string(), "7".to_string())]);
    let p = PricingPlugin::new(&rt, &loaded, Limits::default(), config).unwrap();
    let q = p
        .quote(&QuoteRequest {
            model: "m".into(),
            input_tokens: 10,
            max_output_tokens: 20,
            estimated_ms: 0,
            queue_depth: 0,
            load_permille: 0,
        })
        .unwrap();
    assert_eq!(q.price.amount, 140);

    // Payment: the skeleton loads, offers nothing, refuses by name.
    let payment = make("my-pay", "payment");
    let loaded = rt
        .load(&Package::open(&payment, None).unwrap(), PluginKind::Payment)
        .unwrap();
    let store = Arc::new(Store::open_in_dir(&dir.path().join("data")).unwrap());
    let grants = PaymentGrants {
        account: "acct".into(),
        allowed_hosts: vec![],
        config: BTreeMap::new(),
        secrets: BTreeMap::new(),
        generated: Default::default(),
        kv: store.plugin_kv("my-pay"),
    };
    let pay = PaymentPlugin::new(&rt, &loaded, Limits::default(), grants).unwrap();
    assert!(pay.currencies().unwrap().is_empty());
    let err = pay.status("x").unwrap_err().to_string();
    assert!(err.contains("my-pay: `status` is not written yet"), "{err}");
}
