"""The journal: the one place where events are appended and applied, in order.

Local changes are appended in groups (group commit: while one append is on disk, the
next ones queue up and go together), then applied to the tree. Events appended by
other producers (another daemon, the API, `lighthouse emit`) are read back by the
follower and applied in the same order. Every event is applied once, in seq order.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from typing import TYPE_CHECKING, Callable

import trio

from . import errors
from .events import Draft, Event
from .metrics import Metrics
from .store import Store
from .tree import Change, Tree

if TYPE_CHECKING:
    from .breaker import Breaker

log = logging.getLogger(__name__)

# Listener: (event, change or None if skipped, local) -> None. Runs on the trio thread.
Listener = Callable[[Event, Change | None, bool], None]

SNAPSHOT_EVERY = 20_000
READ_BATCH = 2000
OWN_WAKE_PAUSE_S = 0.005


class _Pending:
    __slots__ = ("drafts", "chunks", "durable", "done", "result", "error")

    def __init__(self, drafts: list[Draft], chunks: dict[bytes, bytes], durable: bool):
        self.drafts = drafts
        self.chunks = chunks
        self.durable = durable
        self.done = trio.Event()
        self.result: list[tuple[Event, Change | None]] = []
        self.error: BaseException | None = None


class Journal:
    def __init__(self, store: Store, tree: Tree, actor: str = "", metrics: Metrics | None = None,
                 breaker: Breaker | None = None):
        self.store = store
        self.tree = tree
        self.actor = actor
        self.metrics = metrics or Metrics()
        # Every store call goes through the breaker: a sick store makes calls fail fast.
        self.breaker = breaker
        self.listeners: list[Listener] = []
        # Set when the store lost data we had seen: from then on nothing is appended
        # (EIO), while reads keep serving the last consistent projection.
        self.failsafe: str | None = None
        # Held across "append, then apply" and "read, then apply": no await between a
        # store call and applying its result may let another task apply events.
        self.lock = trio.Lock()
        self._pending: list[_Pending] = []
        self._wakeup = trio.Event()
        # The newest snapshot in the store that this daemon knows of (the one the tree
        # was loaded from, or one stored since): not the applied seq at start, or what a
        # start replayed would never be snapshotted.
        self._snapshot_seq = tree.snapshot_seq
        self._snapshot_tried = tree.snapshot_seq
        self._snapshotting = trio.Lock()
        self.metrics.snapshot_seq.set(tree.snapshot_seq)
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(8)

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def load_tree(cls, store: Store, up_to: float = math.inf) -> Tree:
        """The projection just after event `up_to` (default: the end of the log): the
        newest snapshot at or before it plus the events that follow.

        Blocking (meant for a worker thread).
        """
        snap = store.latest_snapshot(None if up_to == math.inf else int(up_to))
        # The cyclic collector would walk the growing tree again and again (half the
        # time of a long replay); nothing made here is cyclic garbage.
        with _collector_paused():
            tree = Tree.load(snap[1]) if snap else Tree()
            replay(store, tree, up_to)
        return tree

    async def call_store(self, fn, *args, write: bool = False):
        """Run a blocking store call in a worker thread, behind the breaker if there is one."""
        if write and self.failsafe:
            raise errors.StoreDataLost(self.failsafe)
        try:
            if self.breaker is not None:
                return await self.breaker.call(fn, *args)
            limiter = self._write_limiter if write else self._read_limiter
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
        except errors.StoreDataLost as exc:
            if not self.failsafe:
                self.failsafe = str(exc)
                log.error("THE STORE LOST DATA THIS DAEMON HAD SEEN: refusing every change from now on "
                          "and serving the last consistent state read-only. Restore the store from a "
                          "backup or remount on a fresh namespace. Cause: %s", exc)
            raise

    # ---- local changes ---------------------------------------------------------------

    async def submit(self, drafts: list[Draft], chunks: dict[bytes, bytes] | None = None,
                     durable: bool = True) -> list[tuple[Event, Change | None]]:
        """Append drafts as consecutive events and apply them; return each with its change.

        Returns when the events are stored (on disk if `durable`, else safe from a crash
        of this process) and applied to the tree. A change of None means the tree
        skipped the event (it no longer fit). Raises StoreUnavailable if the store
        could not take them.
        """
        drafts = [d if d.actor else Draft(d.type, d.path, d.payload, self.actor) for d in drafts]
        item = _Pending(drafts, chunks or {}, durable)
        self._pending.append(item)
        self._wakeup.set()
        await item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    async def run_committer(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        drafts = [d for item in batch for d in item.drafts]
        chunks: dict[bytes, bytes] = {}
        for item in batch:
            chunks.update(item.chunks)
        async with self.lock:
            started = trio.current_time()
            try:
                durable = any(item.durable for item in batch)
                appended = await self.call_store(self.store.append, drafts, chunks, durable, write=True)
            except errors.LighthouseError as exc:
                for item in batch:
                    item.error = exc
                    item.done.set()
                return
            except Exception as exc:
                log.exception("append of %d events failed unexpectedly", len(drafts))
                for item in batch:
                    item.error = errors.StoreUnavailable(str(exc))
                    item.done.set()
                return
            self.metrics.commit_seconds.observe(trio.current_time() - started)
            self.metrics.commit_events.observe(len(drafts))
            results = []
            try:
                for event in appended:
                    if event.seq > self.tree.applied_seq + 1:
                        # Another producer appended in between: its events come first.
                        await self._apply_from_store(event.seq - 1)
                    results.append((event, self._apply(event, local=True)))
            except errors.LighthouseError as exc:
                # Ours are stored but cannot be applied in order now; the follower
                # applies them once the store answers. The callers get the error.
                log.warning("%d stored events wait for the follower: %s", len(appended) - len(results), exc)
                for item in batch:
                    item.error = exc
                    item.done.set()
                return
        pos = 0
        for item in batch:
            item.result = results[pos:pos + len(item.drafts)]
            pos += len(item.drafts)
            item.done.set()
        await self.maybe_snapshot()

    async def sync(self) -> None:
        """Make every event appended so far durable (fsync, fsyncdir)."""
        await self.call_store(self.store.sync, write=True)

    def _apply(self, event: Event, local: bool) -> Change | None:
        change = self.tree.apply(event)
        self.metrics.events_applied.labels("local" if local else "remote").inc()
        self.metrics.applied_seq.set(event.seq)
        if not local:
            self.metrics.follower_lag_seconds.set(max(0.0, time.time() - event.time_ns / 1e9))
        for listener in self.listeners:
            listener(event, change, local)
        return change

    # ---- other producers -------------------------------------------------------------

    async def catch_up(self) -> int:
        """Apply whatever other producers appended; return how many events were applied."""
        async with self.lock:
            before = self.tree.applied_seq
            await self._apply_from_store(math.inf)
            applied = self.tree.applied_seq - before
        await self._after_following(applied)
        return applied

    async def _apply_followed(self, batch: list[Event]) -> int:
        """Apply events the follower read; return how many were new here. Our own are
        among them: the committer held the lock from before their append until it had
        applied them, so by the time we hold it they are behind applied_seq."""
        async with self.lock:
            before = self.tree.applied_seq
            for event in batch:
                if event.seq <= self.tree.applied_seq:
                    continue
                if event.seq > self.tree.applied_seq + 1:
                    await self._apply_from_store(event.seq - 1)
                self._apply(event, local=False)
            applied = self.tree.applied_seq - before
        await self._after_following(applied)
        return applied

    async def _after_following(self, applied: int) -> None:
        # The backlog found when woken: how far behind the store this daemon was.
        self.metrics.follower_lag_events.set(applied)
        if applied:
            await self.maybe_snapshot()

    async def _apply_from_store(self, up_to: float) -> None:
        while self.tree.applied_seq < up_to:
            batch = await self.call_store(self.store.read, self.tree.applied_seq, READ_BATCH)
            batch = [e for e in batch if e.seq <= up_to]
            if not batch:
                return
            for event in batch:
                self._apply(event, local=False)

    async def follow(self, retry_interval: float = 0.5, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Apply other producers' events as they are stored, forever.

        A worker thread waits in the store and reads what arrived (Redis: XREAD BLOCK;
        SQLite: inotify), and the trio side applies it. If the store fails, retry after
        a pause.
        """
        task_status.started()
        failing = False
        batch: list[Event] | None = None   # None: not known what the store holds
        while True:
            try:
                if batch is None:
                    await self.catch_up()
                elif batch and (batch[-1].seq <= self.tree.applied_seq or not await self._apply_followed(batch)):
                    # Nothing new but our own appends. Each wake-up costs a thread hop
                    # and, on Redis, a blocked XREAD served next to every append: while
                    # this daemon writes, look again only after a pause. Others' events
                    # wait at most that long, and every local commit applies any that
                    # came before it anyway.
                    await trio.sleep(OWN_WAKE_PAUSE_S)
                batch = await trio.to_thread.run_sync(self.store.wait_and_read, self.tree.applied_seq, 1.0,
                                                      READ_BATCH, abandon_on_cancel=True)
                if failing:
                    log.warning("following the store again")
                failing = False
            except errors.LighthouseError as exc:
                if not failing:
                    log.warning("following the store failed; retrying every %.1fs: %s", retry_interval, exc)
                failing = True
                batch = None
                await trio.sleep(retry_interval)

    async def run_housekeeping(self, interval: float = 1.0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Checkpoint the store now and then, away from the commits close() waits for."""
        await self.call_store(self.store.defer_checkpoints, write=True)
        task_status.started()
        checkpointed = self.tree.applied_seq
        while True:
            await trio.sleep(interval)
            if self.tree.applied_seq != checkpointed:
                checkpointed = self.tree.applied_seq
                try:
                    await self.call_store(self.store.checkpoint)
                except errors.LighthouseError as exc:
                    log.warning("store housekeeping failed, retrying later: %s", exc)

    # ---- snapshots ---------------------------------------------------------------------

    async def maybe_snapshot(self) -> None:
        """Snapshot once SNAPSHOT_EVERY events are past the newest snapshot (a failed
        attempt waits as long again: a dump of a large tree costs seconds)."""
        if (self.tree.applied_seq - max(self._snapshot_seq, self._snapshot_tried) >= SNAPSHOT_EVERY
                and not self._snapshotting.locked()):
            await self.snapshot()

    async def snapshot(self) -> None:
        """Store the projection so that the next start replays only what follows."""
        async with self._snapshotting:
            if self.tree.applied_seq == self._snapshot_seq:
                return
            # The dump takes seconds at a million files: a worker thread does it, while the
            # lock keeps every event from being applied (events are applied only under it).
            async with self.lock:
                seq = self.tree.applied_seq
                blob = await trio.to_thread.run_sync(self.tree.dump)
            self._snapshot_tried = seq
            try:
                await self.call_store(self.store.put_snapshot, seq, blob, write=True)
            except errors.LighthouseError as exc:
                log.warning("snapshot at %d not stored (the next start replays more): %s", seq, exc)
                return
            self._snapshot_seq = seq
            self.metrics.snapshot_seq.set(seq)
            log.info("snapshot at event %d stored (%d bytes)", seq, len(blob))


@contextlib.contextmanager
def _collector_paused():
    """Pause the cyclic garbage collector (process-wide) while a tree is built. Two
    overlapping builds may end with it running sooner, never with it left off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def replay(store: Store, tree: Tree, up_to: float) -> None:
    """Apply stored events after tree.applied_seq up to `up_to` (blocking)."""
    while tree.applied_seq < up_to:
        batch = [e for e in store.read(tree.applied_seq, READ_BATCH) if e.seq <= up_to]
        if not batch:
            return
        for event in batch:
            tree.apply(event)
