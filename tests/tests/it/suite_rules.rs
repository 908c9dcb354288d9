//! Rules of the test suite itself, checked on the source.
//!
//! `verifier` and `infernet-tests` build no unit-test harness of their own
//! (`[lib] test = false`: it would compile and link the crate once more);
//! their tests live here and in `verifier/tests/it`. A unit test added to
//! their `src/` would silently never run, so this fails instead.

use infernet_tests::repo_root;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn crates_without_a_unit_test_harness_have_no_unit_tests() {
    let mut found = Vec::new();
    let mut files = Vec::new();
    for dir in ["verifier/src", "tests/src"] {
        rust_files(&repo_root().join(dir), &mut files);
    }
    assert!(files.len() > 5, "sources not found: {files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with("#[test]")
                || t.starts_with("#[cfg(test)]")
                || t.starts_with("#[tokio::test")
            {
                found.push(format!("{}:{}", f.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unit tests in a crate whose harness is off would never run; move them to \
         tests/tests/it or verifier/tests/it: {found:?}"
    );
}
