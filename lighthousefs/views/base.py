"""The View interface: a virtual part of the namespace, whose inodes are no tree node.

The root's `events` file (events_file.py), `.lighthouse/` (control.py) and each
project's `.history/` (history_dir.py) are views. Each is entered from the live tree by
one name, its door (`door`, in a directory `is_door` accepts), and owns its inodes: a
few fixed ones below events.INO_BASE, or inodes it numbers from FIRST_VIEW_INO up as
the kernel is told of them. The Operations send lookup, getattr, open, opendir,
readdir and forget to the view that owns the inode; everything else in a view is
read-only (`refuse_change`). The live tree is not a View: its handlers are the hot path
and stay direct (docs/decisions.md).
"""
from __future__ import annotations

from typing import NoReturn

import pyfuse3

from .. import errors
from ..domain import events
from ..domain.tree import Node

FIRST_VIEW_INO = events.RESERVED_INO_END   # views' own numbering (.history) starts here


class Listing(list):
    """A view directory's entries, as opendir gave them: its `view` answers readdir."""

    __slots__ = ("view",)

    def __init__(self, view: View, entries):
        super().__init__(entries)
        self.view = view


class View:
    door: bytes = b""        # the name that leads into the view
    door_ino: int = 0        # the inode behind the door, listed in its directory (0: not listed)
    fixed_inos: tuple[int, ...] = ()   # inodes below events.INO_BASE it owns
    numbers_inodes = False   # owns inodes from FIRST_VIEW_INO up (`owns` says which)

    def owns(self, ino: int) -> bool:
        return ino in self.fixed_inos

    def is_door(self, parent: int) -> bool:
        """Is `door` in the live directory `parent` this view's entrance?"""
        raise NotImplementedError

    def refuse_change(self) -> NoReturn:
        """Raise the error that any change to the view (or its door) gets."""
        raise NotImplementedError

    async def lookup(self, parent: int, name: bytes) -> pyfuse3.EntryAttributes:
        """`name` in a directory of the view, or the door itself (`parent` a live directory)."""
        raise NotImplementedError

    async def getattr(self, ino: int) -> pyfuse3.EntryAttributes:
        raise NotImplementedError

    async def open(self, ino: int, writing: bool):
        """A read-only handle: `keep_cache` (may the kernel keep its pages) and
        `async read(off, size)`."""
        raise NotImplementedError

    async def opendir(self, ino: int) -> Listing:
        raise errors.NotADirectory(f"inode {ino} is not a directory")

    async def readdir(self, listing: Listing, start_id: int, token) -> None:
        """Entries (name, inode) of fixed inodes (a view that numbers its inodes as
        they are listed answers this itself)."""
        for index in range(start_id, len(listing)):
            name, ino = listing[index]
            if not pyfuse3.readdir_reply(token, name, await self.getattr(ino), index + 1):
                return

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped `count` references to a numbered inode."""

    async def node(self, ino: int) -> Node | None:
        """The node an inode of the view shows (readlink and xattrs), if any."""
        return None


class Views:
    """Which view owns an inode, or a door."""

    def __init__(self, *views: View):
        self.all = views
        self._fixed = {ino: view for view in views for ino in view.fixed_inos}
        self._doors = {view.door: view for view in views}
        self._numbering = [view for view in views if view.numbers_inodes]

    def of(self, ino: int) -> View | None:
        if ino < events.INO_BASE:
            return self._fixed.get(ino)
        if ino >= FIRST_VIEW_INO:
            for view in self._numbering:
                if view.owns(ino):
                    return view
        return None   # the live tree's (the hot path: two comparisons)

    def door(self, parent: int, name: bytes) -> View | None:
        """The view whose door `name` in the live directory `parent` is."""
        view = self._doors.get(name)
        return view if view is not None and view.is_door(parent) else None

    def listed(self, parent: int) -> list[tuple[bytes, int]]:
        """The doors listed in the live directory `parent` (name, inode)."""
        return [(view.door, view.door_ino) for view in self.all if view.door_ino and view.is_door(parent)]

    def forget(self, ino: int, count: int) -> bool:
        """True if the inode is a view's (then forgotten there)."""
        if ino < FIRST_VIEW_INO:
            return False
        for view in self._numbering:
            view.forget(ino, count)
        return True
