//! The bundled example manifests (examples/, recursively), for the tests that check
//! them offline, on the real API server, and as the property tests' seed corpus.

use std::path::PathBuf;

/// Every `.yaml` file under examples/, sorted.
pub fn example_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}
