//! Sentence embeddings for BERT-family checkpoints (e.g. all-MiniLM-L6-v2),
//! with sentence-transformers semantics when the model ships its files
//! (see [`sentence`]): truncation at `max_seq_length` (special tokens
//! kept), the pooling modes, and normalisation only when a Normalize module
//! is listed. A model without them is mean-pooled and normalised, truncated
//! as tokenizer.json says. Each input text is run through the encoder (see
//! [`model`]) on its own. Weight handles are kept per model id between jobs.

mod config;
mod model;
mod sentence;

use config::BertConfig;
use infernet_plugin_api::models::{Tokenizer, Weights};
use infernet_plugin_api::{
    export_backend, progress, Backend, BackendInfo, Error, JobInput, JobRequest, JobResult,
    ModelCache,
};
use model::Bert;
use sentence::Semantics;

/// A model built from its weights, kept for later jobs.
struct Embedder {
    tokenizer: Tokenizer,
    model: Bert,
    semantics: Semantics,
}

/// The backend: loaded models by id.
struct BertBackend {
    models: ModelCache<Embedder>,
}

impl Embedder {
    fn build(weights: &Weights) -> Result<Self, Error> {
        let cfg = BertConfig::parse(&weights.config())?;
        let shipped = weights.files();
        let file = |path: &str| {
            shipped
                .iter()
                .any(|f| f == path)
                .then(|| weights.file(path).ok())
                .flatten()
        };
        let semantics = Semantics::read(file, cfg.hidden_size)?;
        let tokenizer = weights.tokenizer()?;
        let model = Bert::load(weights, cfg)?;
        Ok(Embedder {
            tokenizer,
            model,
            semantics,
        })
    }

    /// The token ids of one text, cut to what the model can take.
    fn tokens(&self, text: &str) -> Result<Vec<u32>, Error> {
        let max_positions = self.model.cfg.max_position_embeddings;
        let lowered;
        let text = if self.semantics.lower_case {
            lowered = text.to_lowercase();
            &lowered
        } else {
            text
        };
        match self.semantics.max_seq_length {
            Some(max) => {
                let max = max.min(max_positions) as u32;
                self.tokenizer.encode_truncated(text, true, max)
            }
            None => {
                let ids = self.tokenizer.encode(text, true)?;
                if ids.len() <= max_positions {
                    return Ok(ids);
                }
                self.tokenizer
                    .encode_truncated(text, true, max_positions as u32)
            }
        }
    }

    fn embed_all(&self, texts: &[String]) -> Result<JobResult, Error> {
        let cfg = &self.model.cfg;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut input_tokens: u32 = 0;
        for (i, text) in texts.iter().enumerate() {
            if progress::cancelled() {
                return Err(Error::internal("job cancelled"));
            }
            let ids = self.tokens(text)?;
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
            let pooling = self.semantics.pooling;
            vectors.push(self.model.embed(&ids, pooling, self.semantics.normalize)?);
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
