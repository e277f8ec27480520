//! The `bundle` fuzz target's seeds and findings (`fuzz/corpus/bundle/seed-*`,
//! `fuzz/regressions/bundle/`), replayed against the target's own checks (`fuzz/src/bundle.rs`,
//! included by `main.rs`; docs/testing.md, "Fuzzing"). The seeds are made by the packer:
//! `JARFLEET_WRITE_FUZZ_SEEDS=1 cargo nextest run -p jarfleet-bundle -E 'test(fuzz_seeds)'`
//! rewrites them.

use std::fs;
use std::path::PathBuf;

use jarfleet_bundle::{Bundle, PackSpec, pack_writer};

use crate::fuzz_checks;
use crate::fuzz_replay as replay;
use crate::helper;

fn fuzz() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

fn packed(spec: &PackSpec) -> Vec<u8> {
    let mut out = Vec::new();
    pack_writer(spec, &mut out).expect("pack a seed");
    out
}

/// The seeds: the round-trip fixture (templates, hooks, a JRE with symlinks) as a `.jfb` and as
/// its tar (which the target compresses itself), and a jar-only bundle with a name longer than
/// a tar header holds (a GNU long-name record).
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let orders = packed(&helper::fixture(&tmp.path().join("orders")));
    let jar = tmp.path().join("small/app.jar");
    helper::write(&jar, helper::JAR, 0o644);
    let config = tmp.path().join("small/config");
    let long = format!("{}/{}.properties", "nested".repeat(12), "n".repeat(40));
    helper::write(&config.join(long), b"a=${A:1}\n", 0o644);
    let small = packed(&PackSpec {
        name: "small".into(),
        version: "1".into(),
        jar,
        config_dir: Some(config),
        ..PackSpec::default()
    });
    let tar = |jfb: &[u8]| zstd::decode_all(jfb).expect("decompress a seed");
    vec![
        ("seed-orders.tar", tar(&orders)),
        ("seed-small-long-name.tar", tar(&small)),
        ("seed-orders.jfb", orders),
    ]
}

#[test]
fn fuzz_seeds_are_valid_bundles() {
    let dir = fuzz().join("corpus/bundle");
    if std::env::var_os("JARFLEET_WRITE_FUZZ_SEEDS").is_some() {
        fs::create_dir_all(&dir).expect("seed dir");
        for (name, bytes) in seeds() {
            fs::write(dir.join(name), bytes).expect("write a seed");
        }
    }
    let inputs = replay::inputs(&fuzz(), "bundle");
    let seeds: Vec<_> = inputs
        .iter()
        .filter(|i| i.name.contains("/seed-"))
        .collect();
    assert!(seeds.len() >= 3, "the seeds are there");
    for seed in seeds {
        let stream = if seed.data.starts_with(&fuzz_checks::ZSTD_MAGIC) {
            seed.data.clone()
        } else {
            zstd::encode_all(seed.data.as_slice(), 1).expect("compress")
        };
        if let Err(e) = Bundle::verify(stream.as_slice()) {
            panic!(
                "{} is not a valid bundle ({e}): rewrite the seeds with JARFLEET_WRITE_FUZZ_SEEDS=1",
                seed.name
            );
        }
    }
}

#[test]
fn bundle_seeds_and_regressions() {
    let inputs = replay::inputs(&fuzz(), "bundle");
    let scratch = tempfile::tempdir().expect("tempdir");
    replay::replay(&inputs, |data| fuzz_checks::bundle(data, scratch.path()));
}
