//! The one-way data flow of DESIGN §1, checked on the source: each
//! top-level module of the library names (`crate::<module>`) only modules of
//! a lower layer, so no import cycle between folders can come back.
//! `cli/` is the binary, above everything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Private files (modes 0600/0700); the node's metrics registry, which
    // every layer above records into.
    &["private", "metrics"],
    // Leaves: tensor math, model files, the database, the wire.
    &["kernels", "models", "store", "p2p"],
    // The wasmtime runtime (knows kernel budgets, no world).
    &["runtime"],
    // The WIT worlds and their host side.
    &["worlds"],
    // The config file (validates devices, limits, money, grants).
    &["config"],
    // A node's plugins, and its payment adapters.
    &["node", "payments"],
    // Verification: the referee, disputes, evidence.
    &["verify"],
    // The job lifecycle; the bootstrap registry.
    &["jobs", "registry"],
    // The embeddable node.
    &["sdk"],
    // The OpenAI-compatible HTTP API over the SDK.
    &["api"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).expect("read source dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Top-level modules named as `crate::x` (or `crate::{x, ..}`) outside comments.
fn uses(path: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for file in rust_files(path) {
        let text = std::fs::read_to_string(&file).expect("read source file");
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap_or(""))
                        .collect(),
                    None => vec![rest
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")],
                };
                found.extend(
                    names
                        .into_iter()
                        .filter(|n| !n.is_empty())
                        .map(String::from),
                );
            }
        }
    }
    found
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for e in std::fs::read_dir(&src).expect("read src").flatten() {
        let path = e.path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if matches!(name.as_str(), "lib" | "main" | "cli" | "layering") {
            continue;
        }
        let own = layer(&name).unwrap_or_else(|| {
            panic!("module `{name}` is in no layer: add it to LAYERS in layering.rs")
        });
        for used in uses(&path) {
            if used == name {
                continue;
            }
            match layer(&used) {
                Some(l) if l < own => {}
                Some(_) => wrong.push(format!("{name} (layer {own}) uses {used}")),
                None => wrong.push(format!("{name} uses `crate::{used}`, which is in no layer")),
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} modules found under {}",
        src.display()
    );
    assert!(
        wrong.is_empty(),
        "data must flow one way:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_paths() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    std::fs::write(
        &f,
        "use crate::{store::Store, worlds};\n// crate::jobs in a comment\nlet _ = crate::p2p::start;\n",
    )
    .unwrap();
    let found: Vec<String> = uses(&f).into_iter().collect();
    assert_eq!(found, ["p2p", "store", "worlds"]);
}
