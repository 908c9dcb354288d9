//! The compiled-artifact cache: the second load of a component comes from
//! disk, measurably faster, and a corrupted artifact is recompiled.

use infernet_host::runtime::manifest::{Package, PluginKind};
use infernet_host::runtime::Runtime;
use infernet_tests::*;
use std::time::Instant;

#[test]
fn second_load_comes_from_the_cache_and_is_faster() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = pack_plugin("llama", PluginKind::Backend, dir.path());
    let package = Package::open(&pkg, None).unwrap();
    let cache = dir.path().join("cache");

    let t = Instant::now();
    let cold = Runtime::new(&cache)
        .unwrap()
        .load(&package, PluginKind::Backend)
        .unwrap();
    let cold_time = t.elapsed();
    assert!(!cold.from_cache);

    let t = Instant::now();
    let warm = Runtime::new(&cache)
        .unwrap()
        .load(&package, PluginKind::Backend)
        .unwrap();
    let warm_time = t.elapsed();
    assert!(warm.from_cache);
    assert!(
        warm_time * 3 < cold_time,
        "cached load {warm_time:?} vs compile {cold_time:?}"
    );

    // a corrupted artifact is discarded and recompiled, not trusted
    for e in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(e.unwrap().path(), b"garbage").unwrap();
    }
    let again = Runtime::new(&cache)
        .unwrap()
        .load(&package, PluginKind::Backend)
        .unwrap();
    assert!(!again.from_cache);
}

#[test]
fn same_bytes_under_a_different_version_are_a_different_cache_entry() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(&dir.path().join("c")).unwrap();
    let pkg = pack_plugin("pricing-flat", PluginKind::Pricing, dir.path());
    let package = Package::open(&pkg, None).unwrap();
    rt.load(&package, PluginKind::Pricing).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path().join("c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with(&package.manifest.sha256), "{names:?}");
    assert!(names[0].contains("wasmtime48.0.8"), "{names:?}");
}
