"""Files created here and not yet in the log.

create(2) without O_EXCL is answered without a store commit: the new file lives here,
in this daemon only, until its first close (or fsync, or any other change to it or its
name), and then one MKNOD event carries its name, attributes and content. That halves
the commits of create+write+close, the most common write of all. Its inode comes from
a range this daemon reserved through an INODES event, so the number the kernel was
given is the one every node and every replay will use.

The cost, stated in docs/decisions.md: a new file is invisible to other nodes and to
the log until its first close (as its content already was), and a daemon killed before
that close loses the empty name along with the unsaved content. O_EXCL creates (lock
files, mkstemp) are committed at once, since other nodes must see them to be excluded.

Pure bookkeeping: no FUSE, no store. The filesystem consults it wherever a name or
inode is looked up.
"""
from __future__ import annotations

import errno
import time

import trio

from .. import errors
from ..domain.tree import Node

# How many dropped inodes are remembered (see NewFiles.drop): a kernel reaches one only
# in the moment before its cached name is invalidated.
DROPPED_KEPT = 1024


class NewFile:
    __slots__ = ("node", "parent", "name", "lock")

    def __init__(self, node: Node, parent: int, name: bytes):
        self.node = node
        self.parent = parent
        self.name = name
        # Held while the file's MKNOD is committed: a second close or a rename waits
        # for it, then finds the file in the tree.
        self.lock = trio.Lock()


class NewFiles:
    def __init__(self) -> None:
        self.by_ino: dict[int, NewFile] = {}
        self._by_name: dict[tuple[int, bytes], int] = {}
        self._by_dir: dict[int, dict[bytes, int]] = {}
        self._free = range(0)
        self._dropped: dict[int, None] = {}   # (an ordered set: the oldest goes first)

    def __contains__(self, ino: int) -> bool:
        return ino in self.by_ino

    def __len__(self) -> int:
        return len(self.by_ino)

    # ---- inode numbers -------------------------------------------------------------------

    @property
    def used_up(self) -> bool:
        return not self._free

    def take_ino(self) -> int | None:
        """The next inode of the reserved range, or None when it is used up."""
        if not self._free:
            return None
        ino, self._free = self._free[0], self._free[1:]
        return ino

    def add_range(self, inodes: range) -> None:
        self._free = inodes

    # ---- files ------------------------------------------------------------------------------

    def add(self, ino: int, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Node:
        node = Node(ino, mode, uid, gid, time.time_ns())
        self.by_ino[ino] = NewFile(node, parent, name)
        self._by_name[(parent, name)] = ino
        self._by_dir.setdefault(parent, {})[name] = ino
        return node

    def get(self, ino: int) -> NewFile | None:
        return self.by_ino.get(ino)

    def node(self, ino: int) -> Node | None:
        new = self.by_ino.get(ino)
        return None if new is None else new.node

    def find(self, parent: int, name: bytes) -> NewFile | None:
        ino = self._by_name.get((parent, name))
        return None if ino is None else self.by_ino[ino]

    def names_in(self, parent: int) -> list[tuple[bytes, int]]:
        return list(self._by_dir.get(parent, {}).items())

    def in_dir(self, parent: int) -> list[NewFile]:
        return [self.by_ino[ino] for ino in self._by_dir.get(parent, {}).values()]

    def remove(self, ino: int) -> NewFile:
        new = self.by_ino.pop(ino)
        del self._by_name[(new.parent, new.name)]
        names = self._by_dir[new.parent]
        del names[new.name]
        if not names:
            del self._by_dir[new.parent]
        return new

    def drop(self, ino: int) -> NewFile:
        """The file was not stored and is gone. The kernel may still reach its inode
        through the name it cached: that name's invalidation is queued and may land after
        the caller's next open (a retry of a refused create, most often). That inode is
        answered ESTALE, not ENOENT, so the kernel looks the name up again (and an
        O_CREAT then creates a new file). Inode numbers are never used again, so a
        remembered one never means another file."""
        new = self.remove(ino)
        self._dropped[ino] = None
        if len(self._dropped) > DROPPED_KEPT:
            del self._dropped[next(iter(self._dropped))]
        return new

    def check_not_dropped(self, ino: int) -> None:
        if ino in self._dropped:
            raise errors.LighthouseError(f"inode {ino} was dropped before it was stored", errno_=errno.ESTALE)
