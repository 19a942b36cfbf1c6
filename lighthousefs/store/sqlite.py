"""The embedded store: one SQLite file in WAL mode.

Durability: append(durable=True) commits with synchronous=FULL, so it is on disk when
append() returns; durable=False commits with NORMAL (safe from a crash of this
process, on disk at the next FULL commit or sync()). One connection writes and one
reads; each is guarded by its own lock because calls arrive from several worker threads.

Other processes' appends (another mount, the API, `lighthouse emit`) are noticed
through inotify on the store's directory: the follower sleeps until the WAL file is
written, instead of querying the log every few milliseconds.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time

import inotify_simple

from .. import errors
from ..domain import events
from ..domain.events import Draft, Event
from ..domain.layout import scope_of
from . import disk
from .base import Store

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, scope TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_scope ON events(scope, seq);
CREATE TABLE IF NOT EXISTS chunks(hash BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots(seq INTEGER PRIMARY KEY, blob BLOB NOT NULL);
"""
FORMAT = "1"
SNAPSHOTS_KEPT = 3
# The follower looks at the log at least this often, even without a file event: a
# safety net for file systems whose inotify misses writes (network mounts).
IDLE_CHECK_S = 0.5
# After a file event, how long to keep looking for the commit it announces.
SETTLE_S = 0.05
SETTLE_FIRST_S = 0.0001
SETTLE_MAX_PAUSE_S = 0.001


def _scope_value(scope: str) -> str | bytes:
    """A scope as SQLite holds it: TEXT, or a BLOB of its bytes when a name in it is not
    UTF-8 (SQLite's TEXT must be; the two never compare equal, so neither is mistaken)."""
    try:
        scope.encode()
        return scope
    except UnicodeEncodeError:
        return scope.encode("utf-8", events.PATH_ERRORS)


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


class SQLiteStore(Store):
    def __init__(self, path: str, busy_timeout_s: float = 2.0, create: bool = True):
        """`create`: make the store if there is none at `path` (its directory must exist)."""
        self.url = "sqlite://" + path
        self.path = path
        if os.path.exists(path) and os.path.getsize(path) == 0:
            # SQLite would take it for a new database: an empty namespace, mounted.
            raise errors.StoreOpenError(f"{path} is empty (0 bytes), but a store never is: it lost its content. "
                                        "Restore it from a backup, or delete the file to start a new store")
        if not os.path.exists(path):
            if not create:
                raise errors.StoreOpenError(f"{path}: there is no store here (is the path right?)")
            directory = os.path.dirname(path) or "."
            if not os.path.isdir(directory):
                raise errors.StoreOpenError(f"{path}: the directory {directory} does not exist; "
                                            "create it first (only the default store's directory is made)")
        try:
            self._writer = self._connect(busy_timeout_s)
            self._writer.execute("PRAGMA journal_mode=WAL")
            # One write transaction: it also finds a store locked by another process
            # (a write transaction held open, an exclusive locking mode), which would
            # otherwise open and then fail every write.
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, SCHEMA.split(";")):   # executescript would commit
                    self._writer.execute(statement)
                meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
                if "format" not in meta:
                    self._writer.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
                    log.info("%s: a new, empty store", path)
                elif meta["format"] != FORMAT:
                    raise errors.StoreOpenError(f"{path}: store format {meta['format']}, this daemon reads {FORMAT}")
                if "id" not in meta:   # a new store, or one made before stores had ids
                    meta["id"] = secrets.token_hex(16)
                    self._writer.execute("INSERT INTO meta VALUES ('id', ?)", (meta["id"],))
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise
            self.store_id = meta["id"]
            self._reader = self._connect(busy_timeout_s)
            self._last_time_ns = 0
            last = self._reader.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            if last:
                self._last_time_ns = events.decode(last, self._reader.execute(
                    "SELECT body FROM events WHERE seq=?", (last,)).fetchone()[0]).time_ns
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise errors.StoreOpenError(f"{path}: the store is locked by another process{disk.lock_holders(path)} "
                                            f"({exc}); stop it or wait for it to finish") from None
            raise errors.StoreOpenError(f"{path}: cannot open the store: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise errors.StoreOpenError(f"{path}: the store is corrupt or not a lighthousefs store: {exc}") from None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # Set while the disk is full (the cause); see disk.py for the reserve.
        self._full: str | None = None
        self._reserve = disk.Reserve(path)
        self._reserve.restore()   # if there is no room, removals on a full disk fail too
        self._full_sync = True
        self._watch: inotify_simple.INotify | None = None
        self._watch_tried = False
        # The watch's fd is closed by whoever is last: close(), or a waiter that was in
        # a read when close() ran (closing an fd under a read could let the read reach
        # whatever file is opened next under the same number).
        self._watch_lock = threading.Lock()
        self._watch_readers = 0
        self._closed = False
        self._wal_name = os.path.basename(path) + "-wal"

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _set_sync(self, full: bool) -> None:
        """FULL syncs the WAL at this commit (and so every frame before it); NORMAL
        leaves it in the OS cache, safe from a crash of this process."""
        if full != self._full_sync:
            self._writer.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full_sync = full

    def defer_checkpoints(self) -> None:
        """Checkpoints (which fsync the database file) stop running inside appends that a
        close() waits for; the caller runs checkpoint() in the background instead."""
        with self._write_lock:
            self._writer.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without blocking appends (PASSIVE)."""
        with self._read_lock:
            try:
                self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                if not _is_full(exc):   # full: the WAL keeps what it has, copied later
                    raise errors.StoreUnavailable(f"checkpoint of {self.path} failed: {exc}") from exc
        if self._full:
            with self._write_lock:
                self._space_again()

    def sync(self) -> None:
        with self._write_lock:
            wal = self.path + "-wal"
            if os.path.exists(wal):
                try:
                    fd = os.open(wal, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:   # the store's own failure: counted by the breaker
                    raise errors.StoreUnavailable(f"sync of {wal} failed: {exc}") from exc

    def append(self, drafts: list[Draft], chunks: dict[bytes, bytes], durable: bool = True) -> list[Event]:
        """On a full disk, StoreFull; removals alone are then stored in the space of
        the reserve (disk.py), while other writes wait for room."""
        removals = bool(drafts) and not chunks and all(d.type == events.UNLINK for d in drafts)
        if self._full and not removals:
            with self._write_lock:
                if not self._space_again():
                    raise errors.StoreFull(self._full)
        try:
            return self._append(drafts, chunks, durable)
        except errors.StoreFull:
            with self._write_lock:
                if not (removals and self._reserve.release()):
                    raise
        log.warning("%s: gave the disk the reserve of %d KiB, so that removals can be stored",
                    self.path, self._reserve.size >> 10)
        return self._append(drafts, chunks, durable)

    def _append(self, drafts: list[Draft], chunks: dict[bytes, bytes], durable: bool) -> list[Event]:
        with self._write_lock:
            conn = self._writer
            try:
                self._set_sync(durable)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if chunks:
                        conn.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?)", chunks.items())
                    seq = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                    # Another process may have appended since our last call: keep time monotonic.
                    now = max(time.time_ns(), self._last_time_ns)
                    out = []
                    rows = []
                    for draft in drafts:
                        seq += 1
                        rows.append((seq, _scope_value(scope_of(draft.path)), events.encode(now, draft)))
                        out.append(Event(seq, now, draft.actor, draft.type, draft.path, draft.payload))
                    conn.executemany("INSERT INTO events VALUES (?, ?, ?)", rows)
                    conn.execute("COMMIT")
                except BaseException:
                    # SQLite rolls back by itself after some errors (a full disk): a
                    # ROLLBACK then fails ("no transaction is active") and hid the cause.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                if _is_full(exc):
                    self._note_full(exc)
                    raise errors.StoreFull(self._full) from exc
                raise errors.StoreUnavailable(f"append to {self.path} failed: {exc}") from exc
            self._last_time_ns = now
            return out

    def _note_full(self, exc: sqlite3.Error) -> None:
        """The disk is full: said once (at ERROR), until there is room again."""
        if self._full is None:
            self._full = f"the disk of the store {self.path} is full ({exc})"
            log.error("%s: writes answer ENOSPC until space is freed on that disk", self._full)

    @property
    def full(self) -> str | None:
        return self._full

    def recheck_full(self) -> None:
        with self._write_lock:
            if self._full is not None:
                self._space_again()

    def _space_again(self) -> bool:
        """Is there room again: the reserve, and as much again free? Under the write lock."""
        free = shutil.disk_usage(os.path.dirname(self.path) or ".").free
        if free < self._reserve.size or not self._reserve.restore():
            return False
        if self._full is not None:
            log.warning("%s: the disk has room again; writes are stored", self.path)
            self._full = None
        return True

    def wait_for_events(self, after_seq: int, timeout: float) -> int:
        """Sleep until the store's WAL file is written (inotify on its directory), then look."""
        deadline = time.monotonic() + timeout
        watch = self._watcher()
        settle_until, pause = 0.0, SETTLE_FIRST_S
        while True:
            last = self.last_seq()
            if last > after_seq:
                return last
            now = time.monotonic()
            if now >= deadline:
                return 0
            if watch is None:
                time.sleep(min(deadline - now, self.poll_interval))
            elif now < settle_until:
                # A file changed but no new commit shows yet: the writer has written WAL
                # frames and still publishes the commit (fsync, then the shared-memory
                # index, which inotify does not see). Look again soon, backing off.
                time.sleep(pause)
                pause = min(pause * 2, SETTLE_MAX_PAUSE_S)
            else:
                changed = self._read_watch(watch, min(deadline - now, IDLE_CHECK_S))
                # Commits only ever go to the WAL; the database file changes at
                # checkpoints, and other files of the directory do not matter.
                if any(event.name == self._wal_name for event in changed):
                    settle_until, pause = time.monotonic() + SETTLE_S, SETTLE_FIRST_S

    def _read_watch(self, watch: inotify_simple.INotify, timeout: float) -> list:
        with self._watch_lock:
            if self._closed:
                raise errors.StoreUnavailable(f"{self.path}: the store is closed")
            self._watch_readers += 1
        try:
            return watch.read(timeout=max(1, int(timeout * 1000)))
        finally:
            with self._watch_lock:
                self._watch_readers -= 1
                if self._closed and not self._watch_readers:
                    self._close_watch()

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _watcher(self) -> inotify_simple.INotify | None:
        """The inotify watch, made on first use; None (polling) where inotify is unavailable."""
        if not self._watch_tried:
            self._watch_tried = True
            watch = None
            try:
                watch = inotify_simple.INotify()   # may hit the per-user limit of instances
                watch.add_watch(os.path.dirname(os.path.abspath(self.path)), inotify_simple.flags.MODIFY)
            except OSError as exc:
                if watch is not None:
                    watch.close()
                log.warning("%s: no inotify (%s); polling the log every %g s", self.path, exc, self.poll_interval)
                return None
            self._watch = watch
        return self._watch

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            try:
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise errors.StoreUnavailable(f"read from {self.path} failed: {exc}") from exc

    def read(self, after_seq: int, limit: int = 1000) -> list[Event]:
        rows = self._query("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [events.decode(seq, body) for seq, body in rows]

    def last_seq(self) -> int:
        return self._query("SELECT coalesce(max(seq), 0) FROM events")[0][0]

    def get_chunk(self, digest: bytes) -> bytes:
        rows = self._query("SELECT data FROM chunks WHERE hash=?", (digest,))
        if not rows:
            raise self.chunks_missing([digest])
        return self.verified({digest: rows[0][0]})[digest]

    def get_chunks(self, digests: list[bytes]) -> list[bytes]:
        wanted = list(dict.fromkeys(digests))
        rows: dict[bytes, bytes] = {}
        for start in range(0, len(wanted), 500):   # under SQLite's limit of bound parameters
            batch = wanted[start:start + 500]
            rows.update(self._query(f"SELECT hash, data FROM chunks WHERE hash IN ({','.join('?' * len(batch))})",
                                    tuple(batch)))
        missing = [d for d in wanted if d not in rows]
        if missing:
            raise self.chunks_missing(missing)
        self.verified(rows)
        return [rows[d] for d in digests]

    def scope_seqs(self, scope: str) -> list[int]:
        return [row[0] for row in self._query("SELECT seq FROM events WHERE scope=? ORDER BY seq",
                                              (_scope_value(scope),))]

    def put_snapshot(self, seq: int, blob: bytes) -> None:
        with self._write_lock:
            if self._full and not self._space_again():   # the room left is for removals
                raise errors.StoreFull(self._full)
            try:
                with self._writer:
                    self._writer.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (seq, blob))
                    self._writer.execute(
                        "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                        (SNAPSHOTS_KEPT,))
            except sqlite3.Error as exc:
                if _is_full(exc):
                    self._note_full(exc)
                    raise errors.StoreFull(self._full) from exc
                raise errors.StoreUnavailable(f"snapshot to {self.path} failed: {exc}") from exc

    def latest_snapshot(self, max_seq: int | None = None) -> tuple[int, bytes] | None:
        rows = self._query("SELECT seq, blob FROM snapshots WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
                           (max_seq if max_seq is not None else 2**62,))
        return rows[0] if rows else None

    def usage(self) -> dict[str, int]:
        used = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))
        return {"used_bytes": used, "free_bytes": shutil.disk_usage(os.path.dirname(self.path)).free}

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for conn in (self._reader, self._writer):
                conn.close()
        with self._watch_lock:
            self._closed = True
            if not self._watch_readers:
                self._close_watch()
