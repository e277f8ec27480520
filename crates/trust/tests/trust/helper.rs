//! Shared test helpers: the real `minisign` and `gpg` binaries, in temporary directories.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const INSTALL_HINT: &str = "apt-get install -y minisign gnupg";
/// How long one run of minisign, gpg or gpgconf may take before it is killed and named.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Fails the test (never skips it) when `tool` is not installed.
pub fn require(tool: &str) {
    let found =
        jarfleet_testkit::run_with_deadline(Command::new(tool).arg("--version"), DEADLINE).is_ok();
    // `minisign --version` exits 2 with usage on some versions; running at all is enough.
    assert!(
        found,
        "`{tool}` is not installed, and these interop tests need the real tool: run `{INSTALL_HINT}`"
    );
}

/// Runs `cmd` with `stdin` fed to it (and closed, so a prompt can never wait), returning its
/// output and failing the test with both streams if it did not exit 0.
pub fn run_ok(cmd: &mut Command, stdin: &str) -> Output {
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `stdin` fed to it and closed; any exit status.
pub fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {cmd:?}: {e} (install the tools: `{INSTALL_HINT}`)")
        });
    if let Some(mut pipe) = child.stdin.take() {
        // A tool that exits without reading stdin closes the pipe; that is not an error here.
        let _ = pipe.write_all(stdin.as_bytes());
    }
    jarfleet_testkit::wait_with_deadline(child, &format!("{cmd:?}"), DEADLINE)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A temporary directory with a file to sign in it.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    pub fn read_string(&self, name: &str) -> String {
        let path = self.path(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}

/// The `minisign` command; fails the test when it is not installed.
pub fn minisign() -> Command {
    require("minisign");
    Command::new("minisign")
}

/// A throwaway GnuPG home. Dropping it stops the gpg-agent that gpg started for it (and only
/// that one: gpgconf addresses the agent of this GNUPGHOME).
pub struct Gpg {
    pub home: tempfile::TempDir,
}

impl Gpg {
    pub fn new() -> Gpg {
        require("gpg");
        // Short path: the agent's socket path must fit in a sockaddr_un.
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .expect("create GNUPGHOME");
        Gpg { home }
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    /// Generates a key and returns its fingerprint.
    pub fn gen_key(&self, uid: &str, algo: &str, expire: &str, extra: &[&str]) -> String {
        run_ok(
            self.cmd()
                .args(extra)
                .args(["--quick-gen-key", uid, algo, "sign", expire]),
            "",
        );
        self.fingerprint(uid)
    }

    /// The primary key fingerprint of the certificate holding `uid`.
    pub fn fingerprint(&self, uid: &str) -> String {
        let out = run_ok(self.cmd().args(["--with-colons", "--list-keys", uid]), "");
        stdout(&out)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|rest| rest.trim_matches(':').to_string())
            })
            .unwrap_or_else(|| panic!("no fingerprint for {uid}"))
    }

    /// Exports public keys (armored or binary) into `path`.
    pub fn export(&self, path: &Path, armor: bool, who: &[&str]) {
        let mut cmd = self.cmd();
        if armor {
            cmd.arg("--armor");
        }
        cmd.arg("--output").arg(path).arg("--export").args(who);
        run_ok(&mut cmd, "");
    }

    /// Makes a detached signature of `file` by `who` into `sig`.
    pub fn sign(&self, who: &str, file: &Path, sig: &Path, armor: bool, extra: &[&str]) {
        let mut cmd = self.cmd();
        cmd.args(extra);
        if armor {
            cmd.arg("--armor");
        }
        cmd.args(["--local-user", who, "--output"])
            .arg(sig)
            .arg("--detach-sign")
            .arg(file);
        run_ok(&mut cmd, "");
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = jarfleet_testkit::try_run_with_deadline(
            Command::new("gpgconf")
                .env("GNUPGHOME", self.home.path())
                .args(["--kill", "gpg-agent"]),
            DEADLINE,
        );
    }
}
