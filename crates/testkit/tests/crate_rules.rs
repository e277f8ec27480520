//! ARCHITECTURE.md invariants about the crates themselves, checked on the sources:
//!
//! - each crate depends only on the jarfleet crates its row of the code map allows (the
//!   "may depend on" column; `jarfleet-testkit` as a dev-dependency anywhere), and every crate
//!   has a row;
//! - no crate but the daemon uses `jarfleet_daemon::` beyond `run`, `DaemonConfig`, `Stop` and
//!   the façade at its root;
//! - `unsafe` lives in three fenced modules only, and every crate takes the workspace's lints (which deny
//!   `unsafe_code`).
//!
//! It lives in the test-only crate so that it builds in seconds, and reads the workspace from
//! this crate's parent directories.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The short names of the workspace's crates, as the code map names them (`crates/NAME`).
const SHORT: [&str; 15] = [
    "core",
    "api",
    "java",
    "trust",
    "bundle",
    "fetch",
    "etcd",
    "cluster",
    "shim",
    "host",
    "daemon",
    "proxy",
    "dataplane",
    "jarfleet",
    "testkit",
];

/// What the CLI may use of the daemon crate: running it, and the documented façade.
const DAEMON_FACADE: [&str; 10] = [
    "run",
    "DaemonConfig",
    "Stop",
    "DaemonLog",
    "load_api_settings",
    "read_secret",
    "TokenFileError",
    "free_bytes",
    "Inspection",
    "inspect_store",
];

/// Integration tests of the CLI that open the store itself, to make the store an older jarfleet
/// left behind (release ids of the old scheme): only the store, only there.
const TESTS_THAT_FORGE_A_STORE: [&str; 1] = ["crates/jarfleet/tests/it/release_id.rs"];

/// The three modules allowed to hold `unsafe` code (and the one test: a counting allocator).
const UNSAFE_ALLOWED: [&str; 4] = [
    "crates/shim/src/spawn.rs",
    "crates/shim/src/footprint.rs",
    "crates/shim/src/fdpass.rs",
    "crates/bundle/tests/memory.rs",
];

fn workspace() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .unwrap_or_else(|| panic!("{} has no workspace two levels up", here.display()))
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The crate directories under `crates/`.
fn crate_dirs(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("crates"))
        .unwrap_or_else(|e| panic!("listing {}/crates: {e}", root.display()))
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The code map's "may depend on" column, per crate: the jarfleet crates it names ("all":
/// every one).
fn allowed_by_code_map(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut rules = BTreeMap::new();
    for line in architecture.lines() {
        let Some(rest) = line.strip_prefix("| `crates/") else {
            continue;
        };
        let Some((name, _)) = rest.split_once('`') else {
            continue;
        };
        let cells: Vec<&str> = line.trim_end().trim_end_matches('|').split(" | ").collect();
        let last = cells.last().copied().unwrap_or_default();
        let words: BTreeSet<&str> = last
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let allowed: BTreeSet<String> = if words.contains("all") {
            SHORT
                .iter()
                .filter(|s| **s != name)
                .map(|s| s.to_string())
                .collect()
        } else {
            SHORT
                .iter()
                .filter(|s| words.contains(*s))
                .map(|s| s.to_string())
                .collect()
        };
        rules.insert(name.to_string(), allowed);
    }
    rules
}

/// The jarfleet crates a manifest's section lists (`jarfleet-NAME = …` → `NAME`; the binary
/// crate `jarfleet` is never a dependency).
fn jarfleet_deps(manifest: &str, section: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if inside && let Some(rest) = line.strip_prefix("jarfleet-") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn each_crate_depends_only_on_what_its_code_map_row_allows() {
    let root = workspace();
    let rules = allowed_by_code_map(&read(&root.join("ARCHITECTURE.md")));
    let dirs = crate_dirs(&root);
    assert!(dirs.len() >= 12, "found the crates: {dirs:?}");
    let mut problems = Vec::new();
    for dir in &dirs {
        assert!(
            SHORT.contains(&dir.as_str()),
            "crates/{dir} is new: add it to SHORT in {}",
            file!()
        );
        let Some(allowed) = rules.get(dir) else {
            problems.push(format!(
                "crates/{dir} has no row in ARCHITECTURE.md's code map"
            ));
            continue;
        };
        let manifest = read(&root.join("crates").join(dir).join("Cargo.toml"));
        for dep in jarfleet_deps(&manifest, "[dependencies]") {
            if !allowed.contains(&dep) {
                problems.push(format!(
                    "crates/{dir} depends on jarfleet-{dep}, which its code map row does not allow ({allowed:?})"
                ));
            }
        }
        for dep in jarfleet_deps(&manifest, "[dev-dependencies]") {
            if dep != "testkit" && !allowed.contains(&dep) {
                problems.push(format!(
                    "crates/{dir} dev-depends on jarfleet-{dep}, which its code map row does not allow ({allowed:?})"
                ));
            }
        }
        if !manifest.contains("[lints]\nworkspace = true") {
            problems.push(format!(
                "crates/{dir}/Cargo.toml does not take the workspace's lints ([lints] workspace = true)"
            ));
        }
    }
    // The layering the split is for, whatever the table says.
    for (lower, upper) in [("shim", "daemon"), ("shim", "host"), ("host", "daemon")] {
        if rules.get(lower).is_some_and(|a| a.contains(upper)) {
            problems.push(format!(
                "the code map lets crates/{lower} depend on {upper}: it must not"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_code_map_rules_are_read_as_written() {
    let table = "| `crates/a` (`x`) | what, with core and daemon in prose | core, api |\n\
                 | `crates/jarfleet` | the binary | all |\n\
                 | `crates/proxy` (`p`) | data plane | nothing of ours (tokio) |\n";
    let rules = allowed_by_code_map(table);
    assert_eq!(rules["a"], BTreeSet::from(["core".into(), "api".into()]));
    assert_eq!(rules["jarfleet"].len(), SHORT.len() - 1);
    assert!(rules["proxy"].is_empty());
    let manifest = "[dependencies]\njarfleet-core = { workspace = true }\njarfleet-api.workspace = true\n\
                    serde = \"1\"\n[dev-dependencies]\njarfleet-testkit = { workspace = true }\n";
    assert_eq!(
        jarfleet_deps(manifest, "[dependencies]"),
        BTreeSet::from(["core".into(), "api".into()])
    );
    assert_eq!(
        jarfleet_deps(manifest, "[dev-dependencies]"),
        BTreeSet::from(["testkit".into()])
    );
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every Rust file of every crate (sources, tests, examples, benches, build scripts).
fn all_sources(root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    sources(&root.join("crates"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            let text = read(&p);
            // Comments may name anything; code may not.
            let code: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            (rel, without_strings(&code.join("\n")))
        })
        .collect()
}

/// `code` with the contents of its string literals left out (messages may name anything).
fn without_strings(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut chars = code.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                _ => {}
            }
        } else if c == '\'' && chars.peek() == Some(&'"') {
            // The char literal '"'.
            out.push(c);
            out.push('"');
            chars.next();
        } else {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// The names used after `jarfleet_daemon::` in `code`: `jarfleet_daemon::a::b` gives `a`,
/// `jarfleet_daemon::{a, b::c}` gives `a` and `b`.
fn daemon_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("jarfleet_daemon::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "jarfleet_daemon::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn nothing_outside_the_daemon_reaches_past_its_facade() {
    let root = workspace();
    let lib = read(&root.join("crates/daemon/src/lib.rs"));
    for name in DAEMON_FACADE {
        assert!(
            lib.contains(&format!("pub async fn {name}("))
                || lib.contains(&format!("pub struct {name}"))
                || lib.contains(&format!("pub enum {name}"))
                || lib.contains(&format!("{name};"))
                || lib.contains(&format!("{name},"))
                || lib.contains(&format!(" {name}}}")),
            "the façade names {name}, which crates/daemon/src/lib.rs does not define or re-export"
        );
    }
    let mut problems = Vec::new();
    let files = all_sources(&root);
    assert!(files.len() > 100, "found the sources: {}", files.len());
    for (path, code) in &files {
        if path.starts_with("crates/daemon/") || path.ends_with(file!()) {
            continue;
        }
        for name in daemon_paths(code) {
            let forges_a_store =
                TESTS_THAT_FORGE_A_STORE.contains(&path.as_str()) && name == "store";
            if !DAEMON_FACADE.contains(&name.as_str()) && !forges_a_store {
                problems.push(format!(
                    "{path} uses jarfleet_daemon::{name}: daemon internals; use jarfleet-host or jarfleet-shim, or add it to the façade (crates/daemon/src/lib.rs, ARCHITECTURE.md)"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn daemon_paths_are_found_in_every_form() {
    let code = "use jarfleet_daemon::{DaemonConfig, Stop};\n\
                let x = jarfleet_daemon::prepare::prepare(&c);\n\
                metric(\"jarfleet_daemon_log_dropped_lines_total\");\n\
                use jarfleet_daemon::{self as d, store::Store};\n\
                not_jarfleet_daemon::x();";
    assert_eq!(
        daemon_paths(code),
        ["DaemonConfig", "Stop", "prepare", "self", "store"]
    );
}

#[test]
fn string_literals_are_left_out() {
    assert_eq!(
        without_strings(r#"f("unsafe \" jarfleet_daemon::x", '"', 'a'); unsafe {}"#),
        r#"f("", '"', 'a'); unsafe {}"#
    );
}

#[test]
fn unsafe_lives_in_the_fenced_modules_only() {
    let root = workspace();
    let workspace_manifest = read(&root.join("Cargo.toml"));
    assert!(
        workspace_manifest.contains("unsafe_code = \"deny\""),
        "the workspace's Cargo.toml must deny unsafe_code"
    );
    let mut problems = Vec::new();
    for (path, code) in all_sources(&root) {
        let has_unsafe = code
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w == "unsafe" || w == "unsafe_code");
        if has_unsafe && !UNSAFE_ALLOWED.contains(&path.as_str()) && !path.ends_with(file!()) {
            problems.push(format!(
                "{path} holds unsafe code (or allows it): only {UNSAFE_ALLOWED:?} may"
            ));
        }
    }
    for path in UNSAFE_ALLOWED {
        assert!(
            root.join(path).is_file(),
            "{path}, allowed to hold unsafe code, is gone: update ARCHITECTURE.md and this test"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The state dir's names that only `crates/host/src/paths.rs` may join onto a path.
const STATE_NAMES: [&str; 11] = [
    "run",
    "releases",
    "cache",
    "journal",
    "cds",
    "logs",
    "dumps",
    "instances",
    "state.db",
    "daemon.log",
    "daemon.lock",
];

/// The code of a source file without its unit tests (everything from `#[cfg(test)]` on).
fn before_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// `.join("NAME")` of a state dir name in `code` (the raw text: the names are string literals).
fn state_joins(code: &str) -> Vec<&'static str> {
    STATE_NAMES
        .iter()
        .copied()
        .filter(|name| code.contains(&format!(".join(\"{name}\")")))
        .collect()
}

#[test]
fn state_paths_are_built_only_by_paths() {
    let root = workspace();
    let mut problems = Vec::new();
    let mut scanned = 0;
    for krate in ["shim", "host", "daemon", "jarfleet"] {
        let mut files = Vec::new();
        sources(&root.join("crates").join(krate).join("src"), &mut files);
        for path in files {
            if path.ends_with("host/src/paths.rs") {
                continue;
            }
            scanned += 1;
            let text = read(&path);
            for name in state_joins(before_tests(&text)) {
                problems.push(format!(
                    "{} joins \"{name}\" onto a path by hand: use jarfleet_host::paths::StateDir (add a method there if it lacks one)",
                    path.display()
                ));
            }
        }
    }
    assert!(scanned > 50, "found the sources: {scanned}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn hand_built_state_paths_are_seen() {
    let code = "let a = dirs.root().join(\"releases\").join(app);\nlet b = x.join(\"etc\");";
    assert_eq!(state_joins(code), ["releases"]);
    assert_eq!(
        before_tests("fn a() {}\n#[cfg(test)]\nmod tests { x.join(\"run\") }"),
        "fn a() {}\n"
    );
}
