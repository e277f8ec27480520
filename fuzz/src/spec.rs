//! Properties of the fleet-spec pipeline (`jarfleet_core::spec::load`), for the fuzz target
//! `spec` and for the regression test that replays its inputs
//! (`crates/core/tests/fuzz_regressions.rs` includes this file).

use std::path::Path;

use jarfleet_core::spec::{self, FleetSpec};

/// A fixed environment for `${VAR}` interpolation: set, empty, and (everything else) unset
/// variables, and instance variables that must never be read from it.
fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/deploy".into()),
        "VERSION" => Some("2.1.0".into()),
        "JARFLEET_STATE" => Some("/var/lib/jarfleet".into()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("$${X}".into()),
        "PORT" => Some("1".into()),
        _ => None,
    }
}

/// `spec`: the input is a spec file's bytes (`jarfleet` reads it into a `String`, so only
/// UTF-8 reaches the parser).
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/srv/fleet/jarfleet.toml");
    match spec::load(text, file, &env) {
        Ok(fleet) => {
            assert!(!fleet.apps.is_empty(), "a spec without apps loaded");
            // The CLI sends the spec to the daemon as JSON and the daemon stores it so: what
            // loads must survive that unchanged.
            let json = serde_json::to_string(&fleet)
                .unwrap_or_else(|e| panic!("a loaded spec does not serialize: {e}\n{text:?}"));
            let back: FleetSpec = serde_json::from_str(&json).unwrap_or_else(|e| {
                panic!("a loaded spec does not read back: {e}\n{json}\nfrom {text:?}")
            });
            assert!(
                back == fleet,
                "a loaded spec changes through JSON:\n{fleet:#?}\n{back:#?}\nfrom {text:?}"
            );
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error: {text:?}");
            let lines = text.split('\n').count();
            for e in &errors {
                assert!(
                    e.line >= 1 && e.line <= lines && e.column >= 1,
                    "error outside the file ({lines} lines): {e:?}\n{text:?}"
                );
                let line_chars = text
                    .split('\n')
                    .nth(e.line - 1)
                    .map_or(0, |l| l.chars().count());
                assert!(
                    e.column <= line_chars + 1,
                    "error past the end of line {} ({line_chars} characters): {e:?}\n{text:?}",
                    e.line
                );
                // What users read is rendered from it.
                let _ = e.to_string();
            }
        }
    }
}
