#!/usr/bin/env python3
"""Rolling deploy duration vs. the instances' own start-to-ready times.

One command:  python3 bench/deploy.py [--runs 5] [--instances 3] [--min-healthy 0s]

Starts a fleet of fixture JVMs with jarfleet (release build), then deploys v2, v1, v2, ... with
`jarfleet deploy --wait`, timing each deployment end to end, and reads jarfleet's own events to
sum the start-to-ready time (spawned -> ready) of the instances each deployment started. The
orchestration overhead is deploy time / that sum - 1 (goal: under 20 %). Writes the section
"## Rolling deploy" of docs/BENCHMARKS.md. Talks only to 127.0.0.1; bounded in time; stops only
what it started.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docsection import replace_section
from ports import free_range

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"
SECTION = "## Rolling deploy"


def log(msg):
    print(f"[deploy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)




def variant(src, dest, version):
    d = dest.parent / f".v-{version}"
    d.mkdir(exist_ok=True)
    (d / "jarfleet-fixture.properties").write_text(f"version={version}\n")
    shutil.copy(src, dest)
    run(["jar", "uf", str(dest), "-C", str(d), "jarfleet-fixture.properties"])
    return dest


def events(jf, env):
    out = run([jf, "events", "-o", "json", "-n", "100000"], env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--min-healthy", default="0s")
    ap.add_argument("--jarfleet", help="jarfleet binary (default: cargo build --release)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    deadline = time.time() + args.timeout

    jf = args.jarfleet
    if not jf:
        log("building jarfleet (release)")
        run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT)
        jf = str(ROOT / "target" / "release" / "jarfleet")
    run(["bash", str(ROOT / "fixtures" / "app" / "build.sh")])
    fixture = ROOT / "fixtures" / "app" / "build" / "fixture-app.jar"

    tmp = Path(tempfile.mkdtemp(prefix="jf-deploy-"))
    env = dict(os.environ, JARFLEET_STATE=str(tmp / "state"), NO_COLOR="1")
    v1 = variant(fixture, tmp / "v1.jar", "v1")
    v2 = variant(fixture, tmp / "v2.jar", "v2")
    first, last = free_range(args.instances * 2 + 4)
    (tmp / "jarfleet.toml").write_text(f"""
[apps.fx]
artifact = "{v1}"
instances = {args.instances}
ports = "{first}-{last}"
java = {{ opts = ["-Xmx48m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"] }}

[apps.fx.health]
http = "/health"

[apps.fx.deploy]
min_healthy = "{args.min_healthy}"
""")
    results = []
    try:
        run([jf, "up", "-d", "--wait"], cwd=tmp, env=env)
        for n in range(args.runs):
            if time.time() > deadline:
                raise SystemExit("deadline reached")
            jar = v2 if n % 2 == 0 else v1
            seen = {e["id"] for e in events(jf, env)}
            t0 = time.monotonic()
            run([jf, "deploy", "fx", str(jar), "--wait"], cwd=tmp, env=env)
            took = (time.monotonic() - t0) * 1000
            new = [e for e in events(jf, env) if e["id"] not in seen]
            spawned = {e["slot"]: e["ts"] for e in new if e["kind"] == "instance.spawned"}
            ready = {e["slot"]: e["ts"] for e in new if e["kind"] == "instance.ready"}
            starts = [ready[s] - spawned[s] for s in spawned if s in ready]
            if len(starts) != args.instances:
                raise SystemExit(f"run {n}: expected {args.instances} new instances, saw {starts}")
            own = sum(starts)
            results.append((took, own))
            log(f"run {n + 1}: deploy {took:.0f} ms, instances' own start-to-ready {own} ms "
                f"({', '.join(str(s) for s in starts)}), overhead {took / own - 1:+.0%}")
    finally:
        subprocess.run([jf, "down"], cwd=tmp, env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)

    took = statistics.median(r[0] for r in results)
    own = statistics.median(r[1] for r in results)
    overheads = sorted(r[0] / r[1] - 1 for r in results)
    over = statistics.median(overheads)
    cmd = f"python3 bench/deploy.py --runs {args.runs} --instances {args.instances} --min-healthy {args.min_healthy}"
    text = f"""{SECTION}

Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores; reproduce with `{cmd}`.

A rolling deploy of {args.instances} tiny fixture JVMs (`max_surge = 1`, `max_unavailable = 0`,
`min_healthy = "{args.min_healthy}"`), timed end to end by `jarfleet deploy --wait`, against the
sum of the new instances' own start-to-ready times (jarfleet's `instance.spawned` →
`instance.ready` events). Medians of {len(results)} deployments.

| deploy (ms) | Σ own start-to-ready (ms) | orchestration overhead | goal |
|---:|---:|---:|---|
| {took:.0f} | {own:.0f} | {over:+.0%} (runs: {', '.join(f'{o:+.0%}' for o in overheads)}) | < +20 % {'met' if over < 0.2 else '**missed**'} |

With the default `min_healthy = "10s"` each step also waits those 10 s on purpose; the overhead
above is what jarfleet itself adds (readiness polling, draining, stopping, the CLI's 200 ms
progress polling).
"""
    print(text)
    if not args.no_write:
        replace_section(SECTION, text)
        log(f"wrote {SECTION} of {DOC}")


if __name__ == "__main__":
    main()
