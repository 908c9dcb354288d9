//! Convolution geometry: the taps against a direct loop, bad geometry refused.

use infernet_verifier::commit::{commit_model, model_header};
use infernet_verifier::conv::Conv2d;
use infernet_verifier::testing::random_cnn;
use infernet_verifier::{QLayer, QuantizedMlp};

fn conv(stride: usize, padding: usize) -> Conv2d {
    Conv2d {
        in_channels: 2,
        in_h: 5,
        in_w: 4,
        out_channels: 3,
        kernel: 3,
        stride,
        padding,
    }
}

/// The taps against a direct loop over the padded image.
#[test]
fn taps_match_a_direct_cross_correlation() {
    for (s, p) in [(1, 0), (1, 1), (2, 1), (2, 0), (3, 2)] {
        let c = conv(s, p);
        c.check().unwrap();
        let (oh, ow) = (c.out_h(), c.out_w());
        assert_eq!(oh, (5 + 2 * p - 3) / s + 1);
        for o in 0..c.out_len() {
            let (row, taps) = c.taps(o);
            let (ch, y, x) = (o / (oh * ow), (o / ow) % oh, o % ow);
            assert_eq!(row, ch);
            let mut want = Vec::new();
            for ic in 0..2 {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let iy = (y * s + ky) as i64 - p as i64;
                        let ix = (x * s + kx) as i64 - p as i64;
                        if (0..5).contains(&iy) && (0..4).contains(&ix) {
                            want.push((
                                ic * 9 + ky * 3 + kx,
                                ic * 20 + iy as usize * 4 + ix as usize,
                            ));
                        }
                    }
                }
            }
            assert_eq!(taps, want, "stride {s} padding {p} output {o}");
        }
    }
}

#[test]
fn bad_geometry_is_refused() {
    let mut c = conv(1, 3);
    assert!(c.check().unwrap_err().contains("padding"));
    c.padding = 0;
    c.kernel = 6;
    assert!(c.check().is_err());
    c.kernel = 3;
    c.stride = 0;
    assert!(c.check().unwrap_err().contains("zero"));
}

/// A CNN's model directory reads back exactly, and its config names the
/// geometry the plugin needs.
#[test]
fn cnn_model_dir_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..6 {
        let cnn = random_cnn(seed);
        let path = cnn
            .write_model_dir(dir.path().join(format!("m{seed}")))
            .unwrap();
        assert_eq!(QuantizedMlp::from_model_dir(&path).unwrap(), cnn);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["model_type"], "quantized-cnn");
        assert_eq!(config["convs"].as_array().unwrap().len(), cnn.layers.len());
    }
}

/// Configs that lie about their geometry are refused with what is wrong.
#[test]
fn bad_cnn_model_dirs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = random_cnn(3);
    let path = cnn.write_model_dir(dir.path().join("m")).unwrap();
    let cfg = path.join("config.json");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    let refused = |edit: &dyn Fn(&mut serde_json::Value), want: &str| {
        let mut c = good.clone();
        edit(&mut c);
        std::fs::write(&cfg, c.to_string()).unwrap();
        let err = QuantizedMlp::from_model_dir(&path).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    };
    refused(
        &|c| drop(c.as_object_mut().unwrap().remove("convs")),
        "needs `convs`",
    );
    refused(
        &|c| c["model_type"] = "quantized-mlp".into(),
        "has no `convs`",
    );
    refused(&|c| c["convs"][0]["stride"] = 7.into(), "does not map");
    refused(&|c| c["convs"][0]["kernel"] = 0.into(), "zero size");
    refused(&|c| c["convs"][0]["extra"] = 1.into(), "unknown field");
    refused(
        &|c| c["convs"].as_array_mut().unwrap().pop().map(drop).unwrap(),
        "entries",
    );
}

/// The commitment binds the geometry: the same weights under another
/// stride or padding commit differently; an MLP's header has no conv part
/// (its commitments are those from before convolutions existed).
#[test]
fn the_commitment_binds_the_convolution() {
    let conv = Conv2d {
        in_channels: 1,
        in_h: 4,
        in_w: 4,
        out_channels: 1,
        kernel: 2,
        stride: 2,
        padding: 0,
    };
    let layers = |conv: Conv2d| {
        vec![
            QLayer {
                weights: vec![vec![1, 2, 3, 4]],
                bias: vec![0],
                shift: 1,
                conv: Some(conv),
            },
            QLayer::dense(vec![vec![1; conv.out_len()]], vec![0], 0),
        ]
    };
    let a = QuantizedMlp::new(layers(conv)).unwrap();
    // kernel 2, stride 2, no padding and kernel 2, stride 3, padding 1 both
    // map 4x4 to 2x2.
    let b = QuantizedMlp::new(layers(Conv2d {
        stride: 3,
        padding: 1,
        ..conv
    }))
    .unwrap();
    assert_eq!(a.dims(), b.dims());
    assert_ne!(a.forward(&[1; 16]).unwrap(), b.forward(&[1; 16]).unwrap());
    assert_ne!(commit_model(&a).unwrap(), commit_model(&b).unwrap());
    let header = model_header(&[4, 2], &[0], &[]);
    assert_eq!(header.len(), 2 + 2 + 1, "tag, layers, dims, shifts");
}
