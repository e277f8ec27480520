//! The fuzz targets' seeds and findings for the proxy's HTTP/1 code (`fuzz/corpus/<target>/seed-*`,
//! `fuzz/regressions/<target>/`), replayed against the targets' own checks, which this file
//! includes (docs/testing.md, "Fuzzing"). Known bugs that are still open have their inputs in
//! `fuzz/regressions/<target>/open/<bug>/`: they must still fail without their exemption.

use std::collections::BTreeSet;
use std::path::PathBuf;

#[allow(dead_code)]
#[path = "../../../fuzz/src/http1.rs"]
mod checks;
#[allow(dead_code)]
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

fn fuzz() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn http1_request_seeds_and_regressions() {
    let inputs = replay::inputs(&fuzz(), "http1_request");
    assert!(inputs.len() >= 5, "the seeds are there");
    replay::replay(&inputs, checks::request);
}

#[test]
fn http1_response_seeds_and_regressions() {
    let inputs = replay::inputs(&fuzz(), "http1_response");
    assert!(inputs.len() >= 5, "the seeds are there");
    replay::replay(&inputs, checks::response);
}

#[test]
fn chunked_seeds_and_regressions() {
    let inputs = replay::inputs(&fuzz(), "chunked");
    assert!(inputs.len() >= 3, "the seeds are there");
    replay::replay(&inputs, checks::chunked);
}

type Tolerating = fn(&[u8], &[&str]);

/// Each known open bug has inputs, and each of them fails without the bug's exemption (and
/// passes with all of them). When one passes, the bug is fixed: its exemption goes.
#[test]
fn known_open_bugs_still_fail_without_their_exemption() {
    let targets: [(&str, Tolerating); 2] = [
        ("http1_request", checks::request_tolerating),
        ("http1_response", checks::response_tolerating),
    ];
    let mut with_inputs = BTreeSet::new();
    for (target, check) in targets {
        for bug in replay::open_bugs(&fuzz(), target) {
            assert!(
                checks::KNOWN_OPEN.contains(&bug.as_str()),
                "fuzz/regressions/{target}/open/{bug}/ is not in KNOWN_OPEN (fuzz/src/http1.rs): \
                 if the bug is fixed, move its inputs up to fuzz/regressions/{target}/"
            );
            let others: Vec<&str> = checks::KNOWN_OPEN
                .iter()
                .copied()
                .filter(|b| *b != bug)
                .collect();
            let inputs = replay::open_inputs(&fuzz(), target, &bug);
            replay::replay(&inputs, |data| check(data, checks::KNOWN_OPEN));
            for input in &inputs {
                assert!(
                    replay::fails(|| check(&input.data, &others)).is_some(),
                    "{} passes its checks now: bug {bug} is fixed. Remove it from KNOWN_OPEN \
                     (fuzz/src/http1.rs) and move fuzz/regressions/{target}/open/{bug}/* up to \
                     fuzz/regressions/{target}/",
                    input.name
                );
                with_inputs.insert(bug.clone());
            }
        }
    }
    for bug in checks::KNOWN_OPEN {
        assert!(
            with_inputs.contains(*bug),
            "known bug {bug} has no inputs in fuzz/regressions/<target>/open/{bug}/"
        );
    }
}
