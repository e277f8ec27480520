//! jarfleet release bundles (`.jfb`) and config templates.
//!
//! A bundle is a zstd-compressed tar stream whose first entry is the manifest
//! `jarfleet-bundle.toml` ([`manifest`]), followed by the payload in manifest order: the jar
//! under `app/`, config templates under `config/`, hooks under `hooks/`, an optional JRE under
//! `jre/`. [`pack`] writes one deterministically; [`Bundle`] reads one as a stream, verifying
//! every entry against the manifest while it extracts; [`embed`] puts one at the end of an
//! installer binary; [`template`] renders the config templates.
//!
//! Module map: `path_rules` (pure name and symlink rules), `manifest` (format), `pack`
//! (writing), `read` (opening, manifest first), `extract` (the streaming checks and writes),
//! `embed` (installer trailer), `template` (`${VAR}` rendering).

mod error;
mod extract;
mod fsutil;
mod read;

pub mod embed;
pub mod manifest;
pub mod pack;
pub mod path_rules;
pub mod template;

pub use error::{EntryProblem, Error, Result};
pub use manifest::{FileEntry, FileKind, Hook, Hooks, Manifest};
pub use pack::{PackReport, PackSpec, bundle_file_name, pack, pack_writer};
pub use read::{Bundle, Summary};
