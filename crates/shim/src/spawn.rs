//! The one fenced place with `unsafe`: code that runs between `fork` and `exec`, and adopting an
//! inherited file descriptor. Everything here is async-signal-safe (`setsid`, `dup2`, `fcntl`,
//! `prctl`, `getppid`, `setrlimit`, `setgroups`, `setgid`, `setuid`): no allocation, no locks.
//!
//! Whatever runs the app's code (the JVM, an `exec` health check) or touches its process
//! (`jcmd`) is confined here: the app's user when it has one, and `PR_SET_NO_NEW_PRIVS` always.
//!
//! Every process the daemon starts (shims, and through them the JVMs; `exec` health checks) gets
//! back the open-file limit the daemon was started with, since the daemon raised its own
//! (`crate::fdlimit` says why).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The file descriptor on which a shim finds its control socket's listener.
pub const LISTENER_FD: i32 = 3;

/// The daemon's own variables from systemd: never passed on to shims or JVMs (an app that
/// speaks sd_notify itself would otherwise talk to the daemon's unit).
pub const PRIVATE_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Starts `exe shim RUN_DIR` in a new session (so a Ctrl-C on the daemon's terminal or the
/// daemon's death never reaches it), handing it `listener` as fd 3 so the daemon can connect
/// before the shim has even started: no race on the socket.
pub fn spawn_shim(
    exe: &Path,
    run_dir: &Path,
    listener: &UnixListener,
    log: std::fs::File,
) -> io::Result<tokio::process::Child> {
    let args = [std::ffi::OsStr::new("shim"), run_dir.as_os_str()];
    let cmd = helper_command(exe, &args, listener, log)?;
    tokio::process::Command::from(cmd).spawn()
}

/// Starts `exe ARGS…` as another of jarfleet's own long-lived processes (the load balancer's
/// data plane), as [`spawn_shim`] starts a shim: its own session, `listener` as fd 3, `log` as
/// its output. A plain child, for callers outside an async runtime.
pub fn spawn_helper(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    listener: &UnixListener,
    log: std::fs::File,
) -> io::Result<std::process::Child> {
    helper_command(exe, args, listener, log)?.spawn()
}

fn helper_command(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    listener: &UnixListener,
    log: std::fs::File,
) -> io::Result<Command> {
    let fd = listener.as_raw_fd();
    let nofile = crate::fdlimit::for_children();
    let err = log.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        // One malloc arena for all of the process's threads: less private memory.
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(Stdio::null());
    // systemd's notify socket and watchdog are the daemon's alone.
    for var in PRIVATE_VARS {
        cmd.env_remove(var);
    }
    cmd.stdout(log).stderr(err);
    // SAFETY: the closure only calls async-signal-safe libc functions and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            restore_nofile(nofile)?;
            if fd == LISTENER_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, LISTENER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// `program` as a child of the daemon (an `exec` health check) or of the installer (a hook): with
/// the open-file limit the
/// daemon was started with, as the app's user when it has one, and never able to gain
/// privileges (`PR_SET_NO_NEW_PRIVS`: no setuid binary or file capability raises them).
pub fn child_command(
    program: impl AsRef<std::ffi::OsStr>,
    run_as: Option<crate::protocol::RunAs>,
) -> Command {
    let mut cmd = Command::new(program);
    let nofile = crate::fdlimit::for_children();
    // SAFETY: setrlimit, setgroups, setgid, setuid and prctl are async-signal-safe; the limit
    // was read before the fork and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            restore_nofile(nofile)?;
            confine(run_as)
        });
    }
    cmd
}

/// `jcmd` for a thread dump of a JVM that runs as `run_as`: as that same user (the attach
/// files it creates live in the JVM's directories), never able to gain privileges.
pub fn jcmd_command(jcmd: &Path, run_as: Option<crate::protocol::RunAs>) -> Command {
    let mut cmd = Command::new(jcmd);
    // SAFETY: as in `child_command`.
    unsafe {
        cmd.pre_exec(move || confine(run_as));
    }
    cmd
}

/// Between fork and exec: become `run_as` (its own group only: supplementary groups cleared)
/// and set `PR_SET_NO_NEW_PRIVS`, so nothing exec'd from here on gains privileges. The app's
/// code runs only after this.
fn confine(run_as: Option<crate::protocol::RunAs>) -> io::Result<()> {
    if let Some(user) = run_as {
        let groups = [user.gid as libc::gid_t];
        // SAFETY: plain system calls; the group list lives on the stack.
        if unsafe {
            libc::setgroups(1, groups.as_ptr()) < 0
                || libc::setgid(user.gid as libc::gid_t) < 0
                || libc::setuid(user.uid as libc::uid_t) < 0
        } {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: a plain system call with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Between fork and exec: the open-file limit the daemon was started with (`None`: the daemon
/// did not change its own, nothing to do).
fn restore_nofile(nofile: Option<(u64, u64)>) -> io::Result<()> {
    let Some((soft, hard)) = nofile else {
        return Ok(());
    };
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: a plain system call on a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The listener the daemon handed over as fd 3. Call once, at shim start.
pub fn inherited_listener() -> io::Result<UnixListener> {
    // SAFETY: fd 3 is checked to be a socket before it is adopted, and adopted only once.
    let kind = unsafe { libc::fcntl(LISTENER_FD, libc::F_GETFD) };
    if kind < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no control socket on fd 3: `jarfleet shim` is started by the daemon, not by hand",
        ));
    }
    // SAFETY: as above; from here on the UnixListener owns fd 3.
    let listener = unsafe { UnixListener::from_raw_fd(LISTENER_FD) };
    // Keep it out of the JVM.
    // SAFETY: plain fcntl on a valid fd.
    unsafe {
        libc::fcntl(LISTENER_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Ok(listener)
}

/// Prepares the JVM command: its own process group (so the whole group can be signalled), and
/// SIGKILL if the shim dies (so a JVM is never left without its owner).
/// With `run_as`, the JVM drops to that user and group (supplementary groups cleared) before exec;
/// it always runs with `PR_SET_NO_NEW_PRIVS`.
pub fn jvm_command(argv0: &str, run_as: Option<crate::protocol::RunAs>) -> Command {
    let mut cmd = Command::new(argv0);
    cmd.process_group(0);
    let shim_pid = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid, setgroups, setgid and setuid are async-signal-safe; nothing is
    // allocated (the group list lives on the stack).
    unsafe {
        cmd.pre_exec(move || {
            // The user first: a change of credentials clears the parent-death signal.
            confine(run_as)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The shim died between fork and prctl: do not run unowned.
            if libc::getppid() != shim_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd
}

/// Starts `cmd` in a new session (no controlling terminal): used for `jarfleet up -d`.
pub fn spawn_detached(mut cmd: Command) -> io::Result<std::process::Child> {
    // SAFETY: setsid is async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
