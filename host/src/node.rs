//! A node assembled from config: one runtime, the models, the backend and
//! pricing plugins, and a pool of backend instances per model. This is the
//! single-node job path that the CLI and (later) the network layer call.
//!
//! Models configured with `proof = "groth16"` also get a Groth16 prover:
//! the quantized MLP is read back from the model dir, and its proving and
//! verifying keys come from `<data_dir>/zk` (generated once, then cached).

use crate::config::Config;
use crate::models::{ModelEntry, ModelError, ModelGrants};
use crate::p2p::protocol::ProofAdvert;
use crate::runtime::{Package, PluginError, PluginKind, Runtime};
use crate::worlds::backend::{
    BackendInfo, JobInput, JobOutput, JobRequest, JobResult, ProgressSink,
};
use crate::worlds::caps::ConfigGrant;
use crate::worlds::{BackendGrants, BackendInstance, BackendPlugin, PricingPlugin};
use infernet_verifier::baked::BakedProver;
use infernet_verifier::{Groth16Prover, InputMode, KeyCache, MlpShape, Prover, QuantizedMlp};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod stages;

/// Sub-directory of the data dir holding the zk key cache.
pub const ZK_DIR: &str = "zk";

/// Why a node could not start or run a job.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Config problem (names the key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Plugin load or call failure.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Model files problem.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Every slot is taken and the queue is full.
    #[error("{capacity} jobs running and the queue is full: retry later")]
    Busy {
        /// `node.capacity`.
        capacity: u32,
    },
    /// The backend produced more output than the job paid for.
    #[error("the job is paid for {paid} output tokens and the backend produced {produced}")]
    OutputBound {
        /// Paid tokens.
        paid: u32,
        /// Tokens the result claims.
        produced: u32,
    },
    /// A pipeline stage job this node cannot run as asked.
    #[error("{0}")]
    Stage(String),
    /// The device could not be opened.
    #[error("node.device: {0}")]
    Device(String),
    /// The engine could not start.
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
    /// A model's architecture (`model_type`) is not one its backend runs.
    #[error("{key}: {message}")]
    Architecture {
        /// Dotted config key, e.g. `backend[0].models[1]`.
        key: String,
        /// The model type and what the backend runs.
        message: String,
    },
    /// The backend serving a model does not declare the task asked of it
    /// (its `describe()` tasks).
    #[error("model `{model}` is served by backend `{plugin}`, whose tasks are {tasks:?}; this needs a backend that declares `{task}`")]
    Task {
        /// The model asked for.
        model: String,
        /// The backend's manifest name.
        plugin: String,
        /// The task asked (`text-generation`, `embedding`).
        task: String,
        /// What the backend declares.
        tasks: Vec<String>,
    },
    /// A model configured with `proof` cannot be proved (names the key).
    #[error("{key}: {message}")]
    Proof {
        /// Dotted config key, e.g. `backend[0].models[1].proof`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// No backend serves the model.
    #[error("no backend serves model `{model}`; configured models: {available:?}")]
    UnknownModel {
        /// Asked-for id.
        model: String,
        /// What the node has.
        available: Vec<String>,
    },
}

/// A loaded backend with its unused pre-made instances (each job runs on
/// one that ran no other job).
pub struct BackendSlot {
    /// The plugin.
    pub plugin: BackendPlugin,
    /// What it says about itself.
    pub info: BackendInfo,
    idle: Mutex<Vec<BackendInstance>>,
}

/// A model whose results this node proves on request.
pub struct ProvedModel {
    /// Proof system as configured (`"groth16"` or `"groth16-baked"`).
    pub system: String,
    /// The prover (holds the model and its proving key).
    pub prover: Arc<dyn Prover>,
    /// Its compressed verifying key (sent with every proof).
    pub vk: Vec<u8>,
    /// What the advert says about it.
    pub advert: ProofAdvert,
    /// True when this start ran the key setup (cache miss).
    pub keys_generated: bool,
    /// How long loading or generating the keys took, ms.
    pub setup_ms: u64,
}

/// A node: runtime + plugins, ready to run jobs.
pub struct Node {
    runtime: Runtime,
    backends: Vec<BackendSlot>,
    by_model: HashMap<String, usize>,
    pricing: Option<PricingPlugin>,
    data_dir: PathBuf,
    provers: HashMap<String, ProvedModel>,
    models: HashMap<String, Arc<ModelEntry>>,
    device: candle_core::Device,
    gate: CapacityGate,
    untraced: std::sync::atomic::AtomicBool,
    /// Span ids served (`models::span`): the model and the span.
    spans: HashMap<String, (String, crate::models::span::LayerSpan)>,
    sessions: stages::Sessions,
}

/// At most `capacity` jobs run at once; up to [`GATE_QUEUE`] wait for a
/// slot (the network's in-flight bound keeps it lower); more are refused at
/// once ([`NodeError::Busy`]). Keeps backend instances (and the pool's
/// slots) bounded whatever the load.
/// Jobs that may wait for a capacity slot.
const GATE_QUEUE: u32 = 256;

struct CapacityGate {
    capacity: u32,
    state: Mutex<(u32, u32)>,
    freed: std::sync::Condvar,
}

impl CapacityGate {
    fn new(capacity: u32) -> CapacityGate {
        CapacityGate {
            capacity: capacity.max(1),
            state: Mutex::new((0, 0)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Jobs running now.
    fn running(&self) -> u32 {
        self.state.lock().map(|s| s.0).unwrap_or(0)
    }

    /// Waits for a slot (bounded queue) and returns its guard.
    fn enter(&self) -> Result<GateSlot<'_>, NodeError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 >= self.capacity {
            if st.1 >= GATE_QUEUE {
                return Err(NodeError::Busy {
                    capacity: self.capacity,
                });
            }
            st.1 += 1;
            while st.0 >= self.capacity {
                st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.1 -= 1;
        }
        st.0 += 1;
        Ok(GateSlot(self))
    }
}

/// A running job's slot; freed on drop.
struct GateSlot<'a>(&'a CapacityGate);

impl Drop for GateSlot<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 = st.0.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// Refuses, at start, a model whose `config.json` names a `model_type` the
/// backend does not list among its architectures (a backend listing none,
/// or `any`, takes every model; a config without `model_type` is left to
/// the plugin). A GGUF model's architecture is `gguf:` and its
/// `general.architecture` (`gguf:llama`): a backend lists the GGUF
/// architectures it runs apart from the safetensors ones.
fn check_architecture(
    key: &str,
    plugin: &str,
    info: &crate::worlds::backend::BackendInfo,
    entry: &ModelEntry,
) -> Result<(), NodeError> {
    let archs = &info.architectures;
    if archs.is_empty() || archs.iter().any(|a| a == "any") {
        return Ok(());
    }
    let (field, prefix) = match entry.format() {
        "gguf" => ("general.architecture", "gguf:"),
        _ => ("model_type", ""),
    };
    let arch = serde_json::from_str::<serde_json::Value>(entry.config_json())
        .ok()
        .and_then(|v| v.get(field).and_then(|t| t.as_str()).map(str::to_string));
    match arch.map(|a| format!("{prefix}{a}")) {
        Some(t) if !archs.contains(&t) => Err(NodeError::Architecture {
            key: key.to_string(),
            message: match prefix {
                "" => format!(
                    "model_type \"{t}\" is not supported by backend `{plugin}` (it runs {})",
                    archs.join(", ")
                ),
                _ => format!(
                    "GGUF architecture `{t}` is not supported by backend `{plugin}` (it runs {})",
                    archs.join(", ")
                ),
            },
        }),
        _ => Ok(()),
    }
}

/// One step of [`Node::load`], reported as it starts (and once more, with
/// `done == total`, when loading is over): what a progress bar draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStep {
    /// Steps finished before this one.
    pub done: usize,
    /// Steps in all: a plugin compilation per backend and the pricing
    /// plugin, a model load per model, a proof setup per proved model.
    pub total: usize,
    /// What this step does (`compiling plugin llama`, `loading model m`,
    /// `proof setup for m`), or `loaded` at the end.
    pub what: String,
}

/// Receives [`LoadStep`]s (the CLI draws them; the library draws nothing).
pub type OnLoadStep = Arc<dyn Fn(&LoadStep) + Send + Sync>;

impl Node {
    /// Loads every plugin and model the config names.
    pub fn from_config(config: &Config) -> Result<Node, NodeError> {
        Self::load(config, crate::metrics::Metrics::new(), None)
    }

    /// [`Node::from_config`], its plugins recording into `metrics`, each
    /// step reported to `on_step`.
    pub fn load(
        config: &Config,
        metrics: Arc<crate::metrics::Metrics>,
        on_step: Option<OnLoadStep>,
    ) -> Result<Node, NodeError> {
        let total = config
            .backend
            .iter()
            .map(|b| 1 + b.models.len() + b.models.iter().filter(|m| m.proof.is_some()).count())
            .sum::<usize>()
            + usize::from(config.pricing.is_some());
        let mut done = 0;
        let mut step = |what: String| {
            if let Some(f) = &on_step {
                f(&LoadStep { done, total, what });
            }
            done += 1;
        };
        let device = crate::kernels::parse_device(&config.node.device)
            .and_then(|d| d.open())
            .map_err(NodeError::Device)?;
        let data_dir = config.node.data_dir.clone();
        let runtime = Runtime::new(&data_dir.join("cache").join("compiled"))
            .map_err(|e| NodeError::Engine(format!("{e:#}")))?
            .with_metrics(metrics);
        let mut backends = Vec::new();
        let mut by_model = HashMap::new();
        let mut provers = HashMap::new();
        let mut models = HashMap::new();
        let mut spans = HashMap::new();
        for (i, b) in config.backend.iter().enumerate() {
            let package = Package::open(&b.plugin, b.publisher_key.as_deref())?;
            step(format!("compiling plugin {}", package.manifest.name));
            let loaded = runtime.load(&package, PluginKind::Backend)?;
            let entries = b
                .models
                .iter()
                .map(|m| {
                    step(format!("loading model {}", m.id));
                    ModelEntry::open(&m.id, &m.path, &device)
                })
                .collect::<Result<Vec<_>, _>>()?;
            for (j, m) in b.models.iter().enumerate() {
                let served = match &m.layers {
                    None => m.id.clone(),
                    Some(layers) => {
                        let key = format!("backend[{i}].models[{j}].layers");
                        let invalid = |message| crate::config::ConfigError::Invalid {
                            key: key.clone(),
                            message,
                        };
                        let total = crate::models::span::layer_count(entries[j].config_json())
                            .ok_or_else(|| {
                                invalid(
                                    "the model's config names no layer count (`num_hidden_layers`)"
                                        .into(),
                                )
                            })?;
                        let span = crate::models::span::LayerSpan::parse(layers, total)
                            .map_err(invalid)?;
                        spans.insert(span.id(&m.id), (m.id.clone(), span));
                        span.id(&m.id)
                    }
                };
                by_model.insert(served.clone(), i);
                models.insert(served, entries[j].clone());
                if let Some(system) = &m.proof {
                    step(format!("proof setup for {}", m.id));
                    let key = format!("backend[{i}].models[{j}].proof");
                    provers.insert(m.id.clone(), proved_model(&key, m, system, &data_dir)?);
                }
            }
            let plugin = BackendPlugin::new(
                &runtime,
                loaded,
                b.limits.limits(),
                device.clone(),
                BackendGrants {
                    models: ModelGrants::new(entries.clone()),
                    allowed_hosts: b.allowed_hosts.clone(),
                    config: ConfigGrant {
                        values: crate::config::flatten_table(&b.config),
                        secrets: b.secrets.clone(),
                        generated: Default::default(),
                    },
                },
            )?;
            let mut instance = plugin.instantiate()?;
            let info = instance.describe()?;
            for (j, entry) in entries.iter().enumerate() {
                let key = format!("backend[{i}].models[{j}]");
                check_architecture(&key, plugin.name(), &info, entry)?;
            }
            // One name everywhere (logs, errors, `plugin inspect`): the
            // signed manifest's, not what the component says of itself.
            if info.name != plugin.name() {
                tracing::warn!(plugin = %plugin.name(), reports = %info.name, "the plugin's describe() gives another name; the node uses its manifest's");
            }
            tracing::info!(plugin = %plugin.name(), version = %info.version, models = ?plugin.model_ids(), "backend ready");
            backends.push(BackendSlot {
                plugin,
                info,
                idle: Mutex::new(vec![instance]),
            });
        }
        let pricing = match &config.pricing {
            Some(p) => {
                let package = Package::open(&p.plugin, p.publisher_key.as_deref())?;
                step(format!("compiling plugin {}", package.manifest.name));
                let loaded = runtime.load(&package, PluginKind::Pricing)?;
                Some(PricingPlugin::new(
                    &runtime,
                    &loaded,
                    p.limits.limits(),
                    crate::config::flatten_table(&p.config),
                )?)
            }
            None => None,
        };
        step("loaded".into());
        Ok(Node {
            runtime,
            backends,
            by_model,
            pricing,
            data_dir,
            provers,
            models,
            device: device.clone(),
            gate: CapacityGate::new(config.node.capacity()),
            untraced: std::sync::atomic::AtomicBool::new(false),
            spans,
            sessions: stages::Sessions::new(
                config.node.sessions(),
                std::time::Duration::from_secs(config.node.session_ttl_secs),
            ),
        })
    }

    /// Before a new backend instance: if the node already holds
    /// `capacity` of them (running or idle), drops an idle one of another
    /// backend. Running jobs are at most `capacity` (the gate), so live
    /// instances stay at most `capacity` (or one per backend, if more) and
    /// the pool keeps its slots for pricing and payment.
    fn make_room(&self) {
        let live: usize = self
            .backends
            .iter()
            .map(|b| b.idle.lock().map(|v| v.len()).unwrap_or(0))
            .sum::<usize>()
            + self.gate.running() as usize;
        if live < self.gate.capacity as usize {
            return;
        }
        for b in &self.backends {
            if let Ok(mut v) = b.idle.lock() {
                if v.pop().is_some() {
                    return;
                }
            }
        }
    }

    /// Re-runs `job` on a fresh instance as a replay for a dispute: traced
    /// up to `stop_after` calls (the rest is refused, so the job itself
    /// usually fails there: that is expected), keeping the values of the
    /// tensors `capture` wants. Returns the trace, what was captured, and
    /// the job's own result when it ran to the end.
    pub fn replay(
        &self,
        job: &JobRequest,
        capture: crate::kernels::trace::Capture,
        stop_after: Option<usize>,
    ) -> Result<Replayed, NodeError> {
        let slot = self.slot(&job.model)?;
        let plan = stages::plan(job, self.spans.get(&job.model), "replay")?;
        let _running = self.gate.enter()?;
        self.make_room();
        let mut instance = slot.plugin.instantiate()?;
        instance.set_replay(crate::worlds::backend::Replay {
            capture,
            stop_after,
        });
        let result = instance.execute(&plan.job, None).map_err(NodeError::from);
        Ok(Replayed {
            trace: instance.take_trace().unwrap_or_default(),
            capture: instance.take_replay().unwrap_or_default(),
            result,
        })
    }

    /// Turns kernel tracing off (`false`) or back on. Only for measuring
    /// what tracing costs (`infernet bench`): an untraced job's result has
    /// an empty trace, which no client accepts as verified.
    pub fn set_tracing(&self, on: bool) {
        self.untraced
            .store(!on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pipeline sessions whose instances this node holds now.
    pub fn sessions_held(&self) -> usize {
        self.sessions.len()
    }

    /// The span of a span id this node serves.
    pub fn span(&self, id: &str) -> Option<crate::models::span::LayerSpan> {
        self.spans.get(id).map(|(_, s)| *s)
    }

    /// The backend that serves `model` (a model id or a span id).
    pub fn backend_of(&self, model: &str) -> Option<&BackendSlot> {
        self.slot(model).ok()
    }

    /// Jobs run at once (`node.capacity`).
    pub fn capacity(&self) -> u32 {
        self.gate.capacity
    }

    /// The files of a served model (its tokenizer, config, weights).
    pub fn model(&self, id: &str) -> Option<&Arc<ModelEntry>> {
        self.models.get(id)
    }

    /// The compute device.
    pub fn device(&self) -> candle_core::Device {
        self.device.clone()
    }

    /// A served model whose weights hash is `hash`.
    pub fn model_by_weights(&self, hash: &str) -> Option<&Arc<ModelEntry>> {
        self.models.values().find(|m| m.weights_hash() == hash)
    }

    /// sha256 of the plugin that serves `model`.
    pub fn backend_sha256(&self, model: &str) -> Option<String> {
        let slot = self.slot(model).ok()?;
        Some(slot.plugin.loaded.manifest.sha256.clone())
    }

    /// The prover of `model`, if it is configured with `proof`.
    pub fn prover(&self, model: &str) -> Option<&ProvedModel> {
        self.provers.get(model)
    }

    /// Advert entries of every proved model, sorted by model id.
    pub fn proof_adverts(&self) -> Vec<ProofAdvert> {
        let mut v: Vec<ProofAdvert> = self.provers.values().map(|p| p.advert.clone()).collect();
        v.sort_by(|a, b| a.model.cmp(&b.model));
        v
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The data directory.
    pub fn data_dir(&self) -> &PathBuf {
        &self.data_dir
    }

    /// Loaded backends.
    pub fn backends(&self) -> &[BackendSlot] {
        &self.backends
    }

    /// The pricing plugin, if configured.
    pub fn pricing(&self) -> Option<&PricingPlugin> {
        self.pricing.as_ref()
    }

    /// Every model id served, sorted.
    pub fn models(&self) -> Vec<String> {
        let mut m: Vec<String> = self.by_model.keys().cloned().collect();
        m.sort();
        m
    }

    /// The models served by a backend that may reach the network
    /// ([`BackendPlugin::reaches_network`]): their results carry no kernel
    /// trace of the computation, and adverts say so.
    pub fn untraced_models(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .by_model
            .iter()
            .filter(|(_, &i)| self.backends[i].plugin.reaches_network())
            .map(|(id, _)| id.clone())
            .collect();
        m.sort();
        m
    }

    /// Runs a job on the backend that serves its model, on a fresh
    /// instance (see [`run_traced`](Self::run_traced)).
    pub fn run(
        &self,
        job: &JobRequest,
        sink: Option<ProgressSink>,
    ) -> Result<JobResult, NodeError> {
        self.run_bounded(job, sink, None)
    }

    /// [`run`](Self::run) holding the backend to at most `max_tokens`
    /// output tokens, whatever it reads from the job's parameters: it is
    /// stopped if it emits more, and a result claiming more is refused.
    pub fn run_bounded(
        &self,
        job: &JobRequest,
        sink: Option<ProgressSink>,
        max_tokens: Option<u32>,
    ) -> Result<JobResult, NodeError> {
        self.run_traced(job, sink, max_tokens).map(|(r, _)| r)
    }

    /// [`run_bounded`](Self::run_bounded), also handing back the job's
    /// kernel trace. Every job runs on an instance that has run no other
    /// job (a pre-made idle one, else a new one) and is dropped after it:
    /// a plugin's caches (weights opened, tables computed) then start
    /// empty each time, so a job's trace depends only on the plugin, the
    /// weights, the input and the parameters, and two honest providers'
    /// traces of one job line up call for call. The exception is a
    /// pipeline stage's session ([`run_for`](Self::run_for)): its steps
    /// share an instance, and a step's trace also depends on the
    /// session's earlier inputs.
    pub fn run_traced(
        &self,
        job: &JobRequest,
        sink: Option<ProgressSink>,
        max_tokens: Option<u32>,
    ) -> Result<(JobResult, crate::kernels::trace::Trace), NodeError> {
        self.run_for("local", job, sink, max_tokens)
    }

    /// [`run_traced`](Self::run_traced) for `owner` (a client's peer id):
    /// a pipeline stage job that names a `session` runs on the instance
    /// holding that session of `owner`'s, if any, which is then held for
    /// its next step (`node/stages.rs`).
    pub fn run_for(
        &self,
        owner: &str,
        job: &JobRequest,
        sink: Option<ProgressSink>,
        max_tokens: Option<u32>,
    ) -> Result<(JobResult, crate::kernels::trace::Trace), NodeError> {
        let slot = self.slot(&job.model)?;
        let plan = stages::plan(job, self.spans.get(&job.model), owner)?;
        let _running = self.gate.enter()?;
        let held = plan.session.as_deref().and_then(|k| self.sessions.take(k));
        let idle = || slot.idle.lock().ok().and_then(|mut v| v.pop());
        let mut instance = match held.or_else(idle) {
            Some(i) => i,
            None => {
                self.make_room();
                slot.plugin.instantiate()?
            }
        };
        instance.set_tracing(!self.untraced.load(std::sync::atomic::Ordering::Relaxed));
        let result = instance.execute_bounded(&plan.job, sink, max_tokens);
        let trace = instance.take_trace().unwrap_or_default();
        match (plan.session, &result) {
            (Some(key), Ok(_)) if !plan.end => self.sessions.put(key, instance),
            _ => drop(instance),
        }
        let result = result?;
        if let Some(max) = max_tokens {
            // The plugin's own count, and the host's count of a text it
            // returned without streaming (re-encoding generated text can
            // shift a count a little: a quarter and 2 tokens of slack).
            let text = match &result.output {
                JobOutput::Text(t) => {
                    crate::models::count_tokens(self.model(&job.model).map(|m| &**m), t)
                }
                _ => 0,
            };
            let slack = max as usize / 4 + 2;
            if result.usage.output_tokens > max || text > max as usize + slack {
                let produced = (result.usage.output_tokens as usize).max(text);
                return Err(NodeError::OutputBound {
                    paid: max,
                    produced: u32::try_from(produced).unwrap_or(u32::MAX),
                });
            }
        }
        Ok((result, trace))
    }

    /// Refuses a job of `task` for a model whose backend does not declare it.
    fn check_task(&self, model: &str, task: &str) -> Result<(), NodeError> {
        let slot = self.slot(model)?;
        if slot.info.tasks.iter().any(|t| t == task) {
            return Ok(());
        }
        Err(NodeError::Task {
            model: model.into(),
            plugin: slot.plugin.name().into(),
            task: task.into(),
            tasks: slot.info.tasks.clone(),
        })
    }

    /// Text generation convenience: `params` as key/values. Only for a
    /// backend that declares `text-generation`.
    pub fn generate(
        &self,
        model: &str,
        prompt: &str,
        params: &[(&str, String)],
        sink: Option<ProgressSink>,
    ) -> Result<JobResult, NodeError> {
        self.check_task(model, "text-generation")?;
        let job = JobRequest {
            id: new_job_id(),
            model: model.into(),
            input: JobInput::Text(prompt.into()),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        self.run(&job, sink)
    }

    /// Embedding convenience. Only for a backend that declares `embedding`.
    pub fn embed(&self, model: &str, texts: &[String]) -> Result<JobResult, NodeError> {
        self.check_task(model, "embedding")?;
        let job = JobRequest {
            id: new_job_id(),
            model: model.into(),
            input: JobInput::Texts(texts.to_vec()),
            params: vec![],
        };
        self.run(&job, None)
    }

    fn slot(&self, model: &str) -> Result<&BackendSlot, NodeError> {
        self.by_model
            .get(model)
            .map(|&i| &self.backends[i])
            .ok_or_else(|| NodeError::UnknownModel {
                model: model.into(),
                available: self.models(),
            })
    }
}

/// What [`Node::replay`] found.
#[derive(Debug)]
pub struct Replayed {
    /// The replay's trace (up to its stopping point).
    pub trace: crate::kernels::trace::Trace,
    /// The wanted tensors it met.
    pub capture: crate::kernels::trace::Capture,
    /// The job's result, when the replay ran to its end.
    pub result: Result<JobResult, NodeError>,
}

/// A fresh random job id.
pub fn new_job_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Loads the quantized model of a `proof = "groth16"` (or
/// `"groth16-baked"`) model and its keys: the publisher's bundle, or this
/// node's own setup (`<data_dir>/zk`, generated on the first start).
fn proved_model(
    key: &str,
    m: &crate::config::ModelConfig,
    system: &str,
    data_dir: &std::path::Path,
) -> Result<ProvedModel, NodeError> {
    let err = |message: String| NodeError::Proof {
        key: key.to_string(),
        message,
    };
    let Some(envelope_system) = crate::config::envelope_system(system) else {
        return Err(err(format!(
            "unknown proof system `{system}`; known: {}",
            crate::config::PROOF_SYSTEMS.join(", ")
        )));
    };
    let baked = system == "groth16-baked";
    let mlp = QuantizedMlp::from_model_dir(&m.path).map_err(|e| {
        err(format!(
            "{system} proofs need a quantized-mlp or quantized-cnn model dir (config.json `model_type`): {e}"
        ))
    })?;
    let shape = MlpShape::of(&mlp, InputMode::Public).map_err(|e| err(e.to_string()))?;
    let started = Instant::now();
    // The publisher's keys when the config names a bundle, else this
    // node's own setup (cached in the data dir).
    let (pk, generated, bundle) = match &m.proof_keys {
        Some(path) => {
            let loaded = infernet_verifier::KeyBundle::load(path, None)
                .map_err(|e| err(format!("key bundle: {e}")))?;
            if loaded.bundle.statement.system != envelope_system {
                return Err(err(format!(
                    "the key bundle holds `{}` keys, this model is configured with proof = \"{system}\" (`{envelope_system}`){}",
                    loaded.bundle.statement.system,
                    if baked { "; make them with `infernet zk setup --baked`" } else { "" }
                )));
            }
            (loaded.pk, false, Some(loaded.bundle))
        }
        None => {
            let cache = KeyCache::new(data_dir.join(ZK_DIR));
            let rng = &mut rand::rngs::OsRng;
            let keys = match baked {
                true => cache.get_or_setup_baked(&mlp, rng),
                false => cache.get_or_setup(&mlp, InputMode::Public, rng),
            }
            .map_err(|e| err(format!("key setup: {e}")))?;
            (keys.pk, keys.generated, None)
        }
    };
    let vk = infernet_verifier::groth16::vk_bytes(&pk.vk).map_err(|e| err(e.to_string()))?;
    let prover: Arc<dyn Prover> = match baked {
        true => Arc::new(BakedProver::new(mlp, pk).map_err(|e| err(format!("prover: {e}")))?),
        false => Arc::new(
            Groth16Prover::new(mlp, InputMode::Public, pk)
                .map_err(|e| err(format!("prover: {e}")))?,
        ),
    };
    let setup_ms = started.elapsed().as_millis() as u64;
    tracing::info!(model = %m.id, system, vk_id = %prover.vk_id(), generated, setup_ms, "proving keys ready");
    let advert = ProofAdvert {
        model: m.id.clone(),
        system: system.to_string(),
        vk_id: prover.vk_id().to_string(),
        model_commitment: prover.model_commitment().to_string(),
        dims: shape.dims.iter().map(|&d| d as u32).collect(),
        shifts: shape.shifts.clone(),
        publisher: bundle.as_ref().map(|b| b.publisher.clone()),
        key_signature: bundle.as_ref().map(|b| b.signature.clone()),
    };
    if let Some(b) = &bundle {
        let s = &b.statement;
        if !s
            .model_commitment
            .eq_ignore_ascii_case(&advert.model_commitment)
            || s.dims != advert.dims
            || s.shifts != advert.shifts
        {
            return Err(err(format!(
                "the key bundle is for model commitment {} (dims {:?}), this model is {} (dims {:?}): run `infernet zk setup` for this model",
                s.model_commitment, s.dims, advert.model_commitment, advert.dims
            )));
        }
    }
    Ok(ProvedModel {
        system: system.to_string(),
        prover,
        vk,
        advert,
        keys_generated: generated,
        setup_ms,
    })
}
