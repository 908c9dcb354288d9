//! The small text files shipped beside a model's weights (sentence-
//! transformers' `modules.json`, `sentence_bert_config.json`,
//! `1_Pooling/config.json`, a `vocab.txt`...). They are found and read once,
//! when the model is opened, so what a plugin reads through `weights.file`
//! is what the weights hash covers, whatever happens to the directory later.

use std::collections::BTreeMap;
use std::path::Path;

/// Largest file kept, in bytes.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Most files kept per model (the first ones in path order).
pub const MAX_FILES: usize = 64;

/// Path (relative, `/`-separated) to text, in path order.
pub type ModelFiles = BTreeMap<String, String>;

/// The `*.json` and `*.txt` files of at most [`MAX_FILE_BYTES`] in `dir`
/// and in its non-hidden subdirectories one level down. Larger, non-UTF-8
/// and unreadable files are left out (logged), as are files past
/// [`MAX_FILES`]; only listing `dir` itself can fail.
pub fn read(dir: &Path) -> std::io::Result<ModelFiles> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            let Ok(sub) = std::fs::read_dir(&path) else {
                continue;
            };
            for inner in sub.flatten() {
                let inner_name = inner.file_name().to_string_lossy().into_owned();
                if !inner_name.starts_with('.') {
                    found.push((format!("{name}/{inner_name}"), inner.path()));
                }
            }
        } else {
            found.push((name, path));
        }
    }
    found.retain(|(rel, path)| {
        let text_like = path.extension().is_some_and(|x| x == "json" || x == "txt");
        text_like && !rel.contains('\\') && path.is_file()
    });
    found.sort();
    let mut files = ModelFiles::new();
    for (rel, path) in found {
        if files.len() == MAX_FILES {
            tracing::warn!(dir = %dir.display(), "more than {MAX_FILES} text files beside the weights; the rest are not offered to plugins");
            break;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.len() <= MAX_FILE_BYTES => {}
            Ok(m) => {
                tracing::debug!(file = %rel, bytes = m.len(), "not offered to plugins: over {MAX_FILE_BYTES} bytes");
                continue;
            }
            Err(e) => {
                tracing::debug!(file = %rel, "not offered to plugins: {e}");
                continue;
            }
        }
        match std::fs::read(&path).map(String::from_utf8) {
            Ok(Ok(text)) if text.len() as u64 <= MAX_FILE_BYTES => {
                files.insert(rel, text);
            }
            Ok(_) => {
                tracing::debug!(file = %rel, "not offered to plugins: not UTF-8 text (or it grew)")
            }
            Err(e) => tracing::debug!(file = %rel, "not offered to plugins: {e}"),
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_text_files_one_level_down_are_kept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("modules.json"), "[]").unwrap();
        std::fs::write(d.join("vocab.txt"), "a\nb").unwrap();
        std::fs::write(d.join("README.md"), "no").unwrap();
        std::fs::write(d.join(".hidden.json"), "{}").unwrap();
        std::fs::write(d.join("big.json"), vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        std::fs::write(d.join("binary.json"), [0xff, 0xfe]).unwrap();
        std::fs::create_dir_all(d.join("1_Pooling/deeper")).unwrap();
        std::fs::write(d.join("1_Pooling/config.json"), "{\"a\":1}").unwrap();
        std::fs::write(d.join("1_Pooling/deeper/x.json"), "{}").unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join(".git/config.json"), "{}").unwrap();
        let files = read(d).unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["1_Pooling/config.json", "modules.json", "vocab.txt"]
        );
        assert_eq!(files["1_Pooling/config.json"], "{\"a\":1}");
    }

    #[test]
    fn at_most_max_files_are_kept_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_FILES + 3 {
            std::fs::write(dir.path().join(format!("f{i:03}.json")), "{}").unwrap();
        }
        let files = read(dir.path()).unwrap();
        assert_eq!(files.len(), MAX_FILES);
        assert!(files.contains_key("f000.json") && !files.contains_key("f066.json"));
    }
}
