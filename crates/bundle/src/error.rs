//! The crate's error type. Every variant names the object (a path or a bundle entry) and what
//! was wrong with it, so a caller can print it as is.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::template::TemplateErrors;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while packing, reading, verifying or extracting a bundle, or
/// rendering a template directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation on a named path failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading the (compressed) bundle stream failed: truncated, corrupt zstd, bad tar header.
    #[error("reading the bundle stream failed: {source}")]
    Stream {
        #[source]
        source: io::Error,
    },
    /// Writing the bundle stream failed.
    #[error("writing the bundle stream failed: {source}")]
    Write {
        #[source]
        source: io::Error,
    },
    /// The input is not a `.jfb` bundle at all (no manifest first, wrong magic...).
    #[error("not a jarfleet bundle: {reason}")]
    NotABundle { reason: String },
    /// The manifest is not valid TOML or does not have the expected shape.
    #[error("bundle manifest jarfleet-bundle.toml cannot be parsed: {message}")]
    ManifestSyntax { message: String },
    /// The manifest parsed but breaks the rules; every problem found is listed.
    #[error("bundle manifest jarfleet-bundle.toml is invalid:\n  {}", problems.join("\n  "))]
    ManifestInvalid { problems: Vec<String> },
    /// One entry of the tar stream was refused.
    #[error("bundle entry `{entry}`: {problem}")]
    Entry {
        entry: String,
        problem: EntryProblem,
    },
    /// Entries listed in the manifest never appeared in the stream.
    #[error(
        "bundle is missing {} entr{} listed in its manifest: {}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        list_some(entries)
    )]
    Missing { entries: Vec<String> },
    /// Something after the end of the tar archive that is not padding.
    #[error("bundle has unexpected data after the end of its archive")]
    TrailingData,
    /// An input of `pack` cannot go into a bundle.
    #[error("cannot pack {}: {problem}", path.display())]
    Pack { path: PathBuf, problem: String },
    /// The extraction or render target exists and is not an empty directory.
    #[error("target {} must be an empty directory or not exist yet", path.display())]
    TargetNotEmpty { path: PathBuf },
    /// An installer file's trailer is present but inconsistent.
    #[error("embedded bundle in {}: {problem}", path.display())]
    Embedded { path: PathBuf, problem: String },
    /// A template directory contains something that cannot be rendered.
    #[error("template {}: {problem}", path.display())]
    TemplateFile { path: PathBuf, problem: String },
    /// Template rendering failed; every error of every file is listed.
    #[error(transparent)]
    Templates(#[from] TemplateErrors),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn entry(entry: impl Into<String>, problem: EntryProblem) -> Error {
        Error::Entry {
            entry: entry.into(),
            problem,
        }
    }
}

fn list_some(entries: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = entries
        .iter()
        .take(SHOWN)
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if entries.len() > SHOWN {
        out.push_str(&format!(" and {} more", entries.len() - SHOWN));
    }
    out
}

/// Why one tar entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// The name is not a valid bundle path (absolute, `..`, empty component, ...).
    BadName(crate::path_rules::NameProblem),
    /// The name is not UTF-8.
    NotUtf8,
    /// Hard links, devices, fifos, sparse files, PAX headers, ...
    UnsupportedType(&'static str),
    /// The entry is not listed in the manifest.
    NotInManifest,
    /// The entry appeared twice in the stream.
    Duplicate,
    /// The stream's kind differs from the manifest's.
    KindMismatch {
        manifest: &'static str,
        stream: &'static str,
    },
    /// The entry comes before its parent directory (or its parent is not a directory).
    ParentNotExtracted { parent: String },
    /// A symlink target that leaves the extraction root or is malformed.
    BadSymlink {
        target: String,
        problem: crate::path_rules::NameProblem,
    },
    /// The symlink target differs from the manifest's.
    SymlinkTargetMismatch { manifest: String, stream: String },
    /// The size in the tar header differs from the manifest's.
    SizeMismatch { manifest: u64, stream: u64 },
    /// The content's sha256 differs from the manifest's.
    DigestMismatch { manifest: String, actual: String },
    /// A directory or symlink entry that carries data.
    UnexpectedData { size: u64 },
    /// A GNU long-name record that is too long or not followed by an entry.
    BadLongName(String),
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::BadName(p) => write!(f, "invalid name: {p}"),
            EntryProblem::NotUtf8 => write!(f, "name is not UTF-8"),
            EntryProblem::UnsupportedType(t) => {
                write!(f, "{t} entries are not allowed in a bundle")
            }
            EntryProblem::NotInManifest => write!(f, "not listed in the manifest"),
            EntryProblem::Duplicate => write!(f, "appears more than once in the bundle"),
            EntryProblem::KindMismatch { manifest, stream } => {
                write!(
                    f,
                    "is a {stream} in the bundle but a {manifest} in the manifest"
                )
            }
            EntryProblem::ParentNotExtracted { parent } => write!(
                f,
                "its parent `{parent}` is not a directory extracted before it (a file through a symlink, or out of order)"
            ),
            EntryProblem::BadSymlink { target, problem } => {
                write!(f, "symlink target `{target}` refused: {problem}")
            }
            EntryProblem::SymlinkTargetMismatch { manifest, stream } => write!(
                f,
                "symlink points to `{stream}` but the manifest says `{manifest}`"
            ),
            EntryProblem::SizeMismatch { manifest, stream } => write!(
                f,
                "size differs: the manifest says {manifest} bytes, the bundle has {stream}"
            ),
            EntryProblem::DigestMismatch { manifest, actual } => write!(
                f,
                "sha256 mismatch: the manifest says {manifest}, the content hashes to {actual}"
            ),
            EntryProblem::UnexpectedData { size } => {
                write!(
                    f,
                    "a directory or symlink entry carries {size} bytes of data"
                )
            }
            EntryProblem::BadLongName(why) => write!(f, "bad GNU long name record: {why}"),
        }
    }
}
