//! The llama forward pass, written against the host tensor kernels.
//!
//! The order of operations mirrors `candle_transformers::models::llama`
//! (0.11.1) step for step, so that logits match it to float rounding; the
//! `qwen2` and `mistral` architectures differ from it only where
//! candle-transformers' `qwen2` and `mistral` modules do (q/k/v biases, the
//! rotary frequencies' precision, the sliding-window prompt mask).
//! A GGUF llama file runs the same pass as
//! `candle_transformers::models::quantized_llama` (0.11.1) does: quantized
//! projections multiplied on the host (`qlinear`), norms and the embedding
//! table dequantized, the rotary embedding on interleaved pairs.
//! Weights stay on the host; this module only holds tensor handles.
//!
//! A [`Llama`] may hold only a [`Span`] of the blocks, one stage of a
//! pipeline ([`Llama::forward_span`]): it runs the same per-block code as
//! the whole model's [`Llama::forward`], so chained spans give the same bits.

use crate::config::{Arch, Layout, LlamaConfig};
use infernet_plugin_api::decoder::last_position;
use infernet_plugin_api::models::Weights;
use infernet_plugin_api::tensor::causal_mask;
use infernet_plugin_api::{Context, DType, Error, KvCache, Linear, Tensor};

/// A deliberate deviation from the forward pass, read from the crate root's
/// `TAMPER`. The llama plugin's is [`Tamper::NONE`], which changes no kernel
/// call; only the test-only `plugins/cheat-llama` (which includes this file by
/// path) sets a field, to prove that the verifier catches cheaters.
#[derive(Clone, Copy)]
pub struct Tamper {
    /// Scales the MLP output (after `down_proj`, before the residual add) of
    /// block `num_hidden_layers / 2` by `1 + 1e-3`: one extra `affine` kernel
    /// (whichever span of layers holds that block).
    pub perturb_middle_block: bool,
    /// Runs only blocks `0..num_hidden_layers / 2` (a span runs those of its
    /// blocks, by absolute index).
    pub skip_second_half: bool,
}

impl Tamper {
    /// The honest forward pass.
    pub const NONE: Tamper = Tamper {
        perturb_middle_block: false,
        skip_second_half: false,
    };
}

/// One decoder block's weights.
struct Block {
    input_layernorm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// q/k/v biases (qwen2 only).
    q_bias: Option<Tensor>,
    k_bias: Option<Tensor>,
    v_bias: Option<Tensor>,
    post_attention_layernorm: Tensor,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// The decoder blocks `start..end` (half-open) of a model: what one stage of
/// a pipeline runs. The whole model is `0..num_hidden_layers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// Refuses a span that is empty or reaches past the model's `layers`
    /// blocks, naming the `layers` parameter it came from.
    pub fn check(self, layers: usize) -> Result<(), Error> {
        if self.start < self.end && self.end <= layers {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "parameter `layers` is {self}, but this model has layers 0..{layers} \
             (num_hidden_layers {layers}); it must be a..b with 0 <= a < b <= {layers}"
        )))
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// What a span ending at the last block holds past it: the final norm and
/// the output projection.
struct Head {
    norm: Tensor,
    /// `None` when the output projection is tied to `embed_tokens` (a
    /// tied GGUF head is `token_embd.weight` as stored, quantized).
    lm_head: Option<Linear>,
}

/// A loaded model, or the span of it one pipeline stage runs: weight
/// handles and the rotary tables.
pub struct Llama {
    pub cfg: LlamaConfig,
    /// The blocks held (`blocks[i]` is block `span.start + i`).
    span: Span,
    /// Present when the span starts at block 0, or ends at the last one
    /// with a head tied to it (safetensors).
    embed_tokens: Option<Tensor>,
    blocks: Vec<Block>,
    /// Present when the span ends at the last block.
    head: Option<Head>,
    /// `[max_position_embeddings, head_dim / 2]`, in the weights' dtype.
    cos: Tensor,
    sin: Tensor,
    /// The activations' dtype (the embedding table's; for a span without
    /// it, its first block's norm weight's, which must be the same for the
    /// whole model to run), known here so that the forward pass asks the
    /// host for no dtype.
    dtype: DType,
}

/// The input of a span: token ids (a span starting at block 0) or the
/// previous stage's hidden states `[1, seq, hidden_size]`, any float dtype.
pub enum SpanInput<'a> {
    Tokens(&'a [u32]),
    Hidden(Tensor),
}

/// A weight's name in the checkpoint's layout, from its Hugging Face name
/// (`model.layers.{i}.` prefix removed for block weights).
fn name(layout: Layout, hf: &str, block: Option<usize>) -> String {
    let Some(i) = block else {
        return match (layout, hf) {
            (Layout::Hf, _) => hf.to_string(),
            (Layout::Gguf, "model.embed_tokens.weight") => "token_embd.weight".into(),
            (Layout::Gguf, "model.norm.weight") => "output_norm.weight".into(),
            (Layout::Gguf, "lm_head.weight") => "output.weight".into(),
            (Layout::Gguf, other) => other.to_string(),
        };
    };
    let part = hf.strip_suffix(".weight").unwrap_or(hf);
    match layout {
        Layout::Hf => format!("model.layers.{i}.{hf}"),
        Layout::Gguf => {
            let gguf = match part {
                "input_layernorm" => "attn_norm",
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "post_attention_layernorm" => "ffn_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                other => other,
            };
            format!("blk.{i}.{gguf}.weight")
        }
    }
}

/// Fetches a named weight, with an error naming the tensor.
fn weight(weights: &Weights, name: &str) -> Result<Tensor, Error> {
    weights.get(name).map_err(|e| match e {
        Error::InvalidInput(m) => Error::invalid(format!("weight `{name}`: {m}")),
        other => other,
    })
}

/// Converts to `dtype` only when needed (candle's `to_dtype` is a no-op then).
fn cast(x: Tensor, dtype: DType) -> Result<Tensor, Error> {
    if x.dtype() == dtype {
        Ok(x)
    } else {
        x.to_dtype(dtype)
    }
}

/// Inverse rotary frequencies, as candle's `Cache::new` computes them (its
/// qwen2 raises the base in f64, its llama and mistral in f32).
fn inv_freq(cfg: &LlamaConfig) -> Vec<f32> {
    let head_dim = cfg.head_dim();
    let base: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| match cfg.arch {
            Arch::Qwen2 => 1f32 / f64::from(cfg.rope_theta).powf(i as f64 / head_dim as f64) as f32,
            Arch::Llama | Arch::Mistral => 1f32 / cfg.rope_theta.powf(i as f32 / head_dim as f32),
        })
        .collect();
    let Some(rs) = &cfg.rope_scaling else {
        return base;
    };
    let low_freq_wavelen = rs.original_max_position_embeddings as f32 / rs.low_freq_factor;
    let high_freq_wavelen = rs.original_max_position_embeddings as f32 / rs.high_freq_factor;
    base.into_iter()
        .map(|freq| {
            let wavelen = 2. * std::f32::consts::PI / freq;
            if wavelen < high_freq_wavelen {
                freq
            } else if wavelen > low_freq_wavelen {
                freq / rs.factor
            } else {
                let smooth = (rs.original_max_position_embeddings as f32 / wavelen
                    - rs.low_freq_factor)
                    / (rs.high_freq_factor - rs.low_freq_factor);
                (1. - smooth) * freq / rs.factor + smooth * freq
            }
        })
        .collect()
}

impl Llama {
    /// Fetches the weight handles `span` needs (`None`: the whole model)
    /// and builds the rotary tables. A span opens no other weight: the
    /// embedding table only if it starts at block 0 (or ends at the last
    /// block with a tied safetensors head), blocks `span` only, the final
    /// norm and output projection only if it ends at the last block.
    pub fn load(weights: &Weights, cfg: LlamaConfig, span: Option<Span>) -> Result<Self, Error> {
        let layout = cfg.layout;
        let n = cfg.num_hidden_layers;
        let span = span.unwrap_or(Span { start: 0, end: n });
        span.check(n)?;
        let last = span.end == n;
        let top = |hf: &str| name(layout, hf, None);
        let tied_dense = cfg.tie_word_embeddings && layout == Layout::Hf;
        let embed_tokens = if span.start == 0 || (last && tied_dense) {
            Some(weight(weights, &top("model.embed_tokens.weight"))?)
        } else {
            None
        };
        let lm_head = match (last, cfg.tie_word_embeddings, layout) {
            (false, _, _) => None,
            (true, false, _) => Some(Linear::load(weights, &top("lm_head.weight"))?),
            (true, true, Layout::Gguf) => {
                Some(Linear::load(weights, &top("model.embed_tokens.weight"))?)
            }
            (true, true, Layout::Hf) => None,
        };
        let head = match last {
            true => Some(Head {
                norm: weight(weights, &top("model.norm.weight"))?,
                lm_head,
            }),
            false => None,
        };
        let blocks = (span.start..span.end)
            .map(|i| {
                let at = |part: &str| name(layout, &format!("{part}.weight"), Some(i));
                let w = |part: &str| weight(weights, &at(part));
                let proj = |part: &str| Linear::load(weights, &at(part));
                let bias = |suffix: &str| match cfg.arch {
                    Arch::Qwen2 => {
                        weight(weights, &format!("model.layers.{i}.{suffix}.bias")).map(Some)
                    }
                    Arch::Llama | Arch::Mistral => Ok(None),
                };
                Ok(Block {
                    q_bias: bias("self_attn.q_proj")?,
                    k_bias: bias("self_attn.k_proj")?,
                    v_bias: bias("self_attn.v_proj")?,
                    input_layernorm: w("input_layernorm")?,
                    q_proj: proj("self_attn.q_proj")?,
                    k_proj: proj("self_attn.k_proj")?,
                    v_proj: proj("self_attn.v_proj")?,
                    o_proj: proj("self_attn.o_proj")?,
                    post_attention_layernorm: w("post_attention_layernorm")?,
                    gate_proj: proj("mlp.gate_proj")?,
                    up_proj: proj("mlp.up_proj")?,
                    down_proj: proj("mlp.down_proj")?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // The activations' dtype: the embedding table's, else (a span past
        // block 0) its first block's norm weight's, which `rms_norm` requires
        // to be the activations' dtype in the whole model too.
        let dtype = match (&embed_tokens, blocks.first()) {
            (Some(table), _) => table.dtype(),
            (None, Some(block)) => block.input_layernorm.dtype(),
            (None, None) => return Err(Error::internal("a span of no blocks")),
        };

        let theta = inv_freq(&cfg);
        let max_pos = cfg.max_position_embeddings;
        let theta = Tensor::new_f32(&theta, &[1, theta.len()])?;
        let idx_theta = Tensor::arange(max_pos as u32)?
            .to_dtype(DType::F32)?
            .reshape(&[max_pos, 1])?
            .matmul(&theta)?;
        let cos = cast(idx_theta.cos()?, dtype)?;
        let sin = cast(idx_theta.sin()?, dtype)?;

        Ok(Llama {
            cfg,
            span,
            embed_tokens,
            blocks,
            head,
            cos,
            sin,
            dtype,
        })
    }

    /// Runs `ids` (positions `index_pos..`) through the model and returns the
    /// f32 logits of the last position, shape `[1, vocab]`.
    pub fn forward(
        &self,
        ids: &[u32],
        index_pos: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor, Error> {
        let x = self.embed(ids)?;
        let x = self.run_blocks(x, ids.len(), index_pos, cache)?;
        self.logits(&x)
    }

    /// Runs this span over `seq` rows at positions `index_pos..`, with
    /// `cache` holding its own blocks' keys and values (layer `i` of the
    /// cache is block `span.start + i`). A span ending at the last block
    /// returns the f32 logits of the last position, `[1, vocab]`, as
    /// [`Llama::forward`]; any other its output hidden states converted to
    /// f32, `[1, seq, hidden_size]` (exact from f16, bf16 and f32).
    pub fn forward_span(
        &self,
        input: SpanInput,
        seq: usize,
        index_pos: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor, Error> {
        let x = match input {
            SpanInput::Tokens(ids) => self.embed(ids)?,
            SpanInput::Hidden(h) => cast(h, self.dtype)?,
        };
        let x = self.run_blocks(x, seq, index_pos, cache)?;
        match self.head {
            Some(_) => self.logits(&x),
            None => cast(x, DType::F32),
        }
    }

    /// `ids` as rows of the embedding table, `[1, seq, hidden_size]`.
    fn embed(&self, ids: &[u32]) -> Result<Tensor, Error> {
        let table = self.embed_tokens.as_ref().ok_or_else(|| {
            Error::internal(format!(
                "layers {} do not start at the embedding table",
                self.span
            ))
        })?;
        let input = Tensor::new_u32(ids, &[1, ids.len()])?;
        table.embedding(&input)
    }

    /// Runs `x` (`seq_len` rows at positions `index_pos..`) through the
    /// blocks held, in order.
    fn run_blocks(
        &self,
        mut x: Tensor,
        seq_len: usize,
        index_pos: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor, Error> {
        // The rotary tables of these positions, once for every layer.
        let rope = (
            self.cos.narrow(0, index_pos, seq_len)?,
            self.sin.narrow(0, index_pos, seq_len)?,
        );
        for (cache_idx, block) in self.blocks.iter().enumerate() {
            let layer = self.span.start + cache_idx;
            if crate::TAMPER.skip_second_half && layer >= self.cfg.num_hidden_layers / 2 {
                break;
            }
            let at = Position {
                index_pos,
                seq_len,
                layer,
                cache_idx,
                rope: &rope,
            };
            x = self
                .block(&x, block, &at, cache)
                .with_context(|| format!("layer {layer}"))?;
        }
        Ok(x)
    }

    /// The f32 logits `[1, vocab]` of the last row of the last block's output.
    fn logits(&self, x: &Tensor) -> Result<Tensor, Error> {
        let head = self.head.as_ref().ok_or_else(|| {
            Error::internal(format!("layers {} do not end at the last block", self.span))
        })?;
        // rms_norm is row-wise, so normalising only the last position is the
        // same as candle's normalise-then-select.
        let x = last_position(x)?
            .rms_norm(&head.norm, self.eps())?
            .contiguous()?;
        let logits = match (&head.lm_head, &self.embed_tokens) {
            (Some(lm_head), _) => lm_head.forward(&x, None)?,
            (None, Some(table)) => x.linear(table, None)?,
            (None, None) => return Err(Error::internal("tied output head without its table")),
        };
        cast(logits, DType::F32)
    }

    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }

    fn block(
        &self,
        x: &Tensor,
        block: &Block,
        at: &Position,
        cache: &mut KvCache,
    ) -> Result<Tensor, Error> {
        let residual = x;
        let h = x.rms_norm(&block.input_layernorm, self.eps())?;
        let x = self.attention(&h, block, at, cache)?.add(residual)?;
        let residual = &x;
        let h = x.rms_norm(&block.post_attention_layernorm, self.eps())?;
        let h = block
            .gate_proj
            .forward(&h, None)?
            .silu()?
            .mul(&block.up_proj.forward(&h, None)?)?;
        let h = block.down_proj.forward(&h, None)?;
        // By absolute index: the same block whichever span holds it.
        let middle = at.layer == self.cfg.num_hidden_layers / 2;
        let h = if crate::TAMPER.perturb_middle_block && middle {
            h.affine(1.0 + 1e-3, 0.0)?
        } else {
            h
        };
        h.add(residual)
    }

    fn attention(
        &self,
        x: &Tensor,
        block: &Block,
        at: &Position,
        cache: &mut KvCache,
    ) -> Result<Tensor, Error> {
        let (index_pos, seq_len) = (at.index_pos, at.seq_len);
        let cfg = &self.cfg;
        let b = 1;
        let (n_heads, n_kv, head_dim) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );

        let q = block.q_proj.forward(x, block.q_bias.as_ref())?;
        let k = block.k_proj.forward(x, block.k_bias.as_ref())?;
        let v = block.v_proj.forward(x, block.v_bias.as_ref())?;
        // `[b, seq, heads, dim]` -> `[b, heads, seq, dim]`. One position
        // (a decode step) is already in that order: a reshape, no copy, and
        // three host calls fewer per tensor.
        // Every one is contiguous, so the cache and the matmuls below need
        // no copy of their own.
        let heads_first = |t: Tensor, heads: usize| -> Result<Tensor, Error> {
            if seq_len == 1 {
                return t.reshape(&[b, heads, 1, head_dim]);
            }
            t.reshape(&[b, seq_len, heads, head_dim])?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads_first(q, n_heads)?;
        let k = heads_first(k, n_kv)?;
        let v = heads_first(v, n_kv)?;

        let (cos, sin) = at.rope;
        let (q, k) = match cfg.layout {
            Layout::Hf => (q.rope(cos, sin)?, k.rope(cos, sin)?),
            Layout::Gguf => (q.rope_interleaved(cos, sin)?, k.rope_interleaved(cos, sin)?),
        };

        let (k, v) = cache.append(at.cache_idx, k, v)?;

        // Attention in f32, as candle-transformers computes it, in one host
        // call (contract 0.2.4): keys and values repeated per query head,
        // `q · kᵀ / sqrt(d)`, the prompt's mask, softmax, `· v`.
        let f32_of = |t: &Tensor| match self.dtype {
            DType::F32 => Ok(None),
            _ => t.to_dtype(DType::F32).map(Some),
        };
        let (q32, k32, v32) = (f32_of(&q)?, f32_of(k)?, f32_of(v)?);
        let q = q32.as_ref().unwrap_or(&q);
        let k = k32.as_ref().unwrap_or(k);
        let v = v32.as_ref().unwrap_or(v);
        let mask = match seq_len {
            1 => None,
            _ if index_pos != 0 => {
                return Err(Error::internal(
                    "multi-token forward is only supported at position 0",
                ))
            }
            _ => Some(match cfg.sliding_window {
                // The window cuts nothing from a prompt this short.
                Some(window) if seq_len > window + 1 => sliding_window_mask(seq_len, window)?,
                _ => causal_mask(seq_len as u32)?,
            }),
        };
        // A single-token step attends to the whole cache, even past a
        // sliding window: candle-transformers 0.11.1's mistral does (the
        // reference), Hugging Face does not (see `LlamaConfig::sliding_window`).
        let scale = 1.0 / (head_dim as f64).sqrt();
        let y = q.attention(k, v, mask.as_ref(), scale)?;
        let y = match self.dtype {
            DType::F32 => y,
            dtype => y.to_dtype(dtype)?,
        };
        let y = match seq_len {
            1 => y.reshape(&[b, 1, n_heads * head_dim])?,
            _ => y
                .transpose(1, 2)?
                .reshape(&[b, seq_len, n_heads * head_dim])?,
        };
        block.o_proj.forward(&y, None)
    }
}

/// Where a layer runs: the first position, the layer, and the rotary
/// tables of the positions (shared by every layer of one forward pass).
struct Position<'a> {
    index_pos: usize,
    /// Positions in this pass.
    seq_len: usize,
    /// The block's index in the whole model.
    layer: usize,
    /// Its layer in the KV cache (`layer` less the span's first block).
    cache_idx: usize,
    rope: &'a (Tensor, Tensor),
}

/// The `[n, n]` u8 prompt mask of a sliding window, 1 where attention is
/// cut: future keys (`j > i`) and keys more than `window` behind the query
/// (`j + window < i`), exactly as candle-transformers 0.11.1's mistral
/// `prepare_decoder_attention_mask` builds it (so `window + 1` keys remain).
fn sliding_window_mask(n: usize, window: usize) -> Result<Tensor, Error> {
    let cut: Vec<u8> = (0..n)
        .flat_map(|i| (0..n).map(move |j| u8::from(j > i || j + window < i)))
        .collect();
    Tensor::from_bytes(&cut, DType::U8, &[n as u32, n as u32])
}
