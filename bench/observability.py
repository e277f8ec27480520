#!/usr/bin/env python3
"""Cost of observability: proxy throughput with /metrics off vs on (scraped every second), and
/metrics and status latency with many instances.

One command (from the repository root):

    python3 bench/observability.py [--runs 6] [--duration 10] [--instances 100] [--calls 200] \
        [--jarfleet BIN] [--wait-quiet 1.0] [--write-docs]

* builds jarfleet (release) unless --jarfleet is given, and the fixture jar;
* part 1, throughput: one daemon, 2 fixture JVMs behind jarfleet's balancer; `wrk -t2 -c32`
  against the app's listen address, alternately with `[daemon] metrics = false` (applied live, no
  scraper) and `metrics = true` with a scraper reading `/metrics` over the unix socket every
  second; medians of --runs runs each (the order alternates from run to run), plus the daemon's
  CPU time per request from /proc (the balancer runs in the daemon);
* part 2, latency: a daemon with --instances tiny fixture JVMs (-Xmx16m -Xss256k
  -XX:TieredStopAtLevel=1 -XX:+UseSerialGC) behind one listen address, some traffic through it,
  then --calls sequential `GET /metrics` and `GET /v1/status` over the unix socket, each on a new
  connection; medians and p90. The control loop's own time per call is read from
  `jarfleet_control_busy_seconds_total` / `jarfleet_control_events_total`;
* with --write-docs, replaces the "## Cost of observability" section of docs/BENCHMARKS.md.

Talks only to 127.0.0.1 and the daemons' unix sockets; every daemon and JVM started here is
stopped here (`jarfleet down`); bounded in time (--timeout).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from docsection import replace_section
from ports import free_port, free_range

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Cost of observability"
PROTOCOL_HEADER = "x-jarfleet-protocol"


def log(msg):
    print(f"[observability {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def loadavg():
    return "/".join(open("/proc/loadavg").read().split()[:3])






class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def get(sock, path, protocol=None):
    """One GET on a new connection: (status, body, seconds)."""
    t0 = time.perf_counter()
    c = UnixHTTPConnection(sock)
    headers = {PROTOCOL_HEADER: str(protocol)} if protocol else {}
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    body = r.read()
    took = time.perf_counter() - t0
    c.close()
    return r.status, body, took


def parse_exposition(text):
    """{(name, frozenset(labels))): value} of the simple samples (enough for our counters)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def sample(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_cpu_ms(sock, pid, calls):
    """The daemon's CPU time per `GET /metrics`, over `calls` calls in a row (ms)."""
    cpu0 = cpu_seconds(pid)
    for _ in range(calls):
        status, _, _ = get(sock, "/metrics")
        assert status == 200, status
    return 1000 * (cpu_seconds(pid) - cpu0) / calls


def wrk(port, seconds, conns, threads):
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
            f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["failed"] = non2xx + (sum(int(x) for x in m.groups()) if m else 0)
    return res


class Scraper:
    """GET /metrics every `every` seconds until stopped."""

    def __init__(self, sock, every=1.0):
        self.sock, self.every = sock, every
        self.times, self.errors = [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status, _, took = get(self.sock, "/metrics")
                if status == 200:
                    self.times.append(took)
                else:
                    self.errors += 1
            except OSError:
                self.errors += 1
            self.stop.wait(max(0.0, self.every - (time.monotonic() - t0)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(10)


class Fleet:
    def __init__(self, jf, tmp, name):
        self.jf = jf
        self.dir = Path(tmp) / name
        self.dir.mkdir()
        self.state = self.dir / "state"
        self.env = dict(os.environ, JARFLEET_STATE=str(self.state), NO_COLOR="1")
        self.sock = str(self.state / "jarfleet.sock")

    def cmd(self, *args, check=True, timeout=900):
        return subprocess.run([self.jf, *args], cwd=self.dir, env=self.env, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def write(self, text):
        (self.dir / "jarfleet.toml").write_text(text)

    def daemon_pid(self):
        return int((self.state / "daemon.lock").read_text().strip())

    def metrics(self):
        status, body, _ = get(self.sock, "/metrics")
        if status != 200:
            raise SystemExit(f"/metrics answered {status}: {body[:200]!r}")
        return parse_exposition(body.decode())

    def down(self):
        if (self.state / "jarfleet.sock").exists():
            self.cmd("down", check=False, timeout=600)


def spec(fixture, instances, ports, listen, opts, metrics, start_timeout="120s"):
    return f"""[daemon]
metrics = {"true" if metrics else "false"}

[apps.fx]
artifact = "{fixture}"
instances = {instances}
ports = "{ports[0]}-{ports[1]}"
listen = "127.0.0.1:{listen}"
java = {{ opts = {json.dumps(opts)}, fast_start = false }}

[apps.fx.health]
http = "/health"
start_timeout = "{start_timeout}"
"""


def throughput(jf, tmp, fixture, args):
    f = Fleet(jf, tmp, "throughput")
    ports = free_range(8)
    lb = free_port()
    opts = ["-Xmx64m", "-XX:+UseSerialGC", "-Dsun.net.httpserver.nodelay=true"]
    results = {"off": [], "on": []}
    scrapes = []
    try:
        f.write(spec(fixture, 2, ports, lb, opts, metrics=False))
        log("throughput: starting 2 JVMs behind the balancer")
        f.cmd("up", "-d", "--wait")
        pid = f.daemon_pid()
        log("warming the JVMs up")
        wrk(lb, 10, args.connections, args.threads)
        f.write(spec(fixture, 2, ports, lb, opts, metrics=True))
        f.cmd("apply")
        scrape_ms = scrape_cpu_ms(f.sock, pid, args.calls)
        log(f"one scrape of this fleet costs the daemon {scrape_ms:.2f} ms of CPU (idle, {args.calls} scrapes)")
        for i in range(args.runs):
            order = ["off", "on"] if i % 2 == 0 else ["on", "off"]
            for state in order:
                f.write(spec(fixture, 2, ports, lb, opts, metrics=state == "on"))
                f.cmd("apply")
                served = f.cmd("metrics", check=False).returncode == 0
                if served != (state == "on"):
                    raise SystemExit(f"/metrics should be {state} but `jarfleet metrics` says otherwise")
                wrk(lb, args.warmup, args.connections, args.threads)
                cpu0 = cpu_seconds(pid)
                if state == "on":
                    with Scraper(f.sock) as s:
                        r = wrk(lb, args.duration, args.connections, args.threads)
                    r["scrapes"] = len(s.times)
                    r["scrape_errors"] = s.errors
                    scrapes += s.times
                else:
                    r = wrk(lb, args.duration, args.connections, args.threads)
                r["cpu_us"] = 1e6 * (cpu_seconds(pid) - cpu0) / max(r["requests"], 1)
                results[state].append(r)
                log(f"run {i + 1} metrics {state}: {r['rps']:.0f} req/s, daemon CPU {r['cpu_us']:.1f} µs/request, "
                    f"failed {r['failed']}" + (f", {r['scrapes']} scrapes" if state == "on" else ""))
    finally:
        f.down()
    return results, scrapes, scrape_ms


def latency(jf, tmp, fixture, args):
    f = Fleet(jf, tmp, "many")
    n = args.instances
    ports = free_range(n + 10)
    lb = free_port()
    opts = ["-Xmx16m", "-Xss256k", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
    out = {}
    try:
        f.write(spec(fixture, n, ports, lb, opts, metrics=True, start_timeout="600s"))
        log(f"latency: starting {n} JVMs (this takes a while on 2 cores)")
        t0 = time.monotonic()
        f.cmd("up", "-d", "--wait", timeout=1800)
        out["start_s"] = time.monotonic() - t0
        status, body, _ = get(f.sock, "/v1/status", protocol=1)
        report = json.loads(body)
        ready = sum(1 for a in report["apps"] for i in a["instances"] if i["ready"])
        if ready != n:
            raise SystemExit(f"only {ready} of {n} instances ready")
        rss = sum(i.get("rss_bytes") or 0 for a in report["apps"] for i in a["instances"])
        out["jvm_rss_mib"] = rss / 2**20
        log(f"{n} instances ready after {out['start_s']:.0f} s ({out['jvm_rss_mib']:.0f} MiB resident); "
            f"letting them settle for {args.settle} s, then some traffic so every backend has figures")
        time.sleep(args.settle)  # a benchmark: measure a fleet that has finished booting
        wrk(lb, 5, 16, 2)
        pid = f.daemon_pid()
        before = f.metrics()
        m_times, s_times = [], []
        size = lines = 0
        cpu0 = cpu_seconds(pid)
        for _ in range(args.calls):
            status, body, took = get(f.sock, "/metrics")
            assert status == 200, status
            m_times.append(took)
            size, lines = len(body), body.count(b"\n")
        out["metrics_cpu_ms"] = 1000 * (cpu_seconds(pid) - cpu0) / args.calls
        cpu0 = cpu_seconds(pid)
        for _ in range(args.calls):
            status, body, took = get(f.sock, "/v1/status", protocol=1)
            assert status == 200, status
            s_times.append(took)
        out["status_cpu_ms"] = 1000 * (cpu_seconds(pid) - cpu0) / args.calls
        after = f.metrics()
        for kind in ("metrics", "status"):
            # Ratios of deltas: an event is counted once handled, so `before`'s own call is in both.
            events = sample(after, "jarfleet_control_events_total", event=kind) - \
                sample(before, "jarfleet_control_events_total", event=kind)
            busy = sample(after, "jarfleet_control_busy_seconds_total", event=kind) - \
                sample(before, "jarfleet_control_busy_seconds_total", event=kind)
            out[f"loop_{kind}_ms"] = 1000 * busy / max(events, 1)
        out["series"] = sum(1 for line in get(f.sock, "/metrics")[1].decode().splitlines()
                            if line and not line.startswith("#"))
        out["metrics_ms"] = [t * 1000 for t in m_times]
        out["status_ms"] = [t * 1000 for t in s_times]
        out["bytes"], out["lines"] = size, lines
        t_cli = []
        for _ in range(20):
            t0 = time.perf_counter()
            f.cmd("status", "-o", "json")
            t_cli.append((time.perf_counter() - t0) * 1000)
        out["status_cli_ms"] = t_cli
        log(f"/metrics median {statistics.median(out['metrics_ms']):.1f} ms, status median "
            f"{statistics.median(out['status_ms']):.1f} ms, loop per call: metrics {out['loop_metrics_ms']:.2f} ms, "
            f"status {out['loop_status_ms']:.2f} ms")
    finally:
        log("stopping the instances")
        f.down()
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--settle", type=int, default=60, help="seconds between ready and measuring")
    ap.add_argument("--jarfleet", help="jarfleet binary (default: cargo build --release)")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="first wait (up to 15 min) until the 1-minute load average is below this")
    ap.add_argument("--skip", choices=["throughput", "latency"], help="leave one part out")
    ap.add_argument("--json")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    jf = args.jarfleet
    if not jf:
        log("building jarfleet (release)")
        run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT)
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        jf = str(target / "release" / "jarfleet")
    run(["bash", str(ROOT / "fixtures" / "app" / "build.sh")])
    fixture = ROOT / "fixtures" / "app" / "build" / "fixture-app.jar"
    if args.wait_quiet:
        deadline = time.time() + 900
        while float(loadavg().split("/")[0]) >= args.wait_quiet and time.time() < deadline:
            log(f"waiting for a quiet machine (load {loadavg()})")
            time.sleep(30)
    threading.Timer(args.timeout, lambda: os._exit(2)).start()
    load_start = loadavg()
    started = time.strftime("%Y-%m-%d")
    tmp = tempfile.mkdtemp(prefix="jf-obs-")
    result = {"load_start": load_start}
    try:
        if args.skip != "throughput":
            result["throughput"], result["scrapes"], result["scrape_cpu_ms"] = throughput(
                jf, tmp, fixture, args)
        if args.skip != "latency":
            result["latency"] = latency(jf, tmp, fixture, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_end"] = loadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    text = markdown(result, args, started)
    print(text)
    if args.write_docs:
        replace_section(SECTION, text)
        log(f"wrote {SECTION} of docs/BENCHMARKS.md")
    os._exit(0)


def markdown(r, args, started):
    shown, skip = [], False
    for a in sys.argv[1:]:  # the machine-specific options are left out
        if skip:
            skip = False
        elif a in ("--json", "--jarfleet"):
            skip = True
        elif a != "--write-docs" and not a.startswith(("--json=", "--jarfleet=")):
            shown.append(a)
    cmd = " ".join(["python3 bench/observability.py", *shown])
    out = [SECTION, "",
           f"Measured {started} on {os.cpu_count()} cores (shared with other work: load average "
           f"{r['load_start']} at the start, {r['load_end']} at the end); reproduce with "
           f"`{cmd.strip()}` (add `--write-docs` to rewrite this section).", ""]
    if "throughput" in r:
        t = r["throughput"]
        med = {s: statistics.median(x["rps"] for x in t[s]) for s in ("off", "on")}
        cpu = {s: statistics.median(x["cpu_us"] for x in t[s]) for s in ("off", "on")}
        # Paired: run i measured both states back to back, so drift of the shared machine cancels.
        pairs = [on["rps"] / off["rps"] - 1 for on, off in zip(t["on"], t["off"])]
        diff = statistics.median(pairs)
        scr = r["scrapes"]
        requests_on = sum(x["requests"] for x in t["on"])
        expected = 1000 * r["scrape_cpu_ms"] * sum(x.get("scrapes", 0) for x in t["on"]) / max(requests_on, 1)
        out += ["**Proxy throughput, metrics off vs on.** 2 fixture JVMs (`-Xmx64m -XX:+UseSerialGC`) behind "
                f"jarfleet's balancer; `wrk -t{args.threads} -c{args.connections}` for {args.duration} s after a "
                f"{args.warmup} s warm-up, {args.runs} runs per state in alternating order, same daemon and JVMs "
                "(the switch is applied live). Off: `[daemon] metrics = false`, no scraper. On: `metrics = true` "
                "and a scraper reading `/metrics` over the unix socket every second during the load. "
                "Daemon CPU: its user + system time (the balancer runs in it) over the run, per request.", "",
                "| state | req/s (median) | req/s per run | daemon CPU per request (µs, median) | failed |",
                "|---|---:|---|---:|---:|"]
        for s in ("off", "on"):
            out.append(f"| metrics {s} | {med[s]:.0f} | {', '.join(str(round(x['rps'])) for x in t[s])} | "
                       f"{cpu[s]:.1f} | {sum(x['failed'] for x in t[s])} |")
        out += ["",
                f"Difference on − off, the median of the {len(pairs)} runs' own differences (each run measured both "
                f"states back to back): {diff:+.1%} in throughput (run by run: {', '.join(f'{p:+.1%}' for p in pairs)}; "
                f"the medians of the columns above differ by {med['on'] / med['off'] - 1:+.1%}); goal within 3 %: "
                f"{'met' if abs(diff) < 0.03 else '**missed**'}. Daemon CPU: {cpu['on'] - cpu['off']:+.1f} µs per "
                f"request. The scraper made {len(scr)} scrapes (median {1000 * statistics.median(scr):.1f} ms, "
                "wall time under the load) while the load ran.", "",
                f"The precise figure is the scrape's own CPU: measured on the idle fleet ({args.calls} scrapes in a "
                f"row), one scrape costs the daemon {r['scrape_cpu_ms']:.2f} ms of CPU, so scraping once a second "
                f"takes {r['scrape_cpu_ms'] / 10:.2f} % of one core from the balancer; over the runs above the "
                f"scrapes come to {expected:+.2f} µs of daemon CPU per request.", "",
                "What the switch can and cannot save: the balancer's per-backend counters (responses by status "
                "class, the latency histogram, retries, errors, ejections, in-flight) are atomics the proxy keeps "
                "whether or not `/metrics` is served, because `jarfleet status` and canary judging read them; "
                "`/metrics` adds no work per request. So off vs on measures the cost of being scraped, and "
                "differences within a few percent are run-to-run noise of a shared 2-core machine "
                "(wrk, the balancer and both JVMs share the cores).", ""]
    if "latency" in r:
        l = r["latency"]
        m, s = l["metrics_ms"], l["status_ms"]
        mm, sm = statistics.median(m), statistics.median(s)
        cpu_note = (f"Daemon CPU per call (all of it, on and off the loop): `/metrics` {l['metrics_cpu_ms']:.2f} ms, "
                    f"`status` {l['status_cpu_ms']:.2f} ms (each measured over {args.calls} calls in a row).")
        out += [f"**`/metrics` and `status` with {args.instances} instances.** {args.instances} fixture JVMs "
                "(`-Xmx16m -Xss256k -XX:TieredStopAtLevel=1 -XX:+UseSerialGC`, "
                f"{l['jvm_rss_mib']:.0f} MiB resident in all, ready {l['start_s']:.0f} s after `up`) behind one "
                f"listen address, left to settle for {args.settle} s, 5 s of traffic through it; then {args.calls} sequential `GET /metrics` "
                "and `GET /v1/status` over the unix socket, each on a new connection, timed by the client "
                f"(Python). The exposition: {l['series']} series, {l['bytes'] / 1024:.0f} KiB. Loop time: what "
                "one call costs the control loop (from `jarfleet_control_busy_seconds_total` ÷ "
                "`jarfleet_control_events_total`); the rest of a `/metrics` call (procfs reads of every JVM, "
                "the balancer's counters, encoding) runs off the loop.", "",
                "| call | median (ms) | p90 (ms) | max (ms) | control loop per call (ms) | goal |",
                "|---|---:|---:|---:|---:|---|",
                f"| `GET /metrics` | {mm:.1f} | {pct(m, 0.9):.1f} | {max(m):.1f} | {l['loop_metrics_ms']:.2f} | "
                f"< 50 ms: {'met' if mm < 50 else '**missed**'} |",
                f"| `GET /v1/status` | {sm:.1f} | {pct(s, 0.9):.1f} | {max(s):.1f} | {l['loop_status_ms']:.2f} | "
                f"< 50 ms: {'met' if sm < 50 else '**missed**'} |",
                f"| `jarfleet status -o json` (whole CLI process, 20 calls) | "
                f"{statistics.median(l['status_cli_ms']):.1f} | {pct(l['status_cli_ms'], 0.9):.1f} | "
                f"{max(l['status_cli_ms']):.1f} | | |", "",
                "`status` samples every JVM's CPU and memory from `/proc` on the control loop (it keeps the "
                "previous CPU sample per instance to report a rate), hence its larger loop time; `/metrics` "
                "copies figures on the loop and reads `/proc` off it. " + cpu_note, ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
