"""Mounting helpers shared by the tests (and usable from a Python shell)."""
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
import threading
import time

from lighthousefs.cli import process_running

BAD_LOG_MARKERS = ("Traceback", "unexpectedly")


@dataclasses.dataclass
class Mount:
    path: pathlib.Path
    store: str
    log: pathlib.Path
    pid: int   # the daemon's, as `lighthouse mount` reported it: known without asking the mount

    def __truediv__(self, other) -> pathlib.Path:
        return self.path / other

    def log_problems(self) -> list[str]:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if any(m in line for m in BAD_LOG_MARKERS)]


def lighthouse(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lighthousefs.cli", *args], capture_output=True,
                          text=True, check=check, timeout=120, **kw)


def mount(path: pathlib.Path, store: str, *args: str, log: pathlib.Path, env: dict | None = None) -> Mount:
    """`store` "": no --store (the URL comes by `env` or --store-file in args)."""
    path.mkdir(parents=True, exist_ok=True)
    store_args = ["--store", store] if store else []
    result = lighthouse("mount", str(path), *store_args, "--log", str(log), *args, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"mount failed ({result.returncode}): {result.stderr}")
    return Mount(path, store, log, int(re.search(r"\(pid (\d+)", result.stdout).group(1)))


def is_mounted(path) -> bool:
    target = os.path.abspath(path)
    return target in mounts_under(target)


def mounts_under(root: str) -> list[str]:
    """Mount points at or below root, read from /proc/self/mountinfo: a stat of a
    dead FUSE mount would fail and one of a hung mount would block."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        # Field 5 is the mount point, with space, tab, newline and backslash as \ooo.
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
                  for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]


def unmount_all(root: str) -> None:
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
                if subprocess.run(argv, capture_output=True, timeout=30).returncode == 0:
                    break


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


def busy_node_still_sees_the_other(a, b) -> None:
    """a writes without pause (its follower wakes for its own appends and pauses); b's
    changes still reach a, and a's reach b."""
    (a / "projects" / "busy").mkdir()
    eventually(lambda: (b / "projects" / "busy").is_dir())
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_writing():
        i = 0
        try:
            while not stop.is_set():
                (a / "projects" / "busy" / f"a{i % 50}").write_text(str(i))
                i += 1
        except BaseException as exc:   # reported by the test below, not lost in the thread
            failures.append(exc)
    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        for i in range(20):
            (b / "projects" / "busy" / f"b{i}").write_text(f"from b {i}")
            eventually(lambda i=i: (a / "projects" / "busy" / f"b{i}").read_text() == f"from b {i}")
        eventually(lambda: (b / "projects" / "busy" / "a49").exists())
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not writer.is_alive() and not failures, failures


def assert_eio_and_the_store_still_trusted(m: "Mount", path, reads: int = 5) -> None:
    """Reading `path` answers EIO every time (more than the store breaker's failure
    threshold), and the store's circuit stays closed: a damaged or missing chunk is an
    answer of a healthy store, never a store failure."""
    import errno
    for _ in range(reads):
        try:
            with open(path, "rb") as f:
                f.read()
        except OSError as exc:
            assert exc.errno == errno.EIO, exc
        else:
            raise AssertionError(f"{path} was read without an error")
    stats = (m / ".lighthouse" / "stats").read_text()
    assert 'lighthousefs_breaker_state{breaker="store"} 0.0' in stats
    assert 'lighthousefs_breaker_transitions_total{breaker="store",state="open"}' not in stats
