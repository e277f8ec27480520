//! Pure decision logic of jarfleet.
//!
//! Invariant: nothing in this crate performs IO, reads the clock or uses unseeded randomness.
//! Time is always a parameter (`now: Millis`). The daemon is the imperative shell around it.

pub mod backoff;
pub mod canary;
pub mod cluster;
pub mod deployment;
pub mod during;
pub mod events;
pub mod health;
pub mod instance;
pub mod interp;
pub mod javaver;
pub mod reconcile;
pub mod recovery;
pub mod redact;
pub mod rollout;
pub mod spec;
#[cfg(test)]
mod testkit;
pub mod units;

/// Milliseconds since the Unix epoch (or any fixed origin): the only notion of time in core.
pub type Millis = u64;
