"""The guarded store: the async face of a Store that every trio caller uses (the
engine's committer, follower and housekeeping, the file system, the views).

Every call runs in a worker thread behind a CapacityLimiter, inside the breaker
(breaker.py) when there is one, so a sick store makes every caller fail fast, and the
breaker counts every call: the follower's blocking read included. What the breaker
counts is its own rule: only StoreUnavailable and timeouts are the store's failures;
bad input (any other exception) counts neither way, and a domain answer (NotFound,
ChunkMissing, StoreFull) is a success.

It also keeps what the daemon knows of the store's health: whether it answered lately
(reachable, fed by every call and a heartbeat) and whether it lost data this daemon had
seen (failsafe: no change is appended any more).
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Callable, TypeVar

import trio

from .. import errors
from ..domain.chunks import chunk_hash
from .base import Store

if TYPE_CHECKING:
    from ..domain.events import Draft, Event
    from .breaker import Breaker

log = logging.getLogger(__name__)

T = TypeVar("T")

# A remote store is known to be reachable if it answered within this and has not failed
# since; the heartbeat asks it this often (see reachable).
REACHABLE_WITHIN_S = 2.0
HEARTBEAT_S = 0.5
EMPTY_CHUNK = chunk_hash(b"")


class GuardedStore:
    def __init__(self, store: Store, breaker: Breaker | None = None):
        self.store = store          # the blocking store: for calls made inside a worker thread
        self.breaker = breaker
        # Set when the store lost data we had seen: from then on nothing is appended
        # (EIO), while reads keep serving the last consistent projection.
        self.failsafe: str | None = None
        # Without a breaker (tests, tools), limiters of our own bound the threads.
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(8)
        # trio times of the store's last answer and last failure (reachable).
        self._answered_at = -math.inf
        self._failed_at = -math.inf
        # Why the last write failed (the store's failure, never a refusal), until a write
        # succeeds: a store can answer reads while it refuses writes (Redis's
        # min-replicas-to-write, a read-only replica), and reads close the circuit and
        # make it reachable. health.py reports "failing" meanwhile.
        self.write_failure: str | None = None

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def remote(self) -> bool:
        return self.store.remote

    @property
    def full(self) -> str | None:
        return self.store.full

    # ---- every call ------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args, write: bool = False, stores: bool = False,
                   patient: bool = False, waits: float = 0.0, limiter: trio.CapacityLimiter | None = None) -> T:
        """Run blocking fn(*args), a call of the store, in a worker thread behind the breaker.

        `write`: refused once the store lost data (failsafe). `patient`: never abandoned
        on a timeout (see Breaker.call): for calls whose outcome must be known. `stores`:
        a write that stores something (not a sync), so its outcome is a write's for
        health (write_failure). `waits`:
        the call blocks this long by design (waiting for events), which is not slowness.
        """
        if write and self.failsafe:
            raise errors.StoreDataLost(self.failsafe)
        try:
            if self.breaker is not None:
                result = await self.breaker.call(fn, *args, patient=patient, waits=waits, limiter=limiter)
            else:
                limiter = limiter or (self._write_limiter if write else self._read_limiter)
                result = await trio.to_thread.run_sync(fn, *args, limiter=limiter)
            self.answered(True)
            if stores:
                self.write_failure = None
            return result
        except errors.StoreDataLost as exc:
            self.answered(False)
            if stores:
                self.write_failure = str(exc)
            if not self.failsafe:
                self.failsafe = str(exc)
                log.error("THE STORE LOST DATA THIS DAEMON HAD SEEN: refusing every change from now on "
                          "and serving the last consistent state read-only. Restore the store from a "
                          "backup or remount on a fresh namespace. Cause: %s", exc)
            raise
        except errors.StoreUnavailable as exc:
            self.answered(False)
            if stores:
                self.write_failure = str(exc)
            raise

    # ---- the store's calls -------------------------------------------------------------

    async def append(self, drafts: list[Draft], chunks: dict[bytes, bytes], durable: bool = True) -> list[Event]:
        # Waited for, however long it takes: an error must mean "not stored". The store
        # bounds it (SQLite's busy timeout, RedisStore.append's deadline).
        return await self.call(self.store.append, drafts, chunks, durable, write=True, stores=True, patient=True)

    async def sync(self) -> None:
        await self.call(self.store.sync, write=True, patient=True)   # fsync's answer must be exact too

    async def probe_write(self, limiter: trio.CapacityLimiter | None = None) -> None:
        """A write that changes nothing: the empty chunk, content-addressed (stored
        already or harmless), for health.py to learn when writes succeed again."""
        await self.call(self.store.append, [], {EMPTY_CHUNK: b""}, write=True, stores=True, limiter=limiter)

    async def read(self, after_seq: int, limit: int = 1000) -> list[Event]:
        return await self.call(self.store.read, after_seq, limit)

    async def wait_and_read(self, after_seq: int, timeout: float, limit: int = 1000) -> list[Event]:
        """The follower's blocking read: an empty answer after `timeout` is an answer.

        On a local store it is patient: there a read waits only for this process's own
        commit (SQLite's one connection), which may take long for a large file and is no
        sign of a sick store; a timeout would count against the breaker and could open
        it under the very write that is being stored."""
        return await self.call(self.store.wait_and_read, after_seq, timeout, limit, waits=timeout,
                               patient=not self.store.remote)

    async def get_chunks(self, digests: list[bytes]) -> list[bytes]:
        return await self.call(self.store.get_chunks, digests)

    async def scope_seqs(self, scope: str) -> list[int]:
        return await self.call(self.store.scope_seqs, scope)

    async def put_snapshot(self, seq: int, blob: bytes) -> None:
        await self.call(self.store.put_snapshot, seq, blob, write=True, stores=True)

    async def usage(self) -> dict[str, int]:
        return await self.call(self.store.usage)

    async def last_seq(self) -> int:
        return await self.call(self.store.last_seq)

    # ---- health ------------------------------------------------------------------------

    def answered(self, ok: bool) -> None:
        if ok:
            self._answered_at = trio.current_time()
        else:
            self._failed_at = trio.current_time()

    def reachable(self) -> bool:
        """Is the store known to take a change now? Not if the circuit is not closed or
        the store lost data; for a remote store, only if it answered within
        REACHABLE_WITHIN_S and has not failed since. A create waits for its close, and
        a write() is accepted, only then: else they fail where a shell sees it (fs)."""
        if self.failsafe or (self.breaker is not None and self.breaker.state != "closed"):
            return False
        if not self.store.remote:
            return True
        return self._failed_at < self._answered_at >= trio.current_time() - REACHABLE_WITHIN_S

    async def run_heartbeat(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Ask a remote store every HEARTBEAT_S whether it answers, in a thread of its own
        (not queued behind the journal's lock or slow calls), for reachable. Through the
        breaker like every call: while the circuit is open, it is the probe that closes
        it once the store answers again."""
        task_status.started()
        if not self.store.remote:
            return
        limiter = trio.CapacityLimiter(1)
        while True:
            try:
                await self.call(self.store.last_seq, limiter=limiter)
            except errors.LighthouseError:
                pass   # counted by call
            await trio.sleep(HEARTBEAT_S)
