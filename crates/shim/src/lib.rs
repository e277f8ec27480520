//! Instance shims: one small process per JVM (this same binary, `jarfleet shim RUN_DIR`).
//!
//! The shim owns the JVM: it spawns it in its own process group, pumps its stdout/stderr into
//! size-rotated log files, runs the stop sequence, reaps anything the JVM forked (it is a child
//! subreaper) and records how the JVM ended. It runs in its own session, so the daemon can crash,
//! restart or upgrade without touching any JVM; the next daemon re-adopts the shim through its
//! control socket (newline-delimited JSON, see [`protocol`]).

pub mod client;
pub mod protocol;
mod run;
pub mod spawn;
pub mod survivors;

pub use run::run_shim;
