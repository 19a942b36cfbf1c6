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

from .. import errors
from ..domain import events
from ..domain.events import Draft, Event
from ..domain.tree import Change, Tree, UncheckedSnapshot
from ..metrics import Metrics
from ..store import Store

if TYPE_CHECKING:
    from ..store.breaker import Breaker

log = logging.getLogger(__name__)

# Listener: (event, change or None if skipped, local) -> None. Runs on the trio thread.
Listener = Callable[[Event, Change | None, bool], None]

SNAPSHOT_EVERY = 20_000
# A remote store is known to be reachable if it answered within this and has not failed
# since; the heartbeat asks it this often (see store_reachable).
REACHABLE_WITHIN_S = 2.0
HEARTBEAT_S = 0.5
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
        # trio times of the store's last answer and last failure (store_reachable).
        self._answered_at = -math.inf
        self._failed_at = -math.inf

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def load_tree(cls, store: Store, up_to: float = math.inf) -> Tree:
        """The projection just after event `up_to` (default: the end of the log): the
        newest snapshot at or before it plus the events that follow.

        Blocking (meant for a worker thread).
        """
        tree = None
        snap = store.latest_snapshot(None if up_to == math.inf else int(up_to))
        # The cyclic collector would walk the growing tree again and again (half the
        # time of a long replay); nothing made here is cyclic garbage.
        with _collector_paused():
            while snap is not None and tree is None:
                try:
                    tree = Tree.load(snap[1])
                except ValueError as exc:
                    # Damaged (or of an older, unchecked format): an older snapshot, or the
                    # whole log, gives the same tree, only slower.
                    log.log(logging.WARNING if isinstance(exc, UncheckedSnapshot) else logging.ERROR,
                            "the snapshot at seq %d in %s is not used: %s; loading an older one or the log",
                            snap[0], store.url, exc)
                    snap = store.latest_snapshot(snap[0] - 1) if snap[0] > 1 else None
            tree = tree or Tree()
            replay(store, tree, up_to)
        return tree

    async def call_store(self, fn, *args, write: bool = False, patient: bool = False):
        """Run a blocking store call in a worker thread, behind the breaker if there is one.
        `patient`: never abandoned on a timeout (see Breaker.call)."""
        if write and self.failsafe:
            raise errors.StoreDataLost(self.failsafe)
        try:
            if self.breaker is not None:
                result = await self.breaker.call(fn, *args, patient=patient)
            else:
                limiter = self._write_limiter if write else self._read_limiter
                result = await trio.to_thread.run_sync(fn, *args, limiter=limiter)
            self._answered(True)
            return result
        except errors.StoreDataLost as exc:
            self._answered(False)
            if not self.failsafe:
                self.failsafe = str(exc)
                log.error("THE STORE LOST DATA THIS DAEMON HAD SEEN: refusing every change from now on "
                          "and serving the last consistent state read-only. Restore the store from a "
                          "backup or remount on a fresh namespace. Cause: %s", exc)
            raise
        except errors.StoreUnavailable:
            self._answered(False)
            raise

    def _answered(self, ok: bool) -> None:
        if ok:
            self._answered_at = trio.current_time()
        else:
            self._failed_at = trio.current_time()

    def store_reachable(self) -> bool:
        """Is the store known to take a change now? Not if the circuit is not closed or
        the store lost data; for a remote store, only if it answered within
        REACHABLE_WITHIN_S and has not failed since. A create waits for its close, and
        a write() is accepted, only then: else they fail where a shell sees it (files/writer.py)."""
        if self.failsafe or (self.breaker is not None and self.breaker.state != "closed"):
            return False
        if not self.store.remote:
            return True
        return self._failed_at < self._answered_at >= trio.current_time() - REACHABLE_WITHIN_S

    async def run_heartbeat(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Ask a remote store every HEARTBEAT_S whether it answers, in a thread of its own
        (not behind the journal's lock or a long append), for store_reachable."""
        task_status.started()
        if not self.store.remote:
            return
        limiter = trio.CapacityLimiter(1)
        while True:
            try:
                await trio.to_thread.run_sync(self.store.last_seq, limiter=limiter, abandon_on_cancel=True)
                self._answered(True)
            except errors.LighthouseError:
                self._answered(False)
            await trio.sleep(HEARTBEAT_S)

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
        for draft in drafts:
            # A draft the codec cannot store (a gap in the checks: a bug) fails here, for
            # its caller alone, and not the group commit of everyone else's drafts.
            events.check_encodable(draft)
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
            if batch and await self._commit(batch) is False:
                for item in batch:   # one by one: the removals among them may still fit
                    await self._commit([item])

    async def _commit(self, batch: list[_Pending]) -> bool | None:
        """Append and apply a batch; False (nothing done) if a full store refused a batch
        of several, which the caller then commits item by item."""
        drafts = [d for item in batch for d in item.drafts]
        chunks: dict[bytes, bytes] = {}
        for item in batch:
            chunks.update(item.chunks)
        async with self.lock:
            started = trio.current_time()
            try:
                durable = any(item.durable for item in batch)
                # Waited for, however long it takes: an error must mean "not stored". The
                # store bounds it (SQLite's busy timeout, RedisStore.append's deadline).
                appended = await self.call_store(self.store.append, drafts, chunks, durable, write=True,
                                                 patient=True)
            except errors.LighthouseError as exc:
                if isinstance(exc, errors.StoreFull) and len(batch) > 1:
                    return False
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
                        await self._apply_stored_before(event.seq)
                    results.append((event, self._apply(event, local=True)))
            except errors.StoreDataLost as exc:
                # Ours are stored in a store that lost data: nothing is applied any more.
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

    async def _apply_stored_before(self, seq: int) -> None:
        """Apply the events before our stored event `seq`. Ours are stored, so the
        callers' answer is success (an error would say "not stored"): a store that
        fails to give those events is asked again until it does."""
        failing = False
        while True:
            try:
                await self._apply_from_store(seq - 1)
                return
            except errors.StoreDataLost:
                raise
            except errors.LighthouseError as exc:
                if not failing:
                    log.warning("events up to %d are stored, but those before them cannot be read yet; "
                                "retrying: %s", seq, exc)
                failing = True
                await trio.sleep(0.2)

    async def sync(self) -> None:
        """Make every event appended so far durable (fsync, fsyncdir)."""
        await self.call_store(self.store.sync, write=True, patient=True)   # fsync's answer must be exact too

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
                self._answered(True)
                if failing:
                    log.warning("following the store again")
                failing = False
            except errors.LighthouseError as exc:
                self._answered(False)
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
            if self.store.full:   # writes are refused at write() meanwhile: nothing else would look
                try:
                    await self.call_store(self.store.recheck_full)
                except errors.LighthouseError as exc:
                    log.debug("looking for room in the store failed: %s", exc)
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
