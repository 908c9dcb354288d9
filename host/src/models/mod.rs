//! Model files resolved from config: memory-mapped safetensors, config.json
//! and tokenizer.json, shared by every store that is granted the model.
//! Weights are loaded onto the compute device once per model and handed to
//! plugins as tensor handles; they never pass through guest memory.

pub mod fixture;
pub mod reference;

use crate::kernels::TensorRes;
use crate::runtime::PluginState;
use crate::worlds::backend::bindings::infernet::plugin::models as wit;
use crate::worlds::backend::WitError;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::component::Resource;

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
    /// No `*.safetensors` in the directory.
    #[error("model `{id}`: no .safetensors files in {}", .dir.display())]
    NoWeights {
        /// Model id.
        id: String,
        /// The directory.
        dir: PathBuf,
    },
}

/// One model: its files, mapped once, shared by all stores.
pub struct ModelEntry {
    id: String,
    dir: PathBuf,
    config_json: String,
    safetensors: MmapedSafetensors,
    names: Vec<String>,
    tokenizer: OnceLock<Result<Arc<tokenizers::Tokenizer>, String>>,
    loaded: Mutex<HashMap<String, Tensor>>,
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
    /// Maps a HF model directory (`config.json`, `tokenizer.json`, `*.safetensors`).
    pub fn open(id: &str, dir: &Path, device: &Device) -> Result<Arc<ModelEntry>, ModelError> {
        let file_err = |path: PathBuf, reason: String| ModelError::File {
            id: id.into(),
            path,
            reason,
        };
        let config_path = dir.join("config.json");
        let config_json = std::fs::read_to_string(&config_path)
            .map_err(|e| file_err(config_path.clone(), e.to_string()))?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| file_err(dir.to_owned(), e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::NoWeights {
                id: id.into(),
                dir: dir.to_owned(),
            });
        }
        // SAFETY: the files are mapped read-only; the provider owns the model
        // directory and must not truncate it while the node runs (as with any mmap).
        let safetensors = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| file_err(files[0].clone(), e.to_string()))?;
        let mut names: Vec<String> = safetensors.tensors().into_iter().map(|(n, _)| n).collect();
        names.sort();
        Ok(Arc::new(ModelEntry {
            id: id.into(),
            dir: dir.to_owned(),
            config_json,
            safetensors,
            names,
            tokenizer: OnceLock::new(),
            loaded: Mutex::new(HashMap::new()),
            device: device.clone(),
        }))
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

    /// The named weight on the device, loaded once and then shared.
    pub fn tensor(&self, name: &str) -> Result<Tensor, String> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| "model cache poisoned".to_string())?;
        if let Some(t) = loaded.get(name) {
            return Ok(t.clone());
        }
        if self
            .names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_err()
        {
            return Err(format!("model `{}` has no tensor named `{name}`", self.id));
        }
        let t = self
            .safetensors
            .load(name, &self.device)
            .map_err(|e| e.to_string())?;
        loaded.insert(name.to_owned(), t.clone());
        Ok(t)
    }

    /// The tokenizer, parsed on first use.
    pub fn tokenizer(&self) -> Result<Arc<tokenizers::Tokenizer>, String> {
        self.tokenizer
            .get_or_init(|| {
                let path = self.dir.join("tokenizer.json");
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
}

/// An opened model, as a plugin resource.
pub struct WeightsRes(pub Arc<ModelEntry>);

/// A tokenizer, as a plugin resource.
pub struct TokenizerRes(pub Arc<tokenizers::Tokenizer>);

type Out<T> = wasmtime::Result<Result<T, WitError>>;

impl wit::Host for PluginState {
    fn open(&mut self, model_id: String) -> Out<Resource<WeightsRes>> {
        match self.models.get(&model_id) {
            Some(entry) => {
                let entry = entry.clone();
                Ok(Ok(self.table.push(WeightsRes(entry))?))
            }
            None => {
                tracing::warn!(plugin = %self.plugin, model = %model_id, "plugin asked for a model it was not granted");
                Ok(Err(WitError::Unsupported(format!(
                    "model `{model_id}` is not granted to plugin `{}` (granted: {:?}); add it under [[backend.models]] in the node config",
                    self.plugin,
                    self.models.ids()
                ))))
            }
        }
    }
}

impl wit::HostWeights for PluginState {
    fn id(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&w)?.0.id.clone())
    }

    fn config(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&w)?.0.config_json.clone())
    }

    fn names(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&w)?.0.names.clone())
    }

    fn get(&mut self, w: Resource<WeightsRes>, name: String) -> Out<Resource<TensorRes>> {
        let entry = self.table.get(&w)?.0.clone();
        match entry.tensor(&name) {
            Ok(t) => self.push(t, false),
            Err(e) => Ok(Err(WitError::InvalidInput(e))),
        }
    }

    fn tokenizer(&mut self, w: Resource<WeightsRes>) -> Out<Resource<TokenizerRes>> {
        let entry = self.table.get(&w)?.0.clone();
        match entry.tokenizer() {
            Ok(t) => Ok(Ok(self.table.push(TokenizerRes(t))?)),
            Err(e) => Ok(Err(WitError::Unsupported(e))),
        }
    }

    fn drop(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<()> {
        self.table.delete(w)?;
        Ok(())
    }
}

impl wit::HostTokenizer for PluginState {
    fn encode(
        &mut self,
        t: Resource<TokenizerRes>,
        text: String,
        add_special: bool,
    ) -> Out<Vec<u32>> {
        let tok = self.table.get(&t)?.0.clone();
        Ok(tok
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| WitError::InvalidInput(format!("tokenize: {e}"))))
    }

    fn decode(
        &mut self,
        t: Resource<TokenizerRes>,
        ids: Vec<u32>,
        skip_special: bool,
    ) -> Out<String> {
        let tok = self.table.get(&t)?.0.clone();
        Ok(tok
            .decode(&ids, skip_special)
            .map_err(|e| WitError::InvalidInput(format!("detokenize: {e}"))))
    }

    fn token_to_id(
        &mut self,
        t: Resource<TokenizerRes>,
        token: String,
    ) -> wasmtime::Result<Option<u32>> {
        Ok(self.table.get(&t)?.0.token_to_id(&token))
    }

    fn vocab_size(&mut self, t: Resource<TokenizerRes>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&t)?.0.get_vocab_size(true) as u32)
    }

    fn drop(&mut self, t: Resource<TokenizerRes>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        Ok(())
    }
}
