"""The root `events` file: the log as one JSON line per event.

An index of line offsets is built on first use (one pass over the log in a worker
thread) and then extended as events are applied, so stat reports the current size
and a read at any offset renders only the lines it covers. A read at the end returns
nothing at once: `cat` and `grep` stop, `tail -f` polls the size and reads what was added.
EventsView shows it at the root as a View (base.py).
"""
from __future__ import annotations

import array
import bisect
import stat
from typing import Callable

import trio

from .. import errors
from ..domain.events import Event
from ..domain.layout import ROOT_INO
from ..store.guarded import GuardedStore
from .base import View

RENDER_BATCH = 256
EVENTS_INO = 6


class EventsFile:
    def __init__(self, store: GuardedStore, view: Callable[[Event], Event | None],
                 applied_seq: Callable[[], int]):
        self.store = store
        self.view = view   # what this mount's viewer sees of an event (None: nothing)
        self._applied_seq = applied_seq
        self._seqs = array.array("q")
        self._ends = array.array("q")   # byte offset just past each line
        self._built = False
        self._build_lock = trio.Lock()
        self._built_to = 0
        self._building = False
        self._early: list[Event] = []

    @property
    def size(self) -> int:
        return self._ends[-1] if self._ends else 0

    def on_applied(self, event: Event) -> None:
        if self._built:
            if event.seq > self._built_to:
                self._add(event)
        elif self._building:
            # Applied while the index is being read from the store: it may or may not
            # be in what the build reads, so keep it and add it after if it is not.
            self._early.append(event)

    def _add(self, event: Event) -> None:
        self._built_to = event.seq
        seen = self.view(event)
        if seen is not None:
            self._seqs.append(event.seq)
            self._ends.append(self.size + len(seen.to_json_line()))

    async def ensure_built(self) -> None:
        """Index every event applied so far, once; later ones arrive by on_applied."""
        async with self._build_lock:
            if self._built:
                return
            # Read under the lock: an event applied while this task waited for it is
            # neither early (no build was running) nor below a seq taken before.
            applied_seq = self._applied_seq()
            self._building = True
            try:
                while self._built_to < applied_seq:
                    batch = await self.store.read(self._built_to, 5000)
                    batch = [e for e in batch if e.seq <= applied_seq]
                    if not batch:
                        break
                    for event in batch:
                        self._add(event)
                for event in self._early:
                    if event.seq > self._built_to:
                        self._add(event)
                self._built = True
            finally:
                # On failure (store down) the next build resumes at _built_to and reads
                # what was applied meanwhile from the store: nothing queues up here.
                self._early.clear()
                self._building = False

    async def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        first = bisect.bisect_right(self._ends, offset)
        start_of_first = self._ends[first - 1] if first else 0
        end = min(offset + length, self.size)
        last = bisect.bisect_left(self._ends, end)
        wanted = self._seqs[first:last + 1]
        lines = []
        after = wanted[0] - 1
        while wanted and after < wanted[-1]:
            batch = await self.store.read(after, min(RENDER_BATCH, wanted[-1] - after))
            if not batch:
                break
            seen = (self.view(e) for e in batch if e.seq <= wanted[-1])
            lines.extend(e.to_json_line() for e in seen if e is not None)
            after = batch[-1].seq
        blob = b"".join(lines)
        return blob[offset - start_of_first:end - start_of_first]


class EventsHandle:
    """An open `events`: read at any offset, never kept by the kernel (it grows)."""

    __slots__ = ("file",)
    keep_cache = False

    def __init__(self, file: EventsFile):
        self.file = file

    async def read(self, off: int, size: int) -> bytes:
        return await self.file.read(off, size)


class EventsView(View):
    """The root's `events` file. `attrs`: fs/attrs.py (virtual_attr)."""

    door = b"events"
    door_ino = EVENTS_INO
    fixed_inos = (EVENTS_INO,)

    def __init__(self, file: EventsFile, attrs):
        self.file = file
        self._virtual_attr = attrs.virtual_attr

    def is_door(self, parent: int) -> bool:
        return parent == ROOT_INO

    def refuse_change(self):
        raise errors.NotPermitted("events is part of the layout")

    async def lookup(self, parent: int, name: bytes):
        if parent == EVENTS_INO:
            raise errors.NotADirectory("events is a file")
        return await self.getattr(EVENTS_INO)

    async def getattr(self, ino: int):
        await self.file.ensure_built()
        return self._virtual_attr(EVENTS_INO, stat.S_IFREG | 0o444, self.file.size, volatile=True)

    async def open(self, ino: int, writing: bool) -> EventsHandle:
        if writing:
            raise errors.PermissionDenied("the control files are read-only")
        await self.file.ensure_built()
        return EventsHandle(self.file)
