"""The read side of the projection: finding nodes by inode, name and path, and walking it.
Tree (tree.py) is these queries plus applying events. Pure."""
from __future__ import annotations

from typing import Iterator

from .. import errors
from . import events
from .layout import ROOT_INO
from .node import Node


class Queries:
    nodes: dict[int, Node]

    def get(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise errors.NotFound(f"no inode {ino}") from None

    def get_dir(self, ino: int) -> Node:
        node = self.get(ino)
        if not node.is_dir:
            raise errors.NotADirectory(f"inode {ino} is not a directory")
        return node

    def live_dir(self, ino: int) -> Node:
        """A directory that entries may be added to: not one that was removed and is only
        kept here because this node's kernel still holds it (a shell's cwd). Replays
        and other nodes do not have such a directory at all, so every node must refuse
        it alike."""
        directory = self.get_dir(ino)
        if directory.nlink == 0:
            raise errors.NotFound(f"directory {ino} has been removed")
        return directory

    def child(self, parent: int, name: bytes) -> Node:
        directory = self.get_dir(parent)
        ino = directory.entries.get(name)
        if ino is None:
            raise errors.NotFound(f"{self.path(parent, name)}: no such entry")
        return self.nodes[ino]

    def find(self, parent: int, name: bytes) -> Node | None:
        directory = self.nodes.get(parent)
        if directory is None or directory.entries is None:
            return None
        ino = directory.entries.get(name)
        return None if ino is None else self.nodes[ino]

    def resolve(self, path: str) -> Node:
        """The node at a slash-separated path from the root (no symlinks followed)."""
        node = self.nodes[ROOT_INO]
        for part in path.strip("/").split("/"):
            if part:
                node = self.child(node.ino, part.encode("utf-8", events.PATH_ERRORS))
        return node

    def dir_path(self, ino: int) -> str:
        parts = []
        while ino != ROOT_INO:
            node = self.nodes.get(ino)
            if node is None or not node.is_dir:
                return f"?inode-{ino}"
            parent = self.nodes[node.parent]
            name = next((n for n, i in parent.entries.items() if i == ino), b"?")
            parts.append(name.decode("utf-8", "surrogateescape"))
            ino = node.parent
        return "/".join(reversed(parts))

    def path(self, parent: int, name: bytes) -> str:
        base = self.dir_path(parent)
        leaf = name.decode("utf-8", "surrogateescape")
        return f"{base}/{leaf}" if base else leaf

    def is_ancestor(self, ancestor: int, ino: int) -> bool:
        while True:
            if ino == ancestor:
                return True
            if ino == ROOT_INO:
                return False
            ino = self.nodes[ino].parent

    def walk(self, ino: int = ROOT_INO) -> Iterator[Node]:
        stack = [ino]
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            if node.is_dir:
                stack.extend(node.entries.values())
