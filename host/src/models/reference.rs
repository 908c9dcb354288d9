//! Native reference models: the upstream candle-transformers 0.11.1 Llama, Qwen2,
//! Mistral and BERT implementations, loaded from Hugging Face checkpoint directories.
//!
//! These are the ground truth that tests and benchmarks compare the wasm inference
//! plugins against, so they deliberately wrap the real upstream models
//! (`candle_transformers::models::{llama, bert}`) instead of reimplementing them:
//! * [`NativeLlama`] — greedy generation with the KV cache, driven exactly like
//!   candle's llama example (whole prompt at position 0, then one token at a time),
//!   returning every step's last-position logits;
//! * [`NativeQwen2`] and [`NativeMistral`] — the same API over
//!   `candle_transformers::models::{qwen2, mistral}` (see [`NativeCausalLm`]);
//! * [`NativeBert`] — sentence embeddings (mean pooling + L2 normalisation, as
//!   sentence-transformers does for all-MiniLM-L6-v2);
//! * [`cosine`] — cosine similarity for comparing embeddings or logit vectors.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use candle_transformers::models::llama::{Cache, Config as LlamaModelConfig, Llama, LlamaConfig};
use candle_transformers::models::{mistral, quantized_llama, qwen2};
use std::sync::Mutex;
use tokenizers::Tokenizer;

/// Errors raised while loading or running a reference model.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A checkpoint file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config, shard index) could not be parsed.
    #[error("parsing {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The weights do not match the config (missing tensor, wrong shape, no weights file).
    #[error("checkpoint {}: {message}", dir.display())]
    Checkpoint { dir: PathBuf, message: String },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The caller asked for something the model cannot do (empty prompt, too long, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An error inside candle while loading or running the model.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReferenceError> {
    let bytes = fs::read(path).map_err(|source| ReferenceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ReferenceError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer, ReferenceError> {
    Tokenizer::from_file(path)
        .map_err(|e| ReferenceError::Tokenizer(format!("loading {}: {e}", path.display())))
}

/// The safetensors files of a checkpoint: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ReferenceError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: std::collections::BTreeMap<String, String>,
        }
        let index: Index = read_json(&index)?;
        let mut files: Vec<PathBuf> = index.weight_map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    Err(ReferenceError::Checkpoint {
        dir: dir.to_path_buf(),
        message: "no model.safetensors or model.safetensors.index.json".to_string(),
    })
}

/// Checks that every tensor `expected` lists exists with the right shape, so that
/// upstream loaders (which `unwrap` some per-layer errors) never panic on a bad file.
fn check_tensors(
    dir: &Path,
    files: &[PathBuf],
    expected: &[(String, Vec<usize>)],
) -> Result<(), ReferenceError> {
    // SAFETY: the mapping is read-only and dropped before this function returns; the
    // checkpoint files must not be modified concurrently (same contract as candle's
    // own mmap loaders).
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files)? };
    for (name, shape) in expected {
        let view = st.get(name).map_err(|_| ReferenceError::Checkpoint {
            dir: dir.to_path_buf(),
            message: format!("missing tensor {name}"),
        })?;
        if view.shape() != shape.as_slice() {
            return Err(ReferenceError::Checkpoint {
                dir: dir.to_path_buf(),
                message: format!(
                    "tensor {name} has shape {:?}, config implies {shape:?}",
                    view.shape()
                ),
            });
        }
    }
    Ok(())
}

/// The tensors (and shapes) upstream `Llama::load` reads for `cfg`.
fn llama_expected_tensors(cfg: &LlamaModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let i = cfg.intermediate_size;
    let head_dim = h / cfg.num_attention_heads;
    let q = cfg.num_attention_heads * head_dim;
    let kv = cfg.num_key_value_heads * head_dim;
    let mut out = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![cfg.vocab_size, h],
        ),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
        ]);
    }
    out
}

/// Upstream candle-transformers Llama (f32) with its tokenizer.
pub struct NativeLlama {
    model: Llama,
    config: LlamaModelConfig,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for NativeLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeLlama")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl NativeLlama {
    /// Loads `config.json`, `model.safetensors` (or its shards) and `tokenizer.json`
    /// from `dir` onto `device`, in f32, without flash attention.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ReferenceError> {
        let raw: LlamaConfig = read_json(&dir.join("config.json"))?;
        let config = raw.into_config(false);
        if config.num_attention_heads == 0
            || config.num_key_value_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
            || !config
                .num_attention_heads
                .is_multiple_of(config.num_key_value_heads)
        {
            return Err(ReferenceError::Checkpoint {
                dir: dir.to_path_buf(),
                message: format!(
                    "inconsistent head configuration: hidden {} heads {} kv heads {}",
                    config.hidden_size, config.num_attention_heads, config.num_key_value_heads
                ),
            });
        }
        let files = weight_files(dir)?;
        check_tensors(dir, &files, &llama_expected_tensors(&config))?;
        // SAFETY: read-only mapping of checkpoint files that must not be modified while
        // the model is alive (candle copies the tensors it needs on load).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device)? };
        let model = Llama::load(vb, &config)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        Ok(Self {
            model,
            config,
            tokenizer,
            device: device.clone(),
        })
    }

    /// The model configuration (as converted by `LlamaConfig::into_config`).
    pub fn config(&self) -> &LlamaModelConfig {
        &self.config
    }

    /// The checkpoint's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Vocabulary size of the model (length of each logits vector).
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Tokenizes `text` with special tokens added (e.g. the leading `<s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ReferenceError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ReferenceError::Tokenizer(format!("encoding: {e}")))
    }

    /// Detokenizes `ids`, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ReferenceError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ReferenceError::Tokenizer(format!("decoding: {e}")))
    }

    /// Greedy generation of exactly `steps` tokens (EOS does not stop it), the way
    /// candle's llama example drives the model: a fresh KV cache, the whole prompt at
    /// `index_pos` 0, then each new token alone at the next position. Returns the
    /// generated tokens and, for every step, the last-position logits the token was
    /// chosen from (`vocab_size` f32 each). Ties in argmax are broken by candle's
    /// `LogitsProcessor` (`Sampling::ArgMax`).
    pub fn generate_greedy(
        &self,
        prompt_ids: &[u32],
        steps: usize,
    ) -> Result<(Vec<u32>, Vec<Vec<f32>>), ReferenceError> {
        if steps == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        self.check_prompt(prompt_ids, steps)?;
        let mut cache = Cache::new(true, DType::F32, &self.config, &self.device)?;
        let mut sampler = LogitsProcessor::from_sampling(0, Sampling::ArgMax);
        let mut tokens = prompt_ids.to_vec();
        let mut generated = Vec::with_capacity(steps);
        let mut all_logits = Vec::with_capacity(steps);
        let mut index_pos = 0;
        for step in 0..steps {
            let context_size = if step > 0 { 1 } else { tokens.len() };
            let ctxt = &tokens[tokens.len() - context_size..];
            let input = Tensor::new(ctxt, &self.device)?.unsqueeze(0)?;
            let logits = self.model.forward(&input, index_pos, &mut cache)?;
            let logits = logits.squeeze(0)?;
            index_pos += ctxt.len();
            let next = sampler.sample(&logits)?;
            all_logits.push(logits.to_vec1::<f32>()?);
            generated.push(next);
            tokens.push(next);
        }
        Ok((generated, all_logits))
    }

    /// Last-position logits for the whole sequence `ids`, computed in one pass with no
    /// KV cache (a cross-check for [`Self::generate_greedy`]).
    pub fn logits_no_cache(&self, ids: &[u32]) -> Result<Vec<f32>, ReferenceError> {
        self.check_prompt(ids, 1)?;
        let mut cache = Cache::new(false, DType::F32, &self.config, &self.device)?;
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let logits = self.model.forward(&input, 0, &mut cache)?.squeeze(0)?;
        Ok(logits.to_vec1::<f32>()?)
    }

    fn check_prompt(&self, ids: &[u32], steps: usize) -> Result<(), ReferenceError> {
        if ids.is_empty() {
            return Err(ReferenceError::InvalidInput("empty prompt".to_string()));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(ReferenceError::InvalidInput(format!(
                "token id {bad} outside vocabulary of {}",
                self.config.vocab_size
            )));
        }
        // The last forward pass covers position len + steps - 2.
        let needed = ids.len() + steps - 1;
        if needed > self.config.max_position_embeddings {
            return Err(ReferenceError::InvalidInput(format!(
                "prompt of {} tokens + {steps} steps needs {needed} positions, model has {}",
                ids.len(),
                self.config.max_position_embeddings
            )));
        }
        Ok(())
    }
}

/// A candle-transformers decoder that keeps its KV cache inside itself (qwen2,
/// mistral), seen through one interface.
pub trait CachedDecoder: Send {
    /// Last-position logits `[vocab]` of `ids` (`[1, seq]`) at `seqlen_offset`,
    /// appending to the internal KV cache.
    fn step(&mut self, ids: &Tensor, seqlen_offset: usize) -> candle_core::Result<Tensor>;
    /// Empties the KV cache.
    fn clear(&mut self);
}

impl CachedDecoder for qwen2::ModelForCausalLM {
    fn step(&mut self, ids: &Tensor, seqlen_offset: usize) -> candle_core::Result<Tensor> {
        self.forward(ids, seqlen_offset)?.squeeze(0)?.squeeze(0)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl CachedDecoder for mistral::Model {
    fn step(&mut self, ids: &Tensor, seqlen_offset: usize) -> candle_core::Result<Tensor> {
        self.forward(ids, seqlen_offset)?.squeeze(0)?.squeeze(0)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

/// An upstream candle-transformers llama-family decoder (f32) with its tokenizer,
/// with [`NativeLlama`]'s API: [`NativeQwen2`] and [`NativeMistral`].
///
/// candle-transformers 0.11.1 semantics worth knowing when comparing with Hugging
/// Face (the plugin matches candle, its test reference):
/// * qwen2 always applies `sliding_window` to a multi-token prompt, whatever
///   `use_sliding_window` says (HF: only when it is true); inert when
///   `sliding_window >= max_position_embeddings`, as in published Qwen2 configs;
///   qwen2 ties `lm_head` when the file has no `lm_head.weight` (HF: by
///   `tie_word_embeddings`);
/// * mistral's window keeps `sliding_window + 1` keys (`i - j <= window`; HF keeps
///   `window`) and applies only to multi-token forwards: a single-token decode step
///   attends to the whole, never truncated, KV cache (HF windows every step);
///   mistral always reads `lm_head.weight` (no tying).
pub struct NativeCausalLm<M> {
    model: Mutex<M>,
    vocab_size: usize,
    max_position_embeddings: usize,
    tokenizer: Tokenizer,
    device: Device,
}

/// candle-transformers' Qwen2 (`qwen2::ModelForCausalLM`).
pub type NativeQwen2 = NativeCausalLm<qwen2::ModelForCausalLM>;
/// candle-transformers' Mistral (`mistral::Model`).
pub type NativeMistral = NativeCausalLm<mistral::Model>;
/// candle-transformers' GGUF llama (`quantized_llama::ModelWeights`).
pub type NativeQuantizedLlama = NativeCausalLm<quantized_llama::ModelWeights>;

impl CachedDecoder for quantized_llama::ModelWeights {
    fn step(&mut self, ids: &Tensor, seqlen_offset: usize) -> candle_core::Result<Tensor> {
        self.forward(ids, seqlen_offset)?.squeeze(0)
    }
    fn clear(&mut self) {
        self.clear_kv_cache()
    }
}

impl NativeQuantizedLlama {
    /// Loads a GGUF llama file with candle-transformers' `quantized_llama`
    /// (quantized matmuls, as candle's `quantized` example runs it) and the
    /// `tokenizer.json` at `tokenizer`.
    pub fn load_gguf(
        path: &Path,
        tokenizer: &Path,
        device: &Device,
    ) -> Result<Self, ReferenceError> {
        use candle_core::quantized::gguf_file;
        let io = |source| ReferenceError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::File::open(path).map_err(io)?;
        let content = gguf_file::Content::read(&mut file)?;
        let checkpoint = |message: String| ReferenceError::Checkpoint {
            dir: path.to_owned(),
            message,
        };
        let vocab_size = content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| checkpoint("no token_embd.weight".into()))?;
        let context = content
            .metadata
            .get("llama.context_length")
            .ok_or_else(|| checkpoint("no llama.context_length".into()))?
            .to_u32()? as usize;
        let model = quantized_llama::ModelWeights::from_gguf(content, &mut file, device)?;
        Ok(Self {
            model: Mutex::new(model),
            vocab_size,
            max_position_embeddings: context,
            tokenizer: load_tokenizer(tokenizer)?,
            device: device.clone(),
        })
    }
}

impl<M> std::fmt::Debug for NativeCausalLm<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeCausalLm")
            .field("model", &std::any::type_name::<M>())
            .field("vocab_size", &self.vocab_size)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn check_heads(dir: &Path, hidden: usize, heads: usize, kv: usize) -> Result<(), ReferenceError> {
    if heads == 0 || kv == 0 || !hidden.is_multiple_of(heads) || !heads.is_multiple_of(kv) {
        return Err(ReferenceError::Checkpoint {
            dir: dir.to_path_buf(),
            message: format!(
                "inconsistent head configuration: hidden {hidden} heads {heads} kv heads {kv}"
            ),
        });
    }
    Ok(())
}

impl NativeQwen2 {
    /// Loads a Qwen2 checkpoint (`config.json` as `qwen2::Config`, weights,
    /// `tokenizer.json`) from `dir` onto `device`, in f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ReferenceError> {
        let config: qwen2::Config = read_json(&dir.join("config.json"))?;
        check_heads(
            dir,
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
        )?;
        let files = weight_files(dir)?;
        // SAFETY: read-only mapping of checkpoint files that must not be modified while
        // the model is alive (candle copies the tensors it needs on load).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device)? };
        let model = qwen2::ModelForCausalLM::new(&config, vb)?;
        Self::with_model(
            dir,
            model,
            config.vocab_size,
            config.max_position_embeddings,
            device,
        )
    }
}

impl NativeMistral {
    /// Loads a Mistral checkpoint (`config.json` as `mistral::Config`, weights,
    /// `tokenizer.json`) from `dir` onto `device`, in f32, without flash attention.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ReferenceError> {
        let mut config: mistral::Config = read_json(&dir.join("config.json"))?;
        config.use_flash_attn = false;
        check_heads(
            dir,
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
        )?;
        let files = weight_files(dir)?;
        // SAFETY: as in `NativeQwen2::load`.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device)? };
        let model = mistral::Model::new(&config, vb)?;
        Self::with_model(
            dir,
            model,
            config.vocab_size,
            config.max_position_embeddings,
            device,
        )
    }
}

impl<M: CachedDecoder> NativeCausalLm<M> {
    fn with_model(
        dir: &Path,
        model: M,
        vocab_size: usize,
        max_position_embeddings: usize,
        device: &Device,
    ) -> Result<Self, ReferenceError> {
        Ok(Self {
            model: Mutex::new(model),
            vocab_size,
            max_position_embeddings,
            tokenizer: load_tokenizer(&dir.join("tokenizer.json"))?,
            device: device.clone(),
        })
    }

    /// Vocabulary size of the model (length of each logits vector).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The checkpoint's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes `text` with special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ReferenceError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ReferenceError::Tokenizer(format!("encoding: {e}")))
    }

    /// Detokenizes `ids`, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ReferenceError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ReferenceError::Tokenizer(format!("decoding: {e}")))
    }

    fn model(&self) -> std::sync::MutexGuard<'_, M> {
        // A panic inside candle while the lock was held leaves only a KV cache
        // behind, which every entry point clears first.
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Greedy generation of exactly `steps` tokens, driven as [`NativeLlama`]'s
    /// (fresh KV cache, the whole prompt at offset 0, then one token at a time);
    /// returns the tokens and every step's last-position logits.
    pub fn generate_greedy(
        &self,
        prompt_ids: &[u32],
        steps: usize,
    ) -> Result<(Vec<u32>, Vec<Vec<f32>>), ReferenceError> {
        if steps == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        self.check_prompt(prompt_ids, steps)?;
        let mut model = self.model();
        model.clear();
        let mut sampler = LogitsProcessor::from_sampling(0, Sampling::ArgMax);
        let mut tokens = prompt_ids.to_vec();
        let mut generated = Vec::with_capacity(steps);
        let mut all_logits = Vec::with_capacity(steps);
        let mut index_pos = 0;
        let result = (|| {
            for step in 0..steps {
                let context_size = if step > 0 { 1 } else { tokens.len() };
                let ctxt = &tokens[tokens.len() - context_size..];
                let input = Tensor::new(ctxt, &self.device)?.unsqueeze(0)?;
                let logits = model.step(&input, index_pos)?;
                index_pos += ctxt.len();
                let next = sampler.sample(&logits)?;
                all_logits.push(logits.to_vec1::<f32>()?);
                generated.push(next);
                tokens.push(next);
            }
            Ok::<_, ReferenceError>(())
        })();
        model.clear();
        result?;
        Ok((generated, all_logits))
    }

    /// Last-position logits for the whole sequence `ids` in one forward pass from an
    /// empty cache.
    pub fn logits_no_cache(&self, ids: &[u32]) -> Result<Vec<f32>, ReferenceError> {
        self.check_prompt(ids, 1)?;
        let mut model = self.model();
        model.clear();
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let logits = model.step(&input, 0);
        model.clear();
        Ok(logits?.to_vec1::<f32>()?)
    }

    fn check_prompt(&self, ids: &[u32], steps: usize) -> Result<(), ReferenceError> {
        if ids.is_empty() {
            return Err(ReferenceError::InvalidInput("empty prompt".to_string()));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(ReferenceError::InvalidInput(format!(
                "token id {bad} outside vocabulary of {}",
                self.vocab_size
            )));
        }
        let needed = ids.len() + steps - 1;
        if needed > self.max_position_embeddings {
            return Err(ReferenceError::InvalidInput(format!(
                "prompt of {} tokens + {steps} steps needs {needed} positions, model has {}",
                ids.len(),
                self.max_position_embeddings
            )));
        }
        Ok(())
    }
}

/// Upstream candle-transformers BERT encoder with its tokenizer, used as a sentence
/// embedder (e.g. all-MiniLM-L6-v2).
pub struct NativeBert {
    model: BertModel,
    config: BertConfig,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for NativeBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeBert")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl NativeBert {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`
    /// (f32). Tensor names may carry a `bert.` prefix or none (sentence-transformers
    /// checkpoints); upstream `BertModel::load` handles both. The tokenizer's padding is
    /// disabled (one sentence at a time needs none); its truncation is kept as saved.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ReferenceError> {
        let config: BertConfig = read_json(&dir.join("config.json"))?;
        let files = weight_files(dir)?;
        // SAFETY: read-only mapping of checkpoint files that must not be modified while
        // loading (candle copies the tensors it needs).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device)? };
        let model = BertModel::load(vb, &config)?;
        let mut tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        tokenizer.with_padding(None);
        Ok(Self {
            model,
            config,
            tokenizer,
            device: device.clone(),
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Embedding width (`hidden_size`).
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// Token ids of `text` with special tokens (`[CLS] ... [SEP]`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ReferenceError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ReferenceError::Tokenizer(format!("encoding: {e}")))
    }

    /// Sentence embedding of `text`: one forward pass (token types all zero,
    /// attention mask from the tokenizer — all ones without padding), mean pooling over
    /// the tokens, L2 normalisation.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, ReferenceError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ReferenceError::Tokenizer(format!("encoding: {e}")))?;
        let ids = enc.get_ids();
        if ids.is_empty() {
            return Err(ReferenceError::InvalidInput(
                "text produced no tokens".to_string(),
            ));
        }
        if ids.len() > self.config.max_position_embeddings {
            return Err(ReferenceError::InvalidInput(format!(
                "{} tokens exceed max_position_embeddings {}",
                ids.len(),
                self.config.max_position_embeddings
            )));
        }
        let input_ids = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let token_type_ids = input_ids.zeros_like()?;
        let mask = Tensor::new(enc.get_attention_mask(), &self.device)?.unsqueeze(0)?;
        let hidden = self
            .model
            .forward(&input_ids, &token_type_ids, Some(&mask))?; // (1, seq, hidden)
        let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (1, seq, 1)
        let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?; // (1, hidden)
        let count = mask_f.sum(1)?; // (1, 1)
        let mean = summed.broadcast_div(&count)?;
        let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let normed = mean.broadcast_div(&norm)?;
        Ok(normed.squeeze(0)?.to_vec1::<f32>()?)
    }
}

/// Cosine similarity of two vectors (0.0 if either is all zeros; compares the common
/// prefix if the lengths differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fixture::{write_llama_fixture, LlamaFixtureSpec};

    fn tiny_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write_llama_fixture(&LlamaFixtureSpec::tiny(), dir.path()).expect("write fixture");
        dir
    }

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 2.0], &[-1.0, -2.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn llama_greedy_on_tiny_fixture() {
        let dir = tiny_fixture();
        let spec = LlamaFixtureSpec::tiny();
        let dev = Device::Cpu;
        let a = NativeLlama::load(dir.path(), &dev).expect("load");
        let prompt = a.encode("the cat sat on the mat").expect("encode");
        assert_eq!(prompt.len(), 7);
        assert_eq!(prompt[0], 1, "template adds <s>");

        let (tokens, logits) = a.generate_greedy(&prompt, 16).expect("generate");
        assert_eq!(tokens.len(), 16);
        assert_eq!(logits.len(), 16);
        for (step, (tok, l)) in tokens.iter().zip(&logits).enumerate() {
            assert_eq!(l.len(), spec.vocab_size, "step {step}");
            assert!(
                l.iter().all(|v| v.is_finite()),
                "non-finite logits at step {step}"
            );
            let argmax = l
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map(|(i, _)| i as u32)
                .expect("non-empty");
            assert_eq!(*tok, argmax, "step {step}");
        }
        // The fixture yields varied text, not one token repeated.
        let mut distinct = tokens.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 8, "degenerate generation {tokens:?}");
        // Logits are not degenerate (the random model has real preferences).
        let l0 = &logits[0];
        let mean = l0.iter().sum::<f32>() / l0.len() as f32;
        let std = (l0.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / l0.len() as f32).sqrt();
        assert!(std > 0.1, "logit std {std}");

        // Deterministic across loads.
        let b = NativeLlama::load(dir.path(), &dev).expect("load again");
        let (tokens_b, logits_b) = b.generate_greedy(&prompt, 16).expect("generate again");
        assert_eq!(tokens, tokens_b);
        assert_eq!(logits, logits_b);

        // The KV-cache path agrees with recomputing the whole sequence.
        let mut seq = prompt.clone();
        for (step, tok) in tokens.iter().enumerate().take(8) {
            let full = a.logits_no_cache(&seq).expect("no-cache logits");
            let max_diff = full
                .iter()
                .zip(&logits[step])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                max_diff < 1e-3,
                "step {step}: cache vs full max diff {max_diff}"
            );
            seq.push(*tok);
        }

        let text = a.decode(&tokens).expect("decode");
        assert!(!text.is_empty());
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn qwen2_and_mistral_load_and_generate() {
        let dev = Device::Cpu;
        let qdir = tempfile::tempdir().expect("tempdir");
        write_llama_fixture(&LlamaFixtureSpec::qwen2_tiny(), qdir.path()).expect("qwen2");
        let mdir = tempfile::tempdir().expect("tempdir");
        let mspec = LlamaFixtureSpec::mistral_tiny();
        write_llama_fixture(&mspec, mdir.path()).expect("mistral");
        let window = mspec.sliding_window.expect("window");

        let q = NativeQwen2::load(qdir.path(), &dev).expect("load qwen2");
        let prompt = q
            .encode("the quick brown fox jumps over the lazy dog")
            .expect("encode");
        assert!(prompt.len() > window + 1);
        let (tokens, logits) = q.generate_greedy(&prompt, 8).expect("generate");
        let mut distinct = tokens.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 4, "degenerate generation {tokens:?}");
        assert_eq!(
            (tokens.clone(), logits.clone()),
            q.generate_greedy(&prompt, 8).expect("again"),
            "the internal KV cache is cleared between calls"
        );
        // qwen2: cached decoding agrees with recomputing the whole sequence.
        let mut seq = prompt.clone();
        seq.extend(&tokens[..4]);
        let full = q.logits_no_cache(&seq).expect("no cache");
        assert!(max_diff(&full, &logits[4]) < 1e-4);

        let m = NativeMistral::load(mdir.path(), &dev).expect("load mistral");
        let (tokens, logits) = m.generate_greedy(&prompt, 8).expect("generate");
        // The window shapes the prompt's forward pass: step 0 equals one pass.
        let first = m.logits_no_cache(&prompt).expect("no cache");
        assert_eq!(first, logits[0]);
        // candle's mistral windows only multi-token forwards: a cached decode step
        // attends to every earlier key, a full recompute windows the last query
        // too, so the two differ once the sequence outgrows the window.
        let mut seq = prompt.clone();
        seq.extend(&tokens[..4]);
        let full = m.logits_no_cache(&seq).expect("no cache");
        assert!(
            max_diff(&full, &logits[4]) > 1e-3,
            "candle's single-token steps are not windowed"
        );
    }

    #[test]
    fn llama_rejects_bad_input_and_bad_checkpoints() {
        let dir = tiny_fixture();
        let dev = Device::Cpu;
        let m = NativeLlama::load(dir.path(), &dev).expect("load");
        assert!(matches!(
            m.generate_greedy(&[], 4),
            Err(ReferenceError::InvalidInput(_))
        ));
        assert!(matches!(
            m.generate_greedy(&[1, 100_000], 4),
            Err(ReferenceError::InvalidInput(_))
        ));
        assert!(matches!(
            m.generate_greedy(&[1; 250], 8),
            Err(ReferenceError::InvalidInput(_))
        ));
        assert!(m.generate_greedy(&[1; 250], 7).is_ok());

        // Drop one layer tensor: typed error, no panic inside upstream Llama::load.
        let weights = dir.path().join("model.safetensors");
        let bytes = fs::read(&weights).expect("read");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
        let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != "model.layers.1.mlp.up_proj.weight")
            .collect();
        let rewritten = safetensors::serialize(kept, None).expect("serialize");
        drop(st);
        fs::write(&weights, rewritten).expect("write");
        match NativeLlama::load(dir.path(), &dev) {
            Err(ReferenceError::Checkpoint { message, .. }) => {
                assert!(message.contains("up_proj"), "{message}")
            }
            other => panic!("expected checkpoint error, got {other:?}"),
        }

        let empty = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            NativeLlama::load(empty.path(), &dev),
            Err(ReferenceError::Io { .. })
        ));
    }
}
