#!/usr/bin/env python3
"""Healthy canaries of cold JVMs: how many of N canary deploys of the same code (a new version
string only) are promoted with `step_time = "8s"` and the default judgement settings, and
whether a canary answering 30 % 500s is still rolled back at its first step.

One command:  python3 bench/canary_cold.py [--repeat 10] [--step-time 8s]

Starts a fleet of 2 fixture JVMs behind jarfleet's load balancer (release build), canary
strategy with the default steps [5, 25, 50, 100] and the default `max_error_rate`,
`max_p99_ratio`, `latency_floor` and `warmup_requests`; `java.fast_start = false` (the
coldest JVMs). 4 keep-alive client threads GET `/` through the balancer throughout. Then
`--repeat` times: `jarfleet deploy fx vN.jar --wait` (same code, new version) — promoted or
rolled back, with the reason. Last, one deploy of a jar answering 30 % of its requests with
500: it must be rolled back at step 1. Prints "promoted K of N" and writes
"## Canary of cold JVMs" of docs/BENCHMARKS.md. Talks only to 127.0.0.1; bounded in time;
stops only what it started.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from canary import Load, canary_fleet, variant  # noqa: E402
from deploy import log, run  # noqa: E402
from docsection import replace_section  # noqa: E402

SECTION = "## Canary of cold JVMs"


def latest(jf, env, cwd):
    history = json.loads(run([jf, "history", "fx", "-o", "json"], cwd=cwd, env=env).stdout)
    return max(history["deployments"], key=lambda d: d["id"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--step-time", default="8s")
    ap.add_argument("--jarfleet", help="jarfleet binary (default: cargo build --release)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    jf, tmp, env, fixture, lb = canary_fleet(
        args.jarfleet, "jf-canary-cold-", f'step_time = "{args.step_time}"')
    runs = []
    bad_result = None
    started = time.time()
    try:
        run([jf, "up", "-d", "--wait"], cwd=tmp, env=env)
        load = Load(lb)
        time.sleep(2)  # the stable set's own warm-up under load, not synchronisation
        for i in range(args.repeat):
            jar = variant(fixture, tmp / f"v{i + 2}.jar", {"version": f"v{i + 2}"})
            t0 = time.time()
            subprocess.run([jf, "deploy", "fx", str(jar), "--wait"], cwd=tmp, env=env,
                           capture_output=True, timeout=600)
            d = latest(jf, env, tmp)
            runs.append((d["outcome"], d.get("reason") or "", time.time() - t0))
            log(f"run {i + 1}: {d['outcome']} in {time.time() - t0:.0f} s {d.get('reason') or ''}")
        bad = variant(fixture, tmp / "bad.jar", {"version": "bad", "error-rate": 0.3})
        subprocess.run([jf, "deploy", "fx", str(bad), "--wait"], cwd=tmp, env=env,
                       capture_output=True, timeout=600)
        d = latest(jf, env, tmp)
        bad_result = (d["outcome"], d.get("reason") or "")
        log(f"30 % 500s: {bad_result}")
        samples = load.finish()
    finally:
        subprocess.run([jf, "down"], cwd=tmp, env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    promoted = sum(1 for o, _, _ in runs if o == "succeeded")
    print(f"promoted {promoted} of {len(runs)}")
    bad_ok = bad_result is not None and bad_result[0] == "rolled-back" and \
        "canary step 1 " in bad_result[1]
    cmd = f"python3 bench/canary_cold.py --repeat {args.repeat} --step-time {args.step_time}"
    load_avg = os.getloadavg()
    lines = [SECTION, "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores (load average "
             f"{load_avg[0]:.1f} at the end, shared with other work); reproduce with `{cmd}`.", "",
             "2 fixture JVMs (`-Xmx48m -XX:+UseSerialGC`, `fast_start = false`: the coldest starts) behind "
             "jarfleet's balancer, canary with the default steps [5, 25, 50, 100] and judgement settings "
             f"(`max_error_rate = 0.01`, `max_p99_ratio = 1.5`, `latency_floor = \"5ms\"`, "
             f"`warmup_requests = 200`), `step_time = \"{args.step_time}\"`; 4 keep-alive clients on `/` "
             f"throughout ({len(samples)} requests in {time.time() - started:.0f} s). Each run deploys the same "
             "code with a new version string: every canary is a set of freshly started JVMs judged against a "
             "warm stable set.", "",
             f"**Promoted: {promoted} of {len(runs)}** (goal: at least 9 of 10).", "",
             "| run | outcome | took (s) | reason |", "|---:|---|---:|---|"]
    for i, (outcome, reason, took) in enumerate(runs):
        lines.append(f"| {i + 1} | {outcome} | {took:.0f} | {reason.replace('|', '/')} |")
    lines += ["", f"A canary answering 30 % of its requests with 500: {bad_result[0] if bad_result else '?'}"
              f"{' at step 1' if bad_ok else ''} — `{(bad_result or ('', ''))[1]}`.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
