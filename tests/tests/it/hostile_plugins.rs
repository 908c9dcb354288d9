//! Hostile and malformed plugins: each gets a clear error, and the node
//! keeps serving the next job with the same backend.

use infernet_host::config::Config;
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::node::{Node, NodeError};
use infernet_host::runtime::manifest::{Manifest, Package, PluginKind};
use infernet_host::runtime::{PluginError, Runtime};
use infernet_host::worlds::backend::{
    JobInput, JobOutput, JobRequest, ProgressEvent, ProgressSink,
};
use infernet_tests::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn hostile_node(dir: &std::path::Path, limits: &str) -> Node {
    hostile_node_with(dir, &[], limits)
}

/// The hostile backend serving `echo` plus `models` (id, dir) under `limits`.
fn hostile_node_with(
    dir: &std::path::Path,
    models: &[(&str, &std::path::Path)],
    limits: &str,
) -> Node {
    let pkg = pack_plugin("hostile", PluginKind::Backend, dir);
    let mut all = vec![("echo", dir)];
    all.extend_from_slice(models);
    let cfg = write_backend_config(dir, &pkg, &all, limits);
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

/// A guest that fills its stderr pipe before panicking: the report is one
/// line of bounded length that still ends with why it crashed.
#[test]
fn a_flood_of_stderr_before_a_trap_is_cut_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "");
    let err = plugin_err(node.run(&job("loud-trap"), None)).to_string();
    assert!(err.contains("panics after a flood of stderr"), "{err}");
    assert!(!err.contains("noise line 0000"), "the head is cut");
    assert!(
        err.len() < 3 * 1024 && !err.contains('\n'),
        "{} bytes: {}",
        err.len(),
        &err[..200]
    );
    assert!(err.contains('…') && err.contains("unreachable"), "{err}");
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
    let err = limit_exceeded(node.run(&job("tensors"), None));
    assert!(err.contains("tensor"), "{err}");
    still_serves(&node);
}

#[test]
fn copy_out_past_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "copy_out_mb = 100");
    let err = limit_exceeded(node.run(&job("copy"), None));
    assert!(err.contains("copy-out limit"), "{err}");
    still_serves(&node);
}

#[test]
fn kernel_time_past_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "kernel_time_ms = 300");
    let err = limit_exceeded(node.run(&job("kernels"), None));
    assert!(err.contains("kernel time"), "{err}");
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

/// A job running `attack` with extra `params`.
fn attack(attack: &str, params: &[(&str, &str)]) -> JobRequest {
    let mut job = job(attack);
    job.params
        .extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    job
}

/// The message of a `limit-exceeded` error, failing on anything else.
fn limit_exceeded(r: Result<impl std::fmt::Debug, NodeError>) -> String {
    match plugin_err(r) {
        err @ PluginError::Guest {
            kind: "limit-exceeded",
            ..
        } => err.to_string(),
        other => panic!("expected a limit-exceeded error, got {other}"),
    }
}

/// The tiny llama fixture in `<dir>/tiny`.
fn tiny_model(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("tiny");
    write_llama_fixture(&LlamaFixtureSpec::tiny(), &model).unwrap();
    model
}

#[test]
fn broadcast_matmul_is_charged_for_its_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "tensor_mb = 64");
    // [1, 2048, 1] x [64, 1, 2048]: 16 MiB if the batch were taken from the
    // left operand only; the product is [64, 2048, 2048], 1 GiB.
    let msg = limit_exceeded(node.run(&attack("matmul-batch", &[]), None));
    assert!(
        msg.contains("matmul:") && msg.contains("[64, 2048, 2048]"),
        "the refusal names the kernel and the broadcast result: {msg}"
    );
    assert!(
        msg.contains("1073741824") && msg.contains("tensor_mb"),
        "{msg}"
    );
    still_serves(&node);
}

#[test]
fn kernels_refuse_their_output_before_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "tensor_mb = 64");
    // The plugin holds 48 to 64 MiB; each kernel's result is 16 MiB more.
    let kernels = [
        ("unary", "unary"),
        ("affine", "affine"),
        ("clamp", "clamp"),
        ("softmax", "softmax-last-dim"),
        ("rms-norm", "rms-norm"),
        ("layer-norm", "layer-norm"),
        ("rope", "rope"),
        ("rope-interleaved", "rope-interleaved"),
        ("masked-fill", "masked-fill"),
        ("attention", "attention"),
        ("reshape", "reshape"),
    ];
    for (param, name) in kernels {
        let msg = limit_exceeded(node.run(&attack("alloc-first", &[("kernel", param)]), None));
        assert!(
            msg.contains(&format!("{name}: a result of shape")) && msg.contains("tensor_mb"),
            "{param} must be refused by its own precheck: {msg}"
        );
    }
    still_serves(&node);
}

#[test]
fn one_kernel_cannot_run_past_the_kernel_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    // 300 ms of kernel time allows 300 MFLOP per kernel by default; one
    // 2048^3 matmul is 17180 MFLOP and must not start.
    let node = hostile_node(dir.path(), "kernel_time_ms = 300");
    let msg = limit_exceeded(node.run(&attack("big-kernel", &[]), None));
    assert!(
        msg.contains("matmul:") && msg.contains("kernel_work_mflop") && msg.contains("300 MFLOP"),
        "{msg}"
    );
    still_serves(&node);

    // An explicit limit replaces the derived one: 512^3 (268 MFLOP) is
    // refused at 100, 256^3 (34 MFLOP) runs.
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "kernel_work_mflop = 100");
    let msg = limit_exceeded(node.run(&attack("big-kernel", &[("n", "512")]), None));
    assert!(msg.contains("100 MFLOP"), "{msg}");
    node.run(&attack("big-kernel", &[("n", "256")]), None)
        .expect("a kernel under the limit runs");
}

#[test]
fn live_handles_are_capped_even_when_they_hold_no_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let node = hostile_node_with(dir.path(), &[("tiny", &model)], "tensor_handles = 1000");
    // Empty tensors, samplers, model weights, opened models and tokenizers
    // cost no tensor bytes; the plugin tries to hold 200000 of each.
    for what in ["tensors", "samplers", "weights", "models", "tokenizers"] {
        let job = attack("handles", &[("what", what), ("target", "tiny")]);
        let msg = limit_exceeded(node.run(&job, None));
        assert!(
            msg.contains("tensor_handles") && msg.contains("1000 live handles"),
            "{what}: {msg}"
        );
        still_serves(&node);
    }
    // Past wasmtime's own cap on a store's handles (100k), the host's
    // named limit still comes first.
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "tensor_handles = 120000");
    let msg = limit_exceeded(node.run(&attack("handles", &[("what", "tensors")]), None));
    assert!(msg.contains("120000 live handles"), "{msg}");
    still_serves(&node);
}

/// Quantized weights (contract 0.2.2) through a hostile plugin: each one
/// held counts as a handle, and a misused one is an error value naming
/// what is wrong, never a crash.
#[test]
fn quantized_weights_are_capped_handles_and_misuse_is_refused() {
    use infernet_host::models::fixture::LlamaFixtureSpec;
    use infernet_host::models::fixture_gguf::{write_gguf_llama, GgufQuant, GgufTokenizer};
    let dir = tempfile::tempdir().unwrap();
    let gguf = write_gguf_llama(
        &LlamaFixtureSpec::gguf_tiny(),
        &dir.path().join("g"),
        GgufQuant::Q8_0,
        &GgufTokenizer::Beside,
    )
    .unwrap();
    let model = tiny_model(dir.path());
    let node = hostile_node_with(
        dir.path(),
        &[("g", &gguf), ("tiny", &model)],
        "tensor_handles = 1000",
    );
    let job = attack("handles", &[("what", "qweights"), ("target", "g")]);
    let msg = limit_exceeded(node.run(&job, None));
    assert!(
        msg.contains("tensor_handles") && msg.contains("1000 live handles"),
        "{msg}"
    );
    for (step, target, want) in [
        ("vector", "g", "not a matrix"),
        ("missing", "g", "no tensor named `blk.99.attn_q.weight`"),
        ("vector", "tiny", "not GGUF"),
        ("int-input", "g", "qlinear: the input must be f32"),
        ("wide-input", "g", "300 features"),
    ] {
        let job = attack("qmatrix", &[("step", step), ("target", target)]);
        let err = format!("{:?}", node.run(&job, None).unwrap_err());
        assert!(err.contains(want), "{step} on {target}: {err}");
        assert!(!err.contains("accepted a misused"), "{step}: {err}");
    }
    still_serves(&node);
}

#[test]
fn work_on_model_weights_counts_although_their_bytes_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let node = hostile_node_with(dir.path(), &[("tiny", &model)], "kernel_work_mflop = 1");
    // The [512, 64] head times its transpose: 34 MFLOP reading only weights.
    let job = attack("weight-work", &[("target", "tiny")]);
    let msg = limit_exceeded(node.run(&job, None));
    assert!(
        msg.contains("matmul:") && msg.contains("kernel_work_mflop"),
        "{msg}"
    );
    still_serves(&node);
}

/// A sink counting the tokens and bytes it receives.
fn counting_sink() -> (ProgressSink, Arc<Mutex<(usize, usize)>>) {
    let seen = Arc::new(Mutex::new((0usize, 0usize)));
    let counter = seen.clone();
    let sink = Box::new(move |e: ProgressEvent| {
        if let ProgressEvent::Token(t) = e {
            let mut c = counter.lock().unwrap();
            c.0 += 1;
            c.1 += t.len();
        }
    });
    (sink, seen)
}

#[test]
fn streamed_tokens_are_capped_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "stream_tokens = 1000\nstream_mb = 1");
    // 100000 one-byte tokens: the 1001st is refused.
    let (sink, seen) = counting_sink();
    let job = attack("tokens", &[("n", "100000")]);
    let msg = limit_exceeded(node.run(&job, Some(sink)));
    assert!(
        msg.contains("stream_tokens") && msg.contains("1000"),
        "{msg}"
    );
    assert_eq!(*seen.lock().unwrap(), (1000, 1000), "tokens delivered");
    // 64 tokens of 64 KiB: the 17th would pass 1 MiB.
    let (sink, seen) = counting_sink();
    let job = attack("tokens", &[("n", "64"), ("size", "65536")]);
    let msg = limit_exceeded(node.run(&job, Some(sink)));
    assert!(
        msg.contains("stream_mb") && msg.contains("1048576"),
        "{msg}"
    );
    assert_eq!(*seen.lock().unwrap(), (16, 16 * 65536), "tokens delivered");
    // Token ids count too: a million ids in one token are 4 MiB.
    let msg = limit_exceeded(node.run(&attack("token-ids", &[]), None));
    assert!(msg.contains("stream_mb"), "{msg}");
    assert!(node
        .run(&attack("token-ids", &[("n", "1000")]), None)
        .is_ok());
    // The budget is per call: the same instance streams its full 1000
    // tokens in each of two calls.
    for call in 0..2 {
        let (sink, seen) = counting_sink();
        let r = node.run(&attack("tokens", &[("n", "1000")]), Some(sink));
        assert!(r.is_ok(), "call {call}: {r:?}");
        assert_eq!(*seen.lock().unwrap(), (1000, 1000), "call {call}");
    }
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
            && msg.contains("infernet:plugin@0.1.0, 0.2.4")
            && msg.contains("infernet-plugin-api 0.2.4"),
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

/// A paid job's output bound holds even for a backend that streams
/// nothing and under-reports its output: the host counts the text itself.
#[test]
fn a_paid_output_bound_holds_against_a_quiet_under_reporting_backend() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "");
    let job = attack("quiet-output", &[("n", "1000")]);
    let err = node
        .run_bounded(&job, None, Some(16))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("paid for 16 output tokens") && err.contains("produced 1000"),
        "{err}"
    );
    // Within the bound it is delivered.
    let small = attack("quiet-output", &[("n", "16")]);
    node.run_bounded(&small, None, Some(16)).unwrap();
    still_serves(&node);
}

/// Every kernel call of a job is kept in its trace: a plugin making a
/// flood of cheap calls would grow the host's memory by the trace alone.
/// The trace is charged to the tensor budget, so the flood is refused
/// like a tensor past it.
#[test]
fn a_flood_of_cheap_calls_cannot_grow_the_trace_past_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let node = hostile_node(dir.path(), "tensor_mb = 2");
    let mut flood = job("calls");
    flood.params.push(("kernel".into(), "affine".into()));
    flood.params.push(("n".into(), "200000".into()));
    let err = limit_exceeded(node.run(&flood, None));
    assert!(
        err.contains("kernel trace") && err.contains("tensor_mb"),
        "{err}"
    );
    still_serves(&node);
    // Within the budget the same calls run, and are all in the trace.
    let mut fewer = job("calls");
    fewer.params.push(("kernel".into(), "affine".into()));
    fewer.params.push(("n".into(), "1000".into()));
    let (_, trace) = node.run_traced(&fewer, None, None).unwrap();
    assert!(trace.leaves.len() >= 1000, "{}", trace.leaves.len());
}
