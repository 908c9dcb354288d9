//! Pieces every decoder-only backend writes again: a per-layer KV cache, a
//! rectangular causal mask for a chunk of new positions after cached ones,
//! the last position's hidden state (what the logits come from), and a
//! projection whose weight is plain (safetensors) or quantized (GGUF).

use crate::models::Weights;
use crate::{DType, Error, QMatrix, Tensor};

/// A projection's weight, `[out, in]`: a plain tensor, or a quantized
/// matrix multiplied on the host without dequantizing (`qlinear`).
pub enum Linear {
    /// From `weights.get` (safetensors, any float dtype).
    Dense(Tensor),
    /// From `weights.get-quantized` (GGUF; the input must be f32).
    Quantized(QMatrix),
}

impl Linear {
    /// The weight `name` as `weights` stores it: quantized for a GGUF
    /// model, plain otherwise (and for a GGUF matrix stored as f32, f16 or
    /// bf16, which the host keeps dequantized once rather than per call).
    /// Errors name the tensor.
    pub fn load(weights: &Weights, name: &str) -> Result<Linear, Error> {
        use crate::Context;
        let w = match weights.format().as_str() {
            "gguf" => weights
                .get_quantized(name)
                .and_then(|q| match q.format().as_str() {
                    "f32" | "f16" | "bf16" => weights.get(name).map(Linear::Dense),
                    _ => Ok(Linear::Quantized(q)),
                }),
            _ => weights.get(name).map(Linear::Dense),
        };
        w.with_context(|| format!("weight `{name}`"))
    }

    /// `x @ w^T (+ bias)`.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor, Error> {
        match (self, bias) {
            (Linear::Dense(w), _) => x.linear(w, bias),
            (Linear::Quantized(w), None) => x.qlinear(w),
            (Linear::Quantized(w), Some(b)) => x.qlinear(w)?.add(b),
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Linear::Dense(w) => w.dims(),
            Linear::Quantized(w) => w.shape().into_iter().map(|d| d as usize).collect(),
        }
    }
}

/// Per-layer keys and values of the positions seen so far, concatenated
/// along the sequence dimension (`seq_dim`: 2 for `[batch, heads, seq,
/// head_dim]`).
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    seq_dim: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize, seq_dim: usize) -> Self {
        KvCache {
            layers: (0..layers).map(|_| None).collect(),
            seq_dim,
        }
    }

    /// Appends this step's `k` and `v` to `layer`'s and returns all of
    /// them, cached positions first: the first step's as given, then a
    /// `cat`'s (contiguous).
    pub fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(&Tensor, &Tensor), Error> {
        let dim = self.seq_dim;
        let count = self.layers.len();
        let slot = self.layers.get_mut(layer).ok_or_else(|| {
            Error::internal(format!("kv cache: no layer {layer} (it has {count})"))
        })?;
        let (k, v) = match slot.take() {
            Some((cached_k, cached_v)) => (
                // Contiguous: `cat` guarantees it from contract 0.2.4.
                Tensor::cat(&[&cached_k, &k], dim)?,
                Tensor::cat(&[&cached_v, &v], dim)?,
            ),
            None => (k, v),
        };
        let (k, v) = slot.insert((k, v));
        Ok((k, v))
    }

    /// Positions cached for `layer` (0 before its first `append`).
    pub fn positions(&self, layer: usize) -> usize {
        match self.layers.get(layer) {
            Some(Some((k, _))) => k.dim(self.seq_dim),
            _ => 0,
        }
    }

    /// Forgets every position (a new sequence).
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|slot| *slot = None);
    }
}

/// The `[rows, offset + rows]` bytes of a causal mask for `rows` new
/// positions after `offset` cached ones: 1 where attention is cut (key `j`
/// after query `i`'s own position `offset + i`), 0 elsewhere.
pub fn causal_mask_bytes(rows: usize, offset: usize) -> Vec<u8> {
    let cols = offset + rows;
    (0..rows)
        .flat_map(|i| (0..cols).map(move |j| u8::from(j > offset + i)))
        .collect()
}

/// [`causal_mask_bytes`] as a u8 tensor, for `masked_fill(mask, -inf)`
/// after broadcasting to the scores' shape. With `offset` 0 it is the
/// host's `causal_mask(rows)`.
pub fn causal_mask_at(rows: usize, offset: usize) -> Result<Tensor, Error> {
    let cols = offset + rows;
    Tensor::from_bytes(
        &causal_mask_bytes(rows, offset),
        DType::U8,
        &[rows as u32, cols as u32],
    )
}

/// The hidden state at the last position of `x` (`[batch, seq, hidden]`)
/// as `[batch, hidden]`: the row the next token's logits come from.
pub fn last_position(x: &Tensor) -> Result<Tensor, Error> {
    let dims = x.dims();
    let [batch, seq, hidden] = dims[..] else {
        return Err(Error::internal(format!(
            "last_position expects [batch, seq, hidden], got {dims:?}"
        )));
    };
    if seq == 0 {
        return Err(Error::internal("last_position of an empty sequence"));
    }
    x.narrow(1, seq - 1, 1)?.reshape(&[batch, hidden])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_after_cached_positions_cuts_only_the_future() {
        // Two new positions after three cached: row 0 sees keys 0..=3.
        assert_eq!(causal_mask_bytes(2, 3), [0, 0, 0, 0, 1, /**/ 0, 0, 0, 0, 0]);
        // Without a cache it is the square causal mask.
        assert_eq!(causal_mask_bytes(3, 0), [0, 1, 1, 0, 0, 1, 0, 0, 0]);
        assert!(causal_mask_bytes(0, 4).is_empty());
    }
}
