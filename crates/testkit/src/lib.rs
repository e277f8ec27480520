//! Test-only helpers shared by every crate's tests (a dev-dependency, never shipped):
//!
//! - [`free_ports`] / [`free_port`]: the checked port allocator. A port a test hands to a
//!   process that binds it later (the `jarfleet` daemon, nginx, HAProxy, etcd, a JVM) comes
//!   from here, never from binding `127.0.0.1:0` and letting go.
//! - [`run_with_deadline`] / [`wait_with_deadline`]: every external command a test runs has a
//!   deadline; a hung child is killed and the test fails naming it.
//! - [`netlab`]: several hosts on one machine, as network namespaces on a bridge, with failures
//!   to inject (a host cut off the network, a host killed outright).
//! - [`etcd_cluster`]: a real etcd cluster of several members, killed and restarted one by one.
//! - [`http`]: a minimal HTTP/1.1 client on `std::net`, for talking to etcd's gateway or any
//!   test server without an async runtime.

pub mod etcd_cluster;
pub mod http;
pub mod netlab;
mod ports;
mod run;

pub use ports::{free_port, free_ports};
pub use run::{
    run_with_deadline, try_run_with_deadline, try_wait_with_deadline, wait_with_deadline,
};
