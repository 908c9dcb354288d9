//! GGUF llama files (issue 17, point 1): the llama plugin on quantized GGUF
//! files the tests generate (candle quantizes and writes them) against
//! candle-transformers' own `quantized_llama` on the same file: identical
//! greedy tokens over 16 steps and logits within 1e-4, for q8_0, q4_0 and
//! the q4_k/q6_k mix of a `Q4_K_M` file (tied head). The tokenizer rebuilt
//! from the file's own metadata encodes as the tokenizer.json it was
//! written from; what the host cannot rebuild is refused by name.

use super::llama_reference::{assert_matches_native, plugin_logits, STEPS};
use candle_core::quantized::gguf_file;
use candle_core::Device;
use infernet_host::config::Config;
use infernet_host::models::fixture::LlamaFixtureSpec;
use infernet_host::models::fixture_gguf::{write_gguf_llama, GgufQuant, GgufTokenizer};
use infernet_host::models::reference::NativeQuantizedLlama;
use infernet_host::models::ModelEntry;
use infernet_host::node::Node;
use infernet_host::runtime::PluginKind;
use infernet_host::worlds::backend::{JobInput, JobOutput, JobRequest};
use infernet_tests::*;
use std::path::{Path, PathBuf};

/// A node serving the llama plugin with the given GGUF models (id, path).
fn serve(dir: &Path, models: &[(&str, &Path)]) -> Node {
    let pkg = pack_plugin("llama", PluginKind::Backend, dir);
    let cfg = write_backend_config(dir, &pkg, models, "");
    Node::from_config(&Config::load(&cfg).unwrap()).unwrap()
}

fn tied(spec: LlamaFixtureSpec) -> LlamaFixtureSpec {
    LlamaFixtureSpec {
        tie_word_embeddings: true,
        seed: 49,
        ..spec
    }
}

#[test]
fn gguf_llama_matches_candle_quantized_llama_in_each_block_format() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("q8_0", GgufQuant::Q8_0, LlamaFixtureSpec::gguf_tiny()),
        ("q4_0", GgufQuant::Q4_0, LlamaFixtureSpec::gguf_tiny()),
        (
            "q4_k_m",
            GgufQuant::Q4KM,
            tied(LlamaFixtureSpec::gguf_tiny()),
        ),
    ];
    let files: Vec<PathBuf> = cases
        .iter()
        .map(|(id, quant, spec)| {
            write_gguf_llama(spec, &tmp.path().join(id), *quant, &GgufTokenizer::Beside).unwrap()
        })
        .collect();
    // One served as its directory, the others as the file itself.
    let served: Vec<(&str, &Path)> = cases
        .iter()
        .zip(&files)
        .enumerate()
        .map(|(i, ((id, _, _), f))| {
            (
                *id,
                if i == 0 {
                    f.parent().unwrap()
                } else {
                    f.as_path()
                },
            )
        })
        .collect();
    let node = serve(tmp.path(), &served);
    let mut worst = 0f32;
    for ((id, quant, _), file) in cases.iter().zip(&files) {
        let entry = node.model(id).unwrap();
        assert_eq!(entry.format(), "gguf");
        let formats: Vec<String> = ["blk.0.attn_q.weight", "blk.0.attn_v.weight"]
            .iter()
            .map(|n| format!("{:?}", entry.qtensor(n).unwrap().dtype()))
            .collect();
        let want = match quant {
            GgufQuant::Q8_0 => ["Q8_0", "Q8_0"],
            GgufQuant::Q4_0 => ["Q4_0", "Q4_0"],
            GgufQuant::Q4KM => ["Q4K", "Q6K"],
        };
        assert_eq!(formats, want, "{id}: the file holds the formats asked for");
        let native = NativeQuantizedLlama::load_gguf(
            file,
            &file.with_file_name("tokenizer.json"),
            &Device::Cpu,
        )
        .unwrap();
        let prompt = native
            .encode("the quick brown fox jumps over the lazy dog")
            .unwrap();
        let (tokens, logits) = native.generate_greedy(&prompt, STEPS).unwrap();
        let plugin = plugin_logits(&node, id, &prompt);
        worst = worst.max(assert_matches_native(id, &plugin, &tokens, &logits));

        // The same tokens as text, streamed from a text prompt.
        let job = JobRequest {
            id: format!("text-{id}"),
            model: id.to_string(),
            input: JobInput::Text("the quick brown fox jumps over the lazy dog".into()),
            params: vec![("max_tokens".into(), STEPS.to_string())],
        };
        let JobOutput::Text(text) = node.run(&job, None).unwrap().output else {
            panic!("{id}: expected text");
        };
        assert_eq!(
            text,
            native.decode(&tokens).unwrap(),
            "{id}: generated text"
        );
    }
    eprintln!("gguf: worst |Δlogit| over three formats: {worst:e}");
}

#[test]
fn the_tokenizer_in_gguf_metadata_encodes_as_its_tokenizer_json() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference-tokenizer.json");
    let spec = LlamaFixtureSpec::gguf_tiny();
    let file = write_gguf_llama(
        &spec,
        &tmp.path().join("m"),
        GgufQuant::Q8_0,
        &GgufTokenizer::Metadata {
            reference: Some(reference.clone()),
        },
    )
    .unwrap();
    assert!(
        !file.with_file_name("tokenizer.json").exists(),
        "no tokenizer.json beside the file: the metadata is all there is"
    );
    let entry = ModelEntry::open("m", &file, &Device::Cpu).unwrap();
    let rebuilt = entry.tokenizer().unwrap();
    let want = tokenizers::Tokenizer::from_file(&reference).unwrap();
    assert!(
        want.get_vocab_size(true) > 300,
        "a trained vocabulary, with merges"
    );
    for text in [
        "the quick brown fox",
        "  leading spaces and 12345 digits, split one by one",
        "Ünïcode café, naïve: déjà vu!",
        "tabs\tand\nnewlines  and    runs of spaces",
        "emoji 🦀 and 中文 bytes",
        "<|endoftext|> in the middle <|endoftext|>",
    ] {
        let a = rebuilt.encode(text, true).unwrap();
        let b = want.encode(text, true).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "ids of {text:?}");
        assert!(a.get_ids().len() < text.len(), "merges applied to {text:?}");
        assert_eq!(
            rebuilt.decode(a.get_ids(), false).unwrap(),
            text,
            "decode round trip"
        );
    }

    // A job with a text prompt runs on it, and generates what the native
    // quantized llama generates from the reference tokenizer's ids.
    let node = serve(tmp.path(), &[("m", &file)]);
    let native = NativeQuantizedLlama::load_gguf(&file, &reference, &Device::Cpu).unwrap();
    let prompt = "the 2 quick foxes";
    let ids = native.encode(prompt).unwrap();
    let (tokens, _) = native.generate_greedy(&ids, 8).unwrap();
    let job = JobRequest {
        id: "bpe".into(),
        model: "m".into(),
        input: JobInput::Text(prompt.into()),
        params: vec![("max_tokens".into(), "8".into())],
    };
    let result = node.run(&job, None).unwrap();
    assert_eq!(result.usage.input_tokens as usize, ids.len());
    let JobOutput::Text(text) = result.output else {
        panic!("expected text")
    };
    assert_eq!(text, native.decode(&tokens).unwrap());
}

/// Rewrites one metadata value of a GGUF file (candle reads and writes it).
fn edit_metadata(file: &Path, key: &str, value: gguf_file::Value) {
    let bytes = std::fs::read(file).unwrap();
    let mut cursor = std::io::Cursor::new(&bytes);
    let content = gguf_file::Content::read(&mut cursor).unwrap();
    let mut metadata = content.metadata.clone();
    metadata.insert(key.into(), value);
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| {
            (
                n.clone(),
                content.tensor(&mut cursor, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let md: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::fs::File::create(file).unwrap();
    gguf_file::write(&mut out, &md, &ts).unwrap();
}

#[test]
fn what_a_gguf_file_needs_that_is_not_here_is_refused_by_name() {
    use gguf_file::Value;
    let tmp = tempfile::tempdir().unwrap();
    let spec = LlamaFixtureSpec::gguf_tiny();
    let meta = |name: &str| GgufTokenizer::Metadata {
        reference: Some(tmp.path().join(format!("{name}.json"))),
    };

    // A pre-tokenizer the host cannot rebuild: named, with the way out.
    let file = write_gguf_llama(
        &spec,
        &tmp.path().join("pre"),
        GgufQuant::Q8_0,
        &meta("pre"),
    )
    .unwrap();
    edit_metadata(&file, "tokenizer.ggml.pre", Value::String("falcon".into()));
    let e = ModelEntry::open("pre", &file, &Device::Cpu)
        .unwrap()
        .tokenizer()
        .unwrap_err();
    assert!(
        e.contains("pre-tokenizer `falcon`") && e.contains("tokenizer.json beside"),
        "{e}"
    );

    // `gpt2` splits as GPT-2 does, with no prefix space (candle's own
    // rebuild adds one, which llama.cpp does not): the same ids as the
    // SmolLM-split reference on text without digits.
    edit_metadata(&file, "tokenizer.ggml.pre", Value::String("gpt2".into()));
    let gpt2 = ModelEntry::open("pre", &file, &Device::Cpu)
        .unwrap()
        .tokenizer()
        .unwrap();
    let smollm = tokenizers::Tokenizer::from_file(tmp.path().join("pre.json")).unwrap();
    let ids =
        |t: &tokenizers::Tokenizer, text: &str| t.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(
        ids(&gpt2, "the quick brown fox"),
        ids(&smollm, "the quick brown fox")
    );

    // Another architecture: refused when the node loads it, named as the
    // host spells GGUF architectures, beside what the backend runs.
    let file = write_gguf_llama(
        &spec,
        &tmp.path().join("arch"),
        GgufQuant::Q8_0,
        &GgufTokenizer::Beside,
    )
    .unwrap();
    edit_metadata(&file, "general.architecture", Value::String("qwen2".into()));
    let pkg = pack_plugin("llama", PluginKind::Backend, tmp.path());
    let cfg = write_backend_config(tmp.path(), &pkg, &[("arch", &file)], "");
    let e = match Node::from_config(&Config::load(&cfg).unwrap()) {
        Ok(_) => panic!("a qwen2 GGUF file was loaded into the llama backend"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("GGUF architecture `gguf:qwen2`") && e.contains("gguf:llama"),
        "{e}"
    );

    // Two .gguf files in one directory: the provider must name one.
    let two = tmp.path().join("two");
    write_gguf_llama(&spec, &two, GgufQuant::Q8_0, &GgufTokenizer::Beside).unwrap();
    std::fs::copy(two.join("model.gguf"), two.join("other.gguf")).unwrap();
    let e = ModelEntry::open("two", &two, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 .gguf files") && e.contains("path"), "{e}");

    // A safetensors model has no quantized tensors to hand out.
    let st = tmp.path().join("st");
    infernet_host::models::fixture::write_llama_fixture(&LlamaFixtureSpec::tiny(), &st).unwrap();
    let entry = ModelEntry::open("st", &st, &Device::Cpu).unwrap();
    assert_eq!(entry.format(), "safetensors");
    let e = entry.qtensor("model.norm.weight").unwrap_err();
    assert!(e.contains("not GGUF") && e.contains("use `get`"), "{e}");

    // Not a GGUF file at all.
    let junk = tmp.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("model.gguf"), b"GGUF but not really").unwrap();
    let e = ModelEntry::open("junk", &junk, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a readable GGUF file"), "{e}");
}
