"""Outcomes are never ambiguous: a close() or fsync() that answers 0 has stored the
content, one that answers an error has not (and never will), on every node and after a
remount; and what the shell cannot see (close errors) is refused where it can.

Real mounts against a real redis-server that is frozen (SIGSTOP) or killed mid-stream.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import trio
import trio.testing
from tests.harness.mounts import eventually

from lighthousefs import errors
from lighthousefs.domain.events import Draft
from lighthousefs.domain.tree import Tree
from lighthousefs.engine.journal import Journal
from lighthousefs.store.guarded import REACHABLE_WITHIN_S
from lighthousefs.store.sqlite import SQLiteStore

# Writes until the stop file exists: each round a new file w<i> and a new version of o,
# each open+write+close reported as one JSON line [name, content, failed step or null].
WRITER = r"""
import json, os, sys, time
directory, stop = sys.argv[1], sys.argv[2]
i = 0
while not os.path.exists(stop):
    for name, data in ((f"w{i}", f"new {i}\n"), ("o", f"version {i}\n")):
        failed = None
        try:
            fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            failed = ["open", exc.errno]
        else:
            try:
                os.write(fd, data.encode())
            except OSError as exc:
                failed = ["write", exc.errno]
            try:
                os.close(fd)
            except OSError as exc:
                failed = failed or ["close", exc.errno]
        print(json.dumps([name, data, failed]), flush=True)
    i += 1
    time.sleep(0.05)
"""


def namespaced(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}namespace=o{uuid.uuid4().hex[:10]}"


def content(path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def write_through(mounter, tmp_path, url, disturb) -> list:
    """Mount a and b on one store, write a stream on a while disturb() runs; return
    the writer's reports. Redis must answer again when disturb() returns."""
    a, b = mounter("a", store=url), mounter("b", store=url)
    (a / "projects" / "p").mkdir()
    (a / "projects" / "p" / "o").write_text("version start\n")
    eventually(lambda: content(b / "projects" / "p" / "o") == "version start\n")
    stop, reports = tmp_path / "stop", tmp_path / "reports"
    with open(reports, "w") as out:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(a / "projects" / "p"), str(stop)], stdout=out)
    try:
        time.sleep(1.5)
        disturb()
        # Writes succeed again (the breaker closed, the heartbeat answered): the stream
        # ends with closes that stored their content.
        def recovered():
            lines = [json.loads(line) for line in reports.read_text().splitlines()]
            return len(lines) > 4 and not any(failed for _, _, failed in lines[-4:])
        eventually(recovered, timeout=60, interval=0.2)
    finally:
        stop.touch()
        writer.wait(timeout=120)
    lines = [json.loads(line) for line in reports.read_text().splitlines()]
    check_outcomes(lines, a, b)
    a_pid = a.pid
    subprocess.run(["fusermount3", "-u", str(a.path)], check=True)
    eventually(lambda: not os.path.exists(f"/proc/{a_pid}"), timeout=60)
    check_outcomes(lines, mounter("a", store=url))
    return lines


def check_outcomes(lines: list, *mounts) -> None:
    """Every content whose close answered 0 is stored; none whose open, write or close
    answered an error is."""
    stored = {name: data for name, data, failed in lines if failed is None}
    refused = [(name, data) for name, data, failed in lines if failed is not None]
    for m in mounts:
        directory = m / "projects" / "p"
        for name, data in stored.items():
            eventually(lambda name=name, data=data: content(directory / name) == data, timeout=30)
        # The newest version of o is the last one that answered 0; a refused file has
        # not its content (it may exist, empty: a create logged at once, its write refused).
        for name, data in refused:
            assert content(directory / name) != data, (m.path, name, data)


@pytest.mark.expect_log("following the store failed; retrying", "append on .*: no answer",
                        "the new file is dropped, its content was not stored",
                        "following the store again", "snapshot at \\d+ not stored", "circuit opens after", "store circuit \\S+ -> \\S+")
@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.mount
def test_close_answers_are_exact_through_a_redis_freeze(mounter, own_server, tmp_path):
    """SIGSTOP for 8 s mid-stream (longer than every timeout), then SIGCONT: what the
    frozen Redis had received runs late, and must not store what was reported failed."""
    def freeze():
        os.kill(own_server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(8)
        finally:
            os.kill(own_server.proc.pid, signal.SIGCONT)
    lines = write_through(mounter, tmp_path, namespaced(own_server.url), freeze)
    assert any(failed for _, _, failed in lines), "the freeze failed nothing: the test saw no outage"


@pytest.mark.expect_log("following the store failed; retrying", "circuit opens after",
                        "store circuit ", "store housekeeping failed, retrying later",
                        "the new file is dropped, its content was not stored",
                        "following the store again", "snapshot at \\d+ not stored")
@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.mount
def test_close_answers_are_exact_through_a_redis_kill_and_restart(mounter, own_server, tmp_path):
    def kill_and_restart():
        own_server.kill()
        time.sleep(3)
        own_server.restart(keep_data=True)
    lines = write_through(mounter, tmp_path, namespaced(own_server.url), kill_and_restart)
    assert any(failed for _, _, failed in lines), "the kill failed nothing: the test saw no outage"


@pytest.mark.expect_log("following the store failed; retrying", "following the store again",
                        "snapshot at \\d+ not stored")
@pytest.mark.redis
@pytest.mark.mount
def test_shell_redirects_fail_visibly_while_redis_is_down(mounter, own_server):
    """bash ignores close(): with Redis down, `echo x > new` and `echo x > existing`
    must fail at create, open or write, print the error and exit non-zero."""
    m = mounter("a", store=namespaced(own_server.url))
    p = m / "projects" / "p"
    p.mkdir()
    (p / "existing").write_text("old\n")
    own_server.kill()
    # As soon as the daemon saw a store call fail (here its follower's), and in any case
    # REACHABLE_WITHIN_S after the last answer, nothing is accepted that close() could lose.
    eventually(lambda: "following the store failed" in m.log.read_text(), timeout=REACHABLE_WITHIN_S + 5)
    for target in ("new", "existing"):
        result = subprocess.run(["bash", "-c", f"echo x > {target}"], cwd=p, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0 and "Input/output error" in result.stderr, (target, result)
    assert not (p / "new").exists()
    assert (p / "existing").read_text() == "old\n"
    own_server.restart(keep_data=True)
    eventually(lambda: subprocess.run(["bash", "-c", "echo y > new"], cwd=p, timeout=60).returncode == 0,
               timeout=30, interval=0.2)
    second = mounter("b", store=m.store)
    assert (second / "projects" / "p" / "new").read_text() == "y\n"
    assert (second / "projects" / "p" / "existing").read_text() == "old\n"


@pytest.mark.expect_log("store housekeeping failed, retrying later: store: no answer within")
@pytest.mark.mount
def test_a_sqlite_commit_slower_than_the_call_timeout_is_stored_and_answered_so(mounter, monkeypatch):
    """The breaker's call_timeout (here 0.1 s) must not turn a slow commit into EIO while
    it goes on and stores the file: the append is waited for."""
    monkeypatch.setenv("LIGHTHOUSE_STORE_CALL_TIMEOUT", "0.1")
    m = mounter()
    (m / "projects" / "p").mkdir()
    data = os.urandom(96 << 20)
    with open(m / "projects" / "p" / "big", "wb") as f:
        f.write(data)   # the close answers 0: it must have stored all of it
    # (Housekeeping, a WAL checkpoint, may time out and is retried later: not a write.)
    timed_out = [line for line in m.log.read_text().splitlines()
                 if "no answer within" in line and "housekeeping" not in line]
    assert not timed_out, timed_out
    monkeypatch.delenv("LIGHTHOUSE_STORE_CALL_TIMEOUT")
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    eventually(lambda: not os.path.exists(f"/proc/{m.pid}"), timeout=60)
    again = mounter()
    with open(again / "projects" / "p" / "big", "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()


@pytest.mark.expect_log("events up to \\d+ are stored, but those before them cannot be read yet")
def test_stored_events_are_answered_stored_when_the_events_before_them_cannot_be_read_at_once(tmp_path):
    """Another producer appended just before ours; reading its event fails once. Ours
    are stored, so submit answers success (after reading it), never an error."""
    class FlakyReads(SQLiteStore):
        failures = 1

        def read(self, after_seq, limit=1000):
            if self.failures:
                self.failures -= 1
                raise errors.StoreUnavailable("read failed (as if the store went away a moment)")
            return super().read(after_seq, limit)

    path = str(tmp_path / "store.db")
    store, other = FlakyReads(path), SQLiteStore(path)

    async def main():
        journal = Journal(store, Tree(), actor="a")
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run_committer)
            other.append([Draft("note", "projects/p", {}, "other")], {})
            [(event, _)] = await journal.submit([Draft("note", "projects/p", {})])
            assert event.seq == 2 and journal.tree.applied_seq == 2
            nursery.cancel_scope.cancel()

    trio.run(main)
    store.close()
    other.close()


def test_a_remote_store_is_reachable_only_after_a_recent_answer_and_no_failure_since(tmp_path):
    class Remote(SQLiteStore):
        remote = True

    store = Remote(str(tmp_path / "store.db"))

    async def main():
        clock = trio.lowlevel.current_clock()
        journal = Journal(store, Tree())
        assert not journal.store_reachable()          # never answered yet
        await journal.call_store(store.last_seq)
        assert journal.store_reachable()
        clock.jump(REACHABLE_WITHIN_S + 0.1)
        assert not journal.store_reachable()          # silent too long
        await journal.call_store(store.last_seq)
        assert journal.store_reachable()
        clock.jump(0.1)
        journal.guarded.answered(False)                       # e.g. the follower's read failed
        assert not journal.store_reachable()
        clock.jump(0.1)
        await journal.call_store(store.last_seq)
        assert journal.store_reachable()

    trio.run(main, clock=trio.testing.MockClock())
    store.close()


@pytest.mark.expect_log("following the store failed; retrying", "following the store again",
                        "snapshot at \\d+ not stored")
@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.mount
def test_content_a_close_failed_to_store_is_never_stored_by_another_close(mounter, own_server):
    """Two descriptors share one open file. The close of the one that wrote fails (Redis
    killed): that content is "not stored", so the other descriptor's close, once Redis
    is back, must not store it after all."""
    url = namespaced(own_server.url) + "&settle_timeout=1"
    m = mounter("m", store=url)
    (m / "projects" / "p").mkdir()
    path = m / "projects" / "p" / "f"
    path.write_text("old\n")
    writer = os.open(path, os.O_WRONLY)
    idle = os.open(path, os.O_WRONLY)
    try:
        os.write(writer, b"new\n")
        own_server.kill()
        with pytest.raises(OSError) as failed:
            os.close(writer)
        assert failed.value.errno == errno.EIO
        own_server.restart(keep_data=True)
    finally:
        os.close(idle)   # its release would commit the shared buffer
    time.sleep(1)   # RELEASE comes after close() returns (a wait, not a timing check)
    again = mounter("again", store=url)
    eventually(lambda: (again / "projects" / "p" / "f").read_text() == "old\n", timeout=10)
    time.sleep(2)   # and it stays so: nothing stored it late
    assert (again / "projects" / "p" / "f").read_text() == "old\n"
