//! ARCHITECTURE.md invariant: only the control loop builds a loop event. Shims, probes, the
//! balancer, the API, etcd watches and signal handlers each send their own message type, which
//! the loop's closed `Event` wraps (`crates/daemon/src/control/event.rs`).

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of `text` that name the loop's event type with a path (`Event::…`), not another
/// type whose name ends in `Event` (`ShimEvent::`, `WatchEvent::`).
fn loop_event_paths(text: &str) -> Vec<(usize, String)> {
    let needle = ["Event", "::"].concat();
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let bytes = line.as_bytes();
        let named = line.match_indices(&needle).any(|(at, _)| {
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_')
        });
        if named {
            found.push((n + 1, line.trim().to_string()));
        }
    }
    found
}

#[test]
fn the_scan_tells_the_loop_event_from_other_event_types() {
    // Built from pieces, so this file does not name the path itself.
    let e = ["Event", "::"].concat();
    let text = format!(
        "let a = Shim{e}Lost;\nlet b = jarfleet_etcd::Watch{e}Reconnected;\n// {e}Api in a comment\nlet c = {e}Api(req);\nlet d = crate::control::{e}Notice(n);"
    );
    let lines: Vec<usize> = loop_event_paths(&text)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(lines, vec![4, 5]);
}

#[test]
fn no_module_outside_the_loop_builds_a_loop_event() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crates folder");
    let control = crates.join("daemon").join("src").join("control");
    let mut files = Vec::new();
    sources(crates, &mut files);
    assert!(files.len() > 20, "found the workspace's sources");
    let mut offenders = Vec::new();
    for path in files.iter().filter(|p| !p.starts_with(&control)) {
        let text = std::fs::read_to_string(path).expect("reading a source file");
        for (line, code) in loop_event_paths(&text) {
            offenders.push(format!("{}:{line}: {code}", path.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "only crates/daemon/src/control/ builds a loop event; send the producer's own type \
         (ApiRequest, Notice, ShimNote, ProbeResult, EtcdNote, BalancerNote, Refreshed, \
         ConfigPrepared, Trained) with `.into()`:\n{}",
        offenders.join("\n")
    );
}
