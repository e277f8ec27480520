"""Free loopback ports for the benchmarks (asked of the OS, checked by binding)."""

import socket


def free_port():
    """One port the OS says is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(n):
    """`n` consecutive free ports (first, last), for an app's `ports` range."""
    for _ in range(200):
        base = max(10000, free_port() - 20000)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as t:
                try:
                    t.bind(("0.0.0.0", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base, base + n - 1
    raise SystemExit("no free port range")
