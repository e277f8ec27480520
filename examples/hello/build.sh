#!/usr/bin/env bash
# Rebuilds examples/hello/hello.jar from src/ with javac --release 11 (runs on any JDK >= 11).
# Usage: examples/hello/build.sh   (from any directory; safe to run again)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/javac" ]]; then
    javac="$JAVA_HOME/bin/javac"; jar="$JAVA_HOME/bin/jar"
else
    javac="$(command -v javac || true)"; jar="$(command -v jar || true)"
fi
if [[ -z "$javac" || -z "$jar" ]]; then
    echo "javac not found: install a JDK (apt-get install -y openjdk-17-jdk-headless)" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
find "$here/src" -name '*.java' -print0 | sort -z | xargs -0 \
    "$javac" --release 11 -encoding UTF-8 -d "$tmp/classes"
# Fixed entry times (jar --date, JDK 17+) keep the committed jar byte-identical across rebuilds.
date_opt=()
if "$jar" --help 2>&1 | grep -q -- '--date'; then date_opt=(--date=2024-01-01T00:00:00Z); fi
"$jar" --create --file "$tmp/hello.jar" ${date_opt[@]+"${date_opt[@]}"} --main-class hello.Hello -C "$tmp/classes" .
mv -f "$tmp/hello.jar" "$here/hello.jar"
echo "built $here/hello.jar"
