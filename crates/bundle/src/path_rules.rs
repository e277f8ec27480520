//! Pure rules for names inside a bundle and for symlink targets. No IO.
//!
//! A bundle name is relative, `/`-separated, normalized UTF-8: no empty, `.` or `..`
//! components, no leading or trailing `/`, no NUL and no backslash.
//!
//! A symlink target is accepted when, resolved lexically from the link's directory, it stays
//! inside the root. To make the lexical answer the real one, `..` may only appear as a prefix
//! (`../../lib/x`, never `lib/../x`): the prefix walks up real directories (a link's ancestors
//! are always directories), and the rest only walks down, through directories or through other
//! links that obey the same rule.

use std::fmt;

/// Why a name or a symlink target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    Absolute,
    ParentComponent,
    ParentAfterName,
    CurrentComponent,
    EmptyComponent,
    Nul,
    Backslash,
    Escapes,
    Reserved,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "empty name",
            NameProblem::Absolute => "absolute path",
            NameProblem::ParentComponent => "contains a `..` component",
            NameProblem::ParentAfterName => "`..` after a name component",
            NameProblem::CurrentComponent => "contains a `.` component",
            NameProblem::EmptyComponent => "contains an empty component (`//` or a trailing `/`)",
            NameProblem::Nul => "contains a NUL byte",
            NameProblem::Backslash => "contains a backslash",
            NameProblem::Escapes => "escapes the bundle root",
            NameProblem::Reserved => "is reserved for the bundle manifest",
        })
    }
}

/// Checks that `name` is a valid bundle entry name.
pub fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.starts_with('/') {
        return Err(NameProblem::Absolute);
    }
    if name.contains('\0') {
        return Err(NameProblem::Nul);
    }
    if name.contains('\\') {
        return Err(NameProblem::Backslash);
    }
    for component in name.split('/') {
        match component {
            "" => return Err(NameProblem::EmptyComponent),
            "." => return Err(NameProblem::CurrentComponent),
            ".." => return Err(NameProblem::ParentComponent),
            _ => {}
        }
    }
    Ok(())
}

/// The parent of a valid name, `None` for a top-level name.
pub fn parent(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(parent, _)| parent)
}

/// True when `path` is `dir` or inside it (both valid names; `""` is the root).
pub fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Resolves the symlink `link` (a valid name) pointing to `target`, lexically, and returns the
/// path it designates relative to the root (`""` for the root itself). Refuses absolute
/// targets, `..` after a name component, and targets that leave the root.
pub fn resolve_symlink(link: &str, target: &str) -> Result<String, NameProblem> {
    if target.is_empty() {
        return Err(NameProblem::Empty);
    }
    if target.starts_with('/') {
        return Err(NameProblem::Absolute);
    }
    if target.contains('\0') {
        return Err(NameProblem::Nul);
    }
    if target.contains('\\') {
        return Err(NameProblem::Backslash);
    }
    let mut resolved: Vec<&str> = parent(link).map_or_else(Vec::new, |p| p.split('/').collect());
    let mut seen_name = false;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." if seen_name => return Err(NameProblem::ParentAfterName),
            ".." => {
                if resolved.pop().is_none() {
                    return Err(NameProblem::Escapes);
                }
            }
            name => {
                seen_name = true;
                resolved.push(name);
            }
        }
    }
    Ok(resolved.join("/"))
}

/// The mode an extracted file or directory gets: permission bits only, never setuid, setgid
/// or sticky, and never writable by group or others.
pub fn extract_mode(mode: u32) -> u32 {
    mode & 0o755
}

/// The mode `pack` records: 0o755 for directories and files with any execute bit, else 0o644.
/// Normalizing makes bundles independent of the packer's umask.
pub fn pack_mode(is_dir: bool, mode: u32) -> u32 {
    if is_dir || mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases: &[(&str, Result<(), NameProblem>)] = &[
            ("app", Ok(())),
            ("app/orders.jar", Ok(())),
            ("jre/lib/ünïcode..x", Ok(())),
            ("...", Ok(())),
            ("", Err(NameProblem::Empty)),
            ("/etc/passwd", Err(NameProblem::Absolute)),
            ("../x", Err(NameProblem::ParentComponent)),
            ("a/../x", Err(NameProblem::ParentComponent)),
            ("a/..", Err(NameProblem::ParentComponent)),
            ("./a", Err(NameProblem::CurrentComponent)),
            ("a//b", Err(NameProblem::EmptyComponent)),
            ("a/", Err(NameProblem::EmptyComponent)),
            ("a\0b", Err(NameProblem::Nul)),
            ("a\\b", Err(NameProblem::Backslash)),
        ];
        for (name, want) in cases {
            assert_eq!(check_name(name), *want, "{name:?}");
        }
    }

    #[test]
    fn parents_and_within() {
        assert_eq!(parent("a/b/c"), Some("a/b"));
        assert_eq!(parent("a"), None);
        assert!(is_within("jre/bin/java", "jre"));
        assert!(is_within("jre", "jre"));
        assert!(!is_within("jre2/x", "jre"));
        assert!(is_within("anything", ""));
    }

    #[test]
    fn symlinks() {
        let cases: &[(&str, &str, Result<&str, NameProblem>)] = &[
            ("jre/bin/java2", "java", Ok("jre/bin/java")),
            ("jre/legal/x", "../lib/x", Ok("jre/lib/x")),
            ("jre/legal/x", "./../lib/./x", Ok("jre/lib/x")),
            ("jre/lib/root", "../..", Ok("")),
            ("top", ".", Ok("")),
            ("top", "..", Err(NameProblem::Escapes)),
            ("jre/x", "../../etc", Err(NameProblem::Escapes)),
            ("jre/x", "/etc/passwd", Err(NameProblem::Absolute)),
            ("jre/x", "lib/../..", Err(NameProblem::ParentAfterName)),
            ("jre/x", "l/..", Err(NameProblem::ParentAfterName)),
            ("jre/x", "", Err(NameProblem::Empty)),
        ];
        for (link, target, want) in cases {
            assert_eq!(
                resolve_symlink(link, target)
                    .as_deref()
                    .map_err(Clone::clone),
                want.clone(),
                "{link} -> {target}"
            );
        }
    }

    #[test]
    fn modes() {
        assert_eq!(extract_mode(0o4755), 0o755);
        assert_eq!(extract_mode(0o2777), 0o755);
        assert_eq!(extract_mode(0o1666), 0o644);
        assert_eq!(extract_mode(0o600), 0o600);
        assert_eq!(pack_mode(false, 0o700), 0o755);
        assert_eq!(pack_mode(false, 0o600), 0o644);
        assert_eq!(pack_mode(true, 0o700), 0o755);
    }
}
