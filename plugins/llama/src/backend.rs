//! The backend: job parameters, the decoding loop and text streaming, and
//! the steps of a pipeline stage (a job with `layers`, see [`crate::stage`]).

use crate::config::LlamaConfig;
use crate::model::{Llama, Span, SpanInput};
use crate::stage::{Sessions, StageParams};
use infernet_plugin_api::models::{self, Tokenizer, Weights};
use infernet_plugin_api::{
    log, progress, Backend, BackendInfo, Context, Error, F32Tensor, JobInput, JobOutput,
    JobRequest, JobResult, KvCache, Sampler, Sampling, Tensor, TextStream, Usage,
};
use std::collections::hash_map::{Entry, HashMap};

/// A model, or the span of its blocks a stage runs, built from its
/// weights, kept for later jobs.
struct Generator {
    /// Kept open while its tensors are in use.
    _weights: Weights,
    tokenizer: Option<Tokenizer>,
    model: Llama,
}

/// The backend: loaded models by model id and span (`None`: the whole
/// model), and the pipeline sessions of this instance.
pub struct LlamaBackend {
    models: HashMap<(String, Option<Span>), Generator>,
    sessions: Sessions,
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
    /// Builds model `weights` (`span`: only those blocks and what they need).
    fn build(weights: Weights, span: Option<Span>) -> Result<Self, Error> {
        let model_id = weights.id();
        let cfg = config(&weights, span)?;
        // A span past block 0 takes hidden states, never text.
        let tokenizer = match span {
            Some(span) if span.start > 0 => None,
            _ => match weights.tokenizer() {
                Ok(t) => Some(t),
                Err(e) => {
                    log::warn(&format!(
                        "model `{model_id}` has no usable tokenizer: {e:?}"
                    ));
                    None
                }
            },
        };
        let model = Llama::load(&weights, cfg, span)?;
        Ok(Generator {
            _weights: weights,
            tokenizer,
            model,
        })
    }

    fn tokenizer(&self) -> Result<&Tokenizer, Error> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::invalid("this model has no tokenizer; send `tokens` input"))
    }

    /// The prompt as token ids, checked against the vocabulary and context size.
    fn prompt(&self, input: &JobInput) -> Result<Vec<u32>, Error> {
        let ids = self.ids(input)?;
        let cfg = &self.model.cfg;
        if ids.len() > cfg.max_position_embeddings {
            return Err(Error::LimitExceeded(format!(
                "prompt has {} tokens; max_position_embeddings is {}",
                ids.len(),
                cfg.max_position_embeddings
            )));
        }
        Ok(ids)
    }

    /// The input as token ids, non-empty and checked against the vocabulary.
    fn ids(&self, input: &JobInput) -> Result<Vec<u32>, Error> {
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

impl Generator {
    /// One step of a pipeline stage: the job's rows (token ids for a span
    /// from block 0, else hidden states `[1, seq, hidden_size]`) at
    /// positions `p.pos..` through this span, over the session's `cache`.
    /// Returns the result and the rows processed.
    fn stage(
        &self,
        job: &JobRequest,
        p: &StageParams,
        cache: &mut KvCache,
    ) -> Result<(JobResult, usize), Error> {
        let cfg = &self.model.cfg;
        let (span, hidden) = (p.span, cfg.hidden_size);
        let rows = if span.start == 0 {
            if let JobInput::Tensor(_) = job.input {
                return Err(Error::invalid(format!(
                    "layers {span} start at the embedding table: input must be `tokens` or \
                     `text`, not a tensor"
                )));
            }
            Rows::Ids(self.ids(&job.input)?)
        } else {
            Rows::Hidden(hidden_states(&job.input, span, hidden)?)
        };
        let seq = match &rows {
            Rows::Ids(ids) => ids.len(),
            Rows::Hidden(data) => data.len() / hidden,
        };
        if seq > 1 && p.pos != 0 {
            return Err(Error::invalid(format!(
                "an input of {seq} rows must start at position 0 (its `pos` is {}): after \
                 the prefill, send one row per step",
                p.pos
            )));
        }
        let max = cfg.max_position_embeddings;
        if p.pos.checked_add(seq).is_none_or(|end| end > max) {
            return Err(Error::LimitExceeded(format!(
                "positions {}..{} (`pos` {} and {seq} rows) are past max_position_embeddings {max}",
                p.pos,
                p.pos as u64 + seq as u64,
                p.pos
            )));
        }
        let input = match &rows {
            Rows::Ids(ids) => SpanInput::Tokens(ids),
            Rows::Hidden(data) => SpanInput::Hidden(Tensor::new_f32(data, &[1, seq, hidden])?),
        };
        let out = self.model.forward_span(input, seq, p.pos, cache)?;
        let last = span.end == cfg.num_hidden_layers;
        let shape = match last {
            true => vec![1, out.dim(1) as u32],
            false => vec![1, seq as u32, hidden as u32],
        };
        let output = JobOutput::Logits(F32Tensor {
            shape,
            data: out.to_f32()?,
        });
        let usage = Usage {
            input_tokens: seq as u32,
            output_tokens: u32::from(last),
        };
        Ok((JobResult { output, usage }, seq))
    }
}

/// A stage's input rows, checked.
enum Rows<'a> {
    Ids(Vec<u32>),
    /// `seq * hidden_size` values.
    Hidden(&'a [f32]),
}

/// The values of a `tensor` input of hidden states `[1, seq, hidden]`
/// (`seq >= 1`), for a span starting past block 0.
fn hidden_states(input: &JobInput, span: Span, hidden: usize) -> Result<&[f32], Error> {
    let JobInput::Tensor(t) = input else {
        return Err(Error::invalid(format!(
            "layers {span} start past the embedding table: input must be a `tensor` of \
             hidden states, shape [1, seq, {hidden}]"
        )));
    };
    let seq = match t.shape[..] {
        [1, seq, h] if seq >= 1 && h as usize == hidden => seq as usize,
        _ => {
            return Err(Error::invalid(format!(
                "input tensor has shape {:?}; layers {span} take hidden states of shape \
                 [1, seq, {hidden}] with seq >= 1",
                t.shape
            )))
        }
    };
    if seq.checked_mul(hidden) != Some(t.data.len()) {
        return Err(Error::invalid(format!(
            "input tensor has {} values; its shape {:?} holds {}",
            t.data.len(),
            t.shape,
            seq as u64 * hidden as u64
        )));
    }
    Ok(&t.data)
}

/// The model's configuration: `config.json`, or a GGUF file's metadata
/// with the vocabulary size read from the rows of a table: the embedding
/// table for the whole model and for a span that loads it, the output
/// projection for a span that loads that instead. A span using neither
/// (blocks in the middle) opens no table: its `vocab_size` is a
/// placeholder it never reads.
fn config(weights: &Weights, span: Option<Span>) -> Result<LlamaConfig, Error> {
    if weights.format() != "gguf" {
        return LlamaConfig::parse(&weights.config());
    }
    let rows = |name: &str, what: &str| -> Result<usize, Error> {
        let table = weights.get_quantized(name).context(what)?;
        Ok(table.shape().first().copied().unwrap_or(0) as usize)
    };
    let Some(span) = span else {
        let vocab = rows("token_embd.weight", "GGUF embedding table")?;
        return LlamaConfig::from_gguf(&weights.config(), &weights.names(), vocab);
    };
    let mut cfg = LlamaConfig::from_gguf(&weights.config(), &weights.names(), 1)?;
    let n = cfg.num_hidden_layers;
    span.check(n)?;
    let last = span.end == n;
    if span.start == 0 || (last && cfg.tie_word_embeddings) {
        cfg.vocab_size = rows("token_embd.weight", "GGUF embedding table")?;
    } else if last {
        cfg.vocab_size = rows("output.weight", "GGUF output projection")?;
    }
    Ok(cfg)
}

impl LlamaBackend {
    /// Model `id` (`span`: only those blocks), opened and built on first use.
    /// A failed build is not kept: the next job tries again.
    fn model(&mut self, id: &str, span: Option<Span>) -> Result<&Generator, Error> {
        match self.models.entry((id.to_string(), span)) {
            Entry::Occupied(loaded) => Ok(loaded.into_mut()),
            Entry::Vacant(slot) => {
                let built = Generator::build(models::open(id)?, span)?;
                log::info(&match span {
                    None => format!("loaded model `{id}`"),
                    Some(span) => format!("loaded model `{id}` layers {span}"),
                });
                Ok(slot.insert(built))
            }
        }
    }

    /// A pipeline's text: the first stage (it holds the tokenizer and the
    /// config) decodes the `tokens` a pipeline generated up to and
    /// including the model's first end-of-text token, as a whole-model
    /// job's text is decoded (special tokens skipped); `input_tokens` is
    /// how many it kept (nothing is generated: `output_tokens` is 0). No
    /// session is read or kept.
    fn decode(&mut self, job: &JobRequest) -> Result<JobResult, Error> {
        let span = crate::stage::parse_layers(job.param_str("layers").unwrap_or_default())?;
        if span.start != 0 {
            return Err(Error::invalid(format!(
                "layers {span} hold no tokenizer: `decode` is asked of the first stage (layers 0..)"
            )));
        }
        let JobInput::Tokens(ids) = &job.input else {
            return Err(Error::invalid("`decode` takes `tokens` input"));
        };
        let generator = self.model(&job.model, Some(span))?;
        let vocab = generator.model.cfg.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::invalid(format!(
                "token id {bad} is out of range (vocab_size {vocab})"
            )));
        }
        let eos = &generator.model.cfg.eos_token_ids;
        let kept = ids
            .iter()
            .position(|id| eos.contains(id))
            .map_or(ids.len(), |i| i + 1);
        let text = generator.tokenizer()?.decode(&ids[..kept], true)?;
        Ok(JobResult {
            output: JobOutput::Text(text),
            usage: Usage {
                input_tokens: kept as u32,
                output_tokens: 0,
            },
        })
    }

    /// A pipeline stage's step: the session's cache, the span's model, the
    /// forward pass; the session is kept for the next step unless the job
    /// ends it.
    fn stage_step(&mut self, job: &JobRequest) -> Result<JobResult, Error> {
        let p = StageParams::from_job(job)?
            .ok_or_else(|| Error::internal("a stage job without `layers`"))?;
        let mut session = self.sessions.take(&p, &job.model)?;
        let (result, seq) =
            self.model(&job.model, Some(p.span))?
                .stage(job, &p, &mut session.cache)?;
        session.next_pos = p.pos + seq;
        if !p.session_end {
            if let Some(dropped) = self.sessions.keep(p.session, session) {
                log::info(&format!(
                    "dropped session `{dropped}`, the least recently used of more than {}",
                    crate::stage::MAX_SESSIONS
                ));
            }
        }
        Ok(result)
    }
}

impl Backend for LlamaBackend {
    fn new() -> Self {
        LlamaBackend {
            models: HashMap::new(),
            sessions: Sessions::default(),
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
        if job.param_str("layers").is_some() && job.param_or("decode", false)? {
            return self.decode(&job);
        }
        if job.param_str("layers").is_some() {
            let result = self.stage_step(&job);
            if result.is_err() {
                // Its cache may be half updated: the session starts over.
                if let Some(id) = job.param_str("session") {
                    self.sessions.remove(id);
                }
            }
            return result;
        }
        let params = Params::from_job(&job)?;
        self.model(&job.model, None)?.generate(&job, &params)
    }
}
