"""What an operation costs while Redis is down, and how long recovery takes.

    python -m benchmarks.outage [--iterations 200]

Mounts lighthousefs on a private redis-server, kills Redis, and times writes (which
must fail with EIO, quickly) and reads served from memory; then restarts Redis on the
same data and times until a write succeeds again (the breaker's probe closing it).
Prints and returns a JSON summary; everything is cleaned up on the way out.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from .mounts import Redis, cleanup, install_handlers, lighthouse_cmd, lighthouse_env, run_cleanups, unmount
from .stats import summarize


def _timed(fn, n):
    samples, failures = [], 0
    for i in range(n):
        started = time.perf_counter_ns()
        try:
            fn(i)
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            failures += 1
        samples.append(time.perf_counter_ns() - started)
    return summarize(samples), failures


def measure(iterations: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lhbench-outage-"))
    redis = Redis(work)
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(lighthouse_cmd() + ["mount", str(mnt), "--store", redis.url, "--log", str(work / "d.log")],
                   check=True, env=lighthouse_env(), capture_output=True, timeout=60)
    cleanup(f"unmount {mnt}", unmount, mnt)
    project = mnt / "projects" / "p"
    project.mkdir()
    (project / "kept").write_bytes(b"x" * 4096)
    redis.stop()

    def write(i):
        with open(project / f"new{i}", "wb") as f:
            f.write(b"y")

    out = {"iterations": iterations}
    out["write_while_down"], out["write_failures"] = _timed(write, iterations)
    out["mkdir_while_down"], out["mkdir_failures"] = _timed(lambda i: os.mkdir(project / f"d{i}"), iterations)
    out["cat_while_down"], out["cat_failures"] = _timed(lambda i: (project / "kept").read_bytes(), iterations)
    out["stat_while_down"], _ = _timed(lambda i: os.stat(project / "kept"), iterations)
    # Back on the same data (AOF): time until a write succeeds again.
    restarted = time.monotonic()
    redis.proc = subprocess.Popen(
        ["redis-server", "--port", str(redis.port), "--bind", "127.0.0.1", "--dir", str(work),
         "--save", "", "--appendonly", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True)
    while True:
        try:
            write("back")
            break
        except OSError:
            if time.monotonic() - restarted > 60:
                raise
            time.sleep(0.01)
    out["recovery_s"] = round(time.monotonic() - restarted, 3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outage")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args(argv)
    install_handlers()
    try:
        result = measure(args.iterations)
    finally:
        run_cleanups()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
