"""The follower: applies other producers' events (another daemon, the API, `lighthouse
emit`) as they are stored, in the order of the log."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from .. import errors
from ..domain.events import Event
from ..store.guarded import GuardedStore
from .observers import Observers
from .projection import READ_BATCH, Projection

log = logging.getLogger(__name__)

# How long the store's blocking read waits for events before it answers "none".
WAIT_S = 1.0
OWN_WAKE_PAUSE_S = 0.005


class Follower:
    def __init__(self, projection: Projection, store: GuardedStore, observers: Observers,
                 after_applied: Callable[[], Awaitable[None]]):
        self.projection = projection
        self.tree = projection.tree
        self.store = store
        self.observers = observers
        self._after_applied = after_applied   # housekeeping's maybe_snapshot

    async def catch_up(self) -> int:
        """Apply whatever other producers appended; return how many events were applied."""
        return await self._followed(await self.projection.catch_up())

    async def _apply(self, batch: list[Event]) -> int:
        return await self._followed(await self.projection.apply_followed(batch))

    async def _followed(self, applied: int) -> int:
        # The backlog found when woken: how far behind the store this daemon was.
        self.observers.backlog(applied)
        if applied:
            await self._after_applied()
        return applied

    async def run(self, retry_interval: float = 0.5, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Apply other producers' events as they are stored, forever.

        The guarded store's blocking read waits in the store and reads what arrived
        (Redis: XREAD BLOCK; SQLite: inotify) in a worker thread, behind the breaker like
        every call, and the trio side applies it. If the store fails, retry after a pause.
        """
        task_status.started()
        failing = False
        batch: list[Event] | None = None   # None: not known what the store holds
        while True:
            try:
                if batch is None:
                    await self.catch_up()
                elif batch and (batch[-1].seq <= self.tree.applied_seq or not await self._apply(batch)):
                    # Nothing new but our own appends. Each wake-up costs a thread hop
                    # and, on Redis, a blocked XREAD served next to every append: while
                    # this daemon writes, look again only after a pause. Others' events
                    # wait at most that long, and every local commit applies any that
                    # came before it anyway.
                    await trio.sleep(OWN_WAKE_PAUSE_S)
                batch = await self.store.wait_and_read(self.tree.applied_seq, WAIT_S, READ_BATCH)
                if failing:
                    log.warning("following the store again")
                failing = False
            except errors.LighthouseError as exc:
                if not failing:
                    log.warning("following the store failed; retrying every %.1fs: %s", retry_interval, exc)
                failing = True
                batch = None
                await trio.sleep(retry_interval)
