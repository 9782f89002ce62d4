//! Test-only randomness stays in tests: `SeededEntropy` (deterministic, NOT secure) may
//! appear only where determinism is the point, never in an example a user runs or in
//! library code (doc examples included, since users copy them).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::Result;

/// The name that must not appear outside tests.
const NAME: &str = "SeededEntropy";

/// Files allowed to name it, each with the reason. Paths are relative to the root.
const ALLOWED: &[(&str, &str)] = &[
    ("crates/chorus-framing/src/entropy.rs", "its definition"),
    (
        "crates/chorus-framing/src/lib.rs",
        "its re-export under `sim`",
    ),
    ("crates/chorus-index/src/sim.rs", "the seeded simulator"),
    (
        "examples/index-sim.rs",
        "the seeded simulator's command line",
    ),
    (
        "examples/call-quality.rs",
        "a measurement on a virtual clock: the same seed must give the same score",
    ),
    (
        "crates/chorus-crypto/src/at_rest.rs",
        "`fuzz_open`, compiled only under test or the private `_fuzz` feature",
    ),
];

/// Whether a source file is test or fuzz code by its name.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    matches!(name, "tests.rs" | "fuzz.rs") || path.components().any(|c| c.as_os_str() == "tests")
}

/// The lines of `text` that name [`NAME`] before its first `#[cfg(test)]` (a file's
/// test module comes last, by STYLE.md §9), as `(line number, line)`.
fn offending_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .filter(|(_, line)| line.contains(NAME))
        .map(|(i, line)| (i + 1, line.trim()))
        .collect()
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Fails naming each place outside tests that uses `SeededEntropy`.
pub(crate) fn check(root: &Path) -> Result {
    let mut files = Vec::new();
    rust_files(&root.join("examples"), &mut files);
    rust_files(&root.join("src"), &mut files);
    if let Ok(crates) = fs::read_dir(root.join("crates")) {
        for krate in crates.flatten() {
            rust_files(&krate.path().join("src"), &mut files);
        }
    }
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(root).unwrap_or(file);
        let allowed = ALLOWED.iter().any(|(p, _)| relative == Path::new(p));
        if allowed || is_test_file(relative) {
            continue;
        }
        let text = fs::read_to_string(file)
            .map_err(|e| format!("could not read {}: {e}", file.display()))?;
        for (n, line) in offending_lines(&text) {
            found.push(format!("{}:{n}: {line}", relative.display()));
        }
    }
    if found.is_empty() {
        eprintln!("test-only randomness: ok ({} files)", files.len());
        return Ok(());
    }
    Err(format!(
        "{NAME} (deterministic, not secure) outside tests; use chorus_crypto::SystemEntropy:\n{}",
        found.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_uses_before_the_test_module_only() {
        let text = "//! use chorus_framing::SeededEntropy;\nfn f() {}\n\
                    #[cfg(test)]\nmod tests { use chorus_framing::SeededEntropy; }\n";
        assert_eq!(
            offending_lines(text),
            vec![(1, "//! use chorus_framing::SeededEntropy;")]
        );
        assert!(offending_lines("fn f() { SystemEntropy::new(); }").is_empty());
    }

    #[test]
    fn test_and_fuzz_files_are_exempt() {
        assert!(is_test_file(Path::new(
            "crates/chorus-nat/src/ice/tests.rs"
        )));
        assert!(is_test_file(Path::new("crates/chorus-nat/src/fuzz.rs")));
        assert!(!is_test_file(Path::new("examples/demo/paths.rs")));
    }

    #[test]
    fn the_workspace_keeps_seeded_entropy_in_tests() {
        check(&crate::cmd::root()).unwrap();
    }
}
