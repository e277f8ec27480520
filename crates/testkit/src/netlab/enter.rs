//! Code of the test itself run inside a host's network namespace.
//!
//! A network namespace is a property of a thread (`setns(2)` with `CLONE_NEWNET` changes only
//! the caller), and a socket belongs to the namespace its thread was in when it was created. So
//! a fresh thread that joins the namespace and then opens sockets is, for the network, a process
//! on that host: no helper program, no shell. The test's own threads are never moved.

use std::fs::File;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

use super::Error;

/// Where `ip netns add` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Runs `f` on a new thread inside network namespace `netns` and returns what it returns; a
/// panic in `f` is resumed on the caller's thread.
pub fn run_in<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    let path = Path::new(NETNS_DIR).join(netns);
    let handle = File::open(&path).map_err(|source| Error::Io {
        what: format!("opening network namespace {}", path.display()),
        source,
    })?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(format!("netns {netns}"))
            .spawn_scoped(scope, move || {
                setns(&handle, CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Io {
                    what: format!("joining network namespace {}", path.display()),
                    source: errno.into(),
                })?;
                Ok(f())
            })
            .map_err(|source| Error::Io {
                what: format!("starting a thread for network namespace {netns}"),
                source,
            })?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
