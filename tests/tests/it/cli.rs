//! The `infernet` binary end to end: generate a checkpoint, pack and sign
//! plugins, inspect them, stream a completion, and name bad config keys.

use infernet_tests::net::infernet_bin;
use infernet_tests::{minilm_dir, wasm_path as plugin_wasm};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn infernet(args: &[&str]) -> Output {
    Command::new(infernet_bin())
        .args(args)
        .output()
        .expect("running infernet")
}

fn ok(args: &[&str]) -> String {
    let out = infernet(args);
    assert!(
        out.status.success(),
        "infernet {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_pack_sign_verify_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("publisher.key");
    let out = ok(&["plugin", "keygen", "--out", s(&key)]);
    let public = std::fs::read_to_string(dir.path().join("publisher.key.pub")).unwrap();
    assert!(out.contains(&public));
    let pkg = dir.path().join("llama");
    ok(&[
        "plugin",
        "pack",
        s(&plugin_wasm("llama")),
        "--out",
        s(&pkg),
        "--version",
        "1.2.3",
    ]);
    ok(&["plugin", "sign", s(&pkg), "--key", s(&key)]);
    let verified = ok(&["plugin", "verify", s(&pkg), "--publisher", &public]);
    assert!(verified.contains(&public), "{verified}");
    let wrong = "11".repeat(32);
    let out = infernet(&["plugin", "verify", s(&pkg), "--publisher", &wrong]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature"));

    let info = ok(&["plugin", "inspect", s(&pkg)]);
    for expected in [
        "name:      llama",
        "version:   1.2.3",
        "kind:      backend",
        "infernet:plugin@0.2.4 (served by this host's @0.2.4)",
        "infernet:plugin/tensor@0.2.4",
        "infernet:plugin/models@0.2.4",
        "infernet:plugin/backend-api@0.2.4",
    ] {
        assert!(
            info.contains(expected),
            "inspect output lacks `{expected}`:\n{info}"
        );
    }
    let info = ok(&["plugin", "inspect", s(&plugin_wasm("pricing-flat"))]);
    assert!(info.contains("kind:      pricing"), "{info}");
}

/// In `dir`: a generated tiny llama checkpoint and a node config serving
/// it as `tiny` with the first-party `plugin`, packed by the CLI. Returns
/// the config and the checkpoint's paths.
fn tiny_node(dir: &Path, plugin: &str) -> (PathBuf, PathBuf) {
    let model = dir.join("tiny");
    ok(&["model", "gen-tiny", "--out", s(&model)]);
    let pkg = dir.join(plugin);
    ok(&["plugin", "pack", s(&plugin_wasm(plugin)), "--out", s(&pkg)]);
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!("[node]\ndata_dir = \"data\"\n[[backend]]\nplugin = {pkg:?}\n[[backend.models]]\nid = \"tiny\"\npath = {model:?}\n"),
    )
    .unwrap();
    (config, model)
}

#[test]
fn infer_streams_tokens_from_a_generated_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (config, model) = tiny_node(dir.path(), "llama");
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    let out = infernet(&[
        "infer",
        "--config",
        s(&config),
        "--model",
        "tiny",
        "--max-tokens",
        "8",
        "hello world",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.split_whitespace().count(),
        8,
        "8 words from 8 word-level tokens: {text:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("8 generated"));
    // the compiled artifact was cached in the data dir
    let cache = dir.path().join("data/cache/compiled");
    assert!(std::fs::read_dir(&cache).unwrap().count() >= 1);
}

#[test]
fn bad_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let cases = [
        ("[node]\ndevice = \"tpu\"\n", "node.device"),
        (
            "[[backend]]\nplugin = \"x\"\n[backend.limits]\nwall_time_ms = 0\n",
            "backend[0].limits.wall_time_ms",
        ),
        ("[[backend]]\nplugin = \"x\"\nmodel = []\n", "model"),
        (
            "[[backend]]\nplugin = \"x\"\npublisher_key = \"zz\"\n",
            "backend[0].publisher_key",
        ),
        (
            "[[backend]]\nplugin = \"does-not-exist\"\n",
            "does-not-exist",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(&config, text).unwrap();
        let out = infernet(&["infer", "--config", s(&config), "--model", "m", "p"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "error for {text:?} should name `{key}`: {err}"
        );
    }
}

#[test]
fn embed_prints_one_normalised_vector_per_text() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("bert");
    ok(&["plugin", "pack", s(&plugin_wasm("bert")), "--out", s(&pkg)]);
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!("[[backend]]\nplugin = {:?}\n[[backend.models]]\nid = \"minilm\"\npath = {:?}\n[node]\ndata_dir = \"d\"\n", pkg, minilm_dir()),
    )
    .unwrap();
    let out = ok(&[
        "embed",
        "--config",
        s(&config),
        "--model",
        "minilm",
        "first text",
        "second text",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        let v: Vec<f32> = serde_json::from_str(l).unwrap();
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused_naming_the_dir_and_the_holder() {
    let root = tempfile::tempdir().unwrap();
    let cfg = infernet_tests::net::client_toml(root.path(), "node", &[], "");
    let first = infernet_tests::net::NodeProc::start(&cfg);
    let out = infernet(&["node", "start", "--config", s(&cfg)]);
    assert!(!out.status.success(), "the second node started");
    let err = String::from_utf8_lossy(&out.stderr);
    let dir = root.path().join("node");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    drop(first);
    // Once the first is gone (SIGKILL: the OS releases the lock), the
    // directory is free again.
    let again = infernet_tests::net::NodeProc::start(&cfg);
    drop(again);
}

/// What a plugin's mistakes look like to the person running the node, with
/// `RUST_BACKTRACE=1` set: a kernel called wrongly is the plugin's fault
/// (`internal`), names the kernel and the plugin's own context, and
/// carries no host backtrace or paths (candle attaches one when the
/// variable is set); exp on a u32 tensor is refused, not a crash; a guest
/// panic is reported once, as its message, without wasm frame indices.
#[test]
fn plugin_mistakes_reach_the_user_once_and_without_host_internals() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = tiny_node(dir.path(), "hostile");
    let attack = |name: &str| {
        let out = Command::new(infernet_bin())
            .args(["infer", "--config", s(&config), "--model", "tiny"])
            .args(["--param", &format!("attack={name}"), "hi"])
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Frames of a host backtrace, library paths, wasm frame indices.
    let host_internals = [
        "candle_core::",
        "infernet_host::kernels",
        "/rustc/",
        ".cargo/registry",
        "wasm function",
    ];

    let kernel = attack("bad-kernel");
    assert!(
        kernel.contains("internal: hostile bad-kernel: kernel binary: dtype mismatch in add"),
        "{kernel}"
    );
    let unary = attack("int-unary");
    assert!(
        unary.contains("internal: kernel unary: `exp` takes a float tensor"),
        "{unary}"
    );
    let trap = attack("trap");
    assert_eq!(trap.matches("panics on purpose").count(), 1, "{trap}");
    assert!(trap.contains("`unreachable`"), "{trap}");
    for out in [&kernel, &unary, &trap] {
        for leak in host_internals {
            assert!(!out.contains(leak), "`{leak}` reached the user:\n{out}");
        }
    }
}

/// `infer --json` on a local backend gives what a plugin author compares
/// against a reference: every generated token id (from the llama plugin's
/// `emit-token-ids` pieces) and, with `--logits`, the logits; both match
/// candle-transformers' own Llama on the same checkpoint.
#[test]
fn local_infer_json_gives_token_ids_and_logits_that_match_native() {
    use infernet_host::models::reference::NativeLlama;
    let dir = tempfile::tempdir().unwrap();
    let (config, model) = tiny_node(dir.path(), "llama");
    let prompt = "hello world";
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["infer", "--config", s(&config), "--model", "tiny"];
        args.extend(["--max-tokens", "8", "--json"]);
        args.extend(extra);
        args.push(prompt);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let ids_of = |v: &serde_json::Value| -> Vec<u32> {
        serde_json::from_value(v["token_ids"].clone()).unwrap()
    };

    let native = NativeLlama::load(&model, &candle_core::Device::Cpu).unwrap();
    let prompt_ids = native.encode(prompt).unwrap();
    let (native_ids, native_logits) = native.generate_greedy(&prompt_ids, 8).unwrap();

    let v = run(&[]);
    let ids = ids_of(&v);
    assert!(!ids.is_empty(), "{v}");
    assert_eq!(
        ids.len() as u64,
        v["usage"]["output_tokens"].as_u64().unwrap()
    );
    assert_eq!(ids, native_ids[..ids.len()], "{v}");
    let pieces: String = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, v["text"].as_str().unwrap());
    assert_eq!(v["text"].as_str().unwrap(), native.decode(&ids).unwrap());

    let v = run(&["--logits"]);
    assert_eq!(ids_of(&v), ids, "the same greedy tokens");
    let shape: Vec<usize> = serde_json::from_value(v["logits"]["shape"].clone()).unwrap();
    let data: Vec<f32> = serde_json::from_value(v["logits"]["data"].clone()).unwrap();
    assert_eq!(shape, [ids.len(), native.vocab_size()]);
    for (step, row) in data.chunks(shape[1]).enumerate() {
        let diff = row
            .iter()
            .zip(&native_logits[step])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "step {step}: max |logit diff| {diff}");
    }

    let out = infernet(&[
        "infer",
        "--config",
        s(&config),
        "--model",
        "tiny",
        "--network",
        "--json",
        "--logits",
        prompt,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--logits applies to local runs"));
    // A generation backend is not asked for embeddings: the node routes
    // by the tasks describe() declares.
    let out = infernet(&["embed", "--config", s(&config), "--model", "tiny", prompt]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a backend that declares `embedding`"),
        "{err}"
    );
}

/// `model gen-tiny --gguf` writes a quantized GGUF file with its tokenizer
/// in the metadata; a node config names the file; `infer --json` runs it
/// and gives the tokens candle's own quantized llama picks.
#[test]
fn a_generated_gguf_file_is_served_and_matches_candle_quantized_llama() {
    use infernet_host::models::reference::NativeQuantizedLlama;
    use infernet_host::models::ModelEntry;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g");
    ok(&["model", "gen-tiny", "--gguf", "q4_k_m", "--out", s(&out)]);
    let file = out.join("model.gguf");
    let pkg = dir.path().join("llama");
    ok(&["plugin", "pack", s(&plugin_wasm("llama")), "--out", s(&pkg)]);
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!("[node]\ndata_dir = \"data\"\n[[backend]]\nplugin = {pkg:?}\n[[backend.models]]\nid = \"g\"\npath = {file:?}\n"),
    )
    .unwrap();
    let prompt = "the 3 quick foxes";
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "infer",
        "--config",
        s(&config),
        "--model",
        "g",
        "--max-tokens",
        "8",
        "--json",
        prompt,
    ]))
    .unwrap();
    let ids: Vec<u32> = serde_json::from_value(v["token_ids"].clone()).unwrap();

    // The host's tokenizer for the file, saved for candle's model.
    let tok = ModelEntry::open("g", &file, &candle_core::Device::Cpu)
        .unwrap()
        .tokenizer()
        .unwrap();
    let tok_file = dir.path().join("rebuilt-tokenizer.json");
    tok.save(&tok_file, false).unwrap();
    let native =
        NativeQuantizedLlama::load_gguf(&file, &tok_file, &candle_core::Device::Cpu).unwrap();
    let (native_ids, _) = native
        .generate_greedy(&native.encode(prompt).unwrap(), 8)
        .unwrap();
    assert_eq!(ids, native_ids[..ids.len()], "{v}");
    assert_eq!(ids.len(), 8, "{v}");

    let e = infernet(&[
        "model",
        "gen-tiny",
        "--gguf",
        "q3_k",
        "--out",
        s(&dir.path().join("x")),
    ]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("unknown --gguf `q3_k`"));
}
