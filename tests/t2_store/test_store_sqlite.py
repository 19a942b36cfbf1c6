"""The embedded store's follower wake-up: inotify on the store's directory, with
polling where inotify is unavailable."""
from __future__ import annotations

import subprocess
import sys
import threading

import inotify_simple
import pytest

from lighthousefs import errors
from lighthousefs.store import sqlite as store_sqlite
from lighthousefs.store.sqlite import SQLiteStore

APPEND_FROM_ANOTHER_PROCESS = """
import sys, time
from lighthousefs.domain.events import Draft
from lighthousefs.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
time.sleep(0.3)   # let the parent start waiting
store.append([Draft("note", "projects/a", {}, "other")], {}, sys.argv[2] == "durable")
store.close()
"""


def finish(child: subprocess.Popen) -> None:
    """Wait for the appending child; a hung one is killed, not left behind."""
    try:
        child.wait(timeout=30)
    finally:
        child.kill()


@pytest.mark.parametrize("durability", ["durable", "normal"])
def test_an_append_by_another_process_wakes_the_waiter(tmp_path, monkeypatch, durability):
    """The waiter sleeps in the inotify read and is woken by the file event, not by
    the timeout of that read (pushed to 60 s, past the wait's own 20 s)."""
    monkeypatch.setattr(store_sqlite, "IDLE_CHECK_S", 60.0)
    path = str(tmp_path / "store.db")
    store = SQLiteStore(path)
    watch = store._watcher()
    reads = []
    real_read = watch.read
    monkeypatch.setattr(watch, "read", lambda **kw: reads.append(real_read(**kw)) or reads[-1])
    child = subprocess.Popen([sys.executable, "-c", APPEND_FROM_ANOTHER_PROCESS, path, durability])
    try:
        assert store.wait_for_events(0, 20.0) == 1
        assert reads and all(reads), "the waiter was not woken by a file event"
    finally:
        finish(child)
        store.close()


@pytest.mark.expect_log("no inotify .* polling the log")
def test_without_inotify_the_waiter_polls(tmp_path, monkeypatch, caplog):
    def no_inotify():
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(inotify_simple, "INotify", no_inotify)
    path = str(tmp_path / "store.db")
    store = SQLiteStore(path)
    child = subprocess.Popen([sys.executable, "-c", APPEND_FROM_ANOTHER_PROCESS, path, "normal"])
    try:
        assert store.wait_for_events(0, 20.0) == 1
        assert store._watch is None
        assert "no inotify" in caplog.text
    finally:
        finish(child)
        store.close()


def test_a_wait_on_a_quiet_store_times_out(tmp_path):
    store = SQLiteStore(str(tmp_path / "store.db"))
    assert store.wait_for_events(0, 0.05) == 0
    store.close()


def test_close_during_a_wait_ends_the_wait_and_closes_the_watch_once(tmp_path, monkeypatch):
    """close() while the waiter sleeps in the inotify read leaves the fd to the waiter
    (no fd is closed under a read), and the waiter then ends."""
    store = SQLiteStore(str(tmp_path / "store.db"))
    watch = store._watcher()
    in_read, release = threading.Event(), threading.Event()

    def slow_read(**kw):
        in_read.set()
        release.wait(10)
        return []
    monkeypatch.setattr(watch, "read", slow_read)
    outcome = []

    def wait():
        try:
            outcome.append(store.wait_for_events(0, 30.0))
        except errors.StoreUnavailable as exc:
            outcome.append(exc)
    waiter = threading.Thread(target=wait)
    waiter.start()
    assert in_read.wait(10)
    store.close()
    assert store._watch is watch and not watch.closed   # still being read
    release.set()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and isinstance(outcome[0], errors.StoreUnavailable)
    assert store._watch is None and watch.closed
