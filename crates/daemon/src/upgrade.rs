//! `jarfleet upgrade`: the daemon and its data plane replace themselves by another binary
//! without closing the front door.
//!
//! 1. The new binary is asked what it is (`BINARY version --json`, with a deadline): a binary
//!    that another user could replace (it or a directory above it not the daemon's user's
//!    alone), that does not run here, or that speaks another API or data-plane protocol, is
//!    refused before anything changes.
//! 2. The loop has the data plane hand over ([`crate::control::data_plane::DataPlane::hand_over_to`]):
//!    a data plane of the new binary is given every socket and serves; the old one stops
//!    accepting, finishes what it holds, and exits. If the new one does not serve, the old one
//!    goes on and the upgrade is refused.
//! 3. The daemon stops as for a restart (JVMs and data plane keep running) and `exec`s the new
//!    binary with its own arguments: same pid (a service manager sees no restart), and the new
//!    daemon takes back the shims and the data plane as after any restart.
//!
//! After the `exec` the new program inherits the old one's children (shims, data planes)
//! without knowing them: [`reap_inherited`] collects their exits so none is left a zombie.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use jarfleet_api::{BuildInfo, ErrorBody, ErrorKind};

/// How long `BINARY version --json` may take.
const CHECK_WITHIN: Duration = Duration::from_secs(10);

/// What the daemon knows for an upgrade: how to start itself again, and (once decided) the
/// binary to `exec`.
pub struct Upgrade {
    /// The arguments to `exec` the new binary with; `None` with the reason when this daemon
    /// cannot be replaced in place.
    reexec: Result<Vec<OsString>, String>,
    target: Mutex<Option<PathBuf>>,
}

fn usage(message: String, hint: Option<&str>) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Usage,
        message,
        hint: hint.map(str::to_string),
    }
}

impl Upgrade {
    pub fn new(reexec: Result<Vec<OsString>, String>) -> Upgrade {
        Upgrade {
            reexec,
            target: Mutex::new(None),
        }
    }

    /// Whether this daemon can `exec` another binary in its place.
    pub fn possible(&self) -> Result<(), ErrorBody> {
        self.reexec.as_ref().map(|_| ()).map_err(|why| {
            usage(
                format!("this daemon cannot upgrade in place: {why}"),
                Some("run the daemon with `jarfleet up -d` or `jarfleet daemon` (a service)"),
            )
        })
    }

    /// The daemon is to become `binary` once it has stopped.
    pub fn decide(&self, binary: PathBuf) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(binary);
    }

    pub fn decided(&self) -> Option<PathBuf> {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces this process by `binary` with the daemon's arguments. Returns only on failure.
    pub fn exec(&self, binary: &Path) -> anyhow::Error {
        use std::os::unix::process::CommandExt;
        let Ok(args) = &self.reexec else {
            return anyhow::anyhow!("this daemon cannot upgrade in place");
        };
        let e = std::process::Command::new(binary).args(args).exec();
        anyhow::anyhow!("starting {}: {e}", binary.display())
    }
}

/// Why a binary at `real` (a resolved path) could be swapped by someone else between the check
/// and the `exec`, if it could: the file and every directory above it must belong to root or to
/// the daemon's user and be writable by no one else (a sticky directory such as `/tmp` is fine:
/// nobody else can replace an entry in it). The daemon runs as root; an app's user must never
/// be able to choose what it becomes.
fn not_ours_alone(real: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let mut path = Some(real);
    while let Some(p) = path {
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: {e}", p.display())),
        };
        let owner_ok = meta.uid() == 0 || meta.uid() == me;
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        let writable_by_others = meta.mode() & 0o022 != 0 && !sticky_dir;
        if !owner_ok || writable_by_others {
            let what = if owner_ok {
                "writable by its group or others".to_string()
            } else {
                format!("owned by uid {}", meta.uid())
            };
            return Some(format!(
                "{} is {what} (mode {:o}): another user could replace the binary",
                p.display(),
                meta.mode() & 0o7777
            ));
        }
        path = p.parent();
    }
    None
}

/// What `binary` says of itself, checked against this daemon: it must be the daemon's user's
/// alone, run here and speak the same API and data-plane protocols. Returns the resolved path
/// (what is then started) with the answer.
pub async fn check(binary: &Path) -> Result<(PathBuf, BuildInfo), ErrorBody> {
    if !binary.is_absolute() {
        return Err(usage(
            format!("{} is not an absolute path", binary.display()),
            None,
        ));
    }
    let real = binary
        .canonicalize()
        .map_err(|e| usage(format!("{}: {e}", binary.display()), None))?;
    let meta =
        std::fs::metadata(&real).map_err(|e| usage(format!("{}: {e}", real.display()), None))?;
    if !meta.is_file() {
        return Err(usage(format!("{} is not a file", binary.display()), None));
    }
    if let Some(why) = not_ours_alone(&real) {
        return Err(usage(
            format!("{why}; nothing was changed"),
            Some("install the new binary where only root can write (e.g. /usr/local/bin)"),
        ));
    }
    let binary = real.as_path();
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["version", "--json"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(CHECK_WITHIN, cmd.output())
        .await
        .map_err(|_| {
            usage(
                format!(
                    "`{} version --json` did not answer within {} s; nothing was changed",
                    binary.display(),
                    CHECK_WITHIN.as_secs()
                ),
                None,
            )
        })?
        .map_err(|e| {
            usage(
                format!(
                    "{} does not run here: {e}; nothing was changed",
                    binary.display()
                ),
                None,
            )
        })?;
    let info: BuildInfo = serde_json::from_slice(&out.stdout)
        .ok()
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            usage(
                format!(
                    "{} is not a jarfleet binary that can take over this one (`version --json` said {:?}{}); nothing was changed",
                    binary.display(),
                    String::from_utf8_lossy(&out.stdout).trim(),
                    if out.status.success() {
                        String::new()
                    } else {
                        format!(", {}", out.status)
                    }
                ),
                None,
            )
        })?;
    let ours = (jarfleet_api::PROTOCOL, jarfleet_dataplane::PROTOCOL);
    if (info.protocol, info.data_plane_protocol) != ours {
        return Err(usage(
            format!(
                "{} ({}) speaks API protocol {} and data-plane protocol {}, this daemon {} and {}: it cannot take over in place; nothing was changed",
                binary.display(),
                info.version,
                info.protocol,
                info.data_plane_protocol,
                ours.0,
                ours.1
            ),
            Some("stop the fleet with `jarfleet down` and start it with the new binary"),
        ));
    }
    Ok((real.clone(), info))
}

/// Collects the exits of the children this process inherited from the program it was before
/// an `exec` (found now, before this program starts any of its own), so none is left a zombie.
/// Its own children are reaped by whoever started them.
pub fn reap_inherited() {
    let me = std::process::id();
    let inherited: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect();
    if inherited.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("jarfleet-reap".into())
        .spawn(move || {
            let mut left = inherited;
            while !left.is_empty() {
                left.retain(|pid| {
                    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
                    !matches!(
                        waitpid(nix::unistd::Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG)),
                        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_)
                    )
                });
                std::thread::sleep(Duration::from_secs(1));
            }
        });
}
