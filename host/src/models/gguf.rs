//! GGUF model files (what llama.cpp and Ollama serve): the file is
//! memory-mapped once; each tensor is read from the map into candle's
//! quantized storage on first use (the block bytes as the file stores
//! them, never dequantized unless a plugin asks for a plain tensor); the
//! metadata becomes the JSON a plugin reads in place of `config.json`, and
//! the tokenizer can be rebuilt from `tokenizer.ggml.*` when no
//! `tokenizer.json` ships beside the file.

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Arrays longer than this are left out of [`GgufFile::metadata_json`]
/// (the tokenizer's vocabulary, merges and scores).
pub const MAX_JSON_ARRAY: usize = 1024;

/// One mapped GGUF file and its parsed header.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    content: Content,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and parses its header (metadata and tensor table).
    pub fn open(path: &Path) -> Result<GgufFile, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        // SAFETY: mapped read-only; the provider owns the model file and must
        // not truncate it while the node runs (as with the safetensors maps).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
        let content = Content::read(&mut std::io::Cursor::new(&map[..]))
            .map_err(|e| format!("not a readable GGUF file: {e}"))?;
        Ok(GgufFile {
            path: path.to_owned(),
            map,
            content,
        })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        names.sort();
        names
    }

    /// The named tensor as stored (quantized blocks or plain floats), on
    /// `device`.
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor, String> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| format!("no tensor named `{name}`"))?;
        info.read(
            &mut std::io::Cursor::new(&self.map[..]),
            self.content.tensor_data_offset,
            device,
        )
        .map_err(|e| format!("tensor `{name}` in {}: {e}", self.path.display()))
    }

    /// The metadata as one JSON object (keys as the file spells them;
    /// arrays longer than [`MAX_JSON_ARRAY`] left out), what a plugin reads
    /// in place of `config.json`.
    pub fn metadata_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .content
            .metadata
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), json(v)?)))
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    /// The tokenizer `tokenizer.ggml.*` describes: llama.cpp's byte-level
    /// BPE (`tokenizer.ggml.model = gpt2`) split as GPT-2, SmolLM, Llama 3
    /// (`llama-bpe`) or Qwen2 split (candle builds the vocabulary, merges
    /// and special tokens). Anything else is refused by
    /// name, with the way out (a `tokenizer.json` beside the file).
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, String> {
        use candle_core::quantized::tokenizer::TokenizerFromGguf;
        let md = &self.content.metadata;
        let advice = "put the model's tokenizer.json beside the .gguf file";
        let model = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| format!("the GGUF file has no tokenizer metadata; {advice}"))?;
        if model != "gpt2" {
            return Err(format!(
                "GGUF tokenizer model `{model}` cannot be rebuilt here (only byte-level BPE, `gpt2`); {advice}"
            ));
        }
        // llama.cpp's pre-tokenizer names: candle rebuilds Llama 3's and
        // Qwen2's as llama.cpp splits; its GPT-2 one adds a prefix space
        // llama.cpp does not, so GPT-2's and SmolLM's splits are set here.
        use tokenizers::pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence};
        use tokenizers::PreTokenizerWrapper;
        let gpt2: PreTokenizerWrapper = ByteLevel::new(false, true, true).into();
        let pre = md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok());
        let (candle_pre, split) = match pre.map(String::as_str) {
            None | Some("default" | "gpt2") => ("gpt2", Some(gpt2)),
            Some("smollm") => (
                "gpt2",
                Some(sequence::Sequence::new(vec![Digits::new(true).into(), gpt2]).into()),
            ),
            Some("llama-bpe" | "llama3" | "smaug-bpe") => ("llama3", None),
            Some("qwen2") => ("qwen2", None),
            Some(other) => {
                return Err(format!(
                    "GGUF pre-tokenizer `{other}` cannot be rebuilt here (known: gpt2, smollm, llama-bpe, qwen2); {advice}"
                ))
            }
        };
        let mut metadata = md.clone();
        metadata.insert(
            "tokenizer.ggml.pre".into(),
            Value::String(candle_pre.into()),
        );
        let header = Content {
            magic: self.content.magic,
            metadata,
            tensor_infos: Default::default(),
            tensor_data_offset: 0,
        };
        let mut tok = tokenizers::Tokenizer::from_gguf(&header)
            .map_err(|e| format!("GGUF tokenizer metadata: {e}"))?;
        if let Some(split) = split {
            tok.with_pre_tokenizer(Some(split));
        }
        tok.with_padding(None);
        Ok(tok)
    }
}

/// A metadata value as JSON; `None` for arrays past [`MAX_JSON_ARRAY`] and
/// floats that JSON cannot hold.
fn json(v: &Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        Value::U8(x) => J::from(*x),
        Value::I8(x) => J::from(*x),
        Value::U16(x) => J::from(*x),
        Value::I16(x) => J::from(*x),
        Value::U32(x) => J::from(*x),
        Value::I32(x) => J::from(*x),
        Value::U64(x) => J::from(*x),
        Value::I64(x) => J::from(*x),
        Value::F32(x) => J::Number(serde_json::Number::from_f64(f64::from(*x))?),
        Value::F64(x) => J::Number(serde_json::Number::from_f64(*x)?),
        Value::Bool(x) => J::Bool(*x),
        Value::String(s) => J::String(s.clone()),
        Value::Array(xs) if xs.len() <= MAX_JSON_ARRAY => {
            J::Array(xs.iter().map(json).collect::<Option<Vec<_>>>()?)
        }
        Value::Array(_) => return None,
    })
}
