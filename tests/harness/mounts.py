"""Real lighthousefs mounts for the tests and the benchmarks (and a Python shell):
run this checkout's `lighthouse`, mount, read the mount table, unmount without hanging.

Every mount made by `mount()` is recorded in `started`, so the log checker
(tests/checklogs.py) reads each daemon's log after its test, however it was mounted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time

from lighthousefs import mounttable
from lighthousefs.cli import process_running

from . import REPO


@dataclasses.dataclass
class Mount:
    path: pathlib.Path
    store: str
    log: pathlib.Path
    pid: int   # the daemon's, as `lighthouse mount` reported it: known without asking the mount

    def __truediv__(self, other) -> pathlib.Path:
        return self.path / other


started: list[Mount] = []   # every mount() so far; the log checker takes them after each test


def lighthouse_cmd() -> list[str]:
    """The argv that runs this checkout's CLI."""
    return [sys.executable, "-m", "lighthousefs.cli"]


def lighthouse_env(env: dict | None = None, *paths) -> dict:
    """`env` (default: ours) with this checkout (and `paths`) first on PYTHONPATH, so
    `lighthouse_cmd()` runs this checkout's package from any working directory."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), *map(str, paths), env.get("PYTHONPATH")]))
    return env


def lighthouse(*args: str, check: bool = True, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*lighthouse_cmd(), *args], capture_output=True, text=True, check=check,
                          timeout=120, env=lighthouse_env(env), **kw)


def mount(path: pathlib.Path, store: str, *args: str, log: pathlib.Path, env: dict | None = None) -> Mount:
    """`store` "": no --store (the URL comes by `env` or --store-file in args)."""
    path.mkdir(parents=True, exist_ok=True)
    store_args = ["--store", store] if store else []
    result = lighthouse("mount", str(path), *store_args, "--log", str(log), *args, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"mount failed ({result.returncode}): {result.stderr}")
    m = Mount(path, store, log, int(re.search(r"\(pid (\d+)", result.stdout).group(1)))
    started.append(m)
    return m


def is_mounted(path) -> bool:
    """From the mount table: a dead FUSE mount fails os.path.ismount's stat, yet is there."""
    return bool({os.path.abspath(path), os.path.realpath(path)} & set(mounts_under(path)))


def mounts_under(root) -> list[str]:
    """Mount points at or below root (as given and with symlinks resolved), in mount
    order, from the mount table: a stat of a dead FUSE mount would fail and one of a
    hung mount would block."""
    points = []
    for r in dict.fromkeys([os.path.abspath(root), os.path.realpath(root)]):
        points += [e.point for e in mounttable.mounts_under(r) if e.point not in points]
    return points


def unmount_all(root) -> None:
    """Unmount every mount at or below root, deepest first: fusermount3 -u, then
    umount, then lazily (-uz, -l). Repeated while mounts remain (stacked ones), at
    most five rounds; a mount that resists them all is left for the caller to see."""
    for _ in range(5):
        points = sorted(mounts_under(root), key=len, reverse=True)
        if not points:
            return
        for point in points:
            for argv in (["fusermount3", "-u", point], ["umount", point],
                         ["fusermount3", "-uz", point], ["umount", "-l", point]):
                try:
                    if subprocess.run(argv, capture_output=True, timeout=30).returncode == 0:
                        break
                except subprocess.TimeoutExpired:
                    pass


def unmount_quietly(path, pid: int | None = None) -> None:
    """Unmount, waiting for the daemon; lazily detach if that fails. Never raises.
    With the pid known, nothing is read through the mount (a frozen one would hang)."""
    if not is_mounted(path):
        return
    if pid is None:
        try:
            pid = json.loads((pathlib.Path(path) / ".lighthouse" / "health").read_bytes())["pid"]
        except (OSError, ValueError):
            pid = None
    if subprocess.run(["fusermount3", "-u", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)
    deadline = time.monotonic() + 20
    while pid and process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid and process_running(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def unmount_those_on(address: str) -> None:
    """Unmount every mount of the running test (`started`) whose store URL names
    `address` ("host:port"): before that server stops for good."""
    for m in started:
        if re.search(re.escape(address) + r"(?![0-9])", m.store.split("?")[0]) and is_mounted(m.path):
            unmount_quietly(m.path, m.pid)


def eventually(check, timeout: float = 10.0, interval: float = 0.01):
    """Poll `check` until it returns a truthy value or raises nothing; for propagation
    between mounts, which follow the shared store asynchronously. Not a timing assertion:
    the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def next_line(proc: subprocess.Popen, timeout: float = 30) -> str:
    """The process's next output line; a silent process fails the test instead of hanging
    it. Its stdout must be unbuffered (bufsize=0), so select sees every line."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    line = proc.stdout.readline()
    return line.decode() if isinstance(line, bytes) else line
