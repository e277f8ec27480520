#!/usr/bin/env python3
"""Bundle throughput: `jarfleet pack` and bundle verification of a 100 MB artifact, against the
work they cannot avoid (sha256 of the data, zstd at the same level), in the same run.

    python3 bench/bundle.py [--size-mb 100] [--runs 3] [--write-docs]

* builds the release binary (`cargo build --release -p jarfleet`);
* makes a SIZE MB jar of random bytes (jars are compressed already: random data is the honest
  case for the compressor);
* pack: `jarfleet pack` vs the floor `sha256sum JAR` + `zstd -LEVEL -T1 JAR` (run one after the
  other, as pack hashes, then compresses);
* verify: `jarfleet install BUNDLE --dry-run` (reads the manifest, checks every file's sha256
  and size while decompressing; writes nothing) vs the floor `zstd -dc BUNDLE | sha256sum`;
* medians of RUNS, with the page cache warm (a first untimed pass reads everything once).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from docsection import replace_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def zstd_level():
    text = open(os.path.join(ROOT, "crates/bundle/src/pack.rs")).read()
    m = re.search(r"const ZSTD_LEVEL: i32 = (\d+);", text)
    return int(m.group(1)) if m else 3


def timed(argv, **kw):
    t = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.monotonic() - t


def timed_shell(cmd):
    t = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if not shutil.which("zstd"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "zstd"], check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "jarfleet"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target/release/jarfleet")
    level = zstd_level()
    tmp = tempfile.mkdtemp(prefix="jf-bundle-bench")
    try:
        jar = os.path.join(tmp, "big.jar")
        with open(jar, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1 << 20))
        out = os.path.join(tmp, "out")
        pack = [exe, "pack", jar, "--name", "big", "--version", "1", "-o", out]
        bundle = os.path.join(out, "big-1.jfb")
        verify = [exe, "install", bundle, "--prefix", os.path.join(tmp, "prefix"), "--dry-run"]
        floor_pack = f"sha256sum {jar} && zstd -q -{level} -T1 -c {jar} > /dev/null"
        floor_verify = f"zstd -q -dc {bundle} | sha256sum"
        timed(pack)  # warm the page cache
        times = {"pack": [], "floor_pack": [], "verify": [], "floor_verify": []}
        for _ in range(args.runs):
            times["pack"].append(timed(pack))
            times["floor_pack"].append(timed_shell(floor_pack))
            times["verify"].append(timed(verify))
            times["floor_verify"].append(timed_shell(floor_verify))
        med = {k: statistics.median(v) for k, v in times.items()}
        mb = args.size_mb
        rows = [
            ("pack", med["pack"], med["floor_pack"], f"sha256sum + zstd -{level} -T1"),
            ("verify", med["verify"], med["floor_verify"], "zstd -dc \\| sha256sum"),
        ]
        lines = ["## Bundle throughput", "",
                 f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores; a {mb} MB jar of random bytes, "
                 f"medians of {args.runs} runs, page cache warm. Reproduce:", "", "```sh",
                 f"python3 bench/bundle.py --size-mb {mb} --runs {args.runs} --write-docs", "```", "",
                 "| step | jarfleet (s) | MB/s | floor (s) | floor is | jarfleet / floor |",
                 "|---|---:|---:|---:|---|---:|"]
        for name, ours, floor, what in rows:
            lines.append(f"| {name} | {ours:.2f} | {mb / ours:.0f} | {floor:.2f} | {what} | {ours / floor:.2f}× |")
        lines += ["", "Goal: limited by disk and sha256, not by us — i.e. close to the floor of the work itself "
                  "(hashing and zstd at the bundle's level), each timed the same way.", ""]
        section = "\n".join(lines)
        print(section)
        if args.write_docs:
            replace_section("## Bundle throughput", section)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
