//! The llama plugin against candle-transformers' native models on the same
//! generated HF checkpoints: logits at every step of a 16-token greedy
//! generation within 1e-4, identical tokens, identical text. Llama (plain, and
//! Llama 3.x shaped: llama3 `rope_scaling` + tied embeddings), Qwen2 (q/k/v
//! biases) and Mistral (sliding window) each against candle's own module;
//! another `model_type` is refused by name.

use candle_core::Device;
use infernet_host::config::Config;
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::models::reference::{NativeLlama, NativeMistral, NativeQwen2};
use infernet_host::node::Node;
use infernet_host::runtime::PluginKind;
use infernet_host::worlds::backend::ProgressEvent;
use infernet_host::worlds::backend::{JobInput, JobOutput, JobRequest};
use infernet_tests::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub(crate) const STEPS: usize = 16;

fn setup(dir: &std::path::Path) -> (Node, std::path::PathBuf) {
    let model = dir.join("tiny-llama");
    write_llama_fixture(&LlamaFixtureSpec::tiny(), &model).unwrap();
    let pkg = pack_plugin("llama", PluginKind::Backend, dir);
    let cfg = write_backend_config(dir, &pkg, &[("tiny", &model)], "");
    (
        Node::from_config(&Config::load(&cfg).unwrap()).unwrap(),
        model,
    )
}

/// A node serving the llama plugin with one generated checkpoint per spec,
/// under the given model ids; returns the checkpoint directories in order.
fn serve(dir: &std::path::Path, models: &[(&str, LlamaFixtureSpec)]) -> (Node, Vec<PathBuf>) {
    serve_edited(dir, models, |_| {})
}

/// [`serve`], with `edit` run on the checkpoint directories before the node
/// starts (the node reads `config.json` when it starts).
fn serve_edited(
    dir: &std::path::Path,
    models: &[(&str, LlamaFixtureSpec)],
    edit: impl FnOnce(&[PathBuf]),
) -> (Node, Vec<PathBuf>) {
    let dirs: Vec<PathBuf> = models
        .iter()
        .map(|(id, spec)| {
            let d = dir.join(id);
            write_llama_fixture(spec, &d).unwrap();
            d
        })
        .collect();
    edit(&dirs);
    let pkg = pack_plugin("llama", PluginKind::Backend, dir);
    let ids: Vec<(&str, &std::path::Path)> = models
        .iter()
        .zip(&dirs)
        .map(|((id, _), d)| (*id, d.as_path()))
        .collect();
    let cfg = write_backend_config(dir, &pkg, &ids, "");
    (
        Node::from_config(&Config::load(&cfg).unwrap()).unwrap(),
        dirs,
    )
}

/// The plugin's `[STEPS, vocab]` logits for greedy decoding from `prompt`.
pub(crate) fn plugin_logits(node: &Node, model: &str, prompt: &[u32]) -> Vec<Vec<f32>> {
    let job = JobRequest {
        id: format!("ref-{model}"),
        model: model.into(),
        input: JobInput::Tokens(prompt.to_vec()),
        params: vec![
            ("max_tokens".into(), STEPS.to_string()),
            ("emit_logits".into(), "true".into()),
        ],
    };
    let result = node.run(&job, None).unwrap();
    assert_eq!(result.usage.output_tokens as usize, STEPS);
    assert_eq!(result.usage.input_tokens as usize, prompt.len());
    let JobOutput::Logits(t) = result.output else {
        panic!("expected logits")
    };
    let vocab = t.shape[1] as usize;
    assert_eq!(t.shape, vec![STEPS as u32, vocab as u32]);
    t.data.chunks(vocab).map(<[f32]>::to_vec).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vocab sizes differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Holds the plugin's logits to the native ones: every step within 1e-4 and
/// the same greedy token; also checks the native generation is not one token
/// repeated. Returns the largest |Δlogit|.
pub(crate) fn assert_matches_native(
    what: &str,
    plugin: &[Vec<f32>],
    native_tokens: &[u32],
    native_logits: &[Vec<f32>],
) -> f32 {
    assert_eq!(plugin.len(), STEPS, "{what}: plugin steps");
    assert_eq!(native_logits.len(), STEPS, "{what}: native steps");
    let mut distinct = native_tokens.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() >= 6,
        "{what}: degenerate native generation {native_tokens:?}"
    );
    let mut worst = 0f32;
    for (step, (row, native_row)) in plugin.iter().zip(native_logits).enumerate() {
        let diff = max_abs_diff(row, native_row);
        assert!(
            diff <= 1e-4,
            "{what} step {step}: max abs logit diff {diff}"
        );
        worst = worst.max(diff);
        assert_eq!(
            argmax(row),
            native_tokens[step],
            "{what}: greedy token differs at step {step}"
        );
    }
    eprintln!("{what}: max abs logit diff over {STEPS} steps: {worst:e}");
    worst
}

const PROMPT: &str = "the quick brown fox jumps over the lazy dog";

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0 as u32
}

#[test]
fn plugin_logits_match_native_llama_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (node, model) = setup(dir.path());
    let native = NativeLlama::load(&model, &Device::Cpu).unwrap();
    let prompt = native
        .encode("the quick brown fox jumps over the lazy dog")
        .unwrap();
    assert!(
        prompt.len() > 3,
        "prompt should tokenize to several ids: {prompt:?}"
    );
    let (native_tokens, native_logits) = native.generate_greedy(&prompt, STEPS).unwrap();
    assert_eq!(native_logits.len(), STEPS);

    let job = JobRequest {
        id: "ref".into(),
        model: "tiny".into(),
        input: JobInput::Tokens(prompt.clone()),
        params: vec![
            ("max_tokens".into(), STEPS.to_string()),
            ("emit_logits".into(), "true".into()),
        ],
    };
    let result = node.run(&job, None).unwrap();
    let JobOutput::Logits(t) = result.output else {
        panic!("expected logits")
    };
    let vocab = native_logits[0].len();
    assert_eq!(t.shape, vec![STEPS as u32, vocab as u32]);
    let mut worst = 0f32;
    for (step, native_row) in native_logits.iter().enumerate() {
        let row = &t.data[step * vocab..(step + 1) * vocab];
        let diff = row
            .iter()
            .zip(native_row)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-4, "step {step}: max abs logit diff {diff}");
        worst = worst.max(diff);
        assert_eq!(
            argmax(row),
            native_tokens[step],
            "greedy token differs at step {step}"
        );
    }
    eprintln!("max abs logit diff over {STEPS} steps: {worst:e}");
    assert_eq!(result.usage.output_tokens as usize, STEPS);
    assert_eq!(result.usage.input_tokens as usize, prompt.len());
}

#[test]
fn streamed_text_matches_native_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (node, model) = setup(dir.path());
    let native = NativeLlama::load(&model, &Device::Cpu).unwrap();
    let prompt = "once upon a time";
    let ids = native.encode(prompt).unwrap();
    let (tokens, _) = native.generate_greedy(&ids, STEPS).unwrap();
    let expected = native.decode(&tokens).unwrap();

    let streamed = Arc::new(Mutex::new(String::new()));
    let sink = {
        let streamed = streamed.clone();
        Box::new(move |e: ProgressEvent| {
            if let ProgressEvent::Token(t) = e {
                streamed.lock().unwrap().push_str(&t);
            }
        })
    };
    let result = node
        .generate(
            "tiny",
            prompt,
            &[("max_tokens", STEPS.to_string())],
            Some(sink),
        )
        .unwrap();
    let JobOutput::Text(text) = result.output else {
        panic!("expected text")
    };
    assert_eq!(text, expected);
    assert_eq!(
        *streamed.lock().unwrap(),
        text,
        "streamed pieces must add up to the final text"
    );
}

#[test]
fn seeded_sampling_is_deterministic_and_seed_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = setup(dir.path());
    let run = |seed: u64| {
        let params = [
            ("max_tokens", "12".to_string()),
            ("temperature", "1.0".to_string()),
            ("top_k", "50".to_string()),
            ("top_p", "0.95".to_string()),
            ("seed", seed.to_string()),
        ];
        match node
            .generate("tiny", "hello world", &params, None)
            .unwrap()
            .output
        {
            JobOutput::Text(t) => t,
            _ => panic!("expected text"),
        }
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same text");
    let others: Vec<String> = (8..12).map(run).collect();
    assert!(
        others.iter().any(|o| *o != a),
        "different seeds should not all give the same text"
    );
}

#[test]
fn malformed_params_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = setup(dir.path());
    let err = node
        .generate("tiny", "hi", &[("max_tokens", "lots".to_string())], None)
        .unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
    let err = node.generate("nope", "hi", &[], None).unwrap_err();
    assert!(
        err.to_string().contains("tiny"),
        "unknown model error should list served models: {err}"
    );
    // still serving
    node.generate("tiny", "hi", &[("max_tokens", "2".to_string())], None)
        .unwrap();
}

/// Llama 3.x shape: llama3 `rope_scaling` and tied embeddings (no `lm_head`).
#[test]
fn llama3_rope_scaling_and_tied_embeddings_match_native_llama() {
    let dir = tempfile::tempdir().unwrap();
    let spec = LlamaFixtureSpec::llama3_tiny();
    assert!(spec.tie_word_embeddings && spec.rope_scaling.is_some());
    let (node, dirs) = serve(dir.path(), &[("llama3", spec.clone())]);
    let native = NativeLlama::load(&dirs[0], &Device::Cpu).unwrap();
    assert!(native.config().tie_word_embeddings);
    assert!(native.config().rope_scaling.is_some());
    let prompt = native.encode(PROMPT).unwrap();
    let (tokens, logits) = native.generate_greedy(&prompt, STEPS).unwrap();
    let plugin = plugin_logits(&node, "llama3", &prompt);
    assert_matches_native("llama3", &plugin, &tokens, &logits);

    // The scaling is not a no-op at these positions: the same weights without
    // it give other logits from the first step.
    let unscaled_dir = dir.path().join("llama3-unscaled");
    write_llama_fixture(
        &LlamaFixtureSpec {
            rope_scaling: None,
            ..spec
        },
        &unscaled_dir,
    )
    .unwrap();
    let unscaled = NativeLlama::load(&unscaled_dir, &Device::Cpu).unwrap();
    let (_, unscaled_logits) = unscaled.generate_greedy(&prompt, 2).unwrap();
    let effect = max_abs_diff(&unscaled_logits[1], &logits[1]);
    assert!(
        effect > 1e-2,
        "rope_scaling changed logits by only {effect}"
    );
}

/// Qwen2: biases on q/k/v.
#[test]
fn qwen2_matches_native_qwen2() {
    let dir = tempfile::tempdir().unwrap();
    let (node, dirs) = serve(dir.path(), &[("qwen2", LlamaFixtureSpec::qwen2_tiny())]);
    let native = NativeQwen2::load(&dirs[0], &Device::Cpu).unwrap();
    let prompt = native.encode(PROMPT).unwrap();
    let (tokens, logits) = native.generate_greedy(&prompt, STEPS).unwrap();
    let plugin = plugin_logits(&node, "qwen2", &prompt);
    assert_matches_native("qwen2", &plugin, &tokens, &logits);

    // The biases matter: candle's llama reads the same file ignoring them.
    let no_bias = NativeLlama::load(&dirs[0], &Device::Cpu).unwrap();
    let effect = max_abs_diff(&no_bias.logits_no_cache(&prompt).unwrap(), &logits[0]);
    assert!(
        effect > 1e-2,
        "q/k/v biases changed logits by only {effect}"
    );
}

/// Mistral: a sliding window (6) shorter than the prompt.
#[test]
fn mistral_sliding_window_matches_native_mistral() {
    let dir = tempfile::tempdir().unwrap();
    let spec = LlamaFixtureSpec::mistral_tiny();
    let window = spec.sliding_window.unwrap();
    let (node, dirs) = serve(dir.path(), &[("mistral", spec)]);
    let native = NativeMistral::load(&dirs[0], &Device::Cpu).unwrap();
    let prompt = native
        .encode("once upon a time the quick brown fox jumps over the lazy dog")
        .unwrap();
    assert!(
        prompt.len() > window + 1,
        "the prompt ({} tokens) must outgrow the window ({window} + 1 keys)",
        prompt.len()
    );
    assert!(prompt.len() + STEPS > 2 * window);
    let (tokens, logits) = native.generate_greedy(&prompt, STEPS).unwrap();
    let plugin = plugin_logits(&node, "mistral", &prompt);
    assert_matches_native("mistral", &plugin, &tokens, &logits);

    // The window matters: candle's llama reads the same file with full attention.
    let full = NativeLlama::load(&dirs[0], &Device::Cpu).unwrap();
    let effect = max_abs_diff(&full.logits_no_cache(&prompt).unwrap(), &logits[0]);
    assert!(
        effect > 1e-2,
        "the sliding window changed logits by only {effect}"
    );
}

/// A checkpoint of another architecture is refused when the node loads it,
/// with its key and `model_type` named.
#[test]
fn unsupported_model_type_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let tiny = dir.join("tiny");
    let gpt2 = dir.join("gpt2");
    write_llama_fixture(&LlamaFixtureSpec::tiny(), &tiny).unwrap();
    write_llama_fixture(&LlamaFixtureSpec::tiny(), &gpt2).unwrap();
    // A GPT-2 config.json beside weights and tokenizer.
    std::fs::write(
        gpt2.join("config.json"),
        r#"{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64,
            "n_head": 4, "n_layer": 2, "n_positions": 256, "vocab_size": 512}"#,
    )
    .unwrap();
    // The llama component under another manifest name: the node calls a
    // plugin by its manifest's name, whatever its describe() says.
    let bytes = std::fs::read(wasm_path("llama")).unwrap();
    let pkg = pack_bytes(
        &bytes,
        "text-gen",
        PluginKind::Backend,
        &dir.join("text-gen"),
    );
    let cfg = write_backend_config(dir, &pkg, &[("tiny", &tiny), ("gpt2", &gpt2)], "");
    // Refused when the node loads it, naming the model's key and type and
    // what the backend runs (the plugin refuses it too, should a backend
    // that lists no architectures hand it one: its unit tests).
    let err = match Node::from_config(&Config::load(&cfg).unwrap()) {
        Ok(_) => panic!("a node loaded a gpt2 checkpoint into the llama backend"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("backend[0].models[1]")
            && err.contains("backend `text-gen`")
            && err.contains(r#"model_type "gpt2" is not supported"#)
            && err.contains("llama, qwen2, mistral"),
        "{err}"
    );
    // Without it the same node loads and serves.
    let cfg = write_backend_config(dir, &pkg, &[("tiny", &tiny)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    node.generate(
        "tiny",
        "hello world",
        &[("max_tokens", "2".to_string())],
        None,
    )
    .unwrap();
}
