//! The simulators stay independent of the product they test: no netfold crate among their
//! dependencies, and no netfold path in their source. A peer that borrowed netfold's codecs or
//! constants would agree with netfold's mistakes, and the tests against it could not see them.

use std::path::{Path, PathBuf};

const NETFOLD_CRATES: [&str; 5] = ["adapters", "engine", "store", "replay", "netfold"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_netfold_crate_is_a_dependency() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else { continue };
        for name in deps.keys() {
            assert!(!NETFOLD_CRATES.contains(&name.as_str()), "sims/Cargo.toml [{section}] names netfold's `{name}`");
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_names_a_netfold_crate() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    assert!(files.len() > 5, "the simulators' sources were found: {files:?}");
    let this = root().join("tests").join("independence.rs");
    for file in files.iter().filter(|f| **f != this) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for krate in NETFOLD_CRATES {
                let path = format!("{krate}::");
                // `base64::engine::…` is base64's module, not netfold's crate.
                let hit = line.match_indices(&path).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == ':')
                });
                assert!(!hit, "{}:{}: names netfold's `{krate}` crate: {line}", file.display(), n + 1);
            }
        }
    }
}
