"""Attribute objects for the kernel: built from a node, and reused while it is unchanged."""
from __future__ import annotations

import stat
from typing import Callable

import pyfuse3

from ..domain.tree import ROOT_INO, Node, Tree

# The kernel may keep names and attributes this long: every change made elsewhere is
# pushed to it by explicit invalidation, so a long timeout costs no staleness.
CACHE_TIMEOUT = 300.0
# Attribute objects kept for reuse (about 0.3 KiB each).
ATTR_CACHE_ENTRIES = 8192


class Attrs:
    """`open_files` (ino -> OpenFile, files/handles.py) is read, never changed: an open
    file's size is its buffer's, and its times those of its uncommitted changes
    (`pending_times`)."""

    def __init__(self, tree: Tree, open_files: dict, pending_times: Callable[[object, Node], dict]):
        self.tree = tree
        self._open_files = open_files
        self._pending_times = pending_times
        self.cache: dict[int, tuple[int, pyfuse3.EntryAttributes]] = {}   # ino -> (node version, attributes)

    def attr(self, node: Node) -> pyfuse3.EntryAttributes:
        """A tree node's attributes, reused while the node is unchanged: a listing of
        1000 entries would otherwise build 1000 objects of 15 fields each time. Every
        change to a node bumps its version (tree.py); pyfuse3 copies the attributes
        into its reply, so sharing one object is safe."""
        if node.ino in self._open_files:
            return self.build_attr(node)   # the size comes from the open buffer
        cached = self.cache.get(node.ino)
        if cached is not None and cached[0] == node.version:
            return cached[1]
        attr = self.build_attr(node)
        if len(self.cache) >= ATTR_CACHE_ENTRIES:
            self.cache.clear()   # O(1) amortized; a walk past the bound just rebuilds
        self.cache[node.ino] = (node.version, attr)
        return attr

    def build_attr(self, node: Node, ino: int | None = None, read_only: bool = False) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino or node.ino
        attr.entry_timeout = CACHE_TIMEOUT
        attr.attr_timeout = CACHE_TIMEOUT
        attr.st_mode = node.mode & ~0o222 if read_only else node.mode
        attr.st_nlink = node.nlink
        attr.st_uid = node.uid
        attr.st_gid = node.gid
        attr.st_rdev = node.rdev
        open_file = self._open_files.get(node.ino) if ino is None else None
        size = open_file.buffer.size if open_file is not None else node.size
        attr.st_size = size
        attr.st_blksize = 4096
        attr.st_blocks = -(-size // 512)
        attr.st_atime_ns = node.atime_ns
        attr.st_mtime_ns = node.mtime_ns
        attr.st_ctime_ns = node.ctime_ns
        if open_file is not None and open_file.times is not None:
            times = self._pending_times(open_file, node)
            attr.st_mtime_ns, attr.st_ctime_ns = times["mtime"], times["ctime"]
        return attr

    def virtual_attr(self, ino: int, mode: int, size: int = 0, volatile: bool = False) -> pyfuse3.EntryAttributes:
        """Attributes of an inode that is no tree node (events, .lighthouse, .history)."""
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.entry_timeout = CACHE_TIMEOUT
        attr.attr_timeout = 0 if volatile else CACHE_TIMEOUT
        attr.st_mode = mode
        attr.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        attr.st_size = size
        attr.st_blksize = 4096
        root = self.tree.nodes[ROOT_INO]
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = root.mtime_ns
        return attr
