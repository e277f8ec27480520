//! iproute2's `ip`, run with a deadline, and the few listings the lab reads back from it.
//!
//! The lab drives `ip` rather than netlink directly: it is what a person debugging a test types,
//! so what the lab does can be replayed and inspected by hand (`ip netns list`, `ip link`).

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use super::Error;
use crate::run::try_run_with_deadline;

/// How long one `ip` command may take (they take milliseconds; a busy machine, seconds).
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `ip ARGS`; its stdout, or an error with its stderr.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let what = format!("ip {}", args.join(" "));
    let out = try_run_with_deadline(&mut cmd, DEADLINE).map_err(|detail| Error::Command {
        what: what.clone(),
        detail,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            what,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Runs the `ip` commands of `lines` (one per line, without the leading `ip`) in one process,
/// inside network namespace `netns` when given; it stops at the first that fails.
pub fn batch(netns: Option<&str>, lines: &[String]) -> Result<(), Error> {
    let mut file = tempfile::NamedTempFile::new().map_err(|source| Error::Io {
        what: "creating a temp file for `ip -batch`".into(),
        source,
    })?;
    let mut text = lines.join("\n");
    text.push('\n');
    file.write_all(text.as_bytes())
        .map_err(|source| Error::Io {
            what: format!("writing {}", file.path().display()),
            source,
        })?;
    let path = file.path().display().to_string();
    let mut args = Vec::new();
    if let Some(netns) = netns {
        args.extend(["-n", netns]);
    }
    args.extend(["-batch", &path]);
    ip(&args).map(drop).map_err(|e| match e {
        Error::Command { what, detail } => Error::Command {
            what: format!("{what} (commands: {})", lines.join("; ")),
            detail,
        },
        other => other,
    })
}

/// The names of the network namespaces `ip netns` knows (`/run/netns`).
pub fn netns_names() -> Result<Vec<String>, Error> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The names of the root namespace's links (a veth's `@peer` left out).
pub fn link_names() -> Result<Vec<String>, Error> {
    Ok(parse_link_names(&ip(&["-o", "link", "show"])?))
}

/// Whether the root namespace has a link called `name`.
pub fn link_exists(name: &str) -> Result<bool, Error> {
    Ok(link_names()?.iter().any(|l| l == name))
}

/// The pids of the processes in network namespace `netns`.
pub fn netns_pids(netns: &str) -> Result<Vec<i32>, Error> {
    let out = ip(&["netns", "pids", netns])?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// `ip -o link show` lines look like `12: jf3v0@if2: <BROADCAST,...> mtu ...`.
fn parse_link_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

/// `Err(MissingTool)` when `ip` is on no directory of PATH: said once, up front, rather than
/// as the failure of whichever command comes first.
pub fn require_ip() -> Result<(), Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| dir.join("ip").is_file());
    if found {
        Ok(())
    } else {
        Err(Error::MissingTool {
            tool: "ip",
            package: "iproute2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_leave_out_the_peer() {
        let listing = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\\    link/loopback\n\
                       7: jfbr3: <BROADCAST,MULTICAST,UP> mtu 1500\\    link/ether 02:4a:66\n\
                       8: jf3v0@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master jfbr3\n";
        assert_eq!(parse_link_names(listing), ["lo", "jfbr3", "jf3v0"]);
    }
}
