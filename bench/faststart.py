#!/usr/bin/env python3
"""Fast start: time from spawn to a healthy /health, as is vs jarfleet's accelerated start
(extracted Spring Boot layout where it applies + a trained class data archive).

    python3 bench/faststart.py [--runs 5] [--write-docs]

* builds `crates/java/examples/faststart.rs` (release) and the fixtures: `fixtures/boot`
  (a Spring-Boot-shaped fat jar, ~1500 classes loaded at start) and `fixtures/app` (the small
  plain-jar test service); installs Debian's `jetty9` when missing and makes a Jetty base with
  one static context;
* for each JDK found (the default JDK 17, and a JDK 25 under /usr/lib/jvm if there is one) runs
  the example: it trains the archives first, then alternates the modes run by run, and prints
  medians of RUNS;
* writes the "## Fast start" section of docs/BENCHMARKS.md with --write-docs.
"""
import argparse
import glob
import os
import subprocess
import tempfile
import time

from docsection import replace_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def jdks():
    out = []
    java = subprocess.run(["bash", "-c", "readlink -f $(command -v java)"], capture_output=True,
                          text=True).stdout.strip()
    if java:
        out.append(java)
    for home in sorted(glob.glob("/usr/lib/jvm/*25*")):
        j = os.path.join(home, "bin/java")
        if os.path.isfile(j) and os.path.realpath(j) not in out:
            out.append(os.path.realpath(j))
            break
    return out


def jetty(tmp):
    """A Jetty base with the http and deploy modules and one static context answering /health."""
    if not os.path.isfile("/usr/share/jetty9/start.jar"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "jetty9"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    base = os.path.join(tmp, "jetty-base")
    os.makedirs(os.path.join(base, "webapps/ROOT"), exist_ok=True)
    with open(os.path.join(base, "webapps/ROOT/health"), "w") as f:
        f.write("ok\n")
    subprocess.run(["java", "-jar", "/usr/share/jetty9/start.jar", "jetty.home=/usr/share/jetty9",
                    f"jetty.base={base}", "--add-to-start=http,deploy"], check=True, cwd=base,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "jarfleet-java", "--example", "faststart"],
                   cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target/release/examples/faststart")
    tmp = tempfile.mkdtemp(prefix="jf-faststart")
    subprocess.run(["bash", os.path.join(ROOT, "fixtures/boot/build.sh"), tmp], check=True,
                   stdout=subprocess.DEVNULL)
    boot_jar = os.path.join(tmp, "boot-app.jar")
    subprocess.run(["bash", os.path.join(ROOT, "fixtures/app/build.sh")], check=True, stdout=subprocess.DEVNULL)
    app_jar = os.path.join(ROOT, "fixtures/app/build/fixture-app.jar")
    jetty_base = jetty(tmp)
    apps = [("Spring-Boot-shaped fixture (`fixtures/boot`)", boot_jar, []),
            ("plain-jar fixture (`fixtures/app`)", app_jar, []),
            ("Jetty 9 from Debian (`jetty9`, `start.jar`, http + deploy, one static context)",
             "/usr/share/jetty9/start.jar",
             ["--arg", "jetty.home=/usr/share/jetty9", "--arg", f"jetty.base={jetty_base}",
              "--arg", "jetty.http.port={PORT}"])]
    sections = []
    for java in jdks():
        for title, jar, extra in apps:
            r = subprocess.run([exe, "--jar", jar, "--java", java, "--runs", str(args.runs)] + extra,
                               capture_output=True, text=True, timeout=1800)
            if r.returncode != 0:
                raise SystemExit(f"faststart failed for {jar} on {java}:\n{r.stderr}")
            print(f"{title} on {java}:\n{r.stdout}", flush=True)
            sections.append((title, java, r.stdout.strip()))
    lines = ["## Fast start", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} shared cores. Reproduce:", "",
             "```sh", f"python3 bench/faststart.py --runs {args.runs} --write-docs", "```", "",
             "Time from spawn to the first 200 on `/health` (polled every 10 ms), medians of "
             f"{args.runs} alternating runs; archives trained once before (a dynamic AppCDS "
             "archive on JDK 17, the AOT cache on JDK 25). `extracted` is the layout jarfleet runs a "
             "Spring Boot jar from; `+ archive` is what a jarfleet instance gets once its release "
             "is trained. Goal: ≤ 0.6× for Spring-Boot-layout apps.", ""]
    for title, java, table in sections:
        lines += [f"{title}, `{java}`:", "", table, ""]
    section = "\n".join(lines)
    if args.write_docs:
        replace_section("## Fast start", section)
    print(section)


if __name__ == "__main__":
    main()
