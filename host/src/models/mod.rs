//! Model files resolved from config: memory-mapped safetensors (with
//! config.json) or one GGUF file ([`gguf`]), tokenizer.json, shared by
//! every store that is granted the model.
//! Weights are loaded onto the compute device once per model and handed to
//! plugins as tensor handles; they never pass through guest memory. The
//! `models` interface is implemented on top of this in `worlds`; nothing
//! here knows WIT or wasmtime.

pub mod files;
pub mod fixture;
pub mod fixture_gguf;
pub mod gguf;
pub mod reference;
pub mod span;

use candle_core::quantized::QTensor;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Why a model directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A required file is missing or unreadable.
    #[error("model `{id}`: cannot read {path}: {reason}")]
    File {
        /// Model id.
        id: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No `*.safetensors` and no `*.gguf` in the directory.
    #[error("model `{id}`: no .safetensors files and no .gguf file in {}", .dir.display())]
    NoWeights {
        /// Model id.
        id: String,
        /// The directory.
        dir: PathBuf,
    },
}

/// How a model's weights are stored.
enum Store {
    /// `*.safetensors` shards with a `config.json`.
    Safetensors(MmapedSafetensors),
    /// One GGUF file (quantized or not).
    Gguf(gguf::GgufFile),
}

/// One model: its files, mapped once, shared by all stores.
pub struct ModelEntry {
    id: String,
    dir: PathBuf,
    config_json: String,
    store: Store,
    names: Vec<String>,
    files: Vec<PathBuf>,
    texts: files::ModelFiles,
    weights_hash: OnceLock<String>,
    tokenizer: OnceLock<Result<Arc<tokenizers::Tokenizer>, String>>,
    untruncated: OnceLock<Result<Arc<tokenizers::Tokenizer>, String>>,
    loaded: Mutex<HashMap<String, Tensor>>,
    quantized: Mutex<HashMap<String, Arc<QTensor>>>,
    device: Device,
}

impl std::fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEntry")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish()
    }
}

impl ModelEntry {
    /// Maps a model: a HF directory (`config.json`, `tokenizer.json`,
    /// `*.safetensors`), a directory holding one `*.gguf` file (and
    /// optionally `tokenizer.json`), or a `.gguf` file. A GGUF model's
    /// config is its metadata ([`gguf::GgufFile::metadata_json`]).
    pub fn open(id: &str, path: &Path, device: &Device) -> Result<Arc<ModelEntry>, ModelError> {
        let file_err = |path: &Path, reason: String| ModelError::File {
            id: id.into(),
            path: path.to_owned(),
            reason,
        };
        let (dir, listing) = if path.extension().is_some_and(|x| x == "gguf") && path.is_file() {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            (dir, vec![path.to_owned()])
        } else {
            let mut listing: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| file_err(path, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            listing.sort();
            (path.to_owned(), listing)
        };
        let with_ext = |ext: &str| -> Vec<PathBuf> {
            let of_ext = |p: &&PathBuf| p.extension().is_some_and(|x| x == ext);
            listing.iter().filter(of_ext).cloned().collect()
        };
        let (shards, ggufs) = (with_ext("safetensors"), with_ext("gguf"));
        let config_path = dir.join("config.json");
        let (store, files, config_json) = if !shards.is_empty() {
            let config_json = std::fs::read_to_string(&config_path)
                .map_err(|e| file_err(&config_path, e.to_string()))?;
            // SAFETY: the files are mapped read-only; the provider owns the model
            // directory and must not truncate it while the node runs (as with any mmap).
            let safetensors = unsafe { MmapedSafetensors::multi(&shards) }
                .map_err(|e| file_err(&shards[0], e.to_string()))?;
            (Store::Safetensors(safetensors), shards, config_json)
        } else if let [one] = &ggufs[..] {
            let file = gguf::GgufFile::open(one).map_err(|e| file_err(one, e))?;
            let config_json = file.metadata_json();
            (Store::Gguf(file), ggufs.clone(), config_json)
        } else if ggufs.len() > 1 {
            return Err(file_err(
                &dir,
                format!(
                    "{} .gguf files; set the model's path to the one to serve",
                    ggufs.len()
                ),
            ));
        } else {
            return Err(ModelError::NoWeights {
                id: id.into(),
                dir: dir.clone(),
            });
        };
        let mut names = match &store {
            Store::Safetensors(st) => st.tensors().into_iter().map(|(n, _)| n).collect(),
            Store::Gguf(g) => g.names(),
        };
        names.sort();
        let texts = files::read(&dir).map_err(|e| file_err(&dir, e.to_string()))?;
        Ok(Arc::new(ModelEntry {
            id: id.into(),
            dir,
            config_json,
            store,
            names,
            files,
            texts,
            weights_hash: OnceLock::new(),
            tokenizer: OnceLock::new(),
            untruncated: OnceLock::new(),
            loaded: Mutex::new(HashMap::new()),
            quantized: Mutex::new(HashMap::new()),
            device: device.clone(),
        }))
    }

    /// `safetensors` or `gguf`.
    pub fn format(&self) -> &'static str {
        match self.store {
            Store::Safetensors(_) => "safetensors",
            Store::Gguf(_) => "gguf",
        }
    }

    /// The model id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json` text.
    pub fn config_json(&self) -> &str {
        &self.config_json
    }

    /// The small text files shipped beside the weights, as read at open
    /// (see [`files`]).
    pub fn files(&self) -> &files::ModelFiles {
        &self.texts
    }

    /// Hex sha256 of every file that decides what the model computes:
    /// `config.json` and `tokenizer.json` (when present) and the weights
    /// files (safetensors in name order, or the GGUF file), each as its name, length and bytes, then the
    /// small text files plugins may read ([`Self::files`]) as path, length
    /// and text. Computed
    /// once (a streaming read of the weights) and then shared: a signed
    /// result names it, and a trace's weight digests are derived from it.
    pub fn weights_hash(&self) -> &str {
        self.weights_hash.get_or_init(|| {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            let mut paths: Vec<PathBuf> = ["config.json", "tokenizer.json"]
                .iter()
                .map(|f| self.dir.join(f))
                .filter(|p| p.exists())
                .collect();
            paths.extend(self.files.iter().cloned());
            for path in paths {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let name = name.unwrap_or_default();
                h.update((name.len() as u64).to_le_bytes());
                h.update(name.as_bytes());
                // A file that cannot be read makes a hash no honest peer
                // shares: the job's result is then refused by comparison.
                match std::fs::File::open(&path) {
                    Ok(mut f) => {
                        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                        h.update(len.to_le_bytes());
                        let _ = std::io::copy(&mut f, &mut h);
                    }
                    Err(e) => h.update(format!("unreadable: {e}").as_bytes()),
                }
            }
            for (path, text) in &self.texts {
                h.update((path.len() as u64).to_le_bytes());
                h.update(path.as_bytes());
                h.update((text.len() as u64).to_le_bytes());
                h.update(text.as_bytes());
            }
            hex::encode(h.finalize())
        })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The named weight on the device, loaded once and then shared.
    pub fn tensor(&self, name: &str) -> Result<Tensor, String> {
        cached(&self.loaded, name, || {
            if self
                .names
                .binary_search_by(|n| n.as_str().cmp(name))
                .is_err()
            {
                return Err(format!("model `{}` has no tensor named `{name}`", self.id));
            }
            match &self.store {
                Store::Safetensors(st) => st.load(name, &self.device).map_err(|e| e.to_string()),
                Store::Gguf(_) => self
                    .qtensor(name)?
                    .dequantize(&self.device)
                    .map_err(|e| format!("model `{}`: dequantizing `{name}`: {e}", self.id)),
            }
        })
    }

    /// The named tensor of a GGUF model as the file stores it, read from
    /// the map once and then shared.
    pub fn qtensor(&self, name: &str) -> Result<Arc<QTensor>, String> {
        let Store::Gguf(file) = &self.store else {
            return Err(format!(
                "model `{}` is stored as safetensors, not GGUF: its weights are plain tensors (use `get`)",
                self.id
            ));
        };
        cached(&self.quantized, name, || {
            file.qtensor(name, &self.device)
                .map(Arc::new)
                .map_err(|e| format!("model `{}`: {e}", self.id))
        })
    }

    /// The tokenizer, parsed on first use: `tokenizer.json`, or for a
    /// GGUF model without one the tokenizer of its metadata.
    pub fn tokenizer(&self) -> Result<Arc<tokenizers::Tokenizer>, String> {
        self.tokenizer
            .get_or_init(|| {
                let path = self.dir.join("tokenizer.json");
                if let (Store::Gguf(file), false) = (&self.store, path.exists()) {
                    return file
                        .tokenizer()
                        .map(Arc::new)
                        .map_err(|e| format!("model `{}`: {e}", self.id));
                }
                tokenizers::Tokenizer::from_file(&path)
                    .map(|mut t| {
                        // Plugins get exact ids: padding is theirs to do (with a mask).
                        t.with_padding(None);
                        Arc::new(t)
                    })
                    .map_err(|e| {
                        format!("model `{}`: cannot load {}: {e}", self.id, path.display())
                    })
            })
            .clone()
    }

    /// The tokenizer without tokenizer.json's truncation (the same one
    /// when it sets none), for [`TokenizerRes::encode_truncated`].
    pub fn untruncated_tokenizer(&self) -> Result<Arc<tokenizers::Tokenizer>, String> {
        self.untruncated
            .get_or_init(|| {
                let saved = self.tokenizer()?;
                if saved.get_truncation().is_none() {
                    return Ok(saved);
                }
                let mut t = (*saved).clone();
                t.with_truncation(None)
                    .map_err(|e| format!("model `{}`: tokenizer: {e}", self.id))?;
                Ok(Arc::new(t))
            })
            .clone()
    }

    /// Tokens in `text` as this model counts them: its tokenizer (special
    /// tokens included, as a backend encodes a prompt), or whitespace-
    /// separated words for a model without `tokenizer.json`.
    pub fn count_tokens(&self, text: &str) -> usize {
        count_tokens(Some(self), text)
    }
}

/// `cache[name]`, made by `load` the first time and then shared.
fn cached<T: Clone>(
    cache: &Mutex<HashMap<String, T>>,
    name: &str,
    load: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let mut map = cache
        .lock()
        .map_err(|_| "model cache poisoned".to_string())?;
    if let Some(v) = map.get(name) {
        return Ok(v.clone());
    }
    let v = load()?;
    map.insert(name.to_owned(), v.clone());
    Ok(v)
}

/// [`ModelEntry::count_tokens`], or words when there is no model.
pub fn count_tokens(entry: Option<&ModelEntry>, text: &str) -> usize {
    entry
        .and_then(|e| e.tokenizer().ok())
        .and_then(|tok| tok.encode(text, true).ok())
        .map(|enc| enc.get_ids().len())
        .unwrap_or_else(|| text.split_whitespace().count())
}

/// The models one plugin may open, by id (its model capability).
#[derive(Debug, Clone, Default)]
pub struct ModelGrants {
    granted: Arc<BTreeMap<String, Arc<ModelEntry>>>,
}

impl ModelGrants {
    /// Grants exactly `entries`.
    pub fn new(entries: impl IntoIterator<Item = Arc<ModelEntry>>) -> Self {
        ModelGrants {
            granted: Arc::new(entries.into_iter().map(|e| (e.id.clone(), e)).collect()),
        }
    }

    /// Granted ids.
    pub fn ids(&self) -> Vec<String> {
        self.granted.keys().cloned().collect()
    }

    /// The entry for `id`, if granted.
    pub fn get(&self, id: &str) -> Option<&Arc<ModelEntry>> {
        self.granted.get(id)
    }

    /// The entry for `id`, or an error for `plugin` that names what it may
    /// open and how a provider grants more.
    pub fn open(&self, plugin: &str, id: &str) -> Result<Arc<ModelEntry>, String> {
        match self.get(id) {
            Some(entry) => Ok(entry.clone()),
            None => {
                tracing::warn!(plugin, model = %id, "plugin asked for a model it was not granted");
                Err(format!(
                    "model `{id}` is not granted to plugin `{plugin}` (granted: {:?}); add it under [[backend.models]] in the node config",
                    self.ids()
                ))
            }
        }
    }
}

/// An opened model, as a plugin resource.
pub struct WeightsRes(pub Arc<ModelEntry>);

/// A tokenizer, as a plugin resource: the model's tokenizer as saved, and
/// the model (for the untruncated one, built on first use).
pub struct TokenizerRes {
    saved: Arc<tokenizers::Tokenizer>,
    entry: Arc<ModelEntry>,
}

impl TokenizerRes {
    /// The tokenizer of `entry`.
    pub fn of(entry: Arc<ModelEntry>) -> Result<Self, String> {
        Ok(TokenizerRes {
            saved: entry.tokenizer()?,
            entry,
        })
    }

    /// Token ids of `text`, at most `max_length` of them special tokens
    /// included, whatever truncation tokenizer.json sets: as a Hugging Face
    /// tokenizer called with `truncation=True, max_length=...` (longest
    /// first, on tokenizer.json's side, right by default). Never padded.
    pub fn encode_truncated(
        &self,
        text: String,
        add_special: bool,
        max_length: u32,
    ) -> Result<Vec<u32>, String> {
        use tokenizers::PostProcessor;
        let tok = self.entry.untruncated_tokenizer()?;
        let specials = match (add_special, tok.get_post_processor()) {
            (true, Some(p)) => p.added_tokens(false),
            _ => 0,
        };
        let room = (max_length as usize)
            .checked_sub(specials)
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                format!("max-length {max_length} leaves no room for text: the tokenizer adds {specials} special tokens")
            })?;
        let direction = self
            .saved
            .get_truncation()
            .map(|t| t.direction)
            .unwrap_or_default();
        // The pipeline of a truncating encode: the text's tokens, cut to
        // leave room for the special tokens, then the special tokens.
        let mut enc = tok
            .encode(text, false)
            .map_err(|e| format!("tokenize: {e}"))?;
        enc.truncate(room, 0, direction);
        if add_special {
            enc = tok
                .post_process(enc, None, true)
                .map_err(|e| format!("tokenize: {e}"))?;
        }
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` (never padded: padding is the plugin's business).
    pub fn encode(&self, text: String, add_special: bool) -> Result<Vec<u32>, String> {
        self.saved
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("tokenize: {e}"))
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, String> {
        self.saved
            .decode(ids, skip_special)
            .map_err(|e| format!("detokenize: {e}"))
    }

    /// The id of one token, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.saved.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> u32 {
        self.saved.get_vocab_size(true) as u32
    }
}
