//! The BERT encoder, written against the host tensor kernels.
//!
//! Mirrors `candle_transformers::models::bert::BertModel` (0.11.1) with an
//! all-ones attention mask (one unpadded sentence at a time), followed by
//! mean pooling and L2 normalisation as in candle's sentence-embedding example.

use crate::config::{BertConfig, HiddenAct};
use crate::sentence::Pooling;
use infernet_plugin_api::models::Weights;
use infernet_plugin_api::tensor::reduce;
use infernet_plugin_api::{Context, DType, Error, ReduceOp, Tensor, UnaryOp};

/// A linear layer with bias.
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor, Error> {
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// A layer norm's scale and shift.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

/// One encoder layer.
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// A loaded model: weight handles only.
pub struct Bert {
    pub cfg: BertConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// Looks up weights under an optional `bert.` prefix.
struct Loader<'a> {
    weights: &'a Weights,
    prefix: &'static str,
}

impl Loader<'_> {
    fn get(&self, name: &str) -> Result<Tensor, Error> {
        let full = format!("{}{name}", self.prefix);
        self.weights.get(&full).map_err(|e| match e {
            Error::InvalidInput(m) => Error::invalid(format!("weight `{full}`: {m}")),
            other => other,
        })
    }
    fn linear(&self, path: &str) -> Result<Linear, Error> {
        Ok(Linear {
            weight: self.get(&format!("{path}.weight"))?,
            bias: self.get(&format!("{path}.bias"))?,
        })
    }
    fn layer_norm(&self, path: &str) -> Result<LayerNorm, Error> {
        Ok(LayerNorm {
            weight: self.get(&format!("{path}.weight"))?,
            bias: self.get(&format!("{path}.bias"))?,
        })
    }
}

impl Bert {
    /// Fetches all weight handles (names with or without a `bert.` prefix).
    pub fn load(weights: &Weights, cfg: BertConfig) -> Result<Self, Error> {
        let prefixed = weights.names().iter().any(|n| n.starts_with("bert."));
        let l = Loader {
            weights,
            prefix: if prefixed { "bert." } else { "" },
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(Layer {
                    query: l.linear(&format!("{p}.attention.self.query"))?,
                    key: l.linear(&format!("{p}.attention.self.key"))?,
                    value: l.linear(&format!("{p}.attention.self.value"))?,
                    attn_out: l.linear(&format!("{p}.attention.output.dense"))?,
                    attn_norm: l.layer_norm(&format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: l.linear(&format!("{p}.intermediate.dense"))?,
                    output: l.linear(&format!("{p}.output.dense"))?,
                    out_norm: l.layer_norm(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Bert {
            word_embeddings: l.get("embeddings.word_embeddings.weight")?,
            position_embeddings: l.get("embeddings.position_embeddings.weight")?,
            token_type_embeddings: l.get("embeddings.token_type_embeddings.weight")?,
            embed_norm: l.layer_norm("embeddings.LayerNorm")?,
            layers,
            cfg,
        })
    }

    fn layer_norm(&self, x: &Tensor, norm: &LayerNorm) -> Result<Tensor, Error> {
        x.layer_norm(&norm.weight, &norm.bias, self.cfg.layer_norm_eps as f32)
    }

    /// The embedding of one sequence of token ids: the token states pooled
    /// as `pooling` says (modes concatenated in sentence-transformers'
    /// order: cls, max, mean, mean-sqrt-len), L2-normalised if `normalize`.
    pub fn embed(&self, ids: &[u32], pooling: Pooling, normalize: bool) -> Result<Vec<f32>, Error> {
        let seq_len = ids.len();
        let input_ids = Tensor::new_u32(ids, &[1, seq_len])?;
        let token_type_ids = Tensor::zeros(&[1, seq_len as u32], DType::U32)?;

        // Embeddings: word + token type, then broadcast-add positions.
        let x = self
            .word_embeddings
            .embedding(&input_ids)?
            .add(&self.token_type_embeddings.embedding(&token_type_ids)?)?;
        let positions = Tensor::arange(seq_len as u32)?;
        let x = x.add(&self.position_embeddings.embedding(&positions)?)?;
        let mut x = self.layer_norm(&x, &self.embed_norm)?;

        for (i, layer) in self.layers.iter().enumerate() {
            x = self
                .layer(&x, layer)
                .with_context(|| format!("layer {i}"))?;
        }

        // No padding, so every token counts (the attention mask is all ones).
        let mut parts = Vec::new();
        if pooling.cls {
            parts.push(x.narrow(1, 0, 1)?.reshape(&[1, self.cfg.hidden_size])?);
        }
        if pooling.max {
            parts.push(reduce(ReduceOp::Max, &x, 1, false)?);
        }
        if pooling.mean || pooling.mean_sqrt_len {
            let sum = reduce(ReduceOp::Sum, &x, 1, false)?;
            if pooling.mean {
                parts.push(sum.div_scalar(seq_len as f64)?);
            }
            if pooling.mean_sqrt_len {
                parts.push(sum.div_scalar((seq_len as f64).sqrt())?);
            }
        }
        let pooled = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts.iter().collect::<Vec<_>>(), 1)?
        };
        if !normalize {
            return pooled.to_f32();
        }
        // x / max(||x||, 1e-12), as torch.nn.functional.normalize.
        let norm = pooled
            .unary(UnaryOp::Sqr)?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        pooled.div(&norm)?.to_f32()
    }

    fn layer(&self, x: &Tensor, layer: &Layer) -> Result<Tensor, Error> {
        let attention = self.self_attention(x, layer)?;
        let attention = self.layer_norm(
            &layer.attn_out.forward(&attention)?.add(x)?,
            &layer.attn_norm,
        )?;
        let h = layer.intermediate.forward(&attention)?;
        let h = match self.cfg.hidden_act {
            HiddenAct::GeluErf => h.gelu_erf()?,
            HiddenAct::Gelu => h.gelu()?,
            HiddenAct::Relu => h.relu()?,
        };
        self.layer_norm(&layer.output.forward(&h)?.add(&attention)?, &layer.out_norm)
    }

    fn self_attention(&self, x: &Tensor, layer: &Layer) -> Result<Tensor, Error> {
        let (seq_len, heads, head_dim) =
            (x.dim(1), self.cfg.num_attention_heads, self.cfg.head_dim());
        let split = |t: Tensor| -> Result<Tensor, Error> {
            t.reshape(&[1, seq_len, heads, head_dim])?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(layer.query.forward(x)?)?;
        let k = split(layer.key.forward(x)?)?;
        let v = split(layer.value.forward(x)?)?;
        // The all-ones attention mask adds (1 - 1) * f32::MIN = -0.0: a no-op.
        let scores = q.matmul(&k.t()?)?.div_scalar((head_dim as f64).sqrt())?;
        let probs = scores.softmax_last_dim()?;
        probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape(&[
            1,
            seq_len,
            self.cfg.hidden_size,
        ])
    }
}
