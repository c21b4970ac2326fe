//! Golden captures on disk and the vendor scripts that make them (the golden wire tests).
#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::path::Path;

/// The `*.xml` files of a directory, by file name.
pub fn xml_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Runs `tests/<script>` with the Python named by `$python_var` (default `python3`) and `args`;
/// fails the test, with the script's stderr, unless it succeeds.
pub fn run_script(python_var: &str, script: &str, args: &[&std::ffi::OsStr]) {
    let python = std::env::var(python_var).unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let run =
        std::process::Command::new(&python).arg(&script).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {python} (set {python_var} to a Python with the vendor's client): {e}")
        });
    assert!(
        run.status.success(),
        "{} failed ({}): {}",
        script.display(),
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
}
