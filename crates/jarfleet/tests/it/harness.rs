//! The integration-test harness: a fleet in a temp dir driven through the real `jarfleet`
//! binary, polling with deadlines (never sleeping to synchronise), ports chosen at run time.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture;

pub const JVM_OPTS: &str =
    r#"["-Xmx48m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k"]"#;

pub fn jarfleet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jarfleet"))
}

/// Polls `f` every 25 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_until_with_deadline(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Like [`wait_until`], for conditions worth explaining: `f` returns `Err(what it saw)` while the
/// condition does not hold, and the last of those is in the panic after `timeout`.
pub fn wait_until_explained<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let mut seen = String::new();
    wait_until_with_deadline(timeout, || match f() {
        Ok(v) => Some(v),
        Err(e) => {
            seen = e;
            None
        }
    })
    .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{seen}"))
}

fn wait_until_with_deadline<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The checked port allocator (`free_ports(n)`: `n` consecutive ports, `free_port()`: one):
/// below the ephemeral range, checked free, and claimed for this test process so no other test
/// gets them. Every port a test hands to a process that binds it later comes from here.
pub use jarfleet_testkit::{free_port, free_ports};
/// Every external command a test runs has a deadline: a hung one is killed and named.
pub use jarfleet_testkit::{run_with_deadline, try_run_with_deadline, wait_with_deadline};

/// A minimal HTTP/1.1 GET on 127.0.0.1 (no client library: the test talks raw sockets).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

pub fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The numbers of the fixture's numbered log lines (`line 000042 …`) in `text`, in order.
pub fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("line ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// One fleet: a temp dir with a spec and a state dir, and everything it started.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub ports: (u16, u16),
    seen_pids: std::cell::RefCell<BTreeSet<u32>>,
}

/// The spec of one fixture app (`fx` by default); `extra` is appended inside `[apps.NAME]`
/// before the health table, `tables` after it.
pub struct AppDef<'a> {
    pub name: &'a str,
    pub instances: u32,
    pub args: &'a [&'a str],
    pub extra: &'a str,
    pub health: &'a str,
    pub tables: &'a str,
}

impl Default for AppDef<'_> {
    fn default() -> Self {
        AppDef {
            name: "fx",
            instances: 1,
            args: &[],
            extra: "",
            health: "http = \"/health\"",
            tables: "",
        }
    }
}

impl Fleet {
    pub fn new(port_count: u16) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("jf")
            .tempdir()
            .expect("temp dir");
        let state = dir.path().join("state");
        Fleet {
            dir,
            state,
            ports: free_ports(port_count),
            seen_pids: Default::default(),
        }
    }

    /// Another daemon's fleet (e.g. one `jarfleet install` started under a prefix), with the
    /// same ports; stopped and cleaned up like this one when dropped.
    pub fn adopt(like: &Fleet, state: PathBuf) -> Fleet {
        Fleet {
            dir: tempfile::Builder::new()
                .prefix("jf")
                .tempdir()
                .expect("temp dir"),
            state,
            ports: like.ports,
            seen_pids: Default::default(),
        }
    }

    pub fn spec_path(&self) -> PathBuf {
        self.dir.path().join("jarfleet.toml")
    }

    pub fn app_toml(&self, app: &AppDef) -> String {
        let jar = fixture::fixture_jar();
        let args: Vec<String> = app.args.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "[apps.{name}]\nartifact = {jar:?}\ninstances = {n}\nports = \"{a}-{b}\"\nargs = [{args}]\njava = {{ opts = {opts}, fast_start = false }}\n{extra}\n\n[apps.{name}.health]\n{health}\n{tables}\n",
            name = app.name,
            jar = jar.display().to_string(),
            n = app.instances,
            a = self.ports.0,
            b = self.ports.1,
            args = args.join(", "),
            opts = JVM_OPTS,
            extra = app.extra,
            health = app.health,
            tables = app.tables,
        )
    }

    pub fn write_spec(&self, text: &str) {
        std::fs::write(self.spec_path(), text).expect("writing spec");
    }

    pub fn write_app(&self, app: &AppDef) {
        self.write_spec(&self.app_toml(app));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(jarfleet_bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("JARFLEET_STATE", &self.state)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `jarfleet ARGS` to completion (bounded: a hung command fails the test). Its output
    /// is read while it runs, so a long one (a completion script) never blocks on a full pipe.
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running jarfleet");
        wait_with_deadline(
            child,
            &format!("jarfleet {args:?}"),
            Duration::from_secs(180),
        )
    }

    /// Runs `jarfleet ARGS` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "jarfleet {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `up -d --wait` of the current spec.
    pub fn up(&self) {
        self.ok(&["up", "-d", "--wait"]);
    }

    pub fn status(&self) -> Value {
        let text = self.ok(&["status", "-o", "json"]);
        let v: Value = serde_json::from_str(&text).expect("status -o json is JSON");
        for app in v["apps"].as_array().into_iter().flatten() {
            for i in app["instances"].as_array().into_iter().flatten() {
                for key in ["pid", "shim_pid"] {
                    if let Some(pid) = i[key].as_u64() {
                        self.seen_pids.borrow_mut().insert(pid as u32);
                    }
                }
            }
        }
        v
    }

    pub fn instances(&self, app: &str) -> Vec<Value> {
        let status = self.status();
        status["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["name"] == app)
            .flat_map(|a| a["instances"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The JVM pids of `app`'s instances, in slot order.
    pub fn pids(&self, app: &str) -> Vec<u64> {
        self.instances(app)
            .iter()
            .filter_map(|i| i["pid"].as_u64())
            .collect()
    }

    pub fn instance(&self, app: &str, slot: u64) -> Value {
        self.instances(app)
            .into_iter()
            .find(|i| i["slot"] == slot)
            .unwrap_or(Value::Null)
    }

    /// Waits until `app` has `n` ready instances; returns them.
    pub fn wait_ready(&self, app: &str, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(&format!("{n} ready instance(s) of {app}"), timeout, || {
            let all = self.instances(app);
            let ready: Vec<Value> = all.into_iter().filter(|i| i["ready"] == true).collect();
            (ready.len() == n).then_some(ready)
        })
    }

    pub fn events(&self) -> Vec<Value> {
        let text = self.ok(&["events", "-o", "json", "-n", "10000"]);
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Events of `kind` for `app/slot`, oldest first.
    pub fn events_of(&self, kind: &str, app: &str, slot: Option<u64>) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| {
                e["kind"] == kind
                    && e["app"] == app
                    && (slot.is_none() || e["slot"].as_u64() == slot)
            })
            .collect()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dirs().lock())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log_dir(&self, app: &str, slot: u32) -> PathBuf {
        self.dirs().log_dir(app, slot)
    }

    /// The state dir's layout, as the daemon names it (`jarfleet_host::paths`).
    pub fn dirs(&self) -> jarfleet_host::paths::StateDir {
        jarfleet_host::paths::StateDir::new(&self.state)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn remember(&self, pid: u32) {
        self.seen_pids.borrow_mut().insert(pid);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Stop what we started: the daemon (gracefully), then anything it left behind.
        if self.state.join("jarfleet.sock").exists() {
            let _ = try_run_with_deadline(&mut self.command(&["down"]), Duration::from_secs(120));
        }
        if let Some(pid) = self.daemon_pid()
            && pid_alive(pid)
            && is_ours(pid, &self.state)
        {
            kill9(pid);
        }
        for pid in self.seen_pids.borrow().iter() {
            if pid_alive(*pid) {
                kill9(*pid);
            }
        }
        // Shims name their run dir, JVMs their log dir: both live under the state dir.
        for pid in processes_mentioning(&self.state) {
            kill9(pid);
        }
    }
}

/// Live processes whose command line mentions `path`.
pub fn processes_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// Whether `pid` is a jarfleet daemon of this state dir (guards against pid reuse).
fn is_ours(pid: u32, state: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&*state.to_string_lossy()))
        .unwrap_or(false)
}

/// The lines a child writes to stderr, collected by a thread as they come.
pub struct StderrLines {
    rx: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl StderrLines {
    /// Takes the child's piped stderr.
    pub fn of(child: &mut std::process::Child) -> StderrLines {
        use std::io::{BufRead, BufReader};
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StderrLines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Collects what is left once the child has exited (its stderr closes), up to `timeout`
    /// between lines.
    pub fn rest(&mut self, timeout: Duration) {
        while let Ok(l) = self.rx.recv_timeout(timeout) {
            self.seen.push(l);
        }
    }

    /// Waits until a line seen so far matches `pred`.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        wait_until(what, timeout, || {
            while let Ok(l) = self.rx.try_recv() {
                self.seen.push(l);
            }
            self.seen.iter().any(|l| pred(l)).then_some(())
        });
    }
}

/// The environment of a running process.
pub fn environ(pid: u64) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv).into_owned();
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The value of `var` in the environment of each ready instance of `app`, as the fixture's
/// `/env` reports it ("" when unset).
/// The latest deployment record of app `fx` (`null` when there is none).
pub fn latest_deployment(fleet: &Fleet) -> Value {
    let h: Value =
        serde_json::from_str(&fleet.ok(&["history", "fx", "-o", "json"])).expect("history json");
    h["deployments"]
        .as_array()
        .and_then(|d| d.iter().max_by_key(|d| d["id"].as_u64()).cloned())
        .unwrap_or_default()
}

pub fn env_of_ready(fleet: &Fleet, app: &str, var: &str) -> Vec<String> {
    let prefix = format!("{var}=");
    fleet
        .instances(app)
        .iter()
        .filter(|i| i["ready"] == true)
        .filter_map(|i| i["port"].as_u64())
        .filter_map(|p| http_get(p as u16, "/env").ok())
        .map(|(_, body)| {
            body.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Asserts that `n` requests through the balancer on `port` are all answered 200 by `version`.
pub fn assert_all_from(port: u16, version: &str, n: usize, why: &str) {
    for _ in 0..n {
        let (code, body) = http_get(port, "/version").expect("GET /version");
        assert_eq!((code, body.trim()), (200, version), "{why}");
    }
}

/// Every line a child writes to `stdout`, as it writes it (a thread reads them until the pipe
/// closes or the receiver is gone).
pub fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
