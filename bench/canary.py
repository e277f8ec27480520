#!/usr/bin/env python3
"""Bad canaries: time from the clients' first error to the rollback, and how many errors the
clients saw, for canary error rates of 10 %, 30 % and 100 %.

One command:  python3 bench/canary.py [--step-time 3s] [--rates 0.1,0.3,1.0]

Starts a fleet of 2 fixture JVMs behind jarfleet's load balancer (release build), canary
strategy with steps [10, 50, 100] and `max_error_rate = 0.01`. For each rate: 4 client threads
GET `/` through the balancer (keep-alive) while `jarfleet deploy --wait` rolls out a release
whose `/` fails that share of requests. Measured: from the first failed response a client saw
to jarfleet's `deploy.rolling-back` event (the moment the canary's weight drops to 0), and the
client errors against the bound weight × error rate × requests in that window. Goal: rollback
within one `step_time`, errors within the bound. Writes "## Canary rollback" of
docs/BENCHMARKS.md. Talks only to 127.0.0.1; bounded in time; stops only what it started.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import ROOT, events, free_range, log, run  # noqa: E402
from docsection import replace_section  # noqa: E402

SECTION = "## Canary rollback"
FIRST_STEP = 10


def variant(src, dest, props):
    d = dest.parent / f".v-{dest.stem}"
    d.mkdir(exist_ok=True)
    (d / "jarfleet-fixture.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    shutil.copy(src, dest)
    run(["jar", "uf", str(dest), "-C", str(d), "jarfleet-fixture.properties"])
    return dest


class Load:
    """Client threads on keep-alive connections; every response recorded as (epoch ms, ok)."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop = threading.Event()
        self.samples = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def worker(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        local = []
        while not self.stop.is_set():
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                local.append((time.time() * 1000, r.status == 200))
            except Exception:
                local.append((time.time() * 1000, False))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        with self.lock:
            self.samples.extend(local)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(10)
        return sorted(self.samples)



def canary_fleet(jarfleet, prefix, canary, extra=""):
    """Builds jarfleet (unless `jarfleet` names a binary) and the fixture, and writes a spec of 2
    fixture JVMs (v1, `fast_start = false`: the coldest starts) behind the balancer with the
    canary strategy; `canary` is the inline `canary` table's contents, `extra` more spec text.
    Returns (jarfleet binary, fleet dir, env, fixture jar, balancer port)."""
    jf = jarfleet and str(Path(jarfleet).resolve())
    if not jf:
        log("building jarfleet (release)")
        run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT)
        jf = str(ROOT / "target" / "release" / "jarfleet")
    run(["bash", str(ROOT / "fixtures" / "app" / "build.sh")])
    fixture = ROOT / "fixtures" / "app" / "build" / "fixture-app.jar"
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    env = dict(os.environ, JARFLEET_STATE=str(tmp / "state"), NO_COLOR="1")
    v1 = variant(fixture, tmp / "v1.jar", {"version": "v1"})
    first, last = free_range(12)
    lb = last + 1
    (tmp / "jarfleet.toml").write_text(f"""
[apps.fx]
artifact = "{v1}"
instances = 2
ports = "{first}-{last}"
listen = "127.0.0.1:{lb}"
java = {{ opts = ["-Xmx48m", "-XX:+UseSerialGC"], fast_start = false }}

[apps.fx.health]
http = "/health"

[apps.fx.deploy]
strategy = "canary"
min_healthy = "0s"
canary = {{ {canary} }}
{extra}""")
    return jf, tmp, env, fixture, lb

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-time", default="3s")
    ap.add_argument("--rates", default="0.1,0.3,1.0")
    ap.add_argument("--jarfleet", help="jarfleet binary (default: cargo build --release)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    step_ms = float(args.step_time.rstrip("s")) * 1000
    jf, tmp, env, fixture, lb = canary_fleet(
        args.jarfleet, "jf-canary-",
        f'steps = [{FIRST_STEP}, 50, 100], step_time = "{args.step_time}", '
        'max_error_rate = 0.01, max_p99_ratio = 100.0',
        """
[apps.fx.balancer]
slow_start = "0s"
""")
    rows = []
    try:
        run([jf, "up", "-d", "--wait"], cwd=tmp, env=env)
        for i, rate in enumerate(float(r) for r in args.rates.split(",")):
            bad = variant(fixture, tmp / f"bad{i}.jar", {"version": f"bad{i}", "error-rate": rate})
            seen = {e["id"] for e in events(jf, env)}
            load = Load(lb)
            time.sleep(1)  # the load generator's own warm-up, not synchronisation
            subprocess.run([jf, "deploy", "fx", str(bad), "--wait"], cwd=tmp, env=env,
                           capture_output=True, timeout=300)
            samples = load.finish()
            new = [e for e in events(jf, env) if e["id"] not in seen]
            rollback = next((e["ts"] for e in new if e["kind"] == "deploy.rolling-back"), None)
            errors = [t for t, ok in samples if not ok]
            if rollback is None or not errors:
                raise SystemExit(f"rate {rate}: no rollback ({rollback}) or no client error")
            t_err = errors[0]
            history = json.loads(run([jf, "history", "fx", "-o", "json"], cwd=tmp, env=env).stdout)
            latest = max(history["deployments"], key=lambda d: d["id"])
            step_start = next(st["at"] for st in latest["steps"]
                              if st["message"].startswith("canary step 1 of"))
            # The first step: from the canary getting its share to the rollback.
            window = [s for s in samples if step_start <= s[0] <= rollback]
            in_window = len(window)
            window_errors = sum(1 for _, ok in window if not ok)
            after = sum(1 for t, ok in samples if not ok and t > rollback)
            bound = FIRST_STEP / 100 * rate * in_window
            rows.append((rate, rollback - t_err, window_errors, after, in_window, bound))
            log(f"rate {rate}: rollback {rollback - t_err:.0f} ms after the first client error; "
                f"{window_errors} client errors in the window (+{after} after), {in_window} requests, "
                f"bound {bound:.1f}")
    finally:
        subprocess.run([jf, "down"], cwd=tmp, env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    cmd = f"python3 bench/canary.py --step-time {args.step_time} --rates {args.rates}"
    lines = [SECTION, "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores; reproduce with `{cmd}`.", "",
             f"2 fixture JVMs behind jarfleet's balancer, canary steps [{FIRST_STEP}, 50, 100], `step_time = "
             f"\"{args.step_time}\"`, `max_error_rate = 0.01`; 4 keep-alive clients on `/`. Time: from the first failed "
             "response a client saw to the `deploy.rolling-back` event (the canary's weight drops to 0 then). "
             f"Window: the first step, from the canary getting its {FIRST_STEP} % to that event. Bound = "
             f"{FIRST_STEP} % × error rate × requests in the window.", "",
             "| canary error rate | first error → rollback (ms) | within one step_time | client errors in the window | requests in the window | bound | within bound | errors after the rollback |",
             "|---:|---:|---|---:|---:|---:|---|---:|"]
    for rate, took, errs, after, n, bound in rows:
        lines.append(f"| {rate:.0%} | {took:.0f} | {'yes' if took <= step_ms else '**no**'} | {errs} | {n} | "
                     f"{bound:.1f} | {'yes' if errs <= bound + 1 else '**no**'} | {after} |")
    lines += ["", "The step is judged when its `step_time` is up, so the first error comes at most one `step_time` "
              "before the rollback. \"Within bound\" allows one request of rounding (the balancer's split is exact "
              "to one request). "
              "Errors after the rollback are requests the canary had already accepted when its weight dropped "
              "to 0 (at most one per client connection).", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
