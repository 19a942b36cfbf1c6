"""Keeping the store small and quick to start from: snapshots of the projection (so a
start replays only what follows the newest), and the store's own checkpoints, away
from the commits that close() waits for."""
from __future__ import annotations

import logging

import trio

from .. import errors
from ..domain import snapshot
from ..store.guarded import GuardedStore
from .observers import Observers
from .projection import Projection

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 20_000


class Housekeeping:
    def __init__(self, projection: Projection, store: GuardedStore, observers: Observers):
        self.projection = projection
        self.tree = projection.tree
        self.store = store
        self.observers = observers
        # The newest snapshot in the store that this daemon knows of (the one the tree
        # was loaded from, or one stored since): not the applied seq at start, or what a
        # start replayed would never be snapshotted.
        self._snapshot_seq = self.tree.snapshot_seq
        self._snapshot_tried = self.tree.snapshot_seq
        self._snapshotting = trio.Lock()
        observers.snapshot_seq(self.tree.snapshot_seq)

    async def run(self, interval: float = 1.0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Checkpoint the store now and then, away from the commits close() waits for."""
        raw = self.store.store
        await self.store.call(raw.defer_checkpoints, write=True)
        task_status.started()
        checkpointed = self.tree.applied_seq
        while True:
            await trio.sleep(interval)
            if raw.full:   # writes are refused at write() meanwhile: nothing else would look
                try:
                    await self.store.call(raw.recheck_full)
                except errors.LighthouseError as exc:
                    log.debug("looking for room in the store failed: %s", exc)
            if self.tree.applied_seq != checkpointed:
                checkpointed = self.tree.applied_seq
                try:
                    await self.store.call(raw.checkpoint)
                except errors.LighthouseError as exc:
                    log.warning("store housekeeping failed, retrying later: %s", exc)

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
            async with self.projection.lock:
                seq = self.tree.applied_seq
                blob = await trio.to_thread.run_sync(snapshot.dump, self.tree)
            self._snapshot_tried = seq
            try:
                await self.store.put_snapshot(seq, blob)
            except errors.LighthouseError as exc:
                log.warning("snapshot at %d not stored (the next start replays more): %s", seq, exc)
                return
            self._snapshot_seq = seq
            self.observers.snapshot_seq(seq)
            log.info("snapshot at event %d stored (%d bytes)", seq, len(blob))
