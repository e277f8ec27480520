//! The `spec` fuzz target's seeds and findings (`fuzz/corpus/spec/seed-*`,
//! `fuzz/regressions/spec/`), replayed against the target's own checks, which this file includes
//! (docs/testing.md, "Fuzzing").

#[allow(dead_code)]
#[path = "../../../fuzz/src/spec.rs"]
mod checks;
#[allow(dead_code)]
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn spec_seeds_and_regressions() {
    let fuzz = replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"));
    let inputs = replay::inputs(&fuzz, "spec");
    assert!(inputs.len() >= 5, "the seeds are there");
    replay::replay(&inputs, checks::spec);
}
