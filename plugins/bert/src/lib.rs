//! Sentence embeddings for BERT-family checkpoints (e.g. all-MiniLM-L6-v2).
//!
//! Each input text is tokenized with special tokens, truncated to
//! `max_position_embeddings`, run through the encoder (see [`model`]) on its
//! own, mean-pooled over tokens and L2-normalised. Weight handles are kept
//! per model id between jobs.

mod config;
mod model;

use config::BertConfig;
use infernet_plugin_api::models::{Tokenizer, Weights};
use infernet_plugin_api::{
    export_backend, progress, Backend, BackendInfo, Error, JobInput, JobRequest, JobResult,
    ModelCache,
};
use model::Bert;

/// A model built from its weights, kept for later jobs.
struct Embedder {
    tokenizer: Tokenizer,
    model: Bert,
}

/// The backend: loaded models by id.
struct BertBackend {
    models: ModelCache<Embedder>,
}

impl Embedder {
    fn build(weights: &Weights) -> Result<Self, Error> {
        let cfg = BertConfig::parse(&weights.config())?;
        let tokenizer = weights.tokenizer()?;
        let model = Bert::load(weights, cfg)?;
        Ok(Embedder { tokenizer, model })
    }

    fn embed_all(&self, texts: &[String]) -> Result<JobResult, Error> {
        let cfg = &self.model.cfg;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut input_tokens: u32 = 0;
        for (i, text) in texts.iter().enumerate() {
            if progress::cancelled() {
                return Err(Error::internal("job cancelled"));
            }
            let mut ids = self.tokenizer.encode(text, true)?;
            ids.truncate(cfg.max_position_embeddings);
            if ids.is_empty() {
                return Err(Error::invalid(format!("input text {i} has no tokens")));
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                return Err(Error::invalid(format!(
                    "input text {i}: token id {bad} is out of range (vocab_size {})",
                    cfg.vocab_size
                )));
            }
            input_tokens = input_tokens.saturating_add(ids.len() as u32);
            vectors.push(self.model.embed(&ids)?);
            progress::report(i as u64 + 1, texts.len() as u64);
        }
        Ok(JobResult::embeddings(vectors, input_tokens))
    }
}

impl Backend for BertBackend {
    fn new() -> Self {
        BertBackend {
            models: ModelCache::new(),
        }
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo::new("bert", env!("CARGO_PKG_VERSION"), &["embedding"], &["bert"])
    }

    fn execute(&mut self, job: JobRequest) -> Result<JobResult, Error> {
        let texts = match &job.input {
            JobInput::Text(_) | JobInput::Texts(_) => job.input.texts()?,
            _ => return Err(Error::invalid("input must be `text` or `texts`")),
        };
        if texts.is_empty() {
            return Err(Error::invalid("input `texts` is empty"));
        }
        let loaded = self.models.get(&job.model, Embedder::build)?;
        loaded.model.embed_all(&texts)
    }
}

export_backend!(BertBackend);
