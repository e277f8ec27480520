//! Helpers for the core's unit tests: a short-duration spec loaded through the real spec loader,
//! exits and processes as a shim would report them, and a compact view of effects.
//!
//! Time is always an argument: nothing here reads the clock.

use std::path::Path;

use crate::Millis;
use crate::instance::{Effect, ExitInfo, Input, Instance, ProcessRef};
use crate::spec::{self, AppSpec};

/// An arbitrary origin far from zero, so "at 0" mistakes cannot pass by accident.
pub const T0: Millis = 1_700_000_000_000;

/// Jitter that makes the backoff factor exactly 1.0.
pub const NO_JITTER: f64 = 0.5;

/// One app, `web`, with durations short enough to read in tables. `stop_timeout` (7 s) differs
/// from every other duration so a `StopProcess` grace taken from the wrong field shows.
pub const SPEC: &str = r#"
[apps.web]
artifact = "web.jar"
instances = 2
ports = "9100-9199"
args = ["--port=${PORT}"]
env = { MODE = "prod" }
java = { opts = ["-Xmx64m"] }

[apps.web.health]
tcp = true
interval = "1s"
timeout = "1s"
failures = 2
start_timeout = "10s"
unhealthy_restart_after = "5s"

[apps.web.restart]
backoff_initial = "1s"
backoff_max = "60s"
reset_after = "30s"

[apps.web.stop]
stop_timeout = "7s"
drain_timeout = "3s"
"#;

/// Loads a spec text through [`spec::load`] and returns its only app.
pub fn load_app(text: &str) -> AppSpec {
    let fleet = match spec::load(text, Path::new("/srv/jarfleet.toml"), &|_| None) {
        Ok(fleet) => fleet,
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!("test spec does not load:\n{}", all.join("\n"));
        }
    };
    assert_eq!(fleet.apps.len(), 1, "test specs hold exactly one app");
    fleet.apps.into_values().next().expect("one app")
}

/// The app of [`SPEC`].
pub fn spec() -> AppSpec {
    load_app(SPEC)
}

/// [`SPEC`] with text replaced; each `from` must occur, so a typo cannot leave the spec unchanged.
pub fn spec_with(edits: &[(&str, &str)]) -> AppSpec {
    let mut text = SPEC.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` is not in the test spec");
        text = text.replace(from, to);
    }
    load_app(&text)
}

/// The process a shim reports after a spawn at `at`.
pub fn process(at: Millis) -> ProcessRef {
    ProcessRef {
        shim_pid: 4_241,
        pid: 4_242,
        port: 9_100,
        started_at: at,
    }
}

pub fn spawned(at: Millis) -> Input {
    Input::Spawned {
        process: process(at),
    }
}

pub fn probe(ok: bool) -> Input {
    Input::Probe {
        ok,
        error: (!ok).then(|| "HTTP 503".to_string()),
    }
}

/// An exit nobody asked for.
pub fn crash(code: Option<i32>, signal: Option<i32>, at: Millis) -> ExitInfo {
    ExitInfo {
        code,
        signal,
        stop_requested: false,
        killed_after_timeout: false,
        oom: false,
        hs_err: None,
        at,
    }
}

/// An exit after our own SIGTERM.
pub fn stopped(code: Option<i32>, signal: Option<i32>, at: Millis) -> ExitInfo {
    ExitInfo {
        stop_requested: true,
        ..crash(code, signal, at)
    }
}

pub fn exited(exit: ExitInfo) -> Input {
    Input::Exited { exit }
}

/// Effects as short words: a note by its kind (`"Ready"`), anything else by its `Debug` form
/// (`"Spawn"`, `"StopProcess { grace: 7s }"`).
pub fn shape(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Notify(note) => format!("{:?}", note.kind),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The messages of the notes among `effects`.
pub fn messages(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify(note) => Some(note.message.clone()),
            _ => None,
        })
        .collect()
}

/// An instance of `web` slot 0 created at `now`, release `r1`.
pub fn fresh(now: Millis) -> Instance {
    Instance::new("web", 0, "r1", now)
}
