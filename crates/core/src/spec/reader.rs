//! Typed reads from span-keeping TOML tables. Every read that fails records a [`SpecError`]
//! and returns `None`, so the caller carries on and the user gets every error at once.

use std::ops::{Range, RangeInclusive};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::check;
use super::error::{LineIndex, SpecError};
use crate::interp::{self, Mode};
use crate::units;

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// A TOML table being read, with its dotted path and where to point when a key is missing.
pub(crate) struct Table<'t, 'i> {
    pub path: String,
    pub at: Range<usize>,
    pub map: &'t DeTable<'i>,
}

impl<'t, 'i> Table<'t, 'i> {
    pub fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        self.map.get(key)
    }
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some()
    }
    /// Dotted path of `key` in this table.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// "a string", "an integer", … for type errors.
pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

pub(crate) struct Reader<'a> {
    pub src: &'a str,
    pub file: String,
    /// Directory relative paths are resolved against (the spec file's parent).
    pub base: PathBuf,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub errors: Vec<SpecError>,
    /// Line starts of `src`, for error positions.
    lines: LineIndex,
}

impl<'a> Reader<'a> {
    pub fn new(src: &'a str, file: &Path, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Reader {
            src,
            file: file.display().to_string(),
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            env,
            errors: Vec::new(),
            lines: LineIndex::new(src),
        }
    }

    /// The source text of `span` on one line, shortened: how the value was written.
    pub fn raw(&self, span: &Range<usize>) -> String {
        let text = self.src.get(span.clone()).unwrap_or("");
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 60 {
            let short: String = one_line.chars().take(57).collect();
            format!("{short}...")
        } else {
            one_line
        }
    }

    pub fn push(
        &mut self,
        at: usize,
        key: &str,
        value: Option<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = self.lines.line_col(self.src, at);
        self.errors.push(SpecError {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            value,
            message: message.into(),
            hint,
        });
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, at: usize) -> usize {
        self.lines.line_col(self.src, at).0
    }

    /// An error about a value: points at it and quotes it (tables are not quoted).
    pub fn bad(
        &mut self,
        v: &Value<'_>,
        key: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let value = match v.get_ref() {
            DeValue::Table(_) => None,
            _ => Some(self.raw(&v.span())),
        };
        self.push(v.span().start, key, value, message, hint);
    }

    /// An error about a missing key: points at the table.
    pub fn missing(&mut self, t: &Table<'_, '_>, message: impl Into<String>, hint: Option<String>) {
        self.push(t.at.start, &t.path, None, message, hint);
    }

    fn wrong_type(&mut self, v: &Value<'_>, key: &str, want: &str, example: &str) {
        let message = format!("expected {want}, found {}", type_name(v.get_ref()));
        let hint = Some(format!("e.g. {} = {example}", last_segment(key)));
        self.bad(v, key, message, hint);
    }

    /// Reports every key of `t` not in `known`. A key that belongs in another section is named as
    /// such (`elsewhere`: section suffix and its keys); otherwise the closest known key is offered.
    pub fn check_keys(&mut self, t: &Table<'_, '_>, known: &[&str], elsewhere: &[(&str, &[&str])]) {
        for (k, v) in t.map.iter() {
            let name: &str = k.get_ref();
            if known.contains(&name) {
                continue;
            }
            let key = t.key(name);
            let accepted = Some(format!("accepted here: {}", known.join(", ")));
            let (message, hint) = if let Some((section, _)) =
                elsewhere.iter().find(|(_, keys)| keys.contains(&name))
            {
                let section = if t.path.is_empty() {
                    section.to_string()
                } else {
                    t.key(section)
                };
                (
                    format!("unknown key here; `{name}` belongs in [{section}]"),
                    None,
                )
            } else if let Some(close) = check::closest(name, known) {
                (format!("unknown key; did you mean `{close}`?"), accepted)
            } else {
                ("unknown key".to_string(), accepted)
            };
            let value = match v.get_ref() {
                DeValue::Table(_) => None,
                _ => Some(self.raw(&v.span())),
            };
            self.push(k.span().start, &key, value, message, hint);
        }
    }

    /// Interpolates a string value; errors point into the string where possible.
    pub fn interp(&mut self, s: &str, v: &Value<'_>, key: &str, mode: Mode) -> Option<String> {
        match interp::interpolate(s, self.env, mode) {
            Ok(out) => Some(out),
            Err(errs) => {
                let raw = self.raw(&v.span());
                for e in errs {
                    let at = self.offset_in_string(&v.span(), s, e.offset);
                    self.push(at, key, Some(raw.clone()), e.message, e.hint);
                }
                None
            }
        }
    }

    /// Maps a byte offset inside a string value to the source. Exact when the string has no
    /// escapes; otherwise the start of the string.
    fn offset_in_string(&self, span: &Range<usize>, value: &str, offset: usize) -> usize {
        let raw = self.src.get(span.clone()).unwrap_or("");
        for delim in ["\"\"\"", "'''", "\"", "'"] {
            if raw.len() >= 2 * delim.len() && raw.starts_with(delim) && raw.ends_with(delim) {
                let content = &raw[delim.len()..raw.len() - delim.len()];
                if content == value {
                    return span.start + delim.len() + offset;
                }
                for newline in ["\n", "\r\n"] {
                    if content.strip_prefix(newline) == Some(value) {
                        return span.start + delim.len() + newline.len() + offset;
                    }
                }
                break;
            }
        }
        span.start
    }

    pub fn string_value(
        &mut self,
        v: &Value<'_>,
        key: &str,
        mode: Mode,
        example: &str,
    ) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => self.interp(s, v, key, mode),
            _ => {
                self.wrong_type(v, key, "a string", example);
                None
            }
        }
    }

    /// A non-empty path, resolved against the spec's directory when relative. Pure: no IO.
    pub fn path(&mut self, t: &Table<'_, '_>, key: &str, example: &str) -> Option<PathBuf> {
        let v = t.get(key)?;
        let full = t.key(key);
        let s = self.string_value(v, &full, Mode::Plain, example)?;
        self.check_path(&s, v, &full, example)?;
        Some(self.resolve(&s))
    }

    pub fn check_path(&mut self, s: &str, v: &Value<'_>, key: &str, example: &str) -> Option<()> {
        if s.trim().is_empty() {
            let hint = Some(format!("e.g. {} = {example}", last_segment(key)));
            self.bad(v, key, "a path cannot be empty", hint);
            return None;
        }
        if s == "~" || s.starts_with("~/") {
            let hint = Some(format!("write \"${{HOME}}{}\"", &s[1..]));
            self.bad(v, key, "`~` is not expanded", hint);
            return None;
        }
        Some(())
    }

    /// Joins a relative path to the spec's directory and drops `.` components.
    pub fn resolve(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        };
        let clean: PathBuf = joined
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        if clean.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            clean
        }
    }

    pub fn int(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        range: RangeInclusive<i64>,
        hint: &str,
    ) -> Option<i64> {
        let v = t.get(key)?;
        let full = t.key(key);

        let n = match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => n,
                Err(_) => {
                    self.bad(v, &full, "number too large", Some(hint.to_string()));
                    return None;
                }
            },
            DeValue::String(s) if s.trim().parse::<i64>().is_ok() => {
                let fix = format!("remove the quotes: {key} = {}", s.trim());
                self.bad(v, &full, "expected an integer, found a string", Some(fix));
                return None;
            }
            other => {
                let message = format!("expected an integer, found {}", type_name(other));
                self.bad(v, &full, message, Some(hint.to_string()));
                return None;
            }
        };
        if !range.contains(&n) {
            let message = if *range.end() >= i64::from(u32::MAX) {
                format!("must be at least {}", range.start())
            } else {
                format!("must be between {} and {}", range.start(), range.end())
            };
            self.bad(v, &full, message, Some(hint.to_string()));
            return None;
        }
        Some(n)
    }

    pub fn u32(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        range: RangeInclusive<u32>,
        hint: &str,
    ) -> Option<u32> {
        let n = self.int(
            t,
            key,
            i64::from(*range.start())..=i64::from(*range.end()),
            hint,
        )?;
        u32::try_from(n).ok()
    }

    /// A finite number (a TOML float or integer) for which `ok` holds, else `rule` is reported.
    pub fn float(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        ok: fn(f64) -> bool,
        rule: &str,
        example: &str,
    ) -> Option<f64> {
        let v = t.get(key)?;
        let full = t.key(key);
        let parsed = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            _ => {
                self.wrong_type(v, &full, "a number", example);
                return None;
            }
        };
        match parsed {
            Some(f) if f.is_finite() && ok(f) => Some(f),
            _ => {
                self.bad(v, &full, rule, Some(format!("e.g. {key} = {example}")));
                None
            }
        }
    }

    pub fn boolean(&mut self, t: &Table<'_, '_>, key: &str) -> Option<bool> {
        let v = t.get(key)?;
        let full = t.key(key);
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            DeValue::String(s) if s == "true" || s == "false" => {
                let fix = format!("remove the quotes: {key} = {s}");
                self.bad(v, &full, "expected a boolean, found a string", Some(fix));
                None
            }
            _ => {
                self.wrong_type(v, &full, "a boolean (true or false)", "true");
                None
            }
        }
    }

    fn time_or_size_text(
        &mut self,
        v: &Value<'_>,
        key: &str,
        what: &str,
        unit: &str,
    ) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => self.interp(s, v, key, Mode::Plain),
            DeValue::Integer(i) => {
                let fix = format!(
                    "write the unit, e.g. {} = \"{}{unit}\"",
                    last_segment(key),
                    i.as_str()
                );
                self.bad(
                    v,
                    key,
                    format!("expected {what} string with a unit, found an integer"),
                    Some(fix),
                );
                None
            }
            _ => {
                let example = format!("\"5{unit}\"");
                self.wrong_type(v, key, &format!("{what} string"), &example);
                None
            }
        }
    }

    /// A duration such as "5s"; `positive` rejects zero.
    pub fn duration(&mut self, t: &Table<'_, '_>, key: &str, positive: bool) -> Option<Duration> {
        let v = t.get(key)?;
        let full = t.key(key);
        let s = self.time_or_size_text(v, &full, "a duration", "s")?;
        match units::parse_duration(&s) {
            Ok(d) if positive && d.is_zero() => {
                self.bad(v, &full, "must be greater than 0", None);
                None
            }
            Ok(d) => Some(d),
            Err(msg) => {
                let hint = "accepted: an integer with a unit ms, s, m or h, e.g. \"250ms\", \"5s\", \"1m30s\"";
                self.bad(v, &full, msg, Some(hint.into()));
                None
            }
        }
    }

    /// A duration within `min..=max`; zero is accepted only with `zero_means` (what it turns
    /// off, named in the message). Out of range: an error naming the accepted values.
    pub fn duration_within(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        (min, max): (Duration, Duration),
        zero_means: Option<&str>,
        hint: &str,
    ) -> Option<Duration> {
        let v = t.get(key)?;
        let full = t.key(key);
        let d = self.duration(t, key, false)?;
        let fmt = units::format_duration;
        let ok = (d.is_zero() && zero_means.is_some()) || (d >= min && d <= max);
        if ok {
            return Some(d);
        }
        let message = match zero_means {
            Some(off) => format!(
                "must be 0s ({off}) or between {} and {}",
                fmt(min),
                fmt(max)
            ),
            None if d.is_zero() => "must be greater than 0".to_string(),
            None if min <= Duration::from_millis(1) => format!("must be at most {}", fmt(max)),
            None => format!("must be between {} and {}", fmt(min), fmt(max)),
        };
        self.bad(v, &full, message, Some(hint.to_string()));
        None
    }

    /// A size in bytes (zero allowed) up to `max`.
    pub fn size_up_to(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        max: u64,
        hint: &str,
    ) -> Option<u64> {
        let v = t.get(key)?;
        let full = t.key(key);
        let s = self.time_or_size_text(v, &full, "a size", "B")?;
        match units::parse_size(&s) {
            Ok(n) if n <= max => Some(n),
            Ok(_) => {
                let message = format!("must be at most {}", units::format_size(max));
                self.bad(v, &full, message, Some(hint.to_string()));
                None
            }
            Err(msg) => {
                let accepted = "accepted: an integer with a unit: B, kB, MB (powers of 1000) or KiB, MiB (powers of 1024), e.g. \"64KiB\"";
                self.bad(v, &full, msg, Some(accepted.into()));
                None
            }
        }
    }

    /// A size in bytes such as "50MB" or "10 MiB".
    pub fn size(&mut self, t: &Table<'_, '_>, key: &str) -> Option<u64> {
        let v = t.get(key)?;
        let full = t.key(key);
        let s = self.time_or_size_text(v, &full, "a size", "MB")?;
        match units::parse_size(&s) {
            Ok(0) => {
                self.bad(
                    v,
                    &full,
                    "must be greater than 0",
                    Some("e.g. \"50MB\"".into()),
                );
                None
            }
            Ok(n) => Some(n),
            Err(msg) => {
                let hint = "accepted: an integer with a unit: B, kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), e.g. \"50MB\"";
                self.bad(v, &full, msg, Some(hint.into()));
                None
            }
        }
    }

    /// An array of strings (each interpolated). `None` if absent or not an array; bad elements
    /// are reported and left out (so the caller can still check the good ones).
    pub fn string_list<'t, 'i>(
        &mut self,
        t: &Table<'t, 'i>,
        key: &str,
        mode: Mode,
        example: &str,
    ) -> Option<Vec<(String, &'t Value<'i>)>> {
        let v = t.get(key)?;
        let full = t.key(key);
        let DeValue::Array(items) = v.get_ref() else {
            let hint = match v.get_ref() {
                DeValue::String(_) => format!("write an array: {key} = [{}]", self.raw(&v.span())),
                _ => format!("e.g. {key} = {example}"),
            };
            let message = format!(
                "expected an array of strings, found {}",
                type_name(v.get_ref())
            );
            self.bad(v, &full, message, Some(hint));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{full}[{i}]");
            match item.get_ref() {
                DeValue::String(s) => {
                    if let Some(s) = self.interp(s, item, &item_key, mode) {
                        out.push((s, item));
                    }
                }
                other => {
                    let message = format!("expected a string, found {}", type_name(other));
                    let hint = format!("quote it: \"{}\"", self.raw(&item.span()));
                    self.bad(item, &item_key, message, Some(hint));
                }
            }
        }
        Some(out)
    }

    /// A sub-table (`[a.b]` or `b = { … }`).
    pub fn table<'t, 'i>(
        &mut self,
        parent: &Table<'t, 'i>,
        key: &str,
        example: &str,
    ) -> Option<Table<'t, 'i>> {
        let v = parent.get(key)?;
        let full = parent.key(key);
        match v.get_ref() {
            DeValue::Table(map) => Some(Table {
                path: full,
                at: v.span(),
                map,
            }),
            _ => {
                self.wrong_type(v, &full, "a table", example);
                None
            }
        }
    }
}
