#!/usr/bin/env python3
"""Cluster-mode benchmark: what a fleet on three hosts does when a host dies, is cut off, is
frozen, or loses etcd, measured through the real product, over repeated runs.

One command (from the repository root, as root: it makes network namespaces):

    python3 bench/cluster.py [--runs 10] [--etcd-down-runs 1] [--write-docs]
    python3 bench/cluster.py --only drain [--runs 10] [--write-docs]
    python3 bench/cluster.py --only rollout,rollout-scheduler-kill [--runs 10] [--write-docs]
    python3 bench/cluster.py --only canary-good,canary-bad [--runs 10] [--write-docs]

What it builds, afresh for every run of every scenario (so that each run starts from the same
cluster: no host restored, nothing re-spread by hand):

* a network lab like `crates/testkit/src/netlab`: a bridge `jfbr<i>` with 198.(18+i/256).(i%256).1,
  three namespaces `jf<i>h<n>` (hosts) at `.2`–`.4` joined by veths `jf<i>v<n>`, every ARP entry
  written up front and permanent, so a link cut (`ip link set jf<i>v<n> down`) is silent: no
  reset, no refusal. The index `i` (≥ 400, so the test suite's random picks rarely meet it) is
  claimed with the same `flock` on `/run/jarfleet-netlab/<i>.lock` as the tests, held for the
  whole benchmark, and whatever an earlier holder of that index left is removed first;
* a 3-member etcd (the installed `etcd`) on the bridge address, ports claimed like the tests'
  port allocator (a `flock` per port in `$TMPDIR/jarfleet-test-ports/`);
* one real daemon per host: `jarfleet up -d --wait NODE_SPEC` inside the host's namespace
  (`[cluster]` with the product's defaults: `lease_ttl` 6 s, probes every 500 ms);
* the fixture app (`fixtures/app`, real JVMs) as `web`: 4 instances, `listen = "0.0.0.0:8080"` on
  every host, health `GET /health` every 500 ms, applied from one host; the run starts once
  every host's balancer has answered from all 4 JVMs.

Load: keep-alive HTTP/1.1 GET clients (2 per host by default, each paced at `--rate` requests
a second) from the root namespace through every reachable host's balancer; a connection the
server closed is reconnected. A failure is anything but a 200 "hello from…" answer: a status,
a reset, a connect error, or no answer within 10 s. For the partition, a client process runs
inside the cut-off host's namespace (this script with `--inside-client`).

Scenarios (shuffled within each run; `--only a,b`):
  failures (the default; docs/BENCHMARKS.md "## Cluster"): host-kill, link-cut, scheduler-kill,
  etcd-leader-kill, etcd-down, freeze, partition;
  an operator's actions ("## Cluster operations"): drain (`--only drain`);
  a new release across the hosts ("## Cluster rollouts"): rollout, rollout-scheduler-kill
  (`--only rollout,rollout-scheduler-kill`); a canary across the hosts ("## Cluster canaries"):
  canary-good, canary-bad (`--only canary-good,canary-bad`);
see `SCENARIO_DOCS` below and the report for what each measures.

Prints a markdown report; `--write-docs` writes it into docs/BENCHMARKS.md ("## Cluster").
Only 127.0.0.1 and the lab's 198.18.0.0/15 addresses are used. Every process started here is
stopped by pid (etcd, the inside client) or by killing everything in the lab's namespaces
(daemons, data planes, shims, JVMs), and the namespaces, veths and bridge are removed at the
end, on Ctrl-C and on errors too.
"""

import argparse
import datetime
import fcntl
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import docsection  # noqa: E402 (bench/docsection.py)
SECTION = "## Cluster"

HOSTS = 3
INSTANCES = 4
LISTEN = 8080                 # the app's `listen` port, the same on every host (own netns each)
APP_PORTS = (9100, 9119)      # its instances' port range, inside each host
JVM_OPTS = '["-Xmx48m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k"]'
JAR = os.path.join(ROOT, "fixtures", "app", "build", "fixture-app.jar")

LOCK_DIR = "/run/jarfleet-netlab"   # the netlab's index locks (crates/testkit/src/netlab/index.rs)
FIRST_INDEX, INDEXES = 400, 512
REQUEST_TIMEOUT = 10.0              # a request unanswered this long is a failure
POLL = 0.1                          # `cluster nodes` is polled this often

# Failure handling (docs/BENCHMARKS.md "## Cluster"), the default; and an operator's actions
# ("## Cluster operations"), run with `--only`.
FAILURES = ["host-kill", "link-cut", "scheduler-kill", "etcd-leader-kill", "etcd-down", "freeze",
            "partition"]
OPERATIONS = ["drain"]
# A new release across the hosts ("## Cluster rollouts").
ROLLOUTS = ["rollout", "rollout-scheduler-kill"]
# A canary across the hosts ("## Cluster canaries").
CANARIES = ["canary-good", "canary-bad"]
SCENARIOS = FAILURES + OPERATIONS + ROLLOUTS + CANARIES
SECTIONS = {SECTION: FAILURES, "## Cluster operations": OPERATIONS, "## Cluster rollouts": ROLLOUTS,
            "## Cluster canaries": CANARIES}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def now():
    """Wall-clock seconds: the daemons' event timestamps are wall-clock ms, and every namespace
    shares the clock, so every instant here is wall-clock too."""
    return time.time()


class Interrupted(BaseException):
    """SIGTERM / SIGHUP: unwinds like Ctrl-C so that every `finally` cleans up."""


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# ---------------------------------------------------------------------------------------------
# Load: keep-alive GET clients. Used in this process (root namespace) and, with
# `--inside-client`, in a process started inside a host's namespace.

class Load:
    """`threads` keep-alive clients of http://ADDR/, each paced at `rate` requests a second (0 =
    as fast as answered); every request logged as (sent, ended, ok, error)."""

    def __init__(self, addr, threads=2, rate=100.0, name="", posts=False):
        self.addr = addr
        self.name = name
        self.rate = rate
        self.posts = posts
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.log = []
        self.ok = 0
        self.failed = 0
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    @staticmethod
    def still_open(s):
        """Whether a kept-alive connection can be reused: the server has not closed it."""
        try:
            s.setblocking(False)
            try:
                s.recv(1, socket.MSG_PEEK)
                return False  # closed (b"") or bytes nobody asked for: not reusable
            except BlockingIOError:
                return True
            finally:
                s.setblocking(True)
                s.settimeout(REQUEST_TIMEOUT)
        except OSError:
            return False

    @staticmethod
    def exchange(s, post=False):
        if post:
            s.sendall(b"POST / HTTP/1.1\r\nHost: web\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 11\r\n\r\nhello world")
        else:
            s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            b = s.recv(65536)
            if not b:
                raise ConnectionError("closed before a complete head" if buf else "closed before any byte")
            buf += b
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, reusable = 0, True
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            k, v = k.strip().lower(), v.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"connection" and v == b"close":
                reusable = False
        while len(body) < length:
            b = s.recv(65536)
            if not b:
                raise ConnectionError("closed inside the body")
            body += b
        if status != 200 or not body.startswith(b"hello from"):
            raise ValueError(f"{status} {body[:60]!r}")
        return reusable

    def client(self):
        s = None
        gap = 1.0 / self.rate if self.rate > 0 else 0.0
        due = time.monotonic() + random.random() * gap
        while not self.stop_flag.is_set():
            if gap:
                wait = due - time.monotonic()
                if wait > 0:
                    self.stop_flag.wait(wait)
                    if self.stop_flag.is_set():
                        break
                due = max(due + gap, time.monotonic() - gap)
            if s is not None and not self.still_open(s):
                s.close()
                s = None
            sent = now()
            try:
                if s is None:
                    s = socket.create_connection(self.addr, timeout=REQUEST_TIMEOUT)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                post = self.posts and random.random() < 0.5
                reusable = self.exchange(s, post)
                ok, err = True, None
            except (OSError, ValueError, IndexError) as e:
                ok, err = False, f"{type(e).__name__}: {e}"
                reusable = False
            if not reusable and s is not None:
                s.close()
                s = None
            with self.lock:
                self.log.append((sent, now(), ok, err))
                if ok:
                    self.ok += 1
                else:
                    self.failed += 1
            if not ok:
                time.sleep(0.01)  # a refused connect must not spin
        if s is not None:
            s.close()

    def answered(self):
        with self.lock:
            return self.ok

    def wait_answers(self, n, timeout=60.0):
        start = self.answered()
        deadline = time.monotonic() + timeout
        while self.answered() < start + n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"load through {self.name}: not {n} answers in {timeout:.0f} s "
                                   f"({self.failed} failed; {counts(self.entries(), 0, 1e12)[3][:3]})")
            time.sleep(0.05)

    def finish(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT + 5)
        return self

    def entries(self):
        with self.lock:
            return list(self.log)


def window(log, a, b):
    """The entries of a request log sent in [a, b)."""
    return [e for e in log if a <= e[0] < b]


def counts(log, a, b):
    """(answered, failed, slowest answer in s, first failures) of the requests sent in [a, b)."""
    w = window(log, a, b)
    ok = [e for e in w if e[2]]
    bad = [e for e in w if not e[2]]
    slowest = max((e[1] - e[0] for e in ok), default=0.0)
    return len(ok), len(bad), slowest, [(round(e[0] - a, 3), e[3]) for e in bad[:5]]


def inside_client(args):
    """`--inside-client 127.0.0.1:PORT --out FILE`: a Load in this (namespaced) process until
    SIGTERM; its progress in FILE.progress every 0.5 s, its whole log in FILE at the end."""
    host, port = args.inside_client.rsplit(":", 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    load = Load((host, int(port)), threads=args.threads, rate=args.rate, name="inside")

    def dump(path, data):
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    while not stop.wait(0.5):
        dump(args.out + ".progress", {"ok": load.ok, "failed": load.failed})
    load.finish()
    dump(args.out, {"ok": load.ok, "failed": load.failed, "log": load.entries()})


# ---------------------------------------------------------------------------------------------
# The network lab (the same names, addresses, locks and teardown as crates/testkit/src/netlab).

def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def ip_batch(lines, netns=None):
    with tempfile.NamedTemporaryFile("w", suffix=".ip", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    try:
        ip(*(["-n", netns] if netns else []), "-batch", path)
    finally:
        os.unlink(path)


def netns_pids(ns):
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=20)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def kill_netns(ns, deadline=20.0):
    """SIGKILLs every process in namespace `ns`, again until none is left (a host killed
    outright). Returns the instant of the first signal."""
    me = os.getpid()
    first = None
    until = time.monotonic() + deadline
    while True:
        pids = [p for p in netns_pids(ns) if p != me]
        if not pids:
            return first or now()
        if time.monotonic() > until:
            raise RuntimeError(f"processes {pids} still in {ns} after {deadline:.0f} s of SIGKILL")
        if first is None:
            first = now()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


class Lab:
    """A claimed lab index and, between build() and remove(), its bridge, namespaces, veths."""

    def __init__(self, hosts):
        self.hosts = hosts
        os.makedirs(LOCK_DIR, exist_ok=True)
        self.lock_fd, self.index = None, None
        span = INDEXES - FIRST_INDEX
        start = random.randrange(span)
        for step in range(span):
            index = FIRST_INDEX + (start + step) % span
            fd = os.open(os.path.join(LOCK_DIR, f"{index}.lock"), os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.lock_fd, self.index = fd, index
            break
        if self.index is None:
            raise SystemExit(f"every lab index from {FIRST_INDEX} to {INDEXES - 1} is locked in {LOCK_DIR}")
        i = self.index
        self.bridge = f"jfbr{i}"
        hi, lo = divmod(i, 256)
        self.net = f"198.{18 + hi}.{lo}"
        self.bridge_ip = f"{self.net}.1"
        self.mac = lambda last: f"02:4a:66:{hi:02x}:{lo:02x}:{last:02x}"
        self.netns = [f"jf{i}h{n}" for n in range(hosts)]
        self.veth = [f"jf{i}v{n}" for n in range(hosts)]
        self.ips = [f"{self.net}.{n + 2}" for n in range(hosts)]
        self.built = False
        self.remove()  # what an earlier holder of the index left

    def build(self):
        perm = lambda addr, mac, dev: f"neigh replace {addr} lladdr {mac} dev {dev} nud permanent"
        root = [f"link add {self.bridge} address {self.mac(1)} type bridge",
                f"addr add {self.bridge_ip}/24 dev {self.bridge}",
                f"link set {self.bridge} up"]
        for n in range(self.hosts):
            root += [f"netns add {self.netns[n]}",
                     f"link add {self.veth[n]} type veth peer name eth0 address {self.mac(n + 2)} netns {self.netns[n]}",
                     f"link set {self.veth[n]} master {self.bridge} up",
                     perm(self.ips[n], self.mac(n + 2), self.bridge)]
        self.built = True
        ip_batch(root)
        for n in range(self.hosts):
            inside = ["link set lo up", f"addr add {self.ips[n]}/24 dev eth0", "link set eth0 up",
                      perm(self.bridge_ip, self.mac(1), "eth0")]
            inside += [perm(self.ips[m], self.mac(m + 2), "eth0") for m in range(self.hosts) if m != n]
            ip_batch(inside, self.netns[n])

    def cut(self, n):
        ip("link", "set", "dev", self.veth[n], "down")

    def heal(self, n):
        ip("link", "set", "dev", self.veth[n], "up")

    def kill_host(self, n):
        return kill_netns(self.netns[n])

    def remove(self):
        """Everything of this index: processes, namespaces, veths, bridge (exact names only)."""
        i = self.index
        ours_ns = re.compile(rf"^jf{i}h\d+$")
        ours_link = re.compile(rf"^(jfbr{i}|jf{i}v\d+)$")
        names = [l.split()[0] for l in ip("netns", "list").splitlines() if l.strip()]
        names = [n for n in names if ours_ns.match(n)]
        for ns in names:
            kill_netns(ns)
        links = [l.split(": ")[1].split("@")[0] for l in ip("-o", "link", "show").splitlines() if ": " in l]
        links = [l for l in links if ours_link.match(l)]
        for link in links:
            if link != self.bridge:
                ip("link", "del", "dev", link, check=False)
        for ns in names:
            ip("netns", "del", ns, check=False)
        if self.bridge in links:
            ip("link", "del", "dev", self.bridge, check=False)
        self.built = False

    def release(self):
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


# ---------------------------------------------------------------------------------------------
# Ports in the root namespace (for etcd), claimed like crates/testkit/src/ports.rs.

class Ports:
    def __init__(self):
        self.dir = os.path.join(tempfile.gettempdir(), "jarfleet-test-ports")
        os.makedirs(self.dir, exist_ok=True)
        self.held = []

    def claim(self, n, addrs):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            end = int(f.read().split()[0])
        for _ in range(500):
            base = random.randrange(10000, end - n)
            fds = []
            for port in range(base, base + n):
                fd = os.open(os.path.join(self.dir, str(port)), os.O_CREAT | os.O_WRONLY, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    break
                fds.append(fd)
                if not all(self.bindable(a, port) for a in addrs):
                    break
            if len(fds) == n and all(self.bindable(a, p) for a in addrs for p in range(base, base + n)):
                self.held += fds
                return list(range(base, base + n))
            for fd in fds:
                os.close(fd)
        raise SystemExit("no free run of ports for etcd")

    @staticmethod
    def bindable(addr, port):
        with socket.socket() as s:
            try:
                s.bind((addr, port))
                return True
            except OSError:
                return False


# ---------------------------------------------------------------------------------------------
# etcd: three members on the bridge address (like crates/testkit/src/etcd_cluster).

def http_call(addr, method, path, body=None, timeout=1.0):
    c = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


class Etcd:
    def __init__(self, dir, ip_, ports):
        self.ip = ip_
        self.members = []
        for i in range(3):
            self.members.append({"name": f"e{i}", "client": ports[2 * i], "peer": ports[2 * i + 1],
                                 "data": os.path.join(dir, f"e{i}"), "log": os.path.join(dir, f"e{i}.log"),
                                 "proc": None})
        self.initial = ",".join(f"{m['name']}=http://{ip_}:{m['peer']}" for m in self.members)
        self.token = f"jarfleet-bench-{os.getpid()}-{ports[0]}-{random.randrange(1 << 30)}"

    def urls(self):
        return [f"http://{self.ip}:{m['client']}" for m in self.members]

    def client_args(self, m):
        """How a member serves its clients (plain http on the bridge)."""
        return [f"--listen-client-urls=http://{self.ip}:{m['client']}",
                f"--advertise-client-urls=http://{self.ip}:{m['client']}"]

    def spawn(self, i):
        m = self.members[i]
        out = open(m["log"], "a")
        m["proc"] = subprocess.Popen(
            ["etcd", f"--name={m['name']}", f"--data-dir={m['data']}",
             *self.client_args(m),
             f"--listen-peer-urls=http://{self.ip}:{m['peer']}",
             f"--initial-advertise-peer-urls=http://{self.ip}:{m['peer']}",
             f"--initial-cluster={self.initial}", "--initial-cluster-state=new",
             f"--initial-cluster-token={self.token}", "--heartbeat-interval=100",
             "--election-timeout=1000", "--logger=zap", "--log-outputs=stderr"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()

    def start(self):
        for i in range(3):
            self.spawn(i)
        return self.wait_healthy()

    def healthy(self, i):
        try:
            st, body = http_call((self.ip, self.members[i]["client"]), "GET", "/health")
            return st == 200 and '"health":"true"' in body
        except OSError:
            return False

    def wait_healthy(self, timeout=60.0):
        """Seconds until every running member is healthy."""
        t0 = time.monotonic()
        while True:
            for m in self.members:
                if m["proc"] is not None and m["proc"].poll() is not None:
                    raise RuntimeError(f"etcd {m['name']} exited: {tail(m['log'])}")
            if all(self.healthy(i) for i, m in enumerate(self.members) if m["proc"] is not None):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("etcd not healthy: " + " | ".join(tail(m["log"], 3) for m in self.members))
            time.sleep(0.02)

    def leader(self):
        """Which member leads (the one that says it leads itself in the latest term)."""
        best = None
        for i, m in enumerate(self.members):
            if m["proc"] is None:
                continue
            try:
                st, body = http_call((self.ip, m["client"]), "POST", "/v3/maintenance/status", "{}")
                j = json.loads(body)
                me, lead = str(j["header"]["member_id"]), str(j.get("leader", "0"))
                term = int(j["header"].get("raft_term", 0))
            except (OSError, ValueError, KeyError):
                continue
            if st == 200 and me == lead and lead != "0" and (best is None or term > best[1]):
                best = (i, term)
        return best[0] if best else None

    def wait_leader(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None:
                return lead
            time.sleep(0.02)
        raise RuntimeError("no etcd leader")

    def kill(self, i):
        p = self.members[i]["proc"]
        if p is not None:
            p.kill()
            p.wait()
            self.members[i]["proc"] = None

    def stop(self):
        for i in range(3):
            self.kill(i)


def tail(path, n=5):
    try:
        with open(path, errors="replace") as f:
            return " / ".join(f.read().splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# One cluster: the lab's hosts, etcd, a daemon per host, the app applied and ready.

class Cluster:
    def __init__(self, bench, dir):
        self.b = bench
        self.lab = bench.lab
        self.dir = dir
        self.names = [f"n{i}" for i in range(HOSTS)]
        self.state = [os.path.join(dir, n, "state") for n in self.names]
        self.loads = []
        self.inside = []
        self.etcd = None

    # -- set-up --

    def start(self):
        t0 = time.monotonic()
        self.lab.build()
        self.etcd = Etcd(os.path.join(self.dir, "etcd"), self.lab.bridge_ip, self.b.etcd_ports)
        os.makedirs(os.path.join(self.dir, "etcd"), exist_ok=True)
        self.etcd.start()
        endpoints = ", ".join(f'"{u}"' for u in self.etcd.urls())
        for i, n in enumerate(self.names):
            os.makedirs(os.path.join(self.dir, n), exist_ok=True)
            spec = os.path.join(self.dir, n, "node.toml")
            with open(spec, "w") as f:
                f.write(f'[daemon]\nstate_dir = "{self.state[i]}"\n\n[cluster]\nname = "bench"\n'
                        f'etcd = [{endpoints}]\nnode = "{n}"\nadvertise = "{self.lab.ips[i]}"\n')
            self.jf(i, "up", "-d", "--wait", spec, timeout=120)
        # `up -d --wait` of a node spec returns before the node has registered (its
        # `cluster.joined` comes ~50 ms later), and an apply placed before the scheduler sees
        # the third node puts 2/2/0 for good (nothing re-spreads). So: all 3 registered and
        # ready in every node's view before the apply.
        deadline = time.monotonic() + 60
        while not all(self.all_registered(i) for i in range(HOSTS)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every node registered: {[self.nodes_json(i) for i in range(HOSTS)]}")
            time.sleep(0.05)
        r = self.apply(random.randrange(HOSTS), INSTANCES)
        if not r["ok"]:
            raise RuntimeError(f"the first apply failed: {r['err']}")
        self.first_apply_s = r["s"]
        self.wait_steady()
        self.setup_s = time.monotonic() - t0
        self.baseline_ms = int(now() * 1000)

    def all_registered(self, i):
        try:
            rep = self.nodes_json(i)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            return False
        return (rep.get("leader") and len(rep["nodes"]) == HOSTS
                and all(n["state"] == "ready" for n in rep["nodes"]))

    def apps_file(self, instances, version=None, args=(), deploy=""):
        tag = abs(hash((tuple(args), deploy)))
        path = os.path.join(self.dir, f"apps-{instances}-{version}-{tag}.toml")
        more = f', "--version", "{version}"' if version else ""
        more += "".join(f', "{a}"' for a in args)
        with open(path, "w") as f:
            f.write(f'[apps.web]\nartifact = "{self.b.jar}"\ninstances = {instances}\n'
                    f'ports = "{APP_PORTS[0]}-{APP_PORTS[1]}"\nargs = ["--bind", "0.0.0.0"{more}]\n'
                    f'listen = "0.0.0.0:{LISTEN}"\njava = {{ opts = {JVM_OPTS}, fast_start = false }}\n\n'
                    f'[apps.web.health]\nhttp = "/health"\ninterval = "500ms"\n{deploy}')
        return path

    def apply(self, i, instances, version=None, args=(), deploy=""):
        t0 = now()
        r = self.jf(i, "apply", self.apps_file(instances, version, args, deploy), check=False, timeout=120)
        return {"ok": r.returncode == 0, "s": now() - t0, "err": (r.stderr or r.stdout).strip()[-400:]}

    def wait_steady(self, timeout=90.0):
        """4 ready instances, every node ready and running at least one, and every host's
        balancer answering from all 4 JVMs (so each knows the others' instances)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                rep = self.nodes_json(0)
                seen = [(n["name"], n["state"], n["ready"]) for n in rep["nodes"]]
                ok = (len(seen) == HOSTS and all(s == "ready" and r >= 1 for _, s, r in seen)
                      and sum(r for _, _, r in seen) == INSTANCES and rep.get("leader"))
                last = str(seen)
                if ok:
                    pids = set(self.jvms(range(HOSTS)).values())
                    if len(pids) == INSTANCES and all(self.pids_through(i) == pids for i in range(HOSTS)):
                        return
                    last += f"; JVMs {sorted(pids)}, through each host: " + str(
                        [sorted(self.pids_through(i)) for i in range(HOSTS)])
            except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                last = str(e)
            time.sleep(0.3)
        raise RuntimeError(f"the cluster never got steady: {last}")

    def pids_through(self, i, n=24):
        """The JVM pids that answered `GET /pid` through host i's balancer (n new connections)."""
        out = set()
        for _ in range(n):
            try:
                with socket.create_connection((self.lab.ips[i], LISTEN), timeout=3) as s:
                    s.sendall(b"GET /pid HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        b = s.recv(4096)
                        if not b:
                            break
                        data += b
                if data.startswith(b"HTTP/1.1 200"):
                    out.add(int(data.split(b"\r\n\r\n", 1)[1].strip()))
            except (OSError, ValueError):
                pass
        return out

    # -- the product's CLI, run inside a host --

    def jf(self, i, *args, timeout=30, check=True):
        env = dict(os.environ, JARFLEET_STATE=self.state[i], NO_COLOR="1")
        r = subprocess.run(["ip", "netns", "exec", self.lab.netns[i], self.b.jarfleet, *args],
                           env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"jarfleet {' '.join(args)} on {self.names[i]}: {r.returncode}: "
                               f"{r.stderr.strip()[-500:]}")
        return r

    def nodes_json(self, i):
        return json.loads(self.jf(i, "cluster", "nodes", "-o", "json").stdout)

    def status_json(self, i):
        return json.loads(self.jf(i, "status", "-o", "json").stdout)

    def events(self, i):
        out = self.jf(i, "events", "-o", "json", "-n", "100000").stdout
        return [json.loads(l) for l in out.splitlines() if l.strip()]

    def jvms(self, hosts):
        """(node, slot) → JVM pid of every instance with a JVM on these hosts."""
        out = {}
        for i in hosts:
            for app in self.status_json(i)["apps"]:
                for inst in app["instances"]:
                    if inst.get("pid"):
                        out[(self.names[i], inst["slot"])] = inst["pid"]
        return out

    def placed(self, hosts):
        """How many `cluster.placed` events these hosts recorded since the run's set-up."""
        return sum(1 for i in hosts for e in self.events(i)
                   if e["kind"] == "cluster.placed" and e["ts"] >= self.baseline_ms)

    def leader(self, i=0):
        return self.nodes_json(i).get("leader")

    def daemon_pid(self, i):
        return self.status_json(i)["daemon"]["pid"]

    # -- load --

    def load(self, i, b, posts=False):
        l = Load((self.lab.ips[i], LISTEN), threads=b.args.clients, rate=b.args.rate, name=self.names[i],
                 posts=posts)
        self.loads.append(l)
        return l

    def start_inside(self, i):
        out = os.path.join(self.dir, f"inside-{self.names[i]}.json")
        p = subprocess.Popen(["ip", "netns", "exec", self.lab.netns[i], sys.executable,
                              os.path.abspath(__file__), "--inside-client", f"127.0.0.1:{LISTEN}",
                              "--out", out, "--clients", str(self.b.args.clients),
                              "--rate", str(self.b.args.rate)],
                             stdin=subprocess.DEVNULL)
        self.inside.append(p)
        return p, out

    def inside_answered(self, out):
        try:
            with open(out + ".progress") as f:
                return json.load(f)["ok"]
        except (OSError, ValueError):
            return 0

    def stop_inside(self, p, out):
        """SIGTERM (by pid), its whole log, then gone."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=REQUEST_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        with open(out) as f:
            return json.load(f)["log"]

    # -- teardown --

    def close(self):
        for l in self.loads:
            l.stop_flag.set()
        for l in self.loads:  # while the hosts still answer: nothing waits for a timeout
            l.finish()
        for p in self.inside:
            if p.poll() is None:
                p.kill()
            p.wait()
        for ns in self.lab.netns:
            try:
                kill_netns(ns)
            except RuntimeError as e:
                log(f"  teardown: {e}")
        if self.etcd:
            self.etcd.stop()
        self.lab.remove()


# ---------------------------------------------------------------------------------------------
# Waiting and observing.

def poll_nodes(c, seer, t0, until, timeout=60.0):
    """Polls `cluster nodes -o json` on host `seer` every POLL s from instant t0 until
    `until(report) -> bool`; the seconds from t0 to the first report that satisfied it (its
    answer's arrival), or None on timeout. `until` may record other instants itself."""
    while now() - t0 < timeout:
        tick = time.monotonic()
        try:
            rep = c.nodes_json(seer)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            rep = None
        if rep is not None and until(rep, now() - t0):
            return now() - t0
        time.sleep(max(0.0, POLL - (time.monotonic() - tick)))
    return None


def replacement_watch(c, seer, victim, t0, timeout=60.0, leader_too=False):
    """Seconds from t0 until `seer` shows `victim` down (`down_s`) and the others with 4 ready
    instances (`ready_elsewhere_s`) (and, with leader_too, a scheduler other than the victim)."""
    got = {}

    def until(rep, t):
        nodes = {n["name"]: n for n in rep["nodes"]}
        v = nodes.get(victim)
        if v is not None and v["state"] == "down":
            got.setdefault("down_s", t)
        if rep.get("leader") and rep["leader"] != victim:
            got.setdefault("leader_polled_s", t)
        others = sum(n["ready"] for name, n in nodes.items() if name != victim)
        done = "down_s" in got and others == INSTANCES
        if done:
            got.setdefault("ready_elsewhere_s", t)
        return done and (not leader_too or "leader_polled_s" in got)

    poll_nodes(c, seer, t0, until, timeout)
    return got


def first_event(c, i, kind, t0, contains=""):
    """The first event `kind` (whose message contains `contains`) host i recorded at or after
    instant t0: its delay from t0 in s, or None."""
    ts = [e["ts"] for e in c.events(i) if e["kind"] == kind and contains in e["message"]
          and e["ts"] >= t0 * 1000 - 0.5]
    return (min(ts) / 1000 - t0) if ts else None


def peer_down(c, survivors, victim, t0, timeout=30.0):
    """Seconds from t0 until every survivor recorded `cluster.peer-down` for the victim (the
    last of them), and per survivor; None when one never did within `timeout`."""
    per = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in survivors:
            if c.names[i] not in per:
                d = first_event(c, i, "cluster.peer-down", t0, f"node {victim} ")
                if d is not None:
                    per[c.names[i]] = d
        if len(per) == len(survivors):
            return max(per.values()), per
        time.sleep(0.2)
    return None, per


def spurious(c, hosts, t0):
    """peer-down / lease-lost events recorded after set-up but before the fault at t0: a
    cluster that flapped while nothing was wrong."""
    out = []
    for i in hosts:
        for e in c.events(i):
            if (e["kind"] in ("cluster.peer-down", "cluster.lease-lost", "cluster.unreachable")
                    and c.baseline_ms <= e["ts"] < t0 * 1000):
                out.append(f"{c.names[i]}: {e['kind']} {e['message'][:80]}")
    return out


def restarted(before, after):
    """Instances of `before` whose JVM is gone or another one now."""
    return sorted(f"{k[0]}/{k[1]}" for k, pid in before.items() if after.get(k) != pid)


def wait_all_ready(c, hosts, timeout=60.0):
    """Until every node is `ready` in host hosts[0]'s view."""
    def until(rep, _t):
        return all(n["state"] == "ready" for n in rep["nodes"]) and len(rep["nodes"]) == HOSTS
    return poll_nodes(c, hosts[0], now(), until, timeout)


def load_figures(fig, loads, a, b, key="failed"):
    """Adds failed requests (sum over `loads`, sent in [a, b)), answered, slowest, and the
    first failures per host to `fig`."""
    total_ok = total_bad = 0
    slowest = 0.0
    for l in loads:
        ok, bad, slow, first = counts(l.entries(), a, b)
        total_ok += ok
        total_bad += bad
        slowest = max(slowest, slow)
        if bad:
            fig.setdefault("_failures", []).append(f"{key} through {l.name}: {bad} ({first})")
    fig[key] = total_bad
    fig[key.replace("failed", "answered")] = total_ok
    fig[key.replace("failed", "slowest_s")] = slowest


def warm(loads, n=30):
    for l in loads:
        l.wait_answers(n)
    time.sleep(1.0)


# ---------------------------------------------------------------------------------------------
# Scenarios. Each gets a steady cluster and returns its figures (keys as in FIGURES).

def host_loss(c, b, how):
    """host-kill / link-cut / scheduler-kill: a host lost, its slots re-placed."""
    fig = {}
    leader = c.leader()
    if how == "scheduler-kill":
        victim = c.names.index(leader)
    else:
        victim = random.choice([i for i in range(HOSTS) if c.names[i] != leader])
    vname = c.names[victim]
    survivors = [i for i in range(HOSTS) if i != victim]
    fig["_victim"] = f"{vname}" + (" (scheduler)" if vname == leader else "")
    loads = [c.load(i, b) for i in survivors]
    warm(loads)
    pre = now()
    if how == "link-cut":
        t0 = now()
        c.lab.cut(victim)
    else:
        t0 = c.lab.kill_host(victim)
    seer = random.choice(survivors)
    got = replacement_watch(c, seer, vname, t0, leader_too=(how == "scheduler-kill"))
    fig["down_s"] = got.get("down_s")
    fig["ready_elsewhere_s"] = got.get("ready_elsewhere_s")
    fig["peer_down_s"], per = peer_down(c, survivors, vname, t0)
    fig["_peer_down_per_node"] = per
    if how == "scheduler-kill":
        # The new scheduler's own event is exact; the poll of `cluster nodes` is the cross-check.
        ds = [first_event(c, i, "cluster.leader", t0, "is the scheduler") for i in survivors]
        ds = [d for d in ds if d is not None]
        fig["new_scheduler_s"] = min(ds) if ds else None
        fig["_new_scheduler_polled_s"] = got.get("leader_polled_s")
    time.sleep(2.0)
    end = now()
    load_figures(fig, loads, pre, end)
    fig["_spurious"] = spurious(c, survivors, pre)
    if how != "link-cut":
        return fig

    # The heal: the host comes back, finds its slots placed elsewhere, drains its copies.
    after_cut = c.jvms(survivors)
    t_heal = now()
    c.lab.heal(victim)
    heal_load = c.load(victim, b)
    drained = None
    deadline = t_heal + 90
    while now() < deadline:
        try:
            if not c.jvms([victim]):
                drained = now() - t_heal
                break
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            pass
        time.sleep(POLL)
    fig["heal_drained_s"] = drained
    time.sleep(2.0)
    load_figures(fig, loads + [heal_load], t_heal, now(), key="heal_failed")
    after = c.jvms(range(HOSTS))
    fig["heal_restarted"] = len(restarted(after_cut, after))
    fig["heal_instances"] = len(after)
    if fig["heal_restarted"]:
        fig.setdefault("_failures", []).append(f"restarted at the heal: {restarted(after_cut, after)}")
    return fig


def etcd_leader_kill(c, b):
    fig = {}
    hosts = list(range(HOSTS))
    before = c.jvms(hosts)
    placed_before = c.placed(hosts)
    loads = [c.load(i, b) for i in hosts]
    warm(loads)
    pre = now()
    lead = c.etcd.wait_leader()
    fig["_etcd_leader"] = c.etcd.members[lead]["name"]
    t0 = now()
    c.etcd.kill(lead)
    # An apply right after the leader died: 4 → 5 instances, from a random host.
    r = c.apply(random.randrange(HOSTS), INSTANCES + 1)
    fig["apply_s"] = r["s"]
    fig["apply_healthy_s"] = c.first_apply_s
    fig["apply_refused"] = 0 if r["ok"] else 1
    fig["apply_attempts"] = 1
    if not r["ok"]:
        # Refused ("nothing was applied"): again once a second, as its hint says, until it goes.
        fig.setdefault("_failures", []).append(f"apply {r['s']:.2f} s after the kill refused: {r['err']}")
        while not r["ok"] and fig["apply_attempts"] < 20:
            time.sleep(1)
            fig["apply_attempts"] += 1
            r = c.apply(random.randrange(HOSTS), INSTANCES + 1)
        if not r["ok"]:
            fig["apply_attempts"] = None
    seer = random.randrange(HOSTS)
    fig["new_slot_ready_s"] = poll_nodes(
        c, seer, t0, lambda rep, _t: sum(n["ready"] for n in rep["nodes"]) == INSTANCES + 1)
    # Two lease lifetimes from the kill, under load: no node may look anything but ready.
    not_ready = 0
    while now() - t0 < 12.0:
        for i in hosts:
            try:
                rep = c.nodes_json(i)
                not_ready += sum(1 for n in rep["nodes"] if n["state"] != "ready")
            except (RuntimeError, ValueError, subprocess.TimeoutExpired):
                pass
        time.sleep(0.5)
    fig["nodes_seen_not_ready"] = not_ready
    after = c.jvms(hosts)
    fig["restarted"] = len(restarted(before, after))
    fig["replaced"] = c.placed(hosts) - placed_before - 1
    end = now()
    load_figures(fig, loads, pre, end)
    fig["member_back_s"] = restart_member(c.etcd, lead)
    fig["_spurious"] = spurious(c, hosts, pre)
    return fig


def restart_member(etcd, i):
    t0 = time.monotonic()
    etcd.spawn(i)
    deadline = time.monotonic() + 60
    while not etcd.healthy(i):
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd member {i} not healthy again: {tail(etcd.members[i]['log'])}")
        time.sleep(0.05)
    return time.monotonic() - t0


def etcd_down(c, b):
    fig = {}
    hosts = list(range(HOSTS))
    before = c.jvms(hosts)
    placed_before = c.placed(hosts)
    loads = [c.load(i, b) for i in hosts]
    warm(loads)
    pre = now()
    t0 = now()
    for i in range(3):
        c.etcd.kill(i)
    # An apply during the outage is refused, saying nothing was applied.
    time.sleep(2.0)
    r = c.apply(random.randrange(HOSTS), INSTANCES + 1)
    fig["outage_apply_refused_ok"] = 0 if (not r["ok"] and "nothing was applied" in r["err"]) else 1
    if fig["outage_apply_refused_ok"]:
        fig.setdefault("_failures", []).append(f"apply during the outage: ok={r['ok']} {r['err']}")
    last_log = 0.0
    while now() - t0 < b.args.etcd_down_secs:
        if now() - last_log > 30:
            log(f"    etcd down for {now() - t0:.0f} of {b.args.etcd_down_secs} s; answered so far "
                f"{sum(l.answered() for l in loads)}, failed {sum(l.failed for l in loads)}")
            last_log = now()
        time.sleep(0.5)
    during = c.jvms(hosts)
    fig["restarted_during"] = len(restarted(before, during))
    t_back = now()
    load_figures(fig, loads, pre, t_back)
    # All three members at once (one alone cannot become healthy).
    for i in range(3):
        c.etcd.spawn(i)
    fig["etcd_healthy_s"] = c.etcd.wait_healthy()
    attempts, t_apply = 0, now()
    while True:
        attempts += 1
        r = c.apply(random.randrange(HOSTS), INSTANCES + 1)
        if r["ok"] or now() - t_apply > 60:
            break
        time.sleep(1.0)
    fig["apply_after_attempts"] = attempts if r["ok"] else None
    fig["apply_after_s"] = now() - t_apply if r["ok"] else None
    if attempts > 1 or not r["ok"]:
        fig.setdefault("_failures", []).append(f"apply after etcd came back: {attempts} attempts, last: {r['err']}")
    seer = random.randrange(HOSTS)
    fig["new_slot_ready_s"] = poll_nodes(
        c, seer, t_apply, lambda rep, _t: sum(n["ready"] for n in rep["nodes"]) == INSTANCES + 1, 90)
    time.sleep(2.0)
    after = c.jvms(hosts)
    fig["restarted_after"] = len(restarted(before, after))
    fig["replaced"] = c.placed(hosts) - placed_before - 1
    load_figures(fig, loads, t_back, now(), key="after_failed")
    fig["_spurious"] = spurious(c, hosts, pre)
    return fig


def freeze(c, b):
    """A daemon frozen 3 s, then (once all is quiet again) a host's link cut 3 s."""
    fig = {}
    hosts = list(range(HOSTS))
    leader = c.leader()
    loads = {i: c.load(i, b) for i in hosts}
    warm(loads.values())

    def settle():
        wait_all_ready(c, hosts)
        time.sleep(7.0)  # past a whole lease: anything that was to expire has

    # 1. SIGSTOP of one daemon (its JVMs and data plane run on) for 3 s.
    target = random.randrange(HOSTS)
    fig["_frozen"] = c.names[target] + (" (scheduler)" if c.names[target] == leader else "")
    before = c.jvms(hosts)
    placed_before = c.placed(hosts)
    pid = c.daemon_pid(target)
    pre = first_fault = now()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    settle()
    load_figures(fig, list(loads.values()), pre, now(), key="freeze_failed")
    fig["freeze_restarted"] = len(restarted(before, c.jvms(hosts)))
    fig["freeze_replaced"] = c.placed(hosts) - placed_before

    # 2. One host's link down for 3 s (its clients from outside are paused: nothing reaches it).
    target = random.randrange(HOSTS)
    fig["_cut"] = c.names[target] + (" (scheduler)" if c.names[target] == c.leader() else "")
    before = c.jvms(hosts)
    placed_before = c.placed(hosts)
    loads[target].finish()
    others = [loads[i] for i in hosts if i != target]
    pre = now()
    c.lab.cut(target)
    try:
        time.sleep(3.0)
    finally:
        c.lab.heal(target)
    back = c.load(target, b)
    settle()
    load_figures(fig, others + [back], pre, now(), key="cut_failed")
    fig["cut_restarted"] = len(restarted(before, c.jvms(hosts)))
    fig["cut_replaced"] = c.placed(hosts) - placed_before
    fig["_spurious"] = spurious(c, hosts, first_fault)
    return fig


def partition(c, b):
    fig = {}
    leader = c.leader()
    victim = random.choice([i for i in range(HOSTS) if c.names[i] != leader])
    vname = c.names[victim]
    majority = [i for i in range(HOSTS) if i != victim]
    fig["_victim"] = vname
    loads = {i: c.load(i, b) for i in range(HOSTS)}
    inside, inside_out = c.start_inside(victim)
    warm(loads.values())
    deadline = time.monotonic() + 60
    while c.inside_answered(inside_out) < 30:
        if time.monotonic() > deadline or inside.poll() is not None:
            raise RuntimeError("the client inside the host never got 30 answers")
        time.sleep(0.1)
    victim_before = c.jvms([victim])
    loads[victim].finish()  # from outside, a cut host is unreachable: not the product's failure
    pre = now()
    t_cut = now()
    c.lab.cut(victim)
    got = replacement_watch(c, random.choice(majority), vname, t_cut)
    fig["ready_elsewhere_s"] = got.get("ready_elsewhere_s")
    while now() - t_cut < b.args.partition_secs:
        time.sleep(0.2)
    fig["victim_kept_running"] = 1 if c.jvms([victim]) == victim_before else 0
    t_heal = now()
    load_figures(fig, [loads[i] for i in majority], pre, t_heal, key="cut_failed")
    majority_jvms = c.jvms(majority)
    # The heal: back to exactly 4 instances in the cluster once the host drained its copies.
    t_heal = now()
    c.lab.heal(victim)
    back = c.load(victim, b)
    four = None
    deadline = t_heal + 120
    while now() < deadline:
        try:
            if len(c.jvms(range(HOSTS))) == INSTANCES:
                four = now() - t_heal
                break
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            pass
        time.sleep(POLL)
    fig["heal_to_four_s"] = four
    time.sleep(2.0)
    end = now()
    load_figures(fig, [loads[i] for i in majority] + [back], t_heal, end, key="heal_failed")
    inside_log = c.stop_inside(inside, inside_out)
    ok, bad, slow, first = counts(inside_log, t_cut, t_heal)
    fig["inside_answered"], fig["inside_failed"], fig["inside_slowest_s"] = ok, bad, slow
    if bad:
        fig.setdefault("_failures", []).append(f"inside {vname} during the partition: {bad} ({first})")
    ok, bad, _, first = counts(inside_log, t_heal, end)
    fig["heal_failed"] += bad
    if bad:
        fig.setdefault("_failures", []).append(f"inside {vname} after the heal: {bad} ({first})")
    fig["heal_restarted"] = len(restarted(majority_jvms, c.jvms(majority)))
    fig["moving_event"] = 1 if any(e["kind"] == "cluster.moving" and e["ts"] >= t_heal * 1000
                                   for e in c.events(victim)) else 0
    fig["_spurious"] = spurious(c, majority, pre)
    return fig


def drain(c, b):
    """`cluster drain` of the node with 2 of the 4 instances, from another node, under load."""
    fig = {}
    hosts = list(range(HOSTS))
    before = c.jvms(hosts)
    victim = max(hosts, key=lambda i: sum(1 for (n, _) in before if n == c.names[i]))
    vname = c.names[victim]
    others = [i for i in hosts if i != victim]
    moved = sorted(slot for (n, slot) in before if n == vname)
    fig["_victim"] = vname + (" (scheduler)" if vname == c.leader() else "")
    fig["moved"] = len(moved)
    placed_before = c.placed(hosts)
    loads = [c.load(i, b) for i in hosts]
    warm(loads)
    pre = now()
    t0 = now()
    r = c.jf(random.choice(others), "cluster", "drain", vname, "--deadline", "5m", timeout=400,
             check=False)
    fig["drain_s"] = now() - t0 if r.returncode == 0 else None
    if r.returncode != 0:
        fig.setdefault("_failures", []).append(f"cluster drain: {r.returncode}: {r.stderr.strip()[-300:]}")
    # Each replacement's start: its `instance.spawned` → `instance.ready` on its new node.
    starts = {}
    for i in others:
        evs = [e for e in c.events(i) if e["ts"] >= t0 * 1000 and e.get("slot") in moved]
        for slot in moved:
            sp = [e["ts"] for e in evs if e["kind"] == "instance.spawned" and e["slot"] == slot]
            rd = [e["ts"] for e in evs if e["kind"] == "instance.ready" and e["slot"] == slot]
            if sp and rd:
                starts[slot] = (min(rd) - min(sp)) / 1000
    fig["start_s"] = max(starts.values()) if len(starts) == len(moved) else None
    if fig["drain_s"] is not None and fig["start_s"] is not None:
        bar = len(moved) * fig["start_s"] + 10
        fig["drain_margin_s"] = bar - fig["drain_s"]
    time.sleep(2.0)
    load_figures(fig, loads, pre, now())
    after = c.jvms(others)
    stayed = {k: v for k, v in before.items() if k[0] != vname}
    fig["restarted"] = len(restarted(stayed, after))
    fig["ready_after"] = sum(n["ready"] for n in c.nodes_json(others[0])["nodes"])
    fig["victim_running"] = len(c.jvms([victim]))
    fig["placed"] = c.placed(hosts) - placed_before
    fig["_spurious"] = spurious(c, hosts, pre)
    return fig


def cluster_instances(c, i):
    """(node, slot) → (release, state) of `web` as host i's `status` shows the cluster."""
    st = c.status_json(i)
    return {(x["node"], x["slot"]): (x["release"], x["state"])
            for x in (st.get("cluster") or {}).get("instances", []) if x["app"] == "web"}


def settled(seen, n):
    """The one release all n instances run, ready; else None."""
    releases = {r for r, _ in seen.values()}
    if len(seen) == n and len(releases) == 1 and all(s == "ready" for _, s in seen.values()):
        return releases.pop()
    return None


ROLLOUT_INSTANCES = 6


def rollout(c, b, kill_scheduler):
    """A new release (`--version v2`) applied from a random host to 6 instances on 3 hosts (2 a
    host), under load through every host (GETs and POSTs; with `kill_scheduler`, GETs through
    the two hosts that stay up)."""
    fig = {}
    hosts = list(range(HOSTS))
    r = c.apply(random.choice(hosts), ROLLOUT_INSTANCES)
    if not r["ok"]:
        raise RuntimeError(f"scaling to {ROLLOUT_INSTANCES}: {r['err']}")
    deadline = time.monotonic() + 120
    while True:
        before = settled(cluster_instances(c, 0), ROLLOUT_INSTANCES)
        if before:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"never {ROLLOUT_INSTANCES} ready: {cluster_instances(c, 0)}")
        time.sleep(0.3)
    leader = c.leader()
    victim = c.names.index(leader) if kill_scheduler else None
    through = [i for i in hosts if i != victim]
    fig["_victim"] = leader if kill_scheduler else ""
    loads = [c.load(i, b, posts=not kill_scheduler) for i in through]
    warm(loads)
    pre = now()
    t0 = now()
    r = c.apply(random.choice(through), ROLLOUT_INSTANCES, "v2")
    if not r["ok"]:
        raise RuntimeError(f"the apply of v2: {r['err']}")
    fig["apply_s"] = r["s"]
    seer = through[0]
    order, first_new_s, killed = [], None, False
    deadline = time.monotonic() + 240
    release = None
    while time.monotonic() < deadline:
        try:
            seen = cluster_instances(c, seer)
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired):
            time.sleep(POLL)
            continue
        # Nodes with an instance not on the old release (a placed one included) at this moment.
        changing = {n for (n, _), (rel, st) in seen.items() if rel != before or st != "ready"}
        for n in sorted(changing):
            if n not in order:
                order.append(n)
        if first_new_s is None and any(rel not in (before, "") and st == "ready" for rel, st in seen.values()):
            first_new_s = now() - t0
            if kill_scheduler and not killed:
                c.lab.kill_host(victim)
                killed = True
                t_kill = now()
        got = settled(seen, ROLLOUT_INSTANCES)
        if got and got != before and (not kill_scheduler or all(n != leader for n, _ in seen)):
            release = got
            break
        time.sleep(POLL)
    fig["rollout_s"] = now() - t0 if release else None
    fig["first_node_s"] = first_new_s
    if kill_scheduler and killed and release:
        fig["after_kill_s"] = now() - t_kill
    time.sleep(2.0)
    load_figures(fig, loads, pre, now())
    # The rollout as the cluster recorded it.
    try:
        ro = [x for x in (c.status_json(seer).get("cluster") or {}).get("rollouts", []) if x["app"] == "web"]
    except (RuntimeError, ValueError, subprocess.TimeoutExpired):
        ro = []
    fig["state_done"] = 1 if ro and ro[0]["state"] == "done" else 0
    fig["nodes_cleared"] = len(ro[0]["steps"]) if ro else 0
    if not release:
        fig.setdefault("_failures", []).append(f"not settled on a new release: {cluster_instances(c, seer)}")
    return fig


# The app's canary settings in the canary scenarios: the defaults (steps 5, 25, 50, 100 %,
# `warmup_requests` 200, `min_requests` 20, `max_error_rate` 1 %, `max_p99_ratio` 1.5) with the
# issue's step time.
CANARY_DEPLOY = '[apps.web.deploy]\nstrategy = "canary"\ncanary = { step_time = "8s" }\n'


def web_rollout(c, i):
    """`web`'s rollout record as host i's `status` shows it, or None."""
    try:
        ro = [x for x in (c.status_json(i).get("cluster") or {}).get("rollouts", []) if x["app"] == "web"]
    except (RuntimeError, ValueError, subprocess.TimeoutExpired):
        return None
    return ro[0] if ro else None


def canary(c, b, bad):
    """6 instances (2 a host) of a canary app, then an apply from a random host of a new release:
    a healthy one (`--version v2`), or one that answers 30 % of its requests with a 500
    (`--error-rate 0.3`); load through all 3 hosts."""
    fig = {}
    hosts = list(range(HOSTS))
    r = c.apply(random.choice(hosts), ROLLOUT_INSTANCES, deploy=CANARY_DEPLOY)
    if not r["ok"]:
        raise RuntimeError(f"scaling to {ROLLOUT_INSTANCES}: {r['err']}")
    deadline = time.monotonic() + 180
    while True:
        before = settled(cluster_instances(c, 0), ROLLOUT_INSTANCES)
        ro = web_rollout(c, 0)
        if before and (ro is None or ro["state"] != "rolling"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"never {ROLLOUT_INSTANCES} ready: {cluster_instances(c, 0)} {ro}")
        time.sleep(0.3)
    loads = [c.load(i, b, posts=not bad) for i in hosts]
    warm(loads)
    pre = t0 = now()
    args = ("--error-rate", "0.3") if bad else ()
    r = c.apply(random.choice(hosts), ROLLOUT_INSTANCES, "v2", args=args, deploy=CANARY_DEPLOY)
    if not r["ok"]:
        raise RuntimeError(f"the apply of v2: {r['err']}")
    seer = random.choice(hosts)
    deadline = time.monotonic() + 420
    ro = None
    while time.monotonic() < deadline:
        ro = web_rollout(c, seer)
        if ro and ro["state"] != "rolling":
            got = settled(cluster_instances(c, seer), ROLLOUT_INSTANCES)
            if got and (got == before) == (ro["state"] == "rolled-back"):
                break
        time.sleep(POLL)
    end = now()
    fig["rollout_s"] = end - t0
    time.sleep(2.0)
    fig["promoted"] = 1 if ro and ro["state"] == "done" else 0
    fig["rolled_back"] = 1 if ro and ro["state"] == "rolled-back" else 0
    verdicts = (ro or {}).get("verdicts", [])
    fig["steps_judged"] = len(verdicts)
    # When the new release first had a share of the traffic: the scheduler's event.
    leader = c.names.index(c.leader())
    shared = [e["ts"] / 1000 for e in c.events(leader)
              if e["kind"] == "cluster.rollout" and "canary step 1 of" in e["message"] and e["ts"] >= t0 * 1000]
    if shared:
        fig["new_sets_ready_s"] = min(shared) - t0
    if bad:
        failed_at = sorted(e[0] for l in loads for e in l.entries() if not e[2] and e[0] >= pre)
        if shared and verdicts:
            fig["judged_s"] = verdicts[-1]["at_ms"] / 1000 - min(shared)
        if failed_at:
            fig["errors_s"] = failed_at[-1] - failed_at[0]
            sent = sum(1 for l in loads for e in l.entries() if failed_at[0] <= e[0] <= failed_at[-1])
            fig["error_pct"] = 100.0 * len(failed_at) / max(sent, 1)
        load_figures(fig, loads, pre, now())
        fig["client_errors"] = fig.pop("failed")
        # The bad canary's 500s are what this scenario expects: not listed as failures.
        fig["_failures"] = [f for f in fig.get("_failures", []) if not f.startswith("failed through")]
        if not fig["rolled_back"]:
            fig.setdefault("_failures", []).append(f"not rolled back: {ro}")
    else:
        load_figures(fig, loads, pre, now())
        if not fig["promoted"]:
            fig.setdefault("_failures", []).append(f"not promoted: {ro}")
    for v in verdicts:
        if not v["passed"] or bad:
            fig.setdefault("_failures", []).append(
                f"step {v['step']} ({v['percent']} %) {'passed' if v['passed'] else 'failed'}: {v['figures']}")
    return fig


RUNNERS = {
    "host-kill": lambda c, b: host_loss(c, b, "host-kill"),
    "link-cut": lambda c, b: host_loss(c, b, "link-cut"),
    "scheduler-kill": lambda c, b: host_loss(c, b, "scheduler-kill"),
    "etcd-leader-kill": etcd_leader_kill,
    "etcd-down": etcd_down,
    "freeze": freeze,
    "partition": partition,
    "drain": drain,
    "rollout": lambda c, b: rollout(c, b, False),
    "rollout-scheduler-kill": lambda c, b: rollout(c, b, True),
    "canary-good": lambda c, b: canary(c, b, False),
    "canary-bad": lambda c, b: canary(c, b, True),
}

# Figures where more is better: their worst run is the smallest, and the bar is a minimum.
HIGHER_IS_BETTER = {"answered", "inside_answered", "victim_kept_running", "moving_event",
                    "drain_margin_s", "state_done", "promoted", "rolled_back"}

# (key, what, bar text, bar value: the worst run must be ≤ it (≥ for HIGHER_IS_BETTER); None =
# no bar, for context)
FIGURES = {
    "host-kill": [
        ("peer_down_s", "out of every balancer: kill → the last survivor's `cluster.peer-down` (s)", "≤ 2 s", 2.0),
        ("down_s", "kill → `down` in `cluster nodes` (lease expired) (s)", "—", None),
        ("ready_elsewhere_s", "ready elsewhere: kill → `down` and 4 ready on the others (s)", "≤ 10 s", 10.0),
        ("failed", "failed requests through the survivors", "0", 0),
        ("answered", "answered requests through the survivors", "—", None),
        ("slowest_s", "slowest answered request (s)", "—", None),
    ],
    "link-cut": [
        ("peer_down_s", "out of every balancer: cut → the last survivor's `cluster.peer-down` (s)", "≤ 2 s", 2.0),
        ("down_s", "cut → `down` in `cluster nodes` (s)", "—", None),
        ("ready_elsewhere_s", "ready elsewhere: cut → `down` and 4 ready on the others (s)", "≤ 10 s", 10.0),
        ("failed", "failed requests through the survivors (cut until 2 s after ready elsewhere)", "0", 0),
        ("slowest_s", "slowest answered request (s)", "—", None),
        ("heal_drained_s", "heal → the healed host runs nothing (its copies drained) (s)", "—", None),
        ("heal_failed", "failed requests through all 3 hosts from the heal to 2 s after the drain", "0", 0),
        ("heal_restarted", "instances restarted at the heal", "0", 0),
        ("heal_instances", "instances in the cluster after the drain", "4", None),
    ],
    "scheduler-kill": [
        ("peer_down_s", "out of every balancer: kill → the last survivor's `cluster.peer-down` (s)", "≤ 2 s", 2.0),
        ("new_scheduler_s", "kill → a new scheduler (its `cluster.leader` event) (s)", "≤ 10 s", 10.0),
        ("ready_elsewhere_s", "ready elsewhere: kill → `down` and 4 ready on the others (s)", "≤ 10 s", 10.0),
        ("failed", "failed requests through the survivors", "0", 0),
        ("slowest_s", "slowest answered request (s)", "—", None),
    ],
    "etcd-leader-kill": [
        ("failed", "failed requests through all 3 hosts (kill until 12 s after)", "0", 0),
        ("restarted", "instances restarted", "0", 0),
        ("replaced", "re-placements of existing slots (`cluster.placed` beyond the apply's one)", "0", 0),
        ("nodes_seen_not_ready", "node states seen other than `ready` (polled every 0.5 s on each host for 12 s)", "0", 0),
        ("apply_refused", "the apply right after the kill refused", "0", 0),
        ("apply_attempts", "applies until one went through (once a second after a refusal)", "1", 1),
        ("apply_s", "the first apply's duration (s)", "—", None),
        ("apply_healthy_s", "for comparison: the set-up's apply, etcd healthy (s)", "—", None),
        ("new_slot_ready_s", "kill → the 5th instance ready (s)", "—", None),
        ("member_back_s", "the killed member restarted → healthy (s)", "—", None),
    ],
    "etcd-down": [
        ("failed", "failed requests through all 3 hosts while etcd was down", "0", 0),
        ("restarted_during", "instances restarted while etcd was down", "0", 0),
        ("outage_apply_refused_ok", "an apply during the outage not refused with \"nothing was applied\"", "0", 0),
        ("etcd_healthy_s", "all 3 members restarted at once → healthy (s)", "—", None),
        ("apply_after_attempts", "applies until one went through after etcd was back", "1", 1),
        ("new_slot_ready_s", "that apply → the 5th instance ready (s)", "—", None),
        ("restarted_after", "instances restarted (before the outage → after the apply)", "0", 0),
        ("replaced", "re-placements of existing slots", "0", 0),
        ("after_failed", "failed requests from etcd's return to the end", "0", 0),
    ],
    "freeze": [
        ("freeze_replaced", "daemon SIGSTOP 3 s: re-placements", "0", 0),
        ("freeze_restarted", "daemon SIGSTOP 3 s: instances restarted", "0", 0),
        ("freeze_failed", "daemon SIGSTOP 3 s: failed requests through all 3 hosts", "0", 0),
        ("cut_replaced", "link cut 3 s: re-placements", "0", 0),
        ("cut_restarted", "link cut 3 s: instances restarted", "0", 0),
        ("cut_failed", "link cut 3 s: failed requests (the 2 other hosts; the cut one after the heal)", "0", 0),
        ("cut_slowest_s", "link cut 3 s: slowest answered request (s)", "—", None),
    ],
    "partition": [
        ("inside_failed", "failed requests of the client inside the cut-off host, during the partition", "0", 0),
        ("inside_answered", "answered requests of that client during the partition", "—", None),
        ("victim_kept_running", "the cut-off host's instances ran on through the partition (1 = yes)", "1", None),
        ("ready_elsewhere_s", "cut → `down` and 4 ready on the majority (s)", "≤ 10 s", 10.0),
        ("cut_failed", "failed requests through the majority during the partition", "0", 0),
        ("heal_to_four_s", "heal → exactly 4 instances in the cluster (the copies drained) (s)", "—", None),
        ("heal_failed", "failed requests from the heal to 2 s after (all 3 hosts + inside)", "0", 0),
        ("heal_restarted", "the majority's instances restarted at the heal", "0", 0),
        ("moving_event", "`cluster.moving` recorded by the healed host (1 = yes)", "1", None),
    ],
    "drain": [
        ("drain_s", "`cluster drain` → it returns: the node runs nothing (s)", "—", None),
        ("start_s", "the slowest replacement's start: `instance.spawned` → `instance.ready` (s)", "—", None),
        ("drain_margin_s", "(instances × start + 10 s) − the drain's time (s)", "≥ 0", 0.0),
        ("failed", "failed requests through all 3 hosts (drain until 2 s after)", "0", 0),
        ("answered", "answered requests", "—", None),
        ("slowest_s", "slowest answered request (s)", "—", None),
        ("restarted", "instances on the other nodes restarted", "0", 0),
        ("placed", "placements (`cluster.placed`): one per moved instance", "2", 2),
        ("ready_after", "ready instances after the drain", "4", None),
        ("victim_running", "instances still running on the drained node", "0", 0),
    ],
    "rollout": [
        ("apply_s", "`apply` of the new release returns (s)", "—", None),
        ("first_node_s", "apply → the first instance ready on it (s)", "—", None),
        ("rollout_s", "apply → all 6 instances ready on it (s)", "—", None),
        ("failed", "failed requests, GETs and POSTs, through all 3 hosts (warm-up until 2 s after)", "0", 0),
        ("answered", "answered requests", "—", None),
        ("slowest_s", "slowest answered request (s)", "—", None),
        ("state_done", "the cluster's rollout record says `done`", "1", 1),
        ("nodes_cleared", "nodes cleared, one after the other", "3", None),
    ],
    "canary-good": [
        ("promoted", "promoted on every node (1 = yes; never rolled back for its cold JIT)", "1 in ≥ 9 of 10 runs", 1),
        ("steps_judged", "canary steps judged on the whole cluster's figures", "4", None),
        ("new_sets_ready_s", "apply → every node's new set ready, step 1 begins (s)", "—", None),
        ("rollout_s", "apply → all 6 instances ready on it, the rollout `done` (s)", "—", None),
        ("failed", "failed requests, GETs and POSTs, through all 3 hosts", "0", 0),
        ("answered", "answered requests", "—", None),
        ("slowest_s", "slowest answered request (s)", "—", None),
    ],
    "canary-bad": [
        ("rolled_back", "rolled back on every node (1 = yes)", "1", 1),
        ("judged_s", "step 1 begins (the new release gets 5 % of every balancer) → the rollback written (s)", "≤ 15 s", 15.0),
        ("errors_s", "the clients' first 500 → their last (s)", "≤ 15 s", 15.0),
        ("error_pct", "failed share of the requests sent meanwhile (%): 5 % share × 30 % = 1.5 %", "≤ 2.25 %", 2.25),
        ("client_errors", "failed requests through all 3 hosts", "—", None),
        ("answered", "answered requests", "—", None),
        ("rollout_s", "apply → all 6 back on the old release, the rollout `rolled-back` (s)", "—", None),
    ],
    "rollout-scheduler-kill": [
        ("first_node_s", "apply → the first instance ready on it, and the scheduler's host killed (s)", "—", None),
        ("after_kill_s", "kill → all 6 instances ready on it on the 2 other hosts (s)", "—", None),
        ("rollout_s", "apply → all 6 ready on it (s)", "—", None),
        ("failed", "failed requests (GETs) through the 2 other hosts", "0", 0),
        ("answered", "answered requests", "—", None),
        ("state_done", "the next scheduler's rollout record says `done`", "1", 1),
    ],
}


# ---------------------------------------------------------------------------------------------
# The benchmark.

class Bench:
    def __init__(self, args, jarfleet, jar):
        self.args = args
        self.jar = jar
        self.tmp = tempfile.mkdtemp(prefix="jfcb")
        # A copy: a rebuild of target/ during the benchmark must not change what it measures.
        self.jarfleet = os.path.join(self.tmp, "jarfleet")
        shutil.copy2(jarfleet, self.jarfleet)
        self.cluster = None
        self.lab = Lab(HOSTS)
        try:
            # etcd's ports, claimed for the whole benchmark, checked free on the bridge address.
            self.lab.build()
            self.ports = Ports()
            self.etcd_ports = self.ports.claim(6, ["127.0.0.1", self.lab.bridge_ip])
            self.lab.remove()
        except BaseException:
            self.close()
            raise

    def run_one(self, scenario, run):
        d = os.path.join(self.tmp, f"r{run}-{scenario}")
        os.makedirs(d)
        c = self.cluster = Cluster(self, d)
        t0 = time.monotonic()
        out = {"scenario": scenario, "run": run}
        try:
            c.start()
            out["setup_s"] = c.setup_s
            fig = RUNNERS[scenario](c, self)
            out.update(fig)
        except Exception as e:  # noqa: BLE001 — recorded, reported, and the next run goes on
            out["error"] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
            if self.args.keep_dir:  # the daemons' state dirs and logs, etcd's logs
                keep = os.path.join(self.args.keep_dir, os.path.basename(d))
                shutil.copytree(d, keep, dirs_exist_ok=True, ignore=not_regular)
                out["kept"] = keep
        finally:
            c.close()
            self.cluster = None
            shutil.rmtree(d, ignore_errors=True)
        out["total_s"] = time.monotonic() - t0
        return out

    def close(self):
        if self.cluster is not None:
            try:
                self.cluster.close()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup: {e}")
        try:
            self.lab.remove()
        finally:
            self.lab.release()
            shutil.rmtree(self.tmp, ignore_errors=True)


def not_regular(dir, names):
    """copytree's ignore: sockets and other special files (they cannot be copied)."""
    import stat
    return [n for n in names
            if not (stat.S_ISREG(os.lstat(os.path.join(dir, n)).st_mode)
                    or stat.S_ISDIR(os.lstat(os.path.join(dir, n)).st_mode))]


def summary_line(r):
    if "error" in r:
        return f"ERROR {r['error']}"
    keys = [k for k, *_ in FIGURES[r["scenario"]]]
    parts = []
    for k in keys:
        v = r.get(k)
        parts.append(f"{k}={'—' if v is None else (f'{v:.2f}' if isinstance(v, float) else v)}")
    extra = [f"{k[1:]}={r[k]}" for k in ("_victim", "_frozen", "_cut", "_etcd_leader") if k in r]
    if r.get("_failures"):
        extra.append(f"failures: {r['_failures']}")
    if r.get("_spurious"):
        extra.append(f"spurious before the fault: {r['_spurious']}")
    return " ".join(parts + extra)


# ---------------------------------------------------------------------------------------------
# The report.

def fmt(v, seconds):
    if v is None:
        return "not reached"
    return f"{v:.2f}" if seconds else (f"{v:g}" if isinstance(v, (int, float)) else str(v))


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()
    return (f"{cpu}, nproc {os.cpu_count()}, {mem:.1f} GiB RAM, Linux {platform.release()}; "
            f"{java[1].strip() if len(java) > 1 else 'java ?'}; {etcd[0] if etcd else 'etcd ?'}")


def report(results, args, cmd, started, elapsed, load_start, load_end, mach, version,
           section=SECTION):
    lines = [section, "",
             f"Measured {started} on {mach}; {version}. Load average (1/5/15 min) {load_start} at the start, "
             f"{load_end} at the end (the machine's 2 cores also run the 3 etcd members, 3 daemons with their "
             f"data planes, the JVMs and the Python load clients, and other work on the machine shares them). "
             f"The whole command took {elapsed / 60:.0f} min.", "",
             "Reproduce (from the repository root, as root):", "", "```sh", cmd, "```", "",
             f"Each run of each scenario gets a fresh cluster: a network lab of {HOSTS} hosts (network namespaces "
             f"on a bridge, ARP entries pinned so that a link cut is silent; lab index ≥ 400, claimed with the "
             f"tests' lock), a fresh 3-member etcd 3.4 on the bridge, `jarfleet up -d` of a node spec with "
             f"`[cluster]` (the defaults: `lease_ttl` 6 s, probes every 500 ms, 300 ms timeout) inside each "
             f"host, and the fixture app applied as `web`: {INSTANCES} instances (real JVMs, "
             f"`{JVM_OPTS}`, health `GET /health` every 500 ms, spread 2/1/1), `listen` on every host. A run "
             f"starts once every host's balancer answers from all {INSTANCES} JVMs; nothing is restored "
             f"or re-spread by hand between runs. Scenarios are shuffled within each run. Load: "
             f"{args.clients} keep-alive GET clients per reachable host, each paced at {args.rate:g} req/s "
             f"(about {args.clients * args.rate * HOSTS:g} req/s through 3 hosts), from "
             f"outside the hosts through each host's balancer (`HOST:{LISTEN}`); a failure is anything but a 200 "
             f"`hello from…` answer, a connect error, or no answer within {REQUEST_TIMEOUT:g} s. Times come from "
             f"the daemons' own event timestamps where an event marks the instant (`cluster.peer-down`, "
             f"`cluster.leader`), otherwise from polling `jarfleet cluster nodes -o json` (every {POLL * 1000:.0f} ms, "
             f"inside a surviving host: the answer's arrival, so each includes up to ~{POLL * 1000 + 50:.0f} ms of "
             f"polling) or `status -o json`. Restarts compare each instance's JVM pid (from every host's "
             f"`status -o json`) before and after; re-placements count `cluster.placed` events.", ""]
    for sc in SCENARIOS:
        rs = [r for r in results if r["scenario"] == sc]
        if not rs:
            continue
        ok = [r for r in rs if "error" not in r]
        lines += [f"**{sc}** — {SCENARIO_DOCS[sc].format(args=args)} "
                  f"{len(ok)} run{'s' if len(ok) != 1 else ''}"
                  + (f" ({len(rs) - len(ok)} more ended in an error, listed below)" if len(ok) < len(rs) else "")
                  + ".", "",
                  "| figure | bar | median | range (min–max) | worst | bar met |",
                  "|---|---|---:|---:|---:|---|"]
        for key, what, bar_text, bar in FIGURES[sc]:
            vals = [r.get(key) for r in ok if key in r]
            if not vals:
                continue
            secs = key.endswith("_s")
            reached = [v for v in vals if v is not None]
            missing = len(vals) - len(reached)
            med = statistics.median(reached) if reached else None
            lo, hi = (min(reached), max(reached)) if reached else (None, None)
            up = key in HIGHER_IS_BETTER
            worst = None if missing else (lo if up else hi)
            if bar is None:
                met = "—"
            else:
                bad = missing + sum(1 for v in reached if (v < bar if up else v > bar))
                met = "yes" if bad == 0 else f"**missed in {bad} of {len(vals)}**"
            lines.append(f"| {what} | {bar_text} | {fmt(med, secs)} | {fmt(lo, secs)}–{fmt(hi, secs)} | "
                         f"{fmt(worst, secs) if not missing else f'not reached in {missing} run(s)'} | {met} |")
        lines.append("")
        notes = []
        for r in rs:
            if "error" in r:
                notes.append(f"run {r['run'] + 1}: error: {r['error']}")
            for f in r.get("_failures", []):
                notes.append(f"run {r['run'] + 1}: {f}")
            if r.get("_spurious"):
                notes.append(f"run {r['run'] + 1}: before the fault: {'; '.join(r['_spurious'][:3])}")
        if notes:
            lines += ["Details:", ""] + [f"- {' '.join(n.split())}" for n in notes] + [""]
    host_lost = any(r["scenario"] in ("host-kill", "link-cut", "scheduler-kill") for r in results)
    if host_lost:
        lines += ["How these compare (the other rows are published figures of other systems, not measured here):", "",
              "| system | a node found dead | its work elsewhere | requests meanwhile |",
              "|---|---|---|---|",
              jarfleet_row(results),
              "| Nomad | 20–30 s (min heartbeat TTL 10 s + grace 10 s + stagger) | after that; after a leader "
              "change every node gets a 5-minute failover TTL | reconnecting allocations are often restarted |",
              "| Kubernetes | node unhealthy after 40–50 s | pods evicted after 300 s more | — |",
              "| Consul + consul-template + nginx | 4–6 s to detect, plus a reload | — | nginx passive checks keep "
              "failing requests for `fail_timeout`; Traefik's active checks run every 30 s |", ""]
    if any(r["scenario"] == "drain" for r in results):
        lines += ["For comparison (published, not measured here): Nomad's `node drain` migrates allocations in "
                  "batches (`migrate.max_parallel`): a batch's old allocations stop as their replacements are "
                  "placed, and the next batch waits for those to be healthy; Kubernetes' `kubectl drain` "
                  "evicts pods, and their replacements start after (a PodDisruptionBudget bounds how many). "
                  "Here each replacement is ready before its old copy stops.", ""]
    lines += honest_notes(results, args)
    return "\n".join(lines).rstrip() + "\n"


def jarfleet_row(results):
    """This benchmark's medians (and worst) for a host lost, in the anchors' terms."""
    lost = [r for r in results if r["scenario"] in ("host-kill", "link-cut", "scheduler-kill") and "error" not in r]

    def med_max(key):
        v = [r[key] for r in lost if r.get(key) is not None]
        return f"{statistics.median(v):.1f} s (worst {max(v):.1f} s)" if v else "—"
    failed = sum(r.get("failed", 0) for r in lost)
    return (f"| jarfleet (this benchmark, host-kill + link-cut + scheduler-kill, {len(lost)} runs) | out of every "
            f"balancer after {med_max('peer_down_s')}; `down` after {med_max('down_s')} (`lease_ttl` 6 s) | "
            f"ready on the others after {med_max('ready_elsewhere_s')} | {failed} failed in all |")


SCENARIO_DOCS = {
    "host-kill": "SIGKILL of every process in one non-scheduler host's namespace (daemon, data plane, shims, "
                 "JVMs; its kernel stays, so connects to it are refused), load through the two survivors.",
    "link-cut": "one non-scheduler host's link set down (silent: packets vanish), load through the two others; "
                "then the link back up, load through all three, until the healed host has drained its copies.",
    "scheduler-kill": "SIGKILL of everything on the scheduler's host (the `leader` of `cluster nodes`), load "
                      "through the two survivors.",
    "etcd-leader-kill": "SIGKILL of the etcd leader member under load through all 3 hosts, and right after it an "
                        "apply from a random host scaling `web` 4 → 5 (if refused, applied again once a second); "
                        "watched for 12 s (two leases) from the kill; the member restarted after.",
    "etcd-down": "all 3 etcd members SIGKILLed for {args.etcd_down_secs:g} s under load through all 3 hosts "
                 "(an apply tried 2 s in); then all 3 started at once, and an apply 4 → 5.",
    "freeze": "one random host's daemon SIGSTOPped for 3 s then SIGCONTed, then (all nodes ready again and 7 s "
              "more) one random host's link cut for 3 s and healed, 7 s more; load through all 3 hosts (the cut "
              "host's clients paused while it is cut).",
    "partition": "one non-scheduler host's link cut for {args.partition_secs:g} s: a client inside it (its "
                 "own namespace, through its own balancer) keeps asking; load through the 2 others; then "
                 "the heal, load through all 3.",
    "drain": "`jarfleet cluster drain NODE --deadline 5m`, given on another host, of the host running 2 of the "
             "4 instances, under load through all 3 hosts; the command returns once the node runs nothing "
             "(the issue's bar: within instances × start time + 10 s).",
    "rollout": "`web` scaled to 6 instances (2 a host), then an apply from a random host of a new release "
               "(`--version v2`: a new release id), under load through all 3 hosts, half the requests POSTs; "
               "the cluster takes it node by node, each node's own rolling deployment (the app's defaults: "
               "`max_surge` 1, each new instance healthy for `min_healthy` 10 s before an old one goes, so "
               "about 20 s a node with 2 instances; the cluster adds no wait of its own).",
    "canary-good": "`web` (a canary app: the default canary settings with `step_time = \"8s\"`) scaled to 6 "
                   "instances (2 a host), then an apply from a random host of a new release (`--version v2`) "
                   "under load through all 3 hosts, half the requests POSTs: every node starts its 2 new "
                   "instances beside the old ones at once; once all are ready, the scheduler gives the new "
                   "release 5, 25, 50 then 100 % of every balancer's traffic, each step judged on the sum of "
                   "every node's figures (a step whose canary has fewer than 20 warm requests in all goes on).",
    "canary-bad": "as `canary-good`, but the new release answers 30 % of its requests with a 500 "
                  "(`--error-rate 0.3`); GETs only.",
    "rollout-scheduler-kill": "as `rollout`, but once the first instance is ready on the new release, every "
                              "process on the scheduler's host is SIGKILLed; load (GETs) through the 2 others; "
                              "the next scheduler has to finish the rollout.",
}


def honest_notes(results, args):
    notes = ["How sure this is:", ""]
    by = {sc: [r for r in results if r["scenario"] == sc] for sc in SCENARIOS}
    by = {sc: rs for sc, rs in by.items() if rs}
    for sc, rs in by.items():
        ok = [r for r in rs if "error" not in r]
        if len(ok) < 5:
            notes.append(f"- {sc}: {len(ok)} run{'s' if len(ok) != 1 else ''} only, so its range says little "
                         f"about the tail.")
    # A kill is refused at once, a silent cut waits for probe timeouts: does it show?
    def vals(sc, key):
        return [r[key] for r in by.get(sc, []) if r.get(key) is not None and "error" not in r]
    for key, what in (("peer_down_s", "out of every balancer"), ("ready_elsewhere_s", "ready elsewhere")):
        k, c = vals("host-kill", key), vals("link-cut", key)
        if k and c:
            gap = statistics.median(c) - statistics.median(k)
            if max(k) >= min(c) and max(c) >= min(k):
                notes.append(f"- {what}: a silent link cut against a kill, {gap:+.2f} s by the medians, but the "
                             f"ranges overlap ({min(k):.2f}–{max(k):.2f} against {min(c):.2f}–{max(c):.2f} s): "
                             f"no difference beyond this machine's noise.")
            else:
                notes.append(f"- {what}: a silent link cut takes {gap:.2f} s longer than a kill (medians; the "
                             f"ranges, {min(k):.2f}–{max(k):.2f} and {min(c):.2f}–{max(c):.2f} s, do not overlap): "
                             f"the survivors' probes time out rather than being refused.")
    setup = [r["setup_s"] for r in results if "setup_s" in r]
    if setup:
        notes.append(f"- Setting up each cluster (lab, etcd, 3 daemons, 4 ready JVMs seen through every "
                     f"balancer) took {statistics.median(setup):.1f} s (median; {min(setup):.1f}–{max(setup):.1f}).")
    notes.append("- Times of a few hundred ms carry the polling's resolution (100 ms plus a CLI call); the "
                 "`cluster.peer-down` and `cluster.leader` figures are the daemons' own timestamps, to the ms. "
                 "Re-placement times include a JVM start on a machine whose 2 cores are busy with everything above.")
    for sc, figs in FIGURES.items():
        for key, what, _, bar in figs:
            vals = [r.get(key) for r in by.get(sc, []) if "error" not in r and r.get(key) is not None]
            if key.endswith("_s") and bar and vals and 0.8 * bar < max(vals) <= bar:
                notes.append(f"- {sc}, {what}: met, but the worst run ({max(vals):.2f}) is within 20 % of the bar.")
    notes.append("- The slowest answered requests (about 4 s) where a host goes silent are requests in flight to "
                 "its instances at the cut: with no reset, the balancer waits for its stall probe "
                 "(`stall_timeout` 3 s) and then replays them elsewhere, as docs/cluster.md says; they are "
                 "answered, not failed.")
    notes.append("- Any run listed under Details with failed requests, restarts or errors is reported as it "
                 "happened, not re-run.")
    return notes + [""]


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    ap.add_argument("--etcd-down-secs", type=float, default=300.0)
    ap.add_argument("--etcd-down-runs", type=int, default=1)
    ap.add_argument("--partition-secs", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=2, help="keep-alive clients per host")
    ap.add_argument("--rate", type=float, default=100.0, help="requests/s per client (0 = unpaced)")
    ap.add_argument("--jarfleet", help="the jarfleet binary (default: cargo build --release)")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--json", help="write every run's figures here")
    ap.add_argument("--keep-dir", help="copy a failed run's state dirs and logs here")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--inside-client", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside_client:
        args.threads = args.clients
        return inside_client(args)

    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark makes network namespaces, veths and a bridge")
    for tool in ("ip", "etcd", "java"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    only = args.only.split(",") if args.only else FAILURES
    for s in only:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s}; choose from {', '.join(SCENARIOS)}")
    if args.seed is not None:
        random.seed(args.seed)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # The command as a reader runs it: this run's private paths (a prebuilt binary, where the
    # figures and failed runs went) are left out; the version line names the binary's commit.
    shown, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--jarfleet", "--json", "--keep-dir"):
            skip = True
            continue
        if a.split("=", 1)[0] in ("--jarfleet", "--json", "--keep-dir"):
            continue
        shown.append(a)
    cmd = "python3 bench/cluster.py " + " ".join(shown)
    jarfleet = args.jarfleet
    if not jarfleet:
        subprocess.run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT, check=True, timeout=3600)
        jarfleet = os.path.join(ROOT, "target", "release", "jarfleet")
    jarfleet = os.path.abspath(jarfleet)
    if not os.path.exists(JAR):
        subprocess.run([os.path.join(ROOT, "fixtures", "app", "build.sh")], check=True, timeout=600)
    version = subprocess.run([jarfleet, "--version"], capture_output=True, text=True).stdout.strip()
    git = lambda *a: subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    if commit:
        dirty = git("status", "--porcelain", "--", "crates", "Cargo.lock", "Cargo.toml")
        version += f" (commit {commit}{', with uncommitted changes to crates/' if dirty else ''}"
        version += ", release build)" if not args.jarfleet else ", a release build of it given with --jarfleet)"

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    load_start = "/".join(f"{x:.1f}" for x in os.getloadavg())
    mach = machine()
    t_start = time.monotonic()
    results = []
    bench = None
    try:
        bench = Bench(args, jarfleet, JAR)
        log(f"lab index {bench.lab.index} ({bench.lab.net}.0/24), etcd ports {bench.etcd_ports}, dir {bench.tmp}")
        plan = []
        for run in range(args.runs):
            order = [s for s in only if s != "etcd-down" or run < args.etcd_down_runs]
            random.shuffle(order)
            plan.append(order)
        total = sum(len(o) for o in plan)
        done = 0
        for run, order in enumerate(plan):
            for sc in order:
                done += 1
                log(f"[{(time.monotonic() - t_start) / 60:5.1f} min] run {run + 1}/{args.runs} "
                    f"({done}/{total}): {sc}")
                r = bench.run_one(sc, run)
                results.append(r)
                log(f"    {r['total_s']:.0f} s (set-up {r.get('setup_s', 0):.0f} s): {summary_line(r)}")
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({str(e) or 'Ctrl-C'}): cleaning up; the report covers the runs done")
    finally:
        if bench is not None:
            bench.close()
    elapsed = time.monotonic() - t_start
    load_end = "/".join(f"{x:.1f}" for x in os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if not results:
        return 1
    for section, scenarios in SECTIONS.items():
        mine = [r for r in results if r["scenario"] in scenarios]
        if not mine:
            continue
        text = report(mine, args, cmd, started, elapsed, load_start, load_end, mach, version, section)
        print(text)
        if args.write_docs:
            docsection.replace_section(section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
