"""What the engine reports, as callables the daemon hands down (to the metrics, say):
the engine never sees the metrics registry. Each defaults to doing nothing."""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..domain.events import Event


def _nothing(*args) -> None:
    pass


@dataclasses.dataclass
class Observers:
    # An event applied to the tree: (event, local: appended by this daemon?).
    applied: Callable[[Event, bool], None] = _nothing
    # A group commit stored: (seconds it took, events in it).
    committed: Callable[[float, int], None] = _nothing
    # The follower woke to this many events it had not applied: how far behind it was.
    backlog: Callable[[int], None] = _nothing
    # The newest snapshot in the store this daemon knows of is at this seq.
    snapshot_seq: Callable[[int], None] = _nothing
