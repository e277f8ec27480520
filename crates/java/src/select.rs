//! Picking the JDK for an app.

use std::cmp::Reverse;

use jarfleet_core::javaver::VersionReq;

use crate::discover::Jdk;
use crate::error::{JavaError, NoMatch};

/// The best JDK in `jdks` for an app whose spec requires `req` (`java.version`) and whose jar
/// needs at least Java `min_feature` ([`crate::JarInfo::min_java_feature`]).
///
/// Candidates: JDKs with a known version whose feature version satisfies `req` and is
/// `>= min_feature`. Best = highest feature version; among equal feature versions a full JDK
/// (with `jcmd`/`javac`, for thread dumps) beats a JRE, then the newer update, then the
/// lexicographically smaller home path, so the choice is deterministic.
///
/// On failure the error lists every JDK in `jdks` and says how to fix it.
pub fn select<'a>(
    jdks: &'a [Jdk],
    req: Option<&VersionReq>,
    min_feature: u32,
) -> Result<&'a Jdk, JavaError> {
    let ok = |f: u32| f >= min_feature && req.is_none_or(|r| r.matches(f));
    let best = jdks
        .iter()
        .filter_map(|j| j.version.as_ref().map(|v| (j, v)))
        .filter(|(_, v)| ok(v.feature))
        .max_by_key(|(j, v)| (v.feature, j.is_jdk, (*v).clone(), Reverse(&j.home)))
        .map(|(j, _)| j);
    if let Some(jdk) = best {
        return Ok(jdk);
    }
    let lowest = match req {
        Some(r) => r.lowest_match_from(min_feature),
        None => Some(min_feature),
    };
    let suggest = lowest.map(|lo| {
        // Suggest a released LTS when one fits; for open-ended requirements nothing older
        // than 17 (older JDKs are no longer packaged by current distributions).
        let hi = req.and_then(VersionReq::max_feature).unwrap_or(u32::MAX);
        let from = if hi == u32::MAX { lo.max(17) } else { lo };
        KNOWN_LTS
            .iter()
            .copied()
            .find(|&f| f >= from && f <= hi)
            .unwrap_or(lo)
    });
    Err(JavaError::NoMatchingJdk(Box::new(NoMatch {
        required: req.map(|r| r.as_str().to_string()),
        min_feature,
        conflict: lowest.is_none(),
        suggest,
        found: jdks.to_vec(),
    })))
}

/// Released long-term-support feature versions, oldest first.
const KNOWN_LTS: [u32; 5] = [8, 11, 17, 21, 25];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{Source, Sources, discover_in};
    use crate::testutil::FakeJdk;
    use std::path::Path;

    fn req(s: &str) -> VersionReq {
        VersionReq::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fake homes under one JVM dir, discovered for real.
    fn jdks(dir: &Path, homes: &[(&str, Option<&str>, bool)]) -> Vec<Jdk> {
        for (name, version, jre) in homes {
            let mut fake = match version {
                Some(v) => FakeJdk::new(v).vendor("Test Vendor"),
                None => FakeJdk::without_release(),
            };
            if *jre {
                fake = fake.jre();
            }
            fake.create(&dir.join(name));
        }
        discover_in(&Sources {
            jvm_dirs: vec![dir.to_path_buf()],
            ..Sources::default()
        })
    }

    fn name(j: &Jdk) -> &str {
        j.home.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }

    #[test]
    fn picks_highest_matching_feature() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let all = jdks(
            tmp.path(),
            &[
                ("jdk-11", Some("11.0.22"), false),
                ("jdk-17", Some("17.0.15"), false),
                ("jdk-21", Some("21.0.3"), false),
                ("jdk-25", Some("25-ea"), false),
                ("mystery", None, false),
            ],
        );
        assert_eq!(all.len(), 5);
        let pick = |r: Option<&str>, min: u32| {
            let r = r.map(req);
            select(&all, r.as_ref(), min).map(|j| name(j).to_string())
        };
        let table: &[(Option<&str>, u32, &str)] = &[
            (None, 8, "jdk-25"),
            (Some("*"), 8, "jdk-25"),
            (Some("17"), 8, "jdk-17"),
            (Some(">=11, <21"), 8, "jdk-17"),
            (Some(">=11, <21"), 11, "jdk-17"),
            (Some("<=17"), 8, "jdk-17"),
            (Some("<17"), 8, "jdk-11"),
            (Some("21+"), 8, "jdk-25"),
            (Some(">17"), 8, "jdk-25"),
            (Some("<25"), 17, "jdk-21"),
            (Some("<25"), 21, "jdk-21"),
            (None, 22, "jdk-25"),
        ];
        for (r, min, want) in table {
            let got = pick(*r, *min).unwrap_or_else(|e| panic!("{r:?} min {min}: {e}"));
            assert_eq!(&got, want, "{r:?} min {min}");
        }
    }

    #[test]
    fn jdk_beats_jre_only_as_tie_break() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let all = jdks(
            tmp.path(),
            &[
                ("a-jre-21", Some("21.0.5"), true),
                ("b-jdk-21", Some("21.0.1"), false),
                ("c-jre-25", Some("25.0.1"), true),
            ],
        );
        // Higher feature wins even when it is only a JRE…
        let j = select(&all, None, 8).expect("match");
        assert_eq!(name(j), "c-jre-25");
        // …and within a feature version the JDK wins over a JRE with a newer update.
        let j = select(&all, Some(&req("21")), 8).expect("match");
        assert_eq!(name(j), "b-jdk-21");
    }

    #[test]
    fn deterministic_between_identical_jdks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut all = jdks(
            tmp.path(),
            &[
                ("x-17", Some("17.0.15"), false),
                ("y-17", Some("17.0.15"), false),
            ],
        );
        assert_eq!(name(select(&all, None, 8).expect("match")), "x-17");
        all.reverse();
        assert_eq!(name(select(&all, None, 8).expect("match")), "x-17");
    }

    #[test]
    fn mismatch_lists_every_jdk_and_how_to_fix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let all = jdks(
            tmp.path(),
            &[
                ("jdk-11", Some("11.0.22"), false),
                ("jdk-17", Some("17.0.15"), false),
                ("mystery", None, false),
            ],
        );
        let err = select(&all, Some(&req(">=21")), 11).expect_err("no 21");
        let text = err.to_string();
        for want in [
            "java.version = \">=21\" is required",
            "the jar needs Java 11 or newer",
            "found 3 Java installation(s)",
            "Java 11.0.22 (Test Vendor, JDK) at ",
            "Java 17.0.15 (Test Vendor, JDK) at ",
            "Java of unknown version (no release file)",
            "install a JDK 21",
            "apt-get install openjdk-21-jdk-headless",
            "set java.home",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        for j in &all {
            assert!(text.contains(&j.home.display().to_string()), "{text}");
        }
        let JavaError::NoMatchingJdk(detail) = &err else {
            panic!("{err:?}");
        };
        assert_eq!((detail.suggest, detail.conflict), (Some(21), false));
    }

    #[test]
    fn jar_needs_newer_java_than_installed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let all = jdks(tmp.path(), &[("jdk-17", Some("17.0.15"), false)]);
        let err = select(&all, None, 21).expect_err("jar needs 21");
        let text = err.to_string();
        assert!(
            text.contains("the jar: it needs Java 21 or newer"),
            "{text}"
        );
        assert!(text.contains("openjdk-21-jdk-headless"), "{text}");
        // No LTS in range: suggest the lowest match.
        let err = select(&all, Some(&req(">=22, <25")), 8).expect_err("22..24");
        assert!(err.to_string().contains("install a JDK 22"), "{err}");
        // An open-ended requirement suggests an LTS.
        let err = select(&all, Some(&req(">=18")), 8).expect_err(">=18");
        assert!(err.to_string().contains("install a JDK 21"), "{err}");
        // Beyond the known LTS releases: the lowest match.
        let err = select(&all, Some(&req(">=99")), 8).expect_err(">=99");
        assert!(err.to_string().contains("install a JDK 99"), "{err}");
        // The jar alone decides: an LTS it can run on, not older than 17.
        let err = select(&[], None, 8).expect_err("none");
        assert!(err.to_string().contains("install a JDK 17"), "{err}");
    }

    #[test]
    fn requirement_excludes_what_the_jar_needs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let all = jdks(
            tmp.path(),
            &[
                ("jdk-11", Some("11.0.22"), false),
                ("jdk-21", Some("21.0.3"), false),
            ],
        );
        let err = select(&all, Some(&req("<=11")), 17).expect_err("conflict");
        let text = err.to_string();
        for want in [
            "java.version = \"<=11\" excludes every Java version the jar can run on",
            "need Java 17 or newer",
            "relax java.version",
            "Java 11.0.22",
            "Java 21.0.3",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn nothing_installed() {
        let err = select(&[], Some(&req("17")), 8).expect_err("empty");
        let text = err.to_string();
        assert!(text.contains("no Java installation was found"), "{text}");
        assert!(
            text.contains("apt-get install openjdk-17-jdk-headless"),
            "{text}"
        );
    }

    /// This machine's real JDKs (there is a JDK 17 and a Temurin 25 here).
    #[test]
    fn real_machine_selection() {
        let all = crate::discover();
        let jdk = select(&all, None, 8)
            .unwrap_or_else(|e| panic!("install openjdk-17-jdk-headless: {e}"));
        assert!(jdk.java.is_file());
        assert!(jdk.sources.iter().all(|s| *s != Source::Configured));
        // Show the real error text once (visible with --nocapture).
        if let Err(e) = select(&all, Some(&req(">=99")), 8) {
            println!("{e}");
        }
    }
}
