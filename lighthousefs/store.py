"""The event store: append events durably, read them back from a position.

Every method blocks; callers run them in worker threads (see journal.py). Two
backends share this interface: SQLite (embedded default, `sqlite:///path`) and Redis
(`redis://`, shared by many daemons).
"""
from __future__ import annotations

import abc
import logging
import os
import threading
import time
import urllib.parse
from typing import Callable

from . import content, errors
from .events import Draft, Event
from .store_url import redacted

log = logging.getLogger(__name__)

# Missing or damaged chunks already reported, as (kind, store url, digest): each is
# logged once per process, however often its file is read (the kernel retries a failed
# read, agents retry too). Bounded: past it, the set starts again and a chunk may be
# logged again.
_REPORTED_MAX = 4096
_reported: set[tuple[str, str, bytes]] = set()
_reported_lock = threading.Lock()


def _first_reports(kind: str, url: str, digests: list[bytes]) -> list[bytes]:
    """The digests not yet reported as `kind` in this process (now marked reported)."""
    with _reported_lock:
        new = [d for d in dict.fromkeys(digests) if (kind, url, d) not in _reported]
        if len(_reported) + len(new) > _REPORTED_MAX:
            _reported.clear()
        _reported.update((kind, url, d) for d in new)
    return new


def report_corrupt(exc: errors.ChunkCorrupt, path_of: Callable[[], str]) -> None:
    """Log a damaged chunk at ERROR, naming the file read (path_of() is asked only
    then), once per chunk and process."""
    new = _first_reports("corrupt", exc.where, exc.digests)
    if new:
        log.error("DATA CORRUPT: the store %s returned chunk %s of %s with bytes that do not match "
                  "its hash; reads of that file answer EIO. Restore the store from a backup.",
                  exc.where, ", ".join(d.hex() for d in new), path_of())


class Store(abc.ABC):
    url: str
    # Reached over a network (Redis): whether it answers is known only from recent calls.
    remote = False
    # A random id the store keeps from its creation: a store that lost what it had, or
    # another store at the same URL, has another one (see continuity.py).
    store_id: str

    @abc.abstractmethod
    def append(self, drafts: list[Draft], chunks: dict[bytes, bytes], durable: bool = True) -> list[Event]:
        """Store the chunks, then the events in order.

        With `durable`, they are on disk when this returns; without, they survive a
        crash of this process but may wait for the next durable append or sync() to
        survive a power loss. Assigns consecutive sequence numbers and non-decreasing
        times. Raises StoreUnavailable if nothing was stored.
        """

    def sync(self) -> None:
        """Make everything appended so far durable."""

    @property
    def full(self) -> str | None:
        """Why the store takes no new content now (its disk is full), or None. Read from
        the trio thread: new content is then refused at write(), where a shell sees it."""
        return None

    def recheck_full(self) -> None:
        """Look whether a full store has room again (blocking; housekeeping calls it)."""

    def defer_checkpoints(self) -> None:
        """From now on, housekeeping runs only in checkpoint() (see SQLiteStore)."""

    def checkpoint(self) -> None:
        """Housekeeping that must stay off the append path (SQLite's WAL checkpoint)."""

    @abc.abstractmethod
    def read(self, after_seq: int, limit: int = 1000) -> list[Event]:
        """Events with seq > after_seq, in order, at most `limit`."""

    @abc.abstractmethod
    def last_seq(self) -> int:
        """The highest sequence number stored (0 for an empty log)."""

    @abc.abstractmethod
    def get_chunk(self, digest: bytes) -> bytes:
        """The chunk named `digest`; ChunkMissing (see chunks_missing) if the store does
        not have it, ChunkCorrupt (see verified) if its bytes do not match the digest."""

    def get_chunks(self, digests: list[bytes]) -> list[bytes]:
        """Several chunks in one call (the pieces of a file's tail); ChunkMissing naming
        every one that is missing."""
        return [self.get_chunk(digest) for digest in digests]

    def chunks_missing(self, digests: list[bytes]) -> errors.ChunkMissing:
        """The error for chunks this store does not have, which only events name: the
        content of a file that exists is lost. Logged at ERROR (without a traceback: it
        is a finding, not a bug) the first time each chunk is missed in this process."""
        exc = errors.ChunkMissing(digests, self.url)
        new = _first_reports("missing", self.url, digests)
        if new:
            log.error("DATA LOST: the store %s has no chunk %s, which a file's content names; "
                      "reads of that file answer EIO. Restore the store from a backup.",
                      self.url, ", ".join(d.hex() for d in new))
        return exc

    def verified(self, found: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """Chunks as the store returned them, by digest, each checked against its hash:
        ChunkCorrupt naming every chunk whose bytes are not the ones its name promises.
        Not logged here: the caller knows which file it reads (report_corrupt)."""
        bad = [digest for digest, data in found.items() if content.chunk_hash(data) != digest]
        if bad:
            raise errors.ChunkCorrupt(bad, self.url)
        return found

    @abc.abstractmethod
    def scope_seqs(self, scope: str) -> list[int]:
        """Sequence numbers of the events whose path lies in `scope` (e.g. projects/x)."""

    @abc.abstractmethod
    def put_snapshot(self, seq: int, blob: bytes) -> None:
        """Keep a snapshot of the projection after event `seq` (older ones may be pruned)."""

    @abc.abstractmethod
    def latest_snapshot(self, max_seq: int | None = None) -> tuple[int, bytes] | None:
        """The newest snapshot at or before max_seq, as (seq, blob)."""

    @abc.abstractmethod
    def usage(self) -> dict[str, int]:
        """Bytes used and bytes free, for statfs and stats."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def wait_for_events(self, after_seq: int, timeout: float) -> int:
        """Block until an event after `after_seq` is stored or `timeout` passes; return
        the sequence number of a stored event after `after_seq`, or 0.

        This default polls; a backend that can be told (Redis's XREAD BLOCK) overrides it.
        """
        deadline = time.monotonic() + timeout
        while True:
            last = self.last_seq()
            if last > after_seq:
                return last
            if time.monotonic() >= deadline:
                return 0
            time.sleep(self.poll_interval)

    poll_interval = 0.005

    def wait_and_read(self, after_seq: int, timeout: float, limit: int = 1000) -> list[Event]:
        """Block until events after `after_seq` are stored or `timeout` passes; return up
        to `limit` of them, oldest first ([] on timeout). Redis does both in one round trip."""
        if self.wait_for_events(after_seq, timeout):
            return self.read(after_seq, limit)
        return []


def scope_of(path: str) -> str:
    """The stream a path belongs to: `projects/<name>`, `memories`, `agents` or ``."""
    parts = path.split("/", 2)
    if parts[0] == "projects" and len(parts) > 1:
        return "/".join(parts[:2])
    return parts[0] if parts[0] in ("memories", "agents") else ""


def default_url() -> str:
    import platformdirs
    return "sqlite://" + os.path.join(platformdirs.user_data_dir("lighthousefs"), "lighthouse.db")


def open_store(url: str, create: bool = True) -> Store:
    """Open the store named by `url`; StoreOpenError with a clear reason if it cannot be.

    Without `create` (commands that only read), a store that does not exist yet is an
    error rather than made empty. With it, only the default store's directory is made:
    a typo in a path given by hand must not quietly start a second store.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    shown = redacted(url)   # messages never carry a password, even of a mistyped URL
    if scheme == "sqlite":
        from .store_sqlite import SQLiteStore
        path = url[len("sqlite://"):]
        if not path.startswith("/"):
            raise errors.StoreOpenError(f"{shown}: the SQLite path must be absolute (sqlite:///path/to.db)")
        if create and url == default_url():
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return SQLiteStore(path, create=create)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        try:
            from .store_redis import RedisStore
        except ImportError as exc:
            raise errors.StoreOpenError(f"{shown}: the Redis store is not available: {exc}") from None
        return RedisStore(url, create=create)
    raise errors.StoreOpenError(f"{shown}: unknown store (use sqlite:///path or redis://host:port/db)")
