//! The backend: job parameters, the decoding loop and text streaming.

use crate::config::LlamaConfig;
use crate::model::Llama;
use infernet_plugin_api::models::{Tokenizer, Weights};
use infernet_plugin_api::{
    log, progress, Backend, BackendInfo, Context, Error, F32Tensor, JobInput, JobOutput,
    JobRequest, JobResult, KvCache, ModelCache, Sampler, Sampling, TextStream, Usage,
};

/// A model built from its weights, kept for later jobs.
struct Generator {
    tokenizer: Option<Tokenizer>,
    model: Llama,
}

/// The backend: loaded models by id.
pub struct LlamaBackend {
    models: ModelCache<Generator>,
}

/// Decoding settings parsed from the job parameters.
struct Params {
    max_tokens: usize,
    temperature: f64,
    top_k: u32,
    top_p: f64,
    seed: u64,
    emit_logits: bool,
}

impl Params {
    fn from_job(job: &JobRequest) -> Result<Self, Error> {
        let p = Params {
            max_tokens: job.param_or("max_tokens", 32usize)?,
            temperature: job.param_or("temperature", 0.0f64)?,
            top_k: job.param_or("top_k", 0u32)?,
            top_p: job.param_or("top_p", 1.0f64)?,
            seed: job.param_or("seed", 0u64)?,
            emit_logits: job.param_or("emit_logits", false)?,
        };
        if !(p.temperature.is_finite() && p.temperature >= 0.0) {
            return Err(Error::invalid(
                "parameter `temperature` must be a finite number >= 0",
            ));
        }
        if !(p.top_p > 0.0 && p.top_p <= 1.0) {
            return Err(Error::invalid("parameter `top_p` must be in (0, 1]"));
        }
        Ok(p)
    }

    fn greedy(&self) -> bool {
        self.emit_logits || self.temperature == 0.0
    }
}

impl Generator {
    fn build(weights: &Weights) -> Result<Self, Error> {
        let model_id = weights.id();
        let cfg = match weights.format().as_str() {
            "gguf" => {
                let embd = weights
                    .get_quantized("token_embd.weight")
                    .context("GGUF embedding table")?;
                let vocab = embd.shape().first().copied().unwrap_or(0) as usize;
                LlamaConfig::from_gguf(&weights.config(), &weights.names(), vocab)?
            }
            _ => LlamaConfig::parse(&weights.config())?,
        };
        let tokenizer = match weights.tokenizer() {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn(&format!(
                    "model `{model_id}` has no usable tokenizer: {e:?}"
                ));
                None
            }
        };
        let model = Llama::load(weights, cfg)?;
        Ok(Generator { tokenizer, model })
    }

    fn tokenizer(&self) -> Result<&Tokenizer, Error> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::invalid("this model has no tokenizer; send `tokens` input"))
    }

    /// The prompt as token ids, checked against the vocabulary and context size.
    fn prompt(&self, input: &JobInput) -> Result<Vec<u32>, Error> {
        let ids = match input {
            JobInput::Tokens(ids) => ids.clone(),
            JobInput::Text(_) | JobInput::Texts(_) => {
                self.tokenizer()?.encode(&input.text()?, true)?
            }
            _ => return Err(Error::invalid("input must be `text` or `tokens`")),
        };
        let cfg = &self.model.cfg;
        if ids.is_empty() {
            return Err(Error::invalid("the prompt is empty"));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(Error::invalid(format!(
                "input token id {bad} is out of range (vocab_size {})",
                cfg.vocab_size
            )));
        }
        if ids.len() > cfg.max_position_embeddings {
            return Err(Error::LimitExceeded(format!(
                "prompt has {} tokens; max_position_embeddings is {}",
                ids.len(),
                cfg.max_position_embeddings
            )));
        }
        Ok(ids)
    }

    fn generate(&self, job: &JobRequest, params: &Params) -> Result<JobResult, Error> {
        let cfg = &self.model.cfg;
        let prompt = self.prompt(&job.input)?;
        let sampler = if params.greedy() {
            None
        } else {
            Some(Sampler::new(Sampling {
                temperature: params.temperature,
                top_k: params.top_k,
                top_p: params.top_p,
                seed: params.seed,
            }))
        };
        if !params.emit_logits {
            // Text output needs a tokenizer to decode; fail before any work.
            self.tokenizer()?;
        }
        let mut stream = TextStream::new(self.tokenizer.as_ref());

        let mut cache = KvCache::new(cfg.num_hidden_layers, 2);
        let mut generated: Vec<u32> = Vec::new();
        let mut all_logits: Vec<f32> = Vec::new();
        let mut vocab = cfg.vocab_size;
        for step in 0..params.max_tokens {
            if progress::cancelled() {
                break;
            }
            let (input, pos) = match generated.last() {
                None => (&prompt[..], 0),
                Some(last) => (
                    std::slice::from_ref(last),
                    prompt.len() + generated.len() - 1,
                ),
            };
            if pos + input.len() > cfg.max_position_embeddings {
                break;
            }
            let logits = self.model.forward(input, pos, &mut cache)?;
            vocab = logits.dim(1);
            let logits = logits.reshape(&[vocab])?;
            if params.emit_logits {
                all_logits.extend(logits.to_f32()?);
            }
            let next = match &sampler {
                None => logits
                    .argmax(0)?
                    .to_u32()?
                    .first()
                    .copied()
                    .ok_or_else(|| Error::internal("argmax returned no value"))?,
                Some(s) => s.sample(&logits)?,
            };
            generated.push(next);
            stream.push(&generated)?;
            progress::report(step as u64 + 1, params.max_tokens as u64);
            if cfg.eos_token_ids.contains(&next) {
                break;
            }
        }

        let usage = Usage {
            input_tokens: prompt.len() as u32,
            output_tokens: generated.len() as u32,
        };
        let text = stream.finish(&generated)?;
        let output = if params.emit_logits {
            let steps = all_logits.len() / vocab.max(1);
            JobOutput::Logits(F32Tensor {
                shape: vec![steps as u32, vocab as u32],
                data: all_logits,
            })
        } else {
            JobOutput::Text(text)
        };
        Ok(JobResult { output, usage })
    }
}

impl Backend for LlamaBackend {
    fn new() -> Self {
        LlamaBackend {
            models: ModelCache::new(),
        }
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo::new(
            "llama",
            env!("CARGO_PKG_VERSION"),
            &["text-generation"],
            &crate::config::Arch::DECLARED,
        )
    }

    fn execute(&mut self, job: JobRequest) -> Result<JobResult, Error> {
        let params = Params::from_job(&job)?;
        let loaded = self.models.get(&job.model, Generator::build)?;
        loaded.model.generate(&job, &params)
    }
}
