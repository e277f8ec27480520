#!/usr/bin/env python3
"""Front-door benchmark: requests failed while jarfleet's control plane (and its data plane) is
killed, restarted and upgraded under load, next to nginx and HAProxy replacing themselves.

One command (from the repository root, as root for apt):

    python3 bench/front_door.py [--runs 5] [--write-docs]

* builds jarfleet (release) unless `--jarfleet BIN`; makes a second build of it for the upgrade
  rows (the same code with another linker build id, which is how `status` and `upgrade` tell
  builds apart; `--other BIN` takes a real other build instead);
* a real `jarfleet up` fleet: two `examples/hello/hello.jar` JVMs behind the fleet's `listen`
  address; nginx and HAProxy in front of the same two JVMs, each with its documented graceful
  replacement (nginx: `nginx -s reload`; HAProxy: master-worker with `expose-fd listeners`, a new
  process started with `-x` and `-sf`, the seamless reload);
* load: 4 keep-alive clients (GET and POST in turn) and 2 clients opening a new connection per
  request, through one address, all the time; a kept-alive connection the server closed is
  seen closed before it is reused (as HTTP clients do) and a `Connection: close` answer ends
  its connection; every other failure counts;
* events, each under load, the order shuffled every run: `daemon-kill9` (SIGKILL of the daemon,
  a new `jarfleet up -d` 1 s later), `daemon-restart` (SIGTERM, then `up -d`), `upgrade`
  (`jarfleet upgrade` to the other build, and back the next run), `data-plane-kill9` (SIGKILL of
  the data-plane process; the time until a GET on a new connection, sent right after the kill,
  is answered is the "serving again" figure), `nginx-reload`, `haproxy-reload`;
* each event: 1.5 s of load before, the event, 2 s of load after; failed requests counted, and
  for the kills the requests in flight at the kill;
* prints a markdown report; `--write-docs` writes it into docs/BENCHMARKS.md ("## Front door").

Everything talks only to 127.0.0.1; every process started here is stopped here, by pid.
"""

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ports import free_port  # noqa: E402
import docsection  # noqa: E402
import proxy  # noqa: E402  (its Fleet)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Front door"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def tool(name):
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        raise SystemExit(f"{name} is missing: apt-get install -y {name}")
    return path


def ensure_tools():
    missing = [t for t in ("nginx", "haproxy") if not (shutil.which(t) or os.path.exists(f"/usr/sbin/{t}"))]
    if missing:
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, timeout=600,
                       stdout=subprocess.DEVNULL)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def fully_dead(pid):
    """Gone, or a zombie whose every thread has exited (its files, sockets included, are
    closed only when the last thread goes: the leader shows `Z` before that)."""
    if pid_alive(pid):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def wait_for(what, pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise RuntimeError(f"timed out waiting for {what}")


def get(port, timeout=5.0):
    """Whether a GET / on a new connection is answered 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200")


# ---- load ----

class Load:
    """4 keep-alive clients (GET/POST in turn) and 2 new-connection clients, until stopped."""

    def __init__(self, port, keep_alive=4, fresh=2):
        self.port = port
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.refused = 0
        self.in_flight = 0
        self.errors = []
        self.log = []  # (sent, ended, ok) of every request, monotonic seconds
        self.threads = [threading.Thread(target=self.client, args=(i < keep_alive,), daemon=True)
                        for i in range(keep_alive + fresh)]
        for t in self.threads:
            t.start()

    def count(self, field, delta=1, error=None):
        with self.lock:
            setattr(self, field, getattr(self, field) + delta)
            if error and len(self.errors) < 50:
                self.errors.append(error)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s, b""

    @staticmethod
    def still_open(conn):
        s, buf = conn
        if buf:
            return False
        try:
            s.setblocking(False)
            try:
                s.recv(1, socket.MSG_PEEK)
                return False  # closed (b"") or bytes nobody asked for: not reusable
            except BlockingIOError:
                return True
            finally:
                s.setblocking(True)
                s.settimeout(10)
        except OSError:
            return False

    @staticmethod
    def exchange(conn, post, close):
        s, buf = conn
        hdr = b"close" if close else b"keep-alive"
        if post:
            req = (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: " + hdr +
                   b"\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world")
        else:
            req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: " + hdr + b"\r\n\r\n"
        s.sendall(req)
        while b"\r\n\r\n" not in buf:
            b = s.recv(65536)
            if not b:
                raise ConnectionError("closed before a complete head" if buf else "closed before any byte")
            buf += b
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, reusable = 0, not close
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            k, v = k.strip().lower(), v.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"connection" and v == b"close":
                reusable = False
        while len(rest) < length:
            b = s.recv(65536)
            if not b:
                raise ConnectionError("closed inside the body")
            rest += b
        body, extra = rest[:length], rest[length:]
        if status != 200 or not body.startswith(b"hello from"):
            raise ValueError(f"{status} {body[:60]!r}")
        return reusable, (s, extra)

    def client(self, keep_alive):
        conn = None
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            if conn is not None and not self.still_open(conn):
                conn[0].close()
                conn = None
            opened = None
            if conn is None:
                opened = time.monotonic()  # a request on a new connection starts at its connect
                try:
                    conn = self.connect()
                except ConnectionRefusedError as e:
                    self.count("refused")
                    self.count("failed", error=f"connect: {e}")
                    time.sleep(0.005)
                    continue
                except OSError as e:
                    self.count("failed", error=f"connect: {e}")
                    time.sleep(0.005)
                    continue
            self.count("in_flight")
            sent = opened or time.monotonic()
            try:
                reusable, conn2 = self.exchange(conn, n % 2 == 0, not keep_alive)
                self.count("in_flight", -1)
                self.count("ok")
                with self.lock:
                    self.log.append((sent, time.monotonic(), True, ""))
                if reusable:
                    conn = conn2
                else:
                    conn[0].close()
                    conn = None
            except (OSError, ValueError, IndexError) as e:
                self.count("in_flight", -1)
                self.count("failed", error=str(e))
                with self.lock:
                    self.log.append((sent, time.monotonic(), False, f"{'kept' if opened is None else 'new'}: {e}"))
                try:
                    conn[0].close()
                except OSError:
                    pass
                conn = None

    def around(self, instant):
        """(failed requests sent before `instant`, failed ones sent after, requests in flight
        at `instant`)."""
        with self.lock:
            log = list(self.log)
        before = sum(1 for s, _, ok, _ in log if not ok and s <= instant)
        after = [(round((s - instant) * 1000, 3), why) for s, _, ok, why in log if not ok and s > instant]
        in_flight = sum(1 for s, e, _, _ in log if s <= instant < e)
        return before, after, in_flight

    def snapshot(self):
        with self.lock:
            return self.ok, self.failed, self.refused, self.in_flight

    def wait_more(self, n, timeout=60.0):
        start = self.snapshot()[0]
        wait_for(f"{n} more answers", lambda: self.snapshot()[0] >= start + n, timeout)

    def finish(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.snapshot()


# ---- the fleet and the other fronts ----

class Fleet(proxy.Fleet):
    """The proxy benchmark's fleet (two hello.jar JVMs behind its `listen` address), seen from
    the outside: its daemon, its data plane, and any build of jarfleet to run commands with."""

    def __init__(self, tmp, jarfleet):
        super().__init__(tmp, jarfleet, free_port())
        self.exe = jarfleet

    def jf(self, *args, exe=None, timeout=120):
        return subprocess.run([exe or self.exe, "--state-dir", self.state, *args], capture_output=True,
                              text=True, timeout=timeout, check=True)

    def status(self):
        return json.loads(self.jf("status", "-o", "json", timeout=30).stdout)

    def start(self):
        self.jf("up", "-d", self.spec)
        wait_for("2 ready instances", lambda: len(self.ready_ports()) == 2)
        wait_for("the listen address", lambda: get(self.listen))

    def ready_ports(self):
        return [i["port"] for a in self.status()["apps"] for i in a["instances"]
                if i["state"] == "ready" and i.get("port")]

    def daemon_pid(self):
        with open(os.path.join(self.state, "daemon.lock")) as f:
            return int(f.read().strip())

    def data_plane_pid(self):
        with open(os.path.join(self.state, "lb", "pid")) as f:
            return int(f.read().strip())

    def wait_api(self):
        def answering():
            try:
                self.status()
                return True
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, json.JSONDecodeError):
                return False
        wait_for("the daemon's API", answering)

    def stop(self):
        subprocess.run([self.exe, "--state-dir", self.state, "down"], capture_output=True, timeout=120)


class Front:
    """nginx or HAProxy in front of the fleet's JVMs, with its own graceful replacement."""

    def __init__(self, tmp, kind, backends):
        self.kind = kind
        self.port = free_port()
        self.dir = os.path.join(tmp, kind)
        os.makedirs(self.dir, exist_ok=True)
        self.backends = backends
        self.pids_started = []
        if kind == "nginx":
            servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in backends)
            self.conf = os.path.join(self.dir, "nginx.conf")
            with open(self.conf, "w") as f:
                f.write(f"""worker_processes 2;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream app {{
{servers}        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=1024;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502;
        }}
    }}
}}
""")
        else:
            servers = "".join(f"    server b{i} 127.0.0.1:{p} check inter 1s\n" for i, p in enumerate(backends))
            self.conf = os.path.join(self.dir, "haproxy.cfg")
            self.sock = os.path.join(self.dir, "master.sock")
            with open(self.conf, "w") as f:
                f.write(f"""global
    nbthread 2
    stats socket {self.dir}/admin.sock mode 600 level admin expose-fd listeners
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 75s
    option http-keep-alive
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch
frontend f
    bind 127.0.0.1:{self.port}
    default_backend b
backend b
    balance roundrobin
{servers}""")

    def start(self):
        if self.kind == "nginx":
            subprocess.run([tool("nginx"), "-c", self.conf], check=True, timeout=30)
            with open(os.path.join(self.dir, "nginx.pid")) as f:
                self.pids_started.append(int(f.read().strip()))
        else:
            self.haproxy_spawn([])
        wait_for(f"{self.kind} serving", lambda: get(self.port))

    def haproxy_spawn(self, extra):
        log_file = open(os.path.join(self.dir, "haproxy.log"), "a")
        p = subprocess.Popen([tool("haproxy"), "-f", self.conf, *extra],
                             stdout=log_file, stderr=log_file)
        self.pids_started.append(p.pid)
        self.proc = p

    def replace(self):
        """The documented graceful replacement; returns once the new process serves."""
        if self.kind == "nginx":
            subprocess.run([tool("nginx"), "-c", self.conf, "-s", "reload"], check=True, timeout=30)
        else:
            old = self.proc
            self.haproxy_spawn(["-x", os.path.join(self.dir, "admin.sock"), "-sf", str(old.pid)])
            try:
                old.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        wait_for(f"{self.kind} serving", lambda: get(self.port))

    def stop(self):
        if self.kind == "nginx":
            subprocess.run([tool("nginx"), "-c", self.conf, "-s", "quit"], timeout=30)
        for pid in self.pids_started:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


# ---- events ----

def another_build(src, dst):
    """A copy of `src` with another linker build id (the same code: see the module doc)."""
    info = json.loads(subprocess.run([src, "version", "--json"], capture_output=True, text=True,
                                     timeout=30, check=True).stdout)
    data = bytearray(open(src, "rb").read())
    at = data.find(bytes.fromhex(info["build"]))
    if at < 0:
        raise SystemExit(f"{src} has no build id to change; pass --other BIN")
    data[at] ^= 0x5A
    with open(dst, "wb") as f:
        f.write(data)
    os.chmod(dst, 0o755)
    return dst


def run_event(name, fleet, fronts, builds, state):
    """One event under load; returns its figures."""
    port = fronts[name.split("-")[0]].port if name.endswith("reload") else fleet.listen
    load = Load(port)
    load.wait_more(300)
    time.sleep(1.5)
    out = {"event": name}
    if name == "daemon-kill9":
        pid = fleet.daemon_pid()
        os.kill(pid, signal.SIGKILL)
        wait_for("the daemon gone", lambda: not pid_alive(pid), 10)
        time.sleep(1.0)
        fleet.jf("up", "-d", fleet.spec)
        fleet.wait_api()
    elif name == "daemon-restart":
        pid = fleet.daemon_pid()
        os.kill(pid, signal.SIGTERM)
        wait_for("the daemon gone", lambda: not pid_alive(pid), 60)
        fleet.jf("up", "-d", fleet.spec)
        fleet.wait_api()
    elif name == "upgrade":
        target = builds[state["next_build"]]
        state["next_build"] ^= 1
        old_dp = fleet.data_plane_pid()
        t0 = time.monotonic()
        fleet.jf("upgrade", "--binary", target, "--grace", "10s", exe=target)
        out["upgrade_ms"] = (time.monotonic() - t0) * 1000
        wait_for("the old data plane gone", lambda: not pid_alive(old_dp), 30)
        out["old_gone_ms"] = (time.monotonic() - t0) * 1000
    elif name == "data-plane-kill9":
        pid = fleet.data_plane_pid()
        probe = {}

        def first_get():
            probe["ok"] = get(fleet.listen, timeout=10)
            probe["at"] = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        prober = threading.Thread(target=first_get)
        prober.start()
        # The instant it is dead (its sockets closed: a zombie, or gone).
        while not fully_dead(pid):  # no pause: the instant matters, and it comes within a moment
            if time.monotonic() > t0 + 10:
                raise RuntimeError("the killed data plane did not die")
        dead = time.monotonic()
        prober.join(timeout=15)
        out["serving_again_ms"] = (probe["at"] - t0) * 1000
        out["death"] = dead
        if not probe.get("ok"):
            raise RuntimeError("the first GET after the kill was not answered 200")
    else:
        fronts[name.split("-")[0]].replace()
    time.sleep(2.0)
    ok, failed, refused, _ = load.finish()
    out.update(ok=ok, failed=failed, refused=refused, errors=load.errors[:5])
    if "death" in out:
        before, after, in_flight = load.around(out.pop("death"))
        out.update(in_flight_at_kill=in_flight, failed_sent_after_death=len(after), after_death=after)
    log(f"  {name}: {ok} answered, {failed} failed ({refused} refused)"
        + (f", {out['in_flight_at_kill']} in flight when it died ({out['failed_sent_after_death']} failed sent after), serving again after "
           f"{out['serving_again_ms']:.1f} ms" if "serving_again_ms" in out else "")
        + (f", errors {out['errors']}" if failed else "")
        + (f", after its death: {out['after_death']}" if out.get("after_death") else ""))
    return out


def median(xs):
    return statistics.median(xs) if xs else None


def report(results, args, cmd, started):
    events = ["daemon-kill9", "daemon-restart", "upgrade", "data-plane-kill9", "nginx-reload", "haproxy-reload"]
    lines = [SECTION, "",
             f"`{cmd}` — {started}, {platform.node()}, {os.cpu_count()} CPUs, {args.runs} runs, "
             "the order of events shuffled in each run.", "",
             "Load on one address all the time: 4 keep-alive clients (GET and POST in turn) and 2 clients "
             "with a new connection per request (Python, so a few thousand requests a second). "
             "Each event: 1.5 s of load, the event, 2 s of load after it. The issue's bar: 0 failed for "
             "a daemon crash + restart 1 s later, a graceful restart and an upgrade; for a kill of the "
             "data plane, failures at most the requests in flight at that instant, no refused connection, "
             "serving again within 50 ms. The instant a killed data plane is dead (its sockets closed) is "
             "when `/proc` shows it gone or a zombie, polled without pause after `kill`; every request "
             "is logged with when it was sent and when it ended, so the requests in flight at that "
             "instant are counted, not guessed. \"Serving again\": a GET on a new connection sent right "
             "after the kill, until its answer (it waits in the socket's backlog meanwhile).", "",
             "| event | runs | answered per run (median) | failed per run: median (range) | refused (total) | in flight when the data plane died: median (range) | failed among requests sent after it died (total) | serving again, ms: median (range) |",
             "|---|---|---|---|---|---|---|---|"]
    for e in events:
        rs = [r for r in results if r["event"] == e]
        if not rs:
            continue
        failed = [r["failed"] for r in rs]
        again = [r["serving_again_ms"] for r in rs if "serving_again_ms" in r]
        infl = [r["in_flight_at_kill"] for r in rs if "in_flight_at_kill" in r]
        lines.append(
            f"| {e} | {len(rs)} | {median([r['ok'] for r in rs]):.0f} | {median(failed):g} ({min(failed)}–{max(failed)}) | "
            f"{sum(r['refused'] for r in rs)} | "
            + (f"{median(infl):g} ({min(infl)}–{max(infl)})" if infl else "—") + " | "
            + (f"{sum(r['failed_sent_after_death'] for r in rs)}" if infl else "—") + " | "
            + (f"{median(again):.1f} ({min(again):.1f}–{max(again):.1f})" if again else "—") + " |")
    up = [r for r in results if r["event"] == "upgrade"]
    if up:
        lines += ["", f"`jarfleet upgrade` itself took {median([r['upgrade_ms'] for r in up]):.0f} ms (median; "
                  f"from the command to its return, the daemon back as the new build); the old data plane "
                  f"had finished and exited {median([r['old_gone_ms'] for r in up]):.0f} ms after the command (median)."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--jarfleet")
    ap.add_argument("--other", help="another build of jarfleet for the upgrade rows")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python3 bench/front_door.py " + " ".join(sys.argv[1:])
    ensure_tools()
    jarfleet = args.jarfleet
    if not jarfleet:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "jarfleet"], cwd=ROOT, check=True, timeout=3600)
        jarfleet = os.path.join(ROOT, "target/release/jarfleet")
    tmp = tempfile.mkdtemp(prefix="jf-frontdoor-")
    a = os.path.join(tmp, "jarfleet-a")
    shutil.copy(jarfleet, a)
    b = args.other or another_build(a, os.path.join(tmp, "jarfleet-b"))
    fleet = Fleet(tmp, a)
    fronts = {}
    results = []
    state = {"next_build": 1}
    builds = [a, b]
    deadline = time.monotonic() + 3600
    try:
        fleet.start()
        ports = fleet.ready_ports()
        for kind in ("nginx", "haproxy"):
            fronts[kind] = Front(tmp, kind, ports)
            fronts[kind].start()
        events = ["daemon-kill9", "daemon-restart", "upgrade", "data-plane-kill9", "nginx-reload", "haproxy-reload"]
        for run in range(args.runs):
            order = events[:]
            random.shuffle(order)
            log(f"run {run + 1}/{args.runs}: {', '.join(order)}")
            for e in order:
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark's one-hour deadline passed")
                results.append(run_event(e, fleet, fronts, builds, state))
    finally:
        for f in fronts.values():
            f.stop()
        exe = builds[state["next_build"] ^ 1]
        subprocess.run([exe, "--state-dir", fleet.state, "down"], capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(results, args, cmd, started)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.write_docs:
        docsection.replace_section(SECTION, text)


if __name__ == "__main__":
    main()
