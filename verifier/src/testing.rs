//! Random networks for tests (this crate's and the plugin's): extreme
//! weights, biases and shifts, convolutions of every stride and padding.
//! Not part of the API.

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::conv::Conv2d;
use crate::quant::{QLayer, QuantizedMlp};

fn extreme_weight(rng: &mut StdRng) -> i8 {
    match rng.gen_range(0..4) {
        0 => -128,
        1 => 127,
        _ => rng.gen(),
    }
}

fn layer(rng: &mut StdRng, rows: usize, cols: usize, last: bool, conv: Option<Conv2d>) -> QLayer {
    QLayer {
        weights: (0..rows)
            .map(|_| (0..cols).map(|_| extreme_weight(rng)).collect())
            .collect(),
        bias: (0..rows)
            .map(|_| match rng.gen_range(0..5) {
                0 => i32::MIN,
                1 => i32::MAX,
                2 => rng.gen(),
                _ => rng.gen_range(-5000..5000),
            })
            .collect(),
        shift: if last { 0 } else { rng.gen_range(0..=16) },
        conv,
    }
}

/// A random CNN from `seed`: one or two convolutions (channels 1..=3, any
/// image side 2..=7, kernel 1..=3, stride 1..=3, padding below the kernel),
/// then one or two dense layers.
pub fn random_cnn(seed: u64) -> QuantizedMlp {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = rng.gen_range(1..=3);
    let (mut h, mut w) = (rng.gen_range(2..=7), rng.gen_range(2..=7));
    let mut layers = Vec::new();
    for _ in 0..rng.gen_range(1..=2) {
        let kernel = rng.gen_range(1..=3.min(h).min(w));
        let conv = Conv2d {
            in_channels: c,
            in_h: h,
            in_w: w,
            out_channels: rng.gen_range(1..=3),
            kernel,
            stride: rng.gen_range(1..=3),
            padding: rng.gen_range(0..kernel),
        };
        layers.push(layer(
            &mut rng,
            conv.out_channels,
            conv.fan_in(),
            false,
            Some(conv),
        ));
        (c, h, w) = (conv.out_channels, conv.out_h(), conv.out_w());
    }
    let dense = rng.gen_range(1..=2);
    let mut width = c * h * w;
    for d in 0..dense {
        let out = rng.gen_range(1..=5);
        layers.push(layer(&mut rng, out, width, d + 1 == dense, None));
        width = out;
    }
    QuantizedMlp::new(layers).expect("a valid random CNN")
}
