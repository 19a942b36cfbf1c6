"""What the kernel holds, and what it is told: its references to inodes and the
invalidations pushed to it.

The kernel's references are counted here, not in the tree (domain/tree.py knows
nothing of the kernel): one count per inode it was handed (a lookup, a create, an
entry of readdirplus), dropped only by forget. An unlinked inode stays in the tree
while the kernel references it or a file is open on it (`is_pinned`).

Every change made elsewhere is pushed to the kernel by invalidation, so it may cache
names and attributes for long (attrs.CACHE_TIMEOUT). invalidate_entry can deadlock
inside a handler: only its async form is used. invalidate_inode can wait for page locks
the kernel holds during a request: it runs in a worker thread (run_invalidator).
"""
from __future__ import annotations

import errno
import logging
from typing import Callable

import pyfuse3
import trio

from ..domain import events
from ..domain.tree import Change, Node, Tree

log = logging.getLogger(__name__)


class Kernel:
    """`is_open(ino)`: is a file open on the inode (it then stays, as the kernel's do)."""

    def __init__(self, tree: Tree, is_open: Callable[[int], bool]):
        self.tree = tree
        self._is_open = is_open
        self.attached = False   # True once mounted: invalidations go to the kernel
        # ino -> the kernel's references. Keyed by the node's own int object, so an
        # entry costs the dict's slot only (about 40 bytes; the walk of 100k files: 4 MB).
        self.lookups: dict[int, int] = {}
        # ino -> (parent, name) it was last looked up by: a file's path without a walk.
        self.where: dict[int, tuple[int, bytes]] = {}
        self._send, self._recv = trio.open_memory_channel(10_000)
        tree.is_pinned = self.is_pinned

    @property
    def inodes(self) -> int:
        """Tree inodes the kernel holds references to."""
        return len(self.lookups)

    def is_pinned(self, ino: int) -> bool:
        return ino in self.lookups or self._is_open(ino)

    def remember(self, node: Node, parent: int | None = None, name: bytes | None = None) -> None:
        """The kernel took a reference to `node` (a lookup, a create, readdirplus)."""
        ino = node.ino
        self.lookups[ino] = self.lookups.get(ino, 0) + 1
        if parent is not None:
            self.where[ino] = (parent, name)

    def forget(self, ino: int, count: int) -> bool:
        """The kernel dropped `count` references: True if it holds none now and no file
        is open on the inode (the caller then lets the tree drop it if unlinked)."""
        left = self.lookups.get(ino, 0) - count
        if left > 0:
            self.lookups[ino] = left
            return False
        self.lookups.pop(ino, None)
        if self._is_open(ino):
            return False
        self.where.pop(ino, None)
        return True

    def drop(self, ino: int) -> None:
        """The inode is gone without a forget (a new file dropped before it was logged)."""
        self.lookups.pop(ino, None)

    def path_of(self, ino: int) -> str:
        """A path of the inode, for logs and events: the name it was looked up by while
        that still names it, else found by a walk."""
        tree = self.tree
        node = tree.nodes.get(ino)
        if node is not None and node.is_dir:
            return tree.dir_path(ino)
        where = self.where.get(ino)
        if where is not None:
            parent, name = where
            if tree.find(parent, name) is node:
                return tree.path(parent, name)
        for candidate in tree.walk():
            if candidate.is_dir:
                for name, child in candidate.entries.items():
                    if child == ino:
                        self.where[ino] = (candidate.ino, name)
                        return tree.path(candidate.ino, name)
        return f"inode/{ino}"

    # ---- invalidation ----------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        """Another node's change was applied: the kernel forgets the names and inodes it
        touched (the inodes it holds, and the fixed ones)."""
        if not self.attached:
            return
        for parent, name in change.entries:
            self.invalidate_entry(parent, name)
        lookups = self.lookups
        for ino in change.inodes:
            if ino in lookups or ino < events.INO_BASE:
                self._queue(ino)

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        if self.attached:
            try:
                pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)
            except OSError as exc:
                log.debug("invalidate_entry(%d, %r): %s", parent, name, exc)

    def invalidate_later(self, ino: int) -> None:
        """Have the kernel drop an inode's attributes and pages (in a worker thread:
        invalidate_inode can wait for page locks that the kernel holds during a request)."""
        if self.attached:
            self._queue(ino)

    async def drop_pages(self, ino: int) -> None:
        """The kernel drops the inode's pages and size now. Only from FLUSH and FSYNC:
        no kernel lock this waits for is held across them (a WRITE holds its pages)."""
        if self.attached:
            await trio.to_thread.run_sync(self.invalidate_inodes, [ino])

    def _queue(self, ino: int) -> None:
        try:
            self._send.send_nowait(ino)
        except trio.WouldBlock:
            log.warning("kernel invalidation queue full; inode %d may stay stale until its timeout", ino)

    async def run_invalidator(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """invalidate_inode can block on page locks, so it runs in a worker thread: one
        hop for everything queued meanwhile, each inode once (a burst of remote events
        touches the same directory again and again)."""
        task_status.started()
        async for ino in self._recv:
            inos = {ino: None}
            while True:
                try:
                    inos[self._recv.receive_nowait()] = None
                except trio.WouldBlock:
                    break
            await trio.to_thread.run_sync(self.invalidate_inodes, list(inos))

    @staticmethod
    def invalidate_inodes(inos: list[int]) -> None:
        for ino in inos:
            try:
                pyfuse3.invalidate_inode(ino, False)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("invalidate_inode(%d): %s", ino, exc)
