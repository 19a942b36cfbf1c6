"""The engine, wired: one projection (projection.py) that the committer (this daemon's
changes, committer.py) and the follower (everyone else's, follower.py) apply events to,
in seq order, and housekeeping (snapshots and checkpoints, housekeeping.py), all
calling the store through one guarded store (store/guarded.py).

The file system and the daemon hold this one object; its background workers are
run_committer, follow and run_housekeeping (and the guarded store's run_heartbeat).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..domain.tree import Tree
from ..store import Store
from ..store.guarded import GuardedStore
from .committer import Committer
from .follower import Follower
from .housekeeping import Housekeeping
from .observers import Observers
from .projection import Projection

if TYPE_CHECKING:
    from ..store.breaker import Breaker


class Journal:
    def __init__(self, store: Store, tree: Tree, actor: str = "", observers: Observers | None = None,
                 breaker: Breaker | None = None):
        observers = observers or Observers()
        self.store = store                           # blocking: only for calls in a worker thread
        self.guarded = GuardedStore(store, breaker)  # every call from trio goes through this
        self.tree = tree
        self.actor = actor
        self.breaker = breaker
        self.projection = Projection(tree, self.guarded, observers)
        self.housekeeping = Housekeeping(self.projection, self.guarded, observers)
        snapshot_if_due = self.housekeeping.maybe_snapshot
        self.committer = Committer(self.projection, self.guarded, actor, observers, snapshot_if_due)
        self.follower = Follower(self.projection, self.guarded, observers, snapshot_if_due)
        self.listeners = self.projection.listeners
        self.lock = self.projection.lock
        # the calls the file system and the daemon make
        self.submit = self.committer.submit
        self.sync = self.guarded.sync
        self.call_store = self.guarded.call
        self.store_reachable = self.guarded.reachable
        self.catch_up = self.follower.catch_up
        self.maybe_snapshot = self.housekeeping.maybe_snapshot
        self.snapshot = self.housekeeping.snapshot
        # the background workers
        self.run_committer = self.committer.run
        self.follow = self.follower.run
        self.run_housekeeping = self.housekeeping.run
        self.run_heartbeat = self.guarded.run_heartbeat

    @property
    def failsafe(self) -> str | None:
        """Why nothing is appended any more (the store lost data this daemon had seen)."""
        return self.guarded.failsafe
