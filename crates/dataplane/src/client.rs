//! The daemon's side of the data plane: it keeps what the data plane should be serving — each
//! app's settings, a duplicate of its listening socket, its last snapshot, its counts so far —
//! so that it can start a data plane, find the one an earlier daemon left running and take the
//! sockets back from it, or replace one that died or stopped answering, on the same sockets.
//!
//! Everything here is synchronous and quick (one round trip on a local socket); the daemon's
//! loop calls it directly. One thread per data-plane process reads its notes and sees it go
//! (the end of that connection), and starts the next one at once; another asks for the
//! counters every second, which keeps the counts to carry fresh and finds a data plane that no
//! longer answers (stopped, hung), which is then replaced as well.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use jarfleet_proxy::{ListenerConfig, ListenerStats};

use crate::protocol::{Carry, Channel, Note, PROTOCOL, Reply, Request, Role, WireBackend};

/// The data plane's control socket in its directory.
pub const SOCKET: &str = "control.sock";
/// Its output.
pub const LOG: &str = "data-plane.log";
/// Its pid, for `doctor` and for tests.
pub const PID: &str = "pid";

/// How long a request may wait for its answer before the data plane is taken for hung (and
/// replaced): long enough that a busy machine is not mistaken for a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a data plane that was just started may take to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(15);
/// How often the counters are read (the counts carried to a replacement are at most this old).
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Called when a watched drain ends.
pub type DrainDone = Box<dyn FnOnce() + Send>;

/// What the supervisor tells its owner as it happens (the daemon records these as events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    /// A data plane died or stopped answering; another serves on the same sockets.
    Replaced(String),
    /// The data plane an earlier daemon left running was taken back.
    TakenBack(String),
}

/// Where [`Told`]s go.
pub type Teller = Box<dyn Fn(Told) + Send + Sync>;

/// What the daemon sees of the data plane, for `status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub pid: Option<u32>,
    /// Data planes started by this daemon after the first (one died or stopped answering).
    pub replaced: u64,
    /// The last reason one was replaced.
    pub last_replaced_because: Option<String>,
}

pub struct Supervisor {
    dir: PathBuf,
    state: Mutex<State>,
    tell: Teller,
}

#[derive(Default)]
struct State {
    /// The binary a data plane is started from (another after a hand-over).
    exe: PathBuf,
    conn: Option<Conn>,
    listeners: BTreeMap<String, Want>,
    drains: BTreeMap<u64, Drain>,
    next_token: u64,
    health: Health,
    /// The daemon is going: nothing is started or replaced any more.
    detached: bool,
    /// Starts of a data plane in the last little while, for a backoff when they keep dying.
    recent_starts: Vec<Instant>,
}

struct Conn {
    ch: Channel,
    pid: u32,
    /// Which process this is (a notes thread acts only for its own).
    generation: u64,
    notes: UnixStream,
}

struct Want {
    cfg: ListenerConfig,
    socket: std::net::TcpListener,
    backends: Vec<WireBackend>,
    sent: Instant,
    /// The last counters read (carried counts included).
    stats: Option<ListenerStats>,
}

struct Drain {
    app: String,
    backend: String,
    deadline: Instant,
    done: DrainDone,
}

fn err(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

impl Supervisor {
    /// The supervisor of the data plane in `dir` (created private), started from `exe`. A data
    /// plane an earlier daemon left running there is taken back: its listeners, sockets and
    /// snapshots become this supervisor's. None is started until a listener is wanted.
    pub fn attach(exe: &Path, dir: &Path, tell: Teller) -> io::Result<Arc<Supervisor>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let sup = Arc::new(Supervisor {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                exe: exe.to_path_buf(),
                ..State::default()
            }),
            tell,
        });
        if let Err(e) = sup.take_back() {
            // One that cannot be talked to (another protocol, hung) holds the addresses for
            // nothing: it is stopped, and the listeners are bound anew.
            let stopped = sup.stop_unreachable();
            (sup.tell)(Told::Replaced(format!(
                "the data plane that was running could not be taken back ({e}){}; the listeners are bound anew",
                match stopped {
                    Some(pid) => format!(", so it was stopped (pid {pid})"),
                    None => String::new(),
                }
            )));
            let mut st = sup.lock();
            st.listeners.clear();
            if let Some(c) = st.conn.take() {
                let _ = c.notes.shutdown(std::net::Shutdown::Both);
            }
        }
        let weak = Arc::downgrade(&sup);
        std::thread::Builder::new()
            .name("jarfleet-lb-poll".into())
            .spawn(move || poll(weak))?;
        Ok(sup)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects to a running data plane, if there is one, and takes over what it serves.
    fn take_back(self: &Arc<Self>) -> io::Result<()> {
        let socket = self.dir.join(SOCKET);
        let Ok(control) = UnixStream::connect(&socket) else {
            return Ok(()); // none runs
        };
        let notes = UnixStream::connect(&socket)
            .map_err(|e| err(format!("connecting to the data plane: {e}")))?;
        let mut st = self.lock();
        let (mut ch, pid) = hello(control, Role::Control)?;
        let (notes_ch, _) = hello(notes, Role::Notes)?;
        ch.send(&Request::List, None)?;
        let count = match ch.recv::<Reply>()? {
            Some(Reply::Listed { count }) => count,
            other => {
                return Err(err(format!(
                    "the data plane answered {other:?} to a listing"
                )));
            }
        };
        let now = Instant::now();
        for _ in 0..count {
            match ch.recv::<Reply>()? {
                Some(Reply::Held {
                    app,
                    cfg,
                    carry: _,
                    backends,
                }) => {
                    let socket = std::net::TcpListener::from(ch.take_fd()?);
                    st.listeners.insert(
                        app,
                        Want {
                            cfg: *cfg,
                            socket,
                            backends,
                            sent: now,
                            stats: None,
                        },
                    );
                }
                other => return Err(err(format!("the data plane listed {other:?}"))),
            }
        }
        (self.tell)(Told::TakenBack(format!(
            "took back data plane {pid}, serving {count} listener(s)"
        )));
        self.connected(&mut st, ch, notes_ch, pid)?;
        // Counters to carry, should it die before the first poll.
        let apps: Vec<String> = st.listeners.keys().cloned().collect();
        for app in apps {
            let _ = self.stats_locked(&mut st, &app);
        }
        Ok(())
    }

    /// Kills the data plane named by the pid file, if that pid is still a data plane of this
    /// directory (a pid can be reused), and waits for it to go.
    fn stop_unreachable(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join(PID))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args.get(1) == Some(&b"data-plane".as_slice())
            && args.get(2) == Some(&self.dir.as_os_str().as_encoded_bytes());
        if !ours {
            return None;
        }
        sigkill(pid);
        wait_gone(pid, Duration::from_secs(5));
        Some(pid)
    }

    fn connected(
        self: &Arc<Self>,
        st: &mut State,
        ch: Channel,
        notes: Channel,
        pid: u32,
    ) -> io::Result<()> {
        st.next_token += 1;
        let generation = st.next_token;
        let reader = notes.socket().try_clone()?;
        st.conn = Some(Conn {
            ch,
            pid,
            generation,
            notes: reader,
        });
        st.health.pid = Some(pid);
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("jarfleet-lb-notes".into())
            .spawn(move || read_notes(weak, notes, generation))?;
        Ok(())
    }

    /// Starts a data plane and gives it everything wanted (a replacement: the same sockets,
    /// the counts so far, the last snapshots, the drains under way).
    fn start(self: &Arc<Self>, st: &mut State, because: Option<&str>) -> io::Result<()> {
        if st.detached {
            return Err(err("the daemon is stopping"));
        }
        let now = Instant::now();
        st.recent_starts
            .retain(|t| now.duration_since(*t) < Duration::from_secs(10));
        if st.recent_starts.len() >= 5 {
            // It keeps dying: at most one start a second from now on, so a crash loop costs
            // no CPU; the sockets stay open, so clients wait rather than being refused.
            if let Some(last) = st.recent_starts.last() {
                let wait = Duration::from_secs(1).saturating_sub(now.duration_since(*last));
                std::thread::sleep(wait);
            }
        }
        st.recent_starts.push(Instant::now());
        if let Some(old) = st.conn.take() {
            let _ = old.notes.shutdown(std::net::Shutdown::Both);
            // One that stopped answering may still hold connections it will never serve.
            sigkill(old.pid);
        }
        let (control, notes, pid, staged) = self.spawn(&st.exe)?;
        match self.serve_everything(st, control, notes, pid, because) {
            Ok(()) => {
                // Only now does its socket take the name (the next daemon finds this one) and
                // its pid go on record: a new one that failed leaves both to the old one.
                std::fs::rename(&staged, self.dir.join(SOCKET))?;
                let _ = std::fs::write(self.dir.join(PID), format!("{pid}\n"));
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                sigkill(pid);
                // It may have been made the current one before it failed: it is not.
                if st.conn.as_ref().is_some_and(|c| c.pid == pid)
                    && let Some(c) = st.conn.take()
                {
                    let _ = c.notes.shutdown(std::net::Shutdown::Both);
                }
                Err(e)
            }
        }
    }

    /// Says hello to a new data plane and gives it every listener and drain.
    fn serve_everything(
        self: &Arc<Self>,
        st: &mut State,
        control: UnixStream,
        notes: UnixStream,
        pid: u32,
        because: Option<&str>,
    ) -> io::Result<()> {
        let (ch, _) = hello(control, Role::Control)?;
        let (notes_ch, _) = hello(notes, Role::Notes)?;
        if let Some(because) = because {
            st.health.replaced += 1;
            st.health.last_replaced_because = Some(because.to_string());
            (self.tell)(Told::Replaced(format!(
                "data plane replaced by a new one (pid {pid}) on the same sockets: {because}"
            )));
        } else {
            tracing::info!(pid, "data plane started");
        }
        self.connected(st, ch, notes_ch, pid)?;
        let now = Instant::now();
        let apps: Vec<String> = st.listeners.keys().cloned().collect();
        for app in apps {
            let Some(w) = st.listeners.get(&app) else {
                continue;
            };
            let socket = w.socket.try_clone()?;
            let elapsed = now.saturating_duration_since(w.sent).as_millis() as u64;
            let backends: Vec<WireBackend> = w
                .backends
                .iter()
                .map(|b| WireBackend {
                    ready_for_ms: b.ready_for_ms.saturating_add(elapsed),
                    ..b.clone()
                })
                .collect();
            // Serving from its first connection: settings, counts and snapshot in one message.
            let adopt = Request::Adopt {
                app: app.clone(),
                cfg: Box::new(w.cfg.clone()),
                carry: w.stats.as_ref().map(|s| Box::new(Carry::of(s))),
                backends,
            };
            ok(self.ask(st, &adopt, Some(&socket))?)?;
        }
        // Drains under way: what was in flight died with the last process, so these end at
        // once unless the new one has taken requests on the backend (it has not: it is no
        // longer in any snapshot).
        let drains: Vec<(u64, String, String, Duration)> = st
            .drains
            .iter()
            .map(|(t, d)| {
                (
                    *t,
                    d.app.clone(),
                    d.backend.clone(),
                    d.deadline.saturating_duration_since(now),
                )
            })
            .collect();
        for (token, app, backend, left) in drains {
            let watch = Request::WatchDrain {
                app,
                backend,
                timeout_ms: left.as_millis() as u64,
                token,
            };
            ok(self.ask(st, &watch, None)?)?;
        }
        Ok(())
    }

    /// Starts `exe data-plane DIR` with its control socket bound here first (connections wait
    /// in its backlog until it runs: no race), and connects twice.
    fn spawn(&self, exe: &Path) -> io::Result<(UnixStream, UnixStream, u32, PathBuf)> {
        let staged = self.dir.join(format!(".{SOCKET}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        let listener = UnixListener::bind(&staged)
            .map_err(|e| err(format!("binding {}: {e}", staged.display())))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG))?;
        let args = [std::ffi::OsStr::new("data-plane"), self.dir.as_os_str()];
        let mut child = jarfleet_shim::spawn::spawn_helper(exe, &args, &listener, log)
            .map_err(|e| err(format!("starting the data plane ({}): {e}", exe.display())))?;
        let pid = child.id();
        let control = UnixStream::connect(&staged);
        let notes = UnixStream::connect(&staged);
        drop(listener);
        let (control, notes) = match (control, notes) {
            (Ok(c), Ok(n)) => (c, n),
            (c, n) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&staged);
                let why = [c.err(), n.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(err(format!("connecting to the new data plane: {why}")));
            }
        };
        // Reaped here while this daemon runs (a later one finds it by its socket).
        let _ = std::thread::Builder::new()
            .name("jarfleet-lb-reap".into())
            .spawn(move || {
                let _ = child.wait();
            });
        Ok((control, notes, pid, staged))
    }

    /// One request and its answer. Starts a data plane when none runs; replaces one that does
    /// not answer.
    fn ask(
        self: &Arc<Self>,
        st: &mut State,
        req: &Request,
        fd: Option<&std::net::TcpListener>,
    ) -> io::Result<Reply> {
        let Some(conn) = st.conn.as_mut() else {
            return Err(err("no data plane runs"));
        };
        let sent = conn.ch.send(req, fd.map(|f| f as &dyn std::os::fd::AsFd));
        let answer = sent.and_then(|()| conn.ch.recv::<Reply>());
        match answer {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(err("the data plane closed its control connection")),
            Err(e) => Err(e),
        }
    }

    /// [`Supervisor::ask`], starting a data plane first if none runs, and replacing it (once)
    /// if it does not answer.
    fn request(
        self: &Arc<Self>,
        st: &mut State,
        req: &Request,
        fd: Option<&std::net::TcpListener>,
    ) -> io::Result<Reply> {
        if st.conn.is_none() {
            self.start(st, None)?;
        }
        match self.ask(st, req, fd) {
            Ok(reply) => Ok(reply),
            Err(e) if st.detached => Err(e),
            Err(e) => {
                let because = format!("it did not answer ({e})");
                self.start(st, Some(&because))?;
                self.ask(st, req, fd)
            }
        }
    }

    /// Serves `app` on `cfg.listen`: a new socket, unless the app's listener is on that address
    /// already (then only its settings change, live, and the socket stays).
    pub fn bind(self: &Arc<Self>, app: &str, cfg: &ListenerConfig) -> io::Result<()> {
        let mut st = self.lock();
        if let Some(w) = st.listeners.get(app)
            && w.cfg.listen == cfg.listen
            && w.cfg.mode == cfg.mode
        {
            return self.configure_locked(&mut st, app, cfg);
        }
        let socket = jarfleet_proxy::bind_listening(cfg.listen)?;
        let adopt = Request::Adopt {
            app: app.to_string(),
            cfg: Box::new(cfg.clone()),
            carry: None,
            backends: Vec::new(),
        };
        ok(self.request(&mut st, &adopt, Some(&socket))?)?;
        st.listeners.insert(
            app.to_string(),
            Want {
                cfg: cfg.clone(),
                socket,
                backends: Vec::new(),
                sent: Instant::now(),
                stats: None,
            },
        );
        Ok(())
    }

    pub fn configure(self: &Arc<Self>, app: &str, cfg: &ListenerConfig) -> io::Result<()> {
        let mut st = self.lock();
        self.configure_locked(&mut st, app, cfg)
    }

    fn configure_locked(
        self: &Arc<Self>,
        st: &mut State,
        app: &str,
        cfg: &ListenerConfig,
    ) -> io::Result<()> {
        let Some(w) = st.listeners.get_mut(app) else {
            return Ok(());
        };
        w.cfg = cfg.clone();
        let req = Request::Configure {
            app: app.to_string(),
            cfg: Box::new(cfg.clone()),
        };
        ok(self.request(st, &req, None)?)
    }

    /// Stops `app`'s listener and closes its socket (the address refuses from now on).
    pub fn close(self: &Arc<Self>, app: &str) -> io::Result<()> {
        let mut st = self.lock();
        let Some(gone) = st.listeners.remove(app) else {
            return Ok(());
        };
        let req = Request::Close {
            app: app.to_string(),
        };
        let answer = if st.conn.is_some() {
            self.request(&mut st, &req, None).and_then(ok)
        } else {
            Ok(())
        };
        drop(gone);
        answer
    }

    /// Stops every listener whose app is not in `apps` (after a daemon took a data plane back).
    pub fn retain(self: &Arc<Self>, apps: &[String]) -> io::Result<()> {
        let gone: Vec<String> = self
            .lock()
            .listeners
            .keys()
            .filter(|a| !apps.contains(a))
            .cloned()
            .collect();
        for app in gone {
            self.close(&app)?;
        }
        Ok(())
    }

    pub fn update(self: &Arc<Self>, app: &str, backends: Vec<WireBackend>) -> io::Result<()> {
        let mut st = self.lock();
        let Some(w) = st.listeners.get_mut(app) else {
            return Ok(());
        };
        w.backends = backends.clone();
        w.sent = Instant::now();
        let req = Request::Update {
            app: app.to_string(),
            backends,
        };
        ok(self.request(&mut st, &req, None)?)
    }

    pub fn in_flight(self: &Arc<Self>, app: &str, backend: &str) -> io::Result<u64> {
        let mut st = self.lock();
        let req = Request::InFlight {
            app: app.to_string(),
            backend: backend.to_string(),
        };
        match self.request(&mut st, &req, None)? {
            Reply::InFlight { n } => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Calls `done` once nothing is in flight on the backend any more, or after `timeout`
    /// (also across a replacement of the data plane).
    pub fn watch_drain(
        self: &Arc<Self>,
        app: &str,
        backend: &str,
        timeout: Duration,
        done: DrainDone,
    ) -> io::Result<()> {
        let mut st = self.lock();
        st.next_token += 1;
        let token = st.next_token;
        st.drains.insert(
            token,
            Drain {
                app: app.to_string(),
                backend: backend.to_string(),
                deadline: Instant::now() + timeout,
                done,
            },
        );
        let req = Request::WatchDrain {
            app: app.to_string(),
            backend: backend.to_string(),
            timeout_ms: timeout.as_millis() as u64,
            token,
        };
        let sent = self.request(&mut st, &req, None).and_then(ok);
        if sent.is_err()
            && let Some(d) = st.drains.remove(&token)
        {
            drop(st);
            (d.done)();
        }
        sent
    }

    /// `app`'s counters, carried counts included; the last ones read if the data plane does
    /// not answer now.
    pub fn stats(self: &Arc<Self>, app: &str) -> Option<ListenerStats> {
        let mut st = self.lock();
        self.stats_locked(&mut st, app)
    }

    fn stats_locked(self: &Arc<Self>, st: &mut State, app: &str) -> Option<ListenerStats> {
        st.listeners.get(app)?;
        let req = Request::Stats {
            app: app.to_string(),
        };
        let fresh = match self.request(st, &req, None) {
            Ok(Reply::Stats { stats }) => stats.map(|s| *s),
            _ => None,
        };
        let w = st.listeners.get_mut(app)?;
        if let Some(s) = fresh {
            w.stats = Some(s);
        }
        w.stats.clone()
    }

    /// Hands every listener over to a data plane started from `exe` (`jarfleet upgrade`): the
    /// new one is given the sockets, settings, counts and snapshots and serves; only then is
    /// the old one told to stop accepting and finish what it holds (for up to `grace`), and it
    /// exits by itself. If the new one cannot start or serve, it is stopped and the old one
    /// goes on as before. Returns the new process's pid (`None`: no data plane ran, and the
    /// next one will be started from `exe`).
    pub fn hand_over_to(self: &Arc<Self>, exe: &Path, grace: Duration) -> io::Result<Option<u32>> {
        let mut st = self.lock();
        if st.detached {
            return Err(err("the daemon is stopping"));
        }
        let previous_exe = std::mem::replace(&mut st.exe, exe.to_path_buf());
        if st.conn.is_none() {
            return Ok(None);
        }
        // Counts to carry, as of now.
        let apps: Vec<String> = st.listeners.keys().cloned().collect();
        for app in &apps {
            let _ = self.stats_locked(&mut st, app);
        }
        let Some(mut old) = st.conn.take() else {
            return Err(err(
                "the data plane went away during the hand-over; it was replaced",
            ));
        };
        if let Err(e) = self.start(&mut st, None) {
            // The new one was stopped (if it got that far); the old one serves on.
            st.exe = previous_exe;
            st.conn = Some(old);
            return Err(err(format!(
                "the new data plane ({}) did not start serving: {e}; the old one serves on",
                exe.display()
            )));
        }
        let new_pid = st.conn.as_ref().map(|c| c.pid);
        let handed = old
            .ch
            .send(
                &Request::HandOver {
                    grace_ms: grace.as_millis() as u64,
                },
                None,
            )
            .and_then(|()| old.ch.recv::<Reply>());
        // Its notes reader sees it go later, and does nothing: it is no longer the current one.
        let _ = old.notes.shutdown(std::net::Shutdown::Both);
        if let Err(e) = handed.map_err(|e| e.to_string()).and_then(|r| match r {
            Some(Reply::Ok) => Ok(()),
            other => Err(format!("it answered {other:?}")),
        }) {
            // Both serve the same sockets; the old one is stopped hard rather than left.
            tracing::warn!(
                pid = old.pid,
                "the old data plane did not take the hand-over ({e}); stopped"
            );
            sigkill(old.pid);
        }
        tracing::info!(
            old = old.pid,
            new = ?new_pid,
            "data plane handed over to {}",
            exe.display()
        );
        Ok(new_pid)
    }

    pub fn health(&self) -> Health {
        self.lock().health.clone()
    }

    /// The daemon stops and leaves the data plane serving (a restart, an upgrade): nothing is
    /// started or replaced any more, the connections close.
    pub fn detach(&self) {
        let mut st = self.lock();
        st.detached = true;
        if let Some(c) = st.conn.take() {
            let _ = c.notes.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Everything stops (`jarfleet down`): every listener finishes what is in flight (for up
    /// to `grace`), the data plane exits, and the sockets close. Waits for its exit.
    pub fn stop(self: &Arc<Self>, grace: Duration) {
        let mut st = self.lock();
        st.detached = true;
        let Some(conn) = st.conn.take() else {
            st.listeners.clear();
            return;
        };
        st.conn = Some(conn);
        let req = Request::Exit {
            grace_ms: grace.as_millis() as u64,
        };
        let asked = self.ask(&mut st, &req, None);
        let pid = st.conn.take().map(|c| {
            let _ = c.notes.shutdown(std::net::Shutdown::Both);
            c.pid
        });
        st.listeners.clear();
        drop(st);
        if let (Ok(_), Some(pid)) = (asked, pid) {
            wait_gone(pid, grace + Duration::from_secs(2));
        }
    }
}

fn unexpected(reply: Reply) -> io::Error {
    match reply {
        Reply::Error { message } => err(message),
        other => err(format!("the data plane answered {other:?}")),
    }
}

fn ok(reply: Reply) -> io::Result<()> {
    match reply {
        Reply::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Says hello on a fresh connection; the data plane's pid.
fn hello(sock: UnixStream, role: Role) -> io::Result<(Channel, u32)> {
    sock.set_read_timeout(Some(HELLO_WITHIN))?;
    sock.set_write_timeout(Some(ANSWER_WITHIN))?;
    let mut ch = Channel::new(sock);
    ch.send(
        &Request::Hello {
            protocol: PROTOCOL,
            role,
        },
        None,
    )?;
    match ch.recv::<Reply>()? {
        Some(Reply::Hello { pid, .. }) => {
            ch.socket().set_read_timeout(match role {
                Role::Notes => None,
                Role::Control => Some(ANSWER_WITHIN),
            })?;
            Ok((ch, pid))
        }
        Some(Reply::Error { message }) => Err(err(message)),
        other => Err(err(format!("the data plane said {other:?} to hello"))),
    }
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Whether `pid` still runs (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads one data plane's notes until it goes; then starts the next one at once (unless the
/// daemon is stopping, or this process was replaced already).
fn read_notes(sup: Weak<Supervisor>, mut notes: Channel, generation: u64) {
    let ended = loop {
        match notes.recv::<Note>() {
            Ok(Some(Note::Drained { token })) => {
                let Some(sup) = sup.upgrade() else { return };
                let done = sup.lock().drains.remove(&token);
                if let Some(d) = done {
                    (d.done)();
                }
            }
            Ok(None) => break "it exited".to_string(),
            Err(e) => break format!("its connection failed ({e})"),
        }
    };
    let Some(sup) = sup.upgrade() else { return };
    let mut st = sup.lock();
    let current = st.conn.as_ref().is_some_and(|c| c.generation == generation);
    if !current || st.detached {
        return;
    }
    let pid = st.conn.as_ref().map_or(0, |c| c.pid);
    let because = format!("data plane {pid}: {ended}");
    loop {
        match sup.start(&mut st, Some(&because)) {
            Ok(()) => return,
            Err(_) if st.detached => return,
            Err(e) => {
                tracing::error!("cannot start a data plane: {e}; trying again");
                drop(st);
                std::thread::sleep(Duration::from_millis(200));
                st = sup.lock();
            }
        }
    }
}

/// Reads every listener's counters every second while the supervisor lives.
fn poll(sup: Weak<Supervisor>) {
    loop {
        std::thread::sleep(POLL_EVERY);
        let Some(sup) = sup.upgrade() else { return };
        let mut st = sup.lock();
        if st.detached {
            return;
        }
        if st.conn.is_none() {
            continue;
        }
        let apps: Vec<String> = st.listeners.keys().cloned().collect();
        for app in apps {
            let _ = sup.stats_locked(&mut st, &app);
        }
    }
}
