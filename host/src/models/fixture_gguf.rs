//! Deterministic GGUF llama files, as llama.cpp's converter lays them out:
//! the random weights of a [`LlamaFixtureSpec`] (the same values its
//! safetensors fixture holds), renamed to GGUF's `blk.N.*` names,
//! quantized by candle to the block formats real files carry, with the
//! `llama.*` metadata `quantized_llama` and llama.cpp read. The tokenizer
//! either ships beside the file (`tokenizer.json`, the WordLevel fixture
//! one) or lives in the metadata (`tokenizer.ggml.*`): a byte-level BPE
//! trained here on a fixed corpus, split as SmolLM's is (digits one by one,
//! then GPT-2's regex), written as llama.cpp writes it (`pre = smollm`).

use super::fixture::{build_tokenizer, FixtureError, LlamaFixtureSpec, TOKENIZER_FILE};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Block formats of a generated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    /// Every matrix q8_0.
    Q8_0,
    /// Every matrix q4_0.
    Q4_0,
    /// What llama.cpp's `Q4_K_M` mixes: q6_k for `output`, `attn_v` and
    /// `ffn_down`, q4_k for the other matrices; rows that are not multiples
    /// of 256 fall back as llama.cpp's do (q5_0, q8_0).
    Q4KM,
}

impl GgufQuant {
    /// The format of a matrix `gguf_name` with rows of `cols` values: a
    /// k-quant needs multiples of 256, else llama.cpp's fallback (q4_k to
    /// q5_0, q6_k to q8_0), as its quantizer does for SmolLM's 576.
    fn format(self, gguf_name: &str, cols: usize) -> GgmlDType {
        match self.k_format(gguf_name) {
            GgmlDType::Q4K if !cols.is_multiple_of(256) => GgmlDType::Q5_0,
            GgmlDType::Q6K if !cols.is_multiple_of(256) => GgmlDType::Q8_0,
            f => f,
        }
    }

    fn k_format(self, gguf_name: &str) -> GgmlDType {
        match self {
            GgufQuant::Q8_0 => GgmlDType::Q8_0,
            GgufQuant::Q4_0 => GgmlDType::Q4_0,
            GgufQuant::Q4KM
                if gguf_name == "output.weight"
                    || gguf_name.ends_with(".attn_v.weight")
                    || gguf_name.ends_with(".ffn_down.weight") =>
            {
                GgmlDType::Q6K
            }
            GgufQuant::Q4KM => GgmlDType::Q4K,
        }
    }

    /// llama.cpp's `general.file_type` for the mix.
    fn file_type(self) -> u32 {
        match self {
            GgufQuant::Q8_0 => 7,
            GgufQuant::Q4_0 => 2,
            GgufQuant::Q4KM => 15,
        }
    }
}

/// Where a generated file's tokenizer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufTokenizer {
    /// The WordLevel fixture `tokenizer.json` beside the file.
    Beside,
    /// Byte-level BPE in `tokenizer.ggml.*`; when `reference` is given, the
    /// same tokenizer is saved there as a `tokenizer.json` (outside the
    /// model directory), what a test compares the host's rebuilt one with.
    Metadata {
        /// Where to save the reference `tokenizer.json`.
        reference: Option<PathBuf>,
    },
}

/// The GGUF name of a Hugging Face llama tensor name.
pub fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let Some(rest) = hf.strip_prefix("model.layers.") else {
        return hf.into();
    };
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => other,
    };
    format!("blk.{layer}.{part}")
}

fn candle_err(stage: &'static str) -> impl Fn(candle_core::Error) -> FixtureError {
    move |e| FixtureError::Tokenizer {
        stage,
        message: e.to_string(),
    }
}

/// Writes `dir/model.gguf` for `spec` (llama only) in `quant`, with its
/// tokenizer as `tokenizer` says; returns the file's path.
pub fn write_gguf_llama(
    spec: &LlamaFixtureSpec,
    dir: &Path,
    quant: GgufQuant,
    tokenizer: &GgufTokenizer,
) -> Result<PathBuf, FixtureError> {
    spec.validate()?;
    std::fs::create_dir_all(dir).map_err(|source| FixtureError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let head_dim = spec.hidden_size / spec.num_heads;
    let u32_of = |n: usize| Value::U32(n as u32);
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "general.name".into(),
            Value::String("infernet-fixture".into()),
        ),
        ("general.file_type".into(), Value::U32(quant.file_type())),
        (
            "llama.context_length".into(),
            u32_of(spec.max_position_embeddings),
        ),
        ("llama.embedding_length".into(), u32_of(spec.hidden_size)),
        ("llama.block_count".into(), u32_of(spec.num_layers)),
        (
            "llama.feed_forward_length".into(),
            u32_of(spec.intermediate_size),
        ),
        ("llama.attention.head_count".into(), u32_of(spec.num_heads)),
        (
            "llama.attention.head_count_kv".into(),
            u32_of(spec.num_kv_heads),
        ),
        ("llama.rope.dimension_count".into(), u32_of(head_dim)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        (
            "llama.rope.freq_base".into(),
            Value::F32(spec.rope_theta as f32),
        ),
    ];
    match tokenizer {
        GgufTokenizer::Beside => {
            let tok = build_tokenizer(spec.vocab_size)?;
            tok.save(dir.join(TOKENIZER_FILE), false)
                .map_err(|e| FixtureError::Tokenizer {
                    stage: "save",
                    message: e.to_string(),
                })?;
        }
        GgufTokenizer::Metadata { reference } => {
            let tok = build_bpe_tokenizer(spec.vocab_size)?;
            if let Some(path) = reference {
                tok.save(path, false).map_err(|e| FixtureError::Tokenizer {
                    stage: "save",
                    message: e.to_string(),
                })?;
            }
            metadata.extend(bpe_metadata(&tok, spec.vocab_size)?);
        }
    }
    let mut tensors = Vec::new();
    for t in spec.tensors() {
        let name = gguf_name(&t.name);
        let values = Tensor::from_vec(t.values(spec.seed), t.shape.as_slice(), &Device::Cpu)
            .map_err(candle_err("tensor"))?;
        let q = match t.shape.len() {
            2 => QTensor::quantize(&values, quant.format(&name, t.shape[1])),
            _ => QTensor::quantize(&values, GgmlDType::F32),
        }
        .map_err(|e| FixtureError::InvalidSpec(format!("quantizing {name}: {e}")))?;
        tensors.push((name, q));
    }
    let path = dir.join("model.gguf");
    let mut file = std::fs::File::create(&path).map_err(|source| FixtureError::Io {
        path: path.clone(),
        source,
    })?;
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &md, &ts).map_err(candle_err("gguf write"))?;
    Ok(path)
}

/// The end-of-text token of [`build_bpe_tokenizer`].
pub const BPE_EOS: &str = "<|endoftext|>";

/// A byte-level BPE of at most `vocab_size` tokens, trained on a fixed
/// corpus, with SmolLM's pre-tokenizer (digits one by one, then GPT-2's
/// byte-level regex) and decoder: a tokenizer.json as SmolLM ships.
pub fn build_bpe_tokenizer(vocab_size: usize) -> Result<Tokenizer, FixtureError> {
    use tokenizers::models::bpe::{BpeTrainer, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::AddedToken;
    let err = |stage: &'static str| {
        move |e: tokenizers::Error| FixtureError::Tokenizer {
            stage,
            message: e.to_string(),
        }
    };
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(BPE_EOS, true)])
        .build()
        .into();
    tok.train(&mut trainer, corpus().into_iter())
        .map_err(err("train"))?;
    Ok(tok)
}

/// The training text: every pair of the fixture's words in a few
/// spellings, numbers, punctuation and some non-ASCII text.
fn corpus() -> Vec<String> {
    let words = super::fixture::fixture_vocab(200);
    let words: Vec<&String> = words.iter().skip(14).collect();
    let mut lines = Vec::new();
    for (i, a) in words.iter().enumerate() {
        for b in words.iter().skip(i % 7).step_by(11) {
            lines.push(format!(
                "{a} {b}, {b}{a}! The {a} costs {} (Ünïcode: café {b})",
                i * 37
            ));
        }
    }
    lines
}

/// `tokenizer.ggml.*` for a trained byte-level BPE: tokens in id order
/// (padded to the model's embedding `rows` with `<|pad_N|>` control tokens, as
/// llama.cpp wants one token per embedding row), merges, token types
/// (control for special tokens) and the end-of-text id.
fn bpe_metadata(tok: &Tokenizer, rows: usize) -> Result<Vec<(String, Value)>, FixtureError> {
    let bad = |message: String| FixtureError::Tokenizer {
        stage: "gguf metadata",
        message,
    };
    let vocab = tok.get_vocab(true);
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in &vocab {
        let slot = tokens
            .get_mut(*id as usize)
            .ok_or_else(|| bad(format!("token id {id} past the vocabulary")))?;
        *slot = t.clone();
    }
    let json: serde_json::Value =
        serde_json::from_str(&tok.to_string(false).map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    let merges: Vec<String> = json["model"]["merges"]
        .as_array()
        .ok_or_else(|| bad("no merges in the trained model".into()))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => {
                Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
            }
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a merge is neither \"a b\" nor [a, b]".into()))?;
    let eos = tok
        .token_to_id(BPE_EOS)
        .ok_or_else(|| bad("no end-of-text token".into()))?;
    let trained = tokens.len();
    if trained > rows {
        return Err(bad(format!("{trained} tokens for {rows} embedding rows")));
    }
    tokens.extend((trained..rows).map(|i| format!("<|pad_{i}|>")));
    let types = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| Value::I32(if t == BPE_EOS || i >= trained { 3 } else { 1 }))
        .collect();
    let strings = |xs: Vec<String>| Value::Array(xs.into_iter().map(Value::String).collect());
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(eos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ])
}
