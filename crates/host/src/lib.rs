//! What the jarfleet CLI and the daemon share on one host.
//!
//! [`paths`] is the one description of the state dir's layout. Around it: [`prepare`] (artifact,
//! signature, remote download and JDK checks, release ids), [`templates`] (config templates: the
//! spec's, and per-instance rendering), [`config_center`] (the etcd config center read at
//! preparation), [`launch`] (JVM command lines), [`faststart`] (extracted layouts, class data
//! archives), [`install_txn`] (install transactions: undo log, recovery), [`ports`] (pre-flight:
//! free, in use, or could not check) and [`survivors`] (the live shims of `run/`, found without
//! the store).
//!
//! It depends on `jarfleet-shim` (the run dir protocol, spawning confined children), never on
//! the daemon.

pub mod build;
pub mod config_center;
pub mod faststart;
pub mod install_txn;
pub mod launch;
pub mod paths;
pub mod ports;
pub mod prepare;
pub mod survivors;
pub mod templates;
