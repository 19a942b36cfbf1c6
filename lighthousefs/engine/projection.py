"""The projection: the tree, built from the log and kept in seq order.

Every event is applied once, in seq order, under one lock: local events by the
committer, other producers' by the follower (or by the committer, when they come before
its own). Listeners (the file system's kernel invalidation, the events file) hear of
every event applied. Building a tree from a store at start, or at a past seq for
`.history`, is load_tree (blocking: for a worker thread).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import math
from typing import Callable

import trio

from ..domain import snapshot
from ..domain.events import Event
from ..domain.snapshot import UncheckedSnapshot
from ..domain.tree import Change, Tree
from ..store import Store
from ..store.guarded import GuardedStore
from .observers import Observers

log = logging.getLogger(__name__)

# Listener: (event, change or None if skipped, local) -> None. Runs on the trio thread.
Listener = Callable[[Event, Change | None, bool], None]

READ_BATCH = 2000


class Projection:
    def __init__(self, tree: Tree, store: GuardedStore, observers: Observers):
        self.tree = tree
        self.store = store
        self.observers = observers
        self.listeners: list[Listener] = []
        # Held across "append, then apply" and "read, then apply": no await between a
        # store call and applying its result may let another task apply events.
        self.lock = trio.Lock()

    def apply(self, event: Event, local: bool) -> Change | None:
        change = self.tree.apply(event)
        self.observers.applied(event, local)
        for listener in self.listeners:
            listener(event, change, local)
        return change

    async def apply_from_store(self, up_to: float) -> None:
        """Read and apply the stored events after the tree's up to `up_to` (lock held)."""
        while self.tree.applied_seq < up_to:
            batch = await self.store.read(self.tree.applied_seq, READ_BATCH)
            batch = [e for e in batch if e.seq <= up_to]
            if not batch:
                return
            for event in batch:
                self.apply(event, local=False)

    async def catch_up(self) -> int:
        """Apply whatever other producers appended; return how many events were applied."""
        async with self.lock:
            before = self.tree.applied_seq
            await self.apply_from_store(math.inf)
            return self.tree.applied_seq - before

    async def apply_followed(self, batch: list[Event]) -> int:
        """Apply events the follower read; return how many were new here. Our own are
        among them: the committer held the lock from before their append until it had
        applied them, so by the time we hold it they are behind applied_seq."""
        async with self.lock:
            before = self.tree.applied_seq
            for event in batch:
                if event.seq <= self.tree.applied_seq:
                    continue
                if event.seq > self.tree.applied_seq + 1:
                    await self.apply_from_store(event.seq - 1)
                self.apply(event, local=False)
            return self.tree.applied_seq - before


def load_tree(store: Store, up_to: float = math.inf) -> Tree:
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
                tree = snapshot.load(snap[1])
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
