//! Quantized MLPs and small CNNs: the exact integer reference forward pass
//! (the witness computation of the Groth16 circuit) and power-of-two
//! quantisation of float weights.
//!
//! # Arithmetic (normative; the `plugins/mlp` backend must match it bit for bit)
//!
//! Input `a` is a vector of int8 values. A layer `l` is dense or a 2-D
//! convolution ([`crate::conv`]); it has int8 weights `W[row][col]`, int32
//! bias `b[row]` and shift `s`. Output `o` has a weight row and taps (pairs
//! `(col, i)`): dense, row `o` and every input `i` at column `i`; a
//! convolution, row = the output channel and the inputs under its window.
//!
//! 1. `acc[o] = sum_taps W[row][col] * a[i] + b[row]`, computed exactly in
//!    i64. |acc| <= fan_in * 2^14 + 2^31, far below 2^52, so an f64 host
//!    kernel computes the same value exactly (every partial sum is an
//!    integer below 2^53).
//! 2. Hidden layers (all but the last): `round = 2^(s-1)` if `s > 0` else 0;
//!    `q = (acc + round) >> s` as an *arithmetic* (flooring) right shift, i.e.
//!    `floor((acc + round) / 2^s)`: round-half-up. In f64:
//!    `floor((acc + round) * 2^-s)`, exact since scaling by a power of two is
//!    exact. Then clamp to the int8 range `[-128, 127]` and apply ReLU, which
//!    together equal `clamp(q, 0, 127)`. The result is the next layer's input.
//! 3. The last layer has `s = 0` and no requantisation: its raw `acc` values
//!    (i64) are the logits. The prediction is the index of the first maximum.
//!
//! # Quantisation
//!
//! Scales are powers of two, one per tensor: the input uses `2^e_in` with
//! `e_in = floor(log2(127 / max|x|))`; each layer's weights `2^e_w` likewise
//! from `max|W|`; the bias is quantised at the accumulator scale
//! `2^(e_in + e_w)`; a hidden layer's output scale `2^e_out` comes from the
//! maximum activation seen on the training split, and `s = e_in + e_w - e_out`.
//! Rounding is to nearest (ties away from zero).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::conv::{check_layer, layer_dims, layer_taps, Conv2d};
use crate::error::{Result, VerifierError};

/// Smallest int8 value.
pub const I8_MIN: i64 = -128;
/// Largest int8 value.
pub const I8_MAX: i64 = 127;
/// Largest supported layer width (keeps every accumulator far below 2^52).
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest supported requantisation shift.
pub const MAX_SHIFT: u32 = 32;

/// One layer of a quantized network: fully connected, or a convolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QLayer {
    /// int8 weights, `[row][col]`: dense `[out][in]`, a convolution
    /// `[out_channels][in_channels * kernel^2]`.
    pub weights: Vec<Vec<i8>>,
    /// int32 biases at the accumulator scale, one per row.
    pub bias: Vec<i32>,
    /// Requantisation shift (hidden layers); must be 0 on the last layer.
    pub shift: u32,
    /// The convolution's geometry; `None` for a dense layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<Conv2d>,
}

impl QLayer {
    /// A dense layer.
    pub fn dense(weights: Vec<Vec<i8>>, bias: Vec<i32>, shift: u32) -> Self {
        Self {
            weights,
            bias,
            shift,
            conv: None,
        }
    }
    /// Length of a weight row (the most taps an output has).
    pub fn fan_in(&self) -> usize {
        self.weights.first().map_or(0, Vec::len)
    }
    /// Input width.
    pub fn in_dim(&self) -> usize {
        layer_dims(self.conv.as_ref(), self.weights.len(), self.fan_in()).0
    }
    /// Output width.
    pub fn out_dim(&self) -> usize {
        layer_dims(self.conv.as_ref(), self.weights.len(), self.fan_in()).1
    }
    /// Output `o`'s weight row and `(column, input)` taps.
    pub fn taps(&self, o: usize) -> (usize, Vec<(usize, usize)>) {
        layer_taps(self.conv.as_ref(), self.fan_in(), o)
    }
}

/// A quantized network (dense and convolution layers): ReLU +
/// requantisation between layers, raw logits out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizedMlp {
    /// The layers, input first.
    pub layers: Vec<QLayer>,
}

/// Requantise one hidden-layer accumulator: round-half-up arithmetic shift,
/// then clamp to int8 and ReLU (together: clamp to `[0, 127]`).
pub fn requantize_relu(acc: i64, shift: u32) -> i64 {
    let round = if shift == 0 { 0 } else { 1i64 << (shift - 1) };
    let q = (acc + round) >> shift;
    q.clamp(I8_MIN, I8_MAX).max(0)
}

/// Index of the first maximum (the predicted class).
pub fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

impl QuantizedMlp {
    /// Build and validate.
    pub fn new(layers: Vec<QLayer>) -> Result<Self> {
        let m = Self { layers };
        m.validate()?;
        Ok(m)
    }

    /// Check shapes and ranges (the fields are public, so every entry point
    /// re-checks).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(VerifierError::InvalidModel(m));
        if self.layers.is_empty() {
            return bad("no layers".into());
        }
        let mut prev: Option<usize> = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let (rows, cols) = (layer.weights.len(), layer.fan_in());
            if rows == 0 || cols == 0 || rows > MAX_WIDTH || cols > MAX_WIDTH {
                return bad(format!("layer {l}: bad weight shape {rows}x{cols}"));
            }
            if layer.weights.iter().any(|r| r.len() != cols) {
                return bad(format!("layer {l}: ragged weight rows"));
            }
            if let Err(m) = check_layer(layer.conv.as_ref(), rows, cols) {
                return bad(format!("layer {l}: {m}"));
            }
            let (inp, out) = (layer.in_dim(), layer.out_dim());
            if out > MAX_WIDTH || inp > MAX_WIDTH {
                return bad(format!("layer {l}: bad shape {out}x{inp}"));
            }
            if layer.bias.len() != rows {
                return bad(format!(
                    "layer {l}: {} biases for {rows} weight rows",
                    layer.bias.len()
                ));
            }
            if let Some(p) = prev {
                if p != inp {
                    return bad(format!(
                        "layer {l}: input width {inp} != previous output {p}"
                    ));
                }
            }
            let last = l + 1 == self.layers.len();
            if last && layer.shift != 0 {
                return bad(format!("last layer must have shift 0, has {}", layer.shift));
            }
            if layer.shift > MAX_SHIFT {
                return bad(format!("layer {l}: shift {} > {MAX_SHIFT}", layer.shift));
            }
            prev = Some(out);
        }
        Ok(())
    }

    /// Layer widths, input first: e.g. `[64, 32, 10]`.
    pub fn dims(&self) -> Vec<usize> {
        let mut d = vec![self.layers.first().map_or(0, QLayer::in_dim)];
        d.extend(self.layers.iter().map(QLayer::out_dim));
        d
    }

    /// Per-layer shifts.
    pub fn shifts(&self) -> Vec<u32> {
        self.layers.iter().map(|l| l.shift).collect()
    }

    /// Per-layer convolution geometry, or an empty list when every layer
    /// is dense (an MLP).
    pub fn convs(&self) -> Vec<Option<Conv2d>> {
        if self.layers.iter().all(|l| l.conv.is_none()) {
            return Vec::new();
        }
        self.layers.iter().map(|l| l.conv).collect()
    }

    /// Input width.
    pub fn input_len(&self) -> usize {
        self.layers.first().map_or(0, QLayer::in_dim)
    }

    /// Output width.
    pub fn output_len(&self) -> usize {
        self.layers.last().map_or(0, QLayer::out_dim)
    }

    /// The exact integer forward pass (see the module docs): raw logits.
    pub fn forward(&self, x: &[i8]) -> Result<Vec<i64>> {
        Ok(self.forward_trace(x)?.pop().unwrap_or_default())
    }

    /// Forward pass returning every layer's output: hidden activations
    /// (in `[0, 127]`) and, last, the logits.
    pub fn forward_trace(&self, x: &[i8]) -> Result<Vec<Vec<i64>>> {
        self.validate()?;
        if x.len() != self.input_len() {
            return Err(VerifierError::InvalidInput(format!(
                "input has {} values, model expects {}",
                x.len(),
                self.input_len()
            )));
        }
        let mut a: Vec<i64> = x.iter().map(|&v| i64::from(v)).collect();
        let mut trace = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let last = l + 1 == self.layers.len();
            let out: Vec<i64> = (0..layer.out_dim())
                .map(|o| {
                    let (row, taps) = layer.taps(o);
                    let w = &layer.weights[row];
                    let acc = taps
                        .iter()
                        .map(|&(col, i)| i64::from(w[col]) * a[i])
                        .sum::<i64>()
                        + i64::from(layer.bias[row]);
                    if last {
                        acc
                    } else {
                        requantize_relu(acc, layer.shift)
                    }
                })
                .collect();
            trace.push(out.clone());
            a = out;
        }
        Ok(trace)
    }

    /// Predicted class for an input.
    pub fn predict(&self, x: &[i8]) -> Result<usize> {
        Ok(argmax(&self.forward(x)?))
    }
}

/// One float layer: dense (`[out][in]` weights) or a convolution (one row
/// per output channel, see [`crate::conv`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloatLayer {
    /// Weights, `[row][col]`.
    pub weights: Vec<Vec<f64>>,
    /// Biases, one per row.
    pub bias: Vec<f64>,
    /// The convolution's geometry; `None` for a dense layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<Conv2d>,
}

impl FloatLayer {
    fn dims(&self) -> (usize, usize) {
        let cols = self.weights.first().map_or(0, Vec::len);
        layer_dims(self.conv.as_ref(), self.weights.len(), cols)
    }
}

/// A float ReLU MLP, as trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloatMlp {
    /// Layers, input first.
    pub layers: Vec<FloatLayer>,
}

impl FloatMlp {
    /// Float forward pass: ReLU between layers, raw logits out.
    pub fn forward(&self, x: &[f64]) -> Vec<f64> {
        let mut a = x.to_vec();
        for (l, layer) in self.layers.iter().enumerate() {
            let last = l + 1 == self.layers.len();
            let cols = layer.weights.first().map_or(0, Vec::len);
            a = (0..layer.dims().1)
                .map(|o| {
                    let (row, taps) = layer_taps(layer.conv.as_ref(), cols, o);
                    let w = &layer.weights[row];
                    let z = taps.iter().map(|&(c, i)| w[c] * a[i]).sum::<f64>() + layer.bias[row];
                    if last {
                        z
                    } else {
                        z.max(0.0)
                    }
                })
                .collect();
        }
        a
    }

    fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(VerifierError::InvalidModel("no layers".into()));
        }
        let mut prev: Option<usize> = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let cols = layer.weights.first().map_or(0, Vec::len);
            let ok = !layer.weights.is_empty()
                && cols > 0
                && layer.weights.iter().all(|r| r.len() == cols)
                && check_layer(layer.conv.as_ref(), layer.weights.len(), cols).is_ok()
                && layer.bias.len() == layer.weights.len()
                && prev.is_none_or(|p| p == layer.dims().0)
                && layer
                    .weights
                    .iter()
                    .flatten()
                    .chain(&layer.bias)
                    .all(|v| v.is_finite());
            if !ok {
                return Err(VerifierError::InvalidModel(format!(
                    "float layer {l} malformed"
                )));
            }
            prev = Some(layer.dims().1);
        }
        Ok(())
    }
}

/// The power-of-two scales chosen by [`quantize`]: value = int * 2^-exp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantParams {
    /// Input exponent: `x_int = round(x * 2^input_exp)`.
    pub input_exp: i32,
    /// Per-layer weight exponents.
    pub weight_exps: Vec<i32>,
    /// Per-hidden-layer activation (output) exponents.
    pub act_exps: Vec<i32>,
}

impl QuantParams {
    /// Quantise a float input vector.
    pub fn quantize_input(&self, x: &[f64]) -> Vec<i8> {
        x.iter()
            .map(|v| quantize_value(*v, self.input_exp))
            .collect()
    }
}

fn quantize_value(v: f64, exp: i32) -> i8 {
    // Clamped to the int8 range, so the cast cannot truncate.
    (v * 2f64.powi(exp))
        .round()
        .clamp(I8_MIN as f64, I8_MAX as f64) as i8
}

/// Largest exponent `e` (within [-24, 24]) with `max_abs * 2^e <= 127`.
pub fn pow2_exponent(max_abs: f64) -> i32 {
    if max_abs.is_nan() || max_abs <= 0.0 || !max_abs.is_finite() {
        return 0;
    }
    ((I8_MAX as f64 / max_abs).log2().floor() as i32).clamp(-24, 24)
}

/// Quantise a float MLP with per-tensor power-of-two scales.
///
/// `input_max` bounds |x|; `activation_max[l]` is the largest activation of
/// hidden layer `l` on calibration (training) data.
pub fn quantize(
    float: &FloatMlp,
    input_max: f64,
    activation_max: &[f64],
) -> Result<(QuantizedMlp, QuantParams)> {
    float.validate()?;
    let n = float.layers.len();
    if activation_max.len() + 1 != n {
        return Err(VerifierError::InvalidModel(format!(
            "{} activation maxima for {} hidden layers",
            activation_max.len(),
            n - 1
        )));
    }
    let input_exp = pow2_exponent(input_max);
    let mut e_in = input_exp;
    let mut layers = Vec::with_capacity(n);
    let mut weight_exps = Vec::with_capacity(n);
    let mut act_exps = Vec::with_capacity(n - 1);
    for (l, fl) in float.layers.iter().enumerate() {
        let wmax = fl
            .weights
            .iter()
            .flatten()
            .fold(0f64, |m, w| m.max(w.abs()));
        let e_w = pow2_exponent(wmax);
        let weights = fl
            .weights
            .iter()
            .map(|r| r.iter().map(|w| quantize_value(*w, e_w)).collect())
            .collect();
        let acc_exp = e_in + e_w;
        let bias = fl
            .bias
            .iter()
            .map(|b| {
                let v = (b * 2f64.powi(acc_exp)).round();
                if v < i32::MIN as f64 || v > i32::MAX as f64 {
                    Err(VerifierError::InvalidModel(format!(
                        "layer {l}: bias {b} overflows i32"
                    )))
                } else {
                    Ok(v as i32)
                }
            })
            .collect::<Result<Vec<i32>>>()?;
        let shift = if l + 1 < n {
            let e_out = pow2_exponent(activation_max[l]).min(acc_exp);
            act_exps.push(e_out);
            e_in = e_out;
            u32::try_from(acc_exp - e_out)
                .map_err(|_| VerifierError::InvalidModel(format!("layer {l}: negative shift")))?
        } else {
            0
        };
        weight_exps.push(e_w);
        layers.push(QLayer {
            weights,
            bias,
            shift,
            conv: fl.conv,
        });
    }
    let mlp = QuantizedMlp::new(layers)?;
    Ok((
        mlp,
        QuantParams {
            input_exp,
            weight_exps,
            act_exps,
        },
    ))
}

/// The held-out split stored in a model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestSplit {
    /// Raw pixels (0..=16), one row per image.
    pub x: Vec<Vec<u8>>,
    /// Labels 0..=9.
    pub y: Vec<u8>,
}

/// A model file written by `scripts/train_digits.py`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DigitsModel {
    /// e.g. `digits-64-32-10`.
    pub name: String,
    /// Layer widths.
    pub dims: Vec<usize>,
    /// float input = pixel * input_scale.
    pub input_scale: f64,
    /// Float layers.
    pub layers: Vec<FloatLayer>,
    /// Max hidden activation per hidden layer on the training split.
    pub activation_max: Vec<f64>,
    /// Float accuracy reported by the training script.
    pub float_test_accuracy: f64,
    /// Held-out split.
    pub test: TestSplit,
}

/// A quantized model with its scales.
#[derive(Clone, Debug)]
pub struct QuantizedDigits {
    /// The integer model.
    pub mlp: QuantizedMlp,
    /// The scales used.
    pub params: QuantParams,
    /// float input = pixel * input_scale.
    pub input_scale: f64,
}

impl QuantizedDigits {
    /// Quantise raw pixels into the model's int8 input.
    pub fn input_from_pixels(&self, pixels: &[u8]) -> Vec<i8> {
        let x: Vec<f64> = pixels
            .iter()
            .map(|p| f64::from(*p) * self.input_scale)
            .collect();
        self.params.quantize_input(&x)
    }
}

impl DigitsModel {
    /// Load and check a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| VerifierError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let m: Self = serde_json::from_slice(&bytes)?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<()> {
        self.float_mlp().validate()?;
        let mut dims = vec![self.layers[0].dims().0];
        dims.extend(self.layers.iter().map(|l| l.dims().1));
        if dims != self.dims {
            return Err(VerifierError::InvalidModel(format!(
                "dims {:?} do not match weights {dims:?}",
                self.dims
            )));
        }
        if self.test.x.len() != self.test.y.len() || self.test.x.iter().any(|r| r.len() != dims[0])
        {
            return Err(VerifierError::InvalidModel("malformed test split".into()));
        }
        if !(self.input_scale > 0.0 && self.input_scale.is_finite()) {
            return Err(VerifierError::InvalidModel("bad input_scale".into()));
        }
        Ok(())
    }

    /// The float network.
    pub fn float_mlp(&self) -> FloatMlp {
        FloatMlp {
            layers: self.layers.clone(),
        }
    }

    /// Float input for raw pixels.
    pub fn float_input(&self, pixels: &[u8]) -> Vec<f64> {
        pixels
            .iter()
            .map(|p| f64::from(*p) * self.input_scale)
            .collect()
    }

    /// Accuracy of the float network on the held-out split (0..=1).
    pub fn float_accuracy(&self) -> f64 {
        let f = self.float_mlp();
        let hits = self
            .test
            .x
            .iter()
            .zip(&self.test.y)
            .filter(|(x, y)| argmax(&f.forward(&self.float_input(x))) == usize::from(**y))
            .count();
        hits as f64 / self.test.y.len().max(1) as f64
    }

    /// Quantise: the input range is `16 * input_scale` (pixels are 0..=16).
    pub fn quantize(&self) -> Result<QuantizedDigits> {
        let (mlp, params) = quantize(
            &self.float_mlp(),
            16.0 * self.input_scale,
            &self.activation_max,
        )?;
        Ok(QuantizedDigits {
            mlp,
            params,
            input_scale: self.input_scale,
        })
    }

    /// Accuracy of a quantized model on the held-out split (0..=1).
    pub fn quantized_accuracy(&self, q: &QuantizedDigits) -> Result<f64> {
        let mut hits = 0usize;
        for (x, y) in self.test.x.iter().zip(&self.test.y) {
            if q.mlp.predict(&q.input_from_pixels(x))? == usize::from(*y) {
                hits += 1;
            }
        }
        Ok(hits as f64 / self.test.y.len().max(1) as f64)
    }
}

/// Path of a bundled model file, e.g. `model_path("digits-64-32-10")`.
pub fn model_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(format!("{name}.json"))
}
