#!/usr/bin/env python3
"""Proxy benchmark: jarfleet vs nginx vs HAProxy in front of the same two backends.

One command (from the repository root, as root for apt):

    python3 bench/proxy.py [--runs 3] [--duration 10] [--backends static,jvm] [--write-docs]

* installs nginx, haproxy and wrk with apt when missing;
* builds jarfleet and `crates/proxy/examples/bench_proxy.rs` (release, the workspace's release
  profile);
* backends on 127.0.0.1: `static` = two nginx masters (1 worker each) serving a 1 KiB file;
  `jvm` = two `examples/hello/hello.jar` JVMs run by a real `jarfleet up` fleet (JDK built-in
  server), whose instances every front uses;
* fronts, all started once and kept for the run: nginx (upstream keepalive 128, 2 workers),
  HAProxy (http mode, keep-alive, 2 threads, `retries 3`, `retry-on conn-failure
  empty-response response-timeout`, `option redispatch`, 1 s health checks), `jarfleet` (`jvm`
  only: the fleet's own `listen` address, as users run it) and `jarfleet-proxy` (the proxy
  alone: `bench_proxy`, 2 data-plane worker threads, smooth weighted round-robin);
* throughput: wrk -t2 -c64 after a warm-up, directly against backend 1 and through each front
  (the order of fronts rotates from run to run);
* kill test: wrk -t2 -c64 through each front, backend 1 gets SIGKILL mid-run (after it was
  checked to be receiving traffic: its read bytes grow in /proc/PID/io), non-2xx + socket errors
  counted; backend 1 is back (restarted here, or by the fleet itself on its port) and answering
  before the next front;
* repeats `--runs` times, reports medians, writes JSON (`--json`) and, with `--write-docs`,
  the "## Proxy" section of docs/BENCHMARKS.md.

Every load run talks only to 127.0.0.1 and is bounded by wrk's -d; every process started here
is stopped here, by its process group.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from ports import free_port, free_range

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The fronts of each kind of backend: the real fleet can only front JVMs it runs itself.
FRONTS_OF = {"static": ["nginx", "haproxy", "jarfleet-proxy"],
             "jvm": ["nginx", "haproxy", "jarfleet", "jarfleet-proxy"]}
ALL_FRONTS = ["nginx", "haproxy", "jarfleet", "jarfleet-proxy"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)




def ensure_tools():
    missing = [t for t in ("nginx", "haproxy", "wrk") if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        log("installing", missing)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx", "haproxy", "wrk"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def proc_stats():
    """(pid, the fields of /proc/PID/stat after the command name) of every process."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(pid), stat[stat.rindex(")") + 2:].split()


def group_cpu_seconds(pgid):
    """User + system CPU time of every process in a process group, from /proc."""
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(int(f[11]) + int(f[12]) for _, f in proc_stats() if int(f[2]) == pgid)
    return total / hz


def wait_http(port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers 200 on 127.0.0.1:{port}")


class Proc:
    """A process in its own process group, stopped (or killed) as a group."""

    def __init__(self, name, argv, env=None, cwd=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        self.name = name
        self.argv = argv
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr, start_new_session=True)

    def kill9(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()

    def stop(self, timeout=5):
        if self.p.poll() is not None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
        except ProcessLookupError:
            pass
        try:  # leftovers of the group (nginx workers, a JVM's children)
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def nginx_conf(tmp, name, body):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"""user root;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log error;
{body}
""")
    return path


def http_common(d):
    return f"""access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    keepalive_requests 1000000; keepalive_timeout 75s;"""


class StaticBackend:
    def __init__(self, tmp, idx, port):
        self.port = port
        www = os.path.join(tmp, "www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("x" * 1023 + "\n")
        d = os.path.join(tmp, f"backend{idx}")
        self.conf = nginx_conf(tmp, f"backend{idx}", f"""worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    {http_common(d)}
    open_file_cache max=16;
    server {{ listen 127.0.0.1:{port} reuseport backlog=4096; root {www}; index index.html; }}
}}""")
        self.proc = None

    def start(self):
        self.proc = Proc(f"backend:{self.port}", [tool("nginx"), "-c", self.conf])
        wait_http(self.port)

    def pids(self):
        """The master and its worker (the worker does the reading)."""
        return group_pids(self.proc.p.pid)

    def kill(self):
        self.proc.kill9()

    def restart(self):
        self.start()


class Fleet:
    """Two hello.jar JVMs under a real `jarfleet up` fleet, with its `listen` address."""

    def __init__(self, tmp, jarfleet, listen_port):
        self.jf_exe = jarfleet
        self.work = os.path.join(tmp, "fleet")
        os.makedirs(self.work, exist_ok=True)
        self.state = os.path.join(self.work, "state")
        self.listen = listen_port
        first, last = free_range(8)
        jar = os.path.join(ROOT, "examples/hello/hello.jar")
        self.spec = os.path.join(self.work, "jarfleet.toml")
        with open(self.spec, "w") as f:
            f.write(f"""[daemon]
state_dir = {json.dumps(self.state)}

[apps.hello]
artifact = {json.dumps(jar)}
instances = 2
ports = "{first}-{last}"
listen = "127.0.0.1:{listen_port}"
java = {{ opts = ["-Xmx64m", "-XX:+UseSerialGC", "-Dsun.net.httpserver.nodelay=true"], exit_on_oom = false, heap_dump_on_oom = false, gc_log = false }}

[apps.hello.health]
http = "/health"
""")

    def jf(self, *args, timeout=120):
        return subprocess.run([self.jf_exe, "--state-dir", self.state, *args], capture_output=True,
                              text=True, timeout=timeout, check=True)

    def start(self):
        self.jf("up", "-d", self.spec)
        self.wait_ready()
        wait_http(self.listen)

    def instances(self):
        st = json.loads(self.jf("status", "-o", "json", timeout=30).stdout)
        return sorted((i for a in st["apps"] for i in a["instances"]), key=lambda i: i["slot"])

    def wait_ready(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            insts = self.instances()
            if len(insts) == 2 and all(i["state"] == "ready" and i.get("port") for i in insts):
                return insts
            time.sleep(0.1)
        raise RuntimeError(f"the fleet's 2 instances are not ready: {self.instances()}")

    def stop(self):
        subprocess.run([self.jf_exe, "--state-dir", self.state, "down"], capture_output=True, timeout=120)


class FleetInstance:
    """One of the fleet's JVMs seen as a backend: killed with SIGKILL, brought back by the fleet."""

    def __init__(self, fleet, slot):
        self.fleet = fleet
        self.slot = slot
        self.port = next(i["port"] for i in fleet.instances() if i["slot"] == slot)

    def pid(self):
        return next(i["pid"] for i in self.fleet.instances() if i["slot"] == self.slot)

    def pids(self):
        return [self.pid()]

    def kill(self):
        os.kill(self.pid(), signal.SIGKILL)

    def restart(self):
        insts = self.fleet.wait_ready()
        port = next(i["port"] for i in insts if i["slot"] == self.slot)
        if port != self.port:
            raise RuntimeError(f"the fleet restarted slot {self.slot} on port {port}, not {self.port}: "
                               "the other fronts would lose it")
        wait_http(self.port)


def group_pids(pgid):
    """The processes of a process group, from /proc."""
    return [pid for pid, f in proc_stats() if int(f[2]) == pgid]


def read_bytes(pids):
    """Bytes the processes have read (`rchar` of /proc/PID/io: sockets included)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/io") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    return total


def receiving(pids, window=0.3):
    """Bytes read by `pids` over `window` seconds: the traffic reaching them now."""
    before = read_bytes(pids)
    time.sleep(window)
    return read_bytes(pids) - before


def start_fronts(tmp, ports, backends, proxy_bin, fronts_wanted):
    b1, b2 = backends
    fronts = {}
    d = os.path.join(tmp, "front-nginx")
    conf = nginx_conf(tmp, "front-nginx", f"""worker_processes 2;
events {{ worker_connections 8192; }}
http {{
    {http_common(d)}
    upstream b {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{ports['nginx']} backlog=4096;
        location / {{
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}""")
    fronts["nginx"] = Proc("nginx", [tool("nginx"), "-c", conf])
    hconf = os.path.join(tmp, "haproxy.cfg")
    with open(hconf, "w") as f:
        f.write(f"""global
    nbthread 2
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch
frontend fe
    bind 127.0.0.1:{ports['haproxy']}
    default_backend be
backend be
    balance roundrobin
    http-request set-header X-Forwarded-Proto http
    default-server check inter 1s
    server b1 127.0.0.1:{b1}
    server b2 127.0.0.1:{b2}
""")
    fronts["haproxy"] = Proc("haproxy", [tool("haproxy"), "-db", "-f", hconf],
                             stderr=open(os.path.join(tmp, "haproxy.log"), "a"))
    fronts["jarfleet-proxy"] = Proc("jarfleet-proxy", [proxy_bin, f"127.0.0.1:{ports['jarfleet-proxy']}",
                                                       f"127.0.0.1:{b1}", f"127.0.0.1:{b2}", "--threads", "2"],
                                    stdout=open(os.path.join(tmp, "jarfleet-stats.jsonl"), "a"))
    try:
        for name in fronts_wanted:
            wait_http(ports[name])
    except Exception:
        for f in fronts.values():
            f.stop()
        raise
    return fronts


def wrk(port, seconds, conns, threads, latency=True):
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]
    if latency:
        argv.append("--latency")
    argv.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    res = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            v = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            res[f"p{q}_ms"] = v
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    res["failed"] = res["non2xx"] + res["socket_errors"]
    # What counts is answers that worked: a front answering 502 at once (nginx, with every
    # upstream put aside) would otherwise look fast.
    res["ok_rps"] = res["rps"] * max(res["requests"] - res["failed"], 0) / res["requests"] if res["requests"] else 0.0
    return res


def run_kind(kind, args, tmp, proxy_bin, jarfleet, run_idx):
    names = FRONTS_OF[kind]
    ports = {n: free_port() for n in names}
    fronts = {}
    fleet = None
    backends = []
    result = {"throughput": {}, "kill": {}}
    try:
        if kind == "static":
            backends = [StaticBackend(tmp, i, free_port()) for i in range(2)]
            for b in backends:
                b.start()
        else:
            fleet = Fleet(tmp, jarfleet, ports["jarfleet"])
            fleet.start()
            backends = [FleetInstance(fleet, 0), FleetInstance(fleet, 1)]
        bports = [b.port for b in backends]
        fronts = start_fronts(tmp, ports, bports, proxy_bin, [n for n in names if n != "jarfleet"])
        if fleet:
            fronts["jarfleet"] = fleet
        order = names[run_idx % len(names):] + names[:run_idx % len(names)]
        for target in ["direct"] + order:
            port = bports[0] if target == "direct" else ports[target]
            if target == "direct":
                pgids = [os.getpgid(backends[0].pids()[0])]
            elif target == "jarfleet":
                # The daemon, and the load balancer's own process (its own session, so its
                # own process group) where the requests go through.
                daemon = json.loads(fleet.jf("status", "-o", "json").stdout)["daemon"]
                pgids = [os.getpgid(daemon["pid"])]
                dp = (daemon.get("data_plane") or {}).get("pid")
                if dp:
                    pgids.append(os.getpgid(dp))
            else:
                pgids = [fronts[target].p.pid]
            wrk(port, args.warmup, args.connections, args.threads, latency=False)
            cpu0 = sum(group_cpu_seconds(g) for g in pgids)
            r = wrk(port, args.duration, args.connections, args.threads)
            cpu1 = sum(group_cpu_seconds(g) for g in pgids)
            r["cpu_us_per_req"] = 1e6 * (cpu1 - cpu0) / max(r["requests"], 1)
            r.pop("raw")
            result["throughput"][target] = r
            log(f"  {kind} run {run_idx + 1} {target}: {r['rps']:.0f} rps ({r['ok_rps']:.0f} successful), p50 {r.get('p50_ms')} ms, "
                f"p99 {r.get('p99_ms')} ms, {r['cpu_us_per_req']:.1f} µs CPU/request, failed {r['failed']}")
        for target in order:
            # Both backends up and answering before each kill.
            wait_http(bports[0])
            wait_http(bports[1])
            wrk(ports[target], 2, args.connections, args.threads, latency=False)
            t = subprocess.Popen(["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.kill_duration}s",
                                  "--timeout", "5s", f"http://127.0.0.1:{ports[target]}/"],
                                 stdout=subprocess.PIPE, text=True)
            time.sleep(max(args.kill_after - 0.3, 0.1))
            # The victim must be taking traffic through this front when it dies: a front that
            # has put it aside (nginx does for `fail_timeout` after one failed attempt) would
            # make its kill prove nothing. Looked at for up to 2 s; no traffic: no kill.
            got, waited = 0, 0.0
            while got < 10_000 and waited < 2.0:
                got = receiving(backends[0].pids())
                waited += 0.3
            if got < 10_000:
                out, _ = t.communicate(timeout=args.kill_duration + 30)
                result["kill"][target] = {"failed": None, "skipped": f"the victim read {got} bytes in 0.3 s"}
                log(f"  {kind} run {run_idx + 1} kill via {target}: not done, the victim took no traffic "
                    f"through it ({got} bytes read in 0.3 s, looked at for 2 s)")
                continue
            backends[0].kill()
            out, _ = t.communicate(timeout=args.kill_duration + 30)
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            non2xx = int(m.group(1)) if m else 0
            m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            sock = sum(int(x) for x in m.groups()) if m else 0
            m = re.search(r"(\d+) requests in", out)
            total = int(m.group(1)) if m else 0
            result["kill"][target] = {"failed": non2xx + sock, "non2xx": non2xx, "socket_errors": sock,
                                      "requests": total, "victim_read_bytes_0_3s": got}
            detail = f" ({non2xx} non-2xx, {sock} socket errors)" if non2xx + sock else ""
            log(f"  {kind} run {run_idx + 1} kill via {target}: {non2xx + sock} failed of {total}{detail} "
                f"(the victim read {got} bytes in the 0.3 s before)")
            backends[0].restart()
    finally:
        if "jarfleet-proxy" in fronts:
            fronts["jarfleet-proxy"].p.send_signal(signal.SIGTERM)  # prints its stats, then exits
            try:
                fronts["jarfleet-proxy"].p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for name, f in fronts.items():
            if name != "jarfleet":
                f.stop()
        if fleet:
            fleet.stop()
        for b in backends:
            if getattr(b, "proc", None):
                b.proc.stop()
    return result


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(kind, runs):
    rows = {}
    for target in ["direct"] + FRONTS_OF[kind]:
        rs = [r["throughput"][target] for r in runs]
        rows[target] = {
            "rps": median([r["ok_rps"] for r in rs]),
            "p50_ms": median([r.get("p50_ms") for r in rs]),
            "p99_ms": median([r.get("p99_ms") for r in rs]),
            "cpu_us": median([r.get("cpu_us_per_req") for r in rs]),
            "failed": sum(r["failed"] for r in rs),
            "rps_runs": [round(r["ok_rps"]) for r in rs],
            "failed_runs": [r["failed"] for r in rs],
        }
    kills = {t: [r["kill"][t]["failed"] for r in runs] for t in FRONTS_OF[kind]}
    # Each run's fronts were measured within a minute of each other: on a shared machine whose
    # load drifts over minutes, the ratio inside a run is steadier than a ratio of medians.
    paired = {}
    for t in FRONTS_OF[kind]:
        if t == "nginx":
            continue
        ratios = [r["throughput"][t]["ok_rps"] / r["throughput"]["nginx"]["ok_rps"]
                  for r in runs if r["throughput"]["nginx"]["ok_rps"]]
        p99 = [r["throughput"][t].get("p99_ms") / r["throughput"]["nginx"]["p99_ms"]
               for r in runs if r["throughput"]["nginx"].get("p99_ms") and r["throughput"][t].get("p99_ms")]
        paired[t] = {"rps": ratios, "p99": p99}
    return {"kind": kind, "throughput": rows, "kill_failed": kills, "paired": paired}


def fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(summary, args, cmd, started, load_start, load_end):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ver = lambda argv: subprocess.run(argv, capture_output=True, text=True).stderr.strip().splitlines()[0]
    nginx_v = ver([tool("nginx"), "-v"])
    hap_v = subprocess.run([tool("haproxy"), "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    out = ["## Proxy", "",
           f"Measured {started:%Y-%m-%d} on {cpu}, nproc {os.cpu_count()}, {mem:.1f} GiB RAM, Linux "
           f"{platform.release()}; {nginx_v}; {hap_v}; wrk {args.connections} connections, {args.threads} threads, "
           f"{args.duration} s after a {args.warmup} s warm-up; medians of {args.runs} runs. Load average "
           f"(1/5/15 min) {load_start} at the start, {load_end} at the end (wrk, the front and both backends "
           "share the 2 cores, and other work on the machine shares them too).", "",
           "Reproduce (from the repository root):", "", "```sh", cmd, "```", "",
           "Fronts, each in front of the same two backends: nginx (`upstream` with `keepalive 128`, "
           "2 workers, X-Forwarded-* set), HAProxy (http mode, keep-alive, `nbthread 2`, `retries 3`, "
           "`retry-on conn-failure empty-response response-timeout`, `option redispatch`, health checks every "
           "1 s), `jarfleet` (`jvm` only: a real `jarfleet up` fleet's `listen` address, served by the fleet's "
           "load balancer process (`jarfleet data-plane`) with its defaults, in front of the fleet's own two instances, which every front uses) and "
           "`jarfleet-proxy` (the proxy alone: `crates/proxy/examples/bench_proxy.rs`, one `Listener`, 2 "
           "data-plane worker threads, smooth weighted round-robin, built with the workspace's release "
           "profile). CPU per request: user + system time of the front's process group (`jarfleet`: the "
           "daemon's and its load balancer's; `direct`: backend 1's) over the measured wrk run, from `/proc`, divided "
           "by the requests wrk completed. Successful req/s: wrk's rate times the share of its requests that "
           "were answered 2xx/3xx (a front answering errors at once does not count as fast). Backends: `static` = two nginx masters with one worker each "
           "serving a 1 KiB file; `jvm` = two `examples/hello/hello.jar` JVMs run by the fleet (JDK built-in "
           "HTTP server, `-Xmx64m -XX:+UseSerialGC -Dsun.net.httpserver.nodelay=true`). `direct` is wrk "
           "against backend 1 alone.", ""]
    for s in summary:
        t = s["throughput"]
        out += [f"Throughput, `{s['kind']}` backends:", "",
                "| target | successful req/s (median) | p50 (ms) | p99 (ms) | CPU per request (µs) | successful req/s per run | failed per run |",
                "|---|---:|---:|---:|---:|---|---:|"]
        for target in ["direct"] + FRONTS_OF[s["kind"]]:
            r = t[target]
            out.append(f"| {target} | {r['rps']:.0f} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['cpu_us'], 1)} | "
                       f"{', '.join(str(x) for x in r['rps_runs'])} | {', '.join(str(x) for x in r['failed_runs'])} |")
        out.append("")
    out += [f"Failed requests (non-2xx + socket errors, as wrk counts them) when backend 1 gets SIGKILL "
            f"{args.kill_after} s into a {args.kill_duration} s wrk run (-c{args.connections}), per run; each "
            "kill only after the victim was seen taking traffic through that front (its read bytes grew in "
            "the 0.3 s before). Under the fleet the victim comes back by itself (jarfleet restarts it on its "
            "port); `static` backends are restarted by the script:", "",
            "| backends | " + " | ".join(ALL_FRONTS) + " |", "|---|" + "---:|" * len(ALL_FRONTS)]
    for s in summary:
        out.append(f"| {s['kind']} | " + " | ".join(
            ", ".join("no traffic" if x is None else str(x) for x in s["kill_failed"][f])
            if f in s["kill_failed"] else "–" for f in ALL_FRONTS) + " |")
    out += ["", "(\"no traffic\": the front had put the victim aside when the kill was due, so it was not "
            "killed and that run says nothing of the front.)"]
    out.append("")
    out += ["Paired within each run (each front's figure over nginx's, measured in the same run, a minute "
            "apart at most): median (range) over the runs. A run where nginx collapsed (see the failed "
            "column) gives a large ratio: the range shows it.", "",
            "| backends | front | req/s ÷ nginx's | p99 ÷ nginx's |", "|---|---|---|---|"]
    for s in summary:
        for t, pr in s["paired"].items():
            if not pr["rps"]:
                continue
            r, q = pr["rps"], pr["p99"]
            out.append(f"| {s['kind']} | {t} | {median(r):.2f} ({min(r):.2f}–{max(r):.2f}) | "
                       + (f"{median(q):.2f} ({min(q):.2f}–{max(q):.2f})" if q else "—") + " |")
    out.append("")
    out += ["Goals (jarfleet):", "", "| backends | goal | measured | met |", "|---|---|---|---|"]
    for s in summary:
        t = s["throughput"]
        ours = "jarfleet" if "jarfleet" in t else "jarfleet-proxy"
        j, n = t[ours], t["nginx"]
        ratio = j["rps"] / n["rps"] if n["rps"] else 0
        out.append(f"| {s['kind']} ({ours}) | throughput ≥ 1.1× nginx ({n['rps']:.0f}) | {j['rps']:.0f} ({ratio:.2f}×) | "
                   f"{'yes' if ratio >= 1.1 else '**missed**'} |")
        ok = j["p99_ms"] is not None and n["p99_ms"] is not None and j["p99_ms"] <= n["p99_ms"]
        out.append(f"| {s['kind']} ({ours}) | p99 ≤ nginx's ({fmt(n['p99_ms'])} ms) | {fmt(j['p99_ms'])} ms | "
                   f"{'yes' if ok else '**missed**'} |")
        kills = s["kill_failed"][ours]
        done = [k for k in kills if k is not None]
        shown = ", ".join("no traffic" if k is None else str(k) for k in kills)
        met = "yes" if done and all(k == 0 for k in done) else ("**missed**" if done else "not measured")
        out.append(f"| {s['kind']} ({ours}) | zero failed requests on every kill | {shown} | {met} |")
    out.append("")
    return "\n".join(out)


def write_docs(section):
    path = os.path.join(ROOT, "docs/BENCHMARKS.md")
    text = open(path).read()
    m = re.search(r"^## Proxy\n.*?(?=^## |\Z)", text, re.M | re.S)
    if m:
        text = text[:m.start()] + section + "\n" + text[m.end():]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kill-duration", type=int, default=8)
    ap.add_argument("--kill-after", type=float, default=3.0)
    ap.add_argument("--backends", default="static,jvm")
    ap.add_argument("--proxy-bin", help="a prebuilt bench_proxy (default: build it)")
    ap.add_argument("--jarfleet", help="a prebuilt jarfleet binary (default: build it)")
    ap.add_argument("--json")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    cmd = "python3 bench/proxy.py " + " ".join(sys.argv[1:])
    ensure_tools()
    proxy_bin = args.proxy_bin
    if not proxy_bin:
        subprocess.run(["cargo", "build", "--release", "-p", "jarfleet-proxy", "--example", "bench_proxy"],
                       cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        proxy_bin = os.path.join(target, "release/examples/bench_proxy")
    jarfleet = args.jarfleet
    if not jarfleet and "jvm" in args.backends.split(","):
        subprocess.run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        jarfleet = os.path.join(target, "release/jarfleet")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = "/".join(open("/proc/loadavg").read().split()[:3])
    summary = []
    with tempfile.TemporaryDirectory(prefix="jf-proxy-bench-") as tmp:
        os.chmod(tmp, 0o755)
        for kind in args.backends.split(","):
            runs = [run_kind(kind, args, tmp, proxy_bin, jarfleet, i) for i in range(args.runs)]
            summary.append(summarize(kind, runs))
            try:
                with open(os.path.join(tmp, "jarfleet-stats.jsonl")) as f:
                    for line in f.read().splitlines()[-args.runs:]:
                        st = json.loads(line)
                        log(f"  jarfleet-proxy stats ({kind}): " + ", ".join(
                            f"{b['id']}: {b['requests']} errors {b['errors']} retries {b['retries']} "
                            f"stale {b['stale_retries']} ejections {b['ejections']}" for b in st["backends"]))
                os.unlink(os.path.join(tmp, "jarfleet-stats.jsonl"))
            except FileNotFoundError:
                pass
    load_end = "/".join(open("/proc/loadavg").read().split()[:3])
    section = markdown(summary, args, cmd, started, load_start, load_end)
    print(section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
