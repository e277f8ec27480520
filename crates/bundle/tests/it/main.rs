//! Integration tests of jarfleet-bundle: one binary, a shared `helper`.

mod embed;
mod fuzz_regressions;
mod helper;
mod refusals;
mod render;
mod roundtrip;

/// The `bundle` fuzz target's checks and the replay helpers (fuzz/), for `fuzz_regressions`.
#[allow(dead_code)]
#[path = "../../../../fuzz/src/bundle.rs"]
mod fuzz_checks;
#[allow(dead_code)]
#[path = "../../../../fuzz/src/replay.rs"]
mod fuzz_replay;
