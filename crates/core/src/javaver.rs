//! Java versions and requirements on them. Pure: no IO.
//!
//! * [`VersionReq`]: a requirement on the Java *feature* version (the `17` in `17.0.15`),
//!   as written in an app spec (`java = { version = ">=17" }`). Accepted forms:
//!   `"17"` / `"=17"` (exactly 17), `">=17"`, `">17"`, `"<=21"`, `"<21"`, `"17+"` (17 or newer),
//!   `"*"` (any), and comma-separated conjunctions such as `">=11, <21"`. The legacy spelling
//!   `"1.8"` means 8.
//! * [`JavaVersion`] / [`parse_java_version`]: a concrete version as printed by a JDK
//!   (`"1.8.0_392"`, `"17.0.15"`, `"17.0.15+6"`, `"25-ea"`, …).

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

const ACCEPTED: &str = "expected a Java feature version such as \"17\" (exactly 17), \
     a comparison \">=17\", \">17\", \"<=21\", \"<21\" or \"=17\", \"17+\" (17 or newer), \
     \"*\" (any version), or several of these joined by commas such as \">=11, <21\"";

/// A parsed requirement on the Java feature version. Serialised as its source text.
///
/// Every accepted requirement is a conjunction of bounds, so it is stored as one inclusive
/// interval `[min, max]` of feature versions; requirements that match nothing are rejected
/// by [`VersionReq::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionReq {
    text: String,
    /// Lowest matching feature version (inclusive).
    min: u32,
    /// Highest matching feature version (inclusive); `None` = unbounded.
    max: Option<u32>,
}

impl VersionReq {
    /// Parses a requirement. The error message quotes the input and lists the accepted forms.
    pub fn parse(text: &str) -> Result<VersionReq, String> {
        let err =
            |why: &str| format!("invalid Java version requirement {text:?}: {why}; {ACCEPTED}");
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err("it is empty"));
        }
        let mut min: u32 = 0;
        let mut max: Option<u32> = None;
        for part in trimmed.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(err("empty clause between commas"));
            }
            if part == "*" {
                continue;
            }
            let (lo, hi) = parse_clause(part).map_err(|why| err(&why))?;
            min = min.max(lo);
            max = match (max, hi) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if max.is_some_and(|hi| min > hi) {
            return Err(format!(
                "Java version requirement {text:?} matches no Java version \
                 (its clauses contradict each other)"
            ));
        }
        Ok(VersionReq {
            text: text.to_string(),
            min,
            max,
        })
    }

    /// Does Java feature version `feature` (e.g. 17) satisfy this requirement?
    pub fn matches(&self, feature: u32) -> bool {
        feature >= self.min && self.max.is_none_or(|hi| feature <= hi)
    }

    /// The text this requirement was parsed from, unchanged.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Lowest feature version this requirement accepts (0 when unbounded below).
    pub fn min_feature(&self) -> u32 {
        self.min
    }

    /// Highest feature version this requirement accepts, `None` when unbounded above.
    pub fn max_feature(&self) -> Option<u32> {
        self.max
    }

    /// The lowest feature version `>= at_least` that satisfies this requirement, if any.
    pub fn lowest_match_from(&self, at_least: u32) -> Option<u32> {
        let f = self.min.max(at_least);
        self.matches(f).then_some(f)
    }
}

/// Builds the inclusive interval of a comparison from its version number.
type MakeBounds = fn(u32) -> Result<(u32, Option<u32>), String>;

/// Parses one clause into an inclusive interval `(min, max)`.
fn parse_clause(part: &str) -> Result<(u32, Option<u32>), String> {
    if let Some(num) = part.strip_suffix('+') {
        let v = parse_feature(num.trim(), part)?;
        return Ok((v, None));
    }
    let ops: [(&str, MakeBounds); 5] = [
        (">=", |v| Ok((v, None))),
        ("<=", |v| Ok((0, Some(v)))),
        (">", |v| {
            v.checked_add(1)
                .map(|n| (n, None))
                .ok_or_else(|| "version out of range".to_string())
        }),
        ("<", |v| {
            v.checked_sub(1)
                .map(|n| (0, Some(n)))
                .ok_or_else(|| "\"<0\" matches nothing".to_string())
        }),
        ("=", |v| Ok((v, Some(v)))),
    ];
    for (op, make) in ops {
        if let Some(num) = part.strip_prefix(op) {
            return make(parse_feature(num.trim(), part)?);
        }
    }
    let v = parse_feature(part, part)?;
    Ok((v, Some(v)))
}

/// Parses a feature version number: `17`, or the legacy `1.8` (= 8).
fn parse_feature(num: &str, clause: &str) -> Result<u32, String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(num) {
        return num
            .parse::<u32>()
            .map_err(|_| format!("version number in {clause:?} is too large"));
    }
    let legacy = num
        .strip_prefix("1.")
        .filter(|l| digits(l))
        .and_then(|l| l.parse::<u32>().ok())
        .filter(|v| (1..=8).contains(v));
    if let Some(v) = legacy {
        return Ok(v);
    }
    if let Some((lo, hi)) = num.split_once("..") {
        return Err(format!(
            "{clause:?} looks like a range; write it as \">={lo}, <={}\"",
            hi.trim_start_matches('=')
        ));
    }
    if num.contains('.') {
        return Err(format!(
            "{clause:?} names a full version; requirements are on the feature version only \
             (write \"{}\" instead of \"{num}\")",
            num.split('.').next().unwrap_or(num)
        ));
    }
    if num.is_empty() {
        return Err(format!("{clause:?} has no version number"));
    }
    Err(format!("{clause:?} is not understood"))
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for VersionReq {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        VersionReq::parse(&s)
    }
}

impl From<VersionReq> for String {
    fn from(v: VersionReq) -> String {
        v.text
    }
}

/// A concrete Java version, as in a JDK's `release` file or `java -version` output.
///
/// Field names follow JEP 322 (`$FEATURE.$INTERIM.$UPDATE.$PATCH`). Legacy versions map as
/// `1.8.0_392` → feature 8, update 392. Ordering: numbers first, then a release sorts after its
/// pre-releases (`25-ea` < `25`), then by build number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JavaVersion {
    pub feature: u32,
    pub interim: u32,
    pub update: u32,
    pub patch: u32,
    /// Pre-release identifier, e.g. `ea` in `25-ea`.
    pub pre: Option<String>,
    /// Build number, e.g. `6` in `17.0.15+6` or `8` in `1.8.0_392-b08`.
    pub build: Option<u32>,
}

impl JavaVersion {
    /// A release version `feature.0.0.0`.
    pub fn new(feature: u32) -> JavaVersion {
        JavaVersion {
            feature,
            interim: 0,
            update: 0,
            patch: 0,
            pre: None,
            build: None,
        }
    }
}

impl Ord for JavaVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.feature, self.interim, self.update, self.patch)
            .cmp(&(other.feature, other.interim, other.update, other.patch))
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl PartialOrd for JavaVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for JavaVersion {
    /// `1.8.0_392` for Java ≤ 8, JEP 322 style (`17.0.15`, `21`, `25-ea`) otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.feature <= 8 {
            write!(f, "1.{}.{}", self.feature, self.interim)?;
            if self.update > 0 {
                write!(f, "_{}", self.update)?;
            }
        } else {
            write!(f, "{}", self.feature)?;
            let rest = [self.interim, self.update, self.patch];
            let keep = rest.iter().rposition(|&n| n != 0).map_or(0, |i| i + 1);
            for n in &rest[..keep] {
                write!(f, ".{n}")?;
            }
        }
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        if let Some(build) = self.build {
            write!(f, "+{build}")?;
        }
        Ok(())
    }
}

/// Parses a Java version string: `"1.8.0_392"`, `"1.8.0_392-b08"`, `"17.0.15"`, `"21"`,
/// `"25-ea"`, `"17.0.15+6"`, `"17.0.15+6-Debian-1deb12u1"`, `"11.0.2.1"`. Surrounding quotes
/// and whitespace are ignored. Returns `None` when it does not start with a version number.
pub fn parse_java_version(s: &str) -> Option<JavaVersion> {
    let s = s.trim().trim_matches('"').trim();
    // Split off "+build…" first, then "-pre…".
    let (head, build_part) = match s.split_once('+') {
        Some((h, b)) => (h, Some(b)),
        None => (s, None),
    };
    let (numbers, pre_part) = match head.split_once('-') {
        Some((n, p)) => (n, Some(p)),
        None => (head, None),
    };
    let mut build = build_part.and_then(leading_number);
    let mut pre = pre_part.filter(|p| !p.is_empty()).map(str::to_string);

    if let Some(legacy) = numbers.strip_prefix("1.") {
        // 1.8.0_392 / 1.7.0 / 1.8
        let (dotted, update) = match legacy.split_once('_') {
            Some((d, u)) => (d, Some(u)),
            None => (legacy, None),
        };
        let mut parts = dotted.split('.');
        let feature = parse_num(parts.next()?)?;
        let interim = match parts.next() {
            Some(p) => parse_num(p)?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        let update = match update {
            Some(u) => parse_num(u)?,
            None => 0,
        };
        // "-b08" is the legacy build number, not a pre-release.
        if let Some(b) = pre_part
            .and_then(|p| p.strip_prefix('b'))
            .and_then(leading_number)
        {
            build = build.or(Some(b));
            pre = None;
        }
        return Some(JavaVersion {
            feature,
            interim,
            update,
            patch: 0,
            pre,
            build,
        });
    }

    let mut nums = [0u32; 4];
    let mut parts = numbers.split('.');
    nums[0] = parse_num(parts.next()?)?;
    for (i, p) in parts.enumerate() {
        let n = parse_num(p)?;
        if let Some(slot) = nums.get_mut(i + 1) {
            *slot = n;
        }
    }
    if nums[0] == 0 {
        return None;
    }
    Some(JavaVersion {
        feature: nums[0],
        interim: nums[1],
        update: nums[2],
        patch: nums[3],
        pre,
        build,
    })
}

fn parse_num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn leading_number(s: &str) -> Option<u32> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    parse_num(&s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_table() {
        // (requirement, features that match, features that don't)
        let table: &[(&str, &[u32], &[u32])] = &[
            ("17", &[17], &[8, 11, 16, 18, 21]),
            ("=17", &[17], &[16, 18]),
            (" 17 ", &[17], &[16, 18]),
            (">=17", &[17, 18, 21, 25, 99], &[8, 11, 16]),
            ("> 17", &[18, 21], &[8, 17]),
            (">17", &[18, 21], &[8, 17]),
            ("<=21", &[1, 8, 17, 21], &[22, 25]),
            ("<21", &[8, 17, 20], &[21, 25]),
            (">=11, <21", &[11, 17, 20], &[8, 10, 21, 25]),
            (">=11,<=17", &[11, 17], &[10, 18]),
            (">=11, >=17", &[17, 21], &[11, 16]),
            ("17+", &[17, 21, 25], &[11, 16]),
            ("*", &[1, 8, 17, 25, 1000], &[]),
            ("*, >=17", &[17, 21], &[11]),
            ("1.8", &[8], &[7, 11]),
            (">=1.8", &[8, 11, 21], &[7]),
        ];
        for (text, yes, no) in table {
            let req = VersionReq::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(req.as_str(), *text);
            for f in *yes {
                assert!(req.matches(*f), "{text:?} should match {f}");
            }
            for f in *no {
                assert!(!req.matches(*f), "{text:?} should not match {f}");
            }
        }
    }

    #[test]
    fn requirement_errors() {
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("abc", "not understood"),
            (">=", "no version number"),
            ("17.0.2", "write \"17\""),
            (">=11,", "empty clause"),
            (">=21, <17", "matches no Java version"),
            ("<0", "matches nothing"),
            ("11..21", "write it as \">=11, <=21\""),
            ("~17", "not understood"),
            ("99999999999", "too large"),
        ];
        for (text, needle) in table {
            let err = VersionReq::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        // Syntax errors list what is accepted.
        let err = VersionReq::parse("abc").expect_err("abc");
        for form in ["\"17\"", "\">=17\"", "\"17+\"", "\"*\"", "\">=11, <21\""] {
            assert!(err.contains(form), "{err}");
        }
    }

    #[test]
    fn requirement_bounds() {
        let r = VersionReq::parse(">=11, <21").expect("valid");
        assert_eq!((r.min_feature(), r.max_feature()), (11, Some(20)));
        assert_eq!(r.lowest_match_from(8), Some(11));
        assert_eq!(r.lowest_match_from(17), Some(17));
        assert_eq!(r.lowest_match_from(21), None);
        let any = VersionReq::parse("*").expect("valid");
        assert_eq!(any.lowest_match_from(17), Some(17));
        assert_eq!(any.max_feature(), None);
    }

    #[test]
    fn requirement_serde_is_the_text() {
        #[derive(Serialize, Deserialize)]
        struct W {
            v: VersionReq,
        }
        let w: W = toml::from_str("v = \">=11, <21\"").expect("parses");
        assert!(w.v.matches(17) && !w.v.matches(21));
        assert_eq!(toml::to_string(&w).expect("ser"), "v = \">=11, <21\"\n");
        let bad = toml::from_str::<W>("v = \"nope\"")
            .err()
            .map(|e| e.to_string());
        assert!(bad.is_some_and(|e| e.contains("invalid Java version requirement")));
        assert_eq!(serde_json::to_string(&w.v).expect("json"), "\">=11, <21\"");
    }

    fn v(feature: u32, interim: u32, update: u32, patch: u32) -> JavaVersion {
        JavaVersion {
            feature,
            interim,
            update,
            patch,
            pre: None,
            build: None,
        }
    }

    #[test]
    fn version_table() {
        let with = |mut jv: JavaVersion, pre: Option<&str>, build: Option<u32>| {
            jv.pre = pre.map(str::to_string);
            jv.build = build;
            jv
        };
        let table: Vec<(&str, JavaVersion)> = vec![
            ("1.8.0_392", v(8, 0, 392, 0)),
            ("1.8.0_392-b08", with(v(8, 0, 392, 0), None, Some(8))),
            ("1.8.0", v(8, 0, 0, 0)),
            ("1.7.0_80", v(7, 0, 80, 0)),
            ("17.0.15", v(17, 0, 15, 0)),
            ("21", v(21, 0, 0, 0)),
            ("\"21.0.2\"", v(21, 0, 2, 0)),
            ("25-ea", with(v(25, 0, 0, 0), Some("ea"), None)),
            ("17.0.15+6", with(v(17, 0, 15, 0), None, Some(6))),
            (
                "17.0.15+6-Debian-1deb12u1",
                with(v(17, 0, 15, 0), None, Some(6)),
            ),
            ("25.0.3+9-LTS", with(v(25, 0, 3, 0), None, Some(9))),
            ("11.0.2.1", v(11, 0, 2, 1)),
            ("9", v(9, 0, 0, 0)),
        ];
        for (text, want) in table {
            assert_eq!(parse_java_version(text), Some(want), "{text:?}");
        }
        for bad in ["", "abc", "java", "0", "17.x", "1.", "v17", "1.8.0_x"] {
            assert_eq!(parse_java_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn version_order_and_display() {
        let p = |s: &str| parse_java_version(s).unwrap_or_else(|| panic!("{s}"));
        assert!(p("1.8.0_392") < p("11.0.2"));
        assert!(p("17.0.9") < p("17.0.15"));
        assert!(p("25-ea") < p("25"));
        assert!(p("17.0.15+6") > p("17.0.15"));
        for (input, shown) in [
            ("1.8.0_392", "1.8.0_392"),
            ("17.0.15+6", "17.0.15+6"),
            ("21", "21"),
            ("25-ea", "25-ea"),
            ("11.0.2.1", "11.0.2.1"),
        ] {
            assert_eq!(p(input).to_string(), shown);
        }
        assert_eq!(JavaVersion::new(21).to_string(), "21");
    }
}
