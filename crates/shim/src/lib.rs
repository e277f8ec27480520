//! Instance shims: one small process per JVM (this same binary, `jarfleet shim RUN_DIR`).
//!
//! The shim owns the JVM: it spawns it in its own process group, pumps its stdout/stderr into
//! size-rotated log files, runs the stop sequence, reaps anything the JVM forked (it is a child
//! subreaper) and records how the JVM ended. It runs in its own session, so the daemon can crash,
//! restart or upgrade without touching any JVM; the next daemon re-adopts the shim through its
//! control socket (newline-delimited JSON, see [`protocol`]).
//!
//! This crate is the shim process and the process toolkit it stands on, which the daemon and the
//! CLI use too: [`spawn`] (children in their own session, confined to an app's user: one of the
//! three fenced `unsafe` modules), [`footprint`] (start-up code handed back), [`fdpass`]
//! (descriptors passed between jarfleet's processes: a listening socket changing hands),
//! [`logfile`] (size-rotated logs, tail, follow), [`privfs`] (what root may open where a confined
//! app could plant a name), [`procinfo`] (procfs reads), [`fdlimit`] (the open-file limit).
//! It depends on no other jarfleet crate but `jarfleet-core`.

pub mod fdlimit;
pub mod fdpass;
pub mod footprint;
pub mod logfile;
pub mod privfs;
pub mod procinfo;
pub mod protocol;
mod run;
pub mod spawn;

pub use run::run_shim;
