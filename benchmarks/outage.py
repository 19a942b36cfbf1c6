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
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.harness.redis_servers import RedisServer

from .mounts import install_handlers, kill, lighthouse_cmd, lighthouse_env, run_cleanups, sweep, unmount
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
    """Run the outage in a temp dir; the mount, its daemon, Redis and the dir are gone
    when this returns or raises (an error, Ctrl-C, SIGTERM)."""
    work = Path(tempfile.mkdtemp(prefix="lhbench-outage-"))
    mnt = work / "mnt"
    resources = {}   # what exists so far, for the teardown
    try:
        return _measure(work, mnt, resources, iterations)
    finally:
        # A second Ctrl-C (or SIGTERM) must not cut the teardown short: it is bounded
        # (every command and wait in it has a timeout), and it is what leaves nothing behind.
        shielded = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            _teardown(work, mnt, resources)
        finally:
            for sig, handler in shielded.items():
                signal.signal(sig, handler)


def _teardown(work: Path, mnt: Path, resources: dict) -> None:
    """Unmount, wait for the daemon to exit (killed if it does not), stop Redis, remove
    the dir. Each step is tried whatever happened to the one before; the sweep then
    reaches what no step could (a daemon whose mount command was interrupted before it
    named its pid, a dead mount). Never raises."""
    steps = [("unmount", lambda: unmount(mnt)),
             ("stop the daemon", lambda: _stop_daemon(resources.get("daemon"))),
             ("stop redis-server", lambda: resources["redis"].stop() if "redis" in resources else None)]
    for what, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - the teardown must go on
            print(f"cleanup failed: {what}: {e}", file=sys.stderr)
    left = sweep(work)
    if left:
        print(f"cleanup: swept up {', '.join(left)}", file=sys.stderr)


def _stop_daemon(pid: int | None, timeout: float = 30) -> None:
    """The daemon exits by itself once unmounted (after storing a snapshot); give it
    `timeout` seconds, then SIGTERM and SIGKILL."""
    if pid is None:
        return
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        kill(pid)


def _measure(work: Path, mnt: Path, resources: dict, iterations: int) -> dict:
    redis = resources["redis"] = RedisServer(dir=str(work), appendfsync="everysec", own_session=True)
    redis.start()
    mnt.mkdir()
    mounted = subprocess.run(lighthouse_cmd() + ["mount", str(mnt), "--store", redis.url, "--log", str(work / "d.log")],
                             check=True, env=lighthouse_env(), capture_output=True, text=True, timeout=60)
    resources["daemon"] = int(re.search(r"\(pid (\d+)", mounted.stdout).group(1))
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
    redis.restart(keep_data=True)   # returns once it answers PING
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
