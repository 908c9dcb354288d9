//! The model directory the `mlp` backend plugin opens, written from and
//! read back into a [`QuantizedMlp`] exactly.
//!
//! `config.json`: `model_type` `"quantized-mlp"` (every layer dense) or
//! `"quantized-cnn"`, `dims` (flattened widths, input first), `shifts`, and
//! for a CNN `convs` (one entry per layer: the [`Conv2d`] geometry, or
//! `null` for a dense layer). `model.safetensors`: f64 tensors
//! `layers.{l}.weight` `[rows, cols]` (dense `[out, in]`, a convolution
//! `[out_channels, in_channels * kernel^2]`) and `layers.{l}.bias` `[rows]`.
//! Every value is an integer, so f64 holds it exactly.

use std::path::Path;

use crate::conv::{layer_dims, Conv2d};
use crate::error::{Result, VerifierError};
use crate::quant::{QLayer, QuantizedMlp, I8_MAX, I8_MIN, MAX_WIDTH};

/// `model_type` of a model whose every layer is dense.
pub const MLP_TYPE: &str = "quantized-mlp";
/// `model_type` of a model with convolutions.
pub const CNN_TYPE: &str = "quantized-cnn";

impl QuantizedMlp {
    /// Writes the model as a directory the `mlp` backend plugin opens (see
    /// the module docs); [`QuantizedMlp::from_model_dir`] reads it back
    /// unchanged. Returns `dir`.
    pub fn write_model_dir(&self, dir: impl AsRef<Path>) -> Result<std::path::PathBuf> {
        let dir = dir.as_ref();
        self.validate()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| VerifierError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let w: Vec<u8> = layer
                .weights
                .iter()
                .flatten()
                .flat_map(|&v| f64::from(v).to_le_bytes())
                .collect();
            let b: Vec<u8> = layer
                .bias
                .iter()
                .flat_map(|&v| f64::from(v).to_le_bytes())
                .collect();
            let rows = layer.weights.len();
            buffers.push((format!("layers.{l}.weight"), vec![rows, layer.fan_in()], w));
            buffers.push((format!("layers.{l}.bias"), vec![rows], b));
        }
        let views = buffers
            .iter()
            .map(|(name, shape, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F64, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| VerifierError::Serialization(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let st = dir.join("model.safetensors");
        safetensors::tensor::serialize_to_file(views, None, &st)
            .map_err(|e| VerifierError::Serialization(format!("{}: {e}", st.display())))?;
        let convs = self.convs();
        let mut config = serde_json::json!({
            "model_type": if convs.is_empty() { MLP_TYPE } else { CNN_TYPE },
            "dims": self.dims(),
            "shifts": self.shifts(),
        });
        if !convs.is_empty() {
            config["convs"] = serde_json::to_value(&convs)?;
        }
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, config.to_string()).map_err(io(&cfg))?;
        Ok(dir.to_path_buf())
    }

    /// Reads a model directory written by [`QuantizedMlp::write_model_dir`]
    /// (or any `quantized-mlp` model dir of the `mlp` backend) back exactly.
    /// Refuses other model types, non-integer or out-of-range values and
    /// shapes that disagree with `config.json`.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let bad = |m: String| VerifierError::InvalidModel(format!("{}: {m}", dir.display()));
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| VerifierError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let config: serde_json::Value = serde_json::from_str(&text)?;
        let cnn = match config["model_type"].as_str() {
            Some(MLP_TYPE) => false,
            Some(CNN_TYPE) => true,
            _ => {
                return Err(bad(format!(
                    "config.json `model_type` is {}, expected \"{MLP_TYPE}\" or \"{CNN_TYPE}\"",
                    config["model_type"]
                )))
            }
        };
        let dims: Vec<usize> = serde_json::from_value(config["dims"].clone())
            .map_err(|e| bad(format!("config.json `dims`: {e}")))?;
        let shifts: Vec<u32> = serde_json::from_value(config["shifts"].clone())
            .map_err(|e| bad(format!("config.json `shifts`: {e}")))?;
        if dims.len() < 2
            || shifts.len() + 1 != dims.len()
            || dims.iter().any(|&d| d == 0 || d > MAX_WIDTH)
        {
            return Err(bad(
                "config.json needs `dims` (>= 2, each 1..=65536) and one shift per layer".into(),
            ));
        }
        let convs: Vec<Option<Conv2d>> = match (cnn, config.get("convs")) {
            (true, Some(c)) => serde_json::from_value(c.clone())
                .map_err(|e| bad(format!("config.json `convs`: {e}")))?,
            (true, None) => return Err(bad(format!("a {CNN_TYPE} needs `convs`"))),
            (false, None) => vec![None; shifts.len()],
            (false, Some(_)) => return Err(bad(format!("a {MLP_TYPE} has no `convs`"))),
        };
        if convs.len() != shifts.len() {
            return Err(bad(format!(
                "config.json `convs` has {} entries for {} layers",
                convs.len(),
                shifts.len()
            )));
        }
        let st_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|source| VerifierError::Io {
            path: st_path.clone(),
            source,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("model.safetensors: {e}")))?;
        let read = |name: &str, shape: &[usize], lo: f64, hi: f64| -> Result<Vec<f64>> {
            let t = st
                .tensor(name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != safetensors::Dtype::F64 || t.shape() != shape {
                return Err(bad(format!(
                    "tensor `{name}` is {:?} {:?}, expected F64 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            t.data()
                .chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    let v = f64::from_le_bytes(a);
                    if v.fract() == 0.0 && v >= lo && v <= hi {
                        Ok(v)
                    } else {
                        Err(bad(format!(
                            "tensor `{name}` holds {v}, not an integer in [{lo}, {hi}]"
                        )))
                    }
                })
                .collect()
        };
        let mut layers = Vec::with_capacity(shifts.len());
        for (l, (&shift, conv)) in shifts.iter().zip(convs).enumerate() {
            // Weight rows and columns: dense [out, in], conv [channels, fan-in].
            let (rows, cols) = match &conv {
                Some(c) => (c.out_channels, c.fan_in()),
                None => (dims[l + 1], dims[l]),
            };
            if let Some(c) = &conv {
                c.check().map_err(|m| bad(format!("layer {l}: {m}")))?;
            }
            if layer_dims(conv.as_ref(), rows, cols) != (dims[l], dims[l + 1]) {
                return Err(bad(format!(
                    "layer {l}: its convolution does not map {} inputs to {} outputs",
                    dims[l],
                    dims[l + 1]
                )));
            }
            let w = read(
                &format!("layers.{l}.weight"),
                &[rows, cols],
                I8_MIN as f64,
                I8_MAX as f64,
            )?;
            let b = read(
                &format!("layers.{l}.bias"),
                &[rows],
                f64::from(i32::MIN),
                f64::from(i32::MAX),
            )?;
            layers.push(QLayer {
                weights: w
                    .chunks_exact(cols)
                    .map(|row| row.iter().map(|&v| v as i8).collect())
                    .collect(),
                bias: b.iter().map(|&v| v as i32).collect(),
                shift,
                conv,
            });
        }
        Self::new(layers)
    }
}
