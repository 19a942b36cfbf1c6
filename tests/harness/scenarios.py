"""Checks that several test files make on live mounts."""
from __future__ import annotations

import errno
import threading

from .mounts import Mount, eventually


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
