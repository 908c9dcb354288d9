//! The bert plugin against candle-transformers' BertModel on the real
//! all-MiniLM-L6-v2 weights: cosine ≥ 0.99999 per sentence, and a
//! paraphrase pair scores higher than an unrelated pair.

use candle_core::Device;
use infernet_host::config::Config;
use infernet_host::models::reference::{cosine, NativeBert};
use infernet_host::node::Node;
use infernet_host::runtime::PluginKind;
use infernet_host::worlds::backend::JobOutput;
use infernet_tests::*;

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
