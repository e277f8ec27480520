#!/usr/bin/env python3
"""Spec errors at scale: `jarfleet validate` of a spec with N bad app tables (one unknown key
each, so N errors), for growing N. Linear reporting keeps the time per error flat.

    python3 bench/spec_errors.py [--counts 2500,5000,10000,20000] [--runs 3] [--bin PATH] [--write-docs]

* builds the release binary (`cargo build --release -p jarfleet`) unless --bin is given;
* writes big-N.toml: N tables `[apps.appI]` with artifact, a port of its own and `bogus = 1`;
* times `jarfleet validate big-N.toml` (exit code 2 expected, every error printed), median of RUNS.
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

from docsection import replace_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_spec(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f'[apps.app{i}]\nartifact = "app.jar"\nports = "{10000 + i}"\nbogus = 1\n\n')


def run(binary, path, n):
    t = time.monotonic()
    p = subprocess.run([binary, "validate", path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=600)
    took = time.monotonic() - t
    last = p.stderr.decode(errors="replace").strip().splitlines()[-1]
    if p.returncode != 2 or not last.startswith(f"{n} errors"):
        raise SystemExit(f"unexpected result for {n}: exit {p.returncode}, last line {last!r}")
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="2500,5000,10000,20000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    binary = args.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "jarfleet")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(c) for c in args.counts.split(",")]:
            path = os.path.join(tmp, f"big-{n}.toml")
            write_spec(path, n)
            times = [run(binary, path, n) for _ in range(args.runs)]
            med = statistics.median(times)
            rows.append((n, med, med / n * 1e6))
            print(f"{n} errors: {med:.3f} s ({med / n * 1e6:.1f} µs per error)")
    table = "\n".join(f"| {n} | {s:.2f} | {per:.1f} |" for n, s, per in rows)
    text = f"""## Spec errors at scale

Measured {time.strftime('%Y-%m-%d')} on 2 cores (shared with other builds); medians of {args.runs} runs. Reproduce:

```sh
python3 bench/spec_errors.py --counts {args.counts} --runs {args.runs} --write-docs
```

`jarfleet validate` of a spec with N app tables, each with one unknown key (N errors, all
printed, exit code 2). Goal: linear, i.e. a flat time per error.

| errors | validate (s) | per error (µs) |
|---:|---:|---:|
{table}
"""
    print(text)
    if args.write_docs:
        replace_section("## Spec errors at scale", text)


if __name__ == "__main__":
    main()
