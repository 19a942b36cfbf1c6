"""The journal: the one place where events are appended and applied, in order.

Local changes are appended in groups (group commit: while one append is on disk, the
next ones queue up and go together), then applied to the tree. Events appended by
other producers (another daemon, the API, `lighthouse emit`) are read back by the
follower and applied in the same order. Every event is applied once, in seq order.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import trio

from . import errors
from .events import Draft, Event
from .store import Store
from .tree import Change, Tree

log = logging.getLogger(__name__)

# Listener: (event, change or None if skipped, local) -> None. Runs on the trio thread.
Listener = Callable[[Event, Change | None, bool], None]

SNAPSHOT_EVERY = 20_000
READ_BATCH = 2000


class _Pending:
    __slots__ = ("drafts", "chunks", "done", "result", "error")

    def __init__(self, drafts: list[Draft], chunks: dict[bytes, bytes]):
        self.drafts = drafts
        self.chunks = chunks
        self.done = trio.Event()
        self.result: list[tuple[Event, Change | None]] = []
        self.error: BaseException | None = None


class Journal:
    def __init__(self, store: Store, tree: Tree, actor: str = ""):
        self.store = store
        self.tree = tree
        self.actor = actor
        self.listeners: list[Listener] = []
        # Held across "append, then apply" and "read, then apply": no await between a
        # store call and applying its result may let another task apply events.
        self.lock = trio.Lock()
        self._pending: list[_Pending] = []
        self._wakeup = trio.Event()
        self._snapshot_seq = tree.applied_seq
        self._store_limiter = trio.CapacityLimiter(1)

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def load_tree(cls, store: Store) -> Tree:
        """The projection at the end of the log: the newest snapshot plus what follows it.

        Blocking (meant for a worker thread at start-up).
        """
        snap = store.latest_snapshot()
        tree = Tree.load(snap[1]) if snap else Tree()
        replay(store, tree, math.inf)
        return tree

    # ---- local changes ---------------------------------------------------------------

    async def submit(self, drafts: list[Draft], chunks: dict[bytes, bytes] | None = None
                     ) -> list[tuple[Event, Change | None]]:
        """Append drafts as consecutive events and apply them; return each with its change.

        Returns when the events are durable in the store and applied to the tree.
        A change of None means the tree skipped the event (it no longer fit).
        Raises StoreUnavailable if the store could not take them.
        """
        drafts = [d if d.actor else Draft(d.type, d.path, d.payload, self.actor) for d in drafts]
        item = _Pending(drafts, chunks or {})
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
            try:
                appended = await trio.to_thread.run_sync(self.store.append, drafts, chunks,
                                                         limiter=self._store_limiter)
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
            results = []
            for event in appended:
                if event.seq > self.tree.applied_seq + 1:
                    await self._apply_from_store(event.seq - 1)
                results.append((event, self._apply(event, local=True)))
        pos = 0
        for item in batch:
            item.result = results[pos:pos + len(item.drafts)]
            pos += len(item.drafts)
            item.done.set()
        await self._maybe_snapshot()

    def _apply(self, event: Event, local: bool) -> Change | None:
        change = self.tree.apply(event)
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
        if applied:
            await self._maybe_snapshot()
        return applied

    async def _apply_from_store(self, up_to: float) -> None:
        while self.tree.applied_seq < up_to:
            batch = await trio.to_thread.run_sync(self.store.read, self.tree.applied_seq, READ_BATCH,
                                                  limiter=self._store_limiter)
            batch = [e for e in batch if e.seq <= up_to]
            if not batch:
                return
            for event in batch:
                self._apply(event, local=False)

    async def follow(self, interval: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Poll the store for other producers' events, forever."""
        task_status.started()
        while True:
            try:
                await self.catch_up()
            except errors.LighthouseError as exc:
                log.warning("following the store failed, retrying: %s", exc)
            await trio.sleep(interval)

    # ---- snapshots ---------------------------------------------------------------------

    async def _maybe_snapshot(self) -> None:
        if self.tree.applied_seq - self._snapshot_seq >= SNAPSHOT_EVERY:
            await self.snapshot()

    async def snapshot(self) -> None:
        """Store the projection so that the next start replays only what follows."""
        if self.tree.applied_seq == self._snapshot_seq:
            return
        seq = self.tree.applied_seq
        blob = self.tree.dump()  # on the trio thread: the tree must not change while dumped
        self._snapshot_seq = seq
        try:
            await trio.to_thread.run_sync(self.store.put_snapshot, seq, blob, limiter=self._store_limiter)
        except errors.LighthouseError as exc:
            log.warning("snapshot at %d not stored (the next start replays more): %s", seq, exc)


def replay(store: Store, tree: Tree, up_to: float) -> None:
    """Apply stored events after tree.applied_seq up to `up_to` (blocking)."""
    while tree.applied_seq < up_to:
        batch = [e for e in store.read(tree.applied_seq, READ_BATCH) if e.seq <= up_to]
        if not batch:
            return
        for event in batch:
            tree.apply(event)
