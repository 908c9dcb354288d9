//! Quantisation and the integer reference forward pass.

use infernet_verifier::quant::{argmax, model_path, requantize_relu};
use infernet_verifier::{DigitsModel, QLayer, QuantizedMlp};

#[test]
fn requantize_rounds_half_up_and_clamps() {
    // shift 0: no rounding.
    assert_eq!(requantize_relu(5, 0), 5);
    // (5 + 1) >> 1 = 3 (2.5 rounds up); (3 + 1) >> 1 = 2 (1.5 up).
    assert_eq!(requantize_relu(5, 1), 3);
    assert_eq!(requantize_relu(3, 1), 2);
    // (-3 + 1) >> 1 = -1 (arithmetic shift floors), then ReLU -> 0.
    assert_eq!(requantize_relu(-3, 1), 0);
    // 2.49 -> 2, 2.5 -> 3 at shift 2: (9+2)>>2 = 2, (10+2)>>2 = 3.
    assert_eq!(requantize_relu(9, 2), 2);
    assert_eq!(requantize_relu(10, 2), 3);
    // Clamp to 127.
    assert_eq!(requantize_relu(1 << 20, 4), 127);
    assert_eq!(requantize_relu(127 * 16 + 7, 4), 127);
    assert_eq!(requantize_relu(128 * 16 - 9, 4), 127);
    assert_eq!(requantize_relu(126 * 16 + 7, 4), 126);
    assert_eq!(requantize_relu(i64::from(i32::MIN), 8), 0);
}

#[test]
fn forward_matches_hand_computation() {
    let mlp = QuantizedMlp::new(vec![
        QLayer {
            weights: vec![vec![1, 2], vec![-3, 4]],
            bias: vec![1, -2],
            shift: 1,
            conv: None,
        },
        QLayer {
            weights: vec![vec![5, -6]],
            bias: vec![7],
            shift: 0,
            conv: None,
        },
    ])
    .unwrap();
    // x = [10, -20]: acc0 = 10 - 40 + 1 = -29 -> (-29+1)>>1 = -14 -> 0;
    // acc1 = -30 - 80 - 2 = -112 -> 0. Logit = 7.
    assert_eq!(
        mlp.forward_trace(&[10, -20]).unwrap(),
        vec![vec![0, 0], vec![7]]
    );
    // x = [10, 20]: acc0 = 10 + 40 + 1 = 51 -> 26; acc1 = -30 + 80 - 2 = 48 -> 24.
    // logit = 5*26 - 6*24 + 7 = -7.
    assert_eq!(
        mlp.forward_trace(&[10, 20]).unwrap(),
        vec![vec![26, 24], vec![-7]]
    );
    assert!(mlp.forward(&[1]).is_err());
}

#[test]
fn malformed_models_are_rejected() {
    let ragged = QuantizedMlp {
        layers: vec![QLayer {
            weights: vec![vec![1, 2], vec![3]],
            bias: vec![0, 0],
            shift: 0,
            conv: None,
        }],
    };
    assert!(ragged.validate().is_err());
    let last_shift = QuantizedMlp {
        layers: vec![QLayer {
            weights: vec![vec![1]],
            bias: vec![0],
            shift: 3,
            conv: None,
        }],
    };
    assert!(last_shift.validate().is_err());
    let chain = QuantizedMlp {
        layers: vec![
            QLayer {
                weights: vec![vec![1]],
                bias: vec![0],
                shift: 0,
                conv: None,
            },
            QLayer {
                weights: vec![vec![1, 1]],
                bias: vec![0],
                shift: 0,
                conv: None,
            },
        ],
    };
    assert!(chain.validate().is_err());
    assert!(QuantizedMlp { layers: vec![] }.validate().is_err());
}

#[test]
fn argmax_takes_first_maximum() {
    assert_eq!(argmax(&[1, 3, 3, 2]), 1);
    assert_eq!(argmax(&[-1i64]), 0);
}

#[test]
fn quantized_accuracy_within_one_point_of_float() {
    for name in ["digits-64-32-10", "digits-64-128-10", "digits-cnn-4-8"] {
        let m = DigitsModel::load(model_path(name)).unwrap();
        let float = m.float_accuracy();
        assert!(
            (float - m.float_test_accuracy).abs() < 1e-9,
            "{name}: Rust float accuracy {float} != script's {}",
            m.float_test_accuracy
        );
        let q = m.quantize().unwrap();
        let quant = m.quantized_accuracy(&q).unwrap();
        println!(
            "{name}: float {:.2}%  quantized {:.2}%  (n={}, input 2^{}, weights 2^{:?}, acts 2^{:?}, shifts {:?})",
            float * 100.0,
            quant * 100.0,
            m.test.y.len(),
            q.params.input_exp,
            q.params.weight_exps,
            q.params.act_exps,
            q.mlp.shifts()
        );
        assert!(
            quant >= float - 0.01,
            "{name}: quantized {quant} vs float {float}"
        );
        // Every intermediate stays far below 2^52 (f64-exact).
        for x in &m.test.x {
            for layer in q.mlp.forward_trace(&q.input_from_pixels(x)).unwrap() {
                assert!(layer.iter().all(|v| v.unsigned_abs() < 1 << 40));
            }
        }
    }
}
