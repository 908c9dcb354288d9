//! The `mlp` backend (f64 host kernels) against the Groth16 circuit's witness
//! computation (`QuantizedMlp::forward`, exact integers): identical logits
//! on every held-out digits input, for both trained models; the model dir
//! written by `QuantizedMlp::write_model_dir` reads back exactly.

use infernet_host::config::Config;
use infernet_host::node::Node;
use infernet_host::runtime::PluginKind;
use infernet_host::worlds::backend::{JobInput, JobOutput, JobRequest};
use infernet_tests::*;
use infernet_verifier::quant::{model_path, DigitsModel};
use infernet_verifier::QuantizedMlp;

fn logits(node: &Node, x: &[i8]) -> Vec<i64> {
    let job = JobRequest {
        id: "mlp".into(),
        model: "digits".into(),
        input: JobInput::Bytes(x.iter().map(|&v| v as u8).collect()),
        params: vec![],
    };
    match node.run(&job, None).unwrap().output {
        JobOutput::Bytes(b) => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[test]
fn plugin_matches_the_circuit_witness_on_every_test_input() {
    for name in ["digits-64-32-10", "digits-64-128-10"] {
        let model = DigitsModel::load(model_path(name)).unwrap();
        let q = model.quantize().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let model_dir = q.mlp.write_model_dir(dir.path().join(name)).unwrap();
        // The loader reads the directory back exactly.
        assert_eq!(QuantizedMlp::from_model_dir(&model_dir).unwrap(), q.mlp);
        let pkg = pack_plugin("mlp", PluginKind::Backend, dir.path());
        let cfg = write_backend_config(dir.path(), &pkg, &[("digits", &model_dir)], "");
        let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
        let mut checked = 0;
        for pixels in &model.test.x {
            let x = q.input_from_pixels(pixels);
            let expected = q.mlp.forward(&x).unwrap();
            assert_eq!(
                logits(&node, &x),
                expected,
                "{name}: logits differ for input {x:?}"
            );
            checked += 1;
        }
        assert!(checked >= 100, "{name}: only {checked} test inputs");
        eprintln!("{name}: {checked} inputs bit-identical");
    }
}

#[test]
fn class_output_and_bad_input() {
    let model = DigitsModel::load(model_path("digits-64-32-10")).unwrap();
    let q = model.quantize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model_dir = q.mlp.write_model_dir(dir.path().join("m")).unwrap();
    let pkg = pack_plugin("mlp", PluginKind::Backend, dir.path());
    let cfg = write_backend_config(dir.path(), &pkg, &[("digits", &model_dir)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    let x = q.input_from_pixels(&model.test.x[0]);
    let job = JobRequest {
        id: "c".into(),
        model: "digits".into(),
        input: JobInput::Bytes(x.iter().map(|&v| v as u8).collect()),
        params: vec![("output".into(), "class".into())],
    };
    let JobOutput::Classes(c) = node.run(&job, None).unwrap().output else {
        panic!("expected classes")
    };
    assert_eq!(c, vec![q.mlp.predict(&x).unwrap() as u32]);
    let bad = JobRequest {
        input: JobInput::Bytes(vec![1, 2, 3]),
        ..job
    };
    let err = node.run(&bad, None).unwrap_err();
    assert!(err.to_string().contains("expects 64"), "{err}");
}
