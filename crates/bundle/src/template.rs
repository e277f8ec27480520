//! Config templates: `${VAR}` substitution in the text files of a bundle's `config/` tree.
//!
//! | written           | result                                                        |
//! |-------------------|---------------------------------------------------------------|
//! | `${VAR}`          | the value of `VAR`; error if it has none                      |
//! | `${VAR:default}`  | the value of `VAR`, or `default` when unset or empty          |
//! | `${VAR:?message}` | the value of `VAR`; error with `message` when unset or empty  |
//! | `$${`             | a literal `${`                                                |
//! | any other `$`     | itself (`$HOME`, `$$`, a trailing `$` are plain text)         |
//!
//! A default is literal text up to the first `}` on the same line: it may be empty and may
//! contain `:`, but not `}` or a nested `${`. The scan is left to right, so `$$${X}` is `$` and
//! then the escape `$${` (giving `$${X}`): a literal `$` right before a substitution cannot be
//! written except through a default (`${DOLLAR:$}${X}`). Names are `[A-Za-z_][A-Za-z0-9_.]*`. A `${` with
//! no `}` on its line is an error. "Unset or empty" for defaults matches the fleet spec's
//! interpolation (jarfleet-core `interp`). Errors carry file, line and column (1-based,
//! counted in characters); every error of a file is reported, not just the first.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{self, Target};

/// How a variable is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarForm {
    /// `${VAR}`: required, no message.
    Plain,
    /// `${VAR:default}`.
    Default(String),
    /// `${VAR:?message}`: required with a message.
    Required(String),
}

impl VarForm {
    /// True when rendering fails without a value.
    pub fn is_required(&self) -> bool {
        !matches!(self, VarForm::Default(_))
    }
}

/// One `${...}` in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarUse {
    pub name: String,
    pub form: VarForm,
    pub line: usize,
    pub column: usize,
}

/// One problem at one place of one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The variable concerned, when the problem is about one.
    pub variable: Option<String>,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every error found, in file then position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateErrors(pub Vec<TemplateError>);

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} template error{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateErrors {}

/// A parsed template piece.
enum Piece<'a> {
    Text(&'a str),
    Var(VarUse),
}

/// Splits `text` into pieces; syntax errors go to `errors`.
fn parse<'a>(file: &Path, text: &'a str, errors: &mut Vec<TemplateError>) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    let (mut line, mut column) = (1usize, 1usize);
    let mut text_start = 0;
    let mut i = 0;
    let error = |line, column, variable: Option<&str>, message: String| TemplateError {
        file: file.to_path_buf(),
        line,
        column,
        variable: variable.map(str::to_string),
        message,
    };
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with("$${") {
            pieces.push(Piece::Text(&text[text_start..i]));
            pieces.push(Piece::Text("${"));
            i += 3;
            column += 3;
            text_start = i;
            continue;
        }
        if !rest.starts_with("${") {
            let c = rest.chars().next().unwrap_or('\0');
            i += c.len_utf8().max(1);
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
            continue;
        }
        pieces.push(Piece::Text(&text[text_start..i]));
        let body = &rest[2..];
        let line_end = body.find('\n').unwrap_or(body.len());
        let Some(close) = body[..line_end].find('}') else {
            errors.push(error(
                line,
                column,
                None,
                "unterminated `${`: no `}` on this line (write $${ for a literal ${)".into(),
            ));
            i += 2;
            column += 2;
            text_start = i;
            continue;
        };
        let inner = &body[..close];
        let (name, tail) = match inner.split_once(':') {
            Some((name, tail)) => (name, Some(tail)),
            None => (inner, None),
        };
        if inner.contains("${") {
            errors.push(error(
                line,
                column,
                None,
                "nested `${` is not supported (a default is plain text)".into(),
            ));
        } else if !is_var_name(name) {
            errors.push(error(
                line,
                column,
                None,
                if name.is_empty() {
                    format!("`${{{inner}}}` has no variable name")
                } else {
                    format!(
                        "`{name}` is not a valid variable name (letters, digits, `_` and `.`, not starting with a digit)"
                    )
                },
            ));
        } else {
            let form = match tail {
                None => VarForm::Plain,
                Some(t) => match t.strip_prefix('?') {
                    Some(message) => VarForm::Required(message.trim().to_string()),
                    None => VarForm::Default(t.to_string()),
                },
            };
            pieces.push(Piece::Var(VarUse {
                name: name.to_string(),
                form,
                line,
                column,
            }));
        }
        let consumed = 2 + close + 1;
        column += rest[..consumed].chars().count();
        i += consumed;
        text_start = i;
    }
    pieces.push(Piece::Text(&text[text_start..]));
    pieces
}

/// `[A-Za-z_][A-Za-z0-9_.]*`
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '.' || c.is_ascii_alphanumeric())
}

/// Every variable use in `text`, in order (a name may appear more than once), or its syntax
/// errors. `file` only labels errors.
pub fn variables(file: &Path, text: &str) -> Result<Vec<VarUse>, TemplateErrors> {
    let mut errors = Vec::new();
    let uses = parse(file, text, &mut errors)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect();
    if errors.is_empty() {
        Ok(uses)
    } else {
        Err(TemplateErrors(errors))
    }
}

/// Renders `text`, reporting every error (syntax and missing values). `file` only labels
/// errors.
pub fn render(
    file: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, TemplateErrors> {
    let mut errors = Vec::new();
    let pieces = parse(file, text, &mut errors);
    let mut out = String::with_capacity(text.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => match resolve(&v, lookup) {
                Ok(value) => out.push_str(&value),
                Err(message) => errors.push(TemplateError {
                    file: file.to_path_buf(),
                    line: v.line,
                    column: v.column,
                    variable: Some(v.name),
                    message,
                }),
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(TemplateErrors(errors))
    }
}

fn resolve(v: &VarUse, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name = &v.name;
    let value = lookup(name);
    match &v.form {
        VarForm::Plain => value.ok_or_else(|| {
            if name.contains('.') {
                // `${catalina.base}`, `${user.home}`: a property the app resolves itself.
                format!(
                    "${{{name}}}: {name} has no value; if the app resolves it itself, write $${{{name}}} to leave it as written (or set it, or write ${{{name}:default}})"
                )
            } else {
                format!("${{{name}}}: {name} has no value (set it, or write ${{{name}:default}})")
            }
        }),
        VarForm::Default(default) => Ok(value
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default.clone())),
        VarForm::Required(message) => {
            let state = if value.is_some() { "empty" } else { "not set" };
            value.filter(|s| !s.is_empty()).ok_or_else(|| {
                if message.is_empty() {
                    format!("${{{name}}}: {name} is required but {state}")
                } else {
                    format!("${{{name}}}: {message}")
                }
            })
        }
    }
}

/// What `render_dir` wrote, as paths relative to the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderReport {
    /// UTF-8 files, rendered.
    pub rendered: Vec<PathBuf>,
    /// Files that are not UTF-8 (keystores, images), copied byte for byte.
    pub copied: Vec<PathBuf>,
}

/// Every variable used by the UTF-8 files under `src`, with the file (relative to `src`).
/// Syntax errors of all files are collected.
pub fn dir_variables(src: &Path) -> Result<Vec<(PathBuf, VarUse)>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for item in walk_dir(src)? {
        if let Item::File { rel, abs, .. } = item {
            let bytes = fs::read(&abs).map_err(Error::io("read", &abs))?;
            if let Ok(text) = String::from_utf8(bytes) {
                match variables(&rel, &text) {
                    Ok(uses) => out.extend(uses.into_iter().map(|u| (rel.clone(), u))),
                    Err(TemplateErrors(e)) => errors.extend(e),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(TemplateErrors(errors).into())
    }
}

/// Renders every file under `src` into `dst`, keeping the tree and the permission bits
/// (setuid/setgid/sticky dropped). UTF-8 files are templates; other files are copied as is.
/// Symlinks and special files are refused.
///
/// All or nothing: every file is rendered in memory first and all errors of all files are
/// reported; only then is `dst` written. `dst` must not exist or be empty (a staging
/// directory); if writing fails, what was written is removed again. Error positions name files
/// relative to `src`.
pub fn render_dir(
    src: &Path,
    dst: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<RenderReport> {
    enum Out {
        Dir(PathBuf, u32),
        Text(PathBuf, String, u32),
        Copy(PathBuf, PathBuf, u32),
    }
    let mut outs = Vec::new();
    let mut errors = Vec::new();
    let mut report = RenderReport::default();
    for item in walk_dir(src)? {
        match item {
            Item::Dir { rel, mode } => outs.push(Out::Dir(rel, mode)),
            Item::File { rel, abs, mode } => {
                let bytes = fs::read(&abs).map_err(Error::io("read", &abs))?;
                match String::from_utf8(bytes) {
                    Ok(text) => match render(&rel, &text, lookup) {
                        Ok(rendered) => {
                            report.rendered.push(rel.clone());
                            outs.push(Out::Text(rel, rendered, mode));
                        }
                        Err(TemplateErrors(e)) => errors.extend(e),
                    },
                    Err(_) => {
                        report.copied.push(rel.clone());
                        outs.push(Out::Copy(rel, abs, mode));
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(TemplateErrors(errors).into());
    }
    let target = Target::prepare(dst)?;
    let written = (|| -> Result<()> {
        let mut dirs = Vec::new();
        for out in &outs {
            match out {
                Out::Dir(rel, mode) => {
                    let path = dst.join(rel);
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(Error::io("create directory", &path))?;
                    dirs.push((path, *mode));
                }
                Out::Text(rel, text, mode) => {
                    write_file(&dst.join(rel), *mode, &mut text.as_bytes())?;
                }
                Out::Copy(rel, abs, mode) => {
                    let mut from = fs::File::open(abs).map_err(Error::io("open", abs))?;
                    write_file(&dst.join(rel), *mode, &mut from)?;
                }
            }
        }
        for (dir, mode) in dirs.iter().rev() {
            fsutil::sync_dir(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
                .map_err(Error::io("set the mode of", dir))?;
        }
        fsutil::sync_dir(dst)
    })();
    match written {
        Ok(()) => Ok(report),
        Err(e) => {
            target.abandon();
            Err(e)
        }
    }
}

fn write_file(path: &Path, mode: u32, from: &mut impl io::Read) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("create", path))?;
    io::copy(from, &mut file)
        .and_then(|_| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", path))
}

enum Item {
    Dir {
        rel: PathBuf,
        mode: u32,
    },
    File {
        rel: PathBuf,
        abs: PathBuf,
        mode: u32,
    },
}

/// Depth-first, sorted, parents before children; refuses symlinks and special files.
fn walk_dir(src: &Path) -> Result<Vec<Item>> {
    fn walk(src: &Path, rel: &Path, out: &mut Vec<Item>) -> Result<()> {
        let dir = src.join(rel);
        let mut children: Vec<fs::DirEntry> = fs::read_dir(&dir)
            .map_err(Error::io("list", &dir))?
            .collect::<io::Result<_>>()
            .map_err(Error::io("list", &dir))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let abs = child.path();
            let rel = rel.join(child.file_name());
            let meta = fs::symlink_metadata(&abs).map_err(Error::io("inspect", &abs))?;
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                out.push(Item::Dir {
                    rel: rel.clone(),
                    mode,
                });
                walk(src, &rel, out)?;
            } else if meta.is_file() {
                out.push(Item::File { rel, abs, mode });
            } else {
                return Err(Error::TemplateFile {
                    path: abs,
                    problem: "only regular files and directories can be rendered".into(),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(src, Path::new(""), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "PORT" => Some("5432".into()),
            "EMPTY" => Some(String::new()),
            "db.user" => Some("app".into()),
            "DOLLAR" => Some("a${b}".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        match render(Path::new("t"), text, &lookup) {
            Ok(s) => s,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn renders_every_form() {
        let cases: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("${HOST}:${PORT}", "db.local:5432"),
            ("user=${db.user}", "user=app"),
            ("${UNSET:fallback}", "fallback"),
            ("${UNSET:}", ""),
            ("${UNSET:jdbc:h2:mem}", "jdbc:h2:mem"),
            ("${EMPTY:x}", "x"),
            ("${EMPTY}", ""),
            ("${HOST:x}", "db.local"),
            ("${HOST:?needed}", "db.local"),
            ("$${HOST}", "${HOST}"),
            ("$$${HOST}", "$${HOST}"),
            ("a $HOME $$ $ {x} $", "a $HOME $$ $ {x} $"),
            ("${DOLLAR}", "a${b}"),
            ("ü${HOST}é\n${PORT}", "üdb.localé\n5432"),
            ("", ""),
        ];
        for (text, want) in cases {
            assert_eq!(ok(text), *want, "{text:?}");
        }
    }

    fn errors(text: &str) -> Vec<(usize, usize, Option<String>, String)> {
        match render(Path::new("conf/app.properties"), text, &lookup) {
            Ok(s) => panic!("{text:?}: expected errors, got {s:?}"),
            Err(TemplateErrors(e)) => e
                .into_iter()
                .map(|e| (e.line, e.column, e.variable, e.message))
                .collect(),
        }
    }

    #[test]
    fn reports_every_error_with_position() {
        let text = "a=${HOST}\nb=${NOPE}\n  c=${DB:?set the database URL} d=${X:?}\nü${E\nf=${1x} ${} ${A:${B}}\n${EMPTY:?must not be empty}\ndir=${catalina.base}/logs";
        let got = errors(text);
        let want: Vec<(usize, usize, Option<String>, String)> = vec![
            (2, 3, Some("NOPE".into()), "${NOPE}: NOPE has no value (set it, or write ${NOPE:default})".into()),
            (3, 5, Some("DB".into()), "${DB}: set the database URL".into()),
            (3, 35, Some("X".into()), "${X}: X is required but not set".into()),
            (4, 2, None, "unterminated `${`: no `}` on this line (write $${ for a literal ${)".into()),
            (5, 3, None, "`1x` is not a valid variable name (letters, digits, `_` and `.`, not starting with a digit)".into()),
            (5, 9, None, "`${}` has no variable name".into()),
            (5, 13, None, "nested `${` is not supported (a default is plain text)".into()),
            (6, 1, Some("EMPTY".into()), "${EMPTY}: must not be empty".into()),
            (7, 5, Some("catalina.base".into()), "${catalina.base}: catalina.base has no value; if the app resolves it itself, write $${catalina.base} to leave it as written (or set it, or write ${catalina.base:default})".into()),
        ];
        // Syntax errors are found first, then missing values: compare as sets ordered by position.
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want, "{got:#?}");
    }

    #[test]
    fn error_display_names_file_line_column() {
        let err =
            render(Path::new("config/app.yml"), "x: ${NOPE}", &lookup).expect_err("missing var");
        assert_eq!(
            err.to_string(),
            "1 template error:\n  config/app.yml:1:4: ${NOPE}: NOPE has no value (set it, or write ${NOPE:default})"
        );
    }

    #[test]
    fn lists_variables() {
        let uses =
            variables(Path::new("t"), "${A} $${NOT} ${B:x:y}\n ${C:?why} ${A}").expect("valid");
        let got: Vec<(&str, VarForm, usize, usize)> = uses
            .iter()
            .map(|u| (u.name.as_str(), u.form.clone(), u.line, u.column))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A", VarForm::Plain, 1, 1),
                ("B", VarForm::Default("x:y".into()), 1, 14),
                ("C", VarForm::Required("why".into()), 2, 2),
                ("A", VarForm::Plain, 2, 12),
            ]
        );
        assert!(uses[0].form.is_required());
        assert!(!uses[1].form.is_required());
        let err = variables(Path::new("t"), "${oops").expect_err("unterminated");
        assert_eq!(err.0.len(), 1);
    }
}
