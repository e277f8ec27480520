//! The load balancer's own process, and the daemon's side of it.
//!
//! The listeners of every app with a `listen` address run in a small process of their own
//! (`jarfleet data-plane DIR`, the same binary), so the daemon can crash, restart or be
//! upgraded while they keep serving the last snapshot of each app's instances. The daemon binds
//! each listening socket, keeps a duplicate, and hands the socket in (`SCM_RIGHTS`); a data
//! plane that dies is replaced at once on the same sockets (connections wait in the kernel's
//! backlog meanwhile, none is refused), and a daemon that starts takes the sockets back from
//! the data plane it finds running.
//!
//! - [`protocol`]: the frames on the control socket.
//! - [`serve`]: the process.
//! - [`client`]: the daemon's side: start, re-attach, replace, hand over.

pub mod client;
pub mod protocol;
pub mod serve;

pub use protocol::PROTOCOL;
