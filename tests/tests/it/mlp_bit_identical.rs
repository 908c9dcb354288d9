//! The `mlp` backend (f64 host kernels) against the Groth16 circuit's witness
//! computation (`QuantizedMlp::forward`, exact integers): identical logits
//! on every held-out digits input, for the three trained models (two MLPs,
//! one CNN) and for random CNNs; the model dir
//! written by `QuantizedMlp::write_model_dir` reads back exactly.

use infernet_host::config::Config;
use infernet_host::node::Node;
use infernet_host::runtime::PluginKind;
use infernet_host::worlds::backend::{JobInput, JobOutput, JobRequest};
use infernet_tests::*;
use infernet_verifier::quant::{model_path, DigitsModel};
use infernet_verifier::testing::random_cnn;
use infernet_verifier::QuantizedMlp;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn logits(node: &Node, x: &[i8]) -> Vec<i64> {
    logits_of(node, "digits", x)
}

fn logits_of(node: &Node, model: &str, x: &[i8]) -> Vec<i64> {
    let job = JobRequest {
        id: "mlp".into(),
        model: model.into(),
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
    for name in ["digits-64-32-10", "digits-64-128-10", "digits-cnn-4-8"] {
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

/// Random CNNs (one or two convolutions of every stride and padding,
/// non-square images, extreme weights and shifts): the plugin's im2col
/// gather and f64 kernels give the exact integer forward pass.
#[test]
fn plugin_matches_the_forward_pass_on_random_cnns() {
    let dir = tempfile::tempdir().unwrap();
    let cnns: Vec<_> = (0..10).map(random_cnn).collect();
    let dirs: Vec<_> = cnns
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("cnn{i}"),
                m.write_model_dir(dir.path().join(format!("cnn{i}")))
                    .unwrap(),
            )
        })
        .collect();
    let models: Vec<(&str, &std::path::Path)> = dirs
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_path()))
        .collect();
    let pkg = pack_plugin("mlp", PluginKind::Backend, dir.path());
    let cfg = write_backend_config(dir.path(), &pkg, &models, "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    for ((name, _), cnn) in dirs.iter().zip(&cnns) {
        let n = cnn.input_len();
        let mut inputs = vec![vec![-128i8; n], vec![127i8; n]];
        inputs.extend((0..4).map(|_| (0..n).map(|_| rng.gen()).collect()));
        for x in inputs {
            assert_eq!(
                logits_of(&node, name, &x),
                cnn.forward(&x).unwrap(),
                "{name} {:?}",
                cnn.convs()
            );
        }
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

/// A config whose convolution would need an enormous im2col table is
/// refused with a clear error, not by running the plugin out of memory.
#[test]
fn an_oversized_convolution_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = random_cnn(1).write_model_dir(dir.path().join("m")).unwrap();
    let cfg_path = model_dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["convs"][0] = serde_json::json!({
        "in_channels": 256, "in_h": 256, "in_w": 256, "out_channels": 1,
        "kernel": 128, "stride": 1, "padding": 127,
    });
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let pkg = pack_plugin("mlp", PluginKind::Backend, dir.path());
    let cfg = write_backend_config(dir.path(), &pkg, &[("big", &model_dir)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    let job = JobRequest {
        id: "big".into(),
        model: "big".into(),
        input: JobInput::Bytes(vec![0; 4]),
        params: vec![],
    };
    let err = node.run(&job, None).unwrap_err().to_string();
    assert!(err.contains("oversized geometry"), "{err}");
}
