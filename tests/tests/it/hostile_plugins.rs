//! Hostile and malformed plugins: each gets a clear error, and the node
//! keeps serving the next job with the same backend.

use infernet_host::config::Config;
use infernet_host::node::{Node, NodeError};
use infernet_host::runtime::manifest::{Manifest, Package, PluginKind};
use infernet_host::runtime::{PluginError, Runtime};
use infernet_host::worlds::backend::{JobInput, JobOutput, JobRequest};
use infernet_tests::*;
use std::time::{Duration, Instant};

fn hostile_node(dir: &std::path::Path, limits: &str) -> Node {
    let pkg = pack_plugin("hostile", PluginKind::Backend, dir);
    let cfg = write_backend_config(dir, &pkg, &[("echo", dir)], limits);
    // `echo` points at a directory with no weights; the hostile backend never opens it.
    infernet_tests::net::empty_model_dir(dir);
    Node::from_config(&Config::load(&cfg).unwrap()).unwrap()
}

fn job(attack: &str) -> JobRequest {
    JobRequest {
        id: format!("job-{attack}"),
        model: "echo".into(),
        input: JobInput::Text("still alive".into()),
        params: vec![("attack".into(), attack.into())],
    }
}

fn still_serves(node: &Node) {
    let r = node
        .run(&job("none"), None)
        .expect("node must keep serving after a hostile call");
    match r.output {
        JobOutput::Text(t) => assert_eq!(t, "still alive"),
        other => panic!("unexpected output {other:?}"),
    }
}

fn plugin_err(r: Result<impl std::fmt::Debug, NodeError>) -> PluginError {
    match r {
        Err(NodeError::Plugin(e)) => e,
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

#[test]
fn trap_in_execute_is_reported_and_instance_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "");
    let err = plugin_err(node.run(&job("trap"), None));
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
    assert!(
        err.to_string().contains("panics on purpose"),
        "stderr should carry the panic message: {err}"
    );
    still_serves(&node);
}

#[test]
fn infinite_loop_is_stopped_within_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "wall_time_ms = 400");
    let started = Instant::now();
    let err = plugin_err(node.run(&job("loop"), None));
    let took = started.elapsed();
    assert!(
        matches!(err, PluginError::Timeout { limit_ms: 400, .. }),
        "{err}"
    );
    assert!(
        took < Duration::from_millis(400 + 1500),
        "stopped after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(390),
        "stopped too early: {took:?}"
    );
    still_serves(&node);
}

#[test]
fn memory_growth_past_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "memory_mb = 64");
    let err = plugin_err(node.run(&job("memory"), None));
    match &err {
        PluginError::MemoryLimit {
            limit, requested, ..
        } => {
            assert_eq!(*limit, 64 << 20);
            assert!(*requested > 64 << 20);
        }
        other => panic!("expected MemoryLimit, got {other}"),
    }
    still_serves(&node);
}

#[test]
fn tensor_bytes_past_limit_are_refused_and_freed() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "tensor_mb = 200");
    let err = plugin_err(node.run(&job("tensors"), None));
    assert!(
        matches!(
            &err,
            PluginError::Guest {
                kind: "limit-exceeded",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tensor"), "{err}");
    still_serves(&node);
}

#[test]
fn copy_out_past_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "copy_out_mb = 100");
    let err = plugin_err(node.run(&job("copy"), None));
    assert!(
        matches!(
            &err,
            PluginError::Guest {
                kind: "limit-exceeded",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("copy-out limit"), "{err}");
    still_serves(&node);
}

#[test]
fn kernel_time_past_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "kernel_time_ms = 300");
    let err = plugin_err(node.run(&job("kernels"), None));
    assert!(
        matches!(
            &err,
            PluginError::Guest {
                kind: "limit-exceeded",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("kernel time"), "{err}");
    still_serves(&node);
}

#[test]
fn opening_an_ungranted_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "");
    let err = plugin_err(node.run(&job("model"), None));
    assert!(
        matches!(
            &err,
            PluginError::Guest {
                kind: "unsupported",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("forbidden-model"), "{err}");
    assert!(err.to_string().contains("not granted"), "{err}");
    still_serves(&node);
}

fn runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(&dir.join("cache")).unwrap()
}

fn load_bytes(dir: &std::path::Path, bytes: &[u8], kind: PluginKind) -> Result<(), PluginError> {
    let pkg = pack_bytes(bytes, "bad", kind, &dir.join("bad"));
    let package = Package::open(&pkg, None)?;
    runtime(dir).load(&package, kind).map(|_| ())
}

#[test]
fn random_bytes_are_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = load_bytes(dir.path(), &bytes, PluginKind::Backend).unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent { .. }), "{err}");
    assert!(err.to_string().contains("not WebAssembly"), "{err}");
    // a component header followed by garbage
    let mut fake = b"\0asm\x0d\x00\x01\x00".to_vec();
    fake.extend_from_slice(&bytes);
    let err = load_bytes(dir.path(), &fake, PluginKind::Backend).unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent { .. }), "{err}");
}

#[test]
fn core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = wat::parse_str("(module (func (export \"execute\")))").unwrap();
    let err = load_bytes(dir.path(), &core, PluginKind::Backend).unwrap_err();
    assert!(err.to_string().contains("core wasm module"), "{err}");
}

#[test]
fn component_of_the_wrong_world_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(wasm_path("pricing-flat")).unwrap();
    let err = load_bytes(dir.path(), &bytes, PluginKind::Backend).unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("pricing"), "{err}");
    // and the other way round, through the node config
    let pkg = pack_plugin("llama", PluginKind::Pricing, dir.path());
    let cfg = format!(
        "[node]\ndata_dir = {:?}\n[pricing]\nplugin = {:?}\n",
        dir.path().join("d"),
        pkg
    );
    let err = Node::from_config(&Config::parse(&cfg, dir.path()).unwrap())
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("backend world"), "{err}");
}

#[test]
fn incompatible_wit_major_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let wat = r#"(component
        (import "infernet:plugin/log@1.0.0" (instance))
        (import "infernet:plugin/types@1.0.0" (instance))
    )"#;
    let bytes = wat::parse_str(wat).unwrap();
    let err = load_bytes(dir.path(), &bytes, PluginKind::Backend).unwrap_err();
    assert!(matches!(err, PluginError::IncompatibleWit { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("infernet:plugin@1.0.0")
            && msg.contains("infernet:plugin@0.1.0, 0.2.0")
            && msg.contains("infernet-plugin-api 0.2.0"),
        "{msg}"
    );
    // 0.3 is also a breaking change while the contract is 0.x
    let bytes = wat::parse_str(wat.replace("1.0.0", "0.3.0")).unwrap();
    let err = load_bytes(dir.path(), &bytes, PluginKind::Backend).unwrap_err();
    assert!(matches!(err, PluginError::IncompatibleWit { .. }), "{err}");
    assert!(err.to_string().contains("infernet:plugin@0.3.0"), "{err}");
}

#[test]
fn hash_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = pack_plugin("hostile", PluginKind::Backend, dir.path());
    let wasm = pkg.join("hostile.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&wasm, bytes).unwrap();
    let err = Package::open(&pkg, None).unwrap_err();
    assert!(matches!(err, PluginError::HashMismatch { .. }), "{err}");
}

#[test]
fn signature_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = pack_plugin("hostile", PluginKind::Backend, dir.path());
    let file = pkg.join("infernet-plugin.toml");
    let publisher = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[2u8; 32]);
    let pinned = hex::encode(publisher.verifying_key().to_bytes());
    // unsigned but pinned
    let err = Package::open(&pkg, Some(&pinned)).unwrap_err();
    assert!(matches!(err, PluginError::Signature { .. }), "{err}");
    // signed by someone else
    let (mut m, _) = Manifest::read(&pkg).unwrap();
    m.sign(&stranger);
    m.write(&file).unwrap();
    let err = Package::open(&pkg, Some(&pinned)).unwrap_err();
    assert!(err.to_string().contains("pins"), "{err}");
    // signed by the publisher, then the manifest is edited
    let (mut m, _) = Manifest::read(&pkg).unwrap();
    m.sign(&publisher);
    m.write(&file).unwrap();
    Package::open(&pkg, Some(&pinned)).expect("valid signature");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("version = \"0.1.0\"", "version = \"9.9.9\"");
    std::fs::write(&file, text).unwrap();
    let err = Package::open(&pkg, Some(&pinned)).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}
