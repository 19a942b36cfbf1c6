"""`.history` as a view: projects/<p>/.history/<seq>/... read-only, by event number.

Past trees come from history.py; this numbers their entries as inodes for the kernel.
Keys: ("H", project) the .history directory, ("V", project, seq) a version's root,
("N", seq, ino) a past node. Inodes are numbered as the kernel is told of them and
dropped when it forgets them (its references counted in _hist_lookups), so a walk of
many versions leaves nothing behind. HistoryView is the View (base.py) of them all.
"""
from __future__ import annotations

import itertools
import stat
from typing import Callable

import pyfuse3

from .. import errors
from ..domain.tree import Node, Tree
from ..domain.visibility import can_see_path
from ..files.buffer import FileBuffer
from ..files.handles import ReadOnlyFile
from .base import FIRST_VIEW_INO, Listing, View
from .history import History

HISTORY_NAME = b".history"
FIRST_HISTORY_INO = FIRST_VIEW_INO   # .history entries: numbered per mount


class HistoryView(View):
    """`attrs`: builds attribute objects (fs/attrs.py: build_attr, virtual_attr);
    `is_project(ino)`: has the directory a .history; `committed_buffer(node)`: a
    buffer of a (past) file's stored content."""

    door = HISTORY_NAME   # reachable by name but not listed (door_ino 0), see Operations.opendir
    numbers_inodes = True

    def __init__(self, history: History, tree: Tree, attrs, viewer: str | None, is_project: Callable[[int], bool],
                 committed_buffer: Callable[[Node], FileBuffer]):
        self.history = history
        self.tree = tree
        self.viewer = viewer   # the agent this mount shows history to (None: the operator)
        self._build_attr, self._virtual_attr = attrs.build_attr, attrs.virtual_attr
        self._is_project = is_project
        self._committed_buffer = committed_buffer
        self._hist_keys: dict[int, tuple] = {}
        self._hist_inos: dict[tuple, int] = {}
        self._hist_lookups: dict[int, int] = {}
        self._next_hist_ino = itertools.count(FIRST_HISTORY_INO)

    @property
    def inodes(self) -> int:
        """.history inodes the kernel holds."""
        return len(self._hist_keys)

    # ---- the View ----------------------------------------------------------------------

    def owns(self, ino: int) -> bool:
        return ino in self._hist_keys

    def is_door(self, parent: int) -> bool:
        return self._is_project(parent)

    def refuse_change(self):
        raise errors.ReadOnly(".history is read-only")

    async def lookup(self, parent: int, name: bytes):
        if parent not in self._hist_keys:   # the door: the project's .history
            return self._virtual_attr(self._hist_ref(("H", parent)), stat.S_IFDIR | 0o555)
        return await self._history_lookup(parent, name)

    async def getattr(self, ino: int):
        return await self._history_attr(ino)

    async def open(self, ino: int, writing: bool) -> ReadOnlyFile:
        if writing:
            self.refuse_change()
        node = await self._history_node(ino)
        if node is None or not stat.S_ISREG(node.mode):
            raise errors.InvalidArgument("not a regular file")
        return ReadOnlyFile(self._committed_buffer(node))

    async def opendir(self, ino: int) -> Listing:
        """The entries (name, key): numbered only as they are listed."""
        return Listing(self, await self._history_listing(ino))

    async def readdir(self, listing: Listing, start_id: int, token) -> None:
        await self._history_readdir(listing, start_id, token)

    def forget(self, ino: int, count: int) -> None:
        self._hist_forget(ino, count)

    async def node(self, ino: int) -> Node | None:
        return await self._history_node(ino)

    # ---- inodes and past trees -----------------------------------------------------------

    def _hist_ref(self, key: tuple) -> int:
        """The inode number of a .history entry, counting the reference the kernel takes
        with it: call it only for an entry the kernel is about to be given."""
        ino = self._hist_inos.get(key)
        if ino is None:
            ino = next(self._next_hist_ino)
            self._hist_inos[key] = ino
            self._hist_keys[ino] = key
        self._hist_lookups[ino] = self._hist_lookups.get(ino, 0) + 1
        return ino

    def _hist_forget(self, ino: int, count: int) -> None:
        left = self._hist_lookups.get(ino, 0) - count
        if left > 0:
            self._hist_lookups[ino] = left
            return
        self._hist_lookups.pop(ino, None)
        key = self._hist_keys.pop(ino, None)
        if key is not None:
            del self._hist_inos[key]

    async def _history_readdir(self, entries: Listing, start_id: int, token) -> None:
        for index in range(start_id, len(entries)):
            name, key = entries[index]
            try:
                attr = await self._history_attr(None, key)
            except errors.NotFound:
                continue
            attr.st_ino = ino = self._hist_ref(key)
            if not pyfuse3.readdir_reply(token, name, attr, index + 1):
                self._hist_forget(ino, 1)   # not given to the kernel after all
                return

    def _project_path(self, project_ino: int) -> str:
        return self.tree.dir_path(project_ino)

    async def _history_version_root(self, project_ino: int, seq: int) -> Node | None:
        """The project directory as it was just after event `seq`."""
        tree = await self.history.tree_at(seq)
        node = tree.nodes.get(project_ino)
        # The project's inode may have been elsewhere then (in its owner's private
        # memories, before a rename that is refused now): what was at its path is shown.
        if node is None or not node.is_dir or not can_see_path(tree.dir_path(node.ino), self.viewer):
            try:
                node = tree.resolve(self._project_path(project_ino))
            except errors.LighthouseError:
                return None
        return node

    async def _history_node(self, ino: int) -> Node | None:
        """The past node a .history inode names (None for the version directories)."""
        key = self._hist_keys.get(ino)
        if key is None or key[0] != "N":
            return None
        return (await self.history.tree_at(key[1])).nodes.get(key[2])

    async def _history_attr(self, ino: int | None, key: tuple | None = None):
        """Attributes of a .history inode (`ino` None: of the entry `key`, not numbered yet)."""
        key = key or self._hist_keys[ino]
        if key[0] in ("H", "V"):
            return self._virtual_attr(ino or 0, stat.S_IFDIR | 0o555)
        tree = await self.history.tree_at(key[1])
        node = tree.nodes.get(key[2])
        if node is None:
            raise errors.NotFound(f".history: inode {key[2]} at {key[1]}")
        return self._build_attr(node, ino=ino or 0, read_only=True)

    async def _history_lookup(self, parent: int, name: bytes):
        key = self._hist_keys[parent]
        if key[0] == "H":
            if not name.isdigit():
                raise errors.NotFound(f".history/{name!r}: versions are event numbers")
            seq = int(name)
            if seq not in await self.history.versions(self._project_path(key[1])):
                raise errors.NotFound(f".history/{seq}: no event of this project has that number")
            return self._virtual_attr(self._hist_ref(("V", key[1], seq)), stat.S_IFDIR | 0o555)
        seq, directory = await self._history_directory(key)
        child_ino = directory.entries.get(name) if directory is not None and directory.is_dir else None
        if child_ino is None:
            raise errors.NotFound(f".history/{seq}: no entry {name!r}")
        tree = await self.history.tree_at(seq)
        return self._build_attr(tree.nodes[child_ino], ino=self._hist_ref(("N", seq, child_ino)), read_only=True)

    async def _history_directory(self, key: tuple) -> tuple[int, Node | None]:
        """(version, directory node) of a version root ("V") or a past directory ("N")."""
        if key[0] == "V":
            return key[2], await self._history_version_root(key[1], key[2])
        return key[1], (await self.history.tree_at(key[1])).nodes.get(key[2])

    async def _history_listing(self, ino: int) -> list[tuple[bytes, tuple]]:
        key = self._hist_keys[ino]
        if key[0] == "H":
            seqs = await self.history.versions(self._project_path(key[1]))
            return [(str(seq).encode(), ("V", key[1], seq)) for seq in seqs]
        seq, directory = await self._history_directory(key)
        if directory is None or not directory.is_dir:
            return []
        return [(name, ("N", seq, child)) for name, child in directory.entries.items()]
