//! The bundle manifest `jarfleet-bundle.toml`: its typed form, parsing with validation that
//! collects every problem, and deterministic serialization.
//!
//! ```toml
//! format = 1
//! name = "orders"
//! version = "1.4.2"
//! java = ">=17"
//! jre = "jre"
//!
//! [app]                      # default app spec, free-form (the caller validates it)
//! instances = 2
//!
//! [hooks.pre_start]          # or: pre_start = ["hooks/pre_start.sh"]
//! argv = ["hooks/pre_start.sh", "--check"]
//! timeout = "30s"
//!
//! [[files]]
//! path = "app/orders.jar"
//! kind = "file"              # file | dir | symlink (with `target`)
//! mode = 0o644
//! size = 123456
//! sha256 = "9f86d0..."
//! ```

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use toml::value::Datetime;

use crate::error::{Error, Result};
use crate::path_rules::{self, NameProblem};

/// The manifest's name; always the first entry of a bundle.
pub const MANIFEST_NAME: &str = "jarfleet-bundle.toml";
/// The only format this crate reads and writes.
pub const FORMAT: u32 = 1;
/// Largest manifest accepted by readers.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub created: Option<Datetime>,
    /// Java requirement, e.g. `>=17`; not interpreted here.
    pub java: Option<String>,
    /// Default app spec; free-form, validated by the caller.
    pub app: toml::Table,
    /// Directory in the bundle that holds a JRE.
    pub jre: Option<String>,
    pub hooks: Hooks,
    /// Every entry of the payload, in stream order (parents before children).
    pub files: Vec<FileEntry>,
}

/// Install-time hooks. Each runs with the bundle root as working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub pre_install: Option<Hook>,
    pub post_install: Option<Hook>,
    pub pre_start: Option<Hook>,
}

impl Hooks {
    /// The hooks with their manifest key, in running order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Hook)> {
        [
            ("pre_install", &self.pre_install),
            ("post_install", &self.post_install),
            ("pre_start", &self.pre_start),
        ]
        .into_iter()
        .filter_map(|(key, hook)| hook.as_ref().map(|h| (key, h)))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// One hook: `argv[0]` is an executable file of the bundle, relative to the bundle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub argv: Vec<String>,
    pub timeout: Option<Duration>,
}

/// One payload entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    /// Permission bits as packed (`0o644`, `0o755`); extraction masks with `0o755`.
    pub mode: u32,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    File { size: u64, sha256: [u8; 32] },
    Dir,
    Symlink { target: String },
}

impl FileKind {
    /// `file`, `dir` or `symlink`, as written in the manifest.
    pub fn name(&self) -> &'static str {
        match self {
            FileKind::File { .. } => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink { .. } => "symlink",
        }
    }
}

impl Manifest {
    /// Parses and validates manifest bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Manifest> {
        let text = std::str::from_utf8(bytes).map_err(|e| Error::ManifestSyntax {
            message: format!("not UTF-8: {e}"),
        })?;
        let raw: RawManifest = toml::from_str(text).map_err(|e| Error::ManifestSyntax {
            message: e.to_string(),
        })?;
        raw.validate()
    }

    /// Serializes deterministically (same manifest, same bytes).
    pub fn to_toml(&self) -> Result<String> {
        let head = RawHead {
            format: i64::from(FORMAT),
            name: &self.name,
            version: &self.version,
            created: self.created,
            java: self.java.as_deref(),
            jre: self.jre.as_deref(),
            app: &self.app,
            hooks: RawHooksOut {
                pre_install: self.hooks.pre_install.as_ref().map(RawHookOut::from),
                post_install: self.hooks.post_install.as_ref().map(RawHookOut::from),
                pre_start: self.hooks.pre_start.as_ref().map(RawHookOut::from),
            },
        };
        let mut out = toml::to_string(&head).map_err(|e| Error::ManifestSyntax {
            message: format!("cannot serialize: {e}"),
        })?;
        // `[[files]]` written by hand so that modes read as octal.
        for entry in &self.files {
            out.push_str("\n[[files]]\n");
            out.push_str(&format!("path = {}\n", toml_string(&entry.path)));
            out.push_str(&format!("kind = \"{}\"\n", entry.kind.name()));
            out.push_str(&format!("mode = 0o{:o}\n", entry.mode));
            match &entry.kind {
                FileKind::File { size, sha256 } => {
                    out.push_str(&format!("size = {size}\n"));
                    out.push_str(&format!("sha256 = \"{}\"\n", hex::encode(sha256)));
                }
                FileKind::Dir => {}
                FileKind::Symlink { target } => {
                    out.push_str(&format!("target = {}\n", toml_string(target)));
                }
            }
        }
        Ok(out)
    }

    /// The entry named `path`.
    pub fn entry(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|e| e.path == path)
    }

    /// Total size of the regular files.
    pub fn payload_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|e| match e.kind {
                FileKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// The release-identity digest: hex sha256 over the manifest bytes exactly as stored in the
/// bundle (which list every file's sha256).
pub fn manifest_digest(manifest_bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(manifest_bytes))
}

/// Checks a bundle name or version: `[A-Za-z0-9][A-Za-z0-9._+-]*`, at most 128 characters
/// (they become part of file names).
pub fn check_label(what: &str, value: &str) -> std::result::Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{value}` is invalid: use letters, digits, `.`, `_`, `-`, `+`, starting with a letter or digit"
        ))
    }
}

/// Parses a hook timeout such as `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(digits_end);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Formats a duration in the largest unit that represents it exactly.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: i64,
    name: String,
    version: String,
    created: Option<Datetime>,
    java: Option<String>,
    jre: Option<String>,
    #[serde(default)]
    app: toml::Table,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    files: Vec<RawFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    pre_install: Option<RawHook>,
    post_install: Option<RawHook>,
    pre_start: Option<RawHook>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawHook {
    Argv(Vec<String>),
    Full(RawHookFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHookFull {
    argv: Vec<String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    kind: String,
    mode: Option<u32>,
    size: Option<u64>,
    sha256: Option<String>,
    target: Option<String>,
}

#[derive(Serialize)]
struct RawHead<'a> {
    format: i64,
    name: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Datetime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    java: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jre: Option<&'a str>,
    app: &'a toml::Table,
    hooks: RawHooksOut,
}

#[derive(Serialize)]
struct RawHooksOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_install: Option<RawHookOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    post_install: Option<RawHookOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_start: Option<RawHookOut>,
}

#[derive(Serialize)]
struct RawHookOut {
    argv: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

impl From<&Hook> for RawHookOut {
    fn from(hook: &Hook) -> Self {
        RawHookOut {
            argv: hook.argv.clone(),
            timeout: hook.timeout.map(format_duration),
        }
    }
}

impl RawManifest {
    fn validate(self) -> Result<Manifest> {
        let mut problems = Vec::new();
        if self.format != i64::from(FORMAT) {
            return Err(Error::ManifestInvalid {
                problems: vec![format!(
                    "format = {} is not supported (this jarfleet reads format {FORMAT})",
                    self.format
                )],
            });
        }
        for (what, value) in [("name", &self.name), ("version", &self.version)] {
            if let Err(p) = check_label(what, value) {
                problems.push(p);
            }
        }
        if let Some(created) = &self.created
            && (created.date.is_none() || created.time.is_none() || created.offset.is_none())
        {
            problems.push(format!(
                "created = {created} is not an RFC 3339 timestamp with an offset (e.g. 2026-01-02T03:04:05Z)"
            ));
        }
        let files = validate_files(self.files, &mut problems);
        let by_path: HashMap<&str, &FileEntry> =
            files.iter().map(|e| (e.path.as_str(), e)).collect();
        if let Some(jre) = &self.jre {
            match by_path.get(jre.as_str()) {
                Some(FileEntry {
                    kind: FileKind::Dir,
                    ..
                }) => {}
                _ => problems.push(format!("jre = `{jre}` is not a directory of the bundle")),
            }
        }
        let mut hooks = Hooks::default();
        for (key, raw, slot) in [
            (
                "pre_install",
                self.hooks.pre_install,
                &mut hooks.pre_install,
            ),
            (
                "post_install",
                self.hooks.post_install,
                &mut hooks.post_install,
            ),
            ("pre_start", self.hooks.pre_start, &mut hooks.pre_start),
        ] {
            if let Some(raw) = raw {
                *slot = validate_hook(key, raw, &by_path, &mut problems);
            }
        }
        if !problems.is_empty() {
            return Err(Error::ManifestInvalid { problems });
        }
        Ok(Manifest {
            name: self.name,
            version: self.version,
            created: self.created,
            java: self.java,
            app: self.app,
            jre: self.jre,
            hooks,
            files,
        })
    }
}

fn validate_files(raw: Vec<RawFile>, problems: &mut Vec<String>) -> Vec<FileEntry> {
    let mut files: Vec<FileEntry> = Vec::with_capacity(raw.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for f in raw {
        let before = problems.len();
        let path = f.path;
        let mut problem = |what: String| problems.push(format!("files: `{path}`: {what}"));
        if let Err(p) = path_rules::check_name(&path) {
            problem(format!("invalid path: {p}"));
        } else if path == MANIFEST_NAME {
            problem(NameProblem::Reserved.to_string());
        }
        if index.contains_key(&path) {
            problem("listed twice".into());
        }
        if let Some(parent) = path_rules::parent(&path) {
            match index.get(parent).map(|&i| &files[i].kind) {
                Some(FileKind::Dir) => {}
                Some(other) => problem(format!(
                    "parent `{parent}` is a {}, not a directory",
                    other.name()
                )),
                None => problem(format!(
                    "parent directory `{parent}` is not listed before it"
                )),
            }
        }
        let mode = match (f.mode, f.kind.as_str()) {
            (Some(m), _) if m & !0o7777 != 0 => {
                problem(format!("mode 0o{m:o} has bits beyond 0o7777"));
                0
            }
            (Some(m), _) => m,
            (None, "symlink") => 0o777,
            (None, _) => {
                problem("mode is missing".into());
                0
            }
        };
        let kind = match f.kind.as_str() {
            "file" => {
                if f.target.is_some() {
                    problem("a file has no `target`".into());
                }
                let sha256 = match f.sha256.as_deref().map(parse_sha256) {
                    Some(Some(d)) => d,
                    Some(None) => {
                        problem("sha256 is not 64 lowercase hex digits".into());
                        [0; 32]
                    }
                    None => {
                        problem("sha256 is missing".into());
                        [0; 32]
                    }
                };
                let size = f.size.unwrap_or_else(|| {
                    problem("size is missing".into());
                    0
                });
                FileKind::File { size, sha256 }
            }
            "dir" | "symlink" if f.size.is_some() || f.sha256.is_some() => {
                problem(format!("a {} has no `size` or `sha256`", f.kind));
                FileKind::Dir
            }
            "dir" if f.target.is_some() => {
                problem("a dir has no `target`".into());
                FileKind::Dir
            }
            "dir" => FileKind::Dir,
            "symlink" => match f.target {
                Some(target) => {
                    if path_rules::check_name(&path).is_ok()
                        && let Err(p) = path_rules::resolve_symlink(&path, &target)
                    {
                        problem(format!("symlink target `{target}` refused: {p}"));
                    }
                    FileKind::Symlink { target }
                }
                None => {
                    problem("a symlink needs a `target`".into());
                    FileKind::Dir
                }
            },
            other => {
                problem(format!(
                    "kind `{other}` is not one of `file`, `dir`, `symlink`"
                ));
                FileKind::Dir
            }
        };
        if problems.len() == before {
            index.insert(path.clone(), files.len());
            files.push(FileEntry { path, mode, kind });
        }
    }
    files
}

fn validate_hook(
    key: &str,
    raw: RawHook,
    by_path: &HashMap<&str, &FileEntry>,
    problems: &mut Vec<String>,
) -> Option<Hook> {
    let (argv, timeout) = match raw {
        RawHook::Argv(argv) => (argv, None),
        RawHook::Full(full) => (full.argv, full.timeout),
    };
    let before = problems.len();
    let timeout = timeout.and_then(|t| {
        let parsed = parse_duration(&t);
        if parsed.is_none() {
            problems.push(format!(
                "hooks.{key}.timeout = `{t}` is not a duration like `30s`, `500ms`, `5m`"
            ));
        }
        parsed
    });
    match argv.first() {
        None => problems.push(format!("hooks.{key}: argv is empty")),
        Some(program) => match by_path.get(program.as_str()) {
            Some(FileEntry {
                kind: FileKind::File { .. },
                mode,
                ..
            }) if mode & 0o111 != 0 => {}
            Some(FileEntry {
                kind: FileKind::File { .. },
                ..
            }) => problems.push(format!(
                "hooks.{key}: `{program}` is not executable in the bundle"
            )),
            _ => problems.push(format!(
                "hooks.{key}: `{program}` is not a file of the bundle (argv[0] is relative to the bundle root)"
            )),
        },
    }
    (problems.len() == before).then_some(Hook { argv, timeout })
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || text.chars().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut app = toml::Table::new();
        app.insert("instances".into(), toml::Value::Integer(2));
        Manifest {
            name: "orders".into(),
            version: "1.4.2".into(),
            created: "2026-01-02T03:04:05Z".parse().ok(),
            java: Some(">=17".into()),
            app,
            jre: Some("jre".into()),
            hooks: Hooks {
                pre_start: Some(Hook {
                    argv: vec!["hooks/pre_start.sh".into(), "--check".into()],
                    timeout: Some(Duration::from_secs(30)),
                }),
                ..Hooks::default()
            },
            files: vec![
                FileEntry {
                    path: "hooks".into(),
                    mode: 0o755,
                    kind: FileKind::Dir,
                },
                FileEntry {
                    path: "hooks/pre_start.sh".into(),
                    mode: 0o755,
                    kind: FileKind::File {
                        size: 3,
                        sha256: [7; 32],
                    },
                },
                FileEntry {
                    path: "jre".into(),
                    mode: 0o755,
                    kind: FileKind::Dir,
                },
                FileEntry {
                    path: "jre/we \"ird\" ü".into(),
                    mode: 0o777,
                    kind: FileKind::Symlink {
                        target: "../hooks/pre_start.sh".into(),
                    },
                },
            ],
        }
    }

    #[test]
    fn round_trips_with_octal_modes() {
        let m = sample();
        let text = m.to_toml().expect("serialize");
        assert!(text.contains("mode = 0o755"), "{text}");
        assert!(text.contains("[[files]]"), "{text}");
        let back = Manifest::from_slice(text.as_bytes()).expect("parse back");
        assert_eq!(back, m);
        assert_eq!(back.to_toml().expect("again"), text);
    }

    #[test]
    fn accepts_argv_shorthand_for_hooks() {
        let text = r#"
format = 1
name = "a"
version = "1"
[hooks]
pre_install = ["x"]
[[files]]
path = "x"
kind = "file"
mode = 0o755
size = 0
sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"#;
        let m = Manifest::from_slice(text.as_bytes()).expect("valid");
        assert_eq!(
            m.hooks.pre_install.map(|h| h.argv),
            Some(vec!["x".to_string()])
        );
    }

    #[test]
    fn collects_every_problem() {
        let text = r#"
format = 1
name = "bad name"
version = "1"
created = 2026-01-02
jre = "nope"
[hooks.pre_start]
argv = ["missing.sh"]
timeout = "soon"
[[files]]
path = "/abs"
kind = "file"
mode = 0o644
size = 1
sha256 = "zz"
[[files]]
path = "link"
kind = "symlink"
target = "../outside"
[[files]]
path = "link/f"
kind = "dir"
mode = 0o755
[[files]]
path = "dup"
kind = "dir"
mode = 0o755
[[files]]
path = "dup"
kind = "dir"
mode = 0o755
[[files]]
path = "odd"
kind = "fifo"
mode = 0o644
"#;
        let err = Manifest::from_slice(text.as_bytes()).expect_err("invalid");
        let Error::ManifestInvalid { problems } = &err else {
            panic!("wrong error {err}");
        };
        let all = problems.join("\n");
        for needle in [
            "name `bad name` is invalid",
            "created = 2026-01-02 is not an RFC 3339 timestamp",
            "files: `/abs`: invalid path: absolute path",
            "files: `/abs`: sha256 is not 64 lowercase hex digits",
            "files: `link`: symlink target `../outside` refused: escapes the bundle root",
            "files: `link/f`: parent directory `link` is not listed before it",
            "files: `dup`: listed twice",
            "files: `odd`: kind `fifo` is not one of",
            "jre = `nope` is not a directory",
            "hooks.pre_start.timeout = `soon`",
            "hooks.pre_start: `missing.sh` is not a file of the bundle",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn file_through_symlink_is_refused() {
        let text = r#"
format = 1
name = "a"
version = "1"
[[files]]
path = "d"
kind = "dir"
mode = 0o755
[[files]]
path = "link"
kind = "symlink"
target = "d"
[[files]]
path = "link/f"
kind = "dir"
mode = 0o755
"#;
        let err = Manifest::from_slice(text.as_bytes()).expect_err("invalid");
        assert!(
            err.to_string()
                .contains("`link/f`: parent `link` is a symlink, not a directory"),
            "{err}"
        );
    }

    #[test]
    fn refuses_other_formats_and_unknown_keys() {
        let err = Manifest::from_slice(b"format = 2\nname = \"a\"\nversion = \"1\"\n")
            .expect_err("format 2");
        assert!(
            err.to_string().contains("format = 2 is not supported"),
            "{err}"
        );
        let err = Manifest::from_slice(b"format = 1\nname = \"a\"\nversion = \"1\"\nextra = 1\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("30s", Some(Duration::from_secs(30))),
            ("500ms", Some(Duration::from_millis(500))),
            ("5m", Some(Duration::from_secs(300))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1.5s", None),
            ("s", None),
            ("10", None),
        ] {
            assert_eq!(parse_duration(text), want, "{text}");
            if let Some(d) = want {
                assert_eq!(format_duration(d), text);
            }
        }
    }
}
