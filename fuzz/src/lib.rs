//! The properties each fuzz target checks, one function per target. Kept apart from the
//! targets (`fuzz_targets/`, one line each) so that the owning crates' tests include these
//! files and replay `fuzz/corpus/` and `fuzz/regressions/` against the very same checks.

pub mod bundle;
pub mod http1;
pub mod replay;
pub mod spec;
