//! Spec errors: each names file, position, key, the value as written, what is wrong and the fix.

use std::fmt;

/// One problem in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file as given to [`super::load`] (display form).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted key path, e.g. `apps.orders.health.interval`; empty for TOML syntax errors.
    pub key: String,
    /// The offending value as written in the file (shortened to one line), if there is one.
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it / what is accepted.
    pub hint: Option<String>,
}

/// Every error found in one spec, sorted by position. Never empty when returned by `load`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, SpecError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a SpecErrors {
    type Item = &'a SpecError;
    type IntoIter = std::slice::Iter<'a, SpecError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Renders one block:
/// ```text
/// error: jarfleet.toml:12:9: apps.orders.instances = 0: must be between 1 and 1000
///   hint: set instances to the number of JVMs to run, e.g. instances = 3
/// ```
impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}:{}:{}: ", self.file, self.line, self.column)?;
        match (&self.value, self.key.is_empty()) {
            (Some(v), false) => write!(f, "{} = {}: ", self.key, v)?,
            (None, false) => write!(f, "{}: ", self.key)?,
            (_, true) => {}
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every block, a blank line between blocks, then `N errors in FILE; nothing was applied`.
impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}\n")?;
        }
        let file = self.0.first().map_or("the spec", |e| e.file.as_str());
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in {file}; nothing was applied",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for SpecError {}
impl std::error::Error for SpecErrors {}

/// Where each line of a source starts: built once per file, so turning the offsets of many
/// errors into positions costs a binary search each instead of a scan from the file's start.
pub(crate) struct LineIndex {
    /// Byte offset of the first byte of every line; `starts[0] == 0`.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(src: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// Byte offset → (line, column), both 1-based, column counted in characters. An offset
    /// past the end is the end; one inside a character is that character.
    pub(crate) fn line_col(&self, src: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line starting at or before `offset`.
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let line_start = self.starts[line - 1];
        let column = src[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let src = "a = 1\nbé = \"x\"\n\nlast";
        let cases = [
            (0, (1, 1)),
            (4, (1, 5)),
            (6, (2, 1)),
            (10, (2, 4)),
            (16, (3, 1)),
            (17, (4, 1)),
            (99, (4, 5)),
        ];
        for (offset, want) in cases {
            assert_eq!(
                LineIndex::new(src).line_col(src, offset),
                want,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn the_index_agrees_with_a_scan_from_the_start() {
        let src = "a\n\nbé = \"ü\"\r\nlast line\n";
        let index = LineIndex::new(src);
        for offset in 0..=src.len() + 2 {
            let mut at = offset.min(src.len());
            while !src.is_char_boundary(at) {
                at -= 1;
            }
            let before = &src[..at];
            let line = before.matches('\n').count() + 1;
            let start = before.rfind('\n').map_or(0, |p| p + 1);
            let want = (line, before[start..].chars().count() + 1);
            assert_eq!(index.line_col(src, offset), want, "offset {offset}");
        }
        assert_eq!(LineIndex::new("").line_col("", 5), (1, 1));
    }

    #[test]
    fn renders_fixed_shape() {
        let e = |line, key: &str, value: Option<&str>, hint: Option<&str>| SpecError {
            file: "jarfleet.toml".into(),
            line,
            column: 9,
            key: key.into(),
            value: value.map(Into::into),
            message: "must be between 1 and 1000".into(),
            hint: hint.map(Into::into),
        };
        let errs = SpecErrors(vec![
            e(
                12,
                "apps.orders.instances",
                Some("0"),
                Some("e.g. instances = 3"),
            ),
            e(13, "apps.orders", None, None),
            e(14, "", None, None),
        ]);
        assert_eq!(
            errs.to_string(),
            "error: jarfleet.toml:12:9: apps.orders.instances = 0: must be between 1 and 1000\n  \
             hint: e.g. instances = 3\n\n\
             error: jarfleet.toml:13:9: apps.orders: must be between 1 and 1000\n\n\
             error: jarfleet.toml:14:9: must be between 1 and 1000\n\n\
             3 errors in jarfleet.toml; nothing was applied"
        );
        assert!(
            SpecErrors(vec![e(1, "k", None, None)])
                .to_string()
                .ends_with("1 error in jarfleet.toml; nothing was applied")
        );
    }
}
