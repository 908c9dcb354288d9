//! Quantized MLP/CNN backend: runs the integer network whose inference the
//! Groth16 circuit proves, through f64 host kernels, bit-identical to the
//! circuit's witness computation (`infernet_verifier::quant`, "Arithmetic").
//!
//! Model directory: `config.json` `{"model_type": "quantized-mlp", "dims": [64, 32, 10],
//! "shifts": [s0, 0]}` and `model.safetensors` with f64 tensors
//! `layers.{l}.weight` `[out, in]` (int8 values) and `layers.{l}.bias` `[out]`
//! (int32 values). Every value is an integer below 2^53 in magnitude, so
//! f64 matmul, bias add and power-of-two scaling are exact.
//!
//! A `"quantized-cnn"` also has `convs`: per layer `null` (dense) or
//! `{in_channels, in_h, in_w, out_channels, kernel, stride, padding}`; a
//! convolution's weight is `[out_channels, in_channels * kernel^2]` (rows
//! flattened `(ic, ky, kx)`) and its bias `[out_channels]`. Activations are
//! CHW-flattened. A convolution runs as a host gather (`embedding` over the
//! activations plus one zero row for the padding: im2col) and one `linear`.
//!
//! Input: `bytes` (one int8 per byte) or an f32 tensor of int8 values.
//! Output: `bytes`, the final logits as little-endian i64, unless the job
//! sets `output=class` (then `classes` with the argmax).

use infernet_plugin_api::models::Weights;
use infernet_plugin_api::*;

struct Layer {
    weight: Tensor,
    bias: Tensor,
    shift: u32,
    conv: Option<Conv>,
}

/// Largest layer input, output or kernel-row length (the verifier's).
const MAX_WIDTH: usize = 1 << 16;
/// Largest im2col gather table, in ids.
const MAX_GATHER: usize = 1 << 24;

/// A convolution as im2col: `ids[p * fan_in + col]` is the activation
/// under column `col` of output position `p`, or `in_len` (the zero row)
/// in the padding.
struct Conv {
    ids: Tensor,
    positions: usize,
    fan_in: usize,
    out_channels: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvSpec {
    in_channels: usize,
    in_h: usize,
    in_w: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl ConvSpec {
    fn out_hw(&self) -> Option<(usize, usize)> {
        let side = |n: usize| {
            (n + 2 * self.padding)
                .checked_sub(self.kernel)
                .map(|d| d / self.stride + 1)
        };
        Some((side(self.in_h)?, side(self.in_w)?))
    }

    /// The im2col gather; `None` when the geometry is degenerate or too big.
    fn im2col(&self) -> Option<Conv> {
        let sizes = [
            self.in_channels,
            self.in_h,
            self.in_w,
            self.out_channels,
            self.kernel,
            self.stride,
        ];
        if sizes.iter().chain([&self.padding]).any(|&v| v > 256)
            || sizes.contains(&0)
            || self.padding >= self.kernel
        {
            return None;
        }
        let (oh, ow) = self.out_hw()?;
        let (k, in_len) = (self.kernel, self.in_channels * self.in_h * self.in_w);
        let fan_in = self.in_channels * k * k;
        // The verifier's limits (`quant::MAX_WIDTH`), and a gather table of
        // at most 2^24 ids (64 MiB): a config cannot make the plugin
        // allocate without bound.
        let widths = [in_len, fan_in, self.out_channels * oh * ow];
        if widths.iter().any(|&w| w > MAX_WIDTH) || oh * ow * fan_in > MAX_GATHER {
            return None;
        }
        let mut ids = Vec::with_capacity(oh * ow * fan_in);
        for y in 0..oh {
            for x in 0..ow {
                for ic in 0..self.in_channels {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (y * self.stride + ky).checked_sub(self.padding);
                            let ix = (x * self.stride + kx).checked_sub(self.padding);
                            ids.push(match (iy, ix) {
                                (Some(iy), Some(ix)) if iy < self.in_h && ix < self.in_w => {
                                    ((ic * self.in_h + iy) * self.in_w + ix) as u32
                                }
                                _ => in_len as u32,
                            });
                        }
                    }
                }
            }
        }
        Some(Conv {
            ids: Tensor::new_u32(&ids, &[ids.len()]).ok()?,
            positions: oh * ow,
            fan_in,
            out_channels: self.out_channels,
        })
    }
}

struct Model {
    dims: Vec<usize>,
    layers: Vec<Layer>,
}

struct Mlp {
    models: ModelCache<Model>,
}

fn load(weights: &Weights) -> Result<Model> {
    let config: serde_json::Value = serde_json::from_str(&weights.config())
        .map_err(|e| Error::invalid(format!("config.json: {e}")))?;
    let cnn = match config["model_type"].as_str() {
        Some("quantized-mlp") => false,
        Some("quantized-cnn") => true,
        _ => {
            return Err(Error::unsupported(format!(
                "config.json `model_type` is {}, expected \"quantized-mlp\" or \"quantized-cnn\"",
                config["model_type"]
            )))
        }
    };
    let list = |key: &str| -> Result<Vec<u64>> {
        config[key]
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_u64()).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "config.json `{key}` must be a list of non-negative integers"
                ))
            })
    };
    let dims: Vec<usize> = list("dims")?.into_iter().map(|d| d as usize).collect();
    let shifts = list("shifts")?;
    if dims.len() < 2 || shifts.len() != dims.len() - 1 {
        return Err(Error::invalid(
            "config.json needs `dims` (>= 2 entries) and one `shifts` entry per layer",
        ));
    }
    if shifts.iter().any(|&s| s > 32) || shifts.last() != Some(&0) {
        return Err(Error::invalid(
            "config.json `shifts`: each at most 32, and the last layer's must be 0",
        ));
    }
    let convs: Vec<Option<ConvSpec>> = match config.get("convs") {
        Some(c) if cnn => serde_json::from_value(c.clone())
            .map_err(|e| Error::invalid(format!("config.json `convs`: {e}")))?,
        None if !cnn => (0..shifts.len()).map(|_| None).collect(),
        _ => return Err(Error::invalid(
            "config.json `convs` is required for a quantized-cnn and refused for a quantized-mlp",
        )),
    };
    if convs.len() != shifts.len() {
        return Err(Error::invalid(
            "config.json `convs` needs one entry per layer",
        ));
    }
    let mut layers = Vec::new();
    for (l, (&shift, spec)) in shifts.iter().zip(convs).enumerate() {
        let weight = weights.get(&format!("layers.{l}.weight"))?;
        let bias = weights.get(&format!("layers.{l}.bias"))?;
        let conv = match &spec {
            None => None,
            Some(c) => Some(c.im2col().ok_or_else(|| {
                Error::invalid(format!(
                    "layer {l}: a convolution with a degenerate or oversized geometry"
                ))
            })?),
        };
        // Weight rows and columns, and the layer's input and output lengths.
        let (rows, cols, inp, out) = match (&spec, &conv) {
            (Some(s), Some(c)) => (
                c.out_channels,
                c.fan_in,
                s.in_channels * s.in_h * s.in_w,
                c.out_channels * c.positions,
            ),
            _ => (dims[l + 1], dims[l], dims[l], dims[l + 1]),
        };
        if (inp, out) != (dims[l], dims[l + 1]) {
            return Err(Error::invalid(format!(
                "layer {l}: the convolution maps {inp} inputs to {out} outputs, dims say {} to {}",
                dims[l],
                dims[l + 1]
            )));
        }
        if weight.dims() != [rows, cols] || bias.dims() != [rows] {
            return Err(Error::invalid(format!(
                "layer {l}: weight {:?} / bias {:?} do not match dims {dims:?}",
                weight.dims(),
                bias.dims()
            )));
        }
        if weight.dtype() != DType::F64 || bias.dtype() != DType::F64 {
            return Err(Error::invalid(format!(
                "layer {l}: tensors must be f64 (exact integers)"
            )));
        }
        layers.push(Layer {
            weight,
            bias,
            shift: shift as u32,
            conv,
        });
    }
    Ok(Model { dims, layers })
}

fn input_values(input: &JobInput) -> Result<Vec<f32>> {
    match input {
        JobInput::Bytes(b) => Ok(b.iter().map(|&v| v as i8 as f32).collect()),
        JobInput::Tensor(t) => {
            if t.data
                .iter()
                .any(|&v| v.fract() != 0.0 || !(-128.0..=127.0).contains(&v))
            {
                return Err(Error::invalid("tensor input must hold int8 values"));
            }
            Ok(t.data.clone())
        }
        _ => Err(Error::invalid(
            "the mlp backend takes `bytes` (int8) or an f32 tensor of int8 values",
        )),
    }
}

impl Model {
    /// The exact integer forward pass on host f64 kernels.
    fn forward(&self, x: &[f32]) -> Result<Vec<i64>> {
        if x.len() != self.dims[0] {
            return Err(Error::invalid(format!(
                "input has {} values, model expects {}",
                x.len(),
                self.dims[0]
            )));
        }
        let mut a = Tensor::new_f32(x, &[1, x.len()])?.to_dtype(DType::F64)?;
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let acc = match &layer.conv {
                None => a.linear(&layer.weight, Some(&layer.bias))?,
                Some(c) => {
                    // im2col: the activations plus a zero row, gathered.
                    let n = a.elem_count();
                    let zero = Tensor::new_f32(&[0.0], &[1, 1])?.to_dtype(DType::F64)?;
                    let table = Tensor::cat(&[&a.reshape(&[n, 1])?, &zero], 0)?;
                    let cols = table.embedding(&c.ids)?.reshape(&[c.positions, c.fan_in])?;
                    // [positions, channels] -> CHW
                    cols.linear(&layer.weight, Some(&layer.bias))?
                        .t()?
                        .reshape(&[1, c.out_channels * c.positions])?
                }
            };
            a = if l == last {
                acc
            } else {
                // floor((acc + 2^(s-1)) / 2^s), then clamp to [0, 127] (int8 clamp + ReLU)
                let scale = (-(layer.shift as f64)).exp2();
                let round = if layer.shift == 0 { 0.0 } else { 0.5 };
                acc.affine(scale, round)?
                    .unary(UnaryOp::Floor)?
                    .clamp(0.0, 127.0)?
            };
        }
        let bytes = a.to_bytes()?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as i64)
            .collect())
    }
}

impl Backend for Mlp {
    fn new() -> Self {
        Mlp {
            models: ModelCache::new(),
        }
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo::new(
            "mlp",
            env!("CARGO_PKG_VERSION"),
            &["classification"],
            &["quantized-mlp", "quantized-cnn"],
        )
    }

    fn execute(&mut self, job: JobRequest) -> Result<JobResult> {
        let model = &self.models.get(&job.model, load)?.model;
        let x = input_values(&job.input)?;
        let logits = model.forward(&x)?;
        let usage = Usage {
            input_tokens: x.len() as u32,
            output_tokens: logits.len() as u32,
        };
        let output = match job.param_str("output").unwrap_or("logits") {
            "logits" => JobOutput::Bytes(logits.iter().flat_map(|v| v.to_le_bytes()).collect()),
            "class" => {
                let best = logits
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, v)| if *v > logits[b] { i } else { b });
                JobOutput::Classes(vec![best as u32])
            }
            other => {
                return Err(Error::invalid(format!(
                    "parameter `output` must be `logits` or `class`, got `{other}`"
                )))
            }
        };
        Ok(JobResult { output, usage })
    }
}

export_backend!(Mlp);
