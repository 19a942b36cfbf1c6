"""Corruption is found, never served (issue 10, items 15-17).

The real store files are damaged behind the daemons' backs: SQLite's through the
sqlite3 module (or truncated), Redis's with redis-cli. A damaged chunk reads as EIO
with one ERROR naming it and its file; a damaged snapshot is not loaded; a store that
lost what it had, or is locked by another process, is not mounted. A full disk under
the SQLite store answers ENOSPC and still lets files be removed.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid

import pytest
import trio
from tests.harness.mounts import eventually, is_mounted, lighthouse, unmount_quietly
from tests.harness.scenarios import assert_eio_and_the_store_still_trusted
from tests.harness.redis_servers import REDIS_CLI

from lighthousefs import errors
from lighthousefs.domain import chunks as content
from lighthousefs.domain import snapshot
from lighthousefs.domain.events import UNLINK, Draft, Event
from lighthousefs.domain.tree import Tree
from lighthousefs.engine.journal import Journal
from lighthousefs.engine.projection import load_tree
from lighthousefs.store.sqlite import SQLiteStore

pytestmark = pytest.mark.mount


class SQLiteFiles:
    """The SQLite store's file, edited with the sqlite3 module."""

    def __init__(self, url: str):
        self.url = url
        self.path = url[len("sqlite://"):]

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def set_chunk(self, digest: bytes, data: bytes) -> None:
        db = self._db()
        try:
            assert db.execute("UPDATE chunks SET data=? WHERE hash=?", (data, digest)).rowcount == 1
        finally:
            db.close()

    def newest_snapshot(self) -> tuple[int, bytes]:
        db = self._db()
        try:
            return db.execute("SELECT seq, blob FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        finally:
            db.close()

    def set_snapshot(self, seq: int, blob: bytes) -> None:
        db = self._db()
        try:
            assert db.execute("UPDATE snapshots SET blob=? WHERE seq=?", (blob, seq)).rowcount == 1
        finally:
            db.close()


class RedisKeys:
    """The Redis store's keys, edited with redis-cli."""

    def __init__(self, server):
        self.server = server
        self.ns = f"t{uuid.uuid4().hex[:10]}"
        self.url = f"{server.url}?namespace={self.ns}"

    def cli(self, *args: str, stdin: bytes | None = None) -> bytes:
        return subprocess.run([REDIS_CLI, "-p", str(self.server.port), *args], input=stdin,
                              capture_output=True, check=True, timeout=30).stdout

    def set_chunk(self, digest: bytes, data: bytes) -> None:
        assert self.cli("SET", f"lh:{{{self.ns}}}:chunk:{digest.hex()}", data.decode()).strip() == b"OK"

    def newest_snapshot(self) -> tuple[int, bytes]:
        seq = int(self.cli("ZRANGE", f"lh:{{{self.ns}}}:snaps", "-1", "-1").split()[0])
        return seq, self.server.client().get(f"lh:{{{self.ns}}}:snap:{seq}")

    def set_snapshot(self, seq: int, blob: bytes) -> None:
        # -x: the value from stdin, as raw bytes (a snapshot holds NULs, argv cannot)
        assert self.cli("-x", "SET", f"lh:{{{self.ns}}}:snap:{seq}", stdin=blob).strip() == b"OK"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def files(request, store_url):
    if request.param == "sqlite":
        return SQLiteFiles(store_url)
    return RedisKeys(request.getfixturevalue("own_server"))


def error_lines(log_path) -> list[str]:
    return [line for line in log_path.read_text().splitlines() if " ERROR " in line]


# ---- item 15: chunks -----------------------------------------------------------------


@pytest.mark.expect_log("DATA CORRUPT: .* do not match its hash")
def test_a_damaged_chunk_reads_as_eio_logged_once_and_the_store_stays_trusted(mounter, files):
    writer = mounter("a", store=files.url)
    project = writer / "projects" / "p"
    project.mkdir()
    good = b"content that the store will damage\n" * 10
    (project / "damaged").write_bytes(good)
    (project / "kept").write_bytes(b"content that stays\n")
    digest = content.chunk_hash(good)
    files.set_chunk(digest, good.replace(b"damage", b"dbmage", 1))   # one byte changed

    reader = mounter("b", store=files.url)   # a fresh daemon: nothing cached
    damaged = reader / "projects" / "p" / "damaged"
    assert_eio_and_the_store_still_trusted(reader, damaged)
    assert (reader / "projects" / "p" / "kept").read_bytes() == b"content that stays\n"   # still served
    logged = error_lines(reader.log)
    assert len(logged) == 1, logged
    assert digest.hex() in logged[0] and "projects/p/damaged" in logged[0], logged[0]
    # Nothing damaged was cached: once the store is repaired, the file reads right.
    files.set_chunk(digest, good)
    assert damaged.read_bytes() == good


@pytest.mark.expect_log("DATA CORRUPT: .* do not match its hash")
def test_a_damaged_chunk_met_only_by_readahead_does_not_fail_the_read(mounter, store_url):
    files = SQLiteFiles(store_url)
    writer = mounter("a")
    (writer / "projects" / "p").mkdir()
    data = os.urandom(4 * content.CHUNK_SIZE)
    (writer / "projects" / "p" / "big").write_bytes(data)
    last = content.chunk_hash(data[3 * content.CHUNK_SIZE:])
    files.set_chunk(last, bytes(content.CHUNK_SIZE))

    reader = mounter("b")
    with open(reader / "projects" / "p" / "big", "rb", buffering=0) as f:
        assert f.read(content.CHUNK_SIZE) == data[:content.CHUNK_SIZE]   # brings the rest ahead
        # The kernel would retry a failed read page by page; that read must not fail at all.
        stats = (reader / ".lighthouse" / "stats").read_text()
        assert not re.search(r'lighthousefs_fuse_op_errors_total\{.*op="read"', stats), stats
        f.seek(3 * content.CHUNK_SIZE)
        with pytest.raises(OSError) as err:
            f.read(content.CHUNK_SIZE)
    assert err.value.errno == errno.EIO
    logged = error_lines(reader.log)
    assert len(logged) == 1 and last.hex() in logged[0], logged


def test_the_api_refuses_a_damaged_chunk(tmp_path):
    store = SQLiteStore(str(tmp_path / "store.db"))
    try:
        data = b"x" * 100
        digest = content.chunk_hash(data)
        store.append([], {digest: data})
        files = SQLiteFiles(store.url)
        files.set_chunk(digest, b"y" * 100)
        with pytest.raises(errors.ChunkCorrupt, match=digest.hex()):
            store.get_chunk(digest)
        with pytest.raises(errors.ChunkCorrupt, match=digest.hex()):
            store.get_chunks([digest])
    finally:
        store.close()


# ---- item 15: snapshots ----------------------------------------------------------------


@pytest.mark.expect_log("is not used: damaged snapshot", "snapshot at \\d+ not stored")
def test_a_damaged_snapshot_is_not_loaded(mounter, files):
    first = mounter("a", store=files.url)
    (first / "projects" / "p").mkdir()
    (first / "projects" / "p" / "secret-name").write_text("x")
    unmount_quietly(first.path, first.pid)   # stores a snapshot
    seq, blob = files.newest_snapshot()
    assert blob.count(b"secret-name") == 1
    files.set_snapshot(seq, blob.replace(b"secret-name", b"secret-nbme"))   # one byte changed

    second = mounter("a", store=files.url)
    assert os.listdir(second / "projects" / "p") == ["secret-name"]   # from the log
    logged = error_lines(second.log)
    assert len(logged) == 1 and f"snapshot at seq {seq}" in logged[0], logged


@pytest.mark.expect_log("is not used: damaged snapshot")
def test_an_older_snapshot_is_used_when_the_newest_is_damaged(tmp_path, caplog):
    store = SQLiteStore(str(tmp_path / "store.db"))
    try:
        tree = Tree()
        for n in range(4):
            [event] = store.append([Draft("note", f"projects/{n}", {}, "t")], {})
            tree.apply(event)
            if n in (1, 2):
                store.put_snapshot(event.seq, snapshot.dump(tree))
        SQLiteFiles(store.url).set_snapshot(3, snapshot.dump(tree)[:-1] + b"\x00")
        read_from = []
        real_read = store.read
        store.read = lambda after, limit=1000: read_from.append(after) or real_read(after, limit)
        with caplog.at_level(logging.WARNING):
            loaded = load_tree(store, math.inf)
        assert loaded.applied_seq == 4 and read_from[0] == 2   # the snapshot at 2, then the log
        assert "snapshot at seq 3" in caplog.text and "checksum" in caplog.text
    finally:
        store.close()


def test_a_snapshot_with_one_byte_changed_is_refused():
    tree = Tree()
    blob = snapshot.dump(tree)
    assert snapshot.load(blob).applied_seq == 0
    for i in range(len(blob)):
        damaged = bytearray(blob)
        damaged[i] ^= 0x01
        with pytest.raises(ValueError):
            snapshot.load(bytes(damaged))


# ---- item 15: a store that lost what it had -----------------------------------------------


@pytest.mark.expect_log("cannot mount: .* lost its content",
                        "cannot mount: .* lost data or was replaced")
def test_a_sqlite_store_truncated_or_deleted_is_refused(mounter, store_url, tmp_path):
    files = SQLiteFiles(store_url)
    first = mounter("a")
    (first / "projects" / "p").mkdir()
    unmount_quietly(first.path, first.pid)
    with open(files.path, "r+b") as f:
        f.truncate(0)
    with pytest.raises(RuntimeError, match=r"empty \(0 bytes\)"):
        mounter("a")
    assert not is_mounted(tmp_path / "a")

    # Deleted, the store would be made anew: another id than this host remembers.
    os.unlink(files.path)
    with pytest.raises(RuntimeError) as err:
        mounter("a")
    message = str(err.value)
    assert "lost data or was replaced" in message and "Traceback" not in message, message
    assert not is_mounted(tmp_path / "a")
    # To start over with it as it is, the operator deletes what the host remembers.
    os.unlink(re.search(r"delete (\S+\.json)", message).group(1))
    again = mounter("a")
    assert os.listdir(again / "projects") == []
    assert "a new, empty store" in again.log.read_text()


@pytest.mark.expect_log("cannot mount: .* lost data or was replaced")
def test_a_sqlite_store_put_back_to_an_older_copy_is_refused(mounter, store_url, tmp_path):
    files = SQLiteFiles(store_url)
    first = mounter("a")
    (first / "projects" / "p").mkdir()
    unmount_quietly(first.path, first.pid)
    shutil.copy(files.path, tmp_path / "backup.db")
    second = mounter("a")
    (second / "projects" / "q").mkdir()
    unmount_quietly(second.path, second.pid)
    shutil.copy(tmp_path / "backup.db", files.path)

    with pytest.raises(RuntimeError, match="its log ends at event"):
        mounter("a")
    assert not is_mounted(tmp_path / "a")


@pytest.mark.expect_log("cannot mount: .* lost data or was replaced")
@pytest.mark.redis
def test_a_redis_that_came_back_empty_is_refused(mounter, own_server, tmp_path):
    url = RedisKeys(own_server).url
    first = mounter("a", store=url)
    (first / "projects" / "p").mkdir()
    unmount_quietly(first.path, first.pid)
    own_server.restart(keep_data=False)

    with pytest.raises(RuntimeError, match="lost data or was replaced"):
        mounter("a", store=url)
    assert not is_mounted(tmp_path / "a")


# ---- item 17: a locked store ----------------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "exclusive":
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO meta VALUES ('held', '1')")
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["transaction", "exclusive"])
def test_a_store_locked_by_another_process_is_not_mounted(tmp_path, store_url, how):
    path = store_url[len("sqlite://"):]
    SQLiteStore(path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path, how], stdout=subprocess.PIPE, text=True)
    mountpoint = tmp_path / "m"
    try:
        assert holder.stdout.readline() == "locked\n"
        result = lighthouse("mount", str(mountpoint), "--store", store_url, "--log", str(tmp_path / "m.log"),
                            check=False)
        assert result.returncode != 0
        assert "locked by another process" in result.stderr and f"pid {holder.pid}" in result.stderr, \
            result.stderr
        assert "Traceback" not in result.stderr
        assert not is_mounted(mountpoint)
    finally:
        holder.kill()
        holder.wait()
        unmount_quietly(mountpoint)


# ---- item 16: a full disk under the SQLite store -------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs for the store. The test unmounts lighthousefs first (in its own
    finally); this unmounts the tmpfs, lazily if something still holds it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.mark.expect_log("the disk of the store .* is full",
                        "the new file is dropped, its content was not stored",
                        "the disk has room again",
                        "gave the disk the reserve of")
@pytest.mark.slow
def test_a_full_disk_answers_enospc_and_files_can_still_be_removed(small_disk, mounter, tmp_path):
    m = mounter("m", store=f"sqlite://{small_disk}/store.db")
    try:
        project = m / "projects" / "p"
        (project / "sub").mkdir(parents=True)
        (project / "sub" / "a").write_text("a")
        stored, failure = {}, None
        for i in range(200):   # 8 MiB fill up long before
            data = os.urandom(128 * 1024)
            try:
                with open(project / f"f{i}", "wb") as f:
                    f.write(data)
            except OSError as exc:
                failure = exc
                break
            stored[f"f{i}"] = data
        assert failure is not None and failure.errno == errno.ENOSPC, failure
        with pytest.raises(OSError) as again:
            (project / "sub" / "b").write_text("b")
        assert again.value.errno == errno.ENOSPC
        # A shell sees it (bash ignores close()): refused at the open or write, not at close.
        for command in ("echo x > new", "echo y > f0"):
            shell = subprocess.run(["bash", "-c", command], cwd=project, capture_output=True, text=True)
            assert shell.returncode != 0 and "No space left on device" in shell.stderr, (command, shell)
        assert not (project / "new").exists()
        # Every acknowledged file is whole.
        for name, data in stored.items():
            assert (project / name).read_bytes() == data
        # Removals are stored: files and a directory.
        for name in list(stored)[:10]:
            os.unlink(project / name)
        os.unlink(project / "sub" / "a")
        os.rmdir(project / "sub")
        assert sorted(os.listdir(project)) == sorted(list(stored)[10:])
        # A full disk is the caller's condition: the store's circuit stays closed.
        stats = (m / ".lighthouse" / "stats").read_text()
        assert 'lighthousefs_breaker_state{breaker="store"} 0.0' in stats
        assert 'lighthousefs_breaker_transitions_total{breaker="store",state="open"}' not in stats
        log = m.log.read_text()
        assert "cannot rollback" not in log
        logged = error_lines(m.log)
        assert len(logged) == 1 and "is full" in logged[0], logged
        # Room again (the disk grows): writes are taken again, without a remount.
        subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True, timeout=30)

        def writes_again():
            try:
                (project / "after").write_text("room again\n")
                return True
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return False
        eventually(writes_again, timeout=30)
        assert (project / "after").read_text() == "room again\n"
    finally:
        unmount_quietly(m.path, m.pid)


def test_a_full_store_refusing_a_group_commit_still_stores_the_removal_in_it():
    """Group commit may put a removal and a write in one append; a full store refuses
    that, but would take the removal alone (disk.py): the batch is split."""
    class FullStore:
        url = "test://full"
        appended: list[list[str]] = []

        def append(self, drafts, chunks, durable=True):
            if any(d.type != UNLINK for d in drafts):
                raise errors.StoreFull("the disk is full")
            self.appended.append([d.path for d in drafts])
            return [Event(i + 1, 1, d.actor, d.type, d.path, d.payload) for i, d in enumerate(drafts)]

    async def main():
        journal = Journal(FullStore(), Tree())
        outcome = {}

        async def submit(name, draft):
            try:
                outcome[name] = await journal.submit([draft])
            except errors.LighthouseError as exc:
                outcome[name] = exc
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run_committer)
            async with trio.open_nursery() as callers:   # both queued before the committer runs
                callers.start_soon(submit, "write", Draft("note", "projects/p/f", {}))
                callers.start_soon(submit, "unlink", Draft(UNLINK, "projects/p/g", {"parent": 2, "name": b"g"}))
            nursery.cancel_scope.cancel()
        return outcome

    outcome = trio.run(main)
    assert isinstance(outcome["write"], errors.StoreFull)
    assert not isinstance(outcome["unlink"], Exception)
    assert FullStore.appended == [["projects/p/g"]]
