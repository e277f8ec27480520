#!/usr/bin/env python3
"""Cross-node traffic with and without the relay: what a request costs when a node's balancer
sends it to an instance on another node, straight to the instance's port (no `[cluster] tls`,
instances on every address) or through that node's relay over mutual TLS (`tls`, instances on
loopback only), measured through the real product.

One command (from the repository root, as root: it makes network namespaces):

    python3 bench/relay.py [--runs 5] [--duration 15] [--connections 32] [--write-docs]

For every run, both modes in a shuffled order, each on a fresh cluster built like
bench/cluster.py's: a network lab of 3 hosts (namespaces on a bridge), a 3-member etcd on the
bridge, `jarfleet up -d` of a node spec inside each host, and the fixture app as `web` with 4
instances placed only on n1 and n2 (`node_labels`), so that every request through n0's balancer
crosses hosts. With `tls` the CA and the certificates are made with `jarfleet cluster ca` /
`cluster cert`, etcd takes only clients with one of them, and the instances listen on
127.0.0.1. Once n0's balancer answers from all 4 JVMs: a 5 s warm-up, then
`wrk -t2 -cN -dDs --latency http://n0:8080/` from outside the hosts. Figures: requests/s
answered 200, p50 and p99 latency, failed requests.

Prints a markdown report; `--write-docs` writes it into docs/BENCHMARKS.md ("## Cluster relay").
Only the lab's 198.18.0.0/15 addresses are used; every process started here is stopped by pid
(etcd) or with the lab's namespaces (daemons, data planes, shims, JVMs), which are removed at
the end, on Ctrl-C and on errors too.
"""

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import cluster as cb  # noqa: E402 (bench/cluster.py: the lab, ports, etcd)
import docsection  # noqa: E402

SECTION = "## Cluster relay"
MODES = ["direct", "relay"]
HOSTS = 3
INSTANCES = 4
LISTEN = 8080


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


class TlsEtcd(cb.Etcd):
    """bench/cluster.py's etcd, serving https on the bridge with the cluster CA's certificates
    (clients must present one) and plain http on 127.0.0.1 for this script's health checks."""

    def __init__(self, dir, ip_, ports, pki):
        super().__init__(dir, ip_, ports)
        self.pki = pki

    def urls(self):
        return [f"https://{self.ip}:{m['client']}" for m in self.members]

    def client_args(self, m):
        return [f"--listen-client-urls=https://{self.ip}:{m['client']},http://127.0.0.1:{m['client']}",
                f"--advertise-client-urls=https://{self.ip}:{m['client']}",
                f"--cert-file={self.pki['etcd_cert']}", f"--key-file={self.pki['etcd_key']}",
                f"--trusted-ca-file={self.pki['ca']}", "--client-cert-auth"]

    def healthy(self, i):
        try:
            st, body = cb.http_call(("127.0.0.1", self.members[i]["client"]), "GET", "/health")
            return st == 200 and '"health":"true"' in body
        except OSError:
            return False


class Fleet:
    """One cluster of one mode: lab, etcd, a daemon per host, `web` on n1 and n2."""

    def __init__(self, b, dir, mode):
        self.b, self.dir, self.mode = b, dir, mode  # b: the Bench (jarfleet, jar, lab, etcd ports)
        self.lab = b.lab
        self.names = [f"n{i}" for i in range(HOSTS)]
        self.state = [os.path.join(dir, n, "state") for n in self.names]
        self.etcd = None

    def jf(self, i, *args, timeout=60, check=True):
        env = dict(os.environ, NO_COLOR="1")
        argv = [self.b.jarfleet, *args]
        if i is not None:
            env["JARFLEET_STATE"] = self.state[i]
            argv = ["ip", "netns", "exec", self.lab.netns[i], *argv]
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"jarfleet {' '.join(args)}: {r.returncode}: {(r.stderr or r.stdout).strip()[-400:]}")
        return r.stdout

    def pki(self):
        d = os.path.join(self.dir, "pki")
        ca = os.path.join(d, "ca")
        self.jf(None, "cluster", "ca", "--name", "bench", "--out", ca)
        nodes = os.path.join(d, "nodes")
        for i, n in enumerate(self.names):
            self.jf(None, "cluster", "cert", n, "--ca-dir", ca, "--address", self.lab.ips[i], "--out", nodes)
        self.jf(None, "cluster", "cert", "etcd", "--ca-dir", ca, "--address", self.lab.bridge_ip,
                "--out", os.path.join(d, "etcd"))
        return {"ca": os.path.join(ca, "ca.pem"), "nodes": nodes,
                "etcd_cert": os.path.join(d, "etcd", "etcd.pem"), "etcd_key": os.path.join(d, "etcd", "etcd.key")}

    def start(self):
        self.lab.build()
        edir = os.path.join(self.dir, "etcd")
        os.makedirs(edir, exist_ok=True)
        tls = self.mode == "relay"
        pki = self.pki() if tls else None
        self.etcd = TlsEtcd(edir, self.lab.bridge_ip, self.b.etcd_ports, pki) if tls else \
            cb.Etcd(edir, self.lab.bridge_ip, self.b.etcd_ports)
        self.etcd.start()
        endpoints = ", ".join(f'"{u}"' for u in self.etcd.urls())
        for i, n in enumerate(self.names):
            os.makedirs(os.path.join(self.dir, n), exist_ok=True)
            spec = os.path.join(self.dir, n, "node.toml")
            labels = 'labels = { role = "app" }\n' if i > 0 else ""
            tls_line = ""
            if tls:
                nodes = pki["nodes"]
                tls_line = (f'tls = {{ ca = "{pki["ca"]}", cert = "{nodes}/{n}.pem", '
                            f'key = "{nodes}/{n}.key" }}\n')
            with open(spec, "w") as f:
                f.write(f'[daemon]\nstate_dir = "{self.state[i]}"\n\n[cluster]\nname = "bench"\n'
                        f'etcd = [{endpoints}]\nnode = "{n}"\nadvertise = "{self.lab.ips[i]}"\n'
                        f'{labels}{tls_line}')
            self.jf(i, "up", "-d", "--wait", spec, timeout=120)
        deadline = time.monotonic() + 60
        while not all(self.registered(i) for i in range(HOSTS)):
            if time.monotonic() > deadline:
                raise RuntimeError("not every node registered")
            time.sleep(0.1)
        bind = "127.0.0.1" if tls else "0.0.0.0"
        apps = os.path.join(self.dir, "apps.toml")
        with open(apps, "w") as f:
            f.write(f'[apps.web]\nartifact = "{self.b.jar}"\ninstances = {INSTANCES}\n'
                    f'ports = "{cb.APP_PORTS[0]}-{cb.APP_PORTS[1]}"\nargs = ["--bind", "{bind}"]\n'
                    f'listen = "0.0.0.0:{LISTEN}"\njava = {{ opts = {cb.JVM_OPTS}, fast_start = false }}\n'
                    f'placement = {{ node_labels = {{ role = "app" }} }}\n\n'
                    f'[apps.web.health]\nhttp = "/health"\ninterval = "500ms"\n')
        self.jf(0, "apply", apps, timeout=120)
        self.wait_steady()

    def registered(self, i):
        try:
            rep = json.loads(self.jf(i, "cluster", "nodes", "-o", "json", check=True))
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            return False
        return (rep.get("leader") and len(rep["nodes"]) == HOSTS
                and all(n["state"] == "ready" for n in rep["nodes"]))

    def wait_steady(self, timeout=120.0):
        """n0's balancer answers from all 4 JVMs (all on n1 and n2)."""
        deadline = time.monotonic() + timeout
        probe = types.SimpleNamespace(lab=self.lab)  # all that Cluster.pids_through reads
        seen = set()
        while time.monotonic() < deadline:
            seen = cb.Cluster.pids_through(probe, 0, n=24)
            if len(seen) == INSTANCES:
                return
            time.sleep(0.5)
        raise RuntimeError(f"n0's balancer answered from {len(seen)} JVMs, not {INSTANCES}")

    def close(self):
        for ns in self.lab.netns:
            cb.kill_netns(ns)
        if self.etcd:
            self.etcd.stop()
        self.lab.remove()


def wrk(addr, seconds, conns, threads=2):
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "--latency",
            f"http://{addr}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            res[f"p{q}_ms"] = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed += sum(int(x) for x in m.groups()) if m else 0
    res["failed"] = failed
    res["ok_rps"] = rps * max(requests - failed, 0) / requests if requests else 0.0
    return res


class Bench(cb.Bench):
    """bench/cluster.py's: the binary copied, the lab index and etcd's ports claimed; one
    fleet at a time in `self.cluster`, closed with the rest by `close()`."""

    def run_one(self, mode, run):
        d = os.path.join(self.tmp, f"r{run}-{mode}")
        os.makedirs(d)
        out = {"mode": mode, "run": run}
        f = self.cluster = Fleet(self, d, mode)
        try:
            f.start()
            addr = f"{self.lab.ips[0]}:{LISTEN}"
            wrk(addr, 5, self.args.connections)
            out.update(wrk(addr, self.args.duration, self.args.connections))
        except Exception as e:  # noqa: BLE001 — recorded, reported, and the next run goes on
            out["error"] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
        finally:
            f.close()
            self.cluster = None
            shutil.rmtree(d, ignore_errors=True)
        return out


def spread(values):
    if not values:
        return "—", None
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})", (min(values), max(values))


def report(results, args, cmd, started, elapsed, load, mach, version):
    lines = [SECTION, "",
             f"Measured {started} on {mach}; {version}. Load average (1/5/15 min) {load[0]} at the start, "
             f"{load[1]} at the end. The whole command took {elapsed / 60:.0f} min.", "",
             "Reproduce (from the repository root, as root):", "", "```sh", cmd, "```", "",
             f"Each run of each mode gets a fresh cluster of {HOSTS} hosts (network namespaces on a bridge, a "
             f"3-member etcd, `jarfleet up -d` in each host) with the fixture app's {INSTANCES} instances "
             f"placed on n1 and n2 only, so every request through n0's balancer goes to another host. "
             f"**direct**: no `[cluster] tls`, instances on every address, the balancer connects to the "
             f"instance's port. **relay**: `tls` (certificates from `jarfleet cluster ca`/`cert`, etcd "
             f"over https with client certificates), instances on 127.0.0.1 only, the balancer reaches them "
             f"through the other node's relay over mutual TLS. Load: `wrk -t2 -c{args.connections} "
             f"-d{args.duration}s --latency` against n0's balancer from outside the hosts after a 5 s "
             f"warm-up; the two modes are shuffled within each run. Median (min–max) of {args.runs} runs:", "",
             "| | direct | relay |", "|---|---|---|"]
    by = {m: [r for r in results if r["mode"] == m and "error" not in r] for m in MODES}
    overlap_notes = []
    for key, label in (("ok_rps", "requests/s answered 200"), ("p50_ms", "p50 latency, ms"),
                       ("p99_ms", "p99 latency, ms")):
        cells, ranges = [], []
        for m in MODES:
            text, rng = spread([r[key] for r in by[m] if key in r])
            cells.append(text)
            ranges.append(rng)
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
        if all(ranges) and ranges[0][0] <= ranges[1][1] and ranges[1][0] <= ranges[0][1]:
            overlap_notes.append(label)
    failed = {m: sum(r.get("failed", 0) for r in by[m]) for m in MODES}
    lines.append(f"| failed requests (all runs) | {failed['direct']} | {failed['relay']} |")
    errors = [r for r in results if "error" in r]
    lines.append("")
    if overlap_notes:
        lines.append("The ranges of the two modes overlap for: " + ", ".join(overlap_notes) +
                     " — on this shared machine the difference there is within the noise.")
    else:
        lines.append("No range overlaps between the two modes.")
    if errors:
        lines.append("")
        lines.append(f"{len(errors)} run(s) did not complete: " +
                     "; ".join(f"{r['mode']} run {r['run']}: {r['error'][:200]}" for r in errors))
    lines.append("")
    lines.append("Per run: " + "; ".join(
        f"{r['mode']} {r.get('ok_rps', 0):.0f} req/s p50 {r.get('p50_ms', 0):.2f} ms p99 {r.get('p99_ms', 0):.2f} ms"
        for r in results if "error" not in r))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--jarfleet", help="the jarfleet binary (default: cargo build --release)")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark makes network namespaces, veths and a bridge")
    for tool in ("ip", "etcd", "java", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (apt-get install -y {'iproute2' if tool == 'ip' else tool})")
    shown, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--jarfleet":
            skip = True
            continue
        if a.startswith("--jarfleet="):
            continue
        shown.append(a)
    cmd = "python3 bench/relay.py " + " ".join(shown)
    jarfleet = args.jarfleet
    if not jarfleet:
        subprocess.run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT, check=True, timeout=3600)
        jarfleet = os.path.join(ROOT, "target", "release", "jarfleet")
    jarfleet = os.path.abspath(jarfleet)
    if not os.path.exists(cb.JAR):
        subprocess.run([os.path.join(ROOT, "fixtures", "app", "build.sh")], check=True, timeout=600)
    version = subprocess.run([jarfleet, "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if commit:
        version += f" (commit {commit}, a release build)"
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_start = "/".join(f"{x:.1f}" for x in os.getloadavg())
    mach = cb.machine()
    t0 = time.monotonic()
    results = []
    bench = Bench(args, jarfleet, cb.JAR)

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        for run in range(args.runs):
            order = MODES[:]
            random.shuffle(order)
            for mode in order:
                log(f"run {run + 1}/{args.runs}: {mode}")
                r = bench.run_one(mode, run)
                log(r)
                results.append(r)
    finally:
        bench.close()
    load_end = "/".join(f"{x:.1f}" for x in os.getloadavg())
    text = report(results, args, cmd, started, time.monotonic() - t0, (load_start, load_end), mach, version)
    print(text)
    if args.write_docs:
        docsection.replace_section(SECTION, text)


if __name__ == "__main__":
    main()
