//! ARCHITECTURE.md invariant: core does no IO and reads no clock.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir)
        .expect("reading core sources")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            // Comments may talk about IO; code may not.
            let code: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            out.push((path.display().to_string(), code.join("\n")));
        }
    }
}

#[test]
fn core_never_does_io_or_reads_the_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 5, "found the core sources");
    let forbidden = [
        "tokio",
        "std::fs",
        "std::net",
        "std::process",
        "Instant::now",
        "SystemTime::now",
        "thread_rng",
        "std::env::var",
    ];
    for (path, text) in &files {
        for word in forbidden {
            assert!(
                !text.contains(word),
                "{path} uses {word}: core must stay pure"
            );
        }
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("core Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or("")
        .split("[dev-dependencies]")
        .next()
        .unwrap_or("");
    for dep in ["tokio", "rusqlite", "hyper", "axum", "nix"] {
        assert!(!deps.contains(dep), "core depends on {dep}");
    }
}
