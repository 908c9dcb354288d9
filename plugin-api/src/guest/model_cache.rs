//! Models a backend opens once and keeps between jobs: what every backend
//! does with [`crate::models::open`], in one place. The weights handle is
//! kept with what was built from it, so the host keeps the model open while
//! its tensors are in use.

use crate::models::{self, Weights};
use crate::{log, Error, Result};
use std::collections::HashMap;

/// One opened model and what the backend built from it.
pub struct Loaded<M> {
    /// The host's model (config.json, tensors, tokenizer).
    pub weights: Weights,
    /// The backend's own representation (layers, rope tables, tokenizer...).
    pub model: M,
}

/// Opened models by id.
pub struct ModelCache<M> {
    loaded: HashMap<String, Loaded<M>>,
}

impl<M> Default for ModelCache<M> {
    fn default() -> Self {
        ModelCache {
            loaded: HashMap::new(),
        }
    }
}

impl<M> ModelCache<M> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Model `id`, opened and built with `build` on first use, kept after.
    /// A failed open or build is not cached: the next job tries again.
    pub fn get(
        &mut self,
        id: &str,
        build: impl FnOnce(&Weights) -> Result<M>,
    ) -> Result<&mut Loaded<M>> {
        if !self.loaded.contains_key(id) {
            let weights = models::open(id)?;
            let model = build(&weights)?;
            log::info(&format!("loaded model `{id}`"));
            self.loaded
                .insert(id.to_string(), Loaded { weights, model });
        }
        self.loaded
            .get_mut(id)
            .ok_or_else(|| Error::internal("model vanished after loading"))
    }
}
