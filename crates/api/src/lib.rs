//! The jarfleet daemon API: wire types and the client.
//!
//! Only this crate knows the wire format. Every request carries [`PROTOCOL`] in the
//! `x-jarfleet-protocol` header; a daemon speaking another version answers 426 with a message
//! naming both versions, so an old CLI against a new daemon says so clearly.

mod client;
mod types;

pub use client::{Client, ClientError, LineStream};
pub use types::*;

/// Version of the wire protocol. Bump on any incompatible change to [`types`].
pub const PROTOCOL: u32 = 1;
pub const PROTOCOL_HEADER: &str = "x-jarfleet-protocol";
/// File name of the daemon's unix socket inside the state dir.
pub const SOCKET_NAME: &str = "jarfleet.sock";
/// Prometheus metrics (text exposition format 0.0.4); outside the versioned API, so any
/// scraper can read it.
pub const METRICS_PATH: &str = "/metrics";
