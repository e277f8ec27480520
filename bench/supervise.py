#!/usr/bin/env python3
"""Supervision footprint: jarfleet vs supervisord vs PM2, supervising the same tiny JVMs.

One command (Python 3.11 standard library only):

    python3 bench/supervise.py --instances 10,50 --idle-seconds 30 --kills 5

For each supervisor (one after the other, never at once) and each instance count N it:

* starts N `examples/hello/hello.jar` JVMs (same java binary, same flags, PORT from a free block
  of loopback ports) under the supervisor, all state in a temp dir, and waits (polling, with a
  deadline) until every JVM answers `GET /health` and the supervisor itself reports them up;
* PSS of the supervisor: the sum of `Pss` from `/proc/PID/smaps_rollup` over the supervisor's
  process tree minus the JVMs (jarfleet: daemon + every shim; supervisord: its one process;
  PM2: its God daemon), sampled after the idle window;
* idle CPU: utime + stime (clock ticks of `/proc/PID/stat`, children not included) of those
  same processes over `--idle-seconds`;
* the JVM's own start time: the same java command started directly by this script, from spawn
  to the first `/health` 200 (5 ms polling), K times, with the fleet running;
* K times: SIGKILL one JVM (a different one each time), then (a) the time until its replacement
  JVM exists (a new `java` process in the supervisor's tree, /proc scanned every 1 ms) and (b)
  the time until the replacement answers `/health` (polled every 5 ms);
* tears everything down (`jarfleet down`, `supervisorctl shutdown`, `pm2 kill`), then kills by
  pid (checked against its start time) any process of that tree still alive.

It prints a markdown report and writes it into docs/BENCHMARKS.md, replacing only the section
"## Supervision footprint". It talks only to 127.0.0.1 and unix sockets in its temp dir.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELLO_JAR = REPO / "examples" / "hello" / "hello.jar"
DOC = REPO / "docs" / "BENCHMARKS.md"
SECTION = "## Supervision footprint"
JVM_FLAGS = ["-Xmx32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]
TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")
SUPERVISORS = ("jarfleet", "supervisord", "pm2")

# Goals from the issue (jarfleet, 10 instances).
GOAL_PSS_MIB = 10.0
GOAL_RESPAWN_MS = 30.0
GOAL_READY_OVER_OWN_MS = 50.0


class BenchError(Exception):
    """A failure that ends the run with a clear message (after teardown)."""


def log(msg: str) -> None:
    print(f"[supervise {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Global deadline


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str = "") -> None:
        if self.remaining() <= 0:
            raise BenchError(f"global deadline exceeded{(' while ' + what) if what else ''}")

    def bound(self, seconds: float) -> float:
        """An absolute monotonic time: now + seconds, but never past the global deadline."""
        return min(time.monotonic() + seconds, self.end)


DEADLINE = Deadline(3600)


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    """Polls `pred` until it returns a truthy value; raises BenchError at the deadline."""
    end = DEADLINE.bound(timeout)
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - a failing probe is just "not yet"
            last_exc = e
        if time.monotonic() >= end:
            DEADLINE.check(what)
            extra = f" (last error: {last_exc})" if last_exc else ""
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# /proc


def read_stat(pid: int):
    """(comm, state, ppid, utime, stime, starttime) or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    lp = data.find(b"(")
    rp = data.rfind(b")")
    comm = data[lp + 1 : rp].decode(errors="replace")
    rest = data[rp + 2 :].split()
    return comm, rest[0].decode(), int(rest[1]), int(rest[11]), int(rest[12]), int(rest[19])


def read_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip().decode(errors="replace")
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def process_table() -> dict[int, tuple]:
    table = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None:
            table[pid] = st
    return table


def descendants(root: int, table: dict[int, tuple] | None = None) -> dict[int, tuple]:
    """root and every descendant: pid -> stat tuple."""
    table = table if table is not None else process_table()
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st[2], []).append(pid)
    out = {}
    stack = [root]
    while stack:
        p = stack.pop()
        if p in table and p not in out:
            out[p] = table[p]
            stack.extend(children.get(p, []))
    return out


def split_tree(root: int):
    """(supervisor processes, JVM processes) of root's tree. A JVM is a process whose comm is
    `java`; it and everything below it are not the supervisor's. Zombies are ignored."""
    table = process_table()
    tree = descendants(root, table)
    jvms = {p: st for p, st in tree.items() if st[0] == "java" and st[1] != "Z"}
    below_jvm = set()
    for j in jvms:
        below_jvm.update(descendants(j, table))
    sup = {p: st for p, st in tree.items() if p not in below_jvm and st[1] != "Z"}
    return sup, jvms


def is_data_plane(pid: int) -> bool:
    """jarfleet's load balancer process (`jarfleet data-plane DIR`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"\0data-plane\0" in f.read()
    except OSError:
        return False


def smaps_rollup(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                m = re.match(r"^(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    except OSError:
        pass
    return out


def env_of(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, _, v = item.partition(b"=")
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def port_of(pid: int) -> int | None:
    p = env_of(pid).get("PORT")
    return int(p) if p and p.isdigit() else None


# --------------------------------------------------------------------------------------------
# Loopback


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Like a server would: a port with only TIME_WAIT connections left is free to listen on.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_block(n: int) -> int:
    """First port of n consecutive free loopback ports, below the usual ephemeral range."""
    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        base = rng.randrange(20000, 32000 - n)
        if all(port_free(p) for p in range(base, base + n)):
            return base
    raise BenchError(f"no block of {n} free loopback ports found in 20000-32000")


def health_ok(port: int, timeout: float = 1.0) -> bool:
    """One GET /health to 127.0.0.1:port; True on a 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            buf = b""
            while b"\r\n" not in buf and len(buf) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
            return buf.startswith(b"HTTP/1.") and buf.split(b" ", 2)[1:2] == [b"200"]
    except OSError:
        return False


def poll_health(port: int, t0: float, timeout: float, every: float = 0.005) -> float | None:
    """Polls /health every `every` s until 200; returns seconds since t0 (perf_counter) of the
    first 200, or None at the timeout."""
    end = DEADLINE.bound(timeout)
    nxt = time.perf_counter()
    while time.monotonic() < end:
        if health_ok(port, timeout=0.5):
            return time.perf_counter() - t0
        nxt += every
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            nxt = time.perf_counter()
    return None


# --------------------------------------------------------------------------------------------
# Running commands


def run(cmd, *, env=None, timeout=120.0, check=True, cwd=None) -> subprocess.CompletedProcess:
    timeout = max(1.0, min(timeout, DEADLINE.remaining()))
    try:
        cp = subprocess.run(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"`{shlex.join(map(str, cmd))}` did not finish within {timeout:.0f} s") from e
    except FileNotFoundError as e:
        raise BenchError(f"cannot run `{cmd[0]}`: {e}") from e
    if check and cp.returncode != 0:
        raise BenchError(
            f"`{shlex.join(map(str, cmd))}` failed with exit {cp.returncode}:\n"
            f"{(cp.stdout + cp.stderr).strip()[-2000:]}"
        )
    return cp


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # start time in ticks since boot: tells a reused pid from ours

    @staticmethod
    def of(pid: int) -> "Proc | None":
        st = read_stat(pid)
        return Proc(pid, st[5]) if st else None

    def alive(self) -> bool:
        st = read_stat(self.pid)
        return st is not None and st[5] == self.start and st[1] not in ("Z", "X")


def kill_leftovers(procs: set[Proc], what: str) -> list[int]:
    """SIGKILL every still-alive process of `procs` (ours only: pid + start time must match)."""
    killed = []
    for p in sorted(procs, key=lambda p: p.pid):
        if p.alive():
            try:
                os.kill(p.pid, signal.SIGKILL)
                killed.append(p.pid)
            except ProcessLookupError:
                pass
    if killed:
        log(f"{what}: killed leftover processes {killed}")
    return killed


# --------------------------------------------------------------------------------------------
# Setup: install, build, java


def java_command(java: str) -> list[str]:
    return [java, *JVM_FLAGS, "-jar", str(HELLO_JAR)]


def ensure_supervisor() -> str:
    try:
        import supervisor  # noqa: F401
    except ImportError:
        log("supervisor (supervisord) not installed: pip install supervisor")
        cp = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "supervisor"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        if cp.returncode != 0:
            raise BenchError("could not install supervisor with "
                             f"`{sys.executable} -m pip install supervisor`:\n{cp.stderr[-2000:]}")
    out = run([sys.executable, "-c", "import supervisor.options as o; print(o.VERSION)"], check=False)
    if out.returncode != 0:
        out = run([sys.executable, "-m", "pip", "show", "supervisor"])
        m = re.search(r"^Version: (\S+)", out.stdout, re.M)
        return m.group(1) if m else "?"
    return out.stdout.strip()


def ensure_pm2() -> tuple[str, str]:
    pm2 = shutil.which("pm2")
    if pm2 is None:
        if shutil.which("npm") is None:
            raise BenchError("PM2 is not installed and there is no npm to install it: install "
                             "Node.js and npm (e.g. `apt-get install nodejs npm`), or pass "
                             "--supervisors without pm2")
        log("pm2 not installed: npm install -g pm2")
        cp = subprocess.run(["npm", "install", "-g", "pm2"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=600)
        pm2 = shutil.which("pm2")
        if cp.returncode != 0 or pm2 is None:
            raise BenchError(f"could not install pm2 with `npm install -g pm2`:\n{cp.stderr[-2000:]}")
    # The version from its package.json: `pm2 --version` would start a daemon in ~/.pm2.
    version = "?"
    root = run(["npm", "root", "-g"], check=False).stdout.strip()
    pkg = Path(root) / "pm2" / "package.json"
    if pkg.exists():
        version = json.loads(pkg.read_text()).get("version", "?")
    node = run(["node", "--version"], check=False).stdout.strip()
    return version, node


def build_jarfleet() -> Path:
    log("cargo build --release (jarfleet)")
    cp = subprocess.run(["cargo", "build", "--release", "--bin", "jarfleet"], cwd=REPO,
                        stdin=subprocess.DEVNULL, capture_output=True, text=True,
                        timeout=max(60, DEADLINE.remaining()))
    if cp.returncode != 0:
        raise BenchError(f"cargo build --release failed:\n{cp.stderr[-3000:]}")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    exe = target / "release" / "jarfleet"
    if not exe.exists():
        raise BenchError(f"built, but {exe} is missing")
    return exe


def find_java(arg: str | None) -> tuple[str, str, str]:
    """(java binary, JAVA_HOME, version line)."""
    java = arg or shutil.which("java")
    if not java:
        raise BenchError("no `java` on PATH: install a JDK >= 11 or pass --java PATH")
    java = os.path.realpath(java)
    home = str(Path(java).parent.parent)
    cp = run([java, "-version"], check=True)
    first = (cp.stderr or cp.stdout).strip().splitlines()
    return java, home, (first[1] if len(first) > 1 else first[0]) if first else "?"


# --------------------------------------------------------------------------------------------
# Supervisors


class Supervisor:
    name = "?"

    def __init__(self, work: Path, java: str, java_home: str, n: int, base_port: int):
        self.work = work
        self.java = java
        self.java_home = java_home
        self.n = n
        self.ports = list(range(base_port, base_port + n))
        self.seen: set[Proc] = set()  # every process of the tree we saw: for cleanup by pid

    def root(self) -> int:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def settled(self) -> bool:
        """The supervisor itself reports all N instances up."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def remember_tree(self) -> None:
        try:
            r = self.root()
        except Exception:  # noqa: BLE001
            return
        for pid in descendants(r):
            p = Proc.of(pid)
            if p:
                self.seen.add(p)

    def teardown(self) -> float | None:
        """Graceful stop, then SIGKILL by pid of whatever is left. Returns the seconds until
        every process of the tree was gone, or None if something had to be killed."""
        self.remember_tree()
        t0 = time.monotonic()
        try:
            self.stop()
        except Exception as e:  # noqa: BLE001 - still kill what is left
            log(f"{self.name}: graceful stop failed: {e}")
        end = DEADLINE.bound(20)
        while time.monotonic() < end and any(p.alive() for p in self.seen):
            time.sleep(0.02)
        took = time.monotonic() - t0
        return None if kill_leftovers(self.seen, self.name) else took


class Jarfleet(Supervisor):
    name = "jarfleet"

    def __init__(self, *a, exe: Path, listen: int | None = None, **kw):
        super().__init__(*a, **kw)
        self.exe = exe
        # With `--listen`: the app has a load balancer address, so the data plane runs too.
        self.listen = listen
        self.state = self.work / "state"
        self._root: int | None = None

    def jf(self, *args, timeout=120.0, check=True):
        return run([str(self.exe), "--state-dir", str(self.state), *args], timeout=timeout,
                   check=check)

    def start(self) -> None:
        spec = self.work / "jarfleet.toml"
        opts = ", ".join(json.dumps(f) for f in JVM_FLAGS)
        spec.write_text(
            "[daemon]\n"
            f"state_dir = {json.dumps(str(self.state))}\n\n"
            "[apps.hello]\n"
            f"artifact = {json.dumps(str(HELLO_JAR))}\n"
            f"instances = {self.n}\n"
            # Spare ports after the N so a replacement never waits for a port.
            f'ports = "{self.ports[0]}-{self.ports[-1] + 8}"\n'
            # The same java command line as under the other supervisors: jarfleet's default
            # extra flags (OOM exit, heap dump, GC log) off.
            f"java = {{ home = {json.dumps(self.java_home)}, opts = [{opts}], "
            "exit_on_oom = false, heap_dump_on_oom = false, gc_log = false }\n"
            + (f'listen = "127.0.0.1:{self.listen}"\n' if self.listen else "")
            + "\n[apps.hello.health]\n"
            'http = "/health"\n'
        )
        self.jf("up", "-d", str(spec))
        self._root = self.status()["daemon"]["pid"]

    def status(self) -> dict:
        return json.loads(self.jf("status", "-o", "json", timeout=30).stdout)

    def root(self) -> int:
        if self._root is None:
            raise BenchError("jarfleet daemon not started")
        return self._root

    def settled(self) -> bool:
        insts = [i for a in self.status()["apps"] for i in a["instances"]]
        return len(insts) == self.n and all(i["ready"] and i["state"] == "ready" for i in insts)

    def slot_of_pid(self) -> dict[int, int]:
        return {i["pid"]: i["slot"] for a in self.status()["apps"] for i in a["instances"]
                if i.get("pid")}

    def events(self) -> list[dict]:
        out = self.jf("events", "-o", "json", "-n", "1000", timeout=30).stdout
        evs = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("{"):
                evs.append(json.loads(line))
            elif line.startswith("["):
                evs.extend(json.loads(out))
                break
        return evs

    def stop(self) -> None:
        if self._root is not None or self.state.exists():
            self.jf("down", timeout=90, check=self._root is not None)


class Supervisord(Supervisor):
    name = "supervisord"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.conf = self.work / "supervisord.conf"
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        logs = self.work / "logs"
        logs.mkdir()
        cmd = " ".join(shlex.quote(c) for c in java_command(self.java))
        lines = [
            "[unix_http_server]", f"file={self.work}/supervisor.sock", "",
            "[supervisord]", f"logfile={self.work}/supervisord.log",
            f"pidfile={self.work}/supervisord.pid", f"childlogdir={logs}", "nodaemon=true", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.work}/supervisor.sock", "",
        ]
        for i, port in enumerate(self.ports):
            lines += [
                f"[program:hello-{i}]", f"command={cmd}", f"directory={self.work}",
                f'environment=PORT="{port}"', "autostart=true", "autorestart=true",
                "startretries=100", "stopasgroup=true", "killasgroup=true",
                f"stdout_logfile={logs}/hello-{i}.out", f"stderr_logfile={logs}/hello-{i}.err", "",
            ]
        self.conf.write_text("\n".join(lines))
        out = open(self.work / "supervisord.stdout", "wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.work,
            start_new_session=True,
        )
        out.close()

    def ctl(self, *args, timeout=60.0, check=True):
        return run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
                   timeout=timeout, check=check)

    def root(self) -> int:
        if self.popen is None:
            raise BenchError("supervisord not started")
        return self.popen.pid

    def settled(self) -> bool:
        if self.popen and self.popen.poll() is not None:
            raise BenchError(f"supervisord exited with {self.popen.returncode}")
        out = self.ctl("status", check=False, timeout=30).stdout
        states = [ln.split()[1] for ln in out.splitlines() if ln.startswith("hello-")]
        return len(states) == self.n and all(s == "RUNNING" for s in states)

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.ctl("shutdown", check=False, timeout=60)
        # supervisord stops its programs one after another, about 1 s each.
        try:
            self.popen.wait(timeout=max(1, min(30 + 2.5 * self.n, DEADLINE.remaining())))
        except subprocess.TimeoutExpired:
            log("supervisord did not exit after shutdown: SIGKILL by pid")
            self.popen.kill()
            self.popen.wait(timeout=10)


class Pm2(Supervisor):
    name = "pm2"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.home = self.work / "pm2home"
        self.env = {**os.environ, "PM2_HOME": str(self.home)}
        self.started = False

    def pm2(self, *args, timeout=120.0, check=True):
        return run(["pm2", *args], env=self.env, timeout=timeout, check=check, cwd=self.work)

    def start(self) -> None:
        logs = self.work / "logs"
        logs.mkdir()
        apps = [
            {
                "name": f"hello-{i}", "script": self.java, "args": java_command(self.java)[1:],
                "interpreter": "none", "exec_mode": "fork", "cwd": str(self.work),
                "env": {"PORT": str(port)}, "autorestart": True, "max_restarts": 1000,
                "out_file": f"{logs}/hello-{i}.out", "error_file": f"{logs}/hello-{i}.err",
                "merge_logs": True,
            }
            for i, port in enumerate(self.ports)
        ]
        eco = self.work / "ecosystem.json"
        eco.write_text(json.dumps({"apps": apps}, indent=1))
        self.started = True
        self.pm2("start", str(eco), timeout=180)

    def root(self) -> int:
        return int((self.home / "pm2.pid").read_text().strip())

    def settled(self) -> bool:
        out = self.pm2("jlist", timeout=30).stdout
        data = json.loads(out[out.index("["):])
        st = [a["pm2_env"]["status"] for a in data if a["name"].startswith("hello-")]
        return len(st) == self.n and all(s == "online" for s in st)

    def stop(self) -> None:
        if self.started:
            self.pm2("kill", timeout=60, check=False)


# --------------------------------------------------------------------------------------------
# Measurements


def wait_fleet_up(sup: Supervisor, timeout: float) -> dict[int, int]:
    """Waits until N JVMs run in the tree, each answers /health, and the supervisor reports all
    up. Returns {jvm pid: port}."""

    def all_healthy():
        _, jvms = split_tree(sup.root())
        if len(jvms) != sup.n:
            return None
        ports = {pid: port_of(pid) for pid in jvms}
        if any(p is None for p in ports.values()):
            return None
        if not all(health_ok(p) for p in ports.values()):
            return None
        return ports

    ports = wait_until(all_healthy, timeout, f"{sup.n} JVMs under {sup.name} to answer /health",
                       interval=0.1)
    wait_until(sup.settled, timeout, f"{sup.name} to report {sup.n} instances up", interval=0.2)
    sup.remember_tree()
    return ports


def footprint(sup: Supervisor, idle_seconds: float) -> dict:
    sup_procs, _ = split_tree(sup.root())
    start_ticks = {}
    for pid in sup_procs:
        st = read_stat(pid)
        if st:
            start_ticks[(pid, st[5])] = st[3] + st[4]
    t0 = time.monotonic()
    end = t0 + idle_seconds
    if end > DEADLINE.end:
        raise BenchError("global deadline too close for the idle window")
    # A measurement window, not synchronisation: nothing is polled meanwhile.
    time.sleep(idle_seconds)
    elapsed = time.monotonic() - t0
    ticks = 0
    per_ticks = {}
    for (pid, start), t_start in start_ticks.items():
        st = read_stat(pid)
        if st and st[5] == start:
            ticks += st[3] + st[4] - t_start
            per_ticks[pid] = st[3] + st[4] - t_start
    sup_procs, _ = split_tree(sup.root())
    root = sup.root()
    per = {}
    for pid, st in sup_procs.items():
        per[pid] = {"comm": st[0], "root": pid == root, "data_plane": is_data_plane(pid),
                    "idle_cpu_ms": per_ticks.get(pid, 0) * TICK_MS, **smaps_rollup(pid)}
    pss_kib = sum(v.get("Pss", 0) for v in per.values())
    return {
        "pss_kib": pss_kib,
        "processes": len(per),
        "per_process": per,
        "idle_cpu_ms": ticks * TICK_MS,
        "idle_seconds": elapsed,
    }


def own_start_times(java: str, k: int, base_port: int, work: Path) -> list[float]:
    """The JVM started directly: spawn -> first /health 200, in ms."""
    times = []
    for i in range(k):
        port = base_port + i % 4
        wait_until(lambda: port_free(port), 30, f"port {port} to be free")
        env = {**os.environ, "PORT": str(port)}
        t0 = time.perf_counter()
        p = subprocess.Popen(java_command(java), env=env, cwd=work, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            dt_ = poll_health(port, t0, 60)
            if dt_ is None:
                raise BenchError(f"directly started JVM on port {port} never answered /health")
            times.append(dt_ * 1000)
        finally:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    return times


def wait_replacement(root: int, killed: int, known: set[int], tree: set[int], t0: float,
                     timeout: float) -> tuple[int, float] | None:
    """Scans /proc every ~1 ms for a new `java` process in root's tree (a pid that did not exist
    before the kill). Returns (pid, seconds since t0)."""
    end = DEADLINE.bound(timeout)
    pending: set[int] = set()  # new pids in the tree that have not exec'd java (yet)
    while time.monotonic() < end:
        new = sorted(p for p in all_pids() if p not in known)
        for pid in new:
            known.add(pid)
            st = read_stat(pid)
            if st is None:
                continue
            if st[2] in tree:
                tree.add(pid)
                if st[0] == "java" and pid != killed:
                    return pid, time.perf_counter() - t0
                pending.add(pid)
        for pid in list(pending):
            c = read_comm(pid)
            if c is None:
                pending.discard(pid)
            elif c == "java":
                return pid, time.perf_counter() - t0
        time.sleep(0.001)
    return None


def kill_round(sup: Supervisor, k: int, ports: dict[int, int], settle_timeout: float,
               own) -> list[dict]:
    """K kills of distinct JVMs; the supervisor is left settled between kills. Just before and
    just after each kill, `own(i)` measures the JVM's own start time (started directly), so both
    figures see the same machine conditions."""
    results = []
    order = sorted(ports, key=lambda pid: ports[pid])
    targets_ports = [ports[order[(i * len(order)) // k % len(order)]] for i in range(k)] \
        if k <= len(order) else [ports[order[i % len(order)]] for i in range(k)]
    for i, target_port in enumerate(targets_ports):
        DEADLINE.check("killing instances")
        own_ms = own(i)
        root = sup.root()
        sup_procs, jvms = split_tree(root)
        by_port = {port_of(pid): pid for pid in jvms}
        victim = by_port.get(target_port)
        if victim is None:
            raise BenchError(f"{sup.name}: no JVM on port {target_port} to kill")
        slot = sup.slot_of_pid().get(victim) if isinstance(sup, Jarfleet) else None
        tree = set(descendants(root))
        known = set(all_pids())
        sup.remember_tree()
        wall_ms = time.time() * 1000
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        rep = wait_replacement(root, victim, known, tree, t0, timeout=30)
        rec = {"victim": victim, "port": target_port, "slot": slot, "kill_wall_ms": wall_ms,
               "respawn_ms": None, "ready_ms": None, "new_pid": None, "own_start_ms": [own_ms]}
        if rep is None:
            log(f"{sup.name}: kill {i + 1}/{k}: no replacement JVM within 30 s")
            results.append(rec)
            continue
        new_pid, t_spawn = rep
        rec["new_pid"] = new_pid
        rec["respawn_ms"] = t_spawn * 1000
        p = Proc.of(new_pid)
        if p:
            sup.seen.add(p)
        new_port = wait_until(lambda: port_of(new_pid), 5, f"PORT of the new JVM {new_pid}",
                              interval=0.001)
        rec["new_port"] = new_port
        t_ready = poll_health(new_port, t0, 60)
        rec["ready_ms"] = None if t_ready is None else t_ready * 1000
        log(f"{sup.name} N={sup.n}: kill {i + 1}/{k} pid {victim}: new JVM {new_pid} after "
            f"{rec['respawn_ms']:.1f} ms, /health 200 after "
            f"{'-' if t_ready is None else f'{t_ready * 1000:.0f}'} ms (own start {own_ms:.0f} ms)")
        results.append(rec)
        wait_until(sup.settled, settle_timeout, f"{sup.name} to report all instances up again",
                   interval=0.1)
        rec["own_start_ms"].append(own(i + 1))
    return results


def jarfleet_event_latencies(sup: Jarfleet, kills: list[dict]) -> None:
    """Adds the daemon's own view (events, ms resolution) to each kill record."""
    try:
        evs = sup.events()
    except BenchError as e:
        log(f"jarfleet events unavailable: {e}")
        return
    for k in kills:
        if k.get("slot") is None:
            continue
        after = [e for e in evs if e.get("slot") == k["slot"] and e.get("ts", 0) >= k["kill_wall_ms"] - 5]
        for kind, key in (("instance.exited", "ev_exited_ms"), ("instance.spawned", "ev_spawned_ms"),
                          ("instance.ready", "ev_ready_ms")):
            e = next((e for e in after if e["kind"] == kind), None)
            k[key] = None if e is None else e["ts"] - k["kill_wall_ms"]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_one(name: str, n: int, args, env: dict, top: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"{name}-{n}-", dir=top))
    base = free_port_block(n + 16)
    cls = {"jarfleet": Jarfleet, "supervisord": Supervisord, "pm2": Pm2}[name]
    kw = {"exe": env["jarfleet_exe"]} if name == "jarfleet" else {}
    if name == "jarfleet" and args.listen:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            kw["listen"] = probe.getsockname()[1]
    sup = cls(work, env["java"], env["java_home"], n, base, **kw)
    own_base = base + n + 10  # spare ports after jarfleet's range
    res: dict = {"supervisor": name, "n": n}
    log(f"{name}: starting {n} JVMs (ports {base}-{base + n - 1}) in {work}")
    try:
        t_start = time.monotonic()
        sup.start()
        ports = wait_fleet_up(sup, args.start_timeout)
        res["fleet_up_s"] = time.monotonic() - t_start
        log(f"{name}: {n} JVMs up after {res['fleet_up_s']:.1f} s; idle window {args.idle_seconds} s")
        res.update(footprint(sup, args.idle_seconds))
        log(f"{name} N={n}: PSS {res['pss_kib'] / 1024:.1f} MiB over {res['processes']} "
            f"process(es); idle CPU {res['idle_cpu_ms']:.0f} ms")
        res["kills"] = kill_round(sup, args.kills, ports, args.start_timeout,
                                  own=lambda i: own_start_times(env["java"], 1, own_base + i % 4,
                                                                work)[0])
        res["own_start_ms"] = [t for k in res["kills"] for t in k["own_start_ms"]]
        log(f"{name} N={n}: JVM own start (median of {len(res['own_start_ms'])}): "
            f"{median(res['own_start_ms']):.0f} ms")
        if isinstance(sup, Jarfleet):
            jarfleet_event_latencies(sup, res["kills"])
    finally:
        res["stop_all_s"] = sup.teardown()
        if res["stop_all_s"] is not None:
            log(f"{name} N={n}: stopped everything in {res['stop_all_s']:.1f} s")
        if not args.keep_temp:
            shutil.rmtree(work, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------------
# Report


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def summarize(r: dict) -> dict:
    kills = r.get("kills", [])
    own = median(r.get("own_start_ms", []))
    ready = median([k["ready_ms"] for k in kills])
    s = {
        "pss_mib": r["pss_kib"] / 1024 if "pss_kib" in r else None,
        "procs": r.get("processes"),
        "cpu_ms": r.get("idle_cpu_ms"),
        "respawn_ms": median([k["respawn_ms"] for k in kills]),
        "ready_ms": ready,
        "own_ms": own,
        "over_own_ms": None if ready is None or own is None else ready - own,
        "missed": sum(1 for k in kills if k["respawn_ms"] is None),
    }
    if r["supervisor"] == "jarfleet":
        s["ev_ready_ms"] = median([k.get("ev_ready_ms") for k in kills])
        s["ev_exited_ms"] = median([k.get("ev_exited_ms") for k in kills])
        s["ev_spawned_ms"] = median([k.get("ev_spawned_ms") for k in kills])
    return s


def machine() -> dict:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "mem_gib": mem_kib / 1024 / 1024, "cpu": cpu,
            "kernel": platform.release()}


def jarfleet_breakdown(r: dict) -> str:
    """Daemon vs shims, from the smaps_rollup figures taken with the PSS sample."""
    per = r.get("per_process", {})
    daemon = next((v for v in per.values() if v.get("root")), None)
    planes = [v for v in per.values() if v.get("data_plane")]
    shims = [v for v in per.values() if not v.get("root") and not v.get("data_plane")]
    if daemon is None:
        return ""
    keys = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Dirty", "Private_Clean", "Shared_Dirty",
            "Shared_Clean")

    def mean(field):
        return statistics.mean(s.get(field, 0) for s in shims) if shims else 0

    def total(field):
        return sum(s.get(field, 0) for s in shims)

    lines = [f"| jarfleet N={r['n']} (KiB) | " + " | ".join(keys) + " | idle CPU (ms) |",
             "|---|" + "---:|" * (len(keys) + 1),
             "| daemon | " + " | ".join(str(daemon.get(k, 0)) for k in keys)
             + f" | {daemon.get('idle_cpu_ms', 0):.0f} |",
             f"| shim (mean of {len(shims)}) | " + " | ".join(f"{mean(k):.0f}" for k in keys)
             + f" | {mean('idle_cpu_ms'):.1f} |",
             "| all shims (sum) | " + " | ".join(str(total(k)) for k in keys)
             + f" | {total('idle_cpu_ms'):.0f} |"]
    for dp in planes:
        lines.append("| load balancer (data plane) | " + " | ".join(str(dp.get(k, 0)) for k in keys)
                     + f" | {dp.get('idle_cpu_ms', 0):.0f} |")
    return "\n".join(lines)


def sfmt(x, nd=0):
    return "—" if x is None else f"{x:+.{nd}f}"


def report(results: list[dict], meta: dict) -> str:
    m = meta["machine"]
    k = meta["kills"]
    out = [SECTION, ""]
    out.append(
        f"Measured {meta['date']} on {m['cpu']}, nproc {m['nproc']}, {m['mem_gib']:.1f} GiB RAM, "
        f"Linux {m['kernel']}; {meta['java_version']} (`{meta['java']}`); jarfleet "
        f"{meta['jarfleet_version']} (release build); supervisor {meta['supervisor_version']} on "
        f"Python {platform.python_version()}; PM2 {meta['pm2_version']} on Node "
        f"{meta['node_version']}. The supervisors ran one after another, never at once. Load "
        f"average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in meta['load_before'])} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in meta['load_after'])} at the end (other work on the "
        "machine shares its cores)."
    )
    out += ["", "Reproduce (from the repository root):", "", "```sh", meta["command"], "```", ""]
    out.append(
        f"Each JVM: `java {' '.join(JVM_FLAGS)} -jar examples/hello/hello.jar` with its own `PORT` "
        "on 127.0.0.1, the same command line under every supervisor (jarfleet's default extra "
        "flags for OOM exit, heap dump and GC log switched off; it adds only `-XX:ErrorFile`). "
        "jarfleet also health-checks every instance (`GET /health` every 5 s, its default); "
        "supervisord and PM2 do not check health. supervisord: `autorestart=true`, otherwise "
        "defaults; PM2: fork mode, `interpreter: none`, otherwise defaults. Kill figures are "
        f"medians of {k} kills, each of a different instance."
    )
    out += [""]
    out.append("| N | supervisor | PSS (MiB) | processes counted | idle CPU (ms in "
               f"{meta['idle_seconds']:g} s) | kill → new JVM (ms) | kill → /health 200 (ms) | "
               "JVM's own start (ms) | ready again − own start (ms) | stop all (s) |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    by = {}
    for r in results:
        s = summarize(r)
        s["stop_s"] = r.get("stop_all_s")
        by[(r["supervisor"], r["n"])] = s
        out.append(
            f"| {r['n']} | {r['supervisor']} | {fmt(s['pss_mib'])} | {s['procs']} | "
            f"{fmt(s['cpu_ms'], 0)} | {fmt(s['respawn_ms'])} | {fmt(s['ready_ms'], 0)} | "
            f"{fmt(s['own_ms'], 0)} | {sfmt(s['over_own_ms'])} | "
            f"{fmt(s['stop_s']) if s['stop_s'] is not None else 'killed'} |"
            + (f" ({s['missed']} kill(s) without replacement in 30 s)" if s["missed"] else "")
        )
    ns = sorted({r["n"] for r in results})
    out += ["", "jarfleet relative to the others (below 1× = jarfleet uses less / is faster):", ""]
    out.append("| N | vs | PSS | idle CPU | kill → new JVM | kill → /health 200 |")
    out.append("|---:|---|---:|---:|---:|---:|")
    for n in ns:
        j = by.get(("jarfleet", n))
        if not j:
            continue
        for other in ("supervisord", "pm2"):
            o = by.get((other, n))
            if not o:
                continue
            out.append(f"| {n} | {other} | {ratio(j['pss_mib'], o['pss_mib'])} | "
                       f"{ratio(j['cpu_ms'], o['cpu_ms'])} | "
                       f"{ratio(j['respawn_ms'], o['respawn_ms'])} | "
                       f"{ratio(j['ready_ms'], o['ready_ms'])} |")
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        cells = []
        for name in SUPERVISORS:
            a, b = by.get((name, lo)), by.get((name, hi))
            if a and b and a["pss_mib"] is not None and b["pss_mib"] is not None:
                cells.append(f"{name} {(b['pss_mib'] - a['pss_mib']) * 1024 / (hi - lo):.0f} KiB")
        if cells:
            out += ["", f"PSS added per extra instance (N={lo} → N={hi}): "
                    + ", ".join(cells) + "."]
    jrows = [(n, by[("jarfleet", n)]) for n in ns if ("jarfleet", n) in by]
    if jrows:
        out += ["", "jarfleet's own view of the same kills (its events; ms after the kill, "
                "medians):", ""]
        out.append("| N | exit seen | replacement spawned | `instance.ready` (its readiness "
                   "probe) | `instance.ready` − own start |")
        out.append("|---:|---:|---:|---:|---:|")
        for n, s in jrows:
            over = (None if s.get("ev_ready_ms") is None or s["own_ms"] is None
                    else s["ev_ready_ms"] - s["own_ms"])
            out.append(f"| {n} | {fmt(s.get('ev_exited_ms'), 0)} | "
                       f"{fmt(s.get('ev_spawned_ms'), 0)} | {fmt(s.get('ev_ready_ms'), 0)} | "
                       f"{sfmt(over)} |")

    # Goals from the issue.
    if jrows:
        def met(ok):
            return "—" if ok is None else ("yes" if ok else "**missed**")

        out += ["", "Goals (jarfleet):", ""]
        out.append("| N | goal | measured | met |")
        out.append("|---:|---|---:|---|")
        for n, j in jrows:
            sd = by.get(("supervisord", n))
            if n == 10:
                out.append(f"| {n} | PSS of daemon + shims ≤ {GOAL_PSS_MIB:g} MiB (10 instances) | "
                           f"{fmt(j['pss_mib'])} MiB | "
                           f"{met(None if j['pss_mib'] is None else j['pss_mib'] <= GOAL_PSS_MIB)} |")
            if sd and j["cpu_ms"] is not None and sd["cpu_ms"] is not None:
                out.append(f"| {n} | idle CPU ≤ supervisord's ({fmt(sd['cpu_ms'], 0)} ms) | "
                           f"{fmt(j['cpu_ms'], 0)} ms | {met(j['cpu_ms'] <= sd['cpu_ms'])} |")
            out.append(f"| {n} | kill → new JVM ≤ {GOAL_RESPAWN_MS:g} ms | "
                       f"{fmt(j['respawn_ms'])} ms | "
                       f"{met(None if j['respawn_ms'] is None else j['respawn_ms'] <= GOAL_RESPAWN_MS)} |")
            ov = j["over_own_ms"]
            out.append(f"| {n} | answering /health again ≤ own start + {GOAL_READY_OVER_OWN_MS:g} ms | "
                       f"{sfmt(ov)} ms | {met(None if ov is None else ov <= GOAL_READY_OVER_OWN_MS)} |")
            if j.get("ev_ready_ms") is not None and j["own_ms"] is not None:
                ov = j["ev_ready_ms"] - j["own_ms"]
                out.append(f"| {n} | jarfleet's `instance.ready` ≤ own start + "
                           f"{GOAL_READY_OVER_OWN_MS:g} ms | {sfmt(ov)} ms | "
                           f"{met(ov <= GOAL_READY_OVER_OWN_MS)} |")
    bd = [jarfleet_breakdown(r) for r in results if r["supervisor"] == "jarfleet"]
    bd = [b for b in bd if b]
    if bd:
        out += ["", "Where jarfleet's PSS goes (`/proc/PID/smaps_rollup` at the PSS sample, KiB):", ""]
        for b in bd:
            out += [b, ""]
    out += [
        "How it is counted: **PSS** is the sum of `Pss` from `/proc/PID/smaps_rollup` over the "
        "supervisor's processes (its process tree minus the JVMs and anything below them: "
        "jarfleet = daemon + every shim; supervisord = its one Python process; PM2 = its God "
        "daemon), sampled at the end of the idle window; MiB = 1024 KiB. PSS charges each shared "
        "page to the processes mapping it in equal parts, so the pages of the one jarfleet binary "
        "mapped by the daemon and all shims count once in the sum, not once per process. **Idle "
        f"CPU**: utime + stime of those same processes (`/proc/PID/stat`, {TICK_MS:g} ms ticks, "
        f"children excluded) over {meta['idle_seconds']:g} s with all instances up and nothing "
        "asked of the supervisor. **kill → new JVM**: from `kill -9` of one JVM until a new "
        "`java` process exists in the supervisor's process tree (/proc scanned every ~1 ms). "
        "**kill → /health 200**: until that JVM answers `GET /health` (polled every 5 ms). "
        "**JVM's own start**: the same java command started directly by the script just before "
        "and just after each kill (2 × kills samples), spawn → first `/health` 200 (same 5 ms "
        "polling), with the fleet running; "
        "**ready again − own start** is what the supervisor adds (medians of each, so a few ms "
        "either way is noise). **stop all**: from the stop command (`jarfleet down`, "
        "`supervisorctl shutdown`, `pm2 kill`) until every process of the tree is gone.",
        "",
    ]
    return "\n".join(out)


def write_section(text: str, path: Path, section: str = SECTION) -> None:
    """Replaces (or appends) only the `## Supervision footprint` section of `path`."""
    if path.exists():
        doc = path.read_text()
    else:
        doc = ("# Benchmarks\n\nFigures measured on this project's machines by the scripts in "
               "`bench/`; each section names the command that reproduces it.\n\n")
    lines = doc.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip("\n") == section), None)
    body = text.rstrip("\n") + "\n"
    if start is None:
        if not doc.endswith("\n"):
            doc += "\n"
        if not doc.endswith("\n\n"):
            doc += "\n"
        new = doc + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + body + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", default="10,50", help="comma-separated instance counts (10,50)")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (30)")
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs per supervisor and N (5)")
    ap.add_argument("--supervisors", default=",".join(SUPERVISORS),
                    help="comma-separated subset of jarfleet,supervisord,pm2")
    ap.add_argument("--jarfleet", type=Path, help="use this jarfleet binary instead of building")
    ap.add_argument("--listen", action="store_true",
                    help="give jarfleet's app a `listen` address: its load balancer's process is counted")
    ap.add_argument("--section", default=SECTION, help="the docs section to write (## Supervision footprint)")
    ap.add_argument("--java", help="java binary (default: `java` on PATH)")
    ap.add_argument("--start-timeout", type=float, default=180.0,
                    help="seconds for a fleet to come up / settle (180)")
    ap.add_argument("--timeout", type=float, default=3600.0,
                    help="global deadline in seconds for the whole run (3600)")
    ap.add_argument("--doc", type=Path, default=DOC, help="markdown file to update")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch --doc")
    ap.add_argument("--json", type=Path, help="also write raw results as JSON here")
    ap.add_argument("--keep-temp", action="store_true", help="keep the temp dirs (logs)")
    args = ap.parse_args()

    global DEADLINE
    DEADLINE = Deadline(args.timeout)
    ns = [int(x) for x in args.instances.split(",") if x.strip()]
    sups = [s.strip() for s in args.supervisors.split(",") if s.strip()]
    bad = [s for s in sups if s not in SUPERVISORS]
    if bad or not ns or args.kills < 1 or any(n < 1 for n in ns):
        ap.error(f"bad arguments: supervisors {bad}, instances {ns}, kills {args.kills}")
    if sys.platform != "linux":
        ap.error("Linux only (reads /proc)")
    if not HELLO_JAR.exists():
        raise SystemExit(f"missing {HELLO_JAR}: run examples/hello/build.sh")

    # SIGTERM/SIGINT: tear down like any other failure.
    def on_signal(signum, _frame):
        raise BenchError(f"interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    results = []
    try:
        java, java_home, java_version = find_java(args.java)
        meta = {"java": java, "java_version": java_version, "supervisor_version": "-",
                "pm2_version": "-", "node_version": "-"}
        if "supervisord" in sups:
            meta["supervisor_version"] = ensure_supervisor()
        if "pm2" in sups:
            meta["pm2_version"], meta["node_version"] = ensure_pm2()
        exe = None
        if "jarfleet" in sups:
            exe = args.jarfleet.resolve() if args.jarfleet else build_jarfleet()
            if not exe.exists():
                raise BenchError(f"no jarfleet binary at {exe}")
            meta["jarfleet_version"] = run([str(exe), "--version"]).stdout.strip().split()[-1]
        else:
            meta["jarfleet_version"] = "-"
        top = Path(tempfile.mkdtemp(prefix="jarfleet-supervise-"))
        if exe is not None:
            # Run a private copy: a concurrent `cargo build` must not swap the binary mid-run
            # (new shims would then map a different file than the daemon).
            copy = top / "jarfleet"
            shutil.copy2(exe, copy)
            # Written back now, so its mapped pages are clean page cache (not Shared_Dirty).
            with open(copy, "rb+") as f:
                os.fsync(f.fileno())
            exe = copy
        env = {"java": java, "java_home": java_home, "jarfleet_exe": exe}
        meta["load_before"] = os.getloadavg()
        try:
            for n in ns:
                for name in sups:
                    DEADLINE.check(f"starting {name} with {n}")
                    results.append(run_one(name, n, args, env, top))
        finally:
            if not args.keep_temp:
                shutil.rmtree(top, ignore_errors=True)
            else:
                log(f"temp dirs kept in {top}")
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1

    cmd = "python3 bench/supervise.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta["load_after"] = os.getloadavg()
    meta.update({"date": dt.date.today().isoformat(), "machine": machine(), "command": cmd.strip(),
                 "idle_seconds": args.idle_seconds, "kills": args.kills})
    text = report(results, meta)
    if args.section != SECTION:
        text = text.replace(SECTION, args.section, 1)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    if not args.no_write:
        write_section(text, args.doc, args.section)
        log(f"wrote section '{args.section}' of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
