//! Replaying fuzz inputs in ordinary tests: the owning crates' `fuzz_regressions` tests include
//! this file and the target's checks, and run every committed seed
//! (`fuzz/corpus/<target>/seed-*`) and every found input (`fuzz/regressions/<target>/*`)
//! through them. Inputs of bugs that are known and still open live in
//! `fuzz/regressions/<target>/open/<bug>/` and are expected to fail (see `http1::KNOWN_OPEN`).

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// One input file: its path relative to `fuzz/` and its bytes.
pub struct Input {
    pub name: String,
    pub data: Vec<u8>,
}

/// `fuzz/` seen from a crate of the workspace (`crates/<name>`).
pub fn fuzz_dir(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../../fuzz")
}

fn files(fuzz: &Path, dir: &str, keep: impl Fn(&str) -> bool) -> Vec<Input> {
    let Ok(entries) = fs::read_dir(fuzz.join(dir)) else {
        return Vec::new();
    };
    let mut out: Vec<Input> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| p.file_name().is_some_and(|n| keep(&n.to_string_lossy())))
        .map(|p| Input {
            name: p
                .strip_prefix(fuzz)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned(),
            data: fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The committed seeds and the regressions of `target`.
pub fn inputs(fuzz: &Path, target: &str) -> Vec<Input> {
    let mut all = files(fuzz, &format!("corpus/{target}"), |n| {
        n.starts_with("seed-")
    });
    all.extend(files(fuzz, &format!("regressions/{target}"), |_| true));
    all
}

/// The inputs of the known open bug `bug` found by `target`.
pub fn open_inputs(fuzz: &Path, target: &str, bug: &str) -> Vec<Input> {
    files(fuzz, &format!("regressions/{target}/open/{bug}"), |_| true)
}

/// The bugs with a directory of inputs under `fuzz/regressions/<target>/open/`.
pub fn open_bugs(fuzz: &Path, target: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(fuzz.join(format!("regressions/{target}/open"))) else {
        return Vec::new();
    };
    let mut bugs: Vec<String> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    bugs.sort();
    bugs
}

/// Runs `check` on every input; fails naming each input whose check failed, and why.
pub fn replay(inputs: &[Input], check: impl Fn(&[u8])) {
    let failed: Vec<String> = inputs
        .iter()
        .filter_map(|input| {
            panic::catch_unwind(AssertUnwindSafe(|| check(&input.data)))
                .err()
                .map(|e| format!("{}: {}", input.name, message(&*e)))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs fail their fuzz checks:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

/// The panic message of `check`, if it panics.
pub fn fails(check: impl FnOnce()) -> Option<String> {
    panic::catch_unwind(AssertUnwindSafe(check))
        .err()
        .map(|e| message(&*e))
}

fn message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}
