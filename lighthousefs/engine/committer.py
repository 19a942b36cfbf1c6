"""The committer: the one place where this daemon's changes are appended, then applied.

Local changes are appended in groups (group commit: while one append is on disk, the
next ones queue up and go together), then applied to the projection, in seq order with
whatever other producers stored before them.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from .. import errors
from ..domain import events
from ..domain.events import Draft, Event
from ..domain.tree import Change
from ..store.guarded import GuardedStore
from .observers import Observers
from .projection import Projection

log = logging.getLogger(__name__)


class _Pending:
    __slots__ = ("drafts", "chunks", "durable", "done", "result", "error")

    def __init__(self, drafts: list[Draft], chunks: dict[bytes, bytes], durable: bool):
        self.drafts = drafts
        self.chunks = chunks
        self.durable = durable
        self.done = trio.Event()
        self.result: list[tuple[Event, Change | None]] = []
        self.error: BaseException | None = None


class Committer:
    def __init__(self, projection: Projection, store: GuardedStore, actor: str, observers: Observers,
                 after_applied: Callable[[], Awaitable[None]]):
        self.projection = projection
        self.tree = projection.tree
        self.store = store
        self.actor = actor
        self.observers = observers
        self._after_applied = after_applied   # housekeeping's maybe_snapshot
        self._pending: list[_Pending] = []
        self._wakeup = trio.Event()

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

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
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
        async with self.projection.lock:
            started = trio.current_time()
            try:
                durable = any(item.durable for item in batch)
                appended = await self.store.append(drafts, chunks, durable)   # waited for: see GuardedStore
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
            self.observers.committed(trio.current_time() - started, len(drafts))
            results = []
            try:
                for event in appended:
                    if event.seq > self.tree.applied_seq + 1:
                        # Another producer appended in between: its events come first.
                        await self._apply_stored_before(event.seq)
                    results.append((event, self.projection.apply(event, local=True)))
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
        await self._after_applied()

    async def _apply_stored_before(self, seq: int) -> None:
        """Apply the events before our stored event `seq`. Ours are stored, so the
        callers' answer is success (an error would say "not stored"): a store that
        fails to give those events is asked again until it does."""
        failing = False
        while True:
            try:
                await self.projection.apply_from_store(seq - 1)
                return
            except errors.StoreDataLost:
                raise
            except errors.LighthouseError as exc:
                if not failing:
                    log.warning("events up to %d are stored, but those before them cannot be read yet; "
                                "retrying: %s", seq, exc)
                failing = True
                await trio.sleep(0.2)
