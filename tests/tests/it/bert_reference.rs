//! The bert plugin against candle-transformers' BertModel on the real
//! all-MiniLM-L6-v2 weights: cosine ≥ 0.99999 per sentence, and a
//! paraphrase pair scores higher than an unrelated pair. On an input longer
//! than tokenizer.json's 128 tokens, against an independent numpy
//! sentence-transformers reference (`tests/python/sentence_reference.py`):
//! the model's 256-token `max_seq_length`, pooling and Normalize.

use candle_core::Device;
use infernet_host::config::Config;
use infernet_host::models::reference::{cosine, NativeBert};
use infernet_host::models::{ModelEntry, TokenizerRes};
use infernet_host::node::Node;
use infernet_host::runtime::PluginKind;
use infernet_host::worlds::backend::JobOutput;
use infernet_tests::*;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn minilm_embeddings_match_native_bert() {
    let model = minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    let pkg = pack_plugin("bert", PluginKind::Backend, dir.path());
    let cfg = write_backend_config(dir.path(), &pkg, &[("minilm", &model)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    let native = NativeBert::load(&model, &Device::Cpu).unwrap();

    let sentences: Vec<String> = [
        "A man is playing a guitar.",
        "Someone is strumming a guitar.",
        "The stock market fell sharply today.",
        "Infernet runs inference jobs on a peer-to-peer network of GPU providers.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let JobOutput::Embeddings(vectors) = node.embed("minilm", &sentences).unwrap().output else {
        panic!("expected embeddings")
    };
    assert_eq!(vectors.len(), sentences.len());
    for (s, v) in sentences.iter().zip(&vectors) {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not L2-normalised: {norm}");
        let reference = native.embed(s).unwrap();
        let c = cosine(v, &reference);
        assert!(c >= 0.99999, "{s:?}: cosine to native {c}");
    }
    // The node routes by the tasks a backend declares: bert embeds only.
    let err = node
        .generate("minilm", "hello", &[], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backend `bert`") && err.contains("`text-generation`"),
        "{err}"
    );
    let paraphrase = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[0], &vectors[2]);
    eprintln!("paraphrase {paraphrase:.4} vs unrelated {unrelated:.4}");
    assert!(
        paraphrase > unrelated + 0.2,
        "paraphrase {paraphrase} vs unrelated {unrelated}"
    );
}

/// candle-transformers' BertModel itself on the real weights, against the
/// similarities published in the sentence-transformers README for
/// all-MiniLM-L6-v2: the one check of our reference against outside numbers.
#[test]
fn native_minilm_matches_published_similarities() {
    let bert = NativeBert::load(&minilm_dir(), &Device::Cpu).expect("load minilm");
    assert_eq!(bert.dim(), 384);
    let cat = bert.embed("A cat sits on the mat.").expect("embed");
    let kitten = bert.embed("A kitten is sitting on a rug.").expect("embed");
    let finance = bert
        .embed("Quarterly earnings beat analyst expectations.")
        .expect("embed");
    assert_eq!(cat.len(), 384);
    let norm: f32 = cat.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    let near = cosine(&cat, &kitten);
    let far = cosine(&cat, &finance);
    assert!(near > far + 0.2, "near {near} far {far}");
    assert_eq!(cat, bert.embed("A cat sits on the mat.").expect("embed"));

    // Published: 0.6660, 0.1046, 0.1411.
    let e: Vec<Vec<f32>> = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ]
    .iter()
    .map(|s| bert.embed(s).expect("embed"))
    .collect();
    for (i, j, want) in [(0, 1, 0.6660f32), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = cosine(&e[i], &e[j]);
        eprintln!("minilm cos({i},{j}) = {got:.4} (reference {want})");
        assert!(
            (got - want).abs() < 2e-3,
            "cos({i},{j}) = {got}, reference {want}"
        );
    }
}

/// A text of about 400 word pieces: past both tokenizer.json's truncation
/// (128) and the model's `max_seq_length` (256).
fn long_text() -> String {
    let sentences = [
        "Decentralized inference networks let many independent providers sell model execution to clients they have never met.",
        "Each provider advertises the models it serves, a price per token, and how much work it can take on at once.",
        "A client picks a provider within its budget, locks the payment in escrow, and sends the prompt over an encrypted connection.",
        "When the result comes back, the client checks the signature, compares it with a second provider when the policy asks for it, and releases the money.",
        "Cheating is unprofitable because a verifier can replay any disputed step of the computation and slash the stake of a dishonest provider.",
        "Sentence embeddings turn a paragraph into a single vector, so that texts with similar meanings end up close to each other.",
        "Long documents are cut to the maximum sequence length the model was trained with, keeping the special tokens at both ends.",
        "A model that ships sentence transformers files says how long that sequence may be, how token vectors are pooled, and whether the result is normalized.",
        "Ignoring those files silently changes the embedding of every long input, which breaks search indexes built with the original library.",
        "The closing sentences of this text are never seen by either limit, so what they say cannot change the embedding at all.",
    ];
    let mut text = sentences.join(" ");
    text.push(' ');
    text.push_str(
        &sentences
            .iter()
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
    );
    text
}

/// Runs the numpy reference on `text`: its token ids and embedding.
fn reference(model: &std::path::Path, text: &str) -> (Vec<u32>, Vec<f32>) {
    let script = repo_root().join("tests/python/sentence_reference.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test venv's python (scripts/test.sh creates it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = serde_json::from_value(v["ids"].clone()).unwrap();
    let e: Vec<f64> = serde_json::from_value(v["embedding"].clone()).unwrap();
    (ids, e.into_iter().map(|x| x as f32).collect())
}

#[test]
fn a_long_input_is_embedded_as_sentence_transformers_does() {
    let model = minilm_dir();
    let text = long_text();
    let (ref_ids, ref_embedding) = reference(&model, &text);
    let max_seq_length = 256;
    assert_eq!(
        ref_ids.len(),
        max_seq_length,
        "the text must cross 256 pieces"
    );

    // The host's truncating encode gives the reference's ids: cut to 256
    // with [CLS] first and [SEP] last, past tokenizer.json's 128.
    let entry = ModelEntry::open("minilm", &model, &Device::Cpu).unwrap();
    let tok = TokenizerRes::of(entry.clone()).unwrap();
    let ids = tok
        .encode_truncated(text.clone(), true, max_seq_length as u32)
        .unwrap();
    assert_eq!(ids, ref_ids);
    assert_eq!(
        tok.encode(text.clone(), true).unwrap().len(),
        128,
        "as saved"
    );
    let err = tok.encode_truncated(text.clone(), true, 2).unwrap_err();
    assert!(err.contains("special tokens"), "{err}");
    assert!(entry.files().contains_key("1_Pooling/config.json"));

    let dir = tempfile::tempdir().unwrap();
    let pkg = pack_plugin("bert", PluginKind::Backend, dir.path());
    let cfg = write_backend_config(dir.path(), &pkg, &[("minilm", &model)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();
    let result = node.embed("minilm", std::slice::from_ref(&text)).unwrap();
    assert_eq!(result.usage.input_tokens as usize, max_seq_length);
    let JobOutput::Embeddings(vectors) = result.output else {
        panic!("expected embeddings")
    };
    let c = cosine(&vectors[0], &ref_embedding);
    let max_diff = vectors[0]
        .iter()
        .zip(&ref_embedding)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // What the plugin gave before it read the sentence-transformers files:
    // the first 128 tokens only (candle-transformers on tokenizer.json).
    let first_128 = NativeBert::load(&model, &Device::Cpu)
        .unwrap()
        .embed(&text)
        .unwrap();
    let old = cosine(&first_128, &ref_embedding);
    eprintln!(
        "cosine to the reference {c:.7} (max |diff| {max_diff:.2e}); 128-token embedding {old:.5}"
    );
    assert!(c >= 0.99999, "cosine to the reference {c}");
    assert!(max_diff < 1e-4, "max |diff| {max_diff}");
    assert!(
        old < 0.999,
        "the 128-token embedding is not the reference's: {old}"
    );
}
