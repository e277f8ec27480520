#!/usr/bin/env python3
"""The load balancer under hostile load, through a real `jarfleet up` fleet: slowloris clients,
20,000 idle keep-alive connections, a JVM frozen by SIGSTOP.

One command (from the repository root):

    python3 bench/hostile.py [--scenarios slowloris,idle,sigstop] [--runs 3] [--jarfleet BIN] \
        [--write-docs] [--json FILE]

* builds jarfleet (release) unless --jarfleet is given, and the fixture jar
  (fixtures/app/build.sh);
* **slowloris**: 2 fixture JVMs behind `listen`. (a) unloaded: 4 keep-alive client threads GET `/`
  for --client-seconds (10 s) → p50/p99; (b) loaded: --slow-conns (2,000) connections each
  sending one byte of a never-ending request head every 10 s, while the same 4 clients measure
  again. For every slow connection: first byte → closed by the proxy, and whether it got a `408`.
  (a) and (b) alternate their order from run to run; restarts (status `restarts`, pids) counted;
* **idle**: 2 fixture JVMs; the fleet is started (`up -d`) from a process whose soft open-file
  limit is 1024; then --idle-conns (20,000) keep-alive connections each send one GET, read the
  answer and stay idle, spread over several processes, held for --hold (30 s). Meanwhile a probe
  opens a fresh connection and GETs `/` every 100 ms, `jarfleet status -o json` is timed every
  second, and the events are checked for health trouble and restarts;
* **sigstop**: 3 fixture JVMs, 8 keep-alive GET threads and 2 POST threads on `/`; one JVM gets
  SIGSTOP: time until its backend shows `ejected`, failed GETs, what each POST stuck on it got and
  when, then SIGCONT and what jarfleet did with the instance. A second pass with
  `stall_timeout = "0s"` runs only if `jarfleet validate` accepts that key;
* scenarios run interleaved (run 1 of each, then run 2 of each, ...); every figure is reported
  as median and range (min–max) over the runs;
* with --write-docs, replaces the "## Hostile clients and hung instances" section of
  docs/BENCHMARKS.md.

Every load talks only to 127.0.0.1, is bounded in time and stops by itself; every process this
script starts is stopped by it (load processes by process group; the fleet with `jarfleet down`,
then by pid if anything is left). The script raises its own RLIMIT_NOFILE soft limit to the hard
limit and spreads the idle connections over several processes.
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docsection import replace_section  # noqa: E402
from ports import free_port, free_range  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Hostile clients and hung instances"
SCENARIOS = ("slowloris", "idle", "sigstop")
# The proxy's defaults (docs/load-balancer.md) the goals refer to.
HEAD_TIMEOUT_S = 10
RESPONSE_TIMEOUT_S = 60
STALL_S = 3 + 1  # stall_timeout + stall_probe_timeout
HEALTH_EVENTS = ("instance.unhealthy", "instance.unready", "instance.unhealthy-restart",
                 "instance.exited", "instance.restart-scheduled", "instance.crash-loop",
                 "instance.start-timeout", "instance.spawned")


def log(msg):
    print(f"[hostile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, timeout=900, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout, **kw)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def loadavg():
    return "/".join(open("/proc/loadavg").read().split()[:3])


def proc_start(pid):
    """The start time of `pid` (clock ticks since boot), or None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def nofile_of(pid):
    """(soft, hard) 'Max open files' of a process, from /proc/PID/limits."""
    try:
        for line in open(f"/proc/{pid}/limits"):
            if line.startswith("Max open files"):
                f = line.split()
                return int(f[3]), int(f[4])
    except (OSError, ValueError, IndexError):
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Processes this script starts: load workers (own process group each) and the fleet's pids.
# ---------------------------------------------------------------------------------------------

WORKERS = []  # Popen objects, each the leader of its own process group
OWNED = {}  # pid -> start time, for every daemon/shim/JVM pid a fleet of ours reported
STOPPED = set()  # pids we sent SIGSTOP and have not sent SIGCONT yet
JAVA = []  # the java binary the fleet's instances run, once seen


def own(pid):
    if pid and pid not in OWNED:
        st = proc_start(pid)
        if st is not None:
            OWNED[pid] = st


def kill_owned(pid, sig):
    """Signals `pid` only if it is still the very process we recorded (same start time)."""
    if pid in OWNED and proc_start(pid) == OWNED[pid]:
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            pass
    return False


def cleanup_workers():
    for p in WORKERS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    WORKERS.clear()


def start_worker(kind, params):
    """This script in worker mode, in its own process group; stdout carries progress lines."""
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", kind,
                          "--params", json.dumps(params)],
                         stdout=subprocess.PIPE, stderr=None, text=True, start_new_session=True)
    WORKERS.append(p)
    lines = queue.Queue()

    def pump():
        for line in p.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    p.lines = lines
    return p


def worker_line(p, timeout):
    """The worker's next progress line, or None (ended, or nothing within `timeout`)."""
    try:
        return p.lines.get(timeout=timeout)
    except queue.Empty:
        return None


def worker_result(p, path, timeout):
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"worker {p.pid} did not end within {timeout:.0f} s: killing its process group")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise SystemExit(f"worker {p.pid} left no result in {path} (exit {p.returncode})")


# ---------------------------------------------------------------------------------------------
# Workers (run as `hostile.py --worker KIND --params JSON`)
# ---------------------------------------------------------------------------------------------

def worker_clients(pr):
    """Keep-alive client threads: GETs (and POSTs) on `/` until `seconds` pass or `stop_file`
    appears. Each request: [start epoch s, duration ms, method, status or -1, instance port or
    0, error]."""
    stop = threading.Event()
    out, lock = [], threading.Lock()
    port_re = re.compile(rb"on port (\d+)")

    def worker(method):
        local = []
        conn = None
        while not stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", pr["port"], timeout=pr["timeout"])
            t0, p0 = time.time(), time.perf_counter()
            try:
                if method == "POST":
                    conn.request("POST", "/", body=b"x=1",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
                else:
                    conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read()
                m = port_re.search(body)
                local.append([t0, (time.perf_counter() - p0) * 1000, method, r.status,
                              int(m.group(1)) if m else 0, ""])
                if r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is a data point
                local.append([t0, (time.perf_counter() - p0) * 1000, method, -1, 0, type(e).__name__])
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            out.extend(local)

    methods = ["GET"] * pr["gets"] + ["POST"] * pr.get("posts", 0)
    threads = [threading.Thread(target=worker, args=(m,), daemon=True) for m in methods]
    for t in threads:
        t.start()
    print("started", flush=True)
    end = time.time() + pr["seconds"] if pr.get("seconds") else time.time() + pr["max_seconds"]
    while time.time() < end and not (pr.get("stop_file") and os.path.exists(pr["stop_file"])):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(pr["timeout"] + 10)
    with lock:
        Path(pr["out"]).write_text(json.dumps(out))


SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096


async def slow_conn(pr, rec, sem, ready):
    """One slowloris connection: a byte of a head that never ends every `interval` s, until the
    proxy closes it or `cap` s pass. rec: [first byte epoch, closed after s or None, status or
    None, reset, bytes sent, error]."""
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", pr["port"]), 20)
        except Exception as e:  # noqa: BLE001
            rec.extend([None, None, None, False, 0, type(e).__name__])
            ready()
            return
    t_first = time.time()
    writer.write(SLOW_HEAD[:1])
    sent, got, closed, reset = 1, b"", None, False
    ready()
    next_send = t_first + pr["interval"]
    end = t_first + pr["cap"]
    while True:
        now = time.time()
        if now >= end:
            break
        try:
            data = await asyncio.wait_for(reader.read(4096), max(0.001, min(next_send, end) - now))
        except asyncio.TimeoutError:
            if time.time() >= next_send and time.time() < end:
                try:
                    writer.write(SLOW_HEAD[sent % len(SLOW_HEAD):sent % len(SLOW_HEAD) + 1])
                    sent += 1
                except Exception:  # noqa: BLE001 - the read below sees the close
                    pass
                next_send += pr["interval"]
            continue
        except (ConnectionResetError, BrokenPipeError, OSError):
            closed, reset = time.time() - t_first, True
            break
        if not data:
            closed = time.time() - t_first
            break
        got += data
    status = None
    m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
    if m:
        status = int(m.group(1))
    writer.transport.abort()
    rec.extend([t_first, closed, status, reset, sent, ""])


async def slowloris_main(pr):
    sem = asyncio.Semaphore(pr.get("concurrency", 500))
    recs = [[] for _ in range(pr["conns"])]
    n = [0]

    def ready():
        n[0] += 1
        if n[0] == pr["conns"]:
            print("ready", flush=True)

    await asyncio.gather(*(slow_conn(pr, r, sem, ready) for r in recs))
    Path(pr["out"]).write_text(json.dumps(recs))


async def idle_conn(pr, rec, sem, stop, opened):
    """One idle keep-alive connection: one GET, read the answer, then nothing until the proxy
    closes it or the hold ends. rec: [connected, status or None, answered after ms, closed epoch
    or None, error]."""
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", pr["port"]), pr["connect_timeout"])
        except Exception as e:  # noqa: BLE001
            rec.extend([False, None, None, time.time(), type(e).__name__])
            opened()
            return
        t0 = time.time()
        status, err = None, ""
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), pr["answer_timeout"])
            status = int(head.split(b" ", 2)[1])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if m:
                await asyncio.wait_for(reader.readexactly(int(m.group(1))), pr["answer_timeout"])
        except Exception as e:  # noqa: BLE001
            err = type(e).__name__
        answered = (time.time() - t0) * 1000
    opened()
    closed = None
    if status is not None and not err:
        reading = asyncio.ensure_future(reader.read(1))
        waiting = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if reading in done:
            closed = time.time()
        else:
            reading.cancel()
        waiting.cancel()
    else:
        closed = time.time()
    writer.transport.abort()
    rec.extend([True, status, answered, closed, err])


async def idle_main(pr):
    sem = asyncio.Semaphore(pr.get("concurrency", 256))
    stop = asyncio.Event()
    recs = [[] for _ in range(pr["conns"])]
    n = [0]

    def opened():
        n[0] += 1
        if n[0] == pr["conns"]:
            print("opened", flush=True)

    async def watch():
        while not os.path.exists(pr["stop_file"]) and time.time() < pr["deadline"]:
            await asyncio.sleep(0.2)
        stop.set()

    w = asyncio.ensure_future(watch())
    await asyncio.gather(*(idle_conn(pr, r, sem, stop, opened) for r in recs))
    w.cancel()
    Path(pr["out"]).write_text(json.dumps(recs))


def worker_main(kind, pr):
    raise_nofile()
    if kind == "clients":
        worker_clients(pr)
    elif kind == "slowloris":
        asyncio.run(slowloris_main(pr))
    elif kind == "idle":
        asyncio.run(idle_main(pr))
    else:
        raise SystemExit(f"unknown worker {kind}")


# ---------------------------------------------------------------------------------------------
# The fleet
# ---------------------------------------------------------------------------------------------

class Fleet:
    def __init__(self, jf, tmp, name, fixture, instances, nofile_soft=None, balancer=""):
        self.jf, self.fixture, self.instances = jf, fixture, instances
        self.dir = Path(tmp) / name
        self.dir.mkdir(parents=True)
        self.state = self.dir / "state"
        self.env = dict(os.environ, JARFLEET_STATE=str(self.state), NO_COLOR="1")
        self.nofile_soft = nofile_soft
        self.ports = free_range(instances * 2 + 4)
        self.lb = free_port()
        self.balancer = balancer
        self.daemon = None
        (self.dir / "jarfleet.toml").write_text(self.spec())

    def spec(self):
        extra = f"\n[apps.fx.balancer]\n{self.balancer}\n" if self.balancer else ""
        return f"""
[apps.fx]
artifact = "{self.fixture}"
instances = {self.instances}
ports = "{self.ports[0]}-{self.ports[1]}"
listen = "127.0.0.1:{self.lb}"
java = {{ opts = ["-Xmx64m", "-XX:+UseSerialGC"], fast_start = false }}

[apps.fx.health]
http = "/health"
{extra}"""

    def cmd(self, *args, check=True, timeout=60):
        return subprocess.run([self.jf, *args], cwd=self.dir, env=self.env, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def validate(self):
        r = self.cmd("validate", check=False)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def up(self):
        soft = self.nofile_soft

        def limit():
            if soft is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE,
                                   (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        subprocess.run([self.jf, "up", "-d", "--wait"], cwd=self.dir, env=self.env,
                       capture_output=True, text=True, check=True, timeout=300, preexec_fn=limit)
        self.daemon = int((self.state / "daemon.lock").read_text().split()[0])
        own(self.daemon)
        for i in self.instances_now():
            if i.get("pid") and not JAVA:
                try:  # the java the instances run (jarfleet picks the JDK, not $PATH)
                    JAVA.append(os.readlink(f"/proc/{i['pid']}/exe"))
                except OSError:
                    pass

    def status(self, timeout=10):
        return json.loads(self.cmd("status", "-o", "json", timeout=timeout).stdout)

    def app(self, st=None):
        st = st or self.status()
        return next(a for a in st["apps"] if a["name"] == "fx")

    def instances_now(self, st=None):
        inst = self.app(st)["instances"]
        for i in inst:
            own(i.get("pid"))
            own(i.get("shim_pid"))
        return inst

    def events(self):
        out = self.cmd("events", "-o", "json", "-n", "100000", timeout=30).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def unusual_log(self, limit=20):
        """The daemon log's lines other than the expected INFO lines and the proxy's descriptor
        warnings (a panic, an error), and how many of each warning there were."""
        try:
            lines = (self.state / "daemon.log").read_text(errors="replace").splitlines()
        except OSError:
            return {"unusual": [], "counts": {}}
        counts, unusual = {}, []
        for ln in lines:
            m = re.search(r"\b(WARN|ERROR)\b\s+(\S+): ([^=]*?)(?: \w+=|$)", ln)
            if m:
                key = f"{m.group(1)} {m.group(2)}: {m.group(3)[:80]}"
                counts[key] = counts.get(key, 0) + 1
                if m.group(1) == "WARN" and "Too many open files" in ln:
                    continue
            if " INFO " in ln and "panic" not in ln:
                continue
            unusual.append(ln[:300])
        return {"unusual": unusual[:limit], "counts": counts}

    def down(self):
        for pid in list(STOPPED):
            kill_owned(pid, signal.SIGCONT)
            STOPPED.discard(pid)
        if self.daemon is None:
            return
        try:
            self.cmd("down", check=False, timeout=180)
        except subprocess.TimeoutExpired:
            log("`jarfleet down` did not end within 180 s")
        # Anything of ours left 10 s after `down` returned (it should not be): by pid, and only
        # the very process we saw start.
        end = time.time() + 10
        while time.time() < end and any(proc_start(p) == st for p, st in OWNED.items()):
            time.sleep(0.2)
        for pid in list(OWNED):
            what = cmdline(pid)
            if kill_owned(pid, signal.SIGKILL):
                log(f"pid {pid} ({what}) was still there 10 s after `jarfleet down`: killed")
            OWNED.pop(pid, None)
        self.daemon = None


def find_keys(obj, pattern, path=""):
    """Every (path, value) in a JSON document whose key matches `pattern`."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            if re.search(pattern, k, re.I):
                out.append((p, v))
            out += find_keys(v, pattern, p)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += find_keys(v, pattern, f"{path}[{i}]")
    return out


def wait_ready(fleet, n, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        inst = fleet.instances_now()
        if sum(1 for i in inst if i["ready"]) >= n:
            return inst
        time.sleep(0.2)
    raise SystemExit(f"the fleet did not have {n} ready instances within {timeout} s")


def restarts_and_pids(fleet):
    inst = fleet.instances_now()
    return sum(i["restarts"] for i in inst), {i["slot"]: i["pid"] for i in inst}


def health_events(evs, since_ms):
    return [e for e in evs if e["ts"] >= since_ms and e["kind"] in HEALTH_EVENTS]


def summarize_latency(recs, method="GET"):
    ok = [r[1] for r in recs if r[2] == method and r[3] == 200]
    failed = sum(1 for r in recs if r[2] == method and r[3] != 200)
    return {"requests": len(ok) + failed, "failed": failed, "p50_ms": pct(ok, 0.5),
            "p99_ms": pct(ok, 0.99), "max_ms": max(ok) if ok else None}


# ---------------------------------------------------------------------------------------------
# Scenario 1: slowloris
# ---------------------------------------------------------------------------------------------

def clients_pass(fleet, tmp, tag, seconds, gets=4):
    out = Path(tmp) / f"clients-{tag}.json"
    w = start_worker("clients", {"port": fleet.lb, "gets": gets, "seconds": seconds, "timeout": 30,
                                 "out": str(out)})
    recs = worker_result(w, out, seconds + 60)
    return summarize_latency(recs)


def slowloris_run(jf, tmp, fixture, args, i):
    fleet = Fleet(jf, tmp, f"slowloris-{i}", fixture, 2)
    res = {}
    try:
        log(f"slowloris run {i + 1}: starting 2 JVMs behind the balancer")
        fleet.up()
        wait_ready(fleet, 2)
        r0, pids0 = restarts_and_pids(fleet)
        t_start = int(time.time() * 1000)
        clients_pass(fleet, tmp, f"warm-{i}", 3)  # warm-up of the JVMs, not measured
        order = ["unloaded", "loaded"] if i % 2 == 0 else ["loaded", "unloaded"]
        res["order"] = order
        for phase in order:
            if phase == "unloaded":
                res["unloaded"] = clients_pass(fleet, tmp, f"a-{i}", args.client_seconds)
                log(f"  unloaded: p50 {res['unloaded']['p50_ms']:.2f} ms, p99 {res['unloaded']['p99_ms']:.2f} ms, "
                    f"{res['unloaded']['requests']} requests, {res['unloaded']['failed']} failed")
                continue
            out = Path(tmp) / f"slow-{i}.json"
            cap = args.slow_cap
            w = start_worker("slowloris", {"port": fleet.lb, "conns": args.slow_conns, "interval": 10,
                                           "cap": cap, "out": str(out)})
            line = worker_line(w, 60)
            if line != "ready":
                raise SystemExit(f"slowloris worker: {line!r} instead of ready")
            t_ready = time.time()
            st = fleet.app()["balancer"]
            conns_at_start = st["connections"]
            loaded = clients_pass(fleet, tmp, f"b-{i}", args.client_seconds)
            st = fleet.app()["balancer"]
            conns_at_end = st["connections"]
            recs = worker_result(w, out, cap + 90)
            opened = [r for r in recs if r[0] is not None]
            closed = [r[1] for r in opened if r[1] is not None]
            res["loaded"] = loaded
            res["slow"] = {
                "conns": len(recs), "connected": len(opened),
                "connect_errors": sorted({r[5] for r in recs if r[0] is None}),
                "closed": len(closed), "closed_within_30s": sum(1 for c in closed if c <= 30),
                "got_408": sum(1 for r in opened if r[2] == 408),
                "other_status": sorted({r[2] for r in opened if r[2] not in (None, 408)}),
                "reset": sum(1 for r in opened if r[3]),
                "bytes_sent_max": max((r[4] for r in opened), default=0),
                "close_min_s": min(closed) if closed else None,
                "close_median_s": statistics.median(closed) if closed else None,
                "close_max_s": max(closed) if closed else None,
                "ramp_s": (t_ready - min(r[0] for r in opened)) if opened else None,
                "lb_connections_during": [conns_at_start, conns_at_end],
                "head_timeouts": fleet.app()["balancer"]["front"]["head_timeouts"],
            }
            s = res["slow"]
            log(f"  loaded: p50 {loaded['p50_ms']:.2f} ms, p99 {loaded['p99_ms']:.2f} ms, {loaded['requests']} "
                f"requests, {loaded['failed']} failed; slow connections: {s['connected']} connected, "
                f"{s['closed_within_30s']} closed ≤ 30 s, {s['got_408']} got 408, close after "
                f"{s['close_min_s']:.1f}/{s['close_median_s']:.1f}/{s['close_max_s']:.1f} s (min/median/max); "
                f"balancer connections {conns_at_start} → {conns_at_end} during the clients' pass")
        r1, pids1 = restarts_and_pids(fleet)
        evs = health_events(fleet.events(), t_start)
        res["restarts"] = r1 - r0
        res["pids_changed"] = sum(1 for s in pids0 if pids1.get(s) != pids0[s])
        res["health_events"] = [e["kind"] for e in evs]
        log(f"  restarts {res['restarts']}, pids changed {res['pids_changed']}, health events "
            f"{res['health_events'] or 'none'}")
        res["daemon_log"] = fleet.unusual_log()
        for ln in res["daemon_log"]["unusual"]:
            log(f"  daemon log: {ln}")
    finally:
        fleet.down()
        cleanup_workers()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario 2: idle connections
# ---------------------------------------------------------------------------------------------

class Probe(threading.Thread):
    """A fresh connection and GET / every `every` s: [epoch, ok, ms, status or error]."""

    def __init__(self, port, every=0.1, timeout=5):
        super().__init__(daemon=True)
        self.port, self.every, self.timeout = port, every, timeout
        self.samples, self.stop = [], threading.Event()
        self.evidence = None

    def run(self):
        nxt = time.time()
        while not self.stop.is_set():
            t0, p0 = time.time(), time.perf_counter()
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                c.close()
                self.samples.append([t0, r.status == 200, (time.perf_counter() - p0) * 1000, r.status])
            except Exception as e:  # noqa: BLE001
                self.samples.append([t0, False, (time.perf_counter() - p0) * 1000, type(e).__name__])
                if isinstance(e, ConnectionRefusedError) and self.evidence is None:
                    # Is anything listening on the port at all? (ss, at the first refusal)
                    try:
                        self.evidence = subprocess.run(
                            ["ss", "-Htln", f"sport = :{self.port}"], capture_output=True, text=True,
                            timeout=10).stdout.strip() or "no listening socket on the port"
                    except (OSError, subprocess.TimeoutExpired) as e2:
                        self.evidence = f"ss failed: {e2}"
            nxt += self.every
            self.stop.wait(max(0.0, nxt - time.time()))
            if time.time() - nxt > 1:
                nxt = time.time()


class StatusTimer(threading.Thread):
    """`jarfleet status -o json` every second, timed; the balancer's figures and the daemon's
    descriptors with it."""

    def __init__(self, fleet, every=1.0):
        super().__init__(daemon=True)
        self.fleet, self.every = fleet, every
        self.samples, self.stop = [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            t0, p0 = time.time(), time.perf_counter()
            rec = {"t": t0, "ok": False, "fds": fd_count(self.fleet.daemon)}
            try:
                r = self.fleet.cmd("status", "-o", "json", check=False, timeout=10)
                rec["ms"] = (time.perf_counter() - p0) * 1000
                rec["ok"] = r.returncode == 0
                if rec["ok"]:
                    app = self.fleet.app(json.loads(r.stdout))
                    b = app.get("balancer") or {}
                    rec.update(connections=b.get("connections"), front=b.get("front"),
                               restarts=sum(i["restarts"] for i in app["instances"]),
                               ready=sum(1 for i in app["instances"] if i["ready"]))
                else:
                    rec["err"] = (r.stderr or r.stdout).strip()[:200]
            except subprocess.TimeoutExpired:
                rec["ms"] = (time.perf_counter() - p0) * 1000
                rec["err"] = "timeout (10 s)"
            self.samples.append(rec)
            self.stop.wait(max(0.0, self.every - (time.perf_counter() - p0)))


def idle_run(jf, tmp, fixture, args, i):
    fleet = Fleet(jf, tmp, f"idle-{i}", fixture, 2, nofile_soft=1024)
    res = {}
    stop_file = Path(tmp) / f"idle-stop-{i}"
    probe = timer = None
    try:
        log(f"idle run {i + 1}: starting 2 JVMs, `up -d` with a soft open-file limit of 1024")
        fleet.up()
        wait_ready(fleet, 2)
        res["daemon_nofile"] = nofile_of(fleet.daemon)
        res["daemon_fds_before"] = fd_count(fleet.daemon)
        st = fleet.status()
        doctor = fleet.cmd("doctor", "-o", "json", check=False, timeout=30)
        found = find_keys(st, r"budget|nofile|open_?files|fd_?limit|rlimit|descriptor")
        try:
            found += [("doctor:" + p, v) for p, v in
                      find_keys(json.loads(doctor.stdout), r"budget|nofile|open_?files|fd_?limit|rlimit|descriptor")]
        except ValueError:
            pass
        res["budget_shown"] = [[p, v] for p, v in found]
        res["doctor_lines"] = [ln for ln in (doctor.stdout + doctor.stderr).splitlines()
                               if re.search(r"(?i)budget|open.?file|nofile|descriptor", ln)][:10]
        log(f"  daemon open-file limit (soft, hard) {res['daemon_nofile']}, {res['daemon_fds_before']} fds open; "
            f"budget in status/doctor: {res['budget_shown'] or 'not shown'}")
        r0, pids0 = restarts_and_pids(fleet)
        t_start = int(time.time() * 1000)
        probe, timer = Probe(fleet.lb), StatusTimer(fleet)
        probe.start()
        timer.start()
        time.sleep(2)  # the probe's baseline before the flood
        procs = args.idle_procs
        per = [args.idle_conns // procs + (1 if k < args.idle_conns % procs else 0) for k in range(procs)]
        deadline = time.time() + 240 + args.hold
        ws = []
        t_open0 = time.time()
        for k, n in enumerate(per):
            out = Path(tmp) / f"idle-{i}-{k}.json"
            ws.append((start_worker("idle", {"port": fleet.lb, "conns": n, "connect_timeout": 20,
                                             "answer_timeout": 30, "stop_file": str(stop_file),
                                             "deadline": deadline, "out": str(out)}), out))
        for w, _ in ws:
            line = worker_line(w, max(1, deadline - args.hold - time.time()))
            if line != "opened":
                log(f"  idle worker {w.pid}: {line!r} instead of opened")
        t_hold0 = time.time()
        res["open_s"] = t_hold0 - t_open0
        log(f"  {args.idle_conns} connections opened (or failed) in {res['open_s']:.1f} s; holding them {args.hold} s")
        time.sleep(args.hold)
        t_hold1 = time.time()
        stop_file.write_text("stop")
        recs = []
        for w, out in ws:
            recs += worker_result(w, out, 60)
        probe.stop.set()
        timer.stop.set()
        probe.join(10)
        timer.join(15)
        connected = [r for r in recs if r[0]]
        answered = [r for r in connected if r[1] == 200 and not r[4]]
        open_at_end = [r for r in answered if r[3] is None]
        closed_in_hold = [r for r in answered if r[3] is not None and r[3] >= t_hold0]
        res["conns"] = {
            "asked": len(recs), "connected": len(connected), "answered_200": len(answered),
            "answer_status": sorted({str(r[1]) for r in connected if r[1] != 200}),
            "errors": sorted({r[4] for r in recs if r[4]}),
            "error_count": sum(1 for r in recs if r[4]),
            "open_at_end": len(open_at_end),
            "closed_before_hold": sum(1 for r in answered if r[3] is not None and r[3] < t_hold0),
            "closed_in_hold": len(closed_in_hold),
            "answer_p50_ms": pct([r[2] for r in answered], 0.5),
            "answer_max_ms": max((r[2] for r in answered), default=None),
        }
        held = [s for s in probe.samples if t_hold0 <= s[0] <= t_hold1]
        allp = probe.samples
        lat = [s[2] for s in held if s[1]]
        res["probe"] = {
            "held": len(held), "held_ok": sum(1 for s in held if s[1]),
            "held_p50_ms": pct(lat, 0.5), "held_p99_ms": pct(lat, 0.99),
            "all": len(allp), "all_ok": sum(1 for s in allp if s[1]),
            "all_p99_ms": pct([s[2] for s in allp if s[1]], 0.99),
            "failures": sorted({str(s[3]) for s in allp if not s[1]}),
        }
        sts = timer.samples
        ok = [s for s in sts if s["ok"]]
        held_ok = [s["ms"] for s in ok if t_hold0 <= s["t"] <= t_hold1]
        res["status_held"] = {"calls": sum(1 for s in sts if t_hold0 <= s["t"] <= t_hold1), "ok": len(held_ok),
                              "p50_ms": pct(held_ok, 0.5), "max_ms": max(held_ok, default=None)}
        res["status_timeline"] = [[round(s["t"] - t_open0, 1), round(s.get("ms", 0)), s["ok"], s.get("connections"),
                                   s["fds"]] for s in sts]
        res["status"] = {
            "calls": len(sts), "ok": len(ok), "p50_ms": pct([s["ms"] for s in ok], 0.5),
            "p99_ms": pct([s["ms"] for s in ok], 0.99), "max_ms": max((s["ms"] for s in sts), default=None),
            "errors": sorted({s.get("err", "") for s in sts if not s["ok"]})[:5],
            "max_connections_seen": max((s["connections"] or 0 for s in ok), default=None),
            "connections_end_of_hold": next((s["connections"] for s in reversed(ok) if s["t"] <= t_hold1), None),
            "max_fds": max((s["fds"] or 0 for s in sts), default=None),
            "min_ready": min((s["ready"] for s in ok), default=None),
        }
        fails = [s for s in allp if not s[1]]
        res["probe_failures_at_s"] = [round(fails[0][0] - t_open0, 1), round(fails[-1][0] - t_open0, 1)] if fails else None
        res["probe_timeline"] = [[round(x[0] - t_open0, 2), x[1], round(x[2], 1), x[3]] for x in allp]
        res["probe_refused_evidence"] = probe.evidence
        failed_at = sorted(r[3] - t_open0 for r in recs if r[4] and r[3] is not None)
        res["conn_failures_at_s"] = [round(failed_at[0], 1), round(failed_at[-1], 1)] if failed_at else None
        res["daemon_log"] = fleet.unusual_log()
        front = fleet.app()["balancer"]["front"]
        res["front"] = front
        r1, pids1 = restarts_and_pids(fleet)
        all_evs = fleet.events()
        evs = health_events(all_evs, t_start)
        res["other_events"] = [f"{e['kind']}: {e['message'][:150]}" for e in all_evs
                               if e["ts"] >= t_start and e["kind"] not in HEALTH_EVENTS][:10]
        res["lb_port"] = fleet.lb
        res["restarts"] = r1 - r0
        res["pids_changed"] = sum(1 for s in pids0 if pids1.get(s) != pids0[s])
        res["health_events"] = [e["kind"] for e in evs]
        res["health_event_messages"] = [f"{e['kind']} slot {e.get('slot')}: {e['message']}" for e in evs][:10]
        c, p, s = res["conns"], res["probe"], res["status"]
        log(f"  {c['connected']} connected, {c['answered_200']} answered 200, {c['open_at_end']} still open at the "
            f"end of the hold ({c['closed_before_hold']} closed before it, {c['closed_in_hold']} during it); "
            f"errors {c['error_count']} {c['errors']}")
        log(f"  probe while held: {p['held_ok']}/{p['held']} ok, p50 {_f(p['held_p50_ms'])} ms, p99 "
            f"{_f(p['held_p99_ms'])} ms; status: {s['ok']}/{s['calls']} answered, p50 {_f(s['p50_ms'], 0)} ms, "
            f"max {_f(s['max_ms'], 0)} ms; "
            f"front {front}; daemon fds max {s['max_fds']}")
        log(f"  restarts {res['restarts']}, pids changed {res['pids_changed']}, health events "
            f"{res['health_event_messages'] or 'none'}")
        log(f"  daemon log: {res['daemon_log']['counts']}")
        if res["other_events"]:
            log(f"  other events: {res['other_events']}")
        for ln in res["daemon_log"]["unusual"]:
            log(f"  daemon log: {ln}")
        if failed_at:
            log(f"  idle connections failed from {res['conn_failures_at_s'][0]} s to {res['conn_failures_at_s'][1]} s "
                "after they began to open")
        if probe.evidence:
            log(f"  at the probe's first refused connection, listening on port {fleet.lb}: {probe.evidence}")
        if fails:
            log(f"  probe failed from {res['probe_failures_at_s'][0]} s to {res['probe_failures_at_s'][1]} s after "
                "the connections began to open")
    finally:
        for t in (probe, timer):
            if t is not None:
                t.stop.set()
        stop_file.write_text("stop")
        cleanup_workers()
        fleet.down()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario 3: SIGSTOP of one JVM
# ---------------------------------------------------------------------------------------------

def backend_of(app, port=None, bid=None):
    """The backend with this id (`app/slot#generation`), else the one on this port."""
    for b in (app.get("balancer") or {}).get("backends", []):
        if bid is not None and b.get("id") == bid:
            return b
        if bid is None and str(b.get("addr", "")).endswith(f":{port}"):
            return b
    return None


def sigstop_run(jf, tmp, fixture, args, i, stall_off=False):
    tag = "stall-off" if stall_off else "default"
    fleet = Fleet(jf, tmp, f"sigstop-{tag}-{i}", fixture, 3,
                  balancer='stall_timeout = "0s"' if stall_off else "")
    res = {"pass": tag}
    stop_file = Path(tmp) / f"sigstop-stop-{tag}-{i}"
    target = None
    try:
        log(f"sigstop run {i + 1} ({tag}): starting 3 JVMs behind the balancer")
        fleet.up()
        inst = wait_ready(fleet, 3)
        r0, _ = restarts_and_pids(fleet)
        out = Path(tmp) / f"sigstop-{tag}-{i}.json"
        w = start_worker("clients", {"port": fleet.lb, "gets": 8, "posts": 2, "max_seconds": 400,
                                     "stop_file": str(stop_file), "timeout": 90, "out": str(out)})
        worker_line(w, 30)
        time.sleep(args.warm)  # the load's warm-up, before the freeze
        victim = sorted(inst, key=lambda x: x["slot"])[0]
        pid, port, slot = victim["pid"], victim["port"], victim["slot"]
        app = fleet.app()
        b = backend_of(app, port)
        res["in_flight_before"] = b["in_flight"] if b else None
        bid = res["backend"] = b and b.get("id")
        t0 = time.time()
        if not kill_owned(pid, signal.SIGSTOP):
            raise SystemExit(f"JVM pid {pid} is not one this script saw start")
        STOPPED.add(pid)
        log(f"  t0: SIGSTOP to slot {slot}'s JVM (pid {pid}, port {port}); {res['in_flight_before']} in flight on it")
        timeline, t_ejected, first = [], None, None
        last_state = None
        while time.time() - t0 < args.cont_after:
            try:
                app = fleet.app(fleet.status(timeout=5))
            except (subprocess.TimeoutExpired, subprocess.CalledProcessError, ValueError) as e:
                timeline.append([time.time() - t0, f"status failed: {type(e).__name__}"])
                continue
            b = backend_of(app, bid=bid)
            now = time.time() - t0
            state = None if b is None else (b["ejected"], b.get("ejected_reason"), b.get("hung"),
                                            b.get("in_snapshot"), b["in_flight"])
            if state != last_state:
                timeline.append([round(now, 2), "gone" if b is None else
                                 {"ejected": b["ejected"], "reason": b.get("ejected_reason"), "hung": b.get("hung"),
                                  "in_snapshot": b.get("in_snapshot"), "in_flight": b["in_flight"]}])
                last_state = state
            if t_ejected is None and b is not None and b["ejected"]:
                t_ejected = now
                first = {"reason": b.get("ejected_reason"), "hung": b.get("hung")}
                log(f"  ejected {now:.2f} s after t0 (reason {first['reason']}, hung {first['hung']})")
            time.sleep(0.1 if t_ejected is None else 0.5)
        res["ejected_after_s"] = t_ejected
        res["ejected_first"] = first
        res["timeline"] = timeline
        stop_file.write_text("stop")
        t_cont = time.time()
        kill_owned(pid, signal.SIGCONT)
        STOPPED.discard(pid)
        res["cont_after_s"] = t_cont - t0
        log(f"  SIGCONT at t0 + {t_cont - t0:.1f} s; waiting for the clients to finish and watching the instance")
        recs = worker_result(w, out, 120)
        end_watch = time.time() + args.after_cont
        while time.time() < end_watch:
            time.sleep(1)
        gets = [r for r in recs if r[2] == "GET" and r[0] + r[1] / 1000 >= t0]
        posts = [r for r in recs if r[2] == "POST" and r[0] + r[1] / 1000 >= t0]
        res["gets_after_t0"] = len(gets)
        res["gets_failed"] = sum(1 for r in gets if r[3] != 200)
        res["gets_failed_detail"] = sorted({f"{r[3]} {r[5]}".strip() for r in gets if r[3] != 200})
        res["gets_slow"] = sum(1 for r in gets if r[1] > 1000)
        res["gets_max_ms"] = max((r[1] for r in gets), default=None)
        # A GET sent to the frozen JVM after its ejection would wait for the stall detection again.
        res["gets_held_after_eject"] = sum(1 for r in gets if t_ejected is not None and r[1] > 1000
                                           and t0 + t_ejected <= r[0] < t_cont)
        res["in_flight_max_after_eject"] = max(
            (e[1]["in_flight"] for e in timeline if isinstance(e[1], dict) and t_ejected is not None
             and e[0] >= t_ejected), default=None)
        stuck = [r for r in posts if r[1] > 2000]
        res["posts_after_t0"] = len(posts)
        res["posts_failed"] = sum(1 for r in posts if r[3] != 200)
        res["posts_stuck"] = [{"status": r[3], "after_s": round(r[1] / 1000, 2), "started_s": round(r[0] - t0, 2),
                               "error": r[5], "port": r[4]} for r in stuck]
        res["post_statuses"] = sorted({r[3] for r in posts})
        evs = [e for e in fleet.events() if e["ts"] >= t0 * 1000 - 1000 and e.get("slot") == slot]
        res["slot_events"] = [[round(e["ts"] / 1000 - t0, 2), e["kind"], e["message"][:120]] for e in evs]
        inst = fleet.instances_now()
        now_slot = next((x for x in inst if x["slot"] == slot), None)
        res["restarts"] = sum(x["restarts"] for x in inst) - r0
        res["victim_pid_after"] = now_slot and now_slot["pid"]
        res["victim_restarted"] = bool(now_slot and now_slot["pid"] != pid)
        res["victim_state_after"] = now_slot and now_slot["state"]
        restart_ev = next((e for e in evs if e["kind"] in ("instance.unhealthy-restart", "instance.exited",
                                                             "instance.spawned") and e["ts"] >= t0 * 1000), None)
        res["first_restart_event"] = restart_ev and [round(restart_ev["ts"] / 1000 - t0, 2), restart_ev["kind"]]
        log(f"  GETs after t0: {res['gets_after_t0']}, failed {res['gets_failed']} {res['gets_failed_detail']}, "
            f"> 1 s: {res['gets_slow']} (max {res['gets_max_ms']:.0f} ms), sent after the ejection and held > 1 s: "
            f"{res['gets_held_after_eject']}; in flight on it after the ejection, max {res['in_flight_max_after_eject']}")
        log(f"  POSTs stuck (> 2 s): {res['posts_stuck']}")
        log(f"  slot {slot} events after t0: {res['slot_events']}")
        log(f"  restarted: {res['victim_restarted']} (pid {pid} → {res['victim_pid_after']}, state "
            f"{res['victim_state_after']})")
        res["daemon_log"] = fleet.unusual_log()
        log(f"  daemon log: {res['daemon_log']['counts']}")
    finally:
        stop_file.write_text("stop")
        for p in list(STOPPED):
            kill_owned(p, signal.SIGCONT)
            STOPPED.discard(p)
        cleanup_workers()
        fleet.down()
    return res


def stall_key_supported(jf, tmp, fixture):
    f = Fleet(jf, tmp, "validate-stall", fixture, 3, balancer='stall_timeout = "0s"')
    ok, text = f.validate()
    return ok, text


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def mr(xs, nd=1, unit=""):
    """'median (min–max)' of the non-None values."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    f = lambda v: f"{v:.{nd}f}{unit}"  # noqa: E731
    if len(xs) == 1:
        return f(xs[0])
    return f"{f(statistics.median(xs))} ({f(min(xs))}–{f(max(xs))})"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def overlap(a, b):
    a = [x for x in a if x is not None]
    b = [x for x in b if x is not None]
    return bool(a and b and min(a) <= max(b) and min(b) <= max(a))


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    java = JAVA[0] if JAVA else (shutil.which("java") or "java")
    try:
        jv = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr.splitlines()
        jv = next((ln for ln in jv if "Runtime Environment" in ln), jv[0] if jv else "?")
    except (OSError, subprocess.TimeoutExpired):
        jv = "?"
    return (f"{cpu}, nproc {os.cpu_count()}, {mem:.1f} GiB RAM, Linux {platform.release()}; instances on {jv} "
            f"(`{os.path.realpath(java)}`, the JDK jarfleet chose)")


def markdown(R, args, meta):
    cmd = "python3 bench/hostile.py --write-docs"
    if args.scenarios != ",".join(SCENARIOS):
        cmd += f" --scenarios {args.scenarios}"
    if args.runs != 3:
        cmd += f" --runs {args.runs}"
    out = [SECTION, "",
           f"Measured {meta['date']} on {meta['machine']}; jarfleet {meta['version']} (release build); Python "
           f"{platform.python_version()} clients. Load average (1/5/15 min) {meta['load_start']} at the start, "
           f"{meta['load_end']} at the end: the clients, the daemon and the JVMs share the 2 cores, and other work "
           "on the machine (compiles) shares them too. "
           f"{len(next(iter(R.values())))} run(s) of each scenario, interleaved (run 1 of each, then run 2, …); figures "
           "are medians with the range (min–max) over the runs in brackets. Script's own open-file limit "
           f"{meta['nofile'][0]} (raised to the hard limit).", "",
           "Reproduce (from the repository root):", "", "```sh", cmd, "```", "",
           "Fleet: fixture JVMs (`fixtures/app`, `-Xmx64m -XX:+UseSerialGC`) behind one `listen` address on "
           "127.0.0.1, health check `GET /health`, every balancer setting at its default (docs/load-balancer.md: "
           "`head_timeout` 10 s, `response_timeout` 60 s, `stall_timeout` 3 s + `stall_probe_timeout` 1 s, "
           "`max_connections` 10,000; health every 5 s, 3 failures, restart after 45 s unhealthy).", ""]
    goals = []

    if "slowloris" in R:
        rs = R["slowloris"]
        s = [r["slow"] for r in rs]
        un = [r["unloaded"]["p99_ms"] for r in rs]
        lo = [r["loaded"]["p99_ms"] for r in rs]
        out += ["### Slowloris", "",
                f"2 JVMs. (a) unloaded: 4 keep-alive client threads GET `/` for {args.client_seconds} s. (b) loaded: "
                f"{args.slow_conns} connections (one asyncio process) each send one byte of a request head that "
                "never ends every 10 s, and the same 4 clients measure for "
                f"{args.client_seconds} s once every slow connection has sent its first byte. (a) and (b) alternate "
                "their order from run to run. Close time: from a slow connection's first byte to the proxy's "
                f"close, seen by the client (cut by the client after {args.slow_cap} s).", "",
                "| | unloaded | loaded |", "|---|---:|---:|",
                f"| requests (4 clients, {args.client_seconds} s) | {mr([r['unloaded']['requests'] for r in rs], 0)} | "
                f"{mr([r['loaded']['requests'] for r in rs], 0)} |",
                f"| p50 (ms) | {mr([r['unloaded']['p50_ms'] for r in rs], 2)} | {mr([r['loaded']['p50_ms'] for r in rs], 2)} |",
                f"| p99 (ms) | {mr(un, 2)} | {mr(lo, 2)} |",
                f"| failed requests | {mr([r['unloaded']['failed'] for r in rs], 0)} | {mr([r['loaded']['failed'] for r in rs], 0)} |",
                "", "| slow connections | per run | median (range) |", "|---|---|---:|",
                f"| connected | {', '.join(str(x['connected']) for x in s)} | {mr([x['connected'] for x in s], 0)} |",
                f"| closed by the proxy ≤ 30 s after the first byte | {', '.join(str(x['closed_within_30s']) for x in s)} | "
                f"{mr([x['closed_within_30s'] for x in s], 0)} |",
                f"| of them answered `408` | {', '.join(str(x['got_408']) for x in s)} | {mr([x['got_408'] for x in s], 0)} |",
                f"| first byte → closed, min (s) | {', '.join(_f(x['close_min_s']) for x in s)} | {mr([x['close_min_s'] for x in s], 2)} |",
                f"| first byte → closed, median (s) | {', '.join(_f(x['close_median_s']) for x in s)} | {mr([x['close_median_s'] for x in s], 2)} |",
                f"| first byte → closed, max (s) | {', '.join(_f(x['close_max_s']) for x in s)} | {mr([x['close_max_s'] for x in s], 2)} |",
                f"| bytes sent before the close (max) | {', '.join(str(x['bytes_sent_max']) for x in s)} | |",
                f"| balancer `connections` at the start / end of the loaded pass | "
                f"{', '.join('/'.join(str(v) for v in x['lb_connections_during']) for x in s)} | |",
                f"| instance restarts / pids changed | {', '.join(str(r['restarts']) + ' / ' + str(r['pids_changed']) for r in rs)} | |",
                ""]
        if len(rs) < 2:
            out += ["One run: no ranges to compare.", ""]
        elif overlap(un, lo):
            out += ["The p99 ranges of (a) and (b) overlap: on this machine the difference is within run-to-run "
                    "noise.", ""]
        else:
            out += [f"The p99 ranges of (a) and (b) do not overlap (loaded {'higher' if med(lo) > med(un) else 'lower'}).",
                    ""]
        total = [x["connected"] for x in s]
        closed30 = [x["closed_within_30s"] for x in s]
        ratio = [l / u for u, l in zip(un, lo) if u and l]
        goals += [
            ("slowloris", f"every slow connection closed ≤ 30 s after its first byte (`head_timeout` {HEAD_TIMEOUT_S} s)",
             f"{sum(closed30)} of {sum(total)} over {len(s)} runs; max {mr([x['close_max_s'] for x in s], 2, ' s')}",
             all(c == t for c, t in zip(closed30, total)) and all(x["connected"] == x["conns"] for x in s)),
            ("slowloris", "p99 loaded ≤ 2× unloaded (median of the runs' ratios)",
             f"{mr(lo, 2, ' ms')} vs {mr(un, 2, ' ms')}: {mr(ratio, 2, '×')}"
             + (" (the ranges overlap)" if len(rs) > 1 and overlap(un, lo) else ""),
             bool(ratio) and med(ratio) <= 2),
            ("slowloris", "no instance restarted", f"restarts {sum(r['restarts'] for r in rs)}, pids changed "
             f"{sum(r['pids_changed'] for r in rs)}", all(r["restarts"] == 0 and r["pids_changed"] == 0 for r in rs)),
        ]

    if "idle" in R:
        rs = R["idle"]
        c = [r["conns"] for r in rs]
        p = [r["probe"] for r in rs]
        st = [r["status"] for r in rs]
        fr = [r["front"] for r in rs]
        out += ["### Idle connections", "",
                f"2 JVMs; the fleet started with `jarfleet up -d` from a process whose soft open-file limit is 1024 (hard "
                f"{meta['nofile'][1]}). Then {args.idle_conns} connections over {args.idle_procs} client processes (256 "
                "opening at a time in each) each send one `GET /` (keep-alive), read the answer and stay idle; held "
                f"{args.hold} s once all were opened (or had failed). Meanwhile a probe opens a fresh connection and "
                "GETs `/` every 100 ms (5 s timeout), and `jarfleet status -o json` (the CLI process) is timed every "
                "second.", "",
                "| | per run | median (range) |", "|---|---|---:|",
                f"| daemon's open-file limit (soft/hard, `/proc/PID/limits`) | {', '.join('/'.join(map(str, r['daemon_nofile'] or ['?'])) for r in rs)} | |",
                f"| connections that got their `200` | {', '.join(str(x['answered_200']) for x in c)} | {mr([x['answered_200'] for x in c], 0)} |",
                f"| … other answers | {'; '.join(', '.join(x['answer_status']) or '–' for x in c)} | |",
                f"| connections that failed (connect or answer) | {', '.join(str(x['error_count']) for x in c)} | {mr([x['error_count'] for x in c], 0)} |",
                f"| … how they failed | {'; '.join(', '.join(x['errors']) or '–' for x in c)} | |",
                f"| opening all took (s) | {', '.join(_f(r['open_s'], 1) for r in rs)} | {mr([r['open_s'] for r in rs], 1)} |",
                f"| still open at the end of the hold | {', '.join(str(x['open_at_end']) for x in c)} | {mr([x['open_at_end'] for x in c], 0)} |",
                f"| closed by the proxy before / during the hold | {', '.join(str(x['closed_before_hold']) + ' / ' + str(x['closed_in_hold']) for x in c)} | |",
                f"| balancer `connections`, max seen / at the end of the hold | {', '.join(str(s['max_connections_seen']) + ' / ' + str(s['connections_end_of_hold']) for s in st)} | |",
                f"| `front.reclaimed` | {', '.join(str(f.get('reclaimed')) for f in fr)} | {mr([f.get('reclaimed') for f in fr], 0)} |",
                f"| `front.paused` | {', '.join(str(f.get('paused')) for f in fr)} | {mr([f.get('paused') for f in fr], 0)} |",
                f"| `front.local_errors` (503 for lack of descriptors) | {', '.join(str(f.get('local_errors')) for f in fr)} | |",
                f"| daemon's open descriptors, max seen | {', '.join(str(s['max_fds']) for s in st)} | |",
                f"| probe while held: answered 200 | {', '.join(str(x['held_ok']) + '/' + str(x['held']) for x in p)} | |",
                f"| probe while held: p50 / p99 (ms) | {', '.join(_f(x['held_p50_ms'], 1) + ' / ' + _f(x['held_p99_ms'], 1) for x in p)} | "
                f"{mr([x['held_p50_ms'] for x in p], 1)} / {mr([x['held_p99_ms'] for x in p], 1)} |",
                f"| probe over the whole run (opening included): 200 | {', '.join(str(x['all_ok']) + '/' + str(x['all']) for x in p)} | |",
                f"| … probe failures | {'; '.join(', '.join(x['failures']) or '–' for x in p)} | |",
                f"| `status` answered | {', '.join(str(s['ok']) + '/' + str(s['calls']) for s in st)} | |",
                f"| `status` while held: answered, p50 / max (ms) | {'; '.join(str(r['status_held']['ok']) + '/' + str(r['status_held']['calls']) + ', ' + _f(r['status_held']['p50_ms'], 0) + ' / ' + _f(r['status_held']['max_ms'], 0) for r in rs)} | |",
                f"| `status` over the whole run: latency p50 / max (ms) | {', '.join(_f(s['p50_ms'], 0) + ' / ' + _f(s['max_ms'], 0) for s in st)} | "
                f"{mr([s['p50_ms'] for s in st], 0)} / {mr([s['max_ms'] for s in st], 0)} |",
                f"| … `status` errors | {'; '.join(', '.join(s['errors']) or '–' for s in st)} | |",
                f"| ready instances, min seen | {', '.join(str(s['min_ready']) for s in st)} | |",
                f"| health events (`unhealthy`, restarts, exits) | {'; '.join(', '.join(r['health_events']) or 'none' for r in rs)} | |",
                f"| instance restarts / pids changed | {', '.join(str(r['restarts']) + ' / ' + str(r['pids_changed']) for r in rs)} | |",
                ""]
        if any(r.get("other_events") for r in rs):
            out[-1:-1] = [f"| other events | {'; '.join(', '.join(r.get('other_events') or []) or 'none' for r in rs)} | |"]
        if any(r.get("probe_refused_evidence") for r in rs):
            out[-1:-1] = [f"| at the probe's first refused connection, `ss -tln` on the port | "
                          f"{'; '.join(str(r.get('probe_refused_evidence')) for r in rs)} | |"]
        soft = [(r["daemon_nofile"] or [None])[0] for r in rs]
        if any(x is not None and x <= 1024 for x in soft):
            out += [f"The daemon kept the soft open-file limit it was started with ({', '.join(map(str, soft))}), "
                    "although docs/load-balancer.md says it raises it to the hard limit at start; at that limit the "
                    "proxy runs out of descriptors (`accept` or the connect to an instance fails), asks idle "
                    "connections to close (`front.reclaimed`) and answers `503` where it had accepted a client but "
                    "could not open a connection to an instance (`front.local_errors`: "
                    f"{', '.join(str(f.get('local_errors')) for f in fr)} of the idle clients' first GETs). "
                    "`front.paused` counts stops at a cap (`max_connections` or the process budget): "
                    f"{', '.join(str(f.get('paused')) for f in fr)}.", ""]
        shown = rs[0]["budget_shown"]
        out += ["Connection budget / open-file limit in `status -o json` or `doctor -o json`: " +
                (", ".join(f"`{k}` = {json.dumps(v)}" for k, v in shown) if shown else "not shown (yet)") + ".", ""]
        probe_ok = all(x["held"] and x["held_ok"] == x["held"] for x in p)
        status_ok = all(s["ok"] == s["calls"] for s in st)
        goals += [
            ("idle", "new clients keep working while the connections are held (probe: every GET answered 200)",
             "; ".join(f"{x['held_ok']}/{x['held']}" for x in p), probe_ok),
            ("idle", "`jarfleet status` answers every second", "; ".join(f"{s['ok']}/{s['calls']}, max {_f(s['max_ms'], 0)} ms" for s in st),
             status_ok),
            ("idle", "health checks keep working: no `unhealthy`/restart event, no restart",
             "; ".join(f"{len(r['health_events'])} events, {r['restarts']} restarts" for r in rs),
             all(not r["health_events"] and r["restarts"] == 0 and r["pids_changed"] == 0 for r in rs)),
        ]

    if "sigstop" in R:
        for tag, title in (("default", "defaults"), ("stall-off", "`stall_timeout = \"0s\"`")):
            rs = [r for r in R["sigstop"] if r["pass"] == tag]
            if not rs:
                continue
            ej = [r["ejected_after_s"] for r in rs]
            # Out of rotation: ejected by the balancer, or taken out of its snapshot once the
            # health check failed, whichever came first.
            out_at = [next((t for t, b in r["timeline"] if isinstance(b, dict)
                            and (b["ejected"] or b["in_snapshot"] is False)), None) for r in rs]
            out += [f"### SIGSTOP of one JVM ({title})", "",
                    "3 JVMs; 8 keep-alive threads GET `/` in a loop and 2 threads POST a 3-byte body to `/` (not "
                    "replayable), every client with a 90 s socket timeout. After "
                    f"{args.warm} s, `kill -STOP` of the lowest slot's JVM (t0); `status -o json` polled every 100 ms "
                    f"until its backend shows `ejected`; the load stops and the JVM gets `kill -CONT` at t0 + "
                    f"{args.cont_after} s (after the response timeout), then {args.after_cont} s more of watching.", "",
                    "| | per run | median (range) |", "|---|---|---:|",
                    f"| in flight on the backend just before t0 | {', '.join(str(r['in_flight_before']) for r in rs)} | |",
                    f"| t0 → `ejected` in status (s) | {', '.join(_f(x, 2) for x in ej)} | {mr(ej, 2)} |",
                    f"| t0 → out of rotation: ejected, or out of the snapshot after failed health checks (s) | {', '.join(_f(x, 2) for x in out_at)} | {mr(out_at, 2)} |",
                    f"| `ejected_reason`, `hung` when first seen | {'; '.join(str((r['ejected_first'] or {}).get('reason')) + ', ' + str((r['ejected_first'] or {}).get('hung')) for r in rs)} | |",
                    f"| GETs completed after t0 / failed | {', '.join(str(r['gets_after_t0']) + ' / ' + str(r['gets_failed']) for r in rs)} | |",
                    f"| GETs over 1 s after t0 (held by the frozen JVM, then replayed), max (ms) | "
                    f"{'; '.join(str(r['gets_slow']) + ', ' + _f(r['gets_max_ms'], 0) for r in rs)} | |",
                    f"| GETs sent after the ejection that took > 1 s | {', '.join(str(r['gets_held_after_eject']) for r in rs)} | |",
                    f"| in flight on the frozen backend after its ejection, max (the stuck POSTs) | {', '.join(str(r['in_flight_max_after_eject']) for r in rs)} | |",
                    f"| POSTs stuck (> 2 s): status, after (s) | {'; '.join(stuck_text(r) for r in rs)} | |",
                    f"| POST statuses seen after t0 | {'; '.join(','.join(map(str, r['post_statuses'])) for r in rs)} | |",
                    f"| first restart event for the slot (s after t0) | {'; '.join(restart_text(r) for r in rs)} | |",
                    f"| restarted (new pid) by the end | {', '.join('yes' if r['victim_restarted'] else 'no' for r in rs)} | |",
                    ""]
            out += ["The frozen backend in `status -o json`, run 1 (s after t0: `ejected`, `ejected_reason`, `hung`, "
                    "`in_snapshot`, `in_flight`, at each change): " +
                    "; ".join(f"{t} {'gone' if not isinstance(b, dict) else ', '.join(str(b[k]) for k in ('ejected', 'reason', 'hung', 'in_snapshot', 'in_flight'))}"
                              for t, b in rs[0]["timeline"][:12]) + ".", ""]
            out += ["Events of the frozen slot, run 1 (s after t0): " +
                    "; ".join(f"{t} `{k}`" for t, k, _ in rs[0]["slot_events"]) + ".", ""]
            stuck = [p for r in rs for p in r["posts_stuck"]]
            fails = [r["gets_failed"] for r in rs]
            allowed = [r["in_flight_before"] or 0 for r in rs]
            if tag == "default":
                goals += [
                    ("sigstop", "frozen backend `ejected` ≤ 5 s after SIGSTOP", mr(ej, 2, " s"),
                     all(x is not None and x <= 5 for x in ej)),
                    ("sigstop", "failed GETs ≤ requests in flight on it at t0 (ideally 0)",
                     f"{', '.join(map(str, fails))} (in flight: {', '.join(map(str, allowed))})",
                     all(f <= a for f, a in zip(fails, allowed))),
                    ("sigstop", f"every POST stuck on the frozen JVM gets a 504 at the response timeout ({RESPONSE_TIMEOUT_S} s), none waits forever",
                     ", ".join(f"{p['status']} after {p['after_s']} s" for p in stuck) or "no stuck POST",
                     all(p["status"] == 504 and RESPONSE_TIMEOUT_S - 5 <= p["after_s"] <= RESPONSE_TIMEOUT_S + 15 for p in stuck)),
                ]
            else:
                goals.append(("sigstop, stall detection off", "(no goal: what the health check alone gives) t0 → out of rotation",
                              mr(out_at, 2, " s"), None))
    if meta.get("took"):
        out += ["Time per run of each scenario (fleet start and stop included): " +
                ", ".join(f"{s} {mr(v, 0, ' s')}" for s, v in meta["took"].items()) + ".", ""]
    if meta.get("notes"):
        out += ["Notes:", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    out += ["Goals:", "", "| scenario | goal | measured | met |", "|---|---|---|---|"]
    for sc, g, m, ok in goals:
        out.append(f"| {sc} | {g} | {m} | {'–' if ok is None else ('yes' if ok else '**missed**')} |")
    out.append("")
    return "\n".join(out)


def restart_text(r):
    e = r["first_restart_event"]
    return f"`{e[1]}` at {e[0]:.1f}" if e else "none"


def stuck_text(r):
    return ", ".join(f"{p['status']} after {p['after_s']}" for p in r["posts_stuck"]) or "none"


def _f(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jarfleet", help="jarfleet binary (default: cargo build --release)")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--client-seconds", type=float, default=10)
    ap.add_argument("--slow-conns", type=int, default=2000)
    ap.add_argument("--slow-cap", type=float, default=45, help="a slow connection gives up after this long")
    ap.add_argument("--idle-conns", type=int, default=20000)
    ap.add_argument("--idle-procs", type=int, default=5)
    ap.add_argument("--hold", type=float, default=30)
    ap.add_argument("--warm", type=float, default=5)
    ap.add_argument("--cont-after", type=float, default=75)
    ap.add_argument("--after-cont", type=float, default=20)
    ap.add_argument("--timeout", type=float, default=7200, help="give up after this long (s)")
    ap.add_argument("--keep", action="store_true", help="keep the state directories (daemon logs)")
    ap.add_argument("--from-json", help="no measuring: print (and with --write-docs write) the section "
                    "from a file written by --json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.worker, json.loads(args.params))
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        meta = saved["meta"]
        meta.setdefault("took", saved.get("took_s"))
        args.scenarios = ",".join(saved["results"])
        args.runs = max(len(v) for v in saved["results"].values() if v)
        text = markdown(saved["results"], args, meta)
        print(text)
        if args.write_docs:
            replace_section(SECTION, text)
        return
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s} (known: {', '.join(SCENARIOS)})")
    # A SIGTERM ends the run through the `finally` blocks: fleets down, load processes killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM"))
    nofile = raise_nofile()
    log(f"open-file limit raised to {nofile[0]} (hard {nofile[1]})")

    jf = args.jarfleet and str(Path(args.jarfleet).resolve())
    if not jf:
        log("building jarfleet (release)")
        run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT, timeout=3600)
        jf = str(ROOT / "target" / "release" / "jarfleet")
    run(["bash", str(ROOT / "fixtures" / "app" / "build.sh")], timeout=600)
    fixture = ROOT / "fixtures" / "app" / "build" / "fixture-app.jar"
    version = subprocess.run([jf, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    version = version.split()[-1] if version else "?"
    tmp = Path(tempfile.mkdtemp(prefix="jf-hostile-"))
    meta = {"date": time.strftime("%Y-%m-%d"), "version": version,
            "load_start": loadavg(), "nofile": nofile, "notes": []}
    deadline = time.time() + args.timeout
    R = {s: [] for s in scenarios}
    stall_pass = False
    if "sigstop" in scenarios:
        ok, text = stall_key_supported(jf, tmp, fixture)
        if ok:
            stall_pass = True
        else:
            why = re.sub(r"^.*?jarfleet\.toml:\d+:\d+: ", "", text.splitlines()[0]) if text else "?"
            note = ("`[apps.X.balancer] stall_timeout` is not a key of this build (`jarfleet validate`: "
                    f"{why}): the pass with stall detection off was skipped.")
            log(note)
            meta["notes"].append(note)
    started = time.time()
    took = {s: [] for s in scenarios}
    try:
        for i in range(args.runs):
            for s in scenarios:
                if time.time() > deadline:
                    raise SystemExit("--timeout reached")
                t = time.time()
                if s == "slowloris":
                    R[s].append(slowloris_run(jf, tmp, fixture, args, i))
                elif s == "idle":
                    R[s].append(idle_run(jf, tmp, fixture, args, i))
                else:
                    R[s].append(sigstop_run(jf, tmp, fixture, args, i))
                    if stall_pass:
                        R[s].append(sigstop_run(jf, tmp, fixture, args, i, stall_off=True))
                took[s].append(time.time() - t)
                log(f"{s} run {i + 1} took {took[s][-1]:.0f} s")
    finally:
        cleanup_workers()
        for pid in list(STOPPED):
            kill_owned(pid, signal.SIGCONT)
        if args.json:
            Path(args.json).write_text(json.dumps({"results": R, "meta": meta, "took_s": took}, indent=1))
        if args.keep:
            log(f"kept {tmp} (state directories with the daemons' logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    meta["load_end"] = loadavg()
    meta["machine"] = machine()
    meta["took"] = took
    log("time per run: " + ", ".join(f"{s} {mr(v, 0, ' s')}" for s, v in took.items()) +
        f"; all {time.time() - started:.0f} s")
    text = markdown(R, args, meta)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": R, "meta": meta, "took_s": took}, indent=1))
    if args.write_docs:
        replace_section(SECTION, text)
        log(f"wrote {SECTION} of docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
